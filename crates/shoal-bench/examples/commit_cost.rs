//! What a one-key commit and a compaction cost on 1,000,000 keys, in
//! bytes and time, outside the bench's comparisons.
//!
//! `cargo run --release -p shoal-bench --example commit_cost`

use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A 4 GiB reservation (not the default 64 GiB), so that it also runs under valgrind.
    let options = shoal::Options {
        durability: shoal::Durability::None,
        auto_compact: false,
        map_reserve_bytes: 4 << 30,
        ..Default::default()
    };
    let store = shoal::Store::create(dir.path(), options).expect("create");
    let keys: Vec<String> = {
        let mut k: Vec<String> = (0..1_000_000).map(|i| format!("/local/domain/{}/f{}", i / 4, i % 4)).collect();
        k.sort();
        k
    };
    let value = [7u8; 100];
    store.bulk_load(keys.iter().map(|k| (k.as_str(), &value[..]))).expect("bulk load");
    let before = store.stat().expect("stat");
    const COMMITS: usize = 20_000;
    let start = Instant::now();
    for i in 0..COMMITS {
        let mut txn = store.begin();
        txn.put(&keys[(i * 7919) % keys.len()], value).expect("put");
        txn.commit().expect("commit");
    }
    let elapsed = start.elapsed();
    let after = store.stat().expect("stat");
    println!(
        "{COMMITS} one-key commits: {:.0} bytes appended per commit, {:.1} µs each (no compaction); live data {:.1} MiB",
        (after.arena_bytes - before.arena_bytes) as f64 / COMMITS as f64,
        elapsed.as_secs_f64() * 1e6 / COMMITS as f64,
        before.live_bytes as f64 / (1 << 20) as f64
    );
    for _ in 0..3 {
        let start = Instant::now();
        let report = store.compact().expect("compact");
        println!(
            "compaction {} -> {}: {:.1} MiB -> {:.1} MiB in {:.0} ms",
            report.from_generation,
            report.to_generation,
            report.bytes_before as f64 / (1 << 20) as f64,
            report.bytes_after as f64 / (1 << 20) as f64,
            start.elapsed().as_secs_f64() * 1e3
        );
        for i in 0..COMMITS {
            let mut txn = store.begin();
            txn.put(&keys[(i * 104_729) % keys.len()], value).expect("put");
            txn.commit().expect("commit");
        }
    }
}
