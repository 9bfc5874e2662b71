//! xenstore's data model on a shoal store: paths, permissions, and the
//! operations with the stock daemons' checks.

pub mod ops;
pub mod paths;
pub mod perms;
pub mod quota;

/// Prepares a store for serving the first time: gives the root its
/// permissions record (dom0's, no access for others) and creates
/// `/tool/xenstored`, as the stock C daemon starts with.
pub fn init(store: &shoal::Store) -> shoal::Result<()> {
    let mut txn = store.begin();
    if prepare(&mut txn)? {
        txn.commit()?;
    }
    Ok(())
}

/// Makes [`init`]'s changes in `txn`, if the tree it reads lacks them;
/// `false` if it has them already.
pub fn prepare(txn: &mut shoal::Transaction<'_>) -> shoal::Result<bool> {
    if txn.get(paths::PERMS_ROOT)?.is_some() {
        return Ok(false);
    }
    let perms = ops::default_root_perms().encode();
    txn.put(paths::PERMS_ROOT, &perms)?;
    for path in ["/tool", "/tool/xenstored"] {
        txn.put(path, b"")?;
        txn.put(&paths::perms_path(path), &perms)?;
    }
    Ok(true)
}
