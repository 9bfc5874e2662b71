//! The writer: one per store, holding the exclusive `lock` file.
//!
//! Where each part lives:
//!
//! * [`recovery`]: opening a store, new or existing: the version to start
//!   from, journal replay, the checkpoint that makes it durable.
//! * [`commit`]: transactions and bulk loads turned into versions, under
//!   the writer mutex; [`tracker`] says which commits conflict.
//! * [`batch`]: a commit's ops planned (values stored, missing ancestors
//!   added, copies resolved) and applied to the head tree.
//! * [`publish`]: publication and durability: the one owner of the control
//!   word, the group-commit state and the poison state. Nothing is
//!   published after a failed durability step.
//! * [`checkpoint`]: arena sync, `meta` slot, journal truncation.
//! * [`compaction`]: copying what the retention policy keeps into a new
//!   generation while commits go on, then switching to it.
//! * [`generations`]: old generation files, freed when no reader pins them.
//! * [`inspect`]: `stat` and `verify`.
//! * [`scrub`]: the check of every node the versions at open reach, on a
//!   background thread after open, and its figures for compaction.
//!
//! Lock order: `compaction` → `state` → `open` and `state` →
//! [`publish::Publisher`]'s own lock; `state` → the scrub's locks. Nothing
//! that holds the publisher's or the scrub's locks takes another.
//!
//! The crash argument (sync commits, group commit, checkpoints,
//! compaction's switch, boot trust) is written once, in ARCHITECTURE.md.

mod batch;
mod checkpoint;
mod commit;
mod compaction;
mod generations;
mod idle;
mod inspect;
mod load;
mod publish;
mod recovery;
mod scrub;
mod tracker;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::arena::WriterArena;
use crate::journal::Journal;
use crate::locking::lock;
use crate::meta::Meta;
use crate::node::Commit;
use crate::options::Options;
use crate::readers::{ReaderInfo, ReaderTable};
use crate::snapshot::{ReaderLease, Snapshot};
use crate::stat::Stat;
use crate::txn::Transaction;

pub use compaction::CompactReport;
pub use publish::SyncFault;
pub use scrub::ScrubState;

use generations::Generations;
use publish::Publisher;
use tracker::{ChangeTracker, OpenTransactions};

/// What only the writer mutex may touch.
struct WriterState {
    arena: WriterArena,
    /// The newest version written (published once durable).
    head: Commit,
    journal: Option<Journal>,
    meta: Meta,
    tracker: ChangeTracker,
    /// Arena bytes in use right after the last compaction (or open: the
    /// arena's end until the scrub has measured them).
    live_bytes: u64,
    /// Whether `live_bytes` was measured (by the scrub or a compaction).
    live_bytes_known: bool,
    /// Whether the head may hold links (subtrees copied by reference): only
    /// then do commits look for links to split. True from open until the
    /// scrub has found whether the versions at open hold any.
    links: bool,
    /// Whether a commit since open copied by reference.
    links_added: bool,
    generations: Generations,
}

/// The writer handle of a store. `Sync`: share it between threads; each
/// thread may hold its own transactions.
///
/// Automatic compaction runs on a background thread of its own, started
/// when a commit finds it due; dropping the store waits for it, then writes
/// a checkpoint.
pub struct Store {
    shared: Arc<Shared>,
    idle: Arc<idle::Idle>,
}

/// The writer's state, shared with the background compaction thread.
pub(crate) struct Shared {
    /// This value's own `Arc`, for starting the compaction thread.
    me: std::sync::OnceLock<std::sync::Weak<Shared>>,
    dir: crate::files::StoreDir,
    options: Options,
    state: Mutex<WriterState>,
    publisher: Publisher,
    /// Notified (with `state`) when a compaction switches generation or a
    /// background compaction ends.
    compaction_progress: Condvar,
    open: OpenTransactions,
    compactor: compaction::Compactor,
    scrub: Arc<scrub::Scrub>,
    /// This process's own slot (another open of the table): it pins the
    /// generations the writer's snapshots read, and outlives the store for
    /// as long as one of them does.
    lease: Arc<ReaderLease>,
    /// The reader table, opened for scanning.
    table: ReaderTable,
    _lock: std::fs::File,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Store {
    /// Opens the store in `dir` as its single writer, with its recorded
    /// settings (unless `options.replace_settings`); with `options.create`,
    /// creates it if the directory holds none. Fails with
    /// [`crate::Error::NotFound`] if there is no store and `create` is not
    /// set, and with [`crate::Error::Locked`] if another writer holds it for
    /// longer than `options.lock_wait`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> crate::Result<Store> {
        Store::start(dir.as_ref(), options, recovery::Mode::Open)
    }

    /// Creates a new store in `dir` (created if missing) with the settings
    /// in `options`; fails with [`crate::Error::AlreadyExists`] if the
    /// directory holds one.
    pub fn create(dir: impl AsRef<Path>, options: Options) -> crate::Result<Store> {
        Store::start(dir.as_ref(), options, recovery::Mode::Create)
    }

    /// Opens an existing store with its recorded settings (the same as
    /// `Store::open(dir, Options::default())`).
    pub fn open_existing(dir: impl AsRef<Path>) -> crate::Result<Store> {
        Store::open(dir, Options::default())
    }

    fn start(dir: &Path, options: Options, mode: recovery::Mode) -> crate::Result<Store> {
        let shared = Arc::new(recovery::open(dir, options, mode)?);
        let _ = shared.me.set(Arc::downgrade(&shared));
        shared.scrub.start();
        let idle = idle::Idle::start(&shared);
        Ok(Store { shared, idle })
    }

    /// Where the scrub stands: the check of every node the versions found
    /// at open reach, run in the background after open. Damage it finds
    /// makes this writer refuse commits.
    pub fn scrub(&self) -> ScrubState {
        self.shared.scrub.state()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.shared.dir.path()
    }

    /// The options this writer runs with: the store's settings.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// A snapshot of the newest committed version. With durability `sync`,
    /// waits until that version is durable (other processes' readers only
    /// ever see durable versions; so does this).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// The newest committed version.
    pub fn version(&self) -> u64 {
        let st = lock(&self.shared.state);
        self.shared.visible_head(&st).version
    }

    /// A retained older version.
    pub fn snapshot_at(&self, version: u64) -> crate::Result<Snapshot> {
        self.shared.snapshot().at_version(version)
    }

    /// Begins a transaction at the newest committed version.
    pub fn begin(&self) -> Transaction<'_> {
        self.shared.begin()
    }

    /// Writes many values as one new version: the fast path for loading.
    /// Missing ancestors are created with empty values; a later duplicate
    /// path wins. Loading nothing makes no new version.
    pub fn bulk_load<P: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (P, V)>,
    ) -> crate::Result<u64> {
        self.shared.bulk_load(items)
    }

    /// Writes a checkpoint: everything committed so far survives a power loss
    /// without the journal.
    pub fn checkpoint(&self) -> crate::Result<()> {
        let mut st = lock(&self.shared.state);
        self.shared.checkpoint_locked(&mut st)
    }

    /// Copies the retained versions into a new arena generation and switches
    /// to it. Commits go on while the bulk is copied; they stop only for the
    /// catch-up with versions committed meanwhile and the switch. Snapshots
    /// of older generations stay valid; an old file is deleted once no live
    /// reader pins it.
    pub fn compact(&self) -> crate::Result<CompactReport> {
        self.shared.compact()
    }

    /// Deletes old generation files whose readers have gone (also done
    /// automatically every 1024 commits and at each compaction); returns the
    /// generations still pinned.
    pub fn reclaim(&self) -> Vec<u64> {
        self.shared.reclaim()
    }

    /// Live readers of this store (not counting this process's own slot,
    /// which pins what the writer's snapshots read).
    pub fn readers(&self) -> crate::Result<Vec<ReaderInfo>> {
        self.shared.readers()
    }

    /// Figures about the store.
    pub fn stat(&self) -> crate::Result<Stat> {
        self.shared.stat()
    }

    /// Checks the checksum of every node the retained versions reach.
    pub fn verify(&self) -> crate::Result<()> {
        self.shared.verify()
    }

    /// Waits for a background compaction, if one is running.
    pub fn wait_for_compaction(&self) {
        self.shared.compactor.join();
    }

    /// Test hook: see `internals::fail_next_compactions`.
    pub(crate) fn fail_next_compactions(&self, count: u32) {
        self.shared.compactor.fail_next(count);
    }

    /// See `internals::failed_compactions`.
    pub(crate) fn failed_compactions(&self) -> u64 {
        self.shared.compactor.failures()
    }

    /// Test hook: see `internals::abort_in_next_compaction_after_switch`.
    pub(crate) fn abort_in_next_compaction_after_switch(&self) {
        self.shared.compactor.abort_after_next_switch();
    }

    /// Test hook: see `internals::before_next_compaction_switch`.
    pub(crate) fn before_next_compaction_switch(&self, hook: Box<dyn FnOnce() + Send>) {
        self.shared.compactor.before_next_switch(hook);
    }

    /// Test hook: see `internals::before_next_compaction_checkpoint`.
    pub(crate) fn before_next_compaction_checkpoint(&self, hook: Box<dyn FnOnce() + Send>) {
        self.shared.compactor.before_next_checkpoint(hook);
    }

    /// Test hook: see `internals::fail_next_syncs`.
    pub(crate) fn fail_next_syncs(&self, kind: SyncFault, count: u32) {
        self.shared.publisher.inject(kind, count);
    }

    /// Test hook: see `internals::missed_sync_wakeups`.
    pub(crate) fn missed_sync_wakeups(&self) -> u64 {
        self.shared.publisher.missed_wakeups()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The idle and compaction threads hold the other references; once
        // they are done, dropping `shared` checkpoints (see `Shared`'s Drop).
        self.idle.stop();
        self.shared.compactor.join();
        self.shared.scrub.stop();
    }
}

impl Shared {
    /// A snapshot of the newest committed version; with durability `sync`,
    /// once it is durable.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let snapshot = {
            let st = lock(&self.state);
            Snapshot::from_parts(st.arena.mapped.clone(), st.head, &self.lease)
        };
        match self.publisher.wait_durable(snapshot.version()) {
            Ok(()) => snapshot,
            // Poisoned: nothing after the failed step is shown, here either.
            Err(_) => {
                let published = self.publisher.published();
                debug_assert_eq!(published.generation, snapshot.generation());
                snapshot.sibling(published.offset).unwrap_or(snapshot)
            }
        }
    }

    /// The head this process shows (to new transactions, `version`,
    /// `stat`): the newest written version, or, once the store is poisoned,
    /// the published one: nothing after a failed durability step is shown.
    fn visible_head(&self, st: &WriterState) -> Commit {
        if self.publisher.check().is_ok() {
            return st.head;
        }
        let published = self.publisher.published();
        match crate::node::parse_commit(st.arena.region(), published.offset) {
            Ok(commit) if published.generation == st.arena.generation() => commit,
            _ => st.head,
        }
    }

    fn readers(&self) -> crate::Result<Vec<ReaderInfo>> {
        Ok(self.table.live()?.into_iter().filter(|r| Some(r.slot) != self.lease.slot).collect())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if self.publisher.check().is_ok() {
            if let Err(e) = self.checkpoint_locked(&mut st) {
                tracing::warn!(error = %e, "checkpoint on close failed");
            }
        }
    }
}
