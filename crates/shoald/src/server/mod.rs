//! The xenstore front-end on unix sockets: one task per connection, reading
//! requests in order and answering each before reading the next (as the
//! stock daemons do), while other connections are served concurrently.

mod accounting;
mod connection;
pub mod domains;
mod framing;
mod outbox;
pub mod remote;
pub mod session;
pub mod watches;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal::Store;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use accounting::NodeCounts;
pub use connection::Identity;
use domains::Domains;
pub use session::Limits;
use watches::{Dispatch, Registry};

/// The daemon's shared state.
pub struct Daemon {
    store: &'static Store,
    limits: Limits,
    next_connection: AtomicU64,
    watches: Arc<Mutex<Registry>>,
    dispatch: Arc<Dispatch>,
    domains: Domains,
    node_counts: Arc<NodeCounts>,
    access_log: AtomicBool,
    /// Cluster mode: this host's part in the cluster, through which every
    /// commit goes (the store is its replica).
    cluster: Option<Arc<shoal_cluster::Host>>,
}

impl Daemon {
    /// Serves `store`, which lives as long as the process: transactions that
    /// span requests borrow it. `rings`: where guests' rings come from (none: only
    /// local sockets are served). `cluster`: in cluster mode, this host's
    /// part, whose replica `store` is; commits go through it, and the
    /// versions its replica applies fire watches.
    pub fn start(
        store: &'static Store,
        limits: Limits,
        rings: Option<crate::ring::Backend>,
        cluster: Option<Arc<shoal_cluster::Host>>,
    ) -> Arc<Daemon> {
        let watches = Arc::new(Mutex::new(Registry::default()));
        let first = store.snapshot();
        let node_counts = Arc::new(NodeCounts::count(&first));
        let dispatch = Dispatch::new(store, first, watches.clone(), node_counts.clone());
        if let Some(host) = &cluster {
            // Other hosts' commits reach this one as the replica's versions.
            let mut applied = host.replica().applied();
            let dispatch = dispatch.clone();
            tokio::spawn(async move {
                while applied.changed().await.is_ok() {
                    dispatch.dispatched(store.version());
                }
            });
        }
        Arc::new(Daemon {
            store,
            limits,
            next_connection: AtomicU64::new(1),
            watches,
            dispatch,
            domains: Domains::new(rings, limits.quotas),
            node_counts,
            access_log: AtomicBool::new(limits.access_log),
            cluster,
        })
    }

    /// Commits `txn` (on this store, or in cluster mode through the
    /// cluster), and has the watch events of its version queued before it
    /// returns the version. With `sync` durability a local commit runs on a
    /// blocking thread (it waits for the journal's sync, shared with every
    /// commit running at the same time); without, it is a few microseconds
    /// of work and runs here, sparing two thread switches per write.
    pub async fn commit(&self, txn: shoal::Transaction<'static>) -> Result<u64, CommitError> {
        let version = match &self.cluster {
            Some(host) => host.commit_local(txn).await.map(|snapshot| snapshot.version())?,
            None if self.store.options().durability == shoal::Durability::None => txn.commit()?,
            None => match tokio::task::spawn_blocking(move || txn.commit()).await {
                Ok(result) => result?,
                Err(join) => return Err(CommitError::Other(format!("the commit's task failed: {join}"))),
            },
        };
        self.dispatch.dispatched(version);
        Ok(version)
    }

    /// Whether commits go through a cluster.
    pub fn in_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The cluster's layout, in cluster mode.
    pub fn cluster_layout(&self) -> Option<&shoal_cluster::Layout> {
        self.cluster.as_ref().map(|host| host.replica().layout())
    }

    fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops every domain's connection (at shutdown).
    pub fn stop_domains(&self) {
        self.domains.stop_all();
    }

    /// Turns the access log (every request and its outcome, at `info` on
    /// the `shoald::access` target) on or off.
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &'static Store {
        self.store
    }
}

/// Why a commit failed.
#[derive(Debug)]
pub enum CommitError {
    Store(shoal::Error),
    Cluster(shoal_cluster::Error),
    Other(String),
}

impl From<shoal::Error> for CommitError {
    fn from(error: shoal::Error) -> CommitError {
        CommitError::Store(error)
    }
}

impl From<shoal_cluster::Error> for CommitError {
    fn from(error: shoal_cluster::Error) -> CommitError {
        match error {
            shoal_cluster::Error::Store(e) => CommitError::Store(e),
            other => CommitError::Cluster(other),
        }
    }
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Store(e) => e.fmt(f),
            CommitError::Cluster(e) => e.fmt(f),
            CommitError::Other(message) => f.write_str(message),
        }
    }
}

impl CommitError {
    /// Whether the commit conflicted with another (nothing was written; a
    /// new attempt may succeed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            CommitError::Store(shoal::Error::Conflict { .. })
                | CommitError::Cluster(shoal_cluster::Error::Conflict { .. })
        )
    }
}

/// A listening socket and what its clients may do.
pub struct Listener {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// `socket_ro`: reads only; every change gets `EROFS`.
    pub read_only: bool,
}

impl Listener {
    /// Binds `path`, replacing a stale socket file left by an earlier run.
    /// Refuses to replace anything that is not a socket, or a socket a
    /// running daemon answers on.
    pub fn bind(path: &Path, read_only: bool, mode: u32) -> std::io::Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => remove_stale_socket(path)?,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; not replacing it", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(Listener { listener, path: path.to_path_buf(), read_only })
    }
}

/// Removes a socket file left by a daemon that is gone; refuses to take
/// over one that a running daemon (another shoald, a xenstored) answers on.
pub fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a running daemon serves {}; stop it first", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// Accepts connections on `listener` until `shutdown` turns true, then
/// waits for the connections' in-flight requests to finish.
pub async fn serve(daemon: Arc<Daemon>, listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let daemon = daemon.clone();
                    let stop = shutdown.clone();
                    let (input, output) = stream.into_split();
                    // One read takes in a whole request (or several) rather
                    // than one for the header and one for the payload. (A
                    // guest's ring is read in place and needs no buffer.)
                    let input = tokio::io::BufReader::with_capacity(crate::wire::HEADER_LEN + crate::wire::PAYLOAD_MAX, input);
                    let identity = Identity::dom0_socket(listener.read_only);
                    connections.spawn(connection::serve(daemon, input, output, identity, stop, None));
                }
                Err(error) => {
                    // Out of descriptors and the like: the next accept may work.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&listener.path);
    while connections.join_next().await.is_some() {}
}
