//! Leases kept alive for as long as their holder lives: the writer's
//! candidacy and each host's status live on one.

use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A lease kept alive by a task of its own, which stops when the lease is
/// dropped (an `elect` that failed or was cancelled leaves nothing that
/// renews it, so its key goes when the lease ends).
pub(crate) struct Lease {
    pub(crate) id: i64,
    task: JoinHandle<()>,
    /// `false` once the lease is known to have ended.
    alive: watch::Receiver<bool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    pub(crate) async fn grant(client: &mut Client, ttl_secs: i64) -> Result<Lease, Error> {
        let id = client.lease_grant(ttl_secs, None).await?.id();
        let (tell, alive) = watch::channel(true);
        let task = tokio::spawn(keep_alive(client.clone(), id, Duration::from_secs(ttl_secs.max(1) as u64), tell));
        Ok(Lease { id, task, alive })
    }

    /// Whether the lease is still renewed (not known to have ended).
    pub(crate) fn alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Stops renewing: the lease ends after its time to live.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// Renews lease `id` every third of its time to live. A renewal stream
/// that fails (its etcd member died) is opened again, through whichever
/// member answers, until the lease has surely ended: no renewal for its
/// whole time to live, or etcd saying it is gone.
async fn keep_alive(mut client: Client, id: i64, ttl: Duration, tell: watch::Sender<bool>) {
    let period = ttl / 3;
    let mut renewed_at = Instant::now();
    loop {
        if let Ok((mut keeper, mut replies)) = client.lease_keep_alive(id).await {
            loop {
                let renewal = tokio::time::timeout(period, async {
                    keeper.keep_alive().await?;
                    replies.message().await
                })
                .await;
                match renewal {
                    Ok(Ok(Some(reply))) if reply.ttl() > 0 => {
                        renewed_at = Instant::now();
                        tokio::time::sleep(period).await;
                    }
                    Ok(Ok(Some(_))) => {
                        tracing::warn!(lease = id, "etcd says the lease has ended");
                        let _ = tell.send(false);
                        return;
                    }
                    // The stream failed or stalled: open another.
                    _ => break,
                }
            }
        }
        if renewed_at.elapsed() >= ttl {
            tracing::warn!(lease = id, "the lease could not be renewed within its time to live");
            let _ = tell.send(false);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
