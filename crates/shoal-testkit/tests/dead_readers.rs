//! A reader process pinned to an old generation keeps that generation's file
//! alive through compaction; once the reader is SIGKILLed its slot is
//! reclaimed without anyone asking, and the file is freed (recycled by the
//! next compaction).

use shoal::{Durability, Options, Reader, Store};
use shoal_testkit::{field, ChildProcess};

const PINNED: &str = env!("CARGO_BIN_EXE_pinned-reader");

#[test]
fn killed_reader_slot_is_reclaimed_and_its_generation_freed() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let store = Store::open(dir.path(), options).unwrap();
    store.bulk_load((0..5000).map(|i| (format!("/k/{i}"), vec![b'v'; 64]))).unwrap();

    let mut reader = ChildProcess::spawn(PINNED, &[dir.path().to_str().unwrap()]);
    let line = reader.wait_for("pinned");
    let pinned_generation = field(&line, "generation").unwrap();
    let old_file = dir.path().join(shoal::internals::arena_file_name(pinned_generation));
    assert!(store.readers().unwrap().iter().any(|r| r.pid == reader.pid() && r.pinned_generation == pinned_generation));

    // Rewrite everything, then compact: the old generation is pinned, so it stays.
    store.bulk_load((0..5000).map(|i| (format!("/k/{i}"), vec![b'w'; 64]))).unwrap();
    let report = store.compact().unwrap();
    assert_eq!(report.from_generation, pinned_generation);
    assert!(old_file.exists(), "a pinned generation was deleted");
    assert_eq!(store.stat().unwrap().old_generations, vec![pinned_generation]);

    let pid = reader.pid();
    reader.kill();
    // The kernel released the slot's lock; nobody else had to do anything.
    assert!(store.readers().unwrap().iter().all(|r| r.pid != pid), "dead reader still listed");
    assert!(store.reclaim().is_empty());
    // Freed: kept only as the spare the next compaction writes into.
    assert_eq!(store.stat().unwrap().spare_generation, Some(pinned_generation));
    let report = store.compact().unwrap();
    assert!(!old_file.exists(), "the dead reader's generation was not recycled");
    assert!(dir.path().join(shoal::internals::arena_file_name(report.to_generation)).exists());

    // The slot is usable again.
    let again = Reader::open(dir.path()).unwrap();
    assert_eq!(again.snapshot().unwrap().get("/k/1").unwrap(), Some(&[b'w'; 64][..]));
}
