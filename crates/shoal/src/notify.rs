//! Readiness for event loops: a file descriptor that becomes readable when
//! the store publishes a version.
//!
//! One helper thread per store per process sleeps on the control file's
//! futex (as a waiting reader does, counted among the sleepers) and, at each
//! publication, adds one to the eventfd of every live [`VersionFd`]. So an
//! async program can wait for any number of stores or watches with one
//! event loop, and this library needs no async runtime. The thread exits
//! when the last `VersionFd` of its store is dropped (within a second).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::locking::lock;
use crate::readers::ReaderTable;

/// A file descriptor that becomes readable when the store publishes a new
/// version (an eventfd). Register it with `epoll`, `poll`, or an async
/// runtime; when it is readable, call [`VersionFd::clear`] and then take a
/// snapshot (or poll a [`crate::Watch`]). With tokio:
///
/// ```text
/// let fd = tokio::io::unix::AsyncFd::new(reader.version_fd()?)?;
/// loop {
///     let mut ready = fd.readable().await?;
///     ready.get_inner().clear()?;
///     ready.clear_ready();
///     for event in watch.poll()? { /* ... */ }
/// }
/// ```
pub struct VersionFd {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    _hub: Arc<Hub>,
}

impl VersionFd {
    /// Consumes the readiness: the descriptor is not readable again until
    /// the next publication.
    pub fn clear(&self) -> Result<()> {
        let mut buf = [0u8; 8];
        match rustix::io::read(&*self.fd, &mut buf) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e).at(&self.path),
        }
    }
}

impl AsFd for VersionFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for VersionFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The helper thread's side: the eventfds to signal.
struct Hub {
    fds: Mutex<Vec<Weak<OwnedFd>>>,
}

/// Hubs by store directory, so a process runs one helper thread per store
/// (keyed by the directory as given: two spellings of one directory get two
/// threads, which is harmless).
static HUBS: Mutex<Vec<(PathBuf, Weak<Hub>)>> = Mutex::new(Vec::new());

impl crate::Reader {
    /// A file descriptor that becomes readable at each publication (see
    /// [`VersionFd`]): the async-friendly form of
    /// [`crate::Reader::wait_for_version`].
    pub fn version_fd(&self) -> Result<VersionFd> {
        version_fd(self.dir())
    }
}

/// A new readiness descriptor for the store in `dir`.
fn version_fd(dir: &Path) -> Result<VersionFd> {
    use rustix::event::{eventfd, EventfdFlags};
    let path = dir.join(crate::control::FILE_NAME);
    let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).at(&path)?);
    let mut hubs = lock(&HUBS);
    hubs.retain(|(_, hub)| hub.strong_count() > 0);
    let existing = hubs.iter().find(|(d, _)| d == dir).and_then(|(_, hub)| hub.upgrade());
    let hub = match existing {
        Some(hub) => hub,
        None => {
            let hub = Arc::new(Hub { fds: Mutex::new(Vec::new()) });
            start_helper(dir, Arc::downgrade(&hub))?;
            hubs.push((dir.to_path_buf(), Arc::downgrade(&hub)));
            hub
        }
    };
    lock(&hub.fds).push(Arc::downgrade(&fd));
    Ok(VersionFd { fd, path, _hub: hub })
}

fn start_helper(dir: &Path, hub: Weak<Hub>) -> Result<()> {
    let store_dir = crate::files::StoreDir::open(dir)?;
    let control = Control::open_reader(&store_dir)?;
    let table = ReaderTable::open(&store_dir)?;
    std::thread::Builder::new()
        .name("shoal-notify".into())
        .spawn(move || {
            let mut seq = control.wake_sequence();
            loop {
                // Bounded, so the thread notices when its last user is gone.
                let waited = control.wait_past(seq, Duration::from_secs(1), Duration::ZERO, Some(&table));
                let Some(hub) = hub.upgrade() else { return };
                if let Err(e) = waited {
                    tracing::warn!(error = %e, "version notifier wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                let now = control.wake_sequence();
                if now == seq {
                    continue;
                }
                seq = now;
                let mut fds = lock(&hub.fds);
                fds.retain(|fd| match fd.upgrade() {
                    Some(fd) => {
                        // A full counter (never, in practice) is still readable.
                        let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
                        true
                    }
                    None => false,
                });
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Io { file: dir.to_path_buf(), source: e })
}
