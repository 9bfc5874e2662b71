//! Which nodes each domain owns: their count is the `nodes` quota's
//! measure, and `RELEASE` removes them without reading the whole tree.
//!
//! A node's owner is the first entry of its permissions record, so the
//! sets are those of the records under [`PERMS_ROOT`] by owner. They are
//! built once when the daemon starts, then kept up to date by the watch
//! dispatcher, which follows every version in commit order: for each new
//! version the records that changed are found by a diff (which reads only
//! what differs) and the owners before and after are compared. A request
//! that commits is answered only after its version has been followed, so
//! the next request of the same domain sees counts that include it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use shoal::{ChangeKind, Snapshot};

use crate::xs::paths::PERMS_ROOT;
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
    /// The dispatcher calls it only for versions whose change sets touch
    /// the records (most change values only).
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
