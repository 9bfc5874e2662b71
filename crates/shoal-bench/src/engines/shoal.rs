//! shoal through its public API: `Store` writes, `Reader` snapshots read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal::{Options, Reader, Snapshot, Store};

use super::{Committer, Durability, Engine, MemoryOwner, ReadSession, Reopen};
use crate::dataset::{Dataset, Spec};
use crate::Result;

fn options(durability: Durability) -> Options {
    let durability = match durability {
        Durability::Off => shoal::Durability::None,
        Durability::On => shoal::Durability::Sync,
    };
    // A reopen asks for another durability than the store was made with.
    Options { durability, create: true, replace_settings: true, ..Options::default() }
}

pub struct ShoalEngine {
    root: PathBuf,
    dir: PathBuf,
    created: u32,
    store: Option<Store>,
    durability: Durability,
}

impl ShoalEngine {
    pub fn new(root: &Path) -> Result<ShoalEngine> {
        Ok(ShoalEngine {
            root: root.to_path_buf(),
            dir: root.join("shoal-0"),
            created: 0,
            store: None,
            durability: Durability::Off,
        })
    }

    fn store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or_else(|| "the shoal store is not open".into())
    }
}

impl Engine for ShoalEngine {
    fn name(&self) -> &'static str {
        "shoal"
    }

    fn create(&mut self, durability: Durability) -> Result<()> {
        self.close()?;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.created += 1;
        self.dir = self.root.join(format!("shoal-{}", self.created));
        self.store = Some(Store::open(&self.dir, options(durability))?);
        self.durability = durability;
        Ok(())
    }

    fn bulk_load(&mut self, data: &Dataset) -> Result<()> {
        self.store()?.bulk_load(data.keys.iter().zip(data.values.iter()))?;
        Ok(())
    }

    fn open(&mut self, durability: Durability) -> Result<()> {
        if self.store.is_some() && self.durability == durability {
            return Ok(());
        }
        self.close()?;
        self.store = Some(Store::open(&self.dir, options(durability))?);
        self.durability = durability;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        drop(self.store.take());
        Ok(())
    }

    fn committer(&self) -> Result<Box<dyn Committer + Send + '_>> {
        Ok(Box::new(ShoalCommitter { store: self.store()? }))
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn sizes(&self) -> Result<Vec<(String, u64)>> {
        let stat = self.store()?.stat()?;
        Ok(vec![
            ("arena live bytes (retained versions)".into(), stat.live_bytes),
            ("arena bytes in use".into(), stat.arena_bytes),
            ("nodes (dataset keys and their parents)".into(), stat.key_count),
        ])
    }

    fn disk(&self) -> Result<(u64, u64)> {
        Ok((super::disk_bytes(&self.dir)?, self.store()?.stat()?.live_bytes))
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
        "waiting reader: Reader::wait_for_version spins for up to 100 µs (its default; SHOAL_BENCH_WAIT_SPIN_US overrides it), then sleeps on a futex in the shared control file until the writer publishes"
    }
}

struct ShoalCommitter<'a> {
    store: &'a Store,
}

impl Committer for ShoalCommitter<'_> {
    fn commit(&mut self, key: &str, value: &[u8]) -> Result<u64> {
        let mut retries = 0;
        loop {
            let mut txn = self.store.begin();
            txn.put(key, value)?;
            match txn.commit() {
                Ok(_) => return Ok(retries),
                Err(shoal::Error::Conflict { .. }) => retries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A reader process's handle.
pub struct ShoalReader {
    reader: Reader,
    held: Option<Snapshot>,
}

impl ShoalReader {
    pub fn open(location: &str) -> Result<ShoalReader> {
        Ok(ShoalReader { reader: Reader::open(location)?, held: None })
    }
}

fn get_batch(snap: &Snapshot, keys: &[String]) -> Result<(usize, u64)> {
    let (mut found, mut bytes) = (0usize, 0u64);
    for key in keys {
        if let Some(v) = snap.get(key)? {
            found += 1;
            bytes += v.len() as u64 + u64::from(v.first().copied().unwrap_or(0));
        }
    }
    Ok((found, bytes))
}

fn scan(snap: &Snapshot, prefix: &str, limit: usize) -> Result<usize> {
    let mut seen = 0;
    let mut scan = snap.scan(prefix)?;
    // Each node's path (rendered into the scan's reused buffer) and value,
    // as LMDB hands out both.
    while let Some(entry) = scan.next_path() {
        let (path, value) = entry?;
        // Parents (`/local/domain/<d>`) hold empty values; dataset values never are.
        if !value.is_empty() {
            std::hint::black_box((path, value));
            seen += 1;
            if seen == limit {
                break;
            }
        }
    }
    Ok(seen)
}

fn read_all(snap: &Snapshot, spec: &Spec) -> Result<u64> {
    let mut buf = String::new();
    let mut bytes = 0;
    for i in 0..spec.keys {
        spec.write_key(i, &mut buf);
        let v = snap.get(&buf)?.ok_or_else(|| format!("{buf} missing"))?;
        bytes += v.len() as u64 + u64::from(v[0]);
    }
    Ok(bytes)
}

impl ReadSession for ShoalReader {
    fn get_batch(&mut self, keys: &[String]) -> Result<(usize, u64)> {
        // A fresh snapshot per batch, as a reader that wants recent data does.
        get_batch(&self.reader.snapshot()?, keys)
    }

    fn scan(&mut self, prefix: &str, limit: usize) -> Result<usize> {
        scan(&self.reader.snapshot()?, prefix, limit)
    }

    fn read_all_and_hold(&mut self, spec: &Spec) -> Result<u64> {
        let snap = self.reader.snapshot()?;
        let bytes = read_all(&snap, spec)?;
        self.held = Some(snap);
        Ok(bytes)
    }

    fn watch(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()> {
        if let Some(spin) = std::env::var("SHOAL_BENCH_WAIT_SPIN_US").ok().and_then(|s| s.parse().ok()) {
            self.reader.set_wait_spin(Duration::from_micros(spin));
        }
        let mut last = self.reader.snapshot()?.version();
        ready();
        while !stop.load(Ordering::Relaxed) {
            // Sleeps on the control file's futex until the writer publishes;
            // the timeout only bounds how long a stop request can go unseen.
            if let Some(snap) = self.reader.wait_for_version(last, Duration::from_millis(50))? {
                last = snap.version();
                seen(last);
            }
        }
        Ok(())
    }

    fn poll(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()> {
        let mut last = self.reader.snapshot()?.version();
        ready();
        while !stop.load(Ordering::Relaxed) {
            let version = self.reader.snapshot()?.version();
            if version != last {
                seen(version);
                last = version;
            }
        }
        Ok(())
    }
}

/// The writer process of the memory row: opens the store as its writer and
/// reads everything through its own snapshot.
pub struct ShoalOwner {
    store: Store,
    held: Option<Snapshot>,
}

impl ShoalOwner {
    pub fn open(location: &str) -> Result<ShoalOwner> {
        Ok(ShoalOwner { store: Store::open_existing(location)?, held: None })
    }
}

impl ReadSession for ShoalOwner {
    fn get_batch(&mut self, keys: &[String]) -> Result<(usize, u64)> {
        get_batch(&self.store.snapshot(), keys)
    }

    fn scan(&mut self, prefix: &str, limit: usize) -> Result<usize> {
        scan(&self.store.snapshot(), prefix, limit)
    }

    fn read_all_and_hold(&mut self, spec: &Spec) -> Result<u64> {
        let snap = self.store.snapshot();
        let bytes = read_all(&snap, spec)?;
        self.held = Some(snap);
        Ok(bytes)
    }

    fn watch(&mut self, _ready: &mut dyn FnMut(), _stop: &AtomicBool, _seen: &mut dyn FnMut(u64)) -> Result<()> {
        Err("the owner does not watch".into())
    }
}

/// Open → first read, in this fresh process.
pub fn reopen_here(location: &str, mode: Reopen, key: &str) -> Result<Duration> {
    let start = Instant::now();
    match mode {
        Reopen::Owner => {
            let store = Store::open_existing(location)?;
            let snap = store.snapshot();
            snap.get(key)?.ok_or_else(|| format!("{key} missing after reopen"))?;
            let elapsed = start.elapsed();
            drop(snap);
            drop(store);
            Ok(elapsed)
        }
        Reopen::Reader => {
            let reader = Reader::open(location)?;
            let snap = reader.snapshot()?;
            snap.get(key)?.ok_or_else(|| format!("{key} missing after reopen"))?;
            Ok(start.elapsed())
        }
    }
}
