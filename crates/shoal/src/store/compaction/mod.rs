//! Compaction: what the retention policy keeps, copied into a new arena
//! generation, then switched to.
//!
//! 1. Locked: the head made durable and published; the new file started
//!    (a recycled spare, or a fresh one), under a never-used number.
//! 2. Unlocked: the retained versions up to that head copied (those bytes
//!    of the old generation are immutable, so commits appending above them
//!    do not disturb the copy); then, in rounds, the versions committed
//!    meanwhile (like a live migration's pre-copy).
//! 3. Locked: the few versions left copied, the new generation published.
//!    Until the checkpoint of phase 4, the old checkpoint, the old file and
//!    the untruncated journal still recover every published version.
//! 4. The new file synced unlocked, then, locked, a checkpoint naming the
//!    version that sync covered (never replacing a newer checkpoint); only
//!    then may the old generation be freed.
//!
//! One compaction runs at a time. Automatic ones run on a background
//! thread started by the commit that made them due; a commit waits for one
//! only when the arena has grown to twice the compaction threshold. No
//! compaction starts, and none switches, on a poisoned store.

mod copier;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use copier::Copier;

use super::publish::Head;
use super::Shared;
use crate::arena::{self, MappedGeneration, WriterArena};
use crate::build::NodeSink;
use crate::control;
use crate::error::{Error, Result};
use crate::locking::{lock, wait_timeout};
use crate::node::Region;
use crate::node::{self, Commit, KIND_CHANGES};
use crate::retained;
use crate::sys;

/// Most unlocked catch-up rounds of a compaction before it takes the lock.
const PRECOPY_ROUNDS: usize = 16;
/// A compaction takes the lock for its catch-up once this few versions are left.
const PRECOPY_ENOUGH: u64 = 64;

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

/// A test hook run at a point of the next compaction.
type Hook = Box<dyn FnOnce() + Send>;

/// The compaction thread and what keeps compactions one at a time.
#[derive(Default)]
pub(in crate::store) struct Compactor {
    /// Held by the one compaction that may run at a time.
    running: Mutex<()>,
    /// The background thread, running or finished and not yet joined.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    scheduled: AtomicBool,
    /// Test hook: abort the process in the next compaction, right after it
    /// publishes the new generation and before its checkpoint.
    abort_after_switch: AtomicBool,
    before_checkpoint: Mutex<Option<Hook>>,
    /// Test hook: run by the next compaction before its locked catch-up and switch.
    before_switch: Mutex<Option<Hook>>,
    /// After an automatic compaction failed (out of file descriptors, say):
    /// no other is started before the arena reaches this size. Without it
    /// every commit would start one, fail again, and use up a generation
    /// number each time.
    retry_at_bytes: AtomicU64,
    /// Automatic compactions that failed.
    failures: AtomicU64,
    /// Test hook: the next this many compactions fail before they start.
    fail_next: AtomicU32,
}

impl Compactor {
    /// Waits for the background compaction, if one is running.
    pub fn join(&self) {
        let handle = lock(&self.thread).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Automatic compactions that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn fail_next(&self, count: u32) {
        self.fail_next.store(count, Ordering::Relaxed);
    }

    pub fn abort_after_next_switch(&self) {
        self.abort_after_switch.store(true, Ordering::Relaxed);
    }

    pub fn before_next_checkpoint(&self, hook: Hook) {
        *lock(&self.before_checkpoint) = Some(hook);
    }

    pub fn before_next_switch(&self, hook: Hook) {
        *lock(&self.before_switch) = Some(hook);
    }
}

impl Shared {
    /// See [`crate::Store::compact`].
    pub(in crate::store) fn compact(&self) -> Result<CompactReport> {
        let _running = lock(&self.compactor.running);
        self.compact_now()
    }

    /// Starts a background compaction unless one is scheduled or running,
    /// or the store is poisoned. The commit that found it due has succeeded
    /// whatever happens there.
    ///
    /// After a failure, the next is started only once the arena has grown
    /// by half again (`arena_end`: its size now), so a cause that lasts
    /// (no file descriptors left) costs a few attempts, not one per commit.
    pub(in crate::store) fn schedule_compaction(&self, arena_end: u64) {
        if arena_end < self.compactor.retry_at_bytes.load(Ordering::Acquire) {
            return;
        }
        if self.publisher.check().is_err() || self.compactor.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            self.compactor.scheduled.store(false, Ordering::Release);
            return;
        };
        let mut slot = lock(&self.compactor.thread);
        if let Some(finished) = slot.take() {
            let _ = finished.join();
        }
        let spawned = std::thread::Builder::new().name("shoal-compact".into()).spawn(move || {
            sys::mark_this_thread_batch();
            {
                let _running = lock(&me.compactor.running);
                let failed = match me.compactor.fail_next.load(Ordering::Relaxed) {
                    0 => me.compact_now().err(),
                    n => {
                        me.compactor.fail_next.store(n - 1, Ordering::Relaxed);
                        Some(Error::Io { file: me.dir.path().to_path_buf(), source: std::io::Error::other("injected") })
                    }
                };
                match failed {
                    None => me.compactor.retry_at_bytes.store(0, Ordering::Release),
                    Some(e) => {
                        let retry_at = arena_end.saturating_add(arena_end / 2);
                        me.compactor.retry_at_bytes.store(retry_at, Ordering::Release);
                        me.compactor.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            error = %e,
                            "automatic compaction failed; the next is tried when the arena reaches {retry_at} bytes"
                        );
                    }
                }
            }
            me.compactor.scheduled.store(false, Ordering::Release);
            let _st = lock(&me.state);
            me.compaction_progress.notify_all();
        });
        match spawned {
            Ok(handle) => *slot = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the compaction thread");
                self.compactor.scheduled.store(false, Ordering::Release);
            }
        }
    }

    /// Waits until the store has left `generation` or no background
    /// compaction is under way.
    pub(in crate::store) fn wait_for_switch(&self, generation: u64) {
        let mut st = lock(&self.state);
        while st.arena.generation() == generation && self.compactor.scheduled.load(Ordering::Acquire) {
            // Bounded, in case the thread ends between the check and the wait.
            st = wait_timeout(&self.compaction_progress, st, std::time::Duration::from_millis(10));
        }
    }

    /// The body of a compaction; the caller holds `compactor.running`.
    fn compact_now(&self) -> Result<CompactReport> {
        // Phase 1, locked: make the head durable and published, start the new file.
        let (old, base, new, links) = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            self.publisher.flush()?;
            let from = st.arena.generation();
            let to = self.take_generation_number(st);
            if to > control::MAX_GENERATION {
                return Err(Error::InvalidOption { name: "generation", reason: "generation counter exhausted".into() });
            }
            let reserve = self.options.map_reserve_bytes.next_multiple_of(sys::page_size());
            // A file of that number can only be one a crash left before its
            // number was recorded: nothing reads it.
            let _ = self.dir.remove(&arena::file_name(to));
            // Writing into a retired file's cached, allocated pages costs a
            // copy; fresh pages cost the kernel an allocation, zeroing and
            // block reservation each.
            let new = match st.generations.spare.take() {
                Some(spare) => WriterArena::recycle(&self.dir, spare, to, reserve).or_else(|e| {
                    tracing::warn!(error = %e, spare, "cannot recycle the spare generation file");
                    let _ = self.dir.remove(&arena::file_name(spare));
                    let _ = self.dir.remove(&arena::file_name(to));
                    WriterArena::create(&self.dir, to, reserve)
                })?,
                None => WriterArena::create(&self.dir, to, reserve)?,
            };
            debug_assert!(from < to);
            self.scrub.update(st);
            (st.arena.mapped.clone(), st.head, new, st.links)
        };
        let to = new.generation();
        let mut switched = false;
        // The new file's name (created, or the spare renamed) made durable
        // before the switch: from the switch on, any checkpoint (this
        // compaction's, `Store::checkpoint`, a long journal's) may name it.
        let result = self.dir.sync().and_then(|()| self.compact_into(&old, base, new, &mut switched, links));
        if result.is_err() && !switched {
            let _ = self.dir.remove(&arena::file_name(to));
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
        // Phase 2, unlocked.
        let region = old.region(base.end)?;
        let mut chain = retained::policy_chain(&self.options, region, base, &old.path)?;
        chain.reverse();
        let mut copier = Copier::new(&old.path, &new, links);
        let mut prev = 0;
        let mut versions_kept = 0;
        // The previous copied version's old and new root.
        let mut like = None;
        let mut copy_commits = |region: Region<'_>, commits: &[Commit], prev: &mut u64| -> Result<Commit> {
            let mut last = None;
            for commit in commits {
                let root = if commit.root == 0 { 0 } else { copier.copy(region, commit.root, like)? };
                like = (root != 0).then_some((commit.root, root));
                let changes = match commit.changes {
                    0 => 0,
                    at => new.append(region.node(at, KIND_CHANGES).map_err(|d| d.into_error(&old.path))?)?,
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

        // Phase 2b, unlocked: the versions committed during the previous
        // round, while there are many. Only those the retention policy keeps
        // among them are copied: the others would fall out of retention at
        // the switch anyway. Nothing is synced before the switch: the switch
        // needs no durable byte of the new file (the old checkpoint still
        // recovers every published version), and a sync of a recycled file
        // also writes out the retired generation's dirty pages above the
        // copy, hundreds of milliseconds during which commits would run
        // towards the arena's ceiling (`commit.rs`) instead of into the new file.
        let mut precopy_rounds = 0;
        for _ in 0..PRECOPY_ROUNDS {
            let head = lock(&self.state).head;
            if head.version.saturating_sub(copied.version) <= PRECOPY_ENOUGH {
                break;
            }
            let region = old.region(head.end)?;
            let newer = retained::policy_after(&self.options, region, head, copied.version, &old.path)?;
            copied = copy_commits(region, &newer, &mut prev)?;
            precopy_rounds += 1;
        }
        let hook = lock(&self.compactor.before_switch).take();
        if let Some(hook) = hook {
            hook();
        }

        // Phase 3, locked: catch up with the versions committed meanwhile and
        // switch. The checkpoint still names the old generation, which stays
        // on disk (this function holds `old`, so no reclaim frees it), and
        // the journal is not truncated.
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        self.publisher.flush()?;
        let bytes_before = st.arena.end();
        let region = st.arena.region();
        let newer = retained::policy_after(&self.options, region, st.head, copied.version, &old.path)?;
        let caught_up = newer.len();
        let head = if newer.is_empty() { copied } else { copy_commits(region, &newer, &mut prev)? };
        new.flush()?;
        debug_assert_eq!(head.version, st.head.version);
        let journal_end = st.journal.as_ref().map_or(0, |j| j.len());
        self.publisher.switch(Head { version: head.version, generation: to, offset: head.offset, journal_end })?;
        // From here commits append to the new generation, which must not be deleted.
        *switched = true;
        let bytes_after = new.end();
        let new_file = new.mapped.clone();
        // Dropped once the lock is released: its prefill thread finishes the
        // requests in hand first, which no commit should wait for.
        let retired = std::mem::replace(&mut st.arena, new);
        st.head = head;
        st.live_bytes = bytes_after;
        st.live_bytes_known = true;
        // Tracked from the switch on, so the store's own pin covers the
        // snapshots still reading it even if the checkpoint below fails.
        self.retire(st, from);
        self.compaction_progress.notify_all();
        drop(guard);
        drop(retired);
        if self.compactor.abort_after_switch.load(Ordering::Relaxed) {
            std::process::abort();
        }

        // Phase 4: a checkpoint naming the new generation. It names the head
        // as it was before an unlocked sync, whose bytes that sync made
        // durable, so no commit waits for the sync of what commits appended
        // meanwhile. Journal records after that version stay for replay
        // until a later checkpoint.
        let synced = {
            let st = lock(&self.state);
            self.publisher.flush()?;
            st.arena.flush()?;
            st.head
        };
        self.publisher.sync_arena(new_file.file(), &new_file.path)?;
        let hook = lock(&self.compactor.before_checkpoint).take();
        if let Some(hook) = hook {
            hook();
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // A checkpoint taken meanwhile (`Store::checkpoint`, a long journal)
        // may name a newer version of the new generation: never step back.
        let newer = st.meta.latest().is_some_and(|c| c.generation == to && c.version >= synced.version);
        if !newer {
            self.write_checkpoint(st, synced)?;
            if st.head.version == synced.version {
                self.truncate_journal(st);
            }
        }
        for old in st.generations.old.iter_mut().filter(|o| o.generation == from) {
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
}
