//! Compaction recycles a retired generation's file for a new generation, so
//! it must never rewrite a file that a live snapshot still reads: not one
//! that outlived its `Reader`, not one of the writer's own process.

use shoal::{Durability, Options, Reader, Store};

const KEYS: usize = 4000;

fn key(i: usize) -> String {
    format!("/k/{}/{i}", i % 40)
}

fn rewrite_all(store: &Store, fill: u8) {
    store.bulk_load((0..KEYS).map(|i| (key(i), vec![fill; 48]))).unwrap();
}

fn assert_all(snapshot: &shoal::Snapshot, fill: u8) {
    for i in 0..KEYS {
        assert_eq!(
            snapshot.get(&key(i)).unwrap(),
            Some(&[fill; 48][..]),
            "{} at version {}",
            key(i),
            snapshot.version()
        );
    }
    snapshot.verify().unwrap();
}

/// One retained version: compacted copies soon stop holding older versions,
/// so a recycled file would no longer hold a held snapshot's bytes.
fn options() -> Options {
    Options {
        durability: Durability::None,
        auto_compact: false,
        retain_versions: 1,
        create: true,
        ..Options::default()
    }
}

/// Four rounds of rewriting every key (with `first_fill`, then the next
/// bytes), compacting and reclaiming; `held` must read `held_fill` after each.
fn recycle_rounds(store: &Store, held: &shoal::Snapshot, first_fill: u8, held_fill: u8) {
    for round in 0..4u8 {
        rewrite_all(store, first_fill + round);
        store.compact().unwrap();
        store.reclaim();
        assert_all(held, held_fill);
    }
}

fn arena_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("arena-"))
        .collect();
    names.sort();
    names
}

#[test]
fn snapshots_keep_their_generation_from_being_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    rewrite_all(&store, b'a');

    // A reader's snapshot must pin its generation after its Reader is gone.
    let reader = Reader::open(dir.path()).unwrap();
    let from_reader = reader.snapshot().unwrap();
    drop(reader);
    let held = from_reader.generation();
    recycle_rounds(&store, &from_reader, b'b', b'a');
    // A snapshot pins its own generation only (a lock on that file): the
    // ones between it and the newest are freed meanwhile.
    let stat = store.stat().unwrap();
    assert_eq!(stat.old_generations, vec![held]);
    assert_eq!(stat.spare_generation, Some(stat.generation - 1));
    drop(from_reader);

    // So must a snapshot of the writer's own process.
    let from_writer = store.snapshot();
    let held = from_writer.generation();
    recycle_rounds(&store, &from_writer, b'c', b'e');
    let stat = store.stat().unwrap();
    assert_eq!(stat.old_generations, vec![held]);

    // Released: the newest old file becomes the spare, the others are
    // deleted, and the next compaction writes the new generation into it.
    drop(from_writer);
    assert!(store.reclaim().is_empty());
    let stat = store.stat().unwrap();
    let spare = stat.generation - 1;
    assert_eq!(stat.spare_generation, Some(spare));
    let name = shoal::internals::arena_file_name;
    assert_eq!(arena_files(dir.path()), vec![name(spare), name(stat.generation)]);
    let report = store.compact().unwrap();
    // The spare's file now holds the new generation; the one just retired
    // waits for the next reclaim.
    assert_eq!(arena_files(dir.path()), vec![name(report.from_generation), name(report.to_generation)]);
    assert!(store.reclaim().is_empty());
    assert_eq!(store.stat().unwrap().spare_generation, Some(report.from_generation));
    assert_all(&store.snapshot(), b'f');

    // The recycled file holds the old generation's bytes past the new end;
    // a reopen and readers must see only the new generation's.
    drop(store);
    let store = Store::open(dir.path(), Options { create: true, ..Options::default() }).unwrap();
    store.verify().unwrap();
    assert_all(&store.snapshot(), b'f');
    assert_all(&Reader::open(dir.path()).unwrap().snapshot().unwrap(), b'f');
    rewrite_all(&store, b'g');
    assert_all(&Reader::open(dir.path()).unwrap().snapshot().unwrap(), b'g');
}

/// The pid check that `readers()` applies can call a live reader dead (a
/// reader in another pid namespace, a `/proc` it cannot see): recycling must
/// trust the slot's lock alone.
#[test]
fn a_locked_slot_pins_even_when_its_pid_looks_dead() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    rewrite_all(&store, b'a');
    let reader = Reader::open(dir.path()).unwrap();
    let held = reader.snapshot().unwrap();
    // Make the slot's recorded start time wrong, as if the pid were reused.
    use std::os::unix::fs::FileExt;
    let table = std::fs::OpenOptions::new().write(true).open(dir.path().join("readers")).unwrap();
    table.write_all_at(&u64::MAX.to_le_bytes(), 4096 + reader.slot().unwrap() * 64 + 24).unwrap();
    assert!(store.readers().unwrap().iter().all(|r| Some(r.slot) != reader.slot()), "the slot should look dead");
    recycle_rounds(&store, &held, b'b', b'a');
}

/// A recycled file keeps the old generation's commit records, with valid
/// checksums, past the new end. A published word naming one of them (a
/// lost write, a bug) must not be taken for a version of the new generation.
#[test]
fn a_stale_commit_record_in_a_recycled_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for round in 0..3u8 {
        rewrite_all(&store, b'a' + round);
        store.compact().unwrap();
    }
    // Many small versions, so the spare's old bytes hold many commit records.
    for i in 0..50u8 {
        let mut txn = store.begin();
        txn.put("/k/0/0", vec![i; 48]).unwrap();
        txn.commit().unwrap();
    }
    store.compact().unwrap(); // writes into the recycled spare
    let generation = store.stat().unwrap().generation;
    let end = shoal::internals::arena_cursor(&store);
    let expected = store.version();
    drop(store);

    // Find a commit record (kind 4, 80 bytes) past the end: an old generation's.
    let bytes = std::fs::read(dir.path().join(shoal::internals::arena_file_name(generation))).unwrap();
    let stale = (end as usize..bytes.len() - 80)
        .step_by(8)
        .find(|&at| bytes[at] == 4 && u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) == 80)
        .expect("an old commit record past the end of the recycled file");
    // Publish it, as a lost write or a bug might.
    use std::os::unix::fs::FileExt;
    let control = std::fs::OpenOptions::new().write(true).open(dir.path().join("control")).unwrap();
    control.write_all_at(&(generation << 40 | stale as u64 >> 3).to_le_bytes(), 8).unwrap();

    // A reader refuses it; the writer recovers from its checkpoint instead.
    let reader = Reader::open(dir.path()).unwrap();
    match reader.snapshot() {
        Err(shoal::Error::Corrupt { detail, .. }) => assert!(detail.contains("another generation"), "{detail}"),
        other => panic!("a stale record was accepted: {other:?}"),
    }
    drop(reader);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.version(), expected);
    store.verify().unwrap();
}
