//! The ceiling under bench row 3c: group commit reduced to its system calls,
//! with no shoal involved.
//!
//! Committer threads each append a 200-byte record under a mutex, then wait
//! until an `fdatasync` that began after their record returns; the first
//! waiter to find no sync running leads one for everything written so far
//! (shoal's protocol, `store/publish.rs`). Run once appending to a growing
//! file and once overwriting a zero-filled one (a sync that writes data only,
//! not the file's size). Prints commits/s, syncs and commits per sync.
//!
//! `cargo run --release -p shoal-bench --example group_commit_model [threads] [seconds]`

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const RECORD: [u8; 200] = [7; 200];
/// Zero-filled ahead of the records, in the second mode.
const ZEROED: usize = 256 << 20;

#[derive(Default)]
struct Group {
    /// Bytes written, records written, records made durable.
    end: u64,
    written: u64,
    synced: u64,
    syncing: bool,
    syncs: u64,
}

fn run(file: &File, threads: usize, window: Duration) -> (u64, u64) {
    let group = (Mutex::new(Group::default()), Condvar::new());
    let commits: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (group, file) = (&group, file);
                s.spawn(move || {
                    let (lock, cv) = group;
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < window {
                        let mut g = lock.lock().unwrap();
                        file.write_all_at(&RECORD, g.end).expect("write");
                        g.end += RECORD.len() as u64;
                        g.written += 1;
                        let mine = g.written;
                        while g.synced < mine {
                            if g.syncing {
                                g = cv.wait(g).unwrap();
                                continue;
                            }
                            g.syncing = true;
                            let target = g.written;
                            drop(g);
                            file.sync_data().expect("fdatasync");
                            g = lock.lock().unwrap();
                            g.syncing = false;
                            g.syncs += 1;
                            g.synced = g.synced.max(target);
                            cv.notify_all();
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a committer panicked")).sum()
    });
    let syncs = group.0.lock().unwrap().syncs;
    (commits, syncs)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(16, |a| a.parse().expect("threads: a number"));
    let seconds: f64 = args.next().map_or(3.0, |a| a.parse().expect("seconds: a number"));
    let window = Duration::from_secs_f64(seconds);
    for zero_filled in [false, true] {
        let dir = tempfile::tempdir()?;
        let file =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("journal"))?;
        if zero_filled {
            file.write_all_at(&vec![0u8; ZEROED], 0)?;
            file.sync_all()?;
        }
        let (commits, syncs) = run(&file, threads, window);
        println!(
            "{}: {threads} committers, {:.1} k commits/s, {:.0} syncs/s, {:.1} commits per sync",
            if zero_filled { "zero-filled file" } else { "appending     " },
            commits as f64 / seconds / 1e3,
            syncs as f64 / seconds,
            commits as f64 / syncs.max(1) as f64
        );
    }
    Ok(())
}
