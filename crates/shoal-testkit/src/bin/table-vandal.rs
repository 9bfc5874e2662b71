//! A misbehaving neighbour of a store: `table-vandal STORE ACTION`, where
//! ACTION is one of
//!
//! * `zero`: writes zeros over every slot of the reader table (pids,
//!   start times, recorded generations and versions) and the sleepers count;
//! * `truncate`: cuts the reader table to nothing;
//! * `replace`: puts a fresh, empty file in its place (by rename);
//! * `delete`: removes it.
//!
//! Prints `done` when it has.

use std::os::unix::fs::FileExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("store dir"));
    let table = dir.join("readers");
    match args.get(2).map(String::as_str) {
        Some("zero") => {
            let file = std::fs::OpenOptions::new().write(true).open(&table).expect("open the table");
            let len = file.metadata().expect("stat").len();
            file.write_all_at(&vec![0u8; (len - 4096) as usize], 4096).expect("zero the slots");
            file.write_all_at(&[0u8; 4], 64).expect("zero the sleepers");
        }
        Some("truncate") => {
            std::fs::OpenOptions::new().write(true).open(&table).expect("open the table").set_len(0).expect("cut");
        }
        Some("replace") => {
            let fresh = dir.join("readers.vandal");
            std::fs::write(&fresh, b"").expect("write");
            std::fs::rename(&fresh, &table).expect("rename over the table");
        }
        Some("delete") => std::fs::remove_file(&table).expect("delete the table"),
        other => panic!("unknown action {other:?}"),
    }
    println!("done");
}
