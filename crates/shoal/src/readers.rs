//! The reader table: one 64-byte slot per live reader handle, in a small
//! shared file `readers`.
//!
//! A handle owns its slot by holding an open-file-description write lock on
//! the slot's bytes. The kernel drops that lock when the process dies, so a
//! crashed reader's slot is free again without anyone asking (DESIGN §8); the
//! slot also records the owner's pid and start time, a second opinion
//! against a lock kept alive by a forked child whose parent died.
//!
//! A slot's `pin_generation` says: this handle, or a snapshot taken from
//! it, may still read arena generations `>= pin`. A slot stays claimed until
//! its handle and all those snapshots are dropped (`snapshot::ReaderLease`);
//! the writer's process holds one too, for its own snapshots. The writer
//! frees an old generation file (deletes it, or keeps it as the spare that
//! the next compaction rewrites) only when no live slot pins it. Pin protocol (as LMDB's reader table): the reader
//! stores its pin, issues a SeqCst fence, then re-loads the control word; if
//! the generation changed it pins again. The writer publishes a new
//! generation, issues a SeqCst fence, then scans the pins. SeqCst fences are
//! totally ordered: if the reader's fence comes first, the writer's scan
//! sees the pin; if the writer's comes first, the reader's re-load sees the
//! new generation. Either way a generation a reader is about to open is
//! never freed under it. This matters because a freed file is recycled:
//! its bytes are rewritten in place for a newer generation.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::sys::{self, Mapping};

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
    map: Mapping,
    slots: u64,
    pub path: PathBuf,
}

/// What the writer sees of one live reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    pub slot: u64,
    pub pid: u32,
    pub pinned_generation: u64,
    pub pinned_version: u64,
}

impl ReaderTable {
    fn word(&self, slot: u64, field: u64) -> &AtomicU64 {
        debug_assert!(slot < self.slots);
        // SAFETY: HEADER + slot * 64 + field is 8-aligned and inside the file
        // (slot < slots, checked against the file length at open); table words
        // are only accessed atomically.
        unsafe { self.map.atomic_u64(HEADER + slot * SLOT_BYTES + field) }
    }

    /// The count of readers asleep waiting for a version (see
    /// `Control::wake_sleepers`).
    pub fn sleepers(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: OFF_SLEEPERS is 4-aligned and inside the header, which is
        // inside the mapping (checked at open); the word is only accessed
        // atomically, by every process that maps the table read-write.
        unsafe { self.map.atomic_u32(OFF_SLEEPERS) }
    }

    /// Creates the table if it does not exist, then opens it.
    pub fn create(dir: &Path) -> Result<ReaderTable> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            let tmp = dir.join("readers.tmp");
            let file = File::create(&tmp).at(&tmp)?;
            file.set_len(HEADER + DEFAULT_SLOTS * SLOT_BYTES).at(&tmp)?;
            use std::os::unix::fs::FileExt;
            let mut header = MAGIC.to_le_bytes().to_vec();
            header.extend_from_slice(&DEFAULT_SLOTS.to_le_bytes());
            file.write_all_at(&header, 0).at(&tmp)?;
            file.sync_all().at(&tmp)?;
            std::fs::rename(&tmp, &path).at(&path)?;
        }
        Self::open(dir)
    }

    pub fn open(dir: &Path) -> Result<ReaderTable> {
        let path = dir.join(FILE_NAME);
        let file = File::options().read(true).write(true).open(&path).at(&path)?;
        let mut header = [0u8; 16];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut header, 0).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let slots = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        if u64::from_le_bytes(header[..8].try_into().unwrap_or_default()) != MAGIC
            || slots == 0
            || slots > MAX_SLOTS
            || HEADER + slots * SLOT_BYTES > len
        {
            return Err(Error::Corrupt { file: path, offset: 0, detail: "bad reader table header".into() });
        }
        let map = Mapping::read_write(&file, HEADER + slots * SLOT_BYTES).at(&path)?;
        Ok(ReaderTable { file, map, slots, path })
    }

    /// Claims a free slot for this handle (the table must be this handle's own open).
    pub fn claim(&self) -> Result<u64> {
        let pid = std::process::id();
        let start = sys::process_start_time(pid).unwrap_or(0);
        for slot in 0..self.slots {
            if sys::try_lock_range(&self.file, HEADER + slot * SLOT_BYTES, SLOT_BYTES).at(&self.path)? {
                // Whatever the slot held belonged to a dead owner: start clean.
                self.word(slot, PIN_GENERATION).store(0, Ordering::SeqCst);
                self.word(slot, PIN_VERSION).store(0, Ordering::Relaxed);
                self.word(slot, PID).store(pid as u64, Ordering::Relaxed);
                self.word(slot, START_TIME).store(start, Ordering::Relaxed);
                return Ok(slot);
            }
        }
        Err(Error::ReaderTableFull(self.slots as usize))
    }

    /// Releases a slot claimed through this open table.
    pub fn release(&self, slot: u64) {
        self.word(slot, PIN_GENERATION).store(0, Ordering::SeqCst);
        // Failure to unlock only delays reuse until this handle's file closes.
        let _ = sys::unlock_range(&self.file, HEADER + slot * SLOT_BYTES, SLOT_BYTES);
    }

    /// Sync point: the pin is visible to the writer's scan before the reader
    /// re-checks the published generation (see the module docs).
    pub fn pin(&self, slot: u64, generation: u64) {
        self.word(slot, PIN_GENERATION).store(generation, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Records the newest version the handle took a snapshot of (for `stat`).
    #[inline]
    pub fn note_version(&self, slot: u64, version: u64) {
        self.word(slot, PIN_VERSION).store(version, Ordering::Relaxed);
    }

    /// Live readers: slots locked by a process that is still the one that
    /// claimed them.
    pub fn live(&self) -> Result<Vec<ReaderInfo>> {
        // Sync point: pairs with the fence after a reader's pin store (and the
        // writer's fence after publishing), see the module docs.
        fence(Ordering::SeqCst);
        let mut out = Vec::new();
        for slot in 0..self.slots {
            let pid = self.word(slot, PID).load(Ordering::Relaxed) as u32;
            if pid == 0 {
                continue; // never used
            }
            if !sys::range_is_locked(&self.file, HEADER + slot * SLOT_BYTES, SLOT_BYTES).at(&self.path)? {
                continue;
            }
            let start = self.word(slot, START_TIME).load(Ordering::Relaxed);
            if !sys::process_alive(pid, start) {
                continue;
            }
            out.push(ReaderInfo {
                slot,
                pid,
                pinned_generation: self.word(slot, PIN_GENERATION).load(Ordering::SeqCst),
                pinned_version: self.word(slot, PIN_VERSION).load(Ordering::Relaxed),
            });
        }
        Ok(out)
    }

    /// The oldest generation any slot may still read, if any. Only the
    /// lock decides here: a freed generation's file is rewritten, and the
    /// pid check [`ReaderTable::live`] adds can call a reader dead that is
    /// not (another pid namespace, a `/proc` it cannot see, a forked child
    /// still using the inherited handle).
    pub fn oldest_pinned_generation(&self) -> Result<Option<u64>> {
        // Sync point: as in `live`.
        fence(Ordering::SeqCst);
        let mut oldest: Option<u64> = None;
        for slot in 0..self.slots {
            if self.word(slot, PID).load(Ordering::Relaxed) == 0 {
                continue; // never used (a claim stores its pid before any pin)
            }
            if !sys::range_is_locked(&self.file, HEADER + slot * SLOT_BYTES, SLOT_BYTES).at(&self.path)? {
                continue;
            }
            let pin = self.word(slot, PIN_GENERATION).load(Ordering::SeqCst);
            if pin != 0 {
                oldest = Some(oldest.map_or(pin, |o| o.min(pin)));
            }
        }
        Ok(oldest)
    }
}
