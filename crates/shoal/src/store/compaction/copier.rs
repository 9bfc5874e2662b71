//! One compaction's copy of trees from the old generation into the new one.

use std::collections::HashMap;
use std::path::Path;

use crate::arena::WriterArena;
use crate::build::{self, NodeSink};
use crate::error::Result;
use crate::node::Region;
use crate::node::{self, KIND_BLOB, KIND_INTERNAL, KIND_LEAF};
use crate::path;
use crate::tree;

/// Compaction writes its copy in chunks of this many bytes.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Old offset → new offset of the blobs a compaction has copied. Offsets are
/// unique and 8-aligned, so a cheap multiplicative hash spreads them well;
/// SipHash's DoS resistance buys nothing.
type CopyMemo = HashMap<u64, u64, rustc_hash::FxBuildHasher>;

/// One compaction's copy of trees from the old generation into the new one.
pub(super) struct Copier<'a> {
    /// The old generation's file, for errors.
    path: &'a Path,
    to: &'a WriterArena,
    /// Blobs copied so far, old offset → new: every version of a leaf
    /// refers to the same blob of an unchanged value.
    blobs: CopyMemo,
    /// Link targets re-rooted so far: (old target root, source key) → the
    /// root of a tree holding just what lies below the source, copied once
    /// however many links and versions share it.
    links: HashMap<(u64, Vec<u8>), u64>,
    /// Every node copied, old offset → new, when the store holds links:
    /// a link target's nodes are mostly its source's, copied once for the
    /// main tree and every link to them.
    nodes: Option<CopyMemo>,
    buf: Vec<u8>,
}

impl<'a> Copier<'a> {
    /// A copier from the generation file at `path` into `to`; `links`: the
    /// store may hold links, so every copied node is remembered (see `nodes`).
    pub fn new(path: &'a Path, to: &'a WriterArena, links: bool) -> Copier<'a> {
        Copier {
            path,
            to,
            blobs: CopyMemo::default(),
            links: HashMap::new(),
            nodes: links.then(CopyMemo::default),
            buf: Vec::with_capacity(2 * node::NODE_TARGET_BYTES),
        }
    }

    /// Copies the tree at `offset` of `region`, children before parents.
    /// `like` holds the old and new offsets of a tree copied before (the
    /// previous version's): children are matched with its children by key,
    /// and one at the same old offset is the same subtree, already copied.
    /// So a version costs what changed since the previous one, with no
    /// table of every copied node. Every copied node's checksum is checked.
    ///
    /// A subtree reachable twice within one version would be copied twice
    /// (correct, only larger); path copying never links a node twice.
    pub fn copy(&mut self, region: Region<'_>, offset: u64, like: Option<(u64, u64)>) -> Result<u64> {
        if let Some((old, new)) = like {
            if old == offset {
                return Ok(new);
            }
        }
        if let Some(&new) = self.nodes.as_ref().and_then(|m| m.get(&offset)) {
            return Ok(new);
        }
        let path = self.path;
        let damaged = |d: node::Damage| d.into_error(path);
        let to = self.to;
        let new_offset = if region.kind_at(offset) == Some(KIND_INTERNAL) {
            region.node(offset, KIND_INTERNAL).map_err(damaged)?;
            let view = node::InternalView::parse(region, offset).map_err(damaged)?;
            let like = match like {
                Some((old, new)) if region.kind_at(old) == Some(KIND_INTERNAL) => Some((
                    node::InternalView::parse(region, old).map_err(damaged)?,
                    node::InternalView::parse(to.region(), new).map_err(|d| to.damaged(d))?,
                )),
                _ => None,
            };
            let mut children = Vec::with_capacity(view.len());
            let mut j = 0;
            for i in 0..view.len() {
                let key = view.key(i).map_err(damaged)?;
                let mut child_like = None;
                if let Some((old, new)) = &like {
                    while j < old.len() && old.key(j).map_err(damaged)?.cmp_key(&key).is_lt() {
                        j += 1;
                    }
                    if j < old.len() && old.key(j).map_err(damaged)?.cmp_key(&key).is_eq() {
                        child_like = Some((old.child(j).map_err(damaged)?, new.child(j).map_err(|d| to.damaged(d))?));
                    }
                }
                children.push(node::ChildRef {
                    first_key: key,
                    offset: self.copy(region, view.child(i).map_err(damaged)?, child_like)?,
                    keys: view.keys_below(i),
                    longest: view.longest_below(i),
                    node_bytes: 0,
                });
            }
            node::build_internal(&children, &mut self.buf);
            to.append(&self.buf)?
        } else {
            let bytes = region.node(offset, KIND_LEAF).map_err(damaged)?;
            let view = node::LeafView::from_node(bytes, offset).map_err(damaged)?;
            let mut rewrite = false;
            for i in 0..view.len() {
                let e = view.entry(i).map_err(damaged)?;
                rewrite |= matches!(e.value, node::ValueRepr::Blob { .. }) || e.link.is_some();
            }
            if rewrite {
                let mut entries = Vec::with_capacity(view.len());
                for i in 0..view.len() {
                    let e = view.entry(i).map_err(damaged)?;
                    let value = self.copy_value(region, e.value)?;
                    let link = match e.link {
                        Some(l) => Some(node::Link { root: self.copy_link(region, l)?, ..l }),
                        None => None,
                    };
                    entries.push(node::EntryRef { key: e.key, value, link });
                }
                node::build_leaf(&entries, &mut self.buf);
                to.append(&self.buf)?
            } else {
                // Byte for byte: a node's checksum does not depend on where it sits.
                to.append(bytes)?
            }
        };
        if to.pending_bytes() >= COPY_CHUNK_BYTES {
            to.flush()?;
        }
        if let Some(m) = self.nodes.as_mut() {
            m.insert(offset, new_offset);
        }
        Ok(new_offset)
    }

    /// A value in the new generation: a blob copied once, however many
    /// entries share it.
    fn copy_value<'v>(&mut self, region: Region<'_>, value: node::ValueRepr<'v>) -> Result<node::ValueRepr<'v>> {
        let node::ValueRepr::Blob { offset: blob, len } = value else { return Ok(value) };
        let new_blob = match self.blobs.get(&blob) {
            Some(&b) => b,
            None => {
                let bytes = region.node(blob, KIND_BLOB).map_err(|d| d.into_error(self.path))?;
                let b = build::NodeSink::append_blob(self.to, bytes)?;
                self.blobs.insert(blob, b);
                b
            }
        };
        Ok(node::ValueRepr::Blob { offset: new_blob, len })
    }

    /// The new root for a link's target: a tree of what lies below the
    /// link's source in its target, with the same keys, so the link reads
    /// the same. The target's subtrees wholly inside that range are copied
    /// as they are (once, whoever else reaches them); only the nodes along
    /// the range's two edges are rebuilt, with nested links re-rooted the
    /// same way.
    fn copy_link(&mut self, region: Region<'_>, link: node::Link<'_>) -> Result<u64> {
        let memo = (link.root, link.src.to_vec());
        if let Some(&root) = self.links.get(&memo) {
            return Ok(root);
        }
        let (lo, hi) = (path::child_prefix(link.src), path::subtree_end(link.src));
        let mut pieces = Vec::new();
        self.copy_range(region, link.root, &lo, hi.as_deref(), None, 0, &mut pieces)?;
        let (root, _) = build::write_tree(self.to, pieces)?;
        self.links.insert(memo, root);
        Ok(root)
    }

    /// The parts of the tree at `offset` with keys in `[lo, hi)`: subtrees
    /// wholly inside as copies, entries of the edge leaves one by one.
    /// `upper` bounds the node's own keys (its next sibling's first key).
    #[allow(clippy::too_many_arguments)]
    fn copy_range<'r>(
        &mut self,
        region: Region<'r>,
        offset: u64,
        lo: &[u8],
        hi: Option<&[u8]>,
        upper: Option<&[u8]>,
        depth: usize,
        out: &mut Vec<build::Piece<'r>>,
    ) -> Result<()> {
        let damaged = |d: node::Damage| d.into_error(self.path);
        if offset == 0 {
            return Ok(());
        }
        if depth > 64 {
            return Err(damaged(node::Damage::new(offset, "tree deeper than any valid tree")));
        }
        let kind = region.kind_at(offset).unwrap_or(0);
        region.node(offset, kind).map_err(damaged)?;
        let below_hi = |k: &node::Key<'_>| hi.is_none_or(|h| k.cmp_bytes(h).is_lt());
        if kind == KIND_LEAF {
            let view = node::LeafView::parse(region, offset).map_err(damaged)?;
            for i in view.search(lo).map_err(damaged)?.0..view.len() {
                let e = view.entry(i).map_err(damaged)?;
                if !below_hi(&e.key) {
                    break;
                }
                let value = self.copy_value(region, e.value)?;
                let link = match e.link {
                    Some(l) => Some(node::Link { root: self.copy_link(region, l)?, ..l }),
                    None => None,
                };
                out.push(build::Piece::Entry(node::EntryRef { key: e.key, value, link }));
            }
            return Ok(());
        }
        let view = node::InternalView::parse(region, offset).map_err(damaged)?;
        for i in view.route(lo).map_err(damaged)?.unwrap_or(0)..view.len() {
            let start = view.key(i).map_err(damaged)?;
            if !below_hi(&start) {
                break;
            }
            let next = if i + 1 < view.len() {
                Some(view.key(i + 1).map_err(damaged)?.to_vec())
            } else {
                upper.map(<[u8]>::to_vec)
            };
            let child = view.child(i).map_err(damaged)?;
            if tree::wholly_inside(&start, next.as_deref(), lo, hi) {
                let copied = self.copy(region, child, None)?;
                out.push(build::Piece::Child(node::ChildRef {
                    first_key: start,
                    offset: copied,
                    keys: view.keys_below(i),
                    longest: view.longest_below(i),
                    node_bytes: node::NODE_TARGET_BYTES,
                }));
            } else {
                self.copy_range(region, child, lo, hi, next.as_deref(), depth + 1, out)?;
            }
        }
        Ok(())
    }
}
