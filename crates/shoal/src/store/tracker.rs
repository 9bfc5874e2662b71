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

/// Open transactions by base version: how many are open at each base, in
/// base order. A vector, not a map: bases arrive in increasing order (a
/// new transaction's base is the newest version), so a begin appends, and
/// its kept capacity spares an allocation per transaction.
#[derive(Default)]
pub(super) struct OpenTransactions(Mutex<Vec<(u64, usize)>>);

impl OpenTransactions {
    pub(super) fn begin(&self, base: u64) {
        let mut open = lock(&self.0);
        match open.last_mut() {
            Some((last, n)) if *last == base => *n += 1,
            Some((last, _)) if *last < base => open.push((base, 1)),
            None => open.push((base, 1)),
            Some(_) => match open.binary_search_by_key(&base, |&(b, _)| b) {
                Ok(at) => open[at].1 += 1,
                Err(at) => open.insert(at, (base, 1)),
            },
        }
    }

    pub(super) fn end(&self, base: u64) {
        let mut open = lock(&self.0);
        if let Ok(at) = open.binary_search_by_key(&base, |&(b, _)| b) {
            open[at].1 -= 1;
            if open[at].1 == 0 {
                open.remove(at);
            }
        }
    }

    /// The oldest base version of an open transaction, not counting one
    /// transaction begun at `committing` (the one committing, which ends
    /// once its commit returns and needs no record of it).
    pub(super) fn oldest_base_besides(&self, committing: Option<u64>) -> Option<u64> {
        let open = lock(&self.0);
        let mut bases = open.iter().filter(|&&(base, n)| !(Some(base) == committing && n == 1));
        bases.next().map(|&(base, _)| base)
    }
}

#[cfg(test)]
mod tests {
    use super::OpenTransactions;

    #[test]
    fn the_oldest_base_besides_the_committing_transaction() {
        let open = OpenTransactions::default();
        assert_eq!(open.oldest_base_besides(None), None);
        open.begin(5);
        // Alone, the committing transaction needs no record of its commit.
        assert_eq!(open.oldest_base_besides(Some(5)), None);
        assert_eq!(open.oldest_base_besides(None), Some(5));
        open.begin(5);
        open.begin(7);
        // Another transaction at the same base does.
        assert_eq!(open.oldest_base_besides(Some(5)), Some(5));
        assert_eq!(open.oldest_base_besides(Some(7)), Some(5));
        open.end(5);
        assert_eq!(open.oldest_base_besides(Some(5)), Some(7));
        assert_eq!(open.oldest_base_besides(Some(7)), Some(5));
        // A base older than the newest one (a transaction at an older
        // version) is kept in order.
        open.begin(3);
        assert_eq!(open.oldest_base_besides(Some(5)), Some(3));
        assert_eq!(open.oldest_base_besides(Some(3)), Some(5));
        open.end(3);
        open.end(5);
        assert_eq!(open.oldest_base_besides(Some(7)), None);
        assert_eq!(open.oldest_base_besides(None), Some(7));
        open.end(7);
        // An end with no begin changes nothing.
        open.end(9);
        assert_eq!(open.oldest_base_besides(None), None);
    }
}
