//! Change sets and watch streams: every version records what it changed;
//! a watch yields exactly the changes under its prefix, in commit order,
//! and a `Resync` (never a silent gap) when history no longer covers them.

use std::collections::BTreeMap;

use shoal::{ChangeKind, Durability, Error, Options, Reader, Store, WatchEvent};

fn options() -> Options {
    Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions: 4,
        create: true,
        ..Options::default()
    }
}

fn change(version: u64, path: &str, kind: ChangeKind) -> WatchEvent {
    WatchEvent::Change { version, path: path.to_string(), kind }
}

#[test]
fn changes_list_each_version_in_order_filtered_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let v0 = store.version();
    let mut txn = store.begin();
    txn.put("/a/x", "1").unwrap(); // creates /a too
    txn.put("/b/y", "2").unwrap();
    let v1 = txn.commit().unwrap();
    let mut txn = store.begin();
    txn.put("/a/x", "3").unwrap();
    txn.delete("/b/y").unwrap();
    let v2 = txn.commit().unwrap();
    let mut txn = store.begin();
    txn.delete_tree("/a").unwrap();
    let v3 = txn.commit().unwrap();

    let snap = store.snapshot();
    let all: Vec<(u64, String, ChangeKind)> =
        snap.changes(v0, "/").unwrap().iter().map(|c| (c.version(), c.path(), c.kind())).collect();
    assert_eq!(
        all,
        vec![
            (v1, "/a".into(), ChangeKind::Set),
            (v1, "/a/x".into(), ChangeKind::Set),
            (v1, "/b".into(), ChangeKind::Set),
            (v1, "/b/y".into(), ChangeKind::Set),
            (v2, "/a/x".into(), ChangeKind::Set),
            (v2, "/b/y".into(), ChangeKind::Delete),
            (v3, "/a".into(), ChangeKind::DeleteTree),
        ]
    );
    // A prefix sees its own subtree, and the deletion of a subtree holding it.
    let under_x: Vec<(u64, ChangeKind)> =
        snap.changes(v1, "/a/x").unwrap().iter().map(|c| (c.version(), c.kind())).collect();
    assert_eq!(under_x, vec![(v2, ChangeKind::Set), (v3, ChangeKind::DeleteTree)]);
    assert!(snap.changes(v3, "/").unwrap().is_empty());
    assert!(snap.changes(v0, "/c").unwrap().is_empty());
    assert!(matches!(snap.changes(v0, "bad"), Err(Error::InvalidPath { .. })));
}

#[test]
fn a_watch_sees_its_prefix_in_order_across_compactions_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let mut watch = reader.watch("/w").unwrap();
    let mut expected = Vec::new();
    let mut store = Some(store);
    for i in 0..60u64 {
        let s = store.as_ref().unwrap();
        let mut txn = s.begin();
        txn.put(&format!("/w/{}", i % 7), i.to_string()).unwrap();
        txn.put(&format!("/other/{i}"), "x").unwrap();
        let v = txn.commit().unwrap();
        if i == 0 {
            expected.push(change(v, "/w", ChangeKind::Set));
        }
        expected.push(change(v, &format!("/w/{}", i % 7), ChangeKind::Set));
        if i % 10 == 9 {
            s.compact().unwrap();
        }
        if i % 25 == 24 {
            drop(store.take()); // the writer closes...
            store = Some(Store::open(dir.path(), options()).unwrap()); // ...and another opens
        }
        // Keep up: poll every other commit.
        if i % 2 == 1 {
            let got = watch.poll().unwrap();
            assert_eq!(got, expected, "after commit {i}");
            expected.clear();
        }
    }
    assert!(watch.poll().unwrap().is_empty());
}

#[test]
fn a_watcher_behind_retention_gets_a_resync_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..5 {
        let mut txn = store.begin();
        txn.put(&format!("/w/{i}"), "old").unwrap();
        txn.commit().unwrap();
    }
    let reader = Reader::open(dir.path()).unwrap();
    let mut watch = reader.watch("/w").unwrap();
    let from = watch.version();
    // Many versions, then a compaction that keeps only the newest few.
    for i in 0..40u64 {
        let mut txn = store.begin();
        match i {
            0 => txn.delete("/w/0").unwrap(),
            1 => txn.put("/w/1", "new").map(|_| true).unwrap(),
            2 => txn.put("/w/9", "added").map(|_| true).unwrap(),
            // Set to a value and back: no difference to report.
            3 => txn.put("/w/2", "tmp").map(|_| true).unwrap(),
            4 => txn.put("/w/2", "old").map(|_| true).unwrap(),
            _ => txn.put(&format!("/other/{i}"), "x").map(|_| true).unwrap(),
        };
        txn.commit().unwrap();
    }
    store.compact().unwrap();
    let to = store.version();
    match reader.snapshot().unwrap().changes(from, "/w") {
        Err(Error::HistoryGone { after, oldest }) => assert!(after == from && oldest > from, "{oldest}"),
        other => panic!("expected HistoryGone, got {other:?}"),
    }
    let events = watch.poll().unwrap();
    let expected = WatchEvent::Resync {
        from,
        to,
        changes: vec![
            ("/w/0".into(), ChangeKind::Delete),
            ("/w/1".into(), ChangeKind::Set),
            ("/w/9".into(), ChangeKind::Set),
        ],
    };
    assert_eq!(events, vec![expected]);
    // Caught up: the next commit is an ordinary event again.
    let mut txn = store.begin();
    txn.put("/w/3", "next").unwrap();
    let v = txn.commit().unwrap();
    assert_eq!(watch.poll().unwrap(), vec![change(v, "/w/3", ChangeKind::Set)]);
}

#[test]
fn a_version_too_large_to_list_gives_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let mut watch = reader.watch("/").unwrap();
    let from = watch.version();
    // About 2 MiB of paths: more than one change set lists.
    let mut model = BTreeMap::new();
    for i in 0..60_000u32 {
        model.insert(format!("/bulk/{:05}/{i}{}", i / 100, "p".repeat(24)), i.to_string());
    }
    let v = store.bulk_load(model.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))).unwrap();
    let listed = store.snapshot().changes(from, "/").map(|c| c.len());
    assert!(matches!(listed, Err(Error::ChangesNotListed { version }) if version == v), "{listed:?}");
    let events = watch.poll().unwrap();
    let [WatchEvent::Resync { from: f, to, changes }] = events.as_slice() else { panic!("{:?}", &events[..1]) };
    assert_eq!((*f, *to), (from, v));
    // Every loaded path and its missing ancestors, each once, as a Set.
    assert!(changes.iter().all(|(_, k)| *k == ChangeKind::Set));
    assert_eq!(changes.len(), model.len() + 600 + 1);
    assert!(changes.iter().any(|(p, _)| p == "/bulk/00042"));
}
