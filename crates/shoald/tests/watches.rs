//! Watches over the protocol: registration, matching, removals, relative
//! paths, transactions, ordering and clients that stop reading.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{nul, Shoald};
use shoald::wire::MsgType;

const QUIET: Duration = Duration::from_millis(300);

fn ev(path: &str, token: &str) -> (String, String) {
    (path.to_string(), token.to_string())
}

#[test]
fn a_watch_fires_once_at_once_then_for_each_change_below_it() {
    let shoald = Shoald::start();
    let mut watcher = shoald.connect();
    let mut writer = shoald.connect();
    watcher.watch("/vm/1", "tok").unwrap();
    assert_eq!(watcher.next_event(QUIET), Some(ev("/vm/1", "tok")), "the first event, though /vm/1 does not exist");

    writer.write("/vm/1/name", b"a").unwrap();
    writer.write("/vm/1", b"b").unwrap();
    writer.write("/vm/10", b"not below").unwrap();
    writer.write("/vm", b"above").unwrap();
    writer.write("/vm/1/name", b"a").unwrap(); // the same value again still fires
    writer.request(MsgType::Mkdir, 0, &nul("/vm/1/name")).result().unwrap(); // exists: no event
    writer.request(MsgType::Mkdir, 0, &nul("/vm/1/dir")).result().unwrap();
    let mut perms = nul("/vm/1/name");
    perms.extend_from_slice(b"b0\0");
    writer.request(MsgType::SetPerms, 0, &perms).result().unwrap();
    assert_eq!(
        watcher.events_until_quiet(QUIET),
        vec![
            ev("/vm/1/name", "tok"),
            ev("/vm/1", "tok"),
            ev("/vm/1/name", "tok"),
            ev("/vm/1/dir", "tok"),
            ev("/vm/1/name", "tok"),
        ]
    );
    // Creating parents implicitly reports only the node written.
    writer.write("/vm/1/a/b/c", b"").unwrap();
    assert_eq!(watcher.events_until_quiet(QUIET), vec![ev("/vm/1/a/b/c", "tok")]);
}

#[test]
fn the_writer_gets_its_own_events_before_its_reply() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.watch("/w", "mine").unwrap();
    assert_eq!(c.next_event(QUIET), Some(ev("/w", "mine")));
    c.write("/w/x", b"1").unwrap();
    // `request` keeps events that came before the reply aside.
    assert_eq!(c.events, vec![(b"/w/x".to_vec(), b"mine".to_vec())]);
}

#[test]
fn removals_fire_the_removed_root_and_watches_below_it() {
    let shoald = Shoald::start();
    let mut w = shoald.connect();
    let mut writer = shoald.connect();
    writer.write("/w1/a/b/c", b"").unwrap();
    for (path, token) in
        [("/w1", "tokA"), ("/w1", "tokB"), ("/w1/a/b", "tokC"), ("/", "tokRoot"), ("/w1/a/ghost", "tokG")]
    {
        w.watch(path, token).unwrap();
    }
    let initial = w.events_until_quiet(QUIET);
    assert_eq!(initial.len(), 5);
    writer.rm("/w1/a").unwrap();
    let mut events = w.events_until_quiet(QUIET);
    events.sort();
    assert_eq!(
        events,
        vec![ev("/w1/a", "tokA"), ev("/w1/a", "tokB"), ev("/w1/a", "tokRoot"), ev("/w1/a/b", "tokC")],
        "a watch below the removed node fires with its own path; the ghost, which never existed, does not"
    );
    // Removing what is not there fires nothing.
    writer.rm("/w1/a").unwrap();
    assert_eq!(w.events_until_quiet(QUIET), vec![]);
}

#[test]
fn relative_watches_report_relative_paths() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.watch("rel", "t").unwrap();
    assert_eq!(c.next_event(QUIET), Some(ev("rel", "t")));
    let mut writer = shoald.connect();
    writer.write("/local/domain/0/rel/q", b"").unwrap();
    assert_eq!(c.events_until_quiet(QUIET), vec![ev("rel/q", "t")]);
    // The same watch, named absolutely, can be removed.
    c.unwatch("/local/domain/0/rel", "t").unwrap();
    writer.write("/local/domain/0/rel/q", b"").unwrap();
    assert_eq!(c.events_until_quiet(QUIET), vec![]);
}

#[test]
fn duplicates_removal_and_reset() {
    let shoald = Shoald::start();
    let mut c = shoald.connect();
    c.watch("/a", "t").unwrap();
    assert_eq!(c.watch("/a", "t").unwrap_err(), "EEXIST");
    c.watch("/a", "u").unwrap();
    c.watch("/a", "").unwrap(); // empty tokens are allowed
    c.watch("@releaseDomain", "r").unwrap();
    assert_eq!(c.events_until_quiet(QUIET).len(), 4);
    c.unwatch("/a", "t").unwrap();
    assert_eq!(c.unwatch("/a", "t").unwrap_err(), "ENOENT");
    let mut writer = shoald.connect();
    writer.write("/a", b"").unwrap();
    assert_eq!(c.events_until_quiet(QUIET), vec![ev("/a", "u"), ev("/a", "")]);

    let tx = c.start_transaction();
    assert_eq!(c.request(MsgType::ResetWatches, 0, b"\0").text(), "OK");
    writer.write("/a", b"").unwrap();
    assert_eq!(c.events_until_quiet(QUIET), vec![], "no watches after a reset");
    assert_eq!(c.request(MsgType::Read, tx, &nul("/a")).text(), "ENOENT", "nor transactions");
    // Watches end with their connection: others are not affected.
    let mut other = shoald.connect();
    other.watch("/a", "o").unwrap();
    drop(c);
    writer.write("/a", b"").unwrap();
    assert_eq!(other.events_until_quiet(QUIET), vec![ev("/a", "o"), ev("/a", "o")]);
}

#[test]
fn transactions_fire_at_commit_and_never_when_aborted() {
    let shoald = Shoald::start();
    let mut w = shoald.connect();
    w.watch("/t", "tok").unwrap();
    w.next_event(QUIET).unwrap();
    let mut c = shoald.connect();
    let tx = c.start_transaction();
    c.write_tx(tx, "/t/a", b"1").unwrap();
    c.write_tx(tx, "/t/b", b"2").unwrap();
    assert_eq!(w.events_until_quiet(QUIET), vec![], "nothing before the commit");
    c.end_transaction(tx, true).unwrap();
    assert_eq!(w.events_until_quiet(QUIET), vec![ev("/t/a", "tok"), ev("/t/b", "tok")]);

    let tx = c.start_transaction();
    c.write_tx(tx, "/t/c", b"3").unwrap();
    c.end_transaction(tx, false).unwrap();
    assert_eq!(w.events_until_quiet(QUIET), vec![]);
}

#[test]
fn events_come_in_commit_order() {
    let shoald = Shoald::start();
    let mut w = shoald.connect();
    w.watch("/seq", "tok").unwrap();
    w.next_event(QUIET).unwrap();
    let socket = shoald.socket.clone();
    let writers: Vec<_> = (0..2)
        .map(|id| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = common::Client::connect(&socket);
                for n in 0..200 {
                    c.write(&format!("/seq/w{id}/{n:03}"), b"").unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let events = w.events_until_quiet(QUIET);
    assert_eq!(events.len(), 400);
    for id in 0..2 {
        let mine: Vec<&String> =
            events.iter().map(|(p, _)| p).filter(|p| p.starts_with(&format!("/seq/w{id}/"))).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "writer {id}'s acknowledged writes are reported in the order they were made");
    }
}

#[test]
fn a_client_that_stops_reading_its_events_is_disconnected_and_others_go_on() {
    let shoald = Shoald::start_with(&["--queued-messages", "100", "--durability", "none"]);
    let mut stalled = shoald.connect();
    stalled.watch("/flood", "t").unwrap();
    let mut reader = shoald.connect();
    reader.watch("/flood", "r").unwrap();
    assert_eq!(reader.next_event(QUIET), Some(ev("/flood", "r")));
    // A client that keeps reading, on a thread of its own.
    let reading = std::thread::spawn(move || reader.events_until_quiet(Duration::from_secs(2)).len());
    let mut writer = shoald.connect();
    // Far more events than the stalled client's queue and socket buffer hold.
    let value = vec![b'x'; 1000];
    for n in 0..3000 {
        writer.write(&format!("/flood/{}/{n:05}", "y".repeat(200)), &value).unwrap();
    }
    assert_eq!(reading.join().unwrap(), 3000, "a client that reads gets every event");
    // The stalled client finds its connection closed after what was queued.
    let mut got = 0;
    while stalled.receive().is_some() {
        got += 1;
    }
    assert!(got < 3000, "the stalled client was cut off ({got} messages)");
}

#[test]
fn xenstore_watch_prints_events() {
    use std::io::{BufRead, BufReader};
    let shoald = Shoald::start();
    let mut child = Command::new("xenstore-watch")
        .args(["-n", "3", "/u/w"])
        .env("XENSTORED_PATH", &shoald.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("xenstore-watch (install Debian's xenstore-utils)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first line is the event of the registration itself.
    assert_eq!(lines.next().unwrap().unwrap(), "/u/w");
    let mut writer = shoald.connect();
    writer.write("/u/w/x", b"1").unwrap();
    writer.write("/u/w", b"2").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, vec!["/u/w/x", "/u/w"]);
    assert!(child.wait().unwrap().success());
}
