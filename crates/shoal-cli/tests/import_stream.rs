//! `shoal import` streams: batches of at most `--batch-bytes` (each entry
//! counts its path and value bytes plus 512 bytes per node it may add),
//! one version per batch, memory bounded by the batch, and clear errors
//! for hostile input, with what was committed before them.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{describe, fails, ok, run, run_with_stdin, shoal, TestStore};

/// What a batch counts per node an entry may add (`--help` of import).
const NODE_CHARGE: u64 = 512;

fn import_file(store: &TestStore, name: &str, input: &[u8], extra: &[&str]) -> Output {
    let file = store.dir.parent().unwrap().join(name);
    std::fs::write(&file, input).unwrap();
    let mut args = vec!["import", store.path(), file.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn import_ok(store: &TestStore, input: &[u8], extra: &[&str]) -> String {
    let out = import_file(store, "input", input, extra);
    assert!(out.status.success(), "{}", describe(extra, &out));
    String::from_utf8(out.stdout).unwrap()
}

fn import_fails(store: &TestStore, input: &[u8], extra: &[&str]) -> String {
    let out = import_file(store, "input", input, extra);
    assert_eq!(out.status.code(), Some(1), "{}", describe(extra, &out));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("shoal: ") && !err.contains("panicked"), "{err}");
    err
}

fn version_of(store: &TestStore) -> u64 {
    let stat = ok(&["stat", store.path()]);
    let line = stat.lines().find(|l| l.starts_with("version:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Ten entries /k/0../k/9 of 4-byte values, as JSON lines: the first counts
/// 4 + 4 bytes and two nodes (/k and itself), the others one node each.
fn ten_lines() -> (String, u64) {
    let text: String = (0..10).map(|i| format!("{{\"path\": \"/k/{i}\", \"value\": \"vvvv\"}}\n")).collect();
    let charge = (8 + 2 * NODE_CHARGE) + 9 * (8 + NODE_CHARGE);
    (text, charge)
}

#[test]
fn json_lines_are_one_version_when_they_fit_one_batch_else_one_per_batch() {
    let (input, total) = ten_lines();
    for (batch, versions) in [(total + 1, 1), (total, 1), (total - 1, 2)] {
        let s = TestStore::new();
        let out = import_ok(&s, input.as_bytes(), &["--batch-bytes", &batch.to_string()]);
        assert!(out.starts_with("loaded 10 entries (JSON lines) as version"), "{out}");
        assert_eq!(version_of(&s), versions, "--batch-bytes {batch}: {out}");
        if versions == 2 {
            assert!(out.contains("as versions 1..=2 (2 batches of at most"), "{out}");
            // The first batch is entries 1..=9, committed as version 1.
            assert_eq!(ok(&["get", s.path(), "/k/8", "--at", "1"]), "vvvv");
            assert!(fails(&["get", s.path(), "/k/9", "--at", "1"]).contains("no node"));
        }
        assert_eq!(ok(&["ls", s.path(), "/k"]).lines().count(), 10);
    }
    // The default batch holds it all.
    let s = TestStore::new();
    assert!(import_ok(&s, input.as_bytes(), &[]).contains("as version 1 in"));
}

#[test]
fn a_json_tree_is_batched_the_same_way() {
    // Entries in input order: /k/0../k/9, then /k itself (an object
    // without "@value" is written once its keys are read).
    let tree: String =
        format!("{{\"k\": {{{}}}}}", (0..10).map(|i| format!("\"{i}\": \"vvvv\"")).collect::<Vec<_>>().join(", "));
    let (_, lines_total) = ten_lines();
    let total = lines_total + 2 + NODE_CHARGE;
    for (batch, versions) in [(total + 1, 1), (total, 1), (total - 1, 2)] {
        let s = TestStore::new();
        let out = import_ok(&s, tree.as_bytes(), &["--batch-bytes", &batch.to_string()]);
        assert!(out.starts_with("loaded 11 entries (JSON tree)"), "{out}");
        assert_eq!(version_of(&s), versions, "--batch-bytes {batch}: {out}");
        assert_eq!(ok(&["ls", s.path(), "/k"]).lines().count(), 10);
    }
}

#[test]
fn an_entry_or_line_larger_than_a_batch_is_refused() {
    let s = TestStore::new();
    let one = b"{\"path\": \"/k/0\", \"value\": \"vvvv\"}\n";
    let needed = 8 + 2 * NODE_CHARGE;
    import_ok(&s, one, &["--batch-bytes", &needed.to_string()]);
    let err = import_fails(&s, one, &["--batch-bytes", &(needed - 1).to_string()]);
    assert!(err.contains(&format!("line 1: the entry for /k/0 needs {needed} bytes of a batch")), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");

    // A line of exactly --batch-bytes (its newline aside) is read; one byte more is not.
    let limit = 2000usize;
    let body = format!("{{\"path\": \"/long\", \"value\": \"{}\"}}", "x".repeat(1000));
    let line = |len: usize| format!("{}{}\n", &body[..body.len() - 1], " ".repeat(len - body.len()) + "}");
    let at_limit = line(limit);
    assert_eq!(at_limit.len(), limit + 1);
    let s = TestStore::new();
    import_ok(&s, at_limit.as_bytes(), &["--format", "lines", "--batch-bytes", &limit.to_string()]);
    assert_eq!(ok(&["get", s.path(), "/long"]).len(), 1000);
    let over = format!("{}{}", ten_lines().0, line(limit + 1));
    let err = import_fails(&s, over.as_bytes(), &["--format", "lines", "--batch-bytes", &limit.to_string()]);
    assert!(err.contains(&format!("line 11 is longer than --batch-bytes ({limit} bytes)")), "{err}");
    // Without --format, a long first line that starts as a JSON line is one (and too long);
    let err = import_fails(&s, line(limit + 1).as_bytes(), &["--batch-bytes", &limit.to_string()]);
    assert!(err.contains(&format!("line 1 is longer than --batch-bytes ({limit} bytes)")), "{err}");
    // one that does not is taken for a tree, and the error says so, and what to give instead.
    let half = "x".repeat(limit / 2);
    let deep = format!("/p{}", format!("/{}", "q".repeat(250)).repeat(4));
    let value_first = format!("{{\"value\": \"{half}\", \"path\": \"{deep}\"}}\n");
    let two = format!("{value_first}{}", ten_lines().0);
    let err = import_fails(&s, two.as_bytes(), &["--batch-bytes", &limit.to_string()]);
    assert!(err.contains("line 2, column 1 (entry 3): invalid JSON: trailing characters"), "{err}");
    assert!(err.contains(&format!("read as a JSON tree: its first line is longer than {limit} bytes")), "{err}");
    assert!(err.contains("--format lines"), "{err}");
    let s = TestStore::new();
    import_ok(&s, two.as_bytes(), &["--batch-bytes", &(4 * limit).to_string(), "--format", "lines"]);
    assert_eq!(ok(&["get", s.path(), &deep]).len(), limit / 2);

    // A tree's string longer than a batch is refused before it is held whole.
    let big = format!("{{\"a\": \"{}\"}}", "y".repeat(100_000));
    let err = import_fails(&s, big.as_bytes(), &["--batch-bytes", "10000"]);
    assert!(err.contains("more than --batch-bytes (10000 bytes) of input without a complete entry"), "{err}");
}

/// The format detection reads at most 1 MiB of the first line: a line of
/// exactly that much is judged whole; a longer one by whether its "path"
/// string is read whole within that MiB.
#[test]
fn the_format_detection_window() {
    const WINDOW: usize = 1 << 20;
    let line = |len: usize, path_first: bool| {
        let skeleton =
            if path_first { "{\"path\": \"/p\", \"value\": \"\"}" } else { "{\"value\": \"\", \"path\": \"/p\"}" };
        let value = "x".repeat(len - skeleton.len());
        let text = if path_first {
            format!("{{\"path\": \"/p\", \"value\": \"{value}\"}}\n")
        } else {
            format!("{{\"value\": \"{value}\", \"path\": \"/p\"}}\n")
        };
        assert_eq!(text.len(), len + 1);
        text
    };
    let second = "{\"path\": \"/q\", \"value\": \"2\"}\n";
    let batch = ["--batch-bytes", "4MiB"];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let p = dir.to_str().unwrap();
    ok(&["init", p, "--max-value-bytes", "2097152"]);
    let import = |input: String| run_with_stdin(&["import", p, "-", batch[0], batch[1]], input.as_bytes());

    // At the window, "path" last: judged whole, JSON lines.
    let out = import(format!("{}{second}", line(WINDOW, false)));
    assert!(out.status.success(), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 2 entries (JSON lines)"));
    // One byte over, "path" last: the window holds all but the closing brace, "path" included.
    let out = import(format!("{}{second}", line(WINDOW + 1, false)));
    assert!(out.status.success(), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 2 entries (JSON lines)"));
    // Two bytes over: the window ends inside the path's string: a tree, which the second line
    // contradicts.
    let out = import(format!("{}{second}", line(WINDOW + 2, false)));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("its first line is longer than {WINDOW} bytes")), "{err}");
    // One byte over, "path" first: JSON lines.
    let out = import(format!("{}{second}", line(WINDOW + 1, true)));
    assert!(out.status.success(), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 2 entries (JSON lines)"));
    assert_eq!(ok(&["get", p, "/p"]).len(), WINDOW + 1 - r#"{"path": "/p", "value": ""}"#.len());
}

#[test]
fn an_error_midway_keeps_the_batches_before_it_and_says_so() {
    let s = TestStore::new();
    let (good, _) = ten_lines();
    // Each batch holds three entries after the first: /k/0 counts 2 nodes.
    let batch = 8 + 2 * NODE_CHARGE + 2 * (8 + NODE_CHARGE);
    let input = format!("{good}{{\"path\": \"/k/10\", \"value\": }}\n{{\"path\": \"/k/11\", \"value\": \"v\"}}\n");
    let err = import_fails(&s, input.as_bytes(), &["--batch-bytes", &batch.to_string()]);
    assert!(err.contains("line 11, column 28: invalid JSON: expected value"), "{err}");
    assert!(err.contains("already committed: versions 1..=3 (3 batches, entries 1..=9)"), "{err}");
    assert!(err.contains("the entries after entry 9 were not written"), "{err}");
    assert_eq!(version_of(&s), 3);
    assert_eq!(ok(&["ls", s.path(), "/k"]).lines().count(), 9);

    // The same in a tree: the line and column of the error, and the entry.
    let s = TestStore::new();
    let tree = format!(
        "{{\n{},\n  \"bad\": [1, 2,, 3]\n}}\n",
        (0..10).map(|i| format!("  \"k{i}\": \"vvvv\"")).collect::<Vec<_>>().join(",\n")
    );
    let batch = 9 + NODE_CHARGE;
    let err = import_fails(&s, tree.as_bytes(), &["--batch-bytes", &batch.to_string()]);
    assert!(err.contains("line 12, column 16 (entry 14): invalid JSON: expected value"), "{err}");
    // One entry a batch: the first twelve committed, the thirteenth (/bad/1) still pending.
    assert!(err.contains("already committed: versions 1..=12 (12 batches, entries 1..=12)"), "{err}");
    assert_eq!(ok(&["get", s.path(), "/bad/0"]), "1");
    assert!(fails(&["get", s.path(), "/bad/1"]).contains("no node"));
}

#[test]
fn hostile_input_gets_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let p = dir.to_str().unwrap();
    ok(&["init", p, "--max-value-bytes", "8"]);
    let huge_number = format!("{{\"n\": 1{}}}", "0".repeat(100_000));
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"path\": \"/v\", \"value\": \"123456789\"}\n",
            "line 1: the value for /v is 9 bytes; the store's limit is 8",
        ),
        (b"{\"v\": \"123456789\"}", "the value for /v is 9 bytes; the store's limit is 8"),
        (b"{\"path\": \"/a\", \"value\": \"\xff\"}\n{\"path\": \"/b\"}\n", "line 1, column"),
        (b"{\"a\": \"\xff\xfe\"}", "line 1, column"),
        (b"{\"path\": \"/n\", \"value\": 1e999}\n", "number out of range"),
        (b"{\"n\": -1e999}", "number out of range"),
        (huge_number.as_bytes(), "number out of range"),
        (
            b"{\"path\": \"/a\", \"value\": \"1\"}\n{\"path\": 5}\n",
            "line 2: invalid type: integer `5`, expected \"path\" to be a string",
        ),
        (b"{\"path\": \"/a\"}\n[1]\n", "line 2: expected a JSON object"),
        (b"{\"path\": \"/a\"}\n{\"value\": \"1\"}\n", "line 2: missing \"path\" string"),
        (b"{\"path\": \"/a\", \"value\": {\"x\": 1}}\n", "\"value\" must be a string, number, boolean or null"),
        (b"{\"path\": \"/a\", \"value\": \"1\", \"value_base64\": \"AA==\"}\n", "not both"),
        (b"{\"path\": \"/a\", \"value_base64\": \"A\"}\n", "not a valid base64 string"),
        (b"{\"path\": \"/a/../b\", \"value\": \"1\"}\n", "invalid path"),
        (b"{\"path\": \"/\", \"value\": \"1\"}\n", "the root node cannot hold a value"),
        (b"{\"a\": {\"@value\": \"1\", \"@value_base64\": \"AA==\"}}", "not both"),
        (b"{\"@value\": \"top\"}", "the root node cannot hold a value"),
        (b"{\"a\": {\"@value\": [1]}}", "the value of /a must be a string, number, boolean or null"),
        (b"{\"\": 1}", "invalid key \"\""),
        (b"\"just a string\"", "must be an object at the top"),
        (b"{\"a\": 1} {\"b\": 2}", "trailing characters"),
    ];
    for (input, expected) in cases {
        let out = run_with_stdin(&["import", p, "-"], input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {}", String::from_utf8_lossy(input), describe(&[], &out));
        assert!(err.contains(expected), "{}: {err} should mention {expected}", String::from_utf8_lossy(input));
        assert!(!err.contains("panicked"), "{err}");
    }
    // Deep nesting and long names: refused, not a stack overflow or a huge message.
    let deep = "[".repeat(100_000);
    let out = run_with_stdin(&["import", p, "-"], format!("{{\"a\": {deep}").as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recursion limit exceeded"));
    let long_key = format!("{{\"{}\": \"1\"}}", "k".repeat(300_000));
    let out = run_with_stdin(&["import", p, "-"], long_key.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("longer than the 3072-byte limit"),
        "{}",
        describe(&[], &out)
    );
    assert!(out.stderr.len() < 1000, "{}", describe(&[], &out));
    assert!(ok(&["stat", p]).contains("version:            0\n"), "nothing was committed");
}

#[test]
fn batch_bytes_values_are_checked() {
    let s = TestStore::new();
    for good in ["1.5KiB", "64MiB", "2GiB", "2048 MiB"] {
        let out = run_with_stdin(&["import", s.path(), "-", "--batch-bytes", good], b"{\"a\": \"1\"}");
        assert!(out.status.success(), "--batch-bytes {good}: {}", describe(&[], &out));
    }
    // The smallest batch is accepted, and holds no entry.
    let out = run_with_stdin(&["import", s.path(), "-", "--batch-bytes", "1"], b"{\"path\": \"/a\"}\n");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-bytes (1 bytes)"), "{}", describe(&[], &out));
    for bad in ["0", "2147483649", "2.5GiB", "99999999999999999999TiB", "-5", "0.3B", "lots", "12 parsecs", ""] {
        let out = run(&["import", s.path(), "-", &format!("--batch-bytes={bad}")]);
        assert_eq!(out.status.code(), Some(2), "--batch-bytes {bad:?}: {}", describe(&[], &out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-bytes"), "{}", describe(&[], &out));
    }
}

/// Runs `shoal args` with `input` on stdin, sampling its anonymous memory
/// (`RssAnon` in /proc/PID/status) every few milliseconds; returns how it
/// ended and the peak in bytes.
fn peak_anonymous_memory(args: &[&str], input: Vec<u8>) -> (Output, u64) {
    let mut child =
        shoal().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let kib = text.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.trim().strip_suffix(" kB"));
        if let Some(kib) = kib.and_then(|k| k.trim().parse::<u64>().ok()) {
            peak = peak.max(kib * 1024);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    feeder.join().unwrap();
    (child.wait_with_output().unwrap(), peak)
}

/// Tens of megabytes in 1 MiB batches take a few MiB beyond the process's
/// own; reading the input whole, as import did, took ten times the input.
#[test]
fn memory_follows_the_batch_not_the_input() {
    const INPUT_BYTES: usize = 24 << 20;
    const BOUND: u64 = 16 << 20;
    let value = "x".repeat(40);
    let mut lines = Vec::with_capacity(INPUT_BYTES + 200);
    let mut tree = Vec::with_capacity(INPUT_BYTES + 200);
    tree.extend_from_slice(b"{\"local\": {\"domain\": {");
    let mut i = 0u32;
    while lines.len() < INPUT_BYTES {
        writeln!(lines, "{{\"path\": \"/local/domain/{}/device/vif/{}/state\", \"value\": \"{value}\"}}", i / 8, i % 8)
            .unwrap();
        i += 1;
    }
    let domains = i / 8;
    for d in 0..domains {
        let vifs: Vec<String> = (0..8).map(|v| format!("\"{v}\": {{\"state\": \"{value}\"}}")).collect();
        write!(tree, "{}\"{d}\": {{\"device\": {{\"vif\": {{{}}}}}}}", if d == 0 { "" } else { ", " }, vifs.join(", "))
            .unwrap();
    }
    tree.extend_from_slice(b"}}}");
    for (format, input, entries) in [("lines", lines, i), ("tree", tree, domains * (8 * 2 + 3) + 2)] {
        let s = TestStore::new();
        let args = ["import", s.path(), "-", "--batch-bytes", "1MiB"];
        let len = input.len();
        let started = Instant::now();
        let (out, peak) = peak_anonymous_memory(&args, input);
        assert!(out.status.success(), "{}", describe(&args, &out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("loaded {entries} entries")), "{format}: {text}");
        assert!(peak > 0, "no sample of the child's memory");
        assert!(
            peak < BOUND,
            "{format}: {len} bytes of input in 1 MiB batches took {peak} bytes of anonymous memory \
             ({:?})",
            started.elapsed()
        );
    }
}

#[test]
fn stdin_is_imported_batch_by_batch_while_it_is_still_open() {
    let s = TestStore::new();
    let mut child = shoal()
        .args(["import", s.path(), "-", "--format", "lines", "--batch-bytes", "2KiB"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..20 {
        writeln!(stdin, "{{\"path\": \"/k/{i}\", \"value\": \"v\"}}").unwrap();
    }
    stdin.flush().unwrap();
    // A reader sees the first batches committed before the input ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while version_of(&s) == 0 {
        assert!(Instant::now() < deadline, "no batch committed while stdin stays open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "import ended before its input did");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&[], &out));
    assert_eq!(ok(&["ls", s.path(), "/k"]).lines().count(), 20);
}
