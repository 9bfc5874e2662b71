//! Arena generation files: `arena-NNNNNNNNNN`, one per generation.
//!
//! A 4 KiB header page records the format identity (magic, format version,
//! byte order, word size, page size), the generation and the address-space
//! reservation; nodes follow, appended and never rewritten. The writer maps
//! the file read-write, readers read-only, both with the whole reservation
//! mapped up front so that growth of the file never moves the mapping.
//!
//! Invariants: (1) bytes below the writer's append cursor are never written
//! again; (2) the file grows (with real blocks, `fallocate`) before bytes are
//! written into the new range, and never shrinks, so any byte below a
//! published high-water mark is backed by the file and cannot raise SIGBUS.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::node::{u32_at, u64_at};
use crate::sys::{self, Mapping};

pub const HEADER_PAGE: u64 = 4096;
const MAGIC: &[u8; 8] = b"SHOALAR1";
pub const FORMAT_VERSION: u32 = 1;
const LITTLE_ENDIAN_TAG: u8 = 1;
/// Smallest and largest growth step of an arena file.
const GROW_MIN: u64 = 1 << 20;
const GROW_MAX: u64 = 256 << 20;

pub fn file_name(generation: u64) -> String {
    format!("arena-{generation:010}")
}

/// Parses a generation number from an arena file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("arena-").filter(|n| n.len() == 10).and_then(|n| n.parse().ok())
}

/// One mapped generation, shared by the snapshots that read it.
pub struct MappedGeneration {
    pub generation: u64,
    pub path: PathBuf,
    pub map: Mapping,
    file: File,
    /// Length of the file as last seen; only grows.
    file_len: AtomicU64,
}

impl MappedGeneration {
    /// The immutable readable prefix `[0, end)`, after checking the file
    /// really is that long (so no access can fault).
    pub fn region(&self, end: u64) -> Result<&[u8]> {
        if end > self.map.len() {
            return Err(self.corrupt(end, "high-water mark beyond the mapped reservation"));
        }
        if end > self.file_len.load(Ordering::Acquire) {
            let len = self.file.metadata().at(&self.path)?.len();
            self.file_len.fetch_max(len, Ordering::AcqRel);
            if end > len {
                return Err(self.corrupt(end, "high-water mark beyond the end of the file"));
            }
        }
        // SAFETY: end is within the mapping and the file (checked above; arena
        // files never shrink), and bytes below a published or written
        // high-water mark are immutable (module invariant 1).
        Ok(unsafe { self.map.immutable_prefix(end) })
    }

    pub fn corrupt(&self, offset: u64, detail: &str) -> Error {
        Error::Corrupt { file: self.path.clone(), offset, detail: detail.to_string() }
    }
}

fn header_bytes(generation: u64, reserve: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.push(LITTLE_ENDIAN_TAG);
    h.push(std::mem::size_of::<usize>() as u8);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&(sys::page_size() as u32).to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&generation.to_le_bytes());
    h.extend_from_slice(&reserve.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Validates an arena header; returns the reservation.
fn check_header(path: &Path, h: &[u8], generation: u64) -> Result<u64> {
    let format = |detail: String| Error::Format { file: path.to_path_buf(), detail };
    if h.len() < 44 || &h[..8] != MAGIC {
        return Err(format("not a shoal arena file (bad magic)".into()));
    }
    let crc = u32_at(h, 40).unwrap_or(0);
    if crc != crc32c::crc32c(&h[..40]) {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            detail: "arena header checksum mismatch".into(),
        });
    }
    let version = u32_at(h, 8).unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(format(format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    if h[12] != LITTLE_ENDIAN_TAG {
        return Err(format(format!("byte order tag {}, expected little-endian", h[12])));
    }
    if h[13] as usize != std::mem::size_of::<usize>() {
        return Err(format(format!(
            "written with {}-byte words, this machine uses {}",
            h[13],
            std::mem::size_of::<usize>()
        )));
    }
    let page = u32_at(h, 16).unwrap_or(0) as u64;
    if page != sys::page_size() {
        return Err(format(format!("written with {page}-byte pages, this machine uses {}", sys::page_size())));
    }
    let stored_generation = u64_at(h, 24).unwrap_or(0);
    if stored_generation != generation {
        return Err(format(format!("file holds generation {stored_generation}, its name says {generation}")));
    }
    Ok(u64_at(h, 32).unwrap_or(0))
}

fn read_header(file: &File, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut h = vec![0u8; 64];
    let n = file.read_at(&mut h, 0).at(path)?;
    h.truncate(n);
    Ok(h)
}

/// Opens a generation read-only, for readers.
pub fn open_read_only(dir: &Path, generation: u64) -> Result<Arc<MappedGeneration>> {
    let path = dir.join(file_name(generation));
    let file = File::open(&path).at(&path)?;
    let reserve = check_header(&path, &read_header(&file, &path)?, generation)?;
    let len = file.metadata().at(&path)?.len();
    let map = Mapping::read_only(&file, reserve.max(len)).at(&path)?;
    Ok(Arc::new(MappedGeneration { generation, path, map, file, file_len: AtomicU64::new(len) }))
}

/// The writer's handle on the current generation: appends nodes.
pub struct WriterArena {
    pub mapped: Arc<MappedGeneration>,
    /// Next free byte; everything below it is immutable.
    cursor: Cell<u64>,
    reserve: u64,
}

impl WriterArena {
    /// Creates a new, empty generation file.
    pub fn create(dir: &Path, generation: u64, reserve: u64) -> Result<WriterArena> {
        let path = dir.join(file_name(generation));
        let file = File::options().read(true).write(true).create_new(true).open(&path).at(&path)?;
        let header = header_bytes(generation, reserve);
        use std::os::unix::fs::FileExt;
        file.set_len(HEADER_PAGE).at(&path)?;
        file.write_all_at(&header, 0).at(&path)?;
        Self::map(path, file, generation, reserve, HEADER_PAGE)
    }

    /// Opens an existing generation for appending at `cursor`.
    pub fn open(dir: &Path, generation: u64, cursor: u64) -> Result<WriterArena> {
        let path = dir.join(file_name(generation));
        let file = File::options().read(true).write(true).open(&path).at(&path)?;
        let reserve = check_header(&path, &read_header(&file, &path)?, generation)?;
        Self::map(path, file, generation, reserve, cursor.max(HEADER_PAGE))
    }

    fn map(path: PathBuf, file: File, generation: u64, reserve: u64, cursor: u64) -> Result<WriterArena> {
        let len = file.metadata().at(&path)?.len();
        let cursor = cursor.next_multiple_of(8);
        if cursor > len {
            return Err(Error::Corrupt {
                file: path,
                offset: cursor,
                detail: "arena file shorter than its contents".into(),
            });
        }
        let map = Mapping::read_write(&file, reserve.max(len)).at(&path)?;
        let reserve = map.len();
        let mapped = Arc::new(MappedGeneration { generation, path, map, file, file_len: AtomicU64::new(len) });
        Ok(WriterArena { mapped, cursor: Cell::new(cursor), reserve })
    }

    pub fn generation(&self) -> u64 {
        self.mapped.generation
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.get()
    }

    pub fn file_len(&self) -> u64 {
        self.mapped.file_len.load(Ordering::Acquire)
    }

    /// Everything written so far; immutable from now on.
    pub fn region(&self) -> &[u8] {
        // SAFETY: the cursor never exceeds the file length (append grows the
        // file first) nor the mapping; bytes below the cursor are never
        // written again (module invariant 1), and appends go above it.
        unsafe { self.mapped.map.immutable_prefix(self.cursor.get()) }
    }

    /// Appends a sealed node and returns its offset.
    pub fn append(&self, bytes: &[u8]) -> Result<u64> {
        let offset = self.cursor.get();
        let end = offset + bytes.len() as u64;
        self.ensure_len(end)?;
        // SAFETY: [offset, end) lies above the cursor, so no slice from
        // `region` covers it; the file was grown to cover it just above; the
        // mapping is read-write.
        unsafe { self.mapped.map.write(offset, bytes) };
        self.cursor.set(end.next_multiple_of(8));
        Ok(offset)
    }

    fn ensure_len(&self, end: u64) -> Result<()> {
        let len = self.file_len();
        if end <= len {
            return Ok(());
        }
        if end > self.reserve {
            return Err(Error::ArenaFull { needed: end, reserved: self.reserve });
        }
        let step = len.clamp(GROW_MIN, GROW_MAX);
        let new_len = (end.max(len + step)).next_multiple_of(GROW_MIN).min(self.reserve);
        let path = &self.mapped.path;
        let file = &self.mapped.file;
        // Allocate real blocks so that a full disk is an error here, not a SIGBUS later.
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), len, new_len - len) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => {
                // No fallocate here: write zeros, so the blocks exist before
                // the mapping touches them (a sparse file could SIGBUS on ENOSPC).
                use std::os::unix::fs::FileExt;
                let zeros = vec![0u8; GROW_MIN as usize];
                let mut at = len;
                while at < new_len {
                    let n = (new_len - at).min(GROW_MIN) as usize;
                    file.write_all_at(&zeros[..n], at).at(path)?;
                    at += n as u64;
                }
            }
            Err(e) => return Err(e).at(path),
        }
        self.mapped.file_len.fetch_max(new_len, Ordering::AcqRel);
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fdatasync(&self.mapped.file).at(&self.mapped.path)
    }
}

impl crate::build::NodeSink for WriterArena {
    fn region(&self) -> &[u8] {
        WriterArena::region(self)
    }
    fn append(&self, node: &[u8]) -> Result<u64> {
        WriterArena::append(self, node)
    }
    fn damaged(&self, damage: crate::node::Damage) -> Error {
        damage.into_error(&self.mapped.path)
    }
}
