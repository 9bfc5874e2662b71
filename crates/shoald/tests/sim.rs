//! `shoald-sim` end to end: guests set up and introduced as a toolstack
//! does, each driving its ring concurrently, every read and every watch
//! event checked, then all released (their homes gone).

use std::process::Command;

#[test]
fn shoald_sim_drives_many_guests_through_their_rings() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoald-sim"))
        .args(["--domains", "500", "--nodes", "4", "--shoald", env!("CARGO_BIN_EXE_shoald")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shoald-sim failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("every guest read back what it wrote and heard every event, its own and @releaseDomain: ok"),
        "{stdout}"
    );
    // 500 guests × (a watch, 4 writes, 4 reads, a watch).
    assert!(stdout.contains("(5000 in "), "{stdout}");
}

#[test]
fn shoald_sim_reports_a_failure_as_one() {
    // A guest limited to fewer nodes than the workload writes fails, and
    // the simulator says so (a simulator that cannot fail checks nothing).
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoald-sim"))
        .args([
            "--domains",
            "3",
            "--nodes",
            "4",
            "--shoald",
            env!("CARGO_BIN_EXE_shoald"),
            "--shoald-arg=--quota=nodes=3",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ENOSPC"), "{stderr}");
}
