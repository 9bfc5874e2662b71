//! The writer's figures about its store (`stat`) and a full check of its
//! checksums (`verify`).

use crate::error::Result;
use crate::locking::lock;
use crate::retained;
use crate::stat::{walk_reachable, Stat};

use super::Shared;

impl Shared {
    /// Figures about the store.
    pub(super) fn stat(&self) -> Result<Stat> {
        // Figures of the moment under the lock; the walks of the chain and of
        // the tree after it (holding the mapping, so it stays readable).
        let (mapped, head, mut stat) = {
            let st = lock(&self.state);
            let head = self.visible_head(&st);
            let stat = Stat {
                version: head.version,
                generation: st.arena.generation(),
                key_count: head.key_count,
                arena_bytes: st.arena.end(),
                live_bytes: 0,
                retained_versions: Vec::new(),
                journal_bytes: st.journal.as_ref().map_or(0, |j| j.len()),
                readers: Vec::new(),
                old_generations: st.generations.old.iter().map(|o| o.generation).collect(),
                spare_generation: st.generations.spare,
                scrub: Some(self.scrub.state()),
            };
            (st.arena.mapped.clone(), head, stat)
        };
        let region = mapped.region(head.end)?;
        let chain = retained::policy_chain(&self.options, region, head, &mapped.path)?;
        stat.live_bytes = walk_reachable(region, &mapped.path, &chain, false)?.bytes;
        stat.retained_versions = chain.iter().map(|c| c.version).collect();
        stat.readers = self.readers()?;
        Ok(stat)
    }

    /// Checks the checksum of every node the retained versions reach.
    pub(super) fn verify(&self) -> Result<()> {
        let st = lock(&self.state);
        let chain = retained::newest(st.arena.region(), st.head, usize::MAX, &st.arena.mapped.path)?;
        walk_reachable(st.arena.region(), &st.arena.mapped.path, &chain, true).map(|_| ())
    }
}
