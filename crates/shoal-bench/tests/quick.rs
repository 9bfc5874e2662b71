//! Runs the built harness in quick mode on a small dataset and checks that
//! every row is reported for every engine: a figure, or an explicit reason
//! ("not installed", "n/a: …"). The numbers themselves are not checked.

use std::process::Command;

/// Row ids the harness reports (all rows selected).
const ROWS: [&str; 20] = [
    "1a", "1b", "2", "3a", "3b", "3c", "4", "5a", "5b", "5c", "5d", "5e", "5f", "5g", "5h", "6a", "6b", "6c", "7a",
    "7b",
];
const ENGINES: [&str; 3] = ["shoal", "lmdb", "redis"];

#[test]
fn quick_run_reports_every_row_for_every_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.json");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(["--quick", "--keys", "20000", "--reps", "1", "--out"])
        .arg(&out)
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .expect("run shoal-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "shoal-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);

    // The JSON: every row, every engine, a figure or a reason.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = json["rows"].as_array().expect("rows");
    for id in ROWS {
        let row = rows.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("row {id} missing from the JSON"));
        for engine in ENGINES {
            let cell = &row["results"][engine];
            let text = cell["text"].as_str().unwrap_or_else(|| panic!("row {id}: no cell for {engine}"));
            match cell["status"].as_str() {
                Some("ok") => assert!(cell["median"].is_number(), "row {id} {engine}: no median"),
                _ => assert!(
                    text.contains("not installed") || text.starts_with("n/a"),
                    "row {id} {engine}: neither a figure nor a reason: {text}"
                ),
            }
        }
    }
    assert!(json["machine"]["nproc"].is_string(), "the machine is described");
    assert_eq!(json["targets"].as_array().map(Vec::len), Some(6), "every target is evaluated");

    // The markdown table: one line per row, a cell per engine, no errors.
    for id in ROWS {
        let prefix = format!("| {id} |");
        let line = stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("row {id} not printed"));
        // id, title, unit, 3 engines, 2 ratios.
        assert_eq!(line.matches(" |").count(), 8, "row {id}: {line}");
    }
    assert!(!stdout.contains("error:"), "a row failed:\n{stdout}");
    for heading in ["nproc", "CPU", "memory", "Targets"] {
        assert!(stdout.contains(heading), "{heading} is not reported");
    }
}
