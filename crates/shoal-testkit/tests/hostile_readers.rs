//! A process that may write the reader table misbehaves with it: zeroes
//! every slot, cuts the file, replaces it or deletes it, then the writer
//! (reopened, in the last two cases) commits, compacts and reclaims. A
//! snapshot held by a third process must still read its own version's
//! bytes, and the writer must go on (no SIGBUS). What a reader pins is told
//! by locks on the arena files, not by anything in the table.

use shoal::{Durability, Options, Reader, Store};
use shoal_testkit::{field, ChildProcess};

const HOLDER: &str = env!("CARGO_BIN_EXE_snapshot-holder");
const VANDAL: &str = env!("CARGO_BIN_EXE_table-vandal");

fn options() -> Options {
    Options { durability: Durability::None, auto_compact: false, retain_versions: 1, ..Options::default() }
}

fn rewrite_all(store: &Store, fill: u8) {
    store.bulk_load((0..2000).map(|i| (format!("/k/{}/{i}", i % 20), vec![fill; 40]))).unwrap();
}

/// A store with a third process holding a snapshot of its first generation.
fn held_store() -> (tempfile::TempDir, Store, ChildProcess, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), options()).unwrap();
    rewrite_all(&store, b'a');
    let mut holder = ChildProcess::spawn(HOLDER, &[dir.path().to_str().unwrap()]);
    let held = field(&holder.wait_for("held"), "version").unwrap();
    (dir, store, holder, held)
}

fn vandalize(dir: &std::path::Path, action: &str) {
    let mut vandal = ChildProcess::spawn(VANDAL, &[dir.to_str().unwrap(), action]);
    vandal.wait_for("done");
    assert!(vandal.finish().1, "the vandal failed");
}

/// Rounds of rewriting, compacting and reclaiming: every generation but the
/// held one is recycled or deleted meanwhile.
fn churn(store: &Store) {
    for round in 0..4u8 {
        rewrite_all(store, b'b' + round);
        store.compact().unwrap();
        store.reclaim();
    }
}

fn assert_held_intact(holder: &mut ChildProcess, held: u64, store: &Store) {
    holder.send("check");
    let verdict = holder.next_line().expect("holder output");
    assert_eq!(verdict, "same", "the held snapshot of version {held} changed");
    let fresh = field(&holder.wait_for("fresh"), "version").unwrap();
    assert_eq!(fresh, store.version(), "the holder's fresh snapshot");
    // A new reader can still join and read.
    let reader = Reader::open(store.dir()).unwrap();
    assert_eq!(reader.snapshot().unwrap().get("/k/0/0").unwrap(), Some(&[b'e'; 40][..]));
}

#[test]
fn zeroed_slots_free_nothing_a_reader_holds() {
    let (dir, store, mut holder, held) = held_store();
    vandalize(dir.path(), "zero");
    assert!(store.readers().unwrap().is_empty(), "zeroed slots no longer list their readers");
    churn(&store);
    assert_held_intact(&mut holder, held, &store);
}

#[test]
fn a_cut_table_crashes_no_one_and_frees_nothing() {
    let (dir, store, mut holder, held) = held_store();
    vandalize(dir.path(), "truncate");
    churn(&store);
    assert_held_intact(&mut holder, held, &store);
}

#[test]
fn a_replaced_or_deleted_table_and_a_reopened_writer_free_nothing() {
    for action in ["replace", "delete"] {
        let (dir, store, mut holder, held) = held_store();
        vandalize(dir.path(), action);
        drop(store);
        let store = Store::open(dir.path(), options()).unwrap();
        churn(&store);
        assert_held_intact(&mut holder, held, &store);
    }
}

/// A neighbour holds the lock on the sleepers count (found by the review:
/// it hung every other reader's bounded wait). Waits still end at their
/// timeout, and still see a new version within a few milliseconds.
#[test]
fn a_held_sleepers_lock_stalls_no_wait() {
    let (dir, store, _holder, _) = held_store();
    let mut vandal = ChildProcess::spawn(VANDAL, &[dir.path().to_str().unwrap(), "hold-sleepers"]);
    vandal.wait_for("done");
    let reader = Reader::open(dir.path()).unwrap();
    let version = reader.snapshot().unwrap().version();
    let started = std::time::Instant::now();
    assert!(reader.wait_for_version(version, std::time::Duration::from_millis(200)).unwrap().is_none());
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(1), "a 200 ms wait took {waited:?}");
    std::thread::scope(|s| {
        let waiter = s.spawn(move || {
            let seen = reader.wait_for_version(version, std::time::Duration::from_secs(10)).unwrap();
            (seen.map(|snapshot| snapshot.version()), std::time::Instant::now())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let committed = std::time::Instant::now();
        rewrite_all(&store, b'z');
        let (seen, at) = waiter.join().unwrap();
        assert_eq!(seen, Some(store.version()));
        let late = at.duration_since(committed);
        assert!(late < std::time::Duration::from_millis(500), "seen {late:?} after the commit began");
    });
    drop(vandal);
}

/// A neighbour fills the reader table, or shrinks it to one slot it
/// holds: the writer still opens, new readers still read (unlisted).
#[test]
fn a_full_reader_table_keeps_no_one_out() {
    for action in ["fill", "one-slot"] {
        let (dir, store, mut holder, held) = held_store();
        drop(store);
        let mut vandal = ChildProcess::spawn(VANDAL, &[dir.path().to_str().unwrap(), action]);
        vandal.wait_for("done");
        let store =
            Store::open(dir.path(), options()).unwrap_or_else(|e| panic!("{action}: the writer was kept out: {e}"));
        let reader = Reader::open(dir.path()).unwrap();
        assert_eq!(reader.slot(), None, "{action}");
        churn(&store);
        assert_held_intact(&mut holder, held, &store);
        drop(vandal);
    }
}
