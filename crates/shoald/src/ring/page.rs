//! The ring pages: `struct xenstore_domain_interface` (`xs_wire.h`), one
//! 4 KiB page per domain, shared with a guest that may write any byte of
//! it at any moment.
//!
//! ```text
//!     0 ┌──────────────────────────┐
//!       │ requests (1024 bytes)    │  guest → daemon
//!  1024 ├──────────────────────────┤
//!       │ responses (1024 bytes)   │  daemon → guest
//!  2048 ├──────┬──────┬──────┬─────┤
//!       │req   │req   │rsp   │rsp  │  u32 free-running offsets
//!       │cons  │prod  │cons  │prod │  (byte x lives at x mod 1024)
//!  2064 ├──────┼──────┼──────┼─────┘
//!       │server│conn- │error │
//!       │feat. │ection│      │
//!  2076 └──────┴──────┴──────┘
//! ```
//!
//! This module is the only place that touches the shared bytes, and it does
//! so through atomics only: a guest writing while the daemon reads can make
//! the values it reads wrong, never the read itself undefined. Every value
//! read from the page is checked by the caller before it is used.

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

/// Bytes in one ring page.
pub const PAGE_SIZE: usize = 4096;
/// Bytes in each of the two circular buffers.
pub const RING_SIZE: u32 = 1024;

pub const REQ_CONS: usize = 2048;
pub const REQ_PROD: usize = 2052;
pub const RSP_CONS: usize = 2056;
pub const RSP_PROD: usize = 2060;
pub const SERVER_FEATURES: usize = 2064;
pub const CONNECTION: usize = 2068;
pub const ERROR: usize = 2072;

/// `XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR`.
pub const FEATURES: u32 = 1 | 2;
pub const CONNECTED: u32 = 0;
pub const RECONNECT: u32 = 1;
/// Values of the error field.
pub const ERROR_NONE: u32 = 0;
pub const ERROR_RINGIDX: u32 = 2;
pub const ERROR_PROTO: u32 = 3;

/// A shared mapping of whole ring pages (a file of `pages × 4096` bytes).
pub struct Pages {
    map: MmapRaw,
    pages: usize,
}

impl Pages {
    /// Maps `file` read-write, shared: its size must be a whole number of
    /// pages and must not change while mapped (the file belongs to the
    /// hypervisor, or the simulator standing in for it, which is trusted as
    /// a hypervisor is; guests only reach the bytes inside their page).
    pub fn map(file: &File) -> std::io::Result<Arc<Pages>> {
        let len = file.metadata()?.len() as usize;
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a ring pages file holds whole 4096-byte pages; this one has {len} bytes"),
            ));
        }
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Arc::new(Pages { map, pages: len / PAGE_SIZE }))
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Page `index`, if the mapping has it.
    pub fn page(self: &Arc<Pages>, index: usize) -> Option<Page> {
        (index < self.pages).then(|| Page { pages: self.clone(), base: index * PAGE_SIZE })
    }
}

/// One domain's page.
#[derive(Clone)]
pub struct Page {
    pages: Arc<Pages>,
    base: usize,
}

impl Page {
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= PAGE_SIZE, "a field inside the page");
        // SAFETY: `base + offset + 4 <= pages × PAGE_SIZE` (asserted above and
        // `base` is a page index below `pages`), the mapping's
        // length, which lives as long as `self.pages`; the address is 4-byte
        // aligned (the mapping is page-aligned and offsets are multiples of
        // 4). The bytes are shared with another process, so they are only
        // ever accessed as atomics, never through a plain reference.
        unsafe { &*(self.pages.map.as_mut_ptr().add(self.base + offset) as *const AtomicU32) }
    }

    fn byte(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < PAGE_SIZE, "a byte inside the page");
        // SAFETY: as in `word`: in bounds of the live mapping, and only
        // accessed atomically.
        unsafe { &*(self.pages.map.as_mut_ptr().add(self.base + offset) as *const AtomicU8) }
    }

    /// Reads a field, ordered after the other side's release store.
    pub fn load(&self, field: usize) -> u32 {
        self.word(field).load(Ordering::Acquire)
    }

    /// Writes a field, ordered after the data it publishes.
    pub fn store(&self, field: usize, value: u32) {
        self.word(field).store(value, Ordering::Release)
    }

    /// Copies `out.len()` bytes of the ring starting at `ring` (0: the
    /// requests, 1024: the responses) from stream offset `at`, wrapping.
    pub fn copy_out(&self, ring: usize, at: u32, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let offset = ring + ((at as usize + i) % RING_SIZE as usize);
            *b = self.byte(offset).load(Ordering::Relaxed);
        }
    }

    /// Copies `bytes` into the ring starting at `ring` at stream offset `at`.
    pub fn copy_in(&self, ring: usize, at: u32, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let offset = ring + ((at as usize + i) % RING_SIZE as usize);
            self.byte(offset).store(b, Ordering::Relaxed);
        }
    }
}
