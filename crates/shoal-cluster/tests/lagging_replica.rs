//! A host whose replica lags behind etcd: a conflict it reports comes once
//! its replica holds a newer revision than the transaction's base, so that
//! the retry a client makes at once (shoald retries a write up to 64
//! times) reads the change it conflicted with instead of conflicting again.

mod common;

use std::time::{Duration, Instant};

use common::{host_options, leaked_store};
use shoal_cluster::{Error, Host, Layout};
use shoal_testkit::etcd::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFIX: &str = "/shoal/lagging";

/// How late what etcd sends reaches the lagging host.
const LAG: Duration = Duration::from_millis(400);

/// A TCP proxy to `upstream` that hands on what etcd sends `lag` late (in
/// order); what the host sends passes at once.
async fn lagging_proxy(upstream: String, lag: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            let Ok(up) = TcpStream::connect(&upstream).await else { continue };
            let (mut down_read, mut down_write) = down.into_split();
            let (mut up_read, mut up_write) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
                let _ = up_write.shutdown().await;
            });
            let (late, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = up_read.read(&mut buf).await {
                    if late.send((Instant::now() + lag, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((at, bytes)) = due.recv().await {
                    tokio::time::sleep_until(at.into()).await;
                    if down_write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// Reads `/counter` on `host`'s replica and commits it plus one, on that
/// host; the number of attempts it took.
async fn increment(host: &Host) -> usize {
    let store = host.replica().store();
    for attempt in 1..=64 {
        let mut txn = store.begin();
        let value: u64 = txn.get("/counter").unwrap().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        txn.put("/counter", (value + 1).to_string()).unwrap();
        match host.commit_local(txn).await {
            Ok(_) => return attempt,
            Err(Error::Conflict { .. }) => continue,
            Err(e) => panic!("attempt {attempt}: {e}"),
        }
    }
    panic!("64 conflicts in a row");
}

fn counter(host: &Host) -> u64 {
    let snapshot = host.replica().store().snapshot();
    std::str::from_utf8(snapshot.get("/counter").unwrap().unwrap()).unwrap().parse().unwrap()
}

/// A writer on a direct connection to etcd, and a host that hears from
/// etcd `lag` late (its commits go to the writer over the forwarding
/// socket, at once), which has committed once (so it knows the writer).
async fn writer_and_lagging_host(cluster: &EtcdCluster, dir: &tempfile::TempDir, lag: Duration) -> (Host, Host) {
    let layout = Layout::new(PREFIX);
    let endpoints = cluster.endpoints();
    let writer =
        Host::start(leaked_store(dir, "writer"), &endpoints, layout.clone(), host_options("writer")).await.unwrap();
    let start = Instant::now();
    while !writer.is_writer().await {
        assert!(start.elapsed() < Duration::from_secs(15), "not elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(increment(&writer).await, 1);
    let upstream = endpoints[0].trim_start_matches("http://").to_string();
    let lagging_endpoint = lagging_proxy(upstream, lag).await;
    // A lease that outlasts keep-alive answers `lag` late.
    let mut options = host_options("lagging");
    options.lease_ttl_secs = 20;
    let lagging = Host::start(leaked_store(dir, "lagging"), &[lagging_endpoint], layout, options).await.unwrap();
    assert!(increment(&lagging).await >= 1);
    assert_eq!(counter(&lagging), 2);
    (writer, lagging)
}

/// A transaction on `host`'s newest version that reads and writes
/// `/counter`, and the revision it is based on.
fn stale_increment(host: &Host) -> (shoal::Transaction<'static>, i64) {
    let store = host.replica().store();
    let mut txn = store.begin();
    let read: u64 = txn.get("/counter").unwrap().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
    txn.put("/counter", (read + 1).to_string()).unwrap();
    let base = shoal_cluster::revision_of(txn.base(), host.replica().layout()).unwrap();
    (txn, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_a_lagging_replica_is_reported_once_the_replica_holds_a_newer_revision() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let (writer, lagging) = writer_and_lagging_host(&cluster, &dir, LAG).await;
    for round in 0..3 {
        // A transaction on the lagging host's newest version...
        let (txn, base) = stale_increment(&lagging);
        // ...which the writer's commit makes stale.
        assert_eq!(increment(&writer).await, 1, "round {round}");
        let asked = Instant::now();
        match lagging.commit_local(txn).await {
            Err(Error::Conflict { base: reported, .. }) => assert_eq!(reported, base, "round {round}"),
            other => panic!("round {round}: {other:?}, not a conflict"),
        }
        let applied = lagging.replica().applied_revision().unwrap();
        assert!(
            applied > base,
            "round {round}: the conflict came {:?} after the commit, with the replica still at the base {base} \
             (applied {applied}): a retry now would conflict again",
            asked.elapsed()
        );
        // The retry made at once reads the writer's change and commits.
        assert_eq!(increment(&lagging).await, 1, "round {round}");
    }
    let expected = 2 + 3 * 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&lagging) != expected || counter(&writer) != expected {
        assert!(Instant::now() < deadline, "counter {} / {}, not {expected}", counter(&lagging), counter(&writer));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lagging.stop().await;
    writer.stop().await;
}

/// The wait is bounded: with the replica 1.7 s behind (under the etcd
/// client's 2 s keep-alive timeout), the conflict comes after about a
/// second, with the replica still at the base; without the bound it would
/// come once the replica had moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_waits_for_a_lagging_replica_a_second_at_most() {
    const LONG_LAG: Duration = Duration::from_millis(1700);
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let (writer, lagging) = writer_and_lagging_host(&cluster, &dir, LONG_LAG).await;
    let (txn, base) = stale_increment(&lagging);
    assert_eq!(increment(&writer).await, 1);
    let asked = Instant::now();
    match lagging.commit_local(txn).await {
        Err(Error::Conflict { base: reported, .. }) => assert_eq!(reported, base),
        other => panic!("{other:?}, not a conflict"),
    }
    let took = asked.elapsed();
    assert_eq!(
        lagging.replica().applied_revision().unwrap(),
        base,
        "the conflict came after {took:?}, once the replica had moved on: the wait is not bounded (or the lag is too short to show it)"
    );
    assert!(took >= Duration::from_millis(900), "the conflict came after {took:?}, without waiting for the replica");
    assert!(took < LONG_LAG, "the conflict waited {took:?}, past its bound of 1 s");
    lagging.stop().await;
    writer.stop().await;
}
