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
    let snap = store.snapshot();
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
    let children = snap.list("/c").unwrap().len() as u64;
    let deleted = (0..=last).filter(|k| k % 50 == 25 && k + 25 <= last).count() as u64;
    assert_eq!(children, last + 1 - deleted);
    store.verify().unwrap();
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
