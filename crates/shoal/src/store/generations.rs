//! Arena generation files: numbering, and freeing the old ones.
//!
//! Generation numbers are never reused within a boot: a reader caches its
//! mapping of a generation by number, so a new file under an old number
//! could be read through an idle reader's mapping of the unlinked old one.
//! The highest number ever created is recorded in the control file before
//! the file is created (readers of an earlier boot are gone, so the count
//! need not survive a reboot), and a new generation takes the next number
//! above it and above every file in the directory.
//!
//! An old generation is freed when no live reader pins it and no snapshot
//! of the writer's process holds it: the newest freed file becomes the
//! spare that the next compaction recycles (its pages are allocated and
//! cached), the others are deleted off the commit path.

use super::{Shared, WriterState};
use crate::arena;
use crate::error::Result;
use crate::files::StoreDir;
use crate::locking::lock;

/// Commits between two automatic scans for generations to free.
const RECLAIM_EVERY_COMMITS: u64 = 1024;

pub(super) struct OldGeneration {
    pub generation: u64,
    /// The checkpoint may still name it (a compaction switched away from it
    /// and has not yet written the checkpoint naming the new one): never freed.
    pub named_by_checkpoint: bool,
}

#[derive(Default)]
pub(super) struct Generations {
    /// Older generation files that readers may still need.
    pub old: Vec<OldGeneration>,
    /// A retired generation file nothing reads any more: the next compaction
    /// recycles it.
    pub spare: Option<u64>,
    /// Freed generation files to delete once the writer mutex is released
    /// (unlinking a large file takes milliseconds).
    pub doomed: Vec<u64>,
    /// The highest generation number ever created (this boot, as far as known).
    pub highest: u64,
    pub commits_since_reclaim: u64,
}

impl Generations {
    /// Counts a commit; true when an automatic scan is due.
    pub fn reclaim_due(&mut self) -> bool {
        self.commits_since_reclaim += 1;
        !self.old.is_empty() && self.commits_since_reclaim >= RECLAIM_EVERY_COMMITS
    }

    /// The number for a new generation: above every one ever created.
    pub fn next_number(&self, current: u64) -> u64 {
        let next = self.highest.max(current) + 1;
        debug_assert!(next > current);
        next
    }
}

/// The generation numbers of the arena files in `dir`, ascending.
pub(super) fn list(dir: &StoreDir) -> Result<Vec<u64>> {
    let mut gens: Vec<u64> = dir.list()?.iter().filter_map(|name| arena::parse_file_name(name)).collect();
    gens.sort_unstable();
    Ok(gens)
}

/// Deletes the files [`Shared::reclaim_generations`] freed; called without
/// the writer mutex. Nothing reads them, and generation numbers only grow,
/// so no new file can take their names meanwhile. A file left behind (a
/// failed or unfinished deletion) is found again as an old generation at
/// the next open.
pub(super) fn delete(dir: &StoreDir, doomed: Vec<u64>) {
    for g in doomed {
        if let Err(e) = dir.remove(&arena::file_name(g)) {
            tracing::warn!(generation = g, error = %e, "cannot delete old generation");
        }
    }
}

impl Shared {
    /// Records a new generation number as used before its file is created.
    pub(super) fn take_generation_number(&self, st: &mut WriterState) -> u64 {
        let next = st.generations.next_number(st.arena.generation());
        st.generations.highest = next;
        self.publisher.control().note_generation(next);
        next
    }

    /// Tracks `generation`, the one a compaction just switched away from.
    pub(super) fn retire(&self, st: &mut WriterState, generation: u64) {
        st.generations.old.push(OldGeneration { generation, named_by_checkpoint: true });
    }

    /// Frees old generation files that no mapping pins (a reader's or one
    /// of this process's snapshots, see the pin protocol in
    /// [`crate::arena`]): the newest becomes the spare that the next
    /// compaction recycles, the others are deleted. A reader only maps the
    /// published generation anew, so an old one nobody pins is never read
    /// again, and rewriting its file is safe.
    pub(super) fn reclaim_generations(&self, st: &mut WriterState) {
        let gens = &mut st.generations;
        gens.commits_since_reclaim = 0;
        if gens.old.is_empty() {
            return;
        }
        let mut freed = Vec::new();
        let dir = &self.dir;
        gens.old.retain(|old| {
            let needed = old.named_by_checkpoint || arena::in_use(dir, old.generation).unwrap_or_else(|e| {
                tracing::warn!(error = %e, generation = old.generation, "cannot probe a generation's pins; keeping it");
                true
            });
            if !needed {
                freed.push(old.generation);
            }
            needed
        });
        // Keep the newest free file: the most recently written, so the most
        // likely still cached.
        freed.extend(gens.spare.take());
        gens.spare = freed.iter().copied().max();
        let spare = gens.spare;
        gens.doomed.extend(freed.into_iter().filter(|&g| Some(g) != spare));
    }

    /// Frees old generation files whose readers have gone and deletes them;
    /// returns the ones still needed.
    pub(super) fn reclaim(&self) -> Vec<u64> {
        let mut st = lock(&self.state);
        self.reclaim_generations(&mut st);
        let doomed = std::mem::take(&mut st.generations.doomed);
        let needed = st.generations.old.iter().map(|o| o.generation).collect();
        drop(st);
        delete(&self.dir, doomed);
        needed
    }
}
