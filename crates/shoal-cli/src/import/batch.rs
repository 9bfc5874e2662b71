//! The entries of an import, gathered into batches that each become one
//! version through [`Store::bulk_load`].

use std::ops::RangeInclusive;

use crate::writer::Writer;

/// What a batch counts for each node an entry may add (the entry itself
/// and each ancestor its path does not share with the entry before it),
/// besides the entry's path and value bytes: about what `bulk_load` needs
/// per node to sort, journal and build a batch (measured: 450-500 bytes a
/// node). Counting only paths and values, a batch of small or deep entries
/// would take many times `--batch-bytes` of memory.
pub const NODE_CHARGE_BYTES: u64 = 512;

/// The nodes `path` may add to a batch after `previous`: itself, and its
/// ancestors that are not also ancestors (or the path) of `previous`. An
/// ancestor shared with an older entry, or already in the store, is
/// counted again: the charge errs on the side of smaller batches.
pub fn new_nodes(path: &str, previous: &str) -> u64 {
    let (path, previous) = (path.as_bytes(), previous.as_bytes());
    let ancestor_ends = (1..path.len()).filter(|&i| path[i] == b'/');
    let shared = |end: usize| previous.starts_with(&path[..end]) && previous.get(end).is_none_or(|&c| c == b'/');
    1 + ancestor_ends.filter(|&end| !shared(end)).count() as u64
}

/// One batch that became a version.
#[derive(Clone, Debug)]
pub struct Committed {
    pub version: u64,
    /// The input's entries it holds (numbered from 1, in input order).
    pub entries: RangeInclusive<u64>,
}

/// Collects entries and commits them in batches of at most `batch_bytes`
/// (path and value bytes, plus [`NODE_CHARGE_BYTES`] per node each may add).
pub struct Loader<'s> {
    writer: &'s mut Writer,
    batch_bytes: u64,
    max_value_bytes: usize,
    /// Paths and values of the pending batch, one after the other: held in
    /// one buffer so that an entry costs its bytes, not two allocations.
    data: Vec<u8>,
    /// Per pending entry: where its path and its value end in `data`.
    ends: Vec<(u32, u32)>,
    /// What the pending batch counts against `batch_bytes`.
    charged: u64,
    /// Entries accepted so far, committed or pending.
    entries: u64,
    /// The path of the entry before, for [`new_nodes`].
    previous: String,
    committed: Vec<Committed>,
    /// Called before each batch is committed, with the batch's entry count.
    on_commit: Box<dyn FnMut(u64) + 's>,
}

impl<'s> Loader<'s> {
    pub fn new(
        writer: &'s mut Writer,
        batch_bytes: u64,
        max_value_bytes: usize,
        on_commit: Box<dyn FnMut(u64) + 's>,
    ) -> Loader<'s> {
        Loader {
            writer,
            batch_bytes,
            max_value_bytes,
            data: Vec::new(),
            ends: Vec::new(),
            charged: 0,
            entries: 0,
            previous: String::new(),
            committed: Vec::new(),
            on_commit,
        }
    }

    /// Entries accepted so far (the next one is number `entries() + 1`).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The batches committed so far.
    pub fn committed(&self) -> &[Committed] {
        &self.committed
    }

    /// Adds an entry, committing the pending batch first if the entry does
    /// not fit in it. Checks what the store would refuse (path, root, value
    /// size) here, so that an error names the entry, not a whole batch.
    pub fn add(&mut self, path: &str, value: &[u8]) -> Result<(), String> {
        if path.len() > shoal::path::MAX_PATH_BYTES {
            let limit = shoal::path::MAX_PATH_BYTES;
            return Err(format!("invalid path {}: longer than the {limit}-byte limit", super::quoted(path)));
        }
        shoal::path::validate(path).map_err(|e| e.to_string())?;
        if path == "/" {
            return Err("the root node cannot hold a value".into());
        }
        if value.len() > self.max_value_bytes {
            return Err(format!(
                "the value for {path} is {} bytes; the store's limit is {} bytes (see `shoal config --max-value-bytes`)",
                value.len(),
                self.max_value_bytes
            ));
        }
        let nodes = new_nodes(path, &self.previous);
        let cost = (path.len() + value.len()) as u64 + nodes * NODE_CHARGE_BYTES;
        if cost > self.batch_bytes {
            return Err(format!(
                "the entry for {path} needs {cost} bytes of a batch ({} of path and value, {NODE_CHARGE_BYTES} for each \
                 of the {nodes} nodes it may add), more than --batch-bytes {}",
                path.len() + value.len(),
                self.batch_bytes
            ));
        }
        if self.charged + cost > self.batch_bytes {
            self.commit_pending()?;
        }
        self.grow_for(path.len() + value.len());
        self.data.extend_from_slice(path.as_bytes());
        let path_end = self.data.len() as u32;
        self.data.extend_from_slice(value);
        self.ends.push((path_end, self.data.len() as u32));
        self.charged += cost;
        self.entries += 1;
        self.previous.clear();
        self.previous.push_str(path);
        Ok(())
    }

    /// Grows `data` by doubling, but never past the batch: the default
    /// doubling could reserve up to twice `--batch-bytes`.
    fn grow_for(&mut self, more: usize) {
        let needed = self.data.len() + more;
        if needed <= self.data.capacity() {
            return;
        }
        let cap = usize::try_from(self.batch_bytes).unwrap_or(usize::MAX);
        let target = (self.data.capacity() * 2).clamp(needed, cap.max(needed));
        self.data.reserve_exact(target - self.data.len());
    }

    /// Commits the pending entries, if any, as one version.
    fn commit_pending(&mut self) -> Result<(), String> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let count = self.ends.len() as u64;
        (self.on_commit)(count);
        let data = &self.data;
        let mut start = 0usize;
        let items = self.ends.iter().map(|&(path_end, value_end)| {
            let (path_end, value_end) = (path_end as usize, value_end as usize);
            // The bytes came from a `&str` in `add`; a failure here could only
            // be a bug, and an empty path is then refused by the store.
            let path = std::str::from_utf8(&data[start..path_end]).unwrap_or("");
            let value = &data[path_end..value_end];
            start = value_end;
            (path, value)
        });
        let first = self.entries - count + 1;
        let failed = |e: &dyn std::fmt::Display| format!("committing entries {first}..={}: {e}", self.entries);
        let version = match &mut *self.writer {
            Writer::Local(store) => store.bulk_load(items).map_err(|e| failed(&e))?,
            Writer::Daemon(client) => {
                let owned = items.map(|(p, v)| (p.to_string(), v.to_vec())).collect();
                match client.request(&shoal_remote::Request::BulkLoad(owned)) {
                    Ok(shoal_remote::Reply::Committed { version } | shoal_remote::Reply::Queue { version, .. }) => {
                        version
                    }
                    Ok(shoal_remote::Reply::Failed { message, .. }) => return Err(failed(&message)),
                    Err(e) => {
                        return Err(failed(&format!(
                            "shoald (the store's daemon) did not answer ({e}); this batch may or may not have \
                             been committed: check with `shoal get`"
                        )))
                    }
                }
            }
        };
        self.committed.push(Committed { version, entries: first..=self.entries });
        self.data.clear();
        self.ends.clear();
        self.charged = 0;
        Ok(())
    }

    /// Commits what is pending; returns every batch committed.
    pub fn finish(mut self) -> Result<Vec<Committed>, (String, Vec<Committed>)> {
        match self.commit_pending() {
            Ok(()) => Ok(self.committed),
            Err(e) => Err((e, self.committed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::new_nodes;

    #[test]
    fn nodes_an_entry_may_add() {
        assert_eq!(new_nodes("/a", ""), 1);
        assert_eq!(new_nodes("/a/b/c", ""), 3);
        assert_eq!(new_nodes("/a/b/c", "/a/b/d"), 1);
        assert_eq!(new_nodes("/a/b/c", "/a/b"), 1);
        assert_eq!(new_nodes("/a/b/c", "/a/bc/d"), 2, "/a/b is not an ancestor of /a/bc/d");
        assert_eq!(new_nodes("/a/b", "/a/b/c/d"), 1, "the node itself, already added as an ancestor, counts again");
        assert_eq!(new_nodes("/x/y/z", "/a/b/c"), 3);
    }
}
