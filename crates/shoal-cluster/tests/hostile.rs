//! Attacks and misuse found by the third review of the cluster mode: a
//! blob held at several paths, damaged references, hostile bytes on the
//! forwarding socket, requests over a frame, invalid reads, a parent key
//! deleted alone by another etcd client, prefixes that are not prefixes,
//! and blob-heavy commits against the writer's history.

mod common;

use std::time::Duration;

use common::{ask_blob, client, framed, leaked_store_taking, noise};
use shoal_cluster::{BlobRef, Error, Host, HostOptions, Layout, Read, Transaction};
use shoal_testkit::etcd::EtcdCluster;

const MAX_VALUE: usize = 16 << 20;

fn layout(prefix: &str) -> Layout {
    Layout::new(prefix).with_max_value_bytes(MAX_VALUE)
}

fn options(name: &str, commit_timeout: Duration) -> HostOptions {
    let mut o = HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
    o.lease_ttl_secs = 2;
    o.commit_timeout = commit_timeout;
    o
}

async fn start(
    cluster: &EtcdCluster,
    dir: &tempfile::TempDir,
    name: &str,
    prefix: &str,
    commit_timeout: Duration,
) -> Result<Host, Error> {
    let store = leaked_store_taking(dir, name, MAX_VALUE);
    Host::start(store, &cluster.endpoints(), layout(prefix), options(name, commit_timeout)).await
}

async fn until_writer(host: &Host) {
    let start = std::time::Instant::now();
    while !host.is_writer().await {
        assert!(start.elapsed() < Duration::from_secs(15), "not elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(host: &Host, path: &str, value: &[u8]) -> Result<i64, Error> {
    let mut txn = host.replica().store().begin();
    txn.put(path, value).unwrap();
    let snapshot = host.commit_local(txn).await?;
    Ok(shoal_cluster::revision_of(&snapshot, host.replica().layout()).unwrap())
}

async fn delete(host: &Host, path: &str) -> Result<i64, Error> {
    let mut txn = host.replica().store().begin();
    txn.delete(path).unwrap();
    let snapshot = host.commit_local(txn).await?;
    Ok(shoal_cluster::revision_of(&snapshot, host.replica().layout()).unwrap())
}

/// The same blob at two paths, then one of them deleted: every host still
/// holds the bytes (at the other path), so a host that joins later gets
/// them: the blob index names every path that holds a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_held_at_two_paths_is_still_served_after_one_is_deleted() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/index";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    let big = noise(200_000, 7);
    put(&a, "/x", &big).await.unwrap();
    put(&a, "/y", &big).await.unwrap();
    delete(&a, "/y").await.unwrap();
    // /x still holds the bytes on host a.
    assert!(a.replica().store().snapshot().get("/x").unwrap() == Some(&big[..]));

    let b = start(&cluster, &dir, "b", prefix, Duration::from_secs(10)).await;
    let b = match b {
        Ok(b) => b,
        Err(e) => panic!("a host joining could not get a blob host a holds at /x: {e}"),
    };
    assert!(b.replica().store().snapshot().get("/x").unwrap() == Some(&big[..]));

    // The index follows the paths on every host: one entry while /x
    // holds the bytes, none once it holds others (no entry left behind).
    let hash = blake3::hash(&big).to_hex().to_string();
    let index = layout(prefix).blob_index_path(&hash);
    for host in [&a, &b] {
        assert_eq!(host.replica().store().snapshot().list(&index).unwrap().len(), 1);
    }
    let r = put(&a, "/x", b"small").await.unwrap();
    for host in [&a, &b] {
        let snapshot = host.replica().wait_for_revision(r, Duration::from_secs(10)).await.unwrap();
        assert!(!snapshot.exists(&index).unwrap(), "an index entry outlived its bytes");
    }
    b.stop().await;
    a.stop().await;
}

/// A reference in etcd whose hash is not a BLAKE3 hash (here not even a
/// path segment), written by another etcd client or damaged: no bytes can
/// ever match it, so it is a damaged reference, stored empty as one whose
/// JSON does not parse, and following goes on (were its staging path,
/// `LOCAL_ROOT/staged/../x`, looked up, the store would refuse it and
/// every replica would stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_whose_hash_is_not_a_path_segment_does_not_stop_the_replica() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/badhash";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    put(&a, "/before", b"1").await.unwrap();
    let bad = BlobRef { hash: "../x".into(), size: 10, holders: vec![] };
    let mut etcd = client(&cluster).await;
    etcd.put(format!("{prefix}/bad"), bad.encode(), None).await.unwrap();

    let after = put(&a, "/after", b"2").await;
    let failed = tokio::time::timeout(Duration::from_millis(100), a.failed()).await;
    assert!(failed.is_err(), "the replica stopped following: {}", failed.unwrap());
    assert!(after.is_ok(), "a commit after the bad reference: {after:?} ({:?})", a.replica().last_failure());
    a.stop().await;
}

/// A read of something that is not a path, sent by another host: nothing
/// is written, and the sender hears why (`Invalid`), not that the outcome
/// is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_read_of_an_invalid_path_is_invalid_not_indeterminate() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/badread";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    put(&a, "/x", b"1").await.unwrap();
    let b = start(&cluster, &dir, "b", prefix, Duration::from_secs(10)).await.unwrap();
    let base = b.replica().applied_revision().unwrap();
    let txn = Transaction {
        base,
        reads: vec![Read::Value("no-slash".into())],
        changes: vec![shoal_cluster::Change::Put { path: "/z".into(), value: b"1".to_vec() }],
    };
    let forwarded = b.commit(&txn).await;
    assert!(matches!(forwarded, Err(Error::Invalid(_))), "forwarded: {forwarded:?}");
    let local = a.commit(&txn).await;
    assert!(matches!(local, Err(Error::Invalid(_))), "local: {local:?}");
    b.stop().await;
    a.stop().await;
}

/// A transaction too large for a frame (8 MiB), sent by a host that is not
/// the writer: it never leaves the host, so nothing was written and the
/// caller hears it is too large, not that its outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_transaction_over_the_frame_limit_is_too_large_not_indeterminate() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/bigframe";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    put(&a, "/x", b"1").await.unwrap();
    let b = start(&cluster, &dir, "b", prefix, Duration::from_secs(10)).await.unwrap();
    let base = b.replica().applied_revision().unwrap();
    // 140 values just under the blob threshold: 8.8 MB.
    let changes =
        (0..140u64).map(|i| shoal_cluster::Change::Put { path: format!("/v{i}"), value: noise(63_000, i) }).collect();
    let txn = Transaction { base, reads: vec![], changes };
    let forwarded = b.commit(&txn).await;
    assert!(matches!(forwarded, Err(Error::TooLarge(_))), "forwarded: {forwarded:?}");
    b.stop().await;
    a.stop().await;
}

/// Another etcd client deletes a parent key alone (its child key stays in
/// etcd): a replica that follows keeps the child, and the parent emptied,
/// as one that loads the tree holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_deleted_alone_in_etcd_leaves_followers_and_loaders_with_the_same_keys() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/parent";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    let mut txn = a.replica().store().begin();
    txn.put("/p", "parent").unwrap();
    txn.put("/p/c", "child").unwrap();
    a.commit_local(txn).await.unwrap();
    let mut etcd = client(&cluster).await;
    etcd.delete(format!("{prefix}/p"), None).await.unwrap();
    let r = put(&a, "/after", b"1").await.unwrap();
    let b = start(&cluster, &dir, "b", prefix, Duration::from_secs(10)).await.unwrap();
    let (sa, sb) = (
        a.replica().wait_for_revision(r, Duration::from_secs(10)).await.unwrap(),
        b.replica().wait_for_revision(r, Duration::from_secs(10)).await.unwrap(),
    );
    let in_etcd = etcd.get(format!("{prefix}/p/c"), None).await.unwrap().kvs().len();
    assert_eq!(in_etcd, 1, "etcd still holds /p/c");
    assert_eq!(sb.get("/p/c").unwrap(), Some(&b"child"[..]), "the loader");
    assert_eq!(sa.get("/p/c").unwrap(), Some(&b"child"[..]), "the follower");
    b.stop().await;
    a.stop().await;
}

/// Prefixes a new user may give the library: the empty prefix (or "/")
/// would make every key of etcd that starts with '/' the tree's; a prefix
/// without a leading '/' would be registered where the nested-prefix
/// check never finds it, so "shoal" and "shoal/pool" would run as two
/// trees that mix. `Host::start` refuses them as shoald does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_that_is_empty_or_relative_is_refused() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut accepted = Vec::new();
    let mut hosts = Vec::new();
    for (i, prefix) in ["", "/", "shoal", "shoal/pool"].into_iter().enumerate() {
        let store = leaked_store_taking(&dir, &format!("p{i}"), MAX_VALUE);
        let started = tokio::time::timeout(
            Duration::from_secs(20),
            Host::start(store, &cluster.endpoints(), layout(prefix), options(&format!("p{i}"), Duration::from_secs(5))),
        )
        .await
        .expect("Host::start hung");
        match started {
            Err(e) => eprintln!("{prefix:?}: {e}"),
            Ok(host) => {
                accepted.push(prefix);
                hosts.push(host);
            }
        }
    }
    for host in hosts {
        host.stop().await;
    }
    // "shoal" alone could be a choice; with "shoal/pool" beside it, never.
    assert!(accepted.is_empty() || accepted == ["shoal"], "accepted prefixes: {accepted:?}");
}

/// A commit of 20 blobs, then a compaction (which shoald runs on its own
/// every few tens of MiB, so soon under blobs): a transaction whose base is
/// two revisions old and whose reads did not change still commits. Were
/// each blob staged in a version of its own, those versions would push
/// the base out of the store's `retain_versions` (16) and it would
/// conflict on `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_many_blobs_does_not_push_recent_bases_out_of_the_writers_history() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/attack/history";
    let a = start(&cluster, &dir, "a", prefix, Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    put(&a, "/x", b"1").await.unwrap();
    let b = start(&cluster, &dir, "b", prefix, Duration::from_secs(10)).await.unwrap();
    let mut open = b.replica().store().begin();
    assert_eq!(open.get("/x").unwrap(), Some(&b"1"[..]));
    open.put("/from-b", "x was 1").unwrap();
    // Two commits after b's base: one small, one of 20 blobs.
    put(&a, "/w", b"1").await.unwrap();
    let mut txn = a.replica().store().begin();
    for i in 0..20 {
        // `noise` takes `seed | 1`: odd seeds, 20 different blobs.
        txn.put(&format!("/blobs/{i}"), noise(70_000, 1001 + 2 * i)).unwrap();
    }
    a.commit_local(txn).await.unwrap();
    a.replica().store().compact().unwrap();
    let result = b.commit_local(open).await;
    assert!(result.is_ok(), "a transaction whose reads did not change, two revisions old: {:?}", result.err());
    b.stop().await;
    a.stop().await;
}

/// Hostile bytes on the forwarding socket: a header over the limit, a
/// header that lies then silence, garbage postcard, blob requests for
/// path-like, empty, overlong and prefix hashes. Each gets `NoBlob` or a
/// closed connection; the host goes on serving the real blob and
/// committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_forwarding_socket_get_no_blob_or_a_closed_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let a = start(&cluster, &dir, "a", "/attack/socket", Duration::from_secs(10)).await.unwrap();
    until_writer(&a).await;
    let big = noise(300_000, 3);
    put(&a, "/big", &big).await.unwrap();
    // Released once applied: served from the store from then on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let address = a.forward_address().to_string();
    let real = blake3::hash(&big).to_hex().to_string();

    // Closed at once: a header over the limit; garbage postcard.
    for bytes in [(u32::MAX).to_le_bytes().to_vec(), framed(&[0xff; 64]), framed(&[9, 1, 2, 3])] {
        let mut s = tokio::net::TcpStream::connect(&address).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{bytes:?}: {read:?} {reply:?}");
    }
    // A header that lies, then silence: others are served meanwhile.
    let mut liar = tokio::net::TcpStream::connect(&address).await.unwrap();
    liar.write_all(&(8u32 << 20).to_le_bytes()).await.unwrap();
    liar.write_all(&[1, 2, 3]).await.unwrap();

    let hostile: Vec<Vec<u8>> = vec![
        b"../x".to_vec(),
        b"".to_vec(),
        b"/".to_vec(),
        b"..".to_vec(),
        format!("{real}/..").into_bytes(),
        format!("../blobs/{real}").into_bytes(),
        real[..10].to_string().into_bytes(),
        "f".repeat(5000).into_bytes(),
        b"a\0b".to_vec(),
        b"\n".to_vec(),
    ];
    for hash in &hostile {
        let (kind, _) = ask_blob(&address, hash).await;
        assert_eq!(kind, 8, "{:?}", String::from_utf8_lossy(hash));
    }
    let (served, bytes) = ask_blob(&address, real.as_bytes()).await;
    assert_eq!(served, 7);
    assert!(bytes.as_deref() == Some(&big[..]));
    put(&a, "/after", b"1").await.unwrap();
    drop(liar);
    a.stop().await;
}
