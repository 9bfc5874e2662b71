//! The journal: checksummed redo records of committed transactions, for
//! durability `sync`.
//!
//! ```text
//! header  0 "SHOALJN1"  8 u32 format  12 u32 0  16 u64 synced mark
//!         24 u64 the mark's bitwise complement (a damaged mark is ignored)
//! record  u32 payload_len, u32 crc32c(payload), payload:
//!         u64 version, u64 commit time ns, u64 synced mark, u32 op count,
//!         ops: u8 tag (1 put, 2 delete, 3 delete subtree, 4 copy,
//!         5 copy subtree), u8 0, u16 key_len, u32 value_len, key, value
//!         (for copies: the source key)
//! ```
//!
//! A commit writes its record with one `pwrite` at the end of the records;
//! committers then share one `fdatasync` (group commit) before their
//! versions are published. Records are logical (paths and values), so they
//! replay on any arena generation. After a checkpoint the journal is
//! truncated to its header; replay skips records at or below the
//! checkpoint's version, so a crash between the two steps loses nothing.
//!
//! The file is kept zero-filled past its records, for one to two fill
//! sizes (at most [`FILL_BYTES`], smaller for a small checkpoint threshold,
//! see [`Journal::size_fill_for`]): when a record ends past the zeros, the
//! writer writes the next stretch of zeros after it. Records then overwrite blocks the file already has, and a
//! group commit's `fdatasync` writes data only, not the file's size and
//! blocks as an append makes it do (16 committers: 21.2–22.3 k commits/s
//! appending, 26.7–27.2 k into zeros, `cargo run --release -p shoal-bench
//! --example durable_commits`). The zeros read as a record of length 0,
//! which no record has: reading stops there, and a tail of zeros is the
//! journal's clean end, not a torn record.
//!
//! The *synced mark* says how far the journal was once made durable: the
//! writer stores it in the header after each sync (durable with the next
//! one), and each record carries the mark as it was when the record was
//! appended. Recovery reads records in order until one is short or fails
//! its checksum. Below the mark (the header's, or that of an intact record
//! found right after the damaged one) that is corruption of synced,
//! acknowledged records, and the store refuses to open. Past it the damage
//! is a torn tail, even with intact records after it (after a power loss,
//! unsynced writes can reach the disk out of order), and is cut away.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::node::{u16_at, u32_at, u64_at};

pub const FILE_NAME: &str = "journal";
const MAGIC: &[u8; 8] = b"SHOALJN1";
/// 2: records may hold copy ops (by reference), which format 1 lacks; 3:
/// the header and records carry the synced mark.
const FORMAT_VERSION: u32 = 3;
pub const HEADER: u64 = 32;
const OFF_MARK: u64 = 16;
/// Largest record payload (its length is a u32); larger transactions are refused.
pub const MAX_RECORD_BYTES: usize = u32::MAX as usize - 64;
/// How far past its records the journal is kept zero-filled (see the module
/// docs): one stretch is written about every 5,000 one-key records.
pub const FILL_BYTES: u64 = 1 << 20;

/// One logical change in a journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    DeleteTree {
        key: Vec<u8>,
    },
    /// The value of the node at `from` (as of the version before), shared.
    Copy {
        key: Vec<u8>,
        from: Vec<u8>,
    },
    /// The node at `from` and its subtree (as of the version before) replace
    /// the subtree at `key`, by reference.
    CopyTree {
        key: Vec<u8>,
        from: Vec<u8>,
    },
}

impl JournalOp {
    pub fn key(&self) -> &[u8] {
        match self {
            JournalOp::Put { key, .. }
            | JournalOp::Delete { key }
            | JournalOp::DeleteTree { key }
            | JournalOp::Copy { key, .. }
            | JournalOp::CopyTree { key, .. } => key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub version: u64,
    pub time_ns: u64,
    /// How far the journal was durable when this record was appended.
    pub synced_mark: u64,
    pub ops: Vec<JournalOp>,
}

/// Encodes a record; `synced_mark`: how far the journal is known durable now.
pub fn encode(version: u64, time_ns: u64, synced_mark: u64, ops: &[JournalOp]) -> Vec<u8> {
    let fields = ops.iter().map(|op| -> (u8, &[u8], &[u8]) {
        match op {
            JournalOp::Put { key, value } => (1, key, value),
            JournalOp::Delete { key } => (2, key, &[]),
            JournalOp::DeleteTree { key } => (3, key, &[]),
            JournalOp::Copy { key, from } => (4, key, from),
            JournalOp::CopyTree { key, from } => (5, key, from),
        }
    });
    encode_fields(version, time_ns, synced_mark, ops.len(), fields)
}

/// Encodes a record of puts, each (key, value), as [`encode`] would.
pub fn encode_puts<'a>(
    version: u64,
    time_ns: u64,
    synced_mark: u64,
    count: usize,
    puts: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    encode_fields(version, time_ns, synced_mark, count, puts.map(|(key, value)| (1, key, value)))
}

/// Encodes a record of `count` ops, each (tag, key, value).
fn encode_fields<'a>(
    version: u64,
    time_ns: u64,
    synced_mark: u64,
    count: usize,
    ops: impl Iterator<Item = (u8, &'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&version.to_le_bytes());
    payload.extend_from_slice(&time_ns.to_le_bytes());
    payload.extend_from_slice(&synced_mark.to_le_bytes());
    payload.extend_from_slice(&(count as u32).to_le_bytes());
    for (tag, key, value) in ops {
        payload.extend_from_slice(&[tag, 0]);
        payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
        payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
        payload.extend_from_slice(key);
        payload.extend_from_slice(value);
    }
    let mut record = Vec::with_capacity(payload.len() + 8);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crate::node::crc32c_bulk(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

fn decode_payload(p: &[u8]) -> Option<Record> {
    let version = u64_at(p, 0)?;
    let time_ns = u64_at(p, 8)?;
    let synced_mark = u64_at(p, 16)?;
    let count = u32_at(p, 24)? as usize;
    let mut at = 28;
    let mut ops = Vec::with_capacity(count.min(p.len() / 8));
    for _ in 0..count {
        let tag = *p.get(at)?;
        let key_len = u16_at(p, at + 2)? as usize;
        let value_len = u32_at(p, at + 4)? as usize;
        let key = p.get(at + 8..at + 8 + key_len)?.to_vec();
        let value = p.get(at + 8 + key_len..at + 8 + key_len + value_len)?.to_vec();
        at += 8 + key_len + value_len;
        ops.push(match tag {
            1 => JournalOp::Put { key, value },
            2 => JournalOp::Delete { key },
            3 => JournalOp::DeleteTree { key },
            4 => JournalOp::Copy { key, from: value },
            5 => JournalOp::CopyTree { key, from: value },
            _ => return None,
        });
    }
    (at == p.len()).then_some(Record { version, time_ns, synced_mark, ops })
}

/// The record starting at `at`, if one is whole and intact there.
fn record_at(bytes: &[u8], at: usize) -> Option<Record> {
    let len = u32_at(bytes, at)? as usize;
    let crc = u32_at(bytes, at + 4)?;
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crate::node::crc32c_bulk(payload) == crc).then(|| decode_payload(payload)).flatten()
}

/// The intact records of a journal's bytes (at least a header's worth) and
/// where they end, or why the file cannot be replayed: the parser of
/// [`Journal::open`], without the file (`path` names it in errors).
///
/// `acknowledged_recovered`: every acknowledged commit is already in the
/// version recovery starts from (the published version of this boot): then
/// no damage can lose one, and any damage is cut as a torn tail.
pub(crate) fn read_records(path: &Path, bytes: &[u8], acknowledged_recovered: bool) -> Result<(Vec<Record>, usize)> {
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(Error::Format { file: path.to_path_buf(), detail: "not a shoal journal (bad magic)".into() });
    }
    if u32_at(bytes, 8) != Some(FORMAT_VERSION) {
        let found = u32_at(bytes, 8).unwrap_or(0);
        return Err(Error::Format {
            file: path.to_path_buf(),
            detail: format!("journal format {found}; this build reads format {FORMAT_VERSION}"),
        });
    }
    let header_mark = header_mark(bytes);
    let mut records = Vec::new();
    let mut at = HEADER as usize;
    while at < bytes.len() {
        let len = u32_at(bytes, at).unwrap_or(0) as usize;
        let next = at.saturating_add(8).saturating_add(len);
        if let Some(record) = record_at(bytes, at) {
            records.push(record);
            at = next;
            continue;
        }
        // Damaged or short: a torn tail unless it lies below the mark.
        let mark = header_mark.max(record_at(bytes, next).map_or(0, |r| r.synced_mark));
        if (at as u64) < mark && !acknowledged_recovered {
            return Err(Error::Corrupt {
                file: path.to_path_buf(),
                offset: at as u64,
                detail: format!(
                    "journal record damaged below the synced mark ({mark}): acknowledged commits are unreadable"
                ),
            });
        }
        break;
    }
    Ok((records, at.min(bytes.len())))
}

/// Where the intact records of a journal's bytes end (its header
/// included): what a crash now would leave to replay, without the zeros
/// kept after them. Damage ends them, as it ends [`read_records`].
pub(crate) fn records_end(bytes: &[u8]) -> u64 {
    if bytes.len() < HEADER as usize {
        return 0;
    }
    let mut at = HEADER as usize;
    while record_at(bytes, at).is_some() {
        at += 8 + u32_at(bytes, at).unwrap_or(0) as usize;
    }
    at as u64
}

/// The synced mark a journal's header holds; 0 if it is damaged (then only
/// the records' own marks are left to go by).
fn header_mark(bytes: &[u8]) -> u64 {
    match (u64_at(bytes, OFF_MARK as usize), u64_at(bytes, OFF_MARK as usize + 8)) {
        (Some(mark), Some(complement)) if mark == !complement => mark,
        _ => 0,
    }
}

pub struct Journal {
    file: File,
    /// The same file, for the header's mark (the publisher stores it).
    mark: File,
    pub path: PathBuf,
    /// The end of the records.
    len: u64,
    /// The end of the zeros written after them (the file's length);
    /// `u64::MAX` after a fill failed, so that no commit tries again until
    /// the journal is emptied.
    filled: u64,
    /// How many bytes of zeros a fill writes past the next multiple of it.
    fill_bytes: u64,
}

pub(crate) fn header(mark: u64) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(&mark.to_le_bytes());
    header.extend_from_slice(&(!mark).to_le_bytes());
    header
}

/// Stores `mark` in the header of the journal open as `file` (not durable
/// until the next sync; a lower mark on disk only makes recovery call more
/// damage a torn tail).
pub fn store_mark(file: &File, mark: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut both = [0u8; 16];
    both[..8].copy_from_slice(&mark.to_le_bytes());
    both[8..].copy_from_slice(&(!mark).to_le_bytes());
    file.write_all_at(&both, OFF_MARK)
}

/// What opening the journal found.
pub struct Replay {
    pub records: Vec<Record>,
    /// Bytes of torn or damaged tail that were cut off.
    pub discarded_bytes: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal and reads its valid records;
    /// see [`read_records`] for `acknowledged_recovered`.
    pub fn open(dir: &StoreDir, acknowledged_recovered: bool) -> Result<(Journal, Replay)> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(FILE_NAME, Open::Create(FileKind::Data))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).at(&path)?;
        if bytes.len() < HEADER as usize {
            // New, or cut before its header was complete: start it afresh.
            file.set_len(0).at(&path)?;
            file.write_all_at(&header(HEADER), 0).at(&path)?;
            rustix::fs::fdatasync(&file).at(&path)?;
            let mark = file.try_clone().at(&path)?;
            let journal = Journal { file, mark, path, len: HEADER, filled: HEADER, fill_bytes: FILL_BYTES };
            return Ok((journal, Replay { records: Vec::new(), discarded_bytes: 0 }));
        }
        let (records, at) = read_records(&path, &bytes, acknowledged_recovered)?;
        // Records a killed writer left in the page cache become durable before
        // anything built from them is published.
        if !records.is_empty() {
            rustix::fs::fdatasync(&file).at(&path)?;
        }
        // Zeros after the records are the room kept for the next ones.
        let clean_end = bytes[at..].iter().all(|&b| b == 0);
        let discarded_bytes = if clean_end { 0 } else { (bytes.len() - at) as u64 };
        if discarded_bytes > 0 {
            tracing::warn!(file = %path.display(), offset = at, discarded_bytes, "journal tail is torn or damaged; cutting it");
            file.set_len(at as u64).at(&path)?;
            rustix::fs::fdatasync(&file).at(&path)?;
        }
        let filled = if clean_end { bytes.len() as u64 } else { at as u64 };
        let mark = file.try_clone().at(&path)?;
        if header_mark(&bytes) > at as u64 {
            // The records end below the header's mark and were accepted: a
            // crash inside `truncate` left the file emptied but the old mark
            // on disk, or `acknowledged_recovered` let damage below the mark
            // be cut. The mark comes down to the records' end before any
            // record is written; otherwise the zeros after the next records
            // would lie below it, and the next open would refuse them.
            store_mark(&mark, at as u64).at(&path)?;
            rustix::fs::fdatasync(&mark).at(&path)?;
        }
        let journal = Journal { file, mark, path, len: at as u64, filled, fill_bytes: FILL_BYTES };
        Ok((journal, Replay { records, discarded_bytes }))
    }

    /// A handle for storing the synced mark in the header.
    pub fn mark_handle(&self) -> Result<File> {
        self.mark.try_clone().at(&self.path)
    }

    /// Appends an encoded record (not yet durable), and zeros after it
    /// when it ends past those written before (see the module docs).
    pub fn append(&mut self, record: &[u8]) -> Result<()> {
        let end = self.len + record.len() as u64;
        if let Err(e) = self.file.write_all_at(record, self.len) {
            // Leave no partial record behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            self.filled = self.len;
            return Err(e).at(&self.path);
        }
        self.len = end;
        if end > self.filled {
            self.fill_after(end);
        }
        Ok(())
    }

    /// Writes zeros from `end`, the end of the records, to the next
    /// multiple of the fill size past it, and one fill size more. Failing
    /// (a full disk) costs the next syncs their speed, never a record:
    /// zeros are the journal's end whatever their length. After a failure
    /// no fill is tried until the journal is emptied.
    fn fill_after(&mut self, end: u64) {
        let to = end.next_multiple_of(self.fill_bytes) + self.fill_bytes;
        let zeros = vec![0u8; (to - end) as usize];
        match self.file.write_all_at(&zeros, end) {
            Ok(()) => self.filled = to,
            Err(e) => {
                tracing::warn!(error = %e, file = %self.path.display(), "cannot zero-fill the journal ahead; durable commits will sync its size too");
                self.filled = u64::MAX;
            }
        }
    }

    /// Sizes the zero fill for a journal emptied every `checkpoint_bytes`:
    /// [`FILL_BYTES`] at most, and no more than the records between two
    /// checkpoints (64 KiB at least), so that a small checkpoint threshold
    /// does not make each emptying cost a mebibyte of zeros.
    pub fn size_fill_for(&mut self, checkpoint_bytes: u64) {
        self.fill_bytes = checkpoint_bytes.clamp(64 << 10, FILL_BYTES).next_power_of_two();
    }

    /// Bytes in the journal, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// A handle for syncing outside the writer's lock.
    pub fn sync_handle(&self) -> Result<File> {
        self.file.try_clone().at(&self.path)
    }

    /// Empties the journal after a checkpoint made its records redundant,
    /// and resets the synced mark.
    pub fn truncate(&mut self) -> Result<()> {
        self.file.set_len(HEADER).at(&self.path)?;
        self.filled = HEADER;
        store_mark(&self.mark, HEADER).at(&self.path)?;
        rustix::fs::fdatasync(&self.file).at(&self.path)?;
        self.len = HEADER;
        Ok(())
    }

    /// Reads the whole journal back (for tests of the format).
    #[cfg(test)]
    fn read_all(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn open(dir: &Path) -> Result<(Journal, Replay)> {
        Journal::open(&StoreDir::open(dir).unwrap(), false)
    }

    fn put(v: u64) -> Vec<JournalOp> {
        vec![JournalOp::Put { key: b"k".to_vec(), value: vec![v as u8; 10] }]
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replay) = open(dir.path()).unwrap();
        assert!(replay.records.is_empty());
        let ops = vec![
            JournalOp::Put { key: b"a".to_vec(), value: b"1".to_vec() },
            JournalOp::DeleteTree { key: b"b".to_vec() },
            JournalOp::Copy { key: b"c".to_vec(), from: b"a".to_vec() },
            JournalOp::CopyTree { key: b"d".to_vec(), from: b"a".to_vec() },
        ];
        j.append(&encode(1, 7, HEADER, &ops)).unwrap();
        j.append(&encode(2, 8, HEADER, &[JournalOp::Delete { key: b"a".to_vec() }])).unwrap();
        let full = j.read_all();
        drop(j);
        // Cut the second record in half.
        std::fs::write(dir.path().join(FILE_NAME), &full[..full.len() - 3]).unwrap();
        let (j, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records, vec![Record { version: 1, time_ns: 7, synced_mark: HEADER, ops }]);
        assert!(replay.discarded_bytes > 0);
        assert_eq!(j.len(), std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len());
    }

    /// Three records; the header's mark covers the first `marked` of them,
    /// and each record's own mark covers `covered(i)` records before it.
    /// Returns the bytes and the records' offsets.
    fn journal_with_marks(dir: &Path, marked: usize, covered: impl Fn(usize) -> usize) -> (Vec<u8>, Vec<usize>) {
        let (mut j, _) = open(dir).unwrap();
        let mut offsets = vec![HEADER as usize];
        for v in 1..=3u64 {
            let record = encode(v, v, 0, &put(v));
            offsets.push(offsets.last().unwrap() + record.len());
        }
        for v in 1..=3u64 {
            let mark = offsets[covered(v as usize - 1)] as u64;
            j.append(&encode(v, v, mark, &put(v))).unwrap();
        }
        store_mark(&j.mark, offsets[marked] as u64).unwrap();
        let bytes = j.read_all();
        drop(j);
        (bytes, offsets)
    }

    #[test]
    fn damage_below_the_header_mark_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, offsets) = journal_with_marks(dir.path(), 2, |_| 0);
        bytes[offsets[1] + 12] ^= 1; // inside the second record, which the mark covers
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        match open(dir.path()) {
            Err(Error::Corrupt { detail, offset, .. }) => {
                assert!(detail.contains("synced mark"), "{detail}");
                assert_eq!(offset, offsets[1] as u64);
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r.records.len())),
        }
        // The file was left as it was, for inspection.
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), bytes);
    }

    /// After a power loss unsynced records can reach the disk out of order:
    /// damage past the mark is a torn tail even with an intact record after it.
    #[test]
    fn damage_past_the_mark_is_a_torn_tail_even_before_intact_records() {
        let dir = tempfile::tempdir().unwrap();
        // The header's mark covers the first record; so does each record's.
        let (mut bytes, offsets) = journal_with_marks(dir.path(), 1, |i| i.min(1));
        bytes[offsets[1] + 12] ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        let (j, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1]);
        assert_eq!(replay.discarded_bytes, (bytes.len() - offsets[1]) as u64);
        assert_eq!(j.len(), offsets[1] as u64);
    }

    /// The header's mark lags a sync (it is stored after one and made
    /// durable by the next); an intact record after the damage whose own
    /// mark covers it proves the damaged record was synced.
    #[test]
    fn an_intact_record_whose_mark_covers_the_damage_makes_it_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, offsets) = journal_with_marks(dir.path(), 1, |i| i);
        bytes[offsets[1] + 12] ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        assert!(matches!(open(dir.path()), Err(Error::Corrupt { .. })));
    }

    /// The header's mark guards itself with its complement: a damaged mark
    /// is ignored, so an ordinary torn tail still recovers (the review saw
    /// one flipped bit in the mark refuse a store with a torn tail).
    #[test]
    fn a_damaged_header_mark_is_ignored_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, offsets) = journal_with_marks(dir.path(), 3, |_| 0);
        bytes[OFF_MARK as usize + 5] ^= 1;
        bytes.truncate(offsets[3] - 7); // the last record torn
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        let (_, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 2);
    }

    /// When the version recovery starts from holds every acknowledged
    /// commit (the published version of this boot), damage anywhere is cut.
    #[test]
    fn damage_is_cut_when_every_acknowledged_commit_is_recovered_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, offsets) = journal_with_marks(dir.path(), 3, |_| 0);
        bytes[offsets[1] + 12] ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        assert!(open(dir.path()).is_err());
        let (j, replay) = Journal::open(&StoreDir::open(dir.path()).unwrap(), true).unwrap();
        assert_eq!((replay.records.len(), j.len()), (1, offsets[1] as u64));
    }

    fn file_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(FILE_NAME)).unwrap().len()
    }

    /// A one-put record of `bytes` bytes in all (45 of them its framing).
    fn record_of(version: u64, bytes: u64) -> Vec<u8> {
        let value = vec![version as u8; bytes as usize - 45];
        let record = encode(version, version, HEADER, &[JournalOp::Put { key: b"k".to_vec(), value }]);
        assert_eq!(record.len() as u64, bytes);
        record
    }

    #[test]
    fn zeros_after_the_records_are_a_clean_end_kept_for_the_next_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = open(dir.path()).unwrap();
        for v in 1..=3 {
            j.append(&encode(v, v, HEADER, &put(v))).unwrap();
        }
        let end = j.len();
        assert_eq!(file_len(dir.path()), 2 * FILL_BYTES, "zeros up to the next boundary and one stretch more");
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(bytes[end as usize..].iter().all(|&b| b == 0));
        drop(j);
        let (mut j, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!((replay.discarded_bytes, j.len()), (0, end));
        assert_eq!(file_len(dir.path()), 2 * FILL_BYTES, "the zeros are kept");
        // The next record goes right after the last one, not after the zeros.
        j.append(&encode(4, 4, HEADER, &put(4))).unwrap();
        drop(j);
        let (_, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    /// A record ending just below, at and just past the zeros' end: zeros
    /// are written only past it, and every case reads back whole.
    #[test]
    fn records_ending_at_the_zeros_end_and_around_it() {
        for past in [-1i64, 0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = open(dir.path()).unwrap();
            j.append(&record_of(1, 100)).unwrap();
            let filled = file_len(dir.path());
            assert_eq!(filled, 2 * FILL_BYTES);
            let bytes = (filled as i64 - j.len() as i64 + past) as u64;
            j.append(&record_of(2, bytes)).unwrap();
            let end = j.len();
            assert_eq!(end as i64, filled as i64 + past);
            let expected = if past > 0 { end.next_multiple_of(FILL_BYTES) + FILL_BYTES } else { filled };
            assert_eq!(file_len(dir.path()), expected, "record ending {past} past the zeros");
            drop(j);
            let (j, replay) = open(dir.path()).unwrap();
            assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!((replay.discarded_bytes, j.len()), (0, end));
        }
    }

    /// What a crash leaves of a record being written into the zeros: its
    /// head, then zeros. That is a torn tail, cut, and the next record
    /// goes where the torn one began.
    #[test]
    fn a_torn_record_before_the_zeros_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = open(dir.path()).unwrap();
        j.append(&encode(1, 1, HEADER, &put(1))).unwrap();
        let first = j.len();
        j.append(&encode(2, 2, HEADER, &put(2))).unwrap();
        let end = j.len();
        drop(j);
        let mut bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        bytes[end as usize - 5..end as usize].fill(0);
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        let (mut j, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1]);
        assert_eq!(replay.discarded_bytes, bytes.len() as u64 - first);
        assert_eq!((j.len(), file_len(dir.path())), (first, first));
        j.append(&encode(2, 3, HEADER, &put(2))).unwrap();
        drop(j);
        let (_, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| (r.version, r.time_ns)).collect::<Vec<_>>(), vec![(1, 1), (2, 3)]);
    }

    /// Zeros are a clean end only past the synced mark: zeros where synced
    /// records were are acknowledged commits lost.
    #[test]
    fn zeros_where_synced_records_were_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = journal_with_marks(dir.path(), 3, |_| 0);
        let mut bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        bytes[offsets[2]..offsets[3]].fill(0);
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        match open(dir.path()) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, offsets[2] as u64),
            other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r.records.len())),
        }
    }

    /// The fill is sized to the checkpoint threshold: at, below and above
    /// its floor and its ceiling.
    #[test]
    fn the_fill_follows_a_small_checkpoint_threshold() {
        let k = 1u64 << 10;
        for (threshold, fill) in [
            (0, 64 * k),
            (64 * k - 1, 64 * k),
            (64 * k, 64 * k),
            (64 * k + 1, 128 * k),
            (FILL_BYTES - 1, FILL_BYTES),
            (FILL_BYTES, FILL_BYTES),
            (FILL_BYTES + 1, FILL_BYTES),
            (u64::MAX, FILL_BYTES),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = open(dir.path()).unwrap();
            j.size_fill_for(threshold);
            j.append(&encode(1, 1, HEADER, &put(1))).unwrap();
            assert_eq!(file_len(dir.path()), 2 * fill, "threshold {threshold}");
        }
    }

    #[test]
    fn truncation_drops_the_zeros_and_the_next_record_writes_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = open(dir.path()).unwrap();
        j.append(&encode(1, 1, HEADER, &put(1))).unwrap();
        j.truncate().unwrap();
        assert_eq!((j.len(), file_len(dir.path())), (HEADER, HEADER));
        j.append(&encode(2, 2, HEADER, &put(2))).unwrap();
        assert_eq!(file_len(dir.path()), 2 * FILL_BYTES);
        drop(j);
        let (_, replay) = open(dir.path()).unwrap();
        assert_eq!(replay.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_foreign_file_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 64]).unwrap();
        match open(dir.path()) {
            Err(Error::Format { detail, .. }) => assert!(detail.contains("bad magic"), "{detail}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
