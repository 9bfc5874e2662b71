//! Opening a store as its writer for one command, waiting for another writer.

use std::path::Path;
use std::time::Duration;

use shoal::{Error, Options, Store};

use crate::{CliResult, Failure};

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
