//! A compaction publishes its new generation before it syncs the file
//! (phase 4 syncs it, then checkpoints), so what protects acknowledged
//! commits around that window is tested here by crashing and by failing:
//!
//! * `a_checkpoint_names_a_new_generation_only_after_its_name_is_durable`
//!   (traced with `strace`, which `.ci/run` installs): a checkpoint other
//!   than the compaction's own (`Store::checkpoint` here; a long journal's
//!   in production) racing the switch must not make `meta` durably name a
//!   file whose directory entry is not durable yet.
//! * `a_reopen_after_a_failed_compaction_sync_does_not_checkpoint_the_unsynced_generation`
//!   and `acknowledged_commits_survive_a_failed_compaction_sync_a_reopen_and_a_power_loss`:
//!   after phase 4's sync fails, a reopen in the same boot must not take
//!   the generation whose only sync failed from the page cache, sync it
//!   again (which the kernel lets succeed without the lost pages) and
//!   checkpoint it.
//! * `a_writer_aborted_around_the_switch_loses_no_acknowledged_commit`:
//!   process crashes after the switch, before the compaction's checkpoint,
//!   and after a racing checkpoint, each followed by a reopen in the same
//!   boot and after a simulated reboot: every acknowledged commit is there.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{put, sync_options};
use shoal::internals::{self, SyncFault};
use shoal::{Options, Reader, Store};

/// The generation the newest valid `meta` slot names (read from the file).
fn checkpointed_generation(dir: &Path) -> Option<u64> {
    let file = std::fs::File::open(dir.join("meta")).ok()?;
    let mut best: Option<(u64, u64)> = None;
    for slot in 0..2u64 {
        let mut b = [0u8; 64];
        let Ok(n) = file.read_at(&mut b, slot * 512) else { continue };
        if n < 60 || &b[..8] != b"SHOALMT1" {
            continue;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let crc = u32::from_le_bytes(b[56..60].try_into().unwrap());
        if crc != crc32c::crc32c(&b[..56]) {
            continue;
        }
        let (sequence, generation) = (u64_at(16), u64_at(24));
        if best.is_none_or(|(s, _)| sequence > s) {
            best = Some((sequence, generation));
        }
    }
    best.map(|(_, g)| g)
}

/// As after a reboot: the boot id the writer stamped no longer matches
/// (as `shoal-testkit/tests/reboot` does).
fn forget_boot(dir: &Path) {
    let control = std::fs::OpenOptions::new().write(true).open(dir.join("control")).unwrap();
    control.write_all_at(&[0u8; 16], 32).unwrap();
}

// ---------------------------------------------------------------------------
// 1. The directory's fsync and checkpoints that race the compaction.
// ---------------------------------------------------------------------------

const STRACE_CHILD: &str = "REVIEW_STRACE_CHILD_DIR";
const STRACE_ATTEMPTS: u64 = 12;

/// The child's workload: compactions, each raced by a `Store::checkpoint`
/// issued as soon as a reader sees the new generation published. After the
/// checkpoint returns (its `meta` write synced), the child opens a marker
/// file that does not exist, `MARKER-<generation meta names>-<0|1>` (1: the
/// compaction had already passed its directory sync and reached its
/// checkpoint hook), so that the trace shows where the checkpoint ended.
fn strace_child(dir: &Path) {
    let store = Store::open(dir, Options { checkpoint_journal_bytes: 64 << 20, ..sync_options() }).unwrap();
    store.bulk_load((0..20_000).map(|i| (format!("/base/{i:05}"), format!("value {i} {}", "x".repeat(40))))).unwrap();
    let mut reader = Reader::open(dir).unwrap();
    for attempt in 0..STRACE_ATTEMPTS {
        for i in 0..20 {
            put(&store, &format!("/a{attempt}/{i}"), "v").unwrap();
        }
        let before = reader.snapshot().unwrap().generation();
        let hook_fired = Arc::new(AtomicBool::new(false));
        let fired = hook_fired.clone();
        internals::before_next_compaction_checkpoint(&store, move || fired.store(true, Ordering::SeqCst));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let racer = s.spawn(|| {
                let reader = Reader::open(dir).unwrap();
                while reader.snapshot().unwrap().generation() == before {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                store.checkpoint().unwrap();
                let named = checkpointed_generation(dir).unwrap();
                let fired = hook_fired.load(Ordering::SeqCst) as u8;
                let _ = std::fs::File::open(dir.join(format!("MARKER-{named}-{fired}")));
            });
            let report = store.compact().unwrap();
            done.store(true, Ordering::SeqCst);
            racer.join().unwrap();
            assert!(report.to_generation > before);
            reader = Reader::open(dir).unwrap();
        });
    }
    drop(store);
}

/// One traced system call, once it has returned.
struct Call {
    text: String,
}

/// The trace's calls in the order they returned, an unfinished call joined
/// with its resumption.
fn completed_calls(log: &str) -> Vec<Call> {
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut calls = Vec::new();
    for raw in log.lines() {
        let Some((pid, rest)) = raw.split_once(' ') else { continue };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), head.trim_end().to_string());
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            if let Some(head) = pending.remove(pid) {
                calls.push(Call { text: format!("{head}{tail}") });
            }
        } else {
            calls.push(Call { text: rest.to_string() });
        }
    }
    calls
}

/// The generation number in the last `"arena-NNNNNNNNNN"` of `text`.
fn last_arena_name(text: &str) -> Option<u64> {
    let at = text.rfind("\"arena-")?;
    text[at + 7..].split('"').next()?.parse().ok()
}

/// A checkpoint may name a generation only once the directory entry of its
/// file is durable: after its creation (`openat` with `O_CREAT`) or the
/// rename of the spare into it, an `fsync` of the directory must have
/// returned before a `meta` write naming it is synced. Otherwise a power
/// loss can leave `meta` naming `arena-N` in a directory that has no such
/// entry (a fresh file: none; a recycled spare: its old name), and the
/// store refuses to open ("checkpoint names generation N whose file is
/// missing").
///
/// A checkpoint taken by anyone else after the switch (`Store::checkpoint`
/// here; a commit finding the journal over `checkpoint_journal_bytes` in
/// production) does not sync the directory itself, so the compaction must
/// have done so before its switch. The trace (strace) shows the order of
/// the calls.
#[test]
fn a_checkpoint_names_a_new_generation_only_after_its_name_is_durable() {
    if let Some(dir) = std::env::var_os(STRACE_CHILD) {
        strace_child(Path::new(&dir));
        return;
    }
    let usable = std::process::Command::new("strace")
        .args(["-f", "--seccomp-bpf", "-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(usable, "strace is missing or cannot trace here; `.ci/run` installs it (Debian package `strace`)");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("store")).unwrap();
    let dir = tmp.path().join("store").canonicalize().unwrap();
    let log_path = tmp.path().join("trace");
    let output = std::process::Command::new("strace")
        .args(["-f", "--seccomp-bpf", "-y", "-qq", "-e", "trace=openat,rename,renameat,renameat2,fsync,fdatasync"])
        .arg("-o")
        .arg(&log_path)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "a_checkpoint_names_a_new_generation_only_after_its_name_is_durable"])
        .args(["--test-threads=1", "--nocapture"])
        .env(STRACE_CHILD, &dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let dir_fd = format!("<{}>)", dir.display());

    let mut created: Vec<(usize, u64)> = Vec::new();
    let mut dir_syncs: Vec<usize> = Vec::new();
    let mut markers: Vec<(usize, u64, bool)> = Vec::new();
    let calls = completed_calls(&log);
    for (i, call) in calls.iter().enumerate() {
        let t = &call.text;
        let ok = t.rsplit_once(" = ").is_some_and(|(_, r)| r.starts_with(|c: char| c.is_ascii_digit()));
        let names_entry = (t.starts_with("openat(") && t.contains("O_CREAT")) || t.starts_with("rename");
        if names_entry && ok {
            if let Some(g) = last_arena_name(t) {
                created.push((i, g));
            }
        } else if t.starts_with("fsync(") && t.contains(&dir_fd) && ok {
            dir_syncs.push(i);
        } else if t.starts_with("openat(") && t.contains("/MARKER-") {
            let name = t.split("/MARKER-").nth(1).unwrap().split('"').next().unwrap();
            let (g, fired) = name.split_once('-').unwrap();
            markers.push((i, g.parse().unwrap(), fired == "1"));
        }
    }
    assert!(!markers.is_empty(), "no racing checkpoint ran:\n{log}");
    let mut violations = Vec::new();
    for &(at, generation, hook_fired) in &markers {
        let Some(&(made, _)) = created.iter().rev().find(|&&(i, g)| g == generation && i < at) else {
            continue; // named a generation created before the trace's window
        };
        if !dir_syncs.iter().any(|&s| made < s && s < at) {
            let slice: Vec<&str> = calls[made..=at].iter().map(|c| c.text.as_str()).collect();
            violations.push(format!(
                "a checkpoint naming generation {generation} was synced with no fsync of the directory since \
                 arena-{generation:010} was created or renamed (compaction's checkpoint hook reached: {hook_fired}); \
                 the calls from the creation to the checkpoint's end:\n  {}",
                slice.join("\n  ")
            ));
        }
    }
    eprintln!(
        "{} racing checkpoints, {} named a generation before its name was durable",
        markers.len(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

// ---------------------------------------------------------------------------
// 2. A failed phase-4 sync, then a reopen in the same boot.
// ---------------------------------------------------------------------------

/// A store of 200 acknowledged (`sync`) commits whose compaction's phase-4
/// arena sync fails with EIO, after the switch, then is dropped. Returns
/// the generation the checkpoint names and the one published.
fn failed_compaction_sync(dir: &Path) -> (u64, u64) {
    let store = Store::open(dir, sync_options()).unwrap();
    for i in 0..200 {
        put(&store, &format!("/k/{i}"), &format!("v{i}")).unwrap();
    }
    let before = store.stat().unwrap().generation;
    internals::fail_next_syncs(&store, SyncFault::Arena, 1);
    assert!(store.compact().is_err());
    let published = Reader::open(dir).unwrap().snapshot().unwrap().generation();
    assert!(published > before, "the compaction's sync failed before its switch");
    assert_eq!(checkpointed_generation(dir), Some(before));
    (before, published)
}

/// Linux reports a writeback error once: a later `fdatasync` (the
/// reopen's, on a new file description) may succeed although the pages
/// whose writeback failed never reached the disk (the crash argument's own
/// assumption, the reason for poisoning). The store is poisoned, every
/// acknowledged commit is in the journal and the checkpoint names the old
/// generation: the reopen in the same boot recovers from those, and never
/// checkpoints the generation whose only sync failed.
#[test]
fn a_reopen_after_a_failed_compaction_sync_does_not_checkpoint_the_unsynced_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, published) = failed_compaction_sync(dir);
    let store = Store::open(dir, sync_options()).unwrap();
    let chosen = store.stat().unwrap().generation;
    assert_ne!(
        checkpointed_generation(dir),
        Some(published),
        "the reopen (generation {chosen}) checkpointed generation {published}, whose only sync failed: \
         its bytes may not be on disk, and the journal that held the commits was emptied"
    );
}

/// The consequence, with the lost writeback made explicit: after the
/// failed sync and a reopen in the same boot, the pages of the generation
/// whose writeback failed are not on disk (modelled by zeroing that file
/// past its header, where the reopen left it); the machine then loses
/// power (simulated reboot). Every acknowledged (`sync`) commit must still
/// be there: the journal held them all when the sync failed.
#[test]
fn acknowledged_commits_survive_a_failed_compaction_sync_a_reopen_and_a_power_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, published) = failed_compaction_sync(dir);
    // The reopen in the same boot, then a clean close.
    drop(Store::open(dir, sync_options()).unwrap());

    // Power loss: what the failed writeback held never reached the disk.
    let path = dir.join(internals::arena_file_name(published));
    let opened = std::fs::OpenOptions::new().write(true).open(&path);
    if let Ok(file) = opened {
        let len = file.metadata().unwrap().len();
        let zeros = vec![0u8; 1 << 20];
        let mut at = 4096;
        while at < len {
            let n = (len - at).min(zeros.len() as u64);
            file.write_all_at(&zeros[..n as usize], at).unwrap();
            at += n;
        }
    }
    forget_boot(dir);

    let store = match Store::open(dir, sync_options()) {
        Ok(store) => store,
        Err(e) => panic!("after the power loss the store does not open: {e}"),
    };
    for i in 0..200 {
        assert_eq!(
            store.snapshot().get(&format!("/k/{i}")).unwrap(),
            Some(format!("v{i}").as_bytes()),
            "acknowledged commit /k/{i} lost"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Process crashes around the switch (pinning behaviour found right).
// ---------------------------------------------------------------------------

const ABORT_CHILD: &str = "REVIEW_ABORT_CHILD_DIR";
const ABORT_POINT: &str = "REVIEW_ABORT_POINT";

/// The child: `sync` commits on a thread, each acknowledged in `acks`
/// once it returns (`ack <n>` lines, written straight to the file, so a
/// process crash keeps them); the main thread compacts once 300 commits are
/// acknowledged and the process aborts at `point`:
/// `switch` (right after the switch), `checkpoint` (after phase 4's syncs,
/// before the compaction's checkpoint) or `racing` (right after a
/// `Store::checkpoint` that ran after the switch returned).
fn abort_child(dir: &Path, point: &str) {
    let store = Store::open(dir, Options { checkpoint_journal_bytes: 64 << 10, ..sync_options() }).unwrap();
    let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("acks")).unwrap();
    let acked = AtomicU64::new(0);
    let before = Reader::open(dir).unwrap().snapshot().unwrap().generation();
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 1u64.. {
                let mut txn = store.begin();
                txn.put(&format!("/c/{n}"), n.to_string()).unwrap();
                txn.put("/last", n.to_string()).unwrap();
                txn.commit().unwrap();
                acks.write_all(format!("ack {n}\n").as_bytes()).unwrap();
                acked.store(n, Ordering::SeqCst);
            }
        });
        while acked.load(Ordering::SeqCst) < 300 {
            std::thread::sleep(Duration::from_millis(2));
        }
        match point {
            "switch" => internals::abort_in_next_compaction_after_switch(&store),
            "checkpoint" => internals::before_next_compaction_checkpoint(&store, || std::process::abort()),
            "racing" => {
                s.spawn(|| {
                    let reader = Reader::open(dir).unwrap();
                    while reader.snapshot().unwrap().generation() == before {
                        std::hint::spin_loop();
                    }
                    store.checkpoint().unwrap();
                    std::process::abort();
                });
            }
            other => panic!("unknown point {other}"),
        }
        store.compact().unwrap();
        // `racing`: the compaction may end first; the abort follows.
        std::thread::sleep(Duration::from_secs(5));
        std::process::abort();
    });
}

/// Every acknowledged commit survives a writer process that dies right
/// after the switch, before the compaction's checkpoint, or after a
/// checkpoint that raced it, whether the page cache survives (reopen in
/// the same boot) or not (simulated reboot: the control word untrusted, so
/// the old checkpoint, the kept old file and the journal recover).
#[test]
fn a_writer_aborted_around_the_switch_loses_no_acknowledged_commit() {
    if let Some(dir) = std::env::var_os(ABORT_CHILD) {
        abort_child(Path::new(&dir), &std::env::var(ABORT_POINT).unwrap());
        return;
    }
    for point in ["switch", "checkpoint", "racing"] {
        for reboot in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir: PathBuf = tmp.path().to_path_buf();
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "a_writer_aborted_around_the_switch_loses_no_acknowledged_commit"])
                .args(["--test-threads=1"])
                .env(ABORT_CHILD, &dir)
                .env(ABORT_POINT, point)
                .output()
                .unwrap();
            assert!(!output.status.success(), "{point}: the child should abort");
            let acks = std::fs::read_to_string(dir.join("acks")).unwrap();
            let acked: u64 =
                acks.lines().filter_map(|l| l.strip_prefix("ack ")?.parse().ok()).max().expect("acknowledged commits");
            assert!(acked >= 300, "{point}: {acked}");
            let generations = std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("arena-"))
                .count();
            assert!(generations >= 2, "{point}: the crash should leave the old and the new generation");
            if reboot {
                forget_boot(&dir);
            }
            let store = Store::open(&dir, sync_options()).unwrap();
            let snap = store.snapshot();
            let last: u64 = std::str::from_utf8(snap.get("/last").unwrap().unwrap()).unwrap().parse().unwrap();
            assert!(last >= acked, "{point}, reboot {reboot}: /last {last} < acknowledged {acked}");
            for n in 1..=acked {
                assert_eq!(
                    snap.get(&format!("/c/{n}")).unwrap(),
                    Some(n.to_string().as_bytes()),
                    "{point}, reboot {reboot}: acknowledged commit {n} lost"
                );
            }
            drop(snap);
            store.verify().unwrap();
            eprintln!(
                "{point}, reboot {reboot}: {acked} acknowledged, all there (generation {})",
                store.stat().unwrap().generation
            );
        }
    }
}
