//! cluster-bench: shoal's cluster mode beside etcd, in one run on one
//! machine. A 3-member etcd cluster on loopback (members' data on disk, as
//! etcd runs), three hosts (`shoal_cluster::Host`, what `shoald --cluster`
//! runs) each over its own store, and the same work done straight against
//! etcd with etcd's own client:
//!
//! - writes: C clients, each committing one-key writes one after another,
//!   through the cluster (a transaction on its host's replica, committed by
//!   the writer, acknowledged once its host's replica holds it) against C
//!   clients putting the same keys straight to etcd;
//! - reads: one reader getting random keys in place from a host's store
//!   against one client's serializable gets from etcd (served by the
//!   member it talks to, without a consensus round);
//! - propagation: a commit started on one host until a reader waiting on
//!   another host's store sees it, against a put until an etcd watcher
//!   hears of it;
//! - bootstrap: a new host loading a tree of N keys from etcd.
//!
//! Prints a markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal::{Durability, Options, Store};
use shoal_cluster::{Host, HostOptions, Layout, Replica};
use shoal_testkit::etcd::EtcdCluster;

#[derive(Parser)]
struct Args {
    /// Concurrent writers in the write rows.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Writes per client.
    #[arg(long, default_value_t = 250)]
    writes: usize,
    /// Seconds each read row runs.
    #[arg(long, default_value_t = 3.0)]
    read_secs: f64,
    /// Commits timed in each propagation row.
    #[arg(long, default_value_t = 300)]
    propagations: usize,
    /// Keys of the tree a new host loads (0: skip the row).
    #[arg(long, default_value_t = 1_000_000)]
    bootstrap_keys: usize,
}

fn store(dir: &tempfile::TempDir, name: &str) -> &'static Store {
    let options = Options { create: true, durability: Durability::None, ..Options::default() };
    Box::leak(Box::new(Store::open(dir.path().join(name), options).expect("a store")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    shoal_testkit::etcd::require_etcd();
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new("/bench");
    let mut hosts = Vec::new();
    for name in ["a", "b", "c"] {
        let options = HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
        hosts.push(Arc::new(Host::start(store(&dir, name), &endpoints, layout.clone(), options).await.unwrap()));
    }
    // The writer is elected and has made its first commit.
    commit_put(&hosts[0], "/warm", b"up").await;

    println!("| row | shoal cluster | etcd | shoal / etcd |");
    println!("| --- | --- | --- | --- |");

    // Writes.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let host = hosts[c % hosts.len()].clone();
        let writes = args.writes;
        tasks.spawn(async move {
            for i in 0..writes {
                commit_put(&host, &format!("/w/c{c}/k{i}"), format!("v{i}").as_bytes()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let cluster_rate = (args.clients * args.writes) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for c in 0..args.clients {
        let mut client = shoal_cluster::connect(&endpoints).await.unwrap();
        let writes = args.writes;
        tasks.spawn(async move {
            for i in 0..writes {
                client.put(format!("/direct/w/c{c}/k{i}"), format!("v{i}"), None).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let etcd_rate = (args.clients * args.writes) as f64 / started.elapsed().as_secs_f64();
    println!(
        "| one-key writes, {} clients (writes/s) | {cluster_rate:.0} | {etcd_rate:.0} | {:.2}× |",
        args.clients,
        cluster_rate / etcd_rate
    );

    // Reads of the keys just written.
    let keys: Vec<String> =
        (0..args.clients).flat_map(|c| (0..args.writes).map(move |i| format!("/w/c{c}/k{i}"))).collect();
    let keys = Arc::new(keys);
    let store_dir = hosts[1].replica().store().dir().to_path_buf();
    let read_secs = args.read_secs;
    let local_keys = keys.clone();
    let local_rate = tokio::task::spawn_blocking(move || {
        let reader = shoal::Reader::open(&store_dir).unwrap();
        let snapshot = reader.snapshot().unwrap();
        let (mut n, mut x, mut found) = (0u64, 88172645463325252u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs_f64(read_secs);
        while Instant::now() < deadline {
            for _ in 0..1024 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = &local_keys[(x % local_keys.len() as u64) as usize];
                found += u64::from(snapshot.get(key).unwrap().is_some());
                n += 1;
            }
        }
        assert_eq!(found, n, "every key written is read");
        n as f64 / read_secs
    })
    .await
    .unwrap();
    let mut client = shoal_cluster::connect(&endpoints).await.unwrap();
    let (mut n, mut x) = (0u64, 88172645463325252u64);
    let deadline = Instant::now() + Duration::from_secs_f64(read_secs);
    while Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("/bench{}", keys[(x % keys.len() as u64) as usize]);
        let got = client.get(key, Some(etcd_client::GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!(got.kvs().len(), 1);
        n += 1;
    }
    let etcd_reads = n as f64 / read_secs;
    println!(
        "| random gets of {} keys, 1 reader (gets/s; shoal: in place on a host's store, etcd: serializable) | {local_rate:.0} | {etcd_reads:.0} | {:.0}× |",
        keys.len(),
        local_rate / etcd_reads
    );

    // Propagation: a commit on host a, seen by a reader waiting on host b's store.
    let seen = Arc::new(std::sync::Mutex::new(vec![None::<Instant>; args.propagations]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let dir = hosts[1].replica().store().dir().to_path_buf();
        std::thread::spawn(move || {
            let reader = shoal::Reader::open(&dir).unwrap();
            let mut last = reader.snapshot().unwrap().version();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(snapshot) = reader.wait_for_version(last, Duration::from_millis(100)).unwrap() {
                    let at = Instant::now();
                    last = snapshot.version();
                    if let Some(value) = snapshot.get("/prop").unwrap() {
                        let i: usize = std::str::from_utf8(value).unwrap().parse().unwrap();
                        seen.lock().unwrap()[i].get_or_insert(at);
                    }
                }
            }
        })
    };
    let mut latencies = Vec::new();
    for i in 0..args.propagations {
        let started = Instant::now();
        commit_put(&hosts[0], "/prop", i.to_string().as_bytes()).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = seen.lock().unwrap()[i] {
                latencies.push(at - started);
                break;
            }
            assert!(Instant::now() < deadline, "commit {i} never seen on host b");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    latencies.sort();
    // etcd's own: a put until a watcher (another client) hears of it.
    let mut watching = shoal_cluster::connect(&endpoints).await.unwrap();
    let mut stream = watching.watch("/direct/prop", None).await.unwrap();
    let mut etcd_latencies = Vec::new();
    for i in 0..args.propagations {
        let started = Instant::now();
        client.put("/direct/prop", i.to_string(), None).await.unwrap();
        loop {
            let reply = stream.message().await.unwrap().expect("the watch goes on");
            let value = reply.events().last().and_then(|e| e.kv()).map(|kv| kv.value().to_vec());
            if value.as_deref() == Some(i.to_string().as_bytes()) {
                etcd_latencies.push(started.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    etcd_latencies.sort();
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (ours, theirs) = (percentile(&latencies, p), percentile(&etcd_latencies, p));
        println!(
            "| propagation {name}: commit started on host a → seen by a reader waiting on host b (etcd: put → watcher) | {} | {} | {:.2}× |",
            micros(ours),
            micros(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }

    // Bootstrap.
    if args.bootstrap_keys > 0 {
        let loaded = Instant::now();
        let per_txn = 128;
        let batches: Vec<usize> = (0..args.bootstrap_keys).step_by(per_txn).collect();
        let batches = Arc::new(std::sync::Mutex::new(batches));
        for _ in 0..8 {
            let (batches, endpoints, total) = (batches.clone(), endpoints.clone(), args.bootstrap_keys);
            tasks.spawn(async move {
                let mut client = shoal_cluster::connect(&endpoints).await.unwrap();
                loop {
                    let Some(start) = batches.lock().unwrap().pop() else { return };
                    let ops: Vec<etcd_client::TxnOp> = (start..(start + per_txn).min(total))
                        .map(|k| {
                            etcd_client::TxnOp::put(
                                format!("/boot/domain/{}/key{}", k / 13, k % 13),
                                format!("value-{k:08}"),
                                None,
                            )
                        })
                        .collect();
                    client.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        eprintln!("{} keys put into etcd in {:.1} s", args.bootstrap_keys, loaded.elapsed().as_secs_f64());
        let fresh = store(&dir, "fresh");
        let replica = Replica::new(fresh, Layout::new("/boot"));
        let mut client = shoal_cluster::connect(&endpoints).await.unwrap();
        let started = Instant::now();
        replica.resync(&mut client).await.unwrap();
        let took = started.elapsed();
        let held = fresh.snapshot().scan("/domain").unwrap().count();
        assert!(held >= args.bootstrap_keys, "{held} nodes after loading {} keys", args.bootstrap_keys);
        let started = Instant::now();
        let listed = client
            .get("/boot/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only()))
            .await
            .unwrap()
            .count();
        let counted = started.elapsed();
        println!(
            "| a new host loads {} keys (s; etcd: counting them, for scale) | {:.2} | {:.2} | |",
            listed,
            took.as_secs_f64(),
            counted.as_secs_f64()
        );
    }
    for host in hosts {
        host.stop().await;
    }
}

/// Commits a one-key write through `host`, again after a conflict.
async fn commit_put(host: &Host, path: &str, value: &[u8]) {
    loop {
        let mut txn = host.replica().store().begin();
        txn.put(path, value).unwrap();
        match host.commit_local(txn).await {
            Ok(_) => return,
            Err(shoal_cluster::Error::Conflict { .. }) => continue,
            Err(e) => panic!("{path}: {e}"),
        }
    }
}
