//! The prefill thread: the pages just above a writer's end made ready for
//! its stores, and those it has filled unmapped again.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::PREFILL_PIECE;
use crate::sys::{self, Mapping};

/// Adds `[from, to)` to the populated ranges `done`, kept sorted and merged
/// (the thread's requests and the writer's own populations interleave).
#[cfg(debug_assertions)]
fn record_populated(done: &std::sync::Mutex<Vec<(u64, u64)>>, from: u64, to: u64) {
    let mut done = crate::locking::lock(done);
    done.push((from, to));
    done.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(done.len());
    for &(from, to) in done.iter() {
        match merged.last_mut() {
            Some(last) if last.1 >= from => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    *done = merged;
}

/// What the prefill thread is asked, answered in order.
pub(super) enum PrefillRequest {
    /// Populate `[from, to)` for writing.
    Populate { from: u64, to: u64 },
    /// Unmap `[from, to)`, which the writer filled and never writes again
    /// (see [`WriterArena::release_written`]).
    Release { from: u64, to: u64 },
}

/// A thread that brings the pages just above an arena's end into the page
/// cache, zeroed, backed and writable, off the commit path; and unmaps
/// them from its mapping once the writer has filled them.
///
/// A commit appends a few KiB. With `pwrite` into a page that is not cached
/// the kernel must first allocate it, zero what the write does not cover,
/// reserve its block and account it dirty, which cost about a third of a
/// one-key commit on ext4 (`examples/commit_profile` under `perf`). The
/// writer extends the file above its end with a hole (reads as zeros,
/// allocates no blocks) and asks this thread to populate the range for
/// writing through a read-write mapping (`MADV_POPULATE_WRITE`: each page
/// is cached, its block reserved and its page-table entry made writable).
/// It works in pieces of [`PREFILL_PIECE`] and reports each one done
/// (`populated`, stored after the advice returned), so the writer waits
/// for no more than the piece it appends into; once a range is reported,
/// the writer's appends into it are plain stores: no system call, no
/// fault. Below that mark the thread never touches a byte; the
/// advice itself changes no data, so it may run over pages the writer has
/// already filled by `pwrite`. Behind the writer it unmaps, 2 MiB at a time,
/// the pages the writer's stores filled (`MADV_DONTNEED`, which on a shared
/// file mapping changes no data either): an `fdatasync` then writes them
/// back without write-protecting each one in this mapping, a TLB shootdown
/// apiece that interrupts the writer on the other CPU.
///
/// Stores are used only on filesystems that overwrite a written block in
/// place (ext4, tmpfs). A populated page that writeback has cleaned since
/// (after any `fdatasync`, or the kernel's dirty expiry) is write-protected
/// again, and the writer's next store into it faults it writable; there
/// that needs no new block, while a copy-on-write filesystem (btrfs, XFS
/// with shared extents) would reserve one and could fail with SIGBUS where
/// `pwrite` returns ENOSPC. Elsewhere, or where population fails (a full
/// disk, a kernel before 5.14), the thread falls back to
/// `POSIX_FADV_WILLNEED`, which caches zero-filled pages for the writer's
/// `pwrite`, and a full disk stays an error of that `pwrite`. What remains
/// is a page evicted after writeback cleaned it: the fault reads it back,
/// and a disk failing then raises SIGBUS in the writer (never in a reader).
/// The mapping is not inherited by child processes (`MADV_DONTFORK`).
pub(super) struct Prefill {
    requests: Option<mpsc::Sender<PrefillRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The writer's read-write mapping of the file.
    pub(super) writable: Arc<Mapping>,
    /// The end of the newest completed piece of a request (pieces and
    /// requests complete in order);
    /// stays 0 where stores are not used (see above).
    pub(super) populated: Arc<AtomicU64>,
    /// The completed requests and the writer's own populations, merged, for
    /// [`Prefill::assert_populated`].
    #[cfg(debug_assertions)]
    done: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl Prefill {
    pub(super) fn start(file: &File, reserve: u64) -> Option<Prefill> {
        let failed = |e: std::io::Error| tracing::debug!(error = %e, "no prefill thread; appends use pwrite");
        let (requests, asked) = mpsc::channel::<PrefillRequest>();
        let writable = Mapping::read_write(file, reserve).map_err(failed).ok()?;
        writable.exclude_from_children().map_err(failed).ok()?;
        let writable = Arc::new(writable);
        let advised = file.try_clone().map_err(failed).ok()?;
        let stores = sys::overwrites_in_place(file);
        let populated = Arc::new(AtomicU64::new(0));
        #[cfg(debug_assertions)]
        let done = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
        let (map, published) = (Arc::clone(&writable), Arc::clone(&populated));
        #[cfg(debug_assertions)]
        let record = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("shoal-prefill".into())
            .spawn(move || {
                sys::mark_this_thread_idle();
                let mut populate = stores;
                for request in asked {
                    let (from, to) = match request {
                        PrefillRequest::Populate { from, to } => (from, to),
                        PrefillRequest::Release { from, to } => {
                            if let Err(e) = map.release(from, to - from) {
                                tracing::debug!(error = %e, "cannot unmap written arena pages");
                            }
                            continue;
                        }
                    };
                    // In pieces, each reported once done: the writer's next
                    // appends need the first piece, not the whole request.
                    let mut piece = from;
                    while populate && piece < to {
                        let piece_end = (piece + PREFILL_PIECE).min(to);
                        match map.populate_for_write(piece, piece_end - piece) {
                            Ok(()) => {
                                #[cfg(debug_assertions)]
                                record_populated(&record, piece, piece_end);
                                published.fetch_max(piece_end, Ordering::Release);
                                piece = piece_end;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot populate the arena for writing; appends use pwrite");
                                populate = false;
                            }
                        }
                    }
                    if piece < to {
                        let len = std::num::NonZeroU64::new(to - piece);
                        let _ = rustix::fs::fadvise(&advised, piece, len, rustix::fs::Advice::WillNeed);
                    }
                }
            })
            .map_err(failed)
            .ok()?;
        Some(Prefill {
            requests: Some(requests),
            thread: Some(thread),
            writable,
            populated,
            #[cfg(debug_assertions)]
            done,
        })
    }

    /// Checks the condition of the store's SAFETY comment: `[at, end)`, from
    /// the start of its page, lies in the union of completed requests and
    /// the writer's own populations (kept merged).
    #[cfg(debug_assertions)]
    pub(super) fn assert_populated(&self, at: u64, end: u64) {
        let page = at / sys::page_size() * sys::page_size();
        let done = crate::locking::lock(&self.done);
        assert!(
            done.iter().any(|&(from, to)| from <= page && end <= to),
            "store into [{at}, {end}) outside the populated ranges {done:?}"
        );
    }

    pub(super) fn ask(&self, from: u64, to: u64) {
        if let Some(r) = &self.requests {
            let _ = r.send(PrefillRequest::Populate { from, to });
        }
    }

    pub(super) fn release(&self, from: u64, to: u64) {
        if let Some(r) = &self.requests {
            let _ = r.send(PrefillRequest::Release { from, to });
        }
    }
}

impl Drop for Prefill {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered every
        // request still queued.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
