//! The small commands: init, put, get, ls, rm, stat, verify, watch.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use shoal::{ChangeKind, Durability, Error, Options, Reader, Snapshot, Store, WatchEvent};

use crate::{bail, stdout_error, CliResult, DurabilityArg, Failure};

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
pub fn read_input(file: &Path) -> CliResult<Vec<u8>> {
    let mut data = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut data).map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(data)
}

pub fn init(
    dir: &Path,
    durability: DurabilityArg,
    retain: u32,
    tiers: Vec<shoal::RetainTier>,
    max_value_bytes: usize,
) -> CliResult {
    if Reader::open(dir).is_ok() {
        bail!("a store already exists at {}", dir.display());
    }
    let options = Options {
        create: true,
        durability: match durability {
            DurabilityArg::None => Durability::None,
            DurabilityArg::Sync => Durability::Sync,
        },
        retain_versions: retain,
        retain_tiers: tiers,
        max_value_bytes,
        ..Options::default()
    };
    let store = Store::open(dir, options.clone())?;
    let shown = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    println!(
        "created store {} at version {} (durability {}, retaining {}, values up to {max_value_bytes} bytes)",
        shown.display(),
        store.version(),
        if options.durability == Durability::None { "none" } else { "sync" },
        retention_summary(&options),
    );
    Ok(())
}

pub fn put(dir: &Path, path: &str, value: Option<String>, file: Option<std::path::PathBuf>) -> CliResult {
    let value = match (value, file) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(f)) => read_input(&f)?,
        _ => bail!("give either a VALUE or --file"),
    };
    shoal::path::validate(path)?;
    let store = Store::open_existing(dir)?;
    let mut txn = store.begin();
    txn.put(path, &value)?;
    let version = txn.commit()?;
    println!("{version}");
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

pub fn cp(dir: &Path, src: &str, dst: &str, recursive: bool) -> CliResult {
    shoal::path::validate(src)?;
    shoal::path::validate(dst)?;
    let store = Store::open_existing(dir)?;
    let mut txn = store.begin();
    let copied = if recursive { txn.copy_tree(src, dst) } else { txn.copy(src, dst) };
    match copied {
        Ok(()) => {}
        Err(Error::NoSuchPath { .. }) => return Err(no_node(src)),
        Err(e) => return Err(e.into()),
    }
    println!("{}", txn.commit()?);
    Ok(())
}

pub fn rm(dir: &Path, path: &str, recursive: bool) -> CliResult {
    shoal::path::validate(path)?;
    let store = Store::open_existing(dir)?;
    let mut txn = store.begin();
    let existed = if recursive {
        txn.delete_tree(path)?
    } else {
        match txn.delete(path) {
            Ok(existed) => existed,
            Err(Error::HasChildren { .. }) => bail!("{path} has children; use -r to delete the subtree"),
            Err(e) => return Err(e.into()),
        }
    };
    if !existed {
        return Err(no_node(path));
    }
    let version = txn.commit()?;
    println!("{version}");
    Ok(())
}

/// The retention policy in words: "16 older versions, one per 1m for 1h".
fn retention_summary(options: &Options) -> String {
    let mut out = format!("{} older versions", options.retain_versions);
    for t in &options.retain_tiers {
        let every = shoal::retention::format_duration(t.every);
        let within = shoal::retention::format_duration(t.within);
        out += &if t.every.is_zero() {
            format!(", every version for {within}")
        } else {
            format!(", one per {every} for {within}")
        };
    }
    out
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

pub fn stat(dir: &Path, reader_only: bool) -> CliResult {
    let mut out = String::new();
    {
        let reader = Reader::open(dir)?;
        let snap = reader.snapshot()?;
        let arena = dir.join(shoal::internals::arena_file_name(snap.generation()));
        let arena_len = std::fs::metadata(&arena).map_err(|e| format!("{}: {e}", arena.display()))?.len();
        let shown = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        out += &format!("store:              {}\n", shown.display());
        out += &format!("version:            {}\n", snap.version());
        out += &format!("generation:         {}\n", snap.generation());
        out += &format!("keys:               {}\n", snap.key_count());
        out += &format!("arena file size:    {} ({arena_len} bytes)\n", human_bytes(arena_len));
        out += &format!("readable versions:  {}\n", versions_summary(&snap.versions()?));
        let others: Vec<_> = reader.readers()?.into_iter().filter(|r| r.slot != reader.slot()).collect();
        out += &format!("live readers:       {}\n", others.len());
        for r in &others {
            out += &format!(
                "  pid {:<8} pinned version {} (generation {})\n",
                r.pid, r.pinned_version, r.pinned_generation
            );
        }
    }
    print!("{out}");
    if !reader_only {
        let mut out = String::new();
        match Store::open_existing(dir) {
            Ok(store) => {
                let s = store.stat()?;
                out += "writer:             none running; opened the store to read the figures below\n";
                out += &format!("arena bytes used:   {} ({} bytes)\n", human_bytes(s.arena_bytes), s.arena_bytes);
                out += &format!("live bytes:         {} ({} bytes)\n", human_bytes(s.live_bytes), s.live_bytes);
                out += &format!("journal bytes:      {}\n", s.journal_bytes);
                out += &format!("retention:          {}\n", retention_summary(store.options()));
                out += &format!(
                    "retained versions:  {} (kept by the next compaction): {}\n",
                    s.retained_versions.len(),
                    versions_list(&s.retained_versions)
                );
                let old: Vec<String> = s.old_generations.iter().map(u64::to_string).collect();
                out +=
                    &format!("old generations:    {}\n", if old.is_empty() { "none".into() } else { old.join(", ") });
                if let Some(spare) = s.spare_generation {
                    out += &format!("spare file:         generation {spare} (the next compaction rewrites it)\n");
                }
            }
            Err(Error::Locked { pid, .. }) => {
                out += &format!("writer:             running (pid {pid}); writer-only figures not shown\n");
            }
            Err(e) => return Err(e.into()),
        }
        print!("{out}");
    }
    Ok(())
}

/// `shoal verify STORE`
pub fn verify(dir: &Path) -> CliResult {
    let reader = Reader::open(dir)?;
    let snap = reader.snapshot()?;
    snap.verify()?;
    println!("version {}: {} nodes, every checksum intact", snap.version(), snap.key_count());
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

/// A commit time as Unix seconds with milliseconds.
fn unix_seconds(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000_000)
}

/// `shoal versions STORE`
pub fn versions(dir: &Path) -> CliResult {
    let reader = Reader::open(dir)?;
    let mut out = std::io::stdout().lock();
    for v in reader.snapshot()?.history()? {
        writeln!(out, "{}\t{}\t{} nodes", v.version, unix_seconds(v.commit_time_ns), v.key_count)
            .map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

/// `shoal log STORE PATH`
pub fn log(dir: &Path, path: &str) -> CliResult {
    shoal::path::validate(path)?;
    let reader = Reader::open(dir)?;
    let mut out = std::io::stdout().lock();
    for (v, kind) in reader.snapshot()?.log(path)? {
        writeln!(out, "{}\t{}\t{}", v.version, unix_seconds(v.commit_time_ns), kind_name(kind))
            .map_err(stdout_error)?;
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
