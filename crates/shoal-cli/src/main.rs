//! `shoal`: the command-line tool for shoal stores.
//!
//! Commands that only read (`get`, `ls`, `export`, `stat`, `verify`,
//! `versions`, `log`, `diff`, `watch`) open a [`shoal::Reader`] and nothing
//! else: they take no lock and write nothing, so they work beside a running
//! writer and never get in its way. Commands that write (`put`, `rm`, `cp`,
//! `import`) send their changes to `shoald` when it owns the store (through
//! the store's socket, `shoald.sock`), and otherwise open the store as its
//! single writer, as `config` always does, waiting up to `--wait` seconds
//! for another one to finish; a store that stays busy ends them with exit
//! code 75 (`EX_TEMPFAIL`: try again later).

mod args;
mod cluster;
mod commands;
mod config;
mod demo;
mod export;
mod import;
mod json_shape;
mod queue;
mod time;
mod writer;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, ClusterCommand, Command, QueueCommand};

/// Exit code of a writer that found the store busy (sysexits' `EX_TEMPFAIL`).
pub const EXIT_BUSY: u8 = 75;
/// Exit code of `queue claim` when no item is free.
pub const EXIT_NOTHING_FREE: u8 = 3;

/// What a command failed with.
#[derive(Debug)]
pub enum Failure {
    /// A message for stderr; exit code 1.
    Message(String),
    /// Another writer held the store for longer than the command would wait;
    /// exit code [`EXIT_BUSY`].
    Busy(String),
    /// stdout was closed by its reader (`shoal export ... | head`): stop quietly.
    BrokenPipe,
    /// `queue claim` found no free item: a message, exit code
    /// [`EXIT_NOTHING_FREE`].
    NothingFree(String),
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

/// Writes one line to stdout; a closed stdout ends the command quietly
/// (`shoal stat S | head -1`) instead of panicking as `println!` would.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::stdout_error)?
    }};
}

/// Maps an error writing to stdout, keeping a closed pipe apart.
pub fn stdout_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::BrokenPipe
    } else {
        Failure::Message(format!("writing to stdout: {e}"))
    }
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Init { store, durability, retain, tiers, max_value_bytes, mode, group } => {
            let access = commands::Access { mode, group };
            commands::init(&store, durability, retain, tiers, max_value_bytes, access)
        }
        Command::Config { store, durability, retain, tiers, no_tiers, max_value_bytes, wait } => {
            let tiers = if no_tiers { Some(Vec::new()) } else { Some(tiers).filter(|t| !t.is_empty()) };
            let change = config::Change { durability, retain, tiers, max_value_bytes };
            config::config(&store, change, wait.lock_wait())
        }
        Command::Put { store, path, value, file, wait } => commands::put(&store, &path, value, file, wait.lock_wait()),
        Command::Get { store, path, at } => commands::get(&store, &path, at),
        Command::Ls { store, path, at } => commands::ls(&store, &path, at),
        Command::Rm { store, path, recursive, wait } => commands::rm(&store, &path, recursive, wait.lock_wait()),
        Command::Cp { store, src, dst, recursive, wait } => {
            commands::cp(&store, &src, &dst, recursive, wait.lock_wait())
        }
        Command::Import { store, input, format, prefix, batch_bytes, wait } => {
            import::import(&store, &input, format, &prefix, batch_bytes, wait.lock_wait())
        }
        Command::Export { store, path, format, at } => export::export(&store, &path, format, at),
        Command::Cluster(ClusterCommand::Status { etcd, prefix }) => cluster::status(&etcd, &prefix),
        Command::Cluster(ClusterCommand::Wait { store, revision, timeout }) => cluster::wait(&store, revision, timeout),
        Command::Queue(QueueCommand::Push { store, queue, value, wait }) => {
            queue::push(&store, &queue, value, wait.lock_wait())
        }
        Command::Queue(QueueCommand::Claim { store, queue, owner, lease, wait }) => {
            queue::claim(&store, &queue, &owner, lease, wait.lock_wait())
        }
        Command::Queue(QueueCommand::Done { store, queue, item, owner, wait }) => {
            queue::done(&store, &queue, item, &owner, wait.lock_wait())
        }
        Command::Stat { store } => commands::stat(&store),
        Command::Verify { store } => commands::verify(&store),
        Command::Versions { store } => commands::versions(&store),
        Command::Log { store, path } => commands::log(&store, &path),
        Command::Diff { store, from, to, prefix } => commands::diff(&store, from, to, &prefix),
        Command::Watch { store, prefix, from, count } => commands::watch(&store, &prefix, from, count),
        Command::Demo { dir, keep, domains, readers, seconds } => demo::demo(dir, keep, domains, readers, seconds),
        Command::DemoReader { store, seconds, domains } => demo::reader(&store, seconds, domains),
    }
}

/// The message on stderr; unlike `eprintln!`, a closed stderr cannot turn a
/// clean failure into a panic.
fn complain(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "shoal: {message}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(m)) => {
            complain(&m);
            ExitCode::FAILURE
        }
        Err(Failure::Busy(m)) => {
            complain(&m);
            ExitCode::from(EXIT_BUSY)
        }
        Err(Failure::NothingFree(m)) => {
            complain(&m);
            ExitCode::from(EXIT_NOTHING_FREE)
        }
    }
}
