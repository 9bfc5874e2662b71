//! Internal nodes: children, each with the smallest key below it and its
//! weight.
//!
//! ```text
//! header (prefix_len = P, count = N, N >= 1)
//! 16       prefix: the P bytes all N keys share
//!          zero padding to a multiple of 8
//! C        u64 child[N]       offsets of the children (each below this node)
//! C+8N     u64 weight[N]      see below
//! C+16N    u64 hint[N]        first 8 key bytes after the prefix, big-endian, zero-padded
//! C+24N    u32 key_offset[N]  where key i starts, from the node's start
//! key      u16 suffix_len, suffix
//! ```
//!
//! `key[i]` is the smallest key under `child[i]`. A *weight* word packs
//! two figures of a subtree: bits 0..48 count its keys (nodes), bits
//! 48..64 give the length of its longest key (for a link: of the longest
//! key suffix below the link's source). The lengths let a copy of a
//! subtree to a deeper place be refused, without reading the subtree, when
//! it would make a path longer than the limit.

use super::{
    bytes_at, count, lower_bound, prefix_of, seal, shared_prefix, u16_at, write_header, Damage, Key, Parse, Region,
    HEADER_BYTES, KIND_INTERNAL,
};

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
    pub fn parse(region: Region<'a>, offset: u64) -> Parse<Self> {
        Self::from_node(region.node(offset, KIND_INTERNAL)?, offset)
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

    #[inline(always)]
    fn u32_in(&self, at: usize) -> u32 {
        u32::from_le_bytes(bytes_at(self.node, at))
    }

    #[inline(always)]
    fn u64_in(&self, at: usize) -> u64 {
        u64::from_le_bytes(bytes_at(self.node, at))
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
        super::prefetch(&self.node[self.children + 16 * self.count..self.children + 24 * self.count]);
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
        let weights = self.children + 8 * self.count;
        let at = weights + 8 * i;
        out[at..at + 8].copy_from_slice(&pack_weight(child.keys, child.longest).to_le_bytes());
        // Over the patched weight words, as one run of memory.
        let longest = out[weights..weights + 8 * self.count]
            .chunks_exact(8)
            .map(|w| unpack_weight(u64::from_le_bytes(w.try_into().unwrap_or_default())).1)
            .max()
            .unwrap_or(0);
        seal(out);
        longest
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let view = InternalView::parse(Region::for_test(&region), 64).unwrap();
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
        let view = InternalView::parse(Region::for_test(&region), 64).unwrap();
        assert_eq!((view.child(1).unwrap(), view.keys_below(1), view.longest_below(1)), (8, 9, 50));
        assert_eq!(unpack_weight(pack_weight(u64::MAX, 3071)), ((1 << 48) - 1, 3071));
        assert!(view.key(1).unwrap().eq_bytes(b"k\x0020"));
    }

    /// The documented offsets: children, weights, hints, key offsets, keys.
    #[test]
    fn internal_layout() {
        let (k1, k2): (&[u8], &[u8]) = (b"x\0a", b"x\0b");
        let children = [
            ChildRef { first_key: Key::whole(k1), offset: 800, keys: 3, longest: 9, node_bytes: 0 },
            ChildRef { first_key: Key::whole(k2), offset: 1600, keys: 4, longest: 12, node_bytes: 0 },
        ];
        let mut b = Vec::new();
        build_internal(&children, &mut b);
        assert_eq!((b[0], u16_at(&b, 2), u16_at(&b, 12)), (KIND_INTERNAL, Some(2), Some(2)));
        let c = 24; // 16 + 2, padded to 8
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!((word(c), word(c + 8)), (800, 1600));
        assert_eq!((unpack_weight(word(c + 16)), unpack_weight(word(c + 24))), ((3, 9), (4, 12)));
        assert_eq!(word(c + 32), u64::from_be_bytes(*b"a\0\0\0\0\0\0\0"));
        let key = u32::from_le_bytes(b[c + 48..c + 52].try_into().unwrap()) as usize;
        assert_eq!((u16_at(&b, key), b[key + 2]), (Some(1), b'a'));
    }
}
