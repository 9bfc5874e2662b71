//! One-key commits on 1,000,000 keys with automatic compaction on, as in
//! the bench's row 3a but in one process and without the anchors: a loop
//! to run under `perf record`. `N` (environment) commits, default 300,000.
//!
//! `cargo run --release -p shoal-bench --example commit_profile`

fn main() {
    let dir = tempfile::tempdir().expect("dir");
    let options = shoal::Options { durability: shoal::Durability::None, ..Default::default() };
    let store = shoal::Store::open(dir.path(), options).expect("open");
    let mut keys: Vec<String> = (0..1_000_000).map(|i| format!("/local/domain/{}/f{}", i / 4, i % 4)).collect();
    keys.sort();
    let value = [7u8; 100];
    store.bulk_load(keys.iter().map(|k| (k.as_str(), &value[..]))).expect("bulk load");
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(300_000);
    let start = std::time::Instant::now();
    for i in 0..n {
        let mut txn = store.begin();
        txn.put(&keys[(i * 7919) % keys.len()], value).expect("put");
        txn.commit().expect("commit");
    }
    let e = start.elapsed();
    println!(
        "{n} commits in {:.2} s: {:.1} k/s, {:.2} µs each",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64() / 1e3,
        e.as_secs_f64() * 1e6 / n as f64
    );
}
