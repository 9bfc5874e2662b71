//! Edge cases of hosts and the writer, found by review: a transaction
//! open across a compaction, nested prefixes, a deposed writer's group, a
//! stalled client of the forwarding socket.

mod common;

use std::time::Duration;

use common::{client, host_options, leaked_store, put, store, while_following};
use shoal_cluster::{Change, Error, Host, Layout, Replica, Transaction, Writer};
use shoal_testkit::etcd::EtcdCluster;

async fn until_writer(host: &Host) {
    let start = std::time::Instant::now();
    while !host.is_writer().await {
        assert!(start.elapsed() < Duration::from_secs(15), "not elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(host: &Host, path: &str, value: &str) {
    let mut txn = host.replica().store().begin();
    txn.put(path, value).unwrap();
    host.commit_local(txn).await.unwrap();
}

/// A transaction open while more than `retain_versions` (16) versions
/// commit and the store compacts (shoald compacts from 8 MiB, several times
/// a second under writes) commits, or conflicts (EAGAIN, which xenstore
/// clients retry), never fails with a store error (EIO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_compaction_commits_or_conflicts() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let store = leaked_store(&dir, "a");
    let host = Host::start(store, &cluster.endpoints(), Layout::new("/shoal/c"), host_options("a")).await.unwrap();
    until_writer(&host).await;
    write(&host, "/x", "1").await;

    let mut txn = store.begin();
    assert_eq!(txn.get("/x").unwrap(), Some(&b"1"[..]));
    txn.put("/y", "from x").unwrap();

    for i in 0..20 {
        write(&host, "/other", &i.to_string()).await;
    }
    store.compact().unwrap();
    let result = host.commit_local(txn).await;
    eprintln!("{:?}", result.as_ref().map(|s| s.version()));
    assert!(
        matches!(result, Ok(_) | Err(Error::Conflict { .. })),
        "a transaction whose reads did not change: {:?}",
        result.err()
    );
    host.stop().await;
}

/// Two trees in one etcd with nested prefixes (`/shoal` and `/shoal/pool1`)
/// would mix: the outer tree would take in the inner one's nodes and its
/// writer's and hosts' keys. The second to start is refused, whichever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_prefixes_are_refused() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let outer =
        Host::start(leaked_store(&dir, "o"), &endpoints, Layout::new("/shoal"), host_options("o")).await.unwrap();
    let inner = Host::start(leaked_store(&dir, "i"), &endpoints, Layout::new("/shoal/pool1"), host_options("i")).await;
    let refused = inner.err().expect("a prefix inside another cluster's is refused");
    assert!(refused.to_string().contains("lie one inside the other"), "{refused}");
    // A sibling whose name starts the same is not inside.
    let sibling =
        Host::start(leaked_store(&dir, "s"), &endpoints, Layout::new("/shoalx"), host_options("s")).await.unwrap();
    // The other way round: a prefix holding a registered one.
    let holder = Host::start(leaked_store(&dir, "h"), &endpoints, Layout::new("/shoalx/a"), host_options("h")).await;
    assert!(holder.is_err());
    // The whole key space (a prefix of "/", trimmed to nothing) holds them all.
    let around = Host::start(leaked_store(&dir, "r"), &endpoints, Layout::new("/"), host_options("r")).await;
    assert!(around.is_err());
    sibling.stop().await;
    outer.stop().await;
}

/// A deposed writer's group that overflowed into a second etcd
/// transaction: every part gets `Deposed` (nothing was written; the host
/// retries at the next writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_overflowed_group_is_deposed_throughout() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new("/shoal/d").with_max_txn_ops(3);
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, "w");
    let replica = Replica::new(&s, layout.clone());
    while_following(&replica, &cluster, async {
        let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "w", 2).await.unwrap();
        let first = Transaction { base: 0, reads: vec![], changes: vec![put("/a", "1")] };
        let r = writer.commit_transaction(&replica, &first).await.unwrap();
        replica.wait_for_revision(r, Duration::from_secs(10)).await.unwrap();
        writer.stop_renewing();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let two = |p: &str| Transaction {
            base: r,
            reads: vec![],
            changes: vec![put(&format!("/{p}1"), "x"), Change::Put { path: format!("/{p}2"), value: b"y".to_vec() }],
        };
        let results = writer.commit_transactions(&replica, &[two("p"), two("q")]).await;
        eprintln!("{results:?}");
        assert!(matches!(results[0], Err(Error::Deposed)), "{results:?}");
        assert!(matches!(results[1], Err(Error::Deposed)), "never sent, by a deposed writer: {results:?}");
    })
    .await;
}

/// Clients that open the forwarding socket and stall mid-frame are let go
/// once a frame's time is up; a frame announced over the limit is refused
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_forwarding_client_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(leaked_store(&dir, "s"), &cluster.endpoints(), Layout::new("/shoal/s"), host_options("s"))
        .await
        .unwrap();
    until_writer(&host).await;
    let mut oversized = tokio::net::TcpStream::connect(host.forward_address()).await.unwrap();
    oversized.write_all(&(64u32 << 20).to_le_bytes()).await.unwrap();
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), oversized.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "a 64 MiB frame is refused at once: {closed:?}");
    let mut stalled = Vec::new();
    // As many as the socket holds at once (256); one more is closed at once.
    for _ in 0..256 {
        let mut s = tokio::net::TcpStream::connect(host.forward_address()).await.unwrap();
        // A header announcing 1 MiB, then two bytes of it.
        s.write_all(&(1u32 << 20).to_le_bytes()).await.unwrap();
        s.write_all(&[0, 0]).await.unwrap();
        stalled.push(s);
    }
    let mut extra = tokio::net::TcpStream::connect(host.forward_address()).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "a connection past the cap is closed: {closed:?}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut open = 0;
    for s in &mut stalled {
        let mut b = [0u8; 1];
        // Nothing to read and not closed: still held.
        if tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await.is_err() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 256 stalled connections still held by the writer after 12 s");
    // The host still takes transactions.
    write(&host, "/after", "stall").await;
    host.stop().await;
}

/// etcd refuses a request over its `--max-request-bytes` (1.5 MiB by
/// default) whatever its operations. A transaction over it is refused as too
/// large (nothing written, `E2BIG` through shoald), and two that fit alone
/// but not together commit in separate groups, not failing each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_over_etcds_request_limit_are_refused_or_split() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let store = leaked_store(&dir, "a");
    let host = Host::start(store, &cluster.endpoints(), Layout::new("/shoal/req"), host_options("a")).await.unwrap();
    until_writer(&host).await;
    let value = vec![b'v'; 60 << 10]; // under the blob threshold: goes to etcd as it is
    let txn_of = |prefix: &str, count: usize| {
        let mut txn = store.begin();
        for i in 0..count {
            txn.put(&format!("/{prefix}/{i}"), &value).unwrap();
        }
        txn
    };
    // 30 values of 60 KiB: 1.8 MiB in one request.
    let refused = host.commit_local(txn_of("big", 30)).await;
    assert!(matches!(refused, Err(Error::TooLarge(_))), "{:?}", refused.map(|s| s.version()));
    assert!(!store.snapshot().exists("/big").unwrap());
    // 15 of them each (900 KiB), together over the limit.
    let (one, two) = tokio::join!(host.commit_local(txn_of("one", 15)), host.commit_local(txn_of("two", 15)));
    let (one, two) = (one.map(|s| s.version()), two.map(|s| s.version()));
    host.stop().await;
    assert!(one.is_ok() && two.is_ok(), "{one:?} {two:?}");
}
