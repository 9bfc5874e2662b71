//! Reading the tree: a persistent B+tree over path keys (see [`crate::path`])
//! stored in the arena (see [`crate::node`]).
//!
//! Everything here works on `region`, the immutable prefix of an arena that a
//! snapshot may read, and on a root offset. A point lookup allocates nothing
//! (unless it follows a link); all offsets are bounds-checked, and offsets
//! always point backwards, so a damaged arena yields [`Damage`], never a
//! loop or a read outside the region.
//!
//! Links (subtrees copied by reference, see [`crate::node`]) are followed
//! here: a key below a link is looked up in the link's target tree with the
//! link's key replaced by its source key. Since no key of a tree lies below
//! one of its links, the link covering a missed key is the entry just
//! before the key's position in its leaf; a hit never pays for links.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::node::Region;
use crate::node::{
    self, Damage, InternalView, Key, LeafEntry, LeafView, Link, Parse, ValueRepr, KIND_BLOB, KIND_INTERNAL, KIND_LEAF,
};

/// Depth beyond which a tree must be damaged (a 4 KiB-node tree of 2^64 keys is far shallower).
const MAX_DEPTH: usize = 48;
/// How much of a node a lookup loads with its header: a leaf's search
/// arrays of a typical fan-out, the start of an internal node's.
const NODE_START_BYTES: usize = 1024;
/// Links followed by one lookup beyond which the arena must be damaged
/// (each points backwards, so a chain ends; this bounds a damaged one).
const MAX_LINKS: usize = 256;

#[inline]
fn kind_at(region: Region<'_>, offset: u64) -> Parse<u8> {
    region.kind_at(offset).ok_or_else(|| Damage::new(offset, "node offset outside the arena"))
}

fn unexpected(offset: u64, kind: u8) -> Damage {
    Damage::new(offset, format!("unexpected node kind {kind} in tree"))
}

/// The entry whose key is exactly `key`.
#[inline]
pub fn find<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Option<LeafEntry<'a>>> {
    Ok(locate(region, root, key)?.map(|(_, entry)| entry))
}

/// The leaf of `root` where `key` belongs: (leaf offset, view, index of
/// the first entry `>= key`, whether it equals `key`). `None`: empty tree,
/// or `key` sorts before every key.
#[inline]
fn leaf_for<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Option<(u64, LeafView<'a>, usize, bool)>> {
    if root == 0 {
        return Ok(None);
    }
    let mut offset = root;
    for _ in 0..MAX_DEPTH {
        region.prefetch(offset, NODE_START_BYTES);
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
                region.prefetch(offset + NODE_START_BYTES as u64, view.encoded_len().saturating_sub(NODE_START_BYTES));
                let (i, found) = view.search(key)?;
                return Ok(Some((offset, view, i, found)));
            }
            other => return Err(unexpected(offset, other)),
        }
    }
    Err(Damage::new(root, "tree deeper than any valid tree"))
}

/// Whether `key` lies strictly below the stored key `node`.
#[inline]
fn strictly_below(node: &Key<'_>, key: &[u8]) -> bool {
    let n = node.len();
    n > 0 && key.len() > n && key[n] == 0 && node.cmp_bytes(&key[..n]).is_eq()
}

/// The link entry before position `i` of a leaf, if `key` lies strictly
/// below it: the link covering a missed `key`.
#[cold]
fn link_before<'a>(view: &LeafView<'a>, i: usize, key: &[u8]) -> Parse<Option<(LeafEntry<'a>, Link<'a>)>> {
    let Some(before) = i.checked_sub(1) else { return Ok(None) };
    let entry = view.entry(before)?;
    Ok(match entry.link {
        Some(link) if strictly_below(&entry.key, key) => Some((entry, link)),
        _ => None,
    })
}

/// The link covering a missed `key`: `key` as it reads in the link's
/// target tree, and the target.
fn through_link(view: &LeafView<'_>, i: usize, key: &[u8]) -> Parse<Option<(Vec<u8>, u64)>> {
    Ok(link_before(view, i, key)?.map(|(entry, link)| (translate(link.src, entry.key.len(), key), link.root)))
}

/// `key` with its first `cut` bytes replaced by `to`.
fn translate(to: &[u8], cut: usize, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(to.len() + key.len() - cut);
    out.extend_from_slice(to);
    out.extend_from_slice(&key[cut..]);
    out
}

/// The entry whose key is exactly `key`, with the offset of the leaf
/// holding it (in a link's target tree when `key` lies below a link).
#[inline]
pub fn locate<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Option<(u64, LeafEntry<'a>)>> {
    let (mut root, mut q) = (root, Cow::Borrowed(key));
    for _ in 0..MAX_LINKS {
        let Some((leaf, view, i, found)) = leaf_for(region, root, &q)? else { return Ok(None) };
        if found {
            return view.entry(i).map(|e| Some((leaf, e)));
        }
        match through_link(&view, i, &q)? {
            Some((translated, target)) => (q, root) = (Cow::Owned(translated), target),
            None => return Ok(None),
        }
    }
    Err(Damage::new(root, "too many links followed"))
}

/// The tree and key holding `key`'s subtree in `root`, following the link
/// that covers `key` (and, with `through_found`, a link at `key` itself,
/// for what lies below it): below the returned key in the returned tree
/// lies what lies below `key`, with the key prefix swapped. Without
/// `through_found`, a link entry at `key` is returned as it is (its own
/// value may differ from its source's).
pub fn resolve<'k>(region: Region<'_>, root: u64, key: &'k [u8], through_found: bool) -> Parse<(u64, Cow<'k, [u8]>)> {
    let (mut root, mut q) = (root, Cow::Borrowed(key));
    for _ in 0..MAX_LINKS {
        let Some((_, view, i, found)) = leaf_for(region, root, &q)? else { return Ok((root, q)) };
        let next = match found {
            true if through_found => view.entry(i)?.link.map(|link| (link.src.to_vec(), link.root)),
            true => None,
            false => through_link(&view, i, &q)?,
        };
        match next {
            Some((translated, target)) => (q, root) = (Cow::Owned(translated), target),
            None => return Ok((root, q)),
        }
    }
    Err(Damage::new(root, "too many links followed"))
}

/// The link entry of the tree at `root` (not of a link's target) that
/// `key` lies strictly below, if any.
pub fn covering_link<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Option<(LeafEntry<'a>, Link<'a>)>> {
    match leaf_for(region, root, key)? {
        Some((_, view, i, false)) => link_before(&view, i, key),
        _ => Ok(None),
    }
}

/// A direct child of a node, as [`children`] lists it.
pub struct Child<'a> {
    pub key: Vec<u8>,
    pub value: ValueRepr<'a>,
    pub link: Option<Link<'a>>,
}

/// The direct children of `key` in the tree at `root`, links followed to
/// where they are stored: returns that tree, the key there, and the
/// children with their keys there. Reads the children's entries, skipping
/// what lies below them.
pub fn children<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<(u64, Vec<u8>, Vec<Child<'a>>)> {
    let (root, key) = resolve(region, root, key, true)?;
    let mut out = Vec::new();
    each_child(region, root, &key, |full, is_child, entry| {
        if is_child {
            out.push(Child { key: full.to_vec(), value: entry.value, link: entry.link });
        }
    })?;
    Ok((root, key.into_owned(), out))
}

/// Calls `each` with the first entry met under each direct child of `key`
/// (its whole key, whether it is the child itself, the entry), in order,
/// skipping what lies below each child unread.
fn each_child<'a>(
    region: Region<'a>,
    root: u64,
    key: &[u8],
    mut each: impl FnMut(&[u8], bool, LeafEntry<'a>),
) -> Parse<()> {
    let prefix = crate::path::child_prefix(key);
    let mut cursor = Cursor::new(region, root);
    let mut probe = prefix.clone();
    // The whole key of `pending`, each entry's key spelled out once.
    let mut full = Vec::new();
    cursor.seek(&probe)?;
    let mut pending = cursor.next_entry()?;
    if let Some(entry) = &pending {
        entry.key.extend_into(&mut full);
    }
    loop {
        let Some(entry) = pending else { return Ok(()) };
        if full < probe {
            // Keys out of order: a damaged node would otherwise make this loop forever.
            return Err(Damage::new(root, "keys out of order"));
        }
        if !full.starts_with(&prefix) || full.len() == prefix.len() {
            return Ok(());
        }
        let name_len = full[prefix.len()..].iter().position(|&b| b == 0).unwrap_or(full.len() - prefix.len());
        each(&full, prefix.len() + name_len == full.len(), entry);
        // Skip the child's descendants: everything below "prefix name \0" sorts before "prefix name \1".
        probe.truncate(prefix.len());
        probe.extend_from_slice(&full[prefix.len()..prefix.len() + name_len]);
        probe.push(1);
        // A child without descendants is followed at once by the next
        // child: step to it, and seek past a subtree only when there is one.
        pending = cursor.next_entry()?;
        full.clear();
        if let Some(next) = &pending {
            next.key.extend_into(&mut full);
            if full < probe {
                cursor.seek(&probe)?;
                pending = cursor.next_entry()?;
                full.clear();
                if let Some(next) = &pending {
                    next.key.extend_into(&mut full);
                }
            }
        }
    }
}

/// What lies strictly below a key: [`below`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Below {
    /// Nodes (a link counts for its whole subtree).
    pub keys: u64,
    /// The longest of their keys, minus the key's own length (0: none).
    pub longest: u16,
}

/// What lies strictly below `key` in the tree at `root`, from the weights
/// of internal nodes: it reads the nodes along the two edges of the key
/// range, not the range.
pub fn below(region: Region<'_>, root: u64, key: &[u8]) -> Parse<Below> {
    let lo = crate::path::child_prefix(key);
    let hi = crate::path::subtree_end(key);
    let (keys, longest) = weigh_range(region, root, &lo, hi.as_deref(), None, 0)?;
    Ok(Below { keys, longest: (longest as usize).saturating_sub(key.len()) as u16 })
}

/// Whether a child whose keys lie in `[start, next)` (`next` `None`:
/// unbounded) lies wholly inside `[lo, hi)`.
pub fn wholly_inside(start: &Key<'_>, next: Option<&[u8]>, lo: &[u8], hi: Option<&[u8]>) -> bool {
    start.cmp_bytes(lo).is_ge()
        && match (next, hi) {
            (_, None) => true,
            (Some(n), Some(h)) => n <= h,
            (None, Some(_)) => false,
        }
}

/// The nodes with keys in `[lo, hi)` under the node at `offset`, whose own
/// keys lie below `upper` (its next sibling's smallest key; `None`:
/// unbounded): their count and the length of the longest.
fn weigh_range(
    region: Region<'_>,
    offset: u64,
    lo: &[u8],
    hi: Option<&[u8]>,
    upper: Option<&[u8]>,
    depth: usize,
) -> Parse<(u64, u16)> {
    if offset == 0 {
        return Ok((0, 0));
    }
    if depth > MAX_DEPTH {
        return Err(Damage::new(offset, "tree deeper than any valid tree"));
    }
    let below_hi = |k: &Key<'_>| hi.is_none_or(|h| k.cmp_bytes(h).is_lt());
    let (mut keys, mut longest) = (0u64, 0u16);
    match kind_at(region, offset)? {
        KIND_LEAF => {
            let view = LeafView::parse(region, offset)?;
            let mut last: Option<Key<'_>> = None;
            for i in view.search(lo)?.0..view.len() {
                let e = view.entry(i)?;
                if !below_hi(&e.key) {
                    break;
                }
                if last.is_some_and(|l| e.key.cmp_key(&l).is_le()) {
                    return Err(Damage::new(offset, "keys out of order"));
                }
                last = Some(e.key);
                keys = keys.saturating_add(e.weight());
                longest = longest.max(e.longest());
            }
        }
        KIND_INTERNAL => {
            let view = InternalView::parse(region, offset)?;
            let first = view.route(lo)?.unwrap_or(0);
            for i in first..view.len() {
                let start = view.key(i)?;
                if !below_hi(&start) {
                    break;
                }
                let next = if i + 1 < view.len() { Some(view.key(i + 1)?.to_vec()) } else { upper.map(<[u8]>::to_vec) };
                if next.as_deref().is_some_and(|n| start.cmp_bytes(n).is_ge()) {
                    return Err(Damage::new(offset, "keys out of order"));
                }
                // Wholly before the range: only a node whose hints lie routes
                // here, and descending every such child of every level would
                // take (fan-out)^(depth) steps.
                if next.as_deref().is_some_and(|n| n <= lo) {
                    continue;
                }
                let (k, l) = if wholly_inside(&start, next.as_deref(), lo, hi) {
                    (view.keys_below(i), view.longest_below(i))
                } else {
                    weigh_range(region, view.child(i)?, lo, hi, next.as_deref(), depth + 1)?
                };
                keys = keys.saturating_add(k);
                longest = longest.max(l);
            }
        }
        other => return Err(unexpected(offset, other)),
    }
    Ok((keys, longest))
}

/// The value stored under `key`.
#[inline]
pub fn get<'a>(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Option<&'a [u8]>> {
    match find(region, root, key)? {
        Some(entry) => node::value_bytes(region, entry.value).map(Some),
        None => Ok(None),
    }
}

/// An ordered iterator over leaf entries, positioned by [`Cursor::seek`].
///
/// It checks that every entry's key is greater than the one before: a
/// damaged or crafted tree (a node listed twice, children out of order)
/// is reported as damage instead of yielding keys again, which also bounds
/// a walk by the number of distinct keys it yields.
pub struct Cursor<'a> {
    region: Region<'a>,
    root: u64,
    /// Path from the root: (internal node, index of the child taken).
    stack: Vec<(InternalView<'a>, usize)>,
    /// Current leaf and the index of the next entry to yield.
    leaf: Option<(LeafView<'a>, usize)>,
    /// The key yielded last since the last seek, and the hint of its tail.
    last: Option<Key<'a>>,
    last_hint: u64,
    /// Damage met while [`next_plain`](Self::next_plain) moved between
    /// leaves, for the next [`next_entry`](Self::next_entry) to report.
    failed: Option<Damage>,
}

impl<'a> Cursor<'a> {
    pub fn new(region: Region<'a>, root: u64) -> Self {
        Cursor { region, root, stack: Vec::with_capacity(8), leaf: None, last: None, last_hint: 0, failed: None }
    }

    /// Positions the cursor at the first key `>=` `key`.
    pub fn seek(&mut self, key: &[u8]) -> Parse<()> {
        self.stack.clear();
        self.leaf = None;
        self.last = None;
        self.failed = None;
        if self.root == 0 {
            return Ok(());
        }
        let mut offset = self.root;
        for _ in 0..MAX_DEPTH {
            match kind_at(self.region, offset)? {
                KIND_INTERNAL => {
                    let view = InternalView::parse(self.region, offset)?;
                    let i = view.route(key)?.unwrap_or(0);
                    self.stack.push((view, i));
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
                    self.stack.push((view, 0));
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
    #[inline(always)]
    pub fn next_entry(&mut self) -> Parse<Option<LeafEntry<'a>>> {
        if let (Some((view, i)), Some(last)) = (&mut self.leaf, &mut self.last) {
            // Within a leaf the keys share its prefix: their order is their
            // suffixes' order, mostly decided by their first eight bytes.
            if *i < view.len() {
                let entry = view.entry(*i)?;
                *i += 1;
                let hint = node::hint_of(entry.key.tail);
                let after = std::ptr::eq(entry.key.head, last.head)
                    && match hint.cmp(&self.last_hint) {
                        std::cmp::Ordering::Greater => true,
                        std::cmp::Ordering::Less => false,
                        std::cmp::Ordering::Equal => entry.key.tail > last.tail,
                    };
                if !after && entry.key.cmp_key(last).is_le() {
                    return Err(Damage::new(view.offset(), "keys out of order"));
                }
                *last = entry.key;
                self.last_hint = hint;
                return Ok(Some(entry));
            }
        }
        self.next_leaf()
    }

    /// The next entry, when it is a plain one (see [`LeafView::plain_entry`])
    /// in a leaf whose prefix `inside` accepts, and it orders after the
    /// last entry: a scan's common step, moving to the next leaf when the
    /// current one is done, with nothing to build. `None` leaves the cursor
    /// at that entry, for [`next_entry`](Self::next_entry) to take the step
    /// (and report any damage).
    #[inline(always)]
    pub fn next_plain(&mut self, inside: impl FnOnce(&'a [u8]) -> bool) -> Option<Plain<'a>> {
        let last = self.last?;
        let (mut view, mut i) = self.leaf?;
        if i >= view.len() {
            if !self.advance_plain() {
                return None;
            }
            (view, i) = self.leaf?;
        }
        let prefix = view.prefix();
        if !inside(prefix) {
            return None;
        }
        let (tail, value, word) = view.plain_entry(i)?;
        let key = Key { head: prefix, tail };
        let hint = word.swap_bytes();
        let after = if std::ptr::eq(last.head, prefix) {
            match hint.cmp(&self.last_hint) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => tail > last.tail,
            }
        } else {
            key.cmp_key(&last).is_gt()
        };
        if !after {
            return None;
        }
        if let Some((_, next)) = &mut self.leaf {
            *next = i + 1;
        }
        // Field by field: a whole `Key` moved at once goes through the
        // stack, and its reload stalls on the stores just made.
        if let Some(last) = &mut self.last {
            last.head = prefix;
            last.tail = tail;
        }
        self.last_hint = hint;
        Some(Plain { key, value })
    }

    /// Where a run of plain entries through the current leaf would start:
    /// the leaf, the index of its next entry, the last key (from this leaf)
    /// and its hint, when the leaf's prefix is `inside`. See
    /// [`Walk::plain_run`].
    #[inline(always)]
    pub fn run_state(&self, inside: &[u8]) -> Option<(LeafView<'a>, usize, Key<'a>, u64)> {
        let ((view, i), last) = (self.leaf?, self.last?);
        let prefix = view.prefix();
        let from_here = std::ptr::eq(last.head, prefix) && std::ptr::eq(prefix, inside);
        (from_here && self.failed.is_none()).then_some((view, i, last, self.last_hint))
    }

    /// Brings the cursor up to where a run that started at
    /// [`run_state`](Self::run_state) ended: `next` the index of the leaf's
    /// next entry, `last_tail` and `last_hint` those of the last one it
    /// yielded.
    #[inline(always)]
    pub fn end_run(&mut self, next: usize, last_tail: &'a [u8], last_hint: u64) {
        if let Some((_, i)) = &mut self.leaf {
            *i = next;
        }
        if let Some(last) = &mut self.last {
            last.tail = last_tail;
        }
        self.last_hint = last_hint;
    }

    /// [`advance`](Self::advance) for [`next_plain`](Self::next_plain):
    /// `false` at the end or on damage (kept for `next_entry` to report).
    #[inline(never)]
    fn advance_plain(&mut self) -> bool {
        match self.advance() {
            Ok(moved) => moved,
            Err(d) => {
                self.failed = Some(d);
                false
            }
        }
    }

    /// Moves from an exhausted leaf to the first entry of the next one;
    /// `false` at the end of the tree.
    fn advance(&mut self) -> Parse<bool> {
        self.leaf = None;
        // Climb to the first ancestor with a next child.
        loop {
            let Some((view, j)) = self.stack.last_mut() else { return Ok(false) };
            if *j + 1 < view.len() {
                *j += 1;
                let child = view.child(*j)?;
                self.descend_leftmost(child)?;
                return Ok(true);
            }
            self.stack.pop();
        }
    }

    /// Moves to the next leaf and returns its first entry.
    #[inline(never)]
    fn next_leaf(&mut self) -> Parse<Option<LeafEntry<'a>>> {
        if let Some(damage) = self.failed.take() {
            return Err(damage);
        }
        loop {
            let Some((view, i)) = self.leaf else { return Ok(None) };
            if i < view.len() {
                self.leaf = Some((view, i + 1));
                let entry = view.entry(i)?;
                if self.last.is_some_and(|last| entry.key.cmp_key(&last).is_le()) {
                    return Err(Damage::new(view.offset(), "keys out of order"));
                }
                self.last = Some(entry.key);
                self.last_hint = node::hint_of(entry.key.tail);
                return Ok(Some(entry));
            }
            if !self.advance()? {
                return Ok(None);
            }
        }
    }
}

/// A plain entry met by [`Cursor::next_plain`]: its key and value in place.
#[derive(Clone, Copy)]
pub struct Plain<'a> {
    pub key: Key<'a>,
    pub value: &'a [u8],
}

/// The key of a [`Walk`] entry: in place when read from the walked tree
/// itself, built when read through a link.
#[derive(Clone, Debug)]
pub enum WalkKey<'a> {
    Arena(Key<'a>),
    Owned(Vec<u8>),
}

impl WalkKey<'_> {
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            WalkKey::Arena(k) => k.to_vec(),
            WalkKey::Owned(v) => v.clone(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            WalkKey::Arena(k) => k.len(),
            WalkKey::Owned(v) => v.len(),
        }
    }
}

/// One node met by a [`Walk`].
#[derive(Clone, Debug)]
pub struct WalkEntry<'a> {
    pub key: WalkKey<'a>,
    pub value: ValueRepr<'a>,
}

/// A cursor over one subtree that follows links: every node at or below a
/// key, in key order, those below links read from the links' targets with
/// their keys rewritten.
pub struct Walk<'a> {
    region: Region<'a>,
    frames: Vec<Frame<'a>>,
    /// The key of the link whose subtree the walk just left.
    after_link: Option<Vec<u8>>,
}

struct Frame<'a> {
    cursor: Cursor<'a>,
    /// The subtree this frame walks, as keys read in its tree.
    from: Vec<u8>,
    /// What `from` reads as to the caller.
    to: Vec<u8>,
    /// `from == to` and no link on the way: keys are handed out in place.
    in_place: bool,
    /// The shared prefix of the last leaf found to lie wholly below `from`:
    /// its entries skip the subtree check (every key of a leaf starts with
    /// its prefix, as that is how its keys are read).
    inside: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Whether `key` lies in this frame's subtree.
    #[inline]
    fn holds(&mut self, key: &Key<'a>) -> bool {
        if std::ptr::eq(key.head, self.inside) {
            return true;
        }
        let from = self.from.as_slice();
        if key.head.len() > from.len() && key.head.starts_with(from) && key.head[from.len()] == 0 {
            self.inside = key.head;
            return true;
        }
        key.in_subtree(from)
    }
}

impl<'a> Walk<'a> {
    /// Walks the node at `key` (if any) and everything below it.
    pub fn subtree(region: Region<'a>, root: u64, key: &[u8]) -> Parse<Walk<'a>> {
        let (target, from) = resolve(region, root, key, false)?;
        let mut cursor = Cursor::new(region, target);
        cursor.seek(&from)?;
        let in_place = target == root && *from == *key;
        let frame = Frame { cursor, from: from.into_owned(), to: key.to_vec(), in_place, inside: &[] };
        Ok(Walk { region, frames: vec![frame], after_link: None })
    }

    /// Walks what lies strictly below a link entry at `key`: the subtree
    /// below the link's source in its target, with keys under `key`.
    pub fn below_link(region: Region<'a>, link: Link<'_>, key: &[u8]) -> Parse<Walk<'a>> {
        let mut cursor = Cursor::new(region, link.root);
        cursor.seek(&crate::path::child_prefix(link.src))?;
        let frame = Frame { cursor, from: link.src.to_vec(), to: key.to_vec(), in_place: false, inside: &[] };
        Ok(Walk { region, frames: vec![frame], after_link: None })
    }

    /// The next entry when it is a plain one in place (no link met, keys
    /// read from the walked tree itself) in a leaf wholly inside the
    /// subtree: its key and value, with nothing to check but the order.
    /// `None` leaves the walk as it was, for
    /// [`next_entry`](Self::next_entry) to take the step.
    #[inline(always)]
    pub fn next_plain(&mut self) -> Option<Plain<'a>> {
        if self.after_link.is_some() {
            return None;
        }
        let frame = self.frames.last_mut()?;
        if !frame.in_place {
            return None;
        }
        let Frame { cursor, from, inside, .. } = frame;
        cursor.next_plain(|prefix| {
            // Every key of a leaf starts with its prefix: a prefix at or
            // below `from` and a separator puts the whole leaf inside.
            if std::ptr::eq(prefix, *inside) {
                return true;
            }
            let wholly =
                from.is_empty() || (prefix.len() > from.len() && prefix.starts_with(from) && prefix[from.len()] == 0);
            if wholly {
                *inside = prefix;
            }
            wholly
        })
    }

    /// Where a scan's run of plain entries through the current leaf would
    /// start (see [`Cursor::run_state`]): only in place, with no link just
    /// left, in a leaf wholly inside the subtree. While the run lasts the
    /// walk is behind; [`end_plain_run`](Self::end_plain_run) brings it up
    /// before any other step.
    #[inline(always)]
    pub fn plain_run(&self) -> Option<(LeafView<'a>, usize, Key<'a>, u64)> {
        let frame = self.frames.last()?;
        if self.after_link.is_some() || !frame.in_place {
            return None;
        }
        frame.cursor.run_state(frame.inside)
    }

    /// Ends a run that started at [`plain_run`](Self::plain_run): see
    /// [`Cursor::end_run`].
    #[inline(always)]
    pub fn end_plain_run(&mut self, next: usize, last_tail: &'a [u8], last_hint: u64) {
        if let Some(frame) = self.frames.last_mut() {
            frame.cursor.end_run(next, last_tail, last_hint);
        }
    }

    #[inline(always)]
    pub fn next_entry(&mut self) -> Parse<Option<WalkEntry<'a>>> {
        loop {
            let Some(frame) = self.frames.last_mut() else { return Ok(None) };
            let entry = match frame.cursor.next_entry()? {
                Some(e) if frame.holds(&e.key) => e,
                // Past the frame's subtree: back to the frame that met its link.
                _ => {
                    self.after_link = self.frames.pop().map(|f| f.to);
                    continue;
                }
            };
            let key = if frame.in_place {
                WalkKey::Arena(entry.key)
            } else {
                let mut k = frame.to.clone();
                let whole = entry.key.to_vec();
                k.extend_from_slice(&whole[frame.from.len()..]);
                WalkKey::Owned(k)
            };
            // What follows a link's subtree must sort after all of it: no
            // key lies strictly below a link (see `node`).
            if let Some(link_key) = self.after_link.take() {
                let below = match &key {
                    WalkKey::Arena(k) => k.in_subtree(&link_key) && k.len() > link_key.len(),
                    WalkKey::Owned(k) => crate::path::in_subtree(k, &link_key) && k.len() > link_key.len(),
                };
                if below {
                    return Err(Damage::new(
                        entry.link.map_or(0, |l| l.root),
                        "an entry below a link: keys out of order",
                    ));
                }
            }
            if let Some(link) = entry.link {
                if self.frames.len() >= MAX_LINKS || link.src.is_empty() {
                    return Err(Damage::new(link.root, "link nested too deep, or to the root"));
                }
                // Strictly below the source: the link entry stands for the source node.
                let mut cursor = Cursor::new(self.region, link.root);
                cursor.seek(&crate::path::child_prefix(link.src))?;
                self.frames.push(Frame {
                    cursor,
                    from: link.src.to_vec(),
                    to: key.to_vec(),
                    in_place: false,
                    inside: &[],
                });
            }
            return Ok(Some(WalkEntry { key, value: entry.value }));
        }
    }
}

/// The names of the immediate children of `key`, in order.
pub fn list(region: Region<'_>, root: u64, key: &[u8]) -> Parse<Vec<String>> {
    let mut names = Vec::new();
    each_child_name(region, root, key, |name| names.push(String::from_utf8_lossy(name).into_owned()))?;
    Ok(names)
}

/// Calls `each` with the name of each immediate child of `key`, in order.
pub fn each_child_name(region: Region<'_>, root: u64, key: &[u8], mut each: impl FnMut(&[u8])) -> Parse<()> {
    let (root, key) = resolve(region, root, key, true)?;
    let skip = crate::path::child_prefix(&key).len();
    each_child(region, root, &key, |full, _, _| {
        let rest = &full[skip..];
        each(rest.iter().position(|&b| b == 0).map_or(rest, |p| &rest[..p]));
    })
}

/// What [`reachable_bytes`] found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reach {
    pub bytes: u64,
    /// Whether any link entry was met.
    pub links: bool,
}

/// Bytes of the distinct nodes (and value blobs) reachable from `roots`,
/// each visited once; with `verify`, every one's checksum is checked.
pub fn reachable_bytes(region: Region<'_>, roots: &[u64], verify: bool) -> Parse<Reach> {
    let never = std::sync::atomic::AtomicBool::new(false);
    Ok(reachable_bytes_until(region, roots, verify, &never)?.expect("never stopped"))
}

/// Checks the checksum of every node (and value blob) reachable from
/// `roots` at or above offset `floor`; nodes below it, and so everything
/// they reach (offsets point backwards), are left alone.
pub fn verify_above(region: Region<'_>, roots: &[u64], floor: u64) -> Parse<()> {
    let mut seen = HashSet::new();
    let mut stack: Vec<u64> = roots.iter().copied().filter(|&r| r != 0 && r >= floor).collect();
    while let Some(offset) = stack.pop() {
        if !seen.insert(offset) {
            continue;
        }
        let kind = kind_at(region, offset)?;
        node::verified_node_at(region.bytes(), offset, kind)?;
        match kind {
            KIND_INTERNAL => {
                let view = InternalView::parse(region, offset)?;
                for i in 0..view.len() {
                    let child = view.child(i)?;
                    if child >= floor {
                        stack.push(child);
                    }
                }
            }
            KIND_LEAF => {
                let view = LeafView::parse(region, offset)?;
                for i in 0..view.len() {
                    let entry = view.entry(i)?;
                    if let ValueRepr::Blob { offset: blob, .. } = entry.value {
                        if blob >= floor && seen.insert(blob) {
                            node::verified_node_at(region.bytes(), blob, KIND_BLOB)?;
                        }
                    }
                    if let Some(link) = entry.link.filter(|l| l.root != 0 && l.root >= floor) {
                        stack.push(link.root);
                    }
                }
            }
            other => return Err(unexpected(offset, other)),
        }
    }
    Ok(())
}

/// [`reachable_bytes`], given up (`None`) once `stop` is set.
pub fn reachable_bytes_until(
    region: Region<'_>,
    roots: &[u64],
    verify: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Parse<Option<Reach>> {
    let mut links = false;
    let check = |offset: u64, kind: u8| -> Parse<u64> {
        let n =
            if verify { node::verified_node_at(region.bytes(), offset, kind)? } else { region.node(offset, kind)? };
        Ok(n.len() as u64)
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack: Vec<u64> = roots.iter().copied().filter(|&r| r != 0).collect();
    while let Some(offset) = stack.pop() {
        if !seen.insert(offset) {
            continue;
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
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
                    let entry = view.entry(i)?;
                    if let ValueRepr::Blob { offset: blob, .. } = entry.value {
                        if seen.insert(blob) {
                            total += check(blob, KIND_BLOB)?;
                        }
                    }
                    // A link keeps its whole target tree until compaction re-roots it.
                    if let Some(link) = entry.link {
                        links = true;
                        if link.root != 0 {
                            stack.push(link.root);
                        }
                    }
                }
            }
            other => return Err(unexpected(offset, other)),
        }
    }
    Ok(Some(Reach { bytes: total, links }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{build_internal, build_leaf, u32_at, ChildRef, EntryRef};

    /// An arena region built node by node, as a crafted file would be.
    struct Crafted(Vec<u8>);

    impl Crafted {
        fn append(&mut self, node: &[u8]) -> u64 {
            let at = self.0.len() as u64;
            self.0.extend_from_slice(node);
            self.0.resize(self.0.len().next_multiple_of(8), 0);
            at
        }

        fn leaf(&mut self, keys: &[&[u8]]) -> u64 {
            let entries: Vec<EntryRef<'_>> = keys
                .iter()
                .map(|k| EntryRef { key: Key::whole(k), value: ValueRepr::Inline(b"v"), link: None })
                .collect();
            let mut buf = Vec::new();
            build_leaf(&entries, &mut buf);
            self.append(&buf)
        }

        fn internal(&mut self, children: &[(&[u8], u64)]) -> u64 {
            let refs: Vec<ChildRef<'_>> = children
                .iter()
                .map(|&(k, offset)| ChildRef { first_key: Key::whole(k), offset, keys: 2, longest: 1, node_bytes: 0 })
                .collect();
            let mut buf = Vec::new();
            build_internal(&refs, &mut buf);
            self.append(&buf)
        }
    }

    /// A tree in which every internal node lists the node below it twice:
    /// 2^40 leaves to walk if nothing checked that keys increase.
    fn doubling_tree(depth: usize) -> (Crafted, u64) {
        let mut region = Crafted(vec![0; 8]);
        let mut node = region.leaf(&[b"a", b"b"]);
        for _ in 0..depth {
            node = region.internal(&[(b"a", node), (b"c", node)]);
        }
        (region, node)
    }

    #[test]
    fn a_node_listed_twice_is_damage_not_an_endless_scan() {
        let (region, root) = doubling_tree(40);
        let mut cursor = Cursor::new(Region::for_test(&region.0), root);
        cursor.seek(b"").unwrap();
        let mut yielded = 0;
        let err = loop {
            match cursor.next_entry() {
                Ok(Some(_)) => yielded += 1,
                Ok(None) => panic!("the scan ended after {yielded} entries without noticing"),
                Err(d) => break d,
            }
        };
        assert!(yielded <= 2 && err.detail.contains("out of order"), "{yielded}: {}", err.detail);
        let mut walk = Walk::subtree(Region::for_test(&region.0), root, b"").unwrap();
        let mut count = 0;
        let result = loop {
            match walk.next_entry() {
                Ok(Some(_)) => count += 1,
                other => break other,
            }
        };
        assert!(result.is_err() && count <= 2, "walk: {count} entries, then {:?}", result.map(|e| e.is_some()));
    }

    /// What a walk yields before it ends (`Ok`) or reports damage (`Err`),
    /// up to 100 entries; and how many came by the plain step.
    struct Drained {
        keys: Vec<Vec<u8>>,
        end: Result<(), String>,
        plain: usize,
    }

    /// Drains `walk` with `next_entry` alone or, with `plain`, the way a
    /// scan does: the plain step first, `next_entry` when it declines.
    fn drain(mut walk: Walk<'_>, plain: bool) -> Drained {
        let mut out = Drained { keys: Vec::new(), end: Ok(()), plain: 0 };
        while out.keys.len() < 100 {
            if plain {
                if let Some(plain) = walk.next_plain() {
                    out.keys.push(plain.key.to_vec());
                    out.plain += 1;
                    continue;
                }
            }
            match walk.next_entry() {
                Ok(Some(entry)) => out.keys.push(entry.key.to_vec()),
                Ok(None) => return out,
                Err(d) => {
                    out.end = Err(d.detail);
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn the_plain_step_yields_and_refuses_what_the_general_one_does() {
        let two_leaves = |first: &[&[u8]], second: &[&[u8]], second_offset: Option<u64>| {
            let mut region = Crafted(vec![0; 8]);
            let a = region.leaf(first);
            let b = region.leaf(second);
            let root = region.internal(&[(first[0], a), (second[0], second_offset.unwrap_or(b))]);
            (region, root)
        };
        let in_order: [&[u8]; 4] = [b"a", b"a\0x", b"b", b"b\0x"];
        let cases = [
            ("in order", two_leaves(&in_order, &[b"b\0y", b"b\0z", b"c"], None), true),
            ("a leaf's first key not after the last one's", two_leaves(&in_order, &[b"b\0x", b"d"], None), false),
            ("keys out of order within a leaf", two_leaves(&[b"a", b"c", b"b"], &[b"d", b"e"], None), false),
            ("a second child that is no node", two_leaves(&in_order, &[b"c", b"d"], Some(16)), false),
            ("a node listed twice", doubling_tree(8), false),
        ];
        for (what, (region, root), sound) in &cases {
            let region = Region::for_test(&region.0);
            for from in [&b""[..], b"a", b"b", b"c", b"z"] {
                let walk = || Walk::subtree(region, *root, from);
                let Ok(first) = walk() else {
                    // The seek itself met the damage: no step is taken.
                    assert!(!*sound, "{what}, below {from:?}: {:?}", walk().err());
                    continue;
                };
                let general = drain(first, false);
                let scan = drain(walk().unwrap(), true);
                assert_eq!(scan.keys, general.keys, "{what}, below {from:?}");
                assert_eq!(scan.end.is_ok(), general.end.is_ok(), "{what}, below {from:?}: {:?}", scan.end);
                if from.is_empty() {
                    assert_eq!(general.end.is_ok(), *sound, "{what}: {:?}", general.end);
                    // All but the first, up to the damage, and across leaves.
                    let want = if *sound { general.keys.len() - 1 } else { 1 };
                    assert!(scan.plain >= want, "{what}: the plain step took {} entries", scan.plain);
                }
            }
        }
    }

    #[test]
    fn counts_and_diffs_of_a_crafted_tree_report_damage() {
        // Internal keys that do not increase.
        let mut region = Crafted(vec![0; 8]);
        let leaf = region.leaf(&[b"a", b"b"]);
        let root = region.internal(&[(b"a", leaf), (b"a", leaf)]);
        assert!(below(Region::for_test(&region.0), root, b"").is_err());
        // Leaf keys that do not increase.
        let mut region = Crafted(vec![0; 8]);
        let root = region.leaf(&[b"b", b"a"]);
        assert!(below(Region::for_test(&region.0), root, b"").is_err());
        // A diff against an empty tree reads every entry of the crafted one.
        let (region, root) = doubling_tree(40);
        let crafted = Region::for_test(&region.0);
        let diff = crate::diff::diff(crafted, 0, crafted, root, true, b"");
        assert!(matches!(diff, Err(crate::diff::DiffError::New(_))));
    }

    /// Runs `f` on another thread and fails if it does not finish soon:
    /// the bugs these tests guard against made reads run for years.
    fn finishes_soon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(30)).expect("still running after 30 s")
    }

    /// A leaf with no entries, sealed like any node.
    fn empty_leaf(region: &mut Crafted) -> u64 {
        let mut buf = vec![0u8; node::HEADER_BYTES];
        buf[0] = KIND_LEAF;
        node::seal(&mut buf);
        region.append(&buf)
    }

    #[test]
    fn shared_empty_leaves_are_damage_not_an_endless_scan() {
        // Four children per level, all the same node, 30 levels: 4^30
        // empty leaves to visit if an empty leaf were accepted.
        let mut region = Crafted(vec![0; 8]);
        let mut node = empty_leaf(&mut region);
        for _ in 0..30 {
            node = region.internal(&[(b"a", node), (b"b", node), (b"c", node), (b"d", node)]);
        }
        let (bytes, root) = (region.0, node);
        let (scan, walk, diff) = finishes_soon(move || {
            let region = Region::for_test(&bytes);
            let mut cursor = Cursor::new(region, root);
            let scan = cursor.seek(b"").and_then(|()| cursor.next_entry()).map(|e| e.is_some());
            let walk = Walk::subtree(region, root, b"").and_then(|mut w| w.next_entry()).map(|e| e.is_some());
            let diff = crate::diff::diff(region, 0, region, root, true, b"").is_ok();
            (scan.is_err(), walk.is_err(), diff)
        });
        assert!(scan && walk && !diff, "scan refused: {scan}, walk refused: {walk}, diff accepted: {diff}");
    }

    #[test]
    fn counts_below_a_key_end_when_hints_lie() {
        // Level d lists four children, all the level below, with keys
        // "a", "a" d+1 1, "a" d+1 2, "a" d+1 3: in order, and each level's
        // below the next one's second key, as the ordering checks want. Hints
        // that all say "after everything" route every search to child 0, so
        // counting below "a\xff" met all four children, each wholly before
        // the range, at each of 30 levels: 4^30 descents.
        let mut region = Crafted(vec![0; 8]);
        let mut node = region.leaf(&[b"a"]);
        for d in 0..30u8 {
            let keys: Vec<Vec<u8>> =
                (0..4u8).map(|j| if j == 0 { b"a".to_vec() } else { vec![b'a', d + 1, j] }).collect();
            let children: Vec<(&[u8], u64)> = keys.iter().map(|k| (k.as_slice(), node)).collect();
            node = region.internal(&children);
            let at = node as usize;
            let hints = at + 24 + 16 * 4;
            region.0[hints..hints + 32].fill(0xFF);
            let len = u32_at(&region.0, at + 4).unwrap() as usize;
            let crc = node::node_crc(&region.0[at..at + len]);
            region.0[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        }
        let (bytes, root) = (region.0, node);
        let below = finishes_soon(move || below(Region::for_test(&bytes), root, b"a\xff").map(|b| b.keys));
        assert_eq!(below.ok(), Some(0));
    }
}
