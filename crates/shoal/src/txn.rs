//! Transactions: optimistic, xenstore-style.
//!
//! A transaction reads at its base version and buffers its writes. It
//! records every path it read, listed or wrote; at commit the writer checks
//! them against the versions that last changed each path (tracked per path,
//! not per store: DESIGN §8) and fails with [`Error::Conflict`] naming the
//! first path that changed after the base. Reads see the transaction's own
//! writes. Dropping a transaction aborts it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};
use crate::journal::JournalOp;
use crate::path;
use crate::snapshot::Snapshot;

/// A buffered change to one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Write {
    /// The node's subtree (itself included) is deleted first.
    pub clears_subtree: bool,
    /// Then replaced by the subtree at this key of the base version, by
    /// reference ([`Transaction::copy_tree`]; set with `clears_subtree`).
    pub tree: Option<Vec<u8>>,
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

/// Where a key's node comes from, as far as buffered subtree writes say.
enum Source<'k> {
    /// The base version, at this key (translated by a copied ancestor).
    Base(Cow<'k, [u8]>),
    /// A buffered subtree deletion removed it.
    Cleared,
}

/// The read and write sets of a transaction, handed to the writer at commit.
pub(crate) struct TxnSets {
    pub base_version: u64,
    pub reads: HashSet<Vec<u8>>,
    pub lists: HashSet<Vec<u8>>,
    /// Subtrees read whole (copy sources), as keys of the base version.
    pub trees: HashSet<Vec<u8>>,
    pub writes: BTreeMap<Vec<u8>, Write>,
}

impl TxnSets {
    /// The writes as journal ops, in key order (a subtree deletion before the
    /// write of the same node).
    pub fn journal_ops(&self) -> Vec<JournalOp> {
        let mut ops = Vec::with_capacity(self.writes.len());
        for (key, w) in &self.writes {
            if let Some(from) = &w.tree {
                // Replaces the subtree (the clearing is part of it), with the
                // source's own value unless the node was written after.
                ops.push(JournalOp::CopyTree { key: key.clone(), from: from.clone() });
                if matches!(&w.node, NodeWrite::Copy(f) if f == from) {
                    continue;
                }
            } else if w.clears_subtree {
                ops.push(JournalOp::DeleteTree { key: key.clone() });
            }
            match &w.node {
                NodeWrite::Put(v) => ops.push(JournalOp::Put { key: key.clone(), value: v.clone() }),
                NodeWrite::Copy(from) => ops.push(JournalOp::Copy { key: key.clone(), from: from.clone() }),
                NodeWrite::Delete if !w.clears_subtree || w.tree.is_some() => {
                    ops.push(JournalOp::Delete { key: key.clone() })
                }
                _ => {}
            }
        }
        ops
    }
}

/// A transaction's reads and writes, taken out of it by
/// [`Transaction::into_intent`]. Paths are sorted; `changes` are in the
/// order the store would apply them (key order, a subtree's deletion before
/// the write of the same node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The version it read at.
    pub base_version: u64,
    /// Nodes whose value (or absence) it read.
    pub read: Vec<String>,
    /// Nodes whose children it listed.
    pub listed: Vec<String>,
    /// Subtrees it read whole (the sources of `copy_tree`).
    pub read_trees: Vec<String>,
    /// Nodes it wrote (their changes, on one host, conflict too).
    pub written: Vec<String>,
    pub changes: Vec<IntentChange>,
}

/// One change of an [`Intent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentChange {
    Put {
        path: String,
        value: Vec<u8>,
    },
    /// The node, which has no children.
    Delete {
        path: String,
    },
    /// The node and everything below it.
    DeleteTree {
        path: String,
    },
    /// The value of the node at `from`, as of the base version.
    Copy {
        path: String,
        from: String,
    },
    /// The subtree at `from`, as of the base version, in place of the
    /// subtree at `path`.
    CopyTree {
        path: String,
        from: String,
    },
}

/// What a transaction needs of the writer.
pub(crate) trait Committer: Sync {
    /// Checks a value against the store's limits.
    fn check_value(&self, path: &str, value: &[u8]) -> Result<()>;
    /// Commits the transaction's sets; returns the new version.
    fn commit(&self, sets: &TxnSets) -> Result<u64>;
    /// Unregisters a transaction begun at `base`.
    fn end(&self, base: u64);
}

/// An open transaction. See the module docs.
pub struct Transaction<'s> {
    store: &'s dyn Committer,
    base: Snapshot,
    sets: TxnSets,
}

impl<'s> Transaction<'s> {
    pub(crate) fn new(store: &'s dyn Committer, base: Snapshot) -> Self {
        let sets = TxnSets {
            base_version: base.version(),
            reads: HashSet::new(),
            lists: HashSet::new(),
            trees: HashSet::new(),
            writes: BTreeMap::new(),
        };
        Transaction { store, base, sets }
    }

    /// The version this transaction reads at.
    pub fn base_version(&self) -> u64 {
        self.base.version()
    }

    /// The snapshot this transaction reads at (without its own changes):
    /// held as long as the transaction, whatever compaction does meanwhile.
    pub fn base(&self) -> &Snapshot {
        &self.base
    }

    /// Where the node at `key` comes from, after the buffered subtree writes
    /// of its ancestors: the nearest one decides (a later one replaced what
    /// an earlier one farther up did below it).
    fn source<'k>(&self, key: &'k [u8]) -> Source<'k> {
        if key.is_empty() || self.sets.writes.is_empty() {
            return Source::Base(Cow::Borrowed(key));
        }
        // Ancestors nearest first, then the root.
        let mut end = key.len();
        loop {
            let ancestor = match key[..end].iter().rposition(|&b| b == 0) {
                Some(p) => &key[..p],
                None => &[][..],
            };
            match self.sets.writes.get(ancestor) {
                Some(Write { tree: Some(from), .. }) => {
                    let mut translated = from.clone();
                    translated.extend_from_slice(&key[ancestor.len()..]);
                    return Source::Base(Cow::Owned(translated));
                }
                Some(w) if w.clears_subtree => return Source::Cleared,
                _ => {}
            }
            if ancestor.is_empty() {
                return Source::Base(Cow::Borrowed(key));
            }
            end = ancestor.len();
        }
    }

    /// The key of the base version that holds the node at `key` as this
    /// transaction sees it, recorded as read; [`Error::NoSuchPath`] (naming
    /// `path`) if there is none.
    fn base_source(&mut self, key: &[u8], path: &str) -> Result<Vec<u8>> {
        let k = match self.source(key) {
            Source::Base(k) => k.into_owned(),
            Source::Cleared => return Err(Error::NoSuchPath { path: path.to_string() }),
        };
        // Read even when it fails: a node created meanwhile is a conflict.
        self.sets.reads.insert(k.clone());
        if self.base.get_key(&k)?.is_none() {
            return Err(Error::NoSuchPath { path: path.to_string() });
        }
        Ok(k)
    }

    /// Drops the buffered writes at and below `key` (all of them for the root).
    /// Before a delete at `key` takes back what this transaction wrote at
    /// or below it: those writes relied on `key`'s ancestors existing at
    /// the base (they created none), and that reliance outlives them: run
    /// after a commit that deleted one of those ancestors, the write would
    /// have created it again, and it would stay after this delete. So the
    /// ancestors become reads, and such a commit conflicts.
    fn undoing_own_writes(&mut self, key: &[u8]) {
        // Only what creates nodes relied on them: a delete creates none.
        let creates = |w: &Write| w.tree.is_some() || matches!(w.node, NodeWrite::Put(_) | NodeWrite::Copy(_));
        let created = match path::subtree_end(key) {
            Some(end) => self.sets.writes.range(key.to_vec()..end).any(|(_, w)| creates(w)),
            None => self.sets.writes.values().any(creates),
        };
        if created {
            // Ancestors this transaction wrote are its own, not the base's.
            let relied: Vec<Vec<u8>> =
                path::ancestors(key).filter(|a| !self.sets.writes.contains_key(*a)).map(<[u8]>::to_vec).collect();
            self.sets.reads.extend(relied);
        }
    }

    fn drop_writes_below(&mut self, key: &[u8]) {
        match path::subtree_end(key) {
            Some(end) => {
                let inside: Vec<Vec<u8>> = self.sets.writes.range(key.to_vec()..end).map(|(k, _)| k.clone()).collect();
                for k in inside {
                    self.sets.writes.remove(&k);
                }
            }
            None => self.sets.writes.clear(),
        }
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
        match self.source(key) {
            Source::Base(k) => self.base.get_key(&k),
            Source::Cleared => Ok(None),
        }
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
        let source = match self.sets.writes.get(key) {
            Some(Write { tree: Some(from), .. }) => Source::Base(Cow::Borrowed(from.as_slice())),
            Some(w) if w.clears_subtree => Source::Cleared,
            _ => self.source(key),
        };
        let mut names: std::collections::BTreeSet<Vec<u8>> = match source {
            Source::Cleared => Default::default(),
            Source::Base(k) => self.base.list_key(&k)?.into_iter().map(String::into_bytes).collect(),
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
            Some(NodeWrite::Delete) => return Err(Error::NoSuchPath { path: from.to_string() }),
            _ => NodeWrite::Copy(self.base_source(&from_key, from)?),
        };
        self.create_ancestors(&to_key)?;
        self.sets.writes.entry(to_key).or_default().node = node;
        Ok(())
    }

    /// Copies the node at `from` and everything below it to `to`, replacing
    /// what was at `to`, by reference: however large the subtree, the copy
    /// writes a few nodes and shares the source's bytes. A write below `to`
    /// splits the copy along its path (a node per child of each node on the
    /// path). Compaction keeps the copy's nodes shared with its source's
    /// (all but the edges of the copied range). The subtree copied is the one the transaction began with; the
    /// commit conflicts if anything in it changed meanwhile. A source this
    /// transaction has already written to (at or below `from`) is refused
    /// with [`Error::CopySourceWritten`]: copy it in a transaction of its
    /// own. Fails with [`Error::NoSuchPath`] if `from` does not exist.
    pub fn copy_tree(&mut self, from: &str, to: &str) -> Result<()> {
        let (from_key, to_key) = (path::key(from)?, path::key(to)?);
        if to_key.is_empty() {
            return Err(Error::RootImmutable);
        }
        if from_key.is_empty() {
            return Err(Error::InvalidPath {
                path: from.to_string(),
                reason: "the root cannot be copied; copy its children",
            });
        }
        let written = match path::subtree_end(&from_key) {
            Some(end) => self.sets.writes.range(from_key.clone()..end).next().is_some(),
            None => !self.sets.writes.is_empty(),
        };
        if written {
            return Err(Error::CopySourceWritten { path: from.to_string() });
        }
        self.sets.reads.insert(from_key.clone());
        let source = self.base_source(&from_key, from)?;
        self.sets.trees.insert(source.clone());
        let longest = to_key.len() + self.base.below_key(&source)?.longest as usize;
        if longest > path::MAX_KEY_BYTES {
            return Err(Error::CopyTooDeep { from: from.to_string(), to: to.to_string(), longest: longest + 1 });
        }
        self.create_ancestors(&to_key)?;
        self.drop_writes_below(&to_key);
        let node = NodeWrite::Copy(source.clone());
        self.sets.writes.insert(to_key, Write { clears_subtree: true, tree: Some(source), node });
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
        self.undoing_own_writes(&key);
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
        self.undoing_own_writes(&key);
        self.drop_writes_below(&key);
        self.sets.writes.insert(key, Write { clears_subtree: true, tree: None, node: NodeWrite::Delete });
        Ok(existed)
    }

    /// What this transaction read and would write, instead of committing
    /// it here: for committing it elsewhere, as shoal's cluster mode does
    /// (the cluster's writer checks the reads and makes the changes). The
    /// transaction ends, as if aborted.
    pub fn into_intent(self) -> Intent {
        let paths = |keys: &HashSet<Vec<u8>>| -> Vec<String> {
            let mut p: Vec<String> = keys.iter().map(|k| path::path_of(k)).collect();
            p.sort();
            p
        };
        let changes = self
            .sets
            .journal_ops()
            .into_iter()
            .map(|op| match op {
                JournalOp::Put { key, value } => IntentChange::Put { path: path::path_of(&key), value },
                JournalOp::Delete { key } => IntentChange::Delete { path: path::path_of(&key) },
                JournalOp::DeleteTree { key } => IntentChange::DeleteTree { path: path::path_of(&key) },
                JournalOp::Copy { key, from } => {
                    IntentChange::Copy { path: path::path_of(&key), from: path::path_of(&from) }
                }
                JournalOp::CopyTree { key, from } => {
                    IntentChange::CopyTree { path: path::path_of(&key), from: path::path_of(&from) }
                }
            })
            .collect();
        let mut written: Vec<String> = self.sets.writes.keys().map(|k| path::path_of(k)).collect();
        written.sort();
        Intent {
            base_version: self.sets.base_version,
            read: paths(&self.sets.reads),
            listed: paths(&self.sets.lists),
            read_trees: paths(&self.sets.trees),
            written,
            changes,
        }
    }

    /// Commits: returns the new version, or the current one when nothing was
    /// written. Fails with [`Error::Conflict`] if anything this transaction
    /// read, listed or wrote changed after its base version.
    pub fn commit(self) -> Result<u64> {
        // Dropping `self` afterwards unregisters the transaction.
        self.store.commit(&self.sets)
    }

    /// Discards the transaction (the same as dropping it).
    pub fn abort(self) {}
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.store.end(self.base.version());
    }
}
