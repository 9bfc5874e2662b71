//! Helpers shared by the integration tests: run the `shoal` binary, check
//! how it ended, and make a store in a temporary directory.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

pub fn run(args: &[&str]) -> Output {
    shoal().args(args).stdin(Stdio::null()).output().expect("run shoal")
}

pub fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = shoal()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "shoal {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command that must fail with exit code 1; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(args, &out));
    assert!(out.stdout.is_empty(), "{}", describe(args, &out));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("shoal: "), "{stderr}");
    stderr
}

pub struct TestStore {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestStore {
    pub fn new() -> TestStore {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let out = ok(&["init", dir.to_str().unwrap()]);
        assert!(out.contains("version 0"), "{out}");
        TestStore { _tmp: tmp, dir }
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    pub fn put(&self, path: &str, value: &str) -> u64 {
        ok(&["put", self.path(), path, value]).trim().parse().expect("put prints a version")
    }

    pub fn get(&self, path: &str) -> String {
        ok(&["get", self.path(), path])
    }
}

/// The exit code 75 (`EX_TEMPFAIL`) of a writer that found the store busy.
pub const EXIT_BUSY: i32 = 75;
