//! Reading the tree: a persistent B+tree over path keys (see [`crate::path`])
//! stored in the arena (see [`crate::node`]).
//!
//! Everything here works on `region`, the immutable prefix of an arena that a
//! snapshot may read, and on a root offset. No function allocates on the
//! point-lookup path; all offsets are bounds-checked, and offsets always
//! point backwards, so a damaged arena yields [`Damage`], never a loop or a
//! read outside the region.

use std::cmp::Ordering;

use crate::node::{self, Damage, LeafEntry, Parse, KIND_INTERNAL, KIND_LEAF};
use crate::path::cmp_key_path;

/// Depth beyond which a tree must be damaged (a 4 KiB-node tree of 2^64 keys is far shallower).
const MAX_DEPTH: usize = 48;

fn kind_at(region: &[u8], offset: u64) -> Parse<u8> {
    region.get(offset as usize).copied().ok_or_else(|| Damage::new(offset, "node offset outside the arena"))
}

/// Index of the last child whose smallest key is `<=` the probe, or `None`
/// when the probe sorts before every key of the node.
fn route(node: &[u8], offset: u64, cmp: impl Fn(&[u8]) -> Ordering) -> Parse<Option<usize>> {
    let n = node::count(node);
    let (mut lo, mut hi) = (0usize, n);
    // Invariant: keys[..lo] <= probe < keys[hi..].
    while lo < hi {
        let mid = (lo + hi) / 2;
        if cmp(node::internal_key(node, offset, mid)?) == Ordering::Greater {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo.checked_sub(1))
}

/// Index of the first leaf entry whose key is `>=` the probe, and whether it is equal.
fn leaf_search(node: &[u8], offset: u64, cmp: impl Fn(&[u8]) -> Ordering) -> Parse<(usize, bool)> {
    let n = node::count(node);
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match cmp(node::leaf_entry(node, offset, mid)?.key) {
            Ordering::Less => lo = mid + 1,
            Ordering::Equal => return Ok((mid, true)),
            Ordering::Greater => hi = mid,
        }
    }
    Ok((lo, false))
}

/// The value stored at a path body (see [`crate::path::validate`]).
pub fn get<'a>(region: &'a [u8], root: u64, body: &[u8]) -> Parse<Option<&'a [u8]>> {
    match find_entry(region, root, |key| cmp_key_path(key, body))? {
        Some(entry) => node::value_bytes(region, entry.value).map(Some),
        None => Ok(None),
    }
}

/// The leaf entry with exactly the probe's key.
pub fn find_entry<'a>(region: &'a [u8], root: u64, cmp: impl Fn(&[u8]) -> Ordering) -> Parse<Option<LeafEntry<'a>>> {
    if root == 0 {
        return Ok(None);
    }
    let mut offset = root;
    for _ in 0..MAX_DEPTH {
        match kind_at(region, offset)? {
            KIND_INTERNAL => {
                let node = node::node_at(region, offset, KIND_INTERNAL)?;
                match route(node, offset, &cmp)? {
                    Some(i) => offset = node::internal_child(node, offset, i)?,
                    None => return Ok(None),
                }
            }
            KIND_LEAF => {
                let node = node::node_at(region, offset, KIND_LEAF)?;
                let (i, found) = leaf_search(node, offset, &cmp)?;
                return if found { node::leaf_entry(node, offset, i).map(Some) } else { Ok(None) };
            }
            other => return Err(Damage::new(offset, format!("unexpected node kind {other} in tree"))),
        }
    }
    Err(Damage::new(root, "tree deeper than any valid tree"))
}

/// The number of keys in the tree.
pub fn key_count(region: &[u8], root: u64) -> Parse<u64> {
    if root == 0 {
        return Ok(0);
    }
    match kind_at(region, root)? {
        KIND_LEAF => Ok(node::count(node::node_at(region, root, KIND_LEAF)?) as u64),
        _ => {
            let node = node::node_at(region, root, KIND_INTERNAL)?;
            (0..node::count(node)).map(|i| node::internal_keys_below(node, root, i)).sum()
        }
    }
}

/// An ordered iterator over leaf entries, positioned by [`Cursor::seek`].
pub struct Cursor<'a> {
    region: &'a [u8],
    root: u64,
    /// Path from the root: (internal node offset, index of the child taken).
    stack: Vec<(u64, usize)>,
    /// Current leaf and the index of the next entry to yield.
    leaf: Option<(u64, usize)>,
}

impl<'a> Cursor<'a> {
    pub fn new(region: &'a [u8], root: u64) -> Self {
        Cursor { region, root, stack: Vec::with_capacity(8), leaf: None }
    }

    /// Positions the cursor at the first key `>=` `key`.
    pub fn seek(&mut self, key: &[u8]) -> Parse<()> {
        self.stack.clear();
        self.leaf = None;
        if self.root == 0 {
            return Ok(());
        }
        let mut offset = self.root;
        for _ in 0..MAX_DEPTH {
            match kind_at(self.region, offset)? {
                KIND_INTERNAL => {
                    let node = node::node_at(self.region, offset, KIND_INTERNAL)?;
                    let i = route(node, offset, |k| k.cmp(key))?.unwrap_or(0);
                    self.stack.push((offset, i));
                    offset = node::internal_child(node, offset, i)?;
                }
                KIND_LEAF => {
                    let node = node::node_at(self.region, offset, KIND_LEAF)?;
                    let (i, _) = leaf_search(node, offset, |k| k.cmp(key))?;
                    self.leaf = Some((offset, i));
                    return Ok(());
                }
                other => return Err(Damage::new(offset, format!("unexpected node kind {other} in tree"))),
            }
        }
        Err(Damage::new(self.root, "tree deeper than any valid tree"))
    }

    /// Descends to the leftmost leaf under `offset`.
    fn descend_leftmost(&mut self, mut offset: u64) -> Parse<()> {
        for _ in 0..MAX_DEPTH {
            match kind_at(self.region, offset)? {
                KIND_INTERNAL => {
                    let node = node::node_at(self.region, offset, KIND_INTERNAL)?;
                    self.stack.push((offset, 0));
                    offset = node::internal_child(node, offset, 0)?;
                }
                KIND_LEAF => {
                    self.leaf = Some((offset, 0));
                    return Ok(());
                }
                other => return Err(Damage::new(offset, format!("unexpected node kind {other} in tree"))),
            }
        }
        Err(Damage::new(offset, "tree deeper than any valid tree"))
    }

    /// The next entry in key order.
    pub fn next_entry(&mut self) -> Parse<Option<LeafEntry<'a>>> {
        loop {
            let Some((offset, i)) = self.leaf else { return Ok(None) };
            let node = node::node_at(self.region, offset, KIND_LEAF)?;
            if i < node::count(node) {
                self.leaf = Some((offset, i + 1));
                return node::leaf_entry(node, offset, i).map(Some);
            }
            // Leaf exhausted: climb to the first ancestor with a next child.
            self.leaf = None;
            loop {
                let Some((parent, j)) = self.stack.pop() else { return Ok(None) };
                let node = node::node_at(self.region, parent, KIND_INTERNAL)?;
                if j + 1 < node::count(node) {
                    self.stack.push((parent, j + 1));
                    let child = node::internal_child(node, parent, j + 1)?;
                    self.descend_leftmost(child)?;
                    break;
                }
            }
        }
    }
}

/// The names of the immediate children of `key`, in order.
pub fn list(region: &[u8], root: u64, key: &[u8]) -> Parse<Vec<String>> {
    let prefix = crate::path::child_prefix(key);
    let mut names = Vec::new();
    let mut cursor = Cursor::new(region, root);
    let mut probe = prefix.clone();
    loop {
        cursor.seek(&probe)?;
        let Some(entry) = cursor.next_entry()? else { break };
        if !entry.key.starts_with(&prefix) || entry.key.len() == prefix.len() {
            // Past the children; the empty key (root) is the only entry equal to a prefix.
            if entry.key.len() == prefix.len() && entry.key.starts_with(&prefix) {
                probe.push(0);
                continue;
            }
            break;
        }
        let rest = &entry.key[prefix.len()..];
        let name = match rest.iter().position(|&b| b == 0) {
            Some(p) => &rest[..p],
            None => rest,
        };
        names.push(String::from_utf8_lossy(name).into_owned());
        // Skip the child's descendants: everything below "prefix name \0" sorts before "prefix name \1".
        probe.truncate(prefix.len());
        probe.extend_from_slice(name);
        probe.push(1);
    }
    Ok(names)
}
