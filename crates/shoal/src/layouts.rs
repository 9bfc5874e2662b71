//! Tests that the byte layouts documented beside each file's code are the
//! ones written: each file is made by the code that makes it in a store,
//! then read back as bytes at the documented offsets. (Node layouts are
//! checked in `node`.)

use crate::files::StoreDir;
use crate::node::{u32_at, u64_at};

fn store_dir() -> (tempfile::TempDir, StoreDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StoreDir::open(tmp.path()).unwrap();
    (tmp, dir)
}

fn read(dir: &StoreDir, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn arena_header() {
    let (_tmp, dir) = store_dir();
    drop(crate::arena::WriterArena::create(&dir, 77, 1 << 30).unwrap());
    let b = read(&dir, &crate::arena::file_name(77));
    assert_eq!(&b[..8], b"SHOALAR1");
    assert_eq!(u32_at(&b, 8), Some(crate::arena::FORMAT_VERSION));
    assert_eq!((b[12], b[13] as usize), (1, std::mem::size_of::<usize>()));
    assert_eq!(u32_at(&b, 16), Some(crate::sys::page_size() as u32));
    assert_eq!((u64_at(&b, 24), u64_at(&b, 32)), (Some(77), Some(1 << 30)));
    assert_eq!(u32_at(&b, 40), Some(crc32c::crc32c(&b[..40])));
    assert_eq!(b.len() as u64, crate::arena::HEADER_PAGE);
}

#[test]
fn meta_slots() {
    let (_tmp, dir) = store_dir();
    let (mut meta, _) = crate::meta::Meta::open(&dir, true).unwrap();
    meta.write(3, 4096, 10, 5000).unwrap(); // sequence 1: slot 1
    meta.write(4, 8192, 11, 9000).unwrap(); // sequence 2: slot 0
    let b = read(&dir, crate::meta::FILE_NAME);
    for (at, fields) in [(512, [1, 3, 4096, 10, 5000]), (0, [2, 4, 8192, 11, 9000])] {
        let slot = &b[at..];
        assert_eq!((&slot[..8], u32_at(slot, 8)), (&b"SHOALMT1"[..], Some(1)));
        let read: Vec<u64> = (0..5).map(|i| u64_at(slot, 16 + 8 * i).unwrap()).collect();
        assert_eq!(read, fields);
        assert_eq!(u32_at(slot, 56), Some(crc32c::crc32c(&slot[..56])));
    }
}

#[test]
fn journal_header_and_records() {
    use crate::journal::{self, Journal, JournalOp};
    let (_tmp, dir) = store_dir();
    let (mut j, _) = Journal::open(&dir, false).unwrap();
    let ops = [
        JournalOp::Put { key: b"k".to_vec(), value: b"vv".to_vec() },
        JournalOp::Copy { key: b"c".to_vec(), from: b"k".to_vec() },
    ];
    j.append(&journal::encode(9, 1234, 24, &ops)).unwrap();
    journal::store_mark(&j.mark_handle().unwrap(), 99).unwrap();
    let b = read(&dir, journal::FILE_NAME);
    assert_eq!((&b[..8], u32_at(&b, 8), u64_at(&b, 16)), (&b"SHOALJN1"[..], Some(3), Some(99)));
    assert_eq!(u64_at(&b, 24), Some(!99));
    let len = u32_at(&b, 32).unwrap() as usize;
    let payload = &b[40..40 + len];
    assert_eq!(u32_at(&b, 36), Some(crate::node::crc32c_bulk(payload)));
    let header: Vec<u64> = (0..3).map(|i| u64_at(payload, 8 * i).unwrap()).collect();
    assert_eq!(header, vec![9, 1234, 24]);
    assert_eq!(u32_at(payload, 24), Some(2));
    // put: tag 1, 0, key length 1, value length 2, key, value
    assert_eq!(&payload[28..36], &[1, 0, 1, 0, 2, 0, 0, 0]);
    assert_eq!(&payload[36..39], b"kvv");
    // copy: tag 4, the source key in the value's place
    assert_eq!(&payload[39..47], &[4, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(&payload[47..49], b"ck");
    assert_eq!(payload.len(), 49);
}

#[test]
fn control_words() {
    let (_tmp, dir) = store_dir();
    let control = crate::control::Control::open_writer(&dir).unwrap();
    control.claim(5, 4096 + 800, 4242, 777);
    control.note_generation(6);
    let b = read(&dir, crate::control::FILE_NAME);
    assert_eq!(b.len(), 4096);
    assert_eq!(&b[..8], b"SHOALCT1");
    assert_eq!(u64_at(&b, 8), Some(5 << 40 | (4096 + 800) >> 3));
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (Some(4242), Some(777)));
    assert_eq!([u64_at(&b, 32).unwrap(), u64_at(&b, 40).unwrap()], crate::control::this_boot());
    assert_eq!(u32_at(&b, 48), Some(1), "one publication, one bump of the wake-up counter");
    assert_eq!(u64_at(&b, 56), Some(6));
}

#[test]
fn reader_table_slots() {
    use crate::readers::ReaderTable;
    let (_tmp, dir) = store_dir();
    let table = ReaderTable::create(&dir).unwrap();
    let slot = table.claim().unwrap();
    table.note(slot, 3, 41);
    assert!(table.add_sleeper(2, std::time::Duration::ZERO).unwrap());
    let b = read(&dir, crate::readers::FILE_NAME);
    assert_eq!((&b[..8], u64_at(&b, 8)), (&b"SHOALRD1"[..], Some(crate::readers::DEFAULT_SLOTS)));
    assert_eq!(u32_at(&b, 64), Some(2));
    let at = 4096 + 64 * slot as usize;
    assert_eq!((u64_at(&b, at), u64_at(&b, at + 8)), (Some(3), Some(41)));
    assert_eq!(u64_at(&b, at + 16), Some(std::process::id() as u64));
    assert_eq!(u64_at(&b, at + 24), crate::sys::process_start_time(std::process::id()));
}
