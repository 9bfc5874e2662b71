//! The operating-system shim: memory mappings, open-file-description locks,
//! process identity. All of shoal's `unsafe` lives here, behind small APIs
//! whose `# Safety` sections name what callers must keep true.
//!
//! Linux only: OFD locks (`F_OFD_SETLK`), `/proc` for process start times and
//! the boot id.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// A shared mapping of a file, possibly longer than the file (address space
/// reserved for growth). Bytes past the end of the file must never be
/// touched (SIGBUS); callers keep every access below the file's length.
pub struct Mapping {
    raw: MmapRaw,
}

// SAFETY: the mapping is plain shared memory; all access goes through the
// methods below, whose callers uphold the no-overlapping-writes contract.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only read immutable ranges or use atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` read-only (MAP_SHARED, PROT_READ).
    pub fn read_only(file: &File, len: u64) -> std::io::Result<Mapping> {
        let raw = MmapOptions::new().len(to_usize(len)?).map_raw_read_only(file)?;
        Ok(Mapping { raw })
    }

    /// Maps `len` bytes of `file` read-write (MAP_SHARED): the control file
    /// for its writer, the reader table for everyone, and the arena for its
    /// writer's appends (never for a reader's reads).
    pub fn read_write(file: &File, len: u64) -> std::io::Result<Mapping> {
        let raw = MmapOptions::new().len(to_usize(len)?).map_raw(file)?;
        Ok(Mapping { raw })
    }

    pub fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    /// Faults `[offset, offset + len)` of a read-write mapping in for
    /// writing (`MADV_POPULATE_WRITE`): the file's pages are cached, backed
    /// (blocks reserved or allocated) and writable, so that later stores to
    /// them take no page fault. Where backing fails (a full disk) this
    /// returns the error instead of the SIGBUS a store would raise. The range
    /// must lie within the file.
    pub fn populate_for_write(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.raw.advise_range(memmap2::Advice::PopulateWrite, to_usize(offset)?, to_usize(len)?)
    }

    /// Drops this mapping's page-table entries for `[offset, offset + len)`
    /// (`MADV_DONTNEED` on a shared file mapping): the pages and their
    /// bytes stay in the file's page cache, dirty ones are written back as
    /// ever, and a later access faults them in again. Pages written through
    /// a read-write mapping and left mapped writable must each be
    /// write-protected, with a TLB shootdown to every CPU running this
    /// process, when an `fdatasync` writes them back; released in bulk
    /// here, they cost one.
    pub fn release(&self, offset: u64, len: u64) -> std::io::Result<()> {
        // SAFETY: MADV_DONTNEED discards data only in private or anonymous
        // mappings; every `Mapping` is a MAP_SHARED mapping of a file, for
        // which it only unmaps (dirty page-table bits move to the pages, so
        // no write is lost). No reference into the range outlives this call
        // in a way it could invalidate: a later access faults the same
        // file page in again.
        unsafe {
            self.raw.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, to_usize(offset)?, to_usize(len)?)
        }
    }

    /// Asks for the mapping to be backed by huge pages where the kernel can
    /// (`MADV_HUGEPAGE`): page-cache folios of 2 MiB created through it, and
    /// mapped whole (one TLB entry for 2 MiB of arena instead of 512).
    pub fn prefer_huge_pages(&self) -> std::io::Result<()> {
        self.raw.advise(memmap2::Advice::HugePage)
    }

    /// Keeps the mapping out of child processes (`MADV_DONTFORK`): a writer
    /// that forks must not hand its children a writable arena.
    pub fn exclude_from_children(&self) -> std::io::Result<()> {
        self.raw.advise(memmap2::Advice::DontFork)
    }

    /// Copies `bytes` into a read-write mapping at `offset`.
    ///
    /// # Safety
    /// `[offset, offset + len)` lies within the mapping and the file, was
    /// populated for writing ([`Mapping::populate_for_write`]), and nothing
    /// else reads or writes it meanwhile: no slice of it is alive in this
    /// process (it is above every immutable prefix handed out) and no other
    /// process reads it (it is above every published high-water mark).
    pub unsafe fn write(&self, offset: u64, bytes: &[u8]) {
        debug_assert!(offset + bytes.len() as u64 <= self.len());
        // SAFETY: in bounds (caller), backed by populated pages of the file
        // (caller, so no SIGBUS), and not aliased by any reference (caller).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.raw.as_mut_ptr().add(offset as usize), bytes.len())
        }
    }

    /// The virtual addresses the mapping occupies.
    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.raw.as_ptr() as usize;
        start..start + self.raw.len()
    }

    /// The bytes `[0, end)`.
    ///
    /// # Safety
    /// `end <= self.len()`, the file is at least `end` bytes long and is never
    /// truncated below it while the mapping lives, and nobody writes to
    /// `[0, end)` for as long as the returned slice lives (shoal's
    /// immutability invariant: bytes below a published high-water mark are
    /// never written again).
    pub unsafe fn immutable_prefix(&self, end: u64) -> &[u8] {
        debug_assert!(end <= self.len());
        // SAFETY: in bounds of the mapping (caller), backed by the file (caller),
        // not mutated while borrowed (caller).
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), end as usize) }
    }

    /// An atomic word inside the mapping, shared with other processes.
    ///
    /// # Safety
    /// `offset` is 8-aligned, `offset + 8 <= len` and inside the file, and the
    /// word is only ever accessed atomically by every process. On a read-only
    /// mapping the word may only be read with `Relaxed` loads (the one atomic
    /// access std defines on read-only memory for 8-byte atomics on x86_64 and
    /// aarch64); ordering then comes from fences.
    pub unsafe fn atomic_u64(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= self.len());
        // SAFETY: aligned, in bounds, and accessed only atomically (caller); the
        // mapping outlives the reference.
        unsafe { AtomicU64::from_ptr(self.raw.as_mut_ptr().add(offset as usize).cast::<u64>()) }
    }
}

impl Mapping {
    /// A 32-bit atomic word inside the mapping (a futex word).
    ///
    /// # Safety
    /// As [`Mapping::atomic_u64`], with `offset` 4-aligned.
    pub unsafe fn atomic_u32(&self, offset: u64) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= self.len());
        // SAFETY: aligned, in bounds, and accessed only atomically (caller); the
        // mapping outlives the reference.
        unsafe { AtomicU32::from_ptr(self.raw.as_mut_ptr().add(offset as usize).cast::<u32>()) }
    }
}

/// Words of a small shared file that every process maps and accesses only
/// atomically (the control file): the safe face of [`Mapping::atomic_u64`].
///
/// The file must keep at least `len` bytes for as long as it is mapped:
/// only its owner (the store's writer) may write it, and no code of shoal
/// ever shrinks it, so a process that could cut it could also rewrite the
/// store's data and is trusted as the writer is (see ARCHITECTURE.md, trust
/// model).
pub struct SharedWords {
    map: Mapping,
}

impl SharedWords {
    /// Maps the first `len` bytes of `file` (which must be that long),
    /// read-write for its writer, read-only for everyone else.
    pub fn map(file: &File, len: u64, writable: bool) -> std::io::Result<SharedWords> {
        if file.metadata()?.len() < len {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "shared file shorter than its words"));
        }
        let map = if writable { Mapping::read_write(file, len)? } else { Mapping::read_only(file, len)? };
        Ok(SharedWords { map })
    }

    /// The 8-byte word at `offset`. On a read-only mapping, only `Relaxed`
    /// loads are allowed (see [`Mapping::atomic_u64`]); callers order them
    /// with fences.
    pub fn u64(&self, offset: u64) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.map.len(), "word {offset} outside the shared file");
        // SAFETY: aligned and inside the mapping (asserted), inside the file
        // (checked at `map`, and the file never shrinks: see the type's
        // docs), and shoal accesses these words only atomically.
        unsafe { self.map.atomic_u64(offset) }
    }

    /// The 4-byte word at `offset` (a futex word).
    pub fn u32(&self, offset: u64) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.map.len(), "word {offset} outside the shared file");
        // SAFETY: as in `u64`.
        unsafe { self.map.atomic_u32(offset) }
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout`. A shared
/// (not process-private) futex, so a word in a shared file mapping wakes
/// waiters in every process; waiting only reads the word, so a read-only
/// mapping will do. Returns early on a wake-up, a change, a signal or the timeout.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: std::time::Duration) -> std::io::Result<()> {
    use rustix::thread::futex;
    let timeout =
        futex::Timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as _, tv_nsec: timeout.subsec_nanos() as _ };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&timeout)) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT | rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Wakes every process waiting on `word`.
pub fn futex_wake_all(word: &AtomicU32) -> std::io::Result<()> {
    use rustix::thread::futex;
    futex::wake(word, futex::Flags::empty(), i32::MAX as u32).map(|_| ()).map_err(Into::into)
}

/// Asks the CPU to start loading every cache line of `bytes` (a hint; a
/// no-op on other architectures than x86-64).
#[inline(always)]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = bytes.as_ptr() as usize + bytes.len();
        let mut line = bytes.as_ptr() as usize & !63;
        while line < end {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has,
            // and reads nothing: a prefetch is a hint that never faults,
            // whatever the address (these are the lines that hold `bytes`,
            // the first one rounded down to its start).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += 64;
        }
    }
}

/// Sleeps while `word`, a word of this process's memory, holds `expected`,
/// for at most `timeout` (a process-private futex: cheaper for the kernel
/// to key than a shared one). Returns early on a wake-up, a change or a
/// signal, and then `true`; `false` when the timeout ran out. Any other
/// failure is a spurious wake-up to the caller, which looks at its state
/// again.
pub fn futex_wait_in_process(word: &AtomicU32, expected: u32, timeout: std::time::Duration) -> bool {
    use rustix::thread::futex;
    let timeout =
        futex::Timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as _, tv_nsec: timeout.subsec_nanos() as _ };
    !matches!(futex::wait(word, futex::Flags::PRIVATE, expected, Some(&timeout)), Err(rustix::io::Errno::TIMEDOUT))
}

/// Wakes every thread of this process waiting on `word`
/// ([`futex_wait_in_process`]). It cannot fail for a valid word.
pub fn futex_wake_all_in_process(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
}

/// Wakes one thread of this process waiting on `word`
/// ([`futex_wait_in_process`]), if one is.
pub fn futex_wake_one_in_process(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, 1);
}

/// Lowers the calling thread's CPU priority by 10 nice levels (at most to
/// 19), for a background thread that holds no lock the committing threads
/// wait for, where `SCHED_IDLE` is refused: on a busy machine it yields the
/// CPU to them more often than not. Linux applies `setpriority` to a thread
/// id alone. Failing leaves the priority as it was.
pub fn lower_this_threads_priority() {
    let tid = Some(rustix::thread::gettid());
    let lowered = rustix::process::getpriority_process(tid)
        .and_then(|nice| rustix::process::setpriority_process(tid, (nice + BACKGROUND_NICE).min(19)));
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

const BACKGROUND_NICE: i32 = 10;

/// Marks the calling thread as a batch thread (`SCHED_BATCH`): its share of
/// the CPU is unchanged, but its wake-ups do not preempt running threads.
/// For the compaction thread, which holds the writer lock in its short
/// phases and so must not lose CPU share, but whose long copy should not
/// interrupt a committing thread. Failing leaves the policy as it was.
pub fn mark_this_thread_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialized sched_param for the call; pid
    // 0 names the calling thread; the call reads the struct and touches no
    // other memory.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot mark the compaction thread as batch");
    }
}

/// Marks the calling thread as an idle thread (`SCHED_IDLE`): it runs only
/// on CPU time no other thread wants, so it never preempts a committing
/// thread or a reader. For the scrub and the prefill thread, which hold no
/// lock anyone waits for: the scrub may take as long as it needs, and a
/// prefill that comes too late costs the writer a `pwrite` instead of a
/// store. Failing falls back to
/// [`lower_this_threads_priority`].
pub fn mark_this_thread_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialized sched_param for the call; pid
    // 0 names the calling thread; the call reads the struct and touches no
    // other memory.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot mark a background thread as idle");
        lower_this_threads_priority();
    }
}

/// Whether `file`'s filesystem rewrites a written block in place (ext4,
/// tmpfs), so that a store into a cached page never needs new space.
pub fn overwrites_in_place(file: &File) -> bool {
    const EXT4_SUPER_MAGIC: u64 = 0xEF53;
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::fstatfs(file).is_ok_and(|s| matches!(s.f_type as u64, EXT4_SUPER_MAGIC | TMPFS_MAGIC))
}

fn to_usize(len: u64) -> std::io::Result<usize> {
    usize::try_from(len).map_err(|_| std::io::Error::other("mapping larger than the address space"))
}

fn ofd_lock(
    file: &File,
    command: libc::c_int,
    kind: libc::c_short,
    start: u64,
    len: u64,
) -> std::io::Result<libc::flock> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start as libc::off_t;
    lock.l_len = len as libc::off_t;
    // SAFETY: fcntl with an OFD lock command reads and writes only `lock`,
    // which lives for the call; the fd is open for as long as `file` is.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock)
}

/// Tries to take an exclusive open-file-description lock on a byte range.
/// The kernel drops it when the last descriptor of this open file closes,
/// including when the process dies. `Ok(false)`: someone else holds it.
pub fn try_lock_range(file: &File, start: u64, len: u64) -> std::io::Result<bool> {
    match ofd_lock(file, libc::F_OFD_SETLK, libc::F_WRLCK as libc::c_short, start, len) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes a shared open-file-description lock on a byte range (the file
/// need only be open for reading). Shared locks of many holders coexist;
/// only an exclusive one conflicts. `Ok(false)`: an exclusive one is held.
pub fn try_lock_range_shared(file: &File, start: u64, len: u64) -> std::io::Result<bool> {
    match ofd_lock(file, libc::F_OFD_SETLK, libc::F_RDLCK as libc::c_short, start, len) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a lock taken by [`try_lock_range`] on the same open file.
pub fn unlock_range(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    ofd_lock(file, libc::F_OFD_SETLK, libc::F_UNLCK as libc::c_short, start, len).map(|_| ())
}

/// Whether another open file description holds a lock on any byte of the range.
pub fn range_is_locked(file: &File, start: u64, len: u64) -> std::io::Result<bool> {
    let lock = ofd_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK as libc::c_short, start, len)?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), which tells a live process from a later one that
/// reused its pid. `None` when the process does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` is still alive.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// This boot's id: page-cache contents survive a process crash but not a
/// reboot, and this tells the two apart.
pub fn boot_id() -> [u8; 16] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        let s = std::str::from_utf8(pair).unwrap_or("0");
        id[i] = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    id
}

/// The system page size.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ofd_locks_conflict_between_open_files_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [0u8; 256]).unwrap();
        let a = File::options().read(true).write(true).open(&path).unwrap();
        let b = File::options().read(true).write(true).open(&path).unwrap();
        assert!(try_lock_range(&a, 64, 64).unwrap());
        assert!(!try_lock_range(&b, 64, 64).unwrap());
        assert!(try_lock_range(&b, 128, 64).unwrap());
        assert!(range_is_locked(&b, 64, 64).unwrap());
        drop(a);
        assert!(!range_is_locked(&b, 64, 64).unwrap());
    }

    #[test]
    fn own_start_time_is_found() {
        let me = std::process::id();
        let t = process_start_time(me).expect("own /proc entry");
        assert!(process_alive(me, t));
        assert!(!process_alive(me, t + 1));
        assert_ne!(boot_id(), [0u8; 16]);
    }
}
