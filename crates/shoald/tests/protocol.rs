//! The xenstore protocol as a raw client speaks it, against a shoald process.

mod common;

use common::{names, nul, Client, Shoald};
use shoald::wire::{Message, MsgType, PAYLOAD_MAX};
use std::io::Write;

#[test]
fn reads_writes_directories_and_removals() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.write("/local/domain/7/name", b"web-7").unwrap();
    c.write("/local/domain/7/bin", b"a\0b").unwrap();
    assert_eq!(c.read("/local/domain/7/name").unwrap(), b"web-7");
    assert_eq!(c.read("/local/domain/7/bin").unwrap(), b"a\0b", "values are bytes, NULs included");
    assert_eq!(c.read("/local/domain").unwrap(), b"", "parents are created empty");
    assert_eq!(c.directory("/local/domain/7").unwrap(), vec!["bin", "name"]);
    assert_eq!(c.directory("/").unwrap(), vec!["local", "tool"]);
    assert_eq!(c.read("/local/domain/8").unwrap_err(), "ENOENT");

    let reply = c.request(MsgType::Mkdir, 0, &nul("/local/domain/7/name"));
    assert_eq!(reply.text(), "OK");
    assert_eq!(c.read("/local/domain/7/name").unwrap(), b"web-7", "MKDIR keeps a value");
    c.request(MsgType::Mkdir, 0, &nul("/x/y")).result().unwrap();
    assert_eq!(c.read("/x/y").unwrap(), b"");

    c.rm("/local/domain/7").unwrap();
    assert_eq!(c.directory("/local/domain").unwrap(), Vec::<String>::new());
    c.rm("/local/domain/7").unwrap();
    assert_eq!(c.rm("/local/domain/7/name").unwrap_err(), "ENOENT");
    assert_eq!(c.rm("/").unwrap_err(), "EINVAL");

    // A second connection sees the same tree.
    let mut other = shoald.connect();
    assert_eq!(other.directory("/").unwrap(), vec!["local", "tool", "x"]);

    // The root has a value of its own, as with the stock daemons.
    c.write("/", b"root value").unwrap();
    assert_eq!(other.read("/").unwrap(), b"root value");
}

#[test]
fn the_value_limit_is_the_payload_limit() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    let path = "/v";
    let room = PAYLOAD_MAX - path.len() - 1;
    c.write(path, &vec![b'x'; room]).unwrap();
    assert_eq!(c.read(path).unwrap().len(), room);
    c.write(path, &vec![b'y'; room - 1]).unwrap();
    assert_eq!(c.read(path).unwrap(), vec![b'y'; room - 1]);
}

#[test]
fn permissions_are_set_and_read_back() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.write("/a/b", b"v").unwrap();
    let get = |c: &mut Client, p: &str| c.request(MsgType::GetPerms, 0, &nul(p)).result().map(|v| names(&v));
    assert_eq!(get(&mut c, "/a/b").unwrap(), vec!["n0"]);
    let mut payload = nul("/a");
    payload.extend_from_slice(b"b5\0r7\0");
    assert_eq!(c.request(MsgType::SetPerms, 0, &payload).text(), "OK");
    assert_eq!(get(&mut c, "/a").unwrap(), vec!["b5", "r7"]);
    c.write("/a/c", b"").unwrap();
    assert_eq!(get(&mut c, "/a/c").unwrap(), vec!["b5", "r7"], "a new node inherits its parent's");
    assert_eq!(get(&mut c, "/a/b").unwrap(), vec!["n0"], "an existing one keeps its own");

    for bad in [&b"/a\0"[..], b"/a\0x5\0", b"/a\0b\0", b"/a\0b70000\0", b"/a\0b5"] {
        assert_eq!(c.request(MsgType::SetPerms, 0, bad).text(), "EINVAL", "{bad:?}");
    }
    let mut missing = nul("/nope");
    missing.extend_from_slice(b"b0\0");
    assert_eq!(c.request(MsgType::SetPerms, 0, &missing).text(), "ENOENT");
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let shoald = Shoald::start();
    let mut a = shoald.connect();
    let mut b = shoald.connect();
    a.write("/counter", b"0").unwrap();

    // Committed: visible after the end, not before.
    let tx = a.start_transaction();
    assert_ne!(tx, 0);
    a.write_tx(tx, "/counter", b"1").unwrap();
    assert_eq!(b.read("/counter").unwrap(), b"0");
    let r = a.request(MsgType::Read, tx, &nul("/counter"));
    assert_eq!(r.payload, b"1", "a transaction reads its own writes");
    a.end_transaction(tx, true).unwrap();
    assert_eq!(b.read("/counter").unwrap(), b"1");

    // Aborted: nothing happens.
    let tx = a.start_transaction();
    a.write_tx(tx, "/counter", b"2").unwrap();
    a.end_transaction(tx, false).unwrap();
    assert_eq!(b.read("/counter").unwrap(), b"1");

    // Two transactions that read and write the same node: the second to
    // end gets EAGAIN, and its write is not applied.
    let ta = a.start_transaction();
    let tb = b.start_transaction();
    assert_eq!(a.request(MsgType::Read, ta, &nul("/counter")).payload, b"1");
    assert_eq!(b.request(MsgType::Read, tb, &nul("/counter")).payload, b"1");
    a.write_tx(ta, "/counter", b"2").unwrap();
    b.write_tx(tb, "/counter", b"3").unwrap();
    a.end_transaction(ta, true).unwrap();
    assert_eq!(b.end_transaction(tb, true).unwrap_err(), "EAGAIN");
    assert_eq!(b.read("/counter").unwrap(), b"2");

    // Transactions on different nodes do not conflict.
    let ta = a.start_transaction();
    let tb = b.start_transaction();
    a.write_tx(ta, "/left", b"l").unwrap();
    b.write_tx(tb, "/right", b"r").unwrap();
    a.end_transaction(ta, true).unwrap();
    b.end_transaction(tb, true).unwrap();

    // An id that is not open, or not this connection's.
    assert_eq!(a.end_transaction(999, true).unwrap_err(), "ENOENT");
    let tb = b.start_transaction();
    assert_eq!(a.write_tx(tb, "/x", b"").unwrap_err(), "ENOENT");
    assert_eq!(a.request(MsgType::TransactionEnd, 0, b"X\0").text(), "EINVAL");
}

#[test]
fn directory_part_pages_through_a_large_directory() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    let tx = c.start_transaction();
    let expected: Vec<String> = (0..1500).map(|i| format!("domain-with-a-long-name-{i:05}")).collect();
    for name in &expected {
        c.write_tx(tx, &format!("/big/{name}"), b"").unwrap();
    }
    c.end_transaction(tx, true).unwrap();
    // Too long for one reply: E2BIG, and the client asks for parts.
    assert_eq!(c.request(MsgType::Directory, 0, &nul("/big")).text(), "E2BIG");

    let mut seen = Vec::new();
    let mut offset = 0usize;
    let mut generation = None;
    loop {
        let mut payload = nul("/big");
        payload.extend_from_slice(&nul(&offset.to_string()));
        let part = c.request(MsgType::DirectoryPart, 0, &payload).result().unwrap();
        assert!(part.len() <= PAYLOAD_MAX);
        let gen_end = part.iter().position(|&b| b == 0).unwrap();
        let gen = String::from_utf8(part[..gen_end].to_vec()).unwrap();
        assert_eq!(generation.get_or_insert(gen.clone()), &gen, "the directory did not change");
        let body = &part[gen_end + 1..];
        let last = body.ends_with(&[0, 0]) || body == [0];
        seen.extend(names(body));
        offset += body.len();
        if last {
            break;
        }
    }
    assert_eq!(seen, expected);

    // The generation changes with the list.
    c.write("/big/another", b"").unwrap();
    let mut payload = nul("/big");
    payload.extend_from_slice(b"0\0");
    let part = c.request(MsgType::DirectoryPart, 0, &payload).result().unwrap();
    let gen_end = part.iter().position(|&b| b == 0).unwrap();
    assert_ne!(Some(String::from_utf8(part[..gen_end].to_vec()).unwrap()), generation);
}

#[test]
fn the_read_only_socket_refuses_changes() {
    let shoald = Shoald::start();
    shoald.connect().write("/a", b"1").unwrap();
    let mut ro = Client::connect(&shoald.socket_ro);
    assert_eq!(ro.read("/a").unwrap(), b"1");
    assert_eq!(ro.write("/a", b"2").unwrap_err(), "EROFS");
    assert_eq!(ro.rm("/a").unwrap_err(), "EROFS");
    // Transactions are allowed (xenstore-list and -exists read in one);
    // changes inside them are not.
    let tx = ro.start_transaction();
    assert_eq!(ro.write_tx(tx, "/a", b"3").unwrap_err(), "EROFS");
    let listed = ro.request(MsgType::Directory, tx, b"/\0").result().map(|p| common::names(&p)).unwrap();
    assert!(listed.contains(&"a".to_string()), "{listed:?}");
    ro.end_transaction(tx, true).unwrap();
    assert_eq!(ro.read("/a").unwrap(), b"1");
    // Debian's tools that read inside a transaction work on it.
    let out =
        std::process::Command::new("xenstore-list").arg("/").env("XENSTORED_PATH", &shoald.socket_ro).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "a"));
}

#[test]
fn malformed_requests_get_errors_and_the_connection_goes_on() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.write("/a", b"1").unwrap();
    let cases: &[(u32, &[u8], &str)] = &[
        (MsgType::Read as u32, b"/a", "EINVAL"),              // no terminating NUL
        (MsgType::Read as u32, b"", "EINVAL"),                // no path at all
        (MsgType::Read as u32, b"/a\0/b\0", "EINVAL"),        // two paths
        (MsgType::Read as u32, b"/a/\0", "EINVAL"),           // trailing slash
        (MsgType::Read as u32, b"/a b\0", "EINVAL"),          // a character xenstore refuses
        (MsgType::Read as u32, b"/\xff\0", "EINVAL"),         // not text
        (MsgType::Read as u32, b"relative\0", "ENOENT"),      // /local/domain/0/relative
        (MsgType::Write as u32, b"/a", "EINVAL"),             // no NUL after the path
        (MsgType::Directory as u32, b"/a//b\0", "EINVAL"),    // empty segment
        (MsgType::GetDomainPath as u32, b"7", "EINVAL"),      // no NUL
        (MsgType::Watch as u32, b"/a\0tok\x000\0", "EINVAL"), // a depth: not in 4.17
        (MsgType::Watch as u32, b"/a\0", "EINVAL"),           // no token
        (MsgType::Unwatch as u32, b"/a\0tok\0", "ENOENT"),    // not watched
        (MsgType::Error as u32, b"\0", "ENOSYS"),             // a reply type as a request
        (MsgType::WatchEvent as u32, b"/a\0t\0", "ENOSYS"),
        (20, b"\0", "ENOSYS"),     // the removed RESTRICT
        (9999, b"/a\0", "ENOSYS"), // unknown
    ];
    for &(kind, payload, error) in cases {
        let reply = c.request_raw(kind, 0, payload);
        assert!(reply.is_error(), "type {kind} {payload:?}: {reply:?}");
        assert_eq!(reply.text(), error, "type {kind} {payload:?}");
    }
    assert_eq!(c.read("/a").unwrap(), b"1", "the connection still works");
    // Domain ids are read as C's atoi reads them, as the stock daemons do.
    for (id, path) in [
        ("7", "/local/domain/7"),
        (" 7x", "/local/domain/7"),
        ("abc", "/local/domain/0"),
        ("-1", "/local/domain/4294967295"),
    ] {
        assert_eq!(c.request(MsgType::GetDomainPath, 0, &nul(id)).text(), path);
    }
    // A transaction id that is not open is ENOENT for every request but watches.
    for kind in [MsgType::Read, MsgType::GetDomainPath, MsgType::TransactionStart, MsgType::ResetWatches] {
        assert_eq!(c.request(kind, 77, b"/a\0").text(), "ENOENT", "{kind:?}");
    }
    let tx = c.start_transaction();
    assert_eq!(c.request(MsgType::TransactionStart, tx, b"\0").text(), "EBUSY", "no nesting");
}

#[test]
fn a_length_over_the_limit_closes_only_that_connection() {
    let shoald = Shoald::start();
    let mut good = shoald.connect();
    good.write("/a", b"1").unwrap();
    let mut bad = shoald.connect();
    let mut message = Message { kind: MsgType::Write as u32, req_id: 1, tx_id: 0, payload: Vec::new() }.to_bytes();
    message[12..16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_ne_bytes());
    bad.stream.write_all(&message).unwrap();
    assert!(bad.receive().is_none(), "the connection is closed");
    assert_eq!(good.read("/a").unwrap(), b"1");
}

#[test]
fn a_client_stalled_inside_a_message_does_not_hold_up_the_others() {
    let shoald = Shoald::start();
    let mut staller = shoald.connect();
    let message = Message { kind: MsgType::Write as u32, req_id: 1, tx_id: 0, payload: b"/s\0v".to_vec() }.to_bytes();
    staller.stream.write_all(&message[..HEADER_HALF]).unwrap();
    let mut other = shoald.connect();
    for i in 0..100 {
        other.write(&format!("/n{i}"), b"v").unwrap();
    }
    // The staller finishes its message and is answered.
    staller.stream.write_all(&message[HEADER_HALF..]).unwrap();
    let reply = staller.receive().unwrap();
    assert_eq!(reply.text(), "OK");
    assert_eq!(other.read("/s").unwrap(), b"v");
}

const HEADER_HALF: usize = 10;

#[test]
fn a_thousand_connections_opened_and_dropped() {
    let shoald = Shoald::start();
    for i in 0..1000 {
        let mut c = shoald.connect();
        if i % 2 == 0 {
            // Half of them leave a request behind unread.
            c.send(MsgType::Write as u32, 0, b"/churn\0x");
        }
    }
    let mut c = shoald.connect();
    c.write("/after", b"ok").unwrap();
    assert_eq!(c.read("/after").unwrap(), b"ok");
}

#[test]
fn sigterm_stops_shoald_while_a_client_takes_no_replies() {
    let shoald = Shoald::start();
    let mut writer = shoald.connect();
    writer.write("/kept", b"1").unwrap();
    // A client that sends requests and never reads a reply: its replies
    // fill the socket and its queue.
    let mut flooder = shoald.connect();
    let flooding = std::thread::spawn(move || {
        let message =
            shoald::wire::Message { kind: MsgType::Read as u32, req_id: 1, tx_id: 0, payload: b"/tool\0".to_vec() };
        let bytes = message.to_bytes();
        for _ in 0..100_000 {
            if flooder.stream.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = shoald.stop(15);
        let _ = done.send(dir);
    });
    let dir = stopped.recv_timeout(std::time::Duration::from_secs(10)).expect("shoald stops within 10 s of SIGTERM");
    // It stopped cleanly: the store reopens with what was acknowledged.
    let restarted = Shoald::start_in(dir, &[]);
    assert_eq!(restarted.connect().read("/kept").unwrap(), b"1");
    drop(restarted);
    flooding.join().unwrap();
}

#[test]
fn a_second_daemon_does_not_take_over_a_live_socket() {
    let first = Shoald::start();
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoald"))
        .arg("--store")
        .arg(other.path().join("store"))
        .arg("--xenstore-socket")
        .arg(&first.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a running daemon serves") && stderr.contains("stop it first"), "{stderr}");
    // The first one still serves, on its own socket file.
    first.connect().write("/still", b"here").unwrap();
    // A socket file left by a daemon that is gone is replaced.
    let dir = first.stop(9);
    let restarted = Shoald::start_in(dir, &[]);
    assert_eq!(restarted.connect().read("/still").unwrap(), b"here");
}

/// Clients at once against one serving thread and against several: every
/// increment of a shared counter made in a transaction lands exactly once
/// (a lost update or a double commit would change the total), and a
/// watcher hears one event per commit.
#[test]
fn concurrent_transactions_are_serialized_with_one_thread_or_several() {
    const CLIENTS: usize = 4;
    const INCREMENTS: usize = 100;
    for threads in ["1", "4"] {
        let shoald = Shoald::start_with(&["--threads", threads, "--durability", "none"]);
        let mut setup = shoald.connect();
        setup.write("/counter", b"0").unwrap();
        let mut watcher = shoald.connect();
        watcher.watch("/counter", "t").unwrap();
        assert_eq!(watcher.next_event(std::time::Duration::from_secs(5)).unwrap().0, "/counter");
        std::thread::scope(|s| {
            for n in 0..CLIENTS {
                let shoald = &shoald;
                s.spawn(move || {
                    let mut c = shoald.connect();
                    for i in 0..INCREMENTS {
                        loop {
                            let tx = c.start_transaction();
                            let value = c.request(MsgType::Read, tx, &nul("/counter")).payload;
                            let value: usize = String::from_utf8(value).unwrap().parse().unwrap();
                            c.write_tx(tx, "/counter", (value + 1).to_string().as_bytes()).unwrap();
                            c.write(&format!("/own/{n}/{i}"), b"x").unwrap();
                            match c.end_transaction(tx, true) {
                                Ok(()) => break,
                                Err(e) => assert_eq!(e, "EAGAIN", "threads {threads}"),
                            }
                        }
                    }
                });
            }
        });
        let total = CLIENTS * INCREMENTS;
        assert_eq!(setup.read("/counter").unwrap(), total.to_string().as_bytes(), "threads {threads}");
        for n in 0..CLIENTS {
            assert_eq!(setup.directory(&format!("/own/{n}")).unwrap().len(), INCREMENTS, "threads {threads}");
        }
        // One event per commit of the counter, none lost, none doubled.
        let events = watcher.events_until_quiet(std::time::Duration::from_millis(500));
        assert_eq!(events.len(), total, "threads {threads}");
        assert!(events.iter().all(|(path, _)| path == "/counter"));
    }
}
