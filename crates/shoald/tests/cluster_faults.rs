//! shoald's cluster mode under faults: a write load runs through three
//! shoald hosts on a 3-member etcd cluster and records every operation,
//! while etcd members die, the writing shoald is SIGKILLed, a replica is
//! SIGKILLed and restarted, or restarted after etcd compacted past it.
//! After each:
//! - the writes and reads (reads straight from etcd) form a linearizable
//!   history of registers (`shoal_testkit::history`): no acknowledged
//!   write is lost, none is seen out of order;
//! - the counter incremented in xenstore transactions on every host holds
//!   every acknowledged increment, and no two acknowledged increments read
//!   the same value (they were serializable);
//! - no two hosts showed different trees for one revision, and each showed
//!   revisions in order;
//! - a shoal watch on each host's store, followed across the daemon's
//!   restarts, reported every change: its copy of the subtree is the tree.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{check_versions_agree, follow_store, host_args, revision, tree, Seen};
use common::{nul, Client, Shoald};
use shoal_testkit::etcd::EtcdCluster;
use shoal_testkit::history::{History, Kind, Op};
use shoald::wire::MsgType;

const PREFIX: &str = "/faults";
const KEYS: usize = 5;
const WORKERS_PER_HOST: usize = 2;

/// One test at a time: each runs 3 etcd members and 3 daemons.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Host {
    name: String,
    args: Vec<String>,
    /// `None` while it is down.
    daemon: Option<Shoald>,
    /// Its directory while it is down.
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    store: PathBuf,
}

impl Host {
    fn start(cluster: &EtcdCluster, name: &str) -> Host {
        let args = host_args(cluster, PREFIX, name);
        let daemon = Shoald::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let socket = daemon.socket.clone();
        let store = daemon.dir.path().join("store");
        Host { name: name.to_string(), args, daemon: Some(daemon), dir: None, socket, store }
    }

    fn kill(&mut self) {
        let daemon = self.daemon.take().expect("running");
        self.dir = Some(daemon.stop(9));
    }

    fn restart(&mut self) {
        let dir = self.dir.take().expect("stopped");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(Shoald::start_in(dir, &args));
    }
}

/// The load's record.
#[derive(Default)]
struct Record {
    history: History,
    /// The values acknowledged increments read.
    increments_read: Mutex<Vec<u64>>,
    /// Increments whose outcome is unknown.
    increments_unknown: AtomicUsize,
    writes_acknowledged: AtomicUsize,
}

fn key(i: usize) -> String {
    format!("/k/k{i}")
}

/// One worker on one host: writes of unique values and counter increments
/// in transactions, until `stop`. Reconnects while its host is down.
fn worker(socket: PathBuf, id: String, record: Arc<Record>, stop: Arc<AtomicBool>) {
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    let mut rng = rand_seed(&id);
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            client = Client::try_connect(&socket);
            if client.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        seq += 1;
        let lost = if !next(&mut rng).is_multiple_of(4) {
            let path = key((next(&mut rng) % KEYS as u64) as usize);
            let value = format!("{id}-{seq}");
            let mut payload = nul(&path);
            payload.extend_from_slice(value.as_bytes());
            let invoked = Instant::now();
            let reply = c.try_request(MsgType::Write, 0, &payload);
            let returned = Instant::now();
            let outcome = match &reply {
                Some(r) if !r.is_error() => Some(Some(returned)),
                Some(r) if r.text() == "EIO" => Some(None),
                Some(r) if r.text() == "EAGAIN" => None,
                Some(r) => panic!("WRITE {path}: {}", r.text()),
                None => Some(None),
            };
            if let Some(returned) = outcome {
                if returned.is_some() {
                    record.writes_acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                record.history.record(Op { key: path, kind: Kind::Write(value), invoked, returned });
            }
            reply.is_none()
        } else {
            !increment(c, &record)
        };
        if lost {
            client = None;
        }
    }
}

/// Increments `/counter` in a transaction (again on EAGAIN); `false` if
/// the connection was lost.
fn increment(c: &mut Client, record: &Record) -> bool {
    loop {
        let Some(start) = c.try_request(MsgType::TransactionStart, 0, b"\0") else { return false };
        let tx: u32 = start.text().parse().unwrap_or_else(|_| panic!("TRANSACTION_START: {}", start.text()));
        let Some(read) = c.try_request(MsgType::Read, tx, &nul("/counter")) else { return false };
        let value: u64 = match read.result() {
            Ok(v) => String::from_utf8(v).unwrap().parse().unwrap(),
            Err(e) if e == "ENOENT" => 0,
            Err(e) => panic!("READ /counter: {e}"),
        };
        let mut payload = nul("/counter");
        payload.extend_from_slice((value + 1).to_string().as_bytes());
        let Some(write) = c.try_request(MsgType::Write, tx, &payload) else { return false };
        assert!(!write.is_error(), "WRITE in a transaction: {}", write.text());
        match c.try_request(MsgType::TransactionEnd, tx, b"T\0") {
            Some(end) if !end.is_error() => {
                record.increments_read.lock().unwrap().push(value);
                return true;
            }
            Some(end) if end.text() == "EAGAIN" => continue,
            Some(end) if end.text() == "EIO" => {
                record.increments_unknown.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Some(end) => panic!("TRANSACTION_END: {}", end.text()),
            None => {
                record.increments_unknown.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
    }
}

fn rand_seed(id: &str) -> u64 {
    id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

/// Reads keys straight from etcd (linearizable reads) until `stop`.
fn etcd_reader(endpoints: Vec<String>, record: Arc<Record>, stop: Arc<AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = shoal_cluster::connect(&endpoints).await.unwrap();
        let mut rng = 7u64;
        while !stop.load(Ordering::Relaxed) {
            let path = key((next(&mut rng) % KEYS as u64) as usize);
            let invoked = Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(5), client.get(format!("{PREFIX}{path}"), None)).await;
            if let Ok(Ok(reply)) = got {
                let value = reply.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                record.history.record(Op {
                    key: path,
                    kind: Kind::Read(value),
                    invoked,
                    returned: Some(Instant::now()),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Every key below the prefix in etcd, as paths.
fn etcd_tree(endpoints: &[String]) -> BTreeMap<String, Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = shoal_cluster::connect(endpoints).await.unwrap();
        let options = etcd_client::GetOptions::new().with_prefix();
        let reply = client.get(format!("{PREFIX}/"), Some(options)).await.unwrap();
        reply
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key()[PREFIX.len()..]).into_owned(), kv.value().to_vec()))
            .filter(|(p, _)| !p.starts_with("/.shoald/cluster"))
            .collect()
    })
}

/// Runs the load on three hosts while `fault` acts on them, then checks
/// everything the module's doc lists.
fn run_with_fault(fault: impl FnOnce(&mut EtcdCluster, &mut [Host])) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut etcd = EtcdCluster::start(3);
    let mut hosts: Vec<Host> = ["h1", "h2", "h3"].iter().map(|n| Host::start(&etcd, n)).collect();
    let record = Arc::new(Record::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = hosts.iter().map(|h| follow_store(h.store.clone(), "/k", stop_readers.clone())).collect();
    let mut threads = Vec::new();
    for host in &hosts {
        for w in 0..WORKERS_PER_HOST {
            let (socket, id) = (host.socket.clone(), format!("{}w{w}", host.name));
            let (record, stop) = (record.clone(), stop.clone());
            threads.push(std::thread::spawn(move || worker(socket, id, record, stop)));
        }
    }
    let (endpoints, r, s) = (etcd.endpoints(), record.clone(), stop.clone());
    threads.push(std::thread::spawn(move || etcd_reader(endpoints, r, s)));

    std::thread::sleep(Duration::from_millis(1500));
    fault(&mut etcd, &mut hosts);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    for host in hosts.iter_mut().filter(|h| h.daemon.is_none()) {
        host.restart();
    }

    // Every host catches up with etcd. (Each replica holds `/.shoald`, the
    // parent of its own state, which no key stands for.)
    let mut expected = etcd_tree(&etcd.endpoints());
    expected.entry("/.shoald".into()).or_default();
    let newest = etcd.revision();
    for host in &hosts {
        let reader = shoal::Reader::open(&host.store).unwrap();
        let start = Instant::now();
        while reader.snapshot().ok().and_then(|s| revision(&s)).is_none_or(|r| r < newest) {
            assert!(start.elapsed() < Duration::from_secs(20), "{} never caught up", host.name);
            // A revision after the last tree change is held only once
            // something else changes: compare trees instead.
            if reader.snapshot().map(|s| tree(&s)).ok().as_ref() == Some(&expected) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(tree(&reader.snapshot().unwrap()), expected, "{} holds another tree", host.name);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop_readers.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = followers.into_iter().map(|f| f.join().unwrap()).collect();

    // The final value of every key, read from etcd, ends the history.
    for i in 0..KEYS {
        let path = key(i);
        let value = expected.get(&path).map(|v| String::from_utf8_lossy(v).into_owned());
        let at = Instant::now();
        record.history.record(Op { key: path, kind: Kind::Read(value), invoked: at, returned: Some(at) });
    }
    let acknowledged = record.writes_acknowledged.load(Ordering::Relaxed);
    assert!(acknowledged > 50, "only {acknowledged} writes acknowledged: the load did not run");
    record.history.check().unwrap_or_else(|violation| panic!("not linearizable: {violation}"));

    let read = record.increments_read.lock().unwrap().clone();
    let unknown = record.increments_unknown.load(Ordering::Relaxed);
    let counter: usize = expected.get("/counter").map_or(0, |v| String::from_utf8_lossy(v).parse().unwrap());
    assert!(
        read.len() <= counter && counter <= read.len() + unknown,
        "{} increments acknowledged, {unknown} unknown, and the counter holds {counter}",
        read.len()
    );
    let distinct: HashSet<u64> = read.iter().copied().collect();
    assert_eq!(distinct.len(), read.len(), "two acknowledged increments read the same value");

    check_versions_agree(&seen.iter().collect::<Vec<_>>());
    let subtree: BTreeMap<String, Vec<u8>> =
        expected.iter().filter(|(p, _)| p.starts_with("/k")).map(|(p, v)| (p.clone(), v.clone())).collect();
    for (host, seen) in hosts.iter().zip(&seen) {
        assert_eq!(seen.watched, subtree, "a watch on {} missed a change", host.name);
    }
}

/// The host elected as the cluster's writer.
fn writer(etcd: &EtcdCluster) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = shoal_cluster::connect(&etcd.endpoints()).await.unwrap();
        let layout = shoal_cluster::Layout::new(PREFIX);
        shoal_cluster::current_writer(&mut client, &layout).await.unwrap().expect("a writer is elected")
    })
}

#[test]
fn etcd_members_die_one_at_a_time() {
    run_with_fault(|etcd, _| {
        let leader = etcd.leader();
        etcd.kill(leader);
        std::thread::sleep(Duration::from_secs(2));
        etcd.restart(leader);
        std::thread::sleep(Duration::from_secs(1));
        let follower = (etcd.leader() + 1) % 3;
        etcd.kill(follower);
        std::thread::sleep(Duration::from_secs(2));
        etcd.restart(follower);
    });
}

#[test]
fn the_writing_shoald_is_killed_and_another_host_takes_over() {
    run_with_fault(|etcd, hosts| {
        let name = writer(etcd);
        let host = hosts.iter_mut().find(|h| h.name == name).unwrap();
        host.kill();
        // Writes stall until its lease ends, then go to the next writer.
        std::thread::sleep(Duration::from_secs(7));
        let now = writer(etcd);
        assert_ne!(now, name, "no other host took over");
        host.restart();
    });
}

#[test]
fn a_replica_is_killed_and_restarted() {
    run_with_fault(|etcd, hosts| {
        let name = writer(etcd);
        let host = hosts.iter_mut().find(|h| h.name != name).unwrap();
        host.kill();
        std::thread::sleep(Duration::from_secs(2));
        host.restart();
    });
}

#[test]
fn a_replica_down_past_a_compaction_loads_the_tree_again() {
    run_with_fault(|etcd, hosts| {
        let name = writer(etcd);
        let host = hosts.iter_mut().find(|h| h.name != name).unwrap();
        host.kill();
        let reloaded = |store: &std::path::Path| -> Option<Vec<u8>> {
            let reader = shoal::Reader::open(store).unwrap();
            reader.snapshot().unwrap().get("/.shoald/cluster/reloaded").unwrap().map(<[u8]>::to_vec)
        };
        let before = reloaded(&host.store);
        std::thread::sleep(Duration::from_secs(2));
        etcd.compact(etcd.revision());
        host.restart();
        assert_ne!(reloaded(&host.store), before, "the restarted replica did not load the tree again");
    });
}
