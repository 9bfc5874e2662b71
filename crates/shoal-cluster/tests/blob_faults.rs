//! Blobs under faults, found by review: a refused commit holds nothing, a
//! committing host keeps its bytes until its replica applied them, a
//! replica that was away while a blob was replaced catches up by loading
//! the newest tree, `Host::commit` refers to blobs as `commit_local`
//! does, and a replica fetches blobs one at a time, keeping what it fetched
//! across a failed load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ask_blob, client, framed, leaked_store_taking, noise, varint};
use shoal_cluster::{BlobRef, Change, Holder, Host, HostOptions, Layout, Transaction};
use shoal_testkit::etcd::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PREFIX: &str = "/shoal/blobfaults";
const STORE_MAX: usize = 16 << 20;
const MAGIC: &[u8] = b"\0shoal-blob\0";

fn layout() -> Layout {
    Layout::new(PREFIX).with_max_value_bytes(STORE_MAX)
}

/// Host `name` over a new store that takes values up to `STORE_MAX`.
async fn start(
    cluster: &EtcdCluster,
    dir: &tempfile::TempDir,
    name: &str,
    layout: Layout,
    commit_timeout: Duration,
) -> Result<Host, shoal_cluster::Error> {
    let store = leaked_store_taking(dir, name, STORE_MAX);
    Host::start(store, &cluster.endpoints(), layout, options(name, commit_timeout)).await
}

fn options(name: &str, commit_timeout: Duration) -> HostOptions {
    let mut o = HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
    o.commit_timeout = commit_timeout;
    o
}

async fn put(host: &Host, path: &str, value: &[u8]) -> Result<i64, shoal_cluster::Error> {
    let mut txn = host.replica().store().begin();
    txn.put(path, value).unwrap();
    let snapshot = host.commit_local(txn).await?;
    Ok(shoal_cluster::revision_of(&snapshot, host.replica().layout()).unwrap())
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A commit refused for a value over the cluster's limit holds none of its
/// other values' bytes: nothing serves bytes that were never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_holds_no_blob() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    // The cluster takes values up to 1 MiB; the store up to 16 MiB.
    let layout = Layout::new(PREFIX).with_max_value_bytes(1 << 20);
    let a = start(&cluster, &dir, "a", layout, Duration::from_secs(10)).await.unwrap();
    let small_blob = noise(100_000, 1);
    let mut txn = a.replica().store().begin();
    txn.put("/a", &small_blob).unwrap();
    txn.put("/b", noise(2 << 20, 2)).unwrap();
    let refused = a.commit_local(txn).await;
    assert!(matches!(refused, Err(shoal_cluster::Error::TooLarge(_))), "{refused:?}");
    let served = ask_blob(&a.forward_address().to_string(), hash(&small_blob).as_bytes()).await.1;
    a.stop().await;
    assert!(served.is_none(), "the bytes of a refused commit's value are still held and served");
}

/// A commit whose host's replica is slower than `commit_timeout` (behind a
/// slow holder's blob) is in etcd: the host keeps the bytes until its
/// replica applied it, and a host that joins later gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_keeps_a_commits_bytes_until_its_replica_applied_it() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let a = start(&cluster, &dir, "a", layout(), Duration::from_secs(3)).await.unwrap();
    put(&a, "/first", b"1").await.unwrap();

    // An earlier blob whose holder is slow (8 s): the replica is behind
    // for that long, as behind a large value from a busy host.
    let slow = noise(100_000, 3);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_address = listener.local_addr().unwrap().to_string();
    let served = slow.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bytes = served.clone();
            tokio::spawn(async move {
                let mut header = [0u8; 4];
                let _ = s.read_exact(&mut header).await;
                let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
                let _ = s.read_exact(&mut body).await;
                tokio::time::sleep(Duration::from_secs(8)).await;
                let mut reply = vec![7u8];
                varint(bytes.len() as u64, &mut reply);
                let _ = s.write_all(&framed(&reply)).await;
                let _ = s.write_all(&bytes).await;
            });
        }
    });
    let reference = BlobRef {
        hash: hash(&slow),
        size: slow.len() as u64,
        holders: vec![Holder { host: "busy".into(), address: slow_address }],
    };
    let mut observer = client(&cluster).await;
    observer.put(format!("{PREFIX}/slow"), reference.encode(), None).await.unwrap();

    // The commit lands in etcd; the replica is still behind when
    // `commit_timeout` ends; the bytes are released.
    let big = noise(200_000, 4);
    let outcome = put(&a, "/x", &big).await;
    eprintln!("commit_local: {outcome:?}");
    let kv = observer.get(format!("{PREFIX}/x"), None).await.unwrap();
    let committed = kv.kvs().first().map(|kv| kv.mod_revision()).expect("the commit is in etcd");

    // Long after the slow holder answered, the replica has not applied it.
    let mut applied = a.replica().applied_revision();
    for _ in 0..200 {
        if applied.is_some_and(|r| r >= committed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        applied = a.replica().applied_revision();
    }
    eprintln!("committed at {committed}, applied {applied:?}");
    // Nor can another host join.
    // (Its load waits for the slow holder too: it is given the time.)
    let b = start(&cluster, &dir, "b", layout(), Duration::from_secs(20)).await;
    eprintln!("host b: {:?}", b.as_ref().err());
    a.stop().await;
    assert!(applied.is_some_and(|r| r >= committed), "revision {committed} is never applied: its bytes are lost");
    assert!(b.is_ok(), "no host can join any more");
}

/// A replica that was down while a blob's value was replaced (no host holds
/// the old bytes any more) catches up by loading the newest tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_away_while_a_blob_was_replaced_catches_up() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let a = start(&cluster, &dir, "a", layout(), Duration::from_secs(10)).await.unwrap();
    let c_store = leaked_store_taking(&dir, "c", STORE_MAX);
    let c = Host::start(c_store, &cluster.endpoints(), layout(), options("c", Duration::from_secs(10))).await.unwrap();
    put(&a, "/first", b"1").await.unwrap();
    c.stop().await;
    drop(c);

    let big = noise(200_000, 5);
    let r1 = put(&a, "/x", &big).await.unwrap();
    let r2 = put(&a, "/x", b"small").await.unwrap();
    // What a serves for the blob now: the node's new bytes.
    let served = ask_blob(&a.forward_address().to_string(), hash(&big).as_bytes()).await.1;
    eprintln!("a serves {:?} bytes for the old blob", served.as_ref().map(Vec::len));

    let c = Host::start(c_store, &cluster.endpoints(), layout(), options("c", Duration::from_secs(5))).await;
    eprintln!("c restarted: {:?}", c.as_ref().err());
    let applied = shoal_cluster::revision_of(&c_store.snapshot(), &layout());
    eprintln!("r1 {r1}, r2 {r2}, c applied {applied:?}");
    a.stop().await;
    assert!(applied.is_some_and(|r| r >= r2), "c is stuck before {r1} for good: no host gives the replaced blob");
}

/// `Host::commit` turns values into references as `commit_local` does: a
/// value that starts like a reference is stored as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_commit_refers_to_blobs_too() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let a = start(&cluster, &dir, "a", layout(), Duration::from_secs(10)).await.unwrap();
    let value = [MAGIC, b"{}"].concat();
    let base = a.replica().applied_revision().unwrap();
    let txn =
        Transaction { base, reads: vec![], changes: vec![Change::Put { path: "/l".into(), value: value.clone() }] };
    let r = a.commit(&txn).await.unwrap();
    let snapshot = a.replica().wait_for_revision(r, Duration::from_secs(10)).await.unwrap();
    let stored = snapshot.get("/l").unwrap().map(<[u8]>::to_vec);
    a.stop().await;
    assert_eq!(stored, Some(value), "the replica stored another value than the one committed");
}

/// A holder that counts its requests, refuses while `refuse` is set, and
/// records, for each blob it serves, how many blobs the fetching store had
/// staged by then.
struct CountingHolder {
    address: String,
    asked: Arc<AtomicUsize>,
    staged_when_served: Arc<Mutex<Vec<usize>>>,
    refuse: Arc<AtomicBool>,
}

const SERVE_BYTES: usize = 100_000;

async fn counting_holder(bytes: Vec<u8>, fetcher: &'static shoal::Store) -> CountingHolder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let holder = CountingHolder {
        address: listener.local_addr().unwrap().to_string(),
        asked: Arc::default(),
        staged_when_served: Arc::default(),
        refuse: Arc::default(),
    };
    let (asked, staged, refuse) = (holder.asked.clone(), holder.staged_when_served.clone(), holder.refuse.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut header = [0u8; 4];
            let _ = s.read_exact(&mut header).await;
            let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
            let _ = s.read_exact(&mut body).await;
            asked.fetch_add(1, Ordering::SeqCst);
            if refuse.load(Ordering::SeqCst) {
                let _ = s.write_all(&framed(&[8u8])).await; // NoBlob
                continue;
            }
            let snapshot = fetcher.snapshot();
            staged.lock().unwrap().push(snapshot.list(&layout().staged_root()).map_or(0, |c| c.len()));
            let mut reply = vec![7u8]; // BlobFollows
            varint(bytes.len() as u64, &mut reply);
            let _ = s.write_all(&framed(&reply)).await;
            let _ = s.write_all(&bytes).await;
        }
    });
    holder
}

fn reference_to(bytes: &[u8], holder: &CountingHolder) -> Vec<u8> {
    let holders = vec![Holder { host: "away".into(), address: holder.address.clone() }];
    BlobRef { hash: hash(bytes), size: bytes.len() as u64, holders }.encode()
}

/// A replica loading a tree of blobs fetches them one at a time, each into
/// the store before the next (never every blob in memory at once); a fetch
/// that fails keeps the ones before it, so the next attempt fetches only
/// the rest. A revision with a few blobs is applied as one version, and no
/// staged bytes stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_fetched_one_at_a_time_and_kept_across_a_failed_load() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let store = leaked_store_taking(&dir, "r", STORE_MAX);
    // (`noise` sets a seed's lowest bit: odd seeds differ.)
    let values: Vec<Vec<u8>> = (0..4).map(|i| noise(SERVE_BYTES, 101 + 2 * i)).collect();
    let mut holders = Vec::new();
    for value in &values {
        holders.push(counting_holder(value.clone(), store).await);
    }
    holders[2].refuse.store(true, Ordering::SeqCst);
    let mut observer = client(&cluster).await;
    for (i, (value, holder)) in values.iter().zip(&holders).enumerate() {
        observer.put(format!("{PREFIX}/load/{i}"), reference_to(value, holder), None).await.unwrap();
    }

    // The third blob is refused: joining fails, the first two are staged,
    // the tree is not loaded.
    let refused = Host::start(store, &cluster.endpoints(), layout(), options("r", Duration::from_secs(3))).await;
    assert!(refused.err().expect("joined without a blob").to_string().contains("is unavailable"));
    let snapshot = store.snapshot();
    let staged = snapshot.list(&layout().staged_root()).unwrap();
    assert_eq!(staged.len(), 2, "{staged:?}");
    assert!(staged.contains(&hash(&values[0])) && staged.contains(&hash(&values[1])));
    assert!(!snapshot.exists("/load").unwrap(), "a version holds part of the tree");
    assert!(shoal_cluster::revision_of(&snapshot, &layout()).is_none());

    holders[2].refuse.store(false, Ordering::SeqCst);
    let host = Host::start(store, &cluster.endpoints(), layout(), options("r", Duration::from_secs(20))).await.unwrap();
    let snapshot = store.snapshot();
    for (i, value) in values.iter().enumerate() {
        assert!(snapshot.get(&format!("/load/{i}")).unwrap() == Some(&value[..]), "/load/{i} is not its bytes");
    }
    assert!(!snapshot.exists(&layout().staged_root()).unwrap(), "staged bytes stay behind");
    // Blobs fetched before the failure were not fetched again; each was in
    // the store before the next was asked for.
    let asked: Vec<usize> = holders.iter().map(|h| h.asked.load(Ordering::SeqCst)).collect();
    assert_eq!((asked[0], asked[1], asked[3]), (1, 1, 1), "{asked:?}");
    assert!(asked[2] >= 2, "{asked:?}");
    let staged_when_served: Vec<Vec<usize>> =
        holders.iter().map(|h| h.staged_when_served.lock().unwrap().clone()).collect();
    assert_eq!(staged_when_served, vec![vec![0], vec![1], vec![2], vec![3]]);

    // One revision with two blobs (far under the 64 MiB a replica holds in
    // memory to apply one): one version, nothing staged; the same bytes
    // under another path are taken from the store, not fetched again.
    let more: Vec<Vec<u8>> = (0..2).map(|i| noise(SERVE_BYTES, 201 + 2 * i)).collect();
    let mut more_holders = Vec::new();
    for value in &more {
        more_holders.push(counting_holder(value.clone(), store).await);
    }
    let puts = vec![
        etcd_client::TxnOp::put(format!("{PREFIX}/more/0"), reference_to(&more[0], &more_holders[0]), None),
        etcd_client::TxnOp::put(format!("{PREFIX}/more/1"), reference_to(&more[1], &more_holders[1]), None),
        etcd_client::TxnOp::put(format!("{PREFIX}/more/again"), reference_to(&values[3], &holders[3]), None),
    ];
    let before = store.snapshot().version();
    let reply = observer.txn(etcd_client::Txn::new().and_then(puts)).await.unwrap();
    let revision = reply.header().unwrap().revision();
    let snapshot = host.replica().wait_for_revision(revision, Duration::from_secs(20)).await.unwrap();
    host.stop().await;
    assert!(snapshot.get("/more/0").unwrap() == Some(&more[0][..]));
    assert!(snapshot.get("/more/1").unwrap() == Some(&more[1][..]));
    assert!(snapshot.get("/more/again").unwrap() == Some(&values[3][..]));
    assert!(!snapshot.exists(&layout().staged_root()).unwrap(), "staged bytes stay behind");
    let staged_when_served: Vec<Vec<usize>> =
        more_holders.iter().map(|h| h.staged_when_served.lock().unwrap().clone()).collect();
    assert_eq!(staged_when_served, vec![vec![0], vec![0]]);
    assert_eq!(snapshot.version(), before + 1, "a revision of two blobs took more than one version");
    assert_eq!(holders[3].asked.load(Ordering::SeqCst), 1, "bytes the store held were fetched again");
}

/// The blobs of one revision a replica holds in memory: 64 MiB. Just below
/// and at it, the revision is one version; just above, the blob that does
/// not fit is staged first, in a version of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_holds_up_to_64_mib_of_blobs_in_memory() {
    const LIMIT: usize = 64 << 20;
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let store = leaked_store_taking(&dir, "r", STORE_MAX);
    let host = Host::start(store, &cluster.endpoints(), layout(), options("r", Duration::from_secs(30))).await.unwrap();
    let quarter = noise(LIMIT / 4, 301);
    let short_quarter = noise(LIMIT / 4 - 1, 303);
    let one_byte = vec![7u8];
    let mut holders = Vec::new();
    for value in [&quarter, &short_quarter, &one_byte] {
        holders.push(counting_holder(value.clone(), store).await);
    }
    let mut observer = client(&cluster).await;
    // Versions one revision of these blobs takes on the replica.
    let mut versions_for = async |name: &str, blobs: &[usize]| {
        let values = [&quarter, &short_quarter, &one_byte];
        let puts: Vec<_> = blobs
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let key = format!("{PREFIX}/held/{name}/{i}");
                etcd_client::TxnOp::put(key, reference_to(values[b], &holders[b]), None)
            })
            .collect();
        let before = store.snapshot().version();
        let reply = observer.txn(etcd_client::Txn::new().and_then(puts)).await.unwrap();
        let revision = reply.header().unwrap().revision();
        let snapshot = host.replica().wait_for_revision(revision, Duration::from_secs(60)).await.unwrap();
        for (i, &b) in blobs.iter().enumerate() {
            assert!(snapshot.get(&format!("/held/{name}/{i}")).unwrap() == Some(&values[b][..]), "{name}/{i}");
        }
        assert!(!snapshot.exists(&layout().staged_root()).unwrap(), "staged bytes stay behind");
        snapshot.version() - before
    };
    assert_eq!(versions_for("below", &[0, 0, 0, 1]).await, 1, "64 MiB - 1 byte of blobs");
    assert_eq!(versions_for("at", &[0, 0, 0, 0]).await, 1, "64 MiB of blobs");
    assert_eq!(versions_for("above", &[0, 0, 0, 0, 2]).await, 2, "64 MiB + 1 byte of blobs");
    host.stop().await;
}
