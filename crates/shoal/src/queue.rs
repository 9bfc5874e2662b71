//! A work queue with atomic claims, on transactions: items are pushed in
//! order, a worker claims the oldest item nobody holds (or whose holder's
//! lease ran out) for a while, and removes it when done. Each step is a
//! few reads and writes in the caller's transaction, so the queue is as
//! atomic as the transactions it runs in: on one host a store's, in a
//! cluster the cluster's (the same code, with the transaction taken out as
//! an intent and committed by the cluster's writer). Two workers that claim
//! the same item in concurrent transactions conflict; one commits.
//!
//! Layout, below `/queues/NAME`: `next` (the next item's number),
//! `items/N` (an item's payload, N zero-padded so that names sort in
//! order), `claims/N` (`OWNER EXPIRES_UNIX_MS` while claimed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::txn::Transaction;

/// A claimed item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub item: u64,
    pub payload: Vec<u8>,
}

fn base(queue: &str) -> Result<String> {
    if queue.is_empty() || queue.contains('/') {
        return Err(Error::InvalidPath { path: queue.chars().take(200).collect(), reason: "not a queue's name" });
    }
    Ok(format!("/queues/{queue}"))
}

fn item_name(item: u64) -> String {
    format!("{item:020}")
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Adds `payload` at the end of `queue`; returns its item number.
pub fn push(txn: &mut Transaction<'_>, queue: &str, payload: &[u8]) -> Result<u64> {
    let base = base(queue)?;
    let next_path = format!("{base}/next");
    let item = match txn.get(&next_path)? {
        Some(v) => std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        None => 0,
    };
    txn.put(&format!("{base}/items/{}", item_name(item)), payload)?;
    txn.put(&next_path, (item + 1).to_string())?;
    Ok(item)
}

/// Claims an item of `queue` that is not claimed, or whose claim expired by
/// `now`, for `owner` until `now + lease`. `None` if there is none. The
/// search starts at a place that depends on `owner`, so that workers racing
/// for items mostly pick different ones (all racing for the oldest would
/// have all but one of them conflict at every claim).
pub fn claim(
    txn: &mut Transaction<'_>,
    queue: &str,
    owner: &str,
    now: SystemTime,
    lease: Duration,
) -> Result<Option<Claimed>> {
    let base = base(queue)?;
    if owner.is_empty() || owner.contains(' ') {
        return Err(Error::InvalidPath { path: owner.chars().take(200).collect(), reason: "not an owner's name" });
    }
    let names = txn.list(&format!("{base}/items"))?;
    // FNV-1a of the owner's name: a stable starting place.
    let start = owner.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let start = if names.is_empty() { 0 } else { (start % names.len() as u64) as usize };
    for name in names[start..].iter().chain(&names[..start]) {
        let claim_path = format!("{base}/claims/{name}");
        let free = match txn.get(&claim_path)? {
            None => true,
            Some(held) => expires(held).is_none_or(|at| at <= unix_ms(now)),
        };
        if !free {
            continue;
        }
        let Some(payload) = txn.get(&format!("{base}/items/{name}"))?.map(<[u8]>::to_vec) else { continue };
        let until = unix_ms(now + lease);
        txn.put(&claim_path, format!("{owner} {until}"))?;
        let item = name.parse().map_err(|_| Error::InvalidPath { path: name.clone(), reason: "not an item's name" })?;
        return Ok(Some(Claimed { item, payload }));
    }
    Ok(None)
}

/// When a claim's lease ends (`None`: unreadable, taken as expired).
fn expires(held: &[u8]) -> Option<u64> {
    std::str::from_utf8(held).ok()?.rsplit(' ').next()?.parse().ok()
}

fn holder(held: &[u8]) -> Option<&str> {
    std::str::from_utf8(held).ok()?.rsplit_once(' ').map(|(owner, _)| owner)
}

/// Removes `item` from `queue`, which `owner` must hold: `false` (and
/// nothing changes) if it is gone or someone else holds it now.
pub fn done(txn: &mut Transaction<'_>, queue: &str, item: u64, owner: &str) -> Result<bool> {
    let base = base(queue)?;
    let claim_path = format!("{base}/claims/{}", item_name(item));
    let held_by_owner = txn.get(&claim_path)?.is_some_and(|held| holder(held) == Some(owner));
    if !held_by_owner {
        return Ok(false);
    }
    txn.delete(&claim_path)?;
    txn.delete(&format!("{base}/items/{}", item_name(item)))?;
    Ok(true)
}
