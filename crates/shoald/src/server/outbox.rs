//! A connection's outgoing messages: replies and watch events share one
//! queue, so a connection sees the events of its own commits before their
//! replies, and everything in the order it was queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    /// For a guest: the watches whose events did not fit (see [`Outbox::event`]).
    missed: Option<Arc<Mutex<Vec<Missed>>>>,
}

/// A watch that fired while its connection's queue was full: its path as
/// the watch reports it, and its token.
type Missed = (Vec<u8>, Vec<u8>);

/// Sends the events [`Outbox::event`] held back once the queue has drained
/// (the connection's writer calls it after each message it writes).
pub struct Catchup {
    queue: mpsc::WeakSender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    missed: Arc<Mutex<Vec<Missed>>>,
}

impl Catchup {
    /// Once less than half the byte bound is queued, queues one event per
    /// watch that missed some, for the watch's own path.
    pub fn after_write(&self) {
        if self.bytes.load(Ordering::Acquire) >= self.max_bytes / 2 {
            return;
        }
        let mut missed = self.missed.lock().unwrap();
        if missed.is_empty() {
            return;
        }
        let Some(queue) = self.queue.upgrade() else { return };
        while let Some((path, token)) = missed.first() {
            let message = Message::watch_event(path, token);
            let size = cost(&message);
            self.bytes.fetch_add(size, Ordering::AcqRel);
            if queue.try_send(Outgoing { message, reply: false }).is_err() {
                self.bytes.fetch_sub(size, Ordering::AcqRel);
                return;
            }
            missed.remove(0);
        }
    }
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

    /// The writer wrote a message: a reply waiting for bytes to drain may
    /// go on.
    pub fn wrote(&self) {
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
    /// A queue of at most `capacity` messages and `max_bytes` bytes. With
    /// `catch_up` (a guest's), events that do not fit are held back as one
    /// event per watch ([`Outbox::event`]) rather than closing the
    /// connection.
    pub fn new(capacity: usize, max_bytes: usize, catch_up: bool) -> (Outbox, Inbox, Arc<Overflow>) {
        let (queue, inbox) = mpsc::channel(capacity.max(1));
        let overflow = Arc::new(Overflow::default());
        let missed = catch_up.then(Arc::default);
        let outbox = Outbox {
            queue,
            overflow: overflow.clone(),
            unsent: Arc::default(),
            bytes: Arc::default(),
            max_bytes,
            missed,
        };
        (outbox, inbox, overflow)
    }

    /// What the writer calls after each write, for a queue that holds
    /// events back.
    pub fn catchup(&self) -> Option<Catchup> {
        self.missed.as_ref().map(|missed| Catchup {
            queue: self.queue.downgrade(),
            bytes: self.bytes.clone(),
            max_bytes: self.max_bytes,
            missed: missed.clone(),
        })
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
        // Replies are held to the byte bound too: past it, the next waits
        // until the client has taken some (it only holds itself up).
        loop {
            let notified = self.unsent.notify.notified();
            let queued = self.bytes.load(Ordering::Acquire);
            if queued == 0 || queued + size <= self.max_bytes || self.unsent.writer_gone.load(Ordering::Acquire) {
                break;
            }
            notified.await;
        }
        self.bytes.fetch_add(size, Ordering::AcqRel);
        if self.queue.send(Outgoing { message, reply: true }).await.is_ok() {
            return true;
        }
        self.bytes.fetch_sub(size, Ordering::AcqRel);
        self.unsent.sent();
        false
    }

    /// Queues a watch event without waiting, for the watch reporting
    /// `watch_path` with `token`. When the queue is past its bound:
    /// - a guest's: the event is held back, as one event for the watch's own
    ///   path, sent once the queue has drained to half (a guest that falls
    ///   behind hears that each such watch fired, and re-reads; it does not
    ///   lose its connection, nor miss a watch without knowing);
    /// - a socket's: the connection is marked for closing.
    pub fn event(&self, message: Message, watch_path: &[u8], token: &[u8]) {
        let size = cost(&message);
        if let Some(missed) = &self.missed {
            let mut missed = missed.lock().unwrap();
            if missed.is_empty() && self.bytes.load(Ordering::Acquire) + size <= self.max_bytes {
                self.bytes.fetch_add(size, Ordering::AcqRel);
                match self.queue.try_send(Outgoing { message, reply: false }) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.bytes.fetch_sub(size, Ordering::AcqRel);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.bytes.fetch_sub(size, Ordering::AcqRel);
                    }
                }
            }
            if missed.is_empty() {
                tracing::debug!("a guest's watch events outgrew its queue; holding them back, one per watch");
            }
            if !missed.iter().any(|(p, t)| p == watch_path && t == token) {
                missed.push((watch_path.to_vec(), token.to_vec()));
            }
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(bytes: usize) -> Message {
        Message { kind: 2, req_id: 1, tx_id: 0, payload: vec![b'x'; bytes] }
    }

    #[tokio::test]
    async fn replies_past_the_byte_bound_wait_for_the_client_to_take_some() {
        let (outbox, mut inbox, _) = Outbox::new(100, 1000, false);
        assert!(outbox.reply(message(400)).await);
        assert!(outbox.reply(message(400)).await);
        // A third would pass 1000 bytes: it waits.
        let third = outbox.reply(message(400));
        tokio::pin!(third);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut third).await.is_err());
        // The writer takes one.
        let taken = inbox.recv().await.unwrap();
        outbox.bytes.fetch_sub(cost(&taken.message), Ordering::AcqRel);
        outbox.unsent.sent();
        assert!(tokio::time::timeout(Duration::from_secs(5), &mut third).await.unwrap());
    }

    #[tokio::test]
    async fn a_guests_events_past_the_bound_come_back_as_one_per_watch() {
        let (outbox, mut inbox, overflow) = Outbox::new(100, 1000, true);
        let catchup = outbox.catchup().unwrap();
        for i in 0..10 {
            let token = if i % 2 == 0 { &b"a"[..] } else { &b"b"[..] };
            outbox.event(Message::watch_event(format!("w/{i}").as_bytes(), token), b"w", token);
        }
        assert!(!overflow.happened());
        // Ten events of about 90 bytes each fit in 1000; forty more do not.
        for i in 0..40 {
            outbox.event(Message::watch_event(format!("w/big{i}").as_bytes(), b"a"), b"w", b"a");
        }
        let mut got = Vec::new();
        while let Ok(out) = inbox.try_recv() {
            outbox.bytes.fetch_sub(cost(&out.message), Ordering::AcqRel);
            catchup.after_write();
            got.push(String::from_utf8_lossy(&out.message.payload).into_owned());
        }
        assert!(!overflow.happened(), "a guest's connection is not closed");
        assert!(got.len() < 50, "events were held back");
        assert_eq!(
            got.last().map(String::as_str),
            Some("w\0a\0"),
            "the held-back watch fires for its own path: {got:?}"
        );
    }
}
