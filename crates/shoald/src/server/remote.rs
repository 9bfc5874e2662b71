//! Writes from other processes of the store's owner (the `shoal` CLI's
//! `put`, `rm`, `cp`, `import`) while shoald holds the writer: requests of
//! `shoal_remote`'s protocol on `<store>/shoald.sock` (mode 0600), each
//! applied as one transaction or one bulk load, whose version then goes
//! through the watch dispatcher like any other (xenstore watchers hear of
//! it); in cluster mode each commits through the cluster, as xenstore
//! writes do. These writes are the store owner's: no xenstore permissions apply,
//! and nodes they create have no permission record of their own (they take
//! their nearest ancestor's, ARCHITECTURE.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_remote::{FailureKind, Op, Reply, Request};

use crate::xs::paths;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{CommitError, Daemon};

/// Binds the store's socket, replacing a stale one (mode 0600).
pub fn bind(store_dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = shoal_remote::socket_path(store_dir);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; not replacing it", path.display()),
            ));
        }
        super::remove_stale_socket(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Serves the store's socket until `shutdown` turns true.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(daemon.clone(), stream, shutdown.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed on the store's socket");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    while connections.join_next().await.is_some() {}
}

async fn connection(daemon: Arc<Daemon>, mut stream: UnixStream, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut header = [0u8; 8];
        tokio::select! {
            read = stream.read_exact(&mut header) => if read.is_err() { return },
            _ = shutdown.wait_for(|&s| s) => return,
        }
        let len = match shoal_remote::frame_len(header) {
            Ok(len) => len,
            Err(error) => {
                tracing::info!(%error, "dropping a client of the store's socket");
                return;
            }
        };
        // The buffer grows with the bytes that arrive, not with what the
        // header announces; a client stalled inside a frame does not hold
        // up a stop.
        let mut body = Vec::new();
        let mut frame = (&mut stream).take(len as u64);
        tokio::select! {
            read = frame.read_to_end(&mut body) => {
                if read.is_err() || body.len() != len {
                    return;
                }
            }
            _ = shutdown.wait_for(|&s| s) => return,
        }
        let reply = match shoal_remote::decode::<Request>(&body) {
            Ok(request) if daemon.in_cluster() => {
                drop(body);
                through_cluster(&daemon, &request).await
            }
            Ok(request) => {
                drop(body);
                let store = daemon.store();
                let applied = tokio::task::spawn_blocking(move || match &request {
                    Request::Queue(op) => {
                        shoal_remote::apply_queue(store, op).map(|(version, outcome)| Reply::Queue { version, outcome })
                    }
                    _ => shoal_remote::apply_with(store, &request, keep_records)
                        .map(|version| Reply::Committed { version }),
                })
                .await;
                match applied {
                    Ok(Ok(reply)) => {
                        if let Reply::Committed { version } | Reply::Queue { version, .. } = reply {
                            daemon.dispatch.dispatched(version);
                        }
                        reply
                    }
                    Ok(Err(error)) => shoal_remote::failure(&error),
                    Err(join) => Reply::Failed { kind: FailureKind::Other, message: join.to_string() },
                }
            }
            Err(error) => {
                Reply::Failed { kind: FailureKind::Invalid, message: format!("a request shoald cannot read: {error}") }
            }
        };
        let mut out = Vec::new();
        if shoal_remote::write_frame(&mut out, &reply).is_err() || stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A request in cluster mode: made as a transaction on the replica and
/// committed through the cluster (again, up to 64 times, if it conflicts
/// with another). A bulk load commits as several transactions.
async fn through_cluster(daemon: &Daemon, request: &Request) -> Reply {
    let ops = match request {
        Request::BulkLoad(items) => return bulk_load_through_cluster(daemon, items).await,
        Request::Apply(ops) => ops,
        Request::Queue(op) => {
            return match commit_in_cluster(daemon, |txn| shoal_remote::queue_step(txn, op)).await {
                Ok((version, outcome)) => Reply::Queue { version, outcome },
                Err(failure) => failure.reply(),
            }
        }
    };
    match commit_in_cluster(daemon, |txn| shoal_remote::apply_ops(txn, ops, keep_records)).await {
        Ok((version, ())) => Reply::Committed { version },
        Err(failure) => failure.reply(),
    }
}

/// Why a commit through the cluster failed.
enum ClusterFailure {
    /// Making the transaction failed (a missing path, an invalid one).
    Made(shoal::Error),
    Commit(CommitError),
    Conflicts,
}

impl ClusterFailure {
    fn reply(&self) -> Reply {
        match self {
            ClusterFailure::Made(error) | ClusterFailure::Commit(CommitError::Store(error)) => {
                shoal_remote::failure(error)
            }
            ClusterFailure::Commit(
                error @ CommitError::Cluster(shoal_cluster::Error::TooLarge(_) | shoal_cluster::Error::Invalid(_)),
            ) => Reply::Failed { kind: FailureKind::Invalid, message: error.to_string() },
            ClusterFailure::Commit(error) => Reply::Failed { kind: FailureKind::Other, message: error.to_string() },
            ClusterFailure::Conflicts => Reply::Failed {
                kind: FailureKind::Other,
                message: "the request conflicted with others 64 times".into(),
            },
        }
    }
}

/// Makes a transaction on the replica with `make` and commits it through
/// the cluster, again (up to 64 times) while it conflicts with others.
async fn commit_in_cluster<T>(
    daemon: &Daemon,
    make: impl Fn(&mut shoal::Transaction<'_>) -> shoal::Result<T>,
) -> Result<(u64, T), ClusterFailure> {
    let store = daemon.store();
    for _ in 0..64 {
        let mut txn = store.begin();
        let made = make(&mut txn).map_err(ClusterFailure::Made)?;
        match daemon.commit(txn).await {
            Ok(version) => return Ok((version, made)),
            Err(error) if error.is_conflict() => continue,
            Err(error) => return Err(ClusterFailure::Commit(error)),
        }
    }
    Err(ClusterFailure::Conflicts)
}

/// Entries per transaction of a bulk load through the cluster, at most,
/// and their values' bytes (a value that goes to etcd as a blob reference
/// counts as [`BULK_REFERENCE_BYTES`]): etcd takes 128 operations and
/// 1.5 MiB per transaction by default, and the entries' missing ancestors
/// are operations too. A transaction the cluster still finds too large is
/// split in two.
const BULK_ENTRIES: usize = 64;
const BULK_BYTES: usize = 512 << 10;
const BULK_REFERENCE_BYTES: usize = 512;

/// A bulk load in cluster mode: the entries commit in order, as several
/// transactions (each all or nothing, the whole not). A failure says how
/// many entries were committed before it.
async fn bulk_load_through_cluster(daemon: &Daemon, items: &[(String, Vec<u8>)]) -> Reply {
    let threshold = daemon.cluster_layout().map_or(usize::MAX, |layout| layout.blob_threshold());
    let weight = |value: &Vec<u8>| if value.len() >= threshold { BULK_REFERENCE_BYTES } else { value.len() };
    let mut version = daemon.store().snapshot().version();
    let mut done = 0;
    let mut most = BULK_ENTRIES;
    while done < items.len() {
        let mut end = done;
        let mut bytes = 0;
        while end < items.len() && end - done < most && (end == done || bytes + weight(&items[end].1) <= BULK_BYTES) {
            bytes += weight(&items[end].1);
            end += 1;
        }
        let put = |txn: &mut shoal::Transaction<'_>| {
            items[done..end].iter().try_for_each(|(path, value)| txn.put(path, value))
        };
        match commit_in_cluster(daemon, put).await {
            Ok((committed, ())) => {
                version = committed;
                done = end;
                most = BULK_ENTRIES;
            }
            Err(ClusterFailure::Commit(CommitError::Cluster(shoal_cluster::Error::TooLarge(_)))) if end - done > 1 => {
                most = (end - done) / 2;
            }
            Err(failure) => {
                let Reply::Failed { kind, message } = failure.reply() else { unreachable!("a failure's reply") };
                let message = if done == 0 {
                    message
                } else {
                    format!(
                        "in cluster mode a bulk load commits as several transactions: its first {done} of {} \
                         entries were committed (version {version}), the rest were not: {message}",
                        items.len()
                    )
                };
                return Reply::Failed { kind, message };
            }
        }
    }
    Reply::Committed { version }
}

/// Keeps the xenstore permission records (`/.shoald/perms/...`) in step
/// with the store owner's changes: a node the change removes or replaces
/// loses its record and its descendants' (so a later node at that path does
/// not get a stale owner, and its former owner's node count drops); a node
/// it creates starts without one (it takes its nearest ancestor's).
fn keep_records(txn: &mut shoal::Transaction<'_>, op: &Op) -> shoal::Result<()> {
    let path = match op {
        Op::Put { path, .. } => {
            if txn.get(path)?.is_some() {
                return Ok(());
            }
            path
        }
        Op::Delete { path } | Op::DeleteTree { path } => path,
        Op::Copy { dst, .. } | Op::CopyTree { dst, .. } => dst,
    };
    if path != "/" && !path.starts_with(paths::PRIVATE_ROOT) {
        txn.delete_tree(&paths::perms_path(path))?;
    }
    Ok(())
}
