//! Damage that opening does not walk for (it checks the commit records,
//! the nodes written since the checkpoint, and leaves the rest to first
//! reads and the scrub), and the reads a transaction records when it takes
//! back its own writes: found by review of the open without a full walk.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal::{Durability, Error, Options, ScrubState, Store};

fn arena_path(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_str().unwrap().contains("arena-")).unwrap()
}

fn u16_at(b: &[u8], at: u64) -> u16 {
    u16::from_le_bytes(b[at as usize..at as usize + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(b[at as usize..at as usize + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

/// (children, keys) of the internal node at `off` (layout: node/internal.rs).
fn internal(b: &[u8], off: u64) -> (Vec<u64>, Vec<Vec<u8>>) {
    assert_eq!(b[off as usize], 2, "not an internal node at {off}");
    let n = u16_at(b, off + 2) as u64;
    let plen = u16_at(b, off + 12) as u64;
    let prefix = b[(off + 16) as usize..(off + 16 + plen) as usize].to_vec();
    let c = (16 + plen).next_multiple_of(8);
    let mut children = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        children.push(u64_at(b, off + c + 8 * i));
        let ko = off + u32_at(b, off + c + 24 * n + 4 * i) as u64;
        let slen = u16_at(b, ko) as u64;
        let mut key = prefix.clone();
        key.extend_from_slice(&b[(ko + 2) as usize..(ko + 2 + slen) as usize]);
        keys.push(key);
    }
    (children, keys)
}

/// The writer's own reads of existing nodes (`WriterArena::read_node`, as
/// `Builder::finish_root` does to collapse a root) check checksums too:
/// nothing at open has checked those nodes. Here a damaged child count
/// would make the commit drop a whole subtree silently, into a version
/// whose nodes all have right checksums. The commit is refused
/// (`Corrupt`), or every key it did not delete is still there (or its
/// read fails with `Corrupt`).
#[test]
fn a_commit_never_builds_on_a_node_it_read_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let value = vec![b'v'; 100];
    let a_keys: Vec<String> = (0..3000).map(|i| format!("/a/{i:05}")).collect();
    // Big values in older versions, walked by the scrub before the
    // damaged node: it stays busy while the commit runs (otherwise it
    // finds the damage first and the commit is refused, as it should be).
    let big = vec![b'B'; 256 << 10];
    let head_end = {
        let store = Store::open(dir.path(), options()).unwrap();
        // The big values first: the scrub walks the oldest version first.
        for chunk in 0..4 {
            store.bulk_load((0..100).map(|i| (format!("/b/{chunk}/{i:04}"), big.clone()))).unwrap();
        }
        store.bulk_load(a_keys.iter().map(|k| (k.clone(), value.clone()))).unwrap();
        store.stat().unwrap().arena_bytes
    };
    let arena = arena_path(dir.path());
    let bytes = std::fs::read(&arena).unwrap();
    let head = head_end - 80;
    assert_eq!(bytes[head as usize], 4, "no commit record at the arena's end");
    let root = u64_at(&bytes, head + 24);
    let (children, keys) = internal(&bytes, root);
    let first = children[0];
    assert_eq!(bytes[first as usize], 2, "setup: the root's first child should be internal (a tree of height 3)");
    let (grandchildren, _) = internal(&bytes, first);
    assert!(grandchildren.len() >= 2);
    let boundary = keys[1].clone();
    let key_of = |p: &str| p[1..].replace('/', "\0").into_bytes();
    // Damage: the first child's child count reads 1 (its checksum no longer matches).
    std::fs::OpenOptions::new().write(true).open(&arena).unwrap().write_all_at(&1u16.to_le_bytes(), first + 2).unwrap();
    drop(bytes);

    // Reopen and delete everything from the root's second child on.
    let store = Store::open(dir.path(), options()).unwrap();
    let mut txn = store.begin();
    let mut kept = Vec::new();
    for k in &a_keys {
        if key_of(k) >= boundary {
            assert!(txn.delete(k).unwrap());
        } else {
            kept.push(k.clone());
        }
    }
    txn.delete_tree("/b").unwrap();
    let scrub_before = store.scrub();
    let committed = txn.commit();
    eprintln!("scrub when the commit began: {scrub_before:?}; commit: {committed:?}");
    match committed {
        Err(Error::Corrupt { .. }) => return,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => {}
    }
    let snap = store.snapshot();
    let mut lost = 0;
    for k in &kept {
        match snap.get(k) {
            Ok(Some(v)) => assert_eq!(v, &value[..], "wrong value for {k}"),
            Ok(None) => lost += 1,
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(lost, 0, "{lost} of {} keys the commit did not delete are silently gone", kept.len());
}

/// A version published this boot (the page cache) whose nodes written
/// since the checkpoint are damaged below its commit records: recovery
/// checks those nodes, finds the damage, and recovers from the checkpoint
/// plus the journal, which hold every acknowledged commit intact, instead
/// of checkpointing the damaged version and emptying the journal.
#[test]
fn a_damaged_page_cache_version_falls_back_to_the_checkpoint_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { durability: Durability::Sync, auto_compact: false, create: true, ..Options::default() };
    let big: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
    let store = Store::open(dir.path(), options()).unwrap();
    store.bulk_load((0..200).map(|i| (format!("/k/{i}"), format!("value-{i}")))).unwrap();
    store.checkpoint().unwrap();
    let mut txn = store.begin();
    txn.put("/big", &big).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    txn.put("/after", "1").unwrap();
    txn.commit().unwrap();
    let offset = store.snapshot().buf_ref("/big").unwrap().unwrap().file_offset();
    // A crash of the writer's process: no closing checkpoint, page cache intact.
    std::mem::forget(store);
    std::fs::remove_file(dir.path().join("lock")).unwrap();
    // Damage in the page cache (a failing disk read back, say).
    let file = std::fs::OpenOptions::new().read(true).write(true).open(arena_path(dir.path())).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset + 1000).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], offset + 1000).unwrap();

    let store = Store::open(dir.path(), options()).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.get("/after").unwrap(), Some(&b"1"[..]));
    match snap.get("/big") {
        Ok(Some(v)) => assert_eq!(v, &big[..]),
        other => panic!("an acknowledged value the journal held intact is lost: {other:?}"),
    }
    let start = std::time::Instant::now();
    while store.scrub() == ScrubState::Running && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(matches!(store.scrub(), ScrubState::Clean { .. }), "{:?}", store.scrub());
}

/// Deleting a child and then its parent relies on nothing about the
/// grandparent (deletions create nothing): a concurrent write of the
/// grandparent's value does not make it conflict, and running it after
/// that write gives the same tree.
#[test]
fn deleting_a_child_then_its_parent_does_not_read_the_grandparent() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(dir.path(), Options { durability: Durability::None, create: true, ..Options::default() }).unwrap();
    let mut txn = store.begin();
    txn.put("/a/b/c", "1").unwrap();
    txn.commit().unwrap();
    let mut t1 = store.begin();
    assert!(t1.delete("/a/b/c").unwrap());
    assert!(t1.delete("/a/b").unwrap());
    let mut t2 = store.begin();
    t2.put("/a", "new").unwrap();
    t2.commit().unwrap();
    t1.commit().expect("a spurious conflict");
    let snap = store.snapshot();
    assert_eq!(snap.get("/a").unwrap(), Some(&b"new"[..]));
    assert!(!snap.exists("/a/b").unwrap());
}
