//! Buffer references: a small handle to a value's bytes that another
//! process on the host can resolve, as a slice of its own read-only
//! mapping, as a copy into its buffer (`pread`, the mapping untouched), or
//! straight into a file descriptor (`sendfile` from the arena file, the
//! bytes never mapped by that process).
//!
//! A [`BufRef`] names the store (its directory's device and inode), the
//! arena generation, the version and its commit record, the node holding
//! the value (with that node's checksum) and the value's place in the file.
//! Encoded, it is [`BufRef::ENCODED_LEN`] bytes with a checksum of its own,
//! so a handle damaged on its way is refused, not followed.
//!
//! Invariants:
//! * A handle resolves only while its generation is the published one, and
//!   the resolver then holds a snapshot of that generation (so its pin
//!   stands) for as long as it uses the bytes. After a compaction has
//!   switched generations the handle is stale ([`Error::StaleBufRef`]):
//!   its bytes may be on their way to being recycled, and a reader must
//!   never pin an older generation than the published one anew (see
//!   [`crate::readers`]).
//! * Before any byte is served: the commit record at the named offset is
//!   checksummed and must be the named version of the named generation;
//!   the named node must be a leaf or blob whose stored checksum is the one
//!   the handle recorded, lie below that version's high-water mark, and
//!   hold exactly the handle's byte range as one value (a blob's, or one
//!   leaf entry's inline value). Stale or damaged handles give an error,
//!   never other bytes.
//! * A handle is not a capability: its checksum is not keyed, and any
//!   process that can open a [`Reader`] on the store can read all of it
//!   anyway. Access control stays with the store's file permissions.

use std::os::fd::AsFd;

use crate::error::{Error, IoContext, Result};
use crate::node::{self, ValueRepr, KIND_BLOB, KIND_LEAF};
use crate::path;
use crate::snapshot::{Reader, Snapshot};
use crate::tree;

const MAGIC: &[u8; 4] = b"SBR1";

/// A handle to the bytes of one value of one version, for any process on
/// the host. Obtain one with [`Snapshot::buf_ref`], pass
/// [`BufRef::encode`]'s bytes to another process (over a unix socket, a
/// pipe, shared memory), rebuild it there with [`BufRef::decode`] and
/// resolve it with [`Reader::resolve`], [`Reader::read_buf`] or
/// [`Reader::send_buf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufRef {
    store: [u64; 2],
    generation: u64,
    version: u64,
    commit: u64,
    node: u64,
    node_crc: u32,
    offset: u64,
    len: u32,
}

impl BufRef {
    /// Bytes of [`BufRef::encode`]'s output.
    pub const ENCODED_LEN: usize = 76;

    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version the value was read at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The arena generation holding the bytes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the value's bytes start in the arena file. Values of at least
    /// [`crate::PAGE_ALIGNED_VALUE_MIN`] bytes start on a page boundary.
    pub fn file_offset(&self) -> u64 {
        self.offset
    }

    /// A handle with these fields (`words`: store device and inode,
    /// generation, version, commit record, node, file offset), for tests
    /// of the encoding.
    pub(crate) fn from_fields(words: [u64; 7], node_crc: u32, len: u32) -> BufRef {
        let [dev, ino, generation, version, commit, node, offset] = words;
        BufRef { store: [dev, ino], generation, version, commit, node, node_crc, offset, len }
    }

    /// The handle as bytes (little-endian, checksummed).
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        let words = [self.store[0], self.store[1], self.generation, self.version, self.commit, self.node, self.offset];
        for (i, w) in words.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        out[64..68].copy_from_slice(&self.node_crc.to_le_bytes());
        out[68..72].copy_from_slice(&[0; 4]);
        let crc = crc32c::crc32c(&out[..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Rebuilds a handle from [`BufRef::encode`]'s bytes; damaged or foreign
    /// bytes are [`Error::InvalidBufRef`].
    pub fn decode(bytes: &[u8]) -> Result<BufRef> {
        let bad = |reason: &str| Error::InvalidBufRef { reason: reason.to_string() };
        if bytes.len() != Self::ENCODED_LEN {
            return Err(bad(&format!("{} bytes, expected {}", bytes.len(), Self::ENCODED_LEN)));
        }
        if &bytes[..4] != MAGIC {
            return Err(bad("not a buffer reference (bad magic)"));
        }
        let crc = node::u32_at(bytes, 72).unwrap_or(0);
        if crc != crc32c::crc32c(&bytes[..72]) || bytes[68..72] != [0; 4] {
            return Err(bad("checksum mismatch: the handle was damaged"));
        }
        let word = |i: usize| node::u64_at(bytes, 8 + 8 * i).unwrap_or(0);
        Ok(BufRef {
            len: node::u32_at(bytes, 4).unwrap_or(0),
            store: [word(0), word(1)],
            generation: word(2),
            version: word(3),
            commit: word(4),
            node: word(5),
            offset: word(6),
            node_crc: node::u32_at(bytes, 64).unwrap_or(0),
        })
    }
}

impl Snapshot {
    /// A handle to the value at `path` in this version, to resolve in
    /// another process (see [`BufRef`]); `None` if there is no such node.
    pub fn buf_ref(&self, path: &str) -> Result<Option<BufRef>> {
        let key = path::key(path)?;
        let region = self.region();
        let damaged = |d| self.damaged(d);
        let (leaf, entry) = match tree::locate(region, self.commit().root, &key).map_err(damaged)? {
            Some(found) => found,
            None => return Ok(None),
        };
        let (node_offset, bytes) = match entry.value {
            ValueRepr::Inline(bytes) => (leaf, bytes),
            ValueRepr::Blob { offset, .. } => (offset, node::value_bytes(region, entry.value).map_err(damaged)?),
        };
        let kind = if node_offset == leaf { KIND_LEAF } else { KIND_BLOB };
        let node_bytes = region.node(node_offset, kind).map_err(damaged)?;
        // Both slices borrow from `region`, so their distance is the file offset.
        let offset = bytes.as_ptr() as u64 - region.bytes().as_ptr() as u64;
        Ok(Some(BufRef {
            store: self.mapped().store_id()?,
            generation: self.generation(),
            version: self.version(),
            commit: self.commit().offset,
            node: node_offset,
            node_crc: node::u32_at(node_bytes, 8).unwrap_or(0),
            offset,
            len: bytes.len() as u32,
        }))
    }
}

/// A resolved [`BufRef`]: the value's bytes in this process's read-only
/// mapping, valid for as long as this lives (it holds a snapshot of the
/// handle's version).
pub struct BufView {
    snapshot: Snapshot,
    start: usize,
    len: usize,
}

impl BufView {
    pub fn bytes(&self) -> &[u8] {
        &self.snapshot.region().bytes()[self.start..self.start + self.len]
    }

    /// The version the bytes belong to, readable while this lives.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl std::ops::Deref for BufView {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Reader {
    /// Checks `r` against this store as its module docs say, and returns a
    /// snapshot of its version that pins its generation.
    fn check_buf_ref(&self, r: &BufRef) -> Result<Snapshot> {
        let invalid = |reason: String| Error::InvalidBufRef { reason };
        let newest = self.snapshot()?;
        if newest.mapped().store_id()? != r.store {
            return Err(invalid(format!("it belongs to another store than {}", self.dir().display())));
        }
        if newest.generation() != r.generation {
            return Err(Error::StaleBufRef { generation: r.generation, current: newest.generation() });
        }
        // Only bytes below the newest version's high-water mark are immutable.
        if r.commit.checked_add(node::COMMIT_BYTES as u64).is_none_or(|e| e > newest.commit().end) {
            return Err(invalid(format!("its commit record at offset {} lies beyond the newest version", r.commit)));
        }
        let snap = newest.sibling(r.commit).map_err(|e| invalid(format!("its commit record: {e}")))?;
        if snap.version() != r.version {
            return Err(invalid(format!("version {} has no commit record at offset {}", r.version, r.commit)));
        }
        let region = snap.region();
        let kind = region.kind_at(r.node).unwrap_or(0);
        let node_bytes = match kind {
            KIND_LEAF | KIND_BLOB => region.node(r.node, kind).ok(),
            _ => None,
        };
        let node_bytes = node_bytes.ok_or_else(|| invalid(format!("no value node at offset {}", r.node)))?;
        if node::u32_at(node_bytes, 8) != Some(r.node_crc) {
            return Err(invalid(format!("the node at offset {} is not the one it was made from", r.node)));
        }
        // Exactly one value's bytes: a blob's whole value (blobs do not
        // record their length, so it is checked to their 8-byte padding),
        // or the inline value of one entry of the leaf.
        let exact = match kind {
            KIND_BLOB => {
                r.offset == r.node + node::HEADER_BYTES as u64
                    && node::align8(node::HEADER_BYTES + r.len as usize) == node_bytes.len()
            }
            _ => {
                let leaf = node::LeafView::from_node(node_bytes, r.node).map_err(|d| snap.damaged(d))?;
                let base = node_bytes.as_ptr() as u64 - r.node;
                (0..leaf.len()).any(|i| match leaf.entry(i).map(|e| e.value) {
                    Ok(ValueRepr::Inline(v)) => v.as_ptr() as u64 - base == r.offset && v.len() == r.len as usize,
                    _ => false,
                })
            }
        };
        if !exact {
            return Err(invalid("its byte range is not a value of its node".into()));
        }
        Ok(snap)
    }

    /// Resolves a handle to its bytes in this process's read-only mapping
    /// (no copy). Fails with [`Error::StaleBufRef`] once a compaction has
    /// replaced its generation, [`Error::InvalidBufRef`] if it is damaged or
    /// from another store.
    pub fn resolve(&self, r: &BufRef) -> Result<BufView> {
        let snapshot = self.check_buf_ref(r)?;
        Ok(BufView { snapshot, start: r.offset as usize, len: r.len as usize })
    }

    /// Copies the handle's bytes into `out` (at most `out.len()` of them)
    /// with `pread` from the arena file, without touching them through the
    /// mapping; returns the value's length. Errors as [`Reader::resolve`].
    pub fn read_buf(&self, r: &BufRef, out: &mut [u8]) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        let snapshot = self.check_buf_ref(r)?;
        let n = out.len().min(r.len as usize);
        let file = snapshot.mapped().file();
        file.read_exact_at(&mut out[..n], r.offset).at(&snapshot.mapped().path)?;
        Ok(r.len as usize)
    }

    /// Writes the handle's bytes to `out` (a socket, pipe or file) with
    /// `sendfile` from the arena file: the bytes go from the page cache to
    /// `out` without being mapped or copied through this process. Blocks
    /// until all are written (`out` should be a blocking descriptor);
    /// returns how many were. Errors as [`Reader::resolve`], and the
    /// descriptor's own errors.
    pub fn send_buf(&self, r: &BufRef, out: impl AsFd) -> Result<u64> {
        let snapshot = self.check_buf_ref(r)?;
        let file = snapshot.mapped().file();
        let path = &snapshot.mapped().path;
        let mut offset = r.offset;
        let end = r.offset + r.len as u64;
        while offset < end {
            let want = (end - offset).min(1 << 30) as usize;
            let sent = offset - r.offset;
            let failed = |source: std::io::Error| Error::Io {
                file: path.clone(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("sendfile after {sent} of {} bytes: {source}", r.len),
                ),
            };
            match rustix::fs::sendfile(&out, file, Some(&mut offset), want) {
                Ok(0) => return Err(failed(std::io::Error::new(std::io::ErrorKind::WriteZero, "nothing written"))),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(failed(e.into())),
            }
        }
        Ok(r.len as u64)
    }
}
