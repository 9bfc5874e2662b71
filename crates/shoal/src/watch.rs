//! Watch streams: what changed under a path prefix, version by version, for
//! a reader in any process.
//!
//! A watch holds the snapshot of the last version it delivered. Each poll
//! takes a new snapshot and reads the change sets of the versions in between
//! in place ([`Snapshot::changes`]), so events come in commit order and, within
//! a version, in path order. When history no longer holds every version in
//! between (compaction keeps only the newest few) or one of them changed too
//! much to list, the watch delivers a single [`WatchEvent::Resync`] instead:
//! it diffs the held snapshot against the new one under the prefix
//! ([`Snapshot::diff`]), which is always possible because the held snapshot
//! pins its generation. A watcher is never left with a silent gap.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::node::ChangeKind;
use crate::snapshot::{Reader, Snapshot};

/// What a watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// `version` changed `path` (at or below the prefix, or a deleted
    /// subtree holding it).
    Change { version: u64, path: String, kind: ChangeKind },
    /// The versions between `from` and `to` are not all retained (or not
    /// all listed): `changes` is how the prefix differs between the two
    /// versions ([`Snapshot::diff`]: `Set` for a path added or whose value
    /// differs, `Delete` for one that is gone), in path order.
    Resync { from: u64, to: u64, changes: Vec<(String, ChangeKind)> },
}

/// A stream of the changes under one prefix. See [`Reader::watch`].
pub struct Watch<'r> {
    reader: &'r Reader,
    prefix: String,
    last: Snapshot,
}

impl Reader {
    /// Watches `prefix` from the newest version on: the first events are
    /// those of the next commits.
    pub fn watch(&self, prefix: &str) -> Result<Watch<'_>> {
        crate::path::key(prefix)?;
        Ok(Watch { reader: self, prefix: prefix.to_string(), last: self.snapshot()? })
    }

    /// Watches `prefix` from the retained version `version` on: the first
    /// events are those of the versions after it (to resume a watch).
    pub fn watch_from(&self, prefix: &str, version: u64) -> Result<Watch<'_>> {
        crate::path::key(prefix)?;
        Ok(Watch { reader: self, prefix: prefix.to_string(), last: self.snapshot_at(version)? })
    }
}

impl Watch<'_> {
    /// The version the events delivered so far bring the watcher to.
    pub fn version(&self) -> u64 {
        self.last.version()
    }

    /// The snapshot of [`Watch::version`].
    pub fn snapshot(&self) -> &Snapshot {
        &self.last
    }

    /// The events of the versions published since the last call, without
    /// waiting (empty if none of them touched the prefix).
    pub fn poll(&mut self) -> Result<Vec<WatchEvent>> {
        let next = self.reader.snapshot()?;
        if next.version() <= self.last.version() {
            return Ok(Vec::new());
        }
        let events = match next.changes(self.last.version(), &self.prefix) {
            Ok(changes) => changes
                .iter()
                .map(|c| WatchEvent::Change { version: c.version(), path: c.path(), kind: c.kind() })
                .collect(),
            Err(Error::HistoryGone { .. } | Error::ChangesNotListed { .. }) => {
                let changes = self.last.diff(&next, &self.prefix)?.changes;
                vec![WatchEvent::Resync { from: self.last.version(), to: next.version(), changes }]
            }
            Err(e) => return Err(e),
        };
        self.last = next;
        Ok(events)
    }

    /// Waits up to `timeout` for events under the prefix, sleeping on the
    /// writer's wake-ups ([`Reader::wait_for_version`]); empty on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<WatchEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.poll()?;
            if !events.is_empty() {
                return Ok(events);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(events);
            }
            self.reader.wait_for_version(self.last.version(), deadline - now)?;
        }
    }
}
