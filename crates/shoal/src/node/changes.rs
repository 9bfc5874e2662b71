//! Change sets: which paths a version changed and how, beside its nodes.
//!
//! ```text
//! header (count 0, prefix_len 0)
//! 16  u32 entry count
//! 20  u32 flags        1: overflowed (too many changes to list; none are)
//! 24  entries, in key order: u8 kind (1 set, 2 delete, 3 delete subtree,
//!     4 copy subtree), u16 key length, key
//! ```

use super::{seal, u16_at, u32_at, write_header, Damage, Parse, Region, HEADER_BYTES, KIND_CHANGES};

/// Most bytes of entries one change set lists. A version that changes more
/// (a bulk load, a large subtree deletion) records only that it changed
/// much, and watchers resynchronize.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;

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
    /// Parses the change set at `offset` (checked like every node a
    /// process reads, see [`Region`]).
    pub fn parse(region: Region<'a>, offset: u64) -> Parse<Self> {
        let node = region.node(offset, KIND_CHANGES)?;
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
    use crate::node::Region;

    /// The documented offsets, a round trip, and the overflow mark.
    #[test]
    fn changes_layout_and_overflow() {
        let mut b = Vec::new();
        build_changes([(ChangeKind::Set, &b"a\0b"[..]), (ChangeKind::DeleteTree, &b"c"[..])].into_iter(), &mut b);
        assert_eq!((b[0], u32_at(&b, 16), u32_at(&b, 20)), (KIND_CHANGES, Some(2), Some(0)));
        assert_eq!(&b[24..30], &[1, 3, 0, b'a', 0, b'b']);
        assert_eq!(&b[30..34], &[3, 1, 0, b'c']);
        let mut region = vec![0u8; 8];
        region.extend_from_slice(&b);
        let view = ChangesView::parse(Region::for_test(&region), 8).unwrap();
        let read: Vec<_> = view.iter().map(|e| e.unwrap()).collect();
        assert_eq!(read, vec![(ChangeKind::Set, &b"a\0b"[..]), (ChangeKind::DeleteTree, &b"c"[..])]);
        let big = vec![b'k'; 60_000];
        let keys = (0..20).map(|_| (ChangeKind::Set, big.as_slice()));
        build_changes(keys, &mut b);
        assert_eq!((u32_at(&b, 16), u32_at(&b, 20)), (Some(0), Some(1)), "over 1 MiB: none listed, overflowed");
    }
}
