//! Cost follows the change: on a store of 1,000,000 keys a one-key commit
//! appends a small, bounded number of bytes, whatever the store's size; and
//! reads return slices of the shared mapping, not copies.

use shoal::{Durability, Options, Reader, Store};

fn one_key_commit_growth(store: &Store, path: &str) -> u64 {
    let before = shoal::internals::arena_cursor(store);
    let mut txn = store.begin();
    txn.put(path, b"changed").unwrap();
    txn.commit().unwrap();
    shoal::internals::arena_cursor(store) - before
}

#[test]
fn one_key_commit_on_a_million_keys_appends_tens_of_kib() {
    let options = Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() };
    let small_dir = tempfile::tempdir().unwrap();
    let small = Store::open(small_dir.path(), options.clone()).unwrap();
    small
        .bulk_load((0..1_000u32).map(|i| (format!("/local/domain/{}/f{}", i / 10, i % 10), b"0123456789abcdef")))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options).unwrap();
    store
        .bulk_load((0..1_000_000u32).map(|i| (format!("/local/domain/{}/f{}", i / 10, i % 10), b"0123456789abcdef")))
        .unwrap();
    assert!(store.snapshot().key_count() > 1_000_000);

    let large_growth =
        (0..20).map(|i| one_key_commit_growth(&store, &format!("/local/domain/{}/f3", i * 4999))).max().unwrap();
    let small_growth =
        (0..20).map(|i| one_key_commit_growth(&small, &format!("/local/domain/{}/f3", i * 4))).max().unwrap();
    assert!(large_growth <= 32 << 10, "one-key commit on 1M keys appended {large_growth} bytes");
    // Independent of size: a 1000x larger store costs at most a couple more tree levels.
    assert!(large_growth <= small_growth * 4, "growth {large_growth} vs {small_growth} on a 1000-key store");

    // Zero copy: a reader's value lies inside the shared mapping.
    let reader = Reader::open(dir.path()).unwrap();
    let snap = reader.snapshot().unwrap();
    let value = snap.get("/local/domain/4999/f3").unwrap().unwrap();
    assert_eq!(value, b"changed");
    let range = snap.mapping_address_range();
    let address = value.as_ptr() as usize;
    assert!(range.contains(&address) && address + value.len() <= range.end, "value was copied out of the mapping");
    // And the writer's snapshot reads from its own mapping of the same file.
    let own = store.snapshot();
    let v = own.get("/local/domain/0/f0").unwrap().unwrap();
    assert!(own.mapping_address_range().contains(&(v.as_ptr() as usize)));
}
