//! The writer: one per store, holding the exclusive `lock` file.
//!
//! Commit path: under the writer mutex, check the transaction's read and
//! write sets against the per-path change tracker, apply its writes to the
//! head tree by path copying (new nodes appended to the arena), append the
//! commit record, and (durability `sync`) append the journal record. Then:
//!
//! * `Durability::None`: publish the version at once.
//! * `Durability::Sync`: leave the mutex and wait until some committer (the
//!   leader) has run one `fdatasync` of the journal covering this record;
//!   the leader then publishes the newest durable version. Concurrent
//!   commits share that one sync (group commit). A version is published only
//!   after it is durable, so no reader ever sees a version a crash could
//!   take back.
//!
//! Checkpoints (fdatasync the arena, write `meta`, truncate the journal)
//! bound the journal. Compaction copies what the retained versions reach
//! into a new generation without holding the writer lock (those bytes are
//! immutable), then in unlocked rounds the versions committed meanwhile,
//! syncs the new file, and only then, locked, copies the few versions left
//! and publishes the new generation. Until the checkpoint that follows
//! (its bulk already synced), the old checkpoint, the old generation's file
//! and the untruncated journal still recover every published version; a
//! writer that finds a published version in a generation the checkpoint
//! does not name checkpoints it before anything else. Old generation files
//! are freed once no live reader pins them: the newest is kept as the
//! spare the next compaction rewrites (its pages are allocated and cached),
//! the others are deleted off the commit path. One
//! compaction runs at a time; automatic ones run on a background thread
//! started by the commit that made them due (after that commit succeeded);
//! a commit waits for it only when the arena has grown to twice the
//! compaction threshold, so space stays bounded even if commits outrun it.
//!
//! Recovery on open starts from the control file's published version when
//! it was written during this boot (a process crash leaves the page cache,
//! and so the arena, intact), else from the `meta` checkpoint; verifies the
//! checksums of every node that version reaches; then replays the journal
//! records after it. Appends resume above every byte a live reader could be
//! reading.
//!
//! Crash-safety argument, step by step (durability `sync`):
//! 1. nodes and commit record written to the arena (page cache only);
//! 2. journal record written, then `fdatasync(journal)`: from here on the
//!    commit survives a kill or a power cut (replayed from the journal);
//! 3. the version is published, then `commit` returns;
//! 4. checkpoint: `fdatasync(arena)`, `meta` slot written + synced, and only
//!    then the journal truncated. A crash between any two steps leaves either
//!    the old checkpoint plus a journal containing every later record, or
//!    the new checkpoint plus records it already covers (skipped by version).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::arena::{self, MappedGeneration, WriterArena, HEADER_PAGE};
use crate::build::{self, ApplyReport, NodeSink, Op};
use crate::control::{self, Control};
use crate::error::{Error, IoContext, Result};
use crate::journal::{self, Journal, JournalOp};
use crate::meta::Meta;
use crate::node::{self, Commit, KIND_BLOB, KIND_CHANGES, KIND_INTERNAL, KIND_LEAF};
use crate::path;
use crate::readers::{ReaderInfo, ReaderTable};
use crate::retention::{self, RetainTier};
use crate::snapshot::{ReaderLease, Snapshot};
use crate::sys;
use crate::tree;
use crate::txn::{Transaction, TxnSets};

/// When a commit counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No journal: commits are published at once and survive a crash of the
    /// writer process (the page cache keeps them), but only checkpoints
    /// (taken on close, on compaction, or by [`Store::checkpoint`]) survive a
    /// power loss. For caches and tmpfs.
    None,
    /// A commit returns only after its journal record is on disk.
    Sync,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the store if the directory holds none. Default `true`.
    pub create: bool,
    /// Default [`Durability::Sync`].
    pub durability: Durability,
    /// Versions kept readable besides the newest (at least this many). Default 16.
    pub retain_versions: u32,
    /// Older versions kept by compaction, thinned by age (see
    /// [`crate::retention`]): e.g. one a minute for an hour and one an hour
    /// for a day. Each kept version keeps the nodes it reaches, so space
    /// grows with how much the data changed between them. Default none.
    pub retain_tiers: Vec<RetainTier>,
    /// Largest value accepted. Default 1 MiB; at most 1 GiB.
    pub max_value_bytes: usize,
    /// Address space reserved per arena generation; the arena cannot grow
    /// beyond it (compaction or a reopen with a larger value moves to a new
    /// generation). Default 64 GiB; costs address space only.
    pub map_reserve_bytes: u64,
    /// Checkpoint when the journal exceeds this. Default 64 MiB.
    pub checkpoint_journal_bytes: u64,
    /// Compact automatically when the arena exceeds both `compact_min_bytes`
    /// and `compact_factor` times the live bytes measured at the last
    /// compaction. Default `true`.
    pub auto_compact: bool,
    /// Default 64 MiB.
    pub compact_min_bytes: u64,
    /// Default 2.
    pub compact_factor: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: true,
            durability: Durability::Sync,
            retain_versions: 16,
            retain_tiers: Vec::new(),
            max_value_bytes: 1 << 20,
            map_reserve_bytes: 64 << 30,
            checkpoint_journal_bytes: 64 << 20,
            auto_compact: true,
            compact_min_bytes: 64 << 20,
            compact_factor: 2,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidOption { name, reason });
        if self.retain_versions == 0 {
            return bad("retain_versions", "must be at least 1".into());
        }
        retention::validate(&self.retain_tiers)?;
        if self.max_value_bytes > 1 << 30 {
            return bad("max_value_bytes", "must be at most 1 GiB".into());
        }
        if self.map_reserve_bytes < 1 << 20 || self.map_reserve_bytes > 1 << 43 {
            return bad("map_reserve_bytes", "must be between 1 MiB and 8 TiB".into());
        }
        if self.map_reserve_bytes < self.max_value_bytes as u64 * 4 {
            return bad("map_reserve_bytes", "must hold at least four maximum-size values".into());
        }
        if self.compact_factor < 2 {
            return bad("compact_factor", "must be at least 2".into());
        }
        Ok(())
    }
}

/// What `stat` reports.
#[derive(Clone, Debug)]
pub struct Stat {
    pub version: u64,
    pub generation: u64,
    pub key_count: u64,
    /// Bytes of the current generation in use (header included).
    pub arena_bytes: u64,
    /// Bytes the retained versions reach (shared nodes counted once).
    pub live_bytes: u64,
    /// Retained versions, newest first.
    pub retained_versions: Vec<u64>,
    pub journal_bytes: u64,
    pub readers: Vec<ReaderInfo>,
    /// Older generation files still on disk (pinned by live readers).
    pub old_generations: Vec<u64>,
    /// A retired generation's file no reader needs any more, kept so the
    /// next compaction writes into its pages instead of fresh ones.
    pub spare_generation: Option<u64>,
}

/// What a compaction did.
#[derive(Clone, Debug)]
pub struct CompactReport {
    pub from_generation: u64,
    pub to_generation: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub versions_kept: usize,
    /// Unlocked rounds that copied versions committed while it ran.
    pub precopy_rounds: usize,
    /// Versions committed meanwhile that it copied under the writer lock.
    pub caught_up: usize,
}

/// Which paths changed at which version, for conflict detection. Only kept
/// while transactions are open; entries at or below the oldest open base
/// version can never cause a conflict and are pruned.
#[derive(Default)]
struct ChangeTracker {
    /// Node created, written or deleted.
    nodes: HashMap<Vec<u8>, u64>,
    /// A child created or removed.
    children: HashMap<Vec<u8>, u64>,
    /// Subtree deleted.
    subtrees: HashMap<Vec<u8>, u64>,
    prune_at: usize,
}

impl ChangeTracker {
    fn record(&mut self, version: u64, ops: &[Op], report: &ApplyReport) {
        for op in ops {
            self.nodes.insert(op.key().to_vec(), version);
            if let Op::DeleteTree { key } | Op::Set { key, link: Some(_), .. } = op {
                self.subtrees.insert(key.clone(), version);
                if !key.is_empty() {
                    self.children.insert(path::parent(key).to_vec(), version);
                }
            }
        }
        for key in report.created.iter().chain(&report.removed) {
            self.children.insert(path::parent(key).to_vec(), version);
        }
    }

    fn len(&self) -> usize {
        self.nodes.len() + self.children.len() + self.subtrees.len()
    }

    fn prune(&mut self, oldest_base: Option<u64>) {
        match oldest_base {
            None => {
                self.nodes.clear();
                self.children.clear();
                self.subtrees.clear();
            }
            Some(base) => {
                self.nodes.retain(|_, v| *v > base);
                self.children.retain(|_, v| *v > base);
                self.subtrees.retain(|_, v| *v > base);
            }
        }
        self.prune_at = self.len() * 2 + 4096;
    }

    fn subtree_deleted_after(&self, key: &[u8], base: u64) -> bool {
        let after = |k: &[u8]| self.subtrees.get(k).is_some_and(|&v| v > base);
        after(b"") || after(key) || path::ancestors(key).any(after)
    }

    /// The first path of the transaction that changed after its base.
    fn conflict(&self, sets: &TxnSets) -> Option<Vec<u8>> {
        let base = sets.base_version;
        let node_changed =
            |k: &[u8]| self.nodes.get(k).is_some_and(|&v| v > base) || self.subtree_deleted_after(k, base);
        if let Some(k) = sets.reads.iter().find(|k| node_changed(k)) {
            return Some(k.clone());
        }
        if let Some(k) = sets.writes.keys().find(|k| node_changed(k)) {
            return Some(k.clone());
        }
        // A subtree read whole: anything below it changed.
        let changed_below = |root: &[u8]| {
            let below = |(k, &v): (&Vec<u8>, &u64)| v > base && path::in_subtree(k, root);
            self.nodes.iter().any(below) || self.subtrees.iter().any(below)
        };
        if let Some(k) = sets.trees.iter().find(|k| node_changed(k) || changed_below(k)) {
            return Some(k.clone());
        }
        sets.lists
            .iter()
            .find(|k| node_changed(k) || self.children.get(k.as_slice()).is_some_and(|&v| v > base))
            .cloned()
    }
}

struct WriterState {
    arena: WriterArena,
    head: Commit,
    journal: Option<Journal>,
    meta: Meta,
    tracker: ChangeTracker,
    /// Arena bytes in use right after the last compaction (or open).
    live_bytes: u64,
    /// Whether the head may hold links (subtrees copied by reference): only
    /// then do commits look for links to split.
    links: bool,
    /// Older generation files that readers may still need.
    old_generations: Vec<OldGeneration>,
    /// A retired generation file nothing reads any more: the next compaction
    /// recycles it (see [`Shared::reclaim_generations`]).
    spare: Option<u64>,
    /// Freed generation files to delete once the state lock is released
    /// (unlinking a large file takes milliseconds).
    doomed: Vec<u64>,
    commits_since_reclaim: u64,
    /// Set when a durability step failed; the store refuses further commits.
    failed: Option<String>,
}

struct OldGeneration {
    generation: u64,
    /// The writer process's own mapping, alive while one of its snapshots
    /// or transactions still reads the generation (empty if never mapped).
    mapped: std::sync::Weak<MappedGeneration>,
    /// The checkpoint may still name it (a compaction switched away from it
    /// and has not yet written the checkpoint naming the new one): never freed.
    named_by_checkpoint: bool,
}

#[derive(Default)]
struct SyncState {
    /// Newest version whose journal record has been written: (version, generation, commit offset).
    written: (u64, u64, u64),
    published: u64,
    leader: bool,
    failed: Option<String>,
}

/// The writer handle of a store. `Sync`: share it between threads; each
/// thread may hold its own transactions.
///
/// Automatic compaction runs on a background thread of its own, started
/// when a commit finds it due; dropping the store waits for it, then writes
/// a checkpoint.
pub struct Store {
    shared: Arc<Shared>,
}

/// The writer's state, shared with the background compaction thread.
pub(crate) struct Shared {
    /// This value's own `Arc`, for starting the compaction thread.
    me: std::sync::OnceLock<std::sync::Weak<Shared>>,
    /// The running (or finished, not yet joined) compaction thread.
    compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
    compaction_scheduled: std::sync::atomic::AtomicBool,
    dir: PathBuf,
    options: Options,
    state: Mutex<WriterState>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Notified (with `state`) when a compaction switches generation or a
    /// background compaction ends.
    compaction_progress: Condvar,
    /// Open transactions by base version.
    open: Mutex<BTreeMap<u64, usize>>,
    /// Held by the one compaction that may run at a time.
    compaction: Mutex<()>,
    journal_file: Option<File>,
    control: Control,
    /// The reader table, opened for scanning.
    table: ReaderTable,
    /// Test hook: abort the process in the next compaction, right after it
    /// publishes the new generation and before its checkpoint.
    pub(crate) abort_after_switch: std::sync::atomic::AtomicBool,
    /// Test hook: run by the next compaction between its unlocked sync and
    /// its checkpoint.
    #[allow(clippy::type_complexity)]
    pub(crate) before_compaction_checkpoint: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// This process's own slot (another open of the table): it pins the
    /// generations the writer's snapshots read, and outlives the store for
    /// as long as one of them does.
    lease: Arc<ReaderLease>,
    _lock: File,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state we still read consistently
    // (every mutation is completed before anything is published).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const LOCK_FILE: &str = "lock";
/// Present while a store is being created; a store holding it is created anew.
const INIT_MARKER: &str = "initializing";
/// Most unlocked catch-up rounds of a compaction before it takes the lock.
const PRECOPY_ROUNDS: usize = 8;
/// A compaction takes the lock for its catch-up once this few versions are left.
const PRECOPY_ENOUGH: u64 = 64;
/// Compaction writes its copy in chunks of this many bytes.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Old offset → new offset of the blobs a compaction has copied. Offsets are
/// unique and 8-aligned, so a cheap multiplicative hash spreads them well;
/// SipHash's DoS resistance buys nothing.
type CopyMemo = HashMap<u64, u64, rustc_hash::FxBuildHasher>;

fn take_writer_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).at(&path)?;
    if !sys::try_lock_range(&file, 0, 1).at(&path)? {
        let pid = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        return Err(Error::Locked { dir: dir.to_path_buf(), pid });
    }
    file.set_len(0).at(&path)?;
    use std::os::unix::fs::FileExt;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0).at(&path)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn list_generations(dir: &Path) -> Result<Vec<u64>> {
    let mut gens = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if let Some(g) = entry.file_name().to_str().and_then(arena::parse_file_name) {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Deletes the files [`Shared::reclaim_generations`] freed; called without
/// the state lock. Nothing reads them, and generation numbers only grow, so
/// no new file can take their names meanwhile. A file left behind (a failed
/// or unfinished deletion) is found again as an old generation at the next open.
fn delete_generations(dir: &Path, doomed: Vec<u64>) {
    for g in doomed {
        match std::fs::remove_file(dir.join(arena::file_name(g))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(generation = g, error = %e, "cannot delete old generation"),
        }
    }
}

/// The newest `count` versions after version `after` up to `head`, oldest first.
fn versions_after(region: &[u8], head: Commit, after: u64, count: usize, path: &Path) -> Result<Vec<Commit>> {
    let mut newer = Vec::new();
    let mut at = head;
    while at.version > after && newer.len() < count {
        newer.push(at);
        if at.prev == 0 {
            break;
        }
        at = node::parse_commit(region, at.prev).map_err(|d| d.into_error(path))?;
    }
    newer.reverse();
    Ok(newer)
}

/// The newest `count` versions of the commit chain from `head`, newest first.
fn retained_chain(region: &[u8], head: Commit, count: usize, path: &Path) -> Result<Vec<Commit>> {
    let mut chain = vec![head];
    while chain.len() < count {
        let last = chain[chain.len() - 1];
        if last.prev == 0 {
            break;
        }
        chain.push(node::parse_commit(region, last.prev).map_err(|d| d.into_error(path))?);
    }
    Ok(chain)
}

/// Empties the journal after a checkpoint naming the head. Records at or
/// below the checkpoint are skipped on replay, so a journal that failed to
/// shrink is longer, not wrong.
fn truncate_journal(st: &mut WriterState) {
    if let Some(journal) = st.journal.as_mut() {
        if let Err(e) = journal.truncate() {
            tracing::warn!(error = %e, "journal not truncated after a checkpoint");
        }
    }
}

/// Converts journal ops (sorted by key; for one key a subtree deletion
/// first) into builder ops: values stored, missing ancestors of written
/// nodes created with empty values, still sorted. `ancestors_known`: the
/// batch already holds every missing ancestor (a transaction whose base is
/// the head creates them itself), so none is looked up.
fn prepare_ops(arena: &WriterArena, head_root: u64, jops: Vec<JournalOp>, ancestors_known: bool) -> Result<Vec<Op>> {
    debug_assert!(jops.windows(2).all(|w| w[0].key() <= w[1].key()));
    let puts_in_batch = |a: &[u8]| {
        let start = jops.partition_point(|op| op.key() < a);
        jops[start..]
            .iter()
            .take_while(|op| op.key() == a)
            .any(|op| matches!(op, JournalOp::Put { .. } | JournalOp::Copy { .. } | JournalOp::CopyTree { .. }))
    };
    let cleared: Vec<&[u8]> = jops
        .iter()
        .filter(|op| matches!(op, JournalOp::DeleteTree { .. } | JournalOp::CopyTree { .. }))
        .map(JournalOp::key)
        .collect();
    // Below a subtree this batch copies, what exists is the copy's business
    // (a transaction creates what is missing there itself).
    let copied: Vec<&[u8]> =
        jops.iter().filter(|op| matches!(op, JournalOp::CopyTree { .. })).map(JournalOp::key).collect();
    let below_copy = |a: &[u8]| path::ancestors(a).any(|aa| copied.binary_search(&aa).is_ok());
    let is_cleared = |a: &[u8]| {
        !cleared.is_empty()
            && (cleared.binary_search(&&b""[..]).is_ok()
                || cleared.binary_search(&a).is_ok()
                || path::ancestors(a).any(|aa| cleared.binary_search(&aa).is_ok()))
    };
    let region = arena.region();
    let damaged = |d: node::Damage| d.into_error(&arena.mapped.path);
    let mut ancestors: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    // Sorted batches put siblings next to each other: remember the last
    // parent known to exist after the batch.
    let mut parent_known: Vec<u8> = Vec::new();
    for op in jops.iter().filter(|_| !ancestors_known) {
        let (JournalOp::Put { key, .. } | JournalOp::Copy { key, .. } | JournalOp::CopyTree { key, .. }) = op else {
            continue;
        };
        let parent = path::parent(key);
        if parent.is_empty() || parent == parent_known.as_slice() {
            continue;
        }
        // Nearest first: once one ancestor exists (or is written by the
        // batch), all of its own ancestors do too.
        let mut nearest_first: Vec<&[u8]> = path::ancestors(key).collect();
        nearest_first.reverse();
        for a in nearest_first {
            if ancestors.contains_key(a) || puts_in_batch(a) || copied.binary_search(&a).is_ok() || below_copy(a) {
                break;
            }
            if !is_cleared(a) && tree::find(region, head_root, a).map_err(damaged)?.is_some() {
                break;
            }
            ancestors.insert(a.to_vec(), ());
        }
        parent_known.clear();
        parent_known.extend_from_slice(parent);
    }
    // Merge the batch with the ancestors to create, keeping key order.
    let mut ops: Vec<Op> = Vec::with_capacity(jops.len() + ancestors.len());
    let mut extra = ancestors.into_keys().peekable();
    for op in jops {
        while let Some(a) = extra.next_if(|a| a.as_slice() < op.key()) {
            ops.push(Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) });
        }
        let op = match op {
            JournalOp::Put { key, value } => {
                let value = if value.len() <= node::INLINE_VALUE_MAX {
                    build::StoredValue::Inline(value)
                } else {
                    build::store_value(arena, &value)?
                };
                Op::Put { key, value }
            }
            JournalOp::Copy { key, from } => {
                // The source as of the version before this one: blob values
                // are shared by offset, inline ones (256 bytes at most) copied.
                let entry = tree::find(region, head_root, &from).map_err(damaged)?;
                let value = match entry.map(|e| e.value) {
                    Some(node::ValueRepr::Inline(bytes)) => build::StoredValue::Inline(bytes.to_vec()),
                    Some(node::ValueRepr::Blob { offset, len }) => build::StoredValue::Blob { offset, len },
                    None => return Err(Error::NoSuchPath { path: path::path_of(&from) }),
                };
                Op::Put { key, value }
            }
            JournalOp::CopyTree { key, from } => {
                // The subtree as of the version before this one: the copy
                // links to where it is stored (through any link above or at
                // it), with the node's own value.
                let value = match tree::locate(region, head_root, &from).map_err(damaged)? {
                    Some((_, entry)) => build::StoredValue::of(entry.value),
                    None => return Err(Error::NoSuchPath { path: path::path_of(&from) }),
                };
                let (root, src) = tree::resolve(region, head_root, &from, true).map_err(damaged)?;
                let link = build::LinkTarget::below(region, root, src.into_owned()).map_err(damaged)?;
                let longest = key.len() + link.as_ref().map_or(0, |l| l.longest as usize);
                if longest > path::MAX_KEY_BYTES {
                    return Err(Error::CopyTooDeep {
                        from: path::path_of(&from),
                        to: path::path_of(&key),
                        longest: longest + 1,
                    });
                }
                ops.push(Op::DeleteTree { key: key.clone() });
                Op::Set { key, value, link, structural: false }
            }
            JournalOp::Delete { key } => Op::Delete { key },
            JournalOp::DeleteTree { key } => Op::DeleteTree { key },
        };
        ops.push(op);
        // An ancestor re-created under a subtree deletion of the same key comes after it.
        if let Some(Op::DeleteTree { key } | Op::Set { key, link: Some(_), .. }) = ops.last() {
            if let Some(a) = extra.next_if(|a| a == key) {
                ops.push(Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) });
            }
        }
    }
    ops.extend(extra.map(|a| Op::Put { key: a, value: build::StoredValue::Inline(Vec::new()) }));
    Ok(ops)
}

impl Store {
    /// Opens (or creates) the store in `dir` as its single writer.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let shared = Arc::new(Shared::open(dir.as_ref(), options)?);
        let _ = shared.me.set(Arc::downgrade(&shared));
        Ok(Store { shared })
    }

    /// Opens an existing store with the options it was last opened with
    /// (recorded in its `settings` file).
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref();
        Store::open(dir, crate::settings::load(dir)?)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

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
        self.shared.version()
    }

    /// A retained older version.
    pub fn snapshot_at(&self, version: u64) -> Result<Snapshot> {
        self.shared.snapshot().at_version(version)
    }

    /// Begins a transaction at the newest committed version.
    pub fn begin(&self) -> Transaction<'_> {
        self.shared.begin()
    }

    /// Writes many values as one new version: the fast path for loading.
    /// Missing ancestors are created with empty values; a later duplicate
    /// path wins. Loading nothing makes no new version.
    pub fn bulk_load<P: AsRef<str>, V: AsRef<[u8]>>(&self, items: impl IntoIterator<Item = (P, V)>) -> Result<u64> {
        self.shared.bulk_load(items)
    }

    /// Writes a checkpoint: everything committed so far survives a power loss
    /// without the journal.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.checkpoint()
    }

    /// Copies the retained versions into a new arena generation and switches
    /// to it. Commits go on while the bulk is copied; they stop only for the
    /// catch-up with versions committed meanwhile and the switch. Snapshots
    /// of older generations stay valid; an old file is deleted once no live
    /// reader pins it.
    pub fn compact(&self) -> Result<CompactReport> {
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
    pub fn readers(&self) -> Result<Vec<ReaderInfo>> {
        self.shared.readers()
    }

    pub(crate) fn abort_in_next_compaction_after_switch(&self) {
        self.shared.abort_after_switch.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn before_next_compaction_checkpoint(&self, hook: Box<dyn FnOnce() + Send>) {
        *lock(&self.shared.before_compaction_checkpoint) = Some(hook);
    }

    /// Figures about the store.
    pub fn stat(&self) -> Result<Stat> {
        self.shared.stat()
    }

    /// Checks the checksum of every node the retained versions reach.
    pub fn verify(&self) -> Result<()> {
        self.shared.verify()
    }

    /// Waits for a background compaction, if one is running.
    pub fn wait_for_compaction(&self) {
        self.shared.join_compactor();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The compaction thread holds the other reference; once it is done,
        // dropping `shared` checkpoints (see `Shared`'s Drop).
        self.shared.join_compactor();
    }
}

impl Shared {
    fn open(dir: &Path, options: Options) -> Result<Shared> {
        options.validate()?;
        let dir = dir.to_path_buf();
        let initializing = dir.join(INIT_MARKER);
        let exists = dir.join(crate::meta::FILE_NAME).exists() && !initializing.exists();
        if !exists && !initializing.exists() && dir.exists() && !list_generations(&dir)?.is_empty() {
            // Arena files without a checkpoint and without the creation marker:
            // never start afresh over data.
            return Err(Error::Corrupt {
                file: dir.join(crate::meta::FILE_NAME),
                offset: 0,
                detail: "the checkpoint file is missing but arena files exist".into(),
            });
        }
        if !exists && !options.create {
            return Err(Error::NotFound(dir));
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        // Absolute from here on: file names and the store's identity must not
        // depend on the working directory of the moment.
        let dir = std::fs::canonicalize(&dir).at(&dir)?;
        let lock_file = take_writer_lock(&dir)?;
        crate::settings::save(&dir, &options)?;
        let control = Control::open_writer(&dir)?;
        let table = ReaderTable::create(&dir)?;
        sync_dir(&dir)?;
        let reserve = options.map_reserve_bytes.next_multiple_of(sys::page_size());

        let (arena, head, published_before, reach) = if exists {
            let (meta, meta_state) = Meta::open(&dir, false)?;
            if meta_state.latest.is_none() && meta_state.damaged_slots > 0 && control.current().is_none() {
                return Err(Error::Corrupt {
                    file: meta.path.clone(),
                    offset: 0,
                    detail: "no valid checkpoint slot".into(),
                });
            }
            Self::recover_head(&dir, &control, &meta, &list_generations(&dir)?)?
        } else {
            // A new store, or one whose creation was cut short (the marker is
            // removed only once the first checkpoint is durable, before any
            // commit can exist): start from nothing.
            std::fs::File::create(&initializing).at(&initializing)?;
            for g in list_generations(&dir)? {
                std::fs::remove_file(dir.join(arena::file_name(g))).at(&dir)?;
            }
            let _ = std::fs::remove_file(dir.join(journal::FILE_NAME));
            let _ = std::fs::remove_file(dir.join(crate::meta::FILE_NAME));
            sync_dir(&dir)?;
            let arena = WriterArena::create(&dir, 1, reserve)?;
            let offset = arena.end();
            let time_ns = now_ns();
            let generation = arena.generation();
            arena.append(&node::build_commit(&Commit { offset, time_ns, generation, ..Commit::default() }))?;
            arena.flush()?;
            let head = node::parse_commit(arena.region(), offset).map_err(|d| arena.damaged(d))?;
            arena.sync()?;
            let (mut meta, _) = Meta::open(&dir, true)?;
            meta.write(1, offset, 0, head.end)?;
            sync_dir(&dir)?;
            std::fs::remove_file(&initializing).at(&initializing)?;
            sync_dir(&dir)?;
            let live = tree::Reach { bytes: arena.end(), links: false };
            (arena, head, None, live)
        };
        let (meta, _) = Meta::open(&dir, false)?;

        let journal_needed = options.durability == Durability::Sync || dir.join(journal::FILE_NAME).exists();
        let (journal, replay) = if journal_needed {
            let (j, r) = Journal::open(&dir)?;
            sync_dir(&dir)?;
            if r.discarded_bytes > 0 {
                tracing::warn!(bytes = r.discarded_bytes, "discarded a torn journal tail");
            }
            (Some(j), r.records)
        } else {
            (None, Vec::new())
        };
        let journal_file = match &journal {
            Some(j) => Some(j.sync_handle()?),
            None => None,
        };
        let generations = list_generations(&dir)?;
        let current_generation = arena.generation();
        let lease = ReaderLease::claim(&dir)?;
        lease.table.pin(lease.slot, current_generation);
        let old_generations = generations
            .iter()
            .filter(|&&g| g < current_generation)
            .map(|&g| OldGeneration { generation: g, mapped: std::sync::Weak::new(), named_by_checkpoint: false })
            .collect();
        // Generations above the current one come from an interrupted compaction
        // that never published (recovery picks the newest named version).
        for g in generations.iter().copied().filter(|&g| g > current_generation) {
            let _ = std::fs::remove_file(dir.join(arena::file_name(g)));
        }
        let store = Shared {
            me: std::sync::OnceLock::new(),
            compactor: Mutex::new(None),
            compaction_scheduled: std::sync::atomic::AtomicBool::new(false),
            dir,
            options,
            state: Mutex::new(WriterState {
                arena,
                head,
                journal,
                meta,
                tracker: ChangeTracker::default(),
                live_bytes: reach.bytes,
                links: reach.links,
                old_generations,
                spare: None,
                doomed: Vec::new(),
                commits_since_reclaim: 0,
                // Until the open completes, nothing (not even Drop) may checkpoint.
                failed: Some("the store did not finish opening".into()),
            }),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            compaction_progress: Condvar::new(),
            open: Mutex::new(BTreeMap::new()),
            compaction: Mutex::new(()),
            journal_file,
            control,
            table,
            abort_after_switch: std::sync::atomic::AtomicBool::new(false),
            before_compaction_checkpoint: Mutex::new(None),
            lease,
            _lock: lock_file,
        };
        {
            let mut guard = lock(&store.state);
            let st = &mut *guard;
            let mut replayed = 0;
            for record in replay {
                if record.version <= st.head.version {
                    continue;
                }
                if record.version != st.head.version + 1 {
                    return Err(Error::Corrupt {
                        file: store.dir.join(journal::FILE_NAME),
                        offset: 0,
                        detail: format!(
                            "journal continues at version {} after version {}",
                            record.version, st.head.version
                        ),
                    });
                }
                let ops = prepare_ops(&st.arena, st.head.root, record.ops, false)?;
                st.links |= ops.iter().any(Op::is_copy);
                let links = st.links;
                st.head =
                    Self::apply_ops(&st.arena, st.head, &ops, record.time_ns, links, &mut ApplyReport::default())?;
                replayed += 1;
            }
            // A published version found in a newer generation than the
            // checkpoint names (a compaction switched, then the writer died
            // before its checkpoint) is checkpointed before the older
            // generation can be freed.
            let checkpoint_elsewhere = st.meta.latest().is_none_or(|c| c.generation != st.arena.generation());
            if replayed > 0 || checkpoint_elsewhere {
                tracing::info!(replayed, version = st.head.version, "recovered version checkpointed");
                // Durable before anyone can see it.
                st.arena.sync()?;
                st.meta.write(st.arena.generation(), st.head.offset, st.head.version, st.head.end)?;
                if let Some(journal) = st.journal.as_mut() {
                    journal.truncate()?;
                }
            }
            let head = st.head;
            let generation = st.arena.generation();
            if published_before.is_some_and(|v| v > head.version) {
                return Err(Error::Corrupt {
                    file: store.control.path.clone(),
                    offset: 0,
                    detail: "recovered an older version than was published".into(),
                });
            }
            let pid = std::process::id();
            store.control.claim(generation, head.offset, pid, sys::process_start_time(pid).unwrap_or(0));
            store.control.wake_sleepers(store.table.sleepers());
            let mut sync = lock(&store.sync);
            sync.published = head.version;
            sync.written = (head.version, generation, head.offset);
            drop(sync);
            store.reclaim_generations(st);
            st.failed = None;
        }
        Ok(store)
    }

    /// Picks the newest trustworthy version to start from (see the module
    /// docs), verifies every node it and the versions before it reach, and
    /// returns the arena positioned above every byte a live reader may read,
    /// plus the version that was published, if it could be trusted.
    fn recover_head(
        dir: &Path,
        control: &Control,
        meta: &Meta,
        generations: &[u64],
    ) -> Result<(WriterArena, Commit, Option<u64>, tree::Reach)> {
        // Opens `generation` positioned at `end`, verifies the version at
        // `offset` and those before it, and measures the bytes they reach.
        let candidate = |generation: u64, offset: u64, end: u64| -> Result<(WriterArena, Commit, tree::Reach)> {
            let arena = WriterArena::open(dir, generation, HEADER_PAGE)?;
            if end > arena.file_len() {
                return Err(arena.mapped.corrupt(end, "arena shorter than the version it holds"));
            }
            let arena = WriterArena::open(dir, generation, end)?;
            let commit = node::parse_commit(arena.region(), offset).map_err(|d| arena.damaged(d))?;
            if commit.generation != generation {
                return Err(arena.mapped.corrupt(offset, "commit record written for another generation"));
            }
            let chain = retained_chain(arena.region(), commit, usize::MAX, &arena.mapped.path)?;
            let live = walk_reachable(arena.region(), &arena.mapped.path, &chain, true)?;
            Ok((arena, commit, live))
        };
        // The published version, when the page cache that holds it survived
        // (the control file was claimed this boot).
        let published = match control.current() {
            Some((generation, offset)) if generations.contains(&generation) => {
                let end = offset + node::COMMIT_BYTES as u64;
                match candidate(generation, offset, end) {
                    Ok(found) => Some(found),
                    Err(e) => {
                        tracing::warn!(error = %e, "the published version is unreadable; recovering from the checkpoint");
                        None
                    }
                }
            }
            _ => None,
        };
        let checkpoint = match meta.latest() {
            Some(c) if generations.contains(&c.generation) => {
                let found = candidate(c.generation, c.commit_offset, c.end)?;
                if found.1.version != c.version {
                    return Err(Error::Corrupt {
                        file: meta.path.clone(),
                        offset: 0,
                        detail: format!(
                            "checkpoint names version {} but its record holds {}",
                            c.version, found.1.version
                        ),
                    });
                }
                Some(found)
            }
            Some(c) if published.is_none() => {
                return Err(Error::Corrupt {
                    file: meta.path.clone(),
                    offset: 0,
                    detail: format!("checkpoint names generation {} whose file is missing", c.generation),
                })
            }
            _ => None,
        };
        let published_at = published.as_ref().map(|(a, c, _)| (a.generation(), c.end, c.version));
        let (arena, head, live) = match (published, checkpoint) {
            (Some(p), Some(c)) => {
                if (p.1.version, p.0.generation()) >= (c.1.version, c.0.generation()) {
                    p
                } else {
                    c
                }
            }
            (Some(p), None) => p,
            (None, Some(c)) => c,
            (None, None) => {
                return Err(Error::Corrupt {
                    file: meta.path.clone(),
                    offset: 0,
                    detail: "no valid checkpoint and no published version".into(),
                })
            }
        };
        // Resume appending above anything a live reader may be reading: the
        // published end when it is known. When the published word cannot be
        // trusted (another boot wrote it, or it is damaged), no reader of this
        // boot can have read past the end it names, capped by the file.
        let cursor = match published_at {
            Some((generation, end, _)) if generation == arena.generation() => head.end.max(end),
            Some(_) => head.end,
            None => match control.current_untrusted() {
                Some((generation, offset)) if generation == arena.generation() => {
                    head.end.max(offset.saturating_add(node::COMMIT_BYTES as u64).min(arena.file_len()))
                }
                _ => head.end,
            },
        };
        let arena = WriterArena::open(dir, arena.generation(), cursor)?;
        Ok((arena, head, published_at.map(|(_, _, v)| v), live))
    }

    pub(crate) fn check_value(&self, path: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.options.max_value_bytes {
            return Err(Error::ValueTooLarge {
                path: path.to_string(),
                len: value.len(),
                max: self.options.max_value_bytes,
            });
        }
        Ok(())
    }

    /// A snapshot of the newest committed version.
    /// With durability `sync`, waits until that version is durable (other
    /// processes' readers only ever see durable versions; so does this).
    pub fn snapshot(&self) -> Snapshot {
        let snapshot = {
            let st = lock(&self.state);
            Snapshot::from_parts(st.arena.mapped.clone(), st.head, &self.lease)
        };
        if let Err(e) = self.wait_durable(snapshot.version()) {
            // Durability failed and the store is poisoned; the version is still
            // what this process committed, and reads of it stay valid.
            tracing::warn!(error = %e, "snapshot of a version whose durability failed");
        }
        snapshot
    }

    /// The newest committed version.
    pub fn version(&self) -> u64 {
        lock(&self.state).head.version
    }

    /// Begins a transaction at the newest committed version.
    pub fn begin(&self) -> Transaction<'_> {
        let st = lock(&self.state);
        let base = Snapshot::from_parts(st.arena.mapped.clone(), st.head, &self.lease);
        *lock(&self.open).entry(base.version()).or_default() += 1;
        drop(st);
        Transaction::new(self, base)
    }

    pub(crate) fn end_transaction(&self, base: u64) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&base) {
            *n -= 1;
            if *n == 0 {
                open.remove(&base);
            }
        }
    }

    fn oldest_open_base(&self) -> Option<u64> {
        lock(&self.open).keys().next().copied()
    }

    /// Writes many values as one new version: the fast path for loading.
    /// Missing ancestors are created with empty values; a later duplicate
    /// path wins. Loading nothing makes no new version.
    pub fn bulk_load<P: AsRef<str>, V: AsRef<[u8]>>(&self, items: impl IntoIterator<Item = (P, V)>) -> Result<u64> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (p, v) in items {
            let (p, v) = (p.as_ref(), v.as_ref());
            let key = path::key(p)?;
            if key.is_empty() {
                return Err(Error::RootImmutable);
            }
            self.check_value(p, v)?;
            pairs.push((key, v.to_vec()));
        }
        if pairs.is_empty() {
            return Ok(self.version());
        }
        // Stable sort, then keep the last of equal keys.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut jops: Vec<JournalOp> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            if let Some(JournalOp::Put { key: last, value: last_value }) = jops.last_mut() {
                if *last == key {
                    *last_value = value;
                    continue;
                }
            }
            jops.push(JournalOp::Put { key, value });
        }
        self.commit_ops(None, jops)
    }

    pub(crate) fn commit_sets(&self, sets: &TxnSets) -> Result<u64> {
        self.commit_ops(Some(sets), sets.journal_ops())
    }

    /// Applies a batch to the tree at `root`, splitting the links it writes
    /// below (when the tree may hold any). Writes below a subtree the batch
    /// itself copies go in a later pass, once the copy is in the tree, so
    /// that they find its link to split: one pass per depth of nesting in
    /// the batch's own copies (a copy into a copy comes after the outer one,
    /// and writes below it after that).
    fn apply_tree(
        arena: &WriterArena,
        root: u64,
        ops: &[Op],
        links: bool,
        report: &mut ApplyReport,
    ) -> Result<(u64, Option<u64>)> {
        let copies: Vec<&[u8]> = ops.iter().filter(|op| op.is_copy()).map(Op::key).collect();
        let damaged = |d: node::Damage| arena.damaged(d);
        let pass = |root: u64, ops: &[Op], report: &mut ApplyReport| -> Result<(u64, Option<u64>)> {
            if !links && copies.is_empty() {
                return build::apply(arena, root, ops, report);
            }
            arena.flush()?;
            let splits = build::split_links(arena.region(), root, ops).map_err(damaged)?;
            if splits.is_empty() {
                return build::apply(arena, root, ops, report);
            }
            build::apply(arena, root, &build::merge_splits(splits, ops), report)
        };
        if copies.is_empty() {
            return pass(root, ops, report);
        }
        // How many of the batch's copies lie strictly above each op.
        let depth = |op: &Op| path::ancestors(op.key()).filter(|a| copies.binary_search(a).is_ok()).count();
        let deepest = ops.iter().map(depth).max().unwrap_or(0);
        if deepest == 0 {
            return pass(root, ops, report);
        }
        let (mut root, mut keys) = (root, None);
        for d in 0..=deepest {
            let level: Vec<Op> = ops.iter().filter(|op| depth(op) == d).cloned().collect();
            if let (r, Some(k)) = pass(root, &level, report)? {
                (root, keys) = (r, Some(k));
            }
        }
        Ok((root, keys))
    }

    fn apply_ops(
        arena: &WriterArena,
        head: Commit,
        ops: &[Op],
        time_ns: u64,
        links: bool,
        report: &mut ApplyReport,
    ) -> Result<Commit> {
        // Change set, nodes and commit record reach the file in one flush
        // (two when a batch writes below a subtree it copies).
        // A copy's clearing of its destination is part of the copy.
        let listed = ops.iter().enumerate().filter(|&(i, op)| {
            !(matches!(op, Op::DeleteTree { .. })
                && ops.get(i + 1).is_some_and(|next| next.is_copy() && next.key() == op.key()))
        });
        let mut buf = arena.take_buffer();
        node::build_changes(listed.map(|(_, op)| (op.change_kind(), op.key())), &mut buf);
        let changes = arena.append(&buf);
        arena.give_buffer(buf);
        let changes = changes?;
        let (root, keys) = Self::apply_tree(arena, head.root, ops, links, report)?;
        let key_count = keys.unwrap_or(head.key_count);
        let offset = arena.end();
        let version = head.version + 1;
        let prev = head.offset;
        arena.append(&node::build_commit(&Commit {
            offset,
            version,
            root,
            prev,
            end: 0,
            time_ns,
            key_count,
            changes,
            generation: arena.generation(),
        }))?;
        arena.flush()?;
        node::parse_commit(arena.region(), offset).map_err(|d| arena.damaged(d))
    }

    fn commit_ops(&self, sets: Option<&TxnSets>, jops: Vec<JournalOp>) -> Result<u64> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        self.refuse_if_failed(st)?;
        if let Some(sets) = sets {
            if sets.base_version != st.head.version {
                if let Some(key) = st.tracker.conflict(sets) {
                    return Err(Error::Conflict { path: path::path_of(&key) });
                }
            }
            if sets.writes.is_empty() {
                // Read-only: what it read must be durable before it reports success.
                let version = st.head.version;
                drop(guard);
                self.wait_durable(version)?;
                return Ok(version);
            }
        }
        let journal_bytes: usize = jops
            .iter()
            .map(|op| match op {
                JournalOp::Put { key, value } => 8 + key.len() + value.len(),
                JournalOp::Copy { key, from } | JournalOp::CopyTree { key, from } => 8 + key.len() + from.len(),
                JournalOp::Delete { key } | JournalOp::DeleteTree { key } => 8 + key.len(),
            })
            .sum();
        if journal_bytes > journal::MAX_RECORD_BYTES {
            return Err(Error::TransactionTooLarge { bytes: journal_bytes, max: journal::MAX_RECORD_BYTES });
        }
        let time_ns = now_ns();
        let record = st.journal.is_some().then(|| journal::encode(st.head.version + 1, time_ns, &jops));
        // A transaction read its ancestors at its base: if that is the head,
        // it created the missing ones, and the batch needs no lookup of them.
        let ancestors_known = sets.is_some_and(|s| s.base_version == st.head.version);
        let ops = prepare_ops(&st.arena, st.head.root, jops, ancestors_known)?;
        let mut report = ApplyReport::default();
        // On failure nothing is published; nodes already appended stay behind
        // unreachable, as garbage for the next compaction.
        st.links |= ops.iter().any(Op::is_copy);
        let head = Self::apply_ops(&st.arena, st.head, &ops, time_ns, st.links, &mut report)?;
        if let (Some(journal), Some(record)) = (st.journal.as_mut(), record) {
            if let Err(e) = journal.append(&record) {
                return Err(self.poison(st, e));
            }
        }
        st.head = head;
        let oldest_base = self.oldest_open_base();
        if oldest_base.is_some() {
            st.tracker.record(head.version, &ops, &report);
        }
        if oldest_base.is_none() || st.tracker.len() > st.tracker.prune_at {
            st.tracker.prune(oldest_base);
        }
        let generation = st.arena.generation();
        if self.options.durability == Durability::None {
            self.publish(generation, head.offset);
            let mut sync = lock(&self.sync);
            sync.published = head.version;
            sync.written = (head.version, generation, head.offset);
        } else {
            lock(&self.sync).written = (head.version, generation, head.offset);
        }
        let compaction_due = self.maintain(st);
        let arena_end = st.arena.end();
        let compaction_threshold = self.compaction_threshold(st);
        // Files freed here are deleted by the next compaction or `reclaim`:
        // unlinking a large file takes milliseconds, not for a commit to pay.
        drop(guard);
        if self.options.durability == Durability::Sync {
            self.wait_durable(head.version)?;
        }
        if compaction_due {
            self.schedule_compaction();
        }
        if arena_end > compaction_threshold.saturating_mul(2) {
            // Commits are outrunning the background compaction: wait until it
            // switches to the compacted generation (not for the sync and
            // checkpoint after it), so the arena stays within a constant
            // factor of the live data.
            self.wait_for_switch(generation);
        }
        Ok(head.version)
    }

    /// Checkpoints and frees old generations when due; returns whether a
    /// compaction is due (run by the caller once the writer lock is released).
    fn maintain(&self, st: &mut WriterState) -> bool {
        let journal_big = st.journal.as_ref().is_some_and(|j| j.len() > self.options.checkpoint_journal_bytes);
        if journal_big {
            // The commit is already durable through the journal (or needs no
            // durability); a failed checkpoint only leaves the journal longer.
            if let Err(e) = self.checkpoint_locked(st) {
                tracing::warn!(error = %e, "checkpoint failed; the journal keeps every commit meanwhile");
            }
        }
        st.commits_since_reclaim += 1;
        if !st.old_generations.is_empty() && st.commits_since_reclaim >= 1024 {
            self.reclaim_generations(st);
        }
        self.options.auto_compact && st.arena.end() > self.compaction_threshold(st)
    }

    /// The arena size beyond which a compaction is due (`u64::MAX`: never).
    fn compaction_threshold(&self, st: &WriterState) -> u64 {
        if !self.options.auto_compact {
            return u64::MAX;
        }
        self.options.compact_min_bytes.max(st.live_bytes.saturating_mul(self.options.compact_factor))
    }

    /// Group commit: waits until `version`'s journal record is durable and
    /// the version published, leading one `fdatasync` if nobody else is.
    fn wait_durable(&self, version: u64) -> Result<()> {
        let Some(journal_file) = &self.journal_file else { return Ok(()) };
        let mut sync = lock(&self.sync);
        loop {
            if sync.published >= version {
                return Ok(());
            }
            if let Some(reason) = &sync.failed {
                return Err(Error::Io {
                    file: self.dir.join(journal::FILE_NAME),
                    source: std::io::Error::other(reason.clone()),
                });
            }
            if sync.leader {
                sync = self.synced.wait(sync).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            sync.leader = true;
            let (target, generation, offset) = sync.written;
            drop(sync);
            let result = rustix::fs::fdatasync(journal_file);
            sync = lock(&self.sync);
            sync.leader = false;
            match result {
                Ok(()) => {
                    if target > sync.published {
                        self.publish(generation, offset);
                        sync.published = target;
                    }
                }
                Err(e) => {
                    // The journal can no longer be trusted to hold what we wrote.
                    sync.failed = Some(format!("journal fdatasync failed: {e}"));
                    lock(&self.state).failed = sync.failed.clone();
                }
            }
            self.synced.notify_all();
        }
    }

    /// Makes the head durable and published before a checkpoint or compaction.
    /// Records a failed durability step: Linux reports a writeback error once
    /// per open file, so after one the files can no longer be trusted to hold
    /// what later syncs claim; the store refuses further commits.
    fn poison(&self, st: &mut WriterState, error: Error) -> Error {
        let reason = format!("a durability step failed earlier; reopen the store to recover: {error}");
        tracing::error!(%error, "store poisoned");
        st.failed = Some(reason.clone());
        lock(&self.sync).failed = Some(reason);
        self.synced.notify_all();
        error
    }

    fn flush_locked(&self, st: &mut WriterState) -> Result<()> {
        if let Some(journal_file) = &self.journal_file {
            if let Err(e) = rustix::fs::fdatasync(journal_file).at(&self.dir.join(journal::FILE_NAME)) {
                return Err(self.poison(st, e));
            }
        }
        let mut sync = lock(&self.sync);
        if st.head.version > sync.published {
            self.publish(st.arena.generation(), st.head.offset);
            sync.published = st.head.version;
        }
        self.synced.notify_all();
        Ok(())
    }

    /// The error of an earlier failed durability step, if there was one:
    /// after it no commit is accepted and no checkpoint written (a later
    /// `fdatasync` of the same file may succeed without the lost bytes).
    fn refuse_if_failed(&self, st: &WriterState) -> Result<()> {
        match &st.failed {
            Some(reason) => Err(Error::Io { file: self.dir.clone(), source: std::io::Error::other(reason.clone()) }),
            None => Ok(()),
        }
    }

    fn checkpoint_locked(&self, st: &mut WriterState) -> Result<()> {
        self.refuse_if_failed(st)?;
        self.flush_locked(st)?;
        if let Err(e) = st.arena.sync() {
            return Err(self.poison(st, e));
        }
        if let Err(e) = st.meta.write(st.arena.generation(), st.head.offset, st.head.version, st.head.end) {
            return Err(self.poison(st, e));
        }
        truncate_journal(st);
        Ok(())
    }

    /// Writes a checkpoint: everything committed so far survives a power loss
    /// without the journal.
    pub fn checkpoint(&self) -> Result<()> {
        let mut st = lock(&self.state);
        self.checkpoint_locked(&mut st)
    }

    /// Copies the retained versions into a new arena generation and switches
    /// to it. Commits go on while the bulk is copied; they stop only for the
    /// catch-up with versions committed meanwhile and the switch. Snapshots
    /// of older generations stay valid; an old file is deleted once no live
    /// reader pins it.
    pub fn compact(&self) -> Result<CompactReport> {
        let _running = lock(&self.compaction);
        self.compact_unlocked()
    }

    /// Starts a background compaction unless one is scheduled or running.
    /// The commit that found it due has succeeded whatever happens there.
    fn schedule_compaction(&self) {
        use std::sync::atomic::Ordering::AcqRel;
        if self.compaction_scheduled.swap(true, AcqRel) {
            return;
        }
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            self.compaction_scheduled.store(false, std::sync::atomic::Ordering::Release);
            return;
        };
        let mut slot = lock(&self.compactor);
        if let Some(finished) = slot.take() {
            let _ = finished.join();
        }
        let spawned = std::thread::Builder::new().name("shoal-compact".into()).spawn(move || {
            sys::mark_this_thread_batch();
            {
                let _running = lock(&me.compaction);
                if let Err(e) = me.compact_unlocked() {
                    tracing::warn!(error = %e, "automatic compaction failed");
                }
            }
            me.compaction_scheduled.store(false, std::sync::atomic::Ordering::Release);
            let _st = lock(&me.state);
            me.compaction_progress.notify_all();
        });
        match spawned {
            Ok(handle) => *slot = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the compaction thread");
                self.compaction_scheduled.store(false, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// Waits until the store has left `generation` or no background
    /// compaction is under way.
    fn wait_for_switch(&self, generation: u64) {
        use std::sync::atomic::Ordering::Acquire;
        let mut st = lock(&self.state);
        while st.arena.generation() == generation && self.compaction_scheduled.load(Acquire) {
            // Bounded, in case the thread ends between the check and the wait.
            st = self
                .compaction_progress
                .wait_timeout(st, std::time::Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn join_compactor(&self) {
        let handle = lock(&self.compactor).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// The body of [`Store::compact`]; the caller holds `self.compaction`.
    fn compact_unlocked(&self) -> Result<CompactReport> {
        // Phase 1, locked: make the head durable and published, start the new file.
        let (old, base, new, links) = {
            let mut st = lock(&self.state);
            self.flush_locked(&mut st)?;
            let from = st.arena.generation();
            if from >= control::MAX_GENERATION {
                return Err(Error::InvalidOption { name: "generation", reason: "generation counter exhausted".into() });
            }
            let reserve = self.options.map_reserve_bytes.next_multiple_of(sys::page_size());
            let _ = std::fs::remove_file(self.dir.join(arena::file_name(from + 1)));
            // Writing into a retired file's cached, allocated pages costs a
            // copy; fresh pages cost the kernel an allocation, zeroing and
            // block reservation each.
            let new = match st.spare.take() {
                Some(spare) => WriterArena::recycle(&self.dir, spare, from + 1, reserve).or_else(|e| {
                    tracing::warn!(error = %e, spare, "cannot recycle the spare generation file");
                    let _ = std::fs::remove_file(self.dir.join(arena::file_name(spare)));
                    let _ = std::fs::remove_file(self.dir.join(arena::file_name(from + 1)));
                    WriterArena::create(&self.dir, from + 1, reserve)
                })?,
                None => WriterArena::create(&self.dir, from + 1, reserve)?,
            };
            (st.arena.mapped.clone(), st.head, new, st.links)
        };
        let to = new.generation();
        let mut switched = false;
        let result = self.compact_into(&old, base, new, &mut switched, links);
        if result.is_err() && !switched {
            let _ = std::fs::remove_file(self.dir.join(arena::file_name(to)));
        }
        // Our own reference gone, the generation just retired can be freed
        // now if no snapshot and no reader needs it.
        drop(old);
        if result.is_ok() {
            self.reclaim();
        }
        result
    }

    fn compact_into(
        &self,
        old: &Arc<MappedGeneration>,
        base: Commit,
        new: WriterArena,
        switched: &mut bool,
        links: bool,
    ) -> Result<CompactReport> {
        let from = old.generation;
        let to = new.generation();
        // Phase 2, unlocked: copy what the retained versions up to `base` reach.
        // Those bytes of the old generation are immutable, so commits appending
        // above them do not disturb the copy.
        let region = old.region(base.end)?;
        let mut chain = self.policy_chain(region, base, &old.path)?;
        chain.reverse();
        let mut copier = Copier {
            path: &old.path,
            to: &new,
            blobs: CopyMemo::default(),
            links: HashMap::new(),
            nodes: links.then(CopyMemo::default),
            buf: Vec::with_capacity(2 * node::NODE_TARGET_BYTES),
        };
        let mut prev = 0;
        let mut versions_kept = 0;
        // The previous copied version's old and new root.
        let mut like = None;
        let mut copy_commits = |region: &[u8], commits: &[Commit], prev: &mut u64| -> Result<Commit> {
            let mut last = None;
            for commit in commits {
                let root = if commit.root == 0 { 0 } else { copier.copy(region, commit.root, like)? };
                like = (root != 0).then_some((commit.root, root));
                let changes = match commit.changes {
                    0 => 0,
                    at => new.append(
                        node::verified_node_at(region, at, KIND_CHANGES).map_err(|d| d.into_error(&old.path))?,
                    )?,
                };
                let offset = new.end();
                let generation = new.generation();
                new.append(&node::build_commit(&Commit { offset, root, prev: *prev, changes, generation, ..*commit }))?;
                new.flush()?;
                last = Some(node::parse_commit(new.region(), offset).map_err(|d| new.damaged(d))?);
                *prev = offset;
                versions_kept += 1;
            }
            last.ok_or_else(|| old.corrupt(base.offset, "no version to compact"))
        };
        let mut copied = copy_commits(region, &chain, &mut prev)?;

        // Phase 2b, unlocked: copy the versions committed during the previous
        // round, while there are many (like a live migration's pre-copy), so
        // that the locked catch-up below stays short. Only those the
        // retention policy keeps among them are copied (the newest
        // `retain_versions + 1`, and each tier's newest per interval): the
        // others would fall out of retention at the switch anyway. Halfway, make what is written
        // durable, so the sync under the lock has only the last rounds left.
        let mut precopy_rounds = 0;
        for synced in [false, true] {
            for _ in 0..PRECOPY_ROUNDS {
                let head = lock(&self.state).head;
                if head.version.saturating_sub(copied.version) <= PRECOPY_ENOUGH {
                    break;
                }
                let region = old.region(head.end)?;
                let newer = self.policy_after(region, head, copied.version, &old.path)?;
                copied = copy_commits(region, &newer, &mut prev)?;
                precopy_rounds += 1;
            }
            if !synced {
                new.sync()?;
            }
        }

        sync_dir(&self.dir)?;

        // Phase 3, locked: catch up with the versions committed meanwhile (only
        // their new nodes are copied) and switch. Every version published
        // so far stays recoverable without the new file: the checkpoint still
        // names the old generation, which stays on disk (this function holds
        // `old`, so no reclaim frees it), and the journal is not truncated.
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        self.flush_locked(st)?;
        let bytes_before = st.arena.end();
        let region = st.arena.region();
        let newer = self.policy_after(region, st.head, copied.version, &old.path)?;
        let caught_up = newer.len();
        let head = if newer.is_empty() { copied } else { copy_commits(region, &newer, &mut prev)? };
        new.flush()?;
        // From here commits append to the new generation, which must not be
        // deleted; a failure leaves the store poisoned rather than half switched.
        *switched = true;
        self.publish(to, head.offset);
        {
            let mut sync = lock(&self.sync);
            sync.published = head.version;
            sync.written = (head.version, to, head.offset);
        }
        let bytes_after = new.end();
        let new_file = new.mapped.clone();
        // Dropped once the lock is released: its prefill thread finishes the
        // requests in hand first, which no commit should wait for.
        let retired = std::mem::replace(&mut st.arena, new);
        st.head = head;
        st.live_bytes = bytes_after;
        // Tracked from the switch on, so the store's own pin covers the
        // snapshots still reading it even if the checkpoint below fails.
        st.old_generations.push(OldGeneration {
            generation: from,
            mapped: Arc::downgrade(old),
            named_by_checkpoint: true,
        });
        self.compaction_progress.notify_all();
        drop(guard);
        drop(retired);
        if self.abort_after_switch.load(std::sync::atomic::Ordering::Relaxed) {
            std::process::abort();
        }

        // Phase 4: a checkpoint naming the new generation; only then may the
        // old generation be freed. It names the head as it was before an
        // unlocked sync, whose bytes that sync made durable, so no commit
        // waits for the sync of what commits appended meanwhile (at 100 k
        // one-key commits/s that is hundreds of MB). Journal records after
        // that version stay for replay until a later checkpoint.
        let synced = {
            let mut st = lock(&self.state);
            self.flush_locked(&mut st)?;
            st.head
        };
        if let Err(e) = new_file.sync() {
            return Err(self.poison(&mut lock(&self.state), e));
        }
        let hook = lock(&self.before_compaction_checkpoint).take();
        if let Some(hook) = hook {
            hook();
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // A checkpoint taken meanwhile (`Store::checkpoint`, a long journal)
        // may name a newer version of the new generation: never step back.
        self.refuse_if_failed(st)?;
        let newer = st.meta.latest().is_some_and(|c| c.generation == to && c.version >= synced.version);
        if !newer {
            if let Err(e) = st.meta.write(to, synced.offset, synced.version, synced.end) {
                return Err(self.poison(st, e));
            }
            if st.head.version == synced.version {
                truncate_journal(st);
            }
        }
        for old in st.old_generations.iter_mut().filter(|o| o.generation == from) {
            old.named_by_checkpoint = false;
        }
        drop(guard);
        tracing::debug!(from, to, bytes_before, bytes_after, caught_up, "compacted");
        Ok(CompactReport {
            from_generation: from,
            to_generation: to,
            bytes_before,
            bytes_after,
            versions_kept,
            precopy_rounds,
            caught_up,
        })
    }

    /// Frees old generation files that no live reader pins and no snapshot
    /// of this process holds: the newest becomes the spare that the next
    /// compaction recycles, the others are deleted.
    ///
    /// Recycling rewrites a file that readers once mapped, so it rests on
    /// the pin protocol (see [`crate::readers`]): a slot pins every
    /// generation its reader or any snapshot taken from it may still read,
    /// for as long as any of them lives, and a reader never pins a
    /// generation older than the published one anew. So once a scan finds
    /// no pin at or below `g` and the weak reference shows no snapshot here,
    /// nothing can read generation `g` again.
    fn reclaim_generations(&self, st: &mut WriterState) {
        st.commits_since_reclaim = 0;
        if st.old_generations.is_empty() {
            return;
        }
        // Snapshots are only made under the state lock, which we hold, so
        // none can appear on an old generation while we look.
        let own_pin = st
            .old_generations
            .iter()
            .filter(|old| old.mapped.strong_count() > 0)
            .map(|old| old.generation)
            .min()
            .unwrap_or(st.arena.generation());
        self.lease.table.pin(self.lease.slot, own_pin);
        let oldest_pinned = match self.table.oldest_pinned_generation() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan the reader table; keeping old generations");
                return;
            }
        };
        let mut freed = Vec::new();
        st.old_generations.retain(|old| {
            let needed = old.named_by_checkpoint
                || oldest_pinned.is_some_and(|p| p <= old.generation)
                || old.mapped.strong_count() > 0;
            if !needed {
                freed.push(old.generation);
            }
            needed
        });
        // Keep the newest free file: the most recently written, so the most
        // likely still cached.
        freed.extend(st.spare.take());
        st.spare = freed.iter().copied().max();
        st.doomed.extend(freed.into_iter().filter(|&g| Some(g) != st.spare));
    }

    /// Frees old generation files whose readers have gone and deletes them
    /// (also done automatically: freed every 1024 commits and deleted at
    /// each compaction); returns the ones still needed.
    pub fn reclaim(&self) -> Vec<u64> {
        let mut st = lock(&self.state);
        self.reclaim_generations(&mut st);
        let doomed = std::mem::take(&mut st.doomed);
        let needed = st.old_generations.iter().map(|o| o.generation).collect();
        drop(st);
        delete_generations(&self.dir, doomed);
        needed
    }

    /// The versions the retention policy keeps of the chain from `head`,
    /// newest first: what the next compaction copies.
    fn policy_chain(&self, region: &[u8], head: Commit, path: &Path) -> Result<Vec<Commit>> {
        let keep = self.options.retain_versions as usize + 1;
        if self.options.retain_tiers.is_empty() {
            return retained_chain(region, head, keep, path);
        }
        Ok(self.thin(retained_chain(region, head, usize::MAX, path)?))
    }

    /// The versions after `after` up to `head` that the retention policy
    /// keeps among them, oldest first.
    fn policy_after(&self, region: &[u8], head: Commit, after: u64, path: &Path) -> Result<Vec<Commit>> {
        let keep = self.options.retain_versions as usize + 1;
        if self.options.retain_tiers.is_empty() {
            return versions_after(region, head, after, keep, path);
        }
        let mut newer = versions_after(region, head, after, usize::MAX, path)?;
        newer.reverse();
        let mut kept = self.thin(newer);
        kept.reverse();
        Ok(kept)
    }

    /// Applies the retention policy to `chain` (newest first).
    fn thin(&self, chain: Vec<Commit>) -> Vec<Commit> {
        let times: Vec<u64> = chain.iter().map(|c| c.time_ns).collect();
        let keep =
            retention::select(&times, self.options.retain_versions as usize + 1, &self.options.retain_tiers, now_ns());
        chain.into_iter().zip(keep).filter_map(|(c, k)| k.then_some(c)).collect()
    }

    /// Figures about the store.
    pub fn stat(&self) -> Result<Stat> {
        // Figures of the moment under the lock; the walks of the chain and of
        // the tree after it (holding the mapping, so it stays readable).
        let (mapped, head, mut stat) = {
            let st = lock(&self.state);
            let stat = Stat {
                version: st.head.version,
                generation: st.arena.generation(),
                key_count: st.head.key_count,
                arena_bytes: st.arena.end(),
                live_bytes: 0,
                retained_versions: Vec::new(),
                journal_bytes: st.journal.as_ref().map_or(0, |j| j.len()),
                readers: Vec::new(),
                old_generations: st.old_generations.iter().map(|o| o.generation).collect(),
                spare_generation: st.spare,
            };
            (st.arena.mapped.clone(), st.head, stat)
        };
        let region = mapped.region(head.end)?;
        let chain = self.policy_chain(region, head, &mapped.path)?;
        stat.live_bytes = walk_reachable(region, &mapped.path, &chain, false)?.bytes;
        stat.retained_versions = chain.iter().map(|c| c.version).collect();
        stat.readers = self.readers()?;
        Ok(stat)
    }

    /// Publishes a version and wakes the readers asleep waiting for one.
    fn publish(&self, generation: u64, offset: u64) {
        self.control.publish(generation, offset);
        self.control.wake_sleepers(self.table.sleepers());
    }

    fn readers(&self) -> Result<Vec<ReaderInfo>> {
        Ok(self.table.live()?.into_iter().filter(|r| r.slot != self.lease.slot).collect())
    }

    /// Checks the checksum of every node the retained versions reach.
    pub fn verify(&self) -> Result<()> {
        let st = lock(&self.state);
        let chain = retained_chain(st.arena.region(), st.head, usize::MAX, &st.arena.mapped.path)?;
        walk_reachable(st.arena.region(), &st.arena.mapped.path, &chain, true).map(|_| ())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if st.failed.is_none() {
            if let Err(e) = self.checkpoint_locked(&mut st) {
                tracing::warn!(error = %e, "checkpoint on close failed");
            }
        }
    }
}

/// Walks every node the commits reach, once each, checking checksums when
/// `verify`; returns the bytes they occupy (records and header page included).
/// The bytes `commits` reach (their records, change sets and trees), and
/// whether their trees hold links.
fn walk_reachable(region: &[u8], path: &Path, commits: &[Commit], verify: bool) -> Result<tree::Reach> {
    let roots: Vec<u64> = commits.iter().map(|c| c.root).collect();
    let damaged = |d: node::Damage| d.into_error(path);
    let reach = tree::reachable_bytes(region, &roots, verify).map_err(damaged)?;
    let mut changes = 0;
    for commit in commits.iter().filter(|c| c.changes != 0) {
        let set = if verify {
            node::verified_node_at(region, commit.changes, KIND_CHANGES)
        } else {
            node::node_at(region, commit.changes, KIND_CHANGES)
        };
        changes += set.map_err(damaged)?.len() as u64;
    }
    Ok(tree::Reach {
        bytes: HEADER_PAGE + (commits.len() * node::COMMIT_BYTES) as u64 + reach.bytes + changes,
        ..reach
    })
}

/// One compaction's copy of trees from the old generation into the new one.
struct Copier<'a> {
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

impl Copier<'_> {
    /// Copies the tree at `offset` of `region`, children before parents.
    /// `like` holds the old and new offsets of a tree copied before (the
    /// previous version's): children are matched with its children by key,
    /// and one at the same old offset is the same subtree, already copied.
    /// So a version costs what changed since the previous one, with no
    /// table of every copied node. Every copied node's checksum is checked.
    ///
    /// A subtree reachable twice within one version would be copied twice
    /// (correct, only larger); path copying never links a node twice.
    fn copy(&mut self, region: &[u8], offset: u64, like: Option<(u64, u64)>) -> Result<u64> {
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
        let new_offset = if region.get(offset as usize) == Some(&KIND_INTERNAL) {
            node::verified_node_at(region, offset, KIND_INTERNAL).map_err(damaged)?;
            let view = node::InternalView::parse(region, offset).map_err(damaged)?;
            let like = match like {
                Some((old, new)) if region.get(old as usize) == Some(&KIND_INTERNAL) => Some((
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
            let bytes = node::verified_node_at(region, offset, KIND_LEAF).map_err(damaged)?;
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
    fn copy_value<'v>(&mut self, region: &[u8], value: node::ValueRepr<'v>) -> Result<node::ValueRepr<'v>> {
        let node::ValueRepr::Blob { offset: blob, len } = value else { return Ok(value) };
        let new_blob = match self.blobs.get(&blob) {
            Some(&b) => b,
            None => {
                let bytes = node::verified_node_at(region, blob, KIND_BLOB).map_err(|d| d.into_error(self.path))?;
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
    fn copy_link(&mut self, region: &[u8], link: node::Link<'_>) -> Result<u64> {
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
        region: &'r [u8],
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
        let kind = region.get(offset as usize).copied().unwrap_or(0);
        node::verified_node_at(region, offset, kind).map_err(damaged)?;
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
