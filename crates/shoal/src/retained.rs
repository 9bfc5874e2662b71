//! Which versions of the commit chain the retention policy keeps: what a
//! compaction copies and what `stat` reports (writer or reader).

use std::path::Path;

use crate::error::Result;
use crate::node::Region;
use crate::node::{self, Commit};
use crate::options::Options;
use crate::retention;

/// The newest `count` versions of the chain from `head`, newest first.
pub fn newest(region: Region<'_>, head: Commit, count: usize, path: &Path) -> Result<Vec<Commit>> {
    node::chain(region, head).take(count).collect::<node::Parse<_>>().map_err(|d| d.into_error(path))
}

/// The newest `count` versions after version `after` up to `head`, oldest first.
fn newest_after(region: Region<'_>, head: Commit, after: u64, count: usize, path: &Path) -> Result<Vec<Commit>> {
    let mut newer = Vec::new();
    for commit in node::chain(region, head) {
        let commit = commit.map_err(|d| d.into_error(path))?;
        if commit.version <= after || newer.len() == count {
            break;
        }
        newer.push(commit);
    }
    newer.reverse();
    Ok(newer)
}

/// The versions the retention policy of `options` keeps of the chain from
/// `head`, newest first: what the next compaction copies.
pub fn policy_chain(options: &Options, region: Region<'_>, head: Commit, path: &Path) -> Result<Vec<Commit>> {
    let keep = options.retain_versions as usize + 1;
    if options.retain_tiers.is_empty() {
        return newest(region, head, keep, path);
    }
    Ok(thin(options, newest(region, head, usize::MAX, path)?))
}

/// The versions after `after` up to `head` that the retention policy keeps
/// among them, oldest first.
pub fn policy_after(
    options: &Options,
    region: Region<'_>,
    head: Commit,
    after: u64,
    path: &Path,
) -> Result<Vec<Commit>> {
    let keep = options.retain_versions as usize + 1;
    if options.retain_tiers.is_empty() {
        return newest_after(region, head, after, keep, path);
    }
    let mut newer = newest_after(region, head, after, usize::MAX, path)?;
    newer.reverse();
    let mut kept = thin(options, newer);
    kept.reverse();
    Ok(kept)
}

/// Applies the retention policy to `chain` (newest first).
fn thin(options: &Options, chain: Vec<Commit>) -> Vec<Commit> {
    let times: Vec<u64> = chain.iter().map(|c| c.time_ns).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let keep = retention::select(&times, options.retain_versions as usize + 1, &options.retain_tiers, now);
    chain.into_iter().zip(keep).filter_map(|(c, k)| k.then_some(c)).collect()
}
