//! Reading the tree: a persistent B+tree over path keys (see [`crate::path`])
//! stored in the arena (see [`crate::node`]).
//!
//! Everything here works on `region`, the immutable prefix of an arena that a
//! snapshot may read, and on a root offset. A point lookup allocates nothing;
//! all offsets are bounds-checked, and offsets always point backwards, so a
//! damaged arena yields [`Damage`], never a loop or a read outside the region.

use std::collections::HashSet;

use crate::node::{
    self, Damage, InternalView, LeafEntry, LeafView, Parse, ValueRepr, KIND_BLOB, KIND_INTERNAL, KIND_LEAF,
};

/// Depth beyond which a tree must be damaged (a 4 KiB-node tree of 2^64 keys is far shallower).
const MAX_DEPTH: usize = 48;

#[inline]
fn kind_at(region: &[u8], offset: u64) -> Parse<u8> {
    region.get(offset as usize).copied().ok_or_else(|| Damage::new(offset, "node offset outside the arena"))
}

fn unexpected(offset: u64, kind: u8) -> Damage {
    Damage::new(offset, format!("unexpected node kind {kind} in tree"))
}

/// The entry whose key is exactly `key`.
#[inline]
pub fn find<'a>(region: &'a [u8], root: u64, key: &[u8]) -> Parse<Option<LeafEntry<'a>>> {
    Ok(locate(region, root, key)?.map(|(_, entry)| entry))
}

/// The entry whose key is exactly `key`, with the offset of the leaf holding it.
#[inline]
pub fn locate<'a>(region: &'a [u8], root: u64, key: &[u8]) -> Parse<Option<(u64, LeafEntry<'a>)>> {
    if root == 0 {
        return Ok(None);
    }
    let mut offset = root;
    for _ in 0..MAX_DEPTH {
        match kind_at(region, offset)? {
            KIND_INTERNAL => {
                let view = InternalView::parse(region, offset)?;
                match view.route(key)? {
                    Some(i) => offset = view.child(i)?,
                    None => return Ok(None),
                }
            }
            KIND_LEAF => {
                let view = LeafView::parse(region, offset)?;
                let (i, found) = view.search(key)?;
                return if found { view.entry(i).map(|e| Some((offset, e))) } else { Ok(None) };
            }
            other => return Err(unexpected(offset, other)),
        }
    }
    Err(Damage::new(root, "tree deeper than any valid tree"))
}

/// The value stored under `key`.
#[inline]
pub fn get<'a>(region: &'a [u8], root: u64, key: &[u8]) -> Parse<Option<&'a [u8]>> {
    match find(region, root, key)? {
        Some(entry) => node::value_bytes(region, entry.value).map(Some),
        None => Ok(None),
    }
}

/// An ordered iterator over leaf entries, positioned by [`Cursor::seek`].
pub struct Cursor<'a> {
    region: &'a [u8],
    root: u64,
    /// Path from the root: (internal node offset, index of the child taken).
    stack: Vec<(u64, usize)>,
    /// Current leaf and the index of the next entry to yield.
    leaf: Option<(LeafView<'a>, usize)>,
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
                    let view = InternalView::parse(self.region, offset)?;
                    let i = view.route(key)?.unwrap_or(0);
                    self.stack.push((offset, i));
                    offset = view.child(i)?;
                }
                KIND_LEAF => {
                    let view = LeafView::parse(self.region, offset)?;
                    let (i, _) = view.search(key)?;
                    self.leaf = Some((view, i));
                    return Ok(());
                }
                other => return Err(unexpected(offset, other)),
            }
        }
        Err(Damage::new(self.root, "tree deeper than any valid tree"))
    }

    /// Descends to the leftmost leaf under `offset`.
    fn descend_leftmost(&mut self, mut offset: u64) -> Parse<()> {
        for _ in 0..MAX_DEPTH {
            match kind_at(self.region, offset)? {
                KIND_INTERNAL => {
                    let view = InternalView::parse(self.region, offset)?;
                    self.stack.push((offset, 0));
                    offset = view.child(0)?;
                }
                KIND_LEAF => {
                    self.leaf = Some((LeafView::parse(self.region, offset)?, 0));
                    return Ok(());
                }
                other => return Err(unexpected(offset, other)),
            }
        }
        Err(Damage::new(offset, "tree deeper than any valid tree"))
    }

    /// The next entry in key order.
    pub fn next_entry(&mut self) -> Parse<Option<LeafEntry<'a>>> {
        loop {
            let Some((view, i)) = self.leaf else { return Ok(None) };
            if i < view.len() {
                self.leaf = Some((view, i + 1));
                return view.entry(i).map(Some);
            }
            // Leaf exhausted: climb to the first ancestor with a next child.
            self.leaf = None;
            loop {
                let Some((parent, j)) = self.stack.pop() else { return Ok(None) };
                let view = InternalView::parse(self.region, parent)?;
                if j + 1 < view.len() {
                    self.stack.push((parent, j + 1));
                    let child = view.child(j + 1)?;
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
    let mut full = Vec::new();
    loop {
        cursor.seek(&probe)?;
        let Some(entry) = cursor.next_entry()? else { break };
        full.clear();
        entry.key.extend_into(&mut full);
        if full < probe {
            // Keys out of order: a damaged node would otherwise make this loop forever.
            return Err(Damage::new(root, "keys out of order"));
        }
        if !full.starts_with(&prefix) || full.len() == prefix.len() {
            break;
        }
        let rest = &full[prefix.len()..];
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

/// Bytes of the distinct nodes (and value blobs) reachable from `roots`,
/// each visited once; with `verify`, every one's checksum is checked.
pub fn reachable_bytes(region: &[u8], roots: &[u64], verify: bool) -> Parse<u64> {
    let check = |offset: u64, kind: u8| -> Parse<u64> {
        let n =
            if verify { node::verified_node_at(region, offset, kind)? } else { node::node_at(region, offset, kind)? };
        Ok(n.len() as u64)
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack: Vec<u64> = roots.iter().copied().filter(|&r| r != 0).collect();
    while let Some(offset) = stack.pop() {
        if !seen.insert(offset) {
            continue;
        }
        match kind_at(region, offset)? {
            KIND_INTERNAL => {
                total += check(offset, KIND_INTERNAL)?;
                let view = InternalView::parse(region, offset)?;
                for i in 0..view.len() {
                    stack.push(view.child(i)?);
                }
            }
            KIND_LEAF => {
                total += check(offset, KIND_LEAF)?;
                let view = LeafView::parse(region, offset)?;
                for i in 0..view.len() {
                    if let ValueRepr::Blob { offset: blob, .. } = view.entry(i)?.value {
                        if seen.insert(blob) {
                            total += check(blob, KIND_BLOB)?;
                        }
                    }
                }
            }
            other => return Err(unexpected(offset, other)),
        }
    }
    Ok(total)
}
