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
//! 8  u32 crc32c      of bytes [16, len) followed by bytes [0, 8)
//! 12 u32 reserved (0)
//! ```
//!
//! Leaf: `u32 entry_offset[count]`, then entries, each
//! `u16 key_len, u8 flags, u8 0, u32 value_len, [u64 blob offset if flags&1], key, [value if inline]`.
//!
//! Internal: `u64 child[count]`, `u64 keys_below[count]`, `u32 key_offset[count]`,
//! then keys as `u16 len, bytes`. `key[i]` is the smallest key under
//! `child[i]`; `keys_below[i]` counts the keys in that subtree.
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

use crate::error::Error;

pub const KIND_LEAF: u8 = 1;
pub const KIND_INTERNAL: u8 = 2;
pub const KIND_BLOB: u8 = 3;
pub const KIND_COMMIT: u8 = 4;

pub const HEADER_BYTES: usize = 16;
pub const COMMIT_BYTES: usize = HEADER_BYTES + 48;
/// Values up to this size live inside their leaf; larger ones in a blob node.
pub const INLINE_VALUE_MAX: usize = 256;
/// Nodes are cut to about this size when written.
pub const NODE_TARGET_BYTES: usize = 4096;
/// Largest entry count a node may hold (u16).
pub const MAX_COUNT: usize = u16::MAX as usize;

const FLAG_BLOB: u8 = 1;

#[inline]
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
#[inline]
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
#[inline]
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The checksum stored in a node header.
pub fn node_crc(node: &[u8]) -> u32 {
    let body = crc32c::crc32c(&node[HEADER_BYTES..]);
    crc32c::crc32c_append(body, &node[..8])
}

/// Fills in `len` and the checksum of a node built in `buf` (header first).
pub fn seal(buf: &mut Vec<u8>) {
    buf.resize(align8(buf.len()), 0);
    let len = buf.len() as u32;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[8..16].fill(0);
    let crc = node_crc(buf);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn header(kind: u8, count: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NODE_TARGET_BYTES + 512);
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(&(count as u16).to_le_bytes());
    buf.extend_from_slice(&[0; 12]);
    buf
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
    if offset == 0 || offset % 8 != 0 {
        return Err(bad());
    }
    let len = u32_at(region, at + 4).ok_or_else(bad)? as usize;
    if region.get(at) != Some(&kind) || len < HEADER_BYTES || len % 8 != 0 {
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

/// One leaf entry, borrowed from the arena.
#[derive(Clone, Copy, Debug)]
pub struct LeafEntry<'a> {
    pub key: &'a [u8],
    pub value: ValueRepr<'a>,
}

/// Parses entry `i` of a leaf (bounds-checked).
#[inline]
pub fn leaf_entry(node: &[u8], node_offset: u64, i: usize) -> Parse<LeafEntry<'_>> {
    let bad = || Damage::new(node_offset, format!("leaf entry {i} out of bounds"));
    let at = u32_at(node, HEADER_BYTES + 4 * i).ok_or_else(bad)? as usize;
    let key_len = u16_at(node, at).ok_or_else(bad)? as usize;
    let flags = *node.get(at + 2).ok_or_else(bad)?;
    let value_len = u32_at(node, at + 4).ok_or_else(bad)?;
    if flags & FLAG_BLOB != 0 {
        let blob = u64_at(node, at + 8).ok_or_else(bad)?;
        let key = node.get(at + 16..at + 16 + key_len).ok_or_else(bad)?;
        Ok(LeafEntry { key, value: ValueRepr::Blob { offset: blob, len: value_len } })
    } else {
        let key = node.get(at + 8..at + 8 + key_len).ok_or_else(bad)?;
        let v = at + 8 + key_len;
        let value = node.get(v..v + value_len as usize).ok_or_else(bad)?;
        Ok(LeafEntry { key, value: ValueRepr::Inline(value) })
    }
}

/// Parses the smallest key under child `i` of an internal node.
#[inline]
pub fn internal_key(node: &[u8], node_offset: u64, i: usize) -> Parse<&[u8]> {
    let n = count(node);
    let bad = || Damage::new(node_offset, format!("internal key {i} out of bounds"));
    let at = u32_at(node, HEADER_BYTES + 16 * n + 4 * i).ok_or_else(bad)? as usize;
    let key_len = u16_at(node, at).ok_or_else(bad)? as usize;
    node.get(at + 2..at + 2 + key_len).ok_or_else(bad)
}

/// Parses the offset of child `i` of an internal node; it must point backwards.
#[inline]
pub fn internal_child(node: &[u8], node_offset: u64, i: usize) -> Parse<u64> {
    let child = u64_at(node, HEADER_BYTES + 8 * i)
        .ok_or_else(|| Damage::new(node_offset, format!("internal child {i} out of bounds")))?;
    if child >= node_offset || child == 0 {
        return Err(Damage::new(node_offset, "child offset does not point backwards"));
    }
    Ok(child)
}

/// Parses the key count below child `i` of an internal node.
#[inline]
pub fn internal_keys_below(node: &[u8], node_offset: u64, i: usize) -> Parse<u64> {
    let n = count(node);
    u64_at(node, HEADER_BYTES + 8 * n + 8 * i)
        .ok_or_else(|| Damage::new(node_offset, format!("internal count {i} out of bounds")))
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

/// A leaf entry owned by the writer while it rebuilds nodes.
#[derive(Clone, Debug)]
pub struct OwnedEntry {
    pub key: Vec<u8>,
    pub value: OwnedValue,
}

#[derive(Clone, Debug)]
pub enum OwnedValue {
    Inline(Vec<u8>),
    Blob { offset: u64, len: u32 },
}

impl OwnedEntry {
    pub fn from_entry(entry: &LeafEntry<'_>) -> Self {
        let value = match entry.value {
            ValueRepr::Inline(bytes) => OwnedValue::Inline(bytes.to_vec()),
            ValueRepr::Blob { offset, len } => OwnedValue::Blob { offset, len },
        };
        OwnedEntry { key: entry.key.to_vec(), value }
    }

    /// Bytes this entry takes in a leaf (slot included).
    pub fn encoded_len(&self) -> usize {
        4 + 8
            + self.key.len()
            + match &self.value {
                OwnedValue::Inline(v) => v.len(),
                OwnedValue::Blob { .. } => 8,
            }
    }
}

/// Encodes a leaf holding `entries` (sorted by key).
pub fn build_leaf(entries: &[OwnedEntry]) -> Vec<u8> {
    let mut buf = header(KIND_LEAF, entries.len());
    let slots = buf.len();
    buf.resize(slots + 4 * entries.len(), 0);
    for (i, e) in entries.iter().enumerate() {
        let at = buf.len() as u32;
        buf[slots + 4 * i..slots + 4 * i + 4].copy_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        match &e.value {
            OwnedValue::Inline(v) => {
                buf.extend_from_slice(&[0, 0]);
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                buf.extend_from_slice(&e.key);
                buf.extend_from_slice(v);
            }
            OwnedValue::Blob { offset, len } => {
                buf.extend_from_slice(&[FLAG_BLOB, 0]);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&offset.to_le_bytes());
                buf.extend_from_slice(&e.key);
            }
        }
    }
    seal(&mut buf);
    buf
}

/// A child reference owned by the writer while it rebuilds nodes.
#[derive(Clone, Debug)]
pub struct ChildRef {
    pub first_key: Vec<u8>,
    pub offset: u64,
    /// Keys in the child's subtree.
    pub keys: u64,
    /// Encoded size of the child node, for merging underfull nodes.
    pub node_bytes: usize,
}

impl ChildRef {
    pub fn encoded_len(&self) -> usize {
        8 + 8 + 4 + 2 + self.first_key.len()
    }
}

/// Encodes an internal node over `children` (sorted by first key).
pub fn build_internal(children: &[ChildRef]) -> Vec<u8> {
    let n = children.len();
    let mut buf = header(KIND_INTERNAL, n);
    for c in children {
        buf.extend_from_slice(&c.offset.to_le_bytes());
    }
    for c in children {
        buf.extend_from_slice(&c.keys.to_le_bytes());
    }
    let slots = buf.len();
    buf.resize(slots + 4 * n, 0);
    for (i, c) in children.iter().enumerate() {
        let at = buf.len() as u32;
        buf[slots + 4 * i..slots + 4 * i + 4].copy_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&(c.first_key.len() as u16).to_le_bytes());
        buf.extend_from_slice(&c.first_key);
    }
    seal(&mut buf);
    buf
}

/// Encodes a value blob.
pub fn build_blob(value: &[u8]) -> Vec<u8> {
    let mut buf = header(KIND_BLOB, 0);
    buf.extend_from_slice(value);
    seal(&mut buf);
    buf
}

/// A parsed commit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub offset: u64,
    pub version: u64,
    pub root: u64,
    pub prev: u64,
    pub end: u64,
    pub time_ns: u64,
    pub key_count: u64,
}

/// Encodes a commit record that will sit at `offset`.
pub fn build_commit(version: u64, root: u64, prev: u64, offset: u64, time_ns: u64, key_count: u64) -> Vec<u8> {
    let mut buf = header(KIND_COMMIT, 0);
    let end = offset + COMMIT_BYTES as u64;
    for v in [version, root, prev, end, time_ns, key_count] {
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
    };
    if commit.end != offset + COMMIT_BYTES as u64 || commit.root >= offset || commit.prev >= offset {
        return Err(Damage::new(offset, "commit record points outside its version"));
    }
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trip_and_checksum() {
        let entries = vec![
            OwnedEntry { key: b"a".to_vec(), value: OwnedValue::Inline(b"1".to_vec()) },
            OwnedEntry { key: b"a\0b".to_vec(), value: OwnedValue::Blob { offset: 8, len: 300 } },
        ];
        let leaf = build_leaf(&entries);
        let mut region = vec![0u8; 16];
        region.extend_from_slice(&leaf);
        let node = verified_node_at(&region, 16, KIND_LEAF).unwrap();
        assert_eq!(count(node), 2);
        let e0 = leaf_entry(node, 16, 0).unwrap();
        assert_eq!((e0.key, e0.value), (&b"a"[..], ValueRepr::Inline(b"1")));
        let e1 = leaf_entry(node, 16, 1).unwrap();
        assert_eq!(e1.value, ValueRepr::Blob { offset: 8, len: 300 });
        region[16 + 30] ^= 0x40;
        assert!(verified_node_at(&region, 16, KIND_LEAF).is_err());
    }

    #[test]
    fn commit_record_rejects_forward_pointers() {
        let rec = build_commit(5, 8, 0, 64, 1, 2);
        let mut region = vec![0u8; 64];
        region.extend_from_slice(&rec);
        let c = parse_commit(&region, 64).unwrap();
        assert_eq!((c.version, c.root, c.end), (5, 8, 128));
        let bad = build_commit(5, 64, 0, 64, 1, 2);
        region.truncate(64);
        region.extend_from_slice(&bad);
        assert!(parse_commit(&region, 64).is_err());
    }
}
