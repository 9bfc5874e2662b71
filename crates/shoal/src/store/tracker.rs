//! Conflict tracking: which paths changed at which version, and which
//! transactions are open (their base versions bound what must be kept).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::build::{ApplyReport, Op};
use crate::locking::lock;
use crate::path;
use crate::txn::TxnSets;

/// Which paths changed at which version, for conflict detection. Only kept
/// while transactions are open; entries at or below the oldest open base
/// version can never cause a conflict and are pruned.
#[derive(Default)]
pub(super) struct ChangeTracker {
    /// Node created, written or deleted; ordered, so that what changed
    /// below a subtree is one range, not a scan of everything tracked.
    nodes: BTreeMap<Vec<u8>, u64>,
    /// A child created or removed.
    children: HashMap<Vec<u8>, u64>,
    /// Subtree deleted (ordered, as `nodes`).
    subtrees: BTreeMap<Vec<u8>, u64>,
    pub(super) prune_at: usize,
}

impl ChangeTracker {
    pub(super) fn record(&mut self, version: u64, ops: &[Op], report: &ApplyReport) {
        for op in ops {
            self.nodes.insert(op.key().to_vec(), version);
            if let Op::DeleteTree { key } | Op::Set { key, link: Some(_), .. } = op {
                self.subtrees.insert(key.clone(), version);
                if !key.is_empty() {
                    self.children.insert(path::parent(key).to_vec(), version);
                }
            }
        }
        for key in report.created.iter().chain(&report.removed) {
            self.children.insert(path::parent(key).to_vec(), version);
        }
    }

    /// Records a node `version` created (as [`record`](Self::record) does for a put that creates it).
    pub(super) fn record_created(&mut self, version: u64, key: &[u8]) {
        self.nodes.insert(key.to_vec(), version);
        self.children.insert(path::parent(key).to_vec(), version);
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len() + self.children.len() + self.subtrees.len()
    }

    pub(super) fn prune(&mut self, oldest_base: Option<u64>) {
        match oldest_base {
            None => {
                self.nodes.clear();
                self.children.clear();
                self.subtrees.clear();
            }
            Some(base) => {
                self.nodes.retain(|_, v| *v > base);
                self.children.retain(|_, v| *v > base);
                self.subtrees.retain(|_, v| *v > base);
            }
        }
        self.prune_at = self.len() * 2 + 4096;
    }

    fn subtree_deleted_after(&self, key: &[u8], base: u64) -> bool {
        let after = |k: &[u8]| self.subtrees.get(k).is_some_and(|&v| v > base);
        after(b"") || after(key) || path::ancestors(key).any(after)
    }

    /// The first path of the transaction that changed after its base.
    pub(super) fn conflict(&self, sets: &TxnSets) -> Option<Vec<u8>> {
        let base = sets.base_version;
        let node_changed =
            |k: &[u8]| self.nodes.get(k).is_some_and(|&v| v > base) || self.subtree_deleted_after(k, base);
        if let Some(k) = sets.reads.iter().find(|k| node_changed(k)) {
            return Some(k.clone());
        }
        if let Some(k) = sets.writes.keys().find(|k| node_changed(k)) {
            return Some(k.clone());
        }
        // A subtree read whole: anything below it changed.
        let changed_below = |root: &[u8]| {
            let after = |(_, &v): (&Vec<u8>, &u64)| v > base;
            match path::subtree_end(root) {
                Some(end) => {
                    let range = root.to_vec()..end;
                    self.nodes.range(range.clone()).any(after) || self.subtrees.range(range).any(after)
                }
                None => self.nodes.iter().any(after) || self.subtrees.iter().any(after),
            }
        };
        if let Some(k) = sets.trees.iter().find(|k| node_changed(k) || changed_below(k)) {
            return Some(k.clone());
        }
        sets.lists
            .iter()
            .find(|k| node_changed(k) || self.children.get(k.as_slice()).is_some_and(|&v| v > base))
            .cloned()
    }
}

/// Open transactions by base version.
#[derive(Default)]
pub(super) struct OpenTransactions(Mutex<BTreeMap<u64, usize>>);

impl OpenTransactions {
    pub(super) fn begin(&self, base: u64) {
        *lock(&self.0).entry(base).or_default() += 1;
    }

    pub(super) fn end(&self, base: u64) {
        let mut open = lock(&self.0);
        if let Some(n) = open.get_mut(&base) {
            *n -= 1;
            if *n == 0 {
                open.remove(&base);
            }
        }
    }

    /// The oldest base version of an open transaction.
    pub(super) fn oldest_base(&self) -> Option<u64> {
        lock(&self.0).keys().next().copied()
    }
}
