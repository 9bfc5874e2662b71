//! The floor under bench row 5: how long this machine takes to wake a
//! process asleep on a futex in shared memory, with no shoal involved.
//!
//! A child process sleeps on a shared word; the parent stamps the time,
//! bumps the word and wakes it, 3,000 times, 1 ms apart (so the child is
//! always asleep). Prints p50/p99/p99.9 of stamp → child running again.
//!
//! `cargo run --release -p shoal-bench --example futex_floor`

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const SAMPLES: usize = 3000;

#[repr(C)]
struct Shared {
    seq: AtomicU32,
    stamp: AtomicU64,
    latency_ns: [AtomicU64; SAMPLES],
}

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() {
    let size = std::mem::size_of::<Shared>();
    // SAFETY: a fresh shared anonymous mapping, zero-filled, which is a valid
    // `Shared` (all atomics); it lives until both processes exit.
    let shared: &Shared = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        &*p.cast::<Shared>()
    };
    // SAFETY: no other threads exist yet; the child only touches the shared
    // mapping and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut seen = 0u32;
        for slot in &shared.latency_ns {
            while shared.seq.load(Ordering::Acquire) == seen {
                let _ = rustix::thread::futex::wait(&shared.seq, rustix::thread::futex::Flags::empty(), seen, None);
            }
            let woke = now_ns();
            seen = shared.seq.load(Ordering::Acquire);
            slot.store(woke.saturating_sub(shared.stamp.load(Ordering::Acquire)), Ordering::Relaxed);
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    for _ in 0..SAMPLES {
        std::thread::sleep(std::time::Duration::from_millis(1));
        shared.stamp.store(now_ns(), Ordering::Release);
        shared.seq.fetch_add(1, Ordering::AcqRel);
        let _ = rustix::thread::futex::wake(&shared.seq, rustix::thread::futex::Flags::empty(), 1);
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut us: Vec<f64> = shared.latency_ns.iter().map(|l| l.load(Ordering::Relaxed) as f64 / 1e3).collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    println!(
        "futex wake of a sleeping process, {SAMPLES} wakes 1 ms apart: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        at(0.50),
        at(0.99),
        at(0.999)
    );
}
