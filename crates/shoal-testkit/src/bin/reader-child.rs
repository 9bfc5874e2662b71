//! A reader process for tests: `reader-child STORE STOP_VERSION`.
//!
//! Takes snapshots in a loop until it sees `STOP_VERSION` or later. In every
//! snapshot `/inv/a` and `/inv/b` must hold the same value and `/inv/sum`
//! their sum with `/inv/c`: true only of complete versions. Versions must
//! never go backwards. Prints one report line:
//! `report snapshots=N distinct=N violations=N backwards=N last=V`.

use std::time::{Duration, Instant};

fn value(snap: &shoal::Snapshot, path: &str) -> Option<u64> {
    let bytes = snap.get(path).ok()??;
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let stop: u64 = args[2].parse().expect("stop version");
    let reader = shoal::Reader::open(dir).expect("open reader");
    println!("ready pid={}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut snapshots, mut distinct, mut violations, mut backwards, mut last) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let snap = reader.snapshot().expect("snapshot");
        snapshots += 1;
        let v = snap.version();
        if v < last {
            backwards += 1;
        }
        if v != last {
            distinct += 1;
            let (a, b, c, sum) =
                (value(&snap, "/inv/a"), value(&snap, "/inv/b"), value(&snap, "/inv/c"), value(&snap, "/inv/sum"));
            if let (Some(a), Some(b), Some(c), Some(sum)) = (a, b, c, sum) {
                if a != b || a + c != sum {
                    violations += 1;
                }
            } else if a.is_some() || b.is_some() || sum.is_some() {
                violations += 1;
            }
        }
        last = v;
        if v >= stop {
            break;
        }
    }
    println!(
        "report snapshots={snapshots} distinct={distinct} violations={violations} backwards={backwards} last={last}"
    );
}
