//! `shoal queue push|claim|done`: the work queue recipe (`shoal::queue`),
//! one step per transaction, through shoald when it owns the store.

use std::path::Path;
use std::time::Duration;

use shoal_remote::{QueueOp, QueueOutcome};

use crate::writer::Writer;
use crate::{bail, say, CliResult, Failure};

fn step(dir: &Path, op: QueueOp, wait: Duration) -> CliResult<QueueOutcome> {
    let mut writer = Writer::open(dir, wait)?;
    writer.limit_daemon_wait(wait)?;
    let (_version, outcome) = writer.queue(op)??;
    Ok(outcome)
}

pub fn push(dir: &Path, queue: &str, value: String, wait: Duration) -> CliResult {
    let op = QueueOp::Push { queue: queue.to_string(), payload: value.into_bytes() };
    match step(dir, op, wait)? {
        QueueOutcome::Pushed { item } => say!("{item}"),
        other => bail!("unexpected answer to a push: {other:?}"),
    }
    Ok(())
}

pub fn claim(dir: &Path, queue: &str, owner: &str, lease: Duration, wait: Duration) -> CliResult {
    let op = QueueOp::Claim { queue: queue.to_string(), owner: owner.to_string(), lease_ms: lease.as_millis() as u64 };
    match step(dir, op, wait)? {
        QueueOutcome::Claimed(Some((item, payload))) => say!("{item} {}", String::from_utf8_lossy(&payload)),
        QueueOutcome::Claimed(None) => return Err(Failure::NothingFree(format!("no item of {queue} is free"))),
        other => bail!("unexpected answer to a claim: {other:?}"),
    }
    Ok(())
}

pub fn done(dir: &Path, queue: &str, item: u64, owner: &str, wait: Duration) -> CliResult {
    let op = QueueOp::Done { queue: queue.to_string(), item, owner: owner.to_string() };
    match step(dir, op, wait)? {
        QueueOutcome::Done(true) => Ok(()),
        QueueOutcome::Done(false) => bail!("item {item} of {queue} is gone or not held by {owner}"),
        other => bail!("unexpected answer to done: {other:?}"),
    }
}
