//! A connection's outgoing messages: replies and watch events share one
//! queue, so a connection sees the events of its own commits before their
//! replies, and everything in the order it was queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::wire::Message;

/// The sending side of a connection's queue.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Message>,
    overflow: Arc<Overflow>,
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
pub type Inbox = mpsc::Receiver<Message>;

impl Outbox {
    /// A queue of `capacity` messages.
    pub fn new(capacity: usize) -> (Outbox, Inbox, Arc<Overflow>) {
        let (queue, inbox) = mpsc::channel(capacity.max(1));
        let overflow = Arc::new(Overflow::default());
        (Outbox { queue, overflow: overflow.clone() }, inbox, overflow)
    }

    /// Queues a reply, waiting for room: a client that does not read its
    /// replies only holds itself up. `false` if the connection is gone.
    pub async fn reply(&self, message: Message) -> bool {
        self.queue.send(message).await.is_ok()
    }

    /// Queues a watch event without waiting. A full queue means the client
    /// stopped reading: the connection is marked for closing (it would
    /// otherwise miss this event without knowing).
    pub fn event(&self, message: Message) {
        match self.queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflow.happened.swap(true, Ordering::AcqRel) {
                    tracing::warn!("a client stopped reading its watch events; closing its connection");
                }
                self.overflow.notify.notify_waiters();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
