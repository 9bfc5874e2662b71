//! The meta file: the last checkpoint, in two alternating checksummed slots.
//!
//! A checkpoint names a generation, the commit record of a version in it and
//! that version's high-water mark. It is written only after the arena bytes
//! it names are durable (fdatasync of the arena file), into the slot not
//! holding the newest checkpoint, then synced; a torn write can damage only
//! that slot, and the other still holds the previous checkpoint.
//!
//! ```text
//! slot 0 at 0, slot 1 at 512 (a checkpoint of sequence s goes to slot s % 2)
//!  0 "SHOALMT1"  8 u32 format (1)  12 u32 0
//! 16 u64 sequence  24 u64 generation  32 u64 commit record offset
//! 40 u64 version   48 u64 end (high-water mark)
//! 56 u32 crc32c of bytes [0, 56)
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::{IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::node::{u32_at, u64_at};

pub const FILE_NAME: &str = "meta";
const MAGIC: &[u8; 8] = b"SHOALMT1";
const SLOT_BYTES: u64 = 512;
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub generation: u64,
    pub commit_offset: u64,
    pub version: u64,
    pub end: u64,
}

pub(crate) fn encode(c: &Checkpoint) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for v in [c.sequence, c.generation, c.commit_offset, c.version, c.end] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// A slot's checkpoint, if the bytes hold an intact one of this format.
pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
    if b.len() < 60 || &b[..8] != MAGIC || u32_at(b, 8)? != FORMAT_VERSION {
        return None;
    }
    if u32_at(b, 56)? != crc32c::crc32c(&b[..56]) {
        return None;
    }
    Some(Checkpoint {
        sequence: u64_at(b, 16)?,
        generation: u64_at(b, 24)?,
        commit_offset: u64_at(b, 32)?,
        version: u64_at(b, 40)?,
        end: u64_at(b, 48)?,
    })
}

pub struct Meta {
    file: File,
    pub path: PathBuf,
    latest: Option<Checkpoint>,
}

/// What reading the meta file found.
pub struct MetaState {
    /// The newest valid checkpoint.
    pub latest: Option<Checkpoint>,
    /// Slots that exist but failed their checksum.
    pub damaged_slots: usize,
}

impl Meta {
    pub fn open(dir: &StoreDir, create: bool) -> Result<(Meta, MetaState)> {
        let path = dir.join(FILE_NAME);
        let file = dir.open_file(
            FILE_NAME,
            if create { Open::Create(FileKind::Data) } else { Open::ReadWrite(FileKind::Data) },
        )?;
        let mut slots = Vec::new();
        let mut damaged_slots = 0;
        for i in 0..2 {
            let mut buf = vec![0u8; 64];
            let n = file.read_at(&mut buf, i * SLOT_BYTES).at(&path)?;
            if n == 0 || buf.iter().all(|&b| b == 0) {
                continue;
            }
            match decode(&buf[..n]) {
                Some(c) => slots.push(c),
                None => damaged_slots += 1,
            }
        }
        let latest = slots.into_iter().max_by_key(|c| c.sequence);
        Ok((Meta { file, path, latest }, MetaState { latest, damaged_slots }))
    }

    /// Durably records a checkpoint (the arena bytes it names must already be durable).
    pub fn write(&mut self, generation: u64, commit_offset: u64, version: u64, end: u64) -> Result<Checkpoint> {
        let sequence = self.latest.map_or(1, |c| c.sequence + 1);
        let c = Checkpoint { sequence, generation, commit_offset, version, end };
        self.file.write_all_at(&encode(&c), (sequence % 2) * SLOT_BYTES).at(&self.path)?;
        rustix::fs::fdatasync(&self.file).at(&self.path)?;
        self.latest = Some(c);
        Ok(c)
    }

    pub fn latest(&self) -> Option<Checkpoint> {
        self.latest
    }
}

/// The newest valid checkpoint, read without opening the file for writing
/// (for readers when no writer has claimed the store since boot).
pub fn read_latest(dir: &StoreDir) -> Result<Option<Checkpoint>> {
    let path = dir.join(FILE_NAME);
    if !dir.exists(FILE_NAME)? {
        return Ok(None);
    }
    let file = dir.open_file(FILE_NAME, Open::Read)?;
    let mut best: Option<Checkpoint> = None;
    for i in 0..2 {
        let mut buf = vec![0u8; 64];
        let n = file.read_at(&mut buf, i * SLOT_BYTES).at(&path)?;
        if let Some(c) = decode(&buf[..n]) {
            if best.is_none_or(|b| c.sequence > b.sequence) {
                best = Some(c);
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_damage_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = StoreDir::open(dir.path()).unwrap();
        let (mut meta, state) = Meta::open(&store_dir, true).unwrap();
        assert!(state.latest.is_none());
        meta.write(1, 4096, 1, 4160).unwrap();
        meta.write(1, 8192, 2, 8256).unwrap();
        let (_, state) = Meta::open(&store_dir, false).unwrap();
        assert_eq!(state.latest.unwrap().version, 2);
        // Damage the newest slot (sequence 2 lives in slot 0).
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, state) = Meta::open(&store_dir, false).unwrap();
        assert_eq!(state.latest.unwrap().version, 1);
        assert_eq!(state.damaged_slots, 1);
    }
}
