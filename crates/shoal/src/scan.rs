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
        Scan { snapshot, region: snapshot.region(), walk, path: PathBuffer::default() }
    }

    /// The next node's path and value, the path written into a buffer the
    /// scan reuses: the same as [`Entry::write_path`] without an allocation
    /// per node, and with each leaf's shared prefix rendered once.
    pub fn next_path(&mut self) -> Option<Result<(&str, &'s [u8])>> {
        let entry = match self.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok((self.path.render(&entry.key), entry.value)))
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
    #[inline]
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
            self.bytes.extend(head.iter().map(|&b| if b == 0 { b'/' } else { b }));
            self.head = shared;
            self.head_len = self.bytes.len();
            self.head_is_text = std::str::from_utf8(&self.bytes).is_ok();
        }
        self.bytes.truncate(self.head_len);
        self.bytes.extend(tail.iter().map(|&b| if b == 0 { b'/' } else { b }));
        if self.head_is_text && tail.is_ascii() {
            // SAFETY: `bytes[..head_len]` was checked to be UTF-8 when the
            // prefix was rendered (above; nothing writes below `head_len`
            // since) and the bytes after it are `tail`'s, checked ASCII, with
            // `\0` swapped for `/` (ASCII too): a valid string followed by
            // ASCII is valid. The buffer is this scan's own heap memory; no
            // other process can write it.
            return unsafe { std::str::from_utf8_unchecked(&self.bytes) };
        }
        // Otherwise the whole path is checked, not the pieces: a leaf prefix
        // may end inside a character that the suffix completes.
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

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("path", &self.path()).field("len", &self.value.len()).finish()
    }
}

impl<'s> Iterator for Scan<'s> {
    type Item = Result<Entry<'s>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
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
