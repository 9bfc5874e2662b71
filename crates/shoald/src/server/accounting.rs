//! Which nodes each domain owns: their count is the `nodes` quota's
//! measure, and `RELEASE` removes them without reading the whole tree.
//!
//! A node's owner is the first entry of its permissions record, so the
//! sets are those of the records under [`PERMS_ROOT`] by owner. They are
//! built once when the daemon starts, then kept up to date by the watch
//! dispatcher, which follows every version in commit order: the records a
//! version's change set names (and those below a removed subtree) are
//! compared before and after; when the change sets are not all listed, a
//! diff of the records' trees finds them instead. A request
//! that commits is answered only after its version has been followed, so
//! the next request of the same domain sees counts that include it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use shoal::{ChangeKind, Snapshot};

use crate::xs::paths::{self, PERMS_ROOT};
use crate::xs::perms::Perms;

#[derive(Default)]
pub struct NodeCounts {
    /// Node paths by owner.
    owned: Mutex<HashMap<u32, BTreeSet<String>>>,
}

/// The node a permissions record belongs to.
fn node_of(record: &str) -> &str {
    match &record[PERMS_ROOT.len()..] {
        "" => "/",
        node => node,
    }
}

fn owner(snapshot: &Snapshot, record: &str) -> Option<u32> {
    snapshot.get(record).ok().flatten().and_then(Perms::decode).map(|p| p.owner())
}

impl NodeCounts {
    /// Counts the records of `snapshot`.
    pub fn count(snapshot: &Snapshot) -> NodeCounts {
        let counts = NodeCounts::default();
        counts.recount(snapshot);
        counts
    }

    fn recount(&self, snapshot: &Snapshot) {
        let mut owned: HashMap<u32, BTreeSet<String>> = HashMap::new();
        match snapshot.scan(PERMS_ROOT) {
            Ok(scan) => {
                for entry in scan {
                    match entry {
                        Ok(entry) => {
                            if let Some(perms) = Perms::decode(entry.value()) {
                                owned.entry(perms.owner()).or_default().insert(node_of(&entry.path()).to_string());
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "counting nodes per domain");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::error!(%error, "counting nodes per domain"),
        }
        *self.owned.lock().unwrap() = owned;
    }

    /// How many nodes `domid` owns.
    pub fn owned(&self, domid: u32) -> u64 {
        self.owned.lock().unwrap().get(&domid).map_or(0, |s| s.len() as u64)
    }

    /// The nodes `domid` owns, in path order.
    pub fn nodes_of(&self, domid: u32) -> Vec<String> {
        self.owned.lock().unwrap().get(&domid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Takes the changes from `last` to `next` into account.
    /// Takes into account the versions from `last` to `next`, whose change
    /// sets are `changes`: the records they name (those below a removed or
    /// copied subtree read from the tree) are compared before and after.
    /// Most versions change values only and cost a look at their paths.
    pub fn follow_changes(&self, last: &Snapshot, next: &Snapshot, changes: &[shoal::Change<'_>]) {
        let mut records: BTreeSet<String> = BTreeSet::new();
        for change in changes {
            let path = change.path();
            let whole_subtree = matches!(change.kind(), ChangeKind::DeleteTree | ChangeKind::CopyTree);
            if paths::is_child(&path, PERMS_ROOT) {
                if whole_subtree {
                    records.extend(records_below(last, &path));
                    records.extend(records_below(next, &path));
                } else {
                    records.insert(path);
                }
            } else if whole_subtree && paths::is_child(PERMS_ROOT, &path) {
                // The whole of the records went (or came) at once.
                records.extend(records_below(last, PERMS_ROOT));
                records.extend(records_below(next, PERMS_ROOT));
            }
        }
        if records.is_empty() {
            return;
        }
        let mut owned = self.owned.lock().unwrap();
        for record in &records {
            let (before, after) = (owner(last, record), owner(next, record));
            if before == after {
                continue;
            }
            let node = node_of(record);
            if let Some(before) = before {
                if let Some(set) = owned.get_mut(&before) {
                    set.remove(node);
                    if set.is_empty() {
                        owned.remove(&before);
                    }
                }
            }
            if let Some(after) = after {
                owned.entry(after).or_default().insert(node.to_string());
            }
        }
    }

    /// Takes the changes from `last` to `next` into account by comparing
    /// the trees (when the change sets are not all listed).
    pub fn follow(&self, last: &Snapshot, next: &Snapshot) {
        let diff = match last.diff(next, PERMS_ROOT) {
            Ok(diff) => diff,
            Err(error) => {
                tracing::warn!(%error, "recounting nodes per domain");
                return self.recount(next);
            }
        };
        let mut owned = self.owned.lock().unwrap();
        for (record, kind) in &diff.changes {
            let node = node_of(record);
            if let Some(before) = owner(last, record) {
                if let Some(set) = owned.get_mut(&before) {
                    set.remove(node);
                    if set.is_empty() {
                        owned.remove(&before);
                    }
                }
            }
            if *kind == ChangeKind::Set {
                if let Some(after) = owner(next, record) {
                    owned.entry(after).or_default().insert(node.to_string());
                }
            }
        }
    }
}

/// The records at and below `path` in `snapshot`.
fn records_below(snapshot: &Snapshot, path: &str) -> Vec<String> {
    let Ok(scan) = snapshot.scan(path) else { return Vec::new() };
    scan.filter_map(|entry| entry.ok().map(|e| e.path())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xs::paths::perms_path;
    use shoal::{Durability, Options, Store};

    fn snapshot_of(counts: &NodeCounts) -> Vec<(u32, Vec<String>)> {
        let mut v: Vec<_> =
            counts.owned.lock().unwrap().iter().map(|(d, s)| (*d, s.iter().cloned().collect())).collect();
        v.sort();
        v
    }

    /// After every version, what the change sets say equals a count from
    /// scratch: records written, re-owned, removed one by one, removed with
    /// their subtree, and all of them at once.
    #[test]
    fn following_change_sets_matches_a_recount() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { create: true, durability: Durability::None, ..Options::default() };
        let store = Store::open(dir.path(), options).unwrap();
        let counts = NodeCounts::count(&store.snapshot());
        let mut last = store.snapshot();
        let mut seed = 7u64;
        let mut next_random = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..300 {
            // Some rounds commit several versions before the counts follow.
            for _ in 0..=next_random(3) {
                let mut txn = store.begin();
                for _ in 0..=next_random(4) {
                    let node = format!("/d{}/n{}", next_random(4), next_random(6));
                    match next_random(10) {
                        0..=5 => {
                            let owner = next_random(4) as u32;
                            txn.put(&perms_path(&node), Perms::owned_by(owner).encode()).unwrap();
                        }
                        6 | 7 => {
                            txn.delete_tree(&perms_path(&node)).unwrap();
                        }
                        8 => {
                            txn.delete_tree(&perms_path(&format!("/d{}", next_random(4)))).unwrap();
                        }
                        _ if round % 50 == 49 => {
                            txn.delete_tree(PERMS_ROOT).unwrap();
                        }
                        _ => {}
                    }
                }
                txn.commit().unwrap();
            }
            let next = store.snapshot();
            let changes = next.changes(last.version(), "/").unwrap();
            counts.follow_changes(&last, &next, &changes);
            assert_eq!(snapshot_of(&counts), snapshot_of(&NodeCounts::count(&next)), "round {round}");
            last = next;
        }
    }
}
