//! Copy by reference: `Transaction::copy` shares a value's bytes, so its
//! cost does not depend on the value's size, before or after compaction.

use shoal::{Durability, Error, Options, Store};

fn store(dir: &std::path::Path) -> Store {
    Store::open(dir, Options { durability: Durability::None, auto_compact: false, ..Options::default() }).unwrap()
}

fn put(store: &Store, path: &str, value: &[u8]) -> u64 {
    let mut txn = store.begin();
    txn.put(path, value).unwrap();
    txn.commit().unwrap()
}

fn copy(store: &Store, from: &str, to: &str) -> u64 {
    let mut txn = store.begin();
    txn.copy(from, to).unwrap();
    txn.commit().unwrap()
}

fn arena_bytes(store: &Store) -> u64 {
    store.stat().unwrap().arena_bytes
}

#[test]
fn a_copy_costs_the_same_whatever_the_value_size_and_shares_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // Some tree around the values, so that a commit rewrites a few levels.
    let mut txn = store.begin();
    for i in 0..5000 {
        txn.put(&format!("/tree/{}/{i}", i % 50), "x").unwrap();
    }
    txn.commit().unwrap();
    let mut growth = Vec::new();
    for (i, size) in [1usize << 10, 64 << 10, 1 << 20].into_iter().enumerate() {
        let value: Vec<u8> = (0..size).map(|b| (b % 251) as u8).collect();
        put(&store, &format!("/src/{i}"), &value);
        let before = arena_bytes(&store);
        copy(&store, &format!("/src/{i}"), &format!("/dst/{i}/copy"));
        growth.push(arena_bytes(&store) - before);
        let snap = store.snapshot();
        assert_eq!(snap.get(&format!("/dst/{i}/copy")).unwrap(), Some(&value[..]));
        // One set of bytes in the arena: both paths' handles point at it.
        let (a, b) = (
            snap.buf_ref(&format!("/src/{i}")).unwrap().unwrap(),
            snap.buf_ref(&format!("/dst/{i}/copy")).unwrap().unwrap(),
        );
        assert_eq!(a.file_offset(), b.file_offset());
    }
    // Each copy wrote a few tree nodes and a commit record, not the value.
    for g in &growth {
        assert!(*g < 16 << 10, "a copy appended {g} bytes: {growth:?}");
    }
    let spread = growth.iter().max().unwrap() - growth.iter().min().unwrap();
    assert!(spread < 4 << 10, "copy cost depends on the value size: {growth:?}");

    // Five more copies of the large value; compaction keeps one blob for all.
    let options = Options { retain_versions: 1, ..store.options().clone() };
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    store.compact().unwrap();
    let live_before = store.stat().unwrap().live_bytes;
    for k in 0..5 {
        copy(&store, "/src/2", &format!("/more/{k}"));
    }
    store.compact().unwrap();
    let live_after = store.stat().unwrap().live_bytes;
    assert!(live_after - live_before < 64 << 10, "live bytes {live_before} -> {live_after}: copies duplicated");
    let snap = store.snapshot();
    let offset = snap.buf_ref("/src/2").unwrap().unwrap().file_offset();
    for k in 0..5 {
        assert_eq!(snap.buf_ref(&format!("/more/{k}")).unwrap().unwrap().file_offset(), offset);
    }
    assert_eq!(snap.get("/more/4").unwrap().unwrap().len(), 1 << 20);
}

#[test]
fn copy_sees_the_transaction_and_conflicts_like_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    put(&store, "/a", b"base");

    // Its own earlier write is what it copies; a later write to the source does not change the copy.
    let mut txn = store.begin();
    txn.put("/fresh", "written here").unwrap();
    txn.copy("/fresh", "/x/fresh").unwrap();
    txn.copy("/a", "/x/a").unwrap();
    txn.put("/a", "after the copy").unwrap();
    txn.copy("/x/a", "/x/again").unwrap();
    assert_eq!(txn.get("/x/a").unwrap(), Some(&b"base"[..]));
    assert_eq!(txn.list("/x").unwrap(), vec!["a", "again", "fresh"]);
    txn.commit().unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.get("/x/fresh").unwrap(), Some(&b"written here"[..]));
    assert_eq!(snap.get("/x/a").unwrap(), Some(&b"base"[..]));
    assert_eq!(snap.get("/x/again").unwrap(), Some(&b"base"[..]));
    assert_eq!(snap.get("/a").unwrap(), Some(&b"after the copy"[..]));

    // Nothing to copy, or no place to copy to.
    let mut txn = store.begin();
    assert!(matches!(txn.copy("/missing", "/y"), Err(Error::NoSuchPath { .. })));
    txn.delete("/x/fresh").unwrap();
    assert!(matches!(txn.copy("/x/fresh", "/y"), Err(Error::NoSuchPath { .. })));
    assert!(matches!(txn.copy("/a", "/"), Err(Error::RootImmutable)));
    assert!(txn.copy("/a", "no-slash").is_err());
    drop(txn);

    // A source changed by another commit after the transaction began: conflict.
    let mut slow = store.begin();
    slow.copy("/a", "/b").unwrap();
    put(&store, "/a", b"changed meanwhile");
    match slow.commit() {
        Err(Error::Conflict { path }) => assert_eq!(path, "/a"),
        other => panic!("expected a conflict on /a, got {other:?}"),
    }
    assert_eq!(store.snapshot().get("/b").unwrap(), None);
}
