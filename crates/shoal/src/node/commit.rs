//! Commit records: one per version, the last thing a commit writes.
//!
//! ```text
//! header (count 0, prefix_len 0), 80 bytes in all
//! 16  u64 version
//! 24  u64 root        the tree's root node (0: empty tree)
//! 32  u64 prev        the previous version's record (0: none)
//! 40  u64 end         the arena's high-water mark, this record included
//! 48  u64 time        commit time, ns since the Unix epoch
//! 56  u64 key count   nodes in the tree, the root excluded
//! 64  u64 changes     the version's change set (0: none recorded)
//! 72  u64 generation  the arena generation the record was written into
//! ```

use super::{seal, u64_at, write_header, Damage, Parse, Region, HEADER_BYTES, KIND_COMMIT};

pub const COMMIT_BYTES: usize = HEADER_BYTES + 64;

/// A parsed commit record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    pub offset: u64,
    pub version: u64,
    pub root: u64,
    pub prev: u64,
    pub end: u64,
    pub time_ns: u64,
    pub key_count: u64,
    /// The version's change set (0: none recorded).
    pub changes: u64,
    /// The arena generation the record was written into: a record found in
    /// a recycled file's old bytes names another one.
    pub generation: u64,
}

/// Encodes a commit record that will sit at `offset`.
pub fn build_commit(c: &Commit) -> Vec<u8> {
    let mut buf = Vec::with_capacity(COMMIT_BYTES);
    write_header(&mut buf, KIND_COMMIT, 0, 0);
    let end = c.offset + COMMIT_BYTES as u64;
    for v in [c.version, c.root, c.prev, end, c.time_ns, c.key_count, c.changes, c.generation] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    seal(&mut buf);
    debug_assert_eq!(buf.len(), COMMIT_BYTES);
    buf
}

/// Parses and verifies the commit record at `offset`.
pub fn parse_commit(region: Region<'_>, offset: u64) -> Parse<Commit> {
    let node = region.node(offset, KIND_COMMIT)?;
    let field = |i: usize| u64_at(node, HEADER_BYTES + 8 * i).unwrap_or(0);
    if node.len() != COMMIT_BYTES {
        return Err(Damage::new(offset, "commit record has the wrong length"));
    }
    let commit = Commit {
        offset,
        version: field(0),
        root: field(1),
        prev: field(2),
        end: field(3),
        time_ns: field(4),
        key_count: field(5),
        changes: field(6),
        generation: field(7),
    };
    if Some(commit.end) != offset.checked_add(COMMIT_BYTES as u64)
        || commit.root >= offset
        || commit.prev >= offset
        || commit.changes >= offset
    {
        return Err(Damage::new(offset, "commit record points outside its version"));
    }
    Ok(commit)
}

/// The commit chain from `head` back: `head`, then each version's
/// predecessor, read and verified one at a time; versions must decrease.
pub fn chain(region: Region<'_>, head: Commit) -> Chain<'_> {
    Chain { region, next: Some(Ok(head)) }
}

/// See [`chain`].
pub struct Chain<'a> {
    region: Region<'a>,
    next: Option<Parse<Commit>>,
}

impl Iterator for Chain<'_> {
    type Item = Parse<Commit>;

    fn next(&mut self) -> Option<Parse<Commit>> {
        let current = self.next.take()?;
        if let Ok(c) = &current {
            if c.prev != 0 {
                let version = c.version;
                self.next = Some(parse_commit(self.region, c.prev).and_then(|p| match p.version < version {
                    true => Ok(p),
                    false => Err(Damage::new(p.offset, "commit chain does not go back in versions")),
                }));
            }
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_rejects_forward_pointers() {
        let commit = |root| Commit {
            version: 5,
            root,
            offset: 64,
            time_ns: 1,
            key_count: 2,
            generation: 7,
            ..Commit::default()
        };
        let rec = build_commit(&commit(8));
        let mut region = vec![0u8; 64];
        region.extend_from_slice(&rec);
        let c = parse_commit(Region::for_test(&region), 64).unwrap();
        assert_eq!((c.version, c.root, c.end, c.generation), (5, 8, 64 + COMMIT_BYTES as u64, 7));
        let bad = build_commit(&commit(64));
        region.truncate(64);
        region.extend_from_slice(&bad);
        assert!(parse_commit(Region::for_test(&region), 64).is_err());
    }

    /// The documented offsets.
    #[test]
    fn commit_layout() {
        let c = Commit {
            offset: 800,
            version: 1,
            root: 2,
            prev: 3,
            end: 0,
            time_ns: 5,
            key_count: 6,
            changes: 7,
            generation: 8,
        };
        let rec = build_commit(&c);
        let fields: Vec<u64> = (0..8).map(|i| u64_at(&rec, 16 + 8 * i).unwrap()).collect();
        assert_eq!(fields, vec![1, 2, 3, 800 + COMMIT_BYTES as u64, 5, 6, 7, 8]);
        assert_eq!(rec.len(), 80);
    }
}
