//! A commit whose etcd reply is lost (etcd committed it, the writer saw a
//! transport error): the writer no longer knows the newest revision, so
//! the next transaction is checked only after asking etcd where it stands,
//! and one that read what the lost commit changed is refused.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, store};
use shoal_cluster::{Change, Error, Layout, Read, Replica, Transaction, Writer};
use shoal_testkit::etcd::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PREFIX: &str = "/shoal/lost";

/// A TCP proxy to `upstream`; `freeze()` makes every connection open now
/// drop what etcd sends back (requests still reach etcd), as a member that
/// commits and dies before it answers. Later connections pass normally.
struct Proxy {
    address: SocketAddr,
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (fb, nx) = (frozen_below.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let (down, _) = listener.accept().await.unwrap();
                let id = nx.fetch_add(1, Ordering::SeqCst);
                let up = TcpStream::connect(&upstream).await.unwrap();
                let fb = fb.clone();
                tokio::spawn(async move {
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let a = tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            match dr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if uw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = uw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 65536];
                    loop {
                        match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if id < fb.load(Ordering::SeqCst) {
                                    continue; // dropped: the answer never arrives
                                }
                                if dw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    a.abort();
                });
            }
        });
        Proxy { address, frozen_below, next }
    }

    fn freeze(&self) {
        self.frozen_below.store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

fn increment(replica: &Replica<'_>) -> Transaction {
    let store = replica.store();
    let mut txn = store.begin();
    let value: u64 = txn.get("/c").unwrap().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
    txn.put("/c", (value + 1).to_string()).unwrap();
    let intent = txn.into_intent();
    let base = store.snapshot_at(intent.base_version).unwrap();
    let txn = Transaction::from_intent(&intent, &base, replica.layout()).unwrap();
    assert!(txn.reads.contains(&Read::Value("/c".into())));
    txn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_etcd_reply_the_next_check_is_against_the_newest_tree() {
    run(true).await
}

/// The same with the watch left to itself, as in `Host`: it breaks with
/// the connection and re-watches after its back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_etcd_reply_with_the_watch_sharing_the_connection() {
    run(false).await
}

async fn run(stop_watch: bool) {
    let cluster = EtcdCluster::start(1);
    let upstream = cluster.endpoints()[0].trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream).await;
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let s: &'static shoal::Store = Box::leak(Box::new(store(&dir, "w")));
    let replica: &'static Replica<'static> = Box::leak(Box::new(Replica::new(s, layout.clone())));

    // As in `Host`: the writer and the replica's watch share one client
    // (one connection to one etcd member).
    let shared = shoal_cluster::connect(&[format!("http://{}", proxy.address)]).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut follow_client = shared.clone();
    let follower = tokio::spawn(async move { replica.follow(&mut follow_client, stopped).await });
    replica.sync(&mut client(&cluster).await, Duration::from_secs(10)).await.unwrap();
    let mut writer = Writer::elect(shared.clone(), layout.clone(), "w", 20).await.unwrap();

    let seed =
        Transaction { base: 0, reads: vec![], changes: vec![Change::Put { path: "/c".into(), value: b"5".to_vec() }] };
    let r1 = writer.commit_transaction(replica, &seed).await.unwrap();
    replica.wait_for_revision(r1, Duration::from_secs(10)).await.unwrap();

    // Two increments read at the same version (/c = 5).
    let a = increment(replica);
    let b = increment(replica);

    // The watch is down while the connection is (in `Host` it re-watches
    // after RETRY_FIRST, 50 ms, or longer): stop it here to make the
    // window deterministic.
    if stop_watch {
        stop.send(true).unwrap();
        follower.await.unwrap().unwrap();
    }

    // A reaches etcd, its reply is lost.
    proxy.freeze();
    let ra = writer.commit_transaction(replica, &a).await;
    eprintln!("A: {ra:?}");
    assert!(matches!(ra, Err(Error::Indeterminate(_))), "{ra:?}");

    // B read /c = 5 as A did: it must be refused.
    let mut rb = writer.commit_transaction(replica, &b).await;
    for _ in 0..20 {
        // A transport error while the channel reconnects: nothing sent; again.
        if !matches!(rb, Err(Error::Indeterminate(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rb = writer.commit_transaction(replica, &b).await;
    }
    eprintln!("B: {rb:?}");
    let mut observer = client(&cluster).await;
    let kv = observer.get(format!("{PREFIX}/c"), None).await.unwrap();
    let kv = &kv.kvs()[0];
    eprintln!("etcd /c = {:?}, version {}, mod {}", kv.value_str(), kv.version(), kv.mod_revision());
    // Version 3 means seed, A and B all put /c: A and B both read 5.
    assert!(
        rb.is_err(),
        "B committed at {rb:?} after reading /c = 5, though A had already set /c = 6 (etcd key version {}): \
         a lost update",
        kv.version()
    );
}
