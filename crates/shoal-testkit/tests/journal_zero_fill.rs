//! The journal kept zero-filled past its records: crash points and hostile
//! bytes around the zeros. A crash is simulated by leaking the writer (no
//! closing checkpoint) and freeing its lock; a reboot by clearing the boot
//! id in the control file; a power loss by also rewriting the journal as
//! the disk could hold it.

mod reboot;

use reboot::{crash, forget_boot};
use std::path::{Path, PathBuf};

use shoal::{Durability, Error, Options, Store};

const HEADER: usize = 32;
const FILL: u64 = 1 << 20;

fn options() -> Options {
    // No idle thread: a leaked (crashed) writer must not tidy behind the test's back.
    Options { durability: Durability::Sync, create: true, tidy_when_idle: None, ..Options::default() }
}

fn journal(dir: &Path) -> PathBuf {
    dir.join("journal")
}

fn commit(store: &Store, key: &str, value: impl AsRef<[u8]>) -> u64 {
    let mut txn = store.begin();
    txn.put(key, value).unwrap();
    txn.commit().unwrap()
}

fn mark_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[16..24].try_into().unwrap())
}

fn set_mark(bytes: &mut [u8], mark: u64) {
    bytes[16..24].copy_from_slice(&mark.to_le_bytes());
    bytes[24..32].copy_from_slice(&(!mark).to_le_bytes());
}

/// The records' starts and their end (where a length of 0, the zeros, or the file's end is met).
fn records(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut starts = Vec::new();
    let mut at = HEADER;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at);
        at += 8 + len;
    }
    (starts, at)
}

/// The record at `at` with its version and synced mark replaced (checksum recomputed).
fn forged(bytes: &[u8], at: usize, version: u64, mark: u64) -> Vec<u8> {
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut payload = bytes[at + 8..at + 8 + len].to_vec();
    payload[0..8].copy_from_slice(&version.to_le_bytes());
    payload[16..24].copy_from_slice(&mark.to_le_bytes());
    let mut record = (len as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

/// A store with `n` durable one-key commits after its checkpoint, crashed
/// and rebooted: its journal's bytes (records, then zeros), the header's
/// mark set to the records' end (all of them synced and the mark durable).
fn crashed_store(dir: &Path, n: u32) -> (Vec<u8>, u64) {
    let store = Store::open(dir, options()).unwrap();
    store.checkpoint().unwrap();
    for i in 0..n {
        commit(&store, &format!("/k/{i}"), format!("v{i}"));
    }
    let version = store.version();
    crash(store, dir);
    forget_boot(dir);
    let mut bytes = std::fs::read(journal(dir)).unwrap();
    let (starts, end) = records(&bytes);
    assert_eq!(starts.len(), n as usize);
    assert!(bytes[end..].iter().all(|&b| b == 0) && bytes.len() as u64 >= end as u64 + FILL);
    set_mark(&mut bytes, end as u64);
    std::fs::write(journal(dir), &bytes).unwrap();
    (bytes, version)
}

/// A new durable store, checkpointed: its journal holds no record yet.
fn checkpointed_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), options()).unwrap();
    store.checkpoint().unwrap();
    (tmp, store)
}

fn value(store: &Store, key: &str) -> Option<Vec<u8>> {
    store.snapshot().get(key).unwrap().map(<[u8]>::to_vec)
}

/// A checkpoint's truncation interrupted between `set_len(HEADER)` and
/// storing the mark (a SIGKILL there; or a power loss that persisted the
/// size change but not the header's overwrite) leaves a 32-byte journal
/// whose header keeps the old, high mark. The next open finds the head
/// checkpointed and does not empty the journal again. Unless that open
/// brings the mark down (durably) to the records' end, the next durable
/// commit's sync writes the stale mark, and after a power loss the zeros
/// after the acknowledged record lie below it: the store would refuse to
/// open.
#[test]
fn an_interrupted_truncation_then_a_power_loss_after_an_acknowledged_commit_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, options()).unwrap();
    for i in 0..20 {
        commit(&store, &format!("/k/{i}"), format!("v{i}"));
    }
    let stale = mark_of(&std::fs::read(journal(dir)).unwrap());
    assert!(stale > 1000, "the mark covers the 20 records: {stale}");
    store.checkpoint().unwrap();
    crash(store, dir);
    // Killed inside the checkpoint's truncation: cut to the header, the old mark kept.
    let mut bytes = std::fs::read(journal(dir)).unwrap();
    assert_eq!(bytes.len(), HEADER);
    set_mark(&mut bytes, stale);
    std::fs::write(journal(dir), &bytes).unwrap();

    let store = Store::open(dir, options()).unwrap();
    // The open brought the mark down to the records' end (and synced it).
    assert_eq!(mark_of(&std::fs::read(journal(dir)).unwrap()), HEADER as u64);
    let acknowledged = commit(&store, "/after", "acknowledged");
    crash(store, dir);
    // Power loss: the header on disk is the one the commit's sync wrote,
    // the mark the open stored (the one stored after the sync is not yet
    // durable).
    let mut bytes = std::fs::read(journal(dir)).unwrap();
    let (_, end) = records(&bytes);
    assert!((end as u64) < stale && bytes[end..].iter().all(|&b| b == 0));
    set_mark(&mut bytes, HEADER as u64);
    std::fs::write(journal(dir), &bytes).unwrap();
    forget_boot(dir);

    let store = match Store::open(dir, options()) {
        Ok(store) => store,
        Err(e) => panic!("a store holding an acknowledged commit refused to open: {e}"),
    };
    assert_eq!(store.version(), acknowledged);
    assert_eq!(value(&store, "/after").as_deref(), Some(&b"acknowledged"[..]));
}

/// A record forged in the zeros, away from the records (a gap of zeros
/// before it), past the mark: never replayed, and the store opens with
/// everything acknowledged.
#[test]
fn a_record_after_a_gap_of_zeros_is_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut bytes, version) = crashed_store(dir, 5);
    let (starts, end) = records(&bytes);
    let record = forged(&bytes, *starts.last().unwrap(), version + 1, end as u64);
    bytes[end + 4096..end + 4096 + record.len()].copy_from_slice(&record);
    std::fs::write(journal(dir), &bytes).unwrap();
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version, "a record past a gap of zeros was replayed");
    assert_eq!(value(&store, "/k/4").as_deref(), Some(&b"v4"[..]));
}

/// Zeros for one record's head, then an intact record whose own mark says
/// the zeros were synced: acknowledged commits are missing, refused.
#[test]
fn zeros_that_a_later_records_mark_covers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut bytes, version) = crashed_store(dir, 5);
    let (starts, end) = records(&bytes);
    set_mark(&mut bytes, starts[3] as u64);
    let record = forged(&bytes, starts[4], version + 1, end as u64 + 100);
    bytes[end + 8..end + 8 + record.len()].copy_from_slice(&record);
    std::fs::write(journal(dir), &bytes).unwrap();
    match Store::open(dir, options()) {
        Err(Error::Corrupt { offset, detail, .. }) => {
            assert_eq!(offset, end as u64);
            assert!(detail.contains("synced mark"), "{detail}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|s| s.version())),
    }
    assert_eq!(std::fs::read(journal(dir)).unwrap(), bytes, "the failed open changed the journal");
}

/// Zeros where synced records were (below the header's mark): refused,
/// and the journal left as it was.
#[test]
fn zeros_below_the_mark_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut bytes, _) = crashed_store(dir, 5);
    let (starts, end) = records(&bytes);
    bytes[starts[4]..end].fill(0);
    std::fs::write(journal(dir), &bytes).unwrap();
    match Store::open(dir, options()) {
        Err(Error::Corrupt { offset, detail, .. }) => {
            assert_eq!(offset, starts[4] as u64);
            assert!(detail.contains("synced mark"), "{detail}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|s| s.version())),
    }
    assert_eq!(std::fs::read(journal(dir)).unwrap(), bytes, "the failed open changed the journal");
}

/// Unsynced records past the mark as a power loss can leave them in the
/// zeros: the last one's first page lost (its head zeros, the rest
/// there), or garbage then zeros, or a length field of 0 with its
/// checksum there: each a torn tail, cut, the store opening one version
/// back. Below the mark the same bytes are refused.
#[test]
fn torn_records_in_the_zeros_past_the_mark_are_cut_and_refused_below_it() {
    type Damage = fn(&mut [u8], usize, usize);
    let damages: [(&str, Damage); 3] = [
        ("head zeroed", |b, at, _| b[at..at + 16].fill(0)),
        ("garbage then zeros", |b, at, end| b[at + 8..end].fill(0xab)),
        ("length 0", |b, at, _| b[at..at + 4].fill(0)),
    ];
    for (name, damage) in damages {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut bytes, version) = crashed_store(dir, 5);
        let (starts, end) = records(&bytes);
        damage(&mut bytes, starts[4], end);
        // Below the mark: refused.
        std::fs::write(journal(dir), &bytes).unwrap();
        match Store::open(dir, options()) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, starts[4] as u64, "{name}"),
            other => panic!("{name}: expected corruption, got {:?}", other.map(|s| s.version())),
        }
        let _ = std::fs::remove_file(dir.join("lock"));
        // Past it (the mark of the sync before): cut.
        set_mark(&mut bytes, starts[4] as u64);
        std::fs::write(journal(dir), &bytes).unwrap();
        let store = Store::open(dir, options()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(store.version(), version - 1, "{name}");
        assert_eq!(value(&store, "/k/3").as_deref(), Some(&b"v3"[..]), "{name}");
        assert_eq!(value(&store, "/k/4"), None, "{name}");
    }
}

/// Zeros then garbage past the mark (a fill whose size reached the disk,
/// stale blocks after it): cut, everything acknowledged kept.
#[test]
fn zeros_then_garbage_past_the_mark_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut bytes, version) = crashed_store(dir, 5);
    let (_, end) = records(&bytes);
    let len = bytes.len();
    bytes[end + 100..len].fill(0x5a);
    std::fs::write(journal(dir), &bytes).unwrap();
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version);
    assert_eq!(value(&store, "/k/4").as_deref(), Some(&b"v4"[..]));
}

/// The fill cut short (a full disk, or a power loss with part of it on
/// disk) in a journal the open keeps (a crash between a checkpoint's
/// `meta` write and its truncation: every record at or below the
/// checkpoint): records, then zeros to an unaligned end. The clean end is
/// kept; new records go over and past it; nothing is lost over a reboot.
#[test]
fn a_fill_cut_short_is_a_clean_end_and_records_go_on_past_it() {
    let (tmp, store) = checkpointed_store();
    let dir = tmp.path();
    commit(&store, "/k/0", "v0");
    let bytes = std::fs::read(journal(dir)).unwrap();
    let (_, end) = records(&bytes);
    store.checkpoint().unwrap();
    crash(store, dir);
    let short = end + 7;
    std::fs::write(journal(dir), &bytes[..short]).unwrap();
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(std::fs::metadata(journal(dir)).unwrap().len(), short as u64, "scenario: the journal was kept");
    for i in 1..200 {
        commit(&store, &format!("/k/{i}"), "x".repeat(50));
    }
    let version = store.version();
    crash(store, dir);
    forget_boot(dir);
    let bytes = std::fs::read(journal(dir)).unwrap();
    let (starts, end) = records(&bytes);
    assert_eq!(starts.len(), 200);
    assert!(bytes[end..].iter().all(|&b| b == 0));
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version);
    assert_eq!(value(&store, "/k/0").as_deref(), Some(&b"v0"[..]));
    assert_eq!(value(&store, "/k/199").as_deref(), Some("x".repeat(50).as_bytes()));
}

/// A record larger than the fill (3.6 MB): zeros written after it to the
/// next MiB boundary and one more; it and a record after it survive a
/// power loss.
#[test]
fn a_record_larger_than_the_fill_survives_a_power_loss() {
    let (tmp, store) = checkpointed_store();
    let dir = tmp.path();
    commit(&store, "/small", "1");
    let mut txn = store.begin();
    for i in 0..4u8 {
        txn.put(&format!("/big/{i}"), vec![i + 1; 900_000]).unwrap();
    }
    txn.commit().unwrap();
    let bytes = std::fs::read(journal(dir)).unwrap();
    let (starts, end) = records(&bytes);
    assert_eq!(starts.len(), 2);
    assert_eq!(bytes.len() as u64, (end as u64).next_multiple_of(FILL) + FILL);
    assert!(bytes[end..].iter().all(|&b| b == 0));
    let version = commit(&store, "/after", "2");
    crash(store, dir);
    forget_boot(dir);
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version);
    for i in 0..4u8 {
        assert_eq!(value(&store, &format!("/big/{i}")), Some(vec![i + 1; 900_000]));
    }
    assert_eq!(value(&store, "/after").as_deref(), Some(&b"2"[..]));
}

/// `stat` reports the journal's records (what a crash would replay), not
/// the zeros after them, the same from the writer and a reader; a
/// checkpoint empties the file, the next commit fills it again.
#[test]
fn stat_reports_the_records_and_a_checkpoint_empties_the_file() {
    let (tmp, store) = checkpointed_store();
    let dir = tmp.path();
    assert_eq!(store.stat().unwrap().journal_bytes, HEADER as u64);
    commit(&store, "/a", "1");
    let bytes = std::fs::read(journal(dir)).unwrap();
    assert_eq!(bytes.len() as u64, 2 * FILL);
    let (starts, end) = records(&bytes);
    assert_eq!(starts.len(), 1);
    let reader = shoal::Reader::open(dir).unwrap();
    assert_eq!((store.stat().unwrap().journal_bytes, reader.stat().unwrap().journal_bytes), (end as u64, end as u64));
    store.checkpoint().unwrap();
    assert_eq!(std::fs::metadata(journal(dir)).unwrap().len(), HEADER as u64);
    assert_eq!(reader.stat().unwrap().journal_bytes, HEADER as u64);
    let version = commit(&store, "/b", "2");
    assert_eq!(std::fs::metadata(journal(dir)).unwrap().len(), 2 * FILL);
    assert_eq!(store.stat().unwrap().journal_bytes, reader.stat().unwrap().journal_bytes);
    crash(store, dir);
    forget_boot(dir);
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version);
    assert_eq!((value(&store, "/a").as_deref(), value(&store, "/b").as_deref()), (Some(&b"1"[..]), Some(&b"2"[..])));
}

const CHILD: &str = "SHOAL_JOURNAL_ZERO_FILL_CHILD";

/// In the parent: runs test `name` alone in a child process and asserts it
/// passed; returns false. In that child: returns true (the caller runs the test).
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Limits the size of files this process writes (SIGXFSZ ignored: a write
/// past the limit fails with EFBIG, as one past a full disk with ENOSPC);
/// returns the limit before.
fn limit_file_size(limit: u64) -> libc::rlimit {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on this (child) process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let new = libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &new), 0);
    }
    old
}

fn restore_file_size(old: libc::rlimit) {
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0) };
}

/// Bytes this process passed to write calls so far (`wchar`), if the kernel tells.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|n| n.trim().parse().ok()).expect("wchar")
}

/// A write that fails halfway through the zero fill (in a child process,
/// so that no other test sees the limit): the fill stops at the limit,
/// commits go on, and every acknowledged one survives a reboot.
#[test]
fn a_zero_fill_that_fails_halfway_costs_no_commit() {
    if !in_child("a_zero_fill_that_fails_halfway_costs_no_commit") {
        return;
    }
    let (tmp, store) = checkpointed_store();
    let dir = tmp.path();
    let limit: u64 = FILL + 65_536;
    let old = limit_file_size(limit);
    for i in 0..100 {
        commit(&store, &format!("/k/{i}"), format!("v{i}"));
    }
    let version = store.version();
    let bytes = std::fs::read(journal(dir)).unwrap();
    assert_eq!(bytes.len() as u64, limit, "scenario: the fill stopped at the limit");
    let (starts, end) = records(&bytes);
    assert_eq!(starts.len(), 100);
    assert!(bytes[end..].iter().all(|&b| b == 0));
    crash(store, dir);
    restore_file_size(old);
    forget_boot(dir);
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.version(), version);
    assert_eq!(value(&store, "/k/99").as_deref(), Some(&b"v99"[..]));
}

/// Once the fill has failed partway (a full disk), later appends must not
/// try it again from their records' ends: each would rewrite (and so
/// dirty, for the group's `fdatasync` to write out) the zeros the failed
/// attempts wrote, about 1 MiB per one-key commit. Measured in bytes passed
/// to write calls, not time.
#[test]
fn after_a_failed_fill_a_commit_does_not_rewrite_the_zeros() {
    if !in_child("after_a_failed_fill_a_commit_does_not_rewrite_the_zeros") {
        return;
    }
    let (tmp, store) = checkpointed_store();
    let dir = tmp.path();
    let old = limit_file_size(FILL + 65_536);
    commit(&store, "/k/first", "v");
    assert_eq!(std::fs::metadata(journal(dir)).unwrap().len(), FILL + 65_536, "scenario: the fill failed");
    let before = written_bytes();
    for i in 0..20 {
        commit(&store, &format!("/k/{i}"), format!("v{i}"));
    }
    let written = written_bytes() - before;
    restore_file_size(old);
    assert!(written < 2 << 20, "20 one-key commits after a failed fill wrote {written} bytes");
}
