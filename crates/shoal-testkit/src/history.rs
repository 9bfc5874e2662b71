//! A record of the operations a fault test makes, and a linearizability
//! checker for registers over it.
//!
//! Every write of a key writes a value no other write of it writes, so a
//! read names the write it saw. Such a history of one register is
//! linearizable if and only if (Gibbons and Korach, "Testing shared
//! memories", 1997):
//! - no read returns before the write it saw was invoked, and every value
//!   read was written (or is the initial absence);
//! - grouping each write with the reads that saw it into a *cluster*, with
//!   `f` the earliest return in the cluster and `s` the latest invocation:
//!   the *forward* zones (`f < s`: the interval `f..s`) do not overlap, and
//!   no *backward* zone (`s <= f`: `s..f`) lies inside a forward one.
//!
//! That is checked in O(n log n) per key, where a search over interleavings
//! (a general checker's) would blow up on the thousands of operations a
//! fault test makes. A write whose outcome is unknown (its daemon died, or
//! answered EIO) is taken to return never: if a read saw it, it happened
//! within its interval; if none did, it may or may not have happened, and
//! nothing depends on it, so it is left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// One operation on a key.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub kind: Kind,
    pub invoked: Instant,
    /// When it returned with its outcome known; `None` if it never did, or
    /// if what happened is unknown.
    pub returned: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A write of a value no other write of the key writes.
    Write(String),
    /// A read, and the value it saw (`None`: the key did not exist).
    Read(Option<String>),
}

/// Operations recorded by many threads, in any order.
#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    /// Checks every key's operations; the first violation, described.
    pub fn check(&self) -> Result<(), String> {
        check_registers(&self.ops())
    }
}

/// Checks that the operations of every key form a linearizable register
/// history (each key starts absent).
pub fn check_registers(ops: &[Op]) -> Result<(), String> {
    let Some(origin) = ops.iter().map(|o| o.invoked).min() else { return Ok(()) };
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_register(key, &ops, origin)?;
    }
    Ok(())
}

/// Time as nanoseconds after `origin`, shifted by one so that 0 is the
/// initial absence's write, before everything; `u128::MAX` is never.
fn at(origin: Instant, t: Instant) -> u128 {
    t.duration_since(origin).as_nanos() + 1
}

fn check_register(key: &str, ops: &[&Op], origin: Instant) -> Result<(), String> {
    const NEVER: u128 = u128::MAX;
    // Each cluster: (earliest return, latest invocation), by value
    // (`None`: the initial absence, written at time 0).
    let mut clusters: HashMap<Option<&str>, (u128, u128)> = HashMap::new();
    clusters.insert(None, (0, 0));
    let mut writes: HashMap<&str, (u128, bool)> = HashMap::new();
    for op in ops {
        if let Kind::Write(value) = &op.kind {
            let invoked = at(origin, op.invoked);
            if writes.insert(value, (invoked, false)).is_some() {
                return Err(format!("{key}: the value {value:?} is written twice; the checker needs unique values"));
            }
            let returned = op.returned.map_or(NEVER, |t| at(origin, t));
            clusters.insert(Some(value), (returned, invoked));
        }
    }
    for op in ops {
        let Kind::Read(seen) = &op.kind else { continue };
        let invoked = at(origin, op.invoked);
        let returned = op.returned.map_or(NEVER, |t| at(origin, t));
        if let Some(value) = seen {
            let Some((write_invoked, observed)) = writes.get_mut(value.as_str()) else {
                return Err(format!("{key}: a read saw {value:?}, which no write wrote"));
            };
            if returned < *write_invoked {
                return Err(format!("{key}: a read returned {value:?} before its write began"));
            }
            *observed = true;
        }
        let cluster = clusters.get_mut(&seen.as_deref()).expect("every value seen has a cluster");
        cluster.0 = cluster.0.min(returned);
        cluster.1 = cluster.1.max(invoked);
    }
    // A write with an unknown outcome that no read saw constrains nothing.
    let unseen_unknown =
        |value: &Option<&str>, (f, _): &(u128, u128)| value.is_some_and(|v| *f == NEVER && !writes[v].1);
    let mut forward: Vec<(u128, u128, Option<&str>)> = Vec::new();
    let mut backward: Vec<(u128, u128, Option<&str>)> = Vec::new();
    for (value, zone) in &clusters {
        if unseen_unknown(value, zone) {
            continue;
        }
        let (f, s) = *zone;
        if f < s {
            forward.push((f, s, *value));
        } else {
            backward.push((s, f, *value));
        }
    }
    forward.sort_unstable();
    for pair in forward.windows(2) {
        let ((_, s1, v1), (f2, _, v2)) = (pair[0], pair[1]);
        if f2 < s1 {
            return Err(format!(
                "{key}: {v1:?} and {v2:?} were each read after the other was written over (overlapping forward zones)"
            ));
        }
    }
    for &(s, f, value) in &backward {
        // The forward zone that starts last before this one starts.
        let at = forward.partition_point(|&(start, _, _)| start < s);
        if at > 0 {
            let (fs, fe, outer) = forward[at - 1];
            if fs < s && f < fe {
                return Err(format!(
                    "{key}: {value:?} was written and read entirely while {outer:?} was current (a stale read)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(base: Instant, kind: Kind, invoked: u64, returned: Option<u64>) -> Op {
        Op {
            key: "k".into(),
            kind,
            invoked: base + Duration::from_millis(invoked),
            returned: returned.map(|r| base + Duration::from_millis(r)),
        }
    }

    fn w(base: Instant, v: &str, i: u64, r: u64) -> Op {
        op(base, Kind::Write(v.into()), i, Some(r))
    }

    fn r(base: Instant, v: Option<&str>, i: u64, ret: u64) -> Op {
        op(base, Kind::Read(v.map(str::to_string)), i, Some(ret))
    }

    #[test]
    fn sequential_and_concurrent_histories_that_are_linearizable_pass() {
        let b = Instant::now();
        // In order.
        check_registers(&[r(b, None, 0, 1), w(b, "a", 2, 3), r(b, Some("a"), 4, 5), w(b, "b", 6, 7)]).unwrap();
        // A read concurrent with a write may see either value.
        check_registers(&[w(b, "a", 0, 1), w(b, "b", 2, 10), r(b, Some("a"), 3, 4), r(b, Some("b"), 5, 6)]).unwrap();
        check_registers(&[w(b, "a", 0, 1), w(b, "b", 2, 10), r(b, Some("b"), 3, 4)]).unwrap();
        // A write of unknown outcome: seen, or not, both fine.
        check_registers(&[op(b, Kind::Write("a".into()), 0, None), r(b, Some("a"), 50, 51)]).unwrap();
        check_registers(&[op(b, Kind::Write("a".into()), 0, None), r(b, None, 50, 51)]).unwrap();
        // Two writes concurrent with each other, in either order.
        check_registers(&[w(b, "a", 0, 10), w(b, "b", 1, 9), r(b, Some("a"), 11, 12)]).unwrap();
        check_registers(&[w(b, "a", 0, 10), w(b, "b", 1, 9), r(b, Some("b"), 11, 12)]).unwrap();
    }

    #[test]
    fn lost_stale_inverted_and_invented_values_fail() {
        let b = Instant::now();
        // A write acknowledged, then a read that misses it: lost.
        let lost = check_registers(&[w(b, "a", 0, 1), r(b, None, 2, 3)]).unwrap_err();
        assert!(lost.contains("stale"), "{lost}");
        // Overwritten, then read.
        let stale = check_registers(&[w(b, "a", 0, 1), w(b, "b", 2, 3), r(b, Some("a"), 4, 5)]).unwrap_err();
        assert!(stale.contains("stale") || stale.contains("overlapping"), "{stale}");
        // New, then old: reads that disagree on the order of two writes.
        let inverted =
            check_registers(&[w(b, "a", 0, 1), w(b, "b", 2, 20), r(b, Some("b"), 3, 4), r(b, Some("a"), 5, 6)])
                .unwrap_err();
        assert!(inverted.contains("stale") || inverted.contains("overlapping"), "{inverted}");
        // Two readers each see the other's value second.
        let crossed = check_registers(&[
            w(b, "a", 0, 100),
            w(b, "b", 0, 100),
            r(b, Some("a"), 1, 2),
            r(b, Some("b"), 3, 4),
            r(b, Some("a"), 5, 6),
        ])
        .unwrap_err();
        assert!(crossed.contains("overlapping") || crossed.contains("stale"), "{crossed}");
        // A value no one wrote, one read before its write began, a value
        // written twice.
        assert!(check_registers(&[r(b, Some("x"), 0, 1)]).unwrap_err().contains("no write wrote"));
        assert!(check_registers(&[r(b, Some("a"), 0, 1), w(b, "a", 2, 3)]).unwrap_err().contains("before its write"));
        assert!(check_registers(&[w(b, "a", 0, 1), w(b, "a", 2, 3)]).unwrap_err().contains("written twice"));
    }

    #[test]
    fn keys_are_checked_apart() {
        let b = Instant::now();
        let mut other = w(b, "a", 0, 1);
        other.key = "j".into();
        // "a" on key j says nothing of key k.
        check_registers(&[other, r(b, None, 2, 3)]).unwrap();
    }
}
