//! A misbehaving neighbour of a store: `table-vandal STORE ACTION`, where
//! ACTION is one of
//!
//! * `zero`: writes zeros over every slot of the reader table (pids,
//!   start times, recorded generations and versions) and the sleepers count;
//! * `truncate`: cuts the reader table to nothing;
//! * `replace`: puts a fresh, empty file in its place (by rename);
//! * `delete`: removes it;
//! * `hold-sleepers`: holds the lock on the sleepers count;
//! * `fill`: holds every free slot's lock (the table is full);
//! * `one-slot`: declares a table of one slot, and holds it.
//!
//! Prints `done` when it has; the lock holders keep their locks until
//! stdin closes.

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
        Some(action @ ("hold-sleepers" | "fill" | "one-slot")) => {
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&table).expect("open the table");
            let ranges: Vec<(u64, u64)> = match action {
                "hold-sleepers" => vec![(64, 4)],
                "fill" => (0..4096).map(|slot| (4096 + slot * 64, 64)).collect(),
                _ => {
                    file.write_all_at(&1u64.to_le_bytes(), 8).expect("declare one slot");
                    vec![(4096, 64)]
                }
            };
            // Every range it can: slots other readers hold stay theirs.
            let held = ranges
                .into_iter()
                .filter(|&(start, len)| shoal::internals::try_lock_range(&file, start, len).unwrap())
                .count();
            assert!(held > 0, "could lock nothing");
            println!("done");
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
            return;
        }
        other => panic!("unknown action {other:?}"),
    }
    println!("done");
}
