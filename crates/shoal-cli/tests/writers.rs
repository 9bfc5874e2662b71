//! The writer lock, process against process: reading commands never take
//! it, writing commands wait for it (`--wait`, `--no-wait`, exit code 75),
//! `init` refuses an existing store and `config` changes its settings.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{describe, fails, ok, run, shoal, TestStore, EXIT_BUSY};

/// Every file of the store but the reader table (where any reader, this
/// one too, claims a slot): name, length, modification time and bytes.
fn files_of(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime, Vec<u8>)> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name == "readers" {
            continue;
        }
        let meta = entry.metadata().unwrap();
        files.insert(name, (meta.len(), meta.modified().unwrap(), std::fs::read(entry.path()).unwrap()));
    }
    files
}

/// Runs `shoal stat` over and over in other processes until stopped;
/// returns how many ran, and panics if one failed.
fn stat_loop(store: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            let out = run(&["stat", &store]);
            assert!(out.status.success(), "{}", describe(&["stat"], &out));
            assert!(String::from_utf8_lossy(&out.stdout).contains("live bytes:"));
            runs += 1;
        }
        runs
    })
}

fn spawn_quiet(args: &[&str]) -> Child {
    shoal().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn stat_takes_no_lock_and_writes_nothing() {
    let s = TestStore::new();
    s.put("/a", "1");
    let before = files_of(&s.dir);
    let out = ok(&["stat", s.path()]);
    assert!(out.contains("writer:             none running\n"), "{out}");
    assert!(out.contains("live bytes:"), "{out}");
    assert_eq!(files_of(&s.dir), before, "stat changed a file of the store");

    // Puts that do not wait at all, one after another, never find the lock
    // taken while another process runs stat in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = stat_loop(s.path().to_string(), stop.clone());
    for i in 0..40 {
        let out = run(&["put", s.path(), &format!("/seq/{i}"), "v", "--no-wait"]);
        assert!(out.status.success(), "put {i} while stat loops: {}", describe(&[], &out));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(stats.join().unwrap() > 0);
}

#[test]
fn forty_concurrent_puts_succeed_while_stat_loops() {
    let s = TestStore::new();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = stat_loop(s.path().to_string(), stop.clone());
    let puts: Vec<Child> = (0..40)
        .map(|i| spawn_quiet(&["put", s.path(), &format!("/k/{i}"), &format!("v{i}"), "--wait", "60"]))
        .collect();
    let outs: Vec<Output> = puts.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let stat_runs = stats.join().unwrap();
    for (i, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "put {i}: {}", describe(&[], out));
    }
    assert!(stat_runs > 0);
    assert_eq!(ok(&["ls", s.path(), "/k"]).lines().count(), 40);
}

#[test]
fn twenty_concurrent_puts_wait_for_each_other_by_default() {
    let s = TestStore::new();
    let puts: Vec<Child> =
        (0..20).map(|i| spawn_quiet(&["put", s.path(), &format!("/k/{i}"), &format!("v{i}")])).collect();
    let mut versions: Vec<u64> = puts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "put {i}: {}", describe(&[], &out));
            String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<u64>>(), "each put made its own version");
    for i in 0..20 {
        assert_eq!(s.get(&format!("/k/{i}")), format!("v{i}"));
    }
}

/// Runs `args` and returns how it ended and how long it took.
fn timed(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = run(args);
    (out, start.elapsed())
}

fn assert_busy(out: &Output, holder: u32) {
    assert_eq!(out.status.code(), Some(EXIT_BUSY), "{}", describe(&[], out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("shoal: "), "{err}");
    assert!(err.contains(&format!("locked by another writer (pid {holder})")), "{err}");
}

#[test]
fn a_busy_store_ends_writers_with_exit_code_75_after_their_wait() {
    let s = TestStore::new();
    let p = s.path();
    let me = std::process::id();
    let store = shoal::Store::open_existing(&s.dir).unwrap();

    let (out, took) = timed(&["put", p, "/a", "1", "--no-wait"]);
    assert_busy(&out, me);
    assert!(took < Duration::from_secs(2), "--no-wait took {took:?}");
    // --wait 0 is the same as --no-wait.
    let (out, took) = timed(&["put", p, "/a", "1", "--wait", "0"]);
    assert_busy(&out, me);
    assert!(took < Duration::from_secs(2), "--wait 0 took {took:?}");

    let (out, took) = timed(&["put", p, "/a", "1", "--wait", "0.3"]);
    assert_busy(&out, me);
    assert!(String::from_utf8_lossy(&out.stderr).contains("after waiting 0.3 s"));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "--wait 0.3 took {took:?}");

    // Every writing command waits, and ends the same way.
    let input = s.dir.parent().unwrap().join("in.jsonl");
    std::fs::write(&input, "{\"path\": \"/i\", \"value\": \"1\"}\n").unwrap();
    for args in [
        vec!["rm", p, "/a", "--no-wait"],
        vec!["cp", p, "/a", "/b", "--no-wait"],
        vec!["import", p, input.to_str().unwrap(), "--no-wait"],
        vec!["config", p, "--retain", "3", "--no-wait"],
    ] {
        assert_busy(&run(&args), me);
    }
    // Printing the settings only reads them: no lock, so not busy.
    let out = run(&["config", p, "--no-wait"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("retain"), "{out:?}");
    drop(store);
    assert_eq!(s.put("/a", "1"), 1, "nothing was written while the store was busy");
}

#[test]
fn writers_wait_for_a_lock_released_within_their_wait() {
    let s = TestStore::new();
    let p = s.path();
    s.put("/a", "1");
    s.put("/gone", "soon");
    let input = s.dir.parent().unwrap().join("in.jsonl");
    std::fs::write(&input, "{\"path\": \"/i\", \"value\": \"imported\"}\n").unwrap();
    let store = shoal::Store::open_existing(&s.dir).unwrap();
    let held = Duration::from_millis(800);
    let release = std::thread::spawn(move || {
        std::thread::sleep(held);
        drop(store);
    });
    let start = Instant::now();
    // Below the time the lock is held: gives up.
    let short = spawn_quiet(&["put", p, "/short", "x", "--wait", "0.2"]);
    // Above it: each waits, then succeeds.
    let waiting: Vec<Child> = [
        vec!["put", p, "/b", "2", "--wait", "30"],
        vec!["cp", p, "/a", "/c", "--wait", "30"],
        vec!["rm", p, "/gone", "--wait", "30"],
        vec!["import", p, input.to_str().unwrap(), "--wait", "30"],
        vec!["config", p, "--retain", "4", "--wait", "30"],
    ]
    .iter()
    .map(|args| spawn_quiet(args))
    .collect();
    let short = short.wait_with_output().unwrap();
    assert_busy(&short, std::process::id());
    for child in waiting {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&[], &out));
    }
    assert!(start.elapsed() >= held, "the writers cannot have finished before the lock was released");
    release.join().unwrap();
    assert_eq!(s.get("/b"), "2");
    assert_eq!(s.get("/c"), "1");
    assert_eq!(s.get("/i"), "imported");
    assert!(ok(&["config", p]).contains("retain                   4\n"));
    assert!(fails(&["get", p, "/gone"]).contains("no node"));
}

#[test]
fn wait_limits_and_hostile_values() {
    let s = TestStore::new();
    let p = s.path();
    // The largest wait is accepted (and, with the store free, not waited).
    let (out, took) = timed(&["put", p, "/a", "1", "--wait", "86400"]);
    assert!(out.status.success(), "{}", describe(&[], &out));
    assert!(took < Duration::from_secs(10));
    for bad in ["86400.001", "-1", "NaN", "inf", "1e400", "soon", ""] {
        let out = run(&["put", p, "/a", "1", &format!("--wait={bad}")]);
        assert_eq!(out.status.code(), Some(2), "--wait {bad:?}: {}", describe(&[], &out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"), "{}", describe(&[], &out));
    }
    let out = run(&["put", p, "/a", "1", "--wait", "1", "--no-wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
    assert_eq!(s.get("/a"), "1");
}

#[test]
fn init_refuses_an_existing_store_and_keeps_its_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let p = dir.to_str().unwrap();
    ok(&["init", p, "--durability", "none", "--retain", "2"]);
    ok(&["put", p, "/a", "1"]);
    let settings = ok(&["config", p]);
    let err = fails(&["init", p, "--durability", "sync", "--retain", "9", "--max-value-bytes", "4"]);
    assert!(err.contains("a shoal store already exists at"), "{err}");
    assert!(err.contains("shoal config"), "{err}");
    assert_eq!(ok(&["config", p]), settings, "a refused init changed nothing");
    assert_eq!(ok(&["get", p, "/a"]), "1");

    // Refused as well while the store's writer runs.
    let store = shoal::Store::open_existing(&dir).unwrap();
    let err = fails(&["init", p]);
    assert!(err.contains("already exists"), "{err}");
    drop(store);
}

#[test]
fn config_prints_and_changes_only_the_settings_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let p = dir.to_str().unwrap();
    ok(&["init", p, "--durability", "none", "--retain", "2", "--tier", "1h:1d"]);
    let shown = ok(&["config", p]);
    assert!(shown.starts_with("durability               none\nretain                   2\n"), "{shown}");
    assert!(shown.contains("tiers                    1h:1d\n"), "{shown}");
    assert!(shown.contains("max-value-bytes          1048576\n"), "{shown}");

    assert_eq!(ok(&["config", p, "--retain", "5"]), "retain: 2 → 5\n");
    let after = ok(&["config", p]);
    assert_eq!(after, shown.replace("retain                   2\n", "retain                   5\n"));

    let out =
        ok(&["config", p, "--durability", "sync", "--max-value-bytes", "4", "--tier", "1m:1h", "--tier", "1h:1d"]);
    assert_eq!(out, "durability: none → sync\ntiers: 1h:1d → 1m:1h 1h:1d\nmax-value-bytes: 1048576 → 4\n");
    let err = fails(&["put", p, "/big", "12345"]);
    assert!(err.contains("limit is 4 bytes"), "{err}");
    ok(&["put", p, "/small", "1234"]);
    // The new durability holds: a journal is kept now.
    assert!(dir.join("journal").exists());

    assert_eq!(ok(&["config", p, "--no-tiers"]), "tiers: 1m:1h 1h:1d → none\n");
    assert_eq!(ok(&["config", p, "--retain", "5"]), "nothing changed: the store already has these settings\n");

    // Invalid settings are refused and change nothing.
    let before = ok(&["config", p]);
    let err = fails(&["config", p, "--retain", "0"]);
    assert!(err.contains("retain_versions"), "{err}");
    let err = fails(&["config", p, "--max-value-bytes", &((1u64 << 30) + 1).to_string()]);
    assert!(err.contains("max_value_bytes"), "{err}");
    assert_eq!(ok(&["config", p]), before);
    let usage = run(&["config", p, "--tier", "1h:1d", "--no-tiers"]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&[], &usage));

    let missing = tmp.path().join("missing");
    assert!(fails(&["config", missing.to_str().unwrap()]).contains("no shoal store"));
    assert!(!missing.exists(), "config must not create a store");
}
