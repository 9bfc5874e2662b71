//! shoal's cluster mode: etcd orders the writes, and every host keeps a
//! replica of the tree in its own store, which its processes read in place
//! as on one host.
//!
//! This crate holds the parts that talk to etcd, on shoal's public API:
//! the [`Layout`] of the tree in etcd's keys, the [`Replica`] that applies
//! etcd's revisions to a local store in etcd's order, and the [`Writer`],
//! the one host elected to commit, whose commits are fenced by its
//! election.

mod blob;
mod forward;
mod host;
mod layout;
mod lease;
mod presence;
mod replica;
mod writer;

pub use blob::{BlobRef, Holder};
pub use host::{check_host_name, Host, HostOptions, HOST_NAME_MAX};
pub use layout::{Layout, DEFAULT_LOCAL_ROOT};
pub use presence::{cluster_status, HostEntry, HostStatus, Presence};
pub use replica::{revision_of, wait_for_revision, Replica};
pub use writer::{current_writer, writer_candidate, Candidate, Change, Read, Transaction, Writer};

/// A client of the etcd cluster at `endpoints` (client URLs) as the
/// cluster mode needs it: HTTP/2 keepalives, so that a member that hangs or
/// is cut off is noticed within seconds and the client moves on to another
/// (a watch on it would otherwise wait forever), and requests refused by a
/// member that has lost its leader.
pub async fn connect(endpoints: &[String]) -> Result<etcd_client::Client, Error> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_keep_alive(std::time::Duration::from_secs(1), std::time::Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    Ok(etcd_client::Client::connect(endpoints, Some(options)).await?)
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the local store: {0}")]
    Store(#[from] shoal::Error),
    #[error("{0}")]
    Invalid(String),
    /// A value or a commit over the cluster's limits.
    #[error("{0}")]
    TooLarge(String),
    #[error("the replica has applied etcd's revisions up to {synced}, not yet {target}")]
    Behind { target: i64, synced: i64 },
    #[error("{path} changed since revision {base}, which the transaction read")]
    Conflict { path: String, base: i64 },
    #[error("election: {0}")]
    Election(&'static str),
    #[error("another live process already publishes its status as host {0:?}")]
    HostTaken(String),
    #[error("this host is no longer the cluster's writer (its lease ended): nothing was written")]
    Deposed,
    #[error("no writer took the commit in time ({0}): nothing was written")]
    Unavailable(String),
    #[error("the commit's outcome is unknown ({0}): it may or may not have been committed")]
    Indeterminate(String),
    #[error("blob {hash} is unavailable: no host that holds it gave it ({why})")]
    BlobUnavailable { hash: String, why: String },
}
