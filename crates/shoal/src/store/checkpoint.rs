//! Checkpoints: the head made durable without the journal. The arena is
//! synced, then a `meta` slot names the head, then the journal is emptied;
//! a crash between any two steps leaves the old checkpoint and a journal
//! holding every later record, or the new checkpoint and records it already
//! covers (skipped by version on replay).

use super::{Shared, WriterState};
use crate::error::Result;
use crate::node::Commit;

impl Shared {
    /// Writes a checkpoint naming the head. The caller holds the writer mutex.
    pub(super) fn checkpoint_locked(&self, st: &mut WriterState) -> Result<()> {
        self.publisher.flush()?;
        st.arena.flush()?;
        self.publisher.sync_arena(st.arena.mapped.file(), &st.arena.mapped.path)?;
        self.write_checkpoint(st, st.head)?;
        self.truncate_journal(st);
        Ok(())
    }

    /// Records `commit` (durable already) in `meta`; a failure poisons.
    pub(super) fn write_checkpoint(&self, st: &mut WriterState, commit: Commit) -> Result<()> {
        self.publisher.check()?;
        let generation = st.arena.generation();
        debug_assert_eq!(commit.generation, generation);
        match st.meta.write(generation, commit.offset, commit.version, commit.end) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.publisher.poison(e)),
        }
    }
}

impl Shared {
    /// Empties the journal after a checkpoint naming the head. Records at
    /// or below the checkpoint are skipped on replay, so a journal that
    /// failed to shrink is longer, not wrong.
    ///
    /// A failure (of its `fdatasync` above all) poisons: the journal's file
    /// can no longer be trusted to hold what later syncs claim.
    pub(super) fn truncate_journal(&self, st: &mut WriterState) {
        if let Some(journal) = st.journal.as_mut() {
            self.publisher.journal_truncating();
            if let Err(e) = journal.truncate() {
                self.publisher.poison(e);
            }
        }
    }
}
