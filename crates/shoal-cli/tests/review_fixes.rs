//! What a first-time user tripped over, kept fixed: deleting the root,
//! values read whole before their limit was checked, misspelled JSON-lines
//! keys, tree exports too deep to import, `stat` for a group reader, and
//! options that cannot work together.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::{describe, fails, ok, run, run_with_stdin, shoal, TestStore};

#[test]
fn the_root_is_never_deleted_by_rm() {
    let s = TestStore::new();
    s.put("/important/data", "42");
    for args in [vec!["rm", s.path(), "/"], vec!["rm", "-r", s.path(), "/"]] {
        let err = fails(&args);
        assert!(err.contains("root node cannot be deleted"), "{err}");
    }
    assert_eq!(s.get("/important/data"), "42");
}

#[test]
fn put_from_a_file_reads_no_more_than_the_limit() {
    let s = TestStore::new();
    ok(&["config", s.path(), "--max-value-bytes", "1000"]);
    // An endless input: the old code read it until memory ran out.
    let out = run(&["put", s.path(), "/z", "-f", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit of 1000 bytes"), "{}", describe(&[], &out));
    for (len, accepted) in [(999, true), (1000, true), (1001, false)] {
        let value = vec![b'v'; len];
        let out = run_with_stdin(&["put", s.path(), "/v", "-f", "-"], &value);
        assert_eq!(out.status.success(), accepted, "{len} bytes: {}", describe(&[], &out));
    }
    assert_eq!(s.get("/v").len(), 1000);
}

#[test]
fn a_misspelled_key_in_json_lines_is_an_error() {
    let s = TestStore::new();
    let out = run_with_stdin(&["import", s.path(), "-"], b"{\"path\":\"/typo\",\"vaule\":\"important\"}\n");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&[], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key \"vaule\""), "{err}");
    fails(&["get", s.path(), "/typo"]);
}

#[test]
fn a_tree_export_is_refused_where_it_could_not_be_imported() {
    let s = TestStore::new();
    let tmp = tempfile::tempdir().unwrap();
    for (depth, exports) in [(127, true), (128, false)] {
        let path = "/a".repeat(depth);
        s.put(&path, "x");
        let out = run(&["export", s.path(), "--format", "tree"]);
        assert_eq!(out.status.success(), exports, "depth {depth}: {}", describe(&[], &out));
        if exports {
            let file = tmp.path().join("tree.json");
            std::fs::write(&file, &out.stdout).unwrap();
            let other = tmp.path().join(format!("copy{depth}"));
            ok(&["init", other.to_str().unwrap()]);
            ok(&["import", other.to_str().unwrap(), file.to_str().unwrap()]);
            assert_eq!(ok(&["get", other.to_str().unwrap(), &path]), "x");
        } else {
            assert!(String::from_utf8_lossy(&out.stderr).contains("--format lines"), "{}", describe(&[], &out));
        }
        ok(&["rm", "-r", s.path(), "/a"]);
    }
}

#[test]
fn options_that_cannot_work_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("g");
    let err = fails(&["init", dir.to_str().unwrap(), "--group", "4242"]);
    assert!(err.contains("--mode 750"), "{err}");
    assert!(!dir.exists());
    let s = TestStore::new();
    let out = run(&["watch", s.path(), "--count", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
    let out = run(&["demo", "--readers", "65"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
}

/// The journal is readable by the store's readers like its other data
/// files, so `stat` works for a member of the store's group (it failed on
/// the journal's 0600 mode).
#[test]
fn stat_works_for_a_reader_in_the_stores_group() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("g");
    let p = dir.to_str().unwrap();
    ok(&["init", p, "--mode", "750", "--group", "4242"]);
    ok(&["put", p, "/a", "hello"]);
    let out = shoal().args(["stat", p]).uid(4343).gid(4242).output().unwrap();
    assert!(out.status.success(), "{}", describe(&["stat"], &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("journal bytes:"));
    let out = shoal().args(["stat", p]).uid(4343).gid(4343).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{}", describe(&["stat"], &out));
}
