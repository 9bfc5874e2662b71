//! Leaf nodes: a sorted run of entries.
//!
//! ```text
//! header (prefix_len = P, count = N)
//! 16      prefix: the P bytes all N keys share
//!         zero padding to a multiple of 8
//! H       u64 hint[N]          first 8 key bytes after the prefix, big-endian, zero-padded
//! H+8N    u32 entry_offset[N]  where entry i starts, from the node's start
//! entry   0 u16 suffix_len  2 u8 flags (1 blob, 2 link)  3 u8 0  4 u32 value_len
//!         [8 u64 blob offset, if a blob]
//!         suffix, then the value's bytes if inline
//!         [if a link: u64 target root, u64 weight (see `internal`),
//!          u16 source key length, source key]
//! ```
//!
//! A *link* entry (copy of a subtree by reference) stands for its node and
//! everything below it: the subtree below the link's source key in the
//! tree at its target root, with that key replaced by the entry's own. Its
//! value is the node's own. In a tree holding a link, no key lies strictly
//! below the link's key (writes there split the link first, see
//! [`crate::build`]), so a lookup that misses finds the link covering it
//! as the entry just before its position. A link's target root points
//! backwards like every offset; 0 is an empty subtree.

use super::internal::{pack_weight, unpack_weight};
use super::{
    bytes_at, count, lower_bound, prefix_of, seal, shared_prefix, u16_at, u64_at, write_header, Damage, Key, Parse,
    Region, HEADER_BYTES, KIND_LEAF,
};

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

impl Link<'_> {
    pub(super) fn stored_len(&self) -> usize {
        18 + self.src.len()
    }
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
    pub(super) fn stored_len(&self) -> usize {
        match self {
            ValueRepr::Inline(v) => v.len(),
            ValueRepr::Blob { .. } => 8,
        }
    }
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
    pub fn parse(region: Region<'a>, offset: u64) -> Parse<Self> {
        Self::from_node(region.node(offset, KIND_LEAF)?, offset)
    }

    pub fn from_node(node: &'a [u8], offset: u64) -> Parse<Self> {
        let count = count(node);
        let prefix = prefix_of(node, offset)?;
        let hints = (HEADER_BYTES + prefix.len()).next_multiple_of(8);
        let slots = hints + 8 * count;
        if slots + 4 * count > node.len() {
            return Err(Damage::new(offset, "leaf arrays out of bounds"));
        }
        // Writers never write an empty leaf. Refusing one bounds every
        // cursor by the keys it yields: a crafted tree could otherwise list
        // one empty leaf below every child of a chain of internal nodes, and
        // a scan would visit it (their fan-out)^(depth) times, yielding nothing.
        if count == 0 {
            return Err(Damage::new(offset, "empty leaf"));
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

    /// The leaf's encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.node.len()
    }

    #[inline]
    fn hint(&self, i: usize) -> u64 {
        let at = self.hints + 8 * i;
        u64::from_le_bytes(bytes_at(self.node, at))
    }

    #[inline]
    fn slot(&self, i: usize) -> usize {
        let at = self.slots + 4 * i;
        u32::from_le_bytes(bytes_at(self.node, at)) as usize
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
    #[inline(always)]
    pub fn entry(&self, i: usize) -> Parse<LeafEntry<'a>> {
        let at = self.slot(i);
        let node: &'a [u8] = self.node;
        let bad = || Damage::new(self.offset, format!("leaf entry {i} out of bounds"));
        // The fixed part in one load: suffix length, flags, value length.
        let fixed = node.get(at..).and_then(|b| b.first_chunk::<8>()).ok_or_else(bad)?;
        let len = u16::from_le_bytes([fixed[0], fixed[1]]) as usize;
        let flags = fixed[2];
        let value_len = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        if flags & FLAG_BLOB != 0 {
            let blob = u64_at(node, at + 8).ok_or_else(bad)?;
            let tail = node.get(at + 16..at + 16 + len).ok_or_else(bad)?;
            let link = if flags & FLAG_LINK != 0 { Some(self.link_at(at + 16 + len)?) } else { None };
            let value = ValueRepr::Blob { offset: blob, len: value_len };
            return Ok(LeafEntry { key: Key { head: self.prefix, tail }, value, link });
        }
        // Suffix then value, checked as one range.
        let end = (at + 8 + len).checked_add(value_len as usize).ok_or_else(bad)?;
        let both = node.get(at + 8..end).ok_or_else(bad)?;
        let (tail, value) = both.split_at(len);
        let link = if flags & FLAG_LINK != 0 { Some(self.link_at(end)?) } else { None };
        Ok(LeafEntry { key: Key { head: self.prefix, tail }, value: ValueRepr::Inline(value), link })
    }

    /// The suffix and value of entry `i` when it is a plain entry (value
    /// inline, no link, no other flag), and the suffix's first eight bytes
    /// as [`first_word`](super::first_word) reads them: the shape a scan
    /// meets almost always, read with one bounds check. `None` for any
    /// other entry, and for one out of bounds, which
    /// [`entry`](Self::entry) then reads or reports.
    #[inline(always)]
    pub fn plain_entry(&self, i: usize) -> Option<(&'a [u8], &'a [u8], u64)> {
        let at = self.slot(i);
        let node: &'a [u8] = self.node;
        let fixed = node.get(at..)?.first_chunk::<8>()?;
        if fixed[2] != 0 {
            return None;
        }
        let len = u16::from_le_bytes([fixed[0], fixed[1]]) as usize;
        let value_len = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        let both = node.get(at + 8..(at + 8 + len).checked_add(value_len)?)?;
        let (tail, value) = both.split_at(len);
        // A short suffix is most often followed by its value: one load of
        // eight bytes, the ones past the suffix masked off, instead of a
        // branch on the suffix's length.
        let word = match node.get(at + 8..).and_then(|b| b.first_chunk::<8>()) {
            Some(bytes) => {
                let mask = u64::MAX.checked_shr(64 - 8 * len.min(8) as u32).unwrap_or(0);
                u64::from_le_bytes(*bytes) & mask
            }
            None => super::first_word(tail),
        };
        Some((tail, value, word))
    }

    /// The prefix every key of this leaf shares, in place.
    #[inline(always)]
    pub fn prefix(&self) -> &'a [u8] {
        self.prefix
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

    /// A copy of this leaf with the inline value of entry `i` replaced by
    /// `value`, sealed into `out`: byte for byte what [`build_leaf`] writes
    /// for the same entries, at the cost of one copy instead of an entry at
    /// a time. `None` when `build_leaf` would not write that one node:
    /// entry `i` is not plain (a blob or a link), `value` is not inline,
    /// the entries would no longer fit one node, or the leaf is not laid out
    /// as `build_leaf` lays one out (entries back to back, in order), which
    /// a leaf with a valid checksum written by another process need not be.
    pub fn with_value_replaced(&self, i: usize, value: &[u8], out: &mut Vec<u8>) -> Parse<Option<PatchedLeaf>> {
        if i >= self.count || value.len() > super::INLINE_VALUE_MAX || self.plain_entry(i).is_none() {
            return Ok(None);
        }
        // What is copied as it is must be what `build_leaf` writes: zero
        // reserved bytes and padding, the prefix the first and last keys
        // share (checked below), each entry's hint, the entries back to back
        // from the end of the offsets with only the flags it sets. One pass
        // also takes the sizes and counts `build_leaf`'s caller would.
        let padding = &self.node[HEADER_BYTES + self.prefix.len()..self.hints];
        if self.node[1] != 0 || self.node[14..16] != [0, 0] || padding.iter().any(|&b| b != 0) {
            return Ok(None);
        }
        let (mut end, mut encoded, mut keys, mut longest) = (self.slots + 4 * self.count, 0usize, 0u64, 0u16);
        let mut old_value = 0..0;
        let (mut first, mut last): (&[u8], &[u8]) = (&[], &[]);
        for j in 0..self.count {
            let at = self.slot(j);
            if at != end {
                return Ok(None);
            }
            let entry = self.entry(j)?;
            // `entry` read the fixed part at `at`: it is in bounds.
            let (flags, reserved) = (self.node[at + 2], self.node[at + 3]);
            if flags & !(FLAG_BLOB | FLAG_LINK) != 0 || reserved != 0 || self.hint(j) != super::hint_of(entry.key.tail)
            {
                return Ok(None);
            }
            // The fixed part and an inline value, or the fixed part and a
            // blob's offset.
            let body = match entry.value {
                ValueRepr::Inline(v) => 8 + v.len(),
                ValueRepr::Blob { .. } => 16,
            };
            let stored = if j == i {
                let start = end + 8 + entry.key.tail.len();
                old_value = start..start + entry.value.stored_len();
                value.len()
            } else {
                entry.value.stored_len()
            };
            end += body + entry.key.tail.len() + entry.link.map_or(0, |l| l.stored_len());
            if j == 0 {
                first = entry.key.tail;
            }
            last = entry.key.tail;
            let entry = EntryRef::from(entry);
            encoded += entry.encoded_len() - entry.value.stored_len() + stored;
            keys = keys.saturating_add(entry.weight());
            longest = longest.max(entry.longest());
        }
        if end > self.node.len() || super::align8(end) != self.node.len() {
            return Ok(None);
        }
        // The prefix is all the first and last keys share when their
        // suffixes share nothing (one entry: its whole key).
        if matches!((first.first(), last.first()), (Some(a), Some(b)) if a == b) {
            return Ok(None);
        }
        if encoded > super::NODE_TARGET_BYTES - HEADER_BYTES {
            return Ok(None);
        }
        out.clear();
        out.extend_from_slice(&self.node[..old_value.start]);
        out.extend_from_slice(value);
        out.extend_from_slice(&self.node[old_value.end..end]);
        let at = self.slot(i);
        out[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        let grown = value.len() as isize - old_value.len() as isize;
        for j in i + 1..self.count {
            let at = self.slots + 4 * j;
            let moved = (self.slot(j) as isize + grown) as u32;
            out[at..at + 4].copy_from_slice(&moved.to_le_bytes());
        }
        seal(out);
        Ok(Some(PatchedLeaf { keys, longest }))
    }

    /// Index of the first entry `>= q`, and whether it equals `q`.
    #[inline]
    pub fn search(&self, q: &[u8]) -> Parse<(usize, bool)> {
        super::prefetch(&self.node[self.hints..self.slots + 4 * self.count]);
        lower_bound(self.count, self.prefix, |i| self.hint(i), |i| self.suffix(i), q)
    }
}

/// What [`LeafView::with_value_replaced`] tells of the leaf it wrote, as
/// [`build_leaf`]'s caller counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchedLeaf {
    /// Nodes the leaf stands for (its entries' weights).
    pub keys: u64,
    /// The longest key it stands for.
    pub longest: u16,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{u32_at, verified_node_at, INLINE_VALUE_MAX, NODE_TARGET_BYTES};

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
        let view = LeafView::parse(Region::for_test(&region), 16).unwrap();
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

    /// The documented offsets: prefix, hints, entry offsets, then each
    /// entry's fields (an inline value, and a blob with a link).
    #[test]
    fn leaf_layout() {
        let (k1, k2): (&[u8], &[u8]) = (b"ab\0cd", b"ab\0ef");
        let link = Link { root: 8, src: b"src", keys: 5, longest: 7 };
        let entries = [
            EntryRef { key: Key::whole(k1), value: ValueRepr::Inline(b"val"), link: None },
            EntryRef { key: Key::whole(k2), value: ValueRepr::Blob { offset: 4096, len: 999 }, link: Some(link) },
        ];
        let mut b = Vec::new();
        build_leaf(&entries, &mut b);
        assert_eq!((b[0], u16_at(&b, 2), u16_at(&b, 12)), (KIND_LEAF, Some(2), Some(3)));
        assert_eq!(&b[16..19], b"ab\0");
        let hints = 24; // 16 + 3, padded to 8
        assert_eq!(u64_at(&b, hints), Some(u64::from_le_bytes(*b"\0\0\0\0\0\0dc")));
        let slots = hints + 16;
        let first = u32_at(&b, slots).unwrap() as usize;
        let second = u32_at(&b, slots + 4).unwrap() as usize;
        // suffix_len, flags, 0, value_len, suffix, value
        assert_eq!((u16_at(&b, first), b[first + 2], b[first + 3], u32_at(&b, first + 4)), (Some(2), 0, 0, Some(3)));
        assert_eq!(&b[first + 8..first + 13], b"cdval");
        // a blob (flag 1) with a link (flag 2): blob offset, suffix, link
        assert_eq!((u16_at(&b, second), b[second + 2], u32_at(&b, second + 4)), (Some(2), 3, Some(999)));
        assert_eq!(u64_at(&b, second + 8), Some(4096));
        assert_eq!(&b[second + 16..second + 18], b"ef");
        let at = second + 18;
        assert_eq!(u64_at(&b, at), Some(8));
        assert_eq!(u64_at(&b, at + 8).map(unpack_weight), Some((5, 7)));
        assert_eq!((u16_at(&b, at + 16), &b[at + 18..at + 21]), (Some(3), &b"src"[..]));
    }

    /// Entries as `build_leaf` takes them, from owned keys and values.
    fn entries_of<'a>(items: &'a [(Vec<u8>, Entry)]) -> Vec<EntryRef<'a>> {
        items
            .iter()
            .map(|(k, e)| EntryRef {
                key: Key::whole(k),
                value: match e {
                    Entry::Inline(v) | Entry::Linked(v) => ValueRepr::Inline(v),
                    Entry::Blob(len) => ValueRepr::Blob { offset: 64, len: *len },
                },
                link: matches!(e, Entry::Linked(_)).then_some(Link { root: 8, src: b"/src", keys: 3, longest: 9 }),
            })
            .collect()
    }

    #[derive(Clone, Debug)]
    enum Entry {
        Inline(Vec<u8>),
        Blob(u32),
        Linked(Vec<u8>),
    }

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Entry::Inline),
            2 => proptest::collection::vec(any::<u8>(), 0..=INLINE_VALUE_MAX).prop_map(Entry::Inline),
            1 => (257u32..100_000).prop_map(Entry::Blob),
            1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Entry::Linked),
        ]
    }

    proptest::proptest! {
        /// Replacing one value in place writes what building the leaf
        /// anew writes, and declines exactly where the rebuild would not be
        /// that one node.
        #[test]
        fn a_replaced_value_is_the_leaf_built_anew(
            suffixes in proptest::collection::btree_set(proptest::collection::vec(b'a'..=b'e', 0..12), 1..40),
            kinds in proptest::collection::vec(entry_strategy(), 40),
            pick in 0usize..40,
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=INLINE_VALUE_MAX + 1),
        ) {
            let items: Vec<(Vec<u8>, Entry)> = suffixes
                .iter()
                .zip(kinds)
                .map(|(s, e)| ([b"/local/domain/".as_slice(), s].concat(), e))
                .collect();
            let i = pick % items.len();
            let mut old = Vec::new();
            build_leaf(&entries_of(&items), &mut old);
            let view = LeafView::from_node(&old, 4096).unwrap();
            let mut patched = Vec::new();
            let got = view.with_value_replaced(i, &value, &mut patched).unwrap();

            let mut changed = items.clone();
            let plain = matches!(changed[i].1, Entry::Inline(_));
            changed[i].1 = Entry::Inline(value.clone());
            let entries = entries_of(&changed);
            let encoded: usize = entries.iter().map(EntryRef::encoded_len).sum();
            let one_node = encoded <= NODE_TARGET_BYTES - HEADER_BYTES;
            if plain && value.len() <= INLINE_VALUE_MAX && one_node {
                let mut rebuilt = Vec::new();
                build_leaf(&entries, &mut rebuilt);
                proptest::prop_assert_eq!(&patched, &rebuilt);
                let keys = entries.iter().map(EntryRef::weight).sum::<u64>();
                let longest = entries.iter().map(EntryRef::longest).max().unwrap();
                proptest::prop_assert_eq!(got, Some(PatchedLeaf { keys, longest }));
            } else {
                proptest::prop_assert_eq!(got, None);
            }
        }
    }

    /// A leaf with a valid layout but entries not back to back (one entry
    /// offset pointing at another entry, as a neighbour could write and
    /// seal) is not patched: the rebuild reads it entry by entry instead.
    #[test]
    fn a_leaf_not_laid_out_as_written_is_not_patched() {
        let items: Vec<(Vec<u8>, Entry)> =
            (0..4).map(|n| (format!("/k{n}").into_bytes(), Entry::Inline(vec![n as u8; 10]))).collect();
        let mut leaf = Vec::new();
        build_leaf(&entries_of(&items), &mut leaf);
        let slots = LeafView::from_node(&leaf, 8).unwrap().slots;
        let second = leaf[slots + 4..slots + 8].to_vec();
        leaf[slots + 8..slots + 12].copy_from_slice(&second);
        seal(&mut leaf);
        let view = LeafView::from_node(&leaf, 8).unwrap();
        let mut out = Vec::new();
        assert_eq!(view.with_value_replaced(0, b"new", &mut out).unwrap(), None);
        // As written, it is.
        let mut leaf = Vec::new();
        build_leaf(&entries_of(&items), &mut leaf);
        let view = LeafView::from_node(&leaf, 8).unwrap();
        assert!(view.with_value_replaced(0, b"new", &mut out).unwrap().is_some());
        // Any byte `build_leaf` would write otherwise, changed and sealed:
        // a lying hint, a reserved header byte, the prefix's padding, an
        // entry's reserved byte, a flag it never sets.
        let (hints, slots) = (view.hints, view.slots);
        let entry = u32_at(&leaf, slots + 4).unwrap() as usize;
        let prefix_end = HEADER_BYTES + view.prefix.len();
        for (what, at, byte) in [
            ("a hint", hints + 8 + 7, 0xff),
            ("a reserved header byte", 1, 1),
            ("the header's last reserved byte", 15, 1),
            ("the prefix's padding", prefix_end, 1),
            ("an entry's reserved byte", entry + 3, 1),
            ("an unknown flag", entry + 2, 4),
        ] {
            if what == "the prefix's padding" && prefix_end == hints {
                continue;
            }
            let mut crafted = leaf.clone();
            crafted[at] = byte;
            seal(&mut crafted);
            let view = LeafView::from_node(&crafted, 8).unwrap();
            assert_eq!(view.with_value_replaced(0, b"new", &mut out).unwrap(), None, "{what}");
        }
        // A prefix shorter than the keys share: the same entries, sealed
        // with one byte less of prefix.
        let short: Vec<(Vec<u8>, Entry)> =
            (0..4).map(|n| (format!("/p/k{n}").into_bytes(), Entry::Inline(vec![n as u8; 10]))).collect();
        let mut leaf = Vec::new();
        build_leaf(&entries_of(&short), &mut leaf);
        let shared = LeafView::from_node(&leaf, 8).unwrap().prefix.len();
        let mut crafted = Vec::new();
        write_header(&mut crafted, KIND_LEAF, short.len(), shared - 1);
        crafted.extend_from_slice(&short[0].0[..shared - 1]);
        crafted.resize(crafted.len().next_multiple_of(8), 0);
        for (k, _) in &short {
            crafted.extend_from_slice(&Key::whole(k).hint_from(shared - 1).to_le_bytes());
        }
        let slots = crafted.len();
        crafted.resize(slots + 4 * short.len(), 0);
        for (i, (k, e)) in short.iter().enumerate() {
            let at = crafted.len() as u32;
            crafted[slots + 4 * i..slots + 4 * i + 4].copy_from_slice(&at.to_le_bytes());
            let Entry::Inline(v) = e else { unreachable!() };
            crafted.extend_from_slice(&((k.len() - shared + 1) as u16).to_le_bytes());
            crafted.extend_from_slice(&[0, 0]);
            crafted.extend_from_slice(&(v.len() as u32).to_le_bytes());
            crafted.extend_from_slice(&k[shared - 1..]);
            crafted.extend_from_slice(v);
        }
        seal(&mut crafted);
        let view = LeafView::from_node(&crafted, 8).unwrap();
        assert_eq!(view.entry(2).unwrap().value, ValueRepr::Inline(&[2u8; 10]), "the crafted leaf reads");
        assert_eq!(view.with_value_replaced(0, b"new", &mut out).unwrap(), None, "a short prefix");
        assert_eq!(LeafView::from_node(&out, 8).unwrap().entry(0).unwrap().value, ValueRepr::Inline(b"new"));
    }
}
