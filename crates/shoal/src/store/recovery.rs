//! Opening a store as its writer: creating it, or recovering the newest
//! trustworthy version and replaying the journal after it.
//!
//! Which version to start from: the control file's published version when
//! a writer claimed it during this boot (a process crash leaves the page
//! cache, and so the arena, intact), else the `meta` checkpoint; of the two
//! the newer. Its commit record and those of the versions before it are
//! checked, and, for a published version newer than the checkpoint, every
//! node written since the checkpoint (a damaged one: the checkpoint is
//! taken instead, and the journal replayed after it); then the journal
//! records after it are replayed. Every other node is checked when first
//! read, and all of them by the scrub (`scrub.rs`) on a background thread
//! once the store is open, so that opening takes the same time whatever
//! the store's size. Whenever the result is
//! not exactly the checkpoint (replayed records, a version recovered from
//! the page cache, another generation), it is synced and checkpointed
//! before anything is published, and the journal emptied: so a later
//! journal always continues the checkpoint, whatever durability the
//! previous writer used. Appends resume above every byte a live reader
//! could be reading.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use super::batch::{apply_ops, prepare_ops};
use super::generations::{self, Generations, OldGeneration};
use super::publish::{Head, Publisher};
use super::scrub::ScrubInput;
use super::tracker::{ChangeTracker, OpenTransactions};
use super::{now_ns, Shared, WriterState};
use crate::arena::{self, MappedGeneration, WriterArena};
use crate::build::{ApplyReport, NodeSink, Op};
use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::journal::{self, Journal, Record};
use crate::meta::Meta;
use crate::node::{self, Commit};
use crate::options::{Durability, Options};
use crate::readers::ReaderTable;
use crate::retained;
use crate::snapshot::ReaderLease;
use crate::sys;
use crate::tree;

const LOCK_FILE: &str = "lock";
/// Present while a store is being created; a store holding it is created anew.
const INIT_MARKER: &str = "initializing";

/// What an open may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Open an existing store; with `Options::create`, create a missing one.
    Open,
    /// Create a store; an existing one is an error.
    Create,
}

/// Opens or creates the store in `path`, as `mode` and `options` say.
pub(super) fn open(path: &Path, options: Options, mode: Mode) -> Result<Shared> {
    options.validate()?;
    let may_create = mode == Mode::Create || options.create;
    let mut dir = match StoreDir::open(path) {
        Ok(dir) => dir,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if !may_create {
                return Err(Error::NotFound(path.to_path_buf()));
            }
            StoreDir::create(path, options.mode, options.group)?
        }
        Err(e) => return Err(e),
    };
    let has_store =
        |dir: &StoreDir| -> Result<bool> { Ok(dir.exists(crate::meta::FILE_NAME)? && !dir.exists(INIT_MARKER)?) };
    if !may_create && !has_store(&dir)? {
        return Err(missing_store(&dir)?);
    }
    dir.check_owner()?;
    // Checked again under the lock; here too, so that a running writer's
    // store is named as existing rather than as locked.
    if mode == Mode::Create && has_store(&dir)? {
        return Err(Error::AlreadyExists(dir.path().to_path_buf()));
    }
    if !has_store(&dir)? {
        // A store is made in an empty directory (or over an interrupted
        // creation of one): never chmod or fill one that holds other files.
        let foreign: Vec<String> = dir.list()?.into_iter().filter(|name| !is_store_file(name)).collect();
        if !foreign.is_empty() {
            return Err(Error::Access {
                path: dir.path().to_path_buf(),
                reason: format!(
                    "the directory holds files that are not a store's ({}); a store is made in a new or empty directory",
                    foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let lock_file = take_writer_lock(&dir, options.lock_wait)?;
    // Decided under the lock: another writer may have created it meanwhile.
    let exists = has_store(&dir)?;
    if exists && mode == Mode::Create {
        return Err(Error::AlreadyExists(dir.path().to_path_buf()));
    }
    if !exists && !dir.exists(INIT_MARKER)? && !generations::list(&dir)?.is_empty() {
        // Arena files without a checkpoint and without the creation marker:
        // never start afresh over data.
        return Err(Error::Corrupt {
            file: dir.join(crate::meta::FILE_NAME),
            offset: 0,
            detail: "the checkpoint file is missing but arena files exist".into(),
        });
    }
    if !exists && !may_create {
        return Err(Error::NotFound(dir.path().to_path_buf()));
    }
    if !exists {
        // A store made in a directory that was there already gets the
        // access asked for, not whatever the directory had.
        dir.set_access(options.mode, options.group)?;
    }
    let recorded = if exists { crate::settings::load(&dir)? } else { None };
    let mut options = match recorded {
        Some(recorded) if !options.replace_settings => {
            let effective = recorded.with_open_fields_of(&options);
            effective.validate()?;
            effective
        }
        _ => {
            crate::settings::save(&dir, &options)?;
            options
        }
    };
    (options.mode, options.group) = dir.access()?;
    let control = Control::open_writer(&dir)?;
    let table = ReaderTable::create(&dir)?;
    dir.sync()?;
    let reserve = options.map_reserve_bytes.next_multiple_of(sys::page_size());
    let found = if exists { recover(&dir, &control)? } else { create(&dir, reserve)? };

    let journal_path = dir.join(journal::FILE_NAME);
    let journal_needed = options.durability == Durability::Sync || dir.exists(journal::FILE_NAME)?;
    let (journal, replay) = if journal_needed {
        // The published version of this boot holds every acknowledged commit.
        let (mut j, r) = Journal::open(&dir, found.published.is_some())?;
        j.size_fill_for(options.checkpoint_journal_bytes);
        dir.sync()?;
        if r.discarded_bytes > 0 {
            tracing::warn!(bytes = r.discarded_bytes, "discarded a torn journal tail");
        }
        (Some(j), r.records)
    } else {
        (None, Vec::new())
    };
    let journal_sync = match &journal {
        Some(j) => Some((j.sync_handle()?, j.mark_handle()?)),
        None => None,
    };

    let files = generations::list(&dir)?;
    let current = found.arena.generation();
    // Generations above the current one come from an interrupted compaction
    // that never published (recovery picks the newest named version).
    for g in files.iter().copied().filter(|&g| g > current) {
        dir.remove(&arena::file_name(g))?;
    }
    let generations = Generations {
        old: files
            .iter()
            .filter(|&&g| g < current)
            .map(|&g| OldGeneration { generation: g, named_by_checkpoint: false })
            .collect(),
        highest: files.iter().copied().chain([current, control.highest_generation()]).max().unwrap_or(current),
        ..Generations::default()
    };
    let mut st = WriterState {
        arena: found.arena,
        head: found.head,
        journal,
        meta: found.meta,
        tracker: ChangeTracker::default(),
        live_bytes: found.live.bytes,
        live_bytes_known: found.scrub.is_none(),
        links: found.live.links,
        links_added: false,
        generations,
    };
    replay_journal(&dir, &mut st, replay)?;
    let checkpointed = st.meta.latest().is_some_and(|c| {
        (c.generation, c.commit_offset, c.version) == (st.arena.generation(), st.head.offset, st.head.version)
    });
    if !checkpointed {
        tracing::info!(version = st.head.version, "recovered version checkpointed");
        // Durable before anyone can see it, and a journal that continues it.
        st.arena.sync()?;
        st.meta.write(st.arena.generation(), st.head.offset, st.head.version, st.head.end)?;
        if let Some(journal) = st.journal.as_mut() {
            journal.truncate()?;
        }
    }
    if found.published.is_some_and(|v| v > st.head.version) {
        return Err(Error::Corrupt {
            file: control.path.clone(),
            offset: 0,
            detail: "recovered an older version than was published".into(),
        });
    }
    let lease = ReaderLease::claim(&dir);
    lease.note(current, st.head.version);
    let journal_end = st.journal.as_ref().map_or(0, |j| j.len());
    let head = Head { version: st.head.version, generation: current, offset: st.head.offset, journal_end };
    let publisher = Publisher::start(
        control,
        ReaderTable::open(&dir)?,
        journal_sync,
        journal_path,
        head,
        options.durability == Durability::Sync,
    );
    let shared = Shared {
        me: std::sync::OnceLock::new(),
        table,
        dir,
        options,
        state: Mutex::new(st),
        publisher,
        compaction_progress: Condvar::new(),
        open: OpenTransactions::default(),
        compactor: Default::default(),
        scrub: match found.scrub {
            Some(input) => super::scrub::Scrub::new(input),
            None => super::scrub::Scrub::clean(),
        },
        lease,
        _lock: lock_file,
    };
    {
        let mut st = crate::locking::lock(&shared.state);
        shared.reclaim_generations(&mut st);
    }
    Ok(shared)
}

/// Whether `name` is one of a store's files.
fn is_store_file(name: &str) -> bool {
    matches!(
        name,
        LOCK_FILE
            | INIT_MARKER
            | "control"
            | "meta"
            | "journal"
            | "readers"
            | "readers.tmp"
            | "settings"
            | "settings.tmp"
    ) || arena::parse_file_name(name).is_some()
}

/// The error for a directory without a whole store: "no store" when it
/// holds none of a store's files, else what is missing.
fn missing_store(dir: &StoreDir) -> Result<Error> {
    if dir.exists(INIT_MARKER)? {
        return Ok(Error::NotFound(dir.path().to_path_buf()));
    }
    if !generations::list(dir)?.is_empty() {
        return Ok(Error::Corrupt {
            file: dir.join(crate::meta::FILE_NAME),
            offset: 0,
            detail: "the checkpoint file is missing but arena files exist".into(),
        });
    }
    Ok(Error::NotFound(dir.path().to_path_buf()))
}

/// What recovery starts from.
struct Found {
    arena: WriterArena,
    head: Commit,
    meta: Meta,
    /// What the head and the versions before it reach, as far as known:
    /// all of the arena, and links, until the scrub has walked them.
    live: tree::Reach,
    /// The version that was published, when the control word could be trusted.
    published: Option<u64>,
    /// What the scrub checks (`None`: a new store, nothing to check).
    scrub: Option<ScrubInput>,
}

/// How long a child between fork and exec may hold a copy of the lock
/// file, at most, as far as opening a store is concerned.
const FORK_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the writer lock (an OFD lock on the first byte of `lock`),
/// waiting up to `wait` for another writer to release it, and records this
/// process's pid in the file.
///
/// A lock this very process recorded is waited for a little longer than
/// `wait`: a store this process closed is still locked while a child it
/// is starting (another thread's `Command::spawn`) holds a copy of the
/// lock file between its fork and its exec, which closes it.
fn take_writer_lock(dir: &StoreDir, wait: std::time::Duration) -> Result<std::fs::File> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(LOCK_FILE);
    let file = dir.open_file(LOCK_FILE, Open::Create(FileKind::Private))?;
    let start = std::time::Instant::now();
    while !sys::try_lock_range(&file, 0, 1).at(&path)? {
        let holder = lock_holder(&file);
        let allowed = if holder == std::process::id() { wait.max(FORK_WINDOW) } else { wait };
        if start.elapsed() >= allowed {
            return Err(Error::Locked { dir: dir.path().to_path_buf(), pid: holder });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // One fixed-width write, never a truncation: whoever reads the pid sees
    // the old one or the new one, never an empty file.
    file.write_all_at(format!("{:<20}\n", std::process::id()).as_bytes(), 0).at(&path)?;
    Ok(file)
}

/// The pid the lock's holder recorded (0 if it cannot be read).
fn lock_holder(file: &std::fs::File) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 21];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    std::str::from_utf8(&buf[..n]).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// A new store, or one whose creation was cut short (the marker is removed
/// only once the first checkpoint is durable, before any commit can
/// exist): starts from nothing.
fn create(dir: &StoreDir, reserve: u64) -> Result<Found> {
    dir.open_file(INIT_MARKER, Open::Create(FileKind::Private))?;
    for g in generations::list(dir)? {
        dir.remove(&arena::file_name(g))?;
    }
    dir.remove(journal::FILE_NAME)?;
    dir.remove(crate::meta::FILE_NAME)?;
    dir.sync()?;
    let arena = WriterArena::create(dir, 1, reserve)?;
    let offset = arena.end();
    let generation = arena.generation();
    arena.append(&node::build_commit(&Commit { offset, time_ns: now_ns(), generation, ..Commit::default() }))?;
    arena.flush()?;
    let head = node::parse_commit(arena.region(), offset).map_err(|d| arena.damaged(d))?;
    arena.sync()?;
    let (mut meta, _) = Meta::open(dir, true)?;
    meta.write(1, offset, 0, head.end)?;
    dir.sync()?;
    dir.remove(INIT_MARKER)?;
    dir.sync()?;
    let live = tree::Reach { bytes: arena.end(), links: false };
    Ok(Found { arena, head, meta, live, published: None, scrub: None })
}

/// A version to start from, with its generation mapped once.
struct Candidate {
    mapped: Arc<MappedGeneration>,
    head: Commit,
    /// Its commit record and those of the versions before it, checked.
    chain: Vec<Commit>,
}

/// Maps `generation`, checks that it holds the version at `offset` ending
/// at `end`, and checks the commit records of it and the versions before
/// it. The nodes they reach are checked as they are read, and all of them
/// by the scrub after open.
fn candidate(dir: &StoreDir, generation: u64, offset: u64, end: u64) -> Result<Candidate> {
    let mapped = arena::open_for_writer(dir, generation)?;
    if end > mapped.file().metadata().at(&mapped.path)?.len() {
        return Err(mapped.corrupt(end, "arena file shorter than the version it holds"));
    }
    let region = mapped.region(end)?;
    let head = node::parse_commit(region, offset).map_err(|d| d.into_error(&mapped.path))?;
    if head.generation != generation {
        return Err(mapped.corrupt(offset, "commit record written for another generation"));
    }
    let chain = retained::newest(region, head, usize::MAX, &mapped.path)?;
    Ok(Candidate { mapped, head, chain })
}

/// Checks every node the candidate's versions reach at or above `floor`,
/// and their change sets.
fn check_since_checkpoint(candidate: &Candidate, floor: u64) -> Result<()> {
    let mapped = &candidate.mapped;
    let region = mapped.region(candidate.head.end)?;
    let damaged = |d: node::Damage| d.into_error(&mapped.path);
    let roots: Vec<u64> = candidate.chain.iter().map(|c| c.root).collect();
    tree::verify_above(region, &roots, floor).map_err(damaged)?;
    for commit in candidate.chain.iter().filter(|c| c.changes != 0 && c.changes >= floor) {
        node::verified_node_at(region.bytes(), commit.changes, node::KIND_CHANGES).map_err(damaged)?;
    }
    Ok(())
}

/// Picks the newest trustworthy version (see the module docs) and returns
/// the arena positioned above every byte a live reader may read.
fn recover(dir: &StoreDir, control: &Control) -> Result<Found> {
    let (meta, meta_state) = Meta::open(dir, false)?;
    if meta_state.latest.is_none() && meta_state.damaged_slots > 0 && control.current().is_none() {
        return Err(Error::Corrupt { file: meta.path.clone(), offset: 0, detail: "no valid checkpoint slot".into() });
    }
    let files = generations::list(dir)?;
    // A writer of this boot failed a durability step: what it published may
    // not be on disk, and a sync now would not say so. Recovered from the
    // checkpoint and the journal, as after a reboot.
    let poisoned = control.poisoned_this_boot();
    if poisoned {
        tracing::warn!("the last writer failed a durability step; recovering from the checkpoint and the journal");
    }
    // The published version, when the page cache that holds it survived
    // (the control file was claimed this boot).
    let published = match control.current().filter(|_| !poisoned) {
        Some((generation, offset)) if files.contains(&generation) => {
            match candidate(dir, generation, offset, offset + node::COMMIT_BYTES as u64) {
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
        Some(c) if files.contains(&c.generation) => {
            let found = candidate(dir, c.generation, c.commit_offset, c.end)?;
            if found.head.version != c.version {
                return Err(Error::Corrupt {
                    file: meta.path.clone(),
                    offset: 0,
                    detail: format!(
                        "checkpoint names version {} but its record holds {}",
                        c.version, found.head.version
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
    // A published version newer than the checkpoint holds nodes no
    // checkpoint covered, which only the page cache kept: those are
    // checked now (their count grows with the commits since the
    // checkpoint, not with the store), and a damaged one means recovering
    // from the checkpoint and the journal instead, as if the page cache
    // were lost.
    let published = match (published, &checkpoint) {
        (Some(p), Some(c)) if (p.head.version, p.mapped.generation) > (c.head.version, c.mapped.generation) => {
            let floor = if p.mapped.generation == c.mapped.generation { c.head.end } else { 0 };
            match check_since_checkpoint(&p, floor) {
                Ok(()) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "the published version is damaged since the checkpoint; recovering from the checkpoint");
                    None
                }
            }
        }
        (Some(p), None) => {
            check_since_checkpoint(&p, 0)?;
            Some(p)
        }
        (p, _) => p,
    };
    let published_at = published.as_ref().map(|p| (p.mapped.generation, p.head.end, p.head.version));
    let chosen = match (published, checkpoint) {
        (Some(p), Some(c)) => {
            if (p.head.version, p.mapped.generation) >= (c.head.version, c.mapped.generation) {
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
    let generation = chosen.mapped.generation;
    let head = chosen.head;
    // Resume appending above anything a live reader may be reading: the
    // published end when it is known. When the published word cannot be
    // trusted (another boot wrote it, or it is damaged), no reader of this
    // boot can have read past the end it names, capped by the file.
    let file_len = chosen.mapped.file().metadata().at(&chosen.mapped.path)?.len();
    let cursor = match published_at {
        Some((g, end, _)) if g == generation => head.end.max(end),
        Some(_) => head.end,
        // Readers of this boot may hold versions of this generation newer
        // than the one recovered: nothing below the file's end is reused.
        None if poisoned => head.end.max(file_len),
        None => match control.current_untrusted() {
            Some((g, offset)) if g == generation => {
                head.end.max(offset.saturating_add(node::COMMIT_BYTES as u64).min(file_len))
            }
            _ => head.end,
        },
    };
    let scrub = ScrubInput { mapped: chosen.mapped.clone(), end: head.end, chain: chosen.chain };
    let arena = WriterArena::resume(chosen.mapped, cursor)?;
    // Until the scrub has measured them: every byte live, links possible.
    let live = tree::Reach { bytes: arena.end(), links: true };
    Ok(Found { arena, head, meta, live, published: published_at.map(|(_, _, v)| v), scrub: Some(scrub) })
}

/// Applies the journal records after the head, which must continue it.
fn replay_journal(dir: &StoreDir, st: &mut WriterState, records: Vec<Record>) -> Result<()> {
    for record in records {
        if record.version <= st.head.version {
            continue;
        }
        if record.version != st.head.version + 1 {
            return Err(Error::Corrupt {
                file: dir.join(journal::FILE_NAME),
                offset: 0,
                detail: format!("journal continues at version {} after version {}", record.version, st.head.version),
            });
        }
        let ops = prepare_ops(&st.arena, st.head.root, record.ops, false)?;
        if ops.iter().any(Op::is_copy) {
            st.links = true;
            st.links_added = true;
        }
        st.head = apply_ops(&st.arena, st.head, &ops, record.time_ns, st.links, &mut ApplyReport::default())?;
    }
    Ok(())
}
