//! The guest side of rings without Xen: a simulated hypervisor that owns
//! the ring pages and the event-channel socket, and hands each simulated
//! guest its ring as a byte stream (the tests and `shoald-sim` use it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

use super::evtchn::EventChannels;
use super::page::{self, Pages, PAGE_SIZE};
use super::stream::{Ring, RingReader, RingWriter, Side, Signal};
use super::{EVTCHN_SOCKET, PAGES_FILE};

/// A simulated hypervisor with room for `pages` guests' rings.
pub struct Hypervisor {
    pub dir: PathBuf,
    pages: Arc<Pages>,
    listener: Option<UnixListener>,
    channels: Option<Arc<EventChannels>>,
}

impl Hypervisor {
    /// Creates the pages file and listens for the daemon in `dir`.
    pub fn create(dir: &Path, pages: usize) -> std::io::Result<Hypervisor> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(PAGES_FILE))?;
        file.set_len((pages * PAGE_SIZE) as u64)?;
        let pages = Pages::map(&file)?;
        let socket = dir.join(EVTCHN_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        Ok(Hypervisor { dir: dir.to_path_buf(), pages, listener: Some(listener), channels: None })
    }

    /// Waits for the daemon to connect its event channels.
    pub async fn accept_daemon(&mut self) -> std::io::Result<()> {
        let listener = self.listener.take().expect("the daemon connects once");
        let (stream, _) = listener.accept().await?;
        self.channels = Some(EventChannels::start(stream));
        Ok(())
    }

    /// The page of guest `gfn`, for tests that play a misbehaving guest.
    pub fn page(&self, gfn: usize) -> page::Page {
        self.pages.page(gfn).expect("a page the hypervisor has")
    }

    /// Guest `gfn`'s end of its ring, kicking the daemon on `port`. The
    /// daemon serves it once dom0 has sent `INTRODUCE <domid>|<gfn>|<port>|`.
    pub fn guest(&self, gfn: usize, port: u32) -> (RingReader, RingWriter) {
        let channels = self.channels.as_ref().expect("accept_daemon first");
        let signal = Arc::new(Signal::default());
        channels.bind(port, signal.clone());
        let ring = Ring::new(self.page(gfn), Side::Guest, signal, channels.kicker(port));
        (RingReader(ring.clone()), RingWriter(ring))
    }

    /// Kicks the daemon on `port`, as a guest does after touching its ring.
    pub fn guest_kick(&self, port: u32) {
        self.channels.as_ref().expect("accept_daemon first").notify(port);
    }
}
