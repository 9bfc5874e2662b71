//! `Store::bulk_load`: into an empty tree it is written bottom-up from the
//! sorted load; into a tree that holds anything it is merged as ops. Both
//! must give the same tree, the same limits, the same change set and the
//! same conflicts for transactions open across the load.

mod common;

use std::collections::BTreeMap;

use shoal::{ChangeKind, Durability, Error, Options, Snapshot, Store};

fn store(dir: &std::path::Path, durability: Durability) -> Store {
    Store::open(
        dir,
        Options { durability, auto_compact: false, max_value_bytes: 4096, create: true, ..Options::default() },
    )
    .unwrap()
}

fn contents(snap: &Snapshot, below: &str) -> Vec<(String, Vec<u8>)> {
    snap.scan(below).unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

/// A load with duplicates (the last wins), values at and past the inline
/// limit (256 bytes: in the leaf; 257: a blob of its own), deep paths whose
/// ancestors are missing, and paths where one is a prefix of another.
fn items() -> Vec<(String, Vec<u8>)> {
    let mut items = Vec::new();
    for i in 0..6000u32 {
        let len = [0, 1, 100, 256, 257, 4096][i as usize % 6];
        items.push((format!("/d/{}/f{}", i / 3, i % 3), vec![(i % 251) as u8; len]));
    }
    items.push(("/d/5/f1".into(), b"first".to_vec()));
    items.push(("/deep/a/b/c/d/e".into(), b"deep".to_vec()));
    items.push(("/d/5/f1".into(), b"last".to_vec()));
    items.push(("/d/5".into(), b"a parent with a value".to_vec()));
    items.push(("/d5/x".into(), b"beside /d/5".to_vec()));
    items
}

fn in_path_order(m: &BTreeMap<String, Vec<u8>>, below: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = m
        .iter()
        .filter(|(k, _)| k.as_str() == below || k.starts_with(&format!("{below}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    v
}

#[test]
fn a_load_into_an_empty_tree_reads_as_one_merged_into_a_tree() {
    let items = items();
    let model = common::load_model(&items);
    let (empty_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (empty, other) = (store(empty_dir.path(), Durability::None), store(other_dir.path(), Durability::None));
    let mut txn = other.begin();
    txn.put("/zz", "not empty").unwrap();
    txn.commit().unwrap();
    let v_empty = empty.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    let v_other = other.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    assert_eq!((v_empty, v_other), (1, 2));
    for (store, extra) in [(&empty, 0), (&other, 1)] {
        let snap = store.snapshot();
        for below in ["/d", "/deep", "/d5", "/d/5"] {
            assert_eq!(contents(&snap, below), in_path_order(&model, below), "below {below}");
        }
        assert_eq!(snap.key_count(), model.len() as u64 + extra);
        assert_eq!(snap.get("/d/5/f1").unwrap(), Some(&b"last"[..]));
        assert_eq!(snap.get("/deep/a/b").unwrap(), Some(&b""[..]));
        snap.verify().unwrap();
    }
    // Reopened, the bottom-up tree takes commits like any other.
    drop(empty);
    let empty = store(empty_dir.path(), Durability::None);
    let mut txn = empty.begin();
    txn.delete_tree("/d/7").unwrap();
    txn.put("/d/8/f9", "new").unwrap();
    txn.commit().unwrap();
    let snap = empty.snapshot();
    assert_eq!(snap.get("/d/7/f0").unwrap(), None);
    assert_eq!(snap.get("/d/8/f9").unwrap(), Some(&b"new"[..]));
    assert_eq!(snap.key_count(), model.len() as u64 - 4 + 1);
}

#[test]
fn a_small_load_lists_every_node_it_wrote_as_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Durability::None);
    let v = store.bulk_load([("/a/b/c", "1"), ("/a/x", "2"), ("/q", "3")]).unwrap();
    let snap = store.snapshot();
    let changes: Vec<(String, ChangeKind)> =
        snap.changes(v - 1, "/").unwrap().iter().map(|c| (c.path(), c.kind())).collect();
    let want = ["/a", "/a/b", "/a/b/c", "/a/x", "/q"].map(|p| (p.to_string(), ChangeKind::Set));
    assert_eq!(changes, want);
    // A load too large to list says so, as a commit that large does.
    let big: Vec<(String, String)> = (0..200_000).map(|i| (format!("/big/{i}"), "v".to_string())).collect();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { create: true, durability: Durability::None, ..Options::default() }).unwrap();
    let v = store.bulk_load(big.iter().map(|(p, v)| (p.as_str(), v.as_str()))).unwrap();
    assert!(matches!(store.snapshot().changes(v - 1, "/"), Err(Error::ChangesNotListed { version }) if version == v));
}

#[test]
fn limits_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Durability::None);
    let at_limit = vec![7u8; 4096];
    let above = vec![7u8; 4097];
    type Load<'a> = Vec<(&'a str, &'a [u8])>;
    let refused: Vec<(Load<'_>, &str)> = vec![
        (vec![("/ok", b"1"), ("/big", &above)], "ValueTooLarge"),
        (vec![("/ok", b"1"), ("/", b"root")], "RootImmutable"),
        (vec![("/ok", b"1"), ("relative", b"x")], "Invalid"),
        (vec![("/ok", b"1"), ("/a//b", b"x")], "Invalid"),
    ];
    for (items, name) in refused {
        let err = store.bulk_load(items).unwrap_err();
        assert!(format!("{err:?}").starts_with(name), "{err:?}");
        assert_eq!(store.version(), 0, "a refused load wrote a version");
    }
    let v = store.bulk_load([("/big", at_limit.as_slice())]).unwrap();
    assert_eq!(store.snapshot().get("/big").unwrap(), Some(at_limit.as_slice()));
    assert_eq!(v, 1);
}

#[test]
fn transactions_open_across_a_load_into_an_empty_tree_conflict_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Durability::None);
    // Began on the empty tree: one read a node the load creates, one
    // listed a directory the load fills, one touched nothing it wrote.
    let mut read = store.begin();
    assert_eq!(read.get("/a/b").unwrap(), None);
    read.put("/elsewhere", "1").unwrap();
    let mut listed = store.begin();
    assert!(listed.list("/a").unwrap().is_empty());
    listed.put("/other", "2").unwrap();
    let mut apart = store.begin();
    assert_eq!(apart.get("/unrelated").unwrap(), None);
    apart.put("/unrelated", "3").unwrap();
    store.bulk_load([("/a/b", "loaded"), ("/a/c", "loaded")]).unwrap();
    assert!(matches!(read.commit(), Err(Error::Conflict { .. })));
    assert!(matches!(listed.commit(), Err(Error::Conflict { .. })));
    apart.commit().unwrap();
}
