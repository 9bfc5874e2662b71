//! Durable one-key commits from many threads at once, as in the bench's
//! row 3c but in one process and without the anchors: a loop to run under
//! `perf record`, or to compare builds. Arguments: committer threads
//! (default 16), keys loaded first (default 1,000,000), seconds (default 3).
//! Prints commits/s.
//!
//! `cargo run --release -p shoal-bench --example durable_commits [threads] [keys] [seconds]`

use std::time::{Duration, Instant};

fn key(i: usize) -> String {
    format!("/local/domain/{}/{}", i / 4, ["name", "uuid", "memory", "vcpus"][i % 4])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(16, |a| a.parse().expect("threads: a number"));
    let keys: usize = args.next().map_or(1_000_000, |a| a.parse().expect("keys: a number"));
    let seconds: f64 = args.next().map_or(3.0, |a| a.parse().expect("seconds: a number"));
    let dir = tempfile::tempdir().expect("dir");
    let options = shoal::Options { durability: shoal::Durability::Sync, ..Default::default() };
    let store = shoal::Store::create(dir.path(), options).expect("create");
    let value = vec![b'v'; 100];
    store.bulk_load((0..keys).map(|i| (key(i), value.as_slice()))).expect("bulk load");
    let barrier = std::sync::Barrier::new(threads);
    let total: u64 = std::thread::scope(|s| {
        let committers: Vec<_> = (0..threads)
            .map(|t| {
                let (store, barrier, value) = (&store, &barrier, &value);
                s.spawn(move || {
                    // A generator per thread, so that threads write different keys.
                    let mut x = 12345u64 + t as u64;
                    barrier.wait();
                    let start = Instant::now();
                    let mut commits = 0u64;
                    while start.elapsed() < Duration::from_secs_f64(seconds) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let k = key((x >> 33) as usize % keys);
                        loop {
                            let mut txn = store.begin();
                            txn.put(&k, value).expect("put");
                            match txn.commit() {
                                Ok(_) => break,
                                Err(shoal::Error::Conflict { .. }) => continue,
                                Err(e) => panic!("commit: {e}"),
                            }
                        }
                        commits += 1;
                    }
                    commits
                })
            })
            .collect();
        committers.into_iter().map(|h| h.join().expect("a committer panicked")).sum()
    });
    println!("{threads} committers: {:.1} k durable commits/s", total as f64 / seconds / 1e3);
}
