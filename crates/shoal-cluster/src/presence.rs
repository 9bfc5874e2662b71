//! Each host's state, kept in etcd under a lease: `PREFIX#hosts/HOST`
//! holds the host's figures as JSON, rewritten every period. A host that
//! dies stops renewing the lease, and its key is gone when the lease ends;
//! [`cluster_status`] lists the hosts that are there, with how far each
//! lags behind etcd.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use shoal::Store;
use tokio::task::JoinHandle;

use crate::layout::Layout;
use crate::lease::Lease;
use crate::replica::revision_of;
use crate::Error;

/// What a host reports of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    /// The etcd revision its newest version holds.
    pub applied_revision: Option<i64>,
    /// Its store's newest version.
    pub version: u64,
    /// Versions published per second over the last period.
    pub versions_per_sec: f64,
    /// Processes reading its store.
    pub readers: usize,
    pub arena_bytes: u64,
    pub live_bytes: u64,
    /// When it wrote this, in milliseconds since the Unix epoch.
    pub written_ms: u64,
    /// Where other hosts reach it (its forwarding socket), if they can.
    #[serde(default)]
    pub forward: Option<String>,
}

/// A host's entry as listed, with its lag.
#[derive(Clone, Debug, PartialEq)]
pub struct HostEntry {
    pub status: HostStatus,
    /// Revisions of the cluster's tree it has not applied yet, as of the
    /// listing (`None` when it has applied none).
    pub lag: Option<i64>,
}

/// Publishes this host's figures until dropped.
pub struct Presence {
    task: JoinHandle<()>,
    client: Client,
    /// The lease the status lives on now.
    lease: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Presence {
    /// Starts publishing `store`'s figures as `host` every `period`, under
    /// a lease of `ttl_secs` (which should be a few periods long). Fails if
    /// another live process already publishes as `host`.
    pub async fn start(
        client: Client,
        layout: Layout,
        host: &str,
        store: &'static Store,
        ttl_secs: i64,
        period: Duration,
    ) -> Result<Presence, Error> {
        Presence::start_reachable(client, layout, host, None, store, ttl_secs, period).await
    }

    /// [`start`](Self::start), publishing where other hosts reach this one
    /// (`forward`: its forwarding socket's address).
    pub async fn start_reachable(
        mut client: Client,
        layout: Layout,
        host: &str,
        forward: Option<String>,
        store: &'static Store,
        ttl_secs: i64,
        period: Duration,
    ) -> Result<Presence, Error> {
        let key = layout.host_key(host);
        let first = status(host, forward.clone(), store, &layout, 0.0)?;
        let lease =
            claim(&mut client, &key, ttl_secs, &first).await?.ok_or_else(|| Error::HostTaken(host.to_string()))?;
        let current = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(lease.id));
        let host = host.to_string();
        let task_client = client.clone();
        let task_lease = current.clone();
        let task = tokio::spawn(async move {
            let mut client = task_client;
            let mut lease = lease;
            let mut last = (Instant::now(), store.version());
            loop {
                tokio::time::sleep(period).await;
                let (then, version) = last;
                let now = (Instant::now(), store.version());
                let rate = (now.1 - version) as f64 / now.0.duration_since(then).as_secs_f64().max(1e-9);
                last = now;
                let figures = match status(&host, forward.clone(), store, &layout, rate) {
                    Ok(figures) => figures,
                    Err(error) => {
                        tracing::warn!(%error, "could not read the store's figures");
                        continue;
                    }
                };
                if !lease.alive() {
                    // The lease ended (the host was cut off or stopped for
                    // longer than it lasts): claim the name again.
                    match claim(&mut client, &key, ttl_secs, &figures).await {
                        Ok(Some(renewed)) => {
                            tracing::info!(host, "the host's status is published again");
                            task_lease.store(renewed.id, std::sync::atomic::Ordering::Relaxed);
                            lease = renewed;
                        }
                        Ok(None) => tracing::warn!(host, "another host publishes its status under this host's name"),
                        Err(error) => tracing::warn!(%error, "could not publish the host's status"),
                    }
                    continue;
                }
                let value = serde_json::to_vec(&figures).expect("serializable");
                let options = PutOptions::new().with_lease(lease.id);
                if let Err(error) = client.put(key.clone(), value, Some(options)).await {
                    tracing::warn!(%error, "could not publish the host's status");
                }
            }
        });
        Ok(Presence { task, client, lease: current })
    }

    /// Stops publishing and removes the host's entry at once (a host that
    /// leaves in order).
    pub async fn leave(mut self) {
        self.task.abort();
        let lease = self.lease.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = self.client.lease_revoke(lease).await {
            tracing::warn!(%error, "could not remove the host's status; it goes when its lease ends");
        }
    }

    /// Stops publishing and renewing, as a host that died: its entry goes
    /// when the lease ends.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Puts `figures` at `key` on a new lease if no one holds the key; `None`
/// (and no lease left behind) if someone does.
async fn claim(client: &mut Client, key: &str, ttl_secs: i64, figures: &HostStatus) -> Result<Option<Lease>, Error> {
    let lease = Lease::grant(client, ttl_secs).await?;
    // Only if no one holds the name: two hosts under one name would hide
    // each other.
    let claim = etcd_client::Txn::new()
        .when([etcd_client::Compare::version(key, etcd_client::CompareOp::Equal, 0)])
        .and_then([etcd_client::TxnOp::put(
            key,
            serde_json::to_vec(figures).expect("serializable"),
            Some(PutOptions::new().with_lease(lease.id)),
        )]);
    match client.txn(claim).await {
        Ok(reply) if reply.succeeded() => Ok(Some(lease)),
        Ok(_) => {
            let _ = client.lease_revoke(lease.id).await;
            Ok(None)
        }
        Err(e) => {
            let _ = client.lease_revoke(lease.id).await;
            Err(e.into())
        }
    }
}

fn status(
    host: &str,
    forward: Option<String>,
    store: &Store,
    layout: &Layout,
    versions_per_sec: f64,
) -> Result<HostStatus, Error> {
    let stat = store.stat()?;
    let written_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(HostStatus {
        host: host.to_string(),
        applied_revision: revision_of(&store.snapshot(), layout),
        version: stat.version,
        versions_per_sec,
        readers: stat.readers.len(),
        arena_bytes: stat.arena_bytes,
        live_bytes: stat.live_bytes,
        written_ms,
        forward,
    })
}

/// Every host whose entry is in etcd, by name, with its lag behind the
/// newest revision of the cluster's tree.
pub async fn cluster_status(client: &mut Client, layout: &Layout) -> Result<Vec<HostEntry>, Error> {
    // The newest revision that changed the tree: the newest key's, or a
    // delete's, which only the header's revision bounds. The tree's newest
    // key is exact when the last change was a put.
    let tree = client
        .get(
            layout.key_prefix(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(etcd_client::SortTarget::Mod, etcd_client::SortOrder::Descend)
                    .with_limit(1)
                    .with_keys_only(),
            ),
        )
        .await?;
    let newest = tree.kvs().first().map_or(0, |kv| kv.mod_revision());
    let hosts = client.get(layout.host_key(""), Some(GetOptions::new().with_prefix())).await?;
    let mut entries = Vec::new();
    for kv in hosts.kvs() {
        match serde_json::from_slice::<HostStatus>(kv.value()) {
            Ok(status) => {
                let lag = status.applied_revision.map(|applied| (newest - applied).max(0));
                entries.push(HostEntry { status, lag });
            }
            Err(error) => tracing::warn!(key = %String::from_utf8_lossy(kv.key()), %error, "not a host's status"),
        }
    }
    entries.sort_by(|a, b| a.status.host.cmp(&b.status.host));
    Ok(entries)
}
