//! `CONTROL <command>|[<parameters>|]`: dom0's requests to the daemon
//! itself. The commands and their replies follow cxenstored's where
//! shoald has the same thing to say:
//!
//! - `check`: checks every node's checksum (`shoal verify`) and that every
//!   permissions record parses; `OK`, or `EIO` with the finding logged.
//! - `log on|off`: turns the access log on or off.
//! - `print <text>`: writes `control: <text>` to the log.
//! - `memreport`: what the store and the daemon hold, as text.
//! - `quota`: the default quotas, in cxenstored's table; `quota <domid>`:
//!   what a domain holds against them; `quota set <name> <value>`.
//! - `help`: the commands.
//!
//! `logfile`, `quota-soft` and `live-update` are not shoald's (it logs
//! through `tracing`, has no memory quota, and is upgraded by restarting:
//! every acknowledged write is in the store) and get `EINVAL`, as any
//! unknown command does.

use std::fmt::Write;

use super::{strings, text_reply, Session};
use crate::wire::XsError;
use crate::xs::paths;
use crate::xs::perms::Perms;
use crate::xs::quota::Quota;

const HELP: &str = "check\t\nlog\ton|off\nprint\t<string>\nmemreport\t\nquota\t[set <name> <val>|<domid>]\nhelp\t\n";

impl Session {
    pub(super) async fn control(&mut self, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let args = strings(payload);
        let Some((&command, params)) = args.split_first() else { return Err(XsError::EINVAL) };
        match (command, params) {
            ("check", []) => self.check().await,
            ("log", ["on"]) => {
                self.daemon.set_access_log(true);
                Ok(text_reply("OK"))
            }
            ("log", ["off"]) => {
                self.daemon.set_access_log(false);
                Ok(text_reply("OK"))
            }
            ("print", [text]) => {
                tracing::info!("control: {text}");
                Ok(text_reply("OK"))
            }
            ("memreport", []) => self.memreport().await,
            ("quota", []) => Ok(text_reply(&self.quota_table())),
            ("quota", [domid]) => self.quota_usage(domid),
            ("quota", ["set", name, value]) => {
                let quota = Quota::from_name(name).ok_or(XsError::EINVAL)?;
                let value = super::atoi(value);
                if !(1..i64::from(u32::MAX)).contains(&value) {
                    return Err(XsError::EINVAL);
                }
                self.daemon.domains.set_default_quota(quota, value as u32);
                Ok(text_reply("OK"))
            }
            ("help", []) => Ok(text_reply(HELP)),
            _ => Err(XsError::EINVAL),
        }
    }

    fn quota_table(&self) -> String {
        let quotas = self.daemon.domains.default_quotas();
        let mut out = String::from("Quota settings:\n");
        for quota in Quota::ALL {
            let _ = writeln!(out, "{:<17}: {:>8} {}", quota.name(), quotas.get(quota), quota.description());
        }
        out
    }

    /// What a domain holds: nodes it owns, and for an introduced guest the
    /// watches and transactions of its connection.
    fn quota_usage(&self, domid: &str) -> Result<Vec<u8>, XsError> {
        if domid.is_empty() || !domid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(XsError::EINVAL);
        }
        let domid: u32 = domid.parse().map_err(|_| XsError::EINVAL)?;
        let domains = &self.daemon.domains;
        if domid != 0 && !domains.is_introduced(domid) {
            return Err(XsError::ENOENT);
        }
        let mut out = format!("Domain {domid}:\n");
        let _ = writeln!(out, "{:<16}: {:>8}", "nodes", self.daemon.node_counts.owned(domid));
        if let Some(usage) = domains.usage(domid) {
            let _ = writeln!(out, "{:<16}: {:>8}", "watches", usage.watches);
            let _ = writeln!(out, "{:<16}: {:>8}", "transactions", usage.transactions);
        }
        Ok(text_reply(&out))
    }

    async fn check(&self) -> Result<Vec<u8>, XsError> {
        let store = self.store;
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            store.verify().map_err(|e| e.to_string())?;
            let snapshot = store.snapshot();
            for entry in snapshot.scan(paths::PERMS_ROOT).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                if Perms::decode(entry.value()).is_none() {
                    return Err(format!("the permissions record {} does not parse", entry.path()));
                }
            }
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(text_reply("OK")),
            Ok(Err(finding)) => {
                tracing::error!("check: {finding}");
                Err(XsError::EIO)
            }
            Err(join) => {
                tracing::error!(%join, "check failed");
                Err(XsError::EIO)
            }
        }
    }

    async fn memreport(&self) -> Result<Vec<u8>, XsError> {
        let store = self.store;
        let stat = tokio::task::spawn_blocking(move || store.stat())
            .await
            .map_err(|_| XsError::EIO)?
            .map_err(|e| crate::xs::ops::store_error(&e))?;
        let mut out = String::new();
        let _ = writeln!(out, "version          : {}", stat.version);
        let _ = writeln!(out, "keys             : {}", stat.key_count);
        let _ = writeln!(out, "arena bytes      : {}", stat.arena_bytes);
        let _ = writeln!(out, "live bytes       : {}", stat.live_bytes);
        let _ = writeln!(out, "journal bytes    : {}", stat.journal_bytes);
        let _ = writeln!(out, "retained versions: {}", stat.retained_versions.len());
        let _ = writeln!(out, "readers          : {}", stat.readers.len());
        let _ = writeln!(out, "domains          : {}", self.daemon.domains.count());
        let _ = writeln!(out, "watches          : {}", self.daemon.watches.lock().unwrap().total());
        Ok(text_reply(&out))
    }
}
