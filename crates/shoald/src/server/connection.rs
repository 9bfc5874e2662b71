//! One connection, whatever carries it (a unix socket or a guest's ring):
//! requests are read and answered in order; replies and watch events leave
//! through one queue drained by a writer task.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::domains::DomainState;
use super::framing::{read_message, InputEnd};
use super::outbox::Outbox;
use super::session::Session;
use super::Daemon;
use crate::ring::page::ERROR_PROTO;
use crate::xs::paths;
use crate::xs::perms::Caller;

/// The most bytes of replies and events queued for a guest: cxenstored's
/// memory quota per domain (2.5 MB), so that a guest that takes no events
/// cannot make shoald hold more for it.
const GUEST_QUEUED_BYTES: usize = 2_621_440;
/// The same for dom0's sockets: large enough for the events of a big
/// transaction, bounded all the same.
const SOCKET_QUEUED_BYTES: usize = 64 << 20;

/// How long a request may still take once shoald is stopping.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Who is on the other end.
#[derive(Clone)]
pub enum Identity {
    /// A local socket: dom0, privileged; relative paths below
    /// `/local/domain/0`, as with the stock daemons.
    Socket { read_only: bool },
    /// A guest's ring.
    Domain(Arc<DomainState>),
}

impl Identity {
    pub fn dom0_socket(read_only: bool) -> Identity {
        Identity::Socket { read_only }
    }

    pub fn caller(&self) -> Caller {
        match self {
            Identity::Socket { .. } => Caller { domid: 0, privileged: true, target: None },
            Identity::Domain(state) => state.caller(),
        }
    }

    pub fn home(&self) -> String {
        paths::domain_path(self.caller().domid)
    }

    pub fn read_only(&self) -> bool {
        matches!(self, Identity::Socket { read_only: true })
    }
}

/// Serves one connection until the client leaves, breaks the protocol,
/// stops reading its events, or `stop` turns true. `ring`: the guest's
/// ring, told why the daemon stopped serving it.
pub async fn serve<R, W>(
    daemon: Arc<Daemon>,
    mut input: R,
    mut output: W,
    identity: Identity,
    mut stop: watch::Receiver<bool>,
    ring: Option<Arc<crate::ring::stream::Ring>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = daemon.connection_id();
    let max_bytes = match identity {
        Identity::Socket { .. } => SOCKET_QUEUED_BYTES,
        Identity::Domain(_) => GUEST_QUEUED_BYTES,
    };
    let catch_up = matches!(identity, Identity::Domain(_));
    let (outbox, mut inbox, overflow) = Outbox::new(daemon.limits.queued_messages, max_bytes, catch_up);
    let unsent = outbox.unsent();
    let writer_unsent = unsent.clone();
    let queued_bytes = outbox.bytes();
    let catchup = outbox.catchup();
    let writer = tokio::spawn(async move {
        while let Some(out) = inbox.recv().await {
            let written = output.write_all(&out.message.to_bytes()).await;
            queued_bytes.fetch_sub(super::outbox::cost(&out.message), std::sync::atomic::Ordering::AcqRel);
            if written.is_err() {
                break;
            }
            if out.reply {
                writer_unsent.sent();
            } else {
                writer_unsent.wrote();
            }
            if let Some(catchup) = &catchup {
                catchup.after_write();
            }
        }
        writer_unsent.writer_gone();
    });
    let mut session = Session::new(daemon, id, outbox, identity);
    let mut payload = Vec::new();
    tracing::debug!(id, "connection opened");
    loop {
        // A guest with `outstanding` replies it has not taken is not read
        // from until it takes some (the stock daemons stop reading its ring).
        if let Some(limit) = session.outstanding_limit() {
            tokio::select! {
                _ = unsent.wait_below(limit) => {}
                _ = overflow.wait() => break,
                _ = stop.wait_for(|&s| s) => break,
            }
        }
        // A stopped connection reads nothing more, even with a request
        // waiting (a domain introduced again has a new connection on the
        // same ring already).
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => break,
            _ = overflow.wait() => break,
            m = read_message(&mut input, &mut payload) => m,
        };
        let header = match message {
            Ok(header) => header,
            Err(InputEnd::Closed) => break,
            Err(end) => {
                // At debug only: a guest can end its connection as often as
                // it likes (a ring reconnection), and must not flood the log.
                tracing::debug!(id, %end, "dropping connection");
                if let (InputEnd::TooLong(_), Some(ring)) = (&end, &ring) {
                    ring.fail(ERROR_PROTO);
                }
                break;
            }
        };
        // A request finishes even when shoald is stopping, unless it cannot:
        // a client that takes no replies leaves its reply waiting for room
        // forever. A second after the stop, the request is abandoned (a
        // commit it started still completes; only its reply is lost).
        let served = tokio::select! {
            served = session.handle(&header, &payload) => served,
            _ = async {
                let _ = stop.wait_for(|&s| s).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => false,
        };
        if !served {
            break;
        }
    }
    session.close();
    drop(session);
    if overflow.happened() {
        writer.abort();
    } else {
        // The replies already queued still go out, unless the client does
        // not take them.
        let abort = writer.abort_handle();
        if tokio::time::timeout(STOP_GRACE, writer).await.is_err() {
            abort.abort();
        }
    }
    tracing::debug!(id, "connection closed");
}
