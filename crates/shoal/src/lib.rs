//! shoal: a shared-memory, zero-copy, versioned tree store.
//!
//! One copy of the data lives in a memory-mapped arena. A single writer
//! ([`Store`]) commits [`Transaction`]s; each commit publishes a new
//! immutable version atomically. Readers in any process on the host
//! ([`Reader`]) take [`Snapshot`]s without locks or system calls and read
//! values in place.
//!
//! ```no_run
//! use shoal::{Options, Reader, Store};
//! # fn main() -> shoal::Result<()> {
//! let store = Store::open("/tmp/demo-store", Options { create: true, ..Options::default() })?;
//! let mut txn = store.begin();
//! txn.put("/local/domain/7/name", b"web-7")?;
//! let version = txn.commit()?;
//!
//! // In any process on the host:
//! let reader = Reader::open("/tmp/demo-store")?;
//! let snapshot = reader.snapshot()?;
//! assert!(snapshot.version() >= version);
//! assert_eq!(snapshot.get("/local/domain/7/name")?, Some(&b"web-7"[..]));
//! assert_eq!(snapshot.list("/local/domain")?, vec!["7".to_string()]);
//! for entry in snapshot.scan("/local")? {
//!     let entry = entry?;
//!     println!("{} = {:?}", entry.path(), entry.value());
//! }
//! # Ok(()) }
//! ```
//!
//! Linux only: shoal relies on shared file mappings, open-file-description
//! locks and `/proc`.

#![deny(unsafe_op_in_unsafe_fn)]

mod arena;
mod bufref;
mod build;
mod control;
mod diff;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzz;
mod journal;
#[cfg(test)]
mod layouts;
mod locking;
mod meta;
mod node;
mod notify;
mod options;
pub mod path;
pub mod queue;
mod readers;
mod retained;
pub mod retention;
mod scan;
mod settings;
mod snapshot;
mod stat;
mod store;
mod sys;
mod tree;
mod txn;
mod watch;

pub use bufref::{BufRef, BufView};
pub use diff::Diff;
pub use error::{Error, Result};
pub use node::{ChangeKind, PAGE_ALIGNED_VALUE_MIN};
pub use notify::VersionFd;
pub use options::{Durability, Options};
pub use readers::ReaderInfo;
pub use retention::RetainTier;
pub use scan::{Entry, Scan};
pub use snapshot::{Change, Reader, Snapshot, VersionInfo, DEFAULT_WAIT_SPIN};
pub use stat::Stat;
pub use store::{CompactReport, ScrubState, Store};
pub use txn::{Intent, IntentChange, Transaction};
pub use watch::{Watch, WatchEvent};

/// Internals exposed for tests and tools in this workspace; not a stable API.
#[doc(hidden)]
pub mod internals {
    /// Bytes appended to the current arena generation so far.
    pub fn arena_cursor(store: &crate::Store) -> u64 {
        store.stat().map(|s| s.arena_bytes).unwrap_or(0)
    }
    pub use crate::arena::file_name as arena_file_name;
    /// Crash-test hook: the next compaction aborts the process right after
    /// it switches to the new generation, before the checkpoint naming it.
    pub fn abort_in_next_compaction_after_switch(store: &crate::Store) {
        store.abort_in_next_compaction_after_switch();
    }
    /// Test hook: the next compaction runs `hook` after its unlocked sync,
    /// before it writes the checkpoint naming the new generation.
    pub fn before_next_compaction_checkpoint(store: &crate::Store, hook: impl FnOnce() + Send + 'static) {
        store.before_next_compaction_checkpoint(Box::new(hook));
    }
    /// Test hook: the next compaction runs `hook` after its unlocked copy,
    /// before it takes the writer lock to catch up and switch.
    pub fn before_next_compaction_switch(store: &crate::Store, hook: impl FnOnce() + Send + 'static) {
        store.before_next_compaction_switch(Box::new(hook));
    }
    pub use crate::store::SyncFault;
    /// An exclusive open-file-description lock on a byte range of `file`
    /// (`Ok(false)`: someone else holds it), for tests that play a
    /// misbehaving neighbour.
    pub fn try_lock_range(file: &std::fs::File, start: u64, len: u64) -> std::io::Result<bool> {
        crate::sys::try_lock_range(file, start, len)
    }
    /// Fault injection: the next `count` automatic compactions fail before
    /// they start (as they do with no file descriptor left).
    pub fn fail_next_compactions(store: &crate::Store, count: u32) {
        store.fail_next_compactions(count);
    }
    /// Automatic compactions that failed so far.
    pub fn failed_compactions(store: &crate::Store) -> u64 {
        store.failed_compactions()
    }
    /// Committers' waits for a group-commit sync that ran out their
    /// timeout well after the sync they waited for had ended, or with no
    /// sync running: wake-ups that went missing.
    pub fn missed_sync_wakeups(store: &crate::Store) -> u64 {
        store.missed_sync_wakeups()
    }
    /// Fault injection: the next `count` syncs of `kind` fail with EIO.
    pub fn fail_next_syncs(store: &crate::Store, kind: SyncFault, count: u32) {
        store.fail_next_syncs(kind, count);
    }
    /// The version the store directory's newest valid checkpoint names.
    pub fn checkpointed_version(dir: &std::path::Path) -> crate::Result<Option<u64>> {
        Ok(crate::meta::read_latest(&crate::files::StoreDir::open(dir)?)?.map(|c| c.version))
    }
}

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
