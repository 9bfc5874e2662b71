//! Edge cases of `Scan::next_path` and the cursor's hint order check, and of
//! `Store::bulk_load`'s bottom-up path into an empty tree: every result is
//! compared with a simple model and with the general (ops) path, which a
//! load into a store that already holds one unrelated key takes.

mod common;
mod crafted;

use std::collections::{BTreeMap, BTreeSet};

use crafted::{arena_path, leaf_entry, leaves, reseal};
use std::os::unix::fs::FileExt;

use rand::{Rng, SeedableRng};
use shoal::{ChangeKind, Durability, Error, Options, Reader, Snapshot, Store, WatchEvent};

/// The unrelated key that sends a load through the ops path.
const MARKER: &str = "/zzzz-marker";
const MAX_VALUE: usize = 20_000;

fn options(durability: Durability) -> Options {
    Options { durability, auto_compact: false, max_value_bytes: MAX_VALUE, create: true, ..Options::default() }
}

fn open(dir: &std::path::Path, durability: Durability) -> Store {
    Store::open(dir, options(durability)).unwrap()
}

/// A store that holds `MARKER` only, so that a load is merged as ops.
fn open_with_marker(dir: &std::path::Path, durability: Durability) -> Store {
    let store = open(dir, durability);
    let mut txn = store.begin();
    txn.put(MARKER, "m").unwrap();
    txn.commit().unwrap();
    store
}

type Items = Vec<(String, Vec<u8>)>;

/// Path order: segment by segment (the key order, `\0` for `/`).
fn path_key(p: &str) -> Vec<u8> {
    p[1..].bytes().map(|b| if b == b'/' { 0 } else { b }).collect()
}

fn in_path_order(m: &BTreeMap<String, Vec<u8>>, below: &str) -> Items {
    let mut v: Items = m
        .iter()
        .filter(|(k, _)| below == "/" || k.as_str() == below || k.starts_with(&format!("{below}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by_key(|(k, _)| path_key(k));
    v
}

fn by_entry(snap: &Snapshot, path: &str) -> Items {
    snap.scan(path).unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

fn by_next_path(snap: &Snapshot, path: &str) -> Items {
    let mut out = Vec::new();
    let mut scan = snap.scan(path).unwrap();
    while let Some(entry) = scan.next_path() {
        let (p, v) = entry.unwrap();
        out.push((p.to_string(), v.to_vec()));
    }
    out
}

fn without_marker(v: Items) -> Items {
    v.into_iter().filter(|(p, _)| p != MARKER).collect()
}

fn load(store: &Store, items: &Items) -> u64 {
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap()
}

fn changes_of(snap: &Snapshot, after: u64) -> Result<Vec<(String, ChangeKind)>, String> {
    snap.changes(after, "/").map(|c| c.iter().map(|c| (c.path(), c.kind())).collect()).map_err(|e| format!("{e:?}"))
}

/// Checks everything a reader can ask of a loaded snapshot against the model.
fn check_against_model(snap: &Snapshot, m: &BTreeMap<String, Vec<u8>>, what: &str, marker: bool) {
    let all = in_path_order(m, "/");
    assert_eq!(without_marker(by_entry(snap, "/")), all, "{what}: scan / by Entry::path");
    assert_eq!(without_marker(by_next_path(snap, "/")), all, "{what}: scan / by next_path");
    assert_eq!(snap.key_count(), m.len() as u64 + u64::from(marker), "{what}: key_count");
    for (p, v) in m {
        assert_eq!(snap.get(p).unwrap(), Some(v.as_slice()), "{what}: get {p}");
    }
    // Children of every node, and of the root.
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in m.keys() {
        let cut = p.rfind('/').unwrap();
        let parent = if cut == 0 { "/".to_string() } else { p[..cut].to_string() };
        children.entry(parent).or_default().insert(p[cut + 1..].to_string());
    }
    for (parent, names) in &children {
        let mut got: Vec<String> = snap.list(parent).unwrap();
        if parent == "/" {
            got.retain(|n| format!("/{n}") != MARKER);
        }
        let mut want: Vec<String> = names.iter().cloned().collect();
        want.sort_by_key(|n| n.as_bytes().to_vec());
        got.sort_by_key(|n| n.as_bytes().to_vec());
        assert_eq!(got, want, "{what}: list {parent}");
    }
    // Subtree scans of a sample of nodes (a leaf prefix inside the subtree
    // takes `Frame::holds`' shortcut).
    let step = (m.len() / 40).max(1);
    for p in m.keys().step_by(step) {
        let want = in_path_order(m, p);
        assert_eq!(by_entry(snap, p), want, "{what}: scan {p} by Entry::path");
        assert_eq!(by_next_path(snap, p), want, "{what}: scan {p} by next_path");
    }
    snap.verify().unwrap();
}

/// Loads `items` both ways and compares them with the model and each other.
fn both_paths(items: &Items, what: &str) {
    let m = common::load_model(items);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (empty, other) = (open(d1.path(), Durability::None), open_with_marker(d2.path(), Durability::None));
    let (v1, v2) = (load(&empty, items), load(&other, items));
    let (s1, s2) = (empty.snapshot(), other.snapshot());
    check_against_model(&s1, &m, &format!("{what} (empty tree)"), false);
    check_against_model(&s2, &m, &format!("{what} (ops path)"), true);
    assert_eq!(changes_of(&s1, v1 - 1), changes_of(&s2, v2 - 1), "{what}: change sets of the two paths differ");
    let d1 = s1.at_version(v1 - 1).unwrap().diff(&s1, "/").unwrap().changes;
    let d2: Vec<_> =
        s2.at_version(v2 - 1).unwrap().diff(&s2, "/").unwrap().changes.into_iter().filter(|c| c.0 != MARKER).collect();
    assert_eq!(d1, d2, "{what}: diffs of the two paths differ");
    let want: Vec<(String, ChangeKind)> =
        in_path_order(&m, "/").into_iter().map(|(p, _)| (p, ChangeKind::Set)).collect();
    assert_eq!(d1, want, "{what}: diff against the model");
}

fn tricky_items() -> Items {
    let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
    let mut items: Items = Vec::new();
    let values: [usize; 7] = [0, 1, 255, 256, 257, 4 * 4096, MAX_VALUE];
    let paths = [
        "/a",
        "/a b",
        "/a/b",
        "/ab",
        "/a/b/c",
        "/a!",
        "/a/b c",
        "/a/bc",
        "/a/b/c/d/e/f",
        "/é",
        "/è/ö/x",
        "/é/ü",
        "/aé",
        "/aè/x",
        "/\u{1F600}/\u{1F601}",
        "/\u{1F600}\u{1F601}",
        "/\u{1F600}",
        "/日本/語",
        "/日本語",
        "/~",
        "/A",
        "/-",
        "/a/b/cccccccccccccccccccccc1",
        "/a/b/cccccccccccccccccccccc2",
        "/a/b/cccccccccccccccccccccc/x",
        "/a/b/ccccccccX",
    ];
    for (i, p) in paths.iter().enumerate() {
        items.push((p.to_string(), vec![i as u8; values[i % values.len()]]));
    }
    // Duplicates first, in the middle and last; an ancestor given after its
    // descendants; a duplicate of an ancestor the load would otherwise add.
    items.insert(0, ("/a/b".into(), b"first of three".to_vec()));
    items.insert(10, ("/a/b".into(), b"second of three".to_vec()));
    items.push(("/a/b".into(), b"last of three".to_vec()));
    items.push(("/a/b/c/d".into(), b"an ancestor given late".to_vec()));
    items.push(("/a".into(), vec![9u8; 257]));
    items.push(("/a".into(), vec![8u8; 256]));
    // Long keys: 3072 bytes, segments of 255, multi-byte characters
    // straddling the cut between a leaf prefix and suffixes.
    let seg = long('é', 127); // 254 bytes
    for i in 0..40 {
        let mut p = String::new();
        for _ in 0..11 {
            p.push('/');
            p.push_str(&seg);
            p.push('x');
        }
        // 11 * 256 = 2816 bytes; the last segment takes 256 - 1 more.
        p.push('/');
        p.push_str(&long(['é', 'è', 'ê'][i % 3], 120));
        p.push_str(&format!("{i:03}"));
        let fill = 3072 - p.len();
        p.push_str(&long('z', fill.min(255)));
        assert!(p.len() <= 3072, "{}", p.len());
        items.push((p, vec![i as u8; [0, 256, 257][i % 3]]));
    }
    items
}

#[test]
fn tricky_orderings_duplicates_and_long_paths_read_as_the_model_on_both_paths() {
    both_paths(&tricky_items(), "tricky");
}

#[test]
fn random_loads_read_as_the_model_on_both_paths() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_10ad);
    let alphabet = ["a", "b", "a b", "ab", "a!", "é", "è", "\u{10348}", "aa", "x", "日", "-", "a0", "aaaaaaaaa"];
    for round in 0..24 {
        let n = match round % 4 {
            0 => 1 + rng.gen_range(0..5),
            1 => 50 + rng.gen_range(0..200),
            2 => 2000 + rng.gen_range(0..2000),
            _ => 8000 + rng.gen_range(0..4000),
        };
        let mut items: Items = Vec::new();
        for _ in 0..n {
            let depth = rng.gen_range(1..5);
            let mut p = String::new();
            for _ in 0..depth {
                p.push('/');
                p.push_str(alphabet[rng.gen_range(0..alphabet.len())]);
                if rng.gen_bool(0.5) {
                    p.push_str(&rng.gen_range(0..30).to_string());
                }
            }
            let len = [0, 1, 8, 255, 256, 257, 1000][rng.gen_range(0..7)];
            let b: u8 = rng.gen();
            items.push((p, vec![b; len]));
            // Duplicates everywhere.
            if rng.gen_bool(0.05) && !items.is_empty() {
                let j = rng.gen_range(0..items.len());
                let dup = items[j].0.clone();
                items.push((dup, vec![rng.gen(); 3]));
            }
        }
        both_paths(&items, &format!("round {round} ({n} items)"));
    }
}

#[test]
fn a_load_into_an_empty_tree_with_history_reads_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::None);
    let mut txn = store.begin();
    for i in 0..500 {
        txn.put(&format!("/old/{i}"), "old").unwrap();
    }
    txn.put("/a/b", "old a/b").unwrap();
    let v_old = txn.commit().unwrap();
    let mut txn = store.begin();
    txn.delete_tree("/").unwrap();
    let v_empty = txn.commit().unwrap();
    assert_eq!(store.snapshot().key_count(), 0);
    let items = tricky_items();
    let m = common::load_model(&items);
    let v = load(&store, &items);
    let snap = store.snapshot();
    check_against_model(&snap, &m, "after history", false);
    // Older versions read as they were.
    let old = snap.at_version(v_old).unwrap();
    assert_eq!(old.get("/a/b").unwrap(), Some(&b"old a/b"[..]));
    assert_eq!(old.key_count(), 503); // /old, its 500 children, /a, /a/b
    assert_eq!(snap.at_version(v_empty).unwrap().key_count(), 0);
    // The diff from the version before the deletion: /old gone, the rest set.
    let diff = old.diff(&snap, "/").unwrap().changes;
    assert!(diff.contains(&("/old".to_string(), ChangeKind::Delete)));
    assert!(diff.contains(&("/a/b".to_string(), ChangeKind::Set)));
    let want: Vec<(String, ChangeKind)> =
        in_path_order(&m, "/").into_iter().map(|(p, _)| (p, ChangeKind::Set)).collect();
    assert_eq!(changes_of(&snap, v - 1).unwrap(), want);
    // Compacted and reopened: the same.
    store.compact().unwrap();
    check_against_model(&store.snapshot(), &m, "after history, compacted", false);
    drop(snap);
    drop(old);
    drop(store);
    let store = open(dir.path(), Durability::None);
    check_against_model(&store.snapshot(), &m, "after history, reopened", false);
    store.verify().unwrap();
}

/// Transactions begun before a load: each scenario must end the same way
/// whether the load is written bottom-up or merged as ops.
#[test]
fn transactions_open_across_a_load_end_as_on_the_ops_path() {
    type Scenario = fn(&mut shoal::Transaction<'_>);
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("get absent ancestor", |t| {
            assert_eq!(t.get("/p").unwrap(), None);
            t.put("/elsewhere", "1").unwrap();
        }),
        ("get absent deep ancestor", |t| {
            assert_eq!(t.get("/p/q/r").unwrap(), None);
            t.put("/elsewhere", "1").unwrap();
        }),
        ("list root", |t| {
            let _ = t.list("/").unwrap();
            t.put("/elsewhere", "1").unwrap();
        }),
        ("list absent parent", |t| {
            assert!(t.list("/p/q").unwrap().is_empty());
            t.put("/elsewhere", "1").unwrap();
        }),
        ("delete_tree absent", |t| {
            assert!(!t.delete_tree("/p").unwrap());
        }),
        ("delete absent leaf", |t| {
            assert!(!t.delete("/p/q/r/s").unwrap());
        }),
        ("put below loaded", |t| {
            t.put("/p/q/new", "n").unwrap();
        }),
        ("put on loaded path", |t| {
            t.put("/p/q/r/s", "n").unwrap();
        }),
        ("copy_tree absent", |t| {
            let _ = t.copy_tree("/p", "/copy");
            t.put("/elsewhere", "1").unwrap();
        }),
        ("unrelated", |t| {
            assert_eq!(t.get("/unrelated").unwrap(), None);
            t.put("/unrelated", "1").unwrap();
        }),
        ("near prefix", |t| {
            assert_eq!(t.get("/p q").unwrap(), None);
            assert!(t.list("/pq").unwrap().is_empty());
            t.put("/p q", "1").unwrap();
        }),
    ];
    let items: Items = vec![("/p/q/r/s".into(), b"v".to_vec()), ("/p/t".into(), b"w".to_vec())];
    let mut outcomes: Vec<Vec<String>> = Vec::new();
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            if marker { open_with_marker(dir.path(), Durability::None) } else { open(dir.path(), Durability::None) };
        let mut txns = Vec::new();
        for (_, s) in &scenarios {
            let mut t = store.begin();
            s(&mut t);
            txns.push(t);
        }
        load(&store, &items);
        let mut out = Vec::new();
        for ((name, _), t) in scenarios.iter().zip(txns) {
            out.push(format!(
                "{name}: {}",
                match t.commit() {
                    Ok(_) => "committed".to_string(),
                    Err(Error::Conflict { path }) => format!("conflict at {path}"),
                    Err(e) => format!("error {e:?}"),
                }
            ));
        }
        outcomes.push(out);
    }
    assert_eq!(outcomes[0], outcomes[1], "bottom-up load (left) vs ops path (right)");
}

#[test]
fn watches_see_a_loaded_subtree_as_on_the_ops_path() {
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            if marker { open_with_marker(dir.path(), Durability::None) } else { open(dir.path(), Durability::None) };
        let reader = Reader::open(dir.path()).unwrap();
        let mut on_a = reader.watch("/a").unwrap();
        let mut on_ab = reader.watch("/a/b").unwrap();
        let mut on_missing = reader.watch("/a/bb").unwrap();
        let v = load(&store, &vec![("/a/b/c".into(), b"1".to_vec()), ("/ab".into(), b"2".to_vec())]);
        let ev = |p: &str| WatchEvent::Change { version: v, path: p.to_string(), kind: ChangeKind::Set };
        assert_eq!(on_a.poll().unwrap(), vec![ev("/a"), ev("/a/b"), ev("/a/b/c")], "marker {marker}");
        assert_eq!(on_ab.poll().unwrap(), vec![ev("/a/b"), ev("/a/b/c")], "marker {marker}");
        assert_eq!(on_missing.poll().unwrap(), vec![], "marker {marker}");
    }
    // Past one change set's 1 MiB: a Resync listing what differs.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::None);
    let reader = Reader::open(dir.path()).unwrap();
    let mut on_big = reader.watch("/big/7").unwrap();
    let items: Items = (0..120_000).map(|i| (format!("/big/{}/{}-with-some-length", i % 10, i), vec![1u8])).collect();
    let m = common::load_model(&items);
    let v = load(&store, &items);
    assert!(matches!(store.snapshot().changes(v - 1, "/"), Err(Error::ChangesNotListed { .. })));
    let events = on_big.poll().unwrap();
    let want: Vec<(String, ChangeKind)> =
        in_path_order(&m, "/big/7").into_iter().map(|(p, _)| (p, ChangeKind::Set)).collect();
    assert_eq!(events, vec![WatchEvent::Resync { from: v - 1, to: v, changes: want }]);
    check_against_model(&store.snapshot(), &m, "big", false);
}

/// The change set lists keys up to exactly 1 MiB; one byte more overflows,
/// on both paths alike.
#[test]
fn change_set_overflow_at_its_edge_is_the_same_on_both_paths() {
    // Each key "kNNNNNN-<pad>" listed as 3 + len bytes.
    for extra in [0usize, 1] {
        let key_len = 100;
        let per = 3 + key_len;
        let n = node_max() / per;
        let rest = node_max() - n * per; // bytes left after n keys
        let mut items: Items = (0..n).map(|i| (format!("/k{i:07}{}", "p".repeat(key_len - 8)), vec![])).collect();
        // One more key that fills exactly what is left (+ extra).
        if rest >= 4 {
            let len = rest - 3 + extra;
            items.push((format!("/z{}", "q".repeat(len - 1)), vec![]));
        }
        let mut results = Vec::new();
        for marker in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = if marker {
                open_with_marker(dir.path(), Durability::None)
            } else {
                open(dir.path(), Durability::None)
            };
            let v = load(&store, &items);
            results.push(
                changes_of(&store.snapshot(), v - 1)
                    .map(|c| c.len())
                    .map_err(|e| e.split(' ').next().unwrap().to_string()),
            );
        }
        assert_eq!(results[0], results[1], "extra {extra}: bottom-up vs ops path");
    }
}

fn node_max() -> usize {
    1 << 20
}

#[test]
fn loads_then_copies_compaction_reopen_and_sync() {
    for durability in [Durability::None, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), durability);
        let items: Items = (0..6000u32)
            .map(|i| {
                (
                    format!("/local/domain/{}/{}", i / 4, ["name", "uuid", "mémoire", "vcpus"][i as usize % 4]),
                    vec![(i % 7) as u8; [1, 256, 257][i as usize % 3]],
                )
            })
            .collect();
        let mut m = common::load_model(&items);
        load(&store, &items);
        // A copy source whose own value is a blob (its link entry then
        // holds a blob reference and a link).
        let mut txn = store.begin();
        txn.put("/local/domain/7", vec![5u8; 300]).unwrap();
        txn.commit().unwrap();
        m.insert("/local/domain/7".into(), vec![5u8; 300]);
        let mut txn = store.begin();
        txn.copy_tree("/local/domain/7", "/copy/7").unwrap();
        txn.copy_tree("/local", "/mirror").unwrap();
        txn.put("/local/domain/7/extra", "x").unwrap();
        txn.commit().unwrap();
        let snapshot: Vec<(String, Vec<u8>)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in &snapshot {
            if let Some(rest) = k.strip_prefix("/local/domain/7") {
                if rest.is_empty() || rest.starts_with('/') {
                    m.insert(format!("/copy/7{rest}"), v.clone());
                }
            }
            if let Some(rest) = k.strip_prefix("/local") {
                m.insert(format!("/mirror{rest}"), v.clone());
            }
        }
        m.insert("/copy".into(), vec![]);
        m.insert("/local/domain/7/extra".into(), b"x".to_vec());
        check_against_model(&store.snapshot(), &m, &format!("{durability:?} copies"), false);
        store.compact().unwrap();
        check_against_model(&store.snapshot(), &m, &format!("{durability:?} compacted"), false);
        drop(store);
        let store = open(dir.path(), durability);
        check_against_model(&store.snapshot(), &m, &format!("{durability:?} reopened"), false);
        store.verify().unwrap();
    }
}

/// A load into an empty tree must respect the same limits as the ops path.
#[test]
fn refusals_are_the_same_on_both_paths() {
    let big: Items = (0..9000).map(|i| (format!("/v/{i}"), vec![0u8; MAX_VALUE])).collect();
    let mut results = Vec::new();
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            if marker { open_with_marker(dir.path(), Durability::Sync) } else { open(dir.path(), Durability::Sync) };
        let before = store.version();
        let r = store.bulk_load(big.iter().map(|(p, v)| (p.as_str(), v.as_slice())));
        results.push(r.as_ref().map(|_| ()).map_err(|e| format!("{e:?}").split(' ').next().unwrap().to_string()));
        if r.is_err() {
            assert_eq!(store.version(), before);
        }
    }
    assert_eq!(results[0], results[1]);
}

// ---- damaged arenas: a leaf rewritten with a valid checksum ----

/// Two entries of a leaf whose suffixes share their first eight bytes, the
/// bytes after them swapped: the scan must report damage (both ways), never
/// hand out keys out of order.
#[test]
fn a_leaf_with_equal_hints_out_of_order_is_damage_for_both_scans() {
    // Under "/p" the leaf has a prefix ("p"), and the scan reads the
    // entries after its first on its own; at the root it has none.
    for root in ["", "/p"] {
        for (swap_at, label) in [(9usize, "after the hint"), (3, "inside the hint"), (usize::MAX, "duplicate")] {
            let label = format!("{label}, below {root:?}");
            leaf_out_of_order_is_damage(root, swap_at, &label);
        }
    }
}

fn leaf_out_of_order_is_damage(root: &str, swap_at: usize, label: &str) {
    {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), Durability::None);
            let items: Items = vec![
                (format!("{root}/a"), b"1".to_vec()),
                (format!("{root}/bbbbbbbbbbbb1"), b"2".to_vec()),
                (format!("{root}/bbbbbbbbbbbb2"), b"3".to_vec()),
                (format!("{root}/c"), b"4".to_vec()),
            ];
            load(&store, &items);
            store.checkpoint().unwrap();
        }
        let path = arena_path(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let (at, mut node) = leaves(&bytes).into_iter().last().expect("a leaf");
        let count = u16::from_le_bytes([node[2], node[3]]) as usize;
        let tail_ending = |end: &[u8]| {
            (0..count).map(|i| leaf_entry(&node, i).1).find(|r| node[r.clone()].ends_with(end)).expect("the entry")
        };
        let (r1, r2) = (tail_ending(b"bbbbbbbbbbbb1"), tail_ending(b"bbbbbbbbbbbb2"));
        if swap_at == usize::MAX {
            let t = node[r1.clone()].to_vec();
            node[r2.clone()].copy_from_slice(&t);
        } else if swap_at == 9 {
            // Equal hints, the bytes after them out of order.
            node[r1.end - 1] = b'2';
            node[r2.end - 1] = b'1';
        } else {
            // The first entry's hint made greater than the second's.
            node[r1.start + swap_at] = b'c';
        }
        reseal(&mut node);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&node, at as u64).unwrap();
        let reader = Reader::open(dir.path()).unwrap();
        let snap = reader.snapshot().unwrap();
        let entries: Vec<Result<String, String>> =
            snap.scan("/").unwrap().map(|e| e.map(|e| e.path()).map_err(|e| format!("{e:?}"))).collect();
        assert!(entries.iter().any(|e| e.is_err()), "{label}: Entry scan of an out-of-order leaf gave {entries:?}");
        let mut scan = snap.scan("/").unwrap();
        let mut by_path = Vec::new();
        while let Some(e) = scan.next_path() {
            let failed = e.is_err();
            by_path.push(e.map(|(p, _)| p.to_string()).map_err(|e| format!("{e:?}")));
            if failed {
                break;
            }
        }
        assert!(by_path.iter().any(|e| e.is_err()), "{label}: next_path scan of an out-of-order leaf gave {by_path:?}");
    }
}

/// `copy_tree` refuses a copy that would make a path too long from the
/// longest key below the source (internal nodes' weights): the bottom-up
/// writer must record the same weights as the ops path.
#[test]
fn copy_depth_limits_read_from_weights_are_the_same_on_both_paths() {
    let seg = "s".repeat(255);
    let mut items: Items = Vec::new();
    for i in 0..300 {
        // Lengths that grow with i: the longest key sits deep in the tree.
        let extra = "t".repeat(i % 200 + 1);
        items.push((format!("/src/{i:04}/{seg}/{seg}/{extra}"), vec![1u8; [0, 257][i % 2]]));
    }
    let longest_below = items.iter().map(|(p, _)| p.len() - "/src".len()).max().unwrap();
    let mut results = Vec::new();
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            if marker { open_with_marker(dir.path(), Durability::None) } else { open(dir.path(), Durability::None) };
        load(&store, &items);
        let mut out = Vec::new();
        for to_len in [3072 - longest_below - 1, 3072 - longest_below, 3072 - longest_below + 1] {
            // A destination of exactly `to_len` bytes.
            let mut to = String::from("/d");
            while to.len() < to_len {
                let room = (to_len - to.len() - 1).min(255);
                if room == 0 {
                    to.push('x');
                    break;
                }
                to.push('/');
                to.push_str(&"d".repeat(room));
            }
            assert_eq!(to.len(), to_len);
            let mut txn = store.begin();
            let r = txn.copy_tree("/src", &to).map_err(|e| format!("{e:?}").split(' ').next().unwrap().to_string());
            out.push((to_len, r.clone()));
            if r.is_ok() {
                txn.commit().unwrap();
                let snap = store.snapshot();
                assert_eq!(by_entry(&snap, &to).len(), by_next_path(&snap, &to).len());
            }
        }
        results.push(out);
    }
    assert_eq!(results[0], results[1], "bottom-up load (left) vs ops path (right)");
    assert!(results[0][0].1.is_ok() && results[0][2].1.is_err(), "{:?}", results[0]);
}

/// A load that does not fit in the arena's reservation fails, and leaves
/// the store as usable as a failed ops-path commit does.
#[test]
fn a_load_past_the_reservation_fails_cleanly_on_both_paths() {
    let items: Items = (0..3000).map(|i| (format!("/f/{i}"), vec![(i % 250) as u8; 19_000])).collect();
    let mut results = Vec::new();
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { map_reserve_bytes: 32 << 20, ..options(Durability::Sync) };
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        if marker {
            let mut txn = store.begin();
            txn.put(MARKER, "m").unwrap();
            txn.commit().unwrap();
        }
        let before = store.version();
        let r = store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice())));
        let name = r.as_ref().map(|_| ()).map_err(|e| format!("{e:?}").split(' ').next().unwrap().to_string());
        results.push(name.clone());
        if name.is_err() {
            assert_eq!(store.version(), before, "marker {marker}: a failed load moved the version");
        }
        // Still takes commits once compacted (what the failure appended is
        // garbage on either path), reads back, verifies, reopens.
        store.compact().unwrap();
        let mut txn = store.begin();
        txn.put("/after", "a").unwrap();
        txn.commit().unwrap();
        store.verify().unwrap();
        drop(store);
        let store = Store::open(dir.path(), opts).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.get("/after").unwrap(), Some(&b"a"[..]), "marker {marker}");
        snap.verify().unwrap();
        let small: Items = vec![("/g/1".into(), b"x".to_vec())];
        load(&store, &small);
    }
    assert_eq!(results[0], results[1], "bottom-up load (left) vs ops path (right)");
}

/// A sync load, then the writer killed: the store opens with the load
/// (replayed or found), as the model says.
#[test]
fn a_sync_load_survives_the_writer_aborting() {
    if let Ok(dir) = std::env::var("REVIEW_LOAD_CHILD_DIR") {
        let store = open(std::path::Path::new(&dir), Durability::Sync);
        let marker = std::env::var("REVIEW_LOAD_CHILD_MARKER").is_ok();
        if marker {
            let mut txn = store.begin();
            txn.put(MARKER, "m").unwrap();
            txn.commit().unwrap();
        }
        load(&store, &tricky_items());
        let mut txn = store.begin();
        txn.put("/after/load", "x").unwrap();
        txn.commit().unwrap();
        std::process::abort();
    }
    let mut m = common::load_model(&tricky_items());
    m.insert("/after".into(), vec![]);
    m.insert("/after/load".into(), b"x".to_vec());
    for marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "a_sync_load_survives_the_writer_aborting", "--test-threads=1"])
            .env("REVIEW_LOAD_CHILD_DIR", dir.path());
        if marker {
            cmd.env("REVIEW_LOAD_CHILD_MARKER", "1");
        }
        let status = cmd.output().unwrap().status;
        assert!(!status.success(), "the child should abort");
        let store = open(dir.path(), Durability::Sync);
        check_against_model(&store.snapshot(), &m, &format!("after abort, marker {marker}"), marker);
        store.verify().unwrap();
    }
}

/// A second load into the tree the first wrote bottom-up goes through the
/// ops path: the two read as one model.
#[test]
fn a_second_load_over_the_first_reads_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::None);
    let first = tricky_items();
    let second: Items = first
        .iter()
        .step_by(3)
        .map(|(p, v)| (p.clone(), [&v[..v.len().min(MAX_VALUE - 1)], b"+"].concat()))
        .chain((0..3000).map(|i| (format!("/a/b/n{i}"), vec![(i % 200) as u8; i % 300])))
        .collect();
    load(&store, &first);
    load(&store, &second);
    let all: Items = first.iter().chain(&second).cloned().collect();
    check_against_model(&store.snapshot(), &common::load_model(&all), "second load", false);
}

/// A load into an empty tree committed while a compaction copies the
/// versions before it.
#[test]
fn a_load_during_a_compaction_reads_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::None);
    for round in 0..20 {
        let mut txn = store.begin();
        for i in 0..2000 {
            txn.put(&format!("/h/{round}/{i}"), vec![round as u8; 100]).unwrap();
        }
        txn.commit().unwrap();
    }
    let mut txn = store.begin();
    txn.delete_tree("/").unwrap();
    txn.commit().unwrap();
    let items: Items = (0..30_000).map(|i| (format!("/l/{}/{}", i % 97, i), vec![(i % 251) as u8; i % 400])).collect();
    let m = common::load_model(&items);
    std::thread::scope(|s| {
        let compaction = s.spawn(|| store.compact().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(5));
        load(&store, &items);
        compaction.join().unwrap();
    });
    check_against_model(&store.snapshot(), &m, "load during compaction", false);
    store.compact().unwrap();
    check_against_model(&store.snapshot(), &m, "compacted after", false);
    drop(store);
    let store = open(dir.path(), Durability::None);
    check_against_model(&store.snapshot(), &m, "reopened", false);
}
