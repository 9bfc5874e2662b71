//! Large values move host to host, not through etcd: etcd holds a
//! reference (hash, size, holders), every host's replica holds the bytes.

mod common;

use std::time::Duration;

use common::{client, leaked_store_taking, noise};
use etcd_client::Client;
use shoal_cluster::{BlobRef, Change, Host, HostOptions, Layout, Writer};
use shoal_testkit::etcd::EtcdCluster;

const PREFIX: &str = "/shoal/blobs";
const MAX_VALUE: usize = 16 << 20;

fn layout() -> Layout {
    Layout::new(PREFIX).with_max_value_bytes(MAX_VALUE)
}

async fn start(cluster: &EtcdCluster, dir: &tempfile::TempDir, name: &str) -> Host {
    let options = HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
    Host::start(leaked_store_taking(dir, name, MAX_VALUE), &cluster.endpoints(), layout(), options).await.unwrap()
}

async fn put(host: &Host, path: &str, value: &[u8]) -> i64 {
    let mut txn = host.replica().store().begin();
    txn.put(path, value).unwrap();
    let snapshot = host.commit_local(txn).await.unwrap();
    shoal_cluster::revision_of(&snapshot, host.replica().layout()).unwrap()
}

async fn etcd_value(c: &mut Client, path: &str) -> Vec<u8> {
    c.get(format!("{PREFIX}{path}"), None).await.unwrap().kvs()[0].value().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_value_written_on_one_host_is_read_on_another_without_passing_through_etcd() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) =
        (start(&cluster, &dir, "a").await, start(&cluster, &dir, "b").await, start(&cluster, &dir, "c").await);
    let big = noise(10 << 20, 42);
    let revision = put(&a, "/images/vm1", &big).await;
    let mut observer = client(&cluster).await;

    // etcd holds only the reference: the hash, the size, and host a.
    let stored = etcd_value(&mut observer, "/images/vm1").await;
    assert!(stored.len() < 1024, "etcd holds {} bytes", stored.len());
    let reference = BlobRef::decode(&stored).unwrap().unwrap();
    assert_eq!(reference.size, big.len() as u64);
    assert_eq!(reference.holders.len(), 1);
    assert_eq!(reference.holders[0].host, "a");

    // Host c (and b) hold the bytes, byte for byte, read in place.
    for host in [&c, &b, &a] {
        let snapshot = host.replica().wait_for_revision(revision, Duration::from_secs(30)).await.unwrap();
        assert!(snapshot.get("/images/vm1").unwrap() == Some(&big[..]), "not the same bytes");
    }

    // The threshold: just below it a value goes as it is; at it, as a blob;
    // a small value that would read as a reference goes as a blob too.
    let threshold = layout().blob_threshold();
    let below = noise(threshold - 1, 1);
    let at = noise(threshold, 2);
    let lookalike = [b"\0shoal-blob\0".as_slice(), b"{}"].concat();
    put(&b, "/below", &below).await;
    put(&b, "/at", &at).await;
    let r = put(&b, "/lookalike", &lookalike).await;
    assert_eq!(etcd_value(&mut observer, "/below").await, below);
    assert!(BlobRef::decode(&etcd_value(&mut observer, "/at").await).is_some_and(|r| r.is_ok()));
    assert!(BlobRef::decode(&etcd_value(&mut observer, "/lookalike").await).is_some_and(|r| r.is_ok()));
    let snapshot = c.replica().wait_for_revision(r, Duration::from_secs(30)).await.unwrap();
    assert_eq!(snapshot.get("/below").unwrap(), Some(&below[..]));
    assert_eq!(snapshot.get("/at").unwrap(), Some(&at[..]));
    assert_eq!(snapshot.get("/lookalike").unwrap(), Some(&lookalike[..]));

    // A host that starts later loads the tree, blobs included: with the
    // host the reference names gone, from another that applied it.
    a.stop().await;
    let d = start(&cluster, &dir, "d").await;
    assert!(d.replica().store().snapshot().get("/images/vm1").unwrap() == Some(&big[..]));
    for host in [b, c, d] {
        host.stop().await;
    }
}

/// A reference whose only holder is gone: the replica does not apply that
/// revision (nor any after it) and says why; it never publishes a version
/// without the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_holder_is_gone_leaves_its_revision_unapplied() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let host = start(&cluster, &dir, "h").await;
    let before = put(&host, "/first", b"1").await;
    // A reference to bytes no host holds, as a writer that died would have
    // left it (its holder's port closed).
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let blob = BlobRef {
        hash: "00".repeat(32),
        size: 100_000,
        holders: vec![shoal_cluster::Holder { host: "dead".into(), address: gone }],
    };
    host.stop().await;
    let mut writer = Writer::elect(client(&cluster).await, layout(), "w", 5).await.unwrap();
    let store = leaked_store_taking(&dir, "scratch", MAX_VALUE);
    let orphan = Change::Put { path: "/orphan".into(), value: blob.encode() };
    let bad = writer.commit(&[orphan], &store.snapshot()).await.unwrap();
    writer.commit(&[Change::Put { path: "/after".into(), value: b"2".to_vec() }], &store.snapshot()).await.unwrap();
    writer.resign().await.unwrap();

    // A replica following from before it stops short of it.
    let reader = leaked_store_taking(&dir, "r", MAX_VALUE);
    let mut options = HostOptions::new("r", "127.0.0.1:0".parse().unwrap());
    options.commit_timeout = Duration::from_secs(3);
    let endpoints = cluster.endpoints();
    // Joining waits for the newest revision, which it cannot reach, and
    // says why.
    let refused = Host::start(reader, &endpoints, layout(), options).await.err().expect("joined past a lost blob");
    assert!(refused.to_string().contains("is unavailable"), "{refused}");
    let snapshot = reader.snapshot();
    assert!(shoal_cluster::revision_of(&snapshot, &layout()).is_none_or(|r| r < bad), "applied past the blob");
    assert!(snapshot.get("/orphan").unwrap().is_none());
    let _ = before;
}
