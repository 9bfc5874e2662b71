//! The one-key commit path (a leaf written as one copy with its value
//! spliced in, one op routed to one child, conflict records skipped when
//! no other transaction is open) and the unmapping of written arena pages,
//! against a model, crafted leaves, concurrent transactions and a writer
//! killed while a reader in another process reads.

mod common;
mod crafted;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use shoal::{Durability, Error, Options, Reader, Snapshot, Store};

type Model = BTreeMap<String, Vec<u8>>;

fn options(durability: Durability) -> Options {
    Options { durability, create: true, auto_compact: false, tidy_when_idle: None, ..Options::default() }
}

fn is_below(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{root}/"))
}

fn snapshot_model(s: &Snapshot) -> Model {
    s.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

/// Scan, lookups of every path, key count and checksums agree with `m`.
fn check(s: &Snapshot, m: &Model, label: &str) {
    let got = snapshot_model(s);
    if &got != m {
        let missing: Vec<_> = m.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = got.keys().filter(|k| !m.contains_key(*k)).take(5).collect();
        let differ: Vec<_> =
            m.iter().filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v)).map(|(k, _)| k).take(5).collect();
        panic!("{label}: scan differs from the model: missing {missing:?}, extra {extra:?}, values differ {differ:?}");
    }
    for (k, v) in m {
        assert_eq!(s.get(k).unwrap(), Some(&v[..]), "{label}: get {k}");
    }
    assert_eq!(s.key_count(), m.len() as u64, "{label}: key count");
    s.verify().unwrap();
}

fn value_of(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

#[derive(Clone, Debug)]
enum Act {
    /// One-key commit to the n-th existing path (mod count), value of this size.
    PutExisting(usize, usize),
    PutNew(String, usize),
    /// Several puts to existing paths in one transaction.
    Multi(Vec<(usize, usize)>),
    /// Delete the n-th existing path that has no children (Transaction::delete).
    DeleteLeaf(usize),
    DeleteTree(usize),
    CopyTree(usize, String),
    CopyValue(usize, String),
    Bulk(Vec<(String, usize)>),
    /// A second transaction open at the same base while one-key commits land.
    Concurrent(usize, usize),
    Reopen,
    Compact,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..=300,
        2 => prop::sample::select(vec![0usize, 1, 7, 8, 9, 200, 248, 255, 256, 257, 300]),
        1 => 1000usize..3000,
    ]
}

fn new_path() -> impl Strategy<Value = String> {
    (prop::sample::select(vec!["d", "e", "c", "d/x"]), 0u32..400).prop_map(|(p, n)| format!("/{p}/n{n:03}"))
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        30 => (any::<usize>(), size()).prop_map(|(i, s)| Act::PutExisting(i, s)),
        4 => (new_path(), size()).prop_map(|(p, s)| Act::PutNew(p, s)),
        3 => prop::collection::vec((any::<usize>(), size()), 2..5).prop_map(Act::Multi),
        3 => any::<usize>().prop_map(Act::DeleteLeaf),
        1 => any::<usize>().prop_map(Act::DeleteTree),
        2 => (any::<usize>(), prop::sample::select(vec!["/c", "/c/y", "/e/z", "/f"])).prop_map(|(i, t)| Act::CopyTree(i, t.to_string())),
        2 => (any::<usize>(), new_path()).prop_map(|(i, t)| Act::CopyValue(i, t)),
        1 => prop::collection::vec((new_path(), size()), 1..40).prop_map(Act::Bulk),
        3 => (any::<usize>(), size()).prop_map(|(i, s)| Act::Concurrent(i, s)),
        1 => Just(Act::Reopen),
        1 => Just(Act::Compact),
    ]
}

fn nth_path(m: &Model, i: usize) -> Option<String> {
    if m.is_empty() {
        None
    } else {
        m.keys().nth(i % m.len()).cloned()
    }
}

fn run_model(durability: Durability, setup: usize, setup_sizes: Vec<usize>, acts: Vec<Act>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(durability)).unwrap();
    let mut m = Model::new();
    // Many siblings, so leaves are full and values of ~256 bytes cross the split.
    let items: Vec<(String, Vec<u8>)> =
        (0..setup).map(|i| (format!("/d/k{i:04}"), value_of(i as u64, setup_sizes[i % setup_sizes.len()]))).collect();
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    for (p, v) in &items {
        model_put(&mut m, p, v);
    }
    let mut kept: Vec<(Snapshot, Model)> = Vec::new();
    for (step, a) in acts.iter().enumerate() {
        let seed = step as u64 * 1000 + 17;
        match a {
            Act::PutExisting(i, s) => {
                let Some(p) = nth_path(&m, *i) else { continue };
                let v = value_of(seed, *s);
                let mut t = store.begin();
                t.put(&p, &v).unwrap();
                t.commit().unwrap();
                model_put(&mut m, &p, &v);
            }
            Act::PutNew(p, s) => {
                let v = value_of(seed, *s);
                let mut t = store.begin();
                t.put(p, &v).unwrap();
                t.commit().unwrap();
                model_put(&mut m, p, &v);
            }
            Act::Multi(list) => {
                let mut t = store.begin();
                let mut writes = Vec::new();
                for (j, (i, s)) in list.iter().enumerate() {
                    let Some(p) = nth_path(&m, *i) else { continue };
                    let v = value_of(seed + j as u64, *s);
                    t.put(&p, &v).unwrap();
                    writes.push((p, v));
                }
                t.commit().unwrap();
                for (p, v) in writes {
                    model_put(&mut m, &p, &v);
                }
            }
            Act::DeleteLeaf(i) => {
                let leaves: Vec<String> =
                    m.keys().filter(|k| !m.keys().any(|o| o.starts_with(&format!("{k}/")))).cloned().collect();
                if leaves.is_empty() {
                    continue;
                }
                let p = &leaves[i % leaves.len()];
                let mut t = store.begin();
                assert!(t.delete(p).unwrap());
                t.commit().unwrap();
                m.remove(p);
            }
            Act::DeleteTree(i) => {
                let Some(p) = nth_path(&m, *i) else { continue };
                let mut t = store.begin();
                t.delete_tree(&p).unwrap();
                t.commit().unwrap();
                m.retain(|k, _| !is_below(k, &p));
            }
            Act::CopyTree(i, to) => {
                let Some(from) = nth_path(&m, *i) else { continue };
                if is_below(to, &from) || is_below(&from, to) {
                    continue;
                }
                let mut t = store.begin();
                t.copy_tree(&from, to).unwrap();
                t.commit().unwrap();
                let copied: Vec<(String, Vec<u8>)> = m
                    .iter()
                    .filter(|(k, _)| is_below(k, &from))
                    .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
                    .collect();
                m.retain(|k, _| !is_below(k, to));
                for (k, v) in copied {
                    model_put(&mut m, &k, &v);
                }
            }
            Act::CopyValue(i, to) => {
                let Some(from) = nth_path(&m, *i) else { continue };
                let mut t = store.begin();
                t.copy(&from, to).unwrap();
                t.commit().unwrap();
                let v = m[&from].clone();
                model_put(&mut m, to, &v);
            }
            Act::Bulk(list) => {
                let items: Vec<(String, Vec<u8>)> =
                    list.iter().enumerate().map(|(j, (p, s))| (p.clone(), value_of(seed + j as u64, *s))).collect();
                store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
                for (p, v) in &items {
                    model_put(&mut m, p, v);
                }
            }
            Act::Concurrent(i, s) => {
                // `other` stays open (same base) while a one-key commit lands:
                // it must then conflict on what it read.
                let Some(p) = nth_path(&m, *i) else { continue };
                let mut other = store.begin();
                let seen = other.get(&p).unwrap().map(<[u8]>::to_vec);
                assert_eq!(seen.as_deref(), Some(&m[&p][..]));
                let v = value_of(seed, *s);
                let mut t = store.begin();
                t.put(&p, &v).unwrap();
                t.commit().unwrap();
                model_put(&mut m, &p, &v);
                other.put("/conc", b"x").unwrap();
                match other.commit() {
                    Err(Error::Conflict { path }) => assert_eq!(path, p),
                    r => panic!("step {step}: a transaction that read {p} before a commit wrote it committed: {r:?}"),
                }
            }
            Act::Reopen => {
                drop(kept.drain(..));
                drop(store);
                store = Store::open(dir.path(), options(durability)).unwrap();
                check(&store.snapshot(), &m, &format!("reopen at step {step}"));
            }
            Act::Compact => {
                store.compact().unwrap();
            }
        }
        if step % 7 == 0 {
            check(&store.snapshot(), &m, &format!("step {step} {a:?}"));
        }
        if step % 5 == 0 {
            kept.push((store.snapshot(), m.clone()));
        }
    }
    check(&store.snapshot(), &m, "end");
    for (s, sm) in &kept {
        check(s, sm, &format!("kept version {}", s.version()));
    }
    store.verify().unwrap();
    drop(kept);
    drop(store);
    let store = Store::open(dir.path(), options(durability)).unwrap();
    check(&store.snapshot(), &m, "after the last reopen");
    let reader = Reader::open(dir.path()).unwrap();
    check(&reader.snapshot().unwrap(), &m, "reader");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn one_key_commits_match_a_model(
        setup in 1usize..400,
        setup_sizes in prop::collection::vec(size(), 1..8),
        acts in prop::collection::vec(act(), 1..120),
        sync in any::<bool>(),
    ) {
        run_model(if sync { Durability::Sync } else { Durability::None }, setup, setup_sizes, acts);
    }
}

/// Puts that grow one value past the split threshold and back, in a leaf
/// that is nearly full, one byte at a time around the boundary.
#[test]
fn a_value_grown_byte_by_byte_across_the_split_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Durability::None)).unwrap();
    let mut m = Model::new();
    for n in [6usize, 7, 8, 9, 10, 12, 16] {
        let mut t = store.begin();
        t.delete_tree("/").unwrap();
        t.commit().unwrap();
        m.clear();
        let items: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("/q/{i:02}"), value_of(i as u64, 200))).collect();
        let mut t = store.begin();
        for (p, v) in &items {
            t.put(p, v).unwrap();
            model_put(&mut m, p, v);
        }
        t.commit().unwrap();
        for target in 0..n {
            for len in (0..=256).step_by(3).chain((0..=256).rev().step_by(5)) {
                let p = format!("/q/{target:02}");
                let v = value_of(len as u64 + target as u64, len);
                let mut t = store.begin();
                t.put(&p, &v).unwrap();
                t.commit().unwrap();
                model_put(&mut m, &p, &v);
                let s = store.snapshot();
                assert_eq!(s.get(&p).unwrap(), Some(&v[..]), "n {n} target {target} len {len}");
            }
            check(&store.snapshot(), &m, &format!("n {n} target {target}"));
        }
    }
    drop(store);
    let store = Store::open(dir.path(), options(Durability::None)).unwrap();
    check(&store.snapshot(), &m, "reopened");
}

/// The longest key below a subtree, kept through patched leaves and
/// patched internal nodes: a copy that makes a path exactly the limit is
/// allowed, one byte more is refused.
#[test]
fn the_longest_key_below_survives_one_key_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Durability::None)).unwrap();
    // A long path under /s, among many short ones (several leaves).
    let long = format!("/s/{}/{}", "l".repeat(200), "m".repeat(200));
    let mut t = store.begin();
    for i in 0..3000 {
        t.put(&format!("/s/a{i:05}"), value_of(i, 40)).unwrap();
    }
    t.put(&long, b"v").unwrap();
    t.commit().unwrap();
    // Many one-key commits to entries next to the long key and elsewhere.
    for i in 0..500u64 {
        let mut t = store.begin();
        let p = if i % 3 == 0 { long.clone() } else { format!("/s/a{:05}", (i * 7919) % 3000) };
        t.put(&p, value_of(i, (i % 257) as usize)).unwrap();
        t.commit().unwrap();
    }
    // The longest path below /s is `long`: 3 + 1 + 200 + 1 + 200 = 405 bytes,
    // 402 of them below "/s". A destination of length L gives L + 402.
    let below = long.len() - "/s".len();
    let max = 3072; // path::MAX_PATH_BYTES, the terminating byte included in the error's count
    let fits = max - below; // destination length that makes the longest path exactly max bytes
    let dest = |len: usize| {
        // "/t/" then segments of at most 200 bytes, total `len`.
        let mut p = String::from("/t");
        while p.len() < len {
            let room = len - p.len() - 1;
            p.push('/');
            p.push_str(&"d".repeat(room.clamp(1, 200)));
        }
        assert_eq!(p.len(), len);
        p
    };
    let mut t = store.begin();
    t.copy_tree("/s", &dest(fits)).expect("a copy up to the limit");
    t.abort();
    let mut t = store.begin();
    match t.copy_tree("/s", &dest(fits + 1)) {
        Err(Error::CopyTooDeep { .. }) => {}
        r => panic!("a copy one byte past the limit: {r:?}"),
    }
}

// ---- conflicts ----

fn store_at(dir: &std::path::Path) -> Store {
    Store::open(dir, options(Durability::None)).unwrap()
}

fn put1(store: &Store, p: &str, v: &[u8]) -> u64 {
    let mut t = store.begin();
    t.put(p, v).unwrap();
    t.commit().unwrap()
}

fn expect_conflict(r: shoal::Result<u64>, label: &str) {
    assert!(matches!(r, Err(Error::Conflict { .. })), "{label}: {r:?}");
}

#[test]
fn conflicts_are_still_raised() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    put1(&store, "/a/x", b"1");
    put1(&store, "/a/y", b"1");

    // Same base, the other commits first (it alone besides this one).
    let mut t1 = store.begin();
    t1.get("/a/x").unwrap();
    t1.put("/b", b"t1").unwrap();
    let mut t2 = store.begin();
    t2.put("/a/x", b"2").unwrap();
    t2.commit().unwrap();
    expect_conflict(t1.commit(), "same base");

    // Older base; a commit by a transaction begun later, alone at its base.
    let mut old = store.begin();
    old.get("/a/y").unwrap();
    put1(&store, "/z", b"unrelated");
    put1(&store, "/a/y", b"2");
    old.put("/b", b"old").unwrap();
    expect_conflict(old.commit(), "older base");

    // Begun after a commit that had nobody to record for, then another
    // commit it must see.
    put1(&store, "/a/x", b"3");
    let mut late = store.begin();
    late.get("/a/x").unwrap();
    put1(&store, "/a/x", b"4");
    late.put("/b", b"late").unwrap();
    expect_conflict(late.commit(), "begun after an unrecorded commit");

    // Bulk load while a transaction is open.
    let mut t = store.begin();
    t.get("/a/new").unwrap();
    store.bulk_load([("/a/new", b"bulk".as_slice())]).unwrap();
    t.put("/b", b"x").unwrap();
    expect_conflict(t.commit(), "bulk load");

    // A listing, a child created by a one-key commit.
    let mut t = store.begin();
    t.list("/a").unwrap();
    put1(&store, "/a/w", b"child");
    t.put("/b", b"x").unwrap();
    expect_conflict(t.commit(), "list");

    // Copy source changed.
    let mut t = store.begin();
    t.copy_tree("/a", "/c").unwrap();
    put1(&store, "/a/x", b"5");
    expect_conflict(t.commit(), "copy_tree source");

    let mut t = store.begin();
    t.copy("/a/y", "/cv").unwrap();
    put1(&store, "/a/y", b"6");
    expect_conflict(t.commit(), "copy source");

    // Subtree deleted under a read.
    let mut t = store.begin();
    t.get("/a/x").unwrap();
    let mut d = store.begin();
    d.delete_tree("/a").unwrap();
    d.commit().unwrap();
    t.put("/b", b"x").unwrap();
    expect_conflict(t.commit(), "subtree delete");

    // Write-write: both put the same key, no read.
    let mut t1 = store.begin();
    t1.put("/ww", b"1").unwrap();
    let mut t2 = store.begin();
    t2.put("/ww", b"2").unwrap();
    t2.commit().unwrap();
    expect_conflict(t1.commit(), "write-write");

    // Two other transactions at the same base, one aborted: the one left
    // must still see the commit.
    put1(&store, "/k", b"0");
    let mut a = store.begin();
    a.get("/k").unwrap();
    let b = store.begin();
    let mut c = store.begin();
    c.put("/k", b"1").unwrap();
    drop(b);
    c.commit().unwrap();
    a.put("/b", b"x").unwrap();
    expect_conflict(a.commit(), "a third at the base aborted");

    // Two open at different bases, the committing one at the newer base,
    // alone at its base: the older one must see it.
    put1(&store, "/k", b"2");
    let mut older = store.begin();
    older.get("/k").unwrap();
    put1(&store, "/unrelated", b"u");
    let mut newer = store.begin();
    newer.put("/k", b"3").unwrap();
    newer.commit().unwrap();
    older.put("/b", b"x").unwrap();
    expect_conflict(older.commit(), "older at another base");

    // The committing transaction's base also holds another transaction
    // that already ended by commit.
    put1(&store, "/k", b"4");
    let mut r = store.begin();
    r.get("/k").unwrap();
    let mut w1 = store.begin();
    w1.put("/other", b"1").unwrap();
    let mut w2 = store.begin();
    w2.put("/k", b"5").unwrap();
    w1.commit().unwrap();
    w2.commit().unwrap();
    r.put("/b", b"x").unwrap();
    expect_conflict(r.commit(), "after two commits at one base");
}

/// Threads doing read-modify-write increments on shared counters, with
/// retries on conflict, and transactions that stay open across many
/// commits: no increment may be lost.
#[test]
fn concurrent_increments_lose_nothing() {
    for durability in [Durability::None, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), options(durability)).unwrap());
        for c in 0..3 {
            put1(&store, &format!("/ctr/{c}"), b"0");
        }
        let threads = 4;
        let per = if durability == Durability::Sync { 150 } else { 600 };
        let done = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, done, barrier) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut rng = t as u64 * 7 + 1;
                    for i in 0..per {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let c = (rng >> 33) % 3;
                        let p = format!("/ctr/{c}");
                        loop {
                            let mut txn = store.begin();
                            let v: u64 = std::str::from_utf8(txn.get(&p).unwrap().unwrap()).unwrap().parse().unwrap();
                            if (rng >> 40).is_multiple_of(4) {
                                std::thread::yield_now();
                            }
                            txn.put(&p, (v + 1).to_string()).unwrap();
                            // Some transactions also write a key of their own.
                            if i % 5 == 0 {
                                txn.put(&format!("/own/{t}"), i.to_string()).unwrap();
                            }
                            match txn.commit() {
                                Ok(_) => break,
                                Err(Error::Conflict { .. }) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = store.snapshot();
        let total: u64 = (0..3)
            .map(|c| {
                std::str::from_utf8(s.get(&format!("/ctr/{c}")).unwrap().unwrap()).unwrap().parse::<u64>().unwrap()
            })
            .sum();
        assert_eq!(total, done.load(Ordering::Relaxed), "{durability:?}: increments lost");
    }
}

// ---- a crafted leaf ----

/// A leaf whose entry hints lie (checksum valid): a commit that rewrites
/// the leaf must write what the entry-by-entry rebuild writes, which
/// recomputes the hints; so a lookup in the new version agrees with its
/// scan. Before the change every rewrite of the leaf rebuilt it.
#[test]
fn a_commit_over_a_leaf_with_lying_hints_writes_what_the_rebuild_writes() {
    let names = ["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff", "gggg", "hhhh"];
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), options(Durability::Sync)).unwrap();
        let mut t = store.begin();
        for n in names {
            t.put(&format!("/k/{n}"), n.as_bytes()).unwrap();
        }
        t.commit().unwrap();
        store.checkpoint().unwrap();
    }
    let path = arena_path(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let (at, mut node) = leaves(&bytes).into_iter().last().expect("a leaf");
    let count = u16::from_le_bytes([node[2], node[3]]) as usize;
    let prefix = u16::from_le_bytes([node[12], node[13]]) as usize;
    let hints = (16 + prefix).next_multiple_of(8);
    let e = (0..count).find(|&i| node[crafted::leaf_entry(&node, i).1].ends_with(b"eeee")).expect("entry eeee");
    // Its hint made 0: smaller than those before it.
    node[hints + 8 * e..hints + 8 * e + 8].copy_from_slice(&0u64.to_le_bytes());
    reseal(&mut node);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&node, at as u64).unwrap();

    let store = Store::open(dir.path(), options(Durability::Sync)).unwrap();
    let before = store.snapshot();
    let in_scan = snapshot_model(&before).contains_key("/k/eeee");
    let by_get = before.get("/k/eeee").unwrap().is_some();
    eprintln!("crafted leaf: /k/eeee in scan {in_scan}, by get {by_get}");
    // One inline value of another entry of that leaf rewritten.
    put1(&store, "/k/bbbb", b"new");
    let after = store.snapshot();
    assert_eq!(after.get("/k/bbbb").unwrap(), Some(&b"new"[..]));
    let scan = snapshot_model(&after);
    assert_eq!(
        after.get("/k/eeee").unwrap().map(<[u8]>::to_vec),
        scan.get("/k/eeee").cloned(),
        "the rewritten leaf kept the crafted hints (a rebuild recomputes them): lookup and scan disagree"
    );
}

use common::model_put;
use crafted::{arena_path, leaves, reseal};

// ---- the writer killed while it commits, a reader in another process ----

const KILL_CHILD: &str = "SHOAL_ONE_KEY_COMMITS_CHILD";

/// Value `i` of the child's stream: sizes 0..=300 and some blobs.
fn stream_value(i: u64) -> Vec<u8> {
    let len = match i % 10 {
        0 => 5000,
        1 => 256,
        2 => 257,
        _ => (i * 37 % 301) as usize,
    };
    value_of(i, len)
}

fn stream_path(i: u64) -> String {
    format!("/w/{:03}/{}", i % 512, i % 4096)
}

#[test]
fn a_writer_killed_mid_stream_loses_no_acknowledged_commit() {
    if let Ok(dir) = std::env::var(KILL_CHILD) {
        // The child: commits forever, printing each acknowledged one.
        let mut o = options(Durability::Sync);
        o.auto_compact = std::env::var("SHOAL_ONE_KEY_COMMITS_COMPACT").is_ok();
        o.compact_min_bytes = 8 << 20;
        o.checkpoint_journal_bytes = 4 << 20;
        let store = Store::open(std::path::Path::new(&dir), o).unwrap();
        let start: u64 = std::env::var("SHOAL_ONE_KEY_COMMITS_START").unwrap().parse().unwrap();
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for i in start.. {
            let mut t = store.begin();
            t.put(&stream_path(i), stream_value(i)).unwrap();
            t.put("/w/last", i.to_string()).unwrap();
            t.commit().unwrap();
            writeln!(out, "ACK {i}").unwrap();
            out.flush().unwrap();
        }
        unreachable!();
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut acked: u64 = 0; // commits 0..acked acknowledged
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    for round in 0..6 {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "a_writer_killed_mid_stream_loses_no_acknowledged_commit",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(KILL_CHILD, dir.path())
        .env("SHOAL_ONE_KEY_COMMITS_START", acked.to_string())
        .stdout(std::process::Stdio::piped());
        if round % 2 == 1 {
            cmd.env("SHOAL_ONE_KEY_COMMITS_COMPACT", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // A reader in this process follows the writer meanwhile.
        let stop = Arc::new(AtomicBool::new(false));
        let reader_dir = dir.path().to_path_buf();
        let reader_stop = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut checked = 0u64;
            let mut r = None;
            while !reader_stop.load(Ordering::Relaxed) {
                if r.is_none() {
                    r = Reader::open(&reader_dir).ok();
                    if r.is_none() {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                }
                let s = match r.as_ref().unwrap().snapshot() {
                    Ok(s) => s,
                    Err(e) => {
                        if checked > 0 {
                            eprintln!("reader: snapshot failed after {checked} good ones: {e}");
                        }
                        r = None;
                        continue;
                    }
                };
                if let Some(last) = s.get("/w/last").unwrap() {
                    let last: u64 = std::str::from_utf8(last).unwrap().parse().unwrap();
                    // The newest commit's value, and a few older ones not overwritten since.
                    for i in [last, last.saturating_sub(1), last.saturating_sub(4095)] {
                        if i + 4096 > last {
                            let got = s.get(&stream_path(i)).unwrap();
                            assert_eq!(got, Some(&stream_value(i)[..]), "reader: commit {i} at last {last}");
                        }
                    }
                    checked += 1;
                }
            }
            checked
        });
        let kill_after = 2000 + (rng >> 40) % 6000;
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut last_seen = None;
        while let Some(Ok(line)) = lines.next() {
            let Some(i) = line.strip_prefix("ACK ") else { continue };
            let i: u64 = i.parse().unwrap();
            last_seen = Some(i);
            if i >= acked + kill_after {
                break;
            }
        }
        // SIGKILL, mid-stream.
        child.kill().unwrap();
        let _ = child.wait();
        // Anything still in the pipe was acknowledged before the kill.
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("ACK ") {
                last_seen = Some(i.parse().unwrap());
            }
        }
        stop.store(true, Ordering::Relaxed);
        let checked = reader.join().unwrap();
        let last = last_seen.expect("the child committed something");
        let store = Store::open(dir.path(), options(Durability::Sync)).unwrap();
        let s = store.snapshot();
        let have: u64 = std::str::from_utf8(s.get("/w/last").unwrap().unwrap()).unwrap().parse().unwrap();
        assert!(have >= last, "round {round}: commit {last} acknowledged, store has {have}");
        // Every path's newest write up to `have` is there.
        for i in have.saturating_sub(4095)..=have {
            assert_eq!(s.get(&stream_path(i)).unwrap(), Some(&stream_value(i)[..]), "round {round}: commit {i}");
        }
        s.verify().unwrap();
        store.verify().unwrap();
        eprintln!("round {round}: killed at {last} (store at {have}), reader checked {checked} snapshots");
        acked = have + 1;
        drop(store);
    }
}
