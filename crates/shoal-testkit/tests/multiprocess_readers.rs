//! Reader processes read while the writer (this process) commits thousands
//! of versions and compacts. Each reader checks an invariant that holds only
//! in complete versions, and that versions never go backwards. Some commits
//! copy subtrees by reference and write into the copies, so the readers also
//! read through links while compactions re-root them.

use shoal::{Durability, Options, Store};
use shoal_testkit::{field, ChildProcess};

const READER: &str = env!("CARGO_BIN_EXE_reader-child");

#[test]
fn readers_see_only_complete_versions_across_commits_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::None,
        retain_versions: 2,
        auto_compact: false,
        create: true,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    // Enough keys that a version touches several nodes.
    store.bulk_load((0..20_000).map(|i| (format!("/bulk/{}/{i}", i % 100), format!("value-{i}")))).unwrap();

    const COMMITS: u64 = 3000;
    let stop = store.version() + COMMITS;
    let dir_arg = dir.path().to_str().unwrap();
    let mut readers: Vec<ChildProcess> =
        (0..2).map(|_| ChildProcess::spawn(READER, &[dir_arg, &stop.to_string()])).collect();
    for r in &mut readers {
        r.wait_for("ready");
    }
    let mut compactions = 0;
    for i in 1..=COMMITS {
        let mut txn = store.begin();
        // Copies of the version before: the invariant holds in them too.
        if i % 7 == 0 {
            txn.copy_tree("/inv", "/inv-copy").unwrap();
        }
        if i % 250 == 0 {
            txn.copy_tree("/bulk", &format!("/bulk-copy/{}", i % 1000)).unwrap();
        }
        if i % 11 == 0 {
            txn.put(&format!("/bulk-copy/250/{}/{}", i % 100, i % 20_000), "written into a copy").unwrap();
        }
        let c = i % 13;
        // a == b and a + c == sum hold only when all four writes are visible together.
        txn.put("/inv/a", i.to_string()).unwrap();
        txn.put(&format!("/bulk/{}/{}", i % 100, i % 20_000), format!("updated-{i}")).unwrap();
        txn.put("/inv/b", i.to_string()).unwrap();
        txn.put("/inv/c", c.to_string()).unwrap();
        txn.put("/inv/sum", (i + c).to_string()).unwrap();
        txn.commit().unwrap();
        if i % 500 == 0 {
            store.compact().unwrap();
            compactions += 1;
        }
    }
    assert_eq!(store.version(), stop);
    for r in readers {
        let (lines, ok) = r.finish();
        assert!(ok, "reader failed");
        let report = lines.iter().find(|l| l.starts_with("report")).expect("report line");
        assert_eq!(field(report, "violations"), Some(0), "{report}");
        assert_eq!(field(report, "backwards"), Some(0), "{report}");
        assert_eq!(field(report, "last"), Some(stop), "{report}");
        // The reader really overlapped the commit stream.
        assert!(field(report, "distinct").unwrap() > 10, "{report}");
        assert!(field(report, "copies").unwrap() > 0, "the copies were never read: {report}");
    }
    assert_eq!(compactions, 6);
}
