//! shoald in cluster mode, for tests: hosts started on an etcd cluster, and
//! a reader in the test's process that follows one host's store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal::WatchEvent;
use shoal_testkit::etcd::EtcdCluster;

use super::Shoald;

/// The flags that make shoald host `name` of the tree under `prefix`.
pub fn host_args(cluster: &EtcdCluster, prefix: &str, name: &str) -> Vec<String> {
    let endpoints = cluster.endpoints().join(",");
    ["--cluster", &endpoints, "--cluster-prefix", prefix, "--host-id", name, "--cluster-listen", "127.0.0.1:0"]
        .map(str::to_string)
        .to_vec()
}

pub fn start_host(cluster: &EtcdCluster, prefix: &str, name: &str) -> Shoald {
    let args = host_args(cluster, prefix, name);
    Shoald::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The tree a store's version holds, without the replica's own state:
/// what two hosts' versions of one revision must agree on.
pub fn tree(snapshot: &shoal::Snapshot) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in snapshot.scan("/").unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if !path.starts_with("/.shoald/cluster") {
            out.insert(path, entry.value().to_vec());
        }
    }
    out
}

/// The etcd revision a replica's version holds.
pub fn revision(snapshot: &shoal::Snapshot) -> Option<i64> {
    let value = snapshot.get("/.shoald/cluster/revision").ok()??;
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn digest(tree: &BTreeMap<String, Vec<u8>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tree.hash(&mut h);
    h.finish()
}

/// What a reader of one host's store saw: every version it was woken for,
/// as (revision, digest of the tree), and what a shoal watch on `prefix`
/// reported, applied to a copy of the subtree (each changed path set to
/// its value as of the watch's version, or removed).
pub struct Seen {
    pub versions: Vec<(i64, u64)>,
    pub watched: BTreeMap<String, Vec<u8>>,
}

/// Follows the store in `store` (across its daemon's restarts) until
/// `stop`; what it saw.
pub fn follow_store(
    store: std::path::PathBuf,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let reader = shoal::Reader::open(&store).unwrap();
        let mut watch = reader.watch(prefix).unwrap();
        let mut seen = Seen { versions: Vec::new(), watched: BTreeMap::new() };
        // What is there to start with.
        for (path, value) in tree(watch.snapshot()) {
            if path.starts_with(prefix) {
                seen.watched.insert(path, value);
            }
        }
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            let events = watch.wait(Duration::from_millis(50)).unwrap();
            let snapshot = watch.snapshot();
            for event in events {
                let changed = match event {
                    WatchEvent::Change { path, .. } => vec![path],
                    WatchEvent::Resync { changes, .. } => changes.into_iter().map(|(p, _)| p).collect(),
                };
                for path in changed {
                    // A subtree's removal is one event: everything below goes.
                    seen.watched.retain(|p, _| !(p == &path || p.starts_with(&format!("{path}/"))));
                    for entry in snapshot.scan(&path).into_iter().flatten().flatten() {
                        seen.watched.insert(entry.path(), entry.value().to_vec());
                    }
                }
            }
            if snapshot.version() != last {
                last = snapshot.version();
                if let Some(r) = revision(snapshot) {
                    seen.versions.push((r, digest(&tree(snapshot))));
                }
            }
        }
        seen
    })
}

/// Checks what readers of several hosts saw: each saw revisions in
/// order, never going back, and any two versions that showed one revision,
/// on one host (a version that only staged a blob for the next) or on two,
/// showed the same tree for it.
pub fn check_versions_agree(seen: &[&Seen]) {
    let mut by_revision: BTreeMap<i64, u64> = BTreeMap::new();
    for (host, seen) in seen.iter().enumerate() {
        let versions = &seen.versions;
        assert!(versions.windows(2).all(|w| w[0].0 <= w[1].0), "host {host}'s revisions go back: {versions:?}");
        for &(r, digest) in versions {
            assert_eq!(*by_revision.entry(r).or_insert(digest), digest, "hosts disagree at revision {r}");
        }
    }
}
