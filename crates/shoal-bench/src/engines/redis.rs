//! Redis: a `redis-server` started by the harness on a temporary unix socket
//! (no TCP port, persistence off), driven with the `redis` crate's sync API.
//!
//! Durability "on" uses a second server instance with `appendonly yes` and
//! `appendfsync always`, loaded from the first one's RDB file: the closest
//! Redis has to a commit that returns after it is on disk.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Connection;

use super::{Committer, Durability, Engine, MemoryOwner, ReadSession, Reopen};
use crate::dataset::{Dataset, Spec, SEQ_KEY};
use crate::Result;

/// Keys per pipeline in loads and full reads.
const PIPELINE: usize = 1000;

pub const NOT_INSTALLED: &str = "not installed (apt-get install redis-server)";

/// Why Redis cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("redis-server --version failed ({s})")),
        Err(e) if e.kind() == ErrorKind::NotFound => Some(NOT_INSTALLED.to_string()),
        Err(e) => Some(format!("redis-server cannot run: {e}")),
    }
}

/// `redis-server --version`, for the report.
pub fn version() -> Option<String> {
    let out = Command::new("redis-server").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().find_map(|w| w.strip_prefix("v=")).map(str::to_string)
}

fn connect(socket: &Path) -> Result<Connection> {
    let client = redis::Client::open(format!("unix://{}", socket.display()))?;
    Ok(client.get_connection()?)
}

/// A `redis-server` child process, killed when dropped (also on panic).
pub struct Server {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Server {
    /// Starts a server in `dir` (which may hold a `dump.rdb` to load) with
    /// extra config lines. Returns at once; see [`Server::wait_ready`].
    fn spawn(dir: &Path, extra: &[&str]) -> Result<Server> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("redis.sock");
        let mut conf = format!(
            "port 0\nunixsocket {sock}\nunixsocketperm 700\nsave \"\"\nappendonly no\n\
             notify-keyspace-events \"\"\ndir {dir}\ndbfilename dump.rdb\nlogfile {dir}/redis.log\n\
             daemonize no\nprotected-mode no\n",
            sock = socket.display(),
            dir = dir.display()
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.join("redis.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Server { child, dir: dir.to_path_buf(), socket })
    }

    fn start(dir: &Path, extra: &[&str]) -> Result<Server> {
        let mut server = Server::spawn(dir, extra)?;
        server.wait_ready(Duration::from_secs(120))?;
        Ok(server)
    }

    /// Waits until the server answers PING (after loading its data).
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited ({status}); see {}/redis.log", self.dir.display()).into());
            }
            if let Ok(mut con) = connect(&self.socket) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                return Err("redis-server did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn connect(&self) -> Result<Connection> {
        connect(&self.socket)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `dump.rdb` in the server's directory; returns its path.
    fn save(&self) -> Result<PathBuf> {
        redis::cmd("SAVE").query::<()>(&mut self.connect()?)?;
        Ok(self.dir.join("dump.rdb"))
    }

    fn info_field(&self, section: &str, field: &str) -> Result<String> {
        let info: String = redis::cmd("INFO").arg(section).query(&mut self.connect()?)?;
        info.lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("INFO {section} has no {field}").into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct RedisEngine {
    root: PathBuf,
    started: u32,
    /// Persistence off: loads, reads, propagation, memory, non-durable commits.
    base: Option<Server>,
    /// `appendfsync always`: durable commits.
    durable: Option<Server>,
    durability: Durability,
}

impl RedisEngine {
    pub fn new(root: &Path) -> Result<RedisEngine> {
        if let Some(reason) = unavailable() {
            return Err(reason.into());
        }
        Ok(RedisEngine { root: root.to_path_buf(), started: 0, base: None, durable: None, durability: Durability::Off })
    }

    fn next_dir(&mut self, what: &str) -> PathBuf {
        self.started += 1;
        self.root.join(format!("redis-{what}-{}", self.started))
    }

    fn base(&self) -> Result<&Server> {
        self.base.as_ref().ok_or_else(|| "no Redis server running".into())
    }

    fn current(&self) -> Result<&Server> {
        match self.durability {
            Durability::Off => self.base(),
            Durability::On => self.durable.as_ref().ok_or_else(|| "no durable Redis server running".into()),
        }
    }

    /// A server loaded from the base server's data (copied RDB file).
    fn spawn_from_base(&mut self, what: &str, extra: &[&str]) -> Result<Server> {
        let rdb = self.base()?.save()?;
        let dir = self.next_dir(what);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(rdb, dir.join("dump.rdb"))?;
        Server::spawn(&dir, extra)
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn create(&mut self, durability: Durability) -> Result<()> {
        self.durable = None;
        if self.base.is_none() {
            let dir = self.next_dir("base");
            self.base = Some(Server::start(&dir, &[])?);
        }
        redis::cmd("FLUSHALL").arg("SYNC").query::<()>(&mut self.base()?.connect()?)?;
        self.durability = Durability::Off;
        self.open(durability)
    }

    fn bulk_load(&mut self, data: &Dataset) -> Result<()> {
        // Pipelined SETs, PIPELINE keys per round trip.
        let mut con = self.current()?.connect()?;
        for (keys, values) in data.keys.chunks(PIPELINE).zip(data.values.chunks(PIPELINE)) {
            let mut pipe = redis::pipe();
            for (k, v) in keys.iter().zip(values) {
                pipe.cmd("SET").arg(k.as_bytes()).arg(v.as_slice()).ignore();
            }
            pipe.query::<()>(&mut con)?;
        }
        Ok(())
    }

    fn open(&mut self, durability: Durability) -> Result<()> {
        match durability {
            Durability::Off => self.durable = None,
            Durability::On if self.durable.is_none() => {
                let mut server = self.spawn_from_base("durable", &[])?;
                server.wait_ready(Duration::from_secs(120))?;
                let mut con = server.connect()?;
                redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes").query::<()>(&mut con)?;
                // Enabling the AOF at run time rewrites it from the data set first.
                let start = Instant::now();
                while server.info_field("persistence", "aof_rewrite_in_progress")? != "0"
                    || server.info_field("persistence", "aof_rewrite_scheduled")? != "0"
                    || server.info_field("persistence", "aof_enabled")? != "1"
                {
                    if start.elapsed() > Duration::from_secs(300) {
                        return Err("the Redis AOF rewrite did not finish".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg("always").query::<()>(&mut con)?;
                self.durable = Some(server);
            }
            Durability::On => {}
        }
        self.durability = durability;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // The server is the owner; it keeps running.
        Ok(())
    }

    fn committer(&self) -> Result<Box<dyn Committer + Send + '_>> {
        Ok(Box::new(RedisCommitter { con: self.current()?.connect()? }))
    }

    fn location(&self) -> String {
        self.current().map(|s| s.socket.display().to_string()).unwrap_or_default()
    }

    fn sizes(&self) -> Result<Vec<(String, u64)>> {
        let server = self.base()?;
        Ok(vec![
            ("used_memory".into(), server.info_field("memory", "used_memory")?.parse()?),
            ("used_memory_rss".into(), server.info_field("memory", "used_memory_rss")?.parse()?),
        ])
    }

    fn reopen(&mut self, mode: Reopen, key: &str) -> Result<Duration> {
        match mode {
            Reopen::Owner => {
                // From starting redis-server on a saved RDB file to the first
                // GET answered with the value (clients get -LOADING before).
                let dir = self.next_dir("reopen");
                let rdb = self.base()?.save()?;
                std::fs::create_dir_all(&dir)?;
                std::fs::copy(rdb, dir.join("dump.rdb"))?;
                let start = Instant::now();
                let mut server = Server::spawn(&dir, &[])?;
                loop {
                    if let Some(status) = server.child.try_wait()? {
                        return Err(format!("redis-server exited ({status})").into());
                    }
                    if let Ok(mut con) = server.connect() {
                        if let Ok(Some(_)) = redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(&mut con) {
                            break;
                        }
                    }
                    if start.elapsed() > Duration::from_secs(300) {
                        return Err("redis-server did not load its RDB file".into());
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let elapsed = start.elapsed();
                drop(server);
                Ok(elapsed)
            }
            Reopen::Reader => {
                let start = Instant::now();
                let mut con = self.base()?.connect()?;
                let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut con)?;
                value.ok_or_else(|| format!("{key} missing"))?;
                Ok(start.elapsed())
            }
        }
    }

    fn memory_owner(&mut self) -> Result<MemoryOwner> {
        Ok(MemoryOwner::Pid(self.base()?.pid()))
    }

    fn propagation_method(&self) -> &'static str {
        "keyspace notifications (`notify-keyspace-events KEA`, on only for this row): a subscriber \
         process blocked on SUBSCRIBE __keyspace@0__:<key>"
    }

    fn watchable(&mut self, on: bool) -> Result<()> {
        let events = if on { "KEA" } else { "" };
        let mut con = self.current()?.connect()?;
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg(events).query::<()>(&mut con)?;
        Ok(())
    }
}

struct RedisCommitter {
    con: Connection,
}

impl Committer for RedisCommitter {
    fn commit(&mut self, key: &str, value: &[u8]) -> Result<u64> {
        redis::cmd("SET").arg(key).arg(value).query::<()>(&mut self.con)?;
        Ok(0)
    }
}

/// A client process.
pub struct RedisReader {
    socket: PathBuf,
    con: Connection,
    /// What the memory row's clients hold: copies of every value they read.
    held: Vec<Vec<u8>>,
}

impl RedisReader {
    pub fn open(location: &str) -> Result<RedisReader> {
        let socket = PathBuf::from(location);
        let con = connect(&socket)?;
        Ok(RedisReader { socket, con, held: Vec::new() })
    }
}

impl ReadSession for RedisReader {
    fn get_batch(&mut self, keys: &[String]) -> Result<(usize, u64)> {
        // One pipeline per batch.
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("GET").arg(k.as_bytes());
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query(&mut self.con)?;
        let (mut found, mut bytes) = (0usize, 0u64);
        for v in values.iter().flatten() {
            found += 1;
            bytes += v.len() as u64 + u64::from(v.first().copied().unwrap_or(0));
        }
        Ok((found, bytes))
    }

    fn scan(&mut self, _prefix: &str, _limit: usize) -> Result<usize> {
        Err("Redis has no ordered key space".into())
    }

    fn read_all_and_hold(&mut self, spec: &Spec) -> Result<u64> {
        let mut held = Vec::with_capacity(spec.keys);
        let mut bytes = 0;
        let mut start = 0;
        while start < spec.keys {
            let end = (start + PIPELINE).min(spec.keys);
            let mut pipe = redis::pipe();
            let mut buf = String::new();
            for i in start..end {
                spec.write_key(i, &mut buf);
                pipe.cmd("GET").arg(buf.as_bytes());
            }
            let values: Vec<Option<Vec<u8>>> = pipe.query(&mut self.con)?;
            for v in values {
                let v = v.ok_or("a dataset key is missing")?;
                bytes += v.len() as u64 + u64::from(v[0]);
                held.push(v);
            }
            start = end;
        }
        self.held = held;
        Ok(bytes)
    }

    fn watch(&mut self, ready: &mut dyn FnMut(), stop: &AtomicBool, seen: &mut dyn FnMut(u64)) -> Result<()> {
        let mut con = connect(&self.socket)?;
        con.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(format!("__keyspace@0__:{SEQ_KEY}"))?;
        ready();
        let mut messages = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(_) => {
                    messages += 1;
                    seen(messages);
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
