//! Figures about a store (`stat`) and a full check of its checksums (`verify`).

use std::path::Path;

use super::{retained, Shared};
use crate::arena::HEADER_PAGE;
use crate::error::Result;
use crate::locking::lock;
use crate::node::{self, Commit, KIND_CHANGES};
use crate::readers::ReaderInfo;
use crate::tree;

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

impl Shared {
    /// Figures about the store.
    pub(super) fn stat(&self) -> Result<Stat> {
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
                old_generations: st.generations.old.iter().map(|o| o.generation).collect(),
                spare_generation: st.generations.spare,
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

    /// Checks the checksum of every node the retained versions reach.
    pub(super) fn verify(&self) -> Result<()> {
        let st = lock(&self.state);
        let chain = retained::newest(st.arena.region(), st.head, usize::MAX, &st.arena.mapped.path)?;
        walk_reachable(st.arena.region(), &st.arena.mapped.path, &chain, true).map(|_| ())
    }
}

/// Walks every node `commits` reach (their records, change sets and trees),
/// once each, checking checksums when `verify`; returns the bytes they
/// occupy (header page included) and whether their trees hold links.
pub(super) fn walk_reachable(region: &[u8], path: &Path, commits: &[Commit], verify: bool) -> Result<tree::Reach> {
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
