//! The command line: commands, flags and the parsers of their values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "shoal", version, about = "A shared-memory, zero-copy, versioned tree store")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// No journal: fast, survives a crash of the writer process but not a power loss.
    None,
    /// Every commit is on disk (journal fdatasync) before it returns.
    Sync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line: {"path": ..., "value": ...}.
    Lines,
    /// One nested JSON object; a node's own value is under the key "@value".
    Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Detect from the input (JSON lines if the first line is an object with a "path" string).
    Auto,
    /// One {"path": ..., "value": ...} object per line.
    Lines,
    /// One nested object; keys are child names, "@value" a node's own value.
    Tree,
}

/// The longest a writer may be told to wait for the lock: a day. Longer
/// waits are almost certainly a typo, and `Duration::from_secs_f64` must not
/// be handed an arbitrary float.
pub const MAX_WAIT_SECONDS: f64 = 86_400.0;

/// How a writing command waits for another writer to release the store.
#[derive(Args, Clone, Copy, Debug)]
pub struct WaitArgs {
    /// Wait up to this many seconds (fractions allowed, at most 86400) for another writer to
    /// release the store; if it does not, exit with code 75.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_wait)]
    pub wait: Duration,
    /// Do not wait for another writer: exit with code 75 at once if the store is busy.
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
}

impl WaitArgs {
    pub fn lock_wait(self) -> Duration {
        if self.no_wait {
            Duration::ZERO
        } else {
            self.wait
        }
    }
}

/// Parses `--wait`: seconds, fractions allowed, from 0 to [`MAX_WAIT_SECONDS`].
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=MAX_WAIT_SECONDS).contains(&seconds) {
        return Err(format!("{text:?}: expected from 0 to {MAX_WAIT_SECONDS} seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The largest `--batch-bytes`: room for the largest value a store accepts
/// (1 GiB) with its path, and a batch's journal record (at most 8 bytes of
/// framing per entry, which the per-entry charge covers) stays below the
/// journal's 4 GiB record limit.
pub const MAX_BATCH_BYTES: u64 = 2 << 30;

/// Parses a byte size for people: `65536`, `512KiB`, `64MiB`, `1.5GiB`, `64M`
/// (K, M, G, T and their `iB` forms are powers of 1024; kB, MB, GB, TB
/// powers of 1000; units in any case, a space allowed before them).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, or kB, MB, GB, TB)")),
    };
    let bad_number = || format!("{text:?}: expected a size such as 65536, 512KiB or 64MiB");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(bad_number());
    }
    let too_large = || format!("{text:?} is too large");
    let digits = |s: &str| if s.is_empty() { Ok(0u128) } else { s.parse::<u128>().map_err(|_| too_large()) };
    if fraction.len() > 18 {
        return Err(bad_number());
    }
    // Exact integer arithmetic, so that no float rounding decides a limit:
    // "1.5GiB" is (15 * 2^30) / 10.
    let scale = 10u128.pow(fraction.len() as u32);
    let scaled = digits(whole)?
        .checked_mul(scale)
        .and_then(|w| w.checked_add(digits(fraction).ok()?))
        .and_then(|n| n.checked_mul(u128::from(multiplier)))
        .ok_or_else(too_large)?;
    if scaled % scale != 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    let bytes = u64::try_from(scaled / scale).map_err(|_| too_large())?;
    Ok(bytes)
}

/// Parses `--batch-bytes`: a byte size from 1 to [`MAX_BATCH_BYTES`].
pub fn parse_batch_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_byte_size(text)?;
    if bytes == 0 || bytes > MAX_BATCH_BYTES {
        return Err(format!("{text:?}: expected from 1 byte to 2GiB"));
    }
    Ok(bytes)
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a store; refuses a directory that already holds one (see `shoal config`).
    Init {
        /// Store directory.
        store: PathBuf,
        /// Durability of commits (recorded in the store; `shoal config` changes it).
        #[arg(long, value_enum, default_value = "sync")]
        durability: DurabilityArg,
        /// Versions kept readable besides the newest.
        #[arg(long, default_value_t = 16)]
        retain: u32,
        /// Also keep the newest version of every EVERY for WITHIN, e.g. `1m:1h`
        /// (units ms, s, m, h, d); repeat for more tiers, e.g. `--tier 1m:1h --tier 1h:1d`.
        #[arg(long = "tier", value_name = "EVERY:WITHIN", value_parser = shoal::retention::parse_tier)]
        tiers: Vec<shoal::RetainTier>,
        /// Largest value accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_value_bytes: usize,
        /// Who may read the store: the directory's mode, in octal (700: its owner only; 750: its
        /// group too). Group or other write is refused.
        #[arg(long, value_name = "OCTAL", default_value = "700", value_parser = parse_mode)]
        mode: u32,
        /// The store's group (a name from /etc/group, or a number): with a group-readable mode,
        /// readers in this group may read the store.
        #[arg(long, value_name = "GROUP", value_parser = parse_group)]
        group: Option<u32>,
    },
    /// Print a store's settings, or change some of them (printing what changed).
    ///
    /// Without flags, prints the settings recorded in the store. With flags, changes only those
    /// and prints each change as "old → new". Opens the store as its writer, so it waits for
    /// another writer like `put` does.
    Config {
        /// Store directory.
        store: PathBuf,
        /// Durability of commits.
        #[arg(long, value_enum)]
        durability: Option<DurabilityArg>,
        /// Versions kept readable besides the newest.
        #[arg(long)]
        retain: Option<u32>,
        /// Replace the retention tiers with these (EVERY:WITHIN, e.g. `1m:1h`; repeat for more).
        #[arg(long = "tier", value_name = "EVERY:WITHIN", value_parser = shoal::retention::parse_tier)]
        tiers: Vec<shoal::RetainTier>,
        /// Remove every retention tier.
        #[arg(long, conflicts_with = "tiers")]
        no_tiers: bool,
        /// Largest value accepted, in bytes.
        #[arg(long)]
        max_value_bytes: Option<usize>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Write one value (one transaction); prints the new version.
    Put {
        /// Store directory.
        store: PathBuf,
        /// Node path, such as /local/domain/1/name.
        path: String,
        /// The value, as a UTF-8 argument.
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        /// Read the value from a file instead ("-" for stdin).
        #[arg(long, short, conflicts_with = "value")]
        file: Option<PathBuf>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a value, raw.
    Get {
        /// Store directory.
        store: PathBuf,
        /// Node path, such as /local/domain/1/name.
        path: String,
        /// Read a retained older version.
        #[arg(long, value_name = "VERSION")]
        at: Option<u64>,
    },
    /// List the children of a node, one per line.
    Ls {
        /// Store directory.
        store: PathBuf,
        /// Node path, such as /local/domain/1/name.
        path: String,
        /// Read a retained older version.
        #[arg(long, value_name = "VERSION")]
        at: Option<u64>,
    },
    /// Delete a node; prints the new version.
    Rm {
        /// Store directory.
        store: PathBuf,
        /// Node path, such as /local/domain/1/name.
        path: String,
        /// Delete the node and everything below it.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Copy the value at SRC to DST (one transaction) by reference: DST shares its bytes; prints the
    /// new version. Missing ancestors of DST are created. With -r, the whole subtree at SRC replaces
    /// the one at DST, still by reference: the copy costs the same whatever its size.
    Cp {
        /// Store directory.
        store: PathBuf,
        /// The node whose value (with -r: subtree) is copied.
        src: String,
        /// Where it goes.
        dst: String,
        /// Copy the subtree, not just the value.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Load a JSON tree or JSON lines, streaming, in batches of at most --batch-bytes.
    ///
    /// JSON tree: nested objects become paths; string leaves are values; numbers and booleans are
    /// written as parsed (integers exactly up to 64 bits, other numbers as the nearest double); null is an empty value; arrays become children 0, 1, ...; the key
    /// "@value" inside an object holds that node's own value ("@value_base64" for non-UTF-8 bytes).
    /// JSON lines: one {"path": "/a/b", "value": "..."} per line ("value_base64" for bytes).
    ///
    /// The input is read as a stream, never whole: memory follows --batch-bytes, not the input.
    /// An input whose entries fit in one batch becomes one new version; a larger one becomes one
    /// version per batch. A batch counts each entry's path and value bytes plus 512 bytes for each
    /// node the entry may add (itself, and each ancestor its path does not share with the entry
    /// before it), about what the store needs per node to build the batch. An entry larger than a
    /// batch is an error, as is a JSON line longer than --batch-bytes.
    ///
    /// On an error in the middle of the input (invalid JSON, a bad path, a value over the store's
    /// limit), the batches already committed stay: the message names the versions and entries
    /// committed and the line (JSON lines) or line, column and entry (JSON tree) of the error;
    /// the entries after the last committed batch are not written.
    Import {
        /// Store directory.
        store: PathBuf,
        /// Input file, or "-" for stdin.
        input: PathBuf,
        /// Input format: a JSON tree, JSON lines, or auto (lines if the first non-blank line, read
        /// up to --batch-bytes, is an object with a "path" string; else a tree).
        #[arg(long, value_enum, default_value = "auto")]
        format: ImportFormat,
        /// Node under which a JSON tree is placed and to which JSON-lines paths are relative.
        #[arg(long, default_value = "/")]
        prefix: String,
        /// Size of a batch (one version each): its entries' paths and values plus 512 bytes per
        /// node they may add; e.g. 65536, 512KiB, 64MiB, 1GiB; at most 2GiB.
        #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_batch_bytes)]
        batch_bytes: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a subtree as JSON lines or as one JSON tree.
    Export {
        /// Store directory.
        store: PathBuf,
        /// Root of the subtree to export.
        #[arg(default_value = "/")]
        path: String,
        /// Output format: JSON lines (one {"path", "value"} object per node, in path order) or one
        /// nested JSON tree (read back by `shoal import`).
        #[arg(long, value_enum, default_value = "lines")]
        format: ExportFormat,
        /// Read a retained older version.
        #[arg(long, value_name = "VERSION")]
        at: Option<u64>,
    },
    /// A cluster's state in etcd (cluster mode).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A work queue kept in the store (under /queues/NAME): push items, claim one for a while,
    /// mark it done. Each step is one transaction (through shoald when it owns the store).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Print figures about a store, as a reader (never the writer lock; it writes only its slot in
    /// the reader table).
    Stat {
        /// Store directory.
        store: PathBuf,
    },
    /// List the retained versions, newest first: version, commit time (RFC 3339, UTC), nodes.
    Versions {
        /// Store directory.
        store: PathBuf,
    },
    /// Print how a subtree differs between two retained versions: "set|delete PATH" lines.
    Diff {
        /// Store directory.
        store: PathBuf,
        /// The older version.
        from: u64,
        /// The newer version.
        to: u64,
        /// Compare only this node and what is below it.
        #[arg(default_value = "/")]
        prefix: String,
    },
    /// List the retained versions at which a path's value changed, newest first: version, commit
    /// time (RFC 3339, UTC), set|delete. Fails if no retained version has the path.
    Log {
        /// Store directory.
        store: PathBuf,
        /// Node path, such as /local/domain/1/name.
        path: String,
    },
    /// Print the changes under a path as they are committed, until interrupted.
    ///
    /// One line per change: "<version> set|delete|delete-tree <path>". If the
    /// watcher falls behind what the store retains, it prints "resync <from> <to>"
    /// and then how the subtree differs between the two versions, in the same form.
    Watch {
        /// Store directory.
        store: PathBuf,
        /// Watch this node and everything below it.
        #[arg(default_value = "/")]
        prefix: String,
        /// Start after this retained version (default: the newest).
        #[arg(long, value_name = "VERSION")]
        from: Option<u64>,
        /// Exit after this many changes (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Check the checksum of every node the newest version reaches (works while a writer runs).
    Verify {
        /// Store directory.
        store: PathBuf,
    },
    /// Showcase: load a xenstore-shaped tree, then commit while reader processes check every snapshot.
    Demo {
        /// Store directory, which must be new or empty; kept afterwards. Default: a new private
        /// temporary directory (shoal-demo-XXXXXX under $TMPDIR), removed at the end.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the temporary directory (and its store) after the run; its path is printed.
        #[arg(long, conflicts_with = "dir")]
        keep: bool,
        /// Domains to load (13 values each, under /local/domain/<id>).
        #[arg(long, default_value_t = 10_000)]
        domains: u32,
        /// Reader processes to run while the writer commits (1 to 64).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
        readers: u32,
        /// How long the writer commits (and the readers read).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// One reader process of `shoal demo`.
    #[command(hide = true)]
    DemoReader {
        /// Store directory.
        store: PathBuf,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        domains: u32,
    },
}

/// A directory mode in octal: "750", "0750" or "0o750".
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("{text:?} is not an octal mode such as 750"))?;
    if mode > 0o777 {
        return Err(format!("{text:?}: a mode has at most three octal digits (e.g. 750)"));
    }
    Ok(mode)
}

/// A group by number, or by name as listed in /etc/group (groups known
/// only to a directory service can be given by number).
fn parse_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("reading /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            Some((fields.next()?, fields.nth(1)?))
        })
        .find(|(name, _)| *name == text)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("no group {text:?} in /etc/group (a numeric group id works too)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_groups_parse_or_say_why_not() {
        assert_eq!(parse_mode("750"), Ok(0o750));
        assert_eq!(parse_mode("0750"), Ok(0o750));
        assert_eq!(parse_mode("0o700"), Ok(0o700));
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("789").unwrap_err().contains("octal"));
        assert_eq!(parse_group("4242"), Ok(4242));
        assert_eq!(parse_group("root"), Ok(0));
        assert!(parse_group("no-such-group-here").unwrap_err().contains("/etc/group"));
    }

    #[test]
    fn byte_sizes_for_people() {
        for (text, bytes) in [
            ("0", 0),
            ("65536", 65536),
            ("1B", 1),
            ("512KiB", 512 << 10),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64m", 64 << 20),
            ("1.5GiB", 3 << 29),
            ("0.5k", 512),
            ("2GiB", 2 << 30),
            ("1kB", 1000),
            ("1MB", 1_000_000),
            ("16TiB", 16 << 40),
        ] {
            assert_eq!(parse_byte_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MiB", "-1", "1.2.3MiB", "1e9", "12 parsecs", "0.3B", "99999999999999999999", "16777216TiB"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn batch_bytes_limits() {
        assert!(parse_batch_bytes("0").is_err());
        assert_eq!(parse_batch_bytes("1"), Ok(1));
        assert_eq!(parse_batch_bytes("2GiB"), Ok(MAX_BATCH_BYTES));
        assert!(parse_batch_bytes(&(MAX_BATCH_BYTES + 1).to_string()).is_err());
    }

    #[test]
    fn wait_limits() {
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("0.3"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_wait("86400"), Ok(Duration::from_secs(86_400)));
        for bad in ["86400.001", "-1", "NaN", "inf", "1e400", "soon", ""] {
            assert!(parse_wait(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

/// `shoal cluster ...`
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// List the hosts whose status is in etcd: each one's applied revision, lag behind the
    /// cluster's newest revision, version, versions per second, readers, arena and live bytes,
    /// and the age of its figures. A host that died is gone once its lease ends.
    Status {
        /// etcd's client URLs, comma-separated.
        #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
        etcd: Vec<String>,
        /// The cluster's key prefix in etcd.
        #[arg(long, value_name = "PREFIX")]
        prefix: String,
    },
    /// Wait until the replica in STORE has applied etcd revision REVISION or a later one (the
    /// revision a commit on any host reported), then print the revision it holds: read-your-writes
    /// across hosts, for a process that reads this host's store. Exit code 1 if it has not within
    /// --timeout.
    Wait {
        /// Store directory of this host's replica.
        store: PathBuf,
        /// The etcd revision to wait for.
        revision: i64,
        /// Wait at most this many seconds (fractions allowed, at most 86400).
        #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_wait)]
        timeout: Duration,
    },
}

/// `shoal queue ...`
#[derive(Subcommand)]
pub enum QueueCommand {
    /// Add an item at the end; prints its number.
    Push {
        /// Store directory.
        store: PathBuf,
        /// The queue's name.
        queue: String,
        /// The item, as a UTF-8 argument.
        value: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Claim an item nobody holds (or whose holder's lease ended) for --lease seconds; prints
    /// "ITEM VALUE". Exit code 3 if no item is free.
    Claim {
        /// Store directory.
        store: PathBuf,
        /// The queue's name.
        queue: String,
        /// Who claims it (no spaces).
        #[arg(long)]
        owner: String,
        /// How long the claim holds, in seconds (fractions allowed, at most 86400).
        #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_wait)]
        lease: Duration,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an item its holder is done with. Fails if the item is gone or --owner does not
    /// hold it.
    Done {
        /// Store directory.
        store: PathBuf,
        /// The queue's name.
        queue: String,
        /// The item's number, as claim printed it.
        item: u64,
        /// Who holds it.
        #[arg(long)]
        owner: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}
