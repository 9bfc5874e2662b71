//! One connection's requests: parsing each payload, running the operation
//! at a snapshot or in the connection's transactions, and the reply.

use std::collections::HashMap;

use shoal::{Store, Transaction};

use crate::wire::{Fields, Header, Message, MsgType, PayloadError, XsError};
use crate::xs::ops::{self, store_error};
use crate::xs::paths::{self, Resolved};
use crate::xs::perms::{Caller, Perms};

/// Times a request outside a transaction is retried when a concurrent
/// commit conflicts with it (each retry reads afresh, so it only fails
/// again if yet another commit touched the same nodes meanwhile).
const AUTOCOMMIT_RETRIES: usize = 64;

impl From<PayloadError> for XsError {
    fn from(_: PayloadError) -> XsError {
        XsError::EINVAL
    }
}

/// Limits one connection is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open transactions per connection (0: no limit).
    pub transactions: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { transactions: 10 }
    }
}

/// What one connection is and holds.
pub struct Session {
    store: &'static Store,
    caller: Caller,
    /// The base of relative paths, `None` if the connection has none.
    home: Option<String>,
    read_only: bool,
    limits: Limits,
    transactions: HashMap<u32, Transaction<'static>>,
    last_tx_id: u32,
}

/// A write to make, inside or outside a transaction.
enum Change<'p> {
    Write(String, &'p [u8]),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Perms),
}

impl Change<'_> {
    fn apply(&self, txn: &mut Transaction<'_>, caller: &Caller) -> Result<(), XsError> {
        match self {
            Change::Write(path, value) => ops::write(txn, caller, path, value),
            Change::Mkdir(path) => ops::mkdir(txn, caller, path),
            Change::Rm(path) => ops::rm(txn, caller, path),
            Change::SetPerms(path, perms) => ops::set_perms(txn, caller, path, perms),
        }
    }
}

impl Session {
    pub fn new(
        store: &'static Store,
        caller: Caller,
        home: Option<String>,
        read_only: bool,
        limits: Limits,
    ) -> Session {
        Session { store, caller, home, read_only, limits, transactions: HashMap::new(), last_tx_id: 0 }
    }

    /// The reply to one request.
    pub async fn handle(&mut self, header: &Header, payload: &[u8]) -> Message {
        let result = match header.msg_type() {
            Some(kind) => self.dispatch(kind, header, payload).await,
            None => Err(XsError::EINVAL),
        };
        match result {
            Ok(reply) => Message::reply(header, reply),
            Err(error) => Message::error(header, error),
        }
    }

    fn node_path(&self, path: &str) -> Result<String, XsError> {
        match paths::resolve(path, self.home.as_deref())? {
            Resolved::Node(path) => Ok(path),
            Resolved::Special(_) => Err(XsError::EINVAL),
        }
    }

    async fn dispatch(&mut self, kind: MsgType, header: &Header, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let tx_id = header.tx_id;
        match kind {
            MsgType::Read => {
                let path = self.node_path(Fields::one(payload)?)?;
                self.read(tx_id, |view, caller| ops::read(view, caller, &path))
            }
            MsgType::Directory => {
                let path = self.node_path(Fields::one(payload)?)?;
                let names = self.read(tx_id, |view, caller| ops::directory(view, caller, &path))?;
                Ok(join_names(&names))
            }
            MsgType::DirectoryPart => {
                let mut fields = Fields::new(payload);
                let path = self.node_path(fields.next_str()?)?;
                let offset = fields.next_str()?;
                fields.end()?;
                let offset: usize = offset.parse().map_err(|_| XsError::EINVAL)?;
                let names = self.read(tx_id, |view, caller| ops::directory(view, caller, &path))?;
                Ok(directory_part(&join_names(&names), offset))
            }
            MsgType::GetPerms => {
                let path = self.node_path(Fields::one(payload)?)?;
                let perms = self.read(tx_id, |view, caller| ops::get_perms(view, caller, &path))?;
                Ok(perms.encode())
            }
            MsgType::Write => {
                let mut fields = Fields::new(payload);
                let path = self.node_path(fields.next_str()?)?;
                self.change(tx_id, Change::Write(path, fields.rest())).await
            }
            MsgType::Mkdir => {
                let path = self.node_path(Fields::one(payload)?)?;
                self.change(tx_id, Change::Mkdir(path)).await
            }
            MsgType::Rm => {
                let path = self.node_path(Fields::one(payload)?)?;
                self.change(tx_id, Change::Rm(path)).await
            }
            MsgType::SetPerms => {
                let mut fields = Fields::new(payload);
                let path = self.node_path(fields.next_str()?)?;
                let perms = Perms::parse_list(&fields.all()?)?;
                self.change(tx_id, Change::SetPerms(path, perms)).await
            }
            MsgType::TransactionStart => {
                if tx_id != 0 {
                    return Err(XsError::EBUSY);
                }
                Fields::one(payload)?;
                if self.read_only {
                    return Err(XsError::EROFS);
                }
                if self.limits.transactions != 0 && self.transactions.len() >= self.limits.transactions {
                    return Err(XsError::ENOSPC);
                }
                let id = self.next_tx_id();
                self.transactions.insert(id, self.store.begin());
                Ok(text_reply(&id.to_string()))
            }
            MsgType::TransactionEnd => {
                let commit = match Fields::one(payload)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(XsError::EINVAL),
                };
                let txn = self.transactions.remove(&tx_id).ok_or(XsError::ENOENT)?;
                if commit {
                    commit_blocking(txn).await?;
                }
                Ok(ok())
            }
            MsgType::GetDomainPath => {
                let domid = parse_domid(Fields::one(payload)?)?;
                Ok(text_reply(&paths::domain_path(domid)))
            }
            _ => Err(XsError::ENOSYS),
        }
    }

    fn next_tx_id(&mut self) -> u32 {
        loop {
            self.last_tx_id = self.last_tx_id.wrapping_add(1);
            if self.last_tx_id != 0 && !self.transactions.contains_key(&self.last_tx_id) {
                return self.last_tx_id;
            }
        }
    }

    /// Runs a read at the newest snapshot, or in transaction `tx_id`.
    fn read<T>(
        &mut self,
        tx_id: u32,
        f: impl FnOnce(&mut dyn ops::View, &Caller) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        if tx_id == 0 {
            let mut snapshot = self.store.snapshot();
            return f(&mut snapshot, &self.caller);
        }
        let txn = self.transactions.get_mut(&tx_id).ok_or(XsError::ENOENT)?;
        f(txn, &self.caller)
    }

    /// Makes a change in transaction `tx_id`, or on its own and committed.
    async fn change(&mut self, tx_id: u32, change: Change<'_>) -> Result<Vec<u8>, XsError> {
        if self.read_only {
            return Err(XsError::EROFS);
        }
        if tx_id != 0 {
            let txn = self.transactions.get_mut(&tx_id).ok_or(XsError::ENOENT)?;
            change.apply(txn, &self.caller)?;
            return Ok(ok());
        }
        for _ in 0..AUTOCOMMIT_RETRIES {
            let mut txn = self.store.begin();
            change.apply(&mut txn, &self.caller)?;
            match commit_blocking(txn).await {
                Err(XsError::EAGAIN) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(ok()),
            }
        }
        Err(XsError::EAGAIN)
    }
}

/// Commits on a blocking thread: with `sync` durability a commit waits for
/// the journal's sync (shared with every commit running at the same time).
async fn commit_blocking(txn: Transaction<'static>) -> Result<(), XsError> {
    let result = tokio::task::spawn_blocking(move || txn.commit()).await;
    match result {
        Ok(Ok(_version)) => Ok(()),
        Ok(Err(e)) => Err(store_error(&e)),
        Err(join) => {
            tracing::error!(%join, "commit task failed");
            Err(XsError::EIO)
        }
    }
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

fn text_reply(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

fn parse_domid(text: &str) -> Result<u32, XsError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::EINVAL);
    }
    let domid: u32 = text.parse().map_err(|_| XsError::EINVAL)?;
    if domid > crate::xs::perms::DOMID_MAX {
        return Err(XsError::EINVAL);
    }
    Ok(domid)
}

/// Child names, each NUL-terminated (a `DIRECTORY` reply).
fn join_names(names: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for name in names {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out
}

/// A `DIRECTORY_PART` reply: a generation count, then as many whole names
/// from byte `offset` of the full list as fit the payload limit, with an
/// empty name after the last one of the list.
///
/// The generation count is a hash of the whole list: two parts with the
/// same count come from the same list, which is what a client checks.
fn directory_part(list: &[u8], offset: usize) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    let mut hasher = rustc_hash::FxHasher::default();
    list.hash(&mut hasher);
    let mut out = text_reply(&hasher.finish().to_string());
    if offset >= list.len() {
        out.push(0);
        return out;
    }
    let room = crate::wire::PAYLOAD_MAX - out.len() - 1;
    let mut end = offset;
    while end < list.len() {
        let name_end = list[end..].iter().position(|&b| b == 0).map_or(list.len(), |i| end + i + 1);
        if name_end - offset > room {
            break;
        }
        end = name_end;
    }
    out.extend_from_slice(&list[offset..end]);
    if end == list.len() {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_parts_cover_the_list_and_end_with_an_empty_name() {
        let names: Vec<String> = (0..2000).map(|i| format!("child-{i:05}")).collect();
        let list = join_names(&names);
        let mut offset = 0;
        let mut seen = Vec::new();
        let mut generation = None;
        loop {
            let part = directory_part(&list, offset);
            assert!(part.len() <= crate::wire::PAYLOAD_MAX);
            let gen_end = part.iter().position(|&b| b == 0).unwrap();
            let gen = part[..gen_end].to_vec();
            assert_eq!(*generation.get_or_insert(gen.clone()), gen);
            let body = &part[gen_end + 1..];
            if body.ends_with(&[0, 0]) || body == [0] {
                let body = &body[..body.len() - 1];
                seen.extend_from_slice(body);
                break;
            }
            seen.extend_from_slice(body);
            offset += body.len();
        }
        assert_eq!(seen, list);
        // Past the end: just the generation and an empty name.
        let past = directory_part(&list, list.len());
        assert!(past.ends_with(&[0, 0]));
    }

    #[test]
    fn domain_ids_are_decimal_up_to_65535() {
        assert_eq!(parse_domid("0"), Ok(0));
        assert_eq!(parse_domid("65535"), Ok(65535));
        for bad in ["", "65536", "-1", "7a", "123456"] {
            assert_eq!(parse_domid(bad), Err(XsError::EINVAL), "{bad:?}");
        }
    }
}
