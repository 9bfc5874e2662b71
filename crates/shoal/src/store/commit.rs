//! Commits: transactions and bulk loads turned into versions under the
//! writer mutex (conflict check, apply, journal append), then published
//! (at once, or once the journal sync covering them returns).

use super::batch::{apply_ops, load_into_empty, prepare_ops};
use super::load::Load;
use super::publish::Head;
use super::{now_ns, Shared, WriterState};
use crate::build::{ApplyReport, Op};
use crate::error::{Error, Result};
use crate::journal::{self, JournalOp};
use crate::locking::lock;
use crate::options::Durability;
use crate::path;
use crate::snapshot::Snapshot;
use crate::txn::{Committer, Transaction, TxnSets};

impl Shared {
    /// Begins a transaction at the newest committed version.
    pub(super) fn begin(&self) -> Transaction<'_> {
        let st = lock(&self.state);
        let base = Snapshot::from_parts(st.arena.mapped.clone(), self.visible_head(&st), &self.lease);
        self.open.begin(base.version());
        drop(st);
        Transaction::new(self, base)
    }

    /// Writes many values as one new version: the fast path for loading.
    /// Missing ancestors are created with empty values; a later duplicate
    /// path wins. Loading nothing makes no new version.
    pub(super) fn bulk_load<P: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (P, V)>,
    ) -> Result<u64> {
        // Held while the load lasts, so that values are read where they are.
        let items: Vec<(P, V)> = items.into_iter().collect();
        let load = Load::gather(items.iter().map(|(p, v)| (p.as_ref(), v.as_ref())), |p, v| self.check_value(p, v))?;
        if load.is_empty() {
            return Ok(lock(&self.state).head.version);
        }
        self.commit_batch(None, Batch::Load(&load))
    }

    fn commit_ops(&self, sets: Option<&TxnSets>, jops: Vec<JournalOp>) -> Result<u64> {
        self.commit_batch(sets, Batch::Ops(jops))
    }

    fn commit_batch(&self, sets: Option<&TxnSets>, batch: Batch<'_>) -> Result<u64> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        self.publisher.check()?;
        self.scrub.update(st);
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
                self.publisher.wait_durable(version)?;
                return Ok(version);
            }
        }
        // Damage the scrub found is not built on (a read-only transaction
        // builds nothing).
        self.scrub.check()?;
        let journal_bytes: usize = match &batch {
            Batch::Ops(jops) => jops
                .iter()
                .map(|op| match op {
                    JournalOp::Put { key, value } => 8 + key.len() + value.len(),
                    JournalOp::Copy { key, from } | JournalOp::CopyTree { key, from } => 8 + key.len() + from.len(),
                    JournalOp::Delete { key } | JournalOp::DeleteTree { key } => 8 + key.len(),
                })
                .sum(),
            Batch::Load(load) => load.journal_bytes(),
        };
        if journal_bytes > journal::MAX_RECORD_BYTES {
            return Err(Error::TransactionTooLarge { bytes: journal_bytes, max: journal::MAX_RECORD_BYTES });
        }
        let time_ns = now_ns();
        let (version, mark) = (st.head.version + 1, self.publisher.synced_mark());
        let record = st.journal.is_some().then(|| match &batch {
            Batch::Ops(jops) => journal::encode(version, time_ns, mark, jops),
            Batch::Load(load) => journal::encode_puts(version, time_ns, mark, load.len(), load.iter()),
        });
        // A load into an empty tree is written bottom-up; anything else is
        // merged into the tree as ops.
        let (jops, load) = match batch {
            Batch::Load(load) if st.head.root == 0 => (Vec::new(), Some(load)),
            Batch::Load(load) => (load.journal_ops(), None),
            Batch::Ops(jops) => (jops, None),
        };
        // A transaction read its ancestors at its base: if that is the head,
        // it created the missing ones, and the batch needs no lookup of them.
        let ancestors_known = sets.is_some_and(|s| s.base_version == st.head.version);
        let ops =
            if load.is_none() { prepare_ops(&st.arena, st.head.root, jops, ancestors_known)? } else { Vec::new() };
        let mut report = ApplyReport::default();
        // On failure nothing is published; nodes already appended stay behind
        // unreachable, as garbage for the next compaction.
        if ops.iter().any(Op::is_copy) {
            st.links = true;
            st.links_added = true;
        }
        let arena_before = st.arena.end();
        let applied = match load {
            Some(load) => load_into_empty(&st.arena, st.head, load, time_ns),
            None => apply_ops(&st.arena, st.head, &ops, time_ns, st.links, &mut report),
        };
        let head = match applied {
            Ok(head) => head,
            Err(e @ Error::ArenaFull { .. }) => {
                // What compaction frees may make room; the commit fails either way.
                let arena_end = st.arena.end();
                drop(guard);
                if self.options.auto_compact {
                    self.schedule_compaction(arena_end);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let (Some(journal), Some(record)) = (st.journal.as_mut(), record) {
            if let Err(e) = journal.append(&record) {
                return Err(self.publisher.poison(e));
            }
        }
        let generation = st.arena.generation();
        let journal_end = st.journal.as_ref().map_or(0, |j| j.len());
        self.publisher.written(Head { version: head.version, generation, offset: head.offset, journal_end });
        if self.options.durability == Durability::None {
            // Poisoned since the check above: the version stays unseen, in
            // this process too (the head does not move).
            self.publisher.publish_written()?;
        }
        st.head = head;
        if load.is_some() {
            // All it wrote is live: it replaced nothing.
            st.live_bytes += st.arena.end() - arena_before;
        }
        let oldest_base = self.open.oldest_base_besides(sets.map(|s| s.base_version));
        if oldest_base.is_some() {
            match load {
                Some(load) => load.each_key(|key, _| {
                    st.tracker.record_created(head.version, key);
                    Ok(true)
                })?,
                None => st.tracker.record(head.version, &ops, &report),
            }
        }
        if oldest_base.is_none() || st.tracker.len() > st.tracker.prune_at {
            st.tracker.prune(oldest_base);
        }
        let compaction_due = self.maintain(st);
        let arena_end = st.arena.end();
        let compaction_threshold = self.compaction_threshold(st);
        // Files freed here are deleted by the next compaction or `reclaim`:
        // unlinking a large file takes milliseconds, not for a commit to pay.
        drop(guard);
        self.publisher.wait_durable(head.version)?;
        if compaction_due {
            self.schedule_compaction(arena_end);
        }
        let reserve = self.options.map_reserve_bytes;
        if arena_end > compaction_threshold.saturating_mul(2).min(reserve - reserve / 4) {
            // Commits are outrunning the background compaction: wait until it
            // switches to the compacted generation (not for the sync and
            // checkpoint after it), so the arena stays within a constant
            // factor of the live data, and within its reservation.
            self.wait_for_switch(generation);
        }
        Ok(head.version)
    }

    /// Checkpoints and frees old generations when due; returns whether a
    /// compaction is due (run by the caller once the writer lock is released).
    fn maintain(&self, st: &mut WriterState) -> bool {
        let journal_big = st.journal.as_ref().is_some_and(|j| j.len() > self.options.checkpoint_journal_bytes);
        if journal_big {
            // The commit is durable through the journal; a failed checkpoint
            // poisons the store (see `publish`), which the commit's wait reports.
            if let Err(e) = self.checkpoint_locked(st) {
                tracing::warn!(error = %e, "checkpoint after a long journal failed");
            }
        }
        if st.generations.reclaim_due() {
            self.reclaim_generations(st);
        }
        self.options.auto_compact && st.arena.end() > self.compaction_threshold(st)
    }

    /// The arena size beyond which a compaction is due (`u64::MAX`: never).
    pub(super) fn compaction_threshold(&self, st: &WriterState) -> u64 {
        if !self.options.auto_compact {
            return u64::MAX;
        }
        // A reservation smaller than twice `compact_min_bytes` would fill up
        // before any compaction became due, and one smaller than
        // `compact_factor` times the live data before the next one: due at
        // three quarters of the reservation at the latest.
        let reserve = self.options.map_reserve_bytes;
        let min = self.options.compact_min_bytes.min(reserve / 2);
        min.max(st.live_bytes.saturating_mul(self.options.compact_factor)).min(reserve - reserve / 4)
    }
}

impl Committer for Shared {
    fn check_value(&self, path: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.options.max_value_bytes {
            return Err(Error::ValueTooLarge {
                path: path.to_string(),
                len: value.len(),
                max: self.options.max_value_bytes,
            });
        }
        Ok(())
    }

    fn commit(&self, sets: &TxnSets) -> Result<u64> {
        self.commit_ops(Some(sets), sets.journal_ops())
    }

    fn end(&self, base: u64) {
        self.open.end(base);
    }
}

/// What a commit writes: a transaction's (or a queue step's) ops, or a bulk load.
enum Batch<'l> {
    Ops(Vec<JournalOp>),
    Load(&'l Load<'l>),
}
