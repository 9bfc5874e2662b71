//! The adapter every measured system implements.
//!
//! The writer side ([`Engine`]) lives in the harness process; the reader side
//! ([`ReadSession`]) lives in worker processes (and, for the scan row, in the
//! harness). Workers only learn an engine's name and a location string.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::dataset::{Dataset, Spec};
use crate::Result;

pub mod lmdb;
pub mod redis;
pub mod shoal;

/// Every engine, in table order.
pub const ALL: [&str; 3] = ["shoal", "lmdb", "redis"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// shoal `Durability::None`, LMDB `NO_SYNC | NO_META_SYNC`, Redis without persistence.
    Off,
    /// shoal `Durability::Sync`, LMDB default (synced) commits, Redis `appendfsync always`.
    On,
}

/// What "reopen" measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// The store's owner starts: shoal `Store::open`, LMDB env open with no
    /// other process holding it, Redis server start loading its RDB file.
    Owner,
    /// A new reader joins a running store: shoal `Reader::open`, LMDB env
    /// open while the writer holds it, a new Redis client connection.
    Reader,
}

/// What holds the data in the memory row besides the P readers.
pub enum MemoryOwner {
    /// A worker process opening the store as its writer and reading everything.
    Worker(serde_json::Value),
    /// A server process already running (Redis).
    Pid(u32),
}

/// The writer side of one system, in the harness process.
pub trait Engine {
    fn name(&self) -> &'static str;

    /// Creates a fresh, empty store (dropping this engine's previous one)
    /// with the given durability, opened by this process as its writer.
    fn create(&mut self, durability: Durability) -> Result<()>;

    /// Loads the whole dataset the engine's fastest documented way, done when readable.
    fn bulk_load(&mut self, data: &Dataset) -> Result<()>;

    /// (Re)opens the current store as its writer with this durability.
    fn open(&mut self, durability: Durability) -> Result<()>;

    /// Releases the writer (so that another process can own the store).
    fn close(&mut self) -> Result<()>;

    /// A committer for one thread: each `commit` is one transaction writing one key.
    fn committer(&self) -> Result<Box<dyn Committer + Send + '_>>;

    /// Where worker processes find the store (passed to [`open_reader`]).
    fn location(&self) -> String;

    /// Sizes worth reporting (label, bytes), e.g. the arena's live size.
    fn sizes(&self) -> Result<Vec<(String, u64)>>;

    /// (bytes the store's files take on disk, as `du` counts them; bytes
    /// its live data takes), for the disk row. Engines without files: `Err`.
    fn disk(&self) -> Result<(u64, u64)> {
        Err("no store files".into())
    }

    /// Time from open to the first read of `key` returning its value,
    /// measured in a fresh process (or a fresh server).
    fn reopen(&mut self, mode: Reopen, key: &str) -> Result<Duration>;

    /// What holds the data in the memory row besides the P reader processes.
    fn memory_owner(&mut self) -> Result<MemoryOwner>;

    /// How this engine's propagation reader learns of a new version.
    fn propagation_method(&self) -> &'static str;

    /// Whether its readers can poll ([`ReadSession::poll`]).
    fn polls(&self) -> bool {
        false
    }

    /// Turns on (or off again) whatever the propagation reader needs from
    /// the store (Redis: keyspace notifications, off in the other rows).
    fn watchable(&mut self, _on: bool) -> Result<()> {
        Ok(())
    }
}

/// One thread's commit handle.
pub trait Committer {
    /// Commits one transaction writing `value` at `key`; returns the number
    /// of retries it needed (optimistic conflicts).
    fn commit(&mut self, key: &str, value: &[u8]) -> Result<u64>;
}

/// The reader side, in any process.
pub trait ReadSession {
    /// Reads every key of the batch in one read transaction / snapshot /
    /// pipeline. Returns (keys found, value bytes seen).
    fn get_batch(&mut self, keys: &[String]) -> Result<(usize, u64)>;

    /// Reads the subtree at `prefix` in order until `limit` dataset keys
    /// were seen; returns how many were.
    fn scan(&mut self, prefix: &str, limit: usize) -> Result<usize>;

    /// Reads every key of the dataset and keeps what it read readable until
    /// dropped (a snapshot, a read transaction, or copies). Returns bytes seen.
    fn read_all_and_hold(&mut self, spec: &Spec) -> Result<u64>;

    /// Calls `ready` once it observes changes, then `seen(version)` for each
    /// new version it observes, until `stop` is set.
    fn watch(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()>;

    /// As [`watch`](Self::watch), by polling: a loop of fresh read views
    /// that never sleeps, comparing each one's version with the last. For
    /// comparing like with like where another engine can only poll.
    fn poll(&mut self, _ready: &mut dyn FnMut(), _stop: &AtomicBool, _seen: &mut dyn FnMut(u64)) -> Result<()> {
        Err("no polling reader".into())
    }
}

/// [`Engine::reopen`] for engines whose store a process opens from its files
/// (shoal, LMDB): release the writer for an owner reopen, measure in a
/// worker process, then reopen as before.
fn reopen_in_worker(engine: &mut dyn Engine, durability: Durability, mode: Reopen, key: &str) -> Result<Duration> {
    if mode == Reopen::Owner {
        engine.close()?;
    }
    let result = crate::worker::reopen(engine.name(), &engine.location(), mode, key);
    engine.open(durability)?;
    result
}

/// [`Engine::memory_owner`] for the same engines: a worker process becomes the owner.
fn memory_owner_in_worker(engine: &mut dyn Engine) -> Result<MemoryOwner> {
    engine.close()?;
    Ok(MemoryOwner::Worker(crate::worker::memory_job(engine.name(), &engine.location(), true)))
}

/// Creates the writer side of `name`, with its stores under `root`.
pub fn engine(name: &str, root: &Path, spec: &Spec) -> Result<Box<dyn Engine>> {
    match name {
        "shoal" => Ok(Box::new(shoal::ShoalEngine::new(root)?)),
        "lmdb" => Ok(Box::new(lmdb::LmdbEngine::new(root, spec)?)),
        "redis" => Ok(Box::new(redis::RedisEngine::new(root)?)),
        other => Err(format!("unknown engine {other:?}").into()),
    }
}

/// Why `name` cannot run on this machine, if it cannot.
pub fn unavailable(name: &str) -> Option<String> {
    match name {
        "redis" => redis::unavailable(),
        _ => None,
    }
}

/// Opens a reader of `name` on `location`, in this process.
pub fn open_reader(name: &str, location: &str) -> Result<Box<dyn ReadSession>> {
    match name {
        "shoal" => Ok(Box::new(shoal::ShoalReader::open(location)?)),
        "lmdb" => Ok(Box::new(lmdb::LmdbReader::open(location, true)?)),
        "redis" => Ok(Box::new(redis::RedisReader::open(location)?)),
        other => Err(format!("unknown engine {other:?}").into()),
    }
}

/// Opens `name`'s store as its owner (writer) in a worker process, for the
/// memory row: a session that reads and holds like a reader.
pub fn open_owner(name: &str, location: &str) -> Result<Box<dyn ReadSession>> {
    match name {
        "shoal" => Ok(Box::new(shoal::ShoalOwner::open(location)?)),
        "lmdb" => Ok(Box::new(lmdb::LmdbReader::open(location, false)?)),
        other => Err(format!("{other} has no owner worker").into()),
    }
}

/// Measures, in this (fresh) process, the time from open to the first read.
pub fn reopen_here(name: &str, location: &str, mode: Reopen, key: &str) -> Result<Duration> {
    match name {
        "shoal" => shoal::reopen_here(location, mode, key),
        "lmdb" => lmdb::reopen_here(location, mode, key),
        other => Err(format!("{other} does not reopen in a worker").into()),
    }
}

/// Bytes the files of `dir` (not below it) take on disk, as `du` counts them.
pub fn disk_bytes(dir: &std::path::Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.blocks() * 512;
    }
    Ok(total)
}
