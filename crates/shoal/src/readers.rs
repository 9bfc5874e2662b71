//! The reader table: one 64-byte slot per live reader handle, in a small
//! shared file `readers`, for `stat` and for waking sleeping readers.
//!
//! ```text
//! header (4096 bytes)  0 "SHOALRD1"  8 u64 slot count  64 u32 sleepers
//! slot i at 4096 + 64 i
//!     0 u64 oldest generation the handle maps (informational)
//!     8 u64 newest version it took a snapshot of (informational)
//!    16 u64 pid      24 u64 process start time (clock ticks since boot)
//! ```
//!
//! Every process that may read the store can write this file, so nothing
//! in it decides what another process reads. Which arena generations are
//! still in use is told by OFD read locks that readers hold on the
//! generation files themselves ([`crate::arena`]), which the kernel
//! enforces and releases when a process dies; a slot's fields only inform
//! `stat`. Everyone, the writer included, reads and writes the table with
//! `pread` and `pwrite`, never through a mapping: a process that truncates
//! or replaces it can make `stat` wrong, waste slots or delay wake-ups, but
//! cannot crash anyone with SIGBUS or free what another process reads.
//!
//! A handle owns its slot by holding an OFD write lock on the slot's bytes;
//! the kernel drops it when the process dies, so a crashed reader's slot is
//! free again without anyone asking (DESIGN §8). The pid and start time are
//! a second opinion for `stat` against a lock kept alive by a forked child.
//!
//! The sleepers count tells the writer whether a publication needs the
//! futex wake-up call (see `control::Control::wake_sleepers`); readers
//! change it under an OFD lock on its bytes, read-modify-write.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::sys;

pub const FILE_NAME: &str = "readers";
const HEADER: u64 = 4096;
const SLOT_BYTES: u64 = 64;
/// Slots in a new table.
pub const DEFAULT_SLOTS: u64 = 4096;
/// Most slots a table may declare (bounds the header's arithmetic).
const MAX_SLOTS: u64 = 1 << 20;
const MAGIC: u64 = u64::from_le_bytes(*b"SHOALRD1");

/// Header word: readers asleep on the control file's wake-up counter.
const OFF_SLEEPERS: u64 = 64;

const PIN_GENERATION: u64 = 0;
const PIN_VERSION: u64 = 8;
const PID: u64 = 16;
const START_TIME: u64 = 24;

pub struct ReaderTable {
    file: File,
    slots: u64,
    pub path: PathBuf,
}

/// One live reader, as its slot describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    pub slot: u64,
    pub pid: u32,
    /// The oldest generation it maps, as it last recorded.
    pub pinned_generation: u64,
    /// The newest version it took a snapshot of, as it last recorded
    /// (at most a few updates a second).
    pub pinned_version: u64,
}

fn header(slots: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&MAGIC.to_le_bytes());
    h[8..].copy_from_slice(&slots.to_le_bytes());
    h
}

impl ReaderTable {
    /// Creates the table if it does not exist, then opens it, repairing
    /// it if needed ([`ReaderTable::open_repairing`]). Called by the writer
    /// when it opens the store.
    pub fn create(dir: &StoreDir) -> Result<ReaderTable> {
        if !dir.exists(FILE_NAME)? {
            let tmp = "readers.tmp";
            dir.remove(tmp)?;
            let file = dir.open_file(tmp, Open::CreateNew(FileKind::Shared))?;
            let at = dir.join(tmp);
            file.set_len(HEADER + DEFAULT_SLOTS * SLOT_BYTES).at(&at)?;
            file.write_all_at(&header(DEFAULT_SLOTS), 0).at(&at)?;
            file.sync_all().at(&at)?;
            dir.rename(tmp, FILE_NAME)?;
        }
        Self::open_repairing(dir)
    }

    /// Opens the table; a header someone damaged or cut is rewritten in
    /// place (other readers may hold locks on the file), so that a
    /// misbehaving neighbour cannot keep new readers out this way.
    pub fn open_repairing(dir: &StoreDir) -> Result<ReaderTable> {
        let path = dir.join(FILE_NAME);
        match Self::open(dir) {
            Err(Error::Corrupt { .. }) => {
                tracing::warn!(file = %path.display(), "reader table header damaged or cut; rewriting it");
                let file = dir.open_file(FILE_NAME, Open::ReadWrite(FileKind::Shared))?;
                if file.metadata().at(&path)?.len() < HEADER + DEFAULT_SLOTS * SLOT_BYTES {
                    file.set_len(HEADER + DEFAULT_SLOTS * SLOT_BYTES).at(&path)?;
                }
                file.write_all_at(&header(DEFAULT_SLOTS), 0).at(&path)?;
                Self::open(dir)
            }
            other => other,
        }
    }

    pub fn open(dir: &StoreDir) -> Result<ReaderTable> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(FILE_NAME, Open::ReadWrite(FileKind::Shared))?;
        let mut h = [0u8; 16];
        let n = file.read_at(&mut h, 0).at(&path)?;
        match slots_of_header(&h[..n]) {
            Some(slots) => Ok(ReaderTable { file, slots, path }),
            None => Err(Error::Corrupt { file: path, offset: 0, detail: "bad reader table header".into() }),
        }
    }

    fn slot_offset(slot: u64) -> u64 {
        HEADER + slot * SLOT_BYTES
    }

    /// Claims a free slot for this handle (the table must be this handle's
    /// own open), among the first [`DEFAULT_SLOTS`] at most: a header that
    /// declares more cannot make a claim scan for long.
    pub fn claim(&self) -> Result<u64> {
        let pid = std::process::id();
        let start = sys::process_start_time(pid).unwrap_or(0);
        for slot in 0..self.slots.min(DEFAULT_SLOTS) {
            if sys::try_lock_range(&self.file, Self::slot_offset(slot), SLOT_BYTES).at(&self.path)? {
                // Whatever the slot held belonged to a dead owner: start clean.
                let mut fields = [0u8; 32];
                fields[PID as usize..PID as usize + 8].copy_from_slice(&(pid as u64).to_le_bytes());
                fields[START_TIME as usize..].copy_from_slice(&start.to_le_bytes());
                self.file.write_all_at(&fields, Self::slot_offset(slot)).at(&self.path)?;
                return Ok(slot);
            }
        }
        Err(Error::ReaderTableFull(self.slots as usize))
    }

    /// Releases a slot claimed through this open table.
    pub fn release(&self, slot: u64) {
        // Failure to unlock only delays reuse until this handle's file closes.
        let _ = sys::unlock_range(&self.file, Self::slot_offset(slot), SLOT_BYTES);
    }

    /// Records what the handle maps and last read, for `stat`.
    pub fn note(&self, slot: u64, generation: u64, version: u64) {
        let mut fields = [0u8; 16];
        fields[..8].copy_from_slice(&generation.to_le_bytes());
        fields[8..].copy_from_slice(&version.to_le_bytes());
        debug_assert_eq!((PIN_GENERATION, PIN_VERSION), (0, 8));
        // Informational: a failed write costs `stat` an outdated figure.
        let _ = self.file.write_all_at(&fields, Self::slot_offset(slot));
    }

    /// Live readers (this handle's own slot included): locked slots whose
    /// recorded process is still the one that claimed them.
    pub fn live(&self) -> Result<Vec<ReaderInfo>> {
        // Anyone may write the header's slot count: what is read is capped
        // by the file, not by the count alone.
        let file_len = self.file.metadata().at(&self.path)?.len();
        let mut bytes = vec![0u8; (self.slots * SLOT_BYTES).min(file_len.saturating_sub(HEADER)) as usize];
        let n = self.file.read_at(&mut bytes, HEADER).at(&self.path)?;
        bytes.truncate(n);
        // A lock probe sees the locks of every other open file, so a fresh
        // one (of this very file, not of whatever its name means now) sees
        // this handle's own slot too.
        let probe = File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd())).at(&self.path)?;
        let mut out = Vec::new();
        for info in used_slots(&bytes) {
            if !sys::range_is_locked(&probe, Self::slot_offset(info.slot), SLOT_BYTES).at(&self.path)? {
                continue;
            }
            if !sys::process_alive(info.pid, info.start_time) {
                continue;
            }
            out.push(info.reader);
        }
        Ok(out)
    }

    /// The count of readers asleep waiting for a version; 0 if it cannot
    /// be read (a cut table), which only delays their wake-up to their
    /// timeout.
    pub fn sleepers(&self) -> u32 {
        let mut word = [0u8; 4];
        match self.file.read_at(&mut word, OFF_SLEEPERS) {
            Ok(4) => u32::from_le_bytes(word),
            _ => 0,
        }
    }

    /// Adds `delta` to the sleepers count, under an OFD lock on its bytes,
    /// trying for the lock for at most `patience`: anyone who may read the
    /// store can hold that lock, and must not be able to stall another
    /// process. `Ok(false)`: the lock stayed taken; nothing was changed.
    pub fn add_sleeper(&self, delta: i32, patience: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + patience;
        while !sys::try_lock_range(&self.file, OFF_SLEEPERS, 4).at(&self.path)? {
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        let count = self.sleepers().saturating_add_signed(delta);
        let written = self.file.write_all_at(&count.to_le_bytes(), OFF_SLEEPERS).at(&self.path);
        let _ = sys::unlock_range(&self.file, OFF_SLEEPERS, 4);
        written.map(|()| true)
    }
}

/// The slot count a table's header declares, if the header is intact.
pub(crate) fn slots_of_header(h: &[u8]) -> Option<u64> {
    let word = |at: usize| Some(u64::from_le_bytes(h.get(at..at + 8)?.try_into().ok()?));
    let slots = word(8)?;
    (word(0)? == MAGIC && slots != 0 && slots <= MAX_SLOTS).then_some(slots)
}

/// A slot that was ever claimed, as its fields read.
pub(crate) struct UsedSlot {
    pub reader: ReaderInfo,
    pub slot: u64,
    pub pid: u32,
    /// The claiming process's start time, to tell it from a reused pid.
    pub start_time: u64,
}

/// The slots of `bytes` (the table past its header) that were ever
/// claimed; a slot cut short is not read.
pub(crate) fn used_slots(bytes: &[u8]) -> impl Iterator<Item = UsedSlot> + '_ {
    bytes.chunks_exact(SLOT_BYTES as usize).enumerate().filter_map(|(slot, fields)| {
        let word = |at: u64| u64::from_le_bytes(fields[at as usize..at as usize + 8].try_into().unwrap_or_default());
        let pid = word(PID) as u32;
        if pid == 0 {
            return None; // never used
        }
        let slot = slot as u64;
        let reader =
            ReaderInfo { slot, pid, pinned_generation: word(PIN_GENERATION), pinned_version: word(PIN_VERSION) };
        Some(UsedSlot { reader, slot, pid, start_time: word(START_TIME) })
    })
}
