//! A ring page as a byte stream in each direction: the daemon reads
//! requests and writes responses; a guest does the opposite. Both sides
//! use the same code, so the simulator's guests exercise exactly what a
//! daemon's peer would.
//!
//! The indices come from the page, which the other side may scribble on:
//! a producer more than a ring ahead of its consumer is an error
//! ([`RingError::Index`]), never a reason to read or write out of place.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::page::{self, Page, RING_SIZE};

/// Which end of the ring this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Daemon,
    Guest,
}

/// One of the two circular buffers: where its bytes and offsets are.
#[derive(Clone, Copy)]
struct Buffer {
    data: usize,
    cons: usize,
    prod: usize,
}

const REQUESTS: Buffer = Buffer { data: 0, cons: page::REQ_CONS, prod: page::REQ_PROD };
const RESPONSES: Buffer = Buffer { data: RING_SIZE as usize, cons: page::RSP_CONS, prod: page::RSP_PROD };

impl Side {
    fn inbound(self) -> Buffer {
        match self {
            Side::Daemon => REQUESTS,
            Side::Guest => RESPONSES,
        }
    }
    fn outbound(self) -> Buffer {
        match self {
            Side::Daemon => RESPONSES,
            Side::Guest => REQUESTS,
        }
    }
}

/// Wakes this side's reader and writer when the other side kicks.
#[derive(Default)]
pub struct Signal {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl Signal {
    pub fn wake(&self) {
        for slot in [&self.reader, &self.writer] {
            if let Some(waker) = slot.lock().unwrap().take() {
                waker.wake();
            }
        }
    }
}

/// Notifies the other side that the ring changed (an event channel).
pub trait Kick: Send + Sync {
    fn kick(&self);
}

/// What went wrong with a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// A producer offset more than a ring ahead of its consumer.
    Index,
}

fn index_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "inconsistent ring producer or consumer offset")
}

fn reconnect_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the guest asked to reconnect")
}

/// The shared state of one ring connection, from one side.
pub struct Ring {
    pub page: Page,
    side: Side,
    signal: Arc<Signal>,
    kick: Arc<dyn Kick>,
}

impl Ring {
    pub fn new(page: Page, side: Side, signal: Arc<Signal>, kick: Arc<dyn Kick>) -> Arc<Ring> {
        Arc::new(Ring { page, side, signal, kick })
    }

    /// The daemon marks the connection failed (`XENSTORE_ERROR_*`) so the
    /// guest can tell why it stopped being served.
    pub fn fail(&self, error: u32) {
        if self.side == Side::Daemon {
            self.page.store(page::ERROR, error);
            self.kick.kick();
        }
    }

    pub fn kick(&self) {
        self.kick.kick();
    }

    /// The guest set the connection state to "reconnect in progress"
    /// (`xenstore-ring.txt`): the daemon's reads and writes stop, and the
    /// connection is to be reset.
    pub fn reconnect_requested(&self) -> bool {
        self.side == Side::Daemon && self.page.load(page::CONNECTION) == page::RECONNECT
    }

    /// Resets the ring for a new connection: both queues empty, connected,
    /// the guest kicked.
    pub fn reset(&self) {
        for field in [page::REQ_CONS, page::REQ_PROD, page::RSP_CONS, page::RSP_PROD] {
            self.page.store(field, 0);
        }
        self.page.store(page::CONNECTION, page::CONNECTED);
        self.kick.kick();
    }

    fn read(&self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let b = self.side.inbound();
        for registered in [false, true] {
            if self.reconnect_requested() {
                return Poll::Ready(Err(reconnect_error()));
            }
            let cons = self.page.load(b.cons);
            let prod = self.page.load(b.prod);
            let available = prod.wrapping_sub(cons);
            if available > RING_SIZE {
                self.fail(page::ERROR_RINGIDX);
                return Poll::Ready(Err(index_error()));
            }
            if available > 0 && out.remaining() > 0 {
                let n = (available as usize).min(out.remaining());
                let mut chunk = [0u8; RING_SIZE as usize];
                self.page.copy_out(b.data, cons, &mut chunk[..n]);
                out.put_slice(&chunk[..n]);
                self.page.store(b.cons, cons.wrapping_add(n as u32));
                self.kick.kick();
                return Poll::Ready(Ok(()));
            }
            if !registered {
                // Register, then look again: a kick in between is not lost.
                *self.signal.reader.lock().unwrap() = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }

    fn write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let b = self.side.outbound();
        for registered in [false, true] {
            if self.reconnect_requested() {
                return Poll::Ready(Err(reconnect_error()));
            }
            let cons = self.page.load(b.cons);
            let prod = self.page.load(b.prod);
            let used = prod.wrapping_sub(cons);
            if used > RING_SIZE {
                self.fail(page::ERROR_RINGIDX);
                return Poll::Ready(Err(index_error()));
            }
            let room = (RING_SIZE - used) as usize;
            if room > 0 {
                let n = room.min(bytes.len());
                self.page.copy_in(b.data, prod, &bytes[..n]);
                self.page.store(b.prod, prod.wrapping_add(n as u32));
                self.kick.kick();
                return Poll::Ready(Ok(n));
            }
            if !registered {
                *self.signal.writer.lock().unwrap() = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// The reading half of a ring.
pub struct RingReader(pub Arc<Ring>);
/// The writing half of a ring.
pub struct RingWriter(pub Arc<Ring>);

impl AsyncRead for RingReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.read(cx, buf)
    }
}

impl AsyncWrite for RingWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::page::Pages;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Both(Arc<Signal>, Arc<Signal>);
    impl Kick for Both {
        fn kick(&self) {
            self.0.wake();
            self.1.wake();
        }
    }

    fn pair() -> (Arc<Ring>, Arc<Ring>, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(page::PAGE_SIZE as u64).unwrap();
        let pages = Pages::map(file.as_file()).unwrap();
        let (a, b) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
        let kick: Arc<dyn Kick> = Arc::new(Both(a.clone(), b.clone()));
        let daemon = Ring::new(pages.page(0).unwrap(), Side::Daemon, a, kick.clone());
        let guest = Ring::new(pages.page(0).unwrap(), Side::Guest, b, kick);
        (daemon, guest, file)
    }

    #[tokio::test]
    async fn bytes_cross_in_both_directions_and_wrap_around() {
        let (daemon, guest, _file) = pair();
        // Start near the top of the u32 range: offsets are free-running.
        for field in [page::REQ_CONS, page::REQ_PROD, page::RSP_CONS, page::RSP_PROD] {
            daemon.page.store(field, u32::MAX - 700);
        }
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sent = message.clone();
        let writer = tokio::spawn(async move {
            RingWriter(guest.clone()).write_all(&sent).await.unwrap();
            let mut back = vec![0u8; 3];
            RingReader(guest).read_exact(&mut back).await.unwrap();
            back
        });
        let mut got = vec![0u8; message.len()];
        RingReader(daemon.clone()).read_exact(&mut got).await.unwrap();
        assert_eq!(got, message);
        RingWriter(daemon).write_all(b"ack").await.unwrap();
        assert_eq!(writer.await.unwrap(), b"ack");
    }

    #[tokio::test]
    async fn a_producer_more_than_a_ring_ahead_is_an_error_and_marked() {
        let (daemon, _guest, _file) = pair();
        daemon.page.store(page::REQ_CONS, 10);
        daemon.page.store(page::REQ_PROD, 10 + RING_SIZE + 1);
        let mut buf = [0u8; 16];
        let err = RingReader(daemon.clone()).read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(daemon.page.load(page::ERROR), page::ERROR_RINGIDX);
        // Exactly one ring's worth is fine.
        daemon.page.store(page::ERROR, 0);
        daemon.page.store(page::REQ_PROD, 10 + RING_SIZE);
        let n = RingReader(daemon.clone()).read(&mut buf).await.unwrap();
        assert_eq!(n, 16);
        // A response ring whose consumer ran ahead of its producer.
        daemon.page.store(page::RSP_CONS, 5000);
        daemon.page.store(page::RSP_PROD, 100);
        let err = RingWriter(daemon.clone()).write(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
