//! Guests' rings (`xenstore-ring.txt`): a shared page per domain and an
//! event channel to kick the other side.
//!
//! On a Xen host the page would come from `/dev/xen/gntdev` and the kicks
//! from `/dev/xen/evtchn`; that backend is not written yet. Without a
//! hypervisor, a simulator stands in for one ([`sim::Hypervisor`]): it owns
//! a file of ring pages (page `n` is "gfn" `n`) and a unix socket that
//! carries event-channel kicks as port numbers. shoald started with
//! `--sim-hypervisor DIR` maps `DIR/pages` and connects to `DIR/evtchn`;
//! `INTRODUCE <domid>|<gfn>|<port>|` then serves that page as the domain's
//! ring, exactly as it would a granted page.

pub mod evtchn;
pub mod page;
pub mod sim;
pub mod stream;

use std::path::Path;
use std::sync::Arc;

use evtchn::EventChannels;
use page::Pages;

/// The pages file in a simulated hypervisor's directory.
pub const PAGES_FILE: &str = "pages";
/// The event channel socket in a simulated hypervisor's directory.
pub const EVTCHN_SOCKET: &str = "evtchn";

/// Where the daemon finds guests' ring pages and event channels.
pub struct Backend {
    pub pages: Arc<Pages>,
    pub channels: Arc<EventChannels>,
}

impl Backend {
    /// Connects to the simulated hypervisor in `dir` (it must be running).
    pub async fn simulated(dir: &Path) -> std::io::Result<Backend> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(dir.join(PAGES_FILE))?;
        let pages = Pages::map(&file)?;
        let stream = tokio::net::UnixStream::connect(dir.join(EVTCHN_SOCKET)).await?;
        Ok(Backend { pages, channels: EventChannels::start(stream) })
    }
}
