//! Helpers for shoal's process-level tests: child processes that read,
//! write or pin a store, and the plumbing to start, read and kill them.
//!
//! The child binaries live in `src/bin/`; integration tests in `tests/`
//! find them through `CARGO_BIN_EXE_<name>`.

pub mod etcd;
pub mod history;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A child process whose stdout we read line by line.
pub struct ChildProcess {
    pub child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
}

impl ChildProcess {
    pub fn spawn(binary: &str, args: &[&str]) -> ChildProcess {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        ChildProcess { child, lines: BufReader::new(stdout).lines(), stdin }
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to child");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child printed, or `None` at end of output.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.next().and_then(Result::ok)
    }

    /// Reads lines until one starts with `prefix`; returns it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            match self.next_line() {
                Some(line) if line.starts_with(prefix) => return line,
                Some(_) => continue,
                None => panic!("child exited before printing {prefix:?}"),
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.lines.by_ref().map_while(Result::ok).collect()
    }

    /// Closes stdin, waits for exit; returns the remaining output and whether it succeeded.
    pub fn finish(mut self) -> (Vec<String>, bool) {
        self.stdin = None;
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let status = self.child.wait().expect("wait");
        (rest, status.success())
    }
}

/// Parses `key=value` pairs from a child's report line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}
