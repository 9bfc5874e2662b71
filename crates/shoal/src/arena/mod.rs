//! Arena generation files: `arena-NNNNNNNNNN`, one per generation.
//!
//! ```text
//! header page (4096 bytes)
//!  0 "SHOALAR1"  8 u32 format  12 u8 byte order (1: little-endian)
//! 13 u8 word size  14 u16 0  16 u32 page size  20 u32 0
//! 24 u64 generation  32 u64 reservation (bytes of address space)
//! 40 u32 crc32c of bytes [0, 40)
//! 4096 and on: nodes (see `node`), 8-aligned, appended and never rewritten
//! ```
//!
//! A 4 KiB header page records the format identity (magic, format version,
//! byte order, word size, page size), the generation and the address-space
//! reservation; nodes follow, appended and never rewritten. Everyone, the
//! writer included, reads through a read-only mapping of the whole
//! reservation, mapped up front so that growth of the file never moves it.
//! The writer appends with `pwrite`, or, into pages its prefill thread has
//! populated for writing, with plain stores through a second, read-write
//! mapping that only it has (see [`Prefill`]).
//!
//! Invariants: (1) bytes below the writer's flushed end are never written
//! again, by either path; (2) the file grows by writes of whole nodes, which
//! complete before anything naming those nodes is published (a `Release`
//! store of the publication word orders the mapping's stores before it),
//! and by the writer extending it above its end with a hole (see
//! [`Prefill`]); it never shrinks, so any byte below a published high-water
//! mark is backed by the file and cannot raise SIGBUS in a reader.
//!
//! Pins: every mapping of a generation (a reader's, the writer's) holds a
//! shared OFD lock on the first byte of its file for as long as it lives;
//! the kernel releases it when the mapping's file closes or its process
//! dies, and no other process can take it away. The writer frees an old
//! generation (deletes its file, or renames it as the spare the next
//! compaction rewrites) only when a probe finds no such lock
//! ([`in_use`]). A reader about to map the published generation opens its
//! file, takes the lock, and only then re-reads the published word; if the
//! word moved on it drops the mapping and looks again. The writer
//! publishes a newer generation before it probes an older one, and lock
//! operations on one file are serialized by the kernel: either the probe
//! sees the reader's lock, or the reader's re-read (after its lock) sees
//! the newer word and never reads the old file. A reader never reads a
//! byte of a generation's nodes before that re-read.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::files::{FileKind, Open, StoreDir};
use crate::node::{u32_at, u64_at};
use crate::node::{Region, Verified};
use crate::sys::{self, Mapping};

mod prefill;

use prefill::Prefill;

pub const HEADER_PAGE: u64 = 4096;
const MAGIC: &[u8; 8] = b"SHOALAR1";
/// 2: commit records name their version's change set; 3: and their
/// generation; 4: leaf entries may be links (subtrees copied by reference),
/// which a reader of format 3 would misread as empty subtrees; 5: key
/// counts in internal nodes and links share their word with the length of
/// the longest key below (see `node`), which format 4 would read as counts.
pub const FORMAT_VERSION: u32 = 5;
const LITTLE_ENDIAN_TAG: u8 = 1;

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
    /// The store directory's device and inode, once asked for (see [`crate::bufref`]).
    store_id: std::sync::OnceLock<[u64; 2]>,
    /// Which nodes this process has checked (see [`crate::node::Region`]).
    verified: Verified,
}

impl MappedGeneration {
    fn new(generation: u64, path: PathBuf, map: Mapping, file: File, len: u64) -> MappedGeneration {
        let verified = Verified::new(map.len());
        MappedGeneration {
            generation,
            path,
            map,
            file,
            file_len: AtomicU64::new(len),
            store_id: Default::default(),
            verified,
        }
    }

    /// The immutable readable prefix `[0, end)`, after checking the file
    /// really is that long (so no access can fault).
    pub fn region(&self, end: u64) -> Result<Region<'_>> {
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
        Ok(Region::new(unsafe { self.map.immutable_prefix(end) }, &self.verified))
    }

    /// The open arena file, for reads that do not go through the mapping
    /// (`pread`, `sendfile`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Identifies the store on this host: its directory's device and inode.
    pub fn store_id(&self) -> Result<[u64; 2]> {
        if let Some(id) = self.store_id.get() {
            return Ok(*id);
        }
        use std::os::unix::fs::MetadataExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let meta = std::fs::metadata(dir).at(dir)?;
        Ok(*self.store_id.get_or_init(|| [meta.dev(), meta.ino()]))
    }

    pub fn corrupt(&self, offset: u64, detail: &str) -> Error {
        Error::Corrupt { file: self.path.clone(), offset, detail: detail.to_string() }
    }
}

pub(crate) fn header_bytes(generation: u64, reserve: u64) -> Vec<u8> {
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
pub(crate) fn check_header(path: &Path, h: &[u8], generation: u64) -> Result<u64> {
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

/// Takes this open file's pin on its generation (see the module docs).
fn pin(file: &File, path: &Path) -> Result<()> {
    if !sys::try_lock_range_shared(file, 0, 1).at(path)? {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            detail: "another process holds an exclusive lock on this arena file".into(),
        });
    }
    Ok(())
}

/// Whether any process maps generation `generation` (holds its pin): a
/// probe through a fresh open of its file, which sees the locks of every
/// other open file, this process's mappings included. A missing file is
/// not in use.
pub fn in_use(dir: &StoreDir, generation: u64) -> Result<bool> {
    let name = file_name(generation);
    if !dir.exists(&name)? {
        return Ok(false);
    }
    let file = dir.open_file(&name, Open::Read)?;
    sys::range_is_locked(&file, 0, 1).at(&dir.join(&name))
}

/// Opens a generation read-only, for readers.
pub fn open_read_only(dir: &StoreDir, generation: u64) -> Result<Arc<MappedGeneration>> {
    open_mapped(dir, generation, false)
}

/// Opens a generation for a recovering writer: mapped read-only like every
/// reader's, through a file opened for writing, so that the candidate it
/// verifies can become its [`WriterArena`] ([`WriterArena::resume`]).
pub fn open_for_writer(dir: &StoreDir, generation: u64) -> Result<Arc<MappedGeneration>> {
    open_mapped(dir, generation, true)
}

fn open_mapped(dir: &StoreDir, generation: u64, writable: bool) -> Result<Arc<MappedGeneration>> {
    let path = dir.join(&file_name(generation));
    let file =
        dir.open_file(&file_name(generation), if writable { Open::ReadWrite(FileKind::Data) } else { Open::Read })?;
    pin(&file, &path)?;
    let reserve = check_header(&path, &read_header(&file, &path)?, generation)?;
    let len = file.metadata().at(&path)?.len();
    let map = Mapping::read_only(&file, reserve.max(len)).at(&path)?;
    let _ = map.prefer_huge_pages();
    Ok(Arc::new(MappedGeneration::new(generation, path, map, file, len)))
}

/// The writer's handle on the current generation: appends nodes.
///
/// Appended nodes collect in a buffer and reach the file in one write when
/// flushed (before anything reads them back, and before anything that names
/// them is published): stores into pages the prefill thread populated for
/// writing, else one `pwrite` (see [`Prefill`]); before a large one the file
/// is extended in whole zeroed chunks ([`WriterArena::extend_in_chunks`]). Reads, the writer's too,
/// go through the read-only mapping.
pub struct WriterArena {
    pub mapped: Arc<MappedGeneration>,
    /// End of the bytes in the file; everything below it is immutable.
    flushed: Cell<u64>,
    /// Nodes appended above `flushed`, not yet written (8-aligned length).
    pending: RefCell<Vec<u8>>,
    /// The builder's encoding buffer and entry vectors, kept between commits.
    scratch: RefCell<Vec<u8>>,
    entry_vecs: RefCell<Vec<Vec<crate::node::EntryRef<'static>>>>,
    reserve: u64,
    /// End of the pages above `flushed` already asked of the prefill thread.
    prefilled: Cell<u64>,
    prefill: RefCell<Option<Prefill>>,
    /// No more prefill requests (the thread could not be started, or the
    /// file could not be extended); appends below what was populated may
    /// still be stores, the others use `pwrite`.
    no_prefill: Cell<bool>,
    /// Below this, the pages stores filled are no longer mapped writable
    /// (see [`WriterArena::release_written`]).
    released: Cell<u64>,
}

impl WriterArena {
    /// Creates a new, empty generation file.
    pub fn create(dir: &StoreDir, generation: u64, reserve: u64) -> Result<WriterArena> {
        let path = dir.join(&file_name(generation));
        let file = dir.open_file(&file_name(generation), Open::CreateNew(FileKind::Data))?;
        let header = header_bytes(generation, reserve);
        use std::os::unix::fs::FileExt;
        file.set_len(HEADER_PAGE).at(&path)?;
        file.write_all_at(&header, 0).at(&path)?;
        Self::map(path, file, generation, reserve, HEADER_PAGE)
    }

    /// Turns the file of retired generation `spare` into the new, empty
    /// generation `generation`. Its old bytes stay in the file above the
    /// cursor; nothing reads past a published end, and appends overwrite them.
    /// The caller guarantees that nothing maps `spare` any more.
    pub fn recycle(dir: &StoreDir, spare: u64, generation: u64, reserve: u64) -> Result<WriterArena> {
        let path = dir.join(&file_name(generation));
        // Renamed before its header changes: a crash in between leaves a
        // generation above the published one, which recovery deletes.
        dir.rename(&file_name(spare), &file_name(generation))?;
        let file = dir.open_file(&file_name(generation), Open::ReadWrite(FileKind::Data))?;
        let header = header_bytes(generation, reserve);
        use std::os::unix::fs::FileExt;
        if file.metadata().at(&path)?.len() < HEADER_PAGE {
            file.set_len(HEADER_PAGE).at(&path)?;
        }
        file.write_all_at(&header, 0).at(&path)?;
        Self::map(path, file, generation, reserve, HEADER_PAGE)
    }

    /// Opens an existing generation for appending at `cursor`.
    #[cfg(test)]
    pub fn open(dir: &StoreDir, generation: u64, cursor: u64) -> Result<WriterArena> {
        Self::resume(open_for_writer(dir, generation)?, cursor)
    }

    fn map(path: PathBuf, file: File, generation: u64, reserve: u64, cursor: u64) -> Result<WriterArena> {
        pin(&file, &path)?;
        let len = file.metadata().at(&path)?.len();
        let map = Mapping::read_only(&file, reserve.max(len)).at(&path)?;
        let _ = map.prefer_huge_pages();
        Self::resume(Arc::new(MappedGeneration::new(generation, path, map, file, len)), cursor)
    }

    /// Appends to `mapped` (opened by [`open_for_writer`] or created here)
    /// from `cursor` on; everything below it is immutable from now on.
    pub fn resume(mapped: Arc<MappedGeneration>, cursor: u64) -> Result<WriterArena> {
        let len = mapped.file.metadata().at(&mapped.path)?.len();
        mapped.file_len.fetch_max(len, Ordering::AcqRel);
        let cursor = cursor.max(HEADER_PAGE).next_multiple_of(8);
        if cursor > len {
            return Err(Error::Corrupt {
                file: mapped.path.clone(),
                offset: cursor,
                detail: "arena file shorter than its contents".into(),
            });
        }
        let reserve = mapped.map.len();
        Ok(WriterArena {
            mapped,
            flushed: Cell::new(cursor),
            pending: RefCell::new(Vec::new()),
            scratch: RefCell::new(Vec::new()),
            entry_vecs: RefCell::new(Vec::new()),
            reserve,
            prefilled: Cell::new(0),
            prefill: RefCell::new(None),
            no_prefill: Cell::new(false),
            released: Cell::new(cursor / sys::page_size() * sys::page_size()),
        })
    }

    pub fn generation(&self) -> u64 {
        self.mapped.generation
    }

    /// Where the next node goes: the logical end of the arena.
    pub fn end(&self) -> u64 {
        self.flushed.get() + self.pending.borrow().len() as u64
    }

    /// A copy of the node at `offset`, whether flushed or still pending.
    pub fn read_node(&self, offset: u64) -> Result<Vec<u8>> {
        let flushed = self.flushed.get();
        let bad = |detail: &str| self.mapped.corrupt(offset, detail);
        if offset < flushed {
            let region = self.region();
            let kind = region.kind_at(offset).ok_or_else(|| bad("node offset out of bounds"))?;
            // Checked like every read of the arena: nothing at open checks
            // the nodes a new version builds on.
            return region.node(offset, kind).map(<[u8]>::to_vec).map_err(|d| d.into_error(&self.mapped.path));
        }
        let pending = self.pending.borrow();
        let at = (offset - flushed) as usize;
        let len = crate::node::u32_at(&pending, at + 4).ok_or_else(|| bad("node offset out of bounds"))? as usize;
        pending
            .get(at..at + len)
            .filter(|_| len >= crate::node::HEADER_BYTES)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad("node length out of bounds"))
    }

    /// Bytes appended but not yet flushed.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Everything flushed so far; immutable from now on.
    pub fn region(&self) -> Region<'_> {
        // `flushed` only grows after a successful write of the bytes below it,
        // and `append` keeps it within the reservation.
        // SAFETY: [0, flushed) is inside the mapping and the file (files never
        // shrink) and is never written again (module invariant 1).
        Region::new(unsafe { self.mapped.map.immutable_prefix(self.flushed.get()) }, &self.mapped.verified)
    }

    /// Appends a sealed node and returns its offset.
    pub fn append(&self, bytes: &[u8]) -> Result<u64> {
        let offset = self.end();
        let end = offset + bytes.len() as u64;
        if end.next_multiple_of(8) > self.reserve {
            return Err(Error::ArenaFull { needed: end, reserved: self.reserve });
        }
        let mut pending = self.pending.borrow_mut();
        pending.extend_from_slice(bytes);
        let aligned = pending.len().next_multiple_of(8);
        pending.resize(aligned, 0);
        // This process wrote the node: reading it back needs no check.
        if bytes.first().is_some_and(|&kind| kind != 0) {
            self.mapped.verified.set(offset);
        }
        Ok(offset)
    }

    /// Writes the appended nodes to the file.
    pub fn flush(&self) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        let at = self.flushed.get();
        let end = at + pending.len() as u64;
        let stored = if pending.len() < LARGE_WRITE {
            self.prefill_above(at, end);
            self.store_prefilled(at, end, &pending)
        } else {
            self.extend_in_chunks(end);
            false
        };
        if !stored {
            self.mapped.file.write_all_at(&pending, at).at(&self.mapped.path)?;
        }
        self.release_written(at);
        pending.clear();
        self.mapped.file_len.fetch_max(end, Ordering::AcqRel);
        self.flushed.set(end);
        Ok(())
    }

    /// Stores `bytes` at `[at, end)` if the prefill thread has populated
    /// those pages; `false` otherwise (the caller writes them).
    fn store_prefilled(&self, at: u64, end: u64, bytes: &[u8]) -> bool {
        let prefill = self.prefill.borrow();
        let Some(p) = prefill.as_ref().filter(|p| end <= p.populated.load(Ordering::Acquire)) else {
            return false;
        };
        #[cfg(debug_assertions)]
        p.assert_populated(at, end);
        // [at, end) lies in the union of completed pieces of requests: each
        // request starts at or below the larger of the previous request's
        // end and the page of its flush's `at`, and its pieces follow one
        // another, so they leave no gap above the page of any later flush's
        // `at` (writes only move up); one thread answers them in order, so
        // `populated >= end` means every earlier piece is done too. Each was inside the file (extended
        // before it was sent) and populated for writing.
        // SAFETY: [at, end) is populated file pages (above); it is at or
        // above `flushed`, so inside no slice `region` handed out, and above
        // every published high-water mark, so no reader reads it; this thread
        // is the arena's only writer.
        unsafe { p.writable.write(at, bytes) };
        true
    }

    /// Unmaps from the writable mapping, [`RELEASE_BYTES`] at a time, the
    /// pages below `at` (the page it starts in stays: the next append
    /// continues it), which stores filled, or `pwrite` did where the prefill
    /// thread was behind (it populates them all the same). Left mapped writable, each would cost a
    /// write-protection and a TLB shootdown interrupting the writer when an
    /// `fdatasync` (a compaction's, a checkpoint's) writes it back; released
    /// together, they cost one. The prefill thread unmaps them (a few
    /// hundred microseconds per 2 MiB, not for a commit to wait on). Nothing
    /// is written below `at` again.
    fn release_written(&self, at: u64) {
        let below = at / sys::page_size() * sys::page_size();
        let from = self.released.get();
        if below < from + RELEASE_BYTES {
            return;
        }
        if let Some(p) = self.prefill.borrow().as_ref() {
            p.release(from, below);
        }
        self.released.set(below);
    }

    /// Before a large write (a bulk load's, a compaction's) ending at
    /// `end`: extends the file by whole [`PREFILL_BYTES`] chunks of zeros,
    /// each written at once, from the first chunk boundary at or above its
    /// length until `end` is covered. A whole aligned chunk written by one
    /// `pwrite` goes into one 2 MiB page-cache folio, which readers then map
    /// whole (see `Mapping::prefer_huge_pages`), where the write alone would
    /// make small ones. Only bytes past the file's end are written, which
    /// nothing reads and the prefill thread was never asked for (it is
    /// asked only below the length the file had then). Failing costs
    /// speed, never the write.
    fn extend_in_chunks(&self, end: u64) {
        let file = &self.mapped.file;
        let Ok(len) = file.metadata().map(|m| m.len()) else { return };
        let mut chunk = len.next_multiple_of(PREFILL_BYTES);
        if chunk >= end {
            return;
        }
        let zeros = vec![0u8; PREFILL_BYTES as usize];
        while chunk < end && chunk + PREFILL_BYTES <= self.reserve {
            use std::os::unix::fs::FileExt;
            if file.write_all_at(&zeros, chunk).is_err() {
                return;
            }
            chunk += PREFILL_BYTES;
            self.mapped.file_len.fetch_max(chunk, Ordering::AcqRel);
        }
    }

    /// Starts the prefill thread if it is not running and may be.
    fn start_prefill(&self) {
        let mut prefill = self.prefill.borrow_mut();
        if prefill.is_none() && !self.no_prefill.get() {
            *prefill = Prefill::start(&self.mapped.file, self.reserve);
            self.no_prefill.set(prefill.is_none());
        }
    }

    /// Keeps the next [`PREFILL_BYTES`] above `end` in the file and asks the
    /// prefill thread to bring them into the page cache, once half of what
    /// it was last asked for is used; the request covers the write `[at,
    /// end)` about to be made too. Failing costs speed, never the write.
    fn prefill_above(&self, at: u64, end: u64) {
        if end + PREFILL_BYTES / 2 <= self.prefilled.get() || self.no_prefill.get() {
            return;
        }
        let to = (end + PREFILL_BYTES).next_multiple_of(PREFILL_BYTES).min(self.reserve);
        let from = self.prefilled.get().max(at) / sys::page_size() * sys::page_size();
        if to <= from {
            self.prefilled.set(to);
            return;
        }
        // The real length, not `file_len`: `set_len` below it would truncate.
        let extended = self.mapped.file.metadata().and_then(|m| match m.len() < to {
            true => self.mapped.file.set_len(to),
            false => Ok(()),
        });
        if let Err(e) = extended {
            // No later request may cover what this one would have.
            tracing::debug!(error = %e, path = %self.mapped.path.display(), "cannot extend the arena ahead of its end");
            self.no_prefill.set(true);
            return;
        }
        self.prefilled.set(to);
        self.mapped.file_len.fetch_max(to, Ordering::AcqRel);
        self.start_prefill();
        if let Some(p) = self.prefill.borrow().as_ref() {
            p.ask(from, to);
        }
    }

    /// Gives the file's blocks above the prefill window back to the
    /// filesystem (a recycled file keeps the size its last generation grew
    /// to). The file keeps its length, so no mapping shrinks, and nobody
    /// reads there: it lies above every published end, and above every range
    /// the prefill thread was asked to populate (later requests populate
    /// their range again). Returns the bytes released; on a filesystem that
    /// cannot punch holes, none.
    pub fn release_unused_tail(&self) -> u64 {
        let page = sys::page_size();
        let from = self.prefilled.get().max(self.flushed.get()).next_multiple_of(page);
        let Ok(len) = self.mapped.file.metadata().map(|m| m.len()) else { return 0 };
        if len <= from {
            return 0;
        }
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.mapped.file, punch, from, len - from) {
            Ok(()) => len - from,
            Err(e) => {
                tracing::debug!(error = %e, path = %self.mapped.path.display(), "cannot release the arena's unused tail");
                0
            }
        }
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        rustix::fs::fdatasync(&self.mapped.file).at(&self.mapped.path)
    }
}

/// How far above its end a writer keeps the file's pages cached.
const PREFILL_BYTES: u64 = 2 << 20;
/// Written pages are unmapped from the writer's read-write mapping this
/// many at a time.
const RELEASE_BYTES: u64 = 2 << 20;
/// The prefill thread reports its progress after each piece this large.
const PREFILL_PIECE: u64 = 128 << 10;
/// A flush this large (a bulk load's, a compaction's) is written with
/// `pwrite` after the file is extended in whole chunks
/// ([`WriterArena::extend_in_chunks`]); smaller ones (a commit's) go into
/// pages the prefill thread populated.
const LARGE_WRITE: usize = 64 << 10;

impl crate::build::NodeSink for WriterArena {
    fn region(&self) -> Region<'_> {
        WriterArena::region(self)
    }
    fn append(&self, node: &[u8]) -> Result<u64> {
        WriterArena::append(self, node)
    }
    fn flush(&self) -> Result<()> {
        WriterArena::flush(self)
    }
    fn read_node(&self, offset: u64) -> Result<Vec<u8>> {
        WriterArena::read_node(self, offset)
    }
    fn take_buffer(&self) -> Vec<u8> {
        std::mem::take(&mut *self.scratch.borrow_mut())
    }
    fn give_buffer(&self, mut buf: Vec<u8>) {
        buf.clear();
        *self.scratch.borrow_mut() = buf;
    }
    fn take_entry_vecs(&self) -> Vec<Vec<crate::node::EntryRef<'static>>> {
        std::mem::take(&mut *self.entry_vecs.borrow_mut())
    }
    fn give_entry_vecs(&self, mut vecs: Vec<Vec<crate::node::EntryRef<'static>>>) {
        // A few node-sized ones are enough; those a large batch grew go back
        // to the allocator rather than pin their memory.
        vecs.retain(|v| v.capacity() <= 1024);
        vecs.truncate(4);
        *self.entry_vecs.borrow_mut() = vecs;
    }
    fn kind_and_count(&self, offset: u64) -> Result<(u8, usize)> {
        let flushed = self.flushed.get();
        let head = |b: &[u8], at: usize| b.get(at..at + 4).map(|h| (h[0], u16::from_le_bytes([h[2], h[3]]) as usize));
        let found = if offset < flushed {
            head(self.region().bytes(), offset as usize)
        } else {
            head(&self.pending.borrow(), (offset - flushed) as usize)
        };
        found.ok_or_else(|| self.mapped.corrupt(offset, "node offset out of bounds"))
    }
    fn append_blob(&self, blob: &[u8]) -> Result<u64> {
        let page = sys::page_size();
        if crate::node::page_aligned(blob.len() - crate::node::HEADER_BYTES, page) {
            // Pad so that the value, right after the blob's header, starts a page.
            let pad = (page - (self.end() + crate::node::HEADER_BYTES as u64) % page) % page;
            if pad > 0 {
                self.append(&vec![0; pad as usize])?;
            }
        }
        WriterArena::append(self, blob)
    }
    fn damaged(&self, damage: crate::node::Damage) -> Error {
        damage.into_error(&self.mapped.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn len(arena: &WriterArena) -> u64 {
        arena.mapped.file.metadata().unwrap().len()
    }

    #[test]
    fn small_flushes_keep_zeroed_room_above_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let arena = WriterArena::create(&StoreDir::open(dir.path()).unwrap(), 1, 1 << 30).unwrap();
        let mut end = 0;
        for i in 0..5000u32 {
            arena.append(&[i as u8; 1000]).unwrap();
            arena.flush().unwrap();
            end = arena.end();
            assert!(len(&arena) >= end + PREFILL_BYTES / 2, "file {} for end {end}", len(&arena));
            assert_eq!(len(&arena) % PREFILL_BYTES, 0);
        }
        assert!(end > 2 * PREFILL_BYTES);
        let mut above = vec![1u8; (len(&arena) - end) as usize];
        arena.mapped.file.read_exact_at(&mut above, end).unwrap();
        assert!(above.iter().all(|&b| b == 0));
        // Every appended byte is where it was put, in the mapping too.
        let region = arena.region();
        for i in 0..5000u64 {
            let at = (HEADER_PAGE + i * 1000) as usize;
            assert!(region.bytes()[at..at + 1000].iter().all(|&b| b == i as u8), "node {i}");
        }
        drop(arena);
        let reopened = WriterArena::open(&StoreDir::open(dir.path()).unwrap(), 1, end).unwrap();
        assert_eq!(reopened.append(&[9; 8]).unwrap(), end);
    }

    /// Resident bytes of the mapping that starts at `start`, from
    /// `/proc/self/smaps`.
    fn resident_bytes(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| {
            l.split('-').next().and_then(|a| usize::from_str_radix(a, 16).ok()) != Some(start) || l.starts_with("Rss")
        });
        lines.next().expect("the mapping is in smaps");
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("an Rss line");
        rss.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    /// A new arena in `dir` if appends there can be stores into populated
    /// pages (the filesystem and kernel allow it); `None`, said on stderr,
    /// otherwise.
    fn arena_taking_stores(dir: &tempfile::TempDir) -> Option<WriterArena> {
        let arena = WriterArena::create(&StoreDir::open(dir.path()).unwrap(), 1, 1 << 30).unwrap();
        let probe = Mapping::read_write(&arena.mapped.file, HEADER_PAGE).unwrap();
        if !sys::overwrites_in_place(&arena.mapped.file) || probe.populate_for_write(0, HEADER_PAGE).is_err() {
            eprintln!("skipped: the temporary directory's filesystem or kernel cannot populate for writing");
            return None;
        }
        Some(arena)
    }

    #[test]
    fn pages_stores_filled_are_unmapped_from_the_writable_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let Some(arena) = arena_taking_stores(&dir) else { return };
        // 16 MiB in small appends, each a store once its pages are populated.
        const NODES: u64 = 16 * 1024;
        for i in 0..NODES {
            arena.append(&[i as u8; 1024]).unwrap();
            arena.flush().unwrap();
        }
        // Kept past the thread, which is stopped once it has answered every
        // request (the thread runs at idle priority: on a busy machine it
        // answers late, but in order).
        let writable = Arc::clone(&arena.prefill.borrow().as_ref().unwrap().writable);
        drop(arena.prefill.borrow_mut().take());
        // What stays mapped: the 2 MiB not yet released, the populated room
        // above the end, and a piece in between.
        let bound = RELEASE_BYTES + 2 * PREFILL_BYTES;
        let resident = resident_bytes(writable.address_range().start);
        assert!(resident <= bound, "{resident} bytes still mapped writable after 16 MiB of appends");
        assert!(resident > 0, "the room above the end is mapped for the next stores");
        // Unmapped, not lost: through the readers' mapping and the file.
        let region = arena.region();
        for i in 0..NODES {
            let at = (HEADER_PAGE + i * 1024) as usize;
            assert!(region.bytes()[at..at + 1024].iter().all(|&b| b == i as u8), "node {i}");
        }
        let mut first = [0u8; 1024];
        arena.mapped.file.read_exact_at(&mut first, HEADER_PAGE).unwrap();
        assert_eq!(first, [0u8; 1024]);
        arena.append(&[7; 1024]).unwrap();
        arena.flush().unwrap();
        arena.mapped.file.read_exact_at(&mut first, arena.end() - 1024).unwrap();
        assert_eq!(first, [7u8; 1024]);
    }

    #[test]
    fn appends_into_populated_pages_are_stores_that_land_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let Some(arena) = arena_taking_stores(&dir) else { return };
        arena.append(&[1; 800]).unwrap();
        arena.flush().unwrap();
        let populated = || arena.prefill.borrow().as_ref().map_or(0, |p| p.populated.load(Ordering::Acquire));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while populated() < PREFILL_BYTES && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(populated() >= PREFILL_BYTES, "the prefill thread populated nothing");
        let mut offsets = Vec::new();
        for i in 0..100u8 {
            offsets.push(arena.append(&[i; 24]).unwrap());
            arena.flush().unwrap();
        }
        assert!(arena.end() <= populated(), "some appends went past the populated pages");
        // Through the file, the readers' mapping and after reopening.
        for (i, &at) in offsets.iter().enumerate() {
            let mut got = [0u8; 24];
            arena.mapped.file.read_exact_at(&mut got, at).unwrap();
            assert_eq!(got, [i as u8; 24]);
            assert_eq!(&arena.region().bytes()[at as usize..at as usize + 24], &[i as u8; 24]);
        }
        let end = arena.end();
        drop(arena);
        let reopened = WriterArena::open(&StoreDir::open(dir.path()).unwrap(), 1, end).unwrap();
        assert_eq!(&reopened.region().bytes()[offsets[99] as usize..end as usize], &[99; 24]);
    }

    #[test]
    fn prefill_never_shortens_a_longer_file() {
        let dir = tempfile::tempdir().unwrap();
        let arena = WriterArena::create(&StoreDir::open(dir.path()).unwrap(), 1, 1 << 30).unwrap();
        // As a recycled file: old bytes far above the cursor.
        arena.mapped.file.write_all_at(&[0xAB; 4096], 10 << 20).unwrap();
        drop(arena);
        let arena = WriterArena::open(&StoreDir::open(dir.path()).unwrap(), 1, HEADER_PAGE).unwrap();
        arena.append(&[1; 800]).unwrap();
        arena.flush().unwrap();
        assert_eq!(len(&arena), (10 << 20) + 4096);
        let mut old = [0u8; 4096];
        arena.mapped.file.read_exact_at(&mut old, 10 << 20).unwrap();
        assert_eq!(old, [0xAB; 4096]);
    }

    #[test]
    fn large_flushes_extend_the_file_in_zeroed_chunks_and_land_whole() {
        // Large flushes (the file extended in whole chunks first), small
        // ones between them, and a file already longer than its data, as a
        // recycled one is: its old bytes past the writes are left alone.
        for recycled in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let arena = WriterArena::create(&StoreDir::open(dir.path()).unwrap(), 1, 1 << 30).unwrap();
            let old_at = 40 << 20;
            if recycled {
                arena.mapped.file.write_all_at(&[0xAB; 4096], old_at).unwrap();
            }
            let mut written = Vec::new();
            // At the threshold, just below it (a commit's path) and just above.
            let sizes = [3 * LARGE_WRITE, 5 << 20, 800, 8, LARGE_WRITE - 8, LARGE_WRITE, LARGE_WRITE + 8];
            for (i, size) in sizes.into_iter().enumerate() {
                let bytes: Vec<u8> = (0..size).map(|j| (i * 31 + j % 251) as u8 | 1).collect();
                let at = arena.append(&bytes).unwrap();
                arena.flush().unwrap();
                written.push((at, bytes));
            }
            let file_len = len(&arena);
            assert!(
                file_len >= arena.end() && (recycled || file_len.is_multiple_of(PREFILL_BYTES)),
                "file {file_len} for end {}",
                arena.end()
            );
            for (at, bytes) in &written {
                let mut back = vec![0; bytes.len()];
                arena.mapped.file.read_exact_at(&mut back, *at).unwrap();
                assert!(back == *bytes, "the {} bytes at {at} read back differently", bytes.len());
            }
            if recycled {
                let mut old = [0u8; 4096];
                arena.mapped.file.read_exact_at(&mut old, old_at).unwrap();
                assert_eq!(old, [0xAB; 4096], "old bytes past the writes were overwritten");
            } else {
                // Past the last write, up to the chunk boundary: zeros.
                let mut tail = vec![1u8; (file_len - arena.end()) as usize];
                arena.mapped.file.read_exact_at(&mut tail, arena.end()).unwrap();
                assert!(tail.iter().all(|&b| b == 0), "the file past its data is not zeros");
            }
        }
    }
}
