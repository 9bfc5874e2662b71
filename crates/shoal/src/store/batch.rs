//! A batch on its way into the tree: journal ops planned into builder ops
//! (values stored, missing ancestors added, copies resolved against the
//! version before), then applied to the head tree with the version's change
//! set and commit record.

use std::collections::BTreeMap;

use crate::arena::WriterArena;
use crate::build::{self, ApplyReport, NodeSink, Op};
use crate::error::{Error, Result};
use crate::journal::JournalOp;
use crate::node::{self, Commit};
use crate::path;
use crate::tree;

use super::load::Load;

/// Converts journal ops (sorted by key; for one key a subtree deletion
/// first) into builder ops: values stored, missing ancestors of written
/// nodes created with empty values, still sorted. `ancestors_known`: the
/// batch already holds every missing ancestor (a transaction whose base is
/// the head creates them itself), so none is looked up.
pub(super) fn prepare_ops(
    arena: &WriterArena,
    head_root: u64,
    jops: Vec<JournalOp>,
    ancestors_known: bool,
) -> Result<Vec<Op>> {
    debug_assert!(jops.windows(2).all(|w| w[0].key() <= w[1].key()));
    let puts_in_batch = |a: &[u8]| {
        let start = jops.partition_point(|op| op.key() < a);
        jops[start..]
            .iter()
            .take_while(|op| op.key() == a)
            .any(|op| matches!(op, JournalOp::Put { .. } | JournalOp::Copy { .. } | JournalOp::CopyTree { .. }))
    };
    let cleared: Vec<&[u8]> = jops
        .iter()
        .filter(|op| matches!(op, JournalOp::DeleteTree { .. } | JournalOp::CopyTree { .. }))
        .map(JournalOp::key)
        .collect();
    // Below a subtree this batch copies, what exists is the copy's business
    // (a transaction creates what is missing there itself).
    let copied: Vec<&[u8]> =
        jops.iter().filter(|op| matches!(op, JournalOp::CopyTree { .. })).map(JournalOp::key).collect();
    let below_copy = |a: &[u8]| path::ancestors(a).any(|aa| copied.binary_search(&aa).is_ok());
    let is_cleared = |a: &[u8]| {
        !cleared.is_empty()
            && (cleared.binary_search(&&b""[..]).is_ok()
                || cleared.binary_search(&a).is_ok()
                || path::ancestors(a).any(|aa| cleared.binary_search(&aa).is_ok()))
    };
    let region = arena.region();
    let damaged = |d: node::Damage| d.into_error(&arena.mapped.path);
    let mut ancestors: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    // Sorted batches put siblings next to each other: remember the last
    // parent known to exist after the batch.
    let mut parent_known: Vec<u8> = Vec::new();
    for op in jops.iter().filter(|_| !ancestors_known) {
        let (JournalOp::Put { key, .. } | JournalOp::Copy { key, .. } | JournalOp::CopyTree { key, .. }) = op else {
            continue;
        };
        let parent = path::parent(key);
        if parent.is_empty() || parent == parent_known.as_slice() {
            continue;
        }
        // Nearest first: once one ancestor exists (or is written by the
        // batch), all of its own ancestors do too.
        let mut nearest_first: Vec<&[u8]> = path::ancestors(key).collect();
        nearest_first.reverse();
        for a in nearest_first {
            if ancestors.contains_key(a) || puts_in_batch(a) || copied.binary_search(&a).is_ok() || below_copy(a) {
                break;
            }
            if !is_cleared(a) && tree::find(region, head_root, a).map_err(damaged)?.is_some() {
                break;
            }
            ancestors.insert(a.to_vec(), ());
        }
        parent_known.clear();
        parent_known.extend_from_slice(parent);
    }
    // Merge the batch with the ancestors to create, keeping key order.
    let mut ops: Vec<Op> = Vec::with_capacity(jops.len() + ancestors.len());
    let mut extra = ancestors.into_keys().peekable();
    for op in jops {
        while let Some(a) = extra.next_if(|a| a.as_slice() < op.key()) {
            ops.push(Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) });
        }
        let op = match op {
            JournalOp::Put { key, value } => {
                let value = if value.len() <= node::INLINE_VALUE_MAX {
                    build::StoredValue::Inline(value)
                } else {
                    build::store_value(arena, &value)?
                };
                Op::Put { key, value }
            }
            JournalOp::Copy { key, from } => {
                // The source as of the version before this one: blob values
                // are shared by offset, inline ones (256 bytes at most) copied.
                let entry = tree::find(region, head_root, &from).map_err(damaged)?;
                let value = match entry.map(|e| e.value) {
                    Some(node::ValueRepr::Inline(bytes)) => build::StoredValue::Inline(bytes.to_vec()),
                    Some(node::ValueRepr::Blob { offset, len }) => build::StoredValue::Blob { offset, len },
                    None => return Err(Error::NoSuchPath { path: path::path_of(&from) }),
                };
                Op::Put { key, value }
            }
            JournalOp::CopyTree { key, from } => {
                // The subtree as of the version before this one: the copy
                // links to where it is stored (through any link above or at
                // it), with the node's own value.
                let value = match tree::locate(region, head_root, &from).map_err(damaged)? {
                    Some((_, entry)) => build::StoredValue::of(entry.value),
                    None => return Err(Error::NoSuchPath { path: path::path_of(&from) }),
                };
                let (root, src) = tree::resolve(region, head_root, &from, true).map_err(damaged)?;
                let link = build::LinkTarget::below(region, root, src.into_owned()).map_err(damaged)?;
                let longest = key.len() + link.as_ref().map_or(0, |l| l.longest as usize);
                if longest > path::MAX_KEY_BYTES {
                    return Err(Error::CopyTooDeep {
                        from: path::path_of(&from),
                        to: path::path_of(&key),
                        longest: longest + 1,
                    });
                }
                ops.push(Op::DeleteTree { key: key.clone() });
                Op::Set { key, value, link, structural: false }
            }
            JournalOp::Delete { key } => Op::Delete { key },
            JournalOp::DeleteTree { key } => Op::DeleteTree { key },
        };
        ops.push(op);
        // An ancestor re-created under a subtree deletion of the same key comes after it.
        if let Some(Op::DeleteTree { key } | Op::Set { key, link: Some(_), .. }) = ops.last() {
            if let Some(a) = extra.next_if(|a| a == key) {
                ops.push(Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) });
            }
        }
    }
    ops.extend(extra.map(|a| Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) }));
    Ok(ops)
}

/// Applies a batch to the tree at `root`, splitting the links it writes
/// below (when the tree may hold any). Writes below a subtree the batch
/// itself copies go in a later pass, once the copy is in the tree, so
/// that they find its link to split: one pass per depth of nesting in
/// the batch's own copies (a copy into a copy comes after the outer one,
/// and writes below it after that).
pub(super) fn apply_tree(
    arena: &WriterArena,
    root: u64,
    ops: &[Op],
    links: bool,
    report: &mut ApplyReport,
) -> Result<(u64, Option<u64>)> {
    let copies: Vec<&[u8]> = ops.iter().filter(|op| op.is_copy()).map(Op::key).collect();
    let damaged = |d: node::Damage| arena.damaged(d);
    let pass = |root: u64, ops: &[Op], report: &mut ApplyReport| -> Result<(u64, Option<u64>)> {
        if !links && copies.is_empty() {
            return build::apply(arena, root, ops, report);
        }
        arena.flush()?;
        let splits = build::split_links(arena.region(), root, ops).map_err(damaged)?;
        if splits.is_empty() {
            return build::apply(arena, root, ops, report);
        }
        build::apply(arena, root, &build::merge_splits(splits, ops), report)
    };
    if copies.is_empty() {
        return pass(root, ops, report);
    }
    // How many of the batch's copies lie strictly above each op.
    let depth = |op: &Op| path::ancestors(op.key()).filter(|a| copies.binary_search(a).is_ok()).count();
    let deepest = ops.iter().map(depth).max().unwrap_or(0);
    if deepest == 0 {
        return pass(root, ops, report);
    }
    let (mut root, mut keys) = (root, None);
    for d in 0..=deepest {
        let level: Vec<Op> = ops.iter().filter(|op| depth(op) == d).cloned().collect();
        if let (r, Some(k)) = pass(root, &level, report)? {
            (root, keys) = (r, Some(k));
        }
    }
    Ok((root, keys))
}

/// Writes a bulk load into the empty tree of `head`, with the version's
/// change set and commit record, as [`apply_ops`] does for ops.
pub(super) fn load_into_empty(arena: &WriterArena, head: Commit, load: &Load<'_>, time_ns: u64) -> Result<Commit> {
    debug_assert_eq!(head.root, 0);
    // The change set lists keys until it overflows: stop gathering there.
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut listed_bytes = 0;
    load.each_key(|key, _| {
        listed.push(key);
        listed_bytes += 3 + key.len();
        Ok(listed_bytes <= node::MAX_CHANGE_BYTES)
    })?;
    let mut buf = arena.take_buffer();
    node::build_changes(listed.into_iter().map(|key| (node::ChangeKind::Set, key)), &mut buf);
    let changes = arena.append(&buf);
    arena.give_buffer(buf);
    let changes = changes?;
    let (root, key_count) = load.write_tree(arena)?;
    write_commit(arena, head, root, key_count, changes, time_ns)
}

pub(super) fn apply_ops(
    arena: &WriterArena,
    head: Commit,
    ops: &[Op],
    time_ns: u64,
    links: bool,
    report: &mut ApplyReport,
) -> Result<Commit> {
    // Change set, nodes and commit record reach the file in one flush
    // (two when a batch writes below a subtree it copies).
    // A copy's clearing of its destination is part of the copy.
    let listed = ops.iter().enumerate().filter(|&(i, op)| {
        !(matches!(op, Op::DeleteTree { .. })
            && ops.get(i + 1).is_some_and(|next| next.is_copy() && next.key() == op.key()))
    });
    let mut buf = arena.take_buffer();
    node::build_changes(listed.map(|(_, op)| (op.change_kind(), op.key())), &mut buf);
    let changes = arena.append(&buf);
    arena.give_buffer(buf);
    let changes = changes?;
    let (root, keys) = apply_tree(arena, head.root, ops, links, report)?;
    write_commit(arena, head, root, keys.unwrap_or(head.key_count), changes, time_ns)
}

/// Appends the commit record of the version after `head` and flushes.
fn write_commit(
    arena: &WriterArena,
    head: Commit,
    root: u64,
    key_count: u64,
    changes: u64,
    time_ns: u64,
) -> Result<Commit> {
    let offset = arena.end();
    let version = head.version + 1;
    let prev = head.offset;
    arena.append(&node::build_commit(&Commit {
        offset,
        version,
        root,
        prev,
        end: 0,
        time_ns,
        key_count,
        changes,
        generation: arena.generation(),
    }))?;
    arena.flush()?;
    node::parse_commit(arena.region(), offset).map_err(|d| arena.damaged(d))
}
