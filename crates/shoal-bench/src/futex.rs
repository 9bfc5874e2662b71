//! The machine's floor for waking a waiting process (row 5g): one process
//! sleeps in `FUTEX_WAIT` on a word of a shared file mapping, another stamps
//! `CLOCK_MONOTONIC` and wakes it, and the sleeper stamps the clock when it
//! runs again. A waiting reader that has gone to sleep can see a commit no
//! sooner than this, so its percentiles bound what rows 5b and 5c can reach
//! once the reader's spin has ended.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::futex;

use crate::Result;

/// The value that tells the sleeper to stop.
const STOP: u32 = u32::MAX;

/// A 32-bit word in a page of a file that several processes map.
pub struct SharedWord {
    map: memmap2::MmapMut,
    _file: File,
}

impl SharedWord {
    /// Creates the file (one zeroed page) and maps it.
    pub fn create(path: &Path) -> Result<SharedWord> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.set_len(4096)?;
        Self::map(file)
    }

    /// Maps the file another process created.
    pub fn open(path: &Path) -> Result<SharedWord> {
        Self::map(std::fs::OpenOptions::new().read(true).write(true).open(path)?)
    }

    fn map(file: File) -> Result<SharedWord> {
        // SAFETY: the file is this harness's own, one page long, and never
        // truncated while mapped; both processes touch it only through
        // `word`'s atomics.
        let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        if map.len() < 4 {
            return Err("the shared word's file is shorter than a word".into());
        }
        Ok(SharedWord { map, _file: file })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping starts on a page boundary (so the pointer is
        // aligned for a u32), is at least 4 bytes long (checked in `map`),
        // and lives as long as `self`; every access, in any process, is
        // atomic.
        unsafe { &*self.map.as_ptr().cast::<AtomicU32>() }
    }

    /// Sleeps until the word differs from `last`; returns the new value.
    pub fn wait_change(&self, last: u32) -> u32 {
        loop {
            let now = self.word().load(Ordering::Acquire);
            if now != last {
                return now;
            }
            // EAGAIN (changed meanwhile) and EINTR just loop.
            let _ = futex::wait(self.word(), futex::Flags::empty(), last, None);
        }
    }

    /// Changes the word and wakes its sleepers.
    pub fn bump(&self) {
        let next = self.word().load(Ordering::Relaxed).wrapping_add(1) % STOP;
        self.set(next);
    }

    /// Tells the sleeper to stop.
    pub fn stop(&self) {
        self.set(STOP);
    }

    fn set(&self, value: u32) {
        self.word().store(value, Ordering::Release);
        let _ = futex::wake(self.word(), futex::Flags::empty(), u32::MAX);
    }

    pub fn is_stop(value: u32) -> bool {
        value == STOP
    }
}
