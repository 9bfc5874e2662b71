//! Paths up to the 3072-byte limit, alone and with many long siblings, in
//! puts, bulk loads, copies of values and of subtrees, compaction and
//! reopen, against a plain model.
//!
//! Regression: keys longer than half a node made the builder cut a level of
//! two children into two nodes again on every pass, so a commit of one
//! ~1 KiB path (or of two sibling ones) never ended and grew memory until
//! the OOM killer came (`build::chunk_ranges` now keeps two children per
//! internal node at least).

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal::path::MAX_PATH_BYTES;
use shoal::{Durability, Error, Options, Store};

type Model = BTreeMap<String, Vec<u8>>;

/// A path of exactly `len` bytes (at least 2): segments of up to 255 bytes,
/// segment `i` made of the letter `seeds[i % seeds.len()]`, so that paths
/// built from the same first seeds share long prefixes.
fn long_path(seeds: &[u8], len: usize) -> String {
    assert!((2..=MAX_PATH_BYTES).contains(&len));
    let mut out = String::with_capacity(len);
    let mut remaining = len;
    let mut i = 0;
    while remaining > 0 {
        out.push('/');
        remaining -= 1;
        let mut take = remaining.min(255);
        // What is left must be nothing, or a separator and a segment.
        if remaining - take == 1 {
            take -= 1;
        }
        out.extend(std::iter::repeat_n(seeds[i % seeds.len()] as char, take));
        remaining -= take;
        i += 1;
    }
    assert_eq!(out.len(), len);
    out
}

fn path_strategy() -> impl Strategy<Value = String> {
    let seeds = prop::collection::vec(prop::sample::select(b"abc".to_vec()), 1..4);
    let len = prop_oneof![
        2 => 2usize..=MAX_PATH_BYTES,
        1 => (MAX_PATH_BYTES - 300)..=MAX_PATH_BYTES,
        1 => 900usize..1300,
    ];
    (seeds, len).prop_map(|(seeds, len)| long_path(&seeds, len))
}

#[derive(Clone, Debug)]
enum Action {
    Put(String, Vec<u8>),
    Bulk(Vec<(String, Vec<u8>)>),
    Copy(String, String),
    CopyTree(String, String),
    DeleteTree(String),
    Compact,
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    let value = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..8),
        1 => (257usize..600).prop_map(|n| vec![7u8; n]),
    ];
    prop_oneof![
        4 => (path_strategy(), value.clone()).prop_map(|(p, v)| Action::Put(p, v)),
        2 => prop::collection::vec((path_strategy(), value), 1..12).prop_map(Action::Bulk),
        1 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Action::Copy(a, b)),
        2 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Action::CopyTree(a, b)),
        1 => path_strategy().prop_map(Action::DeleteTree),
        1 => Just(Action::Compact),
        1 => Just(Action::Reopen),
    ]
}

fn below(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{root}/"))
}

fn model_put(m: &mut Model, path: &str, value: &[u8]) {
    for (i, _) in path.match_indices('/').skip(1) {
        m.entry(path[..i].to_string()).or_default();
    }
    m.insert(path.to_string(), value.to_vec());
}

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        retain_versions: 2,
        map_reserve_bytes: 256 << 20,
        compact_min_bytes: 1 << 20,
        create: true,
        ..Options::default()
    }
}

fn assert_matches(store: &Store, model: &Model) {
    let snap = store.snapshot();
    let scanned: Vec<(String, Vec<u8>)> =
        snap.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    let mut expected: Vec<(String, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    expected.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    assert!(scanned == expected, "scan differs from the model at version {}", snap.version());
    assert_eq!(snap.key_count(), model.len() as u64);
    for (path, value) in model.iter().rev().take(8) {
        assert_eq!(snap.get(path).unwrap(), Some(value.as_slice()), "get of a {}-byte path", path.len());
    }
}

fn run(actions: Vec<Action>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Options { create: true, ..options() }).unwrap();
    let mut model = Model::new();
    for action in actions {
        match action {
            Action::Put(p, v) => {
                let mut txn = store.begin();
                txn.put(&p, &v).unwrap();
                txn.commit().unwrap();
                model_put(&mut model, &p, &v);
            }
            Action::Bulk(items) => {
                store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
                for (p, v) in &items {
                    model_put(&mut model, p, v);
                }
            }
            Action::Copy(from, to) => {
                let mut txn = store.begin();
                match (txn.copy(&from, &to), model.get(&from).cloned()) {
                    (Ok(()), Some(v)) => {
                        txn.commit().unwrap();
                        model_put(&mut model, &to, &v);
                    }
                    (Err(Error::NoSuchPath { .. }), None) => {}
                    (result, expected) => panic!("copy {result:?}, model holds {expected:?}"),
                }
            }
            Action::CopyTree(from, to) => {
                let copied: Vec<(String, Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| below(k, &from))
                    .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
                    .collect();
                let longest = copied.iter().map(|(k, _)| k.len()).max();
                let mut txn = store.begin();
                match (txn.copy_tree(&from, &to), longest) {
                    (Ok(()), Some(len)) if len <= MAX_PATH_BYTES => {
                        txn.commit().unwrap();
                        model.retain(|k, _| !below(k, &to));
                        model_put(&mut model, &to, &[]);
                        model.extend(copied);
                    }
                    (Err(Error::NoSuchPath { .. }), None) => {}
                    (Err(Error::CopyTooDeep { longest, .. }), Some(len)) if len > MAX_PATH_BYTES => {
                        assert_eq!(longest, len, "the refusal names the longest path the copy would make");
                    }
                    (result, len) => panic!("copy_tree {result:?}; the longest copied path would be {len:?} bytes"),
                }
            }
            Action::DeleteTree(p) => {
                let mut txn = store.begin();
                txn.delete_tree(&p).unwrap();
                txn.commit().unwrap();
                model.retain(|k, _| !below(k, &p));
            }
            Action::Compact => {
                store.compact().unwrap();
            }
            Action::Reopen => {
                drop(store);
                store = Store::open(dir.path(), options()).unwrap();
            }
        }
        assert_matches(&store, &model);
    }
    store.compact().unwrap();
    assert_matches(&store, &model);
    store.verify().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn long_paths_match_the_model(actions in prop::collection::vec(action(), 1..14)) {
        run(actions);
    }
}

#[test]
fn every_path_length_up_to_the_limit_commits_alone_and_among_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options { create: true, ..options() }).unwrap();
    let mut model = Model::new();
    // Alone: one transaction per length, each a sibling of the previous ones
    // below its shared prefix.
    for len in (2..=MAX_PATH_BYTES).step_by(61).chain([MAX_PATH_BYTES - 1, MAX_PATH_BYTES]) {
        let p = long_path(b"ab", len);
        let mut txn = store.begin();
        txn.put(&p, b"v").unwrap();
        txn.commit().unwrap();
        model_put(&mut model, &p, b"v");
    }
    assert_matches(&store, &model);
    // Many long siblings in one load: 290 paths of 1,000 to 3,072 bytes
    // below ones that share long prefixes.
    let items: Vec<(String, Vec<u8>)> = (0..290)
        .map(|i| {
            let mut p = long_path(b"c", 1000 + i * 7);
            p.push_str(&format!("/{i}"));
            (p, vec![i as u8; i % 5])
        })
        .collect();
    assert!(items.iter().all(|(p, _)| p.len() <= MAX_PATH_BYTES));
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    for (p, v) in &items {
        model_put(&mut model, p, v);
    }
    assert_matches(&store, &model);
    store.compact().unwrap();
    assert_matches(&store, &model);
    // One past the limit is refused, with the limit named.
    let too_long = long_path(b"ab", MAX_PATH_BYTES + 1 - 2) + "/x";
    assert_eq!(too_long.len(), MAX_PATH_BYTES + 1);
    let err = store.begin().put(&too_long, b"v").unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }) && err.to_string().contains("3072"), "{err}");
}

/// The second trigger: a copy of a subtree with ~250-byte segments,
/// then compaction, which re-roots the copy's link target.
#[test]
fn compaction_of_a_copied_subtree_with_long_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options { create: true, map_reserve_bytes: 8 << 20, ..options() }).unwrap();
    let (x, y, z) = ("x".repeat(250), "y".repeat(250), "z".repeat(250));
    let mut txn = store.begin();
    txn.put(&format!("/s/{x}/{y}/{z}/0"), b"v").unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    txn.copy_tree(&format!("/s/{x}"), "/t").unwrap();
    txn.commit().unwrap();
    for _ in 0..3 {
        store.compact().unwrap();
    }
    assert_eq!(store.snapshot().get(&format!("/t/{y}/{z}/0")).unwrap(), Some(&b"v"[..]));
    let mut txn = store.begin();
    txn.put("/after", b"1").unwrap();
    txn.commit().unwrap();
}

/// A copy to a deeper place that would make a path longer than the limit
/// is refused, naming the length; at the limit, and below, it commits.
/// The check reads the weights of internal nodes, not the subtree, and
/// sees through links (a copy of a copy).
#[test]
fn copy_tree_at_just_below_and_just_above_the_path_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options { create: true, ..options() }).unwrap();
    // 2,000 siblings, so the source spans several leaves and an internal level,
    // and one deep path of 2,000 bytes in the middle of them.
    let deep = format!("/src/k1000/{}", &long_path(b"d", 2000 - "/src/k1000".len())[1..]);
    assert_eq!(deep.len(), 2000);
    let mut items: Vec<(String, Vec<u8>)> = (0..2000).map(|i| (format!("/src/k{i}"), vec![1])).collect();
    items.push((deep.clone(), b"deep".to_vec()));
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    // The copy's deepest path: dst + (2000 - "/src".len()).
    let suffix = deep.len() - "/src".len();
    let dst_for = |total: usize| long_path(b"e", total - suffix);
    for (total, ok) in [(MAX_PATH_BYTES - 1, true), (MAX_PATH_BYTES, true), (MAX_PATH_BYTES + 1, false)] {
        let dst = dst_for(total);
        let mut txn = store.begin();
        match txn.copy_tree("/src", &dst) {
            Ok(()) => {
                assert!(ok, "a copy making a {total}-byte path was accepted");
                txn.commit().unwrap();
                let copied = format!("{dst}{}", &deep["/src".len()..]);
                assert_eq!(copied.len(), total);
                assert_eq!(store.snapshot().get(&copied).unwrap(), Some(&b"deep"[..]));
            }
            Err(Error::CopyTooDeep { longest, .. }) => {
                assert!(!ok, "a copy making a {total}-byte path was refused");
                assert_eq!(longest, total);
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Through a link: a copy of the copy made at the limit, one byte deeper.
    let at_limit = dst_for(MAX_PATH_BYTES);
    let mut txn = store.begin();
    let err = txn.copy_tree(&at_limit, &format!("{}x", dst_for(MAX_PATH_BYTES))).unwrap_err();
    assert!(matches!(err, Error::CopyTooDeep { longest, .. } if longest == MAX_PATH_BYTES + 1), "{err}");
    let err = err.to_string();
    assert!(err.contains("3073 bytes") && err.contains("3072"), "{err}");
    // And after compaction, which rewrites the weights.
    store.compact().unwrap();
    let mut txn = store.begin();
    assert!(matches!(txn.copy_tree("/src", &dst_for(MAX_PATH_BYTES + 1)), Err(Error::CopyTooDeep { .. })));
    txn.copy_tree("/src", &dst_for(MAX_PATH_BYTES - 7)).unwrap();
    txn.commit().unwrap();
}
