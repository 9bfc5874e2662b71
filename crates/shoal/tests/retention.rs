//! Retention tiers: compaction keeps the newest versions plus the newest of
//! every interval a tier spans, and every version it keeps reads as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal::{Durability, Error, Options, RetainTier, Store};

const INTERVAL: Duration = Duration::from_millis(100);

fn tiered(retain_versions: u32, tiers: Vec<RetainTier>) -> Options {
    Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions,
        retain_tiers: tiers,
        create: true,
        ..Options::default()
    }
}

/// Commits one version that records its own number, and returns it with its commit time.
fn commit_numbered(store: &Store, i: u64) -> (u64, u64) {
    let mut txn = store.begin();
    txn.put(&format!("/spread/{}", i % 7), format!("written in round {i}")).unwrap();
    txn.put("/n", (store.version() + 1).to_string()).unwrap();
    let version = txn.commit().unwrap();
    let head = store.snapshot();
    assert_eq!(head.version(), version);
    (version, head.commit_time_ns())
}

/// The newest version of each `INTERVAL` of commit time, by brute force.
fn newest_per_interval(committed: &[(u64, u64)]) -> Vec<u64> {
    let mut newest: BTreeMap<u64, u64> = BTreeMap::new();
    for &(version, time) in committed {
        let slot = newest.entry(time / INTERVAL.as_nanos() as u64).or_insert(version);
        *slot = (*slot).max(version);
    }
    newest.into_values().collect()
}

fn assert_reads_as_committed(store: &Store, versions: &[u64]) {
    let head = store.snapshot();
    for &v in versions {
        let snap = head.at_version(v).unwrap();
        assert_eq!(snap.get("/n").unwrap(), Some(v.to_string().as_bytes()), "version {v}");
    }
}

#[test]
fn compaction_keeps_the_newest_and_one_version_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let tier = RetainTier::new(INTERVAL, Duration::from_secs(600));
    let store = Store::open(dir.path(), tiered(2, vec![tier])).unwrap();
    // Version 0, the empty store, is a version like the others.
    let mut committed = vec![(0, store.snapshot().commit_time_ns())];
    for i in 0..60 {
        committed.push(commit_numbered(&store, i));
        std::thread::sleep(Duration::from_millis(11));
    }
    store.compact().unwrap();

    let mut expected = newest_per_interval(&committed);
    let newest: Vec<u64> = committed.iter().rev().take(3).map(|c| c.0).collect();
    expected.extend(&newest);
    expected.sort_unstable();
    expected.dedup();
    expected.reverse();
    let retained: Vec<u64> = store.snapshot().history().unwrap().iter().map(|v| v.version).collect();
    assert_eq!(retained, expected);
    assert!(retained.len() < committed.len(), "something was thinned: {retained:?}");
    assert_eq!(store.stat().unwrap().retained_versions, expected);
    assert_reads_as_committed(&store, &retained.iter().copied().filter(|&v| v > 0).collect::<Vec<_>>());

    // A thinned version names the retained ones around it; one older than
    // them all names the oldest.
    let thinned = committed.iter().map(|c| c.0).find(|v| !retained.contains(v) && *v > retained[retained.len() - 1]);
    let thinned = thinned.expect("a thinned version between retained ones");
    match store.snapshot().at_version(thinned) {
        Err(Error::VersionThinned { requested, older, newer }) => {
            assert_eq!(requested, thinned);
            assert!(older < thinned && thinned < newer);
            assert!(retained.contains(&older) && retained.contains(&newer));
            assert!(!retained.iter().any(|&v| older < v && v < newer));
        }
        other => panic!("expected VersionThinned, got {other:?}"),
    }
    let oldest = *retained.last().unwrap();
    if oldest > 1 {
        match store.snapshot().at_version(oldest - 1) {
            Err(Error::VersionThinned { .. } | Error::VersionNotRetained { .. }) => {}
            other => panic!("expected an error naming retained versions, got {other:?}"),
        }
    }
    if oldest > 0 {
        match store.snapshot().at_version(0) {
            Err(e @ Error::VersionNotRetained { .. }) => assert!(e.to_string().contains(&oldest.to_string()), "{e}"),
            other => panic!("expected VersionNotRetained, got {other:?}"),
        }
    }

    // The tiers are recorded with the store, and a shorter tier lets the
    // old versions go at the next compaction.
    drop(store);
    let store = Store::open_existing(dir.path()).unwrap();
    assert_eq!(store.options().retain_tiers, vec![tier]);
    drop(store);
    let short = RetainTier::new(INTERVAL, Duration::from_millis(200));
    let store = Store::open(dir.path(), Options { replace_settings: true, ..tiered(2, vec![short]) }).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    store.compact().unwrap();
    let retained: Vec<u64> = store.snapshot().history().unwrap().iter().map(|v| v.version).collect();
    assert_eq!(retained, newest);
}

#[test]
fn tiers_hold_while_commits_go_on_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let tier = RetainTier::new(INTERVAL, Duration::from_secs(600));
    let store = Store::open(dir.path(), tiered(3, vec![tier])).unwrap();
    // A large tree, so that the compaction's copy takes a while and the
    // commits below land in its unlocked rounds and its catch-up.
    store.bulk_load((0..200_000).map(|i| (format!("/bulk/{}/{}", i / 50, i % 50), [7u8; 40]))).unwrap();
    let mut committed = vec![commit_numbered(&store, 0)];
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let mut meanwhile = 0;
            for _ in 0..3 {
                let report = store.compact().unwrap();
                meanwhile += report.precopy_rounds + report.caught_up;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            meanwhile
        });
        let mut i = 1;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            committed.push(commit_numbered(&store, i));
            i += 1;
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        // The case under test: versions committed while a compaction ran.
        assert!(compactor.join().unwrap() > 0, "no commit landed during a compaction");
    });
    let retained: Vec<u64> = store.snapshot().history().unwrap().iter().map(|v| v.version).collect();
    // The newest versions are all there, and so is the newest of every interval.
    let newest: Vec<u64> = committed.iter().rev().take(4).map(|c| c.0).collect();
    assert_eq!(retained[..4], newest[..]);
    for v in newest_per_interval(&committed) {
        assert!(retained.contains(&v), "version {v}, the newest of its interval, was dropped");
    }
    assert!(retained.len() < committed.len(), "{} committed, all retained", committed.len());
    // (Version 1, the bulk load, holds no /n.)
    let numbered: Vec<u64> = retained.iter().copied().filter(|&v| v > 1).collect();
    assert_reads_as_committed(&store, &numbered);
}

#[test]
fn invalid_tiers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RetainTier::new(Duration::from_secs(120), Duration::from_secs(60));
    let err = Store::open(dir.path(), tiered(2, vec![bad])).err().expect("refused");
    assert!(matches!(err, Error::InvalidOption { name: "retain_tiers", .. }), "{err}");
}
