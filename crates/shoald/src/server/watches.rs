//! Watches: who watches which path, and the dispatcher that turns each
//! committed version's change set into `WATCH_EVENT`s.
//!
//! The dispatcher follows the store's versions one by one (shoald is their
//! only writer) and reads each version's change set, so events go out in
//! commit order whoever committed. A request that commits has the
//! dispatcher handle its version before it queues its reply: like the
//! stock C daemon, a connection gets the events of its own change before
//! the reply to it.
//!
//! Which events a change makes (the stock C daemon's rules):
//! - a written or created node: an event for its path, matched by every
//!   watch on that path or an ancestor (implicitly created parents make
//!   none of their own);
//! - a removed subtree: an event for its root, matched likewise, and an
//!   event for each watch *below* it on a node that existed, with the
//!   watch's own path;
//! - new permissions: an event for the node, unless the same version also
//!   wrote the node or something below it (a creation, already reported).
//!
//! A guest's watch fires only for nodes it may read, or whose parent it may
//! read (for a removed node: as it was before the removal).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal::{ChangeKind, Snapshot, Store};

use super::accounting::NodeCounts;
use super::outbox::Outbox;
use crate::wire::{Message, XsError};
use crate::xs::ops;
use crate::xs::paths::{self, PERMS_ROOT, PRIVATE_ROOT, ROOT_VALUE};
use crate::xs::perms::Caller;

/// One registered watch.
struct Watch {
    connection: u64,
    token: Vec<u8>,
    /// Registered with a relative path: events report paths relative to
    /// `home` too.
    home: Option<String>,
    caller: Caller,
    outbox: Outbox,
}

/// Every connection's watches, by watched path (absolute, or `@...`).
#[derive(Default)]
pub struct Registry {
    by_path: BTreeMap<String, Vec<Watch>>,
    by_connection: HashMap<u64, Vec<(String, Vec<u8>)>>,
}

/// Who registers a watch.
#[derive(Clone)]
pub struct Watcher {
    pub connection: u64,
    pub caller: Caller,
    pub outbox: Outbox,
}

impl Registry {
    /// Adds a watch on `path` (absolute or special); `relative_to` is the
    /// home the client's path was relative to, if it was. `E2BIG` if the
    /// connection already holds `limit` watches.
    pub fn add(
        &mut self,
        watcher: &Watcher,
        path: &str,
        token: &[u8],
        relative_to: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), XsError> {
        let held = self.count(watcher.connection) as u64;
        let watches = self.by_path.entry(path.to_string()).or_default();
        if watches.iter().any(|w| w.connection == watcher.connection && w.token == token) {
            return Err(XsError::EEXIST);
        }
        if limit.is_some_and(|limit| held >= limit) {
            if watches.is_empty() {
                self.by_path.remove(path);
            }
            return Err(XsError::E2BIG);
        }
        watches.push(Watch {
            connection: watcher.connection,
            token: token.to_vec(),
            home: relative_to.map(str::to_string),
            caller: watcher.caller,
            outbox: watcher.outbox.clone(),
        });
        self.by_connection.entry(watcher.connection).or_default().push((path.to_string(), token.to_vec()));
        Ok(())
    }

    /// Removes one watch; `ENOENT` if there is none.
    pub fn remove(&mut self, connection: u64, path: &str, token: &[u8]) -> Result<(), XsError> {
        let watches = self.by_path.get_mut(path).ok_or(XsError::ENOENT)?;
        let at = watches.iter().position(|w| w.connection == connection && w.token == token).ok_or(XsError::ENOENT)?;
        watches.remove(at);
        if watches.is_empty() {
            self.by_path.remove(path);
        }
        if let Some(list) = self.by_connection.get_mut(&connection) {
            list.retain(|(p, t)| !(p == path && t == token));
        }
        Ok(())
    }

    /// Removes every watch of a connection.
    pub fn remove_connection(&mut self, connection: u64) {
        for (path, token) in self.by_connection.remove(&connection).unwrap_or_default() {
            if let Some(watches) = self.by_path.get_mut(&path) {
                watches.retain(|w| !(w.connection == connection && w.token == token));
                if watches.is_empty() {
                    self.by_path.remove(&path);
                }
            }
        }
    }

    /// Watches of every connection.
    pub fn total(&self) -> usize {
        self.by_connection.values().map(Vec::len).sum()
    }

    /// Watches a connection holds.
    pub fn count(&self, connection: u64) -> usize {
        self.by_connection.get(&connection).map_or(0, Vec::len)
    }

    /// Watch paths strictly below `path`.
    fn paths_below(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        self.by_path
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The event path a watch reports: relative to its home if it was
/// registered relative.
fn reported<'p>(watch: &Watch, path: &'p str) -> &'p str {
    match &watch.home {
        Some(home) => path.strip_prefix(home.as_str()).and_then(|r| r.strip_prefix('/')).unwrap_or(path),
        None => path,
    }
}

/// What one change means for xenstore.
enum Mapped {
    Node(String),
    Perms(String),
}

fn map_path(path: &str) -> Option<Mapped> {
    if path == ROOT_VALUE {
        return Some(Mapped::Node("/".to_string()));
    }
    if let Some(rest) = path.strip_prefix(PERMS_ROOT) {
        if rest.is_empty() {
            return Some(Mapped::Perms("/".to_string()));
        }
        return rest.starts_with('/').then(|| Mapped::Perms(rest.to_string()));
    }
    if path == PRIVATE_ROOT || path.starts_with(&format!("{PRIVATE_ROOT}/")) {
        return None;
    }
    Some(Mapped::Node(path.to_string()))
}

/// An event to deliver: a path, and whether only watches exactly on it match.
struct Event {
    path: String,
    exact: bool,
}

/// The dispatcher: the last version whose events are queued, and what it
/// needs to queue the next ones. It runs on the committers' own tasks: a
/// committer that needs its version's events queued catches up every
/// version up to the newest, under one lock, so versions are handled one at
/// a time and in order, whoever committed them.
pub struct Dispatch {
    store: &'static Store,
    registry: Arc<Mutex<Registry>>,
    node_counts: Arc<NodeCounts>,
    last: Mutex<Snapshot>,
    done: AtomicU64,
}

impl Dispatch {
    pub fn new(
        store: &'static Store,
        first: Snapshot,
        registry: Arc<Mutex<Registry>>,
        node_counts: Arc<NodeCounts>,
    ) -> Arc<Dispatch> {
        let done = AtomicU64::new(first.version());
        Arc::new(Dispatch { store, registry, node_counts, last: Mutex::new(first), done })
    }

    /// Makes sure the events of `version` (and of every version before it)
    /// are queued.
    pub fn dispatched(&self, version: u64) {
        if self.done.load(Ordering::Acquire) >= version {
            return;
        }
        let mut last = self.last.lock().unwrap();
        loop {
            let next = self.store.snapshot();
            if next.version() <= last.version() {
                break;
            }
            // One read of the versions' change sets serves both.
            let changes = next.changes(last.version(), "/");
            match &changes {
                Ok(listed) => self.node_counts.follow_changes(&last, &next, listed),
                Err(_) => self.node_counts.follow(&last, &next),
            }
            deliver_between(self.store, &self.registry, &last, &next, changes);
            self.done.store(next.version(), Ordering::Release);
            *last = next;
        }
    }
}

fn deliver_between(
    store: &Store,
    registry: &Mutex<Registry>,
    last: &Snapshot,
    next: &Snapshot,
    changes: shoal::Result<Vec<shoal::Change<'_>>>,
) {
    let changes = match changes {
        Ok(changes) => changes,
        Err(error) => {
            // Not every version in between is listed (too large, or no
            // longer retained): what differs is reported instead, as writes.
            tracing::debug!(%error, "watch events from a diff");
            let diff = match last.diff(next, "/") {
                Ok(diff) => diff,
                Err(error) => {
                    tracing::error!(%error, "cannot tell what changed; watches may miss events");
                    return;
                }
            };
            let changes: Vec<(String, ChangeKind)> = diff.changes;
            let registry = registry.lock().unwrap();
            let events = events_of(&registry, changes.iter().map(|(p, k)| (p.clone(), *k)), last);
            deliver(&registry, &events, last, next);
            return;
        }
    };
    let registry = registry.lock().unwrap();
    let mut at = 0;
    while at < changes.len() {
        let version = changes[at].version();
        let end = changes[at..].iter().position(|c| c.version() != version).map_or(changes.len(), |i| at + i);
        let before = if version == last.version() + 1 { None } else { store.snapshot_at(version - 1).ok() };
        let before = before.as_ref().unwrap_or(last);
        let after = if version == next.version() { None } else { store.snapshot_at(version).ok() };
        let after = after.as_ref().unwrap_or(next);
        let events = events_of(&registry, changes[at..end].iter().map(|c| (c.path(), c.kind())), before);
        deliver(&registry, &events, before, after);
        at = end;
    }
}

/// The events of one version's changes (`before`: the version before it).
fn events_of(
    registry: &Registry,
    changes: impl Iterator<Item = (String, ChangeKind)>,
    before: &Snapshot,
) -> Vec<Event> {
    let mut nodes = Vec::new();
    let mut perms = Vec::new();
    for (path, kind) in changes {
        match map_path(&path) {
            Some(Mapped::Node(p)) => nodes.push((p, kind)),
            Some(Mapped::Perms(p)) if kind == ChangeKind::Set => perms.push(p),
            _ => {}
        }
    }
    // A node a write created on the way to a deeper one (an implicit
    // parent: new, empty, with something below it written in the same
    // version) makes no event of its own, as with the stock daemons.
    // Every proper ancestor of a written node (a set, so that a commit of
    // n nodes costs n × depth, not n²).
    let mut above_a_write: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (n, k) in &nodes {
        if *k == ChangeKind::Set {
            let mut at = n.as_str();
            while at != "/" {
                at = paths::parent(at);
                if !above_a_write.insert(at) {
                    break; // its ancestors are in already
                }
            }
        }
    }
    let implicit = |path: &str| -> bool { above_a_write.contains(path) && !matches!(before.get(path), Ok(Some(_))) };
    let mut events = Vec::new();
    for (path, kind) in &nodes {
        if *kind == ChangeKind::Set && implicit(path) {
            continue;
        }
        if matches!(kind, ChangeKind::Delete | ChangeKind::DeleteTree | ChangeKind::CopyTree) {
            for below in registry.paths_below(path) {
                let existed = matches!(before.get(&below), Ok(Some(_)));
                if existed || *kind == ChangeKind::CopyTree {
                    events.push(Event { path: below, exact: true });
                }
            }
        }
        events.push(Event { path: path.clone(), exact: false });
    }
    if perms.is_empty() {
        return events;
    }
    // Each changed node and its ancestors: a new record on one of them came
    // with a change already reported.
    let mut touched: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (n, _) in &nodes {
        let mut at = n.as_str();
        while touched.insert(at) && at != "/" {
            at = paths::parent(at);
        }
    }
    for path in perms {
        if !touched.contains(path.as_str()) {
            events.push(Event { path, exact: false });
        }
    }
    events
}

fn deliver(registry: &Registry, events: &[Event], before: &Snapshot, after: &Snapshot) {
    for event in events {
        let matched = |watch_path: &str| {
            if let Some(watches) = registry.by_path.get(watch_path) {
                for watch in watches {
                    if permitted(&watch.caller, &event.path, before, after) {
                        let path = reported(watch, &event.path);
                        let own = reported(watch, watch_path);
                        watch.outbox.event(
                            Message::watch_event(path.as_bytes(), &watch.token),
                            own.as_bytes(),
                            &watch.token,
                        );
                    }
                }
            }
        };
        if event.exact {
            matched(&event.path);
            continue;
        }
        matched("/");
        for (i, _) in event.path.match_indices('/').skip(1) {
            matched(&event.path[..i]);
        }
        if event.path != "/" {
            matched(&event.path);
        }
    }
}

/// Whether a watcher may hear of a change at `path`: it may read the node
/// or its parent, after the change or (for a removed node) before it.
fn permitted(caller: &Caller, path: &str, before: &Snapshot, after: &Snapshot) -> bool {
    if caller.privileged {
        return true;
    }
    let readable = |snapshot: &Snapshot, p: &str| -> bool {
        let mut view = snapshot;
        matches!(snapshot.get(p), Ok(Some(_)))
            && ops::effective_perms(&mut view, p).is_ok_and(|perms| perms.access_for(caller).read)
    };
    let parent = paths::parent(path);
    readable(after, path)
        || readable(before, path)
        || (path != "/" && (readable(after, parent) || readable(before, parent)))
}

impl Registry {
    /// Fires a special watch (`@introduceDomain`, `@releaseDomain`) for
    /// every connection watching it that `allowed` lets hear it.
    pub fn fire_special(&self, name: &str, allowed: impl Fn(&Caller) -> bool) {
        if let Some(watches) = self.by_path.get(name) {
            for watch in watches.iter().filter(|w| allowed(&w.caller)) {
                watch.outbox.event(Message::watch_event(name.as_bytes(), &watch.token), name.as_bytes(), &watch.token);
            }
        }
    }
}
