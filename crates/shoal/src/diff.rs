//! Diff of two versions by walking both trees at once.
//!
//! Each side is a stack of pending items in key order: subtrees (a node
//! offset and a lower bound of its keys, from its parent) and entries. Two
//! subtrees at the same offset of the same generation are the same immutable
//! bytes, so both are skipped unread; otherwise the item with the smaller
//! lower bound is expanded into its children. Path copying leaves every
//! unchanged sibling at its old offset, so the walk reads the nodes on the
//! paths to what changed (and their siblings' references), not the tree:
//! its cost follows the size of the difference.
//!
//! A link entry (a subtree copied by reference) is an entry followed by a
//! linked subtree item; two such items with the same target, source and
//! key are the same subtree and skipped, otherwise the walk reads the
//! linked subtree's entries.

use crate::node::Region;
use crate::node::{self, ChangeKind, InternalView, Key, LeafView, Parse, KIND_INTERNAL, KIND_LEAF};

/// What [`crate::Snapshot::diff`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Paths that differ, in path order: `Set` where the newer version has
    /// a value the older lacks or differs from, `Delete` where it has none.
    pub changes: Vec<(String, ChangeKind)>,
    /// Tree nodes read on either side (a measure of the cost).
    pub nodes_visited: u64,
}

enum Item<'a> {
    Node {
        offset: u64,
        low: Vec<u8>,
    },
    Entry {
        key: Vec<u8>,
        value: &'a [u8],
    },
    /// What lies below the link entry at `key`; `low` is the smallest key it may hold.
    Linked {
        low: Vec<u8>,
        root: u64,
        src: Vec<u8>,
        key: Vec<u8>,
    },
}

impl Item<'_> {
    fn low(&self) -> &[u8] {
        match self {
            Item::Node { low, .. } | Item::Linked { low, .. } => low,
            Item::Entry { key, .. } => key,
        }
    }

    fn expandable(&self) -> bool {
        !matches!(self, Item::Entry { .. })
    }
}

struct Side<'a> {
    region: Region<'a>,
    root: u64,
    stack: Vec<Item<'a>>,
    /// The key of the entry consumed last: entries must come in increasing
    /// key order, or the tree is damaged (a node listed twice would
    /// otherwise be read again, and again).
    last: Option<Vec<u8>>,
}

impl<'a> Side<'a> {
    fn new(region: Region<'a>, root: u64) -> Self {
        let stack = if root == 0 { Vec::new() } else { vec![Item::Node { offset: root, low: Vec::new() }] };
        Side { region, root, stack, last: None }
    }

    /// Drops the item on top of the stack, checking the order of entries.
    fn pop(&mut self) -> Parse<()> {
        if let Some(Item::Entry { key, .. }) = self.stack.last() {
            if self.last.as_deref().is_some_and(|last| key.as_slice() <= last) {
                return Err(node::Damage::new(self.root, "keys out of order"));
            }
            let last = self.last.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(key);
        }
        self.stack.pop();
        Ok(())
    }

    /// Replaces the node on top of the stack with its children or entries.
    fn expand(&mut self, visited: &mut u64) -> Parse<()> {
        let offset = match self.stack.pop() {
            Some(Item::Node { offset, .. }) => offset,
            Some(Item::Linked { root, src, key, .. }) => return self.expand_linked(root, &src, &key, visited),
            Some(entry) => {
                self.stack.push(entry);
                return Ok(());
            }
            None => return Ok(()),
        };
        *visited += 1;
        match self.region.kind_at(offset) {
            Some(KIND_INTERNAL) => {
                let view = InternalView::parse(self.region, offset)?;
                for i in (0..view.len()).rev() {
                    self.stack.push(Item::Node { offset: view.child(i)?, low: view.key(i)?.to_vec() });
                }
            }
            Some(KIND_LEAF) => {
                let view = LeafView::parse(self.region, offset)?;
                for i in (0..view.len()).rev() {
                    let e = view.entry(i)?;
                    let value = node::value_bytes(self.region, e.value)?;
                    let key = e.key.to_vec();
                    if let Some(link) = e.link {
                        let low = crate::path::child_prefix(&key);
                        self.stack.push(Item::Linked {
                            low,
                            root: link.root,
                            src: link.src.to_vec(),
                            key: key.clone(),
                        });
                    }
                    self.stack.push(Item::Entry { key, value });
                }
            }
            _ => return Err(node::Damage::new(offset, "diff: not a tree node")),
        }
        Ok(())
    }

    /// Replaces a linked subtree with its entries (links below followed).
    fn expand_linked(&mut self, root: u64, src: &[u8], key: &[u8], visited: &mut u64) -> Parse<()> {
        *visited += 1;
        let link = node::Link { root, src, keys: 0, longest: 0 };
        let mut walk = crate::tree::Walk::below_link(self.region, link, key)?;
        let mut entries = Vec::new();
        while let Some(e) = walk.next_entry()? {
            entries.push(Item::Entry { key: e.key.to_vec(), value: node::value_bytes(self.region, e.value)? });
        }
        self.stack.extend(entries.into_iter().rev());
        Ok(())
    }
}

/// Which side a damage came from, for the error's file name.
pub(crate) enum DiffError {
    Old(node::Damage),
    New(node::Damage),
}

/// Compares the tree at `old_root` of `old` with the one at `new_root` of
/// `new`; `same_generation` says whether equal offsets mean equal nodes.
pub(crate) fn diff(
    old: Region<'_>,
    old_root: u64,
    new: Region<'_>,
    new_root: u64,
    same_generation: bool,
    prefix: &[u8],
) -> Result<Diff, DiffError> {
    let (mut a, mut b) = (Side::new(old, old_root), Side::new(new, new_root));
    let mut out = Diff::default();
    let mut emit = |key: &[u8], kind: ChangeKind| {
        if Key::whole(key).in_subtree(prefix) {
            out.changes.push((crate::path::path_of(key), kind));
        }
    };
    let mut visited = 0u64;
    loop {
        let expand_a = |a: &mut Side<'_>, v: &mut u64| a.expand(v).map_err(DiffError::Old);
        let expand_b = |b: &mut Side<'_>, v: &mut u64| b.expand(v).map_err(DiffError::New);
        match (a.stack.last(), b.stack.last()) {
            (None, None) => break,
            (Some(Item::Node { offset: x, .. }), Some(Item::Node { offset: y, .. })) if same_generation && x == y => {
                a.pop().map_err(DiffError::Old)?;
                b.pop().map_err(DiffError::New)?;
            }
            (
                Some(Item::Linked { root: x, src: sx, key: kx, .. }),
                Some(Item::Linked { root: y, src: sy, key: ky, .. }),
            ) if same_generation && x == y && sx == sy && kx == ky => {
                a.pop().map_err(DiffError::Old)?;
                b.pop().map_err(DiffError::New)?;
            }
            (Some(Item::Entry { key: ka, value: va }), Some(Item::Entry { key: kb, value: vb })) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    emit(ka, ChangeKind::Delete);
                    a.pop().map_err(DiffError::Old)?;
                }
                std::cmp::Ordering::Greater => {
                    emit(kb, ChangeKind::Set);
                    b.pop().map_err(DiffError::New)?;
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        emit(kb, ChangeKind::Set);
                    }
                    a.pop().map_err(DiffError::Old)?;
                    b.pop().map_err(DiffError::New)?;
                }
            },
            (Some(Item::Entry { key, .. }), None) => {
                emit(key, ChangeKind::Delete);
                a.pop().map_err(DiffError::Old)?;
            }
            (None, Some(Item::Entry { key, .. })) => {
                emit(key, ChangeKind::Set);
                b.pop().map_err(DiffError::New)?;
            }
            (Some(_), None) => expand_a(&mut a, &mut visited)?,
            (None, Some(_)) => expand_b(&mut b, &mut visited)?,
            (Some(x), Some(y)) => {
                // At least one is a subtree, and they are not the same one:
                // open the one that may hold the smaller keys (both if tied).
                let (x_node, y_node) = (x.expandable(), y.expandable());
                match x.low().cmp(y.low()) {
                    std::cmp::Ordering::Less if x_node => expand_a(&mut a, &mut visited)?,
                    std::cmp::Ordering::Less => {
                        // An entry below every key of the other side's subtree.
                        if let Some(Item::Entry { key, .. }) = a.stack.last() {
                            emit(key, ChangeKind::Delete);
                        }
                        a.pop().map_err(DiffError::Old)?;
                    }
                    std::cmp::Ordering::Greater if y_node => expand_b(&mut b, &mut visited)?,
                    std::cmp::Ordering::Greater => {
                        if let Some(Item::Entry { key, .. }) = b.stack.last() {
                            emit(key, ChangeKind::Set);
                        }
                        b.pop().map_err(DiffError::New)?;
                    }
                    std::cmp::Ordering::Equal => {
                        if x_node {
                            expand_a(&mut a, &mut visited)?;
                        }
                        if y_node {
                            expand_b(&mut b, &mut visited)?;
                        }
                    }
                }
            }
        }
    }
    out.nodes_visited = visited;
    Ok(out)
}
