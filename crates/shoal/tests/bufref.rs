//! Buffer references refuse what they cannot vouch for: damaged bytes,
//! forged fields that point at other bytes, and handles of a replaced
//! generation. (Resolution in other processes: shoal-testkit/tests/bufref.rs.)

use shoal::{BufRef, Durability, Error, Options, Reader, Store};

fn store_with_blobs(dir: &std::path::Path) -> Store {
    let store = Store::open(
        dir,
        Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() },
    )
    .unwrap();
    let mut txn = store.begin();
    txn.put("/a", vec![b'a'; 1000]).unwrap();
    txn.put("/b", vec![b'b'; 1000]).unwrap();
    txn.put("/small", "inline").unwrap();
    txn.commit().unwrap();
    store
}

/// Rewrites a field of an encoded handle and its checksum, as a forger would.
fn forge(r: &BufRef, at: usize, bytes: &[u8]) -> BufRef {
    let mut e = r.encode();
    e[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = crc32c::crc32c(&e[..72]);
    e[72..76].copy_from_slice(&crc.to_le_bytes());
    BufRef::decode(&e).unwrap()
}

fn invalid_reason(reader: &Reader, r: &BufRef) -> String {
    match reader.resolve(r) {
        Err(Error::InvalidBufRef { reason }) => reason,
        Err(e) => panic!("expected InvalidBufRef, got {e}"),
        Ok(v) => panic!("a forged handle resolved to {} bytes", v.len()),
    }
}

#[test]
fn a_handle_resolves_in_place_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_blobs(dir.path());
    let reader = Reader::open(dir.path()).unwrap();
    for path in ["/a", "/small"] {
        let r = store.snapshot().buf_ref(path).unwrap().unwrap();
        assert_eq!(BufRef::decode(&r.encode()).unwrap(), r);
        let view = reader.resolve(&r).unwrap();
        assert_eq!(&*view, reader.snapshot().unwrap().get(path).unwrap().unwrap());
        let range = view.snapshot().mapping_address_range();
        assert!(range.contains(&(view.as_ptr() as usize)), "{path}: no copy");
        let mut short = [0u8; 3];
        assert_eq!(reader.read_buf(&r, &mut short).unwrap(), r.len());
        assert_eq!(&short, &view[..3]);
    }
}

#[test]
fn damaged_encodings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_blobs(dir.path());
    let good = store.snapshot().buf_ref("/a").unwrap().unwrap().encode();
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good;
            bad[byte] ^= 1 << bit;
            assert!(matches!(BufRef::decode(&bad), Err(Error::InvalidBufRef { .. })), "byte {byte} bit {bit}");
        }
    }
    assert!(BufRef::decode(&good[..75]).unwrap_err().to_string().contains("75 bytes"));
    assert!(BufRef::decode(&[0u8; BufRef::ENCODED_LEN]).unwrap_err().to_string().contains("magic"));
}

#[test]
fn forged_fields_never_serve_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_blobs(dir.path());
    let reader = Reader::open(dir.path()).unwrap();
    let snap = store.snapshot();
    let (a, b) = (snap.buf_ref("/a").unwrap().unwrap(), snap.buf_ref("/b").unwrap().unwrap());
    let word = |r: &BufRef, at: usize| u64::from_le_bytes(r.encode()[at..at + 8].try_into().unwrap());
    // Field offsets in the encoding: version 32, commit 40, node 48, value offset 56, length 4.
    let other_node = forge(&a, 48, &word(&b, 48).to_le_bytes());
    assert!(invalid_reason(&reader, &other_node).contains("not the one it was made from"));
    let past_node = forge(&a, 56, &(word(&a, 56) + 8).to_le_bytes());
    assert!(invalid_reason(&reader, &past_node).contains("not a value of its node"));
    let too_long = forge(&a, 4, &5000u32.to_le_bytes());
    assert!(invalid_reason(&reader, &too_long).contains("not a value of its node"));
    let much_shorter = forge(&a, 4, &900u32.to_le_bytes());
    assert!(invalid_reason(&reader, &much_shorter).contains("not a value of its node"));
    // An inline value's handle widened to its whole leaf (other keys' values
    // included), or moved onto a neighbour's bytes, is refused.
    let small = snap.buf_ref("/small").unwrap().unwrap();
    let leaf = word(&small, 48);
    let widened = forge(&forge(&small, 56, &leaf.to_le_bytes()), 4, &64u32.to_le_bytes());
    assert!(invalid_reason(&reader, &widened).contains("not a value of its node"));
    let shifted = forge(&small, 56, &(word(&small, 56) + 1).to_le_bytes());
    assert!(invalid_reason(&reader, &shifted).contains("not a value of its node"));
    let wrong_version = forge(&a, 32, &(a.version() + 1).to_le_bytes());
    assert!(invalid_reason(&reader, &wrong_version).contains("version"));
    let no_record = forge(&a, 40, &word(&a, 48).to_le_bytes());
    assert!(invalid_reason(&reader, &no_record).contains("commit record"));
    let beyond = forge(&a, 40, &(1u64 << 40).to_le_bytes());
    assert!(invalid_reason(&reader, &beyond).contains("beyond the newest version"));
    let elsewhere = forge(&a, 8, &[0xff; 16]);
    assert!(invalid_reason(&reader, &elsewhere).contains("another store"));
}

#[test]
fn a_compaction_makes_handles_stale_even_for_a_reader_holding_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_blobs(dir.path());
    let reader = Reader::open(dir.path()).unwrap();
    let held = reader.snapshot().unwrap();
    let r = held.buf_ref("/a").unwrap().unwrap();
    store.compact().unwrap();
    match reader.resolve(&r) {
        Err(e @ Error::StaleBufRef { generation: 1, current: 2 }) => {
            assert!(e.to_string().contains("look the path up again"), "{e}")
        }
        other => panic!("expected StaleBufRef, got {:?}", other.map(|v| v.len())),
    }
    // The held snapshot still reads its own version, and a new handle resolves.
    assert_eq!(held.get("/a").unwrap().unwrap(), vec![b'a'; 1000]);
    let fresh = reader.snapshot().unwrap().buf_ref("/a").unwrap().unwrap();
    assert_eq!(&*reader.resolve(&fresh).unwrap(), vec![b'a'; 1000]);
}
