//! LMDB through `heed`: one unnamed database of raw byte keys and values.
//!
//! heed's `Database` borrows its `Env`; `self_cell` keeps the pair in one
//! value so that an environment can be closed (dropped) and reopened, which
//! the memory and reopen rows need (a harness process still mapping the file
//! would take a share of the readers' PSS).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, WithTls};

use super::{Committer, Durability, Engine, MemoryOwner, ReadSession, Reopen};
use crate::dataset::{Dataset, Spec};
use crate::Result;

type Db<'a> = Database<'a, Bytes, Bytes>;

/// The database plus, for readers of the memory row, the read transaction
/// that keeps what they read mapped and valid.
pub struct State<'a> {
    db: Db<'a>,
    held: Option<RoTxn<'a, WithTls>>,
}

self_cell::self_cell!(
    struct OpenEnv {
        owner: Env,
        #[covariant]
        dependent: State,
    }
);

fn flags(durability: Durability) -> EnvFlags {
    match durability {
        // What LMDB users pick when they trade durability for speed.
        Durability::Off => EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC,
        Durability::On => EnvFlags::empty(),
    }
}

/// Opens the environment at `dir`; `create` creates the unnamed database.
fn open_env(dir: &Path, map_size: usize, flags: EnvFlags, create: bool) -> Result<OpenEnv> {
    let mut options = EnvOpenOptions::new();
    options.map_size(map_size).max_readers(1024);
    // SAFETY: the only flags used are NO_SYNC/NO_META_SYNC (weaker
    // durability, which is what the "durability off" rows measure) and
    // READ_ONLY; none of them affects memory safety within a run.
    unsafe { options.flags(flags) };
    // SAFETY: the environment's files are written only through LMDB, by this
    // harness's own processes, and stay on a local file system.
    let env = unsafe { options.open(dir)? };
    OpenEnv::try_new(env, |env| -> Result<State<'_>> {
        let db = if create {
            let wtxn = env.write_txn()?;
            env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(opener.create_database::<Bytes, Bytes>(wtxn, None)?))
            })?
            .unwrap_commit()
        } else {
            let rtxn = env.read_txn()?;
            env.open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(opener.open_database::<Bytes, Bytes>(rtxn, None)?))
            })?
            .unwrap_commit()
            .ok_or("the LMDB database is missing")?
        };
        Ok(State { db, held: None })
    })
}

fn parse_location(location: &str) -> Result<(usize, PathBuf)> {
    let (size, dir) = location.split_once(':').ok_or("bad LMDB location")?;
    Ok((size.parse()?, PathBuf::from(dir)))
}

pub struct LmdbEngine {
    root: PathBuf,
    dir: PathBuf,
    created: u32,
    map_size: usize,
    env: Option<OpenEnv>,
    durability: Durability,
}

impl LmdbEngine {
    pub fn new(root: &Path, spec: &Spec) -> Result<LmdbEngine> {
        // Room for the dataset many times over (copy-on-write pages, free
        // lists, updates); only address space until used.
        let raw = (spec.keys as u64) * (spec.value_size as u64 + 64);
        let map_size = (raw * 16).clamp(1 << 30, 1 << 40).next_multiple_of(1 << 20) as usize;
        Ok(LmdbEngine {
            root: root.to_path_buf(),
            dir: root.join("lmdb-0"),
            created: 0,
            map_size,
            env: None,
            durability: Durability::Off,
        })
    }

    fn env(&self) -> Result<&OpenEnv> {
        self.env.as_ref().ok_or_else(|| "the LMDB environment is not open".into())
    }
}

impl Engine for LmdbEngine {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn create(&mut self, durability: Durability) -> Result<()> {
        self.close()?;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.created += 1;
        self.dir = self.root.join(format!("lmdb-{}", self.created));
        std::fs::create_dir_all(&self.dir)?;
        self.env = Some(open_env(&self.dir, self.map_size, flags(durability), true)?);
        self.durability = durability;
        Ok(())
    }

    fn bulk_load(&mut self, data: &Dataset) -> Result<()> {
        // One write transaction for the whole dataset, as LMDB users load.
        let open = self.env()?;
        let (env, state) = (open.borrow_owner(), open.borrow_dependent());
        let mut wtxn = env.write_txn()?;
        for (k, v) in data.keys.iter().zip(&data.values) {
            state.db.put(&mut wtxn, k.as_bytes(), v)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn open(&mut self, durability: Durability) -> Result<()> {
        if self.env.is_some() && self.durability == durability {
            return Ok(());
        }
        self.close()?;
        self.env = Some(open_env(&self.dir, self.map_size, flags(durability), false)?);
        self.durability = durability;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(open) = self.env.take() {
            let env = open.into_owner();
            // Dropping the last handle closes the environment; wait for it so
            // that the next open of the same path in this process succeeds.
            env.prepare_for_closing().wait();
        }
        Ok(())
    }

    fn committer(&self) -> Result<Box<dyn Committer + Send + '_>> {
        let open = self.env()?;
        Ok(Box::new(LmdbCommitter { env: open.borrow_owner(), db: open.borrow_dependent().db }))
    }

    fn location(&self) -> String {
        format!("{}:{}", self.map_size, self.dir.display())
    }

    fn sizes(&self) -> Result<Vec<(String, u64)>> {
        let open = self.env()?;
        let env = open.borrow_owner();
        let info = env.info();
        let rtxn = env.read_txn()?;
        let stat = open.borrow_dependent().db.stat(&rtxn)?;
        Ok(vec![
            ("pages in use × page size".into(), (info.last_page_number as u64 + 1) * stat.page_size as u64),
            ("data.mdb file".into(), std::fs::metadata(self.dir.join("data.mdb"))?.len()),
            ("entries".into(), stat.entries as u64),
        ])
    }

    fn disk(&self) -> Result<(u64, u64)> {
        // Live: the pages in use, as `sizes` reports them.
        let live = self.sizes()?[0].1;
        Ok((super::disk_bytes(&self.dir)?, live))
    }

    fn reopen(&mut self, mode: Reopen, key: &str) -> Result<Duration> {
        let durability = self.durability;
        super::reopen_in_worker(self, durability, mode, key)
    }

    fn memory_owner(&mut self) -> Result<MemoryOwner> {
        super::memory_owner_in_worker(self)
    }

    fn polls(&self) -> bool {
        true
    }

    fn propagation_method(&self) -> &'static str {
        "polling reader: a loop of read transactions until the transaction id changes"
    }
}

struct LmdbCommitter<'a> {
    env: &'a Env,
    db: Db<'a>,
}

impl Committer for LmdbCommitter<'_> {
    fn commit(&mut self, key: &str, value: &[u8]) -> Result<u64> {
        let mut wtxn = self.env.write_txn()?;
        self.db.put(&mut wtxn, key.as_bytes(), value)?;
        wtxn.commit()?;
        Ok(0)
    }
}

/// A reader (or, with `read_only` false, the owner) in a worker process.
pub struct LmdbReader {
    open: OpenEnv,
}

impl LmdbReader {
    pub fn open(location: &str, read_only: bool) -> Result<LmdbReader> {
        let (map_size, dir) = parse_location(location)?;
        let flags = if read_only { EnvFlags::READ_ONLY } else { EnvFlags::empty() };
        Ok(LmdbReader { open: open_env(&dir, map_size, flags, false)? })
    }
}

impl ReadSession for LmdbReader {
    fn get_batch(&mut self, keys: &[String]) -> Result<(usize, u64)> {
        let (env, state) = (self.open.borrow_owner(), self.open.borrow_dependent());
        // One read transaction per batch.
        let rtxn = env.read_txn()?;
        let (mut found, mut bytes) = (0usize, 0u64);
        for key in keys {
            if let Some(v) = state.db.get(&rtxn, key.as_bytes())? {
                found += 1;
                bytes += v.len() as u64 + u64::from(v.first().copied().unwrap_or(0));
            }
        }
        Ok((found, bytes))
    }

    fn scan(&mut self, prefix: &str, limit: usize) -> Result<usize> {
        let (env, state) = (self.open.borrow_owner(), self.open.borrow_dependent());
        let rtxn = env.read_txn()?;
        let subtree = format!("{prefix}/");
        let mut seen = 0;
        for entry in state.db.prefix_iter(&rtxn, subtree.as_bytes())? {
            let (key, value) = entry?;
            std::hint::black_box((key, value));
            seen += 1;
            if seen == limit {
                break;
            }
        }
        Ok(seen)
    }

    fn read_all_and_hold(&mut self, spec: &Spec) -> Result<u64> {
        self.open.with_dependent_mut(|env, state| -> Result<u64> {
            let rtxn = env.read_txn()?;
            let mut buf = String::new();
            let mut bytes = 0;
            for i in 0..spec.keys {
                spec.write_key(i, &mut buf);
                let v = state.db.get(&rtxn, buf.as_bytes())?.ok_or_else(|| format!("{buf} missing"))?;
                bytes += v.len() as u64 + u64::from(v[0]);
            }
            state.held = Some(rtxn);
            Ok(bytes)
        })
    }

    fn watch(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()> {
        let env = self.open.borrow_owner();
        let mut last = env.read_txn()?.id();
        ready();
        while !stop.load(Ordering::Relaxed) {
            let id = env.read_txn()?.id();
            if id != last {
                seen(id as u64);
                last = id;
            }
        }
        Ok(())
    }

    fn poll(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()> {
        // Its waiting reader polls already.
        self.watch(ready, stop, seen)
    }
}

/// Open → first read, in this fresh process.
pub fn reopen_here(location: &str, mode: Reopen, key: &str) -> Result<Duration> {
    let (map_size, dir) = parse_location(location)?;
    let flags = match mode {
        Reopen::Owner => EnvFlags::empty(),
        Reopen::Reader => EnvFlags::READ_ONLY,
    };
    let start = Instant::now();
    let open = open_env(&dir, map_size, flags, false)?;
    let rtxn = open.borrow_owner().read_txn()?;
    open.borrow_dependent().db.get(&rtxn, key.as_bytes())?.ok_or_else(|| format!("{key} missing after reopen"))?;
    let elapsed = start.elapsed();
    drop(rtxn);
    Ok(elapsed)
}
