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

/// A postcard varint, for writing the forwarding protocol by hand.
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// `body` as one frame of the forwarding protocol (a u32 length first).
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The first byte of the reply to `Request::Blob { hash }` (7:
/// `BlobFollows`, 8: `NoBlob`) on a new connection, and the bytes if any.
pub async fn ask_blob(address: &str, hash: &[u8]) -> (u8, Option<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut body = vec![1u8];
    varint(hash.len() as u64, &mut body);
    body.extend_from_slice(hash);
    s.write_all(&framed(&body)).await.unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).await.unwrap();
    if body[0] != 7 {
        return (body[0], None);
    }
    let (mut size, mut shift) = (0u64, 0);
    for &b in &body[1..] {
        size |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    let mut bytes = vec![0u8; size as usize];
    s.read_exact(&mut bytes).await.unwrap();
    (7, Some(bytes))
}
