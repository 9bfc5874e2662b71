//! Model-based test: random sequences of puts, deletes, subtree deletes,
//! copies of values and of subtrees (by reference), writes into copies,
//! commits, aborts, conflicting transactions, reopens and compactions,
//! checked against a plain in-memory model. Every snapshot taken along the
//! way must still equal the model of its version at the end, across
//! compactions and reopens.

mod common;

use std::collections::BTreeMap;

use common::model_put;
use proptest::prelude::*;
use shoal::{ChangeKind, Durability, Error, Options, Snapshot, Store};

type Model = BTreeMap<String, Vec<u8>>;

fn is_below(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.starts_with(&format!("{root}/"))
}

fn model_children(m: &Model, path: &str) -> Vec<String> {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    let mut names: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[derive(Clone, Debug)]
enum TxnOp {
    Put(String, Vec<u8>),
    Delete(String),
    DeleteTree(String),
    Get(String),
    List(String),
    Copy(String, String),
    CopyTree(String, String),
}

#[derive(Clone, Debug)]
enum Action {
    Commit(Vec<TxnOp>),
    Abort(Vec<TxnOp>),
    Conflict { read: String, other_write: String },
    Bulk(Vec<(String, Vec<u8>)>),
    Reopen,
    Compact,
    Hold,
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "ab", "a b", "z"]), 1..4)
        .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..24),
        1 => (300usize..1500, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        5 => (path_strategy(), value_strategy()).prop_map(|(p, v)| TxnOp::Put(p, v)),
        2 => path_strategy().prop_map(TxnOp::Delete),
        1 => prop_oneof![path_strategy(), Just("/".to_string())].prop_map(TxnOp::DeleteTree),
        2 => path_strategy().prop_map(TxnOp::Get),
        1 => prop_oneof![path_strategy(), Just("/".to_string())].prop_map(TxnOp::List),
        1 => (path_strategy(), path_strategy()).prop_map(|(a, b)| TxnOp::Copy(a, b)),
        2 => (path_strategy(), path_strategy()).prop_map(|(a, b)| TxnOp::CopyTree(a, b)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => prop::collection::vec(txn_op(), 1..8).prop_map(Action::Commit),
        1 => prop::collection::vec(txn_op(), 1..5).prop_map(Action::Abort),
        2 => (path_strategy(), path_strategy()).prop_map(|(read, other_write)| Action::Conflict { read, other_write }),
        1 => prop::collection::vec((path_strategy(), value_strategy()), 1..40).prop_map(Action::Bulk),
        1 => Just(Action::Reopen),
        1 => Just(Action::Compact),
        2 => Just(Action::Hold),
    ]
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        retain_versions: 4,
        map_reserve_bytes: 64 << 20,
        max_value_bytes: 4096,
        compact_min_bytes: 256 << 10,
        create: true,
        ..Options::default()
    }
}

fn assert_matches(snap: &Snapshot, model: &Model) {
    let scanned: Vec<(String, Vec<u8>)> =
        snap.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    let mut rendered = Vec::new();
    let mut scan = snap.scan("/").unwrap();
    while let Some(entry) = scan.next_path() {
        let (path, value) = entry.unwrap();
        rendered.push((path.to_string(), value.to_vec()));
    }
    assert!(rendered == scanned, "Scan::next_path differs from Entry::path at version {}", snap.version());
    // Path order is segment by segment: "/a/b" sorts before "/a b".
    let mut expected: Vec<(String, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    expected.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    let paths = |v: &[(String, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&scanned), paths(&expected), "paths scanned from version {}", snap.version());
    assert!(scanned == expected, "values scanned from version {} differ", snap.version());
    assert_eq!(snap.key_count(), model.len() as u64);
    for path in model.keys().take(20) {
        assert_eq!(snap.get(path).unwrap(), model.get(path).map(|v| v.as_slice()), "get {path}");
        assert_eq!(snap.list(path).unwrap(), model_children(model, path), "list {path}");
        assert_eq!(each_child(snap, path), model_children(model, path), "for_each_child {path}");
    }
    assert_eq!(snap.list("/").unwrap(), model_children(model, "/"));
    assert_eq!(each_child(snap, "/"), model_children(model, "/"));
}

fn each_child(snap: &Snapshot, path: &str) -> Vec<String> {
    let mut names = Vec::new();
    snap.for_each_child(path, |name| names.push(String::from_utf8(name.to_vec()).unwrap())).unwrap();
    names
}

/// The ancestors of `path` the model lacks (a put creates them), nearest the root first.
fn missing_ancestors(m: &Model, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = path[at + 1..].find('/') {
        at += 1 + p;
        if !m.contains_key(&path[..at]) {
            out.push(path[..at].to_string());
        }
    }
    out
}

/// What `copy_tree(from, to)` does to the model, and to the paths written.
fn model_copy_tree(model: &mut Model, written: &mut std::collections::BTreeSet<String>, from: &str, to: &str) {
    let copied: Vec<(String, Vec<u8>)> = model
        .iter()
        .filter(|(k, _)| is_below(k, from))
        .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
        .collect();
    model.retain(|k, _| !is_below(k, to));
    written.retain(|k| !is_below(k, to));
    written.extend(missing_ancestors(model, to));
    written.insert(to.to_string());
    for (k, v) in copied {
        model_put(model, &k, &v);
    }
}

/// Applies ops to a transaction and to a model copy; both must agree.
/// `written` mirrors the paths the transaction has buffered writes for
/// (`copy_tree` refuses a source written to in the same transaction).
fn run_ops(txn: &mut shoal::Transaction<'_>, model: &mut Model, ops: &[TxnOp]) {
    let mut written: std::collections::BTreeSet<String> = Default::default();
    for op in ops {
        match op {
            TxnOp::Put(p, v) => {
                txn.put(p, v).unwrap();
                written.extend(missing_ancestors(model, p));
                written.insert(p.clone());
                model_put(model, p, v);
            }
            TxnOp::Delete(p) => {
                let has_children = !model_children(model, p).is_empty();
                match txn.delete(p) {
                    Err(Error::HasChildren { .. }) => assert!(has_children, "spurious HasChildren for {p}"),
                    Ok(existed) => {
                        assert!(!has_children, "delete of {p} with children succeeded");
                        assert_eq!(existed, model.remove(p).is_some());
                        if existed {
                            written.insert(p.clone());
                        }
                    }
                    Err(e) => panic!("delete {p}: {e}"),
                }
            }
            TxnOp::DeleteTree(p) => {
                let existed = txn.delete_tree(p).unwrap();
                assert_eq!(existed, p == "/" || model.contains_key(p));
                model.retain(|k, _| !is_below(k, p));
                written.retain(|k| !is_below(k, p));
                written.insert(p.clone());
            }
            TxnOp::Get(p) => {
                assert_eq!(txn.get(p).unwrap(), model.get(p).map(|v| v.as_slice()), "txn get {p}");
            }
            TxnOp::List(p) => {
                if p == "/" || model.contains_key(p) {
                    assert_eq!(txn.list(p).unwrap(), model_children(model, p), "txn list {p}");
                }
            }
            TxnOp::Copy(from, to) => match (txn.copy(from, to), model.get(from).cloned()) {
                (Ok(()), Some(v)) => {
                    written.extend(missing_ancestors(model, to));
                    written.insert(to.clone());
                    model_put(model, to, &v);
                }
                (Err(Error::NoSuchPath { .. }), None) => {}
                (got, expected) => panic!("copy {from} -> {to}: {got:?}, model has {expected:?}"),
            },
            TxnOp::CopyTree(from, to) => {
                let source_written = written.iter().any(|k| is_below(k, from));
                match txn.copy_tree(from, to) {
                    Err(Error::CopySourceWritten { .. }) => assert!(source_written, "copy_tree {from} refused"),
                    Err(Error::NoSuchPath { .. }) => {
                        assert!(!source_written && !model.contains_key(from), "copy_tree {from}: no such path")
                    }
                    Ok(()) => {
                        assert!(!source_written && model.contains_key(from), "copy_tree {from} -> {to} accepted");
                        model_copy_tree(model, &mut written, from, to);
                    }
                    Err(e) => panic!("copy_tree {from} -> {to}: {e}"),
                }
            }
        }
    }
}

/// The diff of two snapshots is the difference of their models.
fn check_diff(a: &Snapshot, b: &Snapshot, ma: &Model, mb: &Model) {
    let mut got: Vec<(String, ChangeKind)> = a.diff(b, "/").unwrap().changes;
    let mut want: Vec<(String, ChangeKind)> = mb
        .iter()
        .filter(|(k, v)| ma.get(*k) != Some(*v))
        .map(|(k, _)| (k.clone(), ChangeKind::Set))
        .chain(ma.keys().filter(|k| !mb.contains_key(*k)).map(|k| (k.clone(), ChangeKind::Delete)))
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, want, "diff of versions {} and {}", a.version(), b.version());
}

fn run(actions: Vec<Action>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(durability)).unwrap();
    let mut model = Model::new();
    let mut versions: BTreeMap<u64, Model> = BTreeMap::new();
    versions.insert(store.version(), model.clone());
    let mut held: Vec<(Snapshot, Model)> = Vec::new();

    for action in actions {
        match action {
            Action::Commit(ops) => {
                let before = store.snapshot();
                let mut txn = store.begin();
                let mut next = model.clone();
                run_ops(&mut txn, &mut next, &ops);
                let v = txn.commit().unwrap();
                check_diff(&before, &store.snapshot(), &model, &next);
                model = next;
                versions.insert(v, model.clone());
            }
            Action::Abort(ops) => {
                let mut txn = store.begin();
                let mut scratch = model.clone();
                run_ops(&mut txn, &mut scratch, &ops);
                txn.abort();
            }
            Action::Conflict { read, other_write } => {
                let mut t1 = store.begin();
                let before = t1.get(&read).unwrap().map(|v| v.to_vec());
                t1.put("/t1", b"x").unwrap();
                let mut t2 = store.begin();
                t2.put(&other_write, b"other").unwrap();
                let v = t2.commit().unwrap();
                let changed_read =
                    other_write == read || other_write.starts_with(&format!("{read}/")) && before.is_none();
                model_put(&mut model, &other_write, b"other");
                versions.insert(v, model.clone());
                match t1.commit() {
                    Err(Error::Conflict { .. }) => {}
                    Ok(v) => {
                        assert!(!changed_read, "commit after a conflicting write to {read} succeeded");
                        model_put(&mut model, "/t1", b"x");
                        versions.insert(v, model.clone());
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Action::Bulk(items) => {
                let v = store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
                for (p, val) in &items {
                    model_put(&mut model, p, val);
                }
                versions.insert(v, model.clone());
            }
            Action::Reopen => {
                let v = store.version();
                drop(store);
                store = Store::open(dir.path(), options(durability)).unwrap();
                assert_eq!(store.version(), v);
            }
            Action::Compact => {
                store.compact().unwrap();
            }
            Action::Hold => held.push((store.snapshot(), model.clone())),
        }
        assert_matches(&store.snapshot(), &model);
    }
    // Retained versions read back as they were.
    let head = store.version();
    for (&v, m) in versions.range(head.saturating_sub(4)..) {
        assert_matches(&store.snapshot_at(v).unwrap(), m);
    }
    // Snapshots held across commits, compactions and reopens are unchanged.
    for (snap, m) in &held {
        assert_matches(snap, m);
        assert_eq!(versions.get(&snap.version()), Some(m));
    }
    store.verify().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn matches_model_without_journal(actions in prop::collection::vec(action(), 1..40)) {
        run(actions, Durability::None);
    }

    #[test]
    fn matches_model_with_journal(actions in prop::collection::vec(action(), 1..25)) {
        run(actions, Durability::Sync);
    }
}

#[test]
fn large_batches_split_and_merge_nodes() {
    // Thousands of keys force multi-level trees; deleting most of them
    // forces merges of underfull nodes.
    let mut model = Model::new();
    let mut actions = Vec::new();
    let items: Vec<(String, Vec<u8>)> =
        (0..5000).map(|i| (format!("/d/{}/{}", i % 97, i), vec![(i % 251) as u8; i % 40])).collect();
    actions.push(Action::Bulk(items.clone()));
    for (p, v) in &items {
        model_put(&mut model, p, v);
    }
    actions.push(Action::Commit((0..90).map(|i| TxnOp::DeleteTree(format!("/d/{i}"))).collect()));
    actions.push(Action::Hold);
    actions.push(Action::Compact);
    actions.push(Action::Commit(vec![TxnOp::DeleteTree("/d".into()), TxnOp::Put("/d/new".into(), b"1".to_vec())]));
    run(actions, Durability::None);
}

fn wide_path() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..40).prop_map(|a| format!("/d/{a:02}")),
        (0u32..40, 0u32..120).prop_map(|(a, b)| format!("/d/{a:02}/{b:03}")),
        Just("/d".to_string()),
    ]
}

fn wide_txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        4 => (wide_path(), prop::collection::vec(any::<u8>(), 0..30)).prop_map(|(p, v)| TxnOp::Put(p, v)),
        2 => wide_path().prop_map(TxnOp::DeleteTree),
        1 => wide_path().prop_map(TxnOp::Delete),
        1 => wide_path().prop_map(TxnOp::Get),
        1 => (wide_path(), wide_path()).prop_map(|(a, b)| TxnOp::CopyTree(a, b)),
        1 => (wide_path(), wide_path()).prop_map(|(a, b)| TxnOp::Copy(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Multi-level trees: subtree deletions spanning many nodes, writes into
    /// just-deleted subtrees, merges of underfull nodes, copies of large
    /// subtrees and writes into them.
    #[test]
    fn matches_model_on_multi_level_trees(
        fill in prop::collection::vec((0u32..40, 0u32..120), 500..2500),
        actions in prop::collection::vec(prop_oneof![
            6 => prop::collection::vec(wide_txn_op(), 1..12).prop_map(Action::Commit),
            1 => Just(Action::Compact),
            1 => Just(Action::Hold),
        ], 1..20),
    ) {
        let items = fill.into_iter().map(|(a, b)| (format!("/d/{a:02}/{b:03}"), vec![b as u8; 20])).collect();
        let mut all = vec![Action::Bulk(items)];
        all.extend(actions);
        run(all, Durability::None);
    }
}

fn put_op(path: &str, value: &str) -> TxnOp {
    TxnOp::Put(path.to_string(), value.as_bytes().to_vec())
}

/// Two copies nested in one transaction, then a write below the inner one:
/// the write must split the inner link, which only exists once the outer
/// copy is in the tree.
#[test]
fn nested_copies_in_one_transaction_then_a_write_below_the_inner_one() {
    let setup = Action::Commit(vec![
        put_op("/x/a", "1"),
        put_op("/x/c/k", "2"),
        put_op("/z/q", "3"),
        put_op("/z/q/w", "4"),
        put_op("/z/s", "5"),
    ]);
    let nested = Action::Commit(vec![
        TxnOp::CopyTree("/x".into(), "/b".into()),
        TxnOp::CopyTree("/z".into(), "/b/c".into()),
        put_op("/b/c/q", "new"),
    ]);
    let deeper = Action::Commit(vec![put_op("/b/c/s/n", "y")]);
    run(vec![setup, nested, deeper, Action::Compact, Action::Reopen], Durability::None);
}

/// Two segment names only, so that copies land on, in and around each
/// other, and writes fall below copies of copies.
fn small_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b"]), 1..5).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn small_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        4 => (small_path(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, v)| TxnOp::Put(p, v)),
        1 => small_path().prop_map(TxnOp::Delete),
        2 => small_path().prop_map(TxnOp::DeleteTree),
        1 => small_path().prop_map(TxnOp::Get),
        1 => small_path().prop_map(TxnOp::List),
        1 => (small_path(), small_path()).prop_map(|(a, b)| TxnOp::Copy(a, b)),
        4 => (small_path(), small_path()).prop_map(|(a, b)| TxnOp::CopyTree(a, b)),
    ]
}

fn small_fill() -> Vec<(String, Vec<u8>)> {
    let mut fill = Vec::new();
    for a in ["a", "b"] {
        for b in ["a", "b"] {
            for c in ["a", "b"] {
                fill.push((format!("/{a}/{b}/{c}"), vec![1u8]));
            }
        }
    }
    fill
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_model_with_copies_on_and_in_copies(actions in prop::collection::vec(prop_oneof![
        8 => prop::collection::vec(small_op(), 1..10).prop_map(Action::Commit),
        1 => Just(Action::Compact),
        1 => Just(Action::Reopen),
        1 => Just(Action::Hold),
    ], 1..25)) {
        let mut all = vec![Action::Bulk(small_fill())];
        all.extend(actions);
        run(all, Durability::Sync);
    }
}

/// Applies ops to a model alone; returns what each observed.
fn model_ops(model: &mut Model, ops: &[TxnOp]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut written: std::collections::BTreeSet<String> = Default::default();
    for op in ops {
        let o = match op {
            TxnOp::Put(p, v) => {
                written.extend(missing_ancestors(model, p));
                written.insert(p.clone());
                model_put(model, p, v);
                "ok".to_string()
            }
            TxnOp::Delete(p) if !model_children(model, p).is_empty() => "has children".into(),
            TxnOp::Delete(p) => {
                let existed = model.remove(p).is_some();
                if existed {
                    written.insert(p.clone());
                }
                existed.to_string()
            }
            TxnOp::DeleteTree(p) => {
                let existed = p == "/" || model.contains_key(p);
                model.retain(|k, _| !is_below(k, p));
                written.retain(|k| !is_below(k, p));
                written.insert(p.clone());
                existed.to_string()
            }
            TxnOp::Get(p) => format!("{:?}", model.get(p)),
            TxnOp::List(p) => format!("{:?}", model_children(model, p)),
            TxnOp::Copy(from, to) => match model.get(from).cloned() {
                Some(v) => {
                    written.extend(missing_ancestors(model, to));
                    written.insert(to.clone());
                    model_put(model, to, &v);
                    "ok".into()
                }
                None => "no such path".into(),
            },
            TxnOp::CopyTree(from, to) => {
                if written.iter().any(|k| is_below(k, from)) {
                    "written".into()
                } else if !model.contains_key(from) {
                    "no such path".into()
                } else {
                    model_copy_tree(model, &mut written, from, to);
                    "ok".into()
                }
            }
        };
        seen.push(o);
    }
    seen
}

/// Applies ops to a transaction; returns what each observed, as [`model_ops`] words it.
fn txn_ops(txn: &mut shoal::Transaction<'_>, ops: &[TxnOp]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            TxnOp::Put(p, v) => {
                txn.put(p, v).unwrap();
                "ok".to_string()
            }
            TxnOp::Delete(p) => match txn.delete(p) {
                Ok(existed) => existed.to_string(),
                Err(Error::HasChildren { .. }) => "has children".into(),
                Err(e) => panic!("{e}"),
            },
            TxnOp::DeleteTree(p) => txn.delete_tree(p).unwrap().to_string(),
            TxnOp::Get(p) => format!("{:?}", txn.get(p).unwrap().map(<[u8]>::to_vec)),
            TxnOp::List(p) => format!("{:?}", txn.list(p).unwrap()),
            TxnOp::Copy(a, b) => match txn.copy(a, b) {
                Ok(()) => "ok".into(),
                Err(Error::NoSuchPath { .. }) => "no such path".into(),
                Err(e) => panic!("{e}"),
            },
            TxnOp::CopyTree(a, b) => match txn.copy_tree(a, b) {
                Ok(()) => "ok".into(),
                Err(Error::NoSuchPath { .. }) => "no such path".into(),
                Err(Error::CopySourceWritten { .. }) => "written".into(),
                Err(e) => panic!("{e}"),
            },
        })
        .collect()
}

fn snapshot_model(s: &Snapshot) -> Model {
    s.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Serializability: two transactions begin at the same version; the
    /// second commits first. If the first then commits too, it must have
    /// seen exactly what it would have seen running after the second, and
    /// the store must hold the result of running them one after the other.
    #[test]
    fn a_transaction_that_commits_saw_what_it_would_have_seen_alone(
        setup in prop::collection::vec(small_op(), 0..8),
        first in prop::collection::vec(small_op(), 1..6),
        second in prop::collection::vec(small_op(), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options(Durability::None)).unwrap();
        store.bulk_load(small_fill().iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
        let mut txn = store.begin();
        txn_ops(&mut txn, &setup);
        txn.commit().unwrap();
        let mut t1 = store.begin();
        let seen = txn_ops(&mut t1, &first);
        let mut t2 = store.begin();
        txn_ops(&mut t2, &second);
        t2.commit().unwrap();
        let after_second = snapshot_model(&store.snapshot());
        match t1.commit() {
            Ok(_) => {
                let mut serial = after_second.clone();
                let seen_serially = model_ops(&mut serial, &first);
                prop_assert_eq!(seen, seen_serially, "the first committed, but saw what the second changed");
                prop_assert_eq!(snapshot_model(&store.snapshot()), serial);
            }
            Err(Error::Conflict { .. }) => prop_assert_eq!(snapshot_model(&store.snapshot()), after_second),
            Err(e) => panic!("{e}"),
        }
    }
}
