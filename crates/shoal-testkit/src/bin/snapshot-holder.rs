//! Holds one snapshot across whatever the writer does: `snapshot-holder STORE`.
//!
//! Takes a snapshot, records every path and value in it and prints
//! `held version=V paths=N`. Then, for each `check` line on stdin, reads the
//! held snapshot again and prints `same` if every path and value is as
//! recorded, `differs ...` otherwise. Also takes a fresh snapshot and prints
//! `fresh version=V`.

use std::io::BufRead;

fn contents(snap: &shoal::Snapshot) -> Vec<(String, Vec<u8>)> {
    snap.scan("/").expect("scan").map(|r| r.map(|e| (e.path(), e.value().to_vec())).expect("entry")).collect()
}

fn main() {
    let dir = std::env::args().nth(1).expect("store dir");
    let reader = shoal::Reader::open(&dir).expect("open reader");
    let snap = reader.snapshot().expect("snapshot");
    let recorded = contents(&snap);
    println!("held version={} paths={}", snap.version(), recorded.len());
    for line in std::io::stdin().lock().lines() {
        if line.expect("stdin").trim() != "check" {
            continue;
        }
        let now = contents(&snap);
        if now == recorded {
            println!("same");
        } else {
            println!("differs: {} paths now, {} recorded", now.len(), recorded.len());
        }
        println!("fresh version={}", reader.snapshot().expect("fresh snapshot").version());
    }
}
