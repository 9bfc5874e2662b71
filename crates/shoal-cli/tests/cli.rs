//! End-to-end tests of the `shoal` binary, each in its own temporary directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{describe, fails, ok, run, run_with_stdin, shoal, TestStore};
use serde_json::Value;

#[test]
fn put_get_ls_rm_round_trip() {
    let s = TestStore::new();
    let p = s.path();
    assert_eq!(s.put("/local/domain/1/name", "web-1"), 1);
    assert_eq!(s.put("/local/domain/1/memory/target", "1024"), 2);
    assert_eq!(s.put("/local/domain/2/name", "db-2"), 3);
    assert_eq!(s.put("/local/domain/1/name", "web-1b"), 4);

    // Raw value, no newline added when stdout is not a terminal.
    assert_eq!(s.get("/local/domain/1/name"), "web-1b");
    assert_eq!(s.get("/local/domain/1"), "", "implicit ancestors have empty values");
    assert_eq!(ok(&["get", p, "/local/domain/1/name", "--at", "3"]), "web-1");
    assert_eq!(ok(&["ls", p, "/local/domain"]), "1\n2\n");
    assert_eq!(ok(&["ls", p, "/local/domain/1"]), "memory\nname\n");
    assert_eq!(ok(&["ls", p, "/"]), "local\n");

    // rm of a leaf, then rm -r of a subtree.
    assert_eq!(ok(&["rm", p, "/local/domain/2/name"]).trim(), "5");
    assert_eq!(ok(&["ls", p, "/local/domain/2"]), "");
    assert_eq!(ok(&["rm", p, "-r", "/local/domain/1"]).trim(), "6");
    assert_eq!(ok(&["ls", p, "/local/domain"]), "2\n");
    let err = fails(&["get", p, "/local/domain/1/name"]);
    assert_eq!(err.trim(), "shoal: no node at /local/domain/1/name");
    // Older versions stay readable.
    assert_eq!(ok(&["get", p, "/local/domain/1/memory/target", "--at", "5"]), "1024");

    let err = fails(&["rm", p, "/nope"]);
    assert!(err.contains("no node at /nope"), "{err}");
    let err = fails(&["ls", p, "/nope"]);
    assert!(err.contains("no node at /nope"), "{err}");
}

#[test]
fn put_from_file_and_stdin_keeps_bytes() {
    let s = TestStore::new();
    let file = s.dir.parent().unwrap().join("value.bin");
    let bytes: Vec<u8> = vec![0, 159, 146, 150, b'\n', 255];
    std::fs::write(&file, &bytes).unwrap();
    ok(&["put", s.path(), "/bin", "--file", file.to_str().unwrap()]);
    assert_eq!(run(&["get", s.path(), "/bin"]).stdout, bytes);

    let out = run_with_stdin(&["put", s.path(), "/piped", "--file", "-"], b"from stdin\n");
    assert!(out.status.success(), "{}", describe(&["put"], &out));
    assert_eq!(s.get("/piped"), "from stdin\n");
}

#[test]
fn cp_copies_a_value_by_reference() {
    let s = TestStore::new();
    let big = "v".repeat(5000);
    s.put("/images/base", &big);
    assert_eq!(ok(&["cp", s.path(), "/images/base", "/vm/7/image"]).trim(), "2");
    assert_eq!(s.get("/vm/7/image"), big);
    assert_eq!(ok(&["ls", s.path(), "/vm"]), "7\n");
    let err = fails(&["cp", s.path(), "/images/none", "/x"]);
    assert!(err.contains("no node at /images/none"), "{err}");
    let err = fails(&["cp", s.path(), "/images/base", "bad"]);
    assert!(err.contains("invalid path"), "{err}");

    // -r: the subtree, replacing what was there.
    s.put("/vm/8/old", "gone after the copy");
    assert_eq!(ok(&["cp", s.path(), "-r", "/vm/7", "/vm/8"]).trim(), "4");
    assert_eq!(s.get("/vm/8/image"), big);
    assert_eq!(ok(&["ls", s.path(), "/vm/8"]), "image\n");
    let err = fails(&["cp", s.path(), "-r", "/", "/x"]);
    assert!(err.contains("the root cannot be copied"), "{err}");
}

#[test]
fn rm_without_r_on_a_node_with_children_fails() {
    let s = TestStore::new();
    s.put("/a/b", "1");
    let err = fails(&["rm", s.path(), "/a"]);
    assert!(err.contains("/a has children"), "{err}");
    assert!(err.contains("-r"), "{err}");
    // Nothing was deleted.
    assert_eq!(s.get("/a/b"), "1");
    assert!(ok(&["stat", s.path()]).contains("version:            1\n"));
}

#[test]
fn invalid_paths_are_rejected_clearly() {
    let s = TestStore::new();
    let err = fails(&["put", s.path(), "no-slash", "v"]);
    assert!(err.contains("invalid path \"no-slash\": must start with '/'"), "{err}");
    let err = fails(&["get", s.path(), "/a//b"]);
    assert!(err.contains("invalid path \"/a//b\""), "{err}");
    assert!(err.contains("empty segment"), "{err}");
    let err = fails(&["put", s.path(), "/", "v"]);
    assert!(err.contains("root"), "{err}");
    // Nothing was committed by the failures.
    assert!(ok(&["stat", s.path()]).contains("version:            0\n"));
}

#[test]
fn missing_store_and_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = fails(&["get", missing.to_str().unwrap(), "/a"]);
    assert!(err.contains("no shoal store"), "{err}");
    let err = fails(&["put", missing.to_str().unwrap(), "/a", "v"]);
    assert!(err.contains("no shoal store"), "{err}");
    assert!(!missing.exists(), "put must not create a store");

    // Usage errors exit 2 (clap).
    assert_eq!(run(&["put", missing.to_str().unwrap(), "/a"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));

    let s = TestStore::new();
    let err = fails(&["init", s.path()]);
    assert!(err.contains("already exists"), "{err}");
}

const TREE: &str = r#"{
  "local": {
    "domain": {
      "7": {
        "name": "web-7",
        "domid": 7,
        "memory": {"@value": "mem", "target": 1048576, "static-max": 2097152.5},
        "flags": {"paused": false, "nothing": null, "empty": {}},
        "cpus": ["online", "offline"]
      }
    }
  },
  "tool": "xl"
}"#;

fn import(store: &str, input: &[u8]) -> String {
    let args = ["import", store, "-"];
    let out = run_with_stdin(&args, input);
    assert!(out.status.success(), "{}", describe(&args, &out));
    String::from_utf8(out.stdout).unwrap()
}

fn export_lines(store: &str) -> Vec<Value> {
    ok(&["export", store]).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn import_json_tree_then_export_round_trips() {
    let a = TestStore::new();
    let out = import(a.path(), TREE.as_bytes());
    // local, domain, 7, name, domid, memory, target, static-max, flags, paused,
    // nothing, empty, cpus, cpus/0, cpus/1, tool.
    assert!(out.starts_with("loaded 16 entries"), "{out}");
    assert!(out.contains("version 1"), "{out}");
    assert!(out.contains("the store now holds 16 nodes"), "{out}");
    assert_eq!(a.get("/local/domain/7/name"), "web-7");
    assert_eq!(a.get("/local/domain/7/domid"), "7");
    assert_eq!(a.get("/local/domain/7/memory"), "mem");
    assert_eq!(a.get("/local/domain/7/memory/static-max"), "2097152.5");
    assert_eq!(a.get("/local/domain/7/flags/paused"), "false");
    assert_eq!(a.get("/local/domain/7/flags/nothing"), "");
    assert_eq!(a.get("/local/domain/7/cpus/1"), "offline");
    assert_eq!(ok(&["ls", a.path(), "/local/domain/7/flags"]), "empty\nnothing\npaused\n");

    // Tree export -> import into a fresh store -> same content, same tree text.
    let tree = ok(&["export", a.path(), "--format", "tree"]);
    let parsed: Value = serde_json::from_str(&tree).unwrap();
    assert_eq!(parsed["local"]["domain"]["7"]["memory"]["@value"], "mem");
    assert_eq!(parsed["local"]["domain"]["7"]["memory"]["target"], "1048576");
    assert_eq!(parsed["local"]["domain"]["7"]["flags"]["empty"], "");
    let b = TestStore::new();
    import(b.path(), tree.as_bytes());
    assert_eq!(export_lines(a.path()), export_lines(b.path()));
    assert_eq!(ok(&["export", b.path(), "--format", "tree"]), tree);

    // A subtree export carries the subtree root's own value and re-imports under a prefix.
    let sub = ok(&["export", a.path(), "/local/domain/7/memory", "--format", "tree"]);
    let sub_json: Value = serde_json::from_str(&sub).unwrap();
    assert_eq!(sub_json, serde_json::json!({"@value": "mem", "target": "1048576", "static-max": "2097152.5"}));
    let c = TestStore::new();
    let args = ["import", c.path(), "-", "--prefix", "/copy"];
    let out = run_with_stdin(&args, sub.as_bytes());
    assert!(out.status.success(), "{}", describe(&args, &out));
    assert_eq!(c.get("/copy"), "mem");
    assert_eq!(c.get("/copy/target"), "1048576");
}

#[test]
fn import_json_lines_then_export_round_trips() {
    let a = TestStore::new();
    let lines = concat!(
        "{\"path\": \"/vm/1/name\", \"value\": \"one\"}\n",
        "\n",
        "{\"path\": \"/vm/1\", \"value\": \"has a value and children\"}\n",
        "{\"path\": \"/vm/2/raw\", \"value_base64\": \"AP+A\"}\n",
        "{\"path\": \"/vm/2/count\", \"value\": 42}\n",
        "{\"path\": \"/vm/1/name\", \"value\": \"one-again\"}\n",
    );
    let out = import(a.path(), lines.as_bytes());
    assert!(out.starts_with("loaded 5 entries (JSON lines) as version 1"), "{out}");
    assert!(out.contains("the store now holds 6 nodes"), "/vm and /vm/2 are implied: {out}");
    assert_eq!(a.get("/vm/1/name"), "one-again", "a later duplicate wins");
    assert_eq!(a.get("/vm/1"), "has a value and children");
    assert_eq!(run(&["get", a.path(), "/vm/2/raw"]).stdout, vec![0x00, 0xff, 0x80]);

    let exported = export_lines(a.path());
    let paths: Vec<&str> = exported.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/vm", "/vm/1", "/vm/1/name", "/vm/2", "/vm/2/count", "/vm/2/raw"]);
    assert_eq!(exported[5], serde_json::json!({"path": "/vm/2/raw", "value_base64": "AP+A"}));
    assert_eq!(exported[4]["value"], "42");

    // Lines round trip, and tree round trip (non-UTF-8 value included).
    let b = TestStore::new();
    import(b.path(), ok(&["export", a.path()]).as_bytes());
    assert_eq!(export_lines(b.path()), exported);
    let c = TestStore::new();
    import(c.path(), ok(&["export", a.path(), "--format", "tree"]).as_bytes());
    assert_eq!(export_lines(c.path()), exported);
    assert_eq!(run(&["get", c.path(), "/vm/2/raw"]).stdout, vec![0x00, 0xff, 0x80]);

    // Subtree export.
    let sub: Vec<String> = ok(&["export", a.path(), "/vm/1"]).lines().map(String::from).collect();
    assert_eq!(sub.len(), 2);
    assert!(sub[0].contains("\"/vm/1\""));
}

#[test]
fn bad_imports_fail_without_committing() {
    let s = TestStore::new();
    for (input, expected) in [
        (&b"{\"a/b\": \"1\"}"[..], "invalid key \"a/b\""),
        (b"[1, 2]", "must be an object"),
        (b"{\"path\": \"/x\", \"value\": \"1\"}\nnot json\n", "line 2"),
        (b"{\"path\": \"relative\", \"value\": \"1\"}\n", "must start with '/'"),
        (b"{\"a\": ", "invalid JSON"),
    ] {
        let out = run_with_stdin(&["import", s.path(), "-"], input);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&["import"], &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err} should mention {expected}");
    }
    assert!(ok(&["stat", s.path()]).contains("version:            0\n"));
}

#[test]
fn stat_prints_the_version_and_figures() {
    let s = TestStore::new();
    s.put("/a", "1");
    s.put("/b/c", "2");
    let out = ok(&["stat", s.path()]);
    assert!(out.contains("version:            2\n"), "{out}");
    assert!(out.contains("keys:               3\n"), "{out}");
    assert!(out.contains("generation:         1\n"), "{out}");
    assert!(out.contains("live readers:       0\n"), "{out}");
    assert!(out.contains("writer:             none running"), "{out}");
    assert!(out.contains("live bytes:"), "{out}");
    assert!(out.contains("retained versions:  3 (kept by the next compaction): 2, 1, 0\n"), "{out}");
    assert!(out.contains("journal bytes:"), "{out}");
    assert!(!out.contains("cluster revision"), "not a replica: {out}");
    // A replica of a cluster records the etcd revision of each version.
    s.put("/.shoald/cluster/revision", "4242");
    let out = ok(&["stat", s.path()]);
    assert!(out.contains("cluster revision:   4242 (etcd's, as a replica of a cluster)\n"), "{out}");
}

#[test]
fn readers_work_while_another_process_holds_the_writer_lock() {
    let s = TestStore::new();
    s.put("/a", "before");
    // This test process becomes the writer.
    let options = shoal::Options { create: false, ..shoal::Options::default() };
    let store = shoal::Store::open(&s.dir, options).unwrap();
    let mut txn = store.begin();
    txn.put("/a", b"from the writer").unwrap();
    assert_eq!(txn.commit().unwrap(), 2);

    assert_eq!(s.get("/a"), "from the writer");
    assert_eq!(ok(&["ls", s.path(), "/"]), "a\n");
    assert_eq!(export_lines(s.path()).len(), 1);
    let out = ok(&["stat", s.path()]);
    assert!(out.contains("version:            2\n"), "{out}");
    assert!(out.contains(&format!("writer:             running (pid {})\n", std::process::id())), "{out}");
    assert!(out.contains("retention:          16 older versions\n"), "{out}");
    // The figures that once needed the writer lock come from the reader too.
    assert!(out.contains("live bytes:"), "{out}");
    assert!(out.contains("retained versions:  3 (kept by the next compaction): 2, 1, 0\n"), "{out}");

    let out = run(&["put", s.path(), "/b", "x", "--no-wait"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&[], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("locked by another writer (pid {})", std::process::id())), "{err}");
    drop(store);
    assert_eq!(s.put("/b", "x"), 3);
}

#[test]
fn init_options_are_kept_for_later_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let p = dir.to_str().unwrap();
    let out = ok(&["init", p, "--durability", "none", "--retain", "2", "--max-value-bytes", "8", "--tier", "1h:1d"]);
    assert!(out.contains("durability none"), "{out}");
    assert!(out.contains("retaining 2 older versions, one per 1h for 1d"), "{out}");
    let err = fails(&["put", p, "/big", "123456789"]);
    assert!(err.contains("limit is 8 bytes"), "{err}");
    for i in 0..5 {
        ok(&["put", p, "/k", &i.to_string()]);
    }
    let out = ok(&["stat", p]);
    // Within the hour tier, versions 1 and 2 (the newest of their hour
    // before the newest three) may be kept too; 3..=5 always are.
    let settings = ok(&["config", p]);
    assert!(settings.contains("retain                   2\n"), "{settings}");
    assert!(settings.contains("tiers                    1h:1d\n"), "{settings}");
    let line = out.lines().find(|l| l.starts_with("retained versions:")).unwrap();
    assert!(line.contains(": 5, 4, 3"), "{out}");
    // A malformed tier is a usage error (exit code 2), with what to write instead.
    let usage = run(&["init", tmp.path().join("t").to_str().unwrap(), "--tier", "1h"]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&[], &usage));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("expected EVERY:WITHIN, such as 1m:1h"));
    assert!(!tmp.path().join("t").exists());
    assert!(out.contains("journal bytes:      0\n"), "durability none keeps no journal: {out}");
}

fn demo_dir(tmp: &Path) -> String {
    tmp.join("demo").to_str().unwrap().to_string()
}

#[test]
fn demo_runs_with_readers_and_finds_no_violations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = demo_dir(tmp.path());
    let out = ok(&["demo", "--domains", "200", "--readers", "2", "--seconds", "1", "--dir", &dir]);
    assert!(out.contains("durability none"), "{out}");
    assert!(out.contains("2600 values"), "{out}");
    assert_eq!(out.matches("; 0 violations").count(), 2, "{out}");
    assert!(out.contains("result:  OK: 0 violations"), "{out}");
    // Every reader took snapshots and saw versions from the write phase.
    for line in out.lines().filter(|l| l.starts_with("reader ")) {
        assert!(!line.contains(" 0 snapshots"), "{line}");
    }
    // The store stays behind, readable by the other commands.
    assert_eq!(ok(&["get", &dir, "/local/domain/199/name"]), "vm-199");
    let stat = ok(&["stat", &dir]);
    assert!(stat.contains("keys:               5002\n"), "{stat}");

    // A second run over the same directory is refused: the demo deletes
    // nothing it did not create, and the store stays as it was.
    let err = fails(&["demo", "--domains", "10", "--readers", "1", "--seconds", "0.2", "--dir", &dir]);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(ok(&["get", &dir, "/local/domain/199/name"]), "vm-199");
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("precious");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let err = fails(&["demo", "--domains", "10", "--seconds", "0.1", "--dir", dir.to_str().unwrap()]);
    assert!(err.contains("is not empty"), "{err}");
    assert!(dir.join("notes.txt").exists());
}

/// The `store:` line of the demo's output: the directory it used.
fn demo_store_dir(out: &str) -> std::path::PathBuf {
    let line = out.lines().find(|l| l.starts_with("store:")).unwrap_or_else(|| panic!("no store line: {out}"));
    line.split_whitespace().nth(1).unwrap().into()
}

#[test]
fn demo_uses_a_private_temporary_directory_and_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // Whatever sits at the old, predictable path is not the demo's business.
    let planted = tmp.path().join("shoal-demo");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("notes.txt"), "not the demo's").unwrap();
    let demo = |extra: &[&str]| {
        let mut args = vec!["demo", "--domains", "20", "--readers", "1", "--seconds", "0.2"];
        args.extend_from_slice(extra);
        let out = shoal().args(&args).env("TMPDIR", tmp.path()).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", describe(&args, &out));
        String::from_utf8(out.stdout).unwrap()
    };

    let out = demo(&[]);
    let used = demo_store_dir(&out);
    assert_eq!(used.parent(), Some(tmp.path()), "{out}");
    assert!(used.file_name().unwrap().to_str().unwrap().starts_with("shoal-demo-"), "{out}");
    assert!(!used.exists(), "the temporary directory is removed at the end: {out}");
    assert_eq!(std::fs::read_to_string(planted.join("notes.txt")).unwrap(), "not the demo's");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "only the planted directory is left");

    // --keep: the directory stays, private to its owner, with the store in it.
    let out = demo(&["--keep"]);
    let kept = demo_store_dir(&out);
    assert!(out.contains(&format!("kept:    {}", kept.display())), "{out}");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{out}");
    assert_eq!(ok(&["get", kept.to_str().unwrap(), "/local/domain/19/name"]), "vm-19");
    let usage = run(&["demo", "--keep", "--dir", kept.to_str().unwrap()]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&[], &usage));
}

#[test]
fn verify_reports_intact_and_damaged_stores() {
    let s = TestStore::new();
    for i in 0..200 {
        s.put(&format!("/v/{i}"), &"x".repeat(40));
    }
    let out = ok(&["verify", s.path()]);
    assert!(out.contains("every checksum intact"), "{out}");
    // Damage the last leaf written (just below the newest commit record).
    let arena = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("arena-"))
        .unwrap();
    let stat = ok(&["stat", s.path()]);
    let used: u64 = stat
        .lines()
        .find(|l| l.starts_with("arena bytes used:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no arena size in stat output:\n{stat}"));
    let mut bytes = std::fs::read(&arena).unwrap();
    bytes[used as usize - 64 - 100] ^= 0x01;
    std::fs::write(&arena, bytes).unwrap();
    let err = fails(&["verify", s.path()]);
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn watch_prints_the_changes_under_its_prefix_as_they_are_committed() {
    let s = TestStore::new();
    let p = s.path();
    let from = s.put("/local/domain/1/name", "web-1");
    let watcher = shoal()
        .args(["watch", p, "/local/domain/1", "--from", &from.to_string(), "--count", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal watch");
    // Never hang the test run: a watch that misses its events is killed.
    let pid = watcher.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let v1 = s.put("/local/domain/1/memory", "1024");
    s.put("/local/domain/2/name", "db-2"); // outside the prefix
    let v2 = ok(&["rm", p, "-r", "/local/domain/1"]).trim().parse::<u64>().unwrap();
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{v1} set /local/domain/1/memory\n{v2} delete-tree /local/domain/1\n")
    );
    assert!(fails(&["watch", p, "no-slash"]).contains("invalid path"));
}

#[test]
fn versions_lists_the_retained_versions_newest_first() {
    let s = TestStore::new();
    let p = s.path();
    for i in 0..3 {
        s.put(&format!("/k/{i}"), "v");
    }
    let out = ok(&["versions", p]);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    let numbers: Vec<&str> = lines.iter().map(|l| l[0]).collect();
    assert_eq!(numbers, ["3", "2", "1", "0"], "{out}");
    // Nodes: /k and its children; commit times in RFC 3339 (UTC, milliseconds), which sort as
    // text: never decreasing with the version.
    assert_eq!(lines[0][2], "4 nodes", "{out}");
    assert_eq!(lines[3][2], "0 nodes", "{out}");
    let times: Vec<&str> = lines.iter().map(|l| l[1]).collect();
    for t in &times {
        assert!(is_rfc3339_millis_utc(t), "{t:?} in {out}");
    }
    assert!(times.windows(2).all(|w| w[0] >= w[1]) && times[3] > "2025", "{out}");
}

/// `2026-12-06T05:16:11.123Z`: digits where digits go, the separators, UTC.
fn is_rfc3339_millis_utc(t: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    t.len() == shape.len()
        && t.bytes().zip(shape.bytes()).all(|(c, s)| if s == b'd' { c.is_ascii_digit() } else { c == s })
}

#[test]
fn log_prints_the_versions_that_changed_a_path() {
    let s = TestStore::new();
    let p = s.path();
    let v1 = s.put("/a", "1");
    s.put("/b", "x");
    let v3 = s.put("/a", "2");
    let v4 = ok(&["rm", p, "/a"]).trim().parse::<u64>().unwrap();
    let out = ok(&["log", p, "/a"]);
    let rows: Vec<(u64, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(is_rfc3339_millis_utc(f[1]), "{out}");
            (f[0].parse().unwrap(), f[2].to_string())
        })
        .collect();
    assert_eq!(rows, vec![(v4, "delete".into()), (v3, "set".into()), (v1, "set".into())], "{out}");

    // A path no retained version has is an error, not an empty log.
    let err = fails(&["log", p, "/never-existed"]);
    assert!(err.contains("no retained version has a node at /never-existed"), "{err}");
    assert!(err.contains(&format!("retained versions: 0..={v4}")), "{err}");
    // One that only an older retained version has still lists its versions.
    assert_eq!(ok(&["log", p, "/b"]).lines().count(), 1);
}

#[test]
fn diff_prints_how_a_subtree_differs_between_versions() {
    let s = TestStore::new();
    let p = s.path();
    let v1 = s.put("/a/x", "1");
    s.put("/a/y", "2");
    s.put("/a/x", "3");
    let v4 = ok(&["rm", p, "/a/y"]).trim().parse::<u64>().unwrap();
    s.put("/b", "elsewhere");
    assert_eq!(ok(&["diff", p, &v1.to_string(), &v4.to_string(), "/a"]), "set /a/x\n");
    assert_eq!(ok(&["diff", p, "0", &v4.to_string()]), "set /a\nset /a/x\n");
    assert!(fails(&["diff", p, "0", "999"]).contains("not retained"));
}

#[test]
fn a_work_queue_push_claim_done() {
    let s = TestStore::new();
    let p = s.path();
    assert_eq!(ok(&["queue", "push", p, "jobs", "first job"]), "0\n");
    assert_eq!(ok(&["queue", "push", p, "jobs", "second"]), "1\n");
    let a = ok(&["queue", "claim", p, "jobs", "--owner", "a"]);
    let b = ok(&["queue", "claim", p, "jobs", "--owner", "b"]);
    let item = |claimed: &str| claimed.split(' ').next().unwrap().to_string();
    let mut both = [a.trim().to_string(), b.trim().to_string()];
    both.sort();
    assert_eq!(both, ["0 first job", "1 second"]);
    // Nothing free: exit code 3, and a message.
    let out = run(&["queue", "claim", p, "jobs", "--owner", "c"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&["queue", "claim"], &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no item of jobs is free"));
    // Only the holder finishes an item, once.
    let stderr = fails(&["queue", "done", p, "jobs", &item(&a), "--owner", "b"]);
    assert!(stderr.contains(&format!("item {} of jobs is gone or not held by b", item(&a))), "{stderr}");
    assert_eq!(ok(&["queue", "done", p, "jobs", &item(&a), "--owner", "a"]), "");
    fails(&["queue", "done", p, "jobs", &item(&a), "--owner", "a"]);
    // A claim whose lease ended is claimed again.
    assert_eq!(ok(&["queue", "done", p, "jobs", &item(&b), "--owner", "b"]), "");
    ok(&["queue", "push", p, "jobs", "third"]);
    assert_eq!(ok(&["queue", "claim", p, "jobs", "--owner", "a", "--lease", "0"]), "2 third\n");
    assert_eq!(ok(&["queue", "claim", p, "jobs", "--owner", "b"]), "2 third\n");
    // Names the queue refuses.
    fails(&["queue", "push", p, "a/b", "x"]);
    fails(&["queue", "claim", p, "jobs", "--owner", "two words"]);
}
