//! The journal: checksummed redo records of committed transactions, for
//! durability `sync`.
//!
//! ```text
//! header  "SHOALJN1" u32 format u32 0
//! record  u32 payload_len, u32 crc32c(payload), payload:
//!         u64 version, u64 commit time ns, u32 op count, ops:
//!         u8 tag (1 put, 2 delete, 3 delete subtree), u8 0, u16 key_len,
//!         u32 value_len, key, value
//! ```
//!
//! A commit appends its record with one `write`; committers then share one
//! `fdatasync` (group commit) before their versions are published. Recovery
//! reads records in order and stops at the first that is short or fails its
//! checksum (a torn tail), truncating it away. Records are logical (paths and
//! values), so they replay on any arena generation. After a checkpoint the
//! journal is truncated to its header; replay skips records at or below the
//! checkpoint's version, so a crash between the two steps loses nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::node::{u16_at, u32_at, u64_at};

pub const FILE_NAME: &str = "journal";
const MAGIC: &[u8; 8] = b"SHOALJN1";
/// 2: records may hold copy ops (by reference), which format 1 lacks.
const FORMAT_VERSION: u32 = 2;
const HEADER: u64 = 16;
/// Largest record payload (its length is a u32); larger transactions are refused.
pub const MAX_RECORD_BYTES: usize = u32::MAX as usize - 64;

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
    pub ops: Vec<JournalOp>,
}

pub fn encode(version: u64, time_ns: u64, ops: &[JournalOp]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&version.to_le_bytes());
    payload.extend_from_slice(&time_ns.to_le_bytes());
    payload.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        let (tag, key, value): (u8, &[u8], &[u8]) = match op {
            JournalOp::Put { key, value } => (1, key, value),
            JournalOp::Delete { key } => (2, key, &[]),
            JournalOp::DeleteTree { key } => (3, key, &[]),
            JournalOp::Copy { key, from } => (4, key, from),
            JournalOp::CopyTree { key, from } => (5, key, from),
        };
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
    let count = u32_at(p, 16)? as usize;
    let mut at = 20;
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
    (at == p.len()).then_some(Record { version, time_ns, ops })
}

/// The record starting at `at`, if one is whole and intact there.
fn record_at(bytes: &[u8], at: usize) -> Option<Record> {
    let len = u32_at(bytes, at)? as usize;
    let crc = u32_at(bytes, at + 4)?;
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crate::node::crc32c_bulk(payload) == crc).then(|| decode_payload(payload)).flatten()
}

pub struct Journal {
    file: File,
    pub path: PathBuf,
    len: u64,
}

/// What opening the journal found.
pub struct Replay {
    pub records: Vec<Record>,
    /// Bytes of torn or damaged tail that were cut off.
    pub discarded_bytes: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal and reads its valid records.
    pub fn open(dir: &StoreDir) -> Result<(Journal, Replay)> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(FILE_NAME, Open::Append(FileKind::Private))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).at(&path)?;
        if bytes.len() < HEADER as usize {
            // New, or cut before its header was complete: start it afresh.
            file.set_len(0).at(&path)?;
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            header.extend_from_slice(&[0; 4]);
            (&file).write_all(&header).at(&path)?;
            rustix::fs::fdatasync(&file).at(&path)?;
            return Ok((Journal { file, path, len: HEADER }, Replay { records: Vec::new(), discarded_bytes: 0 }));
        }
        if &bytes[..8] != MAGIC || u32_at(&bytes, 8) != Some(FORMAT_VERSION) {
            let found = u32_at(&bytes, 8).unwrap_or(0);
            return Err(Error::Format {
                file: path,
                detail: format!(
                    "not a shoal journal of this format (version {found}, this build reads {FORMAT_VERSION})"
                ),
            });
        }
        let mut records = Vec::new();
        let mut at = HEADER as usize;
        while let (Some(len), Some(crc)) = (u32_at(&bytes, at), u32_at(&bytes, at + 4)) {
            let next = at + 8 + len as usize;
            let record =
                bytes.get(at + 8..next).filter(|p| crate::node::crc32c_bulk(p) == crc).and_then(decode_payload);
            let Some(record) = record else {
                // A torn last write ends the journal. A damaged record followed by an
                // intact one is not a torn tail: the records after it were
                // acknowledged, and dropping them silently would lose commits.
                if record_at(&bytes, next).is_some() {
                    return Err(Error::Corrupt {
                        file: path,
                        offset: at as u64,
                        detail: "journal record damaged before later intact records".into(),
                    });
                }
                break;
            };
            records.push(record);
            at = next;
        }
        // Records a killed writer left in the page cache become durable before
        // anything built from them is published.
        if !records.is_empty() {
            rustix::fs::fdatasync(&file).at(&path)?;
        }
        let discarded_bytes = (bytes.len() - at) as u64;
        if discarded_bytes > 0 {
            tracing::warn!(file = %path.display(), offset = at, discarded_bytes, "journal tail is torn or damaged; cutting it");
            file.set_len(at as u64).at(&path)?;
            rustix::fs::fdatasync(&file).at(&path)?;
        }
        Ok((Journal { file, path, len: at as u64 }, Replay { records, discarded_bytes }))
    }

    /// Appends an encoded record (not yet durable).
    pub fn append(&mut self, record: &[u8]) -> Result<()> {
        if let Err(e) = (&self.file).write_all(record) {
            // Leave no partial record behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            return Err(e).at(&self.path);
        }
        self.len += record.len() as u64;
        Ok(())
    }

    /// Bytes in the journal, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// A handle for syncing outside the writer's lock.
    pub fn sync_handle(&self) -> Result<File> {
        self.file.try_clone().at(&self.path)
    }

    /// Empties the journal after a checkpoint made its records redundant.
    pub fn truncate(&mut self) -> Result<()> {
        self.file.set_len(HEADER).at(&self.path)?;
        rustix::fs::fdatasync(&self.file).at(&self.path)?;
        self.len = HEADER;
        Ok(())
    }

    /// Reads the whole journal back (for tests of the format).
    #[cfg(test)]
    fn read_all(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replay) = Journal::open(&StoreDir::open(dir.path()).unwrap()).unwrap();
        assert!(replay.records.is_empty());
        let ops = vec![
            JournalOp::Put { key: b"a".to_vec(), value: b"1".to_vec() },
            JournalOp::DeleteTree { key: b"b".to_vec() },
            JournalOp::Copy { key: b"c".to_vec(), from: b"a".to_vec() },
            JournalOp::CopyTree { key: b"d".to_vec(), from: b"a".to_vec() },
        ];
        j.append(&encode(1, 7, &ops)).unwrap();
        j.append(&encode(2, 8, &[JournalOp::Delete { key: b"a".to_vec() }])).unwrap();
        let full = j.read_all();
        drop(j);
        // Cut the second record in half.
        std::fs::write(dir.path().join(FILE_NAME), &full[..full.len() - 3]).unwrap();
        let (j, replay) = Journal::open(&StoreDir::open(dir.path()).unwrap()).unwrap();
        assert_eq!(replay.records, vec![Record { version: 1, time_ns: 7, ops }]);
        assert!(replay.discarded_bytes > 0);
        assert_eq!(j.len(), std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len());
    }

    #[test]
    fn damage_before_intact_records_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(&StoreDir::open(dir.path()).unwrap()).unwrap();
        for v in 1..=3 {
            j.append(&encode(v, v, &[JournalOp::Put { key: b"k".to_vec(), value: vec![v as u8; 10] }])).unwrap();
        }
        let mut bytes = j.read_all();
        drop(j);
        bytes[HEADER as usize + 8 + 3] ^= 1; // inside the first record's payload
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        assert!(matches!(Journal::open(&StoreDir::open(dir.path()).unwrap()), Err(Error::Corrupt { .. })));
        // The file was left as it was, for inspection.
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), bytes);
    }
}
