//! A writer process in durability `sync` is SIGKILLed at random points of a
//! commit stream, over and over. After each kill the store reopens with every
//! acknowledged commit present, as one consistent version. Some rounds also
//! remove the control file, as a reboot would make it untrustworthy, so that
//! recovery must come from the checkpoint and the journal alone.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use shoal::{Options, Store};
use shoal_testkit::ChildProcess;

const WRITER: &str = env!("CARGO_BIN_EXE_writer-child");

fn expected_value(k: u64) -> Vec<u8> {
    if k.is_multiple_of(7) {
        vec![b'x'; 600]
    } else {
        k.to_string().into_bytes()
    }
}

/// Checks the invariants of a reopened store; returns `/last`.
fn check_consistent(store: &Store, acked: Option<u64>) -> Option<u64> {
    let last = check_snapshot(&store.snapshot(), acked);
    store.verify().unwrap();
    last
}

fn check_snapshot(snap: &shoal::Snapshot, acked: Option<u64>) -> Option<u64> {
    let last = snap.get("/last").unwrap().map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
    if let Some(acked) = acked {
        let last = last.expect("acknowledged commits but no /last");
        assert!(last >= acked, "acknowledged commit {acked} lost: store is at {last}");
    }
    let last = last?;
    for k in 0..=last {
        let deleted = k % 50 == 25 && k + 25 <= last;
        let got = snap.get(&format!("/c/{k}")).unwrap();
        if deleted {
            assert_eq!(got, None, "/c/{k} should have been deleted by commit {}", k + 25);
        } else {
            assert_eq!(got, Some(expected_value(k).as_slice()), "/c/{k} at last={last}");
        }
    }
    assert_eq!(snap.get(&format!("/c/{}", last + 1)).unwrap(), None, "a commit beyond /last is visible");
    // Copies by reference, replayed from the journal like any write.
    let copies: Vec<u64> = (10..=last).filter(|k| k % 7 == 3).collect();
    for &k in &copies {
        assert_eq!(snap.get(&format!("/copy/{k}")).unwrap(), Some(expected_value(k - 3).as_slice()), "/copy/{k}");
    }
    assert_eq!(snap.list("/copy").unwrap().len(), copies.len());
    // Subtree copies by reference: /c as of the version before each.
    let snaps: Vec<u64> = (16..=last).filter(|k| k % 11 == 5 && k + 33 > last).collect();
    let mut names: Vec<String> = snap.list("/snap").unwrap();
    names.sort_by_key(|n| n.parse::<u64>().unwrap());
    assert_eq!(names, snaps.iter().map(u64::to_string).collect::<Vec<_>>(), "snapshot copies at last={last}");
    for &k in snaps.iter().rev().take(2) {
        let mut expected: Vec<u64> = (0..k).filter(|j| !(j % 50 == 25 && j + 25 < k)).collect();
        expected.sort_by_key(u64::to_string);
        let listed = snap.list(&format!("/snap/{k}")).unwrap();
        assert_eq!(listed, expected.iter().map(u64::to_string).collect::<Vec<_>>(), "/snap/{k}");
        for &j in expected.iter().step_by(7) {
            assert_eq!(snap.get(&format!("/snap/{k}/{j}")).unwrap(), Some(expected_value(j).as_slice()));
        }
    }
    let children = snap.list("/c").unwrap().len() as u64;
    let deleted = (0..=last).filter(|k| k % 50 == 25 && k + 25 <= last).count() as u64;
    assert_eq!(children, last + 1 - deleted);
    snap.verify().unwrap();
    Some(last)
}

#[test]
fn sigkilled_writer_never_loses_acknowledged_commits() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut acked_max: Option<u64> = None;
    const KILLS: usize = 60;
    for round in 0..KILLS {
        let mut writer = ChildProcess::spawn(WRITER, &[&dir_arg]);
        writer.wait_for("ready");
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..40_000)));
        let output = writer.kill();
        for line in &output {
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()) {
                acked_max = Some(acked_max.map_or(n, |m| m.max(n)));
            }
        }
        if round % 4 == 3 {
            // As after a reboot: the published pointer cannot be trusted.
            std::fs::remove_file(dir.path().join("control")).unwrap();
        }
        let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
        check_consistent(&store, acked_max);
    }
    assert!(acked_max.unwrap_or(0) > 100, "the writer made too little progress to test much: {acked_max:?}");
}

/// A compaction publishes the new generation before the checkpoint that
/// names it (the old checkpoint, the old file and the journal cover the
/// gap). A writer that dies right there loses nothing, whether the
/// published pointer survives (a process crash) or not (a reboot), nor
/// after a later reboot once the old generation's file has been recycled.
#[test]
fn a_writer_dying_between_compaction_switch_and_checkpoint_loses_nothing() {
    for reboot in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap().to_string();
        let mut acked = None;
        for round in 0..3u64 {
            // A few commits per restart: fewer than an automatic checkpoint needs.
            let at = 150 + round * 5;
            let writer = ChildProcess::spawn(WRITER, &[&dir_arg, "--abort-in-compaction-at", &at.to_string()]);
            let (output, exited_cleanly) = writer.finish();
            assert!(!exited_cleanly, "the writer should have aborted");
            assert!(output.iter().any(|l| l == &format!("ack {at}")), "round {round}: {output:?}");
            acked = Some(at);
            let generations = std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("arena-"))
                .count();
            assert!(generations >= 2, "the abort should leave the old and the new generation");
            if reboot {
                std::fs::remove_file(dir.path().join("control")).unwrap();
                let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
                assert_eq!(check_consistent(&store, acked), acked, "reboot, round {round}");
            } else {
                // A reader, not a writer: closing a writer would checkpoint,
                // and the next writer must cope without that.
                let snap = shoal::Reader::open(dir.path()).unwrap().snapshot().unwrap();
                assert_eq!(check_snapshot(&snap, acked), acked, "round {round}");
            }
        }
        // Whatever the rounds recovered from, the checkpoint must name files
        // that still hold it (a freed generation is recycled or deleted).
        std::fs::remove_file(dir.path().join("control")).unwrap();
        let store = Store::open(dir.path(), Options { create: false, ..Options::default() }).unwrap();
        assert_eq!(check_consistent(&store, acked), acked, "reboot={reboot} at the end");
    }
}

const HOLDER: &str = env!("CARGO_BIN_EXE_snapshot-holder");

#[test]
fn a_reader_snapshot_survives_writer_crashes_restarts_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    // Some history first.
    let mut writer = ChildProcess::spawn(WRITER, &[&dir_arg]);
    writer.wait_for("ack 300");
    writer.kill();

    let mut holder = ChildProcess::spawn(HOLDER, &[&dir_arg]);
    let held = holder.wait_for("held");
    let held_version = shoal_testkit::field(&held, "version").unwrap();
    for round in 0..5 {
        let mut writer = ChildProcess::spawn(WRITER, &[&dir_arg]);
        writer.wait_for(&format!("ack {}", 400 + round * 100));
        writer.kill();
        // Restart as a writer in this process, move to a new generation, close.
        let store = Store::open_existing(dir.path()).unwrap();
        store.compact().unwrap();
        drop(store);
        holder.send("check");
        assert_eq!(holder.next_line().as_deref(), Some("same"), "round {round}: the held snapshot changed");
        let fresh = holder.next_line().unwrap();
        assert!(shoal_testkit::field(&fresh, "version").unwrap() > held_version, "{fresh}");
    }
    let (_, ok) = holder.finish();
    assert!(ok);
}
