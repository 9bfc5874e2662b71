//! One connection's requests: parsing each payload, running the operation
//! at a snapshot or in the connection's transactions, and the reply.

mod control;
mod domains;

use std::collections::HashMap;
use std::sync::Arc;

use shoal::{Store, Transaction};

use super::connection::Identity;
use super::outbox::Outbox;
use super::watches::Watcher;
use super::{CommitError, Daemon};
use crate::wire::{Fields, Header, Message, MsgType, PayloadError, XsError, PAYLOAD_MAX};
use crate::xs::ops::{self, store_error};
use crate::xs::paths::{self, Resolved};
use crate::xs::perms::{Caller, Perms};
use crate::xs::quota::{Budget, Quota, Quotas};

/// Times a request outside a transaction is retried when a concurrent
/// commit conflicts with it (each retry reads afresh, so it only fails
/// again if yet another commit touched the same nodes meanwhile).
const AUTOCOMMIT_RETRIES: usize = 64;

impl From<PayloadError> for XsError {
    fn from(_: PayloadError) -> XsError {
        XsError::EINVAL
    }
}

/// Limits connections are held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Replies and watch events queued for a connection that is not
    /// reading them; a watch event that finds the queue full closes the
    /// connection.
    pub queued_messages: usize,
    /// The quotas a guest domain starts with.
    pub quotas: Quotas,
    /// Start with the access log on.
    pub access_log: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { queued_messages: 262144, quotas: Quotas::default(), access_log: false }
    }
}

/// An open transaction and the nodes its changes created so far (they
/// count against the `nodes` quota from the moment they are made).
struct OpenTransaction {
    txn: Transaction<'static>,
    created: u64,
}

/// What one connection is and holds.
pub struct Session {
    daemon: Arc<Daemon>,
    store: &'static Store,
    connection: u64,
    outbox: Outbox,
    identity: Identity,
    /// Who asks, as of this request (a guest's target can change).
    caller: Caller,
    /// The base of relative paths.
    home: Option<String>,
    read_only: bool,
    transactions: HashMap<u32, OpenTransaction>,
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
    fn apply(&self, txn: &mut Transaction<'_>, caller: &Caller, budget: &mut Budget) -> Result<(), XsError> {
        match self {
            Change::Write(path, value) => ops::write(txn, caller, budget, path, value),
            Change::Mkdir(path) => ops::mkdir(txn, caller, budget, path),
            Change::Rm(path) => ops::rm(txn, caller, path),
            Change::SetPerms(path, perms) => ops::set_perms(txn, caller, budget, path, perms),
        }
    }
}

impl Session {
    pub fn new(daemon: Arc<Daemon>, connection: u64, outbox: Outbox, identity: Identity) -> Session {
        let store = daemon.store;
        Session {
            daemon,
            store,
            connection,
            outbox,
            caller: identity.caller(),
            home: Some(identity.home()),
            read_only: identity.read_only(),
            identity,
            transactions: HashMap::new(),
            last_tx_id: 0,
        }
    }

    /// Handles one request: queues its reply (and, for `WATCH`, the first
    /// event after it). `false` if the connection is gone.
    pub async fn handle(&mut self, header: &Header, payload: &[u8]) -> bool {
        self.caller = self.identity.caller();
        let result = match header.msg_type() {
            // Types a client has no business sending, and unknown ones.
            None | Some(MsgType::Error | MsgType::WatchEvent) => Err(XsError::ENOSYS),
            // Domain management is for dom0 only.
            Some(kind) if kind.privileged() && !self.caller.privileged => Err(XsError::EACCES),
            // Every request but watches names an open transaction or none.
            Some(kind)
                if header.tx_id != 0
                    && !matches!(kind, MsgType::Watch | MsgType::Unwatch)
                    && !self.transactions.contains_key(&header.tx_id) =>
            {
                Err(XsError::ENOENT)
            }
            Some(kind) => self.dispatch(kind, header, payload).await,
        };
        if self.daemon.access_log() {
            self.log_access(header, payload, &result);
        }
        if let Identity::Domain(state) = &self.identity {
            use std::sync::atomic::Ordering::Relaxed;
            state.transactions.store(self.transactions.len() as u64, Relaxed);
            if matches!(header.msg_type(), Some(MsgType::Watch | MsgType::Unwatch | MsgType::ResetWatches)) {
                state.watches.store(self.daemon.watches.lock().unwrap().count(self.connection) as u64, Relaxed);
            }
        }
        let reply = match result {
            Ok(Reply::Payload(reply)) => Message::reply(header, reply),
            Ok(Reply::Watch { path, token }) => {
                if !self.outbox.reply(Message::ok(header)).await {
                    return false;
                }
                Message::watch_event(path.as_bytes(), &token)
            }
            Err(error) => Message::error(header, error),
        };
        self.outbox.reply(reply).await
    }

    /// The quotas this connection is held to: a guest's; none for dom0's
    /// sockets.
    fn quotas(&self) -> Option<Quotas> {
        match &self.identity {
            Identity::Socket { .. } => None,
            Identity::Domain(state) => Some(state.quotas.lock().unwrap().apply(&self.daemon.domains.default_quotas())),
        }
    }

    fn limit(&self, quota: Quota) -> Option<u64> {
        self.quotas().and_then(|q| q.limit(quota))
    }

    /// How many replies the client may leave untaken before the daemon
    /// stops reading its requests.
    pub fn outstanding_limit(&self) -> Option<usize> {
        self.limit(Quota::Outstanding).map(|n| n as usize)
    }

    /// What a change may add, with `pending` nodes already created by the
    /// transaction it belongs to.
    fn budget(&self, pending: u64) -> Budget {
        let Some(quotas) = self.quotas() else { return Budget::UNLIMITED };
        let owned = self.daemon.node_counts.owned(self.caller.domid) + pending;
        Budget {
            nodes_left: quotas.limit(Quota::Nodes).map(|limit| limit.saturating_sub(owned)),
            node_size: quotas.limit(Quota::NodeSize),
            created: 0,
        }
    }

    fn log_access(&self, header: &Header, payload: &[u8], result: &Result<Reply, XsError>) {
        let kind = header.msg_type().map_or("UNKNOWN", MsgType::name);
        // The first field (a path, mostly), never a value.
        let first = payload.split(|&b| b == 0).next().unwrap_or_default();
        let first = String::from_utf8_lossy(&first[..first.len().min(256)]);
        let outcome = match result {
            Ok(_) => "OK",
            Err(e) => e.name(),
        };
        tracing::info!(
            target: "shoald::access",
            connection = self.connection,
            domid = self.caller.domid,
            tx = header.tx_id,
            req = header.req_id,
            "{kind} {first} -> {outcome}"
        );
    }

    /// Forgets the connection's watches (its transactions go with the session).
    pub fn close(&mut self) {
        self.daemon.watches.lock().unwrap().remove_connection(self.connection);
    }

    fn node_path(&self, path: &str) -> Result<String, XsError> {
        match paths::resolve(path, self.home.as_deref())? {
            Resolved::Node(path) => Ok(path),
            Resolved::Special(_) => Err(XsError::EINVAL),
        }
    }

    async fn dispatch(&mut self, kind: MsgType, header: &Header, payload: &[u8]) -> Result<Reply, XsError> {
        let tx_id = header.tx_id;
        if kind == MsgType::Watch {
            return self.watch(payload);
        }
        self.request(kind, tx_id, payload).await.map(Reply::Payload)
    }

    async fn request(&mut self, kind: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        match kind {
            MsgType::Read => {
                let path = self.node_path(Fields::one(payload)?)?;
                self.read(tx_id, |view, caller| ops::read(view, caller, &path))
            }
            MsgType::Directory => {
                let path = self.node_path(Fields::one(payload)?)?;
                let list = self.read(tx_id, |view, caller| ops::directory(view, caller, &path))?;
                // Too long for one reply: the client then asks for parts.
                if list.len() > PAYLOAD_MAX {
                    return Err(XsError::E2BIG);
                }
                Ok(list)
            }
            MsgType::DirectoryPart => {
                let mut fields = Fields::new(payload);
                let path = self.node_path(fields.next_str()?)?;
                let offset = fields.next_str()?;
                fields.end()?;
                // C's atoi, as the stock daemon reads it: junk is 0, and a
                // negative offset wraps to one past the end.
                let offset = usize::try_from(atoi(offset)).unwrap_or(usize::MAX);
                let list = self.read(tx_id, |view, caller| ops::directory(view, caller, &path))?;
                Ok(directory_part(&list, offset))
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
                let path = fields.next_str()?;
                let texts = fields.all()?;
                if self.limit(Quota::NodePermissions).is_some_and(|limit| texts.len() as u64 > limit) {
                    return Err(XsError::ENOSPC);
                }
                let perms = Perms::parse_list(&texts)?;
                if path.starts_with('@') {
                    return self.set_special_perms(path, perms).await;
                }
                let path = self.node_path(path)?;
                self.change(tx_id, Change::SetPerms(path, perms)).await
            }
            MsgType::TransactionStart => {
                if tx_id != 0 {
                    return Err(XsError::EBUSY);
                }
                // Allowed on the read-only socket too (xenstore-list reads
                // in one); changes inside get EROFS.
                if self.limit(Quota::Transactions).is_some_and(|limit| self.transactions.len() as u64 >= limit) {
                    return Err(XsError::ENOSPC);
                }
                let id = self.next_tx_id();
                self.transactions.insert(id, OpenTransaction { txn: self.store.begin(), created: 0 });
                Ok(text_reply(&id.to_string()))
            }
            MsgType::TransactionEnd => {
                let commit = match Fields::one(payload)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(XsError::EINVAL),
                };
                let open = self.transactions.remove(&tx_id).ok_or(XsError::ENOENT)?;
                if commit {
                    // The nodes it creates were checked against what the
                    // domain owned then; other transactions may have added
                    // to that since.
                    if open.created > 0 && self.budget(0).nodes_left.is_some_and(|left| open.created > left) {
                        return Err(XsError::ENOSPC);
                    }
                    self.commit(open.txn).await?;
                }
                Ok(ok())
            }
            MsgType::GetDomainPath => {
                let domid = atoi(Fields::one(payload)?) as u32;
                Ok(text_reply(&paths::domain_path(domid)))
            }
            MsgType::Introduce
            | MsgType::Release
            | MsgType::IsDomainIntroduced
            | MsgType::Resume
            | MsgType::SetTarget
            | MsgType::GetFeature
            | MsgType::SetFeature
            | MsgType::GetQuota
            | MsgType::SetQuota => self.domain_request(kind, payload).await,
            MsgType::Control => self.control(payload).await,
            MsgType::Unwatch => {
                let (path, token) = watch_fields(payload)?;
                let path = match paths::resolve(path, self.home.as_deref()) {
                    Ok(Resolved::Node(p) | Resolved::Special(p)) => p,
                    Err(_) => return Err(XsError::ENOENT),
                };
                self.daemon.watches.lock().unwrap().remove(self.connection, &path, token)?;
                Ok(ok())
            }
            MsgType::ResetWatches => {
                self.daemon.watches.lock().unwrap().remove_connection(self.connection);
                self.transactions.clear();
                Ok(ok())
            }
            _ => Err(XsError::ENOSYS),
        }
    }

    /// `WATCH <path>|<token>|`: the first event follows the reply.
    fn watch(&mut self, payload: &[u8]) -> Result<Reply, XsError> {
        let (path, token) = watch_fields(payload)?;
        let relative = !path.starts_with('/') && !path.starts_with('@');
        let absolute = match paths::resolve(path, self.home.as_deref())? {
            Resolved::Node(p) => p,
            Resolved::Special(p) if p.len() <= paths::REL_PATH_MAX => p,
            Resolved::Special(_) => return Err(XsError::EINVAL),
        };
        let watcher = Watcher { connection: self.connection, caller: self.caller, outbox: self.outbox.clone() };
        let home = if relative { self.home.as_deref() } else { None };
        let limit = self.limit(Quota::Watches);
        self.daemon.watches.lock().unwrap().add(&watcher, &absolute, token, home, limit)?;
        Ok(Reply::Watch { path: path.to_string(), token: token.to_vec() })
    }

    /// Commits, then has the watch events of the new version queued, so
    /// they reach this connection before its reply.
    async fn commit(&self, txn: Transaction<'static>) -> Result<(), XsError> {
        match self.daemon.commit(txn).await {
            Ok(_) => Ok(()),
            Err(CommitError::Store(e)) => Err(store_error(&e)),
            Err(e) if e.is_conflict() => Err(XsError::EAGAIN),
            Err(CommitError::Cluster(shoal_cluster::Error::TooLarge(message))) => {
                tracing::info!(connection = self.connection, "{message}");
                Err(XsError::E2BIG)
            }
            Err(CommitError::Cluster(shoal_cluster::Error::Invalid(message))) => {
                tracing::info!(connection = self.connection, "{message}");
                Err(XsError::EINVAL)
            }
            Err(error) => {
                tracing::warn!(connection = self.connection, %error, "a commit failed");
                Err(XsError::EIO)
            }
        }
    }

    /// `SET_PERMS` on `@introduceDomain` or `@releaseDomain`: who hears of
    /// those events.
    async fn set_special_perms(&mut self, name: &str, perms: Perms) -> Result<Vec<u8>, XsError> {
        let caller = self.caller;
        for _ in 0..AUTOCOMMIT_RETRIES {
            let mut txn = self.store.begin();
            ops::set_special_perms(&mut txn, &caller, name, &perms)?;
            match self.commit(txn).await {
                Err(XsError::EAGAIN) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(ok()),
            }
        }
        Err(XsError::EAGAIN)
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
        let open = self.transactions.get_mut(&tx_id).ok_or(XsError::ENOENT)?;
        f(&mut open.txn, &self.caller)
    }

    /// Makes a change in transaction `tx_id`, or on its own and committed.
    async fn change(&mut self, tx_id: u32, change: Change<'_>) -> Result<Vec<u8>, XsError> {
        if self.read_only {
            return Err(XsError::EROFS);
        }
        if tx_id != 0 {
            let pending = self.transactions.get(&tx_id).ok_or(XsError::ENOENT)?.created;
            let mut budget = self.budget(pending);
            let open = self.transactions.get_mut(&tx_id).ok_or(XsError::ENOENT)?;
            change.apply(&mut open.txn, &self.caller, &mut budget)?;
            open.created += budget.created;
            return Ok(ok());
        }
        for _ in 0..AUTOCOMMIT_RETRIES {
            let mut txn = self.store.begin();
            change.apply(&mut txn, &self.caller, &mut self.budget(0))?;
            match self.commit(txn).await {
                Err(XsError::EAGAIN) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(ok()),
            }
        }
        Err(XsError::EAGAIN)
    }
}

/// What a request answers.
enum Reply {
    Payload(Vec<u8>),
    /// `OK`, then the watch's first event.
    Watch {
        path: String,
        token: Vec<u8>,
    },
}

/// `WATCH` and `UNWATCH` take a path and a token: exactly two
/// NUL-terminated fields (bytes after the second NUL are ignored, as the
/// stock C daemon does; a third field, such as a depth, is refused).
fn watch_fields(payload: &[u8]) -> Result<(&str, &[u8]), XsError> {
    let mut fields = Fields::new(payload);
    let path = fields.next_str()?;
    let token = fields.next_bytes()?;
    if fields.rest().contains(&0) {
        return Err(XsError::EINVAL);
    }
    Ok((path, token))
}

/// The payload's NUL-terminated fields, as the stock C daemon counts them
/// (bytes after the last NUL are ignored).
pub(super) fn strings(payload: &[u8]) -> Vec<&str> {
    let end = payload.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    payload[..end]
        .split(|&b| b == 0)
        .take(payload[..end].iter().filter(|&&b| b == 0).count())
        .map(|f| std::str::from_utf8(f).unwrap_or(""))
        .collect()
}

/// C's `atoi`: optional blanks and sign, then digits up to the first
/// non-digit (none: 0), wrapping like the C daemons' unsigned reads.
pub(super) fn atoi(text: &str) -> i64 {
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value.wrapping_mul(10).wrapping_add(i64::from(b - b'0'));
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

pub(super) fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

pub(super) fn text_reply(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
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
        let list: Vec<u8> = (0..2000).flat_map(|i| format!("child-{i:05}\0").into_bytes()).collect();
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
    fn atoi_reads_as_c_does() {
        assert_eq!(atoi("7"), 7);
        assert_eq!(atoi(" 7x"), 7);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("-1") as u32, 4294967295);
        assert_eq!(atoi("+12"), 12);
    }

    #[test]
    fn watch_fields_are_a_path_and_a_token() {
        assert_eq!(watch_fields(b"/a\0tok\0"), Ok(("/a", &b"tok"[..])));
        assert_eq!(watch_fields(b"/a\0\0"), Ok(("/a", &b""[..])), "an empty token is allowed");
        assert_eq!(watch_fields(b"/a\0tok\0junk"), Ok(("/a", &b"tok"[..])));
        assert_eq!(watch_fields(b"/a\0tok\0depth\0"), Err(XsError::EINVAL));
        assert_eq!(watch_fields(b"/a\0tok"), Err(XsError::EINVAL));
        assert_eq!(watch_fields(b"/a\0"), Err(XsError::EINVAL));
    }
}
