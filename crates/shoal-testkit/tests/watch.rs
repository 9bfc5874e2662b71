//! A watcher in another process is woken by the writer's commits and gets
//! exactly the events under its prefix, in order, across compactions; one
//! that falls behind retention gets a `resync` with the difference.

use shoal::{Durability, Options, Store};
use shoal_testkit::{field, ChildProcess};

const WATCHER: &str = env!("CARGO_BIN_EXE_watcher");

fn options() -> Options {
    Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions: 4,
        create: true,
        ..Options::default()
    }
}

fn put(store: &Store, writes: &[(&str, &str)]) -> u64 {
    let mut txn = store.begin();
    for (path, value) in writes {
        txn.put(path, value).unwrap();
    }
    txn.commit().unwrap()
}

#[test]
fn a_watcher_process_gets_exactly_its_prefix_in_order_across_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    put(&store, &[("/w/seed", "0")]);
    let mut watcher = ChildProcess::spawn(WATCHER, &[dir.path().to_str().unwrap(), "/w"]);
    watcher.wait_for("ready");
    watcher.send("go");
    let mut expected = Vec::new();
    for i in 0..300u64 {
        let key = format!("/w/{}", i % 13);
        let v = put(&store, &[(key.as_str(), "v"), ("/elsewhere/x", "y")]);
        expected.push(format!("change v={v} kind=set path={key}"));
        if i % 100 == 50 {
            // The watcher is woken per commit; wait for it before compacting,
            // so it never falls further behind than retention.
            while !expected.is_empty() {
                assert_eq!(watcher.next_line().unwrap(), expected.remove(0));
            }
            store.compact().unwrap();
        }
    }
    let mut txn = store.begin();
    txn.delete_tree("/w/0").unwrap();
    let v = txn.commit().unwrap();
    expected.push(format!("change v={v} kind=delete_tree path=/w/0"));
    let v = put(&store, &[("/w/stop", "")]);
    expected.push(format!("change v={v} kind=set path=/w/stop"));
    let mut got = Vec::new();
    loop {
        let line = watcher.next_line().expect("watcher output");
        if line.starts_with("done") {
            break;
        }
        got.push(line);
    }
    assert_eq!(got, expected);
    let (_, ok) = watcher.finish();
    assert!(ok);
}

#[test]
fn a_watcher_process_behind_retention_gets_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    put(&store, &[("/w/a", "1"), ("/w/b", "1")]);
    let mut watcher = ChildProcess::spawn(WATCHER, &[dir.path().to_str().unwrap(), "/w"]);
    let from = field(&watcher.wait_for("ready"), "version").unwrap();
    // While it does not read: many versions, then a compaction.
    let mut txn = store.begin();
    txn.delete("/w/a").unwrap();
    txn.commit().unwrap();
    for i in 0..50 {
        put(&store, &[("/elsewhere/x", &i.to_string())]);
    }
    put(&store, &[("/w/c", "2"), ("/w/stop", "")]);
    store.compact().unwrap();
    let to = store.version();
    watcher.send("go");
    assert_eq!(watcher.next_line().unwrap(), format!("resync from={from} to={to}"));
    assert_eq!(watcher.next_line().unwrap(), "diff kind=delete path=/w/a");
    assert_eq!(watcher.next_line().unwrap(), "diff kind=set path=/w/c");
    assert_eq!(watcher.next_line().unwrap(), "diff kind=set path=/w/stop");
    assert_eq!(watcher.next_line().unwrap(), format!("done version={to}"));
    let (_, ok) = watcher.finish();
    assert!(ok);
}
