//! `shoal demo`: load a xenstore-shaped tree, then commit small transactions
//! while reader processes take snapshots and check an invariant that holds
//! only in complete versions.
//!
//! The invariant: the writer updates `/local/domain/<d>/data/updated` (to a
//! per-domain counter `c`) and `/local/domain/<d>/memory/target` (to
//! `TARGET_BASE + c`) in one transaction. A reader that ever saw one without
//! the other (a torn or partly published version) would find them
//! disagreeing. Readers also check that versions never go backwards and that
//! `/local/domain/<d>/name` is `vm-<d>`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shoal::{Durability, Options, Reader, Snapshot, Store};

use crate::commands::human_bytes;
use crate::{bail, say, CliResult, Failure};

/// `memory/target` is this plus the domain's update counter (KiB: 1 GiB).
const TARGET_BASE: u64 = 1 << 20;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable UUID-looking string for domain `i`.
fn uuid_of(i: u32) -> String {
    let a = splitmix64(u64::from(i));
    let b = splitmix64(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// The values of one domain, as xenstore lays them out.
fn domain_entries(i: u32, out: &mut Vec<(String, String)>) {
    let base = format!("/local/domain/{i}");
    let mut add = |rel: &str, value: String| out.push((format!("{base}/{rel}"), value));
    add("name", format!("vm-{i}"));
    add("domid", i.to_string());
    add("vm", format!("/vm/{}", uuid_of(i)));
    add("memory/target", TARGET_BASE.to_string());
    add("memory/static-max", (2 * TARGET_BASE).to_string());
    add("cpu/0/availability", "online".into());
    add("cpu/1/availability", "online".into());
    add("device/vif/0/state", "4".into());
    add("device/vif/0/backend", format!("/local/domain/0/backend/vif/{i}/0"));
    add("device/vbd/768/state", "4".into());
    add("device/vbd/768/backend", format!("/local/domain/0/backend/vbd/{i}/768"));
    add("control/shutdown", String::new());
    add("data/updated", "0".into());
}

/// "12.3 M", "45.6 k", "789".
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Checks that `dir`, given with `--dir`, is new or empty: the demo never
/// deletes or overwrites a directory it did not create.
fn check_dir(dir: &Path) -> CliResult {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!("{}: {e}", dir.display()),
        Ok(true) => Ok(()),
        Ok(false) => bail!(
            "{} exists and is not empty; give a new or empty directory (the demo deletes nothing it did not create)",
            dir.display()
        ),
    }
}

/// One spawned `shoal demo-reader` process.
struct ReaderProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ReaderProcess {
    fn spawn(exe: &Path, dir: &Path, seconds: f64, domains: u32) -> CliResult<ReaderProcess> {
        let mut child = Command::new(exe)
            .arg("demo-reader")
            .arg(dir)
            .args(["--seconds", &seconds.to_string(), "--domains", &domains.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        match stdout {
            Some(stdout) => Ok(ReaderProcess { child, stdin, stdout }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("reader process has no stdout")
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_string()),
            _ => None,
        }
    }

    fn go(&mut self) -> bool {
        self.stdin.as_mut().is_some_and(|s| s.write_all(b"go\n").and_then(|()| s.flush()).is_ok())
    }

    /// Waits for the summary line and the exit.
    fn finish(mut self) -> Result<Value, String> {
        self.stdin = None;
        let mut summary = None;
        while let Some(line) = self.read_line() {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
                summary = Some(v);
            }
        }
        let status = self.child.wait().map_err(|e| format!("waiting: {e}"))?;
        match summary {
            Some(v) if status.success() => Ok(v),
            Some(v) => Err(format!("exited with {status} after reporting {v}")),
            None => Err(format!("exited with {status} without a summary")),
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct WritePhase {
    commits: u64,
    secs: f64,
    /// Live readers seen half-way, with the head version then.
    mid: Option<(Vec<shoal::ReaderInfo>, u64)>,
}

fn write_phase(store: &Store, domains: u32, seconds: f64) -> CliResult<WritePhase> {
    let mut rng = SmallRng::from_entropy();
    let mut counters = vec![0u64; domains as usize];
    let deadline = Duration::from_secs_f64(seconds);
    let mut updated = String::with_capacity(64);
    let mut target = String::with_capacity(64);
    let mut mid = None;
    let mut commits = 0u64;
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            break;
        }
        if mid.is_none() && elapsed >= deadline / 2 {
            mid = Some((store.readers()?, store.version()));
        }
        let d = rng.gen_range(0..domains);
        let counter = &mut counters[d as usize];
        *counter += 1;
        updated.clear();
        target.clear();
        let _ = write!(updated, "/local/domain/{d}/data/updated");
        let _ = write!(target, "/local/domain/{d}/memory/target");
        let mut txn = store.begin();
        txn.put(&updated, counter.to_string())?;
        txn.put(&target, (TARGET_BASE + *counter).to_string())?;
        txn.commit()?;
        commits += 1;
    }
    Ok(WritePhase { commits, secs: start.elapsed().as_secs_f64(), mid })
}

pub fn demo(dir: Option<PathBuf>, keep: bool, domains: u32, readers: u32, seconds: f64) -> CliResult {
    if domains == 0 {
        bail!("--domains must be at least 1");
    }
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        bail!("--seconds must be more than 0 and at most 3600");
    }
    // By default a new directory only this user can open, with an
    // unpredictable name: a fixed path in a shared temporary directory could
    // be prepared by someone else.
    let (temporary, dir) = match dir {
        Some(dir) => {
            check_dir(&dir)?;
            (None, dir)
        }
        None => {
            use std::os::unix::fs::PermissionsExt;
            // tempfile leaves the mode to the umask (often 0755).
            let tmp = tempfile::Builder::new()
                .prefix("shoal-demo-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| format!("creating a temporary directory: {e}"))?;
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    };
    let result = run(&dir, domains, readers, seconds);
    match temporary {
        Some(tmp) if keep => {
            let kept = tmp.keep();
            say!("kept:    {} (--keep; remove it when done)", kept.display());
        }
        // Dropped: removed, store and all, whether the run succeeded or not.
        Some(tmp) => drop(tmp),
        None => say!("kept:    {} (--dir)", dir.display()),
    }
    result
}

fn run(dir: &Path, domains: u32, readers: u32, seconds: f64) -> CliResult {
    say!("shoal demo: {domains} domains, {readers} reader processes, {seconds} s of commits");
    let options = Options { durability: Durability::None, ..Options::default() };
    let store = Store::create(dir, options)?;
    say!(
        "store:   {} (durability none: commits are not fsynced; they survive a crash of this process, not a power loss)",
        dir.display()
    );

    // (1) Load.
    let mut items = Vec::with_capacity(domains as usize * 13);
    for i in 0..domains {
        domain_entries(i, &mut items);
    }
    let t = Instant::now();
    let version = store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_bytes())))?;
    let load_secs = t.elapsed().as_secs_f64();
    let stat = store.stat()?;
    say!(
        "load:    {} values ({} nodes with their parents) as version {version} in {load_secs:.3} s = {} values/s; arena {}",
        items.len(),
        stat.key_count,
        rate(items.len() as f64 / load_secs.max(1e-9)),
        human_bytes(stat.arena_bytes),
    );
    drop(items);

    // (2) Readers: start, wait until each has a snapshot, then let them all go with the writer.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut procs: Vec<ReaderProcess> = Vec::new();
    let mut started = Ok(());
    for _ in 0..readers {
        match ReaderProcess::spawn(&exe, dir, seconds, domains) {
            Ok(mut p) => match p.read_line().as_deref() {
                Some("ready") => procs.push(p),
                other => {
                    started = Err(format!("a reader process did not start (said {other:?})"));
                    p.kill();
                    break;
                }
            },
            Err(e) => {
                started = Err(match e {
                    Failure::Message(m) | Failure::Busy(m) | Failure::NothingFree(m) => m,
                    Failure::BrokenPipe => "broken pipe".into(),
                });
                break;
            }
        }
    }
    if started.is_ok() && !procs.iter_mut().all(ReaderProcess::go) {
        started = Err("a reader process exited before it was told to go".into());
    }
    if let Err(e) = started {
        procs.into_iter().for_each(ReaderProcess::kill);
        bail!("{e}");
    }

    // (3) Commit while they read.
    let written = write_phase(&store, domains, seconds);
    let results: Vec<(u32, Result<Value, String>)> = procs.into_iter().map(|p| (p.child.id(), p.finish())).collect();
    let written = written?;
    say!(
        "writes:  {} commits in {:.2} s = {} commits/s (each one transaction updating 2 keys of a random domain)",
        written.commits,
        written.secs,
        rate(written.commits as f64 / written.secs.max(1e-9)),
    );
    if let Some((live, head)) = &written.mid {
        let pins: Vec<String> = live.iter().map(|r| format!("pid {} at v{}", r.pid, r.pinned_version)).collect();
        say!(
            "mid-run: head v{head}; {} live readers in the reader table ({})",
            live.len(),
            if pins.is_empty() { "none".into() } else { pins.join(", ") }
        );
    }

    // (4) Report.
    let mut violations = 0u64;
    let mut snapshots = 0u64;
    let mut failed = Vec::new();
    for (n, (pid, result)) in results.iter().enumerate() {
        match result {
            Ok(s) => {
                let num = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
                let float = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                violations += num("violations");
                snapshots += num("snapshots");
                say!(
                    "reader {} (pid {pid}): {} snapshots, {} gets in {:.2} s = {} gets/s; {} distinct versions (v{}..=v{}); {} violations",
                    n + 1,
                    num("snapshots"),
                    num("gets"),
                    float("seconds"),
                    rate(float("reads_per_sec")),
                    num("distinct_versions"),
                    num("min_version"),
                    num("max_version"),
                    num("violations"),
                );
                if let Some(first) = s.get("first_violation").and_then(Value::as_str) {
                    say!("  first violation: {first}");
                }
            }
            Err(e) => {
                say!("reader {} (pid {pid}): FAILED: {e}", n + 1);
                failed.push(*pid);
            }
        }
    }
    let fin = store.stat()?;
    say!(
        "final:   v{}, generation {} ({} automatic compactions), {} nodes, arena {} used (live {}), {} live readers now",
        fin.version,
        fin.generation,
        fin.generation - stat.generation,
        fin.key_count,
        human_bytes(fin.arena_bytes),
        human_bytes(fin.live_bytes),
        fin.readers.len(),
    );
    if violations > 0 || !failed.is_empty() {
        say!("result:  FAILED: {violations} violations, {} reader processes failed", failed.len());
        bail!("demo failed: {violations} invariant violations, {} reader processes failed", failed.len());
    }
    say!("result:  OK: 0 violations in {snapshots} snapshots checked by {} reader processes", results.len());
    Ok(())
}

/// What one demo reader measured.
#[derive(Default)]
struct ReaderTally {
    snapshots: u64,
    gets: u64,
    distinct: u64,
    min: u64,
    max: u64,
    violations: u64,
    first_violation: Option<String>,
}

impl ReaderTally {
    fn violation(&mut self, what: impl FnOnce() -> String) {
        self.violations += 1;
        if self.first_violation.is_none() {
            self.first_violation = Some(what());
        }
    }
}

fn read_value<'s>(snap: &'s Snapshot, buf: &mut String, d: u32, leaf: &str) -> CliResult<Option<&'s [u8]>> {
    buf.clear();
    let _ = write!(buf, "/local/domain/{d}/{leaf}");
    Ok(snap.get(buf)?)
}

fn as_u64(v: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(v?).ok()?.parse().ok()
}

/// Checks one snapshot; returns the number of point reads made.
fn check(snap: &Snapshot, d: u32, buf: &mut String, tally: &mut ReaderTally) -> CliResult<u64> {
    let v = snap.version();
    let updated = as_u64(read_value(snap, buf, d, "data/updated")?);
    let target = as_u64(read_value(snap, buf, d, "memory/target")?);
    match (updated, target) {
        (Some(u), Some(t)) if t == TARGET_BASE + u => {}
        (u, t) => tally.violation(|| format!("v{v} domain {d}: data/updated={u:?} but memory/target={t:?}")),
    }
    let name = read_value(snap, buf, d, "name")?;
    let expected = format!("vm-{d}");
    if name != Some(expected.as_bytes()) {
        tally.violation(|| format!("v{v} domain {d}: name={:?}", name.map(String::from_utf8_lossy)));
    }
    Ok(3)
}

pub fn reader(dir: &Path, seconds: f64, domains: u32) -> CliResult {
    if domains == 0 {
        bail!("--domains must be at least 1");
    }
    let reader = Reader::open(dir)?;
    reader.snapshot()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").and_then(|()| out.flush())?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("demo-reader: expected \"go\" on stdin");
    }

    let mut rng = SmallRng::from_entropy();
    let mut tally = ReaderTally { min: u64::MAX, ..ReaderTally::default() };
    let mut buf = String::with_capacity(64);
    let mut last = 0u64;
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    loop {
        if tally.snapshots.is_multiple_of(64) && start.elapsed() >= deadline {
            break;
        }
        let snap = reader.snapshot()?;
        let v = snap.version();
        tally.snapshots += 1;
        if v < last {
            tally.violation(|| format!("version went backwards: v{last} then v{v}"));
        }
        if v != last || tally.snapshots == 1 {
            tally.distinct += 1;
        }
        last = v;
        tally.min = tally.min.min(v);
        tally.max = tally.max.max(v);
        let d = rng.gen_range(0..domains);
        let gets = check(&snap, d, &mut buf, &mut tally)?;
        tally.gets += gets;
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = json!({
        "pid": std::process::id(),
        "snapshots": tally.snapshots,
        "gets": tally.gets,
        "distinct_versions": tally.distinct,
        "min_version": if tally.snapshots == 0 { 0 } else { tally.min },
        "max_version": tally.max,
        "violations": tally.violations,
        "first_violation": tally.first_violation,
        "seconds": secs,
        "reads_per_sec": tally.gets as f64 / secs.max(1e-9),
        "snapshots_per_sec": tally.snapshots as f64 / secs.max(1e-9),
    });
    writeln!(out, "{summary}").and_then(|()| out.flush())?;
    Ok(())
}
