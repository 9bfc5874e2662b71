//! What the cluster tests share: an etcd client as the cluster mode makes
//! one, and running checks while a replica follows.

#![allow(dead_code)] // each test binary uses its own part

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::Client;
use shoal::{Options, Store};
use shoal_cluster::{Change, Replica};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::watch;

pub async fn client(cluster: &EtcdCluster) -> Client {
    shoal_cluster::connect(&cluster.endpoints()).await.unwrap()
}

pub fn put(path: &str, value: &str) -> Change {
    Change::Put { path: path.to_string(), value: value.as_bytes().to_vec() }
}

/// Runs `checks` while `replica` follows the cluster, then stops it (and
/// fails if following failed).
pub async fn while_following<T>(replica: &Replica<'_>, cluster: &EtcdCluster, checks: impl Future<Output = T>) -> T {
    let mut follower_client = client(cluster).await;
    let (stop, stopped) = watch::channel(false);
    // Boxed: callers nest these, and the futures are large.
    let checks = Box::pin(checks);
    let checks = async {
        let out = checks.await;
        stop.send(true).unwrap();
        out
    };
    let (followed, out) = tokio::join!(Box::pin(replica.follow(&mut follower_client, stopped)), checks);
    followed.unwrap();
    out
}

/// Waits until `replica` has applied `revision` (at most 20 s).
pub async fn until_applied(replica: &Replica<'_>, revision: i64) {
    let start = Instant::now();
    while replica.applied_revision().is_none_or(|r| r < revision) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "revision {revision} not applied; at {:?}",
            replica.applied_revision()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A store in `dir`, made if need be, durability none, other options as
/// given.
pub fn store_with(dir: &tempfile::TempDir, name: &str, options: Options) -> Store {
    Store::open(dir.path().join(name), Options { durability: shoal::Durability::None, create: true, ..options })
        .unwrap()
}

pub fn store(dir: &tempfile::TempDir, name: &str) -> Store {
    store_with(dir, name, Options::default())
}

/// A store that lives as long as the test process (a `Host` needs one).
pub fn leaked_store(dir: &tempfile::TempDir, name: &str) -> &'static Store {
    Box::leak(Box::new(store(dir, name)))
}

/// A leaked store whose values may be up to `max_value_bytes`.
pub fn leaked_store_taking(dir: &tempfile::TempDir, name: &str, max_value_bytes: usize) -> &'static Store {
    Box::leak(Box::new(store_with(dir, name, Options { max_value_bytes, ..Options::default() })))
}

/// A host's options for tests: port 0 on loopback, a lease of 2 s.
pub fn host_options(name: &str) -> shoal_cluster::HostOptions {
    let mut options = shoal_cluster::HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
    options.lease_ttl_secs = 2;
    options
}

/// `len` bytes of xorshift noise from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
