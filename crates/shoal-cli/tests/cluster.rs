//! `shoal cluster status` against a real etcd cluster.

mod common;

use std::time::{Duration, Instant};

use common::{fails, ok};
use shoal::{Options, Store};
use shoal_cluster::{Layout, Presence};
use shoal_testkit::etcd::EtcdCluster;

#[test]
fn cluster_status_lists_the_hosts_that_report_and_says_when_etcd_is_unreachable() {
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints().join(",");
    let args = ["cluster", "status", "--etcd", &endpoints, "--prefix", "/shoal/cli"];
    assert_eq!(ok(&args), "no host reports under /shoal/cli\n");

    let dir = tempfile::tempdir().unwrap();
    let options = Options { create: true, ..Options::default() };
    let store: &'static Store = Box::leak(Box::new(Store::open(dir.path().join("s"), options).unwrap()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let presence = runtime.block_on(async {
        let client = etcd_client::Client::connect(cluster.endpoints(), None).await.unwrap();
        let layout = Layout::new("/shoal/cli");
        Presence::start(client, layout, "host-one", store, 2, Duration::from_millis(100)).await.unwrap()
    });
    let out = ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["HOST", "APPLIED", "LAG", "VERSION", "VERSIONS/S", "READERS", "ARENA", "LIVE", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    let stat = store.stat().unwrap();
    assert_eq!(row[..4], ["host-one", "-", "-", &stat.version.to_string()], "{out}");
    assert_eq!(row[6], stat.arena_bytes.to_string(), "{out}");
    // Another prefix's hosts are not this one's.
    let other = ok(&["cluster", "status", "--etcd", &endpoints, "--prefix", "/shoal/other"]);
    assert_eq!(other, "no host reports under /shoal/other\n");

    // A host that stops renewing is gone once its lease ends.
    runtime.block_on(async { presence.stop() });
    let start = Instant::now();
    while ok(&args).contains("host-one") {
        assert!(start.elapsed() < Duration::from_secs(15), "the host did not vanish");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(runtime);

    // No etcd there: a clear error, in bounded time.
    drop(cluster);
    let start = Instant::now();
    let stderr = fails(&args);
    assert!(stderr.contains(&format!("shoal: etcd at {endpoints}: ")), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(15));
}

/// `shoal cluster wait` returns once the replica holds the revision or a
/// later one, and says how far it got when it does not in time.
#[test]
fn cluster_wait_returns_once_the_replica_holds_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica");
    let store = Store::open(&path, Options { create: true, ..Options::default() }).unwrap();
    let dir_arg = path.to_str().unwrap();
    let revision_path = format!("{}/revision", shoal_cluster::DEFAULT_LOCAL_ROOT);
    let set_revision = |revision: i64| {
        let mut txn = store.begin();
        txn.put(&revision_path, revision.to_string()).unwrap();
        txn.commit().unwrap();
    };

    // No revision yet: not a replica (or not loaded).
    let stderr = fails(&["cluster", "wait", dir_arg, "1", "--timeout", "0.2"]);
    assert!(stderr.contains("holds no cluster revision"), "{stderr}");

    set_revision(5);
    // At the revision held, and below it: at once, printing what it holds.
    assert_eq!(ok(&["cluster", "wait", dir_arg, "5", "--timeout", "0"]), "5\n");
    assert_eq!(ok(&["cluster", "wait", dir_arg, "4", "--timeout", "0"]), "5\n");
    // Just above: not in time.
    let stderr = fails(&["cluster", "wait", dir_arg, "6", "--timeout", "0.3"]);
    assert!(stderr.contains("has applied etcd revision 5, not yet 6"), "{stderr}");

    // A later revision applied while it waits ends the wait.
    std::thread::scope(|s| {
        let waiting = s.spawn(|| ok(&["cluster", "wait", dir_arg, "6", "--timeout", "20"]));
        std::thread::sleep(Duration::from_millis(300));
        set_revision(7);
        assert_eq!(waiting.join().unwrap(), "7\n");
    });

    let stderr = fails(&["cluster", "wait", dir.path().join("none").to_str().unwrap(), "1"]);
    assert!(stderr.contains("none"), "{stderr}");
}
