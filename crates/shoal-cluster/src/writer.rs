//! The cluster's one writer: elected through etcd's election service on a
//! lease, and fenced. Every commit it makes is one etcd transaction that
//! applies only while its election key still exists, so a writer whose
//! lease ended (killed, paused, cut off) writes nothing once another host
//! may have been elected: its transaction fails, and it learns it was
//! deposed.
//!
//! Why the fence is enough: etcd's election makes the candidate whose key
//! has the lowest creation revision the leader, and a key lives as long as
//! its lease. While the writer's key exists, every other candidate's key was
//! created after it, so no other host is the leader; the compare and the
//! writes are one etcd transaction, so there is no moment between them.

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, LeaderKey, Txn, TxnOp};
use tokio::task::JoinHandle;

use crate::layout::Layout;
use crate::Error;

/// One change to the tree, as the writer sends it to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Sets a node's value (the cluster's writer also puts every node it
    /// creates on the way, so that each node is a key).
    Put { path: String, value: Vec<u8> },
    /// Removes a node and everything below it.
    DeleteTree { path: String },
}

/// This host, elected as the cluster's writer.
pub struct Writer {
    client: Client,
    layout: Layout,
    leader: LeaderKey,
    keepalive: JoinHandle<()>,
}

impl Writer {
    /// Campaigns for the cluster's writer under `layout`'s election, as
    /// `host`, on a lease of `ttl_secs` that this process keeps alive; waits
    /// until elected. When the process dies or stops renewing, the lease
    /// ends after `ttl_secs` and the next candidate is elected.
    pub async fn elect(mut client: Client, layout: Layout, host: &str, ttl_secs: i64) -> Result<Writer, Error> {
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let period = std::time::Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3);
        let keepalive = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match replies.message().await {
                    Ok(Some(reply)) if reply.ttl() > 0 => {}
                    // The lease is gone: the fence fails from now on.
                    _ => break,
                }
                tokio::time::sleep(period).await;
            }
            tracing::warn!(lease, "the writer's lease is no longer renewed");
        });
        let mut elected = client.campaign(layout.election_name(), host, lease).await?;
        let leader = elected.take_leader().ok_or(Error::Election("etcd elected no key"))?;
        tracing::info!(host, revision = leader.rev(), "elected the cluster's writer");
        Ok(Writer { client, layout, leader, keepalive })
    }

    /// The revision at which this writer was elected (its fencing token).
    pub fn elected_at(&self) -> i64 {
        self.leader.rev()
    }

    /// Commits `changes` as one etcd revision; returns it. `Error::Deposed`
    /// if this host is no longer the writer, and then nothing was written.
    pub async fn commit(&mut self, changes: &[Change]) -> Result<i64, Error> {
        let mut ops = Vec::with_capacity(changes.len() * 2);
        for change in changes {
            match change {
                Change::Put { path, value } => ops.push(TxnOp::put(self.layout.key(path), value.clone(), None)),
                Change::DeleteTree { path } => {
                    ops.push(TxnOp::delete(self.layout.key(path), None));
                    let below = format!("{}/", self.layout.key(path));
                    ops.push(TxnOp::delete(below, Some(DeleteOptions::new().with_prefix())));
                }
            }
        }
        let fence = Compare::create_revision(self.leader.key().to_vec(), CompareOp::Equal, self.leader.rev());
        let reply = self.client.txn(Txn::new().when([fence]).and_then(ops)).await?;
        if !reply.succeeded() {
            return Err(Error::Deposed);
        }
        Ok(reply.header().map_or(0, |h| h.revision()))
    }

    /// Gives the role up at once (the next candidate need not wait for the
    /// lease to end).
    pub async fn resign(mut self) -> Result<(), Error> {
        let options = etcd_client::ResignOptions::new().with_leader(self.leader.clone());
        self.client.resign(Some(options)).await?;
        self.keepalive.abort();
        Ok(())
    }

    /// Stops renewing the lease without resigning, as a process that hung
    /// would: the lease ends after its time to live, and with it this
    /// writer's right to commit.
    pub fn stop_renewing(&self) {
        self.keepalive.abort();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// The host that is the cluster's writer now, if any.
pub async fn current_writer(client: &mut Client, layout: &Layout) -> Result<Option<String>, Error> {
    match client.leader(layout.election_name()).await {
        Ok(reply) => Ok(reply.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("no leader") => Ok(None),
        Err(e) => Err(e.into()),
    }
}
