//! A xenstore client over any byte stream (a guest's ring from the
//! simulated hypervisor, or a unix socket), one request at a time: what the
//! simulator's guests and dom0 speak, and the tests' raw-protocol client.

use std::time::Duration;

use crate::wire::{Header, Message, MsgType, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct AsyncClient<R, W> {
    input: R,
    output: W,
    next_req: u32,
    /// Watch events that arrived while waiting for a reply: (path, token).
    pub events: Vec<(String, String)>,
}

pub type SocketClient = AsyncClient<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>;

pub async fn connect(socket: &std::path::Path) -> std::io::Result<SocketClient> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (input, output) = stream.into_split();
    Ok(AsyncClient::new(input, output))
}

fn nul(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncClient<R, W> {
    pub fn new(input: R, output: W) -> Self {
        AsyncClient { input, output, next_req: 1, events: Vec::new() }
    }

    /// The stream's two halves, for a test that drives them apart.
    pub fn into_parts(self) -> (R, W) {
        (self.input, self.output)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.output.write_all(bytes).await.expect("the daemon takes the bytes");
    }

    /// Reads one message; `None` if the stream ended or failed.
    pub async fn receive(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut head = [0u8; HEADER_LEN];
        self.input.read_exact(&mut head).await.ok()?;
        let header = Header::decode(&head);
        let mut payload = vec![0u8; header.len as usize];
        self.input.read_exact(&mut payload).await.ok()?;
        Some((header, payload))
    }

    /// Sends a request; returns `Ok(payload)` or `Err(error name)`.
    ///
    /// # Panics
    /// If no reply comes within 20 s, the stream ends, or the reply does
    /// not answer this request: the client is for tests and simulations,
    /// where each of those is a failure to report.
    pub async fn call(&mut self, kind: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let message = Message { kind: kind as u32, req_id, tx_id, payload: payload.to_vec() };
        self.output.write_all(&message.to_bytes()).await.expect("the daemon takes the request");
        loop {
            let (header, payload) =
                tokio::time::timeout(Duration::from_secs(20), self.receive()).await.expect("a reply").expect("a reply");
            if header.kind == MsgType::WatchEvent as u32 {
                self.events.push(split_event(&payload));
                continue;
            }
            assert_eq!(header.req_id, req_id, "a reply to another request");
            let text = || String::from_utf8_lossy(payload.strip_suffix(&[0]).unwrap_or(&payload)).into_owned();
            return if header.kind == MsgType::Error as u32 { Err(text()) } else { Ok(payload) };
        }
    }

    pub async fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        self.call(MsgType::Read, 0, &nul(path)).await
    }

    pub async fn write(&mut self, path: &str, value: &[u8]) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(value);
        self.call(MsgType::Write, 0, &payload).await.map(|_| ())
    }

    pub async fn mkdir(&mut self, path: &str) -> Result<(), String> {
        self.call(MsgType::Mkdir, 0, &nul(path)).await.map(|_| ())
    }

    pub async fn rm(&mut self, path: &str) -> Result<(), String> {
        self.call(MsgType::Rm, 0, &nul(path)).await.map(|_| ())
    }

    pub async fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
        let payload = self.call(MsgType::Directory, 0, &nul(path)).await?;
        Ok(names(&payload))
    }

    pub async fn set_perms(&mut self, path: &str, perms: &[&str]) -> Result<(), String> {
        let mut payload = nul(path);
        for p in perms {
            payload.extend_from_slice(&nul(p));
        }
        self.call(MsgType::SetPerms, 0, &payload).await.map(|_| ())
    }

    pub async fn get_perms(&mut self, path: &str) -> Result<Vec<String>, String> {
        let payload = self.call(MsgType::GetPerms, 0, &nul(path)).await?;
        Ok(names(&payload))
    }

    pub async fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(&nul(token));
        self.call(MsgType::Watch, 0, &payload).await.map(|_| ())
    }

    pub async fn introduce(&mut self, domid: u32, gfn: usize, port: u32) -> Result<(), String> {
        let text = format!("{domid}\0{gfn}\0{port}\0");
        self.call(MsgType::Introduce, 0, text.as_bytes()).await.map(|_| ())
    }

    pub async fn release(&mut self, domid: u32) -> Result<(), String> {
        self.call(MsgType::Release, 0, &nul(&domid.to_string())).await.map(|_| ())
    }

    pub async fn start_transaction(&mut self) -> Result<u32, String> {
        let id = self.call(MsgType::TransactionStart, 0, b"\0").await?;
        String::from_utf8_lossy(id.strip_suffix(&[0]).unwrap_or(&id)).parse().map_err(|_| "EINVAL".to_string())
    }

    pub async fn unwatch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(&nul(token));
        self.call(MsgType::Unwatch, 0, &payload).await.map(|_| ())
    }

    pub async fn write_tx(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(value);
        self.call(MsgType::Write, tx, &payload).await.map(|_| ())
    }

    pub async fn end_transaction(&mut self, tx: u32, commit: bool) -> Result<(), String> {
        self.call(MsgType::TransactionEnd, tx, if commit { b"T\0" } else { b"F\0" }).await.map(|_| ())
    }

    /// A request whose reply is text (`CONTROL`, `GET_QUOTA`, ...).
    pub async fn text(&mut self, kind: MsgType, fields: &[&str]) -> Result<String, String> {
        let mut payload = Vec::new();
        for f in fields {
            payload.extend_from_slice(&nul(f));
        }
        let reply = self.call(kind, 0, &payload).await?;
        Ok(String::from_utf8_lossy(reply.strip_suffix(&[0]).unwrap_or(&reply)).into_owned())
    }

    /// The next watch event within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<(String, String)> {
        if !self.events.is_empty() {
            return Some(self.events.remove(0));
        }
        let (header, payload) = tokio::time::timeout(timeout, self.receive()).await.ok()??;
        assert_eq!(header.kind, MsgType::WatchEvent as u32, "expected an event: {header:?}");
        Some(split_event(&payload))
    }

    /// Every event until none comes for `quiet`.
    pub async fn events_until_quiet(&mut self, quiet: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event(quiet).await {
            out.push(e);
        }
        out
    }
}

/// The NUL-terminated names of a reply (`DIRECTORY`, `GET_PERMS`).
fn names(payload: &[u8]) -> Vec<String> {
    payload.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect()
}

fn split_event(payload: &[u8]) -> (String, String) {
    let mut parts = payload.split(|&b| b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    (path, token)
}

/// A blocking client on a unix socket, for tools and benchmarks without an
/// async runtime. Replies that are errors come back as `Err(name)`; a
/// broken connection as `Err("EIO: ...")`.
pub struct SyncClient {
    stream: std::os::unix::net::UnixStream,
    next_req: u32,
    /// Watch events that arrived while waiting for a reply: (path, token).
    pub events: std::collections::VecDeque<(String, String)>,
}

impl SyncClient {
    pub fn connect(socket: &std::path::Path) -> std::io::Result<SyncClient> {
        let stream = std::os::unix::net::UnixStream::connect(socket)?;
        Ok(SyncClient { stream, next_req: 1, events: Default::default() })
    }

    fn receive(&mut self) -> std::io::Result<(Header, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head)?;
        let header = Header::decode(&head);
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload)?;
        Ok((header, payload))
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, kind: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        use std::io::Write;
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let message = Message { kind: kind as u32, req_id, tx_id, payload: payload.to_vec() };
        self.stream.write_all(&message.to_bytes()).map_err(|e| format!("EIO: {e}"))?;
        loop {
            let (header, payload) = self.receive().map_err(|e| format!("EIO: {e}"))?;
            if header.kind == MsgType::WatchEvent as u32 {
                self.events.push_back(split_event(&payload));
                continue;
            }
            if header.req_id != req_id {
                return Err(format!("EIO: a reply to request {} while waiting for {req_id}", header.req_id));
            }
            if header.kind == MsgType::Error as u32 {
                return Err(String::from_utf8_lossy(payload.strip_suffix(&[0]).unwrap_or(&payload)).into_owned());
            }
            return Ok(payload);
        }
    }

    /// The next watch event (waiting for it if none is buffered).
    pub fn next_event(&mut self) -> Result<(String, String), String> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        loop {
            let (header, payload) = self.receive().map_err(|e| format!("EIO: {e}"))?;
            if header.kind == MsgType::WatchEvent as u32 {
                return Ok(split_event(&payload));
            }
        }
    }

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        self.call(MsgType::Read, 0, &nul(path))
    }

    pub fn write(&mut self, tx_id: u32, path: &str, value: &[u8]) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(value);
        self.call(MsgType::Write, tx_id, &payload).map(|_| ())
    }

    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
        let payload = self.call(MsgType::Directory, 0, &nul(path))?;
        Ok(names(&payload))
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(&nul(token));
        self.call(MsgType::Watch, 0, &payload).map(|_| ())
    }

    pub fn start_transaction(&mut self) -> Result<u32, String> {
        let id = self.call(MsgType::TransactionStart, 0, b"\0")?;
        String::from_utf8_lossy(id.strip_suffix(&[0]).unwrap_or(&id)).parse().map_err(|_| "EINVAL".to_string())
    }

    pub fn end_transaction(&mut self, tx_id: u32, commit: bool) -> Result<(), String> {
        self.call(MsgType::TransactionEnd, tx_id, if commit { b"T\0" } else { b"F\0" }).map(|_| ())
    }
}
