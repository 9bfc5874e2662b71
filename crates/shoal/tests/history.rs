//! History: the retained versions with their commit times, and the log of
//! one path across them.

use shoal::{ChangeKind, Durability, Options, Store};

#[test]
fn log_lists_the_versions_that_changed_a_path_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, auto_compact: false, ..Options::default() };
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
        let options = Options { retain_versions: 1, ..options };
        Store::open(dir.path(), options).unwrap()
    };
    store.compact().unwrap();
    let log: Vec<(u64, ChangeKind)> =
        store.snapshot().log("/a").unwrap().iter().map(|(v, k)| (v.version, *k)).collect();
    assert_eq!(log, vec![(v6, ChangeKind::Set)]);
}
