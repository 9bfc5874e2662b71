//! Damaged bytes are never served as data (invariant 7), to readers either.
//!
//! A store holding one version of 300 keys (one retained version, one bulk
//! load, so nearly every byte of the arena is reachable). Each byte of the
//! used arena is flipped in turn, in place, as a reader process would see
//! it through its mapping; a new reader then reads everything. Each flip
//! must give the intact data or a clear error, never other bytes.

use std::os::unix::fs::FileExt;

use shoal::{Durability, Error, Options, Reader, Store};

fn contents(reader: &Reader) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let snapshot = reader.snapshot()?;
    let mut all = Vec::new();
    for entry in snapshot.scan("/")? {
        let entry = entry?;
        all.push((entry.path(), entry.value().to_vec()));
    }
    // Point reads and lists take other paths through the nodes than a scan.
    for (path, value) in all.iter().step_by(7) {
        assert_eq!(snapshot.get(path)?, Some(value.as_slice()), "get {path} disagrees with the scan");
    }
    snapshot.list("/d")?;
    Ok(all)
}

#[test]
fn every_flipped_byte_of_a_live_arena_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::None, retain_versions: 1, ..Options::default() };
    let store = Store::create(dir.path(), options).unwrap();
    store
        .bulk_load((0..300).map(|i| {
            let value = if i % 50 == 0 { vec![b'b'; 300 + i] } else { format!("value-{i}").into_bytes() };
            (format!("/d/{}/k{i}", i % 13), value)
        }))
        .unwrap();
    store.compact().unwrap();
    let generation = store.snapshot().generation();
    let used = store.stat().unwrap().arena_bytes;
    let reader = Reader::open(dir.path()).unwrap();
    let intact = contents(&reader).unwrap();
    drop(reader);
    assert_eq!(intact.len(), 314);

    let arena = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(shoal::internals::arena_file_name(generation)))
        .unwrap();
    let (mut refused, mut harmless) = (0u64, 0u64);
    for offset in 0..used {
        let mut byte = [0u8];
        arena.read_exact_at(&mut byte, offset).unwrap();
        arena.write_all_at(&[byte[0] ^ 0x5A], offset).unwrap();
        // A new reader: a new mapping, nothing checked yet.
        match Reader::open(dir.path()).and_then(|reader| contents(&reader)) {
            Ok(read) => {
                assert!(read == intact, "flipping byte {offset} served other data");
                harmless += 1;
            }
            Err(Error::Corrupt { .. } | Error::Format { .. }) => refused += 1,
            Err(e) => panic!("flipping byte {offset}: an unclear error: {e}"),
        }
        arena.write_all_at(&byte, offset).unwrap();
    }
    // Most bytes belong to a checked node; the harmless ones are padding
    // and the unused rest of the header page.
    assert!(refused > used / 2, "{refused} of {used} flips refused, {harmless} harmless");
    assert_eq!(contents(&Reader::open(dir.path()).unwrap()).unwrap(), intact);
}
