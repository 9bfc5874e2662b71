//! Replicas against a real 3-member etcd cluster started on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{client, until_applied};
use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};
use shoal::{Options, Store};
use shoal_cluster::{revision_of, Layout, Replica};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::watch;

const PREFIX: &str = "/shoal/test";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::create(dir.path().join("store"), Options { durability: shoal::Durability::None, ..Options::default() })
            .unwrap();
    (dir, store)
}

fn key(path: &str) -> String {
    format!("{PREFIX}{path}")
}

/// Puts, returning the revision.
async fn put(c: &mut Client, path: &str, value: &str) -> i64 {
    c.put(key(path), value, None).await.unwrap().header().unwrap().revision()
}

/// Deletes a node and everything below it in one revision, as the
/// cluster's writer does; returns the revision.
async fn delete_tree(c: &mut Client, path: &str) -> i64 {
    let txn = Txn::new().and_then([
        TxnOp::delete(key(path), None),
        TxnOp::delete(key(&format!("{path}/")), Some(DeleteOptions::new().with_prefix())),
    ]);
    c.txn(txn).await.unwrap().header().unwrap().revision()
}

/// The tree as the replica's store holds it (its own state left out).
fn local_tree(store: &Store, layout: &Layout) -> BTreeMap<String, String> {
    let snapshot = store.snapshot();
    let mut tree = BTreeMap::new();
    for entry in snapshot.scan("/").unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path != "/" && !layout.is_local(&path) && path != "/.shoald" {
            tree.insert(path, String::from_utf8(entry.value().to_vec()).unwrap());
        }
    }
    tree
}

/// The tree as etcd lists it (asking again while a request meets a member
/// that was killed).
async fn etcd_tree(c: &mut Client) -> BTreeMap<String, String> {
    let start = Instant::now();
    let reply = loop {
        match c.get(format!("{PREFIX}/"), Some(GetOptions::new().with_prefix())).await {
            Ok(reply) => break reply,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(20), "etcd: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reply
        .kvs()
        .iter()
        .map(|kv| {
            let path = String::from_utf8(kv.key()[PREFIX.len()..].to_vec()).unwrap();
            (path, String::from_utf8(kv.value().to_vec()).unwrap())
        })
        .collect()
}

/// The revision each version from `from` on holds, in version order.
fn revisions_since(store: &Store, layout: &Layout, from: u64) -> Vec<i64> {
    (from..=store.version()).map(|v| revision_of(&store.snapshot_at(v).unwrap(), layout).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_loads_the_tree_then_makes_each_revision_one_version_in_order() {
    let cluster = EtcdCluster::start(3);
    let mut c = client(&cluster).await;
    put(&mut c, "/a", "1").await;
    put(&mut c, "/b", "2").await;
    let loaded_at = put(&mut c, "/b/c", "3").await;
    // Another prefix's keys, and the prefix's sibling, are not the tree.
    c.put("/shoal/testing/x", "no", None).await.unwrap();
    c.put("/elsewhere", "no", None).await.unwrap();

    let (_dir, store) = store();
    let layout = Layout::new(PREFIX);
    let replica = Replica::new(&store, layout.clone());
    let mut follower_client = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let follower = replica.follow(&mut follower_client, stopped);
    let checks = async {
        until_applied(&replica, loaded_at).await;
        assert_eq!(local_tree(&store, &layout), etcd_tree(&mut c).await);
        let loaded_version = store.version();

        let r1 = put(&mut c, "/d", "4").await;
        let r2 = delete_tree(&mut c, "/b").await;
        let txn = Txn::new().and_then([TxnOp::put(key("/e"), "5", None), TxnOp::put(key("/f"), "6", None)]);
        let r3 = c.txn(txn).await.unwrap().header().unwrap().revision();
        let r4 = put(&mut c, "/a", "1 again").await;
        until_applied(&replica, r4).await;

        let expected: BTreeMap<String, String> =
            [("/a", "1 again"), ("/d", "4"), ("/e", "5"), ("/f", "6")].map(|(p, v)| (p.into(), v.into())).into();
        assert_eq!(local_tree(&store, &layout), expected);
        assert_eq!(etcd_tree(&mut c).await, expected);
        // One version per revision, in etcd's order; the other prefix's
        // revisions made none.
        assert_eq!(revisions_since(&store, &layout, loaded_version + 1), [r1, r2, r3, r4]);
        // The delete took the node and what was below it, in one version.
        let deleted = store.snapshot_at(loaded_version + 2).unwrap();
        assert!(!deleted.exists("/b").unwrap() && !deleted.exists("/b/c").unwrap());
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(follower, checks);
    followed.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_goes_on_from_its_revision_and_one_etcd_compacted_past_loads_again() {
    let cluster = EtcdCluster::start(3);
    let mut c = client(&cluster).await;
    put(&mut c, "/keep", "k").await;
    put(&mut c, "/gone", "g").await;
    put(&mut c, "/gone/below", "b").await;
    let first = put(&mut c, "/changed", "old").await;

    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(PREFIX);
    let options = Options { durability: shoal::Durability::None, create: true, ..Options::default() };
    let follow_until = |revision: i64| {
        let layout = layout.clone();
        let path = dir.path().join("store");
        let options = options.clone();
        let endpoints = cluster.endpoints();
        async move {
            let store = Store::open(&path, options).unwrap();
            let replica = Replica::new(&store, layout);
            let mut fc = shoal_cluster::connect(&endpoints).await.unwrap();
            let (stop, stopped) = watch::channel(false);
            let follower = replica.follow(&mut fc, stopped);
            let waiting = async {
                until_applied(&replica, revision).await;
                stop.send(true).unwrap();
            };
            let (followed, ()) = tokio::join!(follower, waiting);
            followed.unwrap();
        }
    };
    follow_until(first).await;
    let stopped_at = Store::open(dir.path().join("store"), options.clone()).unwrap().version();

    // Written while the replica is down: it goes on from its revision, one
    // version per revision, without loading everything again.
    let r1 = put(&mut c, "/new", "n").await;
    let r2 = put(&mut c, "/changed", "new").await;
    follow_until(r2).await;
    {
        let store = Store::open(dir.path().join("store"), options.clone()).unwrap();
        assert_eq!(revisions_since(&store, &layout, stopped_at + 1), [r1, r2]);
        assert_eq!(local_tree(&store, &layout), etcd_tree(&mut c).await);
    }

    // Down again, and etcd compacts past its revision: the replica loads
    // the tree again and commits what differs, as one version whose
    // changes are exactly those (no silent gap for local watchers).
    let before = Store::open(dir.path().join("store"), options.clone()).unwrap().version();
    delete_tree(&mut c, "/gone").await;
    put(&mut c, "/changed", "newer").await;
    put(&mut c, "/later", "l").await;
    let last = put(&mut c, "/later", "l2").await;
    cluster.compact(last);
    follow_until(last).await;
    let store = Store::open(dir.path().join("store"), options).unwrap();
    assert_eq!(store.version(), before + 1, "one version for the reload");
    assert_eq!(revisions_since(&store, &layout, before + 1), [last]);
    assert_eq!(local_tree(&store, &layout), etcd_tree(&mut c).await);
    let mut changed: Vec<(String, shoal::ChangeKind)> = store
        .snapshot()
        .changes(before, "/")
        .unwrap()
        .iter()
        .map(|change| (change.path(), change.kind()))
        .filter(|(path, _)| !layout.is_local(path))
        .collect();
    changed.sort_by(|x, y| x.0.cmp(&y.0));
    use shoal::ChangeKind::{DeleteTree, Set};
    let expected: Vec<(String, shoal::ChangeKind)> =
        [("/changed", Set), ("/gone", DeleteTree), ("/later", Set)].map(|(p, k)| (p.to_string(), k)).into();
    assert_eq!(changed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_version_by_version_while_each_etcd_member_dies_in_turn() {
    let mut cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let (_da, store_a) = store();
    let (_db, store_b) = store();
    let (a, b) = (Replica::new(&store_a, layout.clone()), Replica::new(&store_b, layout.clone()));
    let (mut ca, mut cb) = (client(&cluster).await, client(&cluster).await);
    let (stop, stopped) = watch::channel(false);
    let (follow_a, follow_b) = (a.follow(&mut ca, stopped.clone()), b.follow(&mut cb, stopped));
    let endpoints = cluster.endpoints();
    let writes = async {
        let mut c = shoal_cluster::connect(&endpoints).await.unwrap();
        let mut last = 0;
        for i in 0..240 {
            // Every member in turn dies and comes back, so that each
            // replica's watch loses its member at some point.
            if i % 80 == 20 {
                tokio::task::block_in_place(|| cluster.kill(i / 80));
            }
            if i % 80 == 60 {
                tokio::task::block_in_place(|| cluster.restart(i / 80));
            }
            // A write the cluster did not take (its member died under it)
            // is tried again: every write lands once.
            let path = format!("/n{}", i % 37);
            let value = i.to_string();
            last = loop {
                let result = if i % 5 == 4 {
                    c.delete(key(&path), None).await.map(|r| r.header().unwrap().revision())
                } else {
                    c.put(key(&path), value.as_str(), None).await.map(|r| r.header().unwrap().revision())
                };
                match result {
                    Ok(revision) => break revision,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
        }
        until_applied(&a, last).await;
        until_applied(&b, last).await;
        assert_eq!(local_tree(&store_a, &layout), etcd_tree(&mut c).await);
        assert_eq!(local_tree(&store_a, &layout), local_tree(&store_b, &layout));
        stop.send(true).unwrap();
    };
    let (ra, rb, ()) = tokio::join!(follow_a, follow_b, writes);
    ra.unwrap();
    rb.unwrap();
    // The same sequence of revisions on both once both had loaded (each
    // loads at the revision etcd has when it starts), and the same tree at
    // each revision.
    let by_revision = |store: &Store| -> BTreeMap<i64, Vec<(String, Vec<u8>)>> {
        (1..=store.version())
            .map(|v| {
                let snap = store.snapshot_at(v).unwrap();
                // The tree, without the replica's own state (when it loaded
                // differs from one replica to another).
                let rows = snap
                    .scan("/")
                    .unwrap()
                    .map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap())
                    .filter(|(path, _)| !layout.is_local(path));
                (revision_of(&snap, &layout).unwrap(), rows.collect())
            })
            .collect()
    };
    let (at_a, at_b) = (by_revision(&store_a), by_revision(&store_b));
    assert_eq!(at_a.len() as u64, store_a.version(), "one revision per version, never twice");
    let both_from = *at_a.keys().next().unwrap().max(at_b.keys().next().unwrap());
    let after = |m: &BTreeMap<i64, Vec<(String, Vec<u8>)>>| m.range(both_from..).map(|(r, _)| *r).collect::<Vec<_>>();
    assert_eq!(after(&at_a), after(&at_b));
    assert!(after(&at_a).len() > 150, "most revisions were followed, not loaded");
    for (revision, tree) in at_a.range(both_from..) {
        assert_eq!(tree, &at_b[revision], "revision {revision}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_past_grpc_limits_and_past_the_store_limit_are_followed_and_loaded_alike() {
    let cluster = EtcdCluster::start(3);
    let mut c = client(&cluster).await;
    // Five 1,000,000-byte values: over 4 MiB in one page and in one watch reply.
    let big = "v".repeat(1_000_000);
    for i in 0..5 {
        put(&mut c, &format!("/loaded{i}"), &big).await;
    }
    let layout = Layout::new(PREFIX);
    let (_da, followed) = store();
    let a = Replica::new(&followed, layout.clone());
    let mut ca = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let follower = a.follow(&mut ca, stopped);
    let checks = async {
        let loaded_at = c.get("x", None).await.unwrap().header().unwrap().revision();
        until_applied(&a, loaded_at).await;
        // A value larger than a store takes (put by some other etcd client):
        // stored empty, and the replica goes on.
        let too_big = "x".repeat(followed.options().max_value_bytes + 1);
        put(&mut c, "/too-big", &too_big).await;
        let mut last = 0;
        for i in 0..5 {
            last = put(&mut c, &format!("/followed{i}"), &big).await;
        }
        until_applied(&a, last).await;
        assert_eq!(followed.snapshot().get("/too-big").unwrap(), Some(&b""[..]));
        assert_eq!(followed.snapshot().get("/followed4").unwrap().map(<[u8]>::len), Some(1_000_000));
        stop.send(true).unwrap();
        last
    };
    let (result, last) = tokio::join!(follower, checks);
    result.unwrap();
    // A replica that loads it all at once holds the same.
    let (_db, loaded) = store();
    let b = Replica::new(&loaded, layout.clone());
    let mut cb = client(&cluster).await;
    assert_eq!(b.resync(&mut cb).await.unwrap(), last);
    assert_eq!(local_tree(&loaded, &layout), local_tree(&followed, &layout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_stop_sender_is_dropped_goes_on_following() {
    let cluster = EtcdCluster::start(1);
    let mut c = client(&cluster).await;
    let layout = Layout::new(PREFIX);
    let (_d, store) = store();
    let replica = Replica::new(&store, layout);
    let mut fc = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    drop(stop);
    let follower = replica.follow(&mut fc, stopped);
    let checks = async {
        let r = put(&mut c, "/after", "1").await;
        until_applied(&replica, r).await;
    };
    tokio::select! {
        ended = follower => panic!("follow ended: {ended:?}"),
        () = checks => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcd_member_does_not_stall_a_replica() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let (_d, store) = store();
    let replica = Replica::new(&store, layout);
    let mut fc = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let follower = replica.follow(&mut fc, stopped);
    let checks = async {
        let mut c = client(&cluster).await;
        until_applied(&replica, put(&mut c, "/first", "0").await).await;
        for member in 0..3 {
            // Stopped, not killed: its connections stay open and silent.
            cluster.pause(member);
            let mut written = None;
            let start = Instant::now();
            while written.is_none() {
                match tokio::time::timeout(Duration::from_secs(3), c.put(key("/during"), member.to_string(), None))
                    .await
                {
                    Ok(Ok(reply)) => written = Some(reply.header().unwrap().revision()),
                    _ => assert!(start.elapsed() < Duration::from_secs(30), "no write with member {member} hung"),
                }
            }
            until_applied(&replica, written.unwrap()).await;
            cluster.resume(member);
        }
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(follower, checks);
    followed.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_a_reopened_replica_already_holds_needs_no_wait() {
    let cluster = EtcdCluster::start(1);
    let mut c = client(&cluster).await;
    let layout = Layout::new(PREFIX);
    let (_d, store) = store();
    let r = put(&mut c, "/k", "v").await;
    {
        let replica = Replica::new(&store, layout.clone());
        common::while_following(&replica, &cluster, until_applied(&replica, r)).await;
    }
    // Not following now: what the store holds is there at once, what it
    // does not is waited for in vain.
    let replica = Replica::new(&store, layout);
    let held = replica.wait_for_revision(r, Duration::from_millis(100)).await.unwrap();
    assert_eq!(held.get("/k").unwrap(), Some(&b"v"[..]));
    let later = replica.wait_for_revision(r + 1, Duration::from_millis(100)).await;
    assert!(matches!(later, Err(shoal_cluster::Error::Behind { synced, .. }) if synced == r), "{later:?}");
}

/// Loading pages through etcd 100 keys at a time: at a page's size, just
/// below and just above, every key arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_of_a_page_just_below_at_and_above_its_size_are_whole() {
    let cluster = EtcdCluster::start(1);
    let mut c = client(&cluster).await;
    let mut written = 0;
    for count in [99, 100, 101, 200] {
        let prefix = format!("/shoal/page{count}");
        let layout = Layout::new(&prefix);
        for i in 0..count {
            c.put(format!("{prefix}/k{i:03}"), i.to_string(), None).await.unwrap();
            written += 1;
        }
        let (_d, store) = store();
        let replica = Replica::new(&store, layout.clone());
        let mut rc = client(&cluster).await;
        replica.resync(&mut rc).await.unwrap();
        let local = local_tree(&store, &layout);
        assert_eq!(local.len(), count, "{count} keys");
        assert!((0..count).all(|i| local[&format!("/k{i:03}")] == i.to_string()), "{count} keys");
    }
    assert_eq!(written, 500);
}
