//! Starting a shoald process for a test, and a raw xenstore-protocol client.
#![allow(dead_code)]

pub mod asyncclient;
pub mod cluster;
pub mod guests;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoald::wire::{Header, Message, MsgType, HEADER_LEN};

/// A shoald process serving a store in a temporary directory; stopped
/// (SIGTERM, then waited for) when dropped.
pub struct Shoald {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub socket_ro: PathBuf,
    child: Option<Child>,
}

impl Shoald {
    pub fn start() -> Shoald {
        Shoald::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Shoald {
        let dir = tempfile::tempdir().unwrap();
        Shoald::start_in(dir, extra)
    }

    /// Starts shoald on the store in `dir` (reusing it, after a restart).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Shoald {
        let socket = dir.path().join("socket");
        let socket_ro = dir.path().join("socket_ro");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoald"))
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--xenstore-socket")
            .arg(&socket)
            .arg("--xenstore-socket-ro")
            .arg(&socket_ro)
            .args(extra)
            .env("SHOALD_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start shoald");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("shoald ready: "), "shoald did not start: {line:?}");
        Shoald { dir, socket, socket_ro, child: Some(child) }
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Stops shoald with `signal` and returns its directory for a restart.
    pub fn stop(mut self, signal: i32) -> tempfile::TempDir {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), signal);
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

fn send_signal(pid: u32, signal: i32) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

impl Drop for Shoald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), 15);
            let _ = child.wait();
        }
    }
}

/// A raw protocol client: one request at a time, replies matched by order.
pub struct Client {
    pub stream: UnixStream,
    next_req: u32,
    /// Watch events that arrived while waiting for a reply.
    pub events: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A reply: its header and payload.
#[derive(Debug)]
pub struct Reply {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Reply {
    /// The payload as text, without the final NUL.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.payload.strip_suffix(&[0]).unwrap_or(&self.payload)).into_owned()
    }

    pub fn is_error(&self) -> bool {
        self.header.kind == MsgType::Error as u32
    }

    /// `Ok(payload)`, or `Err(error name)`.
    pub fn result(&self) -> Result<Vec<u8>, String> {
        if self.is_error() {
            Err(self.text())
        } else {
            Ok(self.payload.clone())
        }
    }
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).expect("connect to shoald");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { stream, next_req: 1, events: Vec::new() }
    }

    /// A connection, if shoald takes one (it may be down, in fault tests).
    pub fn try_connect(socket: &Path) -> Option<Client> {
        let stream = UnixStream::connect(socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Some(Client { stream, next_req: 1, events: Vec::new() })
    }

    pub fn send(&mut self, kind: u32, tx_id: u32, payload: &[u8]) -> u32 {
        let req_id = self.next_req;
        self.next_req += 1;
        let message = Message { kind, req_id, tx_id, payload: payload.to_vec() };
        self.stream.write_all(&message.to_bytes()).unwrap();
        req_id
    }

    /// Sends a request and reads its reply; `None` if the connection
    /// failed either way (the daemon died), for tests that kill it.
    pub fn try_request(&mut self, kind: MsgType, tx_id: u32, payload: &[u8]) -> Option<Reply> {
        let req_id = self.next_req;
        self.next_req += 1;
        let message = Message { kind: kind as u32, req_id, tx_id, payload: payload.to_vec() };
        self.stream.write_all(&message.to_bytes()).ok()?;
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head).ok()?;
        let header = Header::decode(&head);
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload).ok()?;
        assert_eq!(header.req_id, req_id, "reply to another request");
        Some(Reply { header, payload })
    }

    /// Reads one message (a reply or a watch event); `None` at end of stream.
    pub fn receive(&mut self) -> Option<Reply> {
        let mut head = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
        let header = Header::decode(&head);
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload).unwrap();
        Some(Reply { header, payload })
    }

    /// Sends a request and returns its reply, keeping watch events aside.
    pub fn request(&mut self, kind: MsgType, tx_id: u32, payload: &[u8]) -> Reply {
        self.request_raw(kind as u32, tx_id, payload)
    }

    pub fn request_raw(&mut self, kind: u32, tx_id: u32, payload: &[u8]) -> Reply {
        let req_id = self.send(kind, tx_id, payload);
        loop {
            let reply = self.receive().expect("shoald closed the connection");
            if reply.header.kind == MsgType::WatchEvent as u32 {
                let mut parts = reply.payload.split(|&b| b == 0);
                let path = parts.next().unwrap_or_default().to_vec();
                let token = parts.next().unwrap_or_default().to_vec();
                self.events.push((path, token));
                continue;
            }
            assert_eq!(reply.header.req_id, req_id, "reply to another request");
            assert_eq!(reply.header.tx_id, tx_id, "reply with another transaction id");
            if !reply.is_error() {
                assert_eq!(reply.header.kind, kind, "reply of another type");
            }
            return reply;
        }
    }

    /// The next watch event (one that arrived during a request first), as
    /// (path, token); `None` if none comes within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<(String, String)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if !self.events.is_empty() {
            let (path, token) = self.events.remove(0);
            return Some((text(&path), text(&token)));
        }
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut head = [0u8; HEADER_LEN];
        let got = self.stream.read_exact(&mut head);
        self.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        match got {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(e) => panic!("reading an event: {e}"),
        }
        let header = Header::decode(&head);
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload).unwrap();
        assert_eq!(header.kind, MsgType::WatchEvent as u32, "expected a watch event, got {header:?}");
        assert_eq!((header.req_id, header.tx_id), (0, 0));
        let mut parts = payload.split(|&b| b == 0);
        let path = parts.next().unwrap_or_default();
        let token = parts.next().unwrap_or_default();
        Some((text(path), text(token)))
    }

    /// Every event that arrives until none has for `quiet`.
    pub fn events_until_quiet(&mut self, quiet: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(event) = self.next_event(quiet) {
            out.push(event);
        }
        out
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(&nul(token));
        self.request(MsgType::Watch, 0, &payload).result().map(|_| ())
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(&nul(token));
        self.request(MsgType::Unwatch, 0, &payload).result().map(|_| ())
    }

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        self.request(MsgType::Read, 0, &nul(path)).result()
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), String> {
        self.write_tx(0, path, value)
    }

    pub fn write_tx(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend_from_slice(value);
        self.request(MsgType::Write, tx, &payload).result().map(|_| ())
    }

    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
        let payload = self.request(MsgType::Directory, 0, &nul(path)).result()?;
        Ok(names(&payload))
    }

    pub fn rm(&mut self, path: &str) -> Result<(), String> {
        self.request(MsgType::Rm, 0, &nul(path)).result().map(|_| ())
    }

    pub fn start_transaction(&mut self) -> u32 {
        let reply = self.request(MsgType::TransactionStart, 0, b"\0");
        reply.text().parse().unwrap_or_else(|_| panic!("TRANSACTION_START: {:?}", reply.text()))
    }

    pub fn end_transaction(&mut self, tx: u32, commit: bool) -> Result<(), String> {
        let payload: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(MsgType::TransactionEnd, tx, payload).result().map(|_| ())
    }
}

/// The `shoal` binary, built beside shoald (by `cargo test --workspace`,
/// or here, with the cargo that builds this test, if it is not there yet).
pub fn shoal_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_shoald")).with_file_name("shoal");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "shoal-cli", "--bin", "shoal"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the shoal CLI");
    }
    path
}

/// `text` with a terminating NUL.
pub fn nul(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

/// The NUL-terminated names of a `DIRECTORY` reply.
pub fn names(payload: &[u8]) -> Vec<String> {
    payload.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect()
}
