//! Transactions sent from a host to the cluster's writer, host to host over
//! TCP: each frame is a `u32` length (little-endian), then the message in
//! `postcard`'s encoding. A connection carries one request at a time; a
//! host keeps idle connections to the writer for the next ones.
//!
//! Whoever can connect to a host's forwarding socket can commit to the
//! cluster, as whoever can reach etcd can: both belong on the cluster's own
//! network (ARCHITECTURE.md, trust model).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::writer::Transaction;

/// The largest frame either side reads: several times what one etcd
/// transaction takes (1.5 MiB by default), so a larger frame is a mistake
/// or an attack, refused before its bytes are read.
pub(crate) const FRAME_MAX: u32 = 8 << 20;

/// How long a frame's bytes may take to arrive once its header has.
pub(crate) const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most reads and changes one forwarded transaction may carry: far
/// more than etcd's 128 operations, far less than a frame of tiny entries
/// would decode to.
pub(crate) const ENTRIES_MAX: usize = 65_536;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Commit(Transaction),
    /// A blob's bytes, by its hash.
    Blob {
        hash: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    Committed {
        revision: i64,
    },
    Conflict {
        path: String,
        base: i64,
    },
    Invalid(String),
    TooLarge(String),
    /// This host is not the writer (any more, or yet): nothing was written.
    NotWriter,
    /// The writer could not commit it now, and wrote nothing (etcd did not
    /// answer it in time).
    NotWritten(String),
    /// The writer failed to commit, for a reason it gives.
    Failed(String),
    /// The blob's bytes follow, as they are.
    BlobFollows {
        size: u64,
    },
    NoBlob,
}

/// `message` as one frame.
pub(crate) fn frame<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(message).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(body.len()).ok().filter(|&n| n <= FRAME_MAX).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("a message of {} bytes", body.len()))
    })?;
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

pub(crate) async fn write_frame<T: Serialize>(stream: &mut TcpStream, message: &T) -> std::io::Result<()> {
    stream.write_all(&frame(message)?).await
}

/// Reads one frame; `Ok(None)` if the stream ended before one began.
pub(crate) async fn read_frame<T: for<'a> Deserialize<'a>>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header);
    if len > FRAME_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (the limit is {FRAME_MAX})"),
        ));
    }
    // The buffer grows with the bytes that arrive, not with what the header
    // announces, and they must come in time.
    let mut body = Vec::new();
    let mut frame = (&mut *stream).take(u64::from(len));
    tokio::time::timeout(FRAME_TIMEOUT, frame.read_to_end(&mut body))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if body.len() != len as usize {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    postcard::from_bytes(&body).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Why a request got no reply.
#[derive(Debug)]
pub(crate) enum SendError {
    /// It is larger than a frame takes: never sent.
    TooLarge(std::io::Error),
    /// It never left this host: the writer cannot have acted on it.
    NotSent(std::io::Error),
    /// It was sent, and no reply came: the writer may have committed it.
    NoReply(std::io::Error),
}

/// Connections to the writer, kept between requests.
#[derive(Default)]
pub(crate) struct Forwarder {
    idle: std::sync::Mutex<Vec<(String, TcpStream)>>,
}

impl Forwarder {
    /// Sends `request` to the host at `address` and waits up to `timeout`
    /// for its reply.
    pub(crate) async fn send(&self, address: &str, request: &Request, timeout: Duration) -> Result<Reply, SendError> {
        let framed = frame(request).map_err(SendError::TooLarge)?;
        let mut stream = match self.take_idle(address) {
            Some(stream) => stream,
            None => tokio::time::timeout(timeout, TcpStream::connect(address))
                .await
                .map_err(|_| SendError::NotSent(std::io::ErrorKind::TimedOut.into()))?
                .map_err(SendError::NotSent)?,
        };
        let _ = stream.set_nodelay(true);
        stream.write_all(&framed).await.map_err(SendError::NoReply)?;
        let reply = match tokio::time::timeout(timeout, read_frame::<Reply>(&mut stream)).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => return Err(SendError::NoReply(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(Err(e)) => return Err(SendError::NoReply(e)),
            Err(_) => return Err(SendError::NoReply(std::io::ErrorKind::TimedOut.into())),
        };
        self.idle.lock().unwrap().push((address.to_string(), stream));
        Ok(reply)
    }

    /// An idle connection to `address` that the other side has not closed.
    fn take_idle(&self, address: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(at) = idle.iter().position(|(a, _)| a == address) {
            let (_, stream) = idle.swap_remove(at);
            // Readable with nothing to read: closed (the writer restarted);
            // a request sent there would be lost unseen.
            match stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }

    /// Drops every idle connection (the writer changed).
    pub(crate) fn forget(&self) {
        self.idle.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// A frame of exactly `FRAME_MAX` bytes goes both ways; one byte more is
    /// refused by the writer, and a header announcing it by the reader,
    /// before any of the body is read.
    #[tokio::test]
    async fn frames_at_just_below_and_just_above_the_limit() {
        // postcard writes a byte vector's length in 4 bytes at this size.
        let at = vec![7u8; FRAME_MAX as usize - 4];
        assert_eq!(frame(&at).unwrap().len(), 4 + FRAME_MAX as usize);
        let below = vec![7u8; FRAME_MAX as usize - 5];
        let above = vec![7u8; FRAME_MAX as usize - 3];
        assert!(frame(&above).is_err(), "a frame over the limit is not written");
        for body in [below, at] {
            let (mut client, mut server) = pair().await;
            let sent = body.clone();
            let writer = tokio::spawn(async move { write_frame(&mut client, &sent).await.unwrap() });
            assert_eq!(read_frame::<Vec<u8>>(&mut server).await.unwrap(), Some(body));
            writer.await.unwrap();
        }
        let (mut client, mut server) = pair().await;
        client.write_all(&(FRAME_MAX + 1).to_le_bytes()).await.unwrap();
        let refused = read_frame::<Vec<u8>>(&mut server).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData);
    }

    /// A frame whose bytes stop coming is given up after `FRAME_TIMEOUT`.
    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stops_halfway_times_out() {
        let (mut client, mut server) = pair().await;
        client.write_all(&100u32.to_le_bytes()).await.unwrap();
        client.write_all(&[0; 10]).await.unwrap();
        let read = read_frame::<Vec<u8>>(&mut server).await.unwrap_err();
        assert_eq!(read.kind(), std::io::ErrorKind::TimedOut);
    }
}
