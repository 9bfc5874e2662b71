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
    /// The stretch of the current leaf that [`Scan::next_path`] reads on
    /// its own, if one is under way.
    run: Option<Run<'s>>,
}

/// What the leaf step of [`Scan::next_path`] found.
enum Step<'s> {
    /// An entry, its path rendered: its value.
    Entry(&'s [u8]),
    End,
    Failed(Box<crate::Error>),
}

/// A stretch of plain entries of one leaf that [`Scan::next_path`] reads on
/// its own, with the walk's conditions checked once when it starts
/// ([`tree::Walk::plain_run`]: in place, the leaf wholly inside the subtree,
/// the last entry from this leaf) and the path buffer's head this leaf's
/// prefix, found UTF-8. The walk is behind while a run lasts: the run ends
/// ([`Scan::end_run`]) before any other step.
struct Run<'s> {
    leaf: node::LeafView<'s>,
    next: usize,
    last_tail: &'s [u8],
    last_hint: u64,
}

impl<'s> Run<'s> {
    /// The next entry's suffix and value, and the suffix's first two words
    /// (eight bytes each, zero-padded; the second is read only for a suffix
    /// of at most sixteen bytes), when it is plain, its suffix ASCII, and it orders
    /// after the last entry: the run moves past it. `None` leaves the run
    /// where it is, for the walk to take the entry.
    #[inline(always)]
    fn step(&mut self) -> Option<(&'s [u8], &'s [u8], u64, u64)> {
        if self.next >= self.leaf.len() {
            return None;
        }
        let (tail, value, word) = self.leaf.plain_entry(self.next)?;
        // The second word of a suffix of nine to sixteen bytes.
        let second = tail.get(8..).filter(|rest| rest.len() <= 8).map_or(0, node::first_word);
        let ascii = if tail.len() <= 16 { (word | second) & !LOW7 == 0 } else { tail.is_ascii() };
        let hint = word.swap_bytes();
        let after = hint > self.last_hint || (hint == self.last_hint && tail > self.last_tail);
        if !(ascii && after) {
            return None;
        }
        self.next += 1;
        self.last_tail = tail;
        self.last_hint = hint;
        Some((tail, value, word, second))
    }
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
        Scan { snapshot, region: snapshot.region(), walk, path: PathBuffer::default(), run: None }
    }

    /// The next node's path and value, the path written into a buffer the
    /// scan reuses: the same as [`Entry::write_path`] without an allocation
    /// per node, and with each leaf's shared prefix rendered once.
    #[inline]
    pub fn next_path(&mut self) -> Option<Result<(&str, &'s [u8])>> {
        if let Some(run) = &mut self.run {
            if let Some((tail, value, word, second)) = run.step() {
                let at = self.path.head_len;
                let end = at + tail.len();
                if tail.len() <= 16 {
                    // The suffix is the words' bytes, zero-padded: written
                    // as two words, the padding past the path (the buffer
                    // keeps sixteen bytes of room past any path).
                    let out = &mut self.path.bytes[at..at + 16];
                    out[..8].copy_from_slice(&swapped(word).to_le_bytes());
                    out[8..].copy_from_slice(&swapped(second).to_le_bytes());
                } else {
                    self.path.write_long_tail(tail);
                }
                let path = &self.path.bytes[..end];
                // SAFETY: the head is text (a run starts only then: `start_run`)
                // and the suffix ASCII (`Run::step`): see `PathBuffer`.
                return Some(Ok((unsafe { std::str::from_utf8_unchecked(path) }, value)));
            }
        }
        // The leaf step renders the path and hands back only the value, so
        // that no path hands a whole entry through memory: the caller's
        // loop keeps the path and value in registers.
        match self.leaf_step() {
            Step::Entry(value) => Some(Ok((self.path.text(), value))),
            Step::End => None,
            Step::Failed(e) => Some(Err(*e)),
        }
    }

    /// Any step a run does not take: a leaf's first entry, an entry that
    /// is not plain, one met through a link, the end, damage. Renders the
    /// entry's path, then starts a run through the rest of its leaf when
    /// it can.
    #[inline(never)]
    fn leaf_step(&mut self) -> Step<'s> {
        self.end_run();
        if let Some(plain) = self.walk.next_plain() {
            self.path.render(&tree::WalkKey::Arena(plain.key));
            self.start_run();
            return Step::Entry(plain.value);
        }
        match self.next_general() {
            Some(Ok(entry)) => {
                self.path.render(&entry.key);
                self.start_run();
                Step::Entry(entry.value)
            }
            None => Step::End,
            Some(Err(e)) => Step::Failed(Box::new(e)),
        }
    }

    /// Starts a run through the rest of the current leaf, if the walk
    /// allows one and the path buffer holds this leaf's prefix as text.
    #[inline(always)]
    fn start_run(&mut self) {
        if !self.path.head_is_text || self.path.head.is_empty() {
            return;
        }
        if let Some((leaf, next, last, last_hint)) = self.walk.plain_run() {
            if std::ptr::eq(last.head, self.path.head) {
                self.run = Some(Run { leaf, next, last_tail: last.tail, last_hint });
            }
        }
    }

    /// Brings the walk up to where the run is, and ends it.
    #[inline]
    fn end_run(&mut self) {
        if let Some(run) = self.run.take() {
            self.walk.end_plain_run(run.next, run.last_tail, run.last_hint);
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
///
/// Why a path is handed out unchecked (`from_utf8_unchecked`): a string
/// that is valid UTF-8 followed by ASCII bytes is valid UTF-8. When
/// `head_is_text`, `bytes[..head_len]` was checked (or found ASCII) by
/// `render`, and only `render` writes below `head_len`; a run starts only
/// then and ends before `render` is called again. The bytes after the head
/// are a suffix with `\0` swapped for `/` (both ASCII), handed out only when
/// it was found ASCII (`Run::step` for a run's entries, `render` for
/// `is_text`). The buffer is this scan's own heap memory, which no other
/// process can write.
#[derive(Default)]
struct PathBuffer<'s> {
    /// The path in `bytes[..len]`, `/` for each `\0` of the key: UTF-8
    /// when the key is, as the two bytes are both ASCII. Sixteen bytes or
    /// more follow it, so that a suffix is written a word at a time.
    bytes: Vec<u8>,
    len: usize,
    /// The leaf prefix `bytes[..head_len]` renders (after the leading `/`).
    head: &'s [u8],
    head_len: usize,
    /// Whether `bytes[..head_len]` is UTF-8 on its own (a leaf prefix may
    /// end inside a character).
    head_is_text: bool,
    /// Whether `render` found the whole path UTF-8 (see `text`).
    is_text: bool,
    /// The path of a key that is not UTF-8, shown lossily.
    lossy: String,
}

impl<'s> PathBuffer<'s> {
    /// Renders the path of `key`: its head (a leaf prefix read in place,
    /// which the next entries may share) only if it is not the one
    /// rendered last.
    fn render(&mut self, key: &tree::WalkKey<'s>) {
        let (head, tail) = pieces(key);
        let shared: &'s [u8] = match key {
            tree::WalkKey::Arena(key) => key.head,
            tree::WalkKey::Owned(_) => &[],
        };
        let same_head = !shared.is_empty() && std::ptr::eq(shared, self.head);
        let head_len = if same_head { self.head_len } else { 1 + head.len() };
        // Room for both pieces, each written a word at a time.
        let room = head_len + tail.len() + 16;
        if self.bytes.len() < room {
            self.bytes.resize(room, 0);
        }
        if !same_head {
            self.bytes[0] = b'/';
            let ascii = write_swapped(&mut self.bytes[1..], head);
            self.head = shared;
            self.head_len = head_len;
            self.head_is_text = ascii || std::str::from_utf8(&self.bytes[..head_len]).is_ok();
        }
        let ascii = write_swapped(&mut self.bytes[head_len..], tail);
        self.len = head_len + tail.len();
        self.is_text = self.head_is_text && ascii;
    }

    /// The path rendered last. Unless its head was found UTF-8 and its
    /// suffix ASCII, it is checked whole: a leaf prefix may end inside a
    /// character that the suffix completes. A damaged key shows lossily, as
    /// [`Entry::write_path`] shows it.
    fn text(&mut self) -> &str {
        if self.is_text {
            let path = &self.bytes[..self.len];
            // SAFETY: `render` found the head text and the suffix ASCII, and
            // nothing wrote below `len` since: see `PathBuffer`.
            return unsafe { std::str::from_utf8_unchecked(path) };
        }
        match std::str::from_utf8(&self.bytes[..self.len]) {
            Ok(path) => path,
            Err(_) => {
                self.lossy = String::from_utf8_lossy(&self.bytes[..self.len]).into_owned();
                &self.lossy
            }
        }
    }

    /// Writes a suffix longer than a word after the head.
    #[inline(never)]
    fn write_long_tail(&mut self, tail: &[u8]) {
        let room = self.head_len + tail.len() + 16;
        if self.bytes.len() < room {
            self.bytes.resize(room, 0);
        }
        write_swapped(&mut self.bytes[self.head_len..], tail);
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

/// Writes `key` at the start of `out` with `/` for each `\0`, a word at a
/// time, and says whether it was all ASCII. `out` has room for the key and
/// eight bytes more: the last word may write up to seven bytes of padding
/// past the key.
#[inline(always)]
fn write_swapped(out: &mut [u8], key: &[u8]) -> bool {
    let mut high = 0;
    let mut at = 0;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of eight"));
        high |= word;
        out[at..at + 8].copy_from_slice(&swapped(word).to_le_bytes());
        at += 8;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let word = node::first_word(rest);
        high |= word;
        out[at..at + 8].copy_from_slice(&swapped(word).to_le_bytes());
    }
    high & !LOW7 == 0
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
        self.end_run();
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
                let mut out = vec![b'#'; 3 + n + 8];
                let ascii = write_swapped(&mut out[3..], &key);
                let want: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
                assert_eq!(&out[3..3 + n], &want[..], "{key:?}");
                assert_eq!(&out[..3], b"###", "{key:?}: written before its place");
                assert_eq!(ascii, key.is_ascii(), "{key:?}");
            }
        }
    }
}
