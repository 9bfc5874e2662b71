//! Every command that prints, with its stdout a pipe nobody reads any more
//! (`shoal stat S | head -1` once head has exited): it must end quietly,
//! never panic.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{describe, ok, shoal, TestStore};

/// Runs `shoal args` with stdout a pipe whose read end is already closed,
/// and `stdin` on its stdin.
fn with_closed_stdout(args: &[&str], stdin: &[u8]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child =
        shoal().args(args).stdin(Stdio::piped()).stdout(writer).stderr(Stdio::piped()).spawn().expect("spawn shoal");
    let mut input = child.stdin.take().unwrap();
    // The command may finish without reading its stdin.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn no_command_panics_when_stdout_is_closed() {
    let s = TestStore::new();
    let p = s.path();
    for i in 0..50 {
        s.put(&format!("/k/{i}"), "some value");
    }
    let fresh = s.dir.parent().unwrap().join("fresh");
    let lines = b"{\"path\": \"/imported\", \"value\": \"1\"}\n";
    let cases: Vec<(Vec<&str>, &[u8])> = vec![
        (vec!["init", fresh.to_str().unwrap()], b""),
        (vec!["put", p, "/x", "1"], b""),
        (vec!["get", p, "/k/1"], b""),
        (vec!["ls", p, "/k"], b""),
        (vec!["cp", p, "/x", "/y"], b""),
        (vec!["rm", p, "/y"], b""),
        (vec!["import", p, "-"], lines),
        (vec!["export", p], b""),
        (vec!["export", p, "--format", "tree"], b""),
        (vec!["stat", p], b""),
        (vec!["verify", p], b""),
        (vec!["versions", p], b""),
        (vec!["log", p, "/k/1"], b""),
        (vec!["diff", p, "1", "40"], b""),
        (vec!["watch", p, "--from", "1", "--count", "3"], b""),
        (vec!["config", p], b""),
        (vec!["config", p, "--retain", "20"], b""),
    ];
    for (args, stdin) in &cases {
        let out = with_closed_stdout(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{}", describe(args, &out));
        assert!(!stderr.contains("panicked"), "{}", describe(args, &out));
        // A closed stdout ends a command quietly, as a success.
        assert_eq!(out.status.code(), Some(0), "{}", describe(args, &out));
    }
    // The writes were made before their output was lost.
    assert_eq!(s.get("/imported"), "1");
    assert!(ok(&["config", p]).contains("retain                   20\n"));
    assert!(fresh.join("settings").exists());
}
