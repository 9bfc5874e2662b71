//! Transaction semantics: optimistic conflicts per path (xenstore's rules),
//! validation errors, the writer lock, and group commit.

use shoal::{Durability, Error, Options, Reader, Store};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options { durability: Durability::None, create: true, ..Options::default() }).unwrap()
}

fn put(store: &Store, path: &str, value: &str) -> u64 {
    let mut txn = store.begin();
    txn.put(path, value).unwrap();
    txn.commit().unwrap()
}

#[test]
fn read_then_concurrent_write_conflicts_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/a/x", "1");
    let mut t1 = store.begin();
    assert_eq!(t1.get("/a/x").unwrap(), Some(&b"1"[..]));
    t1.put("/b", "from t1").unwrap();
    put(&store, "/a/x", "2");
    match t1.commit() {
        Err(Error::Conflict { path }) => assert_eq!(path, "/a/x"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.snapshot().get("/b").unwrap(), None, "a failed commit left a write behind");
}

#[test]
fn unrelated_concurrent_writes_do_not_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/a/x", "1");
    put(&store, "/b/y", "1");
    let mut t1 = store.begin();
    t1.get("/a/x").unwrap();
    t1.list("/a").unwrap();
    t1.put("/a/z", "t1").unwrap();
    put(&store, "/b/y", "2"); // another subtree
    put(&store, "/a/x", "1"); // same value, but it is a write to a node t1 read...
    assert!(matches!(t1.commit(), Err(Error::Conflict { .. })), "a rewrite of a read node must conflict");

    let mut t2 = store.begin();
    t2.get("/a/x").unwrap();
    t2.put("/a/w", "t2").unwrap();
    put(&store, "/b/q", "new");
    let v = t2.commit().unwrap();
    assert_eq!(store.snapshot().get("/a/w").unwrap(), Some(&b"t2"[..]));
    assert_eq!(v, store.version());
}

#[test]
fn listing_conflicts_with_a_new_child_but_not_a_value_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/dir/a", "1");
    let mut t1 = store.begin();
    assert_eq!(t1.list("/dir").unwrap(), vec!["a"]);
    t1.put("/out", "x").unwrap();
    put(&store, "/dir/a", "changed value");
    let v = t1.commit().unwrap();
    assert!(v > 0);

    let mut t2 = store.begin();
    t2.list("/dir").unwrap();
    t2.put("/out", "y").unwrap();
    put(&store, "/dir/b", "new child");
    match t2.commit() {
        Err(Error::Conflict { path }) => assert_eq!(path, "/dir"),
        other => panic!("expected a conflict on /dir, got {other:?}"),
    }
}

#[test]
fn subtree_deletion_conflicts_with_readers_of_anything_below() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/t/deep/node", "1");
    let mut t1 = store.begin();
    t1.get("/t/deep/node").unwrap();
    t1.put("/elsewhere", "x").unwrap();
    let mut del = store.begin();
    assert!(del.delete_tree("/t").unwrap());
    del.commit().unwrap();
    assert!(matches!(t1.commit(), Err(Error::Conflict { .. })));
}

#[test]
fn write_write_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.put("/k", "1").unwrap();
    t2.put("/k", "2").unwrap();
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict { .. })));
    assert_eq!(store.snapshot().get("/k").unwrap(), Some(&b"1"[..]));
}

#[test]
fn transactions_see_their_own_writes_and_nobody_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut txn = store.begin();
    txn.put("/a/b/c", "v").unwrap();
    assert_eq!(txn.get("/a/b/c").unwrap(), Some(&b"v"[..]));
    assert_eq!(txn.get("/a/b").unwrap(), Some(&b""[..]), "ancestors are created empty");
    assert_eq!(txn.list("/a").unwrap(), vec!["b"]);
    assert_eq!(store.snapshot().get("/a/b/c").unwrap(), None);
    assert!(matches!(txn.delete("/a"), Err(Error::HasChildren { .. })));
    assert!(txn.delete_tree("/a").unwrap());
    assert_eq!(txn.get("/a/b/c").unwrap(), None);
    txn.put("/a/again", "1").unwrap();
    txn.commit().unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.list("/a").unwrap(), vec!["again"]);
    assert_eq!(snap.get("/a").unwrap(), Some(&b""[..]));
}

#[test]
fn invalid_input_is_rejected_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Options { max_value_bytes: 16, durability: Durability::None, create: true, ..Options::default() },
    )
    .unwrap();
    let mut txn = store.begin();
    for bad in ["", "relative", "/trailing/", "/double//slash", "/nul\0byte"] {
        let err = txn.put(bad, "x").unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains("invalid path"));
    }
    let err = txn.put("/big", [0u8; 17]).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { len: 17, max: 16, .. }), "{err}");
    assert!(matches!(txn.put("/", "x"), Err(Error::RootImmutable)));
    assert!(matches!(store.snapshot().get("no-slash"), Err(Error::InvalidPath { .. })));
    let bad_options = Options { retain_versions: 0, create: true, ..Options::default() };
    assert!(matches!(Store::open(dir.path().join("other"), bad_options), Err(Error::InvalidOption { .. })));
    let missing = Options { create: false, ..Options::default() };
    assert!(matches!(Store::open(dir.path().join("missing"), missing), Err(Error::NotFound(_))));
    assert!(matches!(Reader::open(dir.path().join("missing")), Err(Error::NotFound(_))));
}

#[test]
fn second_writer_gets_locked_error_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    match Store::open(dir.path(), Options { create: true, ..Options::default() }) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

/// Group commit: each commit returns once its version is published (a
/// reader in the process sees it), and every committer waiting for a
/// sync is woken when it ends (none waits out its timeout).
#[test]
fn concurrent_sync_commits_all_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::Sync, create: true, ..Options::default() }).unwrap();
    let start = store.version();
    let reader = Reader::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..16 {
            let (store, dir) = (&store, dir.path());
            s.spawn(move || {
                let reader = Reader::open(dir).unwrap();
                for i in 0..25 {
                    let mut txn = store.begin();
                    txn.put(&format!("/t{t}/{i}"), "v").unwrap();
                    let version = txn.commit().unwrap();
                    assert!(reader.snapshot().unwrap().version() >= version, "acknowledged before published");
                }
            });
        }
    });
    assert_eq!(store.version(), start + 400);
    let snap = reader.snapshot().unwrap();
    assert_eq!(snap.version(), start + 400, "every acknowledged commit is published");
    for t in 0..16 {
        assert_eq!(snap.list(&format!("/t{t}")).unwrap().len(), 25);
    }
    assert_eq!(shoal::internals::missed_sync_wakeups(&store), 0);
}

#[test]
fn old_versions_stay_readable_within_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Options {
            durability: Durability::None,
            retain_versions: 3,
            auto_compact: false,
            create: true,
            ..Options::default()
        },
    )
    .unwrap();
    let versions: Vec<u64> = (0..10).map(|i| put(&store, "/v", &i.to_string())).collect();
    store.compact().unwrap();
    for (i, &v) in versions.iter().enumerate().skip(6) {
        assert_eq!(store.snapshot_at(v).unwrap().get("/v").unwrap(), Some(i.to_string().as_bytes()));
    }
    match store.snapshot_at(versions[2]) {
        Err(Error::VersionNotRetained { requested, oldest, .. }) => {
            assert_eq!(requested, versions[2]);
            assert_eq!(oldest, versions[6]);
        }
        other => panic!("expected VersionNotRetained, got {other:?}"),
    }
    // The history lists exactly the retained versions, newest first, with
    // commit times that never go backwards and each version's node count.
    let history = store.snapshot().history().unwrap();
    let listed: Vec<u64> = history.iter().map(|h| h.version).collect();
    assert_eq!(listed, versions[6..].iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(listed, store.snapshot().versions().unwrap());
    assert!(history.windows(2).all(|w| w[0].commit_time_ns >= w[1].commit_time_ns), "{history:?}");
    assert!(history.iter().all(|h| h.key_count == 1 && h.commit_time_ns > 0), "{history:?}");
}

#[test]
fn reopening_an_existing_store_keeps_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::None,
        retain_versions: 5,
        max_value_bytes: 10,
        create: true,
        ..Options::default()
    };
    drop(Store::open(dir.path(), options).unwrap());
    let store = Store::open_existing(dir.path()).unwrap();
    assert_eq!(store.options().durability, Durability::None);
    assert_eq!(store.options().retain_versions, 5);
    let mut txn = store.begin();
    assert!(matches!(txn.put("/k", [0u8; 11]), Err(Error::ValueTooLarge { max: 10, .. })));
    assert!(!dir.path().join("journal").exists(), "a durability-none store grew a journal");
}

#[test]
fn writing_nothing_makes_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let v = store.version();
    assert_eq!(store.bulk_load(Vec::<(&str, &[u8])>::new()).unwrap(), v);
    let mut txn = store.begin();
    assert!(!txn.delete("/missing").unwrap());
    assert_eq!(txn.commit().unwrap(), v);
    assert_eq!(store.version(), v);
}

#[test]
fn arena_stays_within_a_constant_factor_of_live_data_under_steady_updates() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::None,
        retain_versions: 4,
        compact_min_bytes: 1 << 20,
        compact_factor: 2,
        create: true,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    store.bulk_load((0..20_000).map(|i| (format!("/k/{}/{i}", i % 200), vec![b'a'; 40]))).unwrap();
    let mut max_ratio = 0.0f64;
    let mut generations = std::collections::BTreeSet::new();
    for round in 0..40 {
        for i in 0..250u64 {
            let k = (round * 250 + i) * 7919 % 20_000;
            let mut txn = store.begin();
            txn.put(&format!("/k/{}/{k}", k % 200), vec![b'b' + (round % 20) as u8; 40]).unwrap();
            txn.commit().unwrap();
        }
        // Compaction runs in the background; let the one in flight finish.
        store.wait_for_compaction();
        let stat = store.stat().unwrap();
        generations.insert(stat.generation);
        let bound = 3 * stat.live_bytes + (1 << 20);
        assert!(stat.arena_bytes <= bound, "arena {} bytes with {} live", stat.arena_bytes, stat.live_bytes);
        max_ratio = max_ratio.max(stat.arena_bytes as f64 / stat.live_bytes as f64);
        // Old generations are freed (nobody pins them): at most one is kept,
        // as the spare the next compaction writes into.
        assert!(store.reclaim().is_empty());
        let spare = store.stat().unwrap().spare_generation;
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("arena-"))
            .collect();
        files.sort();
        let name = shoal::internals::arena_file_name;
        assert_eq!(files, spare.into_iter().chain([stat.generation]).map(name).collect::<Vec<_>>());
    }
    assert!(generations.len() > 3, "10,000 updates should have compacted several times: {generations:?}");
    assert!(max_ratio > 1.0);
}

#[test]
fn commits_go_on_while_compaction_copies() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions: 2,
        create: true,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    store.bulk_load((0..50_000).map(|i| (format!("/bulk/{}/{i}", i % 500), vec![b'x'; 60]))).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let compacted = std::sync::atomic::AtomicUsize::new(0);
    let compactions = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let (mut n, mut caught_up) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // More versions than retained means commits landed during the copy.
                if store.compact().unwrap().versions_kept > 3 {
                    caught_up += 1;
                }
                n += 1;
                compacted.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            (n, caught_up)
        });
        let reader = s.spawn(|| {
            let reader = Reader::open(dir.path()).unwrap();
            let mut seen = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let snap = reader.snapshot().unwrap();
                assert_eq!(snap.get("/inv/a").unwrap(), snap.get("/inv/b").unwrap(), "torn version {}", snap.version());
                seen += 1;
            }
            seen
        });
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let (store, compacted) = (&store, &compacted);
                s.spawn(move || {
                    // At least 1500 commits each, and on until two compactions
                    // finished meanwhile (however slow a loaded machine makes them).
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    for i in 0.. {
                        if i >= 1500
                            && (compacted.load(std::sync::atomic::Ordering::Relaxed) >= 2
                                || std::time::Instant::now() > deadline)
                        {
                            break;
                        }
                        loop {
                            let mut txn = store.begin();
                            txn.put(&format!("/w{t}/{i}"), i.to_string()).unwrap();
                            txn.put("/inv/a", format!("{t}-{i}")).unwrap();
                            txn.put("/inv/b", format!("{t}-{i}")).unwrap();
                            match txn.commit() {
                                Ok(_) => break,
                                Err(Error::Conflict { .. }) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        compactor.join().unwrap()
    });
    let (compactions, caught_up) = compactions;
    assert!(compactions >= 2, "only {compactions} compactions overlapped the commits");
    assert!(caught_up >= 1, "no compaction had to catch up with concurrent commits");
    let check = |store: &Store| {
        let snap = store.snapshot();
        for t in 0..2 {
            for i in 0..1500 {
                assert_eq!(snap.get(&format!("/w{t}/{i}")).unwrap(), Some(i.to_string().as_bytes()));
            }
        }
        assert_eq!(snap.get("/bulk/7/49507").unwrap(), Some(&[b'x'; 60][..]));
        store.verify().unwrap();
    };
    check(&store);
    drop(store);
    check(&Store::open_existing(dir.path()).unwrap());
}

#[test]
fn scan_paths_survive_prefixes_that_split_a_character() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // 'è', 'é' and 'ü' share their first UTF-8 byte, so the leaf holding only
    // these keys has a prefix that ends in the middle of a character.
    let paths = ["/é/x", "/è/y", "/ü"];
    let mut txn = store.begin();
    for p in paths {
        txn.put(p, p).unwrap();
    }
    txn.commit().unwrap();
    let snap = store.snapshot();
    let mut scanned = Vec::new();
    let mut reused = String::new();
    for entry in snap.scan("/").unwrap() {
        let entry = entry.unwrap();
        reused.clear();
        entry.write_path(&mut reused);
        assert_eq!(reused, entry.path());
        scanned.push((entry.path(), entry.value().to_vec()));
    }
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("/è".into(), vec![]),
        ("/è/y".into(), "/è/y".as_bytes().to_vec()),
        ("/é".into(), vec![]),
        ("/é/x".into(), "/é/x".as_bytes().to_vec()),
        ("/ü".into(), "/ü".as_bytes().to_vec()),
    ];
    assert_eq!(scanned, expected);
    assert_eq!(snap.list("/").unwrap(), vec!["è", "é", "ü"]);
}

/// A transaction taken out as an intent: what it read, listed and wrote,
/// and its changes in the order the store applies them; nothing is
/// committed, and replaying the changes in another transaction gives what
/// committing would have.
#[test]
fn an_intent_holds_the_reads_and_the_changes_and_replays_to_the_same_tree() {
    use shoal::{Intent, IntentChange};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/a", "1");
    put(&store, "/b/x", "2");
    put(&store, "/old/y", "3");
    let base = store.version();
    let build = || {
        let mut txn = store.begin();
        assert_eq!(txn.get("/a").unwrap(), Some(&b"1"[..]));
        assert_eq!(txn.list("/b").unwrap(), ["x"]);
        txn.put("/new/deep", "4").unwrap();
        txn.delete_tree("/old").unwrap();
        txn.copy_tree("/b", "/c").unwrap();
        txn
    };
    let intent: Intent = build().into_intent();
    assert_eq!(store.version(), base, "nothing was committed");
    assert_eq!(intent.base_version, base);
    assert!(intent.read.contains(&"/a".to_string()), "{intent:?}");
    assert_eq!(intent.listed, ["/b"]);
    assert_eq!(intent.read_trees, ["/b"]);
    for written in ["/new", "/new/deep", "/old", "/c"] {
        assert!(intent.written.contains(&written.to_string()), "{written}: {intent:?}");
    }
    assert!(intent.changes.contains(&IntentChange::Put { path: "/new".into(), value: vec![] }), "ancestors too");
    assert!(intent.changes.contains(&IntentChange::Put { path: "/new/deep".into(), value: b"4".to_vec() }));
    assert!(intent.changes.contains(&IntentChange::DeleteTree { path: "/old".into() }));
    assert!(intent.changes.contains(&IntentChange::CopyTree { path: "/c".into(), from: "/b".into() }));

    // Replayed in a new transaction, the changes give what committing the
    // original would have.
    let mut replay = store.begin();
    for change in &intent.changes {
        match change {
            IntentChange::Put { path, value } => replay.put(path, value).unwrap(),
            IntentChange::Delete { path } => assert!(replay.delete(path).unwrap()),
            IntentChange::DeleteTree { path } => {
                replay.delete_tree(path).unwrap();
            }
            IntentChange::Copy { path, from } => replay.copy(from, path).unwrap(),
            IntentChange::CopyTree { path, from } => replay.copy_tree(from, path).unwrap(),
        }
    }
    replay.commit().unwrap();
    let replayed: Vec<(String, Vec<u8>)> =
        store.snapshot().scan("/").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    let dir2 = tempfile::tempdir().unwrap();
    let other = open(dir2.path());
    put(&other, "/a", "1");
    put(&other, "/b/x", "2");
    put(&other, "/old/y", "3");
    let mut txn = other.begin();
    txn.get("/a").unwrap();
    txn.put("/new/deep", "4").unwrap();
    txn.delete_tree("/old").unwrap();
    txn.copy_tree("/b", "/c").unwrap();
    txn.commit().unwrap();
    let committed: Vec<(String, Vec<u8>)> =
        other.snapshot().scan("/").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    assert_eq!(replayed, committed);
}

/// A transaction that puts a node and deletes it again relied on the
/// node's parent existing (its put created none). If another commit
/// deletes that parent first, running the transaction after it would have
/// created the parent again, and left it: the transaction conflicts
/// rather than commit as if it changed nothing. The same with the delete
/// of a subtree holding what it put.
#[test]
fn a_put_taken_back_still_relied_on_its_parent() {
    for delete_tree in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "/p/q", "1");
        let mut t1 = store.begin();
        t1.put("/p/q/new", "x").unwrap();
        if delete_tree {
            t1.delete_tree("/p/q/new").unwrap();
        } else {
            t1.delete("/p/q/new").unwrap();
        }
        let mut t2 = store.begin();
        t2.delete("/p/q").unwrap();
        t2.commit().unwrap();
        match t1.commit() {
            Err(Error::Conflict { path }) => assert_eq!(path, "/p/q"),
            other => panic!("committed over a parent deleted meanwhile: {other:?}"),
        }
        assert!(!store.snapshot().exists("/p/q").unwrap());
    }
    // Without the concurrent delete, the same transaction commits.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "/p/q", "1");
    let mut t1 = store.begin();
    t1.put("/p/q/new", "x").unwrap();
    t1.delete("/p/q/new").unwrap();
    put(&store, "/other", "1");
    t1.commit().unwrap();
    assert!(store.snapshot().exists("/p/q").unwrap() && !store.snapshot().exists("/p/q/new").unwrap());
}
