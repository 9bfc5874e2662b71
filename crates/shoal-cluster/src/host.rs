//! This host's part in a cluster, as a daemon runs it: its store kept as a
//! replica, its status published, its candidacy to be the writer, and the
//! socket on which, once elected, it takes other hosts' transactions.
//!
//! A transaction made on this host's replica commits through
//! [`Host::commit`]: by this host's own [`Writer`] when it holds the role,
//! else sent to the host that does (named, with its address, by the
//! election). Either way the writer checks it against the newest tree and
//! commits it as one etcd revision; the caller then waits until this host's
//! replica holds that revision, so that what it reads next includes its
//! own write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use shoal::{Snapshot, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::forward::{self, Forwarder, Reply, Request, SendError};
use crate::layout::Layout;
use crate::presence::Presence;
use crate::replica::{revision_of, stopped, Replica};
use crate::writer::{writer_candidate, Candidate, Transaction, Writer};
use crate::Error;

/// How a host takes part.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// This host's name in the cluster: letters, digits, `.`, `_`, `-`.
    pub host: String,
    /// Where this host takes other hosts' transactions (when it is the
    /// writer): an address the other hosts reach it at, not `0.0.0.0`. Port
    /// 0 picks a free one.
    pub listen: SocketAddr,
    /// The writer's lease: how long after a writer dies another is
    /// elected.
    pub lease_ttl_secs: i64,
    /// How often the host's status is rewritten in etcd.
    pub status_period: Duration,
    /// How long a commit may wait for a writer (an election after the
    /// writer died included) and for its replica to apply it.
    pub commit_timeout: Duration,
}

impl HostOptions {
    pub fn new(host: &str, listen: SocketAddr) -> HostOptions {
        HostOptions {
            host: host.to_string(),
            listen,
            lease_ttl_secs: 5,
            status_period: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(30),
        }
    }
}

/// The longest host name.
pub const HOST_NAME_MAX: usize = 64;

/// Whether `name` can name a host: it is part of etcd keys and of the
/// status listing.
pub fn check_host_name(name: &str) -> Result<(), Error> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > HOST_NAME_MAX || !name.chars().all(valid_char) {
        return Err(Error::Invalid(format!(
            "{name:?} is not a host name: 1 to {HOST_NAME_MAX} letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// This host in the cluster; stops taking part when [`stop`](Self::stop)ped
/// (or, less politely, dropped).
pub struct Host {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    presence: std::sync::Mutex<Option<Presence>>,
    forward_address: SocketAddr,
}

struct Shared {
    replica: Replica<'static>,
    blobs: Arc<crate::blob::Blobs>,
    client: Client,
    candidate: Candidate,
    options: HostOptions,
    /// This host's writer, while it holds the role.
    writer: tokio::sync::Mutex<Option<Writer>>,
    /// Transactions for this host's writer, local and forwarded: the
    /// committer takes all that wait and commits them as a group.
    commits: tokio::sync::mpsc::UnboundedSender<Pending>,
    forwarder: Forwarder,
    /// The writer, as last looked up in etcd.
    known_writer: std::sync::Mutex<Option<Candidate>>,
    /// Why the replica stopped following, if it did.
    failure: watch::Sender<Option<String>>,
}

impl Host {
    /// Joins the cluster at `endpoints` with `store` as this host's replica
    /// of the tree under `layout`'s prefix: publishes the host's status
    /// (refused if a live host has the name already), loads or follows the
    /// tree until the replica holds etcd's newest revision, then campaigns
    /// to be the writer in the background.
    ///
    /// `store` must have no other writer, and hold either nothing, or a
    /// replica of this same tree: a store that holds other data is refused
    /// rather than overwritten with the cluster's tree.
    pub async fn start(
        store: &'static Store,
        endpoints: &[String],
        layout: Layout,
        options: HostOptions,
    ) -> Result<Host, Error> {
        check_host_name(&options.host)?;
        Layout::check_prefix(layout.prefix())?;
        if options.listen.ip().is_unspecified() {
            return Err(Error::Invalid(format!(
                "the forwarding address {} is not one other hosts can reach: give this host's own address",
                options.listen
            )));
        }
        let mut client = crate::connect(endpoints).await?;
        register_prefix(&mut client, &layout).await?;
        check_store(store, &layout, &mut client).await?;
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::Invalid(format!("the forwarding socket on {}: {e}", options.listen)))?;
        let forward_address =
            listener.local_addr().map_err(|e| Error::Invalid(format!("the forwarding socket: {e}")))?;
        // A host restarted after it died finds its old status still there
        // until that lease ends: it waits that long for its name.
        let claimed_by = Instant::now() + Duration::from_secs(options.lease_ttl_secs.max(1) as u64 + 2);
        let presence = loop {
            let started = Presence::start_reachable(
                client.clone(),
                layout.clone(),
                &options.host,
                Some(forward_address.to_string()),
                store,
                options.lease_ttl_secs,
                options.status_period,
            )
            .await;
            match started {
                Err(Error::HostTaken(_)) if Instant::now() < claimed_by => {
                    tracing::info!(host = %options.host, "the host's name is still held (by its previous run?); waiting for its lease to end");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => break other?,
            }
        };
        let (stop, stopped) = watch::channel(false);
        let candidate = Candidate { host: options.host.clone(), forward: Some(forward_address.to_string()) };
        let (commits, pending) = tokio::sync::mpsc::unbounded_channel();
        let blobs = Arc::new(crate::blob::Blobs::new(store, layout.clone(), client.clone(), &options.host));
        let shared = Arc::new(Shared {
            commits,
            replica: Replica::with_blobs(store, layout, blobs.clone()),
            blobs,
            client: client.clone(),
            candidate,
            options,
            writer: tokio::sync::Mutex::new(None),
            forwarder: Forwarder::default(),
            known_writer: std::sync::Mutex::new(None),
            failure: watch::Sender::new(None),
        });
        let mut tasks = vec![tokio::spawn(follow(shared.clone(), stopped.clone()))];
        // Serve reads of the cluster's newest tree from the start.
        let synced = shared.replica.sync(&mut client, shared.options.commit_timeout).await;
        let host = Host {
            shared: shared.clone(),
            stop,
            tasks: std::sync::Mutex::new(Vec::new()),
            presence: std::sync::Mutex::new(Some(presence)),
            forward_address,
        };
        if let Err(e) = synced {
            let why = host.shared.replica.last_failure();
            *host.tasks.lock().unwrap() = tasks;
            host.stop().await;
            return Err(match why {
                Some(why) => Error::Unavailable(format!("the replica did not catch up with etcd ({e}): {why}")),
                None => e,
            });
        }
        tasks.push(tokio::spawn(commit_groups(shared.clone(), pending, stopped.clone())));
        tasks.push(tokio::spawn(campaign(shared.clone(), stopped.clone())));
        tasks.push(tokio::spawn(serve_forwarded(shared, listener, stopped)));
        *host.tasks.lock().unwrap() = tasks;
        tracing::info!(host = %host.shared.options.host, forward = %forward_address, "joined the cluster");
        Ok(host)
    }

    pub fn replica(&self) -> &Replica<'static> {
        &self.shared.replica
    }

    /// Where this host takes other hosts' transactions.
    pub fn forward_address(&self) -> SocketAddr {
        self.forward_address
    }

    /// Whether this host is the cluster's writer now.
    pub async fn is_writer(&self) -> bool {
        self.shared.writer.lock().await.as_ref().is_some_and(|w| !w.is_deposed())
    }

    /// Resolves when the replica has stopped following etcd for good (its
    /// store failed), with why: the host serves stale data from then on.
    pub async fn failed(&self) -> String {
        let mut failure = self.shared.failure.subscribe();
        let reason = match failure.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        };
        reason
    }

    /// Commits `txn` through the cluster's writer (this host, or the one
    /// that holds the role) and returns its revision. `Error::Conflict` if
    /// something it read changed; `Error::Unavailable` if no writer took it
    /// in time (nothing was written); `Error::Indeterminate` if it was sent
    /// and no answer came (it may have been committed).
    pub async fn commit(&self, txn: &Transaction) -> Result<i64, Error> {
        let mut txn = txn.clone();
        let held = self.refer_to_blobs(&mut txn)?;
        let result = self.send(&txn).await;
        self.keep_held_until_applied(held, &result);
        result
    }

    /// Holds the blobs a commit refers to for as long as a replica may
    /// still need them from this host: until this host's replica has
    /// applied the commit's revision (it then holds the bytes), for a
    /// while if the commit's outcome is unknown, not at all if nothing was
    /// written.
    fn keep_held_until_applied(&self, held: HeldBlobs, result: &Result<i64, Error>) {
        match result {
            Ok(revision) => held.release_once_applied(&self.shared.replica, *revision),
            Err(Error::Indeterminate(_)) => held.release_after(UNKNOWN_OUTCOME_HOLD),
            Err(_) => drop(held),
        }
    }

    async fn send(&self, txn: &Transaction) -> Result<i64, Error> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.options.commit_timeout;
        let mut delay = Duration::from_millis(10);
        let mut last_obstacle;
        loop {
            if *self.stop.borrow() {
                return Err(Error::Unavailable("this host is leaving the cluster".into()));
            }
            // This host's writer, if it holds the role (it answers
            // `Deposed` at once if not).
            match shared.commit_here(txn.clone()).await {
                Err(Error::Deposed) => last_obstacle = "this host's writer was deposed".into(),
                // Nothing written (etcd did not answer the writer): again.
                Err(Error::Unavailable(message)) => last_obstacle = message,
                other => return other,
            }
            match shared.writer_candidate().await {
                Ok(Some(writer)) if writer.host != shared.candidate.host => {
                    let Some(address) = writer.forward else {
                        return Err(Error::Unavailable(format!("the writer {} takes no transactions", writer.host)));
                    };
                    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    match shared.forwarder.send(&address, &Request::Commit(txn.clone()), left).await {
                        Ok(Reply::Committed { revision }) => return Ok(revision),
                        Ok(Reply::Conflict { path, base }) => return Err(Error::Conflict { path, base }),
                        Ok(Reply::Invalid(message)) => return Err(Error::Invalid(message)),
                        Ok(Reply::TooLarge(message)) => return Err(Error::TooLarge(message)),
                        Ok(Reply::Failed(message)) => return Err(Error::Indeterminate(message)),
                        Ok(other @ (Reply::BlobFollows { .. } | Reply::NoBlob)) => {
                            shared.forget_writer();
                            return Err(Error::Indeterminate(format!("the writer answered {other:?}")));
                        }
                        Ok(Reply::NotWritten(message)) => {
                            last_obstacle = format!("the writer {}: {message}", writer.host)
                        }
                        Ok(Reply::NotWriter) => {
                            last_obstacle = format!("{} is no longer the writer", writer.host);
                            shared.forget_writer();
                        }
                        Err(SendError::TooLarge(e)) => {
                            return Err(Error::TooLarge(format!(
                                "a transaction too large to forward to the writer ({e}; at most {} bytes)",
                                forward::FRAME_MAX
                            )))
                        }
                        Err(SendError::NotSent(e)) => {
                            last_obstacle = format!("the writer {} at {address}: {e}", writer.host);
                            shared.forget_writer();
                        }
                        Err(SendError::NoReply(e)) => {
                            shared.forget_writer();
                            return Err(Error::Indeterminate(format!(
                                "the writer {} at {address} did not answer: {e}",
                                writer.host
                            )));
                        }
                    }
                }
                // This host is elected, and about to take the role.
                Ok(Some(_)) => {}
                Ok(None) => last_obstacle = "no writer is elected".into(),
                Err(e) => last_obstacle = e.to_string(),
            }
            if Instant::now() + delay > deadline {
                return Err(Error::Unavailable(last_obstacle));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// Commits a transaction made on this host's replica (its store), and
    /// returns the replica's newest version once it holds the commit. A
    /// transaction that changes nothing commits nothing. A conflict is
    /// reported once the replica holds a revision after the transaction's
    /// base (waiting a second at most, and not while following etcd
    /// fails), so a retry begun then reads at least one more commit.
    pub async fn commit_local(&self, txn: shoal::Transaction<'_>) -> Result<Snapshot, Error> {
        let store = self.shared.replica.store();
        let base = txn.base().clone();
        let intent = txn.into_intent();
        let layout = self.shared.replica.layout();
        if intent.changes.is_empty() {
            // Nothing to commit: what it read is checked against this
            // host's newest version, as one store checks a transaction
            // that only read.
            let head = store.snapshot();
            if revision_of(&base, layout).is_some() {
                crate::writer::check_reads(&head, layout, &Transaction::from_intent(&intent, &base, layout)?)?;
            }
            return Ok(head);
        }
        let cluster_txn = Transaction::from_intent(&intent, &base, layout)?;
        drop(base);
        let timeout = self.shared.options.commit_timeout;
        let revision = match self.commit(&cluster_txn).await {
            Err(Error::Conflict { path, base }) => {
                // What it conflicts with committed after `base`. A retry
                // begun before this replica holds a newer revision would
                // read the same stale tree and conflict again, as many
                // times as it is retried while the replica lags: the
                // conflict is reported once the replica has moved on (each
                // retry then sees at least one more commit). Not waited for
                // long, nor at all while following etcd fails: the change
                // may never arrive (the replica cannot follow, or the
                // conflicting commit itself failed).
                if self.shared.replica.last_failure().is_none() {
                    let wait = timeout.min(CONFLICT_CATCH_UP);
                    let _ = self.shared.replica.wait_for_revision(base + 1, wait).await;
                }
                return Err(Error::Conflict { path, base });
            }
            other => other?,
        };
        self.shared.replica.wait_for_revision(revision, timeout).await
    }

    /// Turns each value of `txn` that goes to etcd as a blob into a
    /// reference to this host, which holds the bytes meanwhile (see
    /// [`keep_held_until_applied`](Self::keep_held_until_applied)).
    fn refer_to_blobs(&self, txn: &mut Transaction) -> Result<HeldBlobs, Error> {
        let layout = self.shared.replica.layout();
        let mut held = HeldBlobs { blobs: self.shared.blobs.clone(), hashes: Vec::new() };
        // Every limit first: nothing is held for a commit that is refused.
        for change in &txn.changes {
            if let crate::writer::Change::Put { path, value } = change {
                if value.len() > layout.max_value_bytes() {
                    return Err(Error::TooLarge(format!(
                        "{path}: a value of {} bytes, over the cluster's limit of {}",
                        value.len(),
                        layout.max_value_bytes()
                    )));
                }
            }
        }
        for change in &mut txn.changes {
            let crate::writer::Change::Put { value, .. } = change else { continue };
            if !crate::blob::is_blob(value, layout.blob_threshold()) {
                continue;
            }
            let bytes = std::mem::take(value);
            let hash = crate::blob::hash(&bytes);
            let reference = crate::blob::BlobRef {
                hash: hash.clone(),
                size: bytes.len() as u64,
                holders: vec![crate::blob::Holder {
                    host: self.shared.candidate.host.clone(),
                    address: self.forward_address.to_string(),
                }],
            };
            self.shared.blobs.hold(&hash, Arc::new(bytes));
            held.hashes.push(hash);
            *value = reference.encode();
        }
        Ok(held)
    }

    /// Leaves the cluster: gives up the writer's role (the next host is
    /// elected at once), removes this host's status, stops following.
    /// Commits that run meanwhile fail (`Error::Unavailable`) or go to the
    /// next writer.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for task in tasks {
            let _ = task.await;
        }
        let presence = self.presence.lock().unwrap().take();
        if let Some(presence) = presence {
            presence.leave().await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap().iter() {
            task.abort();
        }
    }
}

/// Blobs this host holds for a commit; released when dropped, unless
/// handed on to be released later.
struct HeldBlobs {
    blobs: Arc<crate::blob::Blobs>,
    hashes: Vec<String>,
}

/// How long the bytes of a commit whose outcome is unknown stay held: if
/// etcd took it, every replica fetches them within that time.
const UNKNOWN_OUTCOME_HOLD: Duration = Duration::from_secs(600);

impl HeldBlobs {
    /// Releases them once `replica` has applied `revision` (its store
    /// holds the bytes then), however long that takes.
    fn release_once_applied(mut self, replica: &Replica<'static>, revision: i64) {
        if self.hashes.is_empty() {
            return;
        }
        let mut applied = replica.applied();
        let held = HeldBlobs { blobs: self.blobs.clone(), hashes: std::mem::take(&mut self.hashes) };
        tokio::spawn(async move {
            let _ = applied.wait_for(|&r| r >= revision).await;
            drop(held);
        });
    }

    fn release_after(mut self, hold: Duration) {
        if self.hashes.is_empty() {
            return;
        }
        let held = HeldBlobs { blobs: self.blobs.clone(), hashes: std::mem::take(&mut self.hashes) };
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            drop(held);
        });
    }
}

impl Drop for HeldBlobs {
    fn drop(&mut self) {
        for hash in &self.hashes {
            self.blobs.release(hash);
        }
    }
}

/// How long a conflict waits for this host's replica to hold a revision
/// after the transaction's base (see [`Host::commit_local`]): a replica
/// that follows etcd is milliseconds behind.
const CONFLICT_CATCH_UP: Duration = Duration::from_secs(1);

/// A transaction waiting for this host's writer, and who waits for it.
type Pending = (Transaction, tokio::sync::oneshot::Sender<Result<i64, Error>>);

/// The most connections the forwarding socket holds at once (other hosts
/// keep one or a few each).
const FORWARD_CONNECTIONS_MAX: usize = 256;

/// How long a forwarding connection may sit without a request.
const FORWARD_IDLE_MAX: Duration = Duration::from_secs(300);

/// The most transactions committed as one group (fewer when their changes
/// are too many for one etcd transaction).
const GROUP_MAX: usize = 64;

impl Shared {
    /// Commits `txn` with this host's writer; `Error::Deposed` if this host
    /// does not hold the role (nothing was written).
    async fn commit_here(&self, txn: Transaction) -> Result<i64, Error> {
        let (tell, told) = tokio::sync::oneshot::channel();
        if self.commits.send((txn, tell)).is_err() {
            return Err(Error::Unavailable("this host is leaving the cluster".into()));
        }
        told.await.unwrap_or_else(|_| Err(Error::Unavailable("this host is leaving the cluster".into())))
    }

    /// The writer, as last looked up in etcd.
    async fn writer_candidate(&self) -> Result<Option<Candidate>, Error> {
        if let Some(writer) = self.known_writer.lock().unwrap().clone() {
            return Ok(Some(writer));
        }
        let candidate = writer_candidate(&mut self.client.clone(), self.replica.layout()).await?;
        *self.known_writer.lock().unwrap() = candidate.clone();
        Ok(candidate)
    }

    fn forget_writer(&self) {
        *self.known_writer.lock().unwrap() = None;
        self.forwarder.forget();
    }
}

/// Where each cluster of an etcd cluster registers its prefix: below a key
/// that starts with a NUL byte, outside every tree (prefixes start with
/// `/`).
const PREFIX_REGISTRY: &str = "\0shoal/clusters";

/// Registers `layout`'s prefix, refusing one that lies inside another
/// cluster's, or holds one: their trees' keys would mix (the outer tree
/// would take in the inner one's nodes and its writer's and hosts' keys).
async fn register_prefix(client: &mut Client, layout: &Layout) -> Result<(), Error> {
    let prefix = layout.prefix();
    let listed =
        client.get(format!("{PREFIX_REGISTRY}/"), Some(GetOptions::new().with_prefix().with_keys_only())).await?;
    let under = |inner: &str, outer: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'));
    for kv in listed.kvs() {
        let Some(other) = kv.key().strip_prefix(PREFIX_REGISTRY.as_bytes()) else { continue };
        let other = String::from_utf8_lossy(other);
        if under(prefix, &other) || under(&other, prefix) {
            return Err(Error::Invalid(format!(
                "the prefix {prefix} and the prefix {other} of another cluster in this etcd lie one inside the \
                 other: their trees would mix; give each cluster a prefix outside the others'"
            )));
        }
    }
    client.put(format!("{PREFIX_REGISTRY}{prefix}"), "", None).await?;
    Ok(())
}

/// Refuses a store that holds data and is no replica, or a replica of
/// another tree (another prefix, another etcd cluster).
async fn check_store(store: &Store, layout: &Layout, client: &mut Client) -> Result<(), Error> {
    let snapshot = store.snapshot();
    let source = source_of(client, layout).await?;
    match snapshot.get(&layout.source_path())? {
        Some(held) if held != source.as_bytes() => {
            return Err(Error::Invalid(format!(
                "{} is a replica of {:?}, not of {source:?}: give this host an empty store",
                store.dir().display(),
                String::from_utf8_lossy(held)
            )))
        }
        Some(_) => return Ok(()),
        None => {}
    }
    if revision_of(&snapshot, layout).is_none() {
        // Blobs staged by a load that failed are the cluster's, not data.
        let staged = layout.staged_root();
        let ours = |path: &str| {
            path == "/"
                || staged.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                || path.strip_prefix(staged.as_str()).is_some_and(|rest| rest.starts_with('/'))
        };
        let mut entries = snapshot.scan("/")?;
        let data = entries.any(|e| e.map_or(true, |e| !ours(&e.path())));
        if data {
            return Err(Error::Invalid(format!(
                "{} holds data and is no replica of the cluster; joining would replace it with the cluster's \
                 tree: give this host an empty store (and load the data into the cluster through it)",
                store.dir().display()
            )));
        }
    }
    Ok(())
}

/// What a replica of `layout`'s tree in the cluster `client` talks to
/// records as its source: the etcd cluster's id and the prefix.
pub(crate) async fn source_of(client: &mut Client, layout: &Layout) -> Result<String, Error> {
    let reply = client.get(layout.key_prefix(), Some(GetOptions::new().with_keys_only().with_limit(1))).await?;
    let cluster = reply.header().map_or(0, |h| h.cluster_id());
    Ok(source_text(cluster, layout))
}

pub(crate) fn source_text(cluster_id: u64, layout: &Layout) -> String {
    format!("etcd cluster {cluster_id:016x}, prefix {}", layout.key_prefix())
}

async fn follow(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let mut client = shared.client.clone();
    if let Err(error) = shared.replica.follow(&mut client, stop).await {
        tracing::error!(%error, "the replica stopped following etcd");
        // Kept for a caller that asks later (`send` keeps nothing while
        // nobody is subscribed).
        shared.failure.send_replace(Some(error.to_string()));
    }
}

/// Campaigns to be the writer, holds the role until the lease ends, and
/// campaigns again; gives the role up at stop.
async fn campaign(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let layout = shared.replica.layout().clone();
    let ttl = shared.options.lease_ttl_secs;
    let mut delay = Duration::from_millis(100);
    'campaigns: loop {
        let mut client = shared.client.clone();
        let lease = tokio::select! {
            lease = crate::lease::Lease::grant(&mut client, ttl) => lease,
            () = stopped(stop.clone()) => break,
        };
        let elected = match lease {
            Ok(lease) => {
                let id = lease.id;
                tokio::select! {
                    elected = Writer::campaign_on(client.clone(), layout.clone(), &shared.candidate, lease) => elected,
                    () = stopped(stop.clone()) => {
                        // A candidacy left queued in etcd would be elected
                        // once the writer before it resigns.
                        let _ = client.lease_revoke(id).await;
                        break;
                    }
                }
            }
            Err(error) => Err(error),
        };
        match elected {
            Ok(writer) => {
                delay = Duration::from_millis(100);
                *shared.writer.lock().await = Some(writer);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = stopped(stop.clone()) => break 'campaigns,
                    }
                    let mut slot = shared.writer.lock().await;
                    if slot.as_ref().is_none_or(Writer::is_deposed) {
                        *slot = None;
                        tracing::warn!("this host is no longer the writer; campaigning again");
                        break;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "campaigning to be the writer failed; again in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    () = stopped(stop.clone()) => break,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    if let Some(writer) = shared.writer.lock().await.take() {
        if let Err(error) = writer.resign().await {
            tracing::warn!(%error, "could not resign the writer's role; it passes on when the lease ends");
        }
    }
}

/// Commits what waits for this host's writer, group by group: while one
/// group commits, the next gathers.
async fn commit_groups(
    shared: Arc<Shared>,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            first = pending.recv() => first,
            () = stopped(stop.clone()) => None,
        };
        let Some(first) = first else { return };
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (txns, waiting): (Vec<Transaction>, Vec<_>) = group.into_iter().unzip();
        let mut slot = shared.writer.lock().await;
        let results = match slot.as_mut() {
            None => txns.iter().map(|_| Err(Error::Deposed)).collect(),
            Some(writer) => writer.commit_transactions(&shared.replica, &txns).await,
        };
        if results.iter().any(|r| matches!(r, Err(Error::Deposed))) {
            *slot = None;
        }
        drop(slot);
        for (result, tell) in results.into_iter().zip(waiting) {
            let _ = tell.send(result);
        }
    }
}

/// Takes other hosts' transactions while this host is the writer.
async fn serve_forwarded(shared: Arc<Shared>, listener: TcpListener, stop: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= FORWARD_CONNECTIONS_MAX => {
                    tracing::warn!(%peer, "too many connections to the forwarding socket; closing this one");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    connections.spawn(forwarded_connection(shared.clone(), stream, stop.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed on the forwarding socket");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(stop.clone()) => break,
        }
    }
    connections.shutdown().await;
}

async fn forwarded_connection(shared: Arc<Shared>, mut stream: TcpStream, stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    loop {
        let request = tokio::select! {
            request = forward::read_frame::<Request>(&mut stream) => request,
            () = stopped(stop.clone()) => return,
            // Another host keeps its connection to the writer between
            // transactions; one idle this long is let go (it reconnects).
            () = tokio::time::sleep(FORWARD_IDLE_MAX) => return,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                tracing::info!(%error, "dropping a connection to the forwarding socket");
                return;
            }
        };
        let txn = match request {
            Request::Commit(txn) => txn,
            Request::Blob { hash } => {
                stream = match crate::blob::serve(&shared.blobs, &hash, stream).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::info!(%error, hash, "serving a blob failed");
                        return;
                    }
                };
                continue;
            }
        };
        let reply = if let Some(refused) = too_many_entries(&txn) {
            Reply::Invalid(refused)
        } else {
            match shared.commit_here(txn).await {
                Ok(revision) => Reply::Committed { revision },
                Err(Error::Conflict { path, base }) => Reply::Conflict { path, base },
                Err(Error::Invalid(message)) => Reply::Invalid(message),
                Err(Error::TooLarge(message)) => Reply::TooLarge(message),
                Err(Error::Deposed) => Reply::NotWriter,
                Err(e @ (Error::Unavailable(_) | Error::Behind { .. })) => Reply::NotWritten(e.to_string()),
                Err(other) => Reply::Failed(other.to_string()),
            }
        };
        if forward::write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Why a forwarded transaction is refused for its size, if it is.
fn too_many_entries(txn: &Transaction) -> Option<String> {
    let entries = txn.reads.len() + txn.changes.len();
    (entries > forward::ENTRIES_MAX)
        .then(|| format!("a transaction of {entries} reads and changes (at most {})", forward::ENTRIES_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Read;

    #[test]
    fn a_forwarded_transaction_at_below_and_above_the_entries_limit() {
        let reads = |n: usize| Transaction { reads: vec![Read::Value("/a".into()); n], ..Transaction::default() };
        assert_eq!(too_many_entries(&reads(forward::ENTRIES_MAX - 1)), None);
        assert_eq!(too_many_entries(&reads(forward::ENTRIES_MAX)), None);
        let refused = too_many_entries(&reads(forward::ENTRIES_MAX + 1)).unwrap();
        assert!(refused.contains("at most 65536"), "{refused}");
    }
}
