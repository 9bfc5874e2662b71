//! Publication and durability: the one owner of the control word, the
//! group-commit state and the poison state.
//!
//! A version is *written* when its nodes and commit record are in the arena
//! (and, with a journal, its record appended to the journal), and
//! *published* when the control word names it, which is when readers in
//! every process see it. With durability `sync` a version is published only
//! once an `fdatasync` of the journal covering its record has returned:
//! committers wait in [`Publisher::wait_durable`], and the first of them to
//! find no sync running (the leader) runs one sync for everything written
//! so far (group commit).
//!
//! Poison: Linux reports a writeback error once per open file, so after a
//! failed `fdatasync` a later one of the same file may succeed without the
//! lost bytes. The first failed durability step (a journal or arena sync, a
//! checkpoint write) therefore poisons the store: from then on nothing is
//! published, no commit is accepted, no checkpoint written and no compaction
//! started; reopening the store recovers from what is on disk.
//!
//! Invariants, asserted: published ≤ written; written versions are
//! contiguous (each one more than the last), except at a compaction's
//! switch, which re-writes the same version into a newer generation.
//!
//! Lock order: the writer's `state` mutex may be held while this module's
//! lock is taken, never the reverse; nothing here takes another lock.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::locking::lock;
use crate::readers::ReaderTable;

/// How long a committer sleeps for a sync's end before it looks again.
const SYNC_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// A wait that timed out this long after the sync it waited for ended was
/// not woken by that end: a missed wake-up.
const MISSED_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// A version as written or published: where its commit record is, and
/// the journal's length once its record was appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Head {
    pub version: u64,
    pub generation: u64,
    pub offset: u64,
    pub journal_end: u64,
}

/// Whom the end of a sync wakes (see `Publisher::sync_ends`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The committers it covered, and one of those it did not.
    Covered,
    /// Every waiting committer: the store is poisoned.
    Everyone,
}

/// Which syncs a test makes fail (see [`Publisher::inject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFault {
    /// `fdatasync` of the journal.
    Journal,
    /// `fdatasync` of an arena generation file (checkpoints, compaction).
    Arena,
}

#[derive(Default)]
struct State {
    written: Head,
    published: u64,
    /// Where the published version's record is.
    published_head: Head,
    /// A committer is running the journal `fdatasync`.
    syncing: bool,
    /// Journal syncs begun (the running one's number while `syncing`).
    sync_number: u64,
    /// The newest version the running sync covers.
    sync_target: u64,
    /// Why the store refuses to go on, after a failed durability step.
    poisoned: Option<String>,
    /// How far the journal is known durable (see `journal`).
    synced_mark: u64,
    /// Bumped when the journal is emptied: a sync begun before then must
    /// not store its (now too high) mark.
    journal_epoch: u64,
}

pub(super) struct Publisher {
    control: Control,
    /// Durability `sync`: a version is published only once its journal
    /// record is durable, so the checkpoint and the journal hold every
    /// published version, and a poison is recorded in the control file
    /// for the next writer of this boot to recover from them
    /// ([`Control::mark_poisoned`]). With durability `none` the next writer
    /// trusts the page cache: recovering from the disk would take published
    /// versions back, and their numbers would be reused.
    journaled: bool,
    /// The reader table's count of sleeping readers decides whether a
    /// publication makes the futex wake-up call.
    table: ReaderTable,
    /// A handle on the journal for syncing outside the writer mutex (`sync`),
    /// and one for storing the synced mark in its header.
    journal: Option<(File, File)>,
    journal_path: PathBuf,
    state: Mutex<State>,
    /// `State::published`, for committers to check without the lock: a
    /// group's committers wake together, and each taking the lock only to
    /// learn that it may return made them queue on it.
    published_version: AtomicU64,
    /// Futex words, bumped under the state lock, that committers sleep on:
    /// `sync_ends[n % 2]` when sync `n` ends (all its waiters are woken),
    /// `sync_ends[(n + 1) % 2]` then too if versions it did not cover wait
    /// (one of their committers is woken to lead the next sync; the others
    /// sleep on until that one ends). Waking only whom a sync's end concerns
    /// spares the others a wake-up and a sleep each.
    sync_ends: [AtomicU32; 2],
    /// Waits for a sync's end that ran out their timeout although the sync
    /// they waited for had ended well before: a wake-up that went missing
    /// (tests assert there are none).
    missed_wakeups: AtomicU64,
    /// The number of the last sync whose waiters were all woken (every
    /// sync's, once the store is poisoned), and when, in ns since `started`.
    last_end: AtomicU64,
    last_end_ns: AtomicU64,
    started: std::time::Instant,
    /// Held by the one arena sync that may run at a time.
    arena_syncs: Mutex<()>,
    /// Syncs a test asked to fail, per kind.
    fail_journal_syncs: AtomicU32,
    fail_arena_syncs: AtomicU32,
}

impl Publisher {
    /// Publishes `head`, the recovered version, and claims the control word
    /// for this writer and boot.
    pub fn start(
        control: Control,
        table: ReaderTable,
        journal: Option<(File, File)>,
        journal_path: PathBuf,
        head: Head,
        journaled: bool,
    ) -> Self {
        let pid = std::process::id();
        control.claim(head.generation, head.offset, pid, crate::sys::process_start_time(pid).unwrap_or(0));
        control.wake_sleepers(&table);
        Publisher {
            control,
            journaled,
            table,
            journal,
            journal_path,
            state: Mutex::new(State {
                written: head,
                published: head.version,
                published_head: head,
                syncing: false,
                sync_number: 0,
                sync_target: 0,
                poisoned: None,
                // What the journal holds at open was synced by opening it.
                synced_mark: head.journal_end.max(crate::journal::HEADER),
                journal_epoch: 0,
            }),
            published_version: AtomicU64::new(head.version),
            sync_ends: [AtomicU32::new(0), AtomicU32::new(0)],
            missed_wakeups: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            last_end_ns: AtomicU64::new(0),
            started: std::time::Instant::now(),
            arena_syncs: Mutex::new(()),
            fail_journal_syncs: AtomicU32::new(0),
            fail_arena_syncs: AtomicU32::new(0),
        }
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The error of an earlier failed durability step, if there was one.
    pub fn check(&self) -> Result<()> {
        match &lock(&self.state).poisoned {
            Some(reason) => Err(self.poisoned_error(reason)),
            None => Ok(()),
        }
    }

    fn poisoned_error(&self, reason: &str) -> Error {
        Error::Io {
            file: self.journal_path.parent().map(PathBuf::from).unwrap_or_default(),
            source: std::io::Error::other(format!(
                "the store refuses writes after a failed durability step; reopen it to recover: {reason}"
            )),
        }
    }

    /// The newest published version.
    pub fn published(&self) -> Head {
        let st = lock(&self.state);
        Head { version: st.published, ..st.published_head }
    }

    /// Records a failed durability step (see the module docs) and returns it.
    pub fn poison(&self, error: Error) -> Error {
        let mut st = lock(&self.state);
        if st.poisoned.is_none() {
            tracing::error!(%error, "store poisoned: a durability step failed");
            st.poisoned = Some(error.to_string());
            if self.journaled {
                self.control.mark_poisoned();
            }
        }
        self.end_waits(st, Wake::Everyone);
        error
    }

    /// Records that `head` is written. Called with the writer mutex held, in
    /// version order.
    pub fn written(&self, head: Head) {
        let mut st = lock(&self.state);
        assert!(
            head.version == st.written.version + 1
                || (head.version == st.written.version && head.generation > st.written.generation),
            "versions written out of order: {head:?} after {:?}",
            st.written
        );
        st.written = head;
    }

    /// Durability `none`: publishes the newest written version now.
    pub fn publish_written(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if let Some(reason) = &st.poisoned {
            return Err(self.poisoned_error(reason));
        }
        let head = st.written;
        self.publish_locked(&mut st, head);
        Ok(())
    }

    /// Stores the control word: readers see `head` from now on.
    fn publish_locked(&self, st: &mut State, head: Head) {
        assert!(
            st.published <= head.version && head.version <= st.written.version,
            "publishing {head:?} with {} published and {:?} written",
            st.published,
            st.written
        );
        self.control.publish(head.generation, head.offset);
        self.control.wake_sleepers(&self.table);
        st.published = head.version;
        st.published_head = head;
        self.published_version.store(head.version, Ordering::Release);
    }

    /// Marks a journal sync as running, covering what is written now.
    fn begin_sync(st: &mut State) {
        st.syncing = true;
        st.sync_number += 1;
        st.sync_target = st.written.version;
    }

    /// Called with the state lock, after sync `st.sync_number` ended or the
    /// store was poisoned: releases the lock and wakes the committers the
    /// end concerns (see `sync_ends`).
    fn end_waits(&self, st: std::sync::MutexGuard<'_, State>, wake: Wake) {
        let n = st.sync_number as usize;
        let (ended, next) = (&self.sync_ends[n % 2], &self.sync_ends[(n + 1) % 2]);
        let last = if wake == Wake::Everyone { st.sync_number + 1 } else { st.sync_number };
        self.last_end_ns.store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.last_end.store(last, Ordering::Release);
        // Bumped under the lock: a waiter that read a word under the lock
        // before this either sleeps on a changed word (and returns at once)
        // or is woken below.
        ended.fetch_add(1, Ordering::Release);
        let uncovered = wake == Wake::Everyone || st.written.version > st.published;
        if uncovered {
            next.fetch_add(1, Ordering::Release);
        }
        drop(st);
        crate::sys::futex_wake_all_in_process(ended);
        match wake {
            Wake::Everyone => crate::sys::futex_wake_all_in_process(next),
            Wake::Covered if uncovered => crate::sys::futex_wake_one_in_process(next),
            Wake::Covered => {}
        }
    }

    /// Releases the state lock and sleeps until the running sync ends, or,
    /// when it does not cover `version`, until this committer is woken to
    /// lead the next one or that one ends (see `sync_ends`).
    fn wait_for_sync_end(&self, st: std::sync::MutexGuard<'_, State>, version: u64) {
        let n = st.sync_number as usize;
        let (word, awaited) = if version <= st.sync_target {
            (&self.sync_ends[n % 2], st.sync_number)
        } else {
            (&self.sync_ends[(n + 1) % 2], st.sync_number + 1)
        };
        let seen = word.load(Ordering::Acquire);
        drop(st);
        // The timeout only bounds a wake-up that went missing; a sync that
        // takes longer is waited for again.
        let woken = crate::sys::futex_wait_in_process(word, seen, SYNC_WAIT_LIMIT);
        if !woken {
            // Missed: the sync waited for ended, or none runs (this committer
            // should have been woken to lead one), and not just as the
            // timeout ran out.
            let leaderless = !lock(&self.state).syncing;
            let since_end =
                (self.started.elapsed().as_nanos() as u64).saturating_sub(self.last_end_ns.load(Ordering::Relaxed));
            if (leaderless || self.last_end.load(Ordering::Acquire) >= awaited)
                && since_end > MISSED_AFTER.as_nanos() as u64
            {
                self.missed_wakeups.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits for a sync's end that timed out although the sync had ended.
    pub fn missed_wakeups(&self) -> u64 {
        self.missed_wakeups.load(Ordering::Relaxed)
    }

    /// Group commit: waits until `version` is durable and published, leading
    /// one journal `fdatasync` if nobody else is (no journal: at once).
    pub fn wait_durable(&self, version: u64) -> Result<()> {
        let Some((journal, _)) = &self.journal else {
            // Published at commit; a version that was not is behind a poison.
            let st = lock(&self.state);
            return match &st.poisoned {
                Some(reason) if st.published < version => Err(self.poisoned_error(reason)),
                _ => Ok(()),
            };
        };
        loop {
            // Published means durable, even if a later step failed since.
            if self.published_version.load(Ordering::Acquire) >= version {
                return Ok(());
            }
            let mut st = lock(&self.state);
            if st.published >= version {
                return Ok(());
            }
            if let Some(reason) = &st.poisoned {
                return Err(self.poisoned_error(reason));
            }
            if st.syncing {
                self.wait_for_sync_end(st, version);
                continue;
            }
            Self::begin_sync(&mut st);
            let (target, epoch) = (st.written, st.journal_epoch);
            drop(st);
            let result = self.sync_file(journal, SyncFault::Journal).at(&self.journal_path);
            st = lock(&self.state);
            st.syncing = false;
            match result {
                // What this sync covered, not what was written since.
                Ok(()) if st.poisoned.is_none() => {
                    if epoch == st.journal_epoch {
                        self.note_synced(&mut st, target.journal_end);
                    }
                    if target.version > st.published {
                        self.publish_locked(&mut st, target);
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "store poisoned: a journal sync failed");
                    st.poisoned = Some(e.to_string());
                }
            }
            let wake = if st.poisoned.is_some() { Wake::Everyone } else { Wake::Covered };
            self.end_waits(st, wake);
        }
    }

    /// Makes everything written durable (journal sync) and published:
    /// before a checkpoint or a compaction's switch. Called with the writer
    /// mutex held, so nothing is written meanwhile.
    pub fn flush(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if let Some((journal, _)) = &self.journal {
            // One sync of the journal at a time: of two overlapping syncs of
            // one open file only one is told of a writeback error, and the
            // other must not publish on its success before the poison is set.
            while st.syncing && st.poisoned.is_none() {
                // The running sync's end, whatever it covers.
                self.wait_for_sync_end(st, 0);
                st = lock(&self.state);
            }
            if let Some(reason) = &st.poisoned {
                return Err(self.poisoned_error(reason));
            }
            Self::begin_sync(&mut st);
            drop(st);
            let result = self.sync_file(journal, SyncFault::Journal).at(&self.journal_path);
            st = lock(&self.state);
            st.syncing = false;
            if let Err(e) = result {
                tracing::error!(error = %e, "store poisoned: a journal sync failed");
                st.poisoned = Some(e.to_string());
                self.end_waits(st, Wake::Everyone);
                return Err(e);
            }
            let end = st.written.journal_end;
            self.note_synced(&mut st, end);
        }
        if let Some(reason) = &st.poisoned {
            let error = self.poisoned_error(reason);
            self.end_waits(st, Wake::Everyone);
            return Err(error);
        }
        if st.written.version > st.published {
            let head = st.written;
            self.publish_locked(&mut st, head);
        }
        self.end_waits(st, Wake::Covered);
        Ok(())
    }

    /// Raises the synced mark to `end` and stores it in the journal's
    /// header (durable with the next sync; see `journal`).
    fn note_synced(&self, st: &mut State, end: u64) {
        if end > st.synced_mark {
            st.synced_mark = end;
            if let Some((_, mark)) = &self.journal {
                // A mark that did not reach the header only makes recovery
                // treat more damage as a torn tail.
                if let Err(e) = crate::journal::store_mark(mark, end) {
                    tracing::warn!(error = %e, "cannot store the journal's synced mark");
                }
            }
        }
    }

    /// How far the journal is known durable, for the next record.
    pub fn synced_mark(&self) -> u64 {
        lock(&self.state).synced_mark
    }

    /// Called, with the writer mutex held, right before the journal is
    /// emptied: syncs under way must not store their marks after it.
    pub fn journal_truncating(&self) {
        let mut st = lock(&self.state);
        st.journal_epoch += 1;
        st.synced_mark = crate::journal::HEADER;
        st.written.journal_end = crate::journal::HEADER;
    }

    /// A compaction's switch: publishes `head`, the flushed newest version
    /// copied into a newer generation. Refused on a poisoned store.
    pub fn switch(&self, head: Head) -> Result<()> {
        let mut st = lock(&self.state);
        if let Some(reason) = &st.poisoned {
            return Err(self.poisoned_error(reason));
        }
        assert!(
            head.version == st.written.version && st.published == head.version,
            "a switch to {head:?} that is not the flushed head {:?}",
            st.written
        );
        st.written = head;
        self.publish_locked(&mut st, head);
        Ok(())
    }

    /// `fdatasync` of an arena file, through the fault hook; a failure
    /// poisons the store.
    /// One at a time, for the reason `flush` gives: a checkpoint's sync and
    /// compaction's unlocked one may concern the same open file.
    pub fn sync_arena(&self, file: &File, path: &std::path::Path) -> Result<()> {
        let _one_at_a_time = lock(&self.arena_syncs);
        self.check()?;
        self.sync_file(file, SyncFault::Arena).at(path).map_err(|e| self.poison(e))
    }

    fn sync_file(&self, file: &File, kind: SyncFault) -> std::io::Result<()> {
        let injected = match kind {
            SyncFault::Journal => &self.fail_journal_syncs,
            SyncFault::Arena => &self.fail_arena_syncs,
        };
        if injected.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        rustix::fs::fdatasync(file).map_err(Into::into)
    }

    /// Test hook: the next `count` syncs of `kind` fail with EIO.
    pub fn inject(&self, kind: SyncFault, count: u32) {
        match kind {
            SyncFault::Journal => self.fail_journal_syncs.store(count, Ordering::Release),
            SyncFault::Arena => self.fail_arena_syncs.store(count, Ordering::Release),
        }
    }
}
