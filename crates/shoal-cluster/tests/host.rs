//! Hosts as a daemon runs them: each with its replica, its candidacy and
//! its forwarding socket; transactions made on any host commit through
//! whichever host is the writer, and every host converges.

mod common;

use std::time::Duration;

use common::{client, host_options, leaked_store};
use shoal_cluster::{current_writer, Error, Host, HostOptions, Layout};
use shoal_testkit::etcd::EtcdCluster;

const PREFIX: &str = "/shoal/h";

/// Adds one to `/counter` on `host`'s replica, as a transaction; again on
/// a conflict. Returns the conflicts met.
async fn increment(host: &Host) -> usize {
    let mut conflicts = 0;
    loop {
        let store = host.replica().store();
        let mut txn = store.begin();
        let value: u64 = txn.get("/counter").unwrap().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        txn.put("/counter", (value + 1).to_string()).unwrap();
        match host.commit_local(txn).await {
            Ok(snapshot) => {
                // Read-your-writes: the replica holds the commit already.
                let now: u64 =
                    std::str::from_utf8(snapshot.get("/counter").unwrap().unwrap()).unwrap().parse().unwrap();
                assert!(now > value, "read {value}, then {now} after the commit");
                return conflicts;
            }
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_commit_through_one_writer_and_converge() {
    const EACH: usize = 25;
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let mut hosts = Vec::new();
    for name in ["h1", "h2", "h3"] {
        let store = leaked_store(&dir, name);
        hosts.push(Host::start(store, &endpoints, layout.clone(), host_options(name)).await.unwrap());
    }
    // One of them is elected.
    let mut observer = client(&cluster).await;
    let start = std::time::Instant::now();
    let writer = loop {
        if let Some(w) = current_writer(&mut observer, &layout).await.unwrap() {
            break w;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no writer elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(["h1", "h2", "h3"].contains(&writer.as_str()));

    // Every host increments at once: two of them forward to the writer.
    let runs = hosts.iter().map(|host| async move {
        let mut conflicts = 0;
        for _ in 0..EACH {
            conflicts += increment(host).await;
        }
        conflicts
    });
    let conflicts: usize = futures_join_all(runs).await.into_iter().sum();
    let total = 3 * EACH;

    // Every host converges on the same count: none lost.
    for host in &hosts {
        let revision = host.replica().sync(&mut observer, Duration::from_secs(10)).await.unwrap();
        let snapshot = host.replica().wait_for_revision(revision, Duration::from_secs(10)).await.unwrap();
        assert_eq!(snapshot.get("/counter").unwrap(), Some(total.to_string().as_bytes()), "conflicts: {conflicts}");
    }
    let stored = observer.get(format!("{PREFIX}/counter"), None).await.unwrap();
    assert_eq!(stored.kvs()[0].value(), total.to_string().as_bytes());

    for host in hosts {
        host.stop().await;
    }
    // Stopped hosts leave no status and no writer behind.
    assert_eq!(current_writer(&mut observer, &layout).await.unwrap(), None);
    assert!(shoal_cluster::cluster_status(&mut observer, &layout).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_writer_leaves_another_host_takes_its_transactions() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let a = Host::start(leaked_store(&dir, "a"), &endpoints, layout.clone(), host_options("a")).await.unwrap();
    // `a` is elected before `b` campaigns.
    let start = std::time::Instant::now();
    while !a.is_writer().await {
        assert!(start.elapsed() < Duration::from_secs(10), "a was not elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Host::start(leaked_store(&dir, "b"), &endpoints, layout.clone(), host_options("b")).await.unwrap();
    assert_eq!(increment(&b).await, 0);
    // A process reading a's store in place waits for b's commit there.
    let revision = shoal_cluster::revision_of(&b.replica().store().snapshot(), &layout).unwrap();
    let reader = shoal::Reader::open(a.replica().store().dir()).unwrap();
    let layout_for_reader = layout.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let seen = shoal_cluster::wait_for_revision(&reader, &layout_for_reader, revision, Duration::from_secs(10));
        let ahead =
            shoal_cluster::wait_for_revision(&reader, &layout_for_reader, revision + 1000, Duration::from_millis(200));
        (seen.map(|s| s.get("/counter").unwrap().map(<[u8]>::to_vec)), ahead.map(|_| ()))
    })
    .await
    .unwrap();
    assert_eq!(seen.0.unwrap(), Some(b"1".to_vec()));
    assert!(matches!(seen.1, Err(Error::Behind { .. })), "{:?}", seen.1);
    assert!(!b.is_writer().await);
    a.stop().await;
    // `b` is elected and commits its own from then on.
    increment(&b).await;
    assert!(b.is_writer().await);
    let snapshot = b.replica().store().snapshot();
    assert_eq!(snapshot.get("/counter").unwrap(), Some(&b"2"[..]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_other_data_or_another_trees_replica_is_refused() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();

    let mine = leaked_store(&dir, "mine");
    let mut txn = mine.begin();
    txn.put("/precious", "data").unwrap();
    txn.commit().unwrap();
    let refused = Host::start(mine, &endpoints, Layout::new(PREFIX), host_options("m")).await.err().unwrap();
    assert!(refused.to_string().contains("holds data and is no replica"), "{refused}");
    assert_eq!(mine.snapshot().get("/precious").unwrap(), Some(&b"data"[..]), "the data is untouched");

    let replica = leaked_store(&dir, "replica");
    Host::start(replica, &endpoints, Layout::new(PREFIX), host_options("r")).await.unwrap().stop().await;
    let other = Host::start(replica, &endpoints, Layout::new("/shoal/other"), host_options("r")).await.err().unwrap();
    assert!(other.to_string().contains("is a replica of"), "{other}");
    // The same tree again is fine.
    Host::start(replica, &endpoints, Layout::new(PREFIX), host_options("r")).await.unwrap().stop().await;

    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        let refused = Host::start(replica, &endpoints, Layout::new(PREFIX), host_options(bad)).await.err().unwrap();
        assert!(refused.to_string().contains("is not a host name"), "{refused}");
    }
    Host::start(replica, &endpoints, Layout::new(PREFIX), host_options(&"x".repeat(64))).await.unwrap().stop().await;
    let unspecified = HostOptions::new("u", "0.0.0.0:0".parse().unwrap());
    let refused = Host::start(replica, &endpoints, Layout::new(PREFIX), unspecified).await.err().unwrap();
    assert!(refused.to_string().contains("not one other hosts can reach"), "{refused}");
}

/// Runs the futures concurrently; their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs = Vec::new();
    // Polled together by one join over all of them.
    let joined = async {
        let mut handles = Vec::new();
        for f in set {
            handles.push(f);
        }
        let mut results: Vec<Option<F::Output>> = (0..handles.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, h) in handles.iter_mut().enumerate() {
                if results[i].is_none() {
                    match h.as_mut().poll(cx) {
                        std::task::Poll::Ready(out) => results[i] = Some(out),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        results.into_iter().map(Option::unwrap).collect::<Vec<_>>()
    };
    outputs.extend(joined.await);
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_a_live_host_is_refused_and_a_dead_ones_is_taken_over() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let layout = Layout::new(PREFIX);
    let live = Host::start(leaked_store(&dir, "a"), &endpoints, layout.clone(), host_options("same")).await.unwrap();
    let started = std::time::Instant::now();
    let refused =
        Host::start(leaked_store(&dir, "b"), &endpoints, layout.clone(), host_options("same")).await.err().unwrap();
    assert!(matches!(&refused, Error::HostTaken(name) if name == "same"), "{refused}");
    // It waited for the name, in case its holder was dead, before refusing.
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    // A host that dies (dropped without leaving) holds its name until its
    // lease ends; the same host restarted then takes it.
    drop(live);
    let again = Host::start(leaked_store(&dir, "c"), &endpoints, layout, host_options("same")).await.unwrap();
    again.stop().await;
}
