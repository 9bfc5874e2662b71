//! The control file: the one word through which versions are published.
//!
//! `control` is a 4 KiB file every process maps (the writer read-write,
//! readers read-only). Its `current` word packs the generation and the arena
//! offset of the newest published commit record. Publication protocol: the
//! writer writes a version's nodes and then its commit record into the
//! arena, then stores `current` with `Release`; a reader loads `current` with
//! `Acquire`, so everything the record reaches is visible to it (invariant 2).
//! The word is 8-aligned and only ever accessed atomically.
//!
//! It also records the boot id of the writer that claimed it. After a
//! process crash the page cache (and so the arena bytes `current` points at)
//! is intact and the word can be trusted; after a reboot it cannot. So a
//! writer stamps the boot id only after it has recovered, verified, made
//! durable and published a version, and readers trust `current` only when
//! the stamp matches this boot; otherwise (no writer since the machine
//! started) they read the newest checkpoint named by `meta`, whose bytes were
//! synced before it was written. The mapping may be read-only, so readers
//! use relaxed loads followed by acquire fences (the only atomic loads Rust
//! defines on read-only memory).
//!
//! ```text
//! 4096 bytes
//!  0 u64 "SHOALCT1"   8 u64 current: generation << 40 | commit offset >> 3
//! 16 u64 writer pid   24 u64 writer start time (clock ticks since boot)
//! 32 u64 x2 boot id of the writer's boot
//! 48 u32 wake-up counter (futex)
//! 56 u64 highest generation number created this boot
//! 64 u64 poisoned: nonzero once the claiming writer failed a durability step
//! ```
//!
//! The poisoned word outlives the writer within the boot: the next writer
//! then recovers from the checkpoint and the journal, as after a reboot,
//! instead of trusting `current`, whose bytes a failed sync may never have
//! written (and a sync through a later open would not report it).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::error::{IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::sys::{self, SharedWords};

pub const FILE_NAME: &str = "control";
const LEN: u64 = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"SHOALCT1");
const OFF_MAGIC: u64 = 0;
const OFF_CURRENT: u64 = 8;
const OFF_WRITER_PID: u64 = 16;
const OFF_WRITER_START: u64 = 24;
const OFF_BOOT_ID: u64 = 32; // two words
/// A 32-bit futex word bumped after every publication.
const OFF_WAKE: u64 = 48;
/// The highest arena generation number the writers of this boot created.
const OFF_GENERATION_HIGH: u64 = 56;
/// Nonzero once the writer that claimed the file poisoned its store.
const OFF_POISONED: u64 = 64;

const OFFSET_BITS: u32 = 40;

/// How long a reader tries to count itself among the sleepers, and how long
/// it sleeps at a time when it cannot.
const UNCOUNTED_SLEEP: std::time::Duration = std::time::Duration::from_millis(1);

/// Packs a generation and an 8-aligned arena offset into one word.
pub fn pack(generation: u64, offset: u64) -> u64 {
    debug_assert!(offset.is_multiple_of(8) && offset >> 3 < 1 << OFFSET_BITS && generation < 1 << 24);
    generation << OFFSET_BITS | offset >> 3
}

pub fn unpack(word: u64) -> (u64, u64) {
    (word >> OFFSET_BITS, (word & ((1 << OFFSET_BITS) - 1)) << 3)
}

/// Largest generation that fits in the packed word.
pub const MAX_GENERATION: u64 = (1 << 24) - 1;

pub struct Control {
    words: SharedWords,
    pub path: PathBuf,
    _file: File,
}

impl Control {
    /// Readers' mappings are read-only, and reader code only does Relaxed
    /// loads on them (`current_word_if_boot`, `current_untrusted`, `writer`).
    fn word(&self, offset: u64) -> &AtomicU64 {
        self.words.u64(offset)
    }

    /// Opens (creating if needed) the control file read-write, for the writer.
    pub fn open_writer(dir: &StoreDir) -> Result<Control> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(FILE_NAME, Open::Create(FileKind::Data))?;
        if file.metadata().at(&path)?.len() < LEN {
            file.set_len(LEN).at(&path)?;
        }
        let words = SharedWords::map(&file, LEN, true).at(&path)?;
        Ok(Control { words, path, _file: file })
    }

    /// Opens the control file read-only, for readers.
    pub fn open_reader(dir: &StoreDir) -> Result<Control> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(FILE_NAME, Open::Read)?;
        if file.metadata().at(&path)?.len() < LEN {
            return Err(crate::Error::Corrupt { file: path, offset: 0, detail: "control file too short".into() });
        }
        let words = SharedWords::map(&file, LEN, false).at(&path)?;
        Ok(Control { words, path, _file: file })
    }

    /// The published word, if the file is initialised and was claimed by a
    /// writer during `boot` (else the page cache it points into may not have
    /// survived). Loads are `Relaxed` followed by an `Acquire` fence: the
    /// mapping may be read-only, and only relaxed loads are defined there.
    #[inline]
    pub fn current_word_if_boot(&self, boot: [u64; 2]) -> Option<u64> {
        let magic = self.word(OFF_MAGIC).load(Ordering::Relaxed);
        let claimed =
            [self.word(OFF_BOOT_ID).load(Ordering::Relaxed), self.word(OFF_BOOT_ID + 8).load(Ordering::Relaxed)];
        fence(Ordering::Acquire);
        if magic != MAGIC || claimed != boot || boot == [0, 0] {
            return None;
        }
        let word = self.word(OFF_CURRENT).load(Ordering::Relaxed);
        // Sync point: pairs with the Release store in `publish`.
        fence(Ordering::Acquire);
        (word != 0).then_some(word)
    }

    /// The published (generation, commit offset) whatever boot wrote it: only
    /// an upper bound of what readers of that boot may have read.
    pub fn current_untrusted(&self) -> Option<(u64, u64)> {
        let word = self.word(OFF_CURRENT).load(Ordering::Relaxed);
        (word != 0).then(|| unpack(word))
    }

    /// The published (generation, commit offset), if trustworthy this boot.
    pub fn current(&self) -> Option<(u64, u64)> {
        self.current_word_if_boot(this_boot()).map(unpack)
    }

    /// Records that the claiming writer failed a durability step: what it
    /// published may not be on disk, whatever a later sync reports.
    pub fn mark_poisoned(&self) {
        self.word(OFF_POISONED).store(1, Ordering::Release);
    }

    /// Whether a writer of this boot poisoned its store since the last claim.
    pub fn poisoned_this_boot(&self) -> bool {
        self.current().is_some() && self.word(OFF_POISONED).load(Ordering::Acquire) != 0
    }

    /// Publishes the recovered version, then records this writer and this
    /// boot: readers trust `current` only once the boot id matches, and by
    /// then it already points at a verified, durable version.
    pub fn claim(&self, generation: u64, offset: u64, pid: u32, start_time: u64) {
        self.publish(generation, offset);
        self.word(OFF_POISONED).store(0, Ordering::Release);
        self.word(OFF_WRITER_PID).store(pid as u64, Ordering::Relaxed);
        self.word(OFF_WRITER_START).store(start_time, Ordering::Relaxed);
        let boot = this_boot();
        self.word(OFF_BOOT_ID).store(boot[0], Ordering::Release);
        self.word(OFF_BOOT_ID + 8).store(boot[1], Ordering::Release);
        self.word(OFF_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// Publishes a commit record. Sync point: every node the record reaches
    /// was written before this `Release` store. Then bumps the wake-up
    /// counter; the caller wakes sleeping readers ([`Control::wake_sleepers`]).
    pub fn publish(&self, generation: u64, offset: u64) {
        self.word(OFF_CURRENT).store(pack(generation, offset), Ordering::Release);
        // Sync point for the reader-table protocol: the new word is ordered
        // before the writer's later scan of reader pins (see `readers`).
        fence(Ordering::SeqCst);
        self.wake_word().fetch_add(1, Ordering::SeqCst);
    }

    /// Wakes the readers sleeping on the wake-up counter, if any.
    ///
    /// Sleepers count themselves in the reader table (the only file readers
    /// may write), by `pwrite` under a lock. No lost wake-up: a sleeper
    /// increments the count, issues a SeqCst fence, then re-reads the
    /// counter before it sleeps; the writer increments the counter
    /// (`publish`), issues a SeqCst fence, then reads the count (`pread`).
    /// The fences are totally ordered, and the count's page is coherent
    /// between `pwrite` and `pread`, so either the writer sees the sleeper
    /// (and wakes it; a futex wait on a moved counter returns at once) or
    /// the sleeper sees the new counter (and does not sleep). With nobody
    /// asleep, a commit makes one `pread` for it. A sleeper killed in
    /// between leaves the count high, which only costs useless wakes; a
    /// count someone zeroed delays sleepers to their timeouts.
    pub fn wake_sleepers(&self, table: &crate::readers::ReaderTable) {
        fence(Ordering::SeqCst);
        if table.sleepers() == 0 {
            return;
        }
        if let Err(e) = sys::futex_wake_all(self.wake_word()) {
            tracing::warn!(error = %e, "futex wake failed; waiting readers will see the version at their timeout");
        }
    }

    /// Readers only load it (Relaxed) and futex-wait on it, which only reads.
    fn wake_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.words.u32(OFF_WAKE)
    }

    /// The wake-up counter, read before checking for a new version.
    pub fn wake_sequence(&self) -> u32 {
        let seq = self.wake_word().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        seq
    }

    /// Waits until the wake-up counter moves past `seq`, or `timeout`:
    /// first spinning for up to `spin` (a version published meanwhile is
    /// seen without a sleep and a wake-up, which cost tens of microseconds
    /// each), then sleeping on the futex, counted in `sleepers` (see
    /// [`Control::wake_sleepers`]) in the reader table.
    pub fn wait_past(
        &self,
        seq: u32,
        timeout: std::time::Duration,
        spin: std::time::Duration,
        table: Option<&crate::readers::ReaderTable>,
    ) -> Result<()> {
        let start = std::time::Instant::now();
        let spin = spin.min(timeout);
        while start.elapsed() < spin {
            for _ in 0..64 {
                if self.wake_sequence() != seq {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        let Some(table) = table else { return self.wait_uncounted(seq, remaining) };
        if !table.add_sleeper(1, remaining.min(UNCOUNTED_SLEEP))? {
            // Someone holds the count's lock: sleep uncounted, in short
            // slices, since the writer may not know to wake us.
            return self.wait_uncounted(seq, timeout.saturating_sub(start.elapsed()));
        }
        // Sync point: pairs with the fence in `wake_sleepers`.
        fence(Ordering::SeqCst);
        let result = if self.wake_word().load(Ordering::Relaxed) == seq {
            sys::futex_wait(self.wake_word(), seq, timeout.saturating_sub(start.elapsed())).at(&self.path)
        } else {
            Ok(())
        };
        // A count left high only costs the writer useless wake-ups.
        let _ = table.add_sleeper(-1, UNCOUNTED_SLEEP);
        result
    }

    /// Sleeps until the counter moves past `seq` or `timeout`, in slices of
    /// [`UNCOUNTED_SLEEP`], without counting as a sleeper.
    fn wait_uncounted(&self, seq: u32, timeout: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = std::time::Instant::now();
            if self.wake_sequence() != seq || now >= deadline {
                return Ok(());
            }
            let slice = (deadline - now).min(UNCOUNTED_SLEEP);
            sys::futex_wait(self.wake_word(), seq, slice).at(&self.path)?;
        }
    }

    /// Records that generation `g` is about to be created, before its file
    /// is: numbers are never reused within a boot (see `store::generations`).
    pub fn note_generation(&self, g: u64) {
        self.word(OFF_GENERATION_HIGH).fetch_max(g, Ordering::AcqRel);
    }

    /// The highest generation number created this boot, as recorded (0 if
    /// the file was claimed in another boot, when no reader can hold an old
    /// mapping).
    pub fn highest_generation(&self) -> u64 {
        match self.current_word_if_boot(this_boot()) {
            Some(_) => self.word(OFF_GENERATION_HIGH).load(Ordering::Acquire),
            None => 0,
        }
    }

    /// The writer that last claimed the store: (pid, start time).
    pub fn writer(&self) -> (u32, u64) {
        (self.word(OFF_WRITER_PID).load(Ordering::Relaxed) as u32, self.word(OFF_WRITER_START).load(Ordering::Relaxed))
    }
}

/// This boot's id as two words; `[0, 0]` when it cannot be read (never trusted).
pub fn this_boot() -> [u64; 2] {
    let id = sys::boot_id();
    [
        u64::from_le_bytes(id[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(id[8..].try_into().unwrap_or_default()),
    ]
}

/// What a reader makes of the control file's words, read from a copy of
/// its bytes rather than the shared mapping: the same checks as
/// [`Control::current_word_if_boot`], [`Control::writer`] and
/// [`Control::highest_generation`], for tests and tools that inspect a
/// file. `None` when the bytes are shorter than the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Words {
    /// The published (generation, commit offset), if trusted for `boot`.
    pub current: Option<(u64, u64)>,
    /// The published (generation, commit offset) whatever boot wrote it.
    pub current_untrusted: Option<(u64, u64)>,
    pub writer: (u32, u64),
    pub highest_generation: u64,
    pub wake: u32,
}

pub(crate) fn words_of(bytes: &[u8], boot: [u64; 2]) -> Option<Words> {
    if (bytes.len() as u64) < LEN {
        return None;
    }
    let word = |at: u64| crate::node::u64_at(bytes, at as usize).unwrap_or(0);
    let trusted = word(OFF_MAGIC) == MAGIC && [word(OFF_BOOT_ID), word(OFF_BOOT_ID + 8)] == boot && boot != [0, 0];
    let current = word(OFF_CURRENT);
    let published = (current != 0).then(|| unpack(current));
    Some(Words {
        current: published.filter(|_| trusted),
        current_untrusted: published,
        writer: (word(OFF_WRITER_PID) as u32, word(OFF_WRITER_START)),
        highest_generation: if trusted && current != 0 { word(OFF_GENERATION_HIGH) } else { 0 },
        wake: crate::node::u32_at(bytes, OFF_WAKE as usize).unwrap_or(0),
    })
}
