//! Copy by reference: `Transaction::copy` shares a value's bytes, so its
//! cost does not depend on the value's size, before or after compaction.

use shoal::{ChangeKind, Durability, Error, Options, Store};

fn store(dir: &std::path::Path) -> Store {
    Store::open(dir, Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() })
        .unwrap()
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
    // Until the scrub has walked the store, the writer assumes it holds
    // links, and compaction lays nodes out differently then.
    while store.scrub() == shoal::ScrubState::Running {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
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

fn fill(store: &Store, prefix: &str, n: usize) {
    let mut txn = store.begin();
    for i in 0..n {
        txn.put(&format!("{prefix}/{}/{i}", i % 97), format!("value {i}")).unwrap();
    }
    txn.commit().unwrap();
}

fn copy_tree(store: &Store, from: &str, to: &str) -> u64 {
    let mut txn = store.begin();
    txn.copy_tree(from, to).unwrap();
    txn.commit().unwrap()
}

fn subtree(snap: &shoal::Snapshot, path: &str) -> Vec<(String, Vec<u8>)> {
    snap.scan(path).unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

#[test]
fn a_subtree_copy_costs_the_same_whatever_the_subtree_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut growth = Vec::new();
    for (i, n) in [100usize, 10_000, 100_000].into_iter().enumerate() {
        fill(&store, &format!("/src{i}"), n);
        let before = arena_bytes(&store);
        copy_tree(&store, &format!("/src{i}"), &format!("/copies/{i}"));
        growth.push(arena_bytes(&store) - before);
        let snap = store.snapshot();
        let (a, b) = (subtree(&snap, &format!("/src{i}")), subtree(&snap, &format!("/copies/{i}")));
        assert_eq!(a.len(), b.len());
        for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
            assert_eq!(pb, &pa.replacen(&format!("/src{i}"), &format!("/copies/{i}"), 1));
            assert_eq!(va, vb);
        }
        assert_eq!(snap.list(&format!("/copies/{i}")).unwrap().len(), 97.min(n));
        let mut names = Vec::new();
        snap.for_each_child(&format!("/copies/{i}"), |name| names.push(String::from_utf8_lossy(name).into_owned()))
            .unwrap();
        assert_eq!(names, snap.list(&format!("/src{i}")).unwrap(), "the children of a copy are its source's");
        assert_eq!(snap.get(&format!("/copies/{i}/5/5")).unwrap(), Some(&b"value 5"[..]));
    }
    // A few nodes on the path to the destination and a commit record each.
    for g in &growth {
        assert!(*g < 16 << 10, "a subtree copy appended {g} bytes: {growth:?}");
    }
    let spread = growth.iter().max().unwrap() - growth.iter().min().unwrap();
    assert!(spread < 8 << 10, "copy cost depends on the subtree size: {growth:?}");
    // Key counts include what the copies hold.
    let snap = store.snapshot();
    let expected: u64 = [100u64, 10_000, 100_000].iter().map(|n| 2 * (n + 97.min(*n) + 1)).sum::<u64>() + 1;
    assert_eq!(snap.key_count(), expected);
    assert_eq!(snap.key_count(), subtree(&snap, "/").len() as u64);
}

#[test]
fn writes_into_a_copy_rewrite_only_their_path_and_leave_the_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fill(&store, "/template", 50_000);
    copy_tree(&store, "/template", "/vm/1");
    let source_before = subtree(&store.snapshot(), "/template");

    let before = arena_bytes(&store);
    let mut txn = store.begin();
    txn.put("/vm/1/7/7", "changed in the copy").unwrap();
    txn.put("/vm/1/new/x", "new in the copy").unwrap();
    assert!(txn.delete_tree("/vm/1/8").unwrap());
    txn.commit().unwrap();
    let written = arena_bytes(&store) - before;
    // Splitting the copy one level (97 links) and the paths: far less than the 50,000 entries.
    assert!(written < 64 << 10, "writing into a copy appended {written} bytes");

    let snap = store.snapshot();
    assert_eq!(snap.get("/vm/1/7/7").unwrap(), Some(&b"changed in the copy"[..]));
    assert_eq!(snap.get("/vm/1/7/104").unwrap(), Some(&b"value 104"[..]));
    assert_eq!(snap.get("/vm/1/new/x").unwrap(), Some(&b"new in the copy"[..]));
    assert_eq!(snap.get("/vm/1/8/8").unwrap(), None);
    assert!(!snap.list("/vm/1").unwrap().contains(&"8".to_string()));
    assert_eq!(subtree(&snap, "/template"), source_before, "the source changed");
    // Every node counted once: /template and /vm/1 (50,000 values, 97
    // directories, the root of each), /vm, new and new/x, less /vm/1/8 and
    // its 516 children.
    assert_eq!(snap.key_count(), 2 * (50_000 + 97 + 1) + 1 + 2 - 517);
    assert_eq!(snap.key_count(), subtree(&snap, "/").len() as u64);

    // Compaction keeps it all, with one copy of the source for the links.
    store.compact().unwrap();
    let after = store.snapshot();
    assert_eq!(subtree(&after, "/vm/1"), subtree(&snap, "/vm/1"));
    assert_eq!(subtree(&after, "/template"), source_before);
    after.verify().unwrap();
}

#[test]
fn copies_of_copies_and_copies_into_copies_read_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fill(&store, "/a", 2000);
    copy_tree(&store, "/a", "/b");
    copy_tree(&store, "/b/3", "/c");
    copy_tree(&store, "/a/4", "/b/3/inner");
    let snap = store.snapshot();
    assert_eq!(snap.get("/c/3").unwrap(), Some(&b"value 3"[..]));
    assert_eq!(snap.get("/b/3/inner/4").unwrap(), Some(&b"value 4"[..]));
    assert_eq!(snap.get("/b/3/3").unwrap(), Some(&b"value 3"[..]));
    assert_eq!(snap.get("/c/inner/4").unwrap(), None, "a copy is of the version before the later copy");
    // A copy onto its own source's ancestor and back.
    copy_tree(&store, "/b", "/b/self");
    let snap = store.snapshot();
    assert_eq!(snap.get("/b/self/3/inner/4").unwrap(), Some(&b"value 4"[..]));
    assert_eq!(snap.get("/b/self/self").unwrap(), None);
    store.compact().unwrap();
    let after = store.snapshot();
    assert_eq!(subtree(&after, "/"), subtree(&snap, "/"));
    let reopened = {
        drop(after);
        drop(snap);
        let options = store.options().clone();
        drop(store);
        Store::open(dir.path(), options).unwrap()
    };
    assert_eq!(reopened.snapshot().get("/b/self/3/inner/4").unwrap(), Some(&b"value 4"[..]));
}

#[test]
fn a_subtree_copy_conflicts_with_any_change_below_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fill(&store, "/s", 500);
    let mut slow = store.begin();
    slow.copy_tree("/s", "/d").unwrap();
    put(&store, "/s/9/deep/below", b"meanwhile");
    match slow.commit() {
        Err(Error::Conflict { path }) => assert_eq!(path, "/s"),
        other => panic!("expected a conflict on /s, got {other:?}"),
    }
    // A change elsewhere does not conflict.
    let mut ok = store.begin();
    ok.copy_tree("/s", "/d").unwrap();
    put(&store, "/elsewhere", b"x");
    ok.commit().unwrap();
    // Copying what this transaction already wrote to is refused.
    let mut txn = store.begin();
    txn.put("/s/1/new", "x").unwrap();
    assert!(matches!(txn.copy_tree("/s", "/e"), Err(Error::CopySourceWritten { .. })));
    assert!(matches!(txn.copy_tree("/nothing", "/e"), Err(Error::NoSuchPath { .. })));
    assert!(matches!(txn.copy_tree("/", "/e"), Err(Error::InvalidPath { .. })));
    assert!(matches!(txn.copy_tree("/s", "/"), Err(Error::RootImmutable)));
}

#[test]
fn a_subtree_copy_is_one_change_for_watchers_at_and_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fill(&store, "/src", 300);
    put(&store, "/dst/5/old", b"replaced by the copy");
    let before = store.version();
    let v = copy_tree(&store, "/src", "/dst");
    let snap = store.snapshot();
    let kinds = |prefix: &str| -> Vec<(u64, String, ChangeKind)> {
        snap.changes(before, prefix).unwrap().iter().map(|c| (c.version(), c.path(), c.kind())).collect()
    };
    assert_eq!(kinds("/dst"), vec![(v, "/dst".to_string(), ChangeKind::CopyTree)]);
    assert_eq!(kinds("/dst/5/old"), vec![(v, "/dst".to_string(), ChangeKind::CopyTree)]);
    assert_eq!(kinds("/"), vec![(v, "/dst".to_string(), ChangeKind::CopyTree)]);
    assert!(kinds("/src").is_empty());
    // A watch that resynchronizes sees the copy's contents by difference.
    let old = store.snapshot_at(before).unwrap();
    let diff = old.diff(&snap, "/dst").unwrap();
    assert!(diff.changes.contains(&("/dst/5/old".to_string(), ChangeKind::Delete)));
    assert!(diff.changes.contains(&("/dst/5/5".to_string(), ChangeKind::Set)));
    // /dst/5/old gone; 300 values and 97 directories new, but /dst/5 was
    // there already (empty, as in the copy), and /dst keeps its empty value.
    assert_eq!(diff.changes.len(), 1 + 300 + 97 - 1);
}

#[test]
fn compaction_keeps_copies_made_at_different_versions_shared() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions: 1,
        create: true,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    fill(&store, "/src", 20_000);
    store.compact().unwrap();
    let alone = store.stat().unwrap().live_bytes;
    // Ten copies of the unchanged subtree, each at a version of its own.
    for i in 0..10 {
        copy_tree(&store, "/src", &format!("/copies/{i}"));
        put(&store, "/unrelated", format!("{i}").as_bytes());
    }
    let before = subtree(&store.snapshot(), "/");
    store.compact().unwrap();
    store.compact().unwrap();
    let shared = store.stat().unwrap().live_bytes;
    // The subtree once, plus the edges of each copy's range: not ten subtrees.
    assert!(shared < alone + alone / 4, "{alone} bytes alone, {shared} with ten copies after compaction");
    let snap = store.snapshot();
    assert_eq!(subtree(&snap, "/"), before);
    snap.verify().unwrap();
    // Writes into one copy still leave the others and the source alone.
    put(&store, "/copies/3/7/7", b"mine");
    let snap = store.snapshot();
    assert_eq!(snap.get("/copies/3/7/7").unwrap(), Some(&b"mine"[..]));
    assert_eq!(snap.get("/copies/4/7/7").unwrap(), Some(&b"value 7"[..]));
    assert_eq!(snap.get("/src/7/7").unwrap(), Some(&b"value 7"[..]));
}

#[test]
fn a_copy_keeps_its_bytes_when_the_same_transaction_deletes_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let value: Vec<u8> = (0..(1usize << 20)).map(|b| (b % 253) as u8).collect();
    put(&store, "/staged/one", &value);
    let mut txn = store.begin();
    txn.copy("/staged/one", "/tree/value").unwrap();
    txn.delete_tree("/staged").unwrap();
    txn.commit().unwrap();
    assert!(!store.snapshot().exists("/staged").unwrap());
    // Compaction frees the source's node, not the bytes the copy shares.
    let options = Options { retain_versions: 1, ..store.options().clone() };
    drop(store);
    let store = Store::open(dir.path(), options.clone()).unwrap();
    store.compact().unwrap();
    store.compact().unwrap();
    assert_eq!(store.snapshot().get("/tree/value").unwrap(), Some(&value[..]));
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.snapshot().get("/tree/value").unwrap(), Some(&value[..]));
}
