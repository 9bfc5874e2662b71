//! Opening a store as its writer for one command, waiting for another
//! writer; or, while `shoald` owns the store, writing through it.

use std::path::Path;
use std::time::Duration;

use shoal::{Error, Options, Store};
use shoal_remote::{Client, FailureKind, QueueOp, QueueOutcome, Reply, Request};

use crate::{CliResult, Failure};

/// The least time a request through the daemon is given.
pub const DAEMON_ANSWER_MIN: Duration = Duration::from_secs(5);

/// Where a writing command's changes go.
pub enum Writer {
    /// The store, opened as its writer.
    Local(Store),
    /// The daemon that holds the store's writer (shoald), through the
    /// store's socket.
    Daemon(Client),
}

/// Why a request was not committed, the same whichever way it went.
pub struct Refused {
    pub kind: FailureKind,
    pub message: String,
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Failure {
        Failure::Message(r.message)
    }
}

impl Writer {
    /// Writes through the daemon that owns the store, if one answers on the
    /// store's socket; else opens the store as its writer, waiting up to
    /// `wait` for another writer to let go.
    pub fn open(dir: &Path, wait: Duration) -> CliResult<Writer> {
        if let Some(client) = Client::connect(dir) {
            return Ok(Writer::Daemon(client));
        }
        open(dir, wait).map(Writer::Local)
    }

    /// How long a request through the daemon may take before the command
    /// gives up as it would on a busy store (exit 75): `--wait`, and at
    /// least [`DAEMON_ANSWER_MIN`] (a daemon that is stopped or wedged
    /// must not hang the command).
    pub fn limit_daemon_wait(&mut self, wait: Duration) -> CliResult<()> {
        if let Writer::Daemon(client) = self {
            client.set_timeout(Some(wait.max(DAEMON_ANSWER_MIN)))?;
        }
        Ok(())
    }

    /// Commits `request` as one version; returns the version.
    pub fn apply(&mut self, request: &Request) -> CliResult<Result<u64, Refused>> {
        let reply = match self {
            Writer::Local(store) => match shoal_remote::apply(store, request) {
                Ok(version) => Reply::Committed { version },
                Err(e) if matches!(shoal_remote::failure(&e), Reply::Failed { kind: FailureKind::Other, .. }) => {
                    return Err(e.into())
                }
                Err(e) => shoal_remote::failure(&e),
            },
            Writer::Daemon(client) => send(client, request)?,
        };
        Ok(match reply {
            Reply::Committed { version } | Reply::Queue { version, .. } => Ok(version),
            Reply::Failed { kind, message } => Err(Refused { kind, message }),
        })
    }

    /// Runs one step of a work queue; returns the version and what it did.
    pub fn queue(&mut self, op: QueueOp) -> CliResult<Result<(u64, QueueOutcome), Refused>> {
        let reply = match self {
            Writer::Local(store) => match shoal_remote::apply_queue(store, &op) {
                Ok((version, outcome)) => Reply::Queue { version, outcome },
                Err(e) => shoal_remote::failure(&e),
            },
            Writer::Daemon(client) => send(client, &Request::Queue(op))?,
        };
        Ok(match reply {
            Reply::Queue { version, outcome } => Ok((version, outcome)),
            Reply::Committed { .. } => {
                Err(Refused { kind: FailureKind::Other, message: "shoald did not run the queue step".into() })
            }
            Reply::Failed { kind, message } => Err(Refused { kind, message }),
        })
    }
}

/// Sends `request` to shoald and waits for its reply.
fn send(client: &mut Client, request: &Request) -> CliResult<Reply> {
    client.request(request).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Failure::Busy(
            "shoald, which holds the store, did not answer in time (is it stopped?); the change may still be applied \
             when it goes on"
                .to_string(),
        ),
        _ => Failure::Message(format!("writing through shoald (the store's daemon): {e}")),
    })
}

/// Opens the existing store in `dir` as its writer with its recorded
/// settings, waiting up to `wait` for another writer to let go.
pub fn open(dir: &Path, wait: Duration) -> CliResult<Store> {
    open_with(dir, Options { lock_wait: wait, ..Options::default() })
}

/// [`open`] with explicit options; `options.lock_wait` is how long it waits.
pub fn open_with(dir: &Path, options: Options) -> CliResult<Store> {
    let wait = options.lock_wait;
    Store::open(dir, options).map_err(|e| busy_or(e, wait))
}

/// A lock held past the wait becomes [`Failure::Busy`] (exit code 75), with
/// what to do about it; any other error stays a plain message.
pub fn busy_or(e: Error, wait: Duration) -> Failure {
    match e {
        Error::Locked { .. } if wait.is_zero() => Failure::Busy(format!("{e}; try again, or give --wait SECONDS")),
        Error::Locked { .. } => {
            Failure::Busy(format!("{e}, still after waiting {} s (--wait); try again later", wait.as_secs_f64()))
        }
        other => other.into(),
    }
}
