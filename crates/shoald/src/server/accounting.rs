//! How many nodes each domain owns, for the `nodes` quota.
//!
//! A node's owner is the first entry of its permissions record, so the
//! counts are those of the records under [`PERMS_ROOT`] by owner. They are
//! counted once when the daemon starts, then kept up to date by the watch
//! dispatcher, which follows every version in commit order: for each new
//! version the records that changed are found by a diff (which reads only
//! what differs) and the owners before and after are compared. A request
//! that commits is answered only after its version has been followed, so
//! the next request of the same domain sees counts that include it.

use std::collections::HashMap;
use std::sync::Mutex;

use shoal::{ChangeKind, Snapshot};

use crate::xs::paths::PERMS_ROOT;
use crate::xs::perms::Perms;

#[derive(Default)]
pub struct NodeCounts {
    owned: Mutex<HashMap<u32, u64>>,
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
        let mut owned = HashMap::new();
        match snapshot.scan(PERMS_ROOT) {
            Ok(scan) => {
                for entry in scan {
                    match entry {
                        Ok(entry) => {
                            if let Some(perms) = Perms::decode(entry.value()) {
                                *owned.entry(perms.owner()).or_insert(0) += 1;
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

    /// Nodes `domid` owns.
    pub fn owned(&self, domid: u32) -> u64 {
        self.owned.lock().unwrap().get(&domid).copied().unwrap_or(0)
    }

    /// Takes the changes from `last` to `next` into account.
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
            if let Some(before) = owner(last, record) {
                if let Some(n) = owned.get_mut(&before) {
                    *n = n.saturating_sub(1);
                }
            }
            if *kind == ChangeKind::Set {
                if let Some(after) = owner(next, record) {
                    *owned.entry(after).or_insert(0) += 1;
                }
            }
        }
        owned.retain(|_, n| *n > 0);
    }
}
