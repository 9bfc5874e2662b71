//! Runs every parser of bytes that come from a file or a handle over many
//! random and mutated inputs (see `shoal::fuzz` and RELIABILITY.md).
//!
//! ```text
//! cargo run --release -p shoal --example fuzz_parsers -- [--inputs N] [--seed S] [--max-ms T]
//!     [--only NAME] [--arena M] [--replay NAME:SEED]
//! ```
//!
//! Inputs go round-robin over the entry points; input `i` is generated
//! from a seed drawn from a PRNG seeded with `--seed`, so a run is
//! reproducible and any input can be replayed alone (`--replay`). Each
//! parse runs under `catch_unwind` and is timed; a watchdog ends the run if
//! one parse takes more than a minute (a hang). `--arena M` also damages a
//! real store's arena file M times and reads it with a fresh `Reader` each
//! time. Exits non-zero on any panic, any parse over `--max-ms`, or any
//! damaged arena read as other data.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use shoal::fuzz::{Gen, Target};

#[path = "fuzz_parsers/arena_mode.rs"]
mod arena_mode;

/// A parse running this long is taken as a hang: the run stops and names it.
const HANG: Duration = Duration::from_secs(60);

struct Args {
    inputs: u64,
    seed: u64,
    max_ms: u64,
    only: Option<Target>,
    arena: u64,
    replay: Option<(Target, u64)>,
}

fn target_named(name: &str) -> Target {
    Target::ALL.into_iter().find(|t| t.name() == name).unwrap_or_else(|| {
        let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
        fail(&format!("no parser {name:?}; there are: {}", names.join(", ")))
    })
}

fn fail(message: &str) -> ! {
    eprintln!("fuzz_parsers: {message}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args { inputs: 10_000_000, seed: 1, max_ms: 100, only: None, arena: 0, replay: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let number =
            |v: String| v.replace('_', "").parse::<u64>().unwrap_or_else(|_| fail(&format!("{v:?}: not a number")));
        match flag.as_str() {
            "--inputs" => args.inputs = number(value()),
            "--seed" => args.seed = number(value()),
            "--max-ms" => args.max_ms = number(value()),
            "--arena" => args.arena = number(value()),
            "--only" => args.only = Some(target_named(&value())),
            "--replay" => {
                let v = value();
                let (name, seed) = v.split_once(':').unwrap_or_else(|| fail("--replay takes NAME:SEED"));
                args.replay = Some((target_named(name), number(seed.to_string())));
            }
            _ => fail(&format!("unknown argument {flag:?}")),
        }
    }
    args
}

#[derive(Default)]
struct Tally {
    inputs: u64,
    bytes: u64,
    panics: u64,
    slow: u64,
    total: Duration,
    slowest: (Duration, u64),
}

fn main() {
    let args = parse_args();
    if let Some((target, seed)) = args.replay {
        let input = target.input(&mut Gen::new(seed));
        println!("replaying {}:{seed}: {} bytes, root {}", target.name(), input.bytes.len(), input.root);
        target.run(&input);
        println!("no panic");
        return;
    }
    // Panics are counted and reported with their input, not printed as they happen.
    let last_panic = Arc::new(Mutex::new(String::new()));
    let hook_panic = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload.downcast_ref::<&str>().copied().or(payload.downcast_ref::<String>().map(String::as_str));
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        *hook_panic.lock().unwrap_or_else(|e| e.into_inner()) = format!("{} at {at}", message.unwrap_or("?"));
    }));
    let started_ns = Arc::new(AtomicU64::new(0));
    let current = Arc::new(Mutex::new(String::new()));
    let clock = Instant::now();
    watchdog(clock, started_ns.clone(), current.clone());

    let targets: Vec<Target> = args.only.map_or(Target::ALL.to_vec(), |t| vec![t]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let max = Duration::from_millis(args.max_ms);
    let run_start = Instant::now();
    for i in 0..args.inputs {
        let target = targets[(i % targets.len() as u64) as usize];
        let seed: u64 = rng.gen();
        let input = target.input(&mut Gen::new(seed));
        *current.lock().unwrap_or_else(|e| e.into_inner()) = format!("{}:{seed}", target.name());
        let start = Instant::now();
        started_ns.store(start.duration_since(clock).as_nanos() as u64 + 1, Ordering::Release);
        let outcome = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        let took = start.elapsed();
        started_ns.store(0, Ordering::Release);
        let tally = tallies.entry(target.name()).or_default();
        tally.inputs += 1;
        tally.bytes += input.bytes.len() as u64;
        tally.total += took;
        if took > tally.slowest.0 {
            tally.slowest = (took, seed);
        }
        if took > max {
            tally.slow += 1;
            println!("SLOW {}:{seed}: {took:?}", target.name());
        }
        if outcome.is_err() {
            tally.panics += 1;
            let message = last_panic.lock().unwrap_or_else(|e| e.into_inner()).clone();
            println!("PANIC {}:{seed}: {message} (replay: --replay {}:{seed})", target.name(), target.name());
        }
        if (i + 1) % 1_000_000 == 0 {
            println!("{} inputs in {:.1} s", i + 1, run_start.elapsed().as_secs_f64());
        }
    }
    let elapsed = run_start.elapsed();
    let (mut panics, mut slow) = (0, 0);
    if args.inputs > 0 {
        println!(
            "\nseed {}, {} inputs in {:.1} s, --max-ms {}",
            args.seed,
            args.inputs,
            elapsed.as_secs_f64(),
            args.max_ms
        );
        println!(
            "{:<14} {:>10} {:>10} {:>8} {:>8} {:>10} {:>12}",
            "parser", "inputs", "MB", "panics", "slow", "mean µs", "slowest µs"
        );
        for (name, t) in &tallies {
            println!(
                "{name:<14} {:>10} {:>10.1} {:>8} {:>8} {:>10.2} {:>12.0}",
                t.inputs,
                t.bytes as f64 / 1e6,
                t.panics,
                t.slow,
                t.total.as_secs_f64() * 1e6 / t.inputs.max(1) as f64,
                t.slowest.0.as_secs_f64() * 1e6,
            );
            panics += t.panics;
            slow += t.slow;
        }
        if let Some((name, t)) = tallies.iter().max_by_key(|(_, t)| t.slowest.0) {
            println!("slowest parse: {name}:{} in {:?}", t.slowest.1, t.slowest.0);
        }
        println!("total: {panics} panics, {slow} parses over {} ms", args.max_ms);
    }
    let mut wrong = 0;
    if args.arena > 0 {
        wrong = arena_mode::run(args.arena, args.seed);
    }
    if panics + slow + wrong > 0 {
        std::process::exit(1);
    }
}

/// Ends the process, naming the input, if one parse runs longer than [`HANG`].
fn watchdog(clock: Instant, started_ns: Arc<AtomicU64>, current: Arc<Mutex<String>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let started = started_ns.load(Ordering::Acquire);
        if started != 0 && clock.elapsed().as_nanos() as u64 > started + HANG.as_nanos() as u64 {
            let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("HANG: {input} has run for over {HANG:?} (replay: --replay {input})");
            std::process::exit(3);
        }
    });
}
