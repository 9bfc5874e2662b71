//! Event channels without a hypervisor: a unix stream socket between the
//! daemon and the simulated hypervisor carrying 4-byte port numbers, in the
//! host's byte order, one per kick, as reading `/dev/xen/evtchn` yields the
//! ports that fired. Each side reads the ports the other kicked and wakes
//! whatever is bound to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::stream::{Kick, Signal};

/// One side's end: kicks to send, and what each port wakes.
pub struct EventChannels {
    out: mpsc::UnboundedSender<u32>,
    bound: Mutex<HashMap<u32, Arc<Signal>>>,
}

impl EventChannels {
    /// Runs both directions over `stream` until it closes.
    pub fn start(stream: UnixStream) -> Arc<EventChannels> {
        let (out, mut queued) = mpsc::unbounded_channel::<u32>();
        let channels = Arc::new(EventChannels { out, bound: Mutex::new(HashMap::new()) });
        let (mut input, mut output) = stream.into_split();
        tokio::spawn(async move {
            while let Some(port) = queued.recv().await {
                if output.write_all(&port.to_ne_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let weak = Arc::downgrade(&channels);
        tokio::spawn(async move {
            let mut word = [0u8; 4];
            while input.read_exact(&mut word).await.is_ok() {
                let Some(channels) = weak.upgrade() else { break };
                let signal = channels.bound.lock().unwrap().get(&u32::from_ne_bytes(word)).cloned();
                if let Some(signal) = signal {
                    signal.wake();
                }
            }
            tracing::warn!("the event channel socket closed");
        });
        channels
    }

    /// Binds `port`: its kicks wake `signal`.
    pub fn bind(&self, port: u32, signal: Arc<Signal>) {
        self.bound.lock().unwrap().insert(port, signal);
    }

    pub fn unbind(&self, port: u32) {
        self.bound.lock().unwrap().remove(&port);
    }

    pub fn notify(&self, port: u32) {
        let _ = self.out.send(port);
    }

    /// A [`Kick`] that notifies `port`.
    pub fn kicker(self: &Arc<Self>, port: u32) -> Arc<dyn Kick> {
        Arc::new(PortKick { channels: self.clone(), port })
    }
}

struct PortKick {
    channels: Arc<EventChannels>,
    port: u32,
}

impl Kick for PortKick {
    fn kick(&self) {
        self.channels.notify(self.port);
    }
}
