//! Writing to a shoal store through the process that owns its writer.
//!
//! A store has one writer. While `shoald` owns it, other processes still
//! read the store in place, but cannot open it for writing; they send their
//! writes to shoald instead, over a unix socket in the store's directory
//! ([`socket_path`]), and shoald applies each request as one transaction
//! (or one bulk load) and answers with the version it committed.
//!
//! The protocol is one request, one reply, each a frame: a little-endian
//! `u64` length, then the message in `postcard`'s encoding. No async, no
//! networking beyond the local socket: the `shoal` CLI uses [`Client`]; the
//! daemon uses [`read_frame`]/[`write_frame`] and the message types.
//!
//! The socket is created with mode 0600: only the user that owns the store
//! (who could open it as writer anyway) may write through it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The socket's name inside the store's directory.
pub const SOCKET_NAME: &str = "shoald.sock";

/// The largest frame either side accepts: a bulk load of the CLI's largest
/// batch (2 GiB of paths and values) with room for its framing.
pub const MAX_FRAME: u64 = 3 << 30;

/// Where the daemon that owns the store in `store_dir` listens.
pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join(SOCKET_NAME)
}

/// One change in a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        path: String,
        value: Vec<u8>,
    },
    /// Fails with [`FailureKind::HasChildren`] if the node has children.
    Delete {
        path: String,
    },
    DeleteTree {
        path: String,
    },
    Copy {
        src: String,
        dst: String,
    },
    CopyTree {
        src: String,
        dst: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// These changes in one transaction. A delete of a node that does not
    /// exist fails the request ([`FailureKind::NoSuchPath`]) and nothing is
    /// committed.
    Apply(Vec<Op>),
    /// `Store::bulk_load` of these entries.
    BulkLoad(Vec<(String, Vec<u8>)>),
    /// One step of a work queue ([`shoal::queue`]), in one transaction;
    /// answered with [`Reply::Queue`].
    Queue(QueueOp),
}

/// A step of a work queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOp {
    Push {
        queue: String,
        payload: Vec<u8>,
    },
    /// Claims an item for `lease_ms` milliseconds from the applier's clock.
    Claim {
        queue: String,
        owner: String,
        lease_ms: u64,
    },
    Done {
        queue: String,
        item: u64,
        owner: String,
    },
}

/// What a queue step did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOutcome {
    Pushed {
        item: u64,
    },
    /// The item claimed and its payload; `None` if none was free.
    Claimed(Option<(u64, Vec<u8>)>),
    /// Whether the item was removed (`false`: gone, or held by another).
    Done(bool),
}

/// Why a request was not committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    NoSuchPath,
    HasChildren,
    /// A path, value or request the store refuses.
    Invalid,
    /// Anything else (the store's own error, in the message).
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Committed { version: u64 },
    Failed { kind: FailureKind, message: String },
    Queue { version: u64, outcome: QueueOutcome },
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(out: &mut W, message: &T) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(message).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut framed = Vec::with_capacity(8 + bytes.len());
    framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    framed.extend_from_slice(&bytes);
    out.write_all(&framed)
}

/// The length a frame header announces, checked against [`MAX_FRAME`].
pub fn frame_len(header: [u8; 8]) -> std::io::Result<usize> {
    let len = u64::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (the limit is {MAX_FRAME})"),
        ));
    }
    Ok(len as usize)
}

/// Decodes a frame's body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::io::Result<T> {
    postcard::from_bytes(body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads one frame.
pub fn read_frame<R: Read, T: for<'a> Deserialize<'a>>(input: &mut R) -> std::io::Result<T> {
    let mut header = [0u8; 8];
    input.read_exact(&mut header)?;
    let mut body = vec![0u8; frame_len(header)?];
    input.read_exact(&mut body)?;
    decode(&body)
}

/// Applies `request` to `store`: what the daemon does with a request, and
/// what the CLI does itself when no daemon holds the store. `Apply` is
/// retried (up to 64 times) when a concurrent transaction conflicts with
/// it: its changes do not depend on what they read.
pub fn apply(store: &shoal::Store, request: &Request) -> shoal::Result<u64> {
    apply_with(store, request, |_, _| Ok(()))
}

/// [`apply`], running `before(txn, op)` in the transaction before each
/// change: what a daemon keeps beside the tree (shoald: the permission
/// records of xenstore nodes) follows the change in the same version.
pub fn apply_with(
    store: &shoal::Store,
    request: &Request,
    before: impl Fn(&mut shoal::Transaction<'_>, &Op) -> shoal::Result<()>,
) -> shoal::Result<u64> {
    use shoal::Error;
    let ops = match request {
        Request::BulkLoad(items) => return store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))),
        Request::Apply(ops) => ops,
        Request::Queue(op) => return apply_queue(store, op).map(|(version, _)| version),
    };
    for _ in 0..64 {
        let mut txn = store.begin();
        apply_ops(&mut txn, ops, &before)?;
        match txn.commit() {
            Err(Error::Conflict { .. }) => continue,
            other => return other,
        }
    }
    Err(Error::Conflict { path: "/".into() })
}

/// Makes `ops`' changes in `txn`, running `before(txn, op)` ahead of each.
pub fn apply_ops(
    txn: &mut shoal::Transaction<'_>,
    ops: &[Op],
    before: impl Fn(&mut shoal::Transaction<'_>, &Op) -> shoal::Result<()>,
) -> shoal::Result<()> {
    use shoal::Error;
    for op in ops {
        before(txn, op)?;
        match op {
            Op::Put { path, value } => txn.put(path, value)?,
            Op::Delete { path } => {
                if !txn.delete(path)? {
                    return Err(Error::NoSuchPath { path: path.clone() });
                }
            }
            Op::DeleteTree { path } => {
                if !txn.delete_tree(path)? {
                    return Err(Error::NoSuchPath { path: path.clone() });
                }
            }
            Op::Copy { src, dst } => txn.copy(src, dst)?,
            Op::CopyTree { src, dst } => txn.copy_tree(src, dst)?,
        }
    }
    Ok(())
}

/// Makes queue step `op` in `txn`; returns what it does once committed.
pub fn queue_step(txn: &mut shoal::Transaction<'_>, op: &QueueOp) -> shoal::Result<QueueOutcome> {
    use shoal::queue;
    Ok(match op {
        QueueOp::Push { queue: name, payload } => QueueOutcome::Pushed { item: queue::push(txn, name, payload)? },
        QueueOp::Claim { queue: name, owner, lease_ms } => {
            let lease = std::time::Duration::from_millis(*lease_ms);
            let claimed = queue::claim(txn, name, owner, std::time::SystemTime::now(), lease)?;
            QueueOutcome::Claimed(claimed.map(|c| (c.item, c.payload)))
        }
        QueueOp::Done { queue: name, item, owner } => QueueOutcome::Done(queue::done(txn, name, *item, owner)?),
    })
}

/// Runs a queue step in a transaction (again after a conflict); returns
/// the version and what the step did.
pub fn apply_queue(store: &shoal::Store, op: &QueueOp) -> shoal::Result<(u64, QueueOutcome)> {
    for _ in 0..64 {
        let mut txn = store.begin();
        let outcome = queue_step(&mut txn, op)?;
        match txn.commit() {
            Err(shoal::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
            Ok(version) => return Ok((version, outcome)),
        }
    }
    Err(shoal::Error::Conflict { path: "/queues".into() })
}

/// The reply for a store error.
pub fn failure(error: &shoal::Error) -> Reply {
    use shoal::Error;
    let kind = match error {
        Error::NoSuchPath { .. } => FailureKind::NoSuchPath,
        Error::HasChildren { .. } => FailureKind::HasChildren,
        Error::InvalidPath { .. }
        | Error::ValueTooLarge { .. }
        | Error::RootImmutable
        | Error::CopySourceWritten { .. }
        | Error::CopyTooDeep { .. }
        | Error::TransactionTooLarge { .. } => FailureKind::Invalid,
        _ => FailureKind::Other,
    };
    Reply::Failed { kind, message: error.to_string() }
}

/// A connection to the daemon that owns a store's writer.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the daemon of the store in `store_dir`; `None` if no
    /// daemon listens there (no socket, or a stale one).
    pub fn connect(store_dir: &Path) -> Option<Client> {
        UnixStream::connect(socket_path(store_dir)).ok().map(|stream| Client { stream })
    }

    /// Gives up on a request after `timeout` (the error is then
    /// `TimedOut` or `WouldBlock`; the daemon may still apply it).
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, request: &Request) -> std::io::Result<Reply> {
        write_frame(&mut self.stream, request)?;
        read_frame(&mut self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_back_to_back() {
        let request = Request::Apply(vec![
            Op::Put { path: "/a".into(), value: vec![0, 1, 255] },
            Op::DeleteTree { path: "/b".into() },
            Op::CopyTree { src: "/c".into(), dst: "/d".into() },
        ]);
        let reply = Reply::Failed { kind: FailureKind::HasChildren, message: "x".into() };
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &request).unwrap();
        write_frame(&mut bytes, &reply).unwrap();
        let mut input = &bytes[..];
        assert_eq!(read_frame::<_, Request>(&mut input).unwrap(), request);
        assert_eq!(read_frame::<_, Reply>(&mut input).unwrap(), reply);
        assert!(input.is_empty());
    }

    #[test]
    fn a_lying_length_or_garbage_is_an_error_not_an_allocation() {
        let mut bytes = (MAX_FRAME + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"junk");
        let err = read_frame::<_, Request>(&mut &bytes[..]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut garbage = 5u64.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 5]);
        assert_eq!(read_frame::<_, Request>(&mut &garbage[..]).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        // A frame cut short.
        let mut cut = Vec::new();
        write_frame(&mut cut, &Request::BulkLoad(vec![("/x".into(), vec![1; 100])])).unwrap();
        cut.truncate(50);
        assert_eq!(read_frame::<_, Request>(&mut &cut[..]).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
