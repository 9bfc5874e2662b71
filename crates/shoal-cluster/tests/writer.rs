//! The cluster's writer against a real 3-member etcd cluster: one at a
//! time, the next elected when the first stops renewing its lease, and a
//! deposed writer's commits refused by the fence.

mod common;

use std::time::{Duration, Instant};

use common::{client, put, until_applied, while_following};
use etcd_client::{Client, GetOptions};
use shoal::{Options, Store};
use shoal_cluster::{current_writer, revision_of, Change, Error, Layout, Replica, Writer};
use shoal_testkit::etcd::EtcdCluster;

const PREFIX: &str = "/shoal/w";

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), Options::default()).unwrap();
    (dir, store)
}

/// Each key of the tree below the prefix (not the replicas' markers) with
/// its value and the revision that last changed it.
async fn keys(c: &mut Client) -> Vec<(String, String, i64)> {
    let reply = c.get(format!("{PREFIX}/"), Some(GetOptions::new().with_prefix())).await.unwrap();
    reply
        .kvs()
        .iter()
        .filter(|kv| !kv.key().starts_with(format!("{PREFIX}/.shoald/cluster/").as_bytes()))
        .map(|kv| {
            let path = String::from_utf8(kv.key()[PREFIX.len()..].to_vec()).unwrap();
            (path, String::from_utf8(kv.value().to_vec()).unwrap(), kv.mod_revision())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_at_a_time_and_a_deposed_writer_writes_nothing() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let mut observer = client(&cluster).await;
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap(), None);

    let mut a = Writer::elect(client(&cluster).await, layout.clone(), "host-a", 1).await.unwrap();
    // The tree the writers change holds only top-level nodes: an empty
    // store stands for it.
    let (_dir, empty) = empty_store();
    let tree = empty.snapshot();
    let first = a.commit(&[put("/x", "from a")], &tree).await.unwrap();
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap().as_deref(), Some("host-a"));

    // A second candidate is not elected while the first renews its lease,
    // even past the lease's length.
    let b = tokio::spawn(Writer::elect(client(&cluster).await, layout.clone(), "host-b", 1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!b.is_finished(), "a second writer was elected while the first lived");

    // The first stops renewing, as one that hung or was cut off: the second
    // is elected once the lease ends.
    a.stop_renewing();
    let mut b = tokio::time::timeout(Duration::from_secs(10), b).await.expect("elected").unwrap().unwrap();
    assert!(b.elected_at() > a.elected_at());
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap().as_deref(), Some("host-b"));

    // The first, still running, tries to write: refused, and nothing of it
    // lands, although it would have changed two keys.
    let refused = a.commit(&[put("/x", "late a"), put("/y", "late a")], &tree).await;
    assert!(matches!(refused, Err(Error::Deposed)), "{refused:?}");
    assert_eq!(keys(&mut observer).await, [("/x".to_string(), "from a".to_string(), first)]);

    let second = b.commit(&[put("/y", "from b")], &tree).await.unwrap();
    assert!(second > first);

    // Resigning hands over at once, without waiting for a lease to end.
    b.resign().await.unwrap();
    let started = Instant::now();
    let c = Writer::elect(client(&cluster).await, layout.clone(), "host-c", 30).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_one_revision_a_replica_applies_as_one_version() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let mut w = Writer::elect(client(&cluster).await, layout.clone(), "host", 5).await.unwrap();
    let mut observer = client(&cluster).await;

    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::create(dir.path().join("s"), Options { durability: shoal::Durability::None, ..Options::default() })
            .unwrap();
    let replica = Replica::new(&store, layout.clone());
    let checks = async {
        let until = |revision: Option<i64>| {
            let replica = &replica;
            async move {
                let start = Instant::now();
                while replica.applied_revision().is_none()
                    || revision.is_some_and(|r| replica.applied_revision() != Some(r))
                {
                    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", replica.applied_revision());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        until(None).await;
        let loaded = store.version();
        let created = w.commit(&[put("/a", "1"), put("/a/b", "2"), put("/ab", "3")], &store.snapshot()).await.unwrap();
        let listed = keys(&mut observer).await;
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|(_, _, revision)| *revision == created), "{listed:?}");

        // A subtree's delete takes the node and what is below it, not a
        // sibling whose name starts the same.
        let deleted = w.commit(&[Change::DeleteTree { path: "/a".to_string() }], &store.snapshot()).await.unwrap();
        assert_eq!(keys(&mut observer).await, [("/ab".to_string(), "3".to_string(), created)]);

        // On the replica: one version for each commit.
        until(Some(deleted)).await;
        assert_eq!(store.version(), loaded + 2);
        let after_create = store.snapshot_at(loaded + 1).unwrap();
        assert_eq!(revision_of(&after_create, &layout), Some(created));
        assert_eq!(after_create.get("/a/b").unwrap(), Some(&b"2"[..]));
        assert_eq!(after_create.get("/ab").unwrap(), Some(&b"3"[..]));
        let now = store.snapshot();
        assert!(!now.exists("/a").unwrap() && !now.exists("/a/b").unwrap());
        assert_eq!(now.get("/ab").unwrap(), Some(&b"3"[..]));

        // A delete of nothing still makes a revision the replica's watch
        // delivers (a committer waits for it), and no version.
        let nothing = w.commit(&[Change::DeleteTree { path: "/none".to_string() }], &store.snapshot()).await.unwrap();
        assert!(nothing > deleted);
        replica.wait_for_revision(nothing, Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.version(), loaded + 2);
    };
    while_following(&replica, &cluster, checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_one_key_whatever_the_changes_and_bad_ones_are_refused() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let mut w = Writer::elect(client(&cluster).await, layout.clone(), "host", 5).await.unwrap();
    let mut observer = client(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::create(dir.path().join("s"), Options { durability: shoal::Durability::None, ..Options::default() })
            .unwrap();
    let replica = Replica::new(&store, layout.clone());
    let checks = async {
        let names = |listed: Vec<(String, String, i64)>| listed.into_iter().map(|(p, v, _)| (p, v)).collect::<Vec<_>>();
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(p, v)| (p.to_string(), v.to_string())).collect::<Vec<_>>();
        // A deep write puts its missing ancestors too.
        let r = w.commit(&[put("/vm/1/old", "o"), put("/vm/1/keep", "k")], &store.snapshot()).await.unwrap();
        assert_eq!(
            names(keys(&mut observer).await),
            pairs(&[("/vm", ""), ("/vm/1", ""), ("/vm/1/keep", "k"), ("/vm/1/old", "o")])
        );
        until_applied(&replica, r).await;

        // Replacing a subtree in one commit: delete it, write below it again
        // (etcd refuses a transaction naming a key twice).
        let r = w
            .commit(
                &[
                    Change::DeleteTree { path: "/vm/1".into() },
                    put("/vm/1/keep", "k2"),
                    put("/vm/1/new", "n"),
                    put("/x", "1"),
                    put("/x", "2"),
                ],
                &store.snapshot(),
            )
            .await
            .unwrap();
        assert_eq!(
            names(keys(&mut observer).await),
            pairs(&[("/vm", ""), ("/vm/1", ""), ("/vm/1/keep", "k2"), ("/vm/1/new", "n"), ("/x", "2")])
        );
        until_applied(&replica, r).await;
        // The replica holds what etcd lists, node for node.
        let snapshot = store.snapshot();
        let local: Vec<(String, String)> = snapshot
            .scan("/")
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.path(), String::from_utf8(e.value().to_vec()).unwrap()))
            .filter(|(p, _)| p != "/" && !p.starts_with("/.shoald"))
            .collect();
        assert_eq!(local, names(keys(&mut observer).await));

        // Changes no replica could apply, or that touch what is not the
        // tree's, are refused, and nothing of their commit lands.
        let before = keys(&mut observer).await;
        let big = Change::Put { path: "/big".into(), value: vec![0; layout.max_value_bytes() + 1] };
        for bad in [
            put("x", "1"),
            put("/a/", "1"),
            put("/a//b", "1"),
            put("/", "1"),
            put("/.shoald/cluster/revision", "9"),
            big,
        ] {
            let result = w.commit(&[put("/fine", "1"), bad.clone()], &store.snapshot()).await;
            let too_large = matches!(&bad, Change::Put { value, .. } if value.len() > layout.max_value_bytes());
            if too_large {
                assert!(matches!(result, Err(Error::TooLarge(_))), "{result:?}");
            } else {
                assert!(matches!(result, Err(Error::Invalid(_))), "{bad:?}: {result:?}");
            }
        }
        let result = w.commit(&[Change::DeleteTree { path: "/".into() }], &store.snapshot()).await;
        assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
        assert_eq!(keys(&mut observer).await, before);
        // At the limit, it goes.
        let at_limit = Change::Put { path: "/big".into(), value: vec![7; layout.max_value_bytes()] };
        let r = w.commit(&[at_limit], &store.snapshot()).await.unwrap();
        until_applied(&replica, r).await;
        assert_eq!(store.snapshot().get("/big").unwrap().map(<[u8]>::len), Some(layout.max_value_bytes()));
    };
    while_following(&replica, &cluster, checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_its_role_while_etcd_members_die_one_at_a_time() {
    let mut cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let (_dir, empty) = empty_store();
    let mut w = Writer::elect(client(&cluster).await, layout.clone(), "host-a", 2).await.unwrap();
    let mut observer = client(&cluster).await;
    for member in 0..3 {
        tokio::task::block_in_place(|| cluster.kill(member));
        // Longer than the lease: only renewals through the others keep it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!w.is_deposed(), "deposed after member {member} died");
        let mut committed = None;
        for _ in 0..100 {
            match w.commit(&[put("/alive", &member.to_string())], &empty.snapshot()).await {
                Ok(r) => {
                    committed = Some(r);
                    break;
                }
                Err(Error::Deposed) => panic!("deposed after member {member} died"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert!(committed.is_some(), "no commit after member {member} died");
        tokio::task::block_in_place(|| cluster.restart(member));
    }
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap().as_deref(), Some("host-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_leaves_nothing_alive() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let a = Writer::elect(client(&cluster).await, layout.clone(), "host-a", 30).await.unwrap();
    // b gives up waiting: its candidacy must not live on.
    let b = tokio::time::timeout(
        Duration::from_millis(500),
        Writer::elect(client(&cluster).await, layout.clone(), "host-b", 1),
    )
    .await;
    assert!(b.is_err(), "b cannot be elected while a holds the role");
    // b's lease is left to end (1 s): then only a's remains.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leases = tokio::task::block_in_place(|| cluster.etcdctl(&["lease", "list"])).unwrap();
    assert!(leases.contains("found 1 leases"), "{leases}");
    a.resign().await.unwrap();
    let started = Instant::now();
    let c = Writer::elect(client(&cluster).await, layout.clone(), "host-c", 5).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut observer = client(&cluster).await;
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap().as_deref(), Some("host-c"));
    drop(c);
}

/// A commit is refused as too large when it would be over etcd's request
/// limit (1.5 MiB by default), and every one the writer lets through at
/// that limit, up to the largest, is one etcd takes: the writer's estimate
/// of a request's size is never below etcd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_at_and_above_etcds_request_limit() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    assert_eq!(layout.max_request_bytes(), 1536 << 10, "etcd's default");
    let mut w = Writer::elect(client(&cluster).await, layout.clone(), "host", 5).await.unwrap();
    let (_dir, store) = empty_store();
    let first = Change::Put { path: "/a".into(), value: vec![1; layout.max_value_bytes()] };
    let with_second = |len: usize| vec![first.clone(), Change::Put { path: "/b".into(), value: vec![2; len] }];
    // The largest second value the writer lets through: each probe is
    // refused before etcd is asked, or committed, which etcd must take.
    let (mut fits, mut over) = (0usize, layout.max_request_bytes());
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        match w.commit(&with_second(mid), &store.snapshot()).await {
            Ok(_) => fits = mid,
            Err(Error::TooLarge(_)) => over = mid,
            Err(e) => panic!("a second value of {mid} bytes: the writer let through what etcd refuses: {e}"),
        }
    }
    // Just below, at and just above the writer's limit.
    for len in [fits - 1, fits] {
        w.commit(&with_second(len), &store.snapshot()).await.unwrap();
    }
    let above = w.commit(&with_second(fits + 1), &store.snapshot()).await;
    assert!(matches!(&above, Err(Error::TooLarge(m)) if m.contains("--max-request-bytes")), "{above:?}");
    // The estimate is close: at most 2 KiB left unused.
    let used = layout.max_value_bytes() + fits;
    assert!(layout.max_request_bytes() - used < 2048, "{used} bytes of values let through");
}
