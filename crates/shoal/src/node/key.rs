//! Keys inside nodes: held in two pieces (the node's shared prefix and an
//! entry's suffix), compared without copying, and searched through 8-byte
//! *hints*: a search compares the prefix once, then binary-searches the
//! contiguous hint array (a few cache lines) and compares whole suffixes
//! only among equal hints.

use std::cmp::Ordering;

use super::{u16_at, Damage, Parse, HEADER_BYTES};

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

    #[inline]
    pub fn cmp_key(&self, other: &Key<'_>) -> Ordering {
        if std::ptr::eq(self.head, other.head) {
            return cmp_suffixes(self.tail, other.tail);
        }
        // Eight bytes at a time across both pieces, zero-padded past the
        // shorter key: while the common length lasts the words are the
        // keys' bytes; a word past it differs only if the longer key has
        // a non-zero byte there, and then the shorter (a prefix) is less,
        // as the zero padding makes it; otherwise the lengths decide.
        let (a_len, b_len) = (self.len(), other.len());
        let mut at = 0;
        while at < a_len.min(b_len) {
            let (a, b) = (self.word_at(at), other.word_at(at));
            if a != b {
                return a.swap_bytes().cmp(&b.swap_bytes());
            }
            at += 8;
        }
        a_len.cmp(&b_len)
    }

    /// The eight key bytes from `at` (zero-padded past the end), as a
    /// little-endian word: see [`first_word`].
    #[inline(always)]
    fn word_at(&self, at: usize) -> u64 {
        if let Some(word) = self.head.get(at..).and_then(|h| h.first_chunk::<8>()) {
            return u64::from_le_bytes(*word);
        }
        match self.head.get(at..) {
            // Astride the two pieces: the head's last bytes, then the tail's.
            Some(rest) if !rest.is_empty() => first_word(rest) | (first_word(self.tail) << (8 * rest.len())),
            _ => first_word(self.tail.get(at - self.head.len()..).unwrap_or_default()),
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

    pub(super) fn common_prefix_len(&self, other: &Key<'_>) -> usize {
        let n = self.len().min(other.len());
        (0..n).find(|&i| self.byte(i) != other.byte(i)).unwrap_or(n)
    }

    /// Appends the bytes from `start` on.
    pub(super) fn extend_from(&self, start: usize, out: &mut Vec<u8>) {
        if start < self.head.len() {
            out.extend_from_slice(&self.head[start..]);
            out.extend_from_slice(self.tail);
        } else {
            out.extend_from_slice(&self.tail[start - self.head.len()..]);
        }
    }

    pub(super) fn hint_from(&self, start: usize) -> u64 {
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

/// Compares two byte strings as slices do, deciding most pairs on their
/// first eight bytes without a call to `memcmp`: zero-padding both to eight
/// bytes keeps their order unless the padded forms are equal.
#[inline]
pub fn cmp_suffixes(a: &[u8], b: &[u8]) -> Ordering {
    match hint_of(a).cmp(&hint_of(b)) {
        Ordering::Equal => a.cmp(b),
        o => o,
    }
}

/// `a.cmp(b)` for slices of the same length, eight bytes at a time: the
/// prefixes and suffixes a lookup compares are short, and a call to
/// `memcmp` cost more than the comparison.
#[inline]
fn cmp_same_len(mut a: &[u8], mut b: &[u8]) -> Ordering {
    debug_assert_eq!(a.len(), b.len());
    while let (Some((x, a_rest)), Some((y, b_rest))) = (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) {
        if x != y {
            return u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y));
        }
        (a, b) = (a_rest, b_rest);
    }
    // Fewer than eight bytes each, as many in both: zero-padded big-endian
    // words order as the bytes do.
    hint_of(a).cmp(&hint_of(b))
}

/// `a.cmp(b)` for short slices (see [`cmp_same_len`]).
#[inline]
fn cmp_short(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    cmp_same_len(&a[..n], &b[..n]).then(a.len().cmp(&b.len()))
}

/// The hint of a key suffix: its first eight bytes, big-endian, zero-padded.
#[inline]
pub fn hint_of(suffix: &[u8]) -> u64 {
    first_word(suffix).swap_bytes()
}

/// The first eight bytes of `bytes`, zero-padded, as a little-endian
/// word: byte 0 in the lowest bits. A shorter slice is read with two
/// overlapping loads, not byte by byte nor with a variable-length copy
/// (which would call `memcpy`).
#[inline(always)]
pub fn first_word(bytes: &[u8]) -> u64 {
    if let Some(first) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*first);
    }
    let n = bytes.len();
    if let (Some(low), Some(high)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        // Bytes 0..4 and n-4..n, overlapping in the same bytes.
        return u64::from(u32::from_le_bytes(*low)) | u64::from(u32::from_le_bytes(*high)) << (8 * (n - 4));
    }
    match bytes {
        [] => 0,
        // One to three bytes: the first, the middle and the last cover them.
        [first, ..] => {
            u64::from(*first) | u64::from(bytes[n / 2]) << (8 * (n / 2)) | u64::from(bytes[n - 1]) << (8 * (n - 1))
        }
    }
}

/// Lower bound of `q` among `count` keys that all start with `prefix`:
/// the index of the first key `>= q`, and whether it equals `q`.
#[inline]
pub(super) fn lower_bound<'a>(
    count: usize,
    prefix: &[u8],
    hint: impl Fn(usize) -> u64,
    suffix: impl Fn(usize) -> Parse<&'a [u8]>,
    q: &[u8],
) -> Parse<(usize, bool)> {
    let n = prefix.len().min(q.len());
    match cmp_same_len(&q[..n], &prefix[..n]) {
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
        match cmp_short(suffix(mid)?, rest) {
            Ordering::Less => a = mid + 1,
            Ordering::Equal => return Ok((mid, true)),
            Ordering::Greater => b = mid,
        }
    }
    Ok((a, false))
}

pub(super) fn prefix_of(node: &[u8], offset: u64) -> Parse<&[u8]> {
    let len = u16_at(node, 12).unwrap_or(0) as usize;
    node.get(HEADER_BYTES..HEADER_BYTES + len).ok_or_else(|| Damage::new(offset, "key prefix out of bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn first_words_and_hints_are_those_of_the_bytes() {
        // Every length from 0 to 17, each byte position holding a value
        // no other position holds, so a byte read twice or misplaced shows.
        for n in 0..=17usize {
            let bytes: Vec<u8> = (0..n).map(|i| 0xA1 ^ (i as u8).wrapping_mul(37)).collect();
            let mut padded = [0u8; 8];
            let m = n.min(8);
            padded[..m].copy_from_slice(&bytes[..m]);
            assert_eq!(first_word(&bytes), u64::from_le_bytes(padded), "first word of {n} bytes");
            assert_eq!(hint_of(&bytes), u64::from_be_bytes(padded), "hint of {n} bytes");
        }
    }

    #[test]
    fn long_keys_in_pieces_compare_like_their_bytes() {
        // Keys of 0 to 24 bytes over an alphabet with 0 and 255, cut at
        // every place: words astride the pieces, past the shorter key, and
        // keys that are prefixes of each other.
        let alphabet = [0u8, 1, b'a', 0x7f, 0x80, 255];
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..3000 {
            let x: Vec<u8> = (0..next() % 25).map(|_| alphabet[next() % alphabet.len()]).collect();
            // Half the time a key that shares a long start with `x`.
            let y: Vec<u8> = if next() % 2 == 0 {
                let keep = next() % (x.len() + 1);
                let mut y = x[..keep].to_vec();
                y.extend((0..next() % 10).map(|_| alphabet[next() % alphabet.len()]));
                y
            } else {
                (0..next() % 25).map(|_| alphabet[next() % alphabet.len()]).collect()
            };
            let (i, j) = (next() % (x.len() + 1), next() % (y.len() + 1));
            let (kx, ky) = (Key { head: &x[..i], tail: &x[i..] }, Key { head: &y[..j], tail: &y[j..] });
            assert_eq!(kx.cmp_key(&ky), x.cmp(&y), "{x:?} at {i} vs {y:?} at {j}");
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

    /// Every pair of short byte strings over an alphabet with 0 and 255,
    /// of lengths around the eight-byte step, orders as `Ord` does.
    #[test]
    fn short_comparisons_order_as_slices_do() {
        let alphabet = [0u8, 1, 0x7f, 0x80, 255];
        let mut strings: Vec<Vec<u8>> = vec![Vec::new()];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1, 2, 7, 8, 9, 15, 16, 17, 24] {
            for _ in 0..12 {
                let s = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        alphabet[(seed >> 33) as usize % alphabet.len()]
                    })
                    .collect::<Vec<u8>>();
                strings.push(s);
            }
        }
        // Strings that differ only in their last byte, or in one past eight.
        strings.push(b"abcdefgh\x00".to_vec());
        strings.push(b"abcdefgh\x01".to_vec());
        strings.push(b"abcdefgh".to_vec());
        for a in &strings {
            for b in &strings {
                assert_eq!(cmp_short(a, b), a.cmp(b), "{a:?} vs {b:?}");
                if a.len() == b.len() {
                    assert_eq!(cmp_same_len(a, b), a.cmp(b), "{a:?} vs {b:?}");
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
