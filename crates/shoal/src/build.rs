//! Writing the tree: applying a sorted batch of changes to a version's tree
//! by path copying. Only nodes on the paths to changed keys are rewritten;
//! every other node of the old version is shared by offset, so the cost of a
//! commit follows the size of the change, not of the data.
//!
//! New nodes are appended to the arena through [`NodeSink`]; nothing already
//! written is touched (invariant 1). A subtree deletion drops whole child
//! nodes that lie inside the deleted key range without visiting them.

use crate::error::Result;
use crate::node::{self, ChildRef, OwnedEntry, OwnedValue, KIND_INTERNAL, KIND_LEAF, NODE_TARGET_BYTES};
use crate::path;

/// Where the builder reads existing nodes and appends new ones.
pub trait NodeSink {
    /// The immutable, readable arena prefix (everything appended so far).
    fn region(&self) -> &[u8];
    /// Appends a sealed node and returns its offset.
    fn append(&self, node: &[u8]) -> Result<u64>;
    /// Converts node damage into an error naming the arena file.
    fn damaged(&self, damage: node::Damage) -> crate::Error;
}

/// One change of a batch. A batch is sorted by key; for one key a
/// `DeleteTree` comes before a `Put` (clear the subtree, then write the node).
#[derive(Clone, Debug)]
pub enum Op {
    Put { key: Vec<u8>, value: OwnedValue },
    Delete { key: Vec<u8> },
    DeleteTree { key: Vec<u8> },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::DeleteTree { key } => key,
        }
    }
    /// Exclusive end of the key range the op touches (`None`: unbounded).
    fn end(&self) -> Option<Vec<u8>> {
        match self {
            Op::DeleteTree { key } => path::subtree_end(key),
            Op::Put { key, .. } | Op::Delete { key } => {
                let mut end = key.clone();
                end.push(0);
                Some(end)
            }
        }
    }
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
pub fn store_value(sink: &dyn NodeSink, value: &[u8]) -> Result<OwnedValue> {
    if value.len() <= node::INLINE_VALUE_MAX {
        Ok(OwnedValue::Inline(value.to_vec()))
    } else {
        let offset = sink.append(&node::build_blob(value))?;
        Ok(OwnedValue::Blob { offset, len: value.len() as u32 })
    }
}

/// Applies `ops` to the tree at `root` and returns the new root (0: empty).
pub fn apply(sink: &dyn NodeSink, root: u64, ops: &[Op], report: &mut ApplyReport) -> Result<u64> {
    debug_assert!(ops.windows(2).all(|w| w[0].key() <= w[1].key()));
    let top = if root == 0 {
        let mut out = Vec::new();
        merge_leaf(&[], ops, &mut out, report);
        write_chunks(sink, Items::Leaf(out))?
    } else if ops.is_empty() {
        return Ok(root);
    } else {
        apply_node(sink, root, ops, report)?
    };
    finish_root(sink, top)
}

/// Builds the levels above `children` until one root remains, then drops
/// single-child internal roots.
fn finish_root(sink: &dyn NodeSink, mut level: Vec<ChildRef>) -> Result<u64> {
    while level.len() > 1 {
        level = write_chunks(sink, Items::Internal(level))?;
    }
    let Some(top) = level.pop() else { return Ok(0) };
    let mut root = top.offset;
    loop {
        let region = sink.region();
        if region.get(root as usize) != Some(&KIND_INTERNAL) {
            return Ok(root);
        }
        let node = node::node_at(region, root, KIND_INTERNAL).map_err(|d| sink.damaged(d))?;
        if node::count(node) != 1 {
            return Ok(root);
        }
        root = node::internal_child(node, root, 0).map_err(|d| sink.damaged(d))?;
    }
}

/// The contents of one node level, owned while being rebuilt.
enum Items {
    Leaf(Vec<OwnedEntry>),
    Internal(Vec<ChildRef>),
}

fn read_items(sink: &dyn NodeSink, offset: u64) -> Result<Items> {
    let region = sink.region();
    let damaged = |d| sink.damaged(d);
    match region.get(offset as usize) {
        Some(&KIND_LEAF) => {
            let n = node::node_at(region, offset, KIND_LEAF).map_err(damaged)?;
            let entries = (0..node::count(n))
                .map(|i| node::leaf_entry(n, offset, i).map(|e| OwnedEntry::from_entry(&e)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(damaged)?;
            Ok(Items::Leaf(entries))
        }
        _ => {
            let n = node::node_at(region, offset, KIND_INTERNAL).map_err(damaged)?;
            let children = (0..node::count(n))
                .map(|i| -> node::Parse<ChildRef> {
                    Ok(ChildRef {
                        first_key: node::internal_key(n, offset, i)?.to_vec(),
                        offset: node::internal_child(n, offset, i)?,
                        keys: node::internal_keys_below(n, offset, i)?,
                        node_bytes: NODE_TARGET_BYTES,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(damaged)?;
            Ok(Items::Internal(children))
        }
    }
}

fn apply_node(sink: &dyn NodeSink, offset: u64, ops: &[Op], report: &mut ApplyReport) -> Result<Vec<ChildRef>> {
    match read_items(sink, offset)? {
        Items::Leaf(entries) => {
            let mut out = Vec::with_capacity(entries.len() + ops.len());
            merge_leaf(&entries, ops, &mut out, report);
            write_chunks(sink, Items::Leaf(out))
        }
        Items::Internal(children) => {
            let mut out: Vec<(ChildRef, bool)> = Vec::with_capacity(children.len() + 4);
            let mut next_op = 0;
            // Subtree deletions that started in an earlier child and reach further.
            let mut carried: Vec<Op> = Vec::new();
            for (i, child) in children.iter().enumerate() {
                let hi = children.get(i + 1).map(|c| c.first_key.as_slice());
                let start = next_op;
                while next_op < ops.len() && hi.is_none_or(|hi| ops[next_op].key() < hi) {
                    next_op += 1;
                }
                let lo = child.first_key.as_slice();
                carried.retain(|op| op.end().is_none_or(|end| end.as_slice() > lo));
                if carried.is_empty() && start == next_op {
                    out.push((child.clone(), false));
                    continue;
                }
                let mut child_ops: Vec<Op> = carried.clone();
                child_ops.extend_from_slice(&ops[start..next_op]);
                // Every existing key under the child lies in [lo, hi); a subtree deletion
                // covering that whole range drops the child unseen.
                let covered = child_ops.iter().any(|op| {
                    matches!(op, Op::DeleteTree { .. })
                        && op.key() <= lo
                        && match (op.end(), hi) {
                            (None, _) => true,
                            (Some(end), Some(hi)) => end.as_slice() >= hi,
                            (Some(_), None) => false,
                        }
                });
                let puts_remain = child_ops.iter().any(|op| matches!(op, Op::Put { .. }));
                if !covered || puts_remain {
                    for result in apply_node(sink, child.offset, &child_ops, report)? {
                        out.push((result, true));
                    }
                }
                carried = child_ops
                    .into_iter()
                    .filter(|op| {
                        matches!(op, Op::DeleteTree { .. })
                            && hi.is_some_and(|hi| op.end().is_none_or(|end| end.as_slice() > hi))
                    })
                    .collect();
            }
            merge_underfull(sink, &mut out)?;
            write_chunks(sink, Items::Internal(out.into_iter().map(|(c, _)| c).collect()))
        }
    }
}

/// Merges each freshly written node that is less than a quarter full with a
/// neighbour, so deletions cannot leave a tree of near-empty nodes.
fn merge_underfull(sink: &dyn NodeSink, out: &mut Vec<(ChildRef, bool)>) -> Result<()> {
    let mut i = 0;
    while i < out.len() {
        if !(out[i].1 && out[i].0.node_bytes < NODE_TARGET_BYTES / 4 && out.len() > 1) {
            i += 1;
            continue;
        }
        let (a, b) = if i + 1 < out.len() { (i, i + 1) } else { (i - 1, i) };
        let merged = match (read_items(sink, out[a].0.offset)?, read_items(sink, out[b].0.offset)?) {
            (Items::Leaf(mut x), Items::Leaf(y)) => {
                x.extend(y);
                write_chunks(sink, Items::Leaf(x))?
            }
            (Items::Internal(mut x), Items::Internal(y)) => {
                x.extend(y);
                write_chunks(sink, Items::Internal(x))?
            }
            _ => unreachable!("siblings of one internal node are at the same height"),
        };
        let replaced: Vec<(ChildRef, bool)> = merged.into_iter().map(|c| (c, false)).collect();
        let advance = replaced.len();
        out.splice(a..=b, replaced);
        i = a + advance;
    }
    Ok(())
}

/// Merges sorted leaf entries with sorted ops into `out`.
fn merge_leaf(entries: &[OwnedEntry], ops: &[Op], out: &mut Vec<OwnedEntry>, report: &mut ApplyReport) {
    let mut e = 0;
    for op in ops {
        let key = op.key();
        while e < entries.len() && entries[e].key.as_slice() < key {
            e += 1;
            out.push(entries[e - 1].clone());
        }
        match op {
            Op::Put { key, value } => {
                // An earlier op for the same key (a subtree deletion) already ran.
                let existed_in_out = out.last().is_some_and(|last| last.key == *key);
                if existed_in_out {
                    out.pop();
                }
                if e < entries.len() && entries[e].key == *key {
                    e += 1;
                } else if !existed_in_out {
                    report.created.push(key.clone());
                }
                out.push(OwnedEntry { key: key.clone(), value: value.clone() });
            }
            Op::Delete { key } => {
                if e < entries.len() && entries[e].key == *key {
                    e += 1;
                    report.removed.push(key.clone());
                }
            }
            Op::DeleteTree { key } => {
                while e < entries.len() && path::in_subtree(&entries[e].key, key) {
                    e += 1;
                }
                // Entries already in `out` that the range covers (ops are sorted, so only
                // entries from carried ranges could be); drop them as well.
                while out.last().is_some_and(|last| path::in_subtree(&last.key, key)) {
                    out.pop();
                }
            }
        }
    }
    out.extend_from_slice(&entries[e..]);
}

/// Cuts a level's items into nodes of about [`NODE_TARGET_BYTES`], writes
/// them and returns references to them.
fn write_chunks(sink: &dyn NodeSink, items: Items) -> Result<Vec<ChildRef>> {
    match items {
        Items::Leaf(entries) => {
            let sizes: Vec<usize> = entries.iter().map(OwnedEntry::encoded_len).collect();
            let mut refs = Vec::new();
            for range in chunk_ranges(&sizes) {
                let chunk = &entries[range.clone()];
                let bytes = node::build_leaf(chunk);
                let offset = sink.append(&bytes)?;
                refs.push(ChildRef {
                    first_key: chunk[0].key.clone(),
                    offset,
                    keys: chunk.len() as u64,
                    node_bytes: bytes.len(),
                });
            }
            Ok(refs)
        }
        Items::Internal(children) => {
            let sizes: Vec<usize> = children.iter().map(ChildRef::encoded_len).collect();
            let mut refs = Vec::new();
            for range in chunk_ranges(&sizes) {
                let chunk = &children[range.clone()];
                let bytes = node::build_internal(chunk);
                let offset = sink.append(&bytes)?;
                refs.push(ChildRef {
                    first_key: chunk[0].first_key.clone(),
                    offset,
                    keys: chunk.iter().map(|c| c.keys).sum(),
                    node_bytes: bytes.len(),
                });
            }
            Ok(refs)
        }
    }
}

/// Splits items of the given encoded sizes into consecutive ranges of
/// roughly equal size, each near [`NODE_TARGET_BYTES`] and within the node
/// entry-count limit.
fn chunk_ranges(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
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
        if i > start && (filled + size > per_chunk.max(size) || i - start == node::MAX_COUNT) {
            ranges.push(start..i);
            start = i;
            filled = 0;
        }
        filled += size;
    }
    ranges.push(start..sizes.len());
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory arena for exercising the builder alone.
    struct VecSink(RefCell<Vec<u8>>);

    impl NodeSink for VecSink {
        fn region(&self) -> &[u8] {
            // A leaked copy, so appends cannot move bytes under a borrowed region.
            Box::leak(self.0.borrow().clone().into_boxed_slice())
        }
        fn append(&self, node: &[u8]) -> Result<u64> {
            let mut v = self.0.borrow_mut();
            let at = v.len() as u64;
            v.extend_from_slice(node);
            Ok(at)
        }
        fn damaged(&self, d: node::Damage) -> crate::Error {
            d.into_error(std::path::Path::new("test"))
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put { key: path::key(k).unwrap(), value: OwnedValue::Inline(v.as_bytes().to_vec()) }
    }

    fn all(sink: &VecSink, root: u64) -> Vec<String> {
        let region = sink.region();
        let mut c = crate::tree::Cursor::new(region, root);
        c.seek(b"").unwrap();
        let mut out = vec![];
        while let Some(e) = c.next_entry().unwrap() {
            out.push(path::path_of(e.key));
        }
        out
    }

    #[test]
    fn batch_insert_then_range_delete_spanning_nodes() {
        let sink = VecSink(RefCell::new(vec![0; 8]));
        let mut ops: Vec<Op> = (0..3000).map(|i| put(&format!("/d/{i:05}"), "v")).collect();
        ops.insert(0, put("/d", ""));
        ops.push(put("/e", "x"));
        let mut report = ApplyReport::default();
        let root = apply(&sink, 0, &ops, &mut report).unwrap();
        assert_eq!(report.created.len(), 3002);
        assert_eq!(crate::tree::key_count(sink.region(), root).unwrap(), 3002);
        let del = [Op::DeleteTree { key: path::key("/d").unwrap() }];
        let root2 = apply(&sink, root, &del, &mut ApplyReport::default()).unwrap();
        assert_eq!(all(&sink, root2), vec!["/e".to_string()]);
        // The old version is untouched.
        assert_eq!(all(&sink, root).len(), 3002);
    }
}
