//! The xenstore operations on a shoal view, with the stock daemons'
//! permission checks and error names.
//!
//! Reads work on any [`View`]: a snapshot (a request outside a
//! transaction) or a shoal transaction (inside one, which then records what
//! it read, so a conflicting commit makes it fail with `EAGAIN`). Writes
//! work on a transaction; the caller commits it.
//!
//! Every node has a permissions record at [`paths::perms_path`]. A node
//! without one (written into the store by other means, such as the `shoal`
//! CLI while no daemon ran) has the permissions of its nearest ancestor
//! that has one, and the root's default is dom0's with no access for others.

use shoal::Transaction;

use super::paths::{self, perms_path, PRIVATE_NAME, ROOT_VALUE};
use super::perms::{Access, Caller, Perms};
use super::quota::{self, Budget};
use crate::wire::XsError;

/// Reads, at a snapshot or inside a transaction.
pub trait View {
    fn get(&mut self, path: &str) -> shoal::Result<Option<&[u8]>>;
    /// Calls `each` with each child's name, in order.
    fn each_child(&mut self, path: &str, each: &mut dyn FnMut(&[u8])) -> shoal::Result<()>;
}

impl View for shoal::Snapshot {
    fn get(&mut self, path: &str) -> shoal::Result<Option<&[u8]>> {
        shoal::Snapshot::get(self, path)
    }
    fn each_child(&mut self, path: &str, each: &mut dyn FnMut(&[u8])) -> shoal::Result<()> {
        shoal::Snapshot::for_each_child(self, path, each)
    }
}

impl View for &shoal::Snapshot {
    fn get(&mut self, path: &str) -> shoal::Result<Option<&[u8]>> {
        shoal::Snapshot::get(self, path)
    }
    fn each_child(&mut self, path: &str, each: &mut dyn FnMut(&[u8])) -> shoal::Result<()> {
        shoal::Snapshot::for_each_child(self, path, each)
    }
}

impl View for Transaction<'_> {
    fn get(&mut self, path: &str) -> shoal::Result<Option<&[u8]>> {
        Transaction::get(self, path)
    }
    fn each_child(&mut self, path: &str, each: &mut dyn FnMut(&[u8])) -> shoal::Result<()> {
        Transaction::list(self, path)?.iter().for_each(|name| each(name.as_bytes()));
        Ok(())
    }
}

/// The xenstore error for a store error.
pub fn store_error(error: &shoal::Error) -> XsError {
    match error {
        shoal::Error::InvalidPath { .. } => XsError::EINVAL,
        shoal::Error::ValueTooLarge { .. } => XsError::E2BIG,
        shoal::Error::Conflict { .. } => XsError::EAGAIN,
        shoal::Error::ArenaFull { .. } => XsError::ENOSPC,
        _ => {
            tracing::error!(%error, "store error");
            XsError::EIO
        }
    }
}

fn io<T>(result: shoal::Result<T>) -> Result<T, XsError> {
    result.map_err(|e| store_error(&e))
}

/// The root's permissions when it has no record: dom0's, no access for
/// others (the stock daemons' initial `/`).
pub fn default_root_perms() -> Perms {
    Perms::owned_by(0)
}

fn record(view: &mut dyn View, path: &str) -> Result<Option<Perms>, XsError> {
    // A record that does not parse is not trusted for more than dom0 gets.
    Ok(io(view.get(&perms_path(path)))?.map(|bytes| Perms::decode(bytes).unwrap_or_else(|| Perms::owned_by(0))))
}

/// The permissions that govern `path`: its own record, else the nearest
/// ancestor's, else the root default.
pub fn effective_perms(view: &mut dyn View, path: &str) -> Result<Perms, XsError> {
    let mut at = path;
    loop {
        if let Some(perms) = record(view, at)? {
            return Ok(perms);
        }
        if at == "/" {
            return Ok(default_root_perms());
        }
        at = paths::parent(at);
    }
}

fn exists(view: &mut dyn View, path: &str) -> Result<bool, XsError> {
    Ok(io(view.get(path))?.is_some())
}

/// The nearest existing proper ancestor of `path` (the root always exists).
fn nearest_existing_ancestor(view: &mut dyn View, path: &str) -> Result<String, XsError> {
    let mut at = paths::parent(path);
    while at != "/" && !exists(view, at)? {
        at = paths::parent(at);
    }
    Ok(at.to_string())
}

fn allows(access: Access, want: Access) -> bool {
    (!want.read || access.read) && (!want.write || access.write)
}

/// Checks that `caller` may do `want` at the existing node `path` and
/// returns its permissions. For a missing node the error is `ENOENT` only
/// if the nearest existing ancestor would allow `want`, `EACCES` otherwise,
/// so that a caller learns nothing about nodes it may not see (the stock
/// daemons' `errno_from_parents`).
pub fn check(view: &mut dyn View, caller: &Caller, path: &str, want: Access) -> Result<Perms, XsError> {
    if exists(view, path)? {
        let perms = effective_perms(view, path)?;
        if !allows(perms.access_for(caller), want) {
            return Err(XsError::EACCES);
        }
        return Ok(perms);
    }
    let ancestor = nearest_existing_ancestor(view, path)?;
    let perms = effective_perms(view, &ancestor)?;
    let granted = perms.access_for(caller);
    if (want.read && granted.read) || (want.write && granted.write) {
        Err(XsError::ENOENT)
    } else {
        Err(XsError::EACCES)
    }
}

const READ: Access = Access { read: true, write: false };
const WRITE: Access = Access { read: false, write: true };

/// Where a node's value is: its own path, except the root's.
fn value_path(path: &str) -> &str {
    if path == "/" {
        ROOT_VALUE
    } else {
        path
    }
}

/// `READ`: the node's value.
pub fn read(view: &mut dyn View, caller: &Caller, path: &str) -> Result<Vec<u8>, XsError> {
    check(view, caller, path, READ)?;
    Ok(io(view.get(value_path(path)))?.map(<[u8]>::to_vec).unwrap_or_default())
}

/// `DIRECTORY`: the names of the node's children, in byte order, each
/// followed by a NUL (the reply's payload).
pub fn directory(view: &mut dyn View, caller: &Caller, path: &str) -> Result<Vec<u8>, XsError> {
    check(view, caller, path, READ)?;
    let mut names = Vec::new();
    let root = path == "/";
    io(view.each_child(path, &mut |name| {
        if !(root && name == PRIVATE_NAME.as_bytes()) {
            names.extend_from_slice(name);
            names.push(0);
        }
    }))?;
    Ok(names)
}

/// `GET_PERMS`: the node's permissions.
pub fn get_perms(view: &mut dyn View, caller: &Caller, path: &str) -> Result<Perms, XsError> {
    check(view, caller, path, READ)
}

/// The node-size quota's measure of `path` (see [`quota::record_size`])
/// with `perms` and a value of `value_len` bytes, and `extra_child` added
/// to its children.
fn record_size(
    view: &mut dyn View,
    path: &str,
    perms: &Perms,
    value_len: usize,
    extra_child: Option<&str>,
) -> Result<u64, XsError> {
    let mut children = 0;
    io(view.each_child(path, &mut |name| children += name.len() + 1))?;
    if path == "/" {
        children = children.saturating_sub(PRIVATE_NAME.len() + 1);
    }
    children += extra_child.map_or(0, |n| n.len() + 1);
    Ok(quota::record_size(perms.entries().len(), value_len, children))
}

/// Creates `path` and its missing ancestors, each with the permissions of
/// the nearest existing ancestor, owned by the caller if it is a guest.
/// The caller must be allowed to write that ancestor; each new node comes
/// out of `budget`, and neither the new node nor the ancestor it is added
/// to may reach the node-size quota.
fn create(
    txn: &mut Transaction<'_>,
    caller: &Caller,
    budget: &mut Budget,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    let ancestor = nearest_existing_ancestor(txn, path)?;
    let inherited = effective_perms(txn, &ancestor)?;
    if !inherited.access_for(caller).write {
        return Err(XsError::EACCES);
    }
    let perms = if caller.privileged { inherited.clone() } else { inherited.with_owner(caller.domid) };
    let first = if ancestor == "/" { 1 } else { ancestor.len() + 1 };
    let new_levels = path[first..].matches('/').count() as u64 + 1;
    if budget.node_size.is_some() {
        let child = path[first..].split('/').next().unwrap_or_default();
        let ancestor_value = io(txn.get(value_path(&ancestor)))?.map_or(0, <[u8]>::len);
        budget.check_size(record_size(txn, &ancestor, &inherited, ancestor_value, Some(child))?)?;
        budget.check_size(quota::record_size(perms.entries().len(), value.len(), 0))?;
    }
    budget.take_nodes(new_levels)?;
    let encoded = perms.encode();
    // Every level from below the ancestor down to `path` gets a record;
    // shoal creates the missing parents themselves, with empty values.
    for (i, _) in path[first..].match_indices('/') {
        io(txn.put(&perms_path(&path[..first + i]), &encoded))?;
    }
    io(txn.put(&perms_path(path), &encoded))?;
    io(txn.put(path, value))
}

/// `WRITE`: sets the node's value, creating it and its missing parents.
pub fn write(
    txn: &mut Transaction<'_>,
    caller: &Caller,
    budget: &mut Budget,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    match check(txn, caller, path, WRITE) {
        Ok(perms) => {
            if budget.node_size.is_some() {
                budget.check_size(record_size(txn, path, &perms, value.len(), None)?)?;
            }
            io(txn.put(value_path(path), value))
        }
        Err(XsError::ENOENT) => create(txn, caller, budget, path, value),
        Err(e) => Err(e),
    }
}

/// `MKDIR`: creates the node (empty) and its missing parents; an existing
/// node is left as it is.
pub fn mkdir(txn: &mut Transaction<'_>, caller: &Caller, budget: &mut Budget, path: &str) -> Result<(), XsError> {
    match check(txn, caller, path, WRITE) {
        Ok(_) => Ok(()),
        Err(XsError::ENOENT) => create(txn, caller, budget, path, b""),
        Err(e) => Err(e),
    }
}

/// `RM`: removes the node and everything below it. A missing node is not an
/// error if its parent exists.
pub fn rm(txn: &mut Transaction<'_>, caller: &Caller, path: &str) -> Result<(), XsError> {
    match check(txn, caller, path, WRITE) {
        Ok(_) => {}
        Err(XsError::ENOENT) => {
            return if exists(txn, paths::parent(path))? { Ok(()) } else { Err(XsError::ENOENT) };
        }
        Err(e) => return Err(e),
    }
    if path == "/" {
        return Err(XsError::EINVAL);
    }
    io(txn.delete_tree(path))?;
    io(txn.delete_tree(&perms_path(path)))?;
    Ok(())
}

/// `SET_PERMS`: replaces the node's permissions. Only the owner side may;
/// only a privileged caller may give the node another owner.
pub fn set_perms(
    txn: &mut Transaction<'_>,
    caller: &Caller,
    budget: &Budget,
    path: &str,
    perms: &Perms,
) -> Result<(), XsError> {
    let current = check(txn, caller, path, WRITE)?;
    if !current.is_owned_by(caller) {
        return Err(XsError::EACCES);
    }
    if !caller.privileged && perms.owner() != current.owner() {
        return Err(XsError::EPERM);
    }
    if budget.node_size.is_some() {
        let value_len = io(txn.get(value_path(path)))?.map_or(0, <[u8]>::len);
        budget.check_size(record_size(txn, path, perms, value_len, None)?)?;
    }
    io(txn.put(&perms_path(path), perms.encode()))
}

/// The special names whose permissions say who hears of their events.
const SPECIAL_NAMES: [&str; 2] = ["@introduceDomain", "@releaseDomain"];

fn special_path(name: &str) -> Result<String, XsError> {
    if !SPECIAL_NAMES.contains(&name) {
        return Err(XsError::EINVAL);
    }
    Ok(format!("{}/{}", paths::SPECIAL_ROOT, &name[1..]))
}

/// The permissions of a special name (dom0's, no access for others, until
/// set).
pub fn special_perms(view: &mut dyn View, name: &str) -> Result<Perms, XsError> {
    let path = special_path(name)?;
    Ok(io(view.get(&path))?.and_then(Perms::decode).unwrap_or_else(default_root_perms))
}

/// `SET_PERMS` of `@introduceDomain` or `@releaseDomain`.
pub fn set_special_perms(txn: &mut Transaction<'_>, caller: &Caller, name: &str, perms: &Perms) -> Result<(), XsError> {
    let current = special_perms(txn, name)?;
    if !current.is_owned_by(caller) || !current.access_for(caller).write {
        return Err(XsError::EACCES);
    }
    io(txn.put(&special_path(name)?, perms.encode()))
}

/// Removes every node owned by `domid` among `candidates` (node paths in
/// path order: what the daemon's accounting says the domain owns), with
/// what lies below it. Each is checked in the transaction first, so a node
/// that changed hands since is left alone. Returns whether there was any.
pub fn remove_owned(txn: &mut Transaction<'_>, candidates: &[String], domid: u32) -> Result<bool, XsError> {
    let mut removed: Vec<&str> = Vec::new();
    for node in candidates {
        if node == "/" || removed.last().is_some_and(|r| paths::is_child(node, r)) {
            continue; // the root stays; the rest goes with an owned ancestor
        }
        if record(txn, node)?.is_some_and(|p| p.owner() == domid) {
            io(txn.delete_tree(node))?;
            io(txn.delete_tree(&perms_path(node)))?;
            removed.push(node);
        }
    }
    Ok(!removed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal::{Durability, Options, Store};

    const DOM0: Caller = Caller { domid: 0, privileged: true, target: None };

    fn unlimited() -> Budget {
        Budget::UNLIMITED
    }

    fn guest(domid: u32) -> Caller {
        Caller { domid, privileged: false, target: None }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { create: true, durability: Durability::None, ..Options::default() };
        let store = Store::open(dir.path().join("s"), options).unwrap();
        (dir, store)
    }

    fn apply(store: &Store, f: impl FnOnce(&mut Transaction<'_>) -> Result<(), XsError>) -> Result<(), XsError> {
        let mut txn = store.begin();
        f(&mut txn)?;
        txn.commit().map_err(|e| store_error(&e))?;
        Ok(())
    }

    #[test]
    fn write_creates_parents_with_inherited_permissions() {
        let (_d, store) = store();
        apply(&store, |t| write(t, &DOM0, &mut unlimited(), "/local/domain/7/name", b"web")).unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &DOM0, "/local/domain/7/name").unwrap(), b"web");
        assert_eq!(read(&mut snap, &DOM0, "/local/domain").unwrap(), b"");
        assert_eq!(directory(&mut snap, &DOM0, "/local").unwrap(), b"domain\0");
        assert_eq!(directory(&mut snap, &DOM0, "/").unwrap(), b"local\0", "the perms subtree is hidden");
        assert_eq!(get_perms(&mut snap, &DOM0, "/local/domain/7").unwrap().encode(), b"n0\0");
    }

    #[test]
    fn guests_see_only_what_they_may_read() {
        let (_d, store) = store();
        apply(&store, |t| {
            write(t, &DOM0, &mut unlimited(), "/local/domain/7/name", b"web")?;
            set_perms(t, &DOM0, &Budget::UNLIMITED, "/local/domain/7", &Perms::parse_list(&["n7"])?)?;
            write(t, &DOM0, &mut unlimited(), "/secret", b"x")
        })
        .unwrap();
        let mut snap = store.snapshot();
        // The name inherited dom0's permissions when it was created.
        assert_eq!(read(&mut snap, &guest(7), "/local/domain/7/name"), Err(XsError::EACCES));
        assert_eq!(read(&mut snap, &guest(7), "/secret"), Err(XsError::EACCES));
        // Missing below a readable node: ENOENT; below an unreadable one: EACCES.
        assert_eq!(read(&mut snap, &guest(7), "/local/domain/7/missing"), Err(XsError::ENOENT));
        assert_eq!(read(&mut snap, &guest(7), "/local/domain/8/missing"), Err(XsError::EACCES));
        assert_eq!(read(&mut snap, &guest(8), "/local/domain/7/missing"), Err(XsError::EACCES));

        // A guest owns what it creates in its home, and may not give it away.
        apply(&store, |t| write(t, &guest(7), &mut unlimited(), "/local/domain/7/data/x", b"1")).unwrap();
        let mut snap = store.snapshot();
        assert_eq!(get_perms(&mut snap, &guest(7), "/local/domain/7/data").unwrap().encode(), b"n7\0");
        assert_eq!(read(&mut snap, &guest(7), "/local/domain/7/data/x").unwrap(), b"1");
        let give = Perms::parse_list(&["b8"]).unwrap();
        assert_eq!(
            apply(&store, |t| set_perms(t, &guest(7), &Budget::UNLIMITED, "/local/domain/7/data", &give)),
            Err(XsError::EPERM)
        );
        let share = Perms::parse_list(&["b7", "r8"]).unwrap();
        apply(&store, |t| set_perms(t, &guest(7), &Budget::UNLIMITED, "/local/domain/7/data/x", &share)).unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &guest(8), "/local/domain/7/data/x").unwrap(), b"1");
        assert_eq!(
            apply(&store, |t| write(t, &guest(8), &mut unlimited(), "/local/domain/7/data/x", b"2")),
            Err(XsError::EACCES)
        );
        assert_eq!(
            apply(&store, |t| write(t, &guest(8), &mut unlimited(), "/local/domain/7/data/y", b"2")),
            Err(XsError::EACCES)
        );
    }

    #[test]
    fn mkdir_keeps_existing_values_and_rm_removes_subtrees() {
        let (_d, store) = store();
        apply(&store, |t| write(t, &DOM0, &mut unlimited(), "/a/b", b"v")).unwrap();
        apply(&store, |t| mkdir(t, &DOM0, &mut unlimited(), "/a/b")).unwrap();
        apply(&store, |t| mkdir(t, &DOM0, &mut unlimited(), "/a/c/d")).unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &DOM0, "/a/b").unwrap(), b"v");
        assert_eq!(directory(&mut snap, &DOM0, "/a").unwrap(), b"b\0c\0");

        apply(&store, |t| rm(t, &DOM0, "/a")).unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &DOM0, "/a/b"), Err(XsError::ENOENT));
        assert!(snap.get("/.shoald/perms/a").unwrap().is_none(), "records go with their nodes");
        // Missing node, existing parent: fine. Missing parent: ENOENT. Root: EINVAL.
        apply(&store, |t| rm(t, &DOM0, "/a")).unwrap();
        assert_eq!(apply(&store, |t| rm(t, &DOM0, "/a/b")), Err(XsError::ENOENT));
        assert_eq!(apply(&store, |t| rm(t, &DOM0, "/")), Err(XsError::EINVAL));
    }

    #[test]
    fn nodes_without_a_record_take_their_ancestors_permissions() {
        let (_d, store) = store();
        apply(&store, |t| {
            write(t, &DOM0, &mut unlimited(), "/imported", b"")?;
            set_perms(t, &DOM0, &Budget::UNLIMITED, "/imported", &Perms::parse_list(&["n0", "r5"])?)
        })
        .unwrap();
        // Written by plain shoal, as the CLI would.
        let mut txn = store.begin();
        txn.put("/imported/deep/node", b"v").unwrap();
        txn.commit().unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &guest(5), "/imported/deep/node").unwrap(), b"v");
        assert_eq!(read(&mut snap, &guest(6), "/imported/deep/node"), Err(XsError::EACCES));
    }

    #[test]
    fn a_damaged_record_grants_only_dom0() {
        let (_d, store) = store();
        apply(&store, |t| write(t, &DOM0, &mut unlimited(), "/a", b"v")).unwrap();
        apply(&store, |t| set_perms(t, &DOM0, &Budget::UNLIMITED, "/a", &Perms::parse_list(&["b5"])?)).unwrap();
        let mut txn = store.begin();
        txn.put("/.shoald/perms/a", b"b5").unwrap(); // no terminating NUL
        txn.commit().unwrap();
        let mut snap = store.snapshot();
        assert_eq!(read(&mut snap, &guest(5), "/a"), Err(XsError::EACCES));
        assert_eq!(read(&mut snap, &DOM0, "/a").unwrap(), b"v");
    }
}
