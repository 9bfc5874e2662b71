//! Transactions through the cluster's writer: read on any host's replica,
//! checked by the writer against its own, committed only if nothing they
//! read changed.

use std::time::Duration;

use etcd_client::Client;
use shoal::{Options, Store};
use shoal_cluster::{revision_of, Change, Error, Layout, Read, Replica, Transaction, Writer};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::{watch, Mutex};

const PREFIX: &str = "/shoal/t";

fn store(dir: &tempfile::TempDir, name: &str) -> Store {
    let options = Options { durability: shoal::Durability::None, create: true, ..Options::default() };
    Store::open(dir.path().join(name), options).unwrap()
}

async fn client(cluster: &EtcdCluster) -> Client {
    shoal_cluster::connect(&cluster.endpoints()).await.unwrap()
}

fn put(path: &str, value: &str) -> Change {
    Change::Put { path: path.to_string(), value: value.as_bytes().to_vec() }
}

/// A read-modify-write of `/counter` on `replica`: a shoal transaction on
/// the replica's store, taken out as an intent (what it read, what it
/// would write) instead of committed there.
fn increment(replica: &Replica<'_>) -> Transaction {
    let store = replica.store();
    let mut txn = store.begin();
    let value: u64 = txn.get("/counter").unwrap().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
    txn.put("/counter", (value + 1).to_string()).unwrap();
    let intent = txn.into_intent();
    let base = store.snapshot_at(intent.base_version).unwrap();
    let txn = Transaction::from_intent(&intent, &base, replica.layout()).unwrap();
    assert!(txn.reads.contains(&Read::Value("/counter".into())), "{txn:?}");
    txn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_two_hosts_through_one_writer_lose_nothing() {
    const EACH: usize = 40;
    let cluster = EtcdCluster::start(3);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    // Three hosts' replicas: the writer's, and two whose clients increment.
    let (sw, sa, sb) = (store(&dir, "w"), store(&dir, "a"), store(&dir, "b"));
    let (rw, ra, rb) =
        (Replica::new(&sw, layout.clone()), Replica::new(&sa, layout.clone()), Replica::new(&sb, layout.clone()));
    let (mut cw, mut ca, mut cb) = (client(&cluster).await, client(&cluster).await, client(&cluster).await);
    let (stop, stopped) = watch::channel(false);
    let writer = Mutex::new(Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap());
    let conflicts = std::sync::atomic::AtomicUsize::new(0);
    let host = |replica: &'static str| {
        let (writer, conflicts, ra, rb, rw, cluster) = (&writer, &conflicts, &ra, &rb, &rw, &cluster);
        async move {
            let mine = if replica == "a" { ra } else { rb };
            let mut c = client(cluster).await;
            for _ in 0..EACH {
                loop {
                    let txn = increment(mine);
                    let result = writer.lock().await.commit_transaction(rw, &txn).await;
                    match result {
                        Ok(_) => break,
                        Err(Error::Conflict { path, .. }) => {
                            assert_eq!(path, "/counter");
                            conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // Read again once this host has caught up.
                            mine.sync(&mut c, Duration::from_secs(10)).await.unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    };
    let work = async {
        // Every replica loaded before the first increment.
        for r in [&rw, &ra, &rb] {
            r.sync(&mut client(&cluster).await, Duration::from_secs(10)).await.unwrap();
        }
        tokio::join!(host("a"), host("b"));
        let mut c = client(&cluster).await;
        for r in [&rw, &ra, &rb] {
            r.sync(&mut c, Duration::from_secs(10)).await.unwrap();
            assert_eq!(r.store().snapshot().get("/counter").unwrap(), Some((2 * EACH).to_string().as_bytes()));
        }
        stop.send(true).unwrap();
    };
    let (fw, fa, fb, ()) = tokio::join!(
        rw.follow(&mut cw, stopped.clone()),
        ra.follow(&mut ca, stopped.clone()),
        rb.follow(&mut cb, stopped),
        work
    );
    fw.unwrap();
    fa.unwrap();
    fb.unwrap();
    // The two hosts raced: some reads were stale, refused and retried.
    assert!(conflicts.load(std::sync::atomic::Ordering::Relaxed) > 0, "the hosts never raced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_per_node_child_list_and_subtree() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let rw = Replica::new(&sw, layout.clone());
    let mut cw = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let checks = async {
        let mut c = client(&cluster).await;
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let setup = Transaction {
            changes: vec![put("/dir/a", "1"), put("/dir/b/c", "2"), put("/other", "x")],
            ..Default::default()
        };
        writer.commit_transaction(&rw, &setup).await.unwrap();
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let base = revision_of(&sw.snapshot(), &layout).unwrap();
        let txn = |read: Read| Transaction { base, reads: vec![read], changes: vec![put("/result", "r")] };

        // A change to a node nobody read: no conflict for any of them.
        writer
            .commit_transaction(&rw, &Transaction { changes: vec![put("/other", "y")], ..Default::default() })
            .await
            .unwrap();
        for read in [Read::Value("/dir/a".into()), Read::Children("/dir".into()), Read::Subtree("/dir".into())] {
            writer.commit_transaction(&rw, &txn(read.clone())).await.unwrap_or_else(|e| panic!("{read:?}: {e}"));
        }
        // A value changed deep below: the subtree read conflicts, the child
        // list and the sibling's value do not.
        writer
            .commit_transaction(&rw, &Transaction { changes: vec![put("/dir/b/c", "3")], ..Default::default() })
            .await
            .unwrap();
        let refused = writer.commit_transaction(&rw, &txn(Read::Subtree("/dir".into()))).await;
        assert!(matches!(&refused, Err(Error::Conflict { path, .. }) if path == "/dir"), "{refused:?}");
        writer.commit_transaction(&rw, &txn(Read::Children("/dir".into()))).await.unwrap();
        writer.commit_transaction(&rw, &txn(Read::Value("/dir/a".into()))).await.unwrap();
        // A new child: the child list conflicts.
        writer
            .commit_transaction(&rw, &Transaction { changes: vec![put("/dir/new", "n")], ..Default::default() })
            .await
            .unwrap();
        let refused = writer.commit_transaction(&rw, &txn(Read::Children("/dir".into()))).await;
        assert!(matches!(&refused, Err(Error::Conflict { path, .. }) if path == "/dir"), "{refused:?}");
        // The read node itself: conflicts; and a refused transaction wrote nothing.
        let before = sw.snapshot().get("/result").unwrap().map(<[u8]>::to_vec);
        writer
            .commit_transaction(&rw, &Transaction { changes: vec![put("/dir/a", "changed")], ..Default::default() })
            .await
            .unwrap();
        let mut last = txn(Read::Value("/dir/a".into()));
        last.changes = vec![put("/result", "must not land")];
        let refused = writer.commit_transaction(&rw, &last).await;
        assert!(matches!(&refused, Err(Error::Conflict { path, .. }) if path == "/dir/a"), "{refused:?}");
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        assert_eq!(sw.snapshot().get("/result").unwrap().map(<[u8]>::to_vec), before);
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(rw.follow(&mut cw, stopped), checks);
    followed.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_the_writers_replica_reloaded_past_is_a_conflict() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let mut c = client(&cluster).await;
    let follow_a_while = |until: i64| {
        let (rw, cluster) = (&rw, &cluster);
        async move {
            let mut fc = client(cluster).await;
            let (stop, stopped) = watch::channel(false);
            let waiting = async {
                while revision_of(&rw.store().snapshot(), rw.layout()).is_none_or(|r| r < until) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                stop.send(true).unwrap();
            };
            let (followed, ()) = tokio::join!(rw.follow(&mut fc, stopped), waiting);
            followed.unwrap();
        }
    };
    let r1 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    follow_a_while(r1).await;
    // While this replica does not follow, /n goes to 2 and back to 1, and
    // etcd forgets the revisions between: the replica reloads them as one.
    let r2 = writer.commit(&[put("/n", "2")], &sw.snapshot()).await.unwrap();
    let r3 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    cluster.compact(r3);
    follow_a_while(r3).await;
    let reloaded = revision_of(&sw.snapshot(), &layout).unwrap();
    assert!(reloaded >= r3);

    let (stop, stopped) = watch::channel(false);
    let mut fc = client(&cluster).await;
    let checks = async {
        // A transaction that read /n at r2, where it was 2: this replica
        // cannot tell what the tree was then, so it is refused. Judged
        // against the tree at r1 (where /n was 1, as now) it would pass,
        // having read a value that is no longer there.
        let at_r2 =
            Transaction { base: r2, reads: vec![Read::Value("/n".into())], changes: vec![put("/n", "3 from 2")] };
        let refused = writer.commit_transaction(&rw, &at_r2).await;
        assert!(matches!(refused, Err(Error::Conflict { .. })), "{refused:?}");
        // At the reload's own revision, the tree is known.
        let at_reload =
            Transaction { base: reloaded, reads: vec![Read::Value("/n".into())], changes: vec![put("/n", "4")] };
        writer.commit_transaction(&rw, &at_reload).await.unwrap();
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        assert_eq!(sw.snapshot().get("/n").unwrap(), Some(&b"4"[..]));
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(rw.follow(&mut fc, stopped), checks);
    followed.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shoal_transactions_copies_and_deletes_land_as_on_one_host() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let rw = Replica::new(&sw, layout.clone());
    let mut cw = client(&cluster).await;
    let (stop, stopped) = watch::channel(false);
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let intent_of = |build: &dyn Fn(&mut shoal::Transaction<'_>)| {
        let mut txn = sw.begin();
        build(&mut txn);
        let intent = txn.into_intent();
        Transaction::from_intent(&intent, &sw.snapshot_at(intent.base_version).unwrap(), &layout).unwrap()
    };
    let checks = async {
        let mut c = client(&cluster).await;
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let setup = intent_of(&|t| {
            t.put("/src/a", "1").unwrap();
            t.put("/src/b/c", "2").unwrap();
            t.put("/dst/stale", "gone soon").unwrap();
            t.put("/one", "v").unwrap();
        });
        writer.commit_transaction(&rw, &setup).await.unwrap();
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let copy = intent_of(&|t| {
            t.copy_tree("/src", "/dst").unwrap();
            t.copy("/one", "/two").unwrap();
            t.delete("/one").unwrap();
        });
        writer.commit_transaction(&rw, &copy).await.unwrap();
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let tree: Vec<(String, Vec<u8>)> = sw
            .snapshot()
            .scan("/")
            .unwrap()
            .map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap())
            .filter(|(p, _)| p != "/" && !p.starts_with("/.shoald"))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = [
            ("/dst", ""),
            ("/dst/a", "1"),
            ("/dst/b", ""),
            ("/dst/b/c", "2"),
            ("/src", ""),
            ("/src/a", "1"),
            ("/src/b", ""),
            ("/src/b/c", "2"),
            ("/two", "v"),
        ]
        .iter()
        .map(|(p, v)| (p.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(tree, expected);
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(rw.follow(&mut cw, stopped), checks);
    followed.unwrap();
}
