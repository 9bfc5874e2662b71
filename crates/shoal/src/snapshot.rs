//! Snapshots (one version's consistent view) and reader handles (for any
//! process on the host).
//!
//! Taking a snapshot is one `Acquire` load of the control word plus, in the
//! common case where the generation is already mapped, a checksum of the
//! 64-byte commit record the first time that record is seen: no lock, no
//! system call, no allocation beyond an `Arc` clone. Lookups borrow straight
//! from the read-only mapping.
//!
//! Reader safety (invariant 3): a snapshot holds an `Arc` of its generation's
//! mapping, and only reads bytes below its version's high-water mark, which
//! the writer never rewrites and never truncates while the generation is
//! pinned. A snapshot taken from a [`Reader`] also holds the reader's slot
//! lease, so the slot, and the pin on the snapshot's generation in it,
//! outlive the `Reader` for as long as the snapshot does: the writer
//! recycles an old generation's file for a new generation only once no slot
//! pins it and no snapshot of the writer's own process holds it (see
//! `Store` compaction). Neither a commit, nor a compaction, nor the writer's
//! death can change or remove the bytes a snapshot reads.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::Arc;

use crate::arena::{self, MappedGeneration};
use crate::control::{self, Control};
use crate::diff::Diff;
use crate::error::{Error, Result};
use crate::files::StoreDir;
use crate::node::{self, ChangeKind, Commit, Region, COMMIT_BYTES};
use crate::path;
use crate::readers::ReaderTable;
use crate::scan::Scan;
use crate::tree;

/// One version of the store, readable for as long as it is held.
#[derive(Clone)]
pub struct Snapshot {
    generation: Arc<MappedGeneration>,
    commit: Commit,
    /// The reader slot that pins `generation`.
    lease: Arc<ReaderLease>,
}

/// A slot in the reader table, released when its holder (a [`Reader`], or
/// the writer's `Store`) and every snapshot taken from it are gone. It owns
/// its own open of the table: the slot's lock belongs to that open file
/// description, so other opens (the writer's scan) see it as held.
///
/// Slots only inform `stat` and count sleepers (pins are locks on the arena
/// files), so a handle works without one: when the table is missing, cut
/// beyond repair or full (anyone who may read the store can fill it), the
/// handle goes on without a slot, unlisted, and sleeps uncounted.
pub(crate) struct ReaderLease {
    pub(crate) table: Option<ReaderTable>,
    pub(crate) slot: Option<u64>,
}

impl ReaderLease {
    pub(crate) fn claim(dir: &StoreDir) -> Arc<ReaderLease> {
        let table = match ReaderTable::open_repairing(dir) {
            Ok(table) => table,
            Err(e) => {
                tracing::warn!(error = %e, "no reader table: this handle is not listed by stat");
                return Arc::new(ReaderLease { table: None, slot: None });
            }
        };
        let slot = match table.claim() {
            Ok(slot) => Some(slot),
            Err(e) => {
                tracing::warn!(error = %e, "no reader slot: this handle is not listed by stat");
                None
            }
        };
        Arc::new(ReaderLease { table: Some(table), slot })
    }

    /// Records in this lease's slot what its holder maps and last read (for `stat`).
    pub(crate) fn note(&self, generation: u64, version: u64) {
        if let (Some(table), Some(slot)) = (&self.table, self.slot) {
            table.note(slot, generation, version);
        }
    }
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        if let (Some(table), Some(slot)) = (&self.table, self.slot) {
            table.release(slot);
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.commit.version)
            .field("generation", &self.generation.generation)
            .finish()
    }
}

impl Snapshot {
    /// Opens the version whose commit record is at `offset`, verifying the record.
    fn open(generation: Arc<MappedGeneration>, offset: u64, lease: Arc<ReaderLease>) -> Result<Snapshot> {
        let region = generation.region(offset + COMMIT_BYTES as u64)?;
        let commit = node::parse_commit(region, offset).map_err(|d| d.into_error(&generation.path))?;
        // A published offset must hold a record of this generation, not an
        // older one left in a recycled file's bytes.
        if commit.generation != generation.generation {
            return Err(generation.corrupt(offset, "commit record written for another generation"));
        }
        Ok(Snapshot { generation, commit, lease })
    }

    pub(crate) fn from_parts(generation: Arc<MappedGeneration>, commit: Commit, lease: &Arc<ReaderLease>) -> Snapshot {
        Snapshot { generation, commit, lease: lease.clone() }
    }

    /// The readable arena prefix of this version.
    #[inline]
    pub(crate) fn region(&self) -> Region<'_> {
        // The end was checked against the file when the snapshot was opened,
        // and files never shrink, so this cannot fail; fall back to empty.
        match self.generation.region(self.commit.end) {
            Ok(region) => region,
            Err(_) => self.generation.region(0).unwrap_or_else(|_| unreachable!("an empty region is always readable")),
        }
    }

    /// The mapped generation this snapshot reads.
    pub(crate) fn mapped(&self) -> &Arc<MappedGeneration> {
        &self.generation
    }

    /// The version whose commit record is at `offset` of this snapshot's
    /// generation, verified; the caller keeps `offset` below this version's end.
    pub(crate) fn sibling(&self, offset: u64) -> Result<Snapshot> {
        Snapshot::open(self.generation.clone(), offset, self.lease.clone())
    }

    pub(crate) fn damaged(&self, d: node::Damage) -> Error {
        d.into_error(&self.generation.path)
    }

    pub(crate) fn commit(&self) -> Commit {
        self.commit
    }

    /// The virtual addresses of the shared arena mapping this snapshot reads
    /// from: values returned by [`Snapshot::get`] lie inside it (no copy).
    pub fn mapping_address_range(&self) -> std::ops::Range<usize> {
        self.generation.map.address_range()
    }

    /// This snapshot's version.
    pub fn version(&self) -> u64 {
        self.commit.version
    }

    /// The arena generation this version lives in.
    pub fn generation(&self) -> u64 {
        self.generation.generation
    }

    /// When this version was committed, in nanoseconds since the Unix epoch.
    pub fn commit_time_ns(&self) -> u64 {
        self.commit.time_ns
    }

    /// Number of nodes (paths) in this version, the root excluded.
    pub fn key_count(&self) -> u64 {
        self.commit.key_count
    }

    /// The value at `path`, borrowed from the shared mapping (no copy).
    /// Every existing node has a value, possibly empty; the root's is empty.
    #[inline]
    pub fn get(&self, path: &str) -> Result<Option<&[u8]>> {
        path::with_valid_key(path, |key| self.get_key(key))?
    }

    /// Whether a node exists at `path`.
    pub fn exists(&self, path: &str) -> Result<bool> {
        self.get(path).map(|v| v.is_some())
    }

    #[inline]
    pub(crate) fn get_key(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        if key.is_empty() {
            return Ok(Some(&[]));
        }
        tree::get(self.region(), self.commit.root, key).map_err(|d| self.damaged(d))
    }

    /// What lies strictly below the node at `key` (through links).
    pub(crate) fn below_key(&self, key: &[u8]) -> Result<tree::Below> {
        let region = self.region();
        let (root, key) = tree::resolve(region, self.commit.root, key, true).map_err(|d| self.damaged(d))?;
        tree::below(region, root, &key).map_err(|d| self.damaged(d))
    }

    /// The names of the immediate children of `path`, sorted by their bytes.
    pub fn list(&self, path: &str) -> Result<Vec<String>> {
        let key = path::key(path)?;
        self.list_key(&key)
    }

    pub(crate) fn list_key(&self, key: &[u8]) -> Result<Vec<String>> {
        tree::list(self.region(), self.commit.root, key).map_err(|d| self.damaged(d))
    }

    /// Calls `each` with the name of each immediate child of `path`, in the
    /// order of [`list`](Self::list), without collecting them: for a caller
    /// that copies the names out anyway (a reply to a client) and would
    /// otherwise pay an allocation per child. A name is a path component
    /// (UTF-8) unless the arena is damaged; then it is the bytes found.
    pub fn for_each_child(&self, path: &str, each: impl FnMut(&[u8])) -> Result<()> {
        let key = path::key(path)?;
        tree::each_child_name(self.region(), self.commit.root, &key, each).map_err(|d| self.damaged(d))
    }

    /// The subtree at `path` (the node itself first, if it exists), in path order.
    pub fn scan(&self, path: &str) -> Result<Scan<'_>> {
        let key = path::key(path)?;
        let walk = tree::Walk::subtree(self.region(), self.commit.root, &key).map_err(|d| self.damaged(d))?;
        Ok(Scan::new(self, walk))
    }

    /// Checks the checksum of every node this version reaches. Readers do
    /// not checksum nodes on the read path (the writer verifies a store when
    /// it opens it); this is the way to check a store from a reader.
    pub fn verify(&self) -> Result<()> {
        let region = self.region();
        tree::reachable_bytes(region, &[self.commit.root], true).map_err(|d| self.damaged(d))?;
        if self.commit.changes != 0 {
            node::verified_node_at(region.bytes(), self.commit.changes, node::KIND_CHANGES)
                .map_err(|d| self.damaged(d))?;
        }
        Ok(())
    }

    /// The commit record of the version before this one, if still in this generation.
    pub(crate) fn previous(&self) -> Result<Option<Snapshot>> {
        if self.commit.prev == 0 {
            return Ok(None);
        }
        Snapshot::open(self.generation.clone(), self.commit.prev, self.lease.clone()).map(Some)
    }

    /// An older retained version, walking back from this one. A version
    /// older than the oldest retained gets [`Error::VersionNotRetained`];
    /// one that compaction thinned out between two retained versions gets
    /// [`Error::VersionThinned`], naming them.
    pub fn at_version(&self, version: u64) -> Result<Snapshot> {
        let mut snap = self.clone();
        while snap.version() > version {
            match snap.previous()? {
                Some(prev) if prev.version() >= version => snap = prev,
                Some(prev) => {
                    return Err(Error::VersionThinned {
                        requested: version,
                        older: prev.version(),
                        newer: snap.version(),
                    })
                }
                None => break,
            }
        }
        if snap.version() == version {
            return Ok(snap);
        }
        let oldest = self.versions()?.last().copied().unwrap_or(self.version());
        Err(Error::VersionNotRetained { requested: version, oldest, newest: self.version() })
    }

    /// What the versions after `after` up to this one changed at or below
    /// `prefix`, oldest version first and in path order within a version,
    /// read in place from their change sets. A deletion of a subtree that
    /// holds `prefix` is included. Fails with [`Error::HistoryGone`] when
    /// those versions are no longer all retained, and with
    /// [`Error::ChangesNotListed`] when one of them changed too much to list.
    pub fn changes(&self, after: u64, prefix: &str) -> Result<Vec<Change<'_>>> {
        let prefix = path::key(prefix)?;
        let region = self.region();
        let damaged = |d: node::Damage| self.damaged(d);
        let mut commits: Vec<Commit> = Vec::new();
        for commit in node::chain(region, self.commit) {
            let commit = commit.map_err(damaged)?;
            if commit.version <= after {
                break;
            }
            if let Some(newer) = commits.last() {
                if commit.version + 1 != newer.version {
                    // Compaction dropped the versions in between.
                    return Err(Error::HistoryGone { after, oldest: newer.version - 1 });
                }
            }
            commits.push(commit);
        }
        if let Some(oldest) = commits.last().filter(|c| c.version > after + 1) {
            return Err(Error::HistoryGone { after, oldest: oldest.version - 1 });
        }
        let mut out = Vec::new();
        for commit in commits.iter().rev() {
            if commit.changes == 0 {
                return Err(Error::ChangesNotListed { version: commit.version });
            }
            let set = node::ChangesView::parse(region, commit.changes).map_err(damaged)?;
            if set.overflowed() {
                return Err(Error::ChangesNotListed { version: commit.version });
            }
            for entry in set.iter() {
                let (kind, key) = entry.map_err(damaged)?;
                let below = node::Key::whole(key).in_subtree(&prefix);
                // Replacing or deleting a subtree holding the prefix changes it too.
                let above = matches!(kind, ChangeKind::DeleteTree | ChangeKind::CopyTree)
                    && node::Key::whole(&prefix).in_subtree(key);
                if below || above {
                    out.push(Change { version: commit.version, kind, key });
                }
            }
        }
        Ok(out)
    }

    /// The versions readable from this one with their commit times and
    /// sizes (itself first, then older): what [`Snapshot::at_version`] can open.
    pub fn history(&self) -> Result<Vec<VersionInfo>> {
        node::chain(self.region(), self.commit)
            .map(|c| {
                c.map(|c| VersionInfo { version: c.version, commit_time_ns: c.time_ns, key_count: c.key_count })
                    .map_err(|d| self.damaged(d))
            })
            .collect()
    }

    /// The retained versions (this one and older, newest first) at which
    /// the value at `path` changed: `Set` where it differs from the retained
    /// version before (or the path appeared), `Delete` where the path is
    /// gone. The oldest retained version is listed as `Set` if the path
    /// exists in it (its value was written then or earlier). Compares the
    /// path in consecutive retained versions: one lookup per version.
    pub fn log(&self, path: &str) -> Result<Vec<(VersionInfo, ChangeKind)>> {
        let key = path::key(path)?;
        let region = self.region();
        let damaged = |d: node::Damage| self.damaged(d);
        let value_at = |c: &Commit| -> Result<Option<&[u8]>> {
            if key.is_empty() {
                return Ok(Some(&[]));
            }
            tree::get(region, c.root, &key).map_err(damaged)
        };
        // Each retained version against the one before it (the oldest
        // against nothing).
        let chain: Vec<Commit> = node::chain(region, self.commit).collect::<node::Parse<_>>().map_err(damaged)?;
        let mut out = Vec::new();
        let mut value = value_at(&chain[0])?;
        for (i, at) in chain.iter().enumerate() {
            let info = VersionInfo { version: at.version, commit_time_ns: at.time_ns, key_count: at.key_count };
            let before_value = match chain.get(i + 1) {
                Some(c) => value_at(c)?,
                None => None,
            };
            match (before_value, value) {
                (old, Some(new)) if old != Some(new) => out.push((info, ChangeKind::Set)),
                (Some(_), None) => out.push((info, ChangeKind::Delete)),
                _ => {}
            }
            value = before_value;
        }
        Ok(out)
    }

    /// How the subtree at `prefix` differs from this version to `newer`
    /// (any snapshot of the same store), in path order. Subtrees both
    /// versions share are skipped unread, so the cost follows the size of
    /// the difference ([`Diff::nodes_visited`]) when both are in one
    /// generation; across a compaction every node differs by identity and
    /// both trees are read.
    pub fn diff(&self, newer: &Snapshot, prefix: &str) -> Result<Diff> {
        let prefix = path::key(prefix)?;
        let same =
            self.generation.generation == newer.generation.generation && self.generation.path == newer.generation.path;
        crate::diff::diff(self.region(), self.commit.root, newer.region(), newer.commit.root, same, &prefix).map_err(
            |e| match e {
                crate::diff::DiffError::Old(d) => self.damaged(d),
                crate::diff::DiffError::New(d) => newer.damaged(d),
            },
        )
    }

    /// The versions readable from this one (itself first, then older).
    pub fn versions(&self) -> Result<Vec<u64>> {
        node::chain(self.region(), self.commit).map(|c| c.map(|c| c.version).map_err(|d| self.damaged(d))).collect()
    }
}

/// A retained version, as [`Snapshot::history`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    /// When it was committed, in nanoseconds since the Unix epoch.
    pub commit_time_ns: u64,
    /// Nodes (paths) in it, the root excluded.
    pub key_count: u64,
}

/// One path a version changed, read in place from the version's change set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    version: u64,
    kind: ChangeKind,
    key: &'a [u8],
}

impl Change<'_> {
    /// The version that made the change.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn kind(&self) -> ChangeKind {
        self.kind
    }

    /// The changed path.
    pub fn path(&self) -> String {
        path::path_of(self.key)
    }
}

/// A read-only handle on a store, for any process on the host. Holds a slot
/// in the reader table for as long as it lives.
///
/// A `Reader` is `Send` but not `Sync`: open one per thread. Its snapshots
/// are `Send + Sync`.
pub struct Reader {
    dir: StoreDir,
    control: Control,
    lease: Arc<ReaderLease>,
    /// The newest generation this handle has mapped.
    current: RefCell<Option<Arc<MappedGeneration>>>,
    /// Older generations that snapshots may still hold.
    older: RefCell<Vec<Arc<MappedGeneration>>>,
    /// The last verified commit record, keyed by the control word.
    last: RefCell<Option<(u64, Commit)>>,
    /// What the slot last recorded (oldest generation mapped, version), and when.
    noted: Cell<(u64, u64, Option<std::time::Instant>)>,
    /// How long `wait_for_version` spins before it sleeps.
    wait_spin: Cell<std::time::Duration>,
    /// This boot's id: the control word is trusted only if a writer claimed it this boot.
    boot: [u64; 2],
}

/// How long a wait spins before it sleeps, by default: waking a sleeping
/// process costs tens of microseconds (more on a virtual machine), so a
/// version published within this time is seen sooner, for at most this
/// much CPU per wait.
pub const DEFAULT_WAIT_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// How often at most a reader records its newest version in its slot.
const NOTE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Retries of a snapshot that keeps racing compactions before giving up.
const SNAPSHOT_RETRIES: usize = 1000;

impl Reader {
    /// Opens a reader on the store in `dir`. The store must have been created by a writer.
    pub fn open(dir: impl AsRef<Path>) -> Result<Reader> {
        let path = dir.as_ref();
        // Every file is opened relative to this handle on the directory.
        let dir = match StoreDir::open(path) {
            Ok(dir) => dir,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(path.to_path_buf()))
            }
            Err(e) => return Err(e),
        };
        if !dir.exists(control::FILE_NAME)? {
            if dir.exists(crate::meta::FILE_NAME)? {
                return Err(Error::Corrupt {
                    file: dir.join(control::FILE_NAME),
                    offset: 0,
                    detail: "the control file is missing; opening the store as its writer recreates it".into(),
                });
            }
            return Err(Error::NotFound(dir.path().to_path_buf()));
        }
        let control = Control::open_reader(&dir)?;
        let lease = ReaderLease::claim(&dir);
        Ok(Reader {
            dir,
            control,
            lease,
            current: RefCell::new(None),
            older: RefCell::new(Vec::new()),
            last: RefCell::new(None),
            noted: Cell::new((0, 0, None)),
            wait_spin: Cell::new(DEFAULT_WAIT_SPIN),
            boot: control::this_boot(),
        })
    }

    /// The newest version a reader may trust: the published word when a
    /// writer has claimed the store this boot; otherwise (no writer since the
    /// machine started, so the page cache behind the old word is gone) the
    /// newest checkpoint, whose bytes were made durable before it was written.
    #[inline]
    fn published_word(&self) -> Result<u64> {
        if let Some(word) = self.control.current_word_if_boot(self.boot) {
            return Ok(word);
        }
        match crate::meta::read_latest(&self.dir)? {
            Some(c) => Ok(control::pack(c.generation, c.commit_offset)),
            None => Err(Error::NotFound(self.dir.path().to_path_buf())),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn store_dir(&self) -> &StoreDir {
        &self.dir
    }

    /// The newest published version.
    pub fn snapshot(&self) -> Result<Snapshot> {
        for _ in 0..SNAPSHOT_RETRIES {
            let word = self.published_word()?;
            let (generation, offset) = control::unpack(word);
            let mapped = match self.current.borrow().as_ref() {
                Some(m) if m.generation == generation => Some(m.clone()),
                _ => None,
            };
            let mapped = match mapped {
                Some(m) => m,
                None => match self.map_generation(generation)? {
                    Some(m) => m,
                    None => continue, // raced a compaction; look again
                },
            };
            let cached = *self.last.borrow();
            let snapshot = match cached {
                Some((w, commit)) if w == word => Snapshot::from_parts(mapped, commit, &self.lease),
                _ => {
                    let snap = Snapshot::open(mapped, offset, self.lease.clone())?;
                    *self.last.borrow_mut() = Some((word, snap.commit()));
                    self.release_unused_generations();
                    self.note(snap.version());
                    snap
                }
            };
            return Ok(snapshot);
        }
        Err(Error::Corrupt {
            file: self.control.path.clone(),
            offset: 0,
            detail: "the published generation kept changing or vanishing".into(),
        })
    }

    /// Maps a newly published generation (which pins it, see the pin
    /// protocol in [`crate::arena`]), then checks that it is still the
    /// published one. `None`: it was replaced while we looked.
    fn map_generation(&self, generation: u64) -> Result<Option<Arc<MappedGeneration>>> {
        let mapped = match arena::open_read_only(&self.dir, generation) {
            Ok(m) => m,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // A file recycled between its open and its header read holds
            // another generation now: this one was replaced; look again.
            Err(Error::Format { .. }) if control::unpack(self.published_word()?).0 != generation => return Ok(None),
            Err(e) => return Err(e),
        };
        // Sync point: the pin (a lock) comes before this re-read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if control::unpack(self.published_word()?).0 != generation {
            return Ok(None);
        }
        if let Some(old) = self.current.borrow_mut().replace(mapped.clone()) {
            self.older.borrow_mut().push(old);
        }
        Ok(Some(mapped))
    }

    /// Drops this handle's mappings of old generations no snapshot holds,
    /// which releases their pins.
    fn release_unused_generations(&self) {
        self.older.borrow_mut().retain(|m| Arc::strong_count(m) > 1);
    }

    /// Records what this handle maps and reads in its slot, for `stat`:
    /// when the oldest generation it maps changed, or at most ten times a
    /// second otherwise (a `pwrite` each).
    fn note(&self, version: u64) {
        let current = self.current.borrow().as_ref().map_or(0, |m| m.generation);
        let oldest = self.older.borrow().iter().map(|m| m.generation).min().unwrap_or(current);
        let (generation, _, at) = self.noted.get();
        let now = std::time::Instant::now();
        if generation != oldest || at.is_none_or(|at| now.duration_since(at) >= NOTE_INTERVAL) {
            self.lease.note(oldest, version);
            self.noted.set((oldest, version, Some(now)));
        }
    }

    /// A retained older version.
    pub fn snapshot_at(&self, version: u64) -> Result<Snapshot> {
        self.snapshot()?.at_version(version)
    }

    /// Waits until a version newer than `after` is published and returns a
    /// snapshot of it, or `None` once `timeout` has passed. The writer wakes
    /// waiters with a futex on the shared control file, so this sleeps
    /// without polling. Use a bounded timeout and [`Reader::writer_alive`]
    /// to notice a writer that has gone away. It spins briefly before it
    /// sleeps ([`Reader::set_wait_spin`]).
    pub fn wait_for_version(&self, after: u64, timeout: std::time::Duration) -> Result<Option<Snapshot>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Read the counter before looking, so a publication in between
            // makes the wait below return at once.
            let seq = self.control.wake_sequence();
            let snapshot = self.snapshot()?;
            if snapshot.version() > after {
                return Ok(Some(snapshot));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.control.wait_past(seq, deadline - now, self.wait_spin.get(), self.lease.table.as_ref())?;
        }
    }

    /// Sets how long [`Reader::wait_for_version`] (and a watch's `wait`)
    /// spins before sleeping; zero sleeps at once. Default
    /// [`DEFAULT_WAIT_SPIN`].
    pub fn set_wait_spin(&self, spin: std::time::Duration) {
        self.wait_spin.set(spin);
    }

    /// Whether the process that last opened the store as its writer is still
    /// running (pid and start time, as the reader table checks readers).
    pub fn writer_alive(&self) -> bool {
        self.writer_pid().is_some()
    }

    /// The pid of the process that last opened the store as its writer, if
    /// it is still running.
    pub fn writer_pid(&self) -> Option<u32> {
        let (pid, start) = self.control.writer();
        (pid != 0 && crate::sys::process_alive(pid, start)).then_some(pid)
    }

    /// The store's settings, as recorded in it (read without any lock; the
    /// per-open fields of the result are at their defaults).
    pub fn settings(&self) -> Result<crate::Options> {
        let mut options = crate::settings::load(&self.dir)?.unwrap_or_default();
        (options.mode, options.group) = self.dir.access()?;
        Ok(options)
    }

    /// The live readers of the store (this one included, if it holds a
    /// slot); none when the reader table cannot be read.
    pub fn readers(&self) -> Result<Vec<crate::ReaderInfo>> {
        match &self.lease.table {
            Some(table) => table.live(),
            None => Ok(Vec::new()),
        }
    }

    /// This handle's slot in the reader table (`None`: it has none, see
    /// [`crate::Stat`]'s readers).
    pub fn slot(&self) -> Option<u64> {
        self.lease.slot
    }
}
