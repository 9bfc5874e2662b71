//! Errors. One enum for the whole library keeps `?` simple across layers;
//! variants carry the data a caller needs to act (the path, the holder's pid,
//! the file and offset of damage).

use std::path::PathBuf;

/// Everything that can go wrong in shoal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path that is not a valid shoal path (see [`crate::path`]).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    /// A value larger than the store's `max_value_bytes`.
    #[error("value for {path} is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge { path: String, len: usize, max: usize },

    /// `delete` of a node that still has children (use `delete_tree`).
    #[error("{path} has children; use delete_tree to remove a subtree")]
    HasChildren { path: String },

    /// An operation that needs an existing node found none there.
    #[error("no node at {path}")]
    NoSuchPath { path: String },

    /// `copy_tree` of a subtree the same transaction has already written to.
    #[error("cannot copy {path}: this transaction has already written to it or below it; copy it in a transaction of its own")]
    CopySourceWritten { path: String },

    /// `copy_tree` to a place where the copy's deepest paths would exceed
    /// the path limit ([`crate::path::MAX_PATH_BYTES`]).
    #[error("copying {from} to {to} would make a path of {longest} bytes; the limit is 3072 bytes")]
    CopyTooDeep { from: String, to: String, longest: usize },

    /// The root node cannot be written or deleted; `delete_tree("/")` clears the store.
    #[error("the root node cannot be written or deleted")]
    RootImmutable,

    /// Optimistic concurrency: something this transaction read, listed or
    /// wrote was changed by another commit after the transaction began.
    #[error("conflict on {path}: changed by another commit after this transaction began")]
    Conflict { path: String },

    /// Another process holds the store's writer lock (`pid`: as it recorded
    /// itself, 0 when that cannot be read).
    #[error("store {dir} is locked by another writer ({})", match pid { 0 => "pid unknown".to_string(), p => format!("pid {p}") })]
    Locked { dir: PathBuf, pid: u32 },

    /// No store at this location (and `create` was not asked for).
    #[error("no shoal store at {0}")]
    NotFound(PathBuf),

    /// [`crate::Store::create`] found a store already there.
    #[error("a shoal store already exists at {0}")]
    AlreadyExists(PathBuf),

    /// A file written by an incompatible format, byte order, word size or page size.
    #[error("{file}: incompatible format: {detail}")]
    Format { file: PathBuf, detail: String },

    /// Damaged bytes detected (checksum or structure). Never served as data.
    #[error("{file}: damaged at offset {offset}: {detail}")]
    Corrupt { file: PathBuf, offset: u64, detail: String },

    /// The arena reached its address-space reservation.
    #[error("arena full: {needed} bytes needed beyond the {reserved}-byte reservation; compact or reopen with a larger map_reserve_bytes")]
    ArenaFull { needed: u64, reserved: u64 },

    /// A version that is not (or no longer) retained.
    #[error("version {requested} is not retained (retained: {oldest}..={newest})")]
    VersionNotRetained { requested: u64, oldest: u64, newest: u64 },

    /// A version between two retained ones that compaction did not keep
    /// (the retention policy thinned it, see [`crate::retention`]).
    #[error("version {requested} is not retained: the retention policy kept versions {older} and {newer} around it")]
    VersionThinned { requested: u64, older: u64, newer: u64 },

    /// A [`crate::BufRef`] into a generation that a compaction has since
    /// replaced; look the path up again for a new handle.
    #[error("buffer reference into arena generation {generation} is stale: compaction replaced it (now generation {current}); look the path up again")]
    StaleBufRef { generation: u64, current: u64 },

    /// Bytes that are not a [`crate::BufRef`] of this store, or a damaged one.
    #[error("invalid buffer reference: {reason}")]
    InvalidBufRef { reason: String },

    /// Changes were asked for since a version whose successors are no longer
    /// all retained (compaction keeps the newest few).
    #[error("the changes after version {after} are no longer retained; the history reaches back to version {oldest}")]
    HistoryGone { after: u64, oldest: u64 },

    /// A version changed too many paths for its change set to list them
    /// (a bulk load, a large subtree deletion); compare snapshots instead.
    #[error("version {version} changed too many paths to list them; compare the snapshots instead")]
    ChangesNotListed { version: u64 },

    /// A transaction whose journal record would exceed the record size limit.
    #[error("transaction too large: {bytes} bytes of changes; the limit is {max} bytes")]
    TransactionTooLarge { bytes: usize, max: usize },

    /// Every slot of the reader table is held by a live reader.
    #[error("reader table full: all {0} slots are held by live readers")]
    ReaderTableFull(usize),

    /// An option outside its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },

    /// A file or directory of the store that may not be used: a refused
    /// permission, a symbolic link, a directory others may write.
    #[error("cannot use {path}: {reason}")]
    Access { path: PathBuf, reason: String },

    /// An I/O error, with the file it concerns.
    #[error("{file}: {source}")]
    Io { file: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a file name to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, file: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, file: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { file: file.to_path_buf(), source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, file: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::Io { file: file.to_path_buf(), source: e.into() })
    }
}
