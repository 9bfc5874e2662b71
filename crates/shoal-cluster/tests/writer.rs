//! The cluster's writer against a real 3-member etcd cluster: one at a
//! time, the next elected when the first stops renewing its lease, and a
//! deposed writer's commits refused by the fence.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use shoal::{Options, Store};
use shoal_cluster::{current_writer, revision_of, Change, Error, Layout, Replica, Writer};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::watch;

const PREFIX: &str = "/shoal/w";

async fn client(cluster: &EtcdCluster) -> Client {
    Client::connect(cluster.endpoints(), None).await.unwrap()
}

fn put(path: &str, value: &str) -> Change {
    Change::Put { path: path.to_string(), value: value.as_bytes().to_vec() }
}

/// Each key below the prefix with its value and the revision that last
/// changed it.
async fn keys(c: &mut Client) -> Vec<(String, String, i64)> {
    let reply = c.get(format!("{PREFIX}/"), Some(GetOptions::new().with_prefix())).await.unwrap();
    reply
        .kvs()
        .iter()
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
    let first = a.commit(&[put("/x", "from a")]).await.unwrap();
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
    let refused = a.commit(&[put("/x", "late a"), put("/y", "late a")]).await;
    assert!(matches!(refused, Err(Error::Deposed)), "{refused:?}");
    assert_eq!(keys(&mut observer).await, [("/x".to_string(), "from a".to_string(), first)]);

    let second = b.commit(&[put("/y", "from b")]).await.unwrap();
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
    let mut follower_client = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let follower = replica.follow(&mut follower_client, stopped);
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
        let created = w.commit(&[put("/a", "1"), put("/a/b", "2"), put("/ab", "3")]).await.unwrap();
        let listed = keys(&mut observer).await;
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|(_, _, revision)| *revision == created), "{listed:?}");

        // A subtree's delete takes the node and what is below it, not a
        // sibling whose name starts the same.
        let deleted = w.commit(&[Change::DeleteTree { path: "/a".to_string() }]).await.unwrap();
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
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(follower, checks);
    followed.unwrap();
}
