//! What a process may read of an arena generation, and which of its nodes
//! it has checked.
//!
//! Every node a process reads is checked against its checksum before its
//! bytes are used, once per mapping of a generation (a `Reader` handle's,
//! or the writer's): a [`Verified`] bitmap (one bit per 8-byte offset, in
//! chunks allocated when first touched) is shared by every snapshot of the
//! mapping and every thread that reads them, so the steady-state read path
//! pays a bit test, not a checksum. Bytes below a published high-water mark
//! never change (invariant 1), so a node found intact once stays intact.
//! Bits are set only after a check passes; a damaged node is checked, and
//! refused, every time it is met.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::{node_at, verified_node_at, Parse};

/// Arena bytes covered by one chunk of the bitmap (its bits: 32 KiB).
const CHUNK_BYTES: u64 = 16 << 20;
const WORDS_PER_CHUNK: usize = (CHUNK_BYTES / 8 / 64) as usize;

/// The bits of one chunk, allocated when first set.
type Chunk = OnceLock<Box<[AtomicU64]>>;

/// Which nodes of one mapped generation this process has checked.
pub struct Verified {
    chunks: Box<[Chunk]>,
}

impl Verified {
    /// A bitmap for an arena of up to `len` bytes.
    pub fn new(len: u64) -> Verified {
        let chunks = len.div_ceil(CHUNK_BYTES) as usize;
        Verified { chunks: (0..chunks).map(|_| OnceLock::new()).collect() }
    }

    /// The word and bit of `offset` (8-aligned), if inside the bitmap.
    #[inline]
    fn locate(&self, offset: u64) -> Option<(&Chunk, usize, u64)> {
        let chunk = self.chunks.get((offset / CHUNK_BYTES) as usize)?;
        let slot = (offset % CHUNK_BYTES) / 8;
        Some((chunk, (slot / 64) as usize, 1 << (slot % 64)))
    }

    #[inline]
    pub fn is_set(&self, offset: u64) -> bool {
        match self.locate(offset) {
            Some((chunk, word, bit)) => chunk.get().is_some_and(|words| words[word].load(Ordering::Relaxed) & bit != 0),
            None => false,
        }
    }

    /// Records that the node at `offset` passed its check.
    pub fn set(&self, offset: u64) {
        if let Some((chunk, word, bit)) = self.locate(offset) {
            let words = chunk.get_or_init(|| (0..WORDS_PER_CHUNK).map(|_| AtomicU64::new(0)).collect());
            words[word].fetch_or(bit, Ordering::Relaxed);
        }
    }
}

/// The readable prefix of an arena generation, with the bitmap of its
/// checked nodes: what every parser of nodes reads through.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    bytes: &'a [u8],
    verified: &'a Verified,
}

impl<'a> Region<'a> {
    pub fn new(bytes: &'a [u8], verified: &'a Verified) -> Region<'a> {
        Region { bytes, verified }
    }

    /// The raw bytes, unchecked.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The byte at `offset` (a node's kind), unchecked.
    #[inline]
    pub fn kind_at(&self, offset: u64) -> Option<u8> {
        self.bytes.get(offset as usize).copied()
    }

    /// Starts loading the first `len` bytes at `offset` (those in the
    /// region) into the CPU's caches: a node's header and the arrays after
    /// it arrive together instead of one after the other.
    #[inline(always)]
    pub fn prefetch(&self, offset: u64, len: usize) {
        let start = (offset as usize).min(self.bytes.len());
        let end = start.saturating_add(len).min(self.bytes.len());
        crate::sys::prefetch(&self.bytes[start..end]);
    }

    /// The node of `kind` at `offset`: bounds and kind checked, and its
    /// checksum the first time this process reads it.
    #[inline]
    pub fn node(&self, offset: u64, kind: u8) -> Parse<&'a [u8]> {
        if self.verified.is_set(offset) {
            return node_at(self.bytes, offset, kind);
        }
        self.check(offset, kind)
    }

    #[cold]
    fn check(&self, offset: u64, kind: u8) -> Parse<&'a [u8]> {
        let node = verified_node_at(self.bytes, offset, kind)?;
        self.verified.set(offset);
        Ok(node)
    }

    /// A region over `bytes` with a bitmap of its own (leaked), for tests
    /// of code that parses nodes.
    #[cfg(test)]
    pub fn for_test(bytes: &'a [u8]) -> Region<'a> {
        Region::new(bytes, Box::leak(Box::new(Verified::new(bytes.len() as u64 + 8))))
    }
}
