//! A reader that sleeps until each new version:
//! `waiter STORE STOP_VERSION [SPIN_MICROS]` (spin before sleeping; default
//! the library's).
//!
//! Prints `ready`, then waits (futex, no polling) for versions newer than
//! the last it saw until it sees `STOP_VERSION`; every wait has a 10 s
//! timeout. Prints `report wakes=N timeouts=N backwards=N last=V`.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reader = shoal::Reader::open(&args[1]).expect("open reader");
    let stop: u64 = args[2].parse().expect("stop version");
    if let Some(spin) = args.get(3) {
        reader.set_wait_spin(Duration::from_micros(spin.parse().expect("spin micros")));
    }
    let mut last = reader.snapshot().expect("snapshot").version();
    println!("ready version={last}");
    let (mut wakes, mut timeouts, mut backwards) = (0u64, 0u64, 0u64);
    while last < stop && timeouts < 3 {
        match reader.wait_for_version(last, Duration::from_secs(10)).expect("wait") {
            Some(snap) => {
                if snap.version() <= last {
                    backwards += 1;
                }
                last = snap.version();
                wakes += 1;
            }
            None => timeouts += 1,
        }
    }
    println!("report wakes={wakes} timeouts={timeouts} backwards={backwards} last={last}");
}
