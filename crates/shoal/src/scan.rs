//! Ordered scans of a subtree: [`Scan`] walks it in path order, handing
//! out values in place and building paths only when asked for.
//!
//! Keys are stored with `\0` between components and split into a leaf's
//! shared prefix and an entry's suffix (see `node`). A path is the key
//! with `/` for `\0`, so [`Scan::next_path`] renders a leaf's prefix once
//! and each entry's suffix after it.

use crate::node;
use crate::snapshot::Snapshot;
use crate::tree;
use crate::Result;

/// An iterator over a subtree, in path order.
pub struct Scan<'s> {
    snapshot: &'s Snapshot,
    region: node::Region<'s>,
    walk: tree::Walk<'s>,
    path: PathBuffer<'s>,
    /// The key of the entry [`Scan::next_path`] took the general step to.
    staged: tree::WalkKey<'s>,
}

/// What the general step of [`Scan::next_path`] found.
enum Step<'s> {
    Entry(&'s [u8]),
    End,
    Failed(Box<crate::Error>),
}

/// One node of a [`Scan`]: its value borrowed from the mapping, its path
/// built only when asked for (from the node's bytes in place, unless the
/// node was reached through a subtree copied by reference).
#[derive(Clone)]
pub struct Entry<'s> {
    key: tree::WalkKey<'s>,
    value: &'s [u8],
}

impl<'s> Scan<'s> {
    pub(crate) fn new(snapshot: &'s Snapshot, walk: tree::Walk<'s>) -> Scan<'s> {
        Scan {
            snapshot,
            region: snapshot.region(),
            walk,
            path: PathBuffer::default(),
            staged: tree::WalkKey::Owned(Vec::new()),
        }
    }

    /// The next node's path and value, the path written into a buffer the
    /// scan reuses: the same as [`Entry::write_path`] without an allocation
    /// per node, and with each leaf's shared prefix rendered once.
    #[inline]
    pub fn next_path(&mut self) -> Option<Result<(&str, &'s [u8])>> {
        let plain = match self.walk.next_plain() {
            Some(plain) => plain,
            // The general step leaves its entry's key in `staged`, so that
            // no path hands a whole entry through memory: the caller's
            // loop keeps the path and value in registers.
            None => match self.step_general() {
                Step::Entry(value) => return Some(Ok((self.path.render(&self.staged), value))),
                Step::End => return None,
                Step::Failed(e) => return Some(Err(*e)),
            },
        };
        Some(Ok((self.path.render_in_place(plain.key, plain.hint), plain.value)))
    }

    #[inline(never)]
    fn step_general(&mut self) -> Step<'s> {
        match self.next_general() {
            Some(Ok(entry)) => {
                self.staged = entry.key;
                Step::Entry(entry.value)
            }
            None => Step::End,
            Some(Err(e)) => Step::Failed(Box::new(e)),
        }
    }

    /// Any entry: through links, of any value, checked in full.
    #[inline(never)]
    fn next_general(&mut self) -> Option<Result<Entry<'s>>> {
        let entry = match self.walk.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(d) => return Some(Err(self.snapshot.damaged(d))),
        };
        Some(
            node::value_bytes(self.region, entry.value)
                .map(|value| Entry { key: entry.key, value })
                .map_err(|d| self.snapshot.damaged(d)),
        )
    }
}

impl<'s> Entry<'s> {
    /// The node's value, borrowed from the shared mapping.
    pub fn value(&self) -> &'s [u8] {
        self.value
    }

    /// The node's path (allocates; see [`Entry::write_path`]).
    pub fn path(&self) -> String {
        let mut out = String::with_capacity(self.key.len() + 1);
        self.write_path(&mut out);
        out
    }

    /// Appends the node's path to `out`, reusing its allocation.
    pub fn write_path(&self, out: &mut String) {
        let (head, tail) = pieces(&self.key);
        write_path(out, head, tail);
    }
}

/// A key as the two pieces it is stored in (the second may be empty).
fn pieces<'k>(key: &'k tree::WalkKey<'_>) -> (&'k [u8], &'k [u8]) {
    match key {
        tree::WalkKey::Arena(key) => (key.head, key.tail),
        tree::WalkKey::Owned(key) => (key, &[]),
    }
}

/// Appends the path of the key stored as `head` then `tail`.
fn write_path(out: &mut String, head: &[u8], tail: &[u8]) {
    out.push('/');
    match (std::str::from_utf8(head), std::str::from_utf8(tail)) {
        (Ok(head), Ok(tail)) => {
            push_swapped(out, head);
            push_swapped(out, tail);
        }
        // The node prefix may split a character; a damaged key shows lossily.
        _ => push_swapped(out, &String::from_utf8_lossy(&[head, tail].concat())),
    }
}

/// Appends `key_text` with `/` for each `\0`.
#[inline]
fn push_swapped(out: &mut String, key_text: &str) {
    let mut start = 0;
    for (i, &b) in key_text.as_bytes().iter().enumerate() {
        if b == 0 {
            // A NUL is one byte of its own: `i` is a character boundary.
            out.push_str(&key_text[start..i]);
            out.push('/');
            start = i + 1;
        }
    }
    out.push_str(&key_text[start..]);
}

/// The path of the entry [`Scan::next_path`] handed out last, and how much
/// of it is the rendered prefix of the leaf it came from.
#[derive(Default)]
struct PathBuffer<'s> {
    /// The path, `/` for each `\0` of the key: UTF-8 when the key is, as
    /// the two bytes are both ASCII.
    bytes: Vec<u8>,
    /// The leaf prefix `bytes[..head_len]` renders (after the leading `/`).
    head: &'s [u8],
    head_len: usize,
    /// Whether `bytes[..head_len]` is UTF-8 on its own (a leaf prefix may
    /// end inside a character).
    head_is_text: bool,
    /// The path of a key that is not UTF-8, shown lossily.
    lossy: String,
}

impl<'s> PathBuffer<'s> {
    /// The path of a key read in place, whose head is most often the
    /// prefix rendered last.
    #[inline(always)]
    fn render_in_place(&mut self, key: node::Key<'s>, hint: u64) -> &str {
        if !self.head_is_text || key.head.is_empty() || !std::ptr::eq(key.head, self.head) {
            return self.render(&tree::WalkKey::Arena(key));
        }
        self.bytes.truncate(self.head_len);
        let ascii = match key.tail.len() {
            // The suffix is its hint's bytes: one word swapped and written.
            len @ 0..=8 => push_swapped_word(&mut self.bytes, hint.swap_bytes(), len),
            _ => push_swapped_bytes(&mut self.bytes, key.tail),
        };
        if ascii {
            // SAFETY: as in `render`: `bytes[..head_len]` was checked to be
            // UTF-8 when the prefix was rendered (`head_is_text`; nothing
            // writes below `head_len` since) and what follows is `tail`,
            // found ASCII, with `\0` swapped for `/`. The buffer is this
            // scan's own heap memory.
            return unsafe { std::str::from_utf8_unchecked(&self.bytes) };
        }
        self.checked()
    }

    #[inline(never)]
    fn render(&mut self, key: &tree::WalkKey<'s>) -> &str {
        let (head, tail) = pieces(key);
        // A leaf prefix, read in place, that the next entries may share.
        let shared: &'s [u8] = match key {
            tree::WalkKey::Arena(key) => key.head,
            tree::WalkKey::Owned(_) => &[],
        };
        if shared.is_empty() || !std::ptr::eq(shared, self.head) {
            self.bytes.clear();
            self.bytes.push(b'/');
            let ascii = push_swapped_bytes(&mut self.bytes, head);
            self.head = shared;
            self.head_len = self.bytes.len();
            self.head_is_text = ascii || std::str::from_utf8(&self.bytes).is_ok();
        }
        self.bytes.truncate(self.head_len);
        if push_swapped_bytes(&mut self.bytes, tail) && self.head_is_text {
            // SAFETY: `bytes[..head_len]` was checked to be UTF-8 when the
            // prefix was rendered (above; nothing writes below `head_len`
            // since) and the bytes after it are `tail`'s, found ASCII, with
            // `\0` swapped for `/` (ASCII too): a valid string followed by
            // ASCII is valid. The buffer is this scan's own heap memory; no
            // other process can write it.
            return unsafe { std::str::from_utf8_unchecked(&self.bytes) };
        }
        self.checked()
    }

    /// The whole path, checked: a leaf prefix may end inside a character
    /// that the suffix completes.
    #[cold]
    fn checked(&mut self) -> &str {
        match std::str::from_utf8(&self.bytes) {
            Ok(path) => path,
            Err(_) => {
                // A damaged key shows lossily, as `Entry::write_path` shows it.
                self.lossy = String::from_utf8_lossy(&self.bytes).into_owned();
                &self.lossy
            }
        }
    }
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// `word` with each zero byte made a `/`.
#[inline(always)]
fn swapped(word: u64) -> u64 {
    // 0x80 in exactly the bytes that are zero (no carry crosses bytes:
    // the low seven bits of each are added to 0x7f on their own).
    let zero = !(((word & LOW7) + LOW7) | word | LOW7);
    word | ((zero >> 7) * u64::from(b'/'))
}

/// Appends the first `len` (at most eight) bytes of the little-endian
/// `word`, zero-padded past them, with `/` for each `\0`; says whether they
/// were ASCII.
#[inline(always)]
fn push_swapped_word(out: &mut Vec<u8>, word: u64, len: usize) -> bool {
    debug_assert!(len <= 8 && (len == 8 || word >> (8 * len) == 0));
    // Eight bytes written, the padding then cut: a fixed-size copy.
    out.extend_from_slice(&swapped(word).to_le_bytes());
    out.truncate(out.len() - (8 - len));
    word & !LOW7 == 0
}

/// Appends `key` with `/` for each `\0`, eight bytes at a time, and says
/// whether it was all ASCII.
#[inline(always)]
fn push_swapped_bytes(out: &mut Vec<u8>, key: &[u8]) -> bool {
    let mut high = 0;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of eight"));
        high |= word;
        out.extend_from_slice(&swapped(word).to_le_bytes());
    }
    let rest = words.remainder();
    let rest_ascii = rest.is_empty() || push_swapped_word(out, node::first_word(rest), rest.len());
    rest_ascii && high & !LOW7 == 0
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("path", &self.path()).field("len", &self.value.len()).finish()
    }
}

impl<'s> Iterator for Scan<'s> {
    type Item = Result<Entry<'s>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(plain) = self.walk.next_plain() {
            return Some(Ok(Entry { key: tree::WalkKey::Arena(plain.key), value: plain.value }));
        }
        self.next_general()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_bytes_are_the_key_with_slashes_for_nuls() {
        let alphabet = [0u8, b'/', b'a', 0x7f, 0x80, 0xC3, 0xFF];
        // Lengths 0 to 19 cross the word and remainder paths; each byte
        // drawn from the alphabet by position, shifted per length.
        for n in 0..20usize {
            for shift in 0..alphabet.len() {
                let key: Vec<u8> = (0..n).map(|i| alphabet[(i * 3 + shift + n) % alphabet.len()]).collect();
                let mut out = b"/pre".to_vec();
                let ascii = push_swapped_bytes(&mut out, &key);
                let mut want = b"/pre".to_vec();
                want.extend(key.iter().map(|&b| if b == 0 { b'/' } else { b }));
                assert_eq!(out, want, "{key:?}");
                assert_eq!(ascii, key.is_ascii(), "{key:?}");
            }
        }
    }
}
