//! Transactions: optimistic, xenstore-style.
//!
//! A transaction reads at its base version and buffers its writes. It
//! records every path it read, listed or wrote; at commit the writer checks
//! them against the versions that last changed each path (tracked per path,
//! not per store: DESIGN §8) and fails with [`Error::Conflict`] naming the
//! first path that changed after the base. Reads see the transaction's own
//! writes. Dropping a transaction aborts it.

use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};
use crate::journal::JournalOp;
use crate::path;
use crate::snapshot::Snapshot;
use crate::store::Shared;

/// A buffered change to one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Write {
    /// The node's subtree (itself included) is deleted first.
    pub clears_subtree: bool,
    /// What happens to the node itself afterwards.
    pub node: NodeWrite,
}

#[derive(Clone, Debug, Default)]
pub(crate) enum NodeWrite {
    #[default]
    Keep,
    Put(Vec<u8>),
    /// The value of the node at this key of the base version, shared by
    /// reference (see [`Transaction::copy`]).
    Copy(Vec<u8>),
    Delete,
}

/// The read and write sets of a transaction, handed to the writer at commit.
pub(crate) struct TxnSets {
    pub base_version: u64,
    pub reads: HashSet<Vec<u8>>,
    pub lists: HashSet<Vec<u8>>,
    pub writes: BTreeMap<Vec<u8>, Write>,
}

impl TxnSets {
    /// The writes as journal ops, in key order (a subtree deletion before the
    /// write of the same node).
    pub fn journal_ops(&self) -> Vec<JournalOp> {
        let mut ops = Vec::with_capacity(self.writes.len());
        for (key, w) in &self.writes {
            if w.clears_subtree {
                ops.push(JournalOp::DeleteTree { key: key.clone() });
            }
            match &w.node {
                NodeWrite::Put(v) => ops.push(JournalOp::Put { key: key.clone(), value: v.clone() }),
                NodeWrite::Copy(from) => ops.push(JournalOp::Copy { key: key.clone(), from: from.clone() }),
                NodeWrite::Delete if !w.clears_subtree => ops.push(JournalOp::Delete { key: key.clone() }),
                _ => {}
            }
        }
        ops
    }
}

/// An open transaction. See the module docs.
pub struct Transaction<'s> {
    store: &'s Shared,
    base: Snapshot,
    sets: TxnSets,
}

impl<'s> Transaction<'s> {
    pub(crate) fn new(store: &'s Shared, base: Snapshot) -> Self {
        let sets = TxnSets {
            base_version: base.version(),
            reads: HashSet::new(),
            lists: HashSet::new(),
            writes: BTreeMap::new(),
        };
        Transaction { store, base, sets }
    }

    /// The version this transaction reads at.
    pub fn base_version(&self) -> u64 {
        self.base.version()
    }

    /// Whether the node at `key` is deleted by a buffered subtree deletion of an ancestor.
    fn cleared_by_ancestor(&self, key: &[u8]) -> bool {
        if key.is_empty() {
            return false;
        }
        let root_cleared = self.sets.writes.get(&b""[..]).is_some_and(|w| w.clears_subtree);
        root_cleared || path::ancestors(key).any(|a| self.sets.writes.get(a).is_some_and(|w| w.clears_subtree))
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        if key.is_empty() {
            return Ok(Some(&[])); // the root always exists
        }
        if let Some(w) = self.sets.writes.get(key) {
            match &w.node {
                NodeWrite::Put(v) => return Ok(Some(v)),
                NodeWrite::Copy(from) => return self.base.get_key(from),
                NodeWrite::Delete => return Ok(None),
                NodeWrite::Keep if w.clears_subtree => return Ok(None),
                NodeWrite::Keep => {}
            }
        }
        if self.cleared_by_ancestor(key) {
            return Ok(None);
        }
        self.base.get_key(key)
    }

    /// The value at `path` as this transaction sees it.
    pub fn get(&mut self, path: &str) -> Result<Option<&[u8]>> {
        let key = path::key(path)?;
        self.sets.reads.insert(key.clone());
        // Re-borrow immutably for the returned slice.
        let this: &Self = self;
        this.lookup(&key)
    }

    /// The immediate children of `path` as this transaction sees them.
    pub fn list(&mut self, path: &str) -> Result<Vec<String>> {
        let key = path::key(path)?;
        self.sets.lists.insert(key.clone());
        self.list_key(&key)
    }

    fn list_key(&self, key: &[u8]) -> Result<Vec<String>> {
        let cleared = self.cleared_by_ancestor(key) || self.sets.writes.get(key).is_some_and(|w| w.clears_subtree);
        let mut names: std::collections::BTreeSet<Vec<u8>> = if cleared {
            Default::default()
        } else {
            self.base.list_key(key)?.into_iter().map(String::into_bytes).collect()
        };
        let prefix = path::child_prefix(key);
        for (k, w) in self.sets.writes.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
            let rest = &k[prefix.len()..];
            let (name, is_child) = match rest.iter().position(|&b| b == 0) {
                Some(p) => (&rest[..p], false),
                None => (rest, true),
            };
            if is_child && (w.clears_subtree || matches!(w.node, NodeWrite::Delete)) {
                names.remove(name);
            }
            if matches!(w.node, NodeWrite::Put(_) | NodeWrite::Copy(_)) {
                names.insert(name.to_vec());
            }
        }
        Ok(names.into_iter().map(|n| String::from_utf8_lossy(&n).into_owned()).collect())
    }

    /// Writes `value` at `path`, creating missing ancestors with empty values.
    pub fn put(&mut self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        let value = value.as_ref();
        let key = path::key(path)?;
        if key.is_empty() {
            return Err(Error::RootImmutable);
        }
        self.store.check_value(path, value)?;
        self.create_ancestors(&key)?;
        self.sets.writes.entry(key).or_default().node = NodeWrite::Put(value.to_vec());
        Ok(())
    }

    /// Writes the value of the node at `from` to `to`, as [`Transaction::put`]
    /// would, but by reference: a value stored outside its leaf (longer
    /// than 256 bytes) is not copied, `to` shares its bytes, so the copy
    /// costs the same whatever the value's size, and stays shared through
    /// compactions. The value is the one this transaction sees; the commit
    /// conflicts if `from` changed after the transaction began. Fails with
    /// [`Error::NoSuchPath`] if `from` does not exist.
    pub fn copy(&mut self, from: &str, to: &str) -> Result<()> {
        let (from_key, to_key) = (path::key(from)?, path::key(to)?);
        if to_key.is_empty() {
            return Err(Error::RootImmutable);
        }
        self.sets.reads.insert(from_key.clone());
        let node = match self.sets.writes.get(&from_key).map(|w| &w.node) {
            // The root's value is always empty.
            _ if from_key.is_empty() => NodeWrite::Put(Vec::new()),
            // Written by this transaction: its bytes are not in the arena yet.
            Some(NodeWrite::Put(v)) => NodeWrite::Put(v.clone()),
            Some(NodeWrite::Copy(source)) => NodeWrite::Copy(source.clone()),
            _ => match self.lookup(&from_key)? {
                None => return Err(Error::NoSuchPath { path: from.to_string() }),
                Some(_) => NodeWrite::Copy(from_key),
            },
        };
        self.create_ancestors(&to_key)?;
        self.sets.writes.entry(to_key).or_default().node = node;
        Ok(())
    }

    /// Creates the missing ancestors of `key` now, with empty values, so
    /// that they outlive a later deletion of the node within the transaction.
    fn create_ancestors(&mut self, key: &[u8]) -> Result<()> {
        let mut missing = Vec::new();
        let mut nearest_first: Vec<&[u8]> = path::ancestors(key).collect();
        nearest_first.reverse();
        for ancestor in nearest_first {
            // Once one ancestor exists, so do all of its own.
            if self.lookup(ancestor)?.is_some() {
                break;
            }
            missing.push(ancestor.to_vec());
        }
        for ancestor in missing {
            self.sets.writes.entry(ancestor).or_default().node = NodeWrite::Put(Vec::new());
        }
        Ok(())
    }

    /// Deletes the node at `path`, which must have no children. Returns
    /// whether it existed; deleting nothing writes nothing.
    pub fn delete(&mut self, path: &str) -> Result<bool> {
        let key = path::key(path)?;
        if key.is_empty() {
            return Err(Error::RootImmutable);
        }
        self.sets.lists.insert(key.clone());
        self.sets.reads.insert(key.clone());
        if !self.list_key(&key)?.is_empty() {
            return Err(Error::HasChildren { path: path.to_string() });
        }
        let existed = self.lookup(&key)?.is_some();
        if existed {
            self.sets.writes.entry(key).or_default().node = NodeWrite::Delete;
        }
        Ok(existed)
    }

    /// Deletes the node at `path` and everything below it. Returns whether it
    /// existed. `delete_tree("/")` empties the store.
    pub fn delete_tree(&mut self, path: &str) -> Result<bool> {
        let key = path::key(path)?;
        self.sets.reads.insert(key.clone());
        let existed = self.lookup(&key)?.is_some();
        let end = path::subtree_end(&key);
        let inside: Vec<Vec<u8>> = match &end {
            Some(end) => self.sets.writes.range(key.clone()..end.clone()).map(|(k, _)| k.clone()).collect(),
            None => self.sets.writes.keys().cloned().collect(),
        };
        for k in inside {
            self.sets.writes.remove(&k);
        }
        self.sets.writes.insert(key, Write { clears_subtree: true, node: NodeWrite::Delete });
        Ok(existed)
    }

    /// Commits: returns the new version, or the current one when nothing was
    /// written. Fails with [`Error::Conflict`] if anything this transaction
    /// read, listed or wrote changed after its base version.
    pub fn commit(self) -> Result<u64> {
        // Dropping `self` afterwards unregisters the transaction.
        self.store.commit_sets(&self.sets)
    }

    /// Discards the transaction (the same as dropping it).
    pub fn abort(self) {}
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.store.end_transaction(self.base.version());
    }
}
