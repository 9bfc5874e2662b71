//! Buffer references across processes: a handle made by the writer is
//! resolved by another process as a slice of its own mapping, as a copy,
//! and by `sendfile` into a file and a unix socket; after a compaction the
//! old handle is refused as stale, and damaged or foreign handles as invalid.

use std::io::Read;
use std::os::unix::net::UnixListener;

use shoal::{BufRef, Durability, Options, Store};
use shoal_testkit::{field, ChildProcess};

const CLIENT: &str = env!("CARGO_BIN_EXE_bufref-client");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn options() -> Options {
    Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() }
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

struct Client {
    process: ChildProcess,
    tmp: std::path::PathBuf,
}

impl Client {
    fn ask(&mut self, line: &str) -> String {
        self.process.send(line);
        self.process.next_line().expect("a reply")
    }

    /// Checks every form of resolution of `r` against `expected`.
    fn check_all_forms(&mut self, r: &BufRef, expected: &[u8]) {
        let h = hex(&r.encode());
        let (len, crc) = (expected.len() as u64, crc32c::crc32c(expected) as u64);
        let reply = self.ask(&format!("slice {h}"));
        assert_eq!(
            (field(&reply, "len"), field(&reply, "crc"), field(&reply, "mapped")),
            (Some(len), Some(crc), Some(1)),
            "{reply}"
        );
        let reply = self.ask(&format!("copy {h}"));
        assert_eq!((field(&reply, "len"), field(&reply, "crc")), (Some(len), Some(crc)), "{reply}");

        let file = self.tmp.join("sent");
        let reply = self.ask(&format!("send-file {h} {}", file.display()));
        assert_eq!(field(&reply, "len"), Some(len), "{reply}");
        assert_eq!(std::fs::read(&file).unwrap(), expected);

        let socket = self.tmp.join("socket");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let receiver = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        });
        let reply = self.ask(&format!("send-socket {h} {}", socket.display()));
        assert_eq!(field(&reply, "len"), Some(len), "{reply}");
        assert_eq!(receiver.join().unwrap(), expected);
    }
}

#[test]
fn another_process_resolves_handles_as_slices_copies_and_sendfile() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let values = [
        ("/v/empty", Vec::new()),
        ("/v/inline", value(40, 1)),
        ("/v/blob", value(3000, 2)),
        ("/v/large", value(200 << 10, 3)),
        ("/v/aligned-min", value(shoal::PAGE_ALIGNED_VALUE_MIN, 4)),
    ];
    let mut txn = store.begin();
    for (path, v) in &values {
        txn.put(path, v).unwrap();
    }
    txn.commit().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let mut client =
        Client { process: ChildProcess::spawn(CLIENT, &[dir.path().to_str().unwrap()]), tmp: tmp.path().into() };
    client.process.wait_for("ready");
    let snap = store.snapshot();
    let mut handles = Vec::new();
    for (path, v) in &values {
        let r = snap.buf_ref(path).unwrap().expect("the path exists");
        assert_eq!((r.len(), r.version(), r.generation()), (v.len(), snap.version(), snap.generation()));
        if v.len() >= shoal::PAGE_ALIGNED_VALUE_MIN {
            assert_eq!(r.file_offset() % page_size(), 0, "{path} starts a page");
        }
        client.check_all_forms(&r, v);
        handles.push(r);
    }
    assert!(snap.buf_ref("/v/missing").unwrap().is_none());

    // Later commits do not disturb a handle: it still gives its version's bytes.
    let mut txn = store.begin();
    txn.put("/v/blob", value(3000, 99)).unwrap();
    txn.commit().unwrap();
    client.check_all_forms(&handles[2], &values[2].1);

    // Damaged on the way, or from another store: refused.
    let mut damaged = handles[2].encode();
    damaged[30] ^= 1;
    assert!(client.ask(&format!("slice {}", hex(&damaged))).starts_with("error invalid"));
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path(), options()).unwrap();
    let mut txn = other.begin();
    txn.put("/v/blob", &values[2].1).unwrap();
    txn.commit().unwrap();
    let foreign = other.snapshot().buf_ref("/v/blob").unwrap().unwrap();
    let reply = client.ask(&format!("copy {}", hex(&foreign.encode())));
    assert!(reply.starts_with("error invalid") && reply.contains("another store"), "{reply}");

    // After a compaction the old handles are stale, in every form; new ones work.
    drop(snap);
    store.compact().unwrap();
    for r in &handles {
        for mode in ["slice", "copy"] {
            let reply = client.ask(&format!("{mode} {}", hex(&r.encode())));
            assert!(reply.starts_with("error stale"), "{reply}");
        }
        let reply = client.ask(&format!("send-file {} {}", hex(&r.encode()), tmp.path().join("stale").display()));
        assert!(reply.starts_with("error stale"), "{reply}");
    }
    let fresh = store.snapshot().buf_ref("/v/large").unwrap().unwrap();
    assert_eq!(fresh.file_offset() % page_size(), 0, "compaction keeps large values page-aligned");
    client.check_all_forms(&fresh, &values[3].1);
    let (_, ok) = client.process.finish();
    assert!(ok);
}
