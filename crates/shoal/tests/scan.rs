//! `Scan::next_path` renders each leaf's shared prefix once and each
//! entry's suffix after it: it must read exactly as `Entry::path` does,
//! across leaves, through subtrees copied by reference, and where a leaf's
//! prefix ends inside a character.

use shoal::{Durability, Options, Snapshot, Store};

fn store(dir: &std::path::Path) -> Store {
    Store::open(dir, Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() })
        .unwrap()
}

/// (path, value) of every node below `path`, by `Entry::path`.
fn by_entry(snap: &Snapshot, path: &str) -> Vec<(String, Vec<u8>)> {
    snap.scan(path).unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

/// The same by `Scan::next_path`.
fn by_next_path(snap: &Snapshot, path: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut scan = snap.scan(path).unwrap();
    while let Some(entry) = scan.next_path() {
        let (path, value) = entry.unwrap();
        out.push((path.to_string(), value.to_vec()));
    }
    out
}

#[test]
fn next_path_reads_as_entry_path_across_many_leaves_and_copied_subtrees() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store
        .bulk_load(
            (0..20_000)
                .map(|i| (format!("/local/domain/{}/{}", i / 4, ["name", "uuid", "memory", "vcpus"][i % 4]), b"v")),
        )
        .unwrap();
    // Copied by reference: the copies' entries are read through links, with
    // keys built (not in place), between entries read in place.
    for (from, to) in [("/local/domain/7", "/local/domain/70000"), ("/local/domain", "/mirror")] {
        let mut txn = store.begin();
        txn.copy_tree(from, to).unwrap();
        txn.commit().unwrap();
    }
    let mut txn = store.begin();
    txn.put("/local/domain/7/extra", "x").unwrap();
    txn.commit().unwrap();
    let snap = store.snapshot();
    for path in ["/", "/local/domain", "/local/domain/7", "/mirror", "/local/domain/70000", "/absent"] {
        let expected = by_entry(&snap, path);
        assert_eq!(by_next_path(&snap, path), expected, "scan of {path}");
    }
    let all = by_entry(&snap, "/");
    // /local, /local/domain, 5,000 parents of 20,000 values, the first copy
    // (a parent and 4 values) and the extra value; /mirror stands for
    // /local/domain, without the extra value.
    let local = 1 + 1 + 5_000 + 20_000 + 5 + 1;
    assert_eq!(all.len(), local + (local - 2));
    assert_eq!(all[0].0, "/local");
    assert!(all.iter().any(|(p, _)| p == "/mirror/70000/name"));
}

#[test]
fn next_path_where_a_leaf_prefix_ends_inside_a_character() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut txn = store.begin();
    // "è" and "é" share their first byte: the leaf's shared prefix ends
    // inside both characters, and only whole paths are UTF-8.
    for path in ["/è", "/é", "/é/ü", "/è/ö/x"] {
        txn.put(path, path).unwrap();
    }
    txn.commit().unwrap();
    let snap = store.snapshot();
    let expected: Vec<(String, Vec<u8>)> =
        ["/è", "/è/ö", "/è/ö/x", "/é", "/é/ü"].iter().map(|p| (p.to_string(), by_value(&snap, p))).collect();
    assert_eq!(by_entry(&snap, "/"), expected);
    assert_eq!(by_next_path(&snap, "/"), expected);
    assert_eq!(by_next_path(&snap, "/è"), expected[..3].to_vec());
}

fn by_value(snap: &Snapshot, path: &str) -> Vec<u8> {
    snap.get(path).unwrap().unwrap().to_vec()
}

#[test]
fn next_path_and_the_iterator_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.bulk_load((0..3000).map(|i| (format!("/a/{i:05}"), format!("{i}")))).unwrap();
    let snap = store.snapshot();
    let expected = by_entry(&snap, "/a");
    // Every third node through the iterator: the path buffer must not keep
    // a prefix for an entry it did not render.
    assert_eq!(interleaved(&snap, "/a", |i| i % 3 == 0), expected);
}

/// (path, value) of every node below `path`, taking node `i` through the
/// iterator where `by_iterator(i)`, through `next_path` otherwise.
fn interleaved(snap: &Snapshot, path: &str, by_iterator: impl Fn(usize) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut scan = snap.scan(path).unwrap();
    let mut got = Vec::new();
    for i in 0.. {
        let next = if by_iterator(i) {
            scan.next().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap())
        } else {
            scan.next_path().map(|e| e.map(|(p, v)| (p.to_string(), v.to_vec())).unwrap())
        };
        let Some(next) = next else { break };
        got.push(next);
    }
    got
}

/// Within one leaf, entries a scan reads on its own (short ASCII suffixes,
/// inline values) between ones it hands to the walk: suffixes longer than
/// a word, non-ASCII suffixes, values stored as blobs, empty values. Every
/// way of reading must give the model's paths and values, in path order.
#[test]
fn next_path_across_entries_of_every_shape_in_one_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut model = std::collections::BTreeMap::new();
    let mut txn = store.begin();
    for i in 0..2_000usize {
        let name = match i % 7 {
            0 => format!("{i}"),
            1 => format!("{i}/a"),
            2 => format!("{i}/a-much-longer-suffix"),
            3 => format!("{i}/ü"),
            4 => format!("{i}/日本/x"),
            5 => format!("{i}/b"),
            _ => format!("{i}/c/d"),
        };
        let path = format!("/s/{name}");
        let value = match i % 5 {
            0 => Vec::new(),
            1 => vec![b'x'; 300], // past the inline limit: a blob
            _ => path.as_bytes().to_vec(),
        };
        txn.put(&path, &value).unwrap();
        model.insert(path, value);
    }
    txn.commit().unwrap();
    let snap = store.snapshot();
    // Implicit parents read as empty nodes: take them from the scan, check
    // every modelled node is there with its value, and that paths increase
    // in key order.
    let scanned = by_next_path(&snap, "/s");
    assert_eq!(scanned, by_entry(&snap, "/s"));
    let keys: Vec<Vec<u8>> =
        scanned.iter().map(|(p, _)| p.bytes().map(|b| if b == b'/' { 0 } else { b }).collect()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "paths out of key order");
    let found: std::collections::BTreeMap<_, _> = scanned.iter().cloned().collect();
    for (path, value) in &model {
        assert_eq!(found.get(path), Some(value), "{path}");
    }
    // Interleaved with the iterator every seventh node: a stretch the scan
    // read on its own must hand the walk over where it ended.
    assert_eq!(interleaved(&snap, "/s", |i| i % 7 == 3), scanned);
}
