//! Valid encodings of every parsed format, built with the crate's own
//! encoders from a seed, and decoders that give back what was encoded (for
//! the round-trip tests).

use std::path::Path;

use super::{Gen, MAX_ENTRIES};
use crate::node::{self, ChildRef, EntryRef, Key, Link, Region, ValueRepr, Verified};
use crate::{arena, control, journal, meta, readers, settings, ChangeKind, Options};

pub use crate::control::Words;
pub use crate::journal::{JournalOp, Record};
pub use crate::meta::Checkpoint;
pub use crate::node::Commit;

/// A leaf entry's value, as encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Inline(Vec<u8>),
    /// A value stored in the blob node at `offset`, `len` bytes long.
    Blob {
        offset: u64,
        len: u32,
    },
}

/// A link entry's target, as encoded (see `node::leaf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub root: u64,
    pub src: Vec<u8>,
    pub keys: u64,
    pub longest: u16,
}

/// A leaf entry, as encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySpec {
    pub key: Vec<u8>,
    pub value: Value,
    pub link: Option<LinkSpec>,
}

/// A change set's entries.
pub type ChangeList = Vec<(ChangeKind, Vec<u8>)>;
/// Keys and values, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// A child of an internal node, as encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSpec {
    pub key: Vec<u8>,
    pub offset: u64,
    pub keys: u64,
    pub longest: u16,
}

/// Sorted, distinct keys shaped like paths' (segments joined by 0).
pub fn sample_keys(g: &mut Gen, n: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let segments = 1 + g.below(4);
            let mut key = Vec::new();
            for s in 0..segments {
                if s > 0 {
                    key.push(0);
                }
                let len = 1 + g.size(6, 40, 16);
                key.extend((0..len).map(|_| b"abcdxyz019.-"[g.below(12)]));
            }
            key
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Encodes a leaf of `entries` (sorted by key, distinct, at least one).
pub fn encode_leaf(entries: &[EntrySpec]) -> Vec<u8> {
    let refs: Vec<EntryRef<'_>> = entries
        .iter()
        .map(|e| EntryRef {
            key: Key::whole(&e.key),
            value: match &e.value {
                Value::Inline(v) => ValueRepr::Inline(v),
                Value::Blob { offset, len } => ValueRepr::Blob { offset: *offset, len: *len },
            },
            link: e.link.as_ref().map(|l| Link { root: l.root, src: &l.src, keys: l.keys, longest: l.longest }),
        })
        .collect();
    let mut buf = Vec::new();
    node::build_leaf(&refs, &mut buf);
    buf
}

/// The entries of a leaf node that sits at `offset`.
pub fn decode_leaf(bytes: &[u8], offset: u64) -> Result<Vec<EntrySpec>, String> {
    let view = node::LeafView::from_node(bytes, offset).map_err(|d| d.detail)?;
    (0..view.len())
        .map(|i| {
            let e = view.entry(i).map_err(|d| d.detail)?;
            Ok(EntrySpec {
                key: e.key.to_vec(),
                value: match e.value {
                    ValueRepr::Inline(v) => Value::Inline(v.to_vec()),
                    ValueRepr::Blob { offset, len } => Value::Blob { offset, len },
                },
                link: e.link.map(|l| LinkSpec { root: l.root, src: l.src.to_vec(), keys: l.keys, longest: l.longest }),
            })
        })
        .collect()
}

/// A valid leaf (to sit anywhere above 2^32: its links point below that).
pub fn sample_leaf(g: &mut Gen) -> (Vec<EntrySpec>, Vec<u8>) {
    let n = 1 + g.size(12, 200, 8);
    let entries: Vec<EntrySpec> = sample_keys(g, n)
        .into_iter()
        .map(|key| {
            let value = if g.chance(5) {
                Value::Blob { offset: 8 * g.below(1 << 20) as u64, len: 257 + g.below(1 << 16) as u32 }
            } else {
                let len = g.size(12, 257, 10);
                Value::Inline(g.bytes(len))
            };
            let link = g.chance(6).then(|| LinkSpec {
                root: 8 * g.below(1 << 29) as u64,
                src: sample_keys(g, 1).remove(0),
                keys: g.next_u64() >> 16,
                longest: g.below(3072) as u16,
            });
            EntrySpec { key, value, link }
        })
        .collect();
    let bytes = encode_leaf(&entries);
    (entries, bytes)
}

/// Encodes an internal node over `children` (sorted by key, at least one).
pub fn encode_internal(children: &[ChildSpec]) -> Vec<u8> {
    let refs: Vec<ChildRef<'_>> = children
        .iter()
        .map(|c| ChildRef {
            first_key: Key::whole(&c.key),
            offset: c.offset,
            keys: c.keys,
            longest: c.longest,
            node_bytes: 0,
        })
        .collect();
    let mut buf = Vec::new();
    node::build_internal(&refs, &mut buf);
    buf
}

/// The children of an internal node that sits at `offset`.
pub fn decode_internal(bytes: &[u8], offset: u64) -> Result<Vec<ChildSpec>, String> {
    let view = node::InternalView::from_node(bytes, offset).map_err(|d| d.detail)?;
    (0..view.len())
        .map(|i| {
            Ok(ChildSpec {
                key: view.key(i).map_err(|d| d.detail)?.to_vec(),
                offset: view.child(i).map_err(|d| d.detail)?,
                keys: view.keys_below(i),
                longest: view.longest_below(i),
            })
        })
        .collect()
}

/// A valid internal node (to sit anywhere above 2^32).
pub fn sample_internal(g: &mut Gen) -> (Vec<ChildSpec>, Vec<u8>) {
    let n = 1 + g.size(10, 150, 8);
    let children: Vec<ChildSpec> = sample_keys(g, n)
        .into_iter()
        .map(|key| ChildSpec {
            key,
            offset: 8 * (1 + g.below(1 << 28) as u64),
            keys: g.next_u64() >> 16,
            longest: g.below(3072) as u16,
        })
        .collect();
    let bytes = encode_internal(&children);
    (children, bytes)
}

/// A value and its blob node.
pub fn sample_blob(g: &mut Gen) -> (Vec<u8>, Vec<u8>) {
    let len = g.size(300, 5000, 4);
    let value = g.bytes(len);
    let node = node::build_blob(&value);
    (value, node)
}

pub fn encode_commit(c: &Commit) -> Vec<u8> {
    node::build_commit(c)
}

/// The commit record at `offset` of `region`, its checksum checked.
pub fn decode_commit(region: &[u8], offset: u64) -> Result<Commit, String> {
    let verified = Verified::new(region.len() as u64);
    node::parse_commit(Region::new(region, &verified), offset).map_err(|d| d.detail)
}

pub fn encode_changes(changes: &[(ChangeKind, Vec<u8>)]) -> Vec<u8> {
    let mut buf = Vec::new();
    node::build_changes(changes.iter().map(|(kind, key)| (*kind, key.as_slice())), &mut buf);
    buf
}

/// A change set node's entries, and whether it overflowed.
pub fn decode_changes(node_bytes: &[u8]) -> Result<(bool, ChangeList), String> {
    let region = super::placed(node_bytes);
    let verified = Verified::new(region.len() as u64);
    let set = node::ChangesView::parse(Region::new(&region, &verified), super::NODE_AT).map_err(|d| d.detail)?;
    let entries = set.iter().map(|e| e.map(|(kind, key)| (kind, key.to_vec())).map_err(|d| d.detail));
    Ok((set.overflowed(), entries.collect::<Result<_, _>>()?))
}

pub fn sample_changes(g: &mut Gen) -> (ChangeList, Vec<u8>) {
    let kinds = [ChangeKind::Set, ChangeKind::Delete, ChangeKind::DeleteTree, ChangeKind::CopyTree];
    let n = g.below(30);
    let changes: Vec<_> = sample_keys(g, n).into_iter().map(|k| (kinds[g.below(4)], k)).collect();
    let bytes = encode_changes(&changes);
    (changes, bytes)
}

/// An arena region built node by node: a tree (with blobs and a link to an
/// older tree), change sets and a chain of two commit records.
#[derive(Clone, Debug)]
pub struct SampleRegion {
    pub bytes: Vec<u8>,
    /// The newest tree's root.
    pub root: u64,
    /// The newest commit record.
    pub commit: u64,
    /// Every node's offset.
    pub nodes: Vec<u64>,
    /// What a walk of the newest tree yields, links followed.
    pub expected: KeyValues,
}

impl SampleRegion {
    fn append(&mut self, node: &[u8]) -> u64 {
        let at = self.bytes.len() as u64;
        self.bytes.extend_from_slice(node);
        self.nodes.push(at);
        at
    }
}

pub fn sample_region(g: &mut Gen) -> SampleRegion {
    let mut r = SampleRegion { bytes: vec![0; 8], root: 0, commit: 0, nodes: Vec::new(), expected: Vec::new() };
    // An older tree, the link's target: a node "src" with two children.
    let old_entries: Vec<EntrySpec> = [&b"src"[..], b"src\0a", b"src\0b"]
        .iter()
        .map(|k| EntrySpec { key: k.to_vec(), value: Value::Inline(k.to_vec()), link: None })
        .collect();
    let old_root = r.append(&encode_leaf(&old_entries));
    let old_commit =
        Commit { offset: r.bytes.len() as u64, version: 1, root: old_root, key_count: 3, ..Commit::default() };
    let old_commit = r.append(&encode_commit(&old_commit));
    // The newest tree: keys below "m", then a link at "zz" (no key below it).
    let n = 1 + g.below(60);
    let mut keys = sample_keys(g, n);
    keys.retain(|k| k.as_slice() < b"m".as_slice());
    let mut entries = Vec::new();
    for key in keys {
        let len = g.size(20, 600, 6);
        let value = g.bytes(len);
        r.expected.push((key.clone(), value.clone()));
        let value = if value.len() > node::INLINE_VALUE_MAX {
            Value::Blob { offset: r.append(&node::build_blob(&value)), len: value.len() as u32 }
        } else {
            Value::Inline(value)
        };
        entries.push(EntrySpec { key, value, link: None });
    }
    let link = LinkSpec { root: old_root, src: b"src".to_vec(), keys: 2, longest: 2 };
    entries.push(EntrySpec { key: b"zz".to_vec(), value: Value::Inline(b"link".to_vec()), link: Some(link) });
    r.expected.push((b"zz".to_vec(), b"link".to_vec()));
    r.expected.extend([(b"zz\0a".to_vec(), b"src\0a".to_vec()), (b"zz\0b".to_vec(), b"src\0b".to_vec())]);
    let mut children = Vec::new();
    for chunk in entries.chunks(1 + g.below(8)) {
        let longest = chunk.iter().map(|e| e.key.len() + e.link.as_ref().map_or(0, |l| l.longest as usize)).max();
        let keys = chunk.iter().map(|e| 1 + e.link.as_ref().map_or(0, |l| l.keys)).sum();
        let offset = r.append(&encode_leaf(chunk));
        children.push(ChildSpec { key: chunk[0].key.clone(), offset, keys, longest: longest.unwrap_or(0) as u16 });
    }
    r.root = if children.len() == 1 { children[0].offset } else { r.append(&encode_internal(&children)) };
    let changes = encode_changes(&[(ChangeKind::Set, b"a".to_vec()), (ChangeKind::CopyTree, b"zz".to_vec())]);
    let changes = r.append(&changes);
    let newest = Commit {
        offset: r.bytes.len() as u64,
        version: 2,
        root: r.root,
        prev: old_commit,
        time_ns: g.next_u64(),
        key_count: r.expected.len() as u64,
        changes,
        generation: 1,
        ..Commit::default()
    };
    r.commit = r.append(&encode_commit(&newest));
    r
}

/// What a walk of the tree at `root` yields (links followed), every node
/// checked; an error past [`MAX_ENTRIES`] entries.
pub fn walk_all(bytes: &[u8], root: u64) -> Result<KeyValues, String> {
    let verified = Verified::new(bytes.len() as u64);
    let region = Region::new(bytes, &verified);
    let mut walk = crate::tree::Walk::subtree(region, root, b"").map_err(|d| d.detail)?;
    let mut out = Vec::new();
    while let Some(entry) = walk.next_entry().map_err(|d| d.detail)? {
        let value = node::value_bytes(region, entry.value).map_err(|d| d.detail)?;
        out.push((entry.key.to_vec(), value.to_vec()));
        if out.len() > MAX_ENTRIES {
            return Err("too many entries".into());
        }
    }
    Ok(out)
}

/// A journal file holding `records`, its header's synced mark at `mark`.
pub fn encode_journal(records: &[Record], mark: u64) -> Vec<u8> {
    let mut bytes = journal::header(mark);
    for r in records {
        bytes.extend(journal::encode(r.version, r.time_ns, r.synced_mark, &r.ops));
    }
    bytes
}

/// The records a recovering writer would replay from a journal's bytes.
pub fn decode_journal(bytes: &[u8]) -> Result<Vec<Record>, String> {
    journal::read_records(Path::new(journal::FILE_NAME), bytes, false).map(|(r, _)| r).map_err(|e| e.to_string())
}

pub fn sample_journal(g: &mut Gen) -> (Vec<Record>, Vec<u8>) {
    let mut records = Vec::new();
    let mut end = journal::HEADER;
    for version in 1..=g.below(6) as u64 {
        let ops = (0..g.below(5))
            .map(|_| {
                let key = sample_keys(g, 1).remove(0);
                match g.below(5) {
                    0 => {
                        let len = g.below(40);
                        JournalOp::Put { key, value: g.bytes(len) }
                    }
                    1 => JournalOp::Delete { key },
                    2 => JournalOp::DeleteTree { key },
                    3 => JournalOp::Copy { key, from: sample_keys(g, 1).remove(0) },
                    _ => JournalOp::CopyTree { key, from: sample_keys(g, 1).remove(0) },
                }
            })
            .collect();
        let record =
            Record { version, time_ns: g.next_u64(), synced_mark: journal::HEADER + g.below(end as usize) as u64, ops };
        end += journal::encode(record.version, record.time_ns, record.synced_mark, &record.ops).len() as u64;
        records.push(record);
    }
    let bytes = encode_journal(&records, journal::HEADER);
    (records, bytes)
}

pub fn encode_meta_slot(c: &Checkpoint) -> Vec<u8> {
    meta::encode(c)
}

pub fn decode_meta_slot(bytes: &[u8]) -> Option<Checkpoint> {
    meta::decode(bytes)
}

/// A checkpoint, and a meta file holding it in its first slot (and, one
/// time in two, an older one in its second).
pub fn sample_meta(g: &mut Gen) -> (Checkpoint, Vec<u8>) {
    let c = Checkpoint {
        sequence: g.next_u64(),
        generation: g.next_u64(),
        commit_offset: g.next_u64(),
        version: g.next_u64(),
        end: g.next_u64(),
    };
    let mut bytes = encode_meta_slot(&c);
    if g.chance(2) {
        bytes.resize(512, 0);
        bytes.extend(encode_meta_slot(&Checkpoint { sequence: c.sequence.wrapping_sub(1), ..c }));
    }
    (c, bytes)
}

/// A control file's bytes, as a writer of `boot` that published
/// (`generation`, `offset`) leaves them.
pub fn encode_control(generation: u64, offset: u64, boot: [u64; 2], writer: (u32, u64), highest: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 4096];
    let words = [
        u64::from_le_bytes(*b"SHOALCT1"),
        control::pack(generation, offset),
        writer.0 as u64,
        writer.1,
        boot[0],
        boot[1],
        7,
        highest,
    ];
    for (i, w) in words.iter().enumerate() {
        bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    bytes
}

/// What a reader of `boot` makes of a control file's bytes.
pub fn decode_control(bytes: &[u8], boot: [u64; 2]) -> Option<Words> {
    control::words_of(bytes, boot)
}

/// Published (generation, offset), boot, writer, highest generation and
/// the file's bytes.
#[allow(clippy::type_complexity)]
pub fn sample_control(g: &mut Gen) -> ((u64, u64), [u64; 2], (u32, u64), u64, Vec<u8>) {
    let published = (1 + g.below(control::MAX_GENERATION as usize) as u64, 8 * (1 + (g.next_u64() >> 25)));
    let boot = [g.next_u64() | 1, g.next_u64()];
    let writer = (g.next_u64() as u32, g.next_u64());
    let highest = g.next_u64();
    let bytes = encode_control(published.0, published.1, boot, writer, highest);
    (published, boot, writer, highest, bytes)
}

/// One claimed slot of a reader table: (slot, pid, start time, pinned
/// generation, pinned version).
pub type SlotSpec = (u64, u32, u64, u64, u64);

/// A reader table declaring `slots` slots, holding `used`.
pub fn encode_reader_table(slots: u64, used: &[SlotSpec]) -> Vec<u8> {
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"SHOALRD1");
    bytes[8..16].copy_from_slice(&slots.to_le_bytes());
    for &(slot, pid, start, generation, version) in used {
        let at = 4096 + 64 * slot as usize;
        if bytes.len() < at + 64 {
            bytes.resize(at + 64, 0);
        }
        for (i, w) in [generation, version, pid as u64, start].iter().enumerate() {
            bytes[at + 8 * i..at + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
    }
    bytes
}

/// The claimed slots a reader table's bytes hold; `None` for a bad header.
pub fn decode_reader_table(bytes: &[u8]) -> Option<Vec<SlotSpec>> {
    let slots = readers::slots_of_header(&bytes[..bytes.len().min(16)])?;
    let body = bytes.get(4096..).unwrap_or(&[]);
    let body = &body[..body.len().min((slots * 64) as usize)];
    let used = readers::used_slots(body);
    Some(used.map(|s| (s.slot, s.pid, s.start_time, s.reader.pinned_generation, s.reader.pinned_version)).collect())
}

pub fn sample_reader_table(g: &mut Gen) -> (u64, Vec<SlotSpec>, Vec<u8>) {
    let slots = 1 + g.below(40) as u64;
    let mut used: Vec<SlotSpec> = Vec::new();
    for slot in 0..slots {
        if g.chance(3) {
            used.push((slot, 1 + g.below(1 << 22) as u32, g.next_u64(), g.next_u64(), g.next_u64()));
        }
    }
    let bytes = encode_reader_table(slots, &used);
    (slots, used, bytes)
}

/// The settings text a store with `options` records.
pub fn settings_text(options: &Options) -> String {
    settings::render(options)
}

/// The options a settings text records, validated.
pub fn parse_settings(text: &str) -> Result<Options, String> {
    let options = settings::parse(Path::new(settings::FILE_NAME), text).map_err(|e| e.to_string())?;
    options.validate().map_err(|e| e.to_string())?;
    Ok(options)
}

pub fn sample_settings(g: &mut Gen) -> (Options, String) {
    let tiers = (0..g.below(4))
        .map(|_| {
            let every = std::time::Duration::from_millis(g.below(1 << 20) as u64);
            crate::RetainTier::new(every, every + std::time::Duration::from_millis(1 + g.below(1 << 30) as u64))
        })
        .collect();
    let options = Options {
        durability: if g.chance(2) { crate::Durability::Sync } else { crate::Durability::None },
        retain_versions: 1 + g.below(1000) as u32,
        retain_tiers: tiers,
        max_value_bytes: g.below(1 << 20),
        map_reserve_bytes: (1 << 30) + g.below(1 << 30) as u64,
        checkpoint_journal_bytes: g.next_u64() >> 20,
        auto_compact: g.chance(2),
        compact_min_bytes: g.next_u64() >> 30,
        compact_factor: 2 + g.below(10) as u64,
        ..Options::default()
    };
    let text = settings_text(&options);
    (options, text)
}

/// The fields of a buffer reference ([`crate::BufRef`]'s words, node
/// checksum, length) and its encoding.
pub fn sample_bufref(g: &mut Gen) -> ([u64; 7], u32, u32, Vec<u8>) {
    let words = [0; 7].map(|_: u64| g.next_u64());
    let (crc, len) = (g.next_u64() as u32, g.next_u64() as u32);
    let bytes = crate::BufRef::from_fields(words, crc, len).encode().to_vec();
    (words, crc, len, bytes)
}

/// A path: valid ones, and the shapes validation must refuse.
pub fn sample_path(g: &mut Gen) -> String {
    let pieces = ["a", "local", "domain", "7", ".", "..", "...", "", "é", "\0", "/"];
    let mut path = String::new();
    for _ in 0..g.size(6, 600, 20) {
        path.push('/');
        match g.below(pieces.len() + 2) {
            i if i < pieces.len() => path.push_str(pieces[i]),
            // The longest segment, and one byte more.
            i => path.extend(std::iter::repeat_n('x', 255 + i - pieces.len())),
        }
    }
    if path.is_empty() || g.chance(10) {
        path.insert(0, '/');
    }
    path
}

/// An arena file's header page for `generation` with reservation `reserve`.
pub fn arena_header_bytes(generation: u64, reserve: u64) -> Vec<u8> {
    let mut page = arena::header_bytes(generation, reserve);
    page.resize(64, 0);
    page
}

/// The reservation an arena header records, if valid for `generation`.
pub fn check_arena_header(bytes: &[u8], generation: u64) -> Result<u64, String> {
    arena::check_header(Path::new("arena"), bytes, generation).map_err(|e| e.to_string())
}
