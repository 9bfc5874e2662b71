//! The cluster's one writer: elected through etcd's election service on a
//! lease, and fenced. Every commit it makes is one etcd transaction that
//! applies only while its election key still exists, so a writer whose
//! lease ended (killed, paused, cut off) writes nothing once another host
//! may have been elected: its transaction fails, and it learns it was
//! deposed.
//!
//! Why the fence is enough: etcd's election makes the candidate whose key
//! has the lowest creation revision the leader, and a key lives as long as
//! its lease. While the writer's key exists, every other candidate's key was
//! created after it, so no other host is the leader; the compare and the
//! writes are one etcd transaction, so there is no moment between them.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, LeaderKey, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use shoal::Snapshot;

use crate::layout::Layout;
use crate::lease::Lease;
use crate::replica::{revision_of, Replica};
use crate::Error;

/// One change to the tree, as the writer sends it to etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Sets a node's value, creating its missing ancestors (empty).
    Put { path: String, value: Vec<u8> },
    /// Removes a node and everything below it.
    DeleteTree { path: String },
}

/// Something a transaction read, checked when it commits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Read {
    /// A node's value, or its absence.
    Value(String),
    /// The names of a node's children.
    Children(String),
    /// A node and everything below it.
    Subtree(String),
}

/// A transaction made on some host: read at `base` (the etcd revision of
/// the replica version it read), to change the tree by `changes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub base: i64,
    pub reads: Vec<Read>,
    pub changes: Vec<Change>,
}

impl Transaction {
    /// The cluster transaction of a shoal transaction made on a replica's
    /// store and taken out with [`shoal::Transaction::into_intent`]: `base`
    /// is the replica's version it read at (`store.snapshot_at(
    /// intent.base_version)`). What it read, listed, read whole or wrote is
    /// checked at commit, as one shoal store checks it; copies become the
    /// values they copy, as of the base.
    pub fn from_intent(intent: &shoal::Intent, base: &Snapshot, layout: &Layout) -> Result<Transaction, Error> {
        let revision = revision_of(base, layout)
            .ok_or_else(|| Error::Invalid("the transaction read a version that holds no etcd revision".into()))?;
        let mut reads: Vec<Read> = Vec::new();
        reads.extend(intent.read.iter().chain(&intent.written).cloned().map(Read::Value));
        reads.extend(intent.listed.iter().cloned().map(Read::Children));
        reads.extend(intent.read_trees.iter().cloned().map(Read::Subtree));
        reads.sort();
        reads.dedup();
        let mut changes = Vec::new();
        for change in &intent.changes {
            match change {
                shoal::IntentChange::Put { path, value } => {
                    changes.push(Change::Put { path: path.clone(), value: value.clone() })
                }
                shoal::IntentChange::Delete { path } | shoal::IntentChange::DeleteTree { path } => {
                    changes.push(Change::DeleteTree { path: path.clone() })
                }
                shoal::IntentChange::Copy { path, from } => {
                    let value = base.get(from)?.unwrap_or_default().to_vec();
                    changes.push(Change::Put { path: path.clone(), value });
                }
                shoal::IntentChange::CopyTree { path, from } => {
                    changes.push(Change::DeleteTree { path: path.clone() });
                    for entry in base.scan(from)? {
                        let entry = entry?;
                        let source = entry.path();
                        // What lies below the source, as a path suffix ("" for the source itself).
                        let below = if from == "/" { source.trim_start_matches('/') } else { &source[from.len()..] };
                        let target = match below {
                            "" => path.clone(),
                            rest if from == "/" => format!("{path}/{rest}"),
                            rest => format!("{path}{rest}"),
                        };
                        changes.push(Change::Put { path: target, value: entry.value().to_vec() });
                    }
                }
            }
        }
        Ok(Transaction { base: revision, reads, changes })
    }
}

/// A host that campaigns to be the writer, as its election value holds it:
/// its name, and where other hosts send it their transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub host: String,
    /// The address of its forwarding socket (`IP:PORT`), if it takes
    /// other hosts' transactions.
    pub forward: Option<String>,
}

impl Candidate {
    /// A candidate's election value: JSON; a value that is not (another
    /// tool's candidate) stands for a host of that name.
    fn parse(value: &[u8]) -> Candidate {
        serde_json::from_slice(value)
            .unwrap_or_else(|_| Candidate { host: String::from_utf8_lossy(value).into_owned(), forward: None })
    }
}

/// Whether a transaction joins a group commit.
enum Admitted {
    Yes,
    /// Not with the group: its changes and the group's are too many for
    /// one etcd transaction.
    GroupFull,
}

/// Where the writer writes its name when it first commits a transaction.
pub const WRITER_PATH: &str = "/.shoald/writer";

/// What etcd's request holds besides each operation's keys and values, at
/// most: a field tag and a length for the operation, its request, its key
/// and its value.
const OP_FRAMING: usize = 24;
/// And besides the operations: the fence's compare, the replicas' marker,
/// the header etcd adds before it checks the size.
const REQUEST_FRAMING: usize = 1024;

/// How long the writer waits for its replica to catch up before a check.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// This host, elected as the cluster's writer.
pub struct Writer {
    client: Client,
    layout: Layout,
    host: String,
    leader: LeaderKey,
    lease: Lease,
    /// Whether it has written its name in the tree since it was elected.
    announced: bool,
    /// The revision of its newest commit, if it made one.
    last_commit: Option<i64>,
}

impl Writer {
    /// Campaigns for the cluster's writer under `layout`'s election, as
    /// `host`, on a lease of `ttl_secs` that this process keeps alive; waits
    /// until elected. When the process dies or cannot renew, the lease ends
    /// after `ttl_secs` and the next candidate is elected. If this fails or
    /// is cancelled, nothing keeps the candidacy alive.
    pub async fn elect(client: Client, layout: Layout, host: &str, ttl_secs: i64) -> Result<Writer, Error> {
        Writer::campaign(client, layout, &Candidate { host: host.to_string(), forward: None }, ttl_secs).await
    }

    /// [`elect`](Self::elect), naming where other hosts reach this one.
    pub async fn campaign(
        mut client: Client,
        layout: Layout,
        candidate: &Candidate,
        ttl_secs: i64,
    ) -> Result<Writer, Error> {
        let lease = Lease::grant(&mut client, ttl_secs).await?;
        Writer::campaign_on(client, layout, candidate, lease).await
    }

    /// [`campaign`](Self::campaign) on a lease granted already: a caller
    /// that may give up the campaign midway revokes the lease then, so
    /// that its candidacy, queued in etcd, is not elected after it left.
    pub(crate) async fn campaign_on(
        mut client: Client,
        layout: Layout,
        candidate: &Candidate,
        lease: Lease,
    ) -> Result<Writer, Error> {
        let host = candidate.host.as_str();
        let value = serde_json::to_vec(candidate).expect("serializable");
        let elected = match client.campaign(layout.election_name(), value, lease.id).await {
            Ok(mut reply) => reply.take_leader().ok_or(Error::Election("etcd elected no key")),
            Err(e) => Err(e.into()),
        };
        let leader = match elected {
            Ok(leader) => leader,
            Err(e) => {
                let _ = client.lease_revoke(lease.id).await;
                return Err(e);
            }
        };
        tracing::info!(host, revision = leader.rev(), "elected the cluster's writer");
        Ok(Writer { client, layout, host: host.to_string(), leader, lease, announced: false, last_commit: None })
    }

    /// The revision at which this writer was elected (its fencing token).
    pub fn elected_at(&self) -> i64 {
        self.leader.rev()
    }

    /// Whether this writer's lease is known to have ended (its commits
    /// fail from then on).
    pub fn is_deposed(&self) -> bool {
        !self.lease.alive()
    }

    /// Commits `txn` if nothing it read changed between its base revision
    /// and the newest: its changes then land as one revision after the
    /// newest, as if the transaction had run alone there. `replica` is this
    /// host's replica, followed meanwhile; it is brought up to the tree's
    /// newest revision before the check. `Error::Conflict` names a node
    /// that changed (or a base too old for the replica to still hold).
    pub async fn commit_transaction(&mut self, replica: &Replica<'_>, txn: &Transaction) -> Result<i64, Error> {
        let mut results = self.commit_transactions(replica, std::slice::from_ref(txn)).await;
        results.pop().expect("one result per transaction")
    }

    /// Commits several transactions, in order, each as
    /// [`commit_transaction`](Self::commit_transaction) would, but as few
    /// etcd revisions as will hold them (one, mostly): a group commit.
    /// Each is checked against the newest tree and against the transactions
    /// before it in the group: one that read a node an earlier one in the
    /// group writes (or a node above or below it) conflicts, as it would
    /// had the earlier one committed first. One result per transaction.
    ///
    /// The tree's newest revision is this writer's own last commit once it
    /// made one: while it holds the role no one else changes the tree (a
    /// writer that lost the role without knowing checks against an old
    /// tree, and its commit is then refused by the fence). So only the
    /// first group, or one with a transaction that read at a later revision
    /// (on a replica that loaded at etcd's newest revision), asks etcd
    /// where it stands; the others wait for the replica to apply the last
    /// commit, which it mostly has.
    pub async fn commit_transactions(
        &mut self,
        replica: &Replica<'_>,
        txns: &[Transaction],
    ) -> Vec<Result<i64, Error>> {
        let mut results: Vec<Option<Result<i64, Error>>> = txns.iter().map(|_| None).collect();
        let mut next = 0;
        while next < txns.len() {
            let newest_base = txns[next..].iter().map(|t| t.base).max().unwrap_or(0);
            let now = match self.catch_up(replica, newest_base).await {
                Ok(now) => now,
                Err(e) => {
                    // Nothing of the rest was written.
                    let message = e.to_string();
                    for result in &mut results[next..] {
                        *result = Some(Err(match &e {
                            Error::Deposed => Error::Deposed,
                            _ => Error::Unavailable(message.clone()),
                        }));
                    }
                    break;
                }
            };
            let head = replica.store().snapshot();
            let mut accepted: Vec<usize> = Vec::new();
            let mut combined: Vec<Change> = Vec::new();
            let mut at = next;
            while at < txns.len() {
                let txn = &txns[at];
                match self.admit(replica.layout(), &head, now, txn, txns, &accepted, &combined) {
                    Ok(Admitted::Yes) => {
                        accepted.push(at);
                        combined.extend(txn.changes.iter().cloned());
                    }
                    Ok(Admitted::GroupFull) => break,
                    Err(e) => results[at] = Some(Err(e)),
                }
                at += 1;
            }
            next = at;
            if accepted.is_empty() {
                continue;
            }
            match self.commit(&combined, &head).await {
                Ok(revision) => {
                    for &i in &accepted {
                        results[i] = Some(Ok(revision));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for &i in &accepted {
                        results[i] = Some(Err(match &e {
                            Error::Deposed => Error::Deposed,
                            _ => Error::Indeterminate(message.clone()),
                        }));
                    }
                    // Whatever became of it, nothing after it is tried:
                    // those are not written.
                    for result in &mut results[next..] {
                        *result = Some(Err(match &e {
                            Error::Deposed => Error::Deposed,
                            _ => Error::Unavailable(message.clone()),
                        }));
                    }
                    break;
                }
            }
        }
        results.into_iter().map(|r| r.expect("every transaction has a result")).collect()
    }

    /// Brings the replica up to the tree's newest revision (see
    /// [`commit_transactions`](Self::commit_transactions)) and returns it;
    /// `newest_base` is the newest revision a transaction to check read at.
    async fn catch_up(&mut self, replica: &Replica<'_>, newest_base: i64) -> Result<i64, Error> {
        if let Some(last) = self.last_commit.filter(|&last| self.announced && newest_base <= last) {
            replica.wait_for_revision(last, SYNC_TIMEOUT).await?;
            return Ok(last);
        }
        let now = replica.sync(&mut self.client, SYNC_TIMEOUT).await?;
        if self.announced {
            return Ok(now);
        }
        // A change every replica applies, at a revision after this
        // writer's replica loaded: a transaction read at a base older than
        // the oldest version this replica holds cannot be checked (it is
        // refused), and this gives every host a base it can.
        let announce = Change::Put { path: WRITER_PATH.to_string(), value: self.host.clone().into_bytes() };
        self.commit(&[announce], &replica.store().snapshot()).await?;
        self.announced = true;
        replica.sync(&mut self.client, SYNC_TIMEOUT).await
    }

    /// Whether `txn` joins the group `accepted` (whose changes, in order,
    /// are `combined`) to commit on `head`, the tree at revision `now`.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        layout: &Layout,
        head: &Snapshot,
        now: i64,
        txn: &Transaction,
        all: &[Transaction],
        accepted: &[usize],
        combined: &[Change],
    ) -> Result<Admitted, Error> {
        if txn.base > now {
            return Err(Error::Invalid(format!("a transaction read at revision {}, after etcd's {now}", txn.base)));
        }
        let conflict = |path: &str| Error::Conflict { path: path.to_string(), base: txn.base };
        check_reads(head, layout, txn)?;
        if !txn.reads.is_empty() {
            for read in &txn.reads {
                let (Read::Value(path) | Read::Children(path) | Read::Subtree(path)) = read;
                // What an earlier transaction of the group changes.
                let related = |a: &str, b: &str| {
                    let under = |x: &str, root: &str| {
                        root == "/" || x == root || x.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
                    };
                    under(a, b) || under(b, a)
                };
                for &earlier in accepted {
                    for change in &all[earlier].changes {
                        let (Change::Put { path: changed, .. } | Change::DeleteTree { path: changed }) = change;
                        if related(path, changed) {
                            return Err(conflict(path));
                        }
                    }
                }
            }
        }
        // Its own changes must be committable alone; with the group's, they
        // may be too many for one etcd transaction: then it starts the next.
        self.operations(&txn.changes, head)?;
        let together: Vec<Change> = combined.iter().chain(&txn.changes).cloned().collect();
        match self.operations(&together, head) {
            Ok(_) => Ok(Admitted::Yes),
            Err(Error::TooLarge(_)) if !accepted.is_empty() => Ok(Admitted::GroupFull),
            Err(e) => Err(e),
        }
    }

    /// Commits `changes`, in order, as one etcd revision; returns it.
    /// `tree` must be the cluster's tree as of the writer's newest revision
    /// (its replica, caught up): what the changes create on the way and
    /// what a delete removes are found there, so that every node stays one
    /// key. `Error::Deposed` if this host is no longer the writer, and then
    /// nothing was written; `Error::TooLarge` for a value or a commit over
    /// the cluster's limits; `Error::Invalid` for a change no replica could
    /// apply.
    pub async fn commit(&mut self, changes: &[Change], tree: &Snapshot) -> Result<i64, Error> {
        let ops = self.operations(changes, tree)?;
        let fence = Compare::create_revision(self.leader.key().to_vec(), CompareOp::Equal, self.leader.rev());
        let reply = match self.client.txn(Txn::new().when([fence]).and_then(ops)).await {
            Ok(reply) => reply,
            Err(e) => {
                // etcd may have committed it without our hearing so: the
                // newest revision is no longer known to be our last commit,
                // and the next check must ask etcd where it stands.
                self.last_commit = None;
                return Err(e.into());
            }
        };
        if !reply.succeeded() {
            return Err(Error::Deposed);
        }
        let revision = reply.header().map_or(0, |h| h.revision());
        self.last_commit = Some(revision);
        Ok(revision)
    }

    /// The etcd operations of `changes` on `tree`: each node once (etcd
    /// refuses a transaction that names a key twice, or puts a key a range
    /// it deletes covers).
    fn operations(&self, changes: &[Change], tree: &Snapshot) -> Result<Vec<TxnOp>, Error> {
        let mut puts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut deleted: Vec<String> = Vec::new();
        let below =
            |path: &str, root: &str| path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'));
        for change in changes {
            match change {
                Change::Put { path, value } => {
                    self.check_path(path)?;
                    if value.len() > self.layout.max_value_bytes() {
                        return Err(Error::TooLarge(format!(
                            "{path}: a value of {} bytes, over the cluster's limit of {}",
                            value.len(),
                            self.layout.max_value_bytes()
                        )));
                    }
                    let mut at = path.as_str();
                    while let Some(cut) = at.rfind('/').filter(|&c| c > 0) {
                        at = &at[..cut];
                        let exists = !deleted.iter().any(|d| below(at, d)) && tree.exists(at)?;
                        if !exists && !puts.contains_key(at) {
                            puts.insert(at.to_string(), Vec::new());
                        }
                    }
                    puts.insert(path.clone(), value.clone());
                }
                Change::DeleteTree { path } => {
                    self.check_path(path)?;
                    puts.retain(|p, _| !below(p, path));
                    if !deleted.iter().any(|d| below(path, d)) {
                        deleted.retain(|d| !below(d, path));
                        deleted.push(path.clone());
                    }
                }
            }
        }
        let mut ops = Vec::new();
        // What the request weighs in etcd: each key and value with its
        // framing (a few bytes of tags and lengths each), and the fence.
        let mut bytes = REQUEST_FRAMING + self.leader.key().len();
        for root in &deleted {
            let key = self.layout.key(root);
            if puts.keys().any(|p| below(p, root)) {
                // Written again below: delete, one by one, what is there and
                // is not written again.
                for entry in tree.scan(root)? {
                    let path = entry?.path();
                    if !puts.contains_key(&path) {
                        let key = self.layout.key(&path);
                        bytes += key.len() + OP_FRAMING;
                        ops.push(TxnOp::delete(key, None));
                    }
                }
            } else {
                bytes += 3 * key.len() + 2 * OP_FRAMING;
                ops.push(TxnOp::delete(key.clone(), None));
                ops.push(TxnOp::delete(format!("{key}/"), Some(DeleteOptions::new().with_prefix())));
            }
        }
        if puts.is_empty() {
            // A delete of nothing makes no revision, and one that deletes
            // something may be all of it: a put of the replicas' marker
            // key (delivered to each, applied by none) makes sure the
            // commit has a revision every replica's watch delivers, which
            // is what its committer waits for.
            ops.push(TxnOp::put(self.layout.key(&self.layout.sync_marker_path()), "", None));
        }
        for (path, value) in puts {
            let key = self.layout.key(&path);
            bytes += key.len() + value.len() + OP_FRAMING;
            ops.push(TxnOp::put(key, value, None));
        }
        if ops.len() > self.layout.max_txn_ops() {
            return Err(Error::TooLarge(format!(
                "a commit of {} etcd operations; etcd takes at most {} in one transaction (its --max-txn-ops)",
                ops.len(),
                self.layout.max_txn_ops()
            )));
        }
        if bytes > self.layout.max_request_bytes() {
            return Err(Error::TooLarge(format!(
                "a commit of about {bytes} bytes; etcd takes at most {} in one request (its --max-request-bytes)",
                self.layout.max_request_bytes()
            )));
        }
        Ok(ops)
    }

    /// A path every replica applies: valid, not the root, not a replica's
    /// own.
    fn check_path(&self, path: &str) -> Result<(), Error> {
        if let Err(e) = shoal::path::validate(path) {
            return Err(Error::Invalid(e.to_string()));
        }
        if path == "/" || self.layout.is_local(path) {
            return Err(Error::Invalid(format!("{path}: not a path the cluster's writer changes")));
        }
        Ok(())
    }

    /// Gives the role up at once (the next candidate need not wait for the
    /// lease to end).
    pub async fn resign(mut self) -> Result<(), Error> {
        let options = etcd_client::ResignOptions::new().with_leader(self.leader.clone());
        self.client.resign(Some(options)).await?;
        Ok(())
    }

    /// Stops renewing the lease without resigning, as a process that hung
    /// would: the lease ends after its time to live, and with it this
    /// writer's right to commit.
    pub fn stop_renewing(&self) {
        self.lease.stop();
    }
}

/// Checks that everything `txn` read at its base is the same in `head`:
/// `Error::Conflict` naming what changed (`/` when the tree at the base is
/// no longer known); `Error::Invalid` for a read of what is not a path.
pub(crate) fn check_reads(head: &Snapshot, layout: &Layout, txn: &Transaction) -> Result<(), Error> {
    for read in &txn.reads {
        let (Read::Value(path) | Read::Children(path) | Read::Subtree(path)) = read;
        shoal::path::validate(path).map_err(|e| Error::Invalid(format!("a read of {e}")))?;
    }
    if txn.reads.is_empty() {
        return Ok(());
    }
    let conflict = |path: &str| Error::Conflict { path: path.to_string(), base: txn.base };
    let base = version_at(head, layout, txn.base)?.ok_or_else(|| conflict("/"))?;
    for read in &txn.reads {
        let (Read::Value(path) | Read::Children(path) | Read::Subtree(path)) = read;
        let same = match read {
            Read::Value(_) => base.get(path)? == head.get(path)?,
            Read::Children(_) => same_children(&base, head, path)?,
            Read::Subtree(_) => base.diff(head, path)?.changes.is_empty(),
        };
        if !same {
            return Err(conflict(path));
        }
    }
    Ok(())
}

/// Whether `path` has the same children in `base` and `head`. A child is
/// added or removed only by a change at or below it, so the versions'
/// change sets name every child to look at: a queue's claim lists
/// thousands of items, and a few of them change between its base and the
/// newest. When the change sets are no longer all there, the lists are
/// compared whole.
fn same_children(base: &Snapshot, head: &Snapshot, path: &str) -> Result<bool, Error> {
    let changes = match head.changes(base.version(), path) {
        Ok(changes) => changes,
        Err(shoal::Error::HistoryGone { .. } | shoal::Error::ChangesNotListed { .. }) => {
            return Ok(base.list(path)? == head.list(path)?)
        }
        Err(e) => return Err(e.into()),
    };
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    let mut looked_at = std::collections::HashSet::new();
    for change in &changes {
        let changed = change.path();
        let Some(rest) = changed.strip_prefix(&prefix) else {
            // The node's own value set: not its children.
            if changed == path && change.kind() == shoal::ChangeKind::Set {
                continue;
            }
            // The node, or a subtree holding it, removed (and maybe made
            // again): compare whole.
            return Ok(base.list(path)? == head.list(path)?);
        };
        let child = match rest.find('/') {
            Some(cut) => &changed[..prefix.len() + cut],
            None => changed.as_str(),
        };
        if looked_at.insert(child.to_string()) && base.exists(child)? != head.exists(child)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The newest version `head` retains that holds etcd revision `revision`
/// or an older one: the tree as of `revision`. `None` if the replica no
/// longer holds a version that old. It walks back from `head` one version
/// at a time: a transaction's base is mostly a few versions old.
fn version_at(head: &Snapshot, layout: &Layout, revision: i64) -> Result<Option<Snapshot>, Error> {
    let mut at = head.clone();
    // The version after `at`, with its revision.
    let mut after: Option<(Snapshot, i64)> = None;
    loop {
        let r = revision_of(&at, layout).unwrap_or(0);
        if r == 0 {
            // Older than the replica's first version: nothing to go by.
            return Ok(None);
        }
        if r <= revision {
            // The tree is the same up to `revision` only if the next
            // version followed etcd: not a reload, which collapsed what
            // came between.
            if let Some((next, next_revision)) = &after {
                let reloaded =
                    next.get(&layout.reload_path())?.is_some_and(|v| v == next_revision.to_string().as_bytes());
                if r < revision && reloaded {
                    return Ok(None);
                }
            }
            return Ok(Some(at));
        }
        if at.version() == 0 {
            return Ok(None);
        }
        let before = match at.at_version(at.version() - 1) {
            Ok(before) => before,
            // A gap that compaction's thinning left, or the oldest retained
            // version passed: what came between is not known.
            Err(shoal::Error::VersionThinned { .. } | shoal::Error::VersionNotRetained { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        after = Some((std::mem::replace(&mut at, before), r));
    }
}

/// The host that is the cluster's writer now, if any.
pub async fn current_writer(client: &mut Client, layout: &Layout) -> Result<Option<String>, Error> {
    Ok(writer_candidate(client, layout).await?.map(|c| c.host))
}

/// The cluster's writer now, with where it takes transactions, if any.
pub async fn writer_candidate(client: &mut Client, layout: &Layout) -> Result<Option<Candidate>, Error> {
    match client.leader(layout.election_name()).await {
        Ok(reply) => Ok(reply.kv().map(|kv| Candidate::parse(kv.value()))),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("no leader") => Ok(None),
        Err(e) => Err(e.into()),
    }
}
