//! A watch stream in its own process: `watcher STORE PREFIX`.
//!
//! Prints `ready version=V`, then waits for a line on stdin: `go` starts
//! watching (a test makes the watcher fall behind by sending it late). Then
//! prints each event as `change v=V kind=K path=P` or `resync from=A to=B`
//! followed by `diff kind=K path=P` lines, until it sees a change of
//! `PREFIX/stop`; then `done version=V`. Waits time out after 10 s.

use std::io::BufRead;
use std::time::Duration;

use shoal::{ChangeKind, WatchEvent};

fn kind(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Set => "set",
        ChangeKind::Delete => "delete",
        ChangeKind::DeleteTree => "delete_tree",
        ChangeKind::CopyTree => "copy_tree",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, prefix) = (&args[1], &args[2]);
    let reader = shoal::Reader::open(dir).expect("open reader");
    let mut watch = reader.watch(prefix).expect("watch");
    println!("ready version={}", watch.version());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    assert_eq!(line.trim(), "go");
    let stop = format!("{}/stop", prefix.trim_end_matches('/'));
    loop {
        let events = watch.wait(Duration::from_secs(10)).expect("wait");
        assert!(!events.is_empty(), "no event within 10 s");
        let mut stopped = false;
        for event in events {
            match event {
                WatchEvent::Change { version, path, kind: k } => {
                    println!("change v={version} kind={} path={path}", kind(k));
                    stopped |= path == stop;
                }
                WatchEvent::Resync { from, to, changes } => {
                    println!("resync from={from} to={to}");
                    for (path, k) in changes {
                        println!("diff kind={} path={path}", kind(k));
                        stopped |= path == stop;
                    }
                }
            }
        }
        if stopped {
            println!("done version={}", watch.version());
            return;
        }
    }
}
