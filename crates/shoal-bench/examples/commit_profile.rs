//! One-key commits on 1,000,000 keys with automatic compaction on, as in
//! the bench's row 3a but in one process and without the anchors: a loop
//! to run under `perf record`. Environment: `N` commits (default 300,000)
//! on `KEYS` keys (default 1,000,000); `COMPACT=0` turns automatic
//! compaction off (fewer other threads' effects on the timing).
//!
//! `cargo run --release -p shoal-bench --example commit_profile`
//!
//! Instructions per commit, repeatable whatever else the machine does
//! (rustix's libc backend, because valgrind trips over its raw auxv reads):
//!
//! ```sh
//! RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=target/cg cargo build --release -p shoal-bench --example commit_profile
//! N=10000 KEYS=200000 valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='shoal::txn::Transaction::commit' target/cg/release/examples/commit_profile
//! ```

fn main() {
    let dir = tempfile::tempdir().expect("dir");
    // A 4 GiB reservation (not the default 64 GiB), so that it also runs under valgrind.
    let options = shoal::Options {
        durability: shoal::Durability::None,
        map_reserve_bytes: 4 << 30,
        auto_compact: std::env::var("COMPACT").map_or(true, |v| v != "0"),
        compact_factor: std::env::var("FACTOR").ok().and_then(|s| s.parse().ok()).unwrap_or(2),
        ..Default::default()
    };
    let store = shoal::Store::create(dir.path(), options).expect("create");
    let count: usize = std::env::var("KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let mut keys: Vec<String> = (0..count).map(|i| format!("/local/domain/{}/f{}", i / 4, i % 4)).collect();
    keys.sort();
    let value = [7u8; 100];
    store.bulk_load(keys.iter().map(|k| (k.as_str(), &value[..]))).expect("bulk load");
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(300_000);
    let start = std::time::Instant::now();
    let cpu_start = thread_cpu();
    // Commits that took over 100 µs (a switch, back-pressure, a stall), and their time.
    let (mut slow, mut slow_time) = (0usize, std::time::Duration::ZERO);
    for i in 0..n {
        let t = std::time::Instant::now();
        let mut txn = store.begin();
        txn.put(&keys[(i * 7919) % keys.len()], value).expect("put");
        txn.commit().expect("commit");
        let took = t.elapsed();
        if took > std::time::Duration::from_micros(100) {
            slow += 1;
            slow_time += took;
        }
    }
    let e = start.elapsed();
    let cpu = thread_cpu() - cpu_start;
    println!(
        "{n} commits in {:.2} s: {:.1} k/s, {:.2} µs each, {:.2} µs of them on the committing thread's CPU",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64() / 1e3,
        e.as_secs_f64() * 1e6 / n as f64,
        cpu.as_secs_f64() * 1e6 / n as f64
    );
    println!("{slow} commits over 100 µs, {:.1} ms in all", slow_time.as_secs_f64() * 1e3);
}

/// CPU time of the calling thread (user and system).
fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
