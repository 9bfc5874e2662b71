//! Node layout: how tree nodes, value blobs and commit records sit in the arena.
//!
//! Every node starts with a 16-byte header and is 8-byte aligned; all
//! integers are little-endian (chosen once, for every file):
//!
//! ```text
//! 0  u8  kind        1 leaf, 2 internal, 3 value blob, 4 commit record
//! 1  u8  reserved (0)
//! 2  u16 count       entries (leaf), children (internal), 0 otherwise
//! 4  u32 len         whole node in bytes, header included, multiple of 8
//! 8  u32 crc32c      of bytes [12, len) followed by bytes [0, 8)
//! 12 u16 prefix_len  (leaf, internal; 0 otherwise)
//! 14 u16 reserved (0)
//! ```
//!
//! Leaves and internal nodes store the prefix their keys share once (its
//! length in header bytes 12..14), then per key an 8-byte *hint*: the first
//! eight bytes after the prefix, big-endian, zero-padded. A search compares
//! the prefix once, then binary-searches the contiguous hint array (a few
//! cache lines) and compares whole suffixes only among equal hints.
//!
//! Leaf: `prefix`, pad to 8, `u64 hint[count]`, `u32 entry_offset[count]`,
//! then entries, each `u16 suffix_len, u8 flags, u8 0, u32 value_len,
//! [u64 blob offset if flags&1], suffix, [value if inline], [if flags&2, a
//! link: u64 target root, u64 nodes below, u16 source key length, source
//! key]`. The link's `u64 nodes below` is a *weight* word, as below.
//!
//! A *link* entry (copy of a subtree by reference) stands for its node and
//! everything below it: the subtree below the link's source key in the
//! tree at its target root, with that key replaced by the entry's own. Its
//! value is the node's own. In a tree holding a link, no key lies strictly
//! below the link's key (writes there split the link first, see
//! [`crate::build`]), so a lookup that misses finds the link covering it
//! as the entry just before its position. A link's target root points
//! backwards like every offset; 0 is an empty subtree.
//!
//! Internal: `prefix`, pad to 8, `u64 child[count]`, `u64 weight[count]`,
//! `u64 hint[count]`, `u32 key_offset[count]`, then key suffixes as
//! `u16 len, bytes`. `key[i]` is the smallest key under `child[i]`.
//!
//! A *weight* word packs two figures of a subtree: bits 0..48 count its
//! keys (nodes), bits 48..64 give the length of its longest key (for a
//! link: of the longest key suffix below the link's source). The lengths
//! let a copy of a subtree to a deeper place be refused, without reading
//! the subtree, when it would make a path longer than the limit.
//!
//! Value blob: the value's bytes after the header.
//!
//! Commit record: `u64 version, u64 root (0: empty tree), u64 prev commit
//! (0: none), u64 end (arena high-water mark including this record),
//! u64 commit time (ns since the Unix epoch), u64 key count`.
//!
//! Invariants: a node is written whole before anything that points at it
//! (children precede parents, the commit record comes last), so every offset
//! in a node points backwards, below the node itself. Parsing never trusts
//! the bytes: every offset and length is bounds-checked against the region a
//! snapshot may read, and damage surfaces as [`Error::Corrupt`].

use std::cmp::Ordering;

use crate::error::Error;

pub const KIND_LEAF: u8 = 1;
pub const KIND_INTERNAL: u8 = 2;
pub const KIND_BLOB: u8 = 3;
pub const KIND_COMMIT: u8 = 4;
pub const KIND_CHANGES: u8 = 5;

pub const HEADER_BYTES: usize = 16;
pub const COMMIT_BYTES: usize = HEADER_BYTES + 64;
/// Most bytes of entries one change set lists. A version that changes more
/// (a bulk load, a large subtree deletion) records only that it changed
/// much, and watchers resynchronize.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
/// Values up to this size live inside their leaf; larger ones in a blob node.
pub const INLINE_VALUE_MAX: usize = 256;
/// Values at least this long start on a page boundary of the arena file
/// (their blob is preceded by unreferenced zero padding), so a
/// [`crate::BufRef`] to one covers whole pages: `sendfile`, `splice` or a
/// receiver's own `mmap` of those pages moves them without copying partial
/// ones. At most a page of padding per such value, under 25% of it (with
/// 4 KiB pages; see [`page_aligned`] for larger ones).
pub const PAGE_ALIGNED_VALUE_MIN: usize = 16 << 10;

/// Whether a value of `len` bytes is stored page-aligned: at least
/// [`PAGE_ALIGNED_VALUE_MIN`] and four pages, so padding stays under 25%.
pub fn page_aligned(len: usize, page: u64) -> bool {
    len >= PAGE_ALIGNED_VALUE_MIN && len as u64 >= 4 * page
}
/// Nodes are cut to about this size when written.
pub const NODE_TARGET_BYTES: usize = 2048;
/// Largest entry count a node may hold (u16).
pub const MAX_COUNT: usize = u16::MAX as usize;

const FLAG_BLOB: u8 = 1;
const FLAG_LINK: u8 = 2;

/// A subtree copied by reference: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link<'a> {
    /// Root of the tree the subtree is read from (0: nothing below).
    pub root: u64,
    /// The source node's key in that tree.
    pub src: &'a [u8],
    /// Nodes strictly below the source node, for key counts.
    pub keys: u64,
    /// The longest key strictly below the source node, minus the source
    /// key's length (0: nothing below).
    pub longest: u16,
}

/// Bits of a weight word that count keys; the rest hold a key length.
const WEIGHT_KEY_BITS: u32 = 48;
const WEIGHT_KEYS_MAX: u64 = (1 << WEIGHT_KEY_BITS) - 1;

/// Packs a key count (saturated at 2^48 − 1) and a key length into a weight word.
pub fn pack_weight(keys: u64, longest: u16) -> u64 {
    keys.min(WEIGHT_KEYS_MAX) | (longest as u64) << WEIGHT_KEY_BITS
}

/// The key count and key length of a weight word.
pub fn unpack_weight(word: u64) -> (u64, u16) {
    (word & WEIGHT_KEYS_MAX, (word >> WEIGHT_KEY_BITS) as u16)
}

impl Link<'_> {
    fn stored_len(&self) -> usize {
        18 + self.src.len()
    }
}

#[inline]
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
#[inline]
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
#[inline]
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The checksum stored in a node header: every byte but the checksum's own.
pub fn node_crc(node: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c_bulk(&node[12..]), &node[..8])
}

/// CRC32C of a node-sized or larger buffer: the same value as
/// `crc32c::crc32c`, computed with carry-less multiplication folding
/// (`crc-fast`), 4–5× faster on 2 KiB than the crc32 instruction alone
/// (27 against 129 ns on the bench machine), which a commit pays on every
/// node it writes.
pub fn crc32c_bulk(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Fills in `len` and the checksum of a node built in `buf` (header first).
pub fn seal(buf: &mut Vec<u8>) {
    buf.resize(align8(buf.len()), 0);
    let len = buf.len() as u32;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = node_crc(buf);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Where damage was found, for error messages; filled in by the caller that
/// knows the file.
#[derive(Debug)]
pub struct Damage {
    pub offset: u64,
    pub detail: String,
}

impl Damage {
    pub fn new(offset: u64, detail: impl Into<String>) -> Self {
        Damage { offset, detail: detail.into() }
    }
    pub fn into_error(self, file: &std::path::Path) -> Error {
        Error::Corrupt { file: file.to_path_buf(), offset: self.offset, detail: self.detail }
    }
}

pub type Parse<T> = std::result::Result<T, Damage>;

/// The bytes of the node at `offset` in `region` (the readable arena prefix),
/// checked for kind and bounds, not for checksum.
#[inline]
pub fn node_at(region: &[u8], offset: u64, kind: u8) -> Parse<&[u8]> {
    let at = offset as usize;
    let bad = || Damage::new(offset, format!("bad node header (expected kind {kind})"));
    if offset == 0 || !offset.is_multiple_of(8) || offset >= region.len() as u64 {
        return Err(bad());
    }
    let len = u32_at(region, at + 4).ok_or_else(bad)? as usize;
    if region.get(at) != Some(&kind) || len < HEADER_BYTES || !len.is_multiple_of(8) {
        return Err(bad());
    }
    region.get(at..at + len).ok_or_else(bad)
}

/// As [`node_at`], and verifies the checksum.
pub fn verified_node_at(region: &[u8], offset: u64, kind: u8) -> Parse<&[u8]> {
    let node = node_at(region, offset, kind)?;
    let stored = u32_at(node, 8).unwrap_or(0);
    let computed = node_crc(node);
    if stored != computed {
        return Err(Damage::new(
            offset,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    Ok(node)
}

#[inline]
pub fn count(node: &[u8]) -> usize {
    u16::from_le_bytes([node[2], node[3]]) as usize
}

/// A value as stored in a leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRepr<'a> {
    Inline(&'a [u8]),
    /// Offset of a blob node, and the value's length.
    Blob {
        offset: u64,
        len: u32,
    },
}

impl ValueRepr<'_> {
    fn stored_len(&self) -> usize {
        match self {
            ValueRepr::Inline(v) => v.len(),
            ValueRepr::Blob { .. } => 8,
        }
    }
}

/// A key held in two pieces (a node's shared prefix and an entry's suffix)
/// so that nothing is copied to compare or rebuild it.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    pub head: &'a [u8],
    pub tail: &'a [u8],
}

impl<'a> Key<'a> {
    pub fn whole(bytes: &'a [u8]) -> Self {
        Key { head: bytes, tail: &[] }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Compares with a contiguous key.
    #[inline]
    pub fn cmp_bytes(&self, other: &[u8]) -> Ordering {
        let h = self.head.len().min(other.len());
        match self.head[..h].cmp(&other[..h]) {
            Ordering::Equal => {}
            o => return o,
        }
        if h < self.head.len() {
            return Ordering::Greater;
        }
        self.tail.cmp(&other[h..])
    }

    pub fn cmp_key(&self, other: &Key<'_>) -> Ordering {
        if std::ptr::eq(self.head, other.head) {
            return self.tail.cmp(other.tail);
        }
        // Piece by piece, a slice comparison at a time (not byte by byte).
        let (mut a, mut b) = ((self.head, self.tail), (other.head, other.tail));
        loop {
            if a.0.is_empty() {
                if a.1.is_empty() {
                    return if b.0.is_empty() && b.1.is_empty() { Ordering::Equal } else { Ordering::Less };
                }
                a = (a.1, &[]);
            }
            if b.0.is_empty() {
                if b.1.is_empty() {
                    return Ordering::Greater;
                }
                b = (b.1, &[]);
            }
            let n = a.0.len().min(b.0.len());
            match a.0[..n].cmp(&b.0[..n]) {
                Ordering::Equal => {}
                o => return o,
            }
            (a.0, b.0) = (&a.0[n..], &b.0[n..]);
        }
    }

    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        self.len() == other.len() && self.cmp_bytes(other) == Ordering::Equal
    }

    pub fn extend_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head);
        out.extend_from_slice(self.tail);
    }

    pub fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.extend_into(&mut v);
        v
    }

    fn byte(&self, i: usize) -> u8 {
        if i < self.head.len() {
            self.head[i]
        } else {
            self.tail[i - self.head.len()]
        }
    }

    /// Whether this key lies in the subtree rooted at `root` (itself included).
    #[inline]
    pub fn in_subtree(&self, root: &[u8]) -> bool {
        if root.is_empty() {
            return true;
        }
        let n = root.len();
        if self.len() < n {
            return false;
        }
        // The first n bytes equal `root`, and the next is a separator (or the end).
        let h = self.head.len().min(n);
        if self.head[..h] != root[..h] || self.tail[..n - h] != root[h..] {
            return false;
        }
        self.len() == n || self.byte(n) == 0
    }

    fn common_prefix_len(&self, other: &Key<'_>) -> usize {
        let n = self.len().min(other.len());
        (0..n).find(|&i| self.byte(i) != other.byte(i)).unwrap_or(n)
    }

    /// Appends the bytes from `start` on.
    fn extend_from(&self, start: usize, out: &mut Vec<u8>) {
        if start < self.head.len() {
            out.extend_from_slice(&self.head[start..]);
            out.extend_from_slice(self.tail);
        } else {
            out.extend_from_slice(&self.tail[start - self.head.len()..]);
        }
    }

    fn hint_from(&self, start: usize) -> u64 {
        // Up to eight bytes from `start`, from the head and then the tail.
        let mut bytes = [0u8; 8];
        let from_head = self.head.get(start..).unwrap_or(&[]);
        let n = from_head.len().min(8);
        bytes[..n].copy_from_slice(&from_head[..n]);
        let tail_start = start.saturating_sub(self.head.len());
        let from_tail = self.tail.get(tail_start..).unwrap_or(&[]);
        let m = from_tail.len().min(8 - n);
        bytes[n..n + m].copy_from_slice(&from_tail[..m]);
        u64::from_be_bytes(bytes)
    }
}

/// The hint of a key suffix: its first eight bytes, big-endian, zero-padded.
#[inline]
pub fn hint_of(suffix: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = suffix.len().min(8);
    bytes[..n].copy_from_slice(&suffix[..n]);
    u64::from_be_bytes(bytes)
}

/// Lower bound of `q` among `count` keys that all start with `prefix`:
/// the index of the first key `>= q`, and whether it equals `q`.
#[inline]
fn lower_bound<'a>(
    count: usize,
    prefix: &[u8],
    hint: impl Fn(usize) -> u64,
    suffix: impl Fn(usize) -> Parse<&'a [u8]>,
    q: &[u8],
) -> Parse<(usize, bool)> {
    let n = prefix.len().min(q.len());
    match q[..n].cmp(&prefix[..n]) {
        Ordering::Less => return Ok((0, false)),
        Ordering::Greater => return Ok((count, false)),
        Ordering::Equal if q.len() < prefix.len() => return Ok((0, false)),
        Ordering::Equal => {}
    }
    let rest = &q[prefix.len()..];
    let h = hint_of(rest);
    // First index whose hint is >= h, then the first whose hint is > h.
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if hint(mid) < h {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (mut end, mut hi) = (lo, count);
    while end < hi {
        let mid = (end + hi) / 2;
        if hint(mid) <= h {
            end = mid + 1;
        } else {
            hi = mid;
        }
    }
    // Among equal hints, compare whole suffixes.
    let (mut a, mut b) = (lo, end);
    while a < b {
        let mid = (a + b) / 2;
        match suffix(mid)?.cmp(rest) {
            Ordering::Less => a = mid + 1,
            Ordering::Equal => return Ok((mid, true)),
            Ordering::Greater => b = mid,
        }
    }
    Ok((a, false))
}

fn prefix_of(node: &[u8], offset: u64) -> Parse<&[u8]> {
    let len = u16_at(node, 12).unwrap_or(0) as usize;
    node.get(HEADER_BYTES..HEADER_BYTES + len).ok_or_else(|| Damage::new(offset, "key prefix out of bounds"))
}

/// One leaf entry, borrowed from the arena.
#[derive(Clone, Copy, Debug)]
pub struct LeafEntry<'a> {
    pub key: Key<'a>,
    pub value: ValueRepr<'a>,
    pub link: Option<Link<'a>>,
}

impl LeafEntry<'_> {
    /// Nodes this entry stands for: itself, and a link's subtree.
    pub fn weight(&self) -> u64 {
        self.link.map_or(0, |l| l.keys).saturating_add(1)
    }

    /// The longest key this entry stands for (a link's included).
    pub fn longest(&self) -> u16 {
        entry_longest(&self.key, self.link)
    }
}

fn entry_longest(key: &Key<'_>, link: Option<Link<'_>>) -> u16 {
    (key.len() + link.map_or(0, |l| l.longest as usize)).min(u16::MAX as usize) as u16
}

/// A parsed leaf: the arrays are bounds-checked once, here.
#[derive(Clone, Copy)]
pub struct LeafView<'a> {
    node: &'a [u8],
    offset: u64,
    count: usize,
    prefix: &'a [u8],
    hints: usize,
    slots: usize,
}

impl<'a> LeafView<'a> {
    #[inline]
    pub fn parse(region: &'a [u8], offset: u64) -> Parse<Self> {
        Self::from_node(node_at(region, offset, KIND_LEAF)?, offset)
    }

    pub fn from_node(node: &'a [u8], offset: u64) -> Parse<Self> {
        let count = count(node);
        let prefix = prefix_of(node, offset)?;
        let hints = (HEADER_BYTES + prefix.len()).next_multiple_of(8);
        let slots = hints + 8 * count;
        if slots + 4 * count > node.len() {
            return Err(Damage::new(offset, "leaf arrays out of bounds"));
        }
        Ok(LeafView { node, offset, count, prefix, hints, slots })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Where this leaf is in the arena.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    #[inline]
    fn hint(&self, i: usize) -> u64 {
        let at = self.hints + 8 * i;
        let b = &self.node[at..at + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    #[inline]
    fn slot(&self, i: usize) -> usize {
        let at = self.slots + 4 * i;
        u32::from_le_bytes([self.node[at], self.node[at + 1], self.node[at + 2], self.node[at + 3]]) as usize
    }

    #[inline]
    fn suffix(&self, i: usize) -> Parse<&'a [u8]> {
        let at = self.slot(i);
        let node: &'a [u8] = self.node;
        let bad = || Damage::new(self.offset, format!("leaf entry {i} out of bounds"));
        let len = u16_at(node, at).ok_or_else(bad)? as usize;
        let flags = *node.get(at + 2).ok_or_else(bad)?;
        let start = if flags & FLAG_BLOB != 0 { at + 16 } else { at + 8 };
        node.get(start..start + len).ok_or_else(bad)
    }

    /// Entry `i`.
    #[inline]
    pub fn entry(&self, i: usize) -> Parse<LeafEntry<'a>> {
        let at = self.slot(i);
        let node: &'a [u8] = self.node;
        let bad = || Damage::new(self.offset, format!("leaf entry {i} out of bounds"));
        let len = u16_at(node, at).ok_or_else(bad)? as usize;
        let flags = *node.get(at + 2).ok_or_else(bad)?;
        let value_len = u32_at(node, at + 4).ok_or_else(bad)?;
        let (value, end) = if flags & FLAG_BLOB != 0 {
            let blob = u64_at(node, at + 8).ok_or_else(bad)?;
            (ValueRepr::Blob { offset: blob, len: value_len }, at + 16 + len)
        } else {
            let v = at + 8 + len;
            (ValueRepr::Inline(node.get(v..v + value_len as usize).ok_or_else(bad)?), v + value_len as usize)
        };
        let tail_at = if flags & FLAG_BLOB != 0 { at + 16 } else { at + 8 };
        let tail = node.get(tail_at..tail_at + len).ok_or_else(bad)?;
        let link = if flags & FLAG_LINK != 0 { Some(self.link_at(end)?) } else { None };
        Ok(LeafEntry { key: Key { head: self.prefix, tail }, value, link })
    }

    #[cold]
    fn link_at(&self, at: usize) -> Parse<Link<'a>> {
        let node: &'a [u8] = self.node;
        let bad = || Damage::new(self.offset, "link entry out of bounds");
        let root = u64_at(node, at).ok_or_else(bad)?;
        let (keys, longest) = unpack_weight(u64_at(node, at + 8).ok_or_else(bad)?);
        let src_len = u16_at(node, at + 16).ok_or_else(bad)? as usize;
        let src = node.get(at + 18..at + 18 + src_len).ok_or_else(bad)?;
        if root >= self.offset {
            return Err(Damage::new(self.offset, "link target does not point backwards"));
        }
        Ok(Link { root, src, keys, longest })
    }

    /// Index of the first entry `>= q`, and whether it equals `q`.
    #[inline]
    pub fn search(&self, q: &[u8]) -> Parse<(usize, bool)> {
        lower_bound(self.count, self.prefix, |i| self.hint(i), |i| self.suffix(i), q)
    }
}

/// A parsed internal node.
#[derive(Clone, Copy)]
pub struct InternalView<'a> {
    node: &'a [u8],
    offset: u64,
    count: usize,
    prefix: &'a [u8],
    children: usize,
}

impl<'a> InternalView<'a> {
    #[inline]
    pub fn parse(region: &'a [u8], offset: u64) -> Parse<Self> {
        Self::from_node(node_at(region, offset, KIND_INTERNAL)?, offset)
    }

    pub fn from_node(node: &'a [u8], offset: u64) -> Parse<Self> {
        let count = count(node);
        let prefix = prefix_of(node, offset)?;
        let children = (HEADER_BYTES + prefix.len()).next_multiple_of(8);
        if count == 0 || children + 28 * count > node.len() {
            return Err(Damage::new(offset, "internal node arrays out of bounds"));
        }
        Ok(InternalView { node, offset, count, prefix, children })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn u32_in(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.node[at], self.node[at + 1], self.node[at + 2], self.node[at + 3]])
    }

    fn u64_in(&self, at: usize) -> u64 {
        let b = &self.node[at..at + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    #[inline]
    fn hint(&self, i: usize) -> u64 {
        self.u64_in(self.children + 16 * self.count + 8 * i)
    }

    #[inline]
    fn suffix(&self, i: usize) -> Parse<&'a [u8]> {
        let at = self.u32_in(self.children + 24 * self.count + 4 * i) as usize;
        let node: &'a [u8] = self.node;
        let bad = || Damage::new(self.offset, format!("internal key {i} out of bounds"));
        let len = u16_at(node, at).ok_or_else(bad)? as usize;
        node.get(at + 2..at + 2 + len).ok_or_else(bad)
    }

    /// The smallest key under child `i`.
    pub fn key(&self, i: usize) -> Parse<Key<'a>> {
        Ok(Key { head: self.prefix, tail: self.suffix(i)? })
    }

    /// The offset of child `i`; it must point backwards.
    #[inline]
    pub fn child(&self, i: usize) -> Parse<u64> {
        let child = self.u64_in(self.children + 8 * i);
        if child >= self.offset || child == 0 {
            return Err(Damage::new(self.offset, "child offset does not point backwards"));
        }
        Ok(child)
    }

    /// Keys in the subtree of child `i`.
    pub fn keys_below(&self, i: usize) -> u64 {
        unpack_weight(self.u64_in(self.children + 8 * self.count + 8 * i)).0
    }

    /// The length of the longest key in the subtree of child `i`.
    pub fn longest_below(&self, i: usize) -> u16 {
        unpack_weight(self.u64_in(self.children + 8 * self.count + 8 * i)).1
    }

    /// The last child whose smallest key is `<= q`; `None` when `q` sorts
    /// before every key of the node.
    #[inline]
    pub fn route(&self, q: &[u8]) -> Parse<Option<usize>> {
        let (i, found) = lower_bound(self.count, self.prefix, |i| self.hint(i), |i| self.suffix(i), q)?;
        Ok(if found { Some(i) } else { i.checked_sub(1) })
    }

    /// The first child whose smallest key is `>= q` (`len()` if none).
    pub fn first_at_or_after(&self, q: &[u8]) -> Parse<usize> {
        lower_bound(self.count, self.prefix, |i| self.hint(i), |i| self.suffix(i), q).map(|(i, _)| i)
    }

    /// A copy of this node with child `i` replaced (same smallest key),
    /// sealed; returns the longest key under the new node.
    pub fn with_child_replaced(&self, i: usize, child: &ChildRef<'_>, out: &mut Vec<u8>) -> u16 {
        out.clear();
        out.extend_from_slice(self.node);
        let at = self.children + 8 * i;
        out[at..at + 8].copy_from_slice(&child.offset.to_le_bytes());
        let at = self.children + 8 * self.count + 8 * i;
        out[at..at + 8].copy_from_slice(&pack_weight(child.keys, child.longest).to_le_bytes());
        seal(out);
        (0..self.count).map(|j| if j == i { child.longest } else { self.longest_below(j) }).max().unwrap_or(0)
    }
}

/// The bytes of a value.
#[inline]
pub fn value_bytes<'a>(region: &'a [u8], value: ValueRepr<'a>) -> Parse<&'a [u8]> {
    match value {
        ValueRepr::Inline(bytes) => Ok(bytes),
        ValueRepr::Blob { offset, len } => {
            let blob = node_at(region, offset, KIND_BLOB)?;
            blob.get(HEADER_BYTES..HEADER_BYTES + len as usize)
                .ok_or_else(|| Damage::new(offset, "value blob shorter than its value"))
        }
    }
}

/// The longest prefix shared by sorted keys (that of the first and last), capped for the header.
fn shared_prefix<'k>(first: &Key<'k>, last: &Key<'k>) -> usize {
    first.common_prefix_len(last).min(u16::MAX as usize)
}

fn write_header(buf: &mut Vec<u8>, kind: u8, count: usize, prefix_len: usize) {
    buf.clear();
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(&(count as u16).to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&(prefix_len as u16).to_le_bytes());
    buf.extend_from_slice(&[0; 2]);
}

/// A leaf entry to be written: key and value borrowed from old nodes or from the batch.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub key: Key<'a>,
    pub value: ValueRepr<'a>,
    pub link: Option<Link<'a>>,
}

impl<'a> From<LeafEntry<'a>> for EntryRef<'a> {
    fn from(e: LeafEntry<'a>) -> Self {
        EntryRef { key: e.key, value: e.value, link: e.link }
    }
}

impl EntryRef<'_> {
    /// Bytes this entry takes in a leaf before prefix compression.
    pub fn encoded_len(&self) -> usize {
        8 + 4
            + 8
            + self.key.len()
            + self.value.stored_len()
            + if matches!(self.value, ValueRepr::Blob { .. }) { 8 } else { 0 }
            + self.link.map_or(0, |l| l.stored_len())
    }

    /// Nodes this entry stands for: itself, and a link's subtree.
    pub fn weight(&self) -> u64 {
        self.link.map_or(0, |l| l.keys).saturating_add(1)
    }

    /// The longest key this entry stands for (a link's included).
    pub fn longest(&self) -> u16 {
        entry_longest(&self.key, self.link)
    }
}

/// Encodes a leaf holding `entries` (sorted, non-empty) into `buf`.
pub fn build_leaf(entries: &[EntryRef<'_>], buf: &mut Vec<u8>) {
    let n = entries.len();
    let prefix_len = shared_prefix(&entries[0].key, &entries[n - 1].key);
    write_header(buf, KIND_LEAF, n, prefix_len);
    entries[0].key.extend_from(0, buf);
    buf.truncate(HEADER_BYTES + prefix_len);
    buf.resize(buf.len().next_multiple_of(8), 0);
    for e in entries {
        buf.extend_from_slice(&e.key.hint_from(prefix_len).to_le_bytes());
    }
    let slots = buf.len();
    buf.resize(slots + 4 * n, 0);
    for (i, e) in entries.iter().enumerate() {
        let at = buf.len() as u32;
        buf[slots + 4 * i..slots + 4 * i + 4].copy_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&((e.key.len() - prefix_len) as u16).to_le_bytes());
        let link_flag = if e.link.is_some() { FLAG_LINK } else { 0 };
        match e.value {
            ValueRepr::Inline(v) => {
                buf.extend_from_slice(&[link_flag, 0]);
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                e.key.extend_from(prefix_len, buf);
                buf.extend_from_slice(v);
            }
            ValueRepr::Blob { offset, len } => {
                buf.extend_from_slice(&[FLAG_BLOB | link_flag, 0]);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&offset.to_le_bytes());
                e.key.extend_from(prefix_len, buf);
            }
        }
        if let Some(link) = e.link {
            buf.extend_from_slice(&link.root.to_le_bytes());
            buf.extend_from_slice(&pack_weight(link.keys, link.longest).to_le_bytes());
            buf.extend_from_slice(&(link.src.len() as u16).to_le_bytes());
            buf.extend_from_slice(link.src);
        }
    }
    seal(buf);
}

/// A child reference to be written into an internal node.
#[derive(Clone, Copy, Debug)]
pub struct ChildRef<'a> {
    pub first_key: Key<'a>,
    pub offset: u64,
    /// Keys in the child's subtree.
    pub keys: u64,
    /// The length of the longest key in the child's subtree.
    pub longest: u16,
    /// Encoded size of the child node, for merging underfull nodes.
    pub node_bytes: usize,
}

impl ChildRef<'_> {
    pub fn encoded_len(&self) -> usize {
        8 + 8 + 8 + 4 + 2 + self.first_key.len()
    }
}

/// Encodes an internal node over `children` (sorted by first key, non-empty) into `buf`.
pub fn build_internal(children: &[ChildRef<'_>], buf: &mut Vec<u8>) {
    let n = children.len();
    let prefix_len = shared_prefix(&children[0].first_key, &children[n - 1].first_key);
    write_header(buf, KIND_INTERNAL, n, prefix_len);
    children[0].first_key.extend_from(0, buf);
    buf.truncate(HEADER_BYTES + prefix_len);
    buf.resize(buf.len().next_multiple_of(8), 0);
    for c in children {
        buf.extend_from_slice(&c.offset.to_le_bytes());
    }
    for c in children {
        buf.extend_from_slice(&pack_weight(c.keys, c.longest).to_le_bytes());
    }
    for c in children {
        buf.extend_from_slice(&c.first_key.hint_from(prefix_len).to_le_bytes());
    }
    let slots = buf.len();
    buf.resize(slots + 4 * n, 0);
    for (i, c) in children.iter().enumerate() {
        let at = buf.len() as u32;
        buf[slots + 4 * i..slots + 4 * i + 4].copy_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&((c.first_key.len() - prefix_len) as u16).to_le_bytes());
        c.first_key.extend_from(prefix_len, buf);
    }
    seal(buf);
}

/// Encodes a value blob.
pub fn build_blob(value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES + value.len() + 8);
    write_header(&mut buf, KIND_BLOB, 0, 0);
    buf.extend_from_slice(value);
    seal(&mut buf);
    buf
}

/// A parsed commit record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    pub offset: u64,
    pub version: u64,
    pub root: u64,
    pub prev: u64,
    pub end: u64,
    pub time_ns: u64,
    pub key_count: u64,
    /// The version's change set (0: none recorded).
    pub changes: u64,
    /// The arena generation the record was written into: a record found in
    /// a recycled file's old bytes names another one.
    pub generation: u64,
}

/// Encodes a commit record that will sit at `offset`.
pub fn build_commit(c: &Commit) -> Vec<u8> {
    let mut buf = Vec::with_capacity(COMMIT_BYTES);
    write_header(&mut buf, KIND_COMMIT, 0, 0);
    let end = c.offset + COMMIT_BYTES as u64;
    for v in [c.version, c.root, c.prev, end, c.time_ns, c.key_count, c.changes, c.generation] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    seal(&mut buf);
    debug_assert_eq!(buf.len(), COMMIT_BYTES);
    buf
}

/// Parses and verifies the commit record at `offset`.
pub fn parse_commit(region: &[u8], offset: u64) -> Parse<Commit> {
    let node = verified_node_at(region, offset, KIND_COMMIT)?;
    let field = |i: usize| u64_at(node, HEADER_BYTES + 8 * i).unwrap_or(0);
    if node.len() != COMMIT_BYTES {
        return Err(Damage::new(offset, "commit record has the wrong length"));
    }
    let commit = Commit {
        offset,
        version: field(0),
        root: field(1),
        prev: field(2),
        end: field(3),
        time_ns: field(4),
        key_count: field(5),
        changes: field(6),
        generation: field(7),
    };
    if Some(commit.end) != offset.checked_add(COMMIT_BYTES as u64)
        || commit.root >= offset
        || commit.prev >= offset
        || commit.changes >= offset
    {
        return Err(Damage::new(offset, "commit record points outside its version"));
    }
    Ok(commit)
}

/// The commit chain from `head` back: `head`, then each version's
/// predecessor, read and verified one at a time; versions must decrease.
pub fn chain(region: &[u8], head: Commit) -> Chain<'_> {
    Chain { region, next: Some(Ok(head)) }
}

/// See [`chain`].
pub struct Chain<'a> {
    region: &'a [u8],
    next: Option<Parse<Commit>>,
}

impl Iterator for Chain<'_> {
    type Item = Parse<Commit>;

    fn next(&mut self) -> Option<Parse<Commit>> {
        let current = self.next.take()?;
        if let Ok(c) = &current {
            if c.prev != 0 {
                let version = c.version;
                self.next = Some(parse_commit(self.region, c.prev).and_then(|p| match p.version < version {
                    true => Ok(p),
                    false => Err(Damage::new(p.offset, "commit chain does not go back in versions")),
                }));
            }
        }
        Some(current)
    }
}

/// How a version changed one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A value was written: created, or replaced (possibly by the same
    /// bytes: change sets list what transactions wrote, while a watch's
    /// `Resync` lists what differs).
    Set,
    /// The node was deleted.
    Delete,
    /// The node and everything below it were deleted.
    DeleteTree,
    /// The node and everything below it were replaced by a copy of another
    /// subtree ([`crate::Transaction::copy_tree`]).
    CopyTree,
}

impl ChangeKind {
    fn code(self) -> u8 {
        match self {
            ChangeKind::Set => 1,
            ChangeKind::Delete => 2,
            ChangeKind::DeleteTree => 3,
            ChangeKind::CopyTree => 4,
        }
    }

    fn from_code(code: u8) -> Option<ChangeKind> {
        match code {
            1 => Some(ChangeKind::Set),
            2 => Some(ChangeKind::Delete),
            3 => Some(ChangeKind::DeleteTree),
            4 => Some(ChangeKind::CopyTree),
            _ => None,
        }
    }
}

const CHANGES_OVERFLOW: u32 = 1;

/// Encodes a change set: after the header, `u32` entry count, `u32` flags,
/// then per entry its kind (`u8`), key length (`u16`) and key bytes, in key
/// order. Past [`MAX_CHANGE_BYTES`] of entries it lists none and is marked
/// as overflowed.
pub fn build_changes<'k>(entries: impl Iterator<Item = (ChangeKind, &'k [u8])>, buf: &mut Vec<u8>) {
    write_header(buf, KIND_CHANGES, 0, 0);
    buf.extend_from_slice(&[0; 8]); // count and flags, filled in below
    let start = buf.len();
    let (mut count, mut flags) = (0u32, 0u32);
    for (kind, key) in entries {
        if buf.len() - start + 3 + key.len() > MAX_CHANGE_BYTES {
            buf.truncate(start);
            (count, flags) = (0, CHANGES_OVERFLOW);
            break;
        }
        buf.push(kind.code());
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        count += 1;
    }
    buf[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&count.to_le_bytes());
    buf[HEADER_BYTES + 4..HEADER_BYTES + 8].copy_from_slice(&flags.to_le_bytes());
    seal(buf);
}

/// A change set in the arena, read in place.
#[derive(Clone, Copy)]
pub struct ChangesView<'a> {
    offset: u64,
    body: &'a [u8],
    count: u32,
    overflow: bool,
}

impl<'a> ChangesView<'a> {
    /// Parses the change set at `offset` (bounds-checked, not checksummed,
    /// like every read path of a reader).
    pub fn parse(region: &'a [u8], offset: u64) -> Parse<Self> {
        let node = node_at(region, offset, KIND_CHANGES)?;
        let bad = || Damage::new(offset, "change set header");
        let count = u32_at(node, HEADER_BYTES).ok_or_else(bad)?;
        let flags = u32_at(node, HEADER_BYTES + 4).ok_or_else(bad)?;
        Ok(ChangesView { offset, body: &node[HEADER_BYTES + 8..], count, overflow: flags & CHANGES_OVERFLOW != 0 })
    }

    /// Whether the version changed too much for its changes to be listed.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Parse<(ChangeKind, &'a [u8])>> + 'a {
        let (body, offset) = (self.body, self.offset);
        let mut at = 0usize;
        (0..self.count).map(move |_| {
            let bad = || Damage::new(offset, "change set entry out of bounds");
            let kind = body.get(at).copied().and_then(ChangeKind::from_code).ok_or_else(bad)?;
            let len = u16_at(body, at + 1).ok_or_else(bad)? as usize;
            let key = body.get(at + 3..at + 3 + len).ok_or_else(bad)?;
            at += 3 + len;
            Ok((kind, key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_checksum_is_crc32c() {
        let bytes: Vec<u8> = (0..9000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in [0, 1, 7, 8, 63, 64, 255, 256, 1000, 2048, 2049, 4096, 9000] {
            for start in [0, 1, 3] {
                let b = &bytes[start.min(len)..len];
                assert_eq!(crc32c_bulk(b), crc32c::crc32c(b), "len {len} from {start}");
            }
        }
    }

    #[test]
    fn leaf_round_trip_search_and_checksum() {
        let keys: Vec<Vec<u8>> =
            ["local\0domain\x0010", "local\0domain\x00100", "local\0domain\x002", "local\0domain\x003\0x"]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect();
        let entries: Vec<EntryRef<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| EntryRef {
                key: Key::whole(k),
                value: if i == 1 { ValueRepr::Blob { offset: 8, len: 300 } } else { ValueRepr::Inline(b"v") },
                link: None,
            })
            .collect();
        let mut leaf = Vec::new();
        build_leaf(&entries, &mut leaf);
        let mut region = vec![0u8; 16];
        region.extend_from_slice(&leaf);
        verified_node_at(&region, 16, KIND_LEAF).unwrap();
        let view = LeafView::parse(&region, 16).unwrap();
        assert_eq!(view.prefix, b"local\0domain\0");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(view.search(k).unwrap(), (i, true));
            assert!(view.entry(i).unwrap().key.eq_bytes(k));
        }
        assert_eq!(view.entry(1).unwrap().value, ValueRepr::Blob { offset: 8, len: 300 });
        assert_eq!(view.search(b"local\0domain\x001").unwrap(), (0, false));
        assert_eq!(view.search(b"local\0domain\x0011").unwrap(), (2, false));
        assert_eq!(view.search(b"a").unwrap(), (0, false));
        assert_eq!(view.search(b"z").unwrap(), (4, false));
        assert_eq!(view.search(b"local").unwrap(), (0, false));
        region[16 + 30] ^= 0x40;
        assert!(verified_node_at(&region, 16, KIND_LEAF).is_err());
    }

    #[test]
    fn internal_routes_to_the_last_child_not_above_the_probe() {
        let keys: Vec<&[u8]> = vec![b"k\x0010", b"k\x0020", b"k\x0030"];
        let children: Vec<ChildRef<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ChildRef {
                first_key: Key::whole(k),
                offset: 8 * (i as u64 + 1),
                keys: 5,
                longest: 40 + i as u16,
                node_bytes: 0,
            })
            .collect();
        let mut node = Vec::new();
        build_internal(&children, &mut node);
        let mut region = vec![0u8; 64];
        region.extend_from_slice(&node);
        let view = InternalView::parse(&region, 64).unwrap();
        assert_eq!(view.route(b"k\x0005").unwrap(), None);
        assert_eq!(view.route(b"k\x0010").unwrap(), Some(0));
        assert_eq!(view.route(b"k\x0025").unwrap(), Some(1));
        assert_eq!(view.route(b"k\x009").unwrap(), Some(2));
        assert_eq!(view.child(2).unwrap(), 24);
        assert_eq!(view.keys_below(1), 5);
        assert_eq!(view.longest_below(1), 41);
        let replaced = ChildRef { offset: 8, keys: 9, longest: 50, ..children[1] };
        let mut patched = Vec::new();
        assert_eq!(view.with_child_replaced(1, &replaced, &mut patched), 50);
        region.truncate(64);
        region.extend_from_slice(&patched);
        let view = InternalView::parse(&region, 64).unwrap();
        assert_eq!((view.child(1).unwrap(), view.keys_below(1), view.longest_below(1)), (8, 9, 50));
        assert_eq!(unpack_weight(pack_weight(u64::MAX, 3071)), ((1 << 48) - 1, 3071));
        assert!(view.key(1).unwrap().eq_bytes(b"k\x0020"));
    }

    #[test]
    fn commit_record_rejects_forward_pointers() {
        let commit = |root| Commit {
            version: 5,
            root,
            offset: 64,
            time_ns: 1,
            key_count: 2,
            generation: 7,
            ..Commit::default()
        };
        let rec = build_commit(&commit(8));
        let mut region = vec![0u8; 64];
        region.extend_from_slice(&rec);
        let c = parse_commit(&region, 64).unwrap();
        assert_eq!((c.version, c.root, c.end, c.generation), (5, 8, 64 + COMMIT_BYTES as u64, 7));
        let bad = build_commit(&commit(64));
        region.truncate(64);
        region.extend_from_slice(&bad);
        assert!(parse_commit(&region, 64).is_err());
    }

    #[test]
    fn hints_of_keys_in_pieces_are_those_of_their_bytes() {
        let whole: &[u8] = b"local\0domain\x00123\0name";
        for cut in 0..=whole.len() {
            let key = Key { head: &whole[..cut], tail: &whole[cut..] };
            for start in 0..=whole.len() + 2 {
                assert_eq!(key.hint_from(start), hint_of(whole.get(start..).unwrap_or(&[])), "cut {cut} start {start}");
            }
        }
    }

    #[test]
    fn keys_in_pieces_compare_like_their_bytes() {
        let cases: [&[u8]; 7] = [b"", b"a", b"ab", b"abc", b"abd", b"b", b"ab\0c"];
        for x in cases {
            for y in cases {
                for i in 0..=x.len() {
                    for j in 0..=y.len() {
                        let (kx, ky) = (Key { head: &x[..i], tail: &x[i..] }, Key { head: &y[..j], tail: &y[j..] });
                        assert_eq!(kx.cmp_key(&ky), x.cmp(y), "{x:?} at {i} vs {y:?} at {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn key_pieces_compare_like_their_concatenation() {
        let a = Key { head: b"ab", tail: b"c\0d" };
        assert_eq!(a.cmp_bytes(b"abc\0d"), Ordering::Equal);
        assert_eq!(a.cmp_bytes(b"abc"), Ordering::Greater);
        assert_eq!(a.cmp_bytes(b"a"), Ordering::Greater);
        assert_eq!(a.cmp_bytes(b"abd"), Ordering::Less);
        assert!(a.in_subtree(b"abc"));
        assert!(!a.in_subtree(b"ab"));
        assert!(a.in_subtree(b"abc\0d"));
    }
}
