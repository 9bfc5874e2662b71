//! `shoal cluster status`: the hosts of a cluster, as they report
//! themselves in etcd; `shoal cluster wait`: wait until this host's
//! replica has applied a revision.

use std::time::{SystemTime, UNIX_EPOCH};

use shoal_cluster::{cluster_status, Layout};

use crate::{say, CliResult, Failure};

pub fn status(endpoints: &[String], prefix: &str) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("starting the etcd client: {e}")))?;
    let layout = Layout::new(prefix);
    let hosts = runtime
        .block_on(async {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(5))
                .with_timeout(std::time::Duration::from_secs(5));
            let mut client = etcd_client::Client::connect(endpoints, Some(options)).await?;
            cluster_status(&mut client, &layout).await.map_err(|e| match e {
                shoal_cluster::Error::Etcd(e) => e,
                other => etcd_client::Error::InvalidArgs(other.to_string()),
            })
        })
        .map_err(|e| Failure::Message(format!("etcd at {}: {e}", endpoints.join(","))))?;
    if hosts.is_empty() {
        say!("no host reports under {prefix}");
        return Ok(());
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    say!(
        "{:<20} {:>10} {:>6} {:>10} {:>10} {:>7} {:>12} {:>12} {:>8}",
        "HOST",
        "APPLIED",
        "LAG",
        "VERSION",
        "VERSIONS/S",
        "READERS",
        "ARENA",
        "LIVE",
        "AGE"
    );
    for entry in hosts {
        let s = &entry.status;
        let or_dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let age = now_ms.saturating_sub(s.written_ms) as f64 / 1000.0;
        say!(
            "{:<20} {:>10} {:>6} {:>10} {:>10.1} {:>7} {:>12} {:>12} {:>7.1}s",
            s.host,
            or_dash(s.applied_revision),
            or_dash(entry.lag),
            s.version,
            s.versions_per_sec,
            s.readers,
            s.arena_bytes,
            s.live_bytes,
            age
        );
    }
    Ok(())
}

/// Waits until the replica in `store` holds etcd revision `revision` or a
/// later one; prints the revision it holds.
pub fn wait(store: &std::path::Path, revision: i64, timeout: std::time::Duration) -> CliResult {
    let reader = shoal::Reader::open(store)?;
    // Only the local root matters for reading the revision.
    let layout = Layout::new("");
    match shoal_cluster::wait_for_revision(&reader, &layout, revision, timeout) {
        Ok(snapshot) => {
            let held = shoal_cluster::revision_of(&snapshot, &layout).unwrap_or(0);
            say!("{held}");
            Ok(())
        }
        Err(shoal_cluster::Error::Behind { synced: 0, .. }) => Err(Failure::Message(format!(
            "{} holds no cluster revision after {timeout:?}: it is not a cluster's replica, or has not loaded yet",
            store.display()
        ))),
        Err(shoal_cluster::Error::Behind { target, synced }) => Err(Failure::Message(format!(
            "{} has applied etcd revision {synced}, not yet {target}, after {timeout:?}",
            store.display()
        ))),
        Err(e) => Err(Failure::Message(format!("{}: {e}", store.display()))),
    }
}
