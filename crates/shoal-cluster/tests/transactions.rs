//! Transactions through the cluster's writer: read on any host's replica,
//! checked by the writer against its own, committed only if nothing they
//! read changed.

mod common;

use std::time::Duration;

use common::{client, put, store, store_with, while_following};
use shoal::{Options, RetainTier};
use shoal_cluster::{revision_of, Change, Error, Layout, Read, Replica, Transaction, Writer};
use shoal_testkit::etcd::EtcdCluster;
use tokio::sync::Mutex;

const PREFIX: &str = "/shoal/t";

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
                            // "/": read before the oldest version the
                            // writer's replica holds (before its first
                            // commit as writer).
                            assert!(path == "/counter" || path == "/", "{path}");
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
    };
    // The three hosts' replicas follow while the work runs.
    while_following(&rw, &cluster, while_following(&ra, &cluster, while_following(&rb, &cluster, work))).await;
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
    };
    while_following(&rw, &cluster, checks).await;
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
    let r1 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    follow_until(&rw, &cluster, r1).await;
    // While this replica does not follow, /n goes to 2 and back to 1, and
    // etcd forgets the revisions between: the replica reloads them as one.
    let r2 = writer.commit(&[put("/n", "2")], &sw.snapshot()).await.unwrap();
    let r3 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    cluster.compact(r3);
    follow_until(&rw, &cluster, r3).await;
    let reloaded = revision_of(&sw.snapshot(), &layout).unwrap();
    assert!(reloaded >= r3);

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
    };
    while_following(&rw, &cluster, checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shoal_transactions_copies_and_deletes_land_as_on_one_host() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let rw = Replica::new(&sw, layout.clone());
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
    };
    while_following(&rw, &cluster, checks).await;
}

async fn follow_until(rw: &Replica<'_>, cluster: &EtcdCluster, until: i64) {
    while_following(rw, cluster, async {
        while revision_of(&rw.store().snapshot(), rw.layout()).is_none_or(|r| r < until) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A watch that starts behind (a restarted follow, a new writer): `sync`
/// returns only once the replica has applied what etcd acknowledged before
/// it. (etcd 3.4.23 answers a progress request before the events it should
/// follow, so `sync` cannot rely on progress reports.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waits_until_the_replica_has_applied_what_etcd_acknowledged() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store_with(&dir, "w", Options::default());
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let mut c = client(&cluster).await;
    let r1 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    follow_until(&rw, &cluster, r1).await;
    let mut behind = Vec::new();
    for i in 0..5 {
        // While the replica does not follow, /n changes.
        let r = writer.commit(&[put("/n", &format!("x{i}"))], &sw.snapshot()).await.unwrap();
        let check = async {
            // The revision sync returns may be its own marker's, which makes
            // no version: what must hold is that the commit acknowledged
            // before it is applied.
            let target = rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
            let applied = rw.applied_revision().unwrap();
            if applied < r || target < r {
                behind.push((r, target, applied));
            }
            // Let it catch up before the next round.
            while rw.applied_revision().unwrap() < r {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        while_following(&rw, &cluster, check).await;
    }
    assert!(
        behind.is_empty(),
        "sync returned with the replica behind its target (commit, target, applied): {behind:?}"
    );
}

/// A transaction that read /n before it changed is refused, even when the
/// writer's watch has just restarted behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_is_refused_when_the_writers_watch_restarts() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store_with(&dir, "w", Options::default());
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let r1 = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
    follow_until(&rw, &cluster, r1).await;
    // Another host's transaction read /n = 1 at r1 ...
    let stale = Transaction { base: r1, reads: vec![Read::Value("/n".into())], changes: vec![put("/n", "stale")] };
    // ... then /n became 2 (committed by the writer, acknowledged).
    writer.commit(&[put("/n", "2")], &sw.snapshot()).await.unwrap();
    let result = while_following(&rw, &cluster, writer.commit_transaction(&rw, &stale)).await;
    assert!(
        matches!(result, Err(Error::Conflict { .. })),
        "a read of a value overwritten before the check committed: {result:?}"
    );
}

/// Sleeps until 50 ms past the wall clock's next whole second. A retention
/// tier of one version a second keeps the newest commit of each whole
/// second of commit time: commits made right after this share a second
/// (unless they take 950 ms), and none made before this is in it.
async fn into_next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let to_next = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(to_next + Duration::from_millis(50)).await;
}

/// A writer's store that keeps thinned history (`retain_tiers`): after a
/// compaction its versions have gaps, and a base inside one is refused,
/// not judged against the version before the gap (where /n was 1, as now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_in_a_gap_thinned_history_left_is_a_conflict() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        retain_versions: 1,
        retain_tiers: vec![RetainTier::new(Duration::from_secs(1), Duration::from_secs(3600))],
        ..Options::default()
    };
    let sw = store_with(&dir, "w", options);
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let checks = async {
        let mut c = client(&cluster).await;
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let wait = |r: i64| {
            let rw = &rw;
            async move {
                while rw.applied_revision().is_none_or(|a| a < r) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        let ra = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
        wait(ra).await;
        // rb and rc in one second of commit time (the tier keeps its newest,
        // rc), ra and rd in others.
        into_next_second().await;
        let rb = writer.commit(&[put("/n", "2")], &sw.snapshot()).await.unwrap();
        wait(rb).await;
        let rc = writer.commit(&[put("/n", "1")], &sw.snapshot()).await.unwrap();
        wait(rc).await;
        into_next_second().await;
        let _rd = writer.commit(&[put("/other", "x")], &sw.snapshot()).await.unwrap();
        wait(_rd).await;
        let re = writer.commit(&[put("/other", "y")], &sw.snapshot()).await.unwrap();
        wait(re).await;
        sw.compact().unwrap();
        let head = sw.snapshot();
        let revisions: Vec<i64> = head
            .versions()
            .unwrap()
            .into_iter()
            .map(|v| revision_of(&head.at_version(v).unwrap(), &layout).unwrap_or(0))
            .collect();
        assert!(!revisions.contains(&rb), "setup: rb not thinned out");
        // Another host read /n = 2 at rb (it holds that version) and writes
        // from it. /n is 1 now: this must conflict.
        let at_rb =
            Transaction { base: rb, reads: vec![Read::Value("/n".into())], changes: vec![put("/n", "3 from 2")] };
        let result = writer.commit_transaction(&rw, &at_rb).await;
        result
    };
    let result = while_following(&rw, &cluster, checks).await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "a read at a thinned-out revision committed: {result:?}");
}

/// A base no revision has reached yet is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_from_the_future_is_refused() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store_with(&dir, "w", Options::default());
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let checks = async {
        let mut c = client(&cluster).await;
        rw.sync(&mut c, Duration::from_secs(10)).await.unwrap();
        let t = Transaction { base: i64::MAX, reads: vec![Read::Value("/n".into())], changes: vec![put("/n", "x")] };
        let result = writer.commit_transaction(&rw, &t).await;
        result
    };
    let result = while_following(&rw, &cluster, checks).await;
    assert!(result.is_err(), "{result:?}");
}

/// etcd takes at most 128 operations in one transaction (its default
/// `--max-txn-ops`): a commit of 128 goes, one of 129 is refused cleanly
/// with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_refused_cleanly_past_etcds_operation_limit() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let many = |n: usize, tag: &str| -> Vec<Change> { (0..n).map(|i| put(&format!("/{tag}{i}"), "v")).collect() };
    writer.commit(&many(128, "a"), &sw.snapshot()).await.unwrap();
    let refused = writer.commit(&many(129, "b"), &sw.snapshot()).await;
    assert!(matches!(&refused, Err(Error::TooLarge(m)) if m.contains("at most 128")), "{refused:?}");
    let mut c = client(&cluster).await;
    let listed = c.get(format!("{PREFIX}/b"), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert!(listed.kvs().is_empty());
}

/// Read-your-writes across hosts: a commit's revision, waited for on
/// another host's replica, shows the commit there; a revision not reached
/// yet times out with how far the replica is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commits_revision_waited_for_on_another_host_shows_the_commit() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let (sw, sb) = (store(&dir, "w"), store(&dir, "b"));
    let (rw, rb) = (Replica::new(&sw, layout.clone()), Replica::new(&sb, layout.clone()));
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let checks = async {
        for i in 0..20 {
            let txn = Transaction { changes: vec![put("/seen", &i.to_string())], ..Default::default() };
            let revision = writer.commit_transaction(&rw, &txn).await.unwrap();
            let snapshot = rb.wait_for_revision(revision, Duration::from_secs(10)).await.unwrap();
            assert_eq!(snapshot.get("/seen").unwrap(), Some(i.to_string().as_bytes()));
        }
        let ahead = rb.wait_for_revision(i64::MAX, Duration::from_millis(200)).await;
        assert!(matches!(ahead, Err(Error::Behind { target: i64::MAX, .. })), "{ahead:?}");
    };
    // Both hosts follow: the writer's replica for its checks, b's for reading.
    while_following(&rb, &cluster, while_following(&rw, &cluster, checks)).await;
}

/// A group commit: transactions committed together land in one revision,
/// except one that read what an earlier one of the group writes (it
/// conflicts, as it would after that one), and one whose changes do not fit
/// in the same etcd transaction (it starts the next revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_is_one_revision_and_checks_each_against_the_ones_before() {
    let cluster = EtcdCluster::start(1);
    let layout = Layout::new(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let sw = store(&dir, "w");
    let rw = Replica::new(&sw, layout.clone());
    let mut writer = Writer::elect(client(&cluster).await, layout.clone(), "host-w", 5).await.unwrap();
    let checks = async {
        // A base every transaction can be checked at.
        let first = Transaction { changes: vec![put("/a", "0")], ..Default::default() };
        let base = writer.commit_transaction(&rw, &first).await.unwrap();
        rw.wait_for_revision(base, Duration::from_secs(10)).await.unwrap();
        let txn = |reads: Vec<Read>, changes: Vec<Change>| Transaction { base, reads, changes };
        let many = |n: usize| -> Vec<Change> { (0..n).map(|i| put(&format!("/many/{i}"), "v")).collect() };
        let group = [
            txn(vec![Read::Value("/a".into())], vec![put("/a", "1")]),
            // Reads /a, which the first writes.
            txn(vec![Read::Value("/a".into())], vec![put("/b", "lost")]),
            // Lists /, above what the first writes.
            txn(vec![Read::Children("/".into())], vec![put("/c", "lost")]),
            // Unrelated: joins the first.
            txn(vec![Read::Value("/d".into())], vec![put("/d", "1")]),
            // 126 nodes and their parent: alone they fit (127 operations
            // of 128), beside the two others' they do not.
            txn(vec![], many(126)),
            // Alone too large: refused, nothing of it written.
            txn(vec![], many(200)),
        ];
        writer.commit_transactions(&rw, &group).await
    };
    let results = while_following(&rw, &cluster, checks).await;
    let ok = |i: usize| *results[i].as_ref().unwrap_or_else(|e| panic!("{i}: {e}"));
    assert_eq!(ok(0), ok(3), "one group, one revision");
    assert!(matches!(&results[1], Err(Error::Conflict { path, .. }) if path == "/a"), "{:?}", results[1]);
    assert!(matches!(&results[2], Err(Error::Conflict { path, .. }) if path == "/"), "{:?}", results[2]);
    assert!(ok(4) > ok(0), "the group too large for one etcd transaction went on in the next revision");
    assert!(matches!(&results[5], Err(Error::TooLarge(_))), "{:?}", results[5]);
    let mut c = client(&cluster).await;
    for (path, want) in [("/a", Some("1")), ("/b", None), ("/c", None), ("/d", Some("1")), ("/many/125", Some("v"))] {
        let got = c.get(format!("{PREFIX}{path}"), None).await.unwrap();
        let value = got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
        assert_eq!(value.as_deref(), want, "{path}");
    }
    let listed = c.get(format!("{PREFIX}/many/"), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(listed.kvs().len(), 126, "nothing of the refused one");
}
