//! A connection's outgoing messages: replies and watch events share one
//! queue, so a connection sees the events of its own commits before their
//! replies, and everything in the order it was queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::wire::Message;

/// The sending side of a connection's queue.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    overflow: Arc<Overflow>,
    unsent: Arc<Unsent>,
    /// Bytes queued, and the most there may be.
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// What a queued message costs against the byte bound: its bytes, and what
/// holding it takes besides (its allocation and its slot in the queue), so
/// that many small events count for the memory they really hold.
pub fn cost(message: &Message) -> usize {
    message.size() + 64
}

/// A message on its way out.
pub struct Outgoing {
    pub message: Message,
    /// A reply (counted in [`Unsent`]) rather than a watch event.
    pub reply: bool,
}

/// Replies queued but not yet written to the client: the requests still
/// outstanding, in the `outstanding` quota's terms.
#[derive(Default)]
pub struct Unsent {
    replies: AtomicUsize,
    /// The writer stopped (the client went, or its ring is being reset):
    /// nothing waits for replies to be taken any more.
    writer_gone: AtomicBool,
    notify: Notify,
}

impl Unsent {
    /// The writer wrote a reply.
    pub fn sent(&self) {
        self.replies.fetch_sub(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The writer stopped.
    pub fn writer_gone(&self) {
        self.writer_gone.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Waits until fewer than `limit` replies are unsent, or the writer
    /// stopped.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.notify.notified();
            if self.replies.load(Ordering::Acquire) < limit || self.writer_gone.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Set when a watch event found the queue full: the connection is then
/// closed rather than silently missing the event.
#[derive(Default)]
pub struct Overflow {
    happened: AtomicBool,
    notify: Notify,
}

impl Overflow {
    pub fn happened(&self) -> bool {
        self.happened.load(Ordering::Acquire)
    }

    /// Waits until an event overflowed the queue.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.happened() {
                return;
            }
            notified.await;
        }
    }
}

/// The receiving side, drained by the connection's writer.
pub type Inbox = mpsc::Receiver<Outgoing>;

impl Outbox {
    /// A queue of `capacity` messages.
    /// A queue of at most `capacity` messages and `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> (Outbox, Inbox, Arc<Overflow>) {
        let (queue, inbox) = mpsc::channel(capacity.max(1));
        let overflow = Arc::new(Overflow::default());
        let outbox =
            Outbox { queue, overflow: overflow.clone(), unsent: Arc::default(), bytes: Arc::default(), max_bytes };
        (outbox, inbox, overflow)
    }

    /// The count of queued bytes, which the writer decrements.
    pub fn bytes(&self) -> Arc<AtomicUsize> {
        self.bytes.clone()
    }

    /// The count of unsent replies, which the writer decrements.
    pub fn unsent(&self) -> Arc<Unsent> {
        self.unsent.clone()
    }

    /// Queues a reply, waiting for room: a client that does not read its
    /// replies only holds itself up. `false` if the connection is gone.
    pub async fn reply(&self, message: Message) -> bool {
        self.unsent.replies.fetch_add(1, Ordering::AcqRel);
        let size = cost(&message);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        if self.queue.send(Outgoing { message, reply: true }).await.is_ok() {
            return true;
        }
        self.bytes.fetch_sub(size, Ordering::AcqRel);
        self.unsent.sent();
        false
    }

    /// Queues a watch event without waiting. A full queue means the client
    /// stopped reading: the connection is marked for closing (it would
    /// otherwise miss this event without knowing).
    pub fn event(&self, message: Message) {
        let size = cost(&message);
        let queued = self.bytes.fetch_add(size, Ordering::AcqRel) + size;
        let full = if queued > self.max_bytes {
            Some(format!("{queued} bytes"))
        } else {
            match self.queue.try_send(Outgoing { message, reply: false }) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some(format!("{} messages", self.queue.max_capacity())),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.bytes.fetch_sub(size, Ordering::AcqRel);
                    return;
                }
            }
        };
        if let Some(what) = full {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            if !self.overflow.happened.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    "a client's watch events outgrew its queue ({what} not yet taken); closing its connection \
                     rather than dropping events"
                );
            }
            self.overflow.notify.notify_waiters();
        }
    }
}
