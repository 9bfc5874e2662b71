//! Hosts' status in etcd: published under a lease, listed with each host's
//! lag, gone when the host stops renewing.

use std::time::{Duration, Instant};

use etcd_client::Client;
use shoal::{Options, Store};
use shoal_cluster::{cluster_status, Error, Layout, Presence, Replica};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::watch;

const PREFIX: &str = "/shoal/p";
const PERIOD: Duration = Duration::from_millis(100);

fn leaked_store(dir: &tempfile::TempDir, name: &str) -> &'static Store {
    let options = Options { durability: shoal::Durability::None, create: true, ..Options::default() };
    Box::leak(Box::new(Store::open(dir.path().join(name), options).unwrap()))
}

async fn client(cluster: &EtcdCluster) -> Client {
    shoal_cluster::connect(&cluster.endpoints()).await.unwrap()
}

/// Waits until `ok` holds for the listed hosts.
async fn until(c: &mut Client, layout: &Layout, what: &str, ok: impl Fn(&[shoal_cluster::HostEntry]) -> bool) {
    let start = Instant::now();
    loop {
        let listed = cluster_status(c, layout).await.unwrap();
        if ok(&listed) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_publish_their_figures_and_vanish_when_they_stop_renewing() {
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let (store_a, store_b) = (leaked_store(&dir, "a"), leaked_store(&dir, "b"));
    let mut c = client(&cluster).await;
    for i in 0..5 {
        c.put(format!("{PREFIX}/k{i}"), "v", None).await.unwrap();
    }

    // Host a follows the tree; host b holds a store that follows nothing.
    let replica = Replica::new(store_a, layout.clone());
    let mut follower_client = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let follower = replica.follow(&mut follower_client, stopped);
    let checks = async {
        let a = Presence::start(client(&cluster).await, layout.clone(), "host-a", store_a, 1, PERIOD).await.unwrap();
        let b = Presence::start(client(&cluster).await, layout.clone(), "host-b", store_b, 1, PERIOD).await.unwrap();
        // A second process under a name in use is refused.
        let taken = Presence::start(client(&cluster).await, layout.clone(), "host-a", store_b, 1, PERIOD).await;
        assert!(matches!(&taken, Err(Error::HostTaken(h)) if h == "host-a"), "{:?}", taken.err());

        let newest = c.put(format!("{PREFIX}/k5"), "v", None).await.unwrap().header().unwrap().revision();
        until(&mut c, &layout, "a caught up, b following nothing", |hosts| {
            hosts.len() == 2
                && hosts[0].status.host == "host-a"
                && hosts[0].status.applied_revision == Some(newest)
                && hosts[0].lag == Some(0)
                && hosts[1].status.host == "host-b"
                && hosts[1].status.applied_revision.is_none()
                && hosts[1].lag.is_none()
        })
        .await;
        let listed = cluster_status(&mut c, &layout).await.unwrap();
        let figures = &listed[0].status;
        let stat = store_a.stat().unwrap();
        assert_eq!((figures.version, figures.arena_bytes), (stat.version, stat.arena_bytes));

        // Host a stops renewing, as one that died: it is gone once its
        // lease ends; host b stays.
        a.stop();
        until(&mut c, &layout, "a gone", |hosts| hosts.len() == 1 && hosts[0].status.host == "host-b").await;
        // Its name is free again.
        let again = Presence::start(client(&cluster).await, layout.clone(), "host-a", store_a, 1, PERIOD).await;
        assert!(again.is_ok(), "{:?}", again.err());
        drop(b);
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(follower, checks);
    followed.unwrap();
}

/// A host whose lease ended while it lived (cut off, or stopped longer than
/// the lease) publishes its status again once it can, under a new lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_lease_ended_publishes_again() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let store = leaked_store(&dir, "a");
    let mut c = client(&cluster).await;
    let presence = Presence::start(client(&cluster).await, layout.clone(), "host-r", store, 2, PERIOD).await.unwrap();
    until(&mut c, &layout, "host-r listed", |l| l.iter().any(|e| e.status.host == "host-r")).await;
    // The lease ends under it: revoked, as etcd does to one not renewed.
    let key = layout.host_key("host-r");
    let lease = c.get(key.clone(), None).await.unwrap().kvs()[0].lease();
    c.lease_revoke(lease).await.unwrap();
    assert!(c.get(key.clone(), None).await.unwrap().kvs().is_empty());
    until(&mut c, &layout, "host-r listed again", |l| l.iter().any(|e| e.status.host == "host-r")).await;
    let renewed = c.get(key.clone(), None).await.unwrap().kvs()[0].lease();
    assert_ne!(renewed, lease);
    // Leaving removes the entry at once, whatever lease it is on now.
    presence.leave().await;
    assert!(c.get(key, None).await.unwrap().kvs().is_empty());
}
