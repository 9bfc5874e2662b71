//! The small commands: init, put, get, ls, rm, cp, stat, verify, watch,
//! versions, log, diff.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use shoal::{ChangeKind, Durability, Error, Options, Reader, Snapshot, Store, WatchEvent};

use crate::args::DurabilityArg;
use crate::config::retention_summary;
use crate::time::rfc3339_utc;
use shoal_remote::{FailureKind, Op, Request};

use crate::writer::{Refused, Writer};
use crate::{bail, say, stdout_error, CliResult, Failure};

/// "no node at PATH".
pub fn no_node(path: &str) -> Failure {
    Failure::Message(format!("no node at {path}"))
}

/// The newest snapshot, or a retained older version.
pub fn snapshot(reader: &Reader, at: Option<u64>) -> CliResult<Snapshot> {
    Ok(match at {
        Some(v) => reader.snapshot_at(v)?,
        None => reader.snapshot()?,
    })
}

/// A byte count for people: "23.4 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Reads a whole file, or stdin for "-".
/// Reads a whole file, or stdin for "-", but no more than `limit + 1`
/// bytes: enough to tell that a value is too large without holding it.
pub fn read_input(file: &Path, limit: usize) -> CliResult<Vec<u8>> {
    let mut data = Vec::new();
    let cap = limit as u64 + 1;
    if file.as_os_str() == "-" {
        std::io::stdin().lock().take(cap).read_to_end(&mut data).map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        let opened = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        opened.take(cap).read_to_end(&mut data).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(data)
}

pub fn durability_of(arg: DurabilityArg) -> Durability {
    match arg {
        DurabilityArg::None => Durability::None,
        DurabilityArg::Sync => Durability::Sync,
    }
}

/// Who may read a new store (`shoal init --mode --group`).
pub struct Access {
    pub mode: u32,
    pub group: Option<u32>,
}

pub fn init(
    dir: &Path,
    durability: DurabilityArg,
    retain: u32,
    tiers: Vec<shoal::RetainTier>,
    max_value_bytes: usize,
    access: Access,
) -> CliResult {
    if access.group.is_some() && access.mode & 0o050 != 0o050 {
        bail!(
            "--group gives the store to a group, but mode {:o} does not let the group read it; add --mode 750",
            access.mode
        );
    }
    let options = Options {
        durability: durability_of(durability),
        retain_versions: retain,
        retain_tiers: tiers,
        max_value_bytes,
        mode: access.mode,
        group: access.group,
        ..Options::default()
    };
    let store = match Store::create(dir, options) {
        Ok(store) => store,
        Err(Error::AlreadyExists(at)) => {
            bail!("a shoal store already exists at {}; `shoal config` shows or changes its settings", at.display())
        }
        // Only a store (or one being created) has a writer to hold its lock.
        Err(Error::Locked { pid, .. }) => bail!(
            "a shoal store already exists at {} and its writer (pid {pid}) is running; `shoal config` shows or \
             changes its settings",
            dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let options = store.options();
    say!(
        "created store {} at version {} (durability {}, retaining {}, values up to {} bytes, mode {:o}{})",
        store.dir().display(),
        store.version(),
        if options.durability == Durability::None { "none" } else { "sync" },
        retention_summary(options),
        options.max_value_bytes,
        options.mode,
        options.group.map_or(String::new(), |g| format!(", group {g}")),
    );
    Ok(())
}

pub fn put(
    dir: &Path,
    path: &str,
    value: Option<String>,
    file: Option<std::path::PathBuf>,
    wait: Duration,
) -> CliResult {
    shoal::path::validate(path)?;
    let value = match (value, file) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(f)) => {
            // The store's limit, read without a lock, bounds what is read.
            let limit = Reader::open(dir)?.settings()?.max_value_bytes;
            let value = read_input(&f, limit)?;
            if value.len() > limit {
                bail!(
                    "the value in {} is larger than the store's limit of {limit} bytes (see `shoal config \
                     --max-value-bytes`)",
                    f.display()
                );
            }
            value
        }
        _ => bail!("give either a VALUE or --file"),
    };
    let mut writer = Writer::open(dir, wait)?;
    writer.limit_daemon_wait(wait)?;
    let version = writer.apply(&Request::Apply(vec![Op::Put { path: path.to_string(), value }]))??;
    say!("{version}");
    Ok(())
}

pub fn get(dir: &Path, path: &str, at: Option<u64>) -> CliResult {
    shoal::path::validate(path)?;
    let reader = Reader::open(dir)?;
    let snap = snapshot(&reader, at)?;
    let value = snap.get(path)?.ok_or_else(|| no_node(path))?;
    let mut out = std::io::stdout().lock();
    out.write_all(value).map_err(stdout_error)?;
    if out.is_terminal() {
        out.write_all(b"\n").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

pub fn ls(dir: &Path, path: &str, at: Option<u64>) -> CliResult {
    shoal::path::validate(path)?;
    let reader = Reader::open(dir)?;
    let snap = snapshot(&reader, at)?;
    if !snap.exists(path)? {
        return Err(no_node(path));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for name in snap.list(path)? {
        writeln!(out, "{name}").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

pub fn cp(dir: &Path, src: &str, dst: &str, recursive: bool, wait: Duration) -> CliResult {
    shoal::path::validate(src)?;
    shoal::path::validate(dst)?;
    let (src, dst) = (src.to_string(), dst.to_string());
    let op = if recursive { Op::CopyTree { src: src.clone(), dst } } else { Op::Copy { src: src.clone(), dst } };
    let mut writer = Writer::open(dir, wait)?;
    writer.limit_daemon_wait(wait)?;
    match writer.apply(&Request::Apply(vec![op]))? {
        Ok(version) => say!("{version}"),
        Err(Refused { kind: FailureKind::NoSuchPath, .. }) => return Err(no_node(&src)),
        Err(refused) => return Err(refused.into()),
    }
    Ok(())
}

pub fn rm(dir: &Path, path: &str, recursive: bool, wait: Duration) -> CliResult {
    shoal::path::validate(path)?;
    if path == "/" {
        bail!(
            "the root node cannot be deleted; to empty the store, delete its top-level nodes (see `shoal ls STORE /`)"
        );
    }
    let op = if recursive { Op::DeleteTree { path: path.to_string() } } else { Op::Delete { path: path.to_string() } };
    let mut writer = Writer::open(dir, wait)?;
    writer.limit_daemon_wait(wait)?;
    match writer.apply(&Request::Apply(vec![op]))? {
        Ok(version) => say!("{version}"),
        Err(Refused { kind: FailureKind::NoSuchPath, .. }) => return Err(no_node(path)),
        Err(Refused { kind: FailureKind::HasChildren, .. }) => {
            bail!("{path} has children; use -r to delete the subtree")
        }
        Err(refused) => return Err(refused.into()),
    }
    Ok(())
}

/// Versions newest first: all of them when few, else the newest and oldest few.
fn versions_list(versions: &[u64]) -> String {
    let shown = |vs: &[u64]| vs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if versions.len() <= 24 {
        return shown(versions);
    }
    format!(
        "{}, ... ({} more), {}",
        shown(&versions[..16]),
        versions.len() - 20,
        shown(&versions[versions.len() - 4..])
    )
}

fn versions_summary(versions: &[u64]) -> String {
    match (versions.first(), versions.last()) {
        (Some(newest), Some(oldest)) => format!("{} ({oldest}..={newest})", versions.len()),
        _ => "0".to_string(),
    }
}

/// `shoal stat STORE`: every figure from a [`Reader`], so it never takes
/// the writer lock (it writes only its reader slot) and never keeps a
/// writer from starting.
pub fn stat(dir: &Path) -> CliResult {
    let reader = Reader::open(dir)?;
    let s = reader.stat()?;
    let snap = reader.snapshot_at(s.version)?;
    let arena = reader.dir().join(shoal::internals::arena_file_name(s.generation));
    let arena_len = std::fs::metadata(&arena).map_err(|e| format!("{}: {e}", arena.display()))?.len();
    // The writer process holds a slot too (for its own snapshots): listed apart.
    let writer_pid = reader.writer_pid();
    let others: Vec<_> =
        s.readers.iter().filter(|r| Some(r.slot) != reader.slot() && Some(r.pid) != writer_pid).collect();
    let old: Vec<String> = s.old_generations.iter().map(u64::to_string).collect();
    let mut out = String::new();
    let mut line = |text: String| {
        out += &text;
        out.push('\n');
    };
    line(format!("store:              {}", reader.dir().display()));
    line(format!("version:            {}", s.version));
    line(format!("generation:         {}", s.generation));
    line(format!("keys:               {}", s.key_count));
    let writer = match writer_pid {
        Some(pid) => format!("running (pid {pid})"),
        None => "none running".to_string(),
    };
    line(format!("writer:             {writer}"));
    // A cluster's replica: the etcd revision this version holds.
    if let Some(revision) = shoal_cluster::revision_of(&snap, &shoal_cluster::Layout::new("")) {
        line(format!("cluster revision:   {revision} (etcd's, as a replica of a cluster)"));
    }
    line(format!("retention:          {}", retention_summary(&reader.settings()?)));
    line(format!("arena file size:    {} ({arena_len} bytes)", human_bytes(arena_len)));
    line(format!("arena bytes used:   {} ({} bytes)", human_bytes(s.arena_bytes), s.arena_bytes));
    line(format!("live bytes:         {} ({} bytes)", human_bytes(s.live_bytes), s.live_bytes));
    line(format!("journal bytes:      {}", s.journal_bytes));
    line(format!("readable versions:  {}", versions_summary(&snap.versions()?)));
    line(format!(
        "retained versions:  {} (kept by the next compaction): {}",
        s.retained_versions.len(),
        versions_list(&s.retained_versions)
    ));
    line(format!("old generations:    {}", if old.is_empty() { "none".into() } else { old.join(", ") }));
    line(format!("live readers:       {}", others.len()));
    for r in &others {
        line(format!("  pid {:<8} pinned version {} (generation {})", r.pid, r.pinned_version, r.pinned_generation));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).map_err(stdout_error)
}

/// `shoal verify STORE`
pub fn verify(dir: &Path) -> CliResult {
    let reader = Reader::open(dir)?;
    let snap = reader.snapshot()?;
    snap.verify()?;
    say!("version {}: {} nodes, every checksum intact", snap.version(), snap.key_count());
    Ok(())
}

fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Set => "set",
        ChangeKind::Delete => "delete",
        ChangeKind::DeleteTree => "delete-tree",
        ChangeKind::CopyTree => "copy-tree",
    }
}

/// `shoal watch STORE [PREFIX] [--from V] [--count N]`
pub fn watch(dir: &Path, prefix: &str, from: Option<u64>, count: Option<u64>) -> CliResult {
    shoal::path::validate(prefix)?;
    let reader = Reader::open(dir)?;
    let mut watch = match from {
        Some(v) => reader.watch_from(prefix, v)?,
        None => reader.watch(prefix)?,
    };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        // A writer may come and go; the watch sleeps until it publishes.
        for event in watch.wait(std::time::Duration::from_secs(1))? {
            match event {
                WatchEvent::Change { version, path, kind } => {
                    writeln!(out, "{version} {} {path}", kind_name(kind)).map_err(stdout_error)?;
                    printed += 1;
                }
                WatchEvent::Resync { from, to, changes } => {
                    writeln!(out, "resync {from} {to}").map_err(stdout_error)?;
                    for (path, kind) in changes {
                        writeln!(out, "{to} {} {path}", kind_name(kind)).map_err(stdout_error)?;
                        printed += 1;
                    }
                }
            }
            out.flush().map_err(stdout_error)?;
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
    }
}

/// `shoal versions STORE`
pub fn versions(dir: &Path) -> CliResult {
    let reader = Reader::open(dir)?;
    let mut out = std::io::stdout().lock();
    for v in reader.snapshot()?.history()? {
        writeln!(out, "{}\t{}\t{} nodes", v.version, rfc3339_utc(v.commit_time_ns), v.key_count)
            .map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

/// `shoal log STORE PATH`
pub fn log(dir: &Path, path: &str) -> CliResult {
    shoal::path::validate(path)?;
    let reader = Reader::open(dir)?;
    let snap = reader.snapshot()?;
    let log = snap.log(path)?;
    if log.is_empty() {
        let versions = snap.versions()?;
        let oldest = versions.last().copied().unwrap_or(snap.version());
        bail!("no retained version has a node at {path} (retained versions: {oldest}..={})", snap.version());
    }
    let mut out = std::io::stdout().lock();
    for (v, kind) in log {
        writeln!(out, "{}\t{}\t{}", v.version, rfc3339_utc(v.commit_time_ns), kind_name(kind)).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

/// `shoal diff STORE FROM TO [PREFIX]`
pub fn diff(dir: &Path, from: u64, to: u64, prefix: &str) -> CliResult {
    shoal::path::validate(prefix)?;
    let reader = Reader::open(dir)?;
    let (old, new) = (reader.snapshot_at(from)?, reader.snapshot_at(to)?);
    let mut out = std::io::stdout().lock();
    for (path, kind) in old.diff(&new, prefix)?.changes {
        writeln!(out, "{} {path}", kind_name(kind)).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}
