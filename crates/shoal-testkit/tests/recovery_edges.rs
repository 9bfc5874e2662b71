//! Recovery edge cases: a failed replay leaves the journal intact, readers
//! after a reboot (simulated by clearing the boot id) fall back to the
//! checkpoint and their snapshots are never overwritten, an interrupted
//! creation starts over, and damaged key order cannot make `list` loop.

mod reboot;

use reboot::{crash, forget_boot};
use std::os::unix::fs::FileExt;
use std::path::Path;

use shoal::{Durability, Error, Options, Reader, Store};

fn sync_options() -> Options {
    Options { durability: Durability::Sync, create: true, ..Options::default() }
}

/// Commits `/k/<i>` = `i` for `range`, one transaction each.
fn commit_range(store: &Store, range: std::ops::Range<u32>) {
    for i in range {
        let mut txn = store.begin();
        txn.put(&format!("/k/{i}"), i.to_string()).unwrap();
        txn.commit().unwrap();
    }
}

#[test]
fn a_failed_replay_leaves_the_journal_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    store.checkpoint().unwrap();
    commit_range(&store, 0..3);
    crash(store, dir.path());
    forget_boot(dir.path());
    // Cut the middle record out: the journal now jumps a version.
    let path = dir.path().join("journal");
    let bytes = std::fs::read(&path).unwrap();
    let record_len = |at: usize| 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    // The journal's header is 32 bytes.
    let first = 32 + record_len(32);
    let second = first + record_len(first);
    let mut gapped = bytes[..first].to_vec();
    gapped.extend_from_slice(&bytes[second..]);
    // The header's synced mark lowered to the first record, so that what
    // the open meets is the gap, not the end of the records (and the
    // zeros after them) below the mark.
    gapped[16..24].copy_from_slice(&(first as u64).to_le_bytes());
    gapped[24..32].copy_from_slice(&(!(first as u64)).to_le_bytes());
    std::fs::write(&path, &gapped).unwrap();

    match Store::open(dir.path(), sync_options()) {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("journal continues"), "{detail}"),
        other => panic!("expected a journal gap error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read(&path).unwrap(), gapped, "the failed open changed the journal");
    // Restoring the record recovers everything.
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.snapshot().get("/k/2").unwrap(), Some(&b"2"[..]));
}

#[test]
fn after_a_reboot_readers_use_the_checkpoint_and_held_snapshots_stay_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    commit_range(&store, 0..50);
    store.checkpoint().unwrap();
    let checkpointed = store.version();
    commit_range(&store, 50..100);
    let published = store.version();

    let early = Reader::open(dir.path()).unwrap();
    let held = early.snapshot().unwrap();
    assert_eq!(held.version(), published);
    let before: Vec<(String, Vec<u8>)> =
        held.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();

    crash(store, dir.path());
    forget_boot(dir.path());
    // No writer has claimed the store since "boot": readers see the checkpoint.
    let late = Reader::open(dir.path()).unwrap();
    assert_eq!(late.snapshot().unwrap().version(), checkpointed);

    // Keep only the first 40 journal records after the checkpoint, so that the
    // recovered history diverges from what the early reader holds.
    let path = dir.path().join("journal");
    let bytes = std::fs::read(&path).unwrap();
    let mut at = 32;
    for _ in 0..40 {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    std::fs::write(&path, &bytes[..at]).unwrap();
    // A writer recovers (checkpoint + journal) and writes other data; the
    // early reader's bytes must not be reused.
    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.version(), checkpointed + 40);
    for i in 0..300 {
        let mut txn = store.begin();
        txn.put(&format!("/k/{}", i % 100), format!("rewritten-{i}")).unwrap();
        txn.commit().unwrap();
    }
    let after: Vec<(String, Vec<u8>)> =
        held.scan("/").unwrap().map(|r| r.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    assert_eq!(after, before, "a held snapshot changed under its reader");
    assert_eq!(
        late.snapshot().unwrap().version(),
        store.version(),
        "readers follow the writer once it claims the store"
    );
}

#[test]
fn an_interrupted_creation_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("initializing"), b"").unwrap();
    std::fs::write(dir.path().join("arena-0000000001"), b"half written").unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.version(), 0);
    commit_range(&store, 0..1);
    drop(store);
    assert!(!dir.path().join("initializing").exists());
    assert_eq!(Store::open_existing(dir.path()).unwrap().version(), 1);
}

#[test]
fn arena_files_without_a_checkpoint_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    commit_range(&store, 0..5);
    drop(store);
    std::fs::remove_file(dir.path().join("meta")).unwrap();
    assert!(matches!(Store::open(dir.path(), sync_options()), Err(Error::Corrupt { .. })));
    assert!(dir.path().join("arena-0000000001").exists());
}

#[test]
fn damaged_key_order_is_an_error_not_an_endless_list() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::None, create: true, ..Options::default() }).unwrap();
    let mut txn = store.begin();
    txn.put("/alpha", "1").unwrap();
    txn.put("/beta", "2").unwrap();
    txn.commit().unwrap();
    drop(store);
    let arena = dir.path().join("arena-0000000001");
    let mut bytes = std::fs::read(&arena).unwrap();
    // Every copy: the leaf's, and the version's change set's.
    let copies: Vec<usize> = (0..bytes.len() - 4).filter(|&i| &bytes[i..i + 4] == b"beta").collect();
    assert!(!copies.is_empty(), "key bytes in the arena");
    for at in copies {
        bytes[at..at + 4].copy_from_slice(b"alph");
    }
    std::fs::write(&arena, &bytes).unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let snap = reader.snapshot().unwrap();
    assert!(matches!(snap.list("/"), Err(Error::Corrupt { .. })));
    assert!(snap.verify().is_err());
}

/// A writer with durability `none` dies with a version only in the page
/// cache; a `sync` writer reopens it in the same boot and commits. After a
/// reboot that acknowledged commit must be there: recovery checkpoints any
/// version it starts from that the checkpoint does not name, so the journal
/// always continues the checkpoint.
#[test]
fn a_sync_commit_after_a_crashed_none_writer_survives_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let none = Options { durability: Durability::None, ..sync_options() };
    let store = Store::open(dir.path(), none).unwrap();
    commit_range(&store, 0..1);
    crash(store, dir.path());
    let store = Store::open(dir.path(), Options { replace_settings: true, ..sync_options() }).unwrap();
    assert_eq!(store.options().durability, Durability::Sync);
    assert_eq!(store.version(), 1, "the page cache of this boot holds version 1");
    commit_range(&store, 1..2);
    crash(store, dir.path());
    forget_boot(dir.path());
    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.version(), 2);
    assert_eq!(store.snapshot().get("/k/1").unwrap(), Some(&b"1"[..]));
}

/// A bulk load into an empty tree is written bottom-up, but its journal
/// record is replayed as ops: after a reboot with only the journal, the
/// store reads as the load wrote it (ancestors, the last of duplicate
/// paths, blob values), and as durable as any `sync` commit.
#[test]
fn a_sync_bulk_load_into_an_empty_tree_replays_from_the_journal_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    let mut items: Vec<(String, Vec<u8>)> = (0..3000u32)
        .map(|i| (format!("/load/{}/{i}", i % 40), vec![(i % 200) as u8; [8, 300][i as usize % 2]]))
        .collect();
    items.push(("/load/3/3".into(), b"the last wins".to_vec()));
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
    let written: Vec<(String, Vec<u8>)> =
        store.snapshot().scan("/").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    assert_eq!(written.len(), 1 + 40 + 3000);
    crash(store, dir.path());
    // Only the journal holds it: no checkpoint was due.
    assert!(std::fs::metadata(dir.path().join("journal")).unwrap().len() > 3000 * 8);
    forget_boot(dir.path());
    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.version(), 1);
    let replayed: Vec<(String, Vec<u8>)> =
        store.snapshot().scan("/").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    assert!(replayed == written, "the replayed load differs from the one written");
    assert_eq!(store.snapshot().get("/load/3/3").unwrap(), Some(&b"the last wins"[..]));
}

/// The published word as (generation, offset), read from the control file.
fn published_word(dir: &Path) -> (u64, u64) {
    let bytes = std::fs::read(dir.join("control")).unwrap();
    let word = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    (word >> 40, (word & ((1 << 40) - 1)) << 3)
}

/// Generation numbers are never reused within a boot. A compaction switched
/// to generation 2 and its writer died; an idle reader has mapped
/// generation 2. Its commit record is then damaged, so recovery falls back
/// to the checkpoint in generation 1 and removes generation 2. The next
/// compaction must not create a new "generation 2", which the idle reader
/// would read through its mapping of the old file.
#[test]
fn a_generation_number_is_never_reused_under_an_idle_reader() {
    const WRITER: &str = env!("CARGO_BIN_EXE_writer-child");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let (_, ok) = shoal_testkit::ChildProcess::spawn(WRITER, &[path, "--abort-in-compaction-at", "40"]).finish();
    assert!(!ok, "the writer should have aborted after its compaction's switch");
    let reader = Reader::open(dir.path()).unwrap();
    let snapshot = reader.snapshot().unwrap();
    assert_eq!(snapshot.generation(), 2);
    drop(snapshot);
    // Damage the published record of generation 2.
    let (generation, offset) = published_word(dir.path());
    assert_eq!(generation, 2);
    let file = std::fs::OpenOptions::new().write(true).open(dir.path().join("arena-0000000002")).unwrap();
    file.write_all_at(&[0xFF; 8], offset + 16).unwrap();
    drop(file);

    let store = Store::open(dir.path(), sync_options()).unwrap();
    assert_eq!(store.snapshot().generation(), 1, "recovered from the checkpoint in generation 1");
    assert!(!dir.path().join("arena-0000000002").exists());
    let mut txn = store.begin();
    txn.put("/after", "recovery").unwrap();
    txn.commit().unwrap();
    let report = store.compact().unwrap();
    assert!(report.to_generation > 2, "generation {} reused", report.to_generation);
    let snapshot = reader.snapshot().unwrap();
    assert_eq!(snapshot.version(), store.version());
    assert_eq!(snapshot.generation(), report.to_generation);
    assert_eq!(snapshot.get("/after").unwrap(), Some(&b"recovery"[..]));
    assert_eq!(snapshot.get("/last").unwrap(), Some(&b"40"[..]));
}
