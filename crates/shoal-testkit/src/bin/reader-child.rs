//! A reader process for tests: `reader-child STORE STOP_VERSION`.
//!
//! Takes snapshots in a loop until it sees `STOP_VERSION` or later. In every
//! snapshot `/inv/a` and `/inv/b` must hold the same value and `/inv/sum`
//! their sum with `/inv/c`: true only of complete versions. The same holds
//! in `/inv-copy` (a copy by reference of an earlier `/inv`), which is never
//! ahead of `/inv`. Versions must never go backwards. Prints one report line:
//! `report snapshots=N distinct=N violations=N backwards=N last=V copies=N`
//! (`copies`: versions in which `/inv-copy` was there to check).

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
    let mut copies_checked = 0u64;
    // Whether the invariant holds under `root` (`Some(a)`), or the subtree is incomplete.
    let check = |snap: &shoal::Snapshot, root: &str| -> Result<Option<u64>, ()> {
        let at = |name: &str| value(snap, &format!("{root}/{name}"));
        match (at("a"), at("b"), at("c"), at("sum")) {
            (Some(a), Some(b), Some(c), Some(sum)) if a == b && a + c == sum => Ok(Some(a)),
            (None, None, None, None) => Ok(None),
            _ => Err(()),
        }
    };
    while Instant::now() < deadline {
        let snap = reader.snapshot().expect("snapshot");
        snapshots += 1;
        let v = snap.version();
        if v < last {
            backwards += 1;
        }
        if v != last {
            distinct += 1;
            match (check(&snap, "/inv"), check(&snap, "/inv-copy")) {
                (Ok(Some(a)), Ok(Some(copied))) if copied > a => violations += 1,
                (Ok(_), Ok(copy)) => copies_checked += u64::from(copy.is_some()),
                _ => violations += 1,
            }
        }
        last = v;
        if v >= stop {
            break;
        }
    }
    println!(
        "report snapshots={snapshots} distinct={distinct} violations={violations} backwards={backwards} last={last} \
         copies={copies_checked}"
    );
}
