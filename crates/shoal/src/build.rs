//! Writing the tree: applying a sorted batch of changes to a version's tree
//! by path copying. Only nodes on the paths to changed keys are rewritten;
//! every other node of the old version is shared by offset, so the cost of a
//! commit follows the size of the change, not of the data.
//!
//! New nodes are appended to the arena through [`NodeSink`]; nothing already
//! written is touched (invariant 1). A subtree deletion drops whole child
//! nodes that lie inside the deleted key range without visiting them.
//! Rebuilt nodes borrow their keys and values from the old nodes and from
//! the batch; nothing is copied until the new node is encoded.
//!
//! Links (subtrees copied by reference): a `Put` keeps the link of the
//! entry it overwrites, a `Set` writes an entry exactly as given. A batch
//! that writes below a link first splits it ([`split_links`]): the link's
//! node becomes a plain entry and each of its source's children a link of
//! its own (or a plain entry when it has nothing below), one level at a
//! time down to the write, so the cost follows the path, not the subtree.

use smallvec::{smallvec, SmallVec};

use crate::error::Result;
use crate::node::Region;
use crate::node::{
    self, ChildRef, EntryRef, InternalView, Key, LeafView, Link, ValueRepr, KIND_INTERNAL, KIND_LEAF, NODE_TARGET_BYTES,
};
use crate::path;
use crate::tree;

/// Where the builder reads existing nodes and appends new ones.
pub trait NodeSink {
    /// The immutable, readable arena prefix (everything flushed so far).
    fn region(&self) -> Region<'_>;
    /// Appends a sealed node and returns its offset (readable after `flush`).
    fn append(&self, node: &[u8]) -> Result<u64>;
    /// Makes appended nodes readable through `region`.
    fn flush(&self) -> Result<()>;
    /// A copy of the node at `offset`, flushed or not.
    fn read_node(&self, offset: u64) -> Result<Vec<u8>>;
    /// Converts node damage into an error naming the arena file.
    fn damaged(&self, damage: node::Damage) -> crate::Error;
    /// A buffer to encode nodes in, kept between batches: a fresh one each
    /// commit would cost a large allocation (and the allocator's
    /// consolidation it triggers). Give it back with [`NodeSink::give_buffer`].
    fn take_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(2 * NODE_TARGET_BYTES)
    }
    fn give_buffer(&self, _buf: Vec<u8>) {}
    /// Emptied entry vectors kept between batches, as the encoding buffer is.
    fn take_entry_vecs(&self) -> Vec<Vec<EntryRef<'static>>> {
        Vec::new()
    }
    fn give_entry_vecs(&self, _vecs: Vec<Vec<EntryRef<'static>>>) {}
    /// The kind and entry count of the node at `offset`, flushed or not.
    fn kind_and_count(&self, offset: u64) -> Result<(u8, usize)> {
        let bytes = self.read_node(offset)?;
        Ok((bytes[0], node::count(&bytes)))
    }
    /// Appends a sealed value blob; the arena puts a large value's bytes
    /// on a page boundary (see [`node::PAGE_ALIGNED_VALUE_MIN`]).
    fn append_blob(&self, blob: &[u8]) -> Result<u64> {
        self.append(blob)
    }
}

/// A value as a batch carries it: inline bytes, or a blob already appended.
#[derive(Clone, Debug)]
pub enum StoredValue {
    Inline(Vec<u8>),
    Blob { offset: u64, len: u32 },
}

impl StoredValue {
    /// The value an entry of the arena holds, as a batch carries it.
    pub fn of(value: ValueRepr<'_>) -> StoredValue {
        match value {
            ValueRepr::Inline(bytes) => StoredValue::Inline(bytes.to_vec()),
            ValueRepr::Blob { offset, len } => StoredValue::Blob { offset, len },
        }
    }

    fn as_repr(&self) -> ValueRepr<'_> {
        match self {
            StoredValue::Inline(v) => ValueRepr::Inline(v),
            StoredValue::Blob { offset, len } => ValueRepr::Blob { offset: *offset, len: *len },
        }
    }
}

/// Where a link entry reads its subtree: see [`node::Link`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    pub root: u64,
    pub src: Vec<u8>,
    pub keys: u64,
    pub longest: u16,
}

impl LinkTarget {
    pub fn of(link: Link<'_>) -> LinkTarget {
        LinkTarget { root: link.root, src: link.src.to_vec(), keys: link.keys, longest: link.longest }
    }

    /// A link to what lies below `src` in the tree at `root`, if anything does.
    pub fn below(region: Region<'_>, root: u64, src: Vec<u8>) -> node::Parse<Option<LinkTarget>> {
        let below = tree::below(region, root, &src)?;
        Ok((below.keys > 0).then_some(LinkTarget { root, src, keys: below.keys, longest: below.longest }))
    }

    fn as_link(&self) -> Link<'_> {
        Link { root: self.root, src: &self.src, keys: self.keys, longest: self.longest }
    }
}

/// One change of a batch. A batch is sorted by key; for one key a
/// `DeleteTree` comes before a `Put` or `Set` (clear the subtree, then
/// write the node).
#[derive(Clone, Debug)]
pub enum Op {
    /// Writes a node's value; an existing link there is kept.
    Put {
        key: Vec<u8>,
        value: StoredValue,
    },
    /// Writes an entry exactly: a link (a subtree copied by reference) or
    /// a plain node. `structural`: a split of a link, which changes no
    /// path's contents (not a change to report).
    Set {
        key: Vec<u8>,
        value: StoredValue,
        link: Option<LinkTarget>,
        structural: bool,
    },
    Delete {
        key: Vec<u8>,
    },
    DeleteTree {
        key: Vec<u8>,
    },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Set { key, .. } | Op::Delete { key } | Op::DeleteTree { key } => key,
        }
    }

    /// Whether this op writes a link (a subtree copied by reference).
    pub fn is_copy(&self) -> bool {
        matches!(self, Op::Set { link: Some(_), .. })
    }

    pub fn change_kind(&self) -> node::ChangeKind {
        match self {
            Op::Put { .. } => node::ChangeKind::Set,
            Op::Set { link: Some(_), .. } => node::ChangeKind::CopyTree,
            Op::Set { link: None, .. } => node::ChangeKind::Set,
            Op::Delete { .. } => node::ChangeKind::Delete,
            Op::DeleteTree { .. } => node::ChangeKind::DeleteTree,
        }
    }
}

/// The ops that split the links of the tree at `root` which `ops` (sorted)
/// write below, sorted by key; merge them in before the batch's own ops of
/// the same key ([`merge_splits`]). Splits inside a subtree the batch
/// deletes are left out.
pub fn split_links(region: Region<'_>, root: u64, ops: &[Op]) -> node::Parse<Vec<Op>> {
    let mut splits: std::collections::BTreeMap<Vec<u8>, Op> = std::collections::BTreeMap::new();
    for op in ops {
        let key = op.key();
        // Once a link above `key` was split here, the nearest entry this pass
        // made at or above `key` tells what covers it; before, the tree does.
        let nearest_split = if splits.is_empty() {
            None
        } else {
            std::iter::once(key)
                .chain(path::ancestors(key).collect::<Vec<_>>().into_iter().rev())
                .find_map(|a| splits.get(a))
        };
        let mut covering = match nearest_split {
            Some(Op::Set { key: k, value, link: Some(target), .. }) if k.as_slice() != key => {
                Some((k.clone(), value.clone(), target.clone()))
            }
            Some(_) => None,
            None => tree::covering_link(region, root, key)?
                .map(|(e, link)| (e.key.to_vec(), StoredValue::of(e.value), LinkTarget::of(link))),
        };
        while let Some((link_key, value, target)) = covering.take() {
            splits.insert(link_key.clone(), Op::Set { key: link_key.clone(), value, link: None, structural: true });
            let (source_root, source, children) = tree::children(region, target.root, &target.src)?;
            for child in children {
                let mut child_key = link_key.clone();
                child_key.extend_from_slice(&child.key[source.len()..]);
                let link = match child.link {
                    Some(nested) => Some(LinkTarget::of(nested)),
                    None => LinkTarget::below(region, source_root, child.key.clone())?,
                };
                if path::in_subtree(key, &child_key) && child_key != key {
                    covering = link.clone().map(|t| (child_key.clone(), StoredValue::of(child.value), t));
                }
                let value = StoredValue::of(child.value);
                splits.insert(child_key.clone(), Op::Set { key: child_key, value, link, structural: true });
            }
        }
    }
    let deleted: Vec<&[u8]> = ops.iter().filter(|op| matches!(op, Op::DeleteTree { .. })).map(Op::key).collect();
    Ok(splits.into_values().filter(|op| !deleted.iter().any(|d| path::in_subtree(op.key(), d))).collect())
}

/// Merges `splits` into `ops` (both sorted), a split first where both
/// write one key.
pub fn merge_splits(splits: Vec<Op>, ops: &[Op]) -> Vec<Op> {
    let mut out = Vec::with_capacity(splits.len() + ops.len());
    let mut splits = splits.into_iter().peekable();
    for op in ops {
        while let Some(s) = splits.next_if(|s| s.key() <= op.key()) {
            out.push(s);
        }
        out.push(op.clone());
    }
    out.extend(splits);
    out
}

/// What a batch did, for conflict tracking.
#[derive(Default, Debug)]
pub struct ApplyReport {
    /// Keys that did not exist before and do now.
    pub created: Vec<Vec<u8>>,
    /// Keys removed by `Delete` (subtree deletions are reported by their op).
    pub removed: Vec<Vec<u8>>,
}

/// Stores a value for a `Put`: inline when small, else in a blob node.
pub fn store_value(sink: &dyn NodeSink, value: &[u8]) -> Result<StoredValue> {
    if value.len() <= node::INLINE_VALUE_MAX {
        Ok(StoredValue::Inline(value.to_vec()))
    } else {
        let offset = sink.append_blob(&node::build_blob(value))?;
        Ok(StoredValue::Blob { offset, len: value.len() as u32 })
    }
}

/// Applies `ops` to the tree at `root` and returns the new root (0: empty)
/// and the number of nodes below it (`None`: no op, the tree is unchanged).
pub fn apply(sink: &dyn NodeSink, root: u64, ops: &[Op], report: &mut ApplyReport) -> Result<(u64, Option<u64>)> {
    debug_assert!(ops.windows(2).all(|w| w[0].key() <= w[1].key()));
    if root != 0 && ops.is_empty() {
        return Ok((root, None));
    }
    let spare = sink.take_entry_vecs().into_iter().map(relabel).collect();
    let mut builder = Builder { sink, buf: sink.take_buffer(), spare, report };
    let refs: Vec<&Op> = ops.iter().collect();
    let result = (|| {
        let top = if root == 0 {
            let mut out = Vec::new();
            merge_leaf(&[], &refs, &mut out, builder.report);
            builder.write_chunks(Items::Leaf(out))?
        } else {
            builder.apply_node(root, &refs, None)?
        };
        let keys = top.iter().map(|c| c.keys).fold(0u64, u64::saturating_add);
        Ok((builder.finish_root(top)?, Some(keys)))
    })();
    sink.give_buffer(builder.buf);
    sink.give_entry_vecs(builder.spare.into_iter().map(relabel).collect());
    result
}

/// A part of a tree that [`write_tree`] assembles: an entry for a leaf, or
/// a subtree already written (of any height).
pub enum Piece<'a> {
    Entry(EntryRef<'a>),
    Child(ChildRef<'a>),
}

/// Writes a tree over `pieces` (sorted by key): runs of entries become
/// leaves, then internal levels are built over the leaves and subtrees
/// until one root remains. Subtrees of different heights may sit side by
/// side: readers descend any shape; only trees that commits rewrite need
/// one height, and this is for link targets, which no commit rewrites.
/// Returns the root (0: none) and the nodes below it.
pub fn write_tree<'a>(sink: &'a dyn NodeSink, pieces: Vec<Piece<'a>>) -> Result<(u64, u64)> {
    let mut report = ApplyReport::default();
    let mut builder =
        Builder { sink, buf: Vec::with_capacity(2 * NODE_TARGET_BYTES), spare: Vec::new(), report: &mut report };
    let mut level: Vec<ChildRef<'a>> = Vec::new();
    let mut entries = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Entry(e) => entries.push(e),
            Piece::Child(c) => {
                if !entries.is_empty() {
                    level.extend(builder.write_chunks(Items::Leaf(std::mem::take(&mut entries)))?);
                }
                level.push(c);
            }
        }
    }
    if !entries.is_empty() {
        level.extend(builder.write_chunks(Items::Leaf(entries))?);
    }
    let keys = level.iter().map(|c| c.keys).fold(0, u64::saturating_add);
    Ok((builder.finish_root(Refs::from_vec(level))?, keys))
}

/// Writes a tree from entries pushed in key order (a bulk load into an
/// empty tree): leaves are cut from runs of about [`SORTED_RUN_LEAVES`]
/// leaves' worth of entries (so sizes are balanced within a run, as
/// commits cut them), then the levels above are built.
pub struct SortedWriter<'a, 'r> {
    builder: Builder<'a, 'r>,
    run: Vec<EntryRef<'a>>,
    run_bytes: usize,
    leaves: Vec<ChildRef<'a>>,
}

/// Leaves' worth of entries cut together by [`SortedWriter`].
const SORTED_RUN_LEAVES: usize = 64;

impl<'a, 'r> SortedWriter<'a, 'r> {
    pub fn new(sink: &'a dyn NodeSink, report: &'r mut ApplyReport) -> SortedWriter<'a, 'r> {
        let builder = Builder { sink, buf: Vec::with_capacity(2 * NODE_TARGET_BYTES), spare: Vec::new(), report };
        SortedWriter { builder, run: Vec::new(), run_bytes: 0, leaves: Vec::new() }
    }

    /// Adds the entry after every one pushed before (greater key).
    pub fn push(&mut self, entry: EntryRef<'a>) -> Result<()> {
        debug_assert!(self.run.last().is_none_or(|last| last.key.cmp_key(&entry.key).is_lt()));
        self.run_bytes += entry.encoded_len();
        self.run.push(entry);
        if self.run_bytes >= SORTED_RUN_LEAVES * NODE_TARGET_BYTES {
            self.write_run()?;
        }
        Ok(())
    }

    fn write_run(&mut self) -> Result<()> {
        let run = std::mem::take(&mut self.run);
        self.leaves.extend(self.builder.write_chunks(Items::Leaf(run))?);
        self.run = self.builder.spare.pop().unwrap_or_default();
        self.run_bytes = 0;
        // Written as it goes, so the sink's buffer stays small (and in cache).
        self.builder.sink.flush()
    }

    /// Writes what is left and the levels above: the root (0: nothing was
    /// pushed) and the nodes below it. Not flushed.
    pub fn finish(mut self) -> Result<(u64, u64)> {
        if !self.run.is_empty() {
            self.write_run()?;
        }
        let leaves = std::mem::take(&mut self.leaves);
        let keys = leaves.iter().map(|c| c.keys).fold(0, u64::saturating_add);
        Ok((self.builder.finish_root(Refs::from_vec(leaves))?, keys))
    }
}

/// The contents of one node level while it is being rebuilt.
enum Items<'a> {
    Leaf(Vec<EntryRef<'a>>),
    Internal(Vec<ChildRef<'a>>),
}

struct Builder<'s, 'r> {
    sink: &'s dyn NodeSink,
    /// Reused buffer for encoding nodes.
    buf: Vec<u8>,
    /// Empty entry vectors to reuse (a leaf's entries, and the merged ones).
    spare: Vec<Vec<EntryRef<'s>>>,
    report: &'r mut ApplyReport,
}

/// An emptied vector of entries borrowing for another lifetime, on the same
/// allocation (an in-place collect of nothing), so that the builder's
/// vectors outlive the batch that borrowed into them.
fn relabel<'a, 'b>(mut v: Vec<EntryRef<'a>>) -> Vec<EntryRef<'b>> {
    v.clear();
    v.into_iter().map(|_| -> EntryRef<'b> { unreachable!("the vector is empty") }).collect()
}

impl<'s> Builder<'s, '_> {
    fn damaged(&self, d: node::Damage) -> crate::Error {
        self.sink.damaged(d)
    }

    fn read_items(&mut self, offset: u64) -> Result<Items<'s>> {
        let region: Region<'s> = self.sink.region();
        match region.kind_at(offset) {
            Some(KIND_LEAF) => {
                let view = LeafView::parse(region, offset).map_err(|d| self.damaged(d))?;
                let mut entries = self.spare.pop().unwrap_or_default();
                entries.reserve(view.len() + 4);
                for i in 0..view.len() {
                    entries.push(EntryRef::from(view.entry(i).map_err(|d| self.damaged(d))?));
                }
                Ok(Items::Leaf(entries))
            }
            _ => {
                let view = InternalView::parse(region, offset).map_err(|d| self.damaged(d))?;
                let mut children = Vec::with_capacity(view.len() + 4);
                for i in 0..view.len() {
                    children.push(ChildRef {
                        first_key: view.key(i).map_err(|d| self.damaged(d))?,
                        offset: view.child(i).map_err(|d| self.damaged(d))?,
                        keys: view.keys_below(i),
                        longest: view.longest_below(i),
                        node_bytes: NODE_TARGET_BYTES,
                    });
                }
                Ok(Items::Internal(children))
            }
        }
    }

    /// Rebuilds the node at `offset` with `ops`; `keys`: the nodes below it,
    /// when its parent knows.
    fn apply_node<'o>(&mut self, offset: u64, ops: &[&'o Op], keys: Option<u64>) -> Result<Refs<'s>>
    where
        'o: 's,
    {
        if self.sink.region().kind_at(offset) == Some(KIND_INTERNAL) {
            return self.apply_internal(offset, ops, keys);
        }
        if let [Op::Put { key, value: StoredValue::Inline(value) }] = ops {
            if let Some(patched) = self.replace_value(offset, key, value)? {
                return Ok(smallvec![patched]);
            }
        }
        match self.read_items(offset)? {
            Items::Leaf(entries) => {
                let mut out = self.spare.pop().unwrap_or_default();
                out.reserve(entries.len() + ops.len());
                merge_leaf(&entries, ops, &mut out, self.report);
                self.spare.push(relabel(entries));
                self.write_chunks(Items::Leaf(out))
            }
            Items::Internal(_) => Err(self.damaged(node::Damage::new(offset, "expected a leaf"))),
        }
    }

    /// The leaf at `offset` with the value of its entry `key` replaced,
    /// written as one copy of the leaf: the most common commit, one value
    /// rewritten. `None` (nothing written) when `key` is not there or the
    /// leaf must be rebuilt entry by entry (see
    /// [`LeafView::with_value_replaced`]); what is written is what that
    /// rebuild would write.
    fn replace_value(&mut self, offset: u64, key: &[u8], value: &[u8]) -> Result<Option<ChildRef<'s>>> {
        let region: Region<'s> = self.sink.region();
        let view = LeafView::parse(region, offset).map_err(|d| self.damaged(d))?;
        let (i, found) = view.search(key).map_err(|d| self.damaged(d))?;
        if !found {
            return Ok(None);
        }
        let Some(patched) = view.with_value_replaced(i, value, &mut self.buf).map_err(|d| self.damaged(d))? else {
            return Ok(None);
        };
        let first_key = view.entry(0).map_err(|d| self.damaged(d))?.key;
        let offset = self.sink.append(&self.buf)?;
        Ok(Some(ChildRef {
            first_key,
            offset,
            keys: patched.keys,
            longest: patched.longest,
            node_bytes: self.buf.len(),
        }))
    }

    /// Routes the ops to the children they touch (by binary search, leaving
    /// the other children unread), rebuilds those children, and writes the
    /// new node. When exactly one child changed and kept its smallest key,
    /// the node is copied with that one child pointer patched.
    fn apply_internal<'o>(&mut self, offset: u64, ops: &[&'o Op], keys: Option<u64>) -> Result<Refs<'s>>
    where
        'o: 's,
    {
        let region: Region<'s> = self.sink.region();
        let view = InternalView::parse(region, offset).map_err(|d| self.damaged(d))?;
        let n = view.len();
        let rebuilt = match ops {
            // One op, which lands in one child (a one-key commit at each
            // level): no tables of ops per child.
            [op] if !matches!(op, Op::DeleteTree { .. }) => {
                let i = view.route(op.key()).map_err(|d| self.damaged(d))?.unwrap_or(0);
                let child = view.child(i).map_err(|d| self.damaged(d))?;
                smallvec![(i, Some(self.apply_node(child, ops, Some(view.keys_below(i)))?))]
            }
            _ => self.rebuild_children(&view, ops)?,
        };
        // The common case (one child changed, its smallest key kept, not
        // underfull): copy this node with one child pointer patched.
        if let [(i, Some(results))] = rebuilt.as_slice() {
            let i = *i;
            if let [child] = results.as_slice() {
                let key = view.key(i).map_err(|d| self.damaged(d))?;
                if child.first_key.cmp_key(&key).is_eq() && child.node_bytes >= NODE_TARGET_BYTES / 4 {
                    let longest = view.with_child_replaced(i, child, &mut self.buf);
                    let before =
                        keys.unwrap_or_else(|| (0..n).map(|j| view.keys_below(j)).fold(0, u64::saturating_add));
                    let keys = before.saturating_sub(view.keys_below(i)).saturating_add(child.keys);
                    let offset = self.sink.append(&self.buf)?;
                    let first_key = view.key(0).map_err(|d| self.damaged(d))?;
                    return Ok(smallvec![ChildRef { first_key, offset, keys, longest, node_bytes: self.buf.len() }]);
                }
            }
        }
        let mut out: Vec<(ChildRef<'s>, bool)> = Vec::with_capacity(n + 4);
        let mut rebuilt = rebuilt.into_iter().peekable();
        for i in 0..n {
            match rebuilt.next_if(|(j, _)| *j == i) {
                Some((_, None)) => {}
                Some((_, Some(results))) => out.extend(results.into_iter().map(|r| (r, true))),
                None => {
                    let first_key = view.key(i).map_err(|d| self.damaged(d))?;
                    let offset = view.child(i).map_err(|d| self.damaged(d))?;
                    let (keys, longest) = (view.keys_below(i), view.longest_below(i));
                    out.push((ChildRef { first_key, offset, keys, longest, node_bytes: NODE_TARGET_BYTES }, false));
                }
            }
        }
        self.merge_underfull(&mut out)?;
        self.write_chunks(Items::Internal(out.into_iter().map(|(c, _)| c).collect()))
    }

    /// Rebuilds the children of `view` that `ops` touch, in child order
    /// (`None`: a child dropped whole by a subtree deletion).
    fn rebuild_children<'o>(&mut self, view: &InternalView<'s>, ops: &[&'o Op]) -> Result<Rebuilt<'s>>
    where
        'o: 's,
    {
        let n = view.len();
        // Ops per child (sorted by child, each in batch order). Children
        // strictly inside a deleted subtree are dropped unseen unless a later
        // write lands in them. Vectors, not maps: a commit touches few children.
        let mut touched: Vec<(usize, Vec<&'o Op>)> = Vec::new();
        let mut covered: Vec<usize> = Vec::new();
        for &op in ops {
            let first = view.route(op.key()).map_err(|d| self.damaged(d))?.unwrap_or(0);
            let last = match op {
                Op::DeleteTree { key } => match path::subtree_end(key) {
                    None => n - 1,
                    Some(end) => {
                        view.first_at_or_after(&end).map_err(|d| self.damaged(d))?.saturating_sub(1).max(first)
                    }
                },
                _ => first,
            };
            covered.extend(first + 1..last);
            for i in first..=last {
                match touched.binary_search_by_key(&i, |t| t.0) {
                    Ok(at) => touched[at].1.push(op),
                    Err(at) => touched.insert(at, (i, vec![op])),
                }
            }
        }
        let dropped = |i: usize, child_ops: &[&Op]| {
            covered.contains(&i) && child_ops.iter().all(|op| matches!(op, Op::DeleteTree { .. }))
        };
        // Rebuild the touched children first.
        let mut rebuilt: Rebuilt<'s> = SmallVec::with_capacity(touched.len());
        for (i, child_ops) in &touched {
            if dropped(*i, child_ops) {
                rebuilt.push((*i, None));
            } else {
                let child = view.child(*i).map_err(|d| self.damaged(d))?;
                rebuilt.push((*i, Some(self.apply_node(child, child_ops, Some(view.keys_below(*i)))?)));
            }
        }
        Ok(rebuilt)
    }

    /// Merges each freshly written node that is less than a quarter full with
    /// a neighbour, so deletions cannot leave a tree of near-empty nodes.
    fn merge_underfull(&mut self, out: &mut Vec<(ChildRef<'s>, bool)>) -> Result<()> {
        let mut i = 0;
        while i < out.len() {
            if !(out[i].1 && out[i].0.node_bytes < NODE_TARGET_BYTES / 4 && out.len() > 1) {
                i += 1;
                continue;
            }
            let (a, b) = if i + 1 < out.len() { (i, i + 1) } else { (i - 1, i) };
            // Either may have been written moments ago, by this loop too.
            self.sink.flush()?;
            let merged = match (self.read_items(out[a].0.offset)?, self.read_items(out[b].0.offset)?) {
                (Items::Leaf(mut x), Items::Leaf(y)) => {
                    x.extend(y);
                    self.write_chunks(Items::Leaf(x))?
                }
                (Items::Internal(mut x), Items::Internal(y)) => {
                    x.extend(y);
                    self.write_chunks(Items::Internal(x))?
                }
                _ => {
                    return Err(self.damaged(node::Damage::new(out[a].0.offset, "siblings at different heights")));
                }
            };
            let advance = merged.len();
            out.splice(a..=b, merged.into_iter().map(|c| (c, false)));
            i = a + advance;
        }
        Ok(())
    }

    /// Builds the levels above `level` until one root remains, then drops
    /// single-child internal roots.
    fn finish_root(&mut self, mut level: Refs<'s>) -> Result<u64> {
        while level.len() > 1 {
            let before = level.len();
            level = self.write_chunks(Items::Internal(level.into_vec()))?;
            // Each pass must shrink the level (chunk_ranges keeps two
            // children per internal node), or this would never end.
            assert!(level.len() < before, "an internal level of {before} nodes did not shrink");
        }
        let Some(top) = level.pop() else { return Ok(0) };
        let mut root = top.offset;
        // Not flushed: the caller writes the commit record with these nodes.
        loop {
            if self.sink.kind_and_count(root)? != (KIND_INTERNAL, 1) {
                return Ok(root);
            }
            let bytes = self.sink.read_node(root)?;
            let view = InternalView::from_node(&bytes, root).map_err(|d| self.damaged(d))?;
            root = view.child(0).map_err(|d| self.damaged(d))?;
        }
    }

    /// Cuts a level's items into nodes of about [`NODE_TARGET_BYTES`], writes
    /// them and returns references to them.
    fn write_chunks(&mut self, items: Items<'s>) -> Result<Refs<'s>> {
        match items {
            Items::Leaf(entries) => {
                let ranges = chunks_of(&entries, EntryRef::encoded_len, 1);
                let mut refs = Refs::with_capacity(ranges.len());
                for range in ranges {
                    let chunk = &entries[range];
                    node::build_leaf(chunk, &mut self.buf);
                    let offset = self.sink.append(&self.buf)?;
                    refs.push(ChildRef {
                        first_key: chunk[0].key,
                        offset,
                        keys: chunk.iter().map(EntryRef::weight).fold(0, u64::saturating_add),
                        longest: chunk.iter().map(EntryRef::longest).max().unwrap_or(0),
                        node_bytes: self.buf.len(),
                    });
                }
                self.spare.push(relabel(entries));
                Ok(refs)
            }
            Items::Internal(children) => {
                // Two children at least per node: otherwise a level of long
                // keys could be cut into as many nodes as it has children,
                // and building levels above it would never reach one root.
                let ranges = chunks_of(&children, ChildRef::encoded_len, 2);
                let mut refs = Refs::with_capacity(ranges.len());
                for range in ranges {
                    let chunk = &children[range];
                    node::build_internal(chunk, &mut self.buf);
                    let offset = self.sink.append(&self.buf)?;
                    refs.push(ChildRef {
                        first_key: chunk[0].first_key,
                        offset,
                        keys: chunk.iter().map(|c| c.keys).fold(0, u64::saturating_add),
                        longest: chunk.iter().map(|c| c.longest).max().unwrap_or(0),
                        node_bytes: self.buf.len(),
                    });
                }
                Ok(refs)
            }
        }
    }
}

/// Children rebuilt, by index in their parent, with the nodes that replace
/// each (`None`: dropped whole).
type Rebuilt<'s> = SmallVec<[(usize, Option<Refs<'s>>); 1]>;

/// The nodes that replace one: almost always one, so kept inline.
type Refs<'s> = SmallVec<[ChildRef<'s>; 1]>;

/// The node-sized ranges of `items` ([`chunk_ranges`]), without listing
/// their sizes when all fit in one node (the common case of a commit).
fn chunks_of<T>(items: &[T], size: impl Fn(&T) -> usize, min_per_chunk: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = items.iter().map(&size).sum();
    if items.is_empty() || (total <= NODE_TARGET_BYTES - node::HEADER_BYTES && items.len() <= node::MAX_COUNT) {
        return std::iter::once(0..items.len()).filter(|r| !r.is_empty()).collect();
    }
    chunk_ranges(&items.iter().map(size).collect::<Vec<_>>(), min_per_chunk)
}

/// Merges sorted leaf entries with sorted ops into `out`.
fn merge_leaf<'a>(entries: &[EntryRef<'a>], ops: &[&'a Op], out: &mut Vec<EntryRef<'a>>, report: &mut ApplyReport) {
    let mut e = 0;
    for &op in ops {
        let key = op.key();
        while e < entries.len() && entries[e].key.cmp_bytes(key).is_lt() {
            out.push(entries[e]);
            e += 1;
        }
        // The entry this op replaces: one written by an earlier op of the
        // batch (a split, or a subtree deletion's node), else the tree's.
        let replaced = if out.last().is_some_and(|last| last.key.eq_bytes(key)) {
            out.pop()
        } else if e < entries.len() && entries[e].key.eq_bytes(key) {
            e += 1;
            Some(entries[e - 1])
        } else {
            None
        };
        match op {
            Op::Put { key, value } => {
                if replaced.is_none() {
                    report.created.push(key.clone());
                }
                let link = replaced.and_then(|r| r.link);
                out.push(EntryRef { key: Key::whole(key), value: value.as_repr(), link });
            }
            Op::Set { key, value, link, structural } => {
                if replaced.is_none() && !structural {
                    report.created.push(key.clone());
                }
                let link = link.as_ref().map(LinkTarget::as_link);
                out.push(EntryRef { key: Key::whole(key), value: value.as_repr(), link });
            }
            Op::Delete { key } => {
                if replaced.is_some() {
                    report.removed.push(key.clone());
                }
            }
            Op::DeleteTree { key } => {
                while e < entries.len() && entries[e].key.in_subtree(key) {
                    e += 1;
                }
            }
        }
    }
    out.extend_from_slice(&entries[e..]);
}

/// Splits items of the given encoded sizes into consecutive ranges of
/// roughly equal size, each near [`NODE_TARGET_BYTES`] and within the node
/// entry-count limit, each holding at least `min_per_chunk` items (1 or 2)
/// when there are that many: items larger than a node (long keys) make
/// larger nodes rather than nodes of fewer items. With 2, every level of
/// two or more items is cut into fewer ranges than it has items.
fn chunk_ranges(sizes: &[usize], min_per_chunk: usize) -> Vec<std::ops::Range<usize>> {
    debug_assert!((1..=2).contains(&min_per_chunk));
    if sizes.is_empty() {
        return Vec::new();
    }
    let payload = NODE_TARGET_BYTES - node::HEADER_BYTES;
    let total: usize = sizes.iter().sum();
    let chunks = total.div_ceil(payload).max(sizes.len().div_ceil(node::MAX_COUNT)).max(1);
    let per_chunk = total.div_ceil(chunks);
    let mut ranges = Vec::with_capacity(chunks);
    let (mut start, mut filled) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        let full = filled + size > per_chunk.max(size) && i - start >= min_per_chunk;
        if i > start && (full || i - start == node::MAX_COUNT) {
            ranges.push(start..i);
            start = i;
            filled = 0;
        }
        filled += size;
    }
    ranges.push(start..sizes.len());
    // A last range too small to stand alone takes an item from the one
    // before (which holds at least `min_per_chunk + 1` items if it is full,
    // or joins it whole otherwise).
    let n = ranges.len();
    if n >= 2 && ranges[n - 1].len() < min_per_chunk {
        let last = ranges.pop().unwrap_or(0..0);
        let prev = ranges.pop().unwrap_or(0..0);
        if prev.len() + last.len() <= node::MAX_COUNT {
            ranges.push(prev.start..last.end);
        } else {
            ranges.push(prev.start..prev.end - 1);
            ranges.push(prev.end - 1..last.end);
        }
    }
    debug_assert!(ranges.iter().all(|r| r.len() >= min_per_chunk.min(sizes.len()) && r.len() <= node::MAX_COUNT));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory arena for exercising the builder alone.
    struct VecSink(RefCell<Vec<u8>>);

    impl NodeSink for VecSink {
        fn region(&self) -> Region<'_> {
            // A leaked copy, so appends cannot move bytes under a borrowed region.
            Region::for_test(Box::leak(self.0.borrow().clone().into_boxed_slice()))
        }
        fn append(&self, node: &[u8]) -> Result<u64> {
            let mut v = self.0.borrow_mut();
            let at = v.len() as u64;
            v.extend_from_slice(node);
            Ok(at)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn read_node(&self, offset: u64) -> Result<Vec<u8>> {
            let v = self.0.borrow();
            let len = node::u32_at(&v, offset as usize + 4).unwrap() as usize;
            Ok(v[offset as usize..offset as usize + len].to_vec())
        }
        fn damaged(&self, d: node::Damage) -> crate::Error {
            d.into_error(std::path::Path::new("test"))
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put { key: path::key(k).unwrap(), value: StoredValue::Inline(v.as_bytes().to_vec()) }
    }

    fn all(sink: &VecSink, root: u64) -> Vec<String> {
        let region = sink.region();
        let mut c = crate::tree::Cursor::new(region, root);
        c.seek(b"").unwrap();
        let mut out = vec![];
        while let Some(e) = c.next_entry().unwrap() {
            out.push(path::path_of(&e.key.to_vec()));
        }
        out
    }

    #[test]
    fn chunks_cover_every_item_in_order_and_internal_levels_shrink() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..2000 {
            let n = 1 + next(40) as usize;
            let big = next(3);
            let sizes: Vec<usize> = (0..n).map(|_| 30 + next(if big == 0 { 60 } else { 3200 }) as usize).collect();
            for min in [1, 2] {
                let ranges = chunk_ranges(&sizes, min);
                assert_eq!(ranges.first().map(|r| r.start), Some(0));
                assert_eq!(ranges.last().map(|r| r.end), Some(n));
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{ranges:?}");
                assert!(ranges.iter().all(|r| r.len() >= min.min(n)), "{sizes:?} {ranges:?}");
                if min == 2 && n >= 2 {
                    assert!(ranges.len() < n, "{sizes:?} {ranges:?}");
                }
            }
        }
        // Two children whose keys each take more than half a node share one.
        assert_eq!(chunk_ranges(&[1100, 1100], 2), vec![0..2]);
        assert_eq!(chunk_ranges(&[1100, 1100], 1), vec![0..1, 1..2]);
    }

    #[test]
    fn sibling_keys_longer_than_half_a_node() {
        let sink = VecSink(RefCell::new(vec![0; 8]));
        let long = |c: &str, n: usize| format!("/{}", vec![c.repeat(200); n].join("/"));
        let mut ops = vec![put(&long("a", 5), "1"), put(&format!("{}/b", long("a", 5)), "2")];
        ops.push(put(&long("b", 15), "3"));
        ops.sort_by(|x, y| x.key().cmp(y.key()));
        let (root, keys) = apply(&sink, 0, &ops, &mut ApplyReport::default()).unwrap();
        assert_eq!(keys, Some(3));
        assert_eq!(all(&sink, root).len(), 3);
    }

    #[test]
    fn batch_insert_then_range_delete_spanning_nodes() {
        let sink = VecSink(RefCell::new(vec![0; 8]));
        let mut ops: Vec<Op> = (0..3000).map(|i| put(&format!("/d/{i:05}"), "v")).collect();
        ops.insert(0, put("/d", ""));
        ops.push(put("/e", "x"));
        let mut report = ApplyReport::default();
        let (root, keys) = apply(&sink, 0, &ops, &mut report).unwrap();
        assert_eq!(report.created.len(), 3002);
        assert_eq!(keys, Some(3002));
        let del = [Op::DeleteTree { key: path::key("/d").unwrap() }];
        let (root2, keys) = apply(&sink, root, &del, &mut ApplyReport::default()).unwrap();
        assert_eq!(keys, Some(1));
        assert_eq!(all(&sink, root2), vec!["/e".to_string()]);
        // The old version is untouched.
        assert_eq!(all(&sink, root).len(), 3002);
    }
}
