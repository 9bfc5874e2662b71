//! Entry points for fuzzing every parser of bytes that come from a file or
//! a handle, for the property tests (`tests/fuzz_parsers.rs`) and the
//! runner (`examples/fuzz_parsers.rs`); not a stable API.
//!
//! Each entry point runs one parser over arbitrary input and, on whatever
//! it accepts, every accessor: all entries, keys, values, links, hints,
//! searches for probe keys. They return nothing: what they check is that
//! no input makes a parser panic, loop without end or allocate more than
//! the input justifies. [`samples`] builds valid encodings with the
//! crate's own encoders, mutates them, and decodes them back for the
//! round-trip tests.

use std::hint::black_box;
use std::path::Path;

use crate::node::{self, ChildRef, InternalView, Key, LeafView, Region, ValueRepr, Verified};
use crate::{arena, control, journal, meta, path as paths, readers, settings, tree};

mod inputs;
mod samples;
pub use inputs::*;
pub use samples::*;

/// Most entries a walk or scan of fuzzed bytes reads. Links let a few
/// nodes stand for exponentially many keys (as copies of copies do in a
/// real store), so a walk is bounded by what it yields and its caller
/// decides when to stop, as this one does.
pub const MAX_ENTRIES: usize = 4096;
/// Keys found in the input that are also searched for, at most.
const MAX_PROBES: usize = 48;
/// Where a node given alone is placed in its region: offset 0 is never a node.
pub const NODE_AT: u64 = 8;

/// A region holding `node` at [`NODE_AT`].
fn placed(node: &[u8]) -> Vec<u8> {
    let mut region = vec![0u8; NODE_AT as usize];
    region.extend_from_slice(node);
    region
}

/// A bitmap that calls every node of a region of `len` bytes checked: the
/// parsers then see the bytes as a hostile process that recomputes
/// checksums could make them.
fn trusting(len: usize) -> Verified {
    let verified = Verified::new(len as u64 + 8);
    for offset in (0..=len as u64).step_by(8) {
        verified.set(offset);
    }
    verified
}

/// Keys worth searching for: those found in the input, their neighbours,
/// and a few fixed ones.
fn probes(found: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> =
        vec![Vec::new(), b"\0".to_vec(), b"a".to_vec(), b"local\0domain\x007".to_vec(), vec![0xFF; 9]];
    for key in found.iter().take(MAX_PROBES) {
        out.push(key.clone());
        let mut below = key.clone();
        below.push(0);
        out.push(below);
        if let Some((last, rest)) = key.split_last() {
            let mut before = rest.to_vec();
            before.push(last.wrapping_sub(1));
            out.push(before);
        }
    }
    out
}

/// A leaf node's bytes: parsed as a node, and through a region that checks
/// its checksum.
pub fn leaf(bytes: &[u8]) {
    if let Ok(view) = LeafView::from_node(bytes, 1 << 40) {
        exercise_leaf(view, None);
    }
    let region = placed(bytes);
    let verified = Verified::new(region.len() as u64);
    if let Ok(view) = LeafView::parse(Region::new(&region, &verified), NODE_AT) {
        exercise_leaf(view, Some(Region::new(&region, &verified)));
    }
}

fn exercise_leaf(view: LeafView<'_>, region: Option<Region<'_>>) {
    let mut keys = Vec::new();
    black_box(view.offset());
    for i in 0..view.len() {
        let Ok(entry) = view.entry(i) else { continue };
        black_box((entry.weight(), entry.longest(), entry.link));
        if let Some(region) = region {
            let _ = black_box(node::value_bytes(region, entry.value));
        }
        if keys.len() < MAX_PROBES {
            keys.push(entry.key.to_vec());
        }
    }
    for q in probes(&keys) {
        let _ = black_box(view.search(&q));
    }
}

/// An internal node's bytes: parsed as a node, and through a region that
/// checks its checksum.
pub fn internal(bytes: &[u8]) {
    if let Ok(view) = InternalView::from_node(bytes, 1 << 40) {
        exercise_internal(view);
    }
    let region = placed(bytes);
    let verified = Verified::new(region.len() as u64);
    if let Ok(view) = InternalView::parse(Region::new(&region, &verified), NODE_AT) {
        exercise_internal(view);
    }
}

fn exercise_internal(view: InternalView<'_>) {
    let mut keys = Vec::new();
    for i in 0..view.len() {
        black_box((view.child(i).ok(), view.keys_below(i), view.longest_below(i)));
        if let Ok(key) = view.key(i) {
            if keys.len() < MAX_PROBES {
                keys.push(key.to_vec());
            }
        }
    }
    for q in probes(&keys) {
        let _ = black_box(view.route(&q));
        let _ = black_box(view.first_at_or_after(&q));
    }
    if let Ok(first) = view.key(0) {
        let first = first.to_vec();
        let child = ChildRef { first_key: Key::whole(&first), offset: 8, keys: 3, longest: 9, node_bytes: 0 };
        let mut out = Vec::new();
        black_box(view.with_child_replaced(view.len() - 1, &child, &mut out));
    }
}

/// A value blob's bytes, read for several value lengths, through a region
/// that checks its checksum and one that trusts it.
pub fn blob(bytes: &[u8]) {
    let region = placed(bytes);
    let checked = Verified::new(region.len() as u64);
    let trusted = trusting(region.len());
    let stated = node::u32_at(bytes, 16).unwrap_or(0);
    for len in [0, 1, bytes.len().saturating_sub(16) as u32, stated, u32::MAX] {
        for verified in [&checked, &trusted] {
            let value = ValueRepr::Blob { offset: NODE_AT, len };
            let _ = black_box(node::value_bytes(Region::new(&region, verified), value));
        }
        black_box(node::page_aligned(len as usize, 4096));
    }
}

/// A region holding commit records: each 8-aligned offset of its last
/// kilobyte read as a record, then its chain and change set.
pub fn commit(bytes: &[u8]) {
    let checked = Verified::new(bytes.len() as u64);
    let trusted = trusting(bytes.len());
    for verified in [&checked, &trusted] {
        let region = Region::new(bytes, verified);
        let from = (bytes.len().saturating_sub(1024) as u64) & !7;
        for offset in (from..bytes.len() as u64).step_by(8) {
            if let Ok(c) = node::parse_commit(region, offset) {
                exercise_commit(region, c);
            }
        }
    }
}

fn exercise_commit(region: Region<'_>, c: node::Commit) {
    for link in node::chain(region, c).take(MAX_ENTRIES) {
        if link.is_err() {
            break;
        }
    }
    if c.changes != 0 {
        exercise_changes(region, c.changes);
    }
}

/// A change set's bytes, through a region that checks its checksum and one
/// that trusts it.
pub fn changes(bytes: &[u8]) {
    let region = placed(bytes);
    let checked = Verified::new(region.len() as u64);
    let trusted = trusting(region.len());
    for verified in [&checked, &trusted] {
        exercise_changes(Region::new(&region, verified), NODE_AT);
    }
}

fn exercise_changes(region: Region<'_>, offset: u64) {
    if let Ok(set) = node::ChangesView::parse(region, offset) {
        black_box(set.overflowed());
        for entry in set.iter() {
            match entry {
                Ok(entry) => drop(black_box(entry)),
                Err(_) => break,
            }
        }
    }
}

/// An arena region read as a tree at `root`, as a snapshot reads it: every
/// node checked against its checksum when first met.
pub fn tree(bytes: &[u8], root: u64) {
    let verified = Verified::new(bytes.len() as u64);
    exercise_tree(Region::new(bytes, &verified), root, true);
}

/// As [`tree`], with every checksum taken as matching: the region as a
/// hostile process that can write the arena file and compute checksums
/// could make it.
pub fn crafted_tree(bytes: &[u8], root: u64) {
    let verified = trusting(bytes.len());
    exercise_tree(Region::new(bytes, &verified), root, true);
}

/// With `through_commit`, a `root` that is a commit record is also read
/// as one, and its tree too.
fn exercise_tree(region: Region<'_>, root: u64, through_commit: bool) {
    if let (true, Ok(c)) = (through_commit, node::parse_commit(region, root)) {
        exercise_commit(region, c);
        exercise_tree(region, c.root, false);
    }
    let mut keys = Vec::new();
    let mut cursor = tree::Cursor::new(region, root);
    if cursor.seek(b"").is_ok() {
        for _ in 0..MAX_ENTRIES {
            match cursor.next_entry() {
                Ok(Some(entry)) if keys.len() < MAX_PROBES => keys.push(entry.key.to_vec()),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    let whole_walk = walk(region, root, b"");
    let probes = probes(&keys);
    for (i, q) in probes.iter().enumerate() {
        let _ = black_box(tree::get(region, root, q));
        let _ = black_box(tree::locate(region, root, q));
        let _ = black_box(tree::resolve(region, root, q, true));
        let _ = black_box(tree::covering_link(region, root, q));
        let _ = black_box(tree::below(region, root, q));
        let mut cursor = tree::Cursor::new(region, root);
        if cursor.seek(q).is_ok() {
            let _ = black_box(cursor.next_entry());
        }
        if i < 8 {
            let _ = black_box(tree::list(region, root, q));
            let _ = black_box(tree::children(region, root, q));
            walk(region, root, q);
        }
    }
    let _ = black_box(tree::reachable_bytes(region, &[root], false));
    let _ = black_box(tree::reachable_bytes(region, &[root], true));
    // A diff reads every entry either side holds (links included) and
    // keeps the differences: only trees a capped walk read to the end.
    if whole_walk {
        let _ = black_box(crate::diff::diff(region, 0, region, root, true, b"").is_ok());
        let _ = black_box(crate::diff::diff(region, root, region, root, false, b"").is_ok());
        let _ = black_box(crate::diff::diff(region, root, region, root, true, b"").is_ok());
    }
}

/// Walks the subtree at `key`, links followed, for at most [`MAX_ENTRIES`]
/// entries and their values; whether it ended (at its end or at damage).
fn walk(region: Region<'_>, root: u64, key: &[u8]) -> bool {
    let Ok(mut walk) = tree::Walk::subtree(region, root, key) else { return true };
    for _ in 0..MAX_ENTRIES {
        match walk.next_entry() {
            Ok(Some(entry)) => {
                black_box(entry.key.len());
                let _ = black_box(node::value_bytes(region, entry.value));
            }
            _ => return true,
        }
    }
    false
}

/// A journal file's bytes, replayed as a recovering writer would.
pub fn journal(bytes: &[u8]) {
    if let Ok((records, end)) = journal::read_records(Path::new(journal::FILE_NAME), bytes, false) {
        black_box(end);
        for record in &records {
            for op in &record.ops {
                black_box(op.key());
            }
        }
    }
}

/// A meta file's bytes: each slot decoded as a checkpoint.
pub fn meta_slot(bytes: &[u8]) {
    black_box(meta::decode(bytes));
    black_box(meta::decode(bytes.get(512..).unwrap_or(&[])));
}

/// A control file's bytes, read by a reader of this boot and by a reader
/// of the boot the bytes name (so that the trusted path runs too).
pub fn control(bytes: &[u8]) {
    black_box(control::words_of(bytes, control::this_boot()));
    let named = [node::u64_at(bytes, 32).unwrap_or(0), node::u64_at(bytes, 40).unwrap_or(0)];
    black_box(control::words_of(bytes, named));
}

/// A reader table's bytes: its header, then as many slots as it declares
/// and the bytes hold.
pub fn reader_table(bytes: &[u8]) {
    let Some(slots) = readers::slots_of_header(&bytes[..bytes.len().min(16)]) else { return };
    let body = bytes.get(4096..).unwrap_or(&[]);
    let body = &body[..body.len().min((slots * 64) as usize)];
    for slot in readers::used_slots(body) {
        black_box((slot.slot, slot.pid, slot.start_time, slot.reader));
    }
}

/// A settings file's text, parsed, validated and written back.
pub fn settings(text: &str) {
    if let Ok(options) = settings::parse(Path::new(settings::FILE_NAME), text) {
        let _ = black_box(options.validate());
        black_box(settings::render(&options));
    }
}

/// A buffer reference's bytes, decoded and encoded again.
pub fn bufref(bytes: &[u8]) {
    if let Ok(r) = crate::BufRef::decode(bytes) {
        black_box((r.len(), r.is_empty(), r.version(), r.generation(), r.file_offset(), r.encode()));
    }
}

/// A path: validated and turned into a key both ways, and the key helpers.
pub fn path(text: &str) {
    let fast = paths::with_valid_key(text, |key| key.to_vec());
    let slow = paths::key(text);
    if let (Ok(key), Ok(body)) = (slow, paths::validate(text)) {
        black_box(fast.is_ok());
        black_box(paths::path_of(&key));
        black_box(paths::cmp_key_path(&key, body));
        black_box(paths::cmp_key_path(b"local\0domain", body));
        black_box(paths::subtree_end(&key));
        black_box(paths::child_prefix(&key));
        black_box(paths::parent(&key));
        black_box(paths::in_subtree(&key, b"local"));
        black_box(paths::ancestors(&key).count());
    }
    black_box(paths::path_of(text.as_bytes()));
}

/// An arena file's header page, checked for the generation it names and
/// for generation 1.
pub fn arena_header(bytes: &[u8]) {
    let file = Path::new("arena-fuzz");
    let named = node::u64_at(bytes, 24).unwrap_or(0);
    let _ = black_box(arena::check_header(file, bytes, named));
    let _ = black_box(arena::check_header(file, bytes, 1));
}
