//! Waiting for versions: a reader process sleeps on the control file's futex
//! and is woken by each commit of the writer process; a wait with no commits
//! times out; a waiting reader can tell that its writer died; a version fd
//! (for event loops) becomes readable at each publication.

use std::time::{Duration, Instant};

use shoal::{Durability, Options, Reader, Store};
use shoal_testkit::{field, ChildProcess};

const WAITER: &str = env!("CARGO_BIN_EXE_waiter");
const WRITER: &str = env!("CARGO_BIN_EXE_writer-child");

#[test]
fn a_waiting_reader_process_is_woken_by_the_writers_commits() {
    woken_by_commits("0"); // sleeps at once
    woken_by_commits("100"); // spins 100 µs first
}

fn woken_by_commits(spin_micros: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::None, create: true, ..Options::default() }).unwrap();
    let stop = store.version() + 200;
    let mut waiter = ChildProcess::spawn(WAITER, &[dir.path().to_str().unwrap(), &stop.to_string(), spin_micros]);
    waiter.wait_for("ready");
    for i in 0..200 {
        let mut txn = store.begin();
        txn.put("/k", i.to_string()).unwrap();
        txn.commit().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (lines, ok) = waiter.finish();
    assert!(ok);
    let report = lines.iter().find(|l| l.starts_with("report")).expect("report");
    assert_eq!(field(report, "timeouts"), Some(0), "{report}");
    assert_eq!(field(report, "backwards"), Some(0), "{report}");
    assert_eq!(field(report, "last"), Some(stop), "{report}");
    // Commits 2 ms apart: the waiter sleeps between them and is woken again
    // and again (never by its 10 s timeout: no wake-up is lost, although the
    // writer skips the wake when it counts no sleeper); a busy machine may
    // let a few commits land during one wake-up, so only a floor is checked.
    assert!(field(report, "wakes").unwrap() >= 20, "{report}");
}

#[test]
fn a_wait_without_commits_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::None, create: true, ..Options::default() }).unwrap();
    let mut txn = store.begin();
    txn.put("/k", "v").unwrap();
    let now = txn.commit().unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let start = Instant::now();
    assert!(reader.wait_for_version(now, Duration::from_millis(300)).unwrap().is_none());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    // An older version is answered at once.
    let snap = reader.wait_for_version(now - 1, Duration::from_secs(5)).unwrap();
    assert_eq!(snap.map(|s| s.version()), Some(now));
}

#[test]
fn a_waiting_reader_can_tell_that_the_writer_died() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ChildProcess::spawn(WRITER, &[dir.path().to_str().unwrap()]);
    writer.wait_for("ack 20");
    let reader = Reader::open(dir.path()).unwrap();
    assert!(reader.writer_alive());
    writer.kill();
    let current = reader.snapshot().unwrap().version();
    assert!(reader.wait_for_version(current, Duration::from_millis(200)).unwrap().is_none());
    assert!(!reader.writer_alive(), "a killed writer still counts as alive");
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable_within(fd: &impl std::os::fd::AsRawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    n == 1 && pfd.revents & libc::POLLIN != 0
}

#[test]
fn a_version_fd_becomes_readable_at_each_publication() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::None, create: true, ..Options::default() }).unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let (a, b) = (reader.version_fd().unwrap(), reader.version_fd().unwrap());
    assert!(!readable_within(&a, 100), "readable before any commit");
    let mut txn = store.begin();
    txn.put("/k", "1").unwrap();
    let v = txn.commit().unwrap();
    // Every descriptor of the store is signalled (one helper thread serves both).
    assert!(readable_within(&a, 5000) && readable_within(&b, 5000));
    assert_eq!(reader.snapshot().unwrap().version(), v);
    a.clear().unwrap();
    assert!(!readable_within(&a, 100), "still readable after clear");
    assert!(readable_within(&b, 0), "clearing one descriptor cleared another");
    drop(b);

    // A writer in another process signals it too.
    drop(store);
    a.clear().unwrap();
    let mut writer = ChildProcess::spawn(WRITER, &[dir.path().to_str().unwrap()]);
    writer.wait_for("ack 1");
    assert!(readable_within(&a, 5000));
    writer.kill();
}
