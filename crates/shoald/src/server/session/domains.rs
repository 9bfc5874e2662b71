//! Requests about domains rather than nodes: `INTRODUCE`, `RELEASE`,
//! `IS_DOMAIN_INTRODUCED`, `RESUME`, `SET_TARGET`, and the per-domain
//! settings `GET_FEATURE`/`SET_FEATURE` and `GET_QUOTA`/`SET_QUOTA`.
//!
//! Arguments are read as the stock C daemon reads them (`atoi`) for the
//! 4.17 requests; the feature and quota requests, which came later, take
//! strict decimal domain ids, as upstream's do.

use super::{atoi, ok, strings, text_reply, Session, AUTOCOMMIT_RETRIES};
use crate::server::connection::Identity;
use crate::wire::{Fields, MsgType, XsError};
use crate::xs::ops;
use crate::xs::quota::Quota;

/// A domain id in the newer requests: decimal digits only.
fn parse_domid(text: &str) -> Result<u32, XsError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::EINVAL);
    }
    text.parse().map_err(|_| XsError::EINVAL)
}

/// A count in the newer requests: decimal digits only.
fn parse_count(text: &str) -> Result<u32, XsError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::EINVAL);
    }
    text.parse().map_err(|_| XsError::EINVAL)
}

fn parse_quota(name: &str) -> Result<Quota, XsError> {
    Quota::from_name(name).ok_or(XsError::EINVAL)
}

impl Session {
    pub(super) async fn domain_request(&mut self, kind: MsgType, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        match kind {
            MsgType::Introduce => {
                let args = strings(payload);
                if args.len() < 3 {
                    return Err(XsError::EINVAL);
                }
                let (domid, gfn, port) = (atoi(args[0]), atoi(args[1]), atoi(args[2]));
                if !(1..=i64::from(u32::MAX)).contains(&port) || gfn < 0 || !(0..=i64::from(u32::MAX)).contains(&domid)
                {
                    return Err(XsError::EINVAL);
                }
                let new = self.daemon.domains.introduce(&self.daemon, domid as u32, gfn as u64, port as u32)?;
                if new {
                    self.fire_special("@introduceDomain");
                }
                Ok(ok())
            }
            MsgType::Release => {
                let domid = atoi(Fields::one(payload)?) as u32;
                self.daemon.domains.release(domid)?;
                self.remove_owned(domid).await?;
                self.fire_special("@releaseDomain");
                Ok(ok())
            }
            MsgType::IsDomainIntroduced => {
                let domid = atoi(Fields::one(payload)?) as u32;
                Ok(text_reply(if self.daemon.domains.is_introduced(domid) { "T" } else { "F" }))
            }
            MsgType::Resume => {
                let domid = atoi(Fields::one(payload)?) as u32;
                self.daemon.domains.resume(domid)?;
                Ok(ok())
            }
            MsgType::SetTarget => {
                let args = strings(payload);
                if args.len() < 2 {
                    return Err(XsError::EINVAL);
                }
                self.daemon.domains.set_target(atoi(args[0]) as u32, atoi(args[1]) as u32)?;
                Ok(ok())
            }
            MsgType::GetFeature => self.get_feature(payload),
            MsgType::SetFeature => {
                let args = strings(payload);
                if args.len() != 2 {
                    return Err(XsError::EINVAL);
                }
                let domid = parse_domid(args[0])?;
                self.daemon.domains.set_features(domid, parse_count(args[1])?)?;
                Ok(ok())
            }
            MsgType::GetQuota => self.get_quota(payload),
            MsgType::SetQuota => {
                let args = strings(payload);
                let (domid, name, value) = match args[..] {
                    [name, value] => (None, name, value),
                    [domid, name, value] => (Some(parse_domid(domid)?), name, value),
                    _ => return Err(XsError::EINVAL),
                };
                // Strictly decimal: a typo must not become 0 (no limit).
                let value = parse_count(value)?;
                if value == u32::MAX {
                    return Err(XsError::EINVAL);
                }
                let domains = &self.daemon.domains;
                let quota = parse_quota(name)?;
                match domid {
                    Some(domid) => domains.set_quota(domid, quota, value)?,
                    None => domains.set_default_quota(quota, value),
                }
                Ok(ok())
            }
            _ => Err(XsError::ENOSYS),
        }
    }

    /// `GET_FEATURE [<domid>|]`: without a domain id, the caller's own
    /// ring features (anyone may ask); with one, dom0 only.
    fn get_feature(&self, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let features = match strings(payload)[..] {
            [] => match &self.identity {
                Identity::Socket { .. } => self.daemon.domains.features(0)?,
                Identity::Domain(state) => state.features,
            },
            [domid] => {
                if !self.caller.privileged {
                    return Err(XsError::EACCES);
                }
                self.daemon.domains.features(parse_domid(domid)?)?
            }
            _ => return Err(XsError::EINVAL),
        };
        Ok(text_reply(&features.to_string()))
    }

    /// `GET_QUOTA [[<domid>|]<quota>|]`: with no argument, the names.
    fn get_quota(&self, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let domains = &self.daemon.domains;
        let value = match strings(payload)[..] {
            [] => {
                let names: Vec<&str> = Quota::ALL.iter().map(|q| q.name()).collect();
                return Ok(text_reply(&names.join(" ")));
            }
            [name] => domains.default_quotas().get(parse_quota(name)?),
            [domid, name] => {
                let domid = parse_domid(domid)?;
                domains.quotas(domid)?.get(parse_quota(name)?)
            }
            _ => return Err(XsError::EINVAL),
        };
        Ok(text_reply(&value.to_string()))
    }

    /// Removes every node `domid` owns (with its subtree), as the stock C
    /// daemon does when a domain goes; the removals fire watches.
    async fn remove_owned(&self, domid: u32) -> Result<(), XsError> {
        // What the domain owns as of every commit so far (its connection
        // has stopped, so it makes no more).
        self.daemon.dispatch.dispatched(self.store.version());
        let candidates = self.daemon.node_counts.nodes_of(domid);
        for _ in 0..AUTOCOMMIT_RETRIES {
            let mut txn = self.store.begin();
            if !ops::remove_owned(&mut txn, &candidates, domid)? {
                return Ok(());
            }
            match self.commit(txn).await {
                Err(XsError::EAGAIN) => continue,
                other => return other,
            }
        }
        Err(XsError::EAGAIN)
    }

    /// Fires a special watch for every watcher allowed to hear it.
    pub(super) fn fire_special(&self, name: &str) {
        let mut snapshot = self.store.snapshot();
        let perms = ops::special_perms(&mut snapshot, name);
        self.daemon
            .watches
            .lock()
            .unwrap()
            .fire_special(name, |caller| caller.privileged || perms.as_ref().is_ok_and(|p| p.access_for(caller).read));
    }
}
