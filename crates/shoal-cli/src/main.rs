//! `shoal`: the command-line tool for shoal stores.
//!
//! Commands that only read (`get`, `ls`, `export`, `stat`, `watch`) use a
//! [`shoal::Reader`], so they work while another process holds the writer
//! lock. Commands that write (`put`, `rm`, `import`) open the store as its
//! single writer and fail with "locked by another writer" if one is running.

mod commands;
mod demo;
mod import_export;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// What a command failed with: a message for stderr, or a closed stdout.
#[derive(Debug)]
pub enum Failure {
    Message(String),
    /// stdout was closed by its reader (`shoal export ... | head`): stop quietly.
    BrokenPipe,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Message(e.to_string())
    }
}

pub type CliResult<T = ()> = Result<T, Failure>;

/// Returns early with a formatted [`Failure::Message`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Failure::Message(format!($($arg)*)))
    };
}

/// Maps an error writing to stdout, keeping a closed pipe apart.
pub fn stdout_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::BrokenPipe
    } else {
        Failure::Message(format!("writing to stdout: {e}"))
    }
}

#[derive(Parser)]
#[command(name = "shoal", version, about = "A shared-memory, zero-copy, versioned tree store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

#[derive(Subcommand)]
enum Command {
    /// Create a store.
    Init {
        /// Store directory.
        store: PathBuf,
        /// Durability of commits made through this tool (recorded in the store directory).
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
    },
    /// Load a JSON tree or JSON lines as one new version.
    ///
    /// JSON tree: nested objects become paths; string leaves are values; numbers and booleans are
    /// written as their JSON text; null is an empty value; arrays become children 0, 1, ...; the key
    /// "@value" inside an object holds that node's own value ("@value_base64" for non-UTF-8 bytes).
    /// JSON lines: one {"path": "/a/b", "value": "..."} per line ("value_base64" for bytes).
    Import {
        /// Store directory.
        store: PathBuf,
        /// Input file, or "-" for stdin.
        input: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        format: ImportFormat,
        /// Node under which a JSON tree is placed and to which JSON-lines paths are relative.
        #[arg(long, default_value = "/")]
        prefix: String,
    },
    /// Print a subtree as JSON lines or as one JSON tree.
    Export {
        /// Store directory.
        store: PathBuf,
        /// Root of the subtree to export.
        #[arg(default_value = "/")]
        path: String,
        #[arg(long, value_enum, default_value = "lines")]
        format: ExportFormat,
        /// Read a retained older version.
        #[arg(long, value_name = "VERSION")]
        at: Option<u64>,
    },
    /// Print figures about a store.
    Stat {
        /// Store directory.
        store: PathBuf,
        /// Do not try to open the store as its writer for the writer-only figures.
        #[arg(long)]
        reader_only: bool,
    },
    /// List the retained versions, newest first: version, commit time (Unix seconds), nodes.
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
    /// List the retained versions at which a path's value changed, newest first.
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
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Check the checksum of every node the newest version reaches (works while a writer runs).
    Verify {
        /// Store directory.
        store: PathBuf,
    },
    /// Showcase: load a xenstore-shaped tree, then commit while reader processes check every snapshot.
    Demo {
        /// Store directory (default: <temp dir>/shoal-demo, removed first).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Domains to load (13 values each, under /local/domain/<id>).
        #[arg(long, default_value_t = 10_000)]
        domains: u32,
        /// Reader processes to run while the writer commits.
        #[arg(long, default_value_t = 2)]
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

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Init { store, durability, retain, tiers, max_value_bytes } => {
            commands::init(&store, durability, retain, tiers, max_value_bytes)
        }
        Command::Put { store, path, value, file } => commands::put(&store, &path, value, file),
        Command::Get { store, path, at } => commands::get(&store, &path, at),
        Command::Ls { store, path, at } => commands::ls(&store, &path, at),
        Command::Rm { store, path, recursive } => commands::rm(&store, &path, recursive),
        Command::Cp { store, src, dst, recursive } => commands::cp(&store, &src, &dst, recursive),
        Command::Import { store, input, format, prefix } => import_export::import(&store, &input, format, &prefix),
        Command::Export { store, path, format, at } => import_export::export(&store, &path, format, at),
        Command::Stat { store, reader_only } => commands::stat(&store, reader_only),
        Command::Verify { store } => commands::verify(&store),
        Command::Versions { store } => commands::versions(&store),
        Command::Log { store, path } => commands::log(&store, &path),
        Command::Diff { store, from, to, prefix } => commands::diff(&store, from, to, &prefix),
        Command::Watch { store, prefix, from, count } => commands::watch(&store, &prefix, from, count),
        Command::Demo { dir, domains, readers, seconds } => demo::demo(dir, domains, readers, seconds),
        Command::DemoReader { store, seconds, domains } => demo::reader(&store, seconds, domains),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(m)) => {
            eprintln!("shoal: {m}");
            ExitCode::FAILURE
        }
    }
}
