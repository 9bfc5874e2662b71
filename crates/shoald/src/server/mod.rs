//! The xenstore front-end on unix sockets: one task per connection, reading
//! requests in order and answering each before reading the next (as the
//! stock daemons do), while other connections are served concurrently.

mod framing;
mod outbox;
pub mod session;
pub mod watches;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal::Store;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::xs::perms::Caller;
use framing::{read_message, InputEnd};
use outbox::Outbox;
pub use session::Limits;
use watches::{Dispatch, Registry};

/// The daemon's shared state.
pub struct Daemon {
    store: &'static Store,
    limits: Limits,
    next_connection: AtomicU64,
    watches: Arc<Mutex<Registry>>,
    dispatch: Arc<Dispatch>,
}

impl Daemon {
    /// Serves `store`, which lives as long as the process: transactions that
    /// span requests borrow it. Starts the watch dispatcher on the current
    /// tokio runtime.
    pub fn start(store: &'static Store, limits: Limits) -> Arc<Daemon> {
        let watches = Arc::new(Mutex::new(Registry::default()));
        let dispatch = Dispatch::new(store.version());
        tokio::spawn(watches::run_dispatcher(store, watches.clone(), dispatch.clone()));
        Arc::new(Daemon { store, limits, next_connection: AtomicU64::new(1), watches, dispatch })
    }

    pub fn store(&self) -> &'static Store {
        self.store
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
    /// Refuses to replace anything that is not a socket.
    pub fn bind(path: &Path, read_only: bool, mode: u32) -> std::io::Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
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
                    connections.spawn(connection(daemon, stream, listener.read_only, stop));
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

async fn connection(daemon: Arc<Daemon>, stream: UnixStream, read_only: bool, mut shutdown: watch::Receiver<bool>) {
    let id = daemon.next_connection.fetch_add(1, Ordering::Relaxed);
    let (mut input, mut output) = stream.into_split();
    let (outbox, mut inbox, overflow) = Outbox::new(daemon.limits.queued_messages);
    let writer = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            if output.write_all(&message.to_bytes()).await.is_err() {
                break;
            }
        }
    });
    // Local sockets are dom0's, relative paths included, as with the stock daemons.
    let caller = Caller { domid: 0, privileged: true, target: None };
    let home = Some(crate::xs::paths::domain_path(0));
    let mut session = session::Session::new(daemon, id, outbox, caller, home, read_only);
    let mut payload = Vec::new();
    tracing::debug!(id, read_only, "connection opened");
    loop {
        let message = tokio::select! {
            m = read_message(&mut input, &mut payload) => m,
            _ = overflow.wait() => break,
            _ = shutdown.changed() => break,
        };
        let header = match message {
            Ok(header) => header,
            Err(InputEnd::Closed) => break,
            Err(end) => {
                tracing::info!(id, %end, "dropping connection");
                break;
            }
        };
        if !session.handle(&header, &payload).await {
            break;
        }
    }
    session.close();
    drop(session);
    if overflow.happened() {
        writer.abort();
    } else {
        // The replies already queued still go out.
        let _ = writer.await;
    }
    tracing::debug!(id, "connection closed");
}
