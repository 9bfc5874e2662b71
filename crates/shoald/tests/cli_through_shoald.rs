//! The `shoal` CLI's writing commands while shoald owns the store: they go
//! through shoald (the store's socket) instead of failing on the writer
//! lock, behave as they do without it, and xenstore watchers hear of them.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{shoal_binary, Shoald};

fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_binary()).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn writing_commands_go_through_shoald_and_behave_as_without_it() {
    let shoald = Shoald::start();
    let store = shoald.dir.path().join("store");
    let store = store.to_str().unwrap();
    let mut xs = shoald.connect();
    xs.watch("/cli", "t").unwrap();
    xs.events_until_quiet(Duration::from_millis(200));

    // put: the version it prints is one shoald committed; xenstore reads it
    // and the watcher hears of it.
    let out = shoal(&["put", store, "/cli/a", "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version: u64 = stdout(&out).parse().unwrap();
    assert!(version > 0);
    assert_eq!(xs.read("/cli/a").unwrap(), b"hello");
    let events = xs.events_until_quiet(Duration::from_millis(300));
    assert!(events.contains(&("/cli/a".to_string(), "t".to_string())), "{events:?}");
    // Reading commands read in place, as always.
    let out = shoal(&["get", store, "/cli/a"]);
    assert_eq!(stdout(&out), "hello");

    // cp, and the errors a user gets without a daemon.
    let out = shoal(&["cp", store, "/cli/a", "/cli/b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(xs.read("/cli/b").unwrap(), b"hello");
    let out = shoal(&["cp", store, "/cli/missing", "/cli/c"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no node at /cli/missing"), "{}", stderr(&out));
    let out = shoal(&["rm", store, "/cli"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has children; use -r"), "{}", stderr(&out));
    let out = shoal(&["rm", store, "/cli/nothing"]);
    assert!(stderr(&out).contains("no node at /cli/nothing"), "{}", stderr(&out));
    let out = shoal(&["put", store, "/bad//path", "x"]);
    assert!(!out.status.success());

    // import, in several batches.
    let input = shoald.dir.path().join("in.jsonl");
    let lines: String =
        (0..300).map(|i| format!("{{\"path\": \"/cli/imported/n{i}\", \"value\": \"v{i}\"}}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let out = shoal(&["import", store, input.to_str().unwrap(), "--batch-bytes", "8KiB"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("loaded 300 entries"), "{}", stdout(&out));
    assert_eq!(xs.read("/cli/imported/n299").unwrap(), b"v299");
    assert_eq!(xs.directory("/cli/imported").unwrap().len(), 300);

    // rm -r.
    let out = shoal(&["rm", "-r", store, "/cli"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(xs.read("/cli/a").unwrap_err(), "ENOENT");

    // With shoald stopped, the same commands open the store themselves
    // (the socket it leaves behind is not mistaken for a daemon).
    let dir = shoald.stop(15);
    let store = dir.path().join("store");
    let out = shoal(&["put", store.to_str().unwrap(), "/after", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = shoal(&["get", store.to_str().unwrap(), "/after"]);
    assert_eq!(stdout(&out), "1");
}

#[test]
fn a_client_of_the_store_socket_that_lies_is_dropped_and_others_are_served() {
    use std::io::{Read, Write};
    let shoald = Shoald::start();
    let store = shoald.dir.path().join("store");
    let socket = store.join("shoald.sock");
    // A length past the limit, then garbage of a plausible length.
    let mut liar = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    liar.write_all(&u64::MAX.to_le_bytes()).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(liar.read(&mut buf).unwrap(), 0, "the connection is closed");
    let mut garbage = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    garbage.write_all(&4u64.to_le_bytes()).unwrap();
    garbage.write_all(&[0xff; 4]).unwrap();
    let reply: shoal_remote::Reply = shoal_remote::read_frame(&mut garbage).unwrap();
    assert!(matches!(reply, shoal_remote::Reply::Failed { kind: shoal_remote::FailureKind::Invalid, .. }), "{reply:?}");
    // A client stalled inside a frame holds up no one.
    let mut staller = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    staller.write_all(&100u64.to_le_bytes()).unwrap();
    let out = shoal(&["put", store.to_str().unwrap(), "/x", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The socket is the store owner's only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn nodes_the_cli_removes_take_their_permissions_with_them() {
    let shoald = Shoald::start();
    let store = shoald.dir.path().join("store");
    let store = store.to_str().unwrap();
    let mut xs = shoald.connect();
    xs.write("/shared/secret", b"s").unwrap();
    let set = xs.request(shoald::wire::MsgType::SetPerms, 0, b"/shared/secret\0n5\0");
    assert!(!set.is_error(), "{}", set.text());
    let out = shoal(&["rm", "-r", store, "/shared"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The record went with the node: a node the CLI makes there later has
    // its ancestors' permissions (dom0's), not the old owner's.
    let out = shoal(&["get", store, "/.shoald/perms/shared/secret"]);
    assert!(!out.status.success(), "the record is gone: {}", stdout(&out));
    let out = shoal(&["put", store, "/shared/secret", "new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let perms = xs.request(shoald::wire::MsgType::GetPerms, 0, b"/shared/secret\0");
    assert_eq!(perms.text(), "n0");
}

#[test]
fn sigterm_stops_shoald_while_a_store_socket_client_stalls_inside_a_frame() {
    use std::io::Write;
    let shoald = Shoald::start();
    let socket = shoald.dir.path().join("store").join("shoald.sock");
    let mut staller = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    staller.write_all(&100u64.to_le_bytes()).unwrap();
    staller.write_all(&[0u8; 10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(shoald.stop(15));
    });
    stopped.recv_timeout(Duration::from_secs(10)).expect("shoald stops within 10 s of SIGTERM");
    drop(staller);
}

#[test]
fn a_stopped_shoald_makes_cli_writes_give_up_as_on_a_busy_store() {
    let shoald = Shoald::start();
    let store = shoald.dir.path().join("store");
    let pid = shoald.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let started = std::time::Instant::now();
    let out = shoal(&["put", "--no-wait", store.to_str().unwrap(), "/x", "1"]);
    let took = started.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not answer in time"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    // Once it goes on, it is served as before.
    let out = shoal(&["put", store.to_str().unwrap(), "/y", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_queue_commands_go_through_shoald() {
    let shoald = Shoald::start();
    let store = shoald.dir.path().join("store");
    let store = store.to_str().unwrap();
    let push = shoal(&["queue", "push", store, "jobs", "job"]);
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(stdout(&push), "0");
    let claim = shoal(&["queue", "claim", store, "jobs", "--owner", "w"]);
    assert!(claim.status.success(), "{}", stderr(&claim));
    assert_eq!(stdout(&claim), "0 job");
    let none = shoal(&["queue", "claim", store, "jobs", "--owner", "v"]);
    assert_eq!(none.status.code(), Some(3), "{}", stderr(&none));
    let wrong = shoal(&["queue", "done", store, "jobs", "0", "--owner", "v"]);
    assert_eq!(wrong.status.code(), Some(1));
    let done = shoal(&["queue", "done", store, "jobs", "0", "--owner", "w"]);
    assert!(done.status.success(), "{}", stderr(&done));
    // xenstore clients see the queue's nodes (dom0 reads them).
    let mut client = shoald.connect();
    assert_eq!(client.read("/queues/jobs/next").unwrap(), b"1");
    assert!(client.directory("/queues/jobs/items").unwrap().is_empty());
}
