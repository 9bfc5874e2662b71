//! A replica: a local store that holds the tree as etcd holds it, version
//! after version in etcd's order.
//!
//! Each etcd revision that changes keys below the prefix becomes one local
//! version, and the version records that revision (at
//! [`Layout::revision_path`]), so every replica's readers see a prefix of
//! one sequence of versions, and a reader can tell which revision it reads.
//! A replica with no revision yet, or one etcd has compacted past, loads
//! the keys at one revision and commits what differs from what it holds, as
//! one version: local watchers see that version's changes like any other,
//! never a silent gap.
//!
//! What a key's events do: a put sets the node's value (creating missing
//! ancestors, empty, as any shoal write); a delete removes the node and
//! everything below it, unless etcd still holds keys below it (another
//! client deleted the key alone): then the node stays, emptied, as a
//! replica that loads holds it. The cluster's writer stores every node as
//! a key and deletes a subtree's keys in one revision, so a replica holds
//! exactly what etcd lists. Keys put by others, below a path that is not a
//! key, leave replicas agreeing with each other whether they followed or
//! reloaded, except for such ancestors left behind after the key's delete.

use std::collections::{BTreeMap, HashSet};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use shoal::{Snapshot, Store};
use tokio::sync::watch;

use crate::layout::Layout;
use crate::Error;

/// Keys whose values are read per request while loading: with values of
/// up to etcd's request limit (1.5 MiB by default), a page stays under
/// `RANGE_REPLY_MAX`.
const PAGE_KEYS: i64 = 100;
/// Keys listed (without values) per request while loading: paths are at
/// most a few KiB, so a page stays far under `RANGE_REPLY_MAX`.
const KEY_PAGE_KEYS: i64 = 10_000;
/// The largest reply to a range the replica accepts (gRPC's default, 4 MiB,
/// is less than a few large values).
const RANGE_REPLY_MAX: usize = 256 << 20;
/// The largest watch reply: etcd splits larger ones into fragments
/// (`with_fragment`), each no larger than its request limit, which the
/// replica puts back together.
const WATCH_REPLY_MAX: usize = 64 << 20;

/// How long to wait before watching again after etcd failed us, at first
/// and at most.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// What a replica stores for a key: a value, or a blob's bytes.
enum Wanted {
    Value(Vec<u8>),
    Blob(crate::blob::BlobRef),
}

/// A local store kept as a replica of the tree under a prefix in etcd.
pub struct Replica<'s> {
    store: &'s Store,
    layout: Layout,
    /// The newest etcd revision up to which every change of the tree is
    /// applied: the last revision the watch delivered (applied, or with
    /// nothing of the tree in it), or the one last loaded (0: none yet).
    synced: watch::Sender<i64>,
    /// Where blobs' bytes come from (`None`: a reference is stored as it
    /// is).
    blobs: Option<std::sync::Arc<crate::blob::Blobs>>,
    /// Why following last failed, until it goes on.
    last_failure: std::sync::Mutex<Option<String>>,
}

/// Waits until the replica in `reader`'s store holds etcd revision
/// `revision` or a later one (one a commit made on any host reported), and
/// returns that version: read-your-writes for a process that reads a
/// host's store in place. Waits at most `timeout` (`Error::Behind` then).
/// A revision that changed nothing of the tree makes no version: wait for
/// the revision of a change.
pub fn wait_for_revision(
    reader: &shoal::Reader,
    layout: &Layout,
    revision: i64,
    timeout: std::time::Duration,
) -> Result<Snapshot, Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut snapshot = reader.snapshot()?;
    loop {
        let held = revision_of(&snapshot, layout).unwrap_or(0);
        if held >= revision {
            return Ok(snapshot);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Behind { target: revision, synced: held });
        }
        if let Some(next) = reader.wait_for_version(snapshot.version(), left)? {
            snapshot = next;
        }
    }
}

/// The etcd revision `snapshot` holds, if it holds one.
pub fn revision_of(snapshot: &Snapshot, layout: &Layout) -> Option<i64> {
    let value = snapshot.get(&layout.revision_path()).ok()??;
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl<'s> Replica<'s> {
    /// `store` must have no other writer: the replica's versions are the
    /// only ones.
    pub fn new(store: &'s Store, layout: Layout) -> Replica<'s> {
        // What the store holds is applied: every change up to its revision.
        let applied = revision_of(&store.snapshot(), &layout).unwrap_or(0);
        Replica { store, layout, synced: watch::Sender::new(applied), blobs: None, last_failure: Default::default() }
    }

    /// A replica that stores the bytes of each blob a value references,
    /// fetched through `blobs`, rather than the reference: what every host
    /// of a cluster runs.
    pub(crate) fn with_blobs(
        store: &'s Store,
        layout: Layout,
        blobs: std::sync::Arc<crate::blob::Blobs>,
    ) -> Replica<'s> {
        Replica { blobs: Some(blobs), ..Replica::new(store, layout) }
    }

    /// What to store for a key's `value`: the blob it references (with
    /// blobs), or the value.
    fn wanted(&self, path: &str, value: &[u8]) -> Wanted {
        if let (Some(_), Some(blob)) = (&self.blobs, crate::blob::BlobRef::decode(value)) {
            return match blob {
                // As a value that large would be (`storable`), without
                // fetching it.
                Ok(blob) if blob.size > self.store.options().max_value_bytes as u64 => {
                    tracing::error!(path, size = blob.size, "a blob larger than the store takes; stored empty");
                    Wanted::Value(Vec::new())
                }
                Ok(blob) => Wanted::Blob(blob),
                Err(why) => {
                    tracing::error!(path, why, "stored empty");
                    Wanted::Value(Vec::new())
                }
            };
        }
        Wanted::Value(self.storable(path, value).to_vec())
    }

    /// Puts `blob`'s bytes at their staging path (see
    /// [`Blobs::stage`](crate::blob::Blobs::stage)) and returns it.
    async fn stage(&self, blob: &crate::blob::BlobRef) -> Result<String, Error> {
        self.blobs.as_ref().expect("only a replica with blobs wants them").stage(blob).await
    }

    /// Waits until every change of the tree up to etcd's revision now is
    /// applied, and returns that revision: after this, the local store's
    /// newest version is the tree as of it. Needs [`follow`](Self::follow)
    /// running; waits at most `timeout`.
    ///
    /// It puts a marker key below the replica's own subtree in etcd (one
    /// that no replica applies) and waits until the watch has delivered
    /// it: the watch delivers revisions in order, so everything before it
    /// is applied by then. (A watch progress report would say the same
    /// without a write, but etcd 3.4 before its fix of issue 15220 may send
    /// one ahead of the events it should follow.)
    pub async fn sync(&self, client: &mut Client, timeout: std::time::Duration) -> Result<i64, Error> {
        let marker = self.layout.key(&self.layout.sync_marker_path());
        let target = client.put(marker, "", None).await?.header().map_or(0, |h| h.revision());
        let mut synced = self.synced.subscribe();
        let reached = tokio::time::timeout(timeout, synced.wait_for(|&s| s >= target)).await;
        match reached {
            Ok(Ok(_)) => Ok(target),
            _ => Err(Error::Behind { target, synced: *self.synced.borrow() }),
        }
    }

    /// Waits until this replica has applied every change up to etcd
    /// revision `revision` (a commit's, made on any host), and returns its
    /// newest version then: read-your-writes across hosts. Needs
    /// [`follow`](Self::follow) running; waits at most `timeout`.
    pub async fn wait_for_revision(&self, revision: i64, timeout: std::time::Duration) -> Result<Snapshot, Error> {
        let mut synced = self.synced.subscribe();
        let reached = tokio::time::timeout(timeout, synced.wait_for(|&s| s >= revision)).await.is_ok_and(|r| r.is_ok());
        if reached {
            Ok(self.store.snapshot())
        } else {
            Err(Error::Behind { target: revision, synced: *self.synced.borrow() })
        }
    }

    /// The etcd revision up to which every change is applied, as it moves:
    /// each new value follows the versions that applied it.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.synced.subscribe()
    }

    /// Why following etcd last failed, if it has not gone on since.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().unwrap().clone()
    }

    /// Notes that every change of the tree up to `revision` is applied.
    fn synced_to(&self, revision: i64) {
        // Following goes on: whatever failed before is over.
        self.last_failure.lock().unwrap().take();
        self.synced.send_if_modified(|synced| {
            let newer = revision > *synced;
            *synced = (*synced).max(revision);
            newer
        });
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The local store this replica writes.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// The etcd revision of the newest local version, if any.
    pub fn applied_revision(&self) -> Option<i64> {
        revision_of(&self.store.snapshot(), &self.layout)
    }

    /// Loads the keys as etcd holds them at one revision and commits what
    /// differs from the local tree, with that revision, as one version.
    /// Returns the revision.
    ///
    /// Blobs are fetched one at a time into their staging paths first
    /// (each in a version of its own that changes nothing of the tree),
    /// except those the tree already holds at their path; a failed fetch
    /// leaves the ones before it staged for the next attempt.
    pub async fn resync(&self, client: &mut Client) -> Result<i64, Error> {
        let (revision, cluster_id, wanted) = self.load(client).await?;
        let mut in_place: HashSet<&str> = HashSet::new();
        let mut staged: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
        for (path, wanted) in &wanted {
            let Wanted::Blob(blob) = wanted else { continue };
            if holds(&self.store.snapshot(), path, blob) {
                in_place.insert(path);
            } else if !staged.contains_key(blob.hash.as_str()) {
                staged.insert(&blob.hash, self.stage(blob).await?);
            }
        }
        let snapshot = self.store.snapshot();
        let mut txn = self.store.begin();
        // The blob index anew: the entries of the blobs the tree holds.
        if snapshot.exists(&self.layout.blob_index_root())? {
            txn.delete_tree(&self.layout.blob_index_root())?;
        }
        // Every ancestor of a key: nodes kept (empty) even where they are
        // not keys themselves.
        let mut ancestors: HashSet<&str> = HashSet::new();
        let revision_path = self.layout.revision_path();
        for path in wanted.keys().map(String::as_str).chain([revision_path.as_str()]) {
            // Once one is known, so are all of its own.
            for ancestor in self::ancestors(path) {
                if !ancestors.insert(ancestor) {
                    break;
                }
            }
        }
        let mut removed: Option<String> = None;
        for entry in snapshot.scan("/")? {
            let entry = entry?;
            let path = entry.path();
            if path == "/" || self.layout.is_local(&path) {
                continue;
            }
            if removed.as_ref().is_some_and(|r| {
                path.len() > r.len() && path.starts_with(r.as_str()) && path.as_bytes()[r.len()] == b'/'
            }) {
                continue;
            }
            match wanted.get(&path) {
                Some(Wanted::Value(value)) if value.as_slice() == entry.value() => {}
                Some(Wanted::Value(value)) => txn.put(&path, value)?,
                Some(Wanted::Blob(_)) if in_place.contains(path.as_str()) => {}
                Some(Wanted::Blob(blob)) => txn.copy(&staged[blob.hash.as_str()], &path)?,
                None if ancestors.contains(path.as_str()) => {
                    if !entry.value().is_empty() {
                        txn.put(&path, b"")?;
                    }
                }
                None => {
                    txn.delete_tree(&path)?;
                    removed = Some(path);
                }
            }
        }
        for (path, wanted) in &wanted {
            let exists = snapshot.exists(path)?;
            match wanted {
                Wanted::Value(value) if !exists => txn.put(path, value)?,
                Wanted::Value(_) => {}
                Wanted::Blob(blob) => {
                    if !exists {
                        txn.copy(&staged[blob.hash.as_str()], path)?;
                    }
                    txn.put(&self.layout.blob_index_entry(&blob.hash, path), path)?;
                }
            }
        }
        if snapshot.exists(&self.layout.staged_root())? {
            txn.delete_tree(&self.layout.staged_root())?;
        }
        txn.put(&revision_path, revision.to_string())?;
        txn.put(&self.layout.reload_path(), revision.to_string())?;
        txn.put(&self.layout.source_path(), crate::host::source_text(cluster_id, &self.layout))?;
        txn.commit()?;
        self.synced_to(revision);
        tracing::info!(revision, keys = wanted.len(), "replica loaded from etcd");
        Ok(revision)
    }

    /// Every key below the prefix at one revision, with the revision and
    /// the etcd cluster's id. First the keys alone, in large pages, then
    /// their values, `PAGE_KEYS` at a time, each request bounded by the
    /// last key of its page: etcd counts every key of a request's range
    /// whatever its limit, so pages of an open-ended range would cost it
    /// the square of the tree's size.
    async fn load(&self, client: &mut Client) -> Result<(i64, u64, BTreeMap<String, Wanted>), Error> {
        let prefix = self.layout.key_prefix();
        let end = prefix_end(prefix.as_bytes());
        let mut kv_client = client.kv_client().max_decoding_message_size(RANGE_REPLY_MAX);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut from = prefix.clone().into_bytes();
        let mut revision = 0;
        let mut cluster_id = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(KEY_PAGE_KEYS).with_keys_only();
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let reply = kv_client.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = reply.header().map_or(0, |h| h.revision());
                cluster_id = reply.header().map_or(0, |h| h.cluster_id());
            }
            keys.extend(
                reply.kvs().iter().filter(|kv| self.layout.path(kv.key()).is_some()).map(|kv| kv.key().to_vec()),
            );
            match reply.kvs().last() {
                Some(last) if reply.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let mut wanted = BTreeMap::new();
        for page in keys.chunks(PAGE_KEYS as usize) {
            let mut past_last = page[page.len() - 1].clone();
            past_last.push(0);
            // At a fixed revision a member's own copy answers as well as
            // the leader's (no consensus round per page); one that has not
            // applied the revision yet says so, and the leader answers.
            let options = GetOptions::new().with_range(past_last.clone()).with_revision(revision);
            let reply = match kv_client.get(page[0].clone(), Some(options.clone().with_serializable())).await {
                Ok(reply) => reply,
                Err(_) => kv_client.get(page[0].clone(), Some(options)).await?,
            };
            for kv in reply.kvs() {
                if let Some(path) = self.layout.path(kv.key()) {
                    wanted.insert(path.to_string(), self.wanted(path, kv.value()));
                }
            }
        }
        Ok((revision, cluster_id, wanted))
    }

    /// The value a replica stores for a key's value: itself, or nothing if
    /// it is larger than the store takes (a writer other than the
    /// cluster's, which refuses such values, put it there). Every replica
    /// with the same value limit stores the same, whether it followed or
    /// loaded; none stops.
    fn storable<'v>(&self, path: &str, value: &'v [u8]) -> &'v [u8] {
        let max = self.store.options().max_value_bytes;
        if value.len() > max {
            tracing::error!(
                path,
                len = value.len(),
                max,
                "a value in etcd is larger than the store takes; stored empty"
            );
            return b"";
        }
        value
    }

    /// Applies one revision's events as one version.
    /// A revision with nothing of the tree in it (only keys no replica
    /// applies, such as [`sync`](Self::sync)'s marker) makes no version.
    /// A revision whose blobs cannot be fetched is not applied
    /// (`Error::BlobUnavailable`): the replica holds no version of it until
    /// they can. Its blobs are fetched one at a time and held in memory up
    /// to [`APPLY_HELD_MAX`] bytes; the rest are staged in the store.
    ///
    /// The keys of one revision are distinct, so its events' order does
    /// not matter: the deletes are applied first, then the puts. A key's
    /// delete removes its node and everything below it, except a node
    /// below which etcd still holds keys (another client deleted the key
    /// alone): that node stays, emptied, as a replica that loads the tree
    /// holds it.
    async fn apply(&self, revision: i64, events: &[etcd_client::Event]) -> Result<(), Error> {
        if !events.iter().any(|e| e.kv().is_some_and(|kv| self.layout.path(kv.key()).is_some())) {
            return Ok(());
        }
        // Every blob's bytes first: the version is committed whole or not.
        let mut puts: Vec<(&str, Change)> = Vec::new();
        let mut deletes: Vec<&str> = Vec::new();
        let mut held = 0u64;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Some(path) = self.layout.path(kv.key()) else {
                tracing::debug!(key = %String::from_utf8_lossy(kv.key()), "not a path of the tree; skipped");
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    let change = match self.wanted(path, kv.value()) {
                        Wanted::Value(value) => Change::Put(value),
                        Wanted::Blob(blob) if held + blob.size <= APPLY_HELD_MAX => {
                            held += blob.size;
                            let blobs = self.blobs.as_ref().expect("only a replica with blobs wants them");
                            Change::Held { bytes: blobs.fetch(&blob).await?, hash: blob.hash }
                        }
                        Wanted::Blob(blob) => Change::Copy { staged: self.stage(&blob).await?, hash: blob.hash },
                    };
                    puts.push((path, change));
                }
                EventType::Delete => deletes.push(path),
            }
        }
        let snapshot = self.store.snapshot();
        let mut txn = self.store.begin();
        let deleted: HashSet<&str> = deletes.iter().copied().collect();
        let mut gone: HashSet<&str> = HashSet::new();
        deletes.sort_unstable();
        for path in deletes {
            self.unindex(&snapshot, &mut txn, path)?;
            if ancestors(path).any(|a| gone.contains(a)) {
                continue;
            }
            let mut below = snapshot.scan(path)?;
            let survivors = below.any(|e| e.map_or(true, |e| e.path() != path && !deleted.contains(e.path().as_str())));
            if !survivors {
                txn.delete_tree(path)?;
                gone.insert(path);
            } else if snapshot.get(path)?.is_some_and(|v| !v.is_empty()) {
                txn.put(path, b"")?;
            }
        }
        let mut staged = false;
        for (path, change) in &puts {
            self.unindex(&snapshot, &mut txn, path)?;
            match change {
                Change::Put(value) => txn.put(path, value)?,
                Change::Held { bytes, hash } => {
                    txn.put(path, &bytes[..])?;
                    txn.put(&self.layout.blob_index_entry(hash, path), path)?;
                }
                Change::Copy { staged: from, hash } => {
                    txn.copy(from, path)?;
                    txn.put(&self.layout.blob_index_entry(hash, path), path)?;
                    staged = true;
                }
            }
        }
        if staged {
            txn.delete_tree(&self.layout.staged_root())?;
        }
        txn.put(&self.layout.revision_path(), revision.to_string())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes the blob index's entry for `path` if its value in
    /// `snapshot` is a blob's bytes (the value changes in `txn`), and the
    /// blob's index if no other path holds it.
    fn unindex(&self, snapshot: &Snapshot, txn: &mut shoal::Transaction<'_>, path: &str) -> Result<(), Error> {
        if self.blobs.is_none() {
            return Ok(());
        }
        let Some(old) = snapshot.get(path)? else { return Ok(()) };
        if !crate::blob::is_blob(old, self.layout.blob_threshold()) {
            return Ok(());
        }
        let hash = crate::blob::hash(old);
        if txn.delete(&self.layout.blob_index_entry(&hash, path))? {
            let index = self.layout.blob_index_path(&hash);
            if txn.list(&index)?.is_empty() {
                txn.delete(&index)?;
            }
        }
        Ok(())
    }

    /// Follows etcd until `stop` turns true: loads the keys first if the
    /// store holds no revision, then applies every revision after the
    /// applied one as it comes; loads again if etcd no longer has the
    /// revisions after the applied one. Errors from etcd are retried (the
    /// client fails over between endpoints); an error of the store ends it.
    ///
    /// A revision with a blob no host gives any more (it was overwritten
    /// while this replica was away, and every copy with it) cannot be
    /// applied: the replica then loads the newest tree instead, which no
    /// longer needs it; if that needs a blob no host gives either, it says
    /// so and tries again.
    pub async fn follow(&self, client: &mut Client, stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut delay = RETRY_FIRST;
        let mut reload = false;
        loop {
            let attempt = async {
                if std::mem::take(&mut reload) {
                    self.resync(client).await?;
                }
                self.follow_once(client).await
            };
            let result = tokio::select! {
                r = attempt => r,
                () = stopped(stop.clone()) => return Ok(()),
            };
            *self.last_failure.lock().unwrap() = match &result {
                Ok(Ended::Reloaded) => None,
                Ok(Ended::Cancelled(reason)) => Some(format!("etcd cancelled the watch: {reason}")),
                Ok(Ended::Closed) => Some("etcd closed the watch".into()),
                Err(e) => Some(e.to_string()),
            };
            match result {
                // Loaded again after a compaction: watch at once.
                Ok(Ended::Reloaded) => {
                    delay = RETRY_FIRST;
                    continue;
                }
                Ok(Ended::Cancelled(reason)) => {
                    tracing::warn!(reason, "etcd cancelled the watch; watching again in {delay:?}");
                }
                Ok(Ended::Closed) => tracing::warn!("etcd closed the watch; watching again in {delay:?}"),
                Err(Error::Etcd(error)) => tracing::warn!(%error, "etcd failed; watching again in {delay:?}"),
                Err(error @ Error::BlobUnavailable { .. }) => {
                    tracing::error!(
                        applied = self.applied_revision(),
                        %error,
                        "a revision cannot be applied without the blob; loading the newest tree in {delay:?}"
                    );
                    reload = true;
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = stopped(stop.clone()) => return Ok(()),
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// One watch, from the applied revision until it ends.
    async fn follow_once(&self, client: &mut Client) -> Result<Ended, Error> {
        let applied = match self.applied_revision() {
            Some(r) => r,
            None => self.resync(client).await?,
        };
        let options = WatchOptions::new()
            .with_range(prefix_end(self.layout.key_prefix().as_bytes()))
            .with_start_revision(applied + 1)
            .with_fragment();
        let mut watcher = client.watch_client().max_decoding_message_size(WATCH_REPLY_MAX);
        let mut stream = watcher.watch(self.layout.key_prefix(), Some(options)).await?;
        let mut applied = applied;
        // The events of a reply etcd sent in fragments, until its last.
        let mut pieces: Vec<etcd_client::Event> = Vec::new();
        while let Some(reply) = stream.message().await? {
            if reply.compact_revision() > 0 {
                tracing::warn!(
                    applied,
                    compacted = reply.compact_revision(),
                    "etcd no longer has the revisions after the applied one; loading again"
                );
                self.resync(client).await?;
                return Ok(Ended::Reloaded);
            }
            if reply.canceled() {
                return Ok(Ended::Cancelled(reply.cancel_reason().to_string()));
            }
            if reply.0.fragment {
                pieces.extend_from_slice(reply.events());
                continue;
            }
            let whole;
            let events = if pieces.is_empty() {
                reply.events()
            } else {
                pieces.extend_from_slice(reply.events());
                whole = std::mem::take(&mut pieces);
                &whole[..]
            };
            // A reply holds whole revisions, in order.
            let mut at = 0;
            while at < events.len() {
                let revision = events[at].kv().map_or(0, |kv| kv.mod_revision());
                let end = events[at..]
                    .iter()
                    .position(|e| e.kv().map_or(0, |kv| kv.mod_revision()) != revision)
                    .map_or(events.len(), |i| at + i);
                if revision > applied {
                    self.apply(revision, &events[at..end]).await?;
                    applied = revision;
                }
                self.synced_to(revision);
                at = end;
            }
        }
        Ok(Ended::Closed)
    }
}

/// Why a watch ended without an error.
enum Ended {
    /// etcd had compacted past the applied revision; the replica loaded the
    /// tree again.
    Reloaded,
    Cancelled(String),
    Closed,
}

/// Resolves once `stop` holds `true`; never if its sender is gone without
/// saying so (a dropped sender is not a request to stop).
/// What applying a put does: set a value, put a blob's bytes held in
/// memory, or copy a staged blob's.
enum Change {
    Put(Vec<u8>),
    Held { bytes: std::sync::Arc<Vec<u8>>, hash: String },
    Copy { staged: String, hash: String },
}

/// The most bytes of blobs a replica holds in memory to apply a revision;
/// it stages the rest in its store, each in a version of its own.
const APPLY_HELD_MAX: u64 = 64 << 20;

/// `path`'s ancestors, nearest first, the root not among them.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut at = path;
    std::iter::from_fn(move || {
        let cut = at.rfind('/').filter(|&c| c > 0)?;
        at = &at[..cut];
        Some(at)
    })
}

/// Whether `snapshot` holds `blob`'s bytes at `path`.
fn holds(snapshot: &Snapshot, path: &str, blob: &crate::blob::BlobRef) -> bool {
    matches!(snapshot.get(path), Ok(Some(value))
        if value.len() as u64 == blob.size && crate::blob::hash(value) == blob.hash)
}

pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|&s| s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
