//! History: the retained versions with their commit times, and the log of
//! one path across them.

use shoal::{ChangeKind, Durability, Options, Store};

#[test]
fn log_lists_the_versions_that_changed_a_path_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let put = |path: &str, value: &str| {
        let mut txn = store.begin();
        txn.put(path, value).unwrap();
        txn.commit().unwrap()
    };
    let v1 = put("/a", "1");
    put("/b", "x"); // another path
    let v3 = put("/a", "2");
    put("/a", "2"); // the same value again: no change to log
    let mut txn = store.begin();
    txn.delete("/a").unwrap();
    let v5 = txn.commit().unwrap();
    let v6 = put("/a", "3");

    let log: Vec<(u64, ChangeKind)> =
        store.snapshot().log("/a").unwrap().iter().map(|(v, k)| (v.version, *k)).collect();
    assert_eq!(
        log,
        vec![(v6, ChangeKind::Set), (v5, ChangeKind::Delete), (v3, ChangeKind::Set), (v1, ChangeKind::Set)]
    );
    assert!(store.snapshot().log("/never").unwrap().is_empty());
    assert!(store.snapshot().log("no-slash").is_err());

    // After a compaction that keeps the newest versions only, the oldest
    // retained one is listed if the path exists in it.
    let store = {
        drop(store);
        let options = Options { retain_versions: 1, replace_settings: true, ..options };
        Store::open(dir.path(), options).unwrap()
    };
    store.compact().unwrap();
    let log: Vec<(u64, ChangeKind)> =
        store.snapshot().log("/a").unwrap().iter().map(|(v, k)| (v.version, *k)).collect();
    assert_eq!(log, vec![(v6, ChangeKind::Set)]);
}

/// The difference by brute force: merge the two full scans.
fn scan_diff(old: &shoal::Snapshot, new: &shoal::Snapshot, prefix: &str) -> Vec<(String, ChangeKind)> {
    use std::collections::BTreeMap;
    let all = |s: &shoal::Snapshot| -> BTreeMap<Vec<u8>, (String, Vec<u8>)> {
        s.scan(prefix)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (shoal::path::key(&e.path()).unwrap(), (e.path(), e.value().to_vec()))
            })
            .collect()
    };
    let (a, b) = (all(old), all(new));
    let mut keys: Vec<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| match (a.get(k), b.get(k)) {
            (Some(_), None) => Some((a[k].0.clone(), ChangeKind::Delete)),
            (x, Some((p, v))) if x.map(|(_, old)| old) != Some(v) => Some((p.clone(), ChangeKind::Set)),
            _ => None,
        })
        .collect()
}

#[test]
fn diff_cost_follows_the_change_not_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let store = Store::open(dir.path(), options).unwrap();
    store.bulk_load((0..100_000).map(|i| (format!("/d/{}/{i}", i % 1000), format!("value {i}")))).unwrap();
    let before = store.snapshot();
    let mut txn = store.begin();
    txn.put("/d/7/7", "changed").unwrap();
    txn.put("/d/500/new", "added").unwrap();
    txn.delete("/d/999/99999").unwrap();
    txn.commit().unwrap();
    let after = store.snapshot();

    let diff = before.diff(&after, "/").unwrap();
    let expected = vec![
        ("/d/500/new".to_string(), ChangeKind::Set),
        ("/d/7/7".to_string(), ChangeKind::Set),
        ("/d/999/99999".to_string(), ChangeKind::Delete),
    ];
    assert_eq!(diff.changes, expected);
    assert_eq!(scan_diff(&before, &after, "/"), expected);
    // Three root-to-leaf paths on each side, not the ~1,000 nodes of the tree.
    assert!(diff.nodes_visited <= 30, "visited {} nodes", diff.nodes_visited);
    // The other way round, and within a prefix.
    let back = after.diff(&before, "/d/7").unwrap();
    assert_eq!(back.changes, vec![("/d/7/7".to_string(), ChangeKind::Set)]);
    assert!(before.diff(&before, "/").unwrap().changes.is_empty());
    assert_eq!(before.diff(&before, "/").unwrap().nodes_visited, 0);
}

#[test]
fn diff_matches_a_full_comparison_over_many_changes_and_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let store = Store::open(dir.path(), options).unwrap();
    store.bulk_load((0..20_000).map(|i| (format!("/k/{}/{i}", i % 97), "x"))).unwrap();
    let base = store.snapshot();
    let mut x = 12345u64;
    for round in 0..30u64 {
        let mut txn = store.begin();
        for _ in 0..(1 + round % 7) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = (x >> 33) % 25_000;
            let path = format!("/k/{}/{i}", i % 97);
            if x.is_multiple_of(5) {
                let _ = txn.delete(&path);
            } else {
                txn.put(&path, format!("r{round}")).unwrap();
            }
        }
        if round % 10 == 9 {
            txn.delete_tree(&format!("/k/{}", round % 97)).unwrap();
        }
        txn.commit().unwrap();
        // Subtrees copied by reference, and writes into the copies.
        if round % 4 == 1 {
            let mut txn = store.begin();
            // (Rounds 9, 19, 29 delete a subtree; copy one that exists.)
            txn.copy_tree(&format!("/k/{}", 40 + round), &format!("/k/{}", (round * 7 + 3) % 97)).unwrap();
            txn.commit().unwrap();
        }
        if round % 4 == 2 {
            let mut txn = store.begin();
            txn.put(&format!("/k/{}/copy-write-{round}", (round * 7 - 4) % 97), "w").unwrap();
            txn.commit().unwrap();
        }
        let now = store.snapshot();
        assert_eq!(base.diff(&now, "/").unwrap().changes, scan_diff(&base, &now, "/"), "round {round}");
        assert_eq!(base.diff(&now, "/k/3").unwrap().changes, scan_diff(&base, &now, "/k/3"), "round {round}");
        assert_eq!(now.diff(&base, "/").unwrap().changes, scan_diff(&now, &base, "/"), "round {round}");
    }
    // Across a compaction nothing is shared by identity, and the answer is the same.
    store.compact().unwrap();
    let now = store.snapshot();
    assert_ne!(now.generation(), base.generation());
    assert_eq!(base.diff(&now, "/").unwrap().changes, scan_diff(&base, &now, "/"));
}
