//! Worker processes: the harness re-executes its own binary with the hidden
//! subcommand `__worker <job as JSON>`. A worker talks over lines: it prints
//! `ready` once set up, then answers commands read from stdin.
//!
//! Jobs:
//! * `reads`: random point reads (or, with `scan_keys`, ordered scans). `go <ms>` →
//!   `done <keys read> <ns> <checksum>`.
//! * `watch`: observes versions; prints `seen <version> <monotonic ns>` per new version.
//! * `memory`: reads the whole dataset and holds it; `ready <bytes>`, then waits for `quit`.
//! * `reopen`: prints `reopen <ns>` (open → first read) and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::dataset::{Spec, SCAN_PREFIX};
use crate::engines::{self, Reopen};
use crate::Result;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__worker";

/// Nanoseconds of CLOCK_MONOTONIC: comparable across processes on the host.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A running worker process.
pub struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl WorkerProc {
    pub fn spawn(job: &Value) -> Result<WorkerProc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(job.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no worker stdout")?);
        let what =
            format!("{} worker for {}", job["job"].as_str().unwrap_or("?"), job["engine"].as_str().unwrap_or("?"));
        Ok(WorkerProc { child, stdin, stdout, what })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("worker stdin closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// The next line the worker prints, split into words.
    pub fn recv(&mut self) -> Result<Vec<String>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            return Err(format!("{} exited early ({status})", self.what).into());
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.first().map(String::as_str) == Some("error") {
            return Err(format!("{}: {}", self.what, line.trim_start_matches("error").trim()).into());
        }
        Ok(words)
    }

    /// Waits for a line starting with `word`; returns the words after it.
    pub fn expect(&mut self, word: &str) -> Result<Vec<String>> {
        let words = self.recv()?;
        match words.split_first() {
            Some((first, rest)) if first == word => Ok(rest.to_vec()),
            _ => Err(format!("{}: expected {word:?}, got {words:?}", self.what).into()),
        }
    }

    /// Asks the worker to quit and waits for it.
    pub fn finish(mut self) -> Result<()> {
        let _ = self.send("quit");
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("{} failed ({status})", self.what).into());
        }
        Ok(())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // A worker that finished already is reaped; one still running after
        // its stdin closed is stopped (our own child, by its handle).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec_json(spec: &Spec) -> Value {
    json!({ "keys": spec.keys, "value_size": spec.value_size, "seed": spec.seed })
}

fn spec_of(job: &Value) -> Result<Spec> {
    let s = &job["spec"];
    Ok(Spec {
        keys: s["keys"].as_u64().ok_or("spec.keys")? as usize,
        value_size: s["value_size"].as_u64().ok_or("spec.value_size")? as usize,
        seed: s["seed"].as_u64().ok_or("spec.seed")?,
    })
}

pub fn reads_job(engine: &str, location: &str, spec: &Spec, stream: u64, pool: usize, batch: usize) -> Value {
    json!({ "job": "reads", "engine": engine, "location": location, "spec": spec_json(spec),
            "stream": stream, "pool": pool, "batch": batch })
}

pub fn watch_job(engine: &str, location: &str, poll: bool) -> Value {
    json!({ "job": "watch", "engine": engine, "location": location, "poll": poll })
}

/// The sleeper of the futex floor: waits on the word in the file at `path`.
pub fn futex_job(path: &std::path::Path) -> Value {
    json!({ "job": "futex", "engine": "none", "location": path.display().to_string() })
}

pub fn memory_job(engine: &str, location: &str, owner: bool) -> Value {
    json!({ "job": "memory", "engine": engine, "location": location, "owner": owner })
}

pub fn with_spec(mut job: Value, spec: &Spec) -> Value {
    job["spec"] = spec_json(spec);
    job
}

/// Runs a `reopen` worker and returns what it measured.
pub fn reopen(engine: &str, location: &str, mode: Reopen, key: &str) -> Result<Duration> {
    let mode = match mode {
        Reopen::Owner => "owner",
        Reopen::Reader => "reader",
    };
    let job = json!({ "job": "reopen", "engine": engine, "location": location, "mode": mode, "key": key });
    let mut w = WorkerProc::spawn(&job)?;
    let ns: u64 = w.expect("reopen")?.first().ok_or("reopen: no figure")?.parse()?;
    w.finish()?;
    Ok(Duration::from_nanos(ns))
}

/// The worker side: runs `job`, talking over stdin/stdout.
pub fn main(job: &str) -> Result<()> {
    let job: Value = serde_json::from_str(job)?;
    let engine = job["engine"].as_str().ok_or("job.engine")?;
    let location = job["location"].as_str().ok_or("job.location")?;
    let out = std::io::stdout();
    let say = |line: String| -> Result<()> {
        let mut out = out.lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    let result = (|| -> Result<()> {
        match job["job"].as_str() {
            Some("reads") => {
                let spec = spec_of(&job)?;
                let pool = job["pool"].as_u64().ok_or("pool")? as usize;
                let batch = job["batch"].as_u64().ok_or("batch")? as usize;
                // Non-zero: ordered scans of this many keys instead of point reads.
                let scan_keys = job["scan_keys"].as_u64().unwrap_or(0) as usize;
                // The random keys are built before any timing, the same for every engine.
                let keys = spec.random_keys(job["stream"].as_u64().ok_or("stream")?, pool);
                let mut session = engines::open_reader(engine, location)?;
                say("ready".into())?;
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    let line = line?;
                    let mut words = line.split_whitespace();
                    match words.next() {
                        Some("go") => {
                            let ms: u64 = words.next().ok_or("go: no duration")?.parse()?;
                            let window = Duration::from_millis(ms);
                            let (mut done, mut bytes, mut at) = (0u64, 0u64, 0usize);
                            let start = Instant::now();
                            loop {
                                if scan_keys > 0 {
                                    let n = session.scan(SCAN_PREFIX, scan_keys)?;
                                    if n != scan_keys {
                                        return Err(format!("the scan saw {n} of {scan_keys} keys").into());
                                    }
                                    done += n as u64;
                                } else {
                                    let end = (at + batch).min(keys.len());
                                    let chunk = &keys[at..end];
                                    let (found, b) = session.get_batch(chunk)?;
                                    if found != chunk.len() {
                                        let missing = chunk.len() - found;
                                        return Err(format!("{missing} of {} keys missing", chunk.len()).into());
                                    }
                                    done += chunk.len() as u64;
                                    bytes = bytes.wrapping_add(b);
                                    at = if end == keys.len() { 0 } else { end };
                                }
                                if start.elapsed() >= window {
                                    break;
                                }
                            }
                            let ns = start.elapsed().as_nanos();
                            say(format!("done {done} {ns} {bytes}"))?;
                        }
                        Some("quit") | None => break,
                        Some(other) => return Err(format!("unknown command {other:?}").into()),
                    }
                }
                Ok(())
            }
            Some("watch") => {
                let mut session = engines::open_reader(engine, location)?;
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = stop.clone();
                // A thread waits for `quit` (or EOF) so the watch loop can poll a flag.
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut line);
                    stop2.store(true, Ordering::Relaxed);
                });
                let mut failed = None;
                let mut ready = || {
                    if let Err(e) = say("ready".into()) {
                        failed = Some(e);
                    }
                };
                let mut seen = |version| {
                    let t = monotonic_ns();
                    let _ = say(format!("seen {version} {t}"));
                };
                if job["poll"].as_bool() == Some(true) {
                    session.poll(&mut ready, &stop, &mut seen)?;
                } else {
                    session.watch(&mut ready, &stop, &mut seen)?;
                }
                failed.map_or(Ok(()), Err)
            }
            Some("futex") => {
                let word = crate::futex::SharedWord::open(std::path::Path::new(location))?;
                // The parent created the word as 0 and bumps it once per sample.
                let mut last = 0;
                say("ready".into())?;
                loop {
                    let now = word.wait_change(last);
                    let t = monotonic_ns();
                    if crate::futex::SharedWord::is_stop(now) {
                        return Ok(());
                    }
                    last = now;
                    say(format!("seen {now} {t}"))?;
                }
            }
            Some("memory") => {
                let spec = spec_of(&job)?;
                let mut session = if job["owner"].as_bool() == Some(true) {
                    engines::open_owner(engine, location)?
                } else {
                    engines::open_reader(engine, location)?
                };
                let bytes = session.read_all_and_hold(&spec)?;
                say(format!("ready {bytes}"))?;
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
                drop(session);
                Ok(())
            }
            Some("reopen") => {
                let mode = match job["mode"].as_str() {
                    Some("owner") => Reopen::Owner,
                    _ => Reopen::Reader,
                };
                let key = job["key"].as_str().ok_or("job.key")?;
                let elapsed = engines::reopen_here(engine, location, mode, key)?;
                say(format!("reopen {}", elapsed.as_nanos()))
            }
            other => Err(format!("unknown job {other:?}").into()),
        }
    })();
    if let Err(e) = &result {
        let _ = say(format!("error {}", e.to_string().replace('\n', " ")));
    }
    result
}
