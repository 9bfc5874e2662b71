//! The work queue recipe (`shoal::queue`) in a cluster: the same code as on
//! one store, run in shoal transactions on each host's replica and
//! committed through the cluster's writer. Workers on two hosts claim
//! every item exactly once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use shoal::queue;
use shoal_cluster::{Error, Layout, Replica, Transaction, Writer};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::Mutex;

use common::{client, leaked_store, store, while_following};

const PREFIX: &str = "/shoal/q";

/// Runs `step` in a shoal transaction on `replica`'s store and commits it
/// through `writer`, again after each conflict (with the replica caught
/// up); returns what the step returned in the transaction that committed.
async fn through_writer<T>(
    replica: &Replica<'_>,
    writer: &Mutex<Writer>,
    writer_replica: &Replica<'_>,
    c: &mut etcd_client::Client,
    step: impl Fn(&mut shoal::Transaction<'_>) -> shoal::Result<T>,
) -> T {
    loop {
        let mut txn = replica.store().begin();
        let out = step(&mut txn).unwrap();
        let intent = txn.into_intent();
        let base = replica.store().snapshot_at(intent.base_version).unwrap();
        let cluster_txn = Transaction::from_intent(&intent, &base, replica.layout()).unwrap();
        match writer.lock().await.commit_transaction(writer_replica, &cluster_txn).await {
            Ok(revision) => {
                replica.wait_for_revision(revision, Duration::from_secs(10)).await.unwrap();
                return out;
            }
            Err(Error::Conflict { .. }) => {
                replica.sync(c, Duration::from_secs(10)).await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_two_hosts_claim_every_item_exactly_once() {
    const ITEMS: usize = 40;
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let (sw, sa, sb) = (store(&dir, "w"), store(&dir, "a"), store(&dir, "b"));
    let rw = Replica::new(&sw, layout.clone());
    let ra = Replica::new(&sa, layout.clone());
    let rb = Replica::new(&sb, layout.clone());
    let writer = Mutex::new(Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap());
    let claims: std::sync::Mutex<HashMap<u64, Vec<String>>> = Default::default();
    let worker = |name: &'static str| {
        let (writer, rw, claims, cluster) = (&writer, &rw, &claims, &cluster);
        let mine = if name.starts_with('a') { &ra } else { &rb };
        async move {
            let mut c = client(cluster).await;
            let lease = Duration::from_secs(3600);
            loop {
                let claimed = through_writer(mine, writer, rw, &mut c, |t| {
                    queue::claim(t, "jobs", name, SystemTime::now(), lease)
                })
                .await;
                let Some(claimed) = claimed else {
                    // Nothing free as this host sees it: catch up and look again.
                    mine.sync(&mut c, Duration::from_secs(10)).await.unwrap();
                    let snapshot = mine.store().snapshot();
                    let left = snapshot.list("/queues/jobs/items").unwrap_or_default().len();
                    let held = snapshot.list("/queues/jobs/claims").unwrap_or_default().len();
                    if left == held {
                        return;
                    }
                    continue;
                };
                assert_eq!(claimed.payload, format!("job {}", claimed.item).as_bytes());
                claims.lock().unwrap().entry(claimed.item).or_default().push(name.to_string());
                // Working on it: the other workers claim meanwhile.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let finished =
                    through_writer(mine, writer, rw, &mut c, |t| queue::done(t, "jobs", claimed.item, name)).await;
                assert!(finished, "{name} could not finish item {}", claimed.item);
            }
        }
    };
    let work = async {
        let mut c = client(&cluster).await;
        for r in [&rw, &ra, &rb] {
            r.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        }
        for i in 0..ITEMS {
            let payload = format!("job {i}");
            through_writer(&rw, &writer, &rw, &mut c, |t| queue::push(t, "jobs", payload.as_bytes())).await;
        }
        tokio::join!(worker("a1"), worker("a2"), worker("b1"), worker("b2"));
    };
    // The three hosts' replicas follow while the work runs.
    while_following(&rw, &cluster, while_following(&ra, &cluster, while_following(&rb, &cluster, work))).await;
    let claims = claims.into_inner().unwrap();
    assert_eq!(claims.len(), ITEMS, "every item claimed: {claims:?}");
    let twice: Vec<_> = claims.iter().filter(|(_, by)| by.len() != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let hosts: std::collections::HashSet<char> = claims.values().flatten().filter_map(|n| n.chars().next()).collect();
    assert_eq!(hosts.len(), 2, "both hosts' workers claimed items: {claims:?}");
    assert!(sw.snapshot().list("/queues/jobs/items").unwrap().is_empty());
}

/// Runs `step` in a transaction on `host`'s replica and commits it through
/// the cluster, again after a conflict; what the committed step returned.
async fn step<T>(host: &shoal_cluster::Host, step: impl Fn(&mut shoal::Transaction<'_>) -> shoal::Result<T>) -> T {
    loop {
        let mut txn = host.replica().store().begin();
        let out = step(&mut txn).unwrap();
        match host.commit_local(txn).await {
            Ok(_) => return out,
            Err(Error::Conflict { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The queue test: 10,000 items, 6 workers on 3 hosts (each a
/// `Host` as shoald runs it), one worker dying mid-way with an item
/// claimed. Every item is done exactly once; the dead worker's item is
/// claimed again once its lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_items_six_workers_three_hosts_one_dies() {
    const ITEMS: u64 = 10_000;
    const PUSHES_PER_COMMIT: u64 = 60;
    const LEASE: Duration = Duration::from_secs(2);
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new("/shoal/queue10k");
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let mut hosts = Vec::new();
    for name in ["h1", "h2", "h3"] {
        let options = shoal_cluster::HostOptions::new(name, "127.0.0.1:0".parse().unwrap());
        let host = shoal_cluster::Host::start(leaked_store(&dir, name), &endpoints, layout.clone(), options);
        hosts.push(std::sync::Arc::new(host.await.unwrap()));
    }
    let started = std::time::Instant::now();
    let mut pushed = 0;
    while pushed < ITEMS {
        let batch = PUSHES_PER_COMMIT.min(ITEMS - pushed);
        step(&hosts[0], |txn| {
            for i in pushed..pushed + batch {
                queue::push(txn, "work", i.to_string().as_bytes())?;
            }
            Ok(())
        })
        .await;
        pushed += batch;
    }
    let pushed_in = started.elapsed();

    let done: std::sync::Arc<std::sync::Mutex<HashMap<u64, Vec<String>>>> = Default::default();
    let dead_held: std::sync::Arc<std::sync::Mutex<Option<u64>>> = Default::default();
    let mut workers = tokio::task::JoinSet::new();
    for (h, host) in hosts.iter().enumerate() {
        for w in 0..2 {
            let (host, done, dead_held) = (host.clone(), done.clone(), dead_held.clone());
            let owner = format!("h{}w{w}", h + 1);
            // The first worker of the last host dies half-way, holding an item.
            let dies = h == 2 && w == 0;
            workers.spawn(async move {
                loop {
                    let claimed = step(&host, |txn| queue::claim(txn, "work", &owner, SystemTime::now(), LEASE)).await;
                    let Some(claimed) = claimed else {
                        if done.lock().unwrap().len() as u64 == ITEMS {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    assert_eq!(claimed.payload, claimed.item.to_string().as_bytes());
                    if dies && done.lock().unwrap().len() as u64 >= ITEMS / 2 {
                        *dead_held.lock().unwrap() = Some(claimed.item);
                        return;
                    }
                    if step(&host, |txn| queue::done(txn, "work", claimed.item, &owner)).await {
                        done.lock().unwrap().entry(claimed.item).or_default().push(owner.clone());
                    }
                }
            });
        }
    }
    while let Some(worker) = workers.join_next().await {
        worker.unwrap();
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len() as u64, ITEMS, "every item done");
    let twice: Vec<_> = done.iter().filter(|(_, by)| by.len() != 1).collect();
    assert!(twice.is_empty(), "done more than once: {twice:?}");
    let dead_item = dead_held.lock().unwrap().expect("the dying worker died holding an item");
    assert_ne!(done[&dead_item][0], "h3w0", "the dead worker's item was finished by another after its lease");
    // Every host's replica holds an empty queue.
    for host in &hosts {
        let mut c = client(&cluster).await;
        let revision = host.replica().sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let snapshot = host.replica().wait_for_revision(revision, Duration::from_secs(10)).await.unwrap();
        assert!(snapshot.list("/queues/work/items").unwrap_or_default().is_empty());
        assert!(snapshot.list("/queues/work/claims").unwrap_or_default().is_empty());
    }
    eprintln!("pushed {ITEMS} in {pushed_in:?}; all done in {:?}", started.elapsed());
    for host in hosts {
        host.stop().await;
    }
}
