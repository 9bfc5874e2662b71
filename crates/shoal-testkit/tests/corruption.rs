//! Damaged files: flipped and truncated bytes in the arena, meta and journal.
//! Opening gives a clear error or recovers to the last good version; it never
//! returns wrong data. Damage below the commit records is found when read,
//! and by the scrub that checks every node after open.

use std::path::Path;

use shoal::{Durability, Error, Options, ScrubState, Store};

fn build(dir: &Path, durability: Durability) -> u64 {
    let store = Store::open(dir, Options { durability, create: true, ..Options::default() }).unwrap();
    store.bulk_load((0..2000).map(|i| (format!("/k/{i}"), format!("value-{i}")))).unwrap();
    for i in 0..20 {
        let mut txn = store.begin();
        txn.put(&format!("/k/{i}"), format!("updated-{i}")).unwrap();
        txn.commit().unwrap();
    }
    store.version()
}

fn expected(i: u64) -> String {
    if i < 20 {
        format!("updated-{i}")
    } else {
        format!("value-{i}")
    }
}

/// Opening either fails with a clear error, or every value read is right.
fn open_and_check(dir: &Path) -> Result<u64, Error> {
    let store = Store::open(dir, Options { create: false, ..Options::default() })?;
    let snap = store.snapshot();
    for i in 0..2000 {
        match snap.get(&format!("/k/{i}")) {
            Ok(Some(v)) => assert_eq!(v, expected(i).as_bytes(), "wrong data served for /k/{i}"),
            Ok(None) => panic!("/k/{i} lost"),
            Err(e) => return Err(e),
        }
    }
    Ok(snap.version())
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn arena_path(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_str().unwrap().contains("arena-")).unwrap()
}

#[test]
fn flipped_bytes_anywhere_in_the_arena_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Durability::None);
    let arena = arena_path(dir.path());
    let used = {
        let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
        store.stat().unwrap().arena_bytes
    };
    let pristine = std::fs::read(&arena).unwrap();
    let mut errors = 0;
    // Walk the used part of the arena; every flip is caught or harmless.
    for offset in (0..used).step_by(997) {
        std::fs::write(&arena, &pristine).unwrap();
        flip(&arena, offset);
        match open_and_check(dir.path()) {
            Err(Error::Corrupt { .. } | Error::Format { .. }) => errors += 1,
            Err(e) => panic!("unexpected error kind at offset {offset}: {e}"),
            Ok(_) => {}
        }
    }
    assert!(errors > 0, "no flip was detected at all");
}

#[test]
fn truncated_arena_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Durability::None);
    let arena = arena_path(dir.path());
    let file = std::fs::OpenOptions::new().write(true).open(&arena).unwrap();
    file.set_len(8192).unwrap();
    drop(file);
    // Also distrust the control file, as after a reboot.
    std::fs::remove_file(dir.path().join("control")).unwrap();
    match open_and_check(dir.path()) {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("shorter"), "{detail}"),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn damaged_meta_slot_falls_back_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let version = build(dir.path(), Durability::Sync);
    let meta = dir.path().join("meta");
    for offset in [0u64, 20, 40, 512, 530, 550] {
        let pristine = std::fs::read(&meta).unwrap();
        flip(&meta, offset);
        // With the control file intact (same boot) nothing is lost at all.
        assert_eq!(open_and_check(dir.path()).unwrap(), version);
        std::fs::write(&meta, &pristine).unwrap();
    }
    // Without the control file, a damaged newest slot leaves the older one.
    std::fs::remove_file(dir.path().join("control")).unwrap();
    let pristine = std::fs::read(&meta).unwrap();
    flip(&meta, 20);
    flip(&meta, 512 + 20);
    match open_and_check(dir.path()) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("both slots damaged must be an error, got {other:?}"),
    }
    std::fs::write(&meta, &pristine).unwrap();
    assert_eq!(open_and_check(dir.path()).unwrap(), version);
}

#[test]
fn damaged_journal_tail_recovers_to_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::Sync, create: true, ..Options::default() };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    store.bulk_load((0..2000).map(|i| (format!("/k/{i}"), format!("value-{i}")))).unwrap();
    store.checkpoint().unwrap();
    for i in 0..20 {
        let mut txn = store.begin();
        txn.put(&format!("/k/{i}"), format!("updated-{i}")).unwrap();
        txn.commit().unwrap();
    }
    let version = store.version();
    // Crash without a checkpoint: leak the store so Drop does not run.
    std::mem::forget(store);
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    // Power loss: the control file is not trusted; cut the last record in
    // half. A record that was synced cannot be torn, so this is the last
    // write not having reached the disk: neither did the synced mark that
    // the header was given after it (it becomes durable with the next sync).
    std::fs::remove_file(dir.path().join("control")).unwrap();
    // The records, then zeros kept for the next ones (a record of length 0).
    let mut at = 32;
    let mut last = at;
    while at < bytes.len() && bytes[at..at + 4] != [0; 4] {
        last = at;
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    let end = at;
    assert!(bytes[end..].iter().all(|&b| b == 0), "the journal holds more than records and zeros");
    let synced = bytes.clone();
    bytes[16..24].copy_from_slice(&(last as u64).to_le_bytes());
    bytes[24..32].copy_from_slice(&(!(last as u64)).to_le_bytes());
    let lock = dir.path().join("lock");
    let _ = std::fs::remove_file(&lock);
    // A torn last record whose sync's mark is on disk is damage to an
    // acknowledged commit: refused, the journal left as it is.
    std::fs::write(&journal, &synced[..end - 5]).unwrap();
    match Store::open(dir.path(), options.clone()) {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("synced mark"), "{detail}"),
        other => panic!("expected corruption, got {:?}", other.map(|s| s.version())),
    }
    let _ = std::fs::remove_file(&lock);
    std::fs::write(&journal, &bytes[..end - 5]).unwrap();
    let store = Store::open(dir.path(), Options { create: false, ..options }).unwrap();
    // The last record was torn: recovery stops just before it.
    assert_eq!(store.version(), version - 1);
    let snap = store.snapshot();
    assert_eq!(snap.get("/k/18").unwrap(), Some(&b"updated-18"[..]));
    assert_eq!(snap.get("/k/19").unwrap(), Some(&b"value-19"[..]));
}

#[test]
fn a_reader_can_verify_a_store_without_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Durability::None);
    let reader = shoal::Reader::open(dir.path()).unwrap();
    reader.snapshot().unwrap().verify().unwrap();
    drop(reader);
    // Damage a byte of the last node the newest version wrote (just below its commit record).
    let used = Store::open_existing(dir.path()).unwrap().stat().unwrap().arena_bytes;
    let arena = arena_path(dir.path());
    flip(&arena, used - 64 - 100);
    let reader = shoal::Reader::open(dir.path()).unwrap();
    match reader.snapshot().unwrap().verify() {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("checksum"), "{detail}"),
        other => panic!("damage not detected: {other:?}"),
    }
}

#[test]
fn truncated_meta_recovers_from_the_control_file_or_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let version = build(dir.path(), Durability::Sync);
    let meta = dir.path().join("meta");
    let pristine = std::fs::read(&meta).unwrap();
    for len in [0u64, 30, 512, 540] {
        std::fs::write(&meta, &pristine).unwrap();
        std::fs::OpenOptions::new().write(true).open(&meta).unwrap().set_len(len).unwrap();
        // The control file was claimed this boot: nothing is lost.
        assert_eq!(open_and_check(dir.path()).unwrap(), version, "meta cut to {len} bytes");
    }
    // Without a trustworthy control file, a meta file with no whole slot is an error.
    std::fs::write(&meta, &pristine).unwrap();
    std::fs::OpenOptions::new().write(true).open(&meta).unwrap().set_len(30).unwrap();
    std::fs::remove_file(dir.path().join("control")).unwrap();
    match open_and_check(dir.path()) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// The scrub's state once it has finished (at most 20 s).
fn scrubbed(store: &Store) -> ScrubState {
    let start = std::time::Instant::now();
    loop {
        let state = store.scrub();
        if state != ScrubState::Running {
            return state;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the scrub never finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A damaged value nobody reads: the store opens (opening checks the
/// commit records, not every node), the scrub finds the damage, and the
/// writer then refuses commits, which would carry it on; everything else
/// is still served, the damaged value is refused when read, and `verify`
/// names it. Undamaged, the same store scrubs clean and commits.
#[test]
fn damage_found_by_the_scrub_refuses_commits_and_spares_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Durability::None);
    let big: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
    let offset = {
        let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
        assert!(matches!(scrubbed(&store), ScrubState::Clean { .. }));
        assert!(matches!(store.stat().unwrap().scrub, Some(ScrubState::Clean { .. })));
        let mut txn = store.begin();
        txn.put("/big", &big).unwrap();
        txn.commit().unwrap();
        store.snapshot().buf_ref("/big").unwrap().unwrap().file_offset()
    };
    let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
    assert!(matches!(scrubbed(&store), ScrubState::Clean { .. }));
    let mut txn = store.begin();
    txn.put("/after-clean-scrub", "1").unwrap();
    txn.commit().unwrap();
    drop(store);

    flip(&arena_path(dir.path()), offset + 1000);
    let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
    match scrubbed(&store) {
        ScrubState::Damaged { detail, .. } => assert!(detail.contains("checksum"), "{detail}"),
        other => panic!("the scrub missed the damage: {other:?}"),
    }
    let mut txn = store.begin();
    txn.put("/new", "1").unwrap();
    match txn.commit() {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("scrub"), "{detail}"),
        other => panic!("a commit over damage: {other:?}"),
    }
    // A read-only transaction builds nothing: it still commits.
    let mut txn = store.begin();
    assert_eq!(txn.get("/k/1").unwrap(), Some(expected(1).as_bytes()));
    txn.commit().unwrap();
    let snap = store.snapshot();
    for i in 0..2000 {
        assert_eq!(snap.get(&format!("/k/{i}")).unwrap(), Some(expected(i).as_bytes()));
    }
    assert!(matches!(snap.get("/big"), Err(Error::Corrupt { .. })), "damaged bytes served");
    assert!(matches!(store.verify(), Err(Error::Corrupt { .. })));
}
