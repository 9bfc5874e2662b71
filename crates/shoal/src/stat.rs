//! Figures about a store: from its writer (`Store::stat`), or from any
//! reader (`Reader::stat`), which takes no lock and writes nothing.

use std::path::Path;

use crate::arena::{self, HEADER_PAGE};
use crate::error::{IoContext, Result};
use crate::node::Region;
use crate::node::{self, Commit, KIND_CHANGES};
use crate::readers::ReaderInfo;
use crate::snapshot::Reader;
use crate::{retained, tree};

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
    /// Bytes of the journal's records, its header included: what a crash
    /// now would replay (the file keeps up to 2 MiB of zeros after them).
    pub journal_bytes: u64,
    pub readers: Vec<ReaderInfo>,
    /// Older generation files still on disk (pinned by live readers, or
    /// not yet deleted).
    pub old_generations: Vec<u64>,
    /// A retired generation's file no reader needs any more, kept so the
    /// next compaction writes into its pages instead of fresh ones (known
    /// to the writer only: `None` in a reader's figures).
    pub spare_generation: Option<u64>,
    /// Where the check of the nodes found at open stands (known to the
    /// writer only: `None` in a reader's figures).
    pub scrub: Option<crate::ScrubState>,
}

/// Walks every node `commits` reach (their records, change sets and trees),
/// once each, checking checksums when `verify`; returns the bytes they
/// occupy (header page included) and whether their trees hold links.
pub(crate) fn walk_reachable(region: Region<'_>, path: &Path, commits: &[Commit], verify: bool) -> Result<tree::Reach> {
    let never = std::sync::atomic::AtomicBool::new(false);
    Ok(walk_reachable_until(region, path, commits, verify, &never)?.expect("never stopped"))
}

/// [`walk_reachable`], given up (`None`) once `stop` is set.
pub(crate) fn walk_reachable_until(
    region: Region<'_>,
    path: &Path,
    commits: &[Commit],
    verify: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<tree::Reach>> {
    let roots: Vec<u64> = commits.iter().map(|c| c.root).collect();
    let damaged = |d: node::Damage| d.into_error(path);
    let Some(reach) = tree::reachable_bytes_until(region, &roots, verify, stop).map_err(damaged)? else {
        return Ok(None);
    };
    let mut changes = 0;
    for commit in commits.iter().filter(|c| c.changes != 0) {
        let set = if verify {
            node::verified_node_at(region.bytes(), commit.changes, KIND_CHANGES)
        } else {
            region.node(commit.changes, KIND_CHANGES)
        };
        changes += set.map_err(damaged)?.len() as u64;
    }
    Ok(Some(tree::Reach {
        bytes: HEADER_PAGE + (commits.len() * node::COMMIT_BYTES) as u64 + reach.bytes + changes,
        ..reach
    }))
}

impl Reader {
    /// Figures about the store, as a reader sees them: the published
    /// version, what the retention policy recorded in the store's settings
    /// keeps of it, the journal's size, the live readers (this one
    /// included) and the older generation files on disk. Takes no lock and
    /// writes nothing, so it works beside a running writer.
    pub fn stat(&self) -> Result<Stat> {
        let snapshot = self.snapshot()?;
        let options = crate::settings::load(self.store_dir())?.unwrap_or_default();
        let region = snapshot.region();
        let path = &snapshot.mapped().path;
        let chain = retained::policy_chain(&options, region, snapshot.commit(), path)?;
        let dir = self.store_dir();
        let journal_bytes = match dir.exists(crate::journal::FILE_NAME)? {
            true => {
                use std::io::Read;
                let mut bytes = Vec::new();
                let mut file = dir.open_file(crate::journal::FILE_NAME, crate::files::Open::Read)?;
                file.read_to_end(&mut bytes).at(&dir.join(crate::journal::FILE_NAME))?;
                crate::journal::records_end(&bytes)
            }
            false => 0,
        };
        let mut old_generations = Vec::new();
        for name in dir.list()? {
            if let Some(g) = arena::parse_file_name(&name).filter(|&g| g < snapshot.generation()) {
                old_generations.push(g);
            }
        }
        old_generations.sort_unstable();
        Ok(Stat {
            version: snapshot.version(),
            generation: snapshot.generation(),
            key_count: snapshot.key_count(),
            arena_bytes: snapshot.commit().end,
            live_bytes: walk_reachable(region, path, &chain, false)?.bytes,
            retained_versions: chain.iter().map(|c| c.version).collect(),
            journal_bytes,
            readers: self.readers()?,
            old_generations,
            spare_generation: None,
            scrub: None,
        })
    }
}
