//! An etcd cluster of local members for tests: each member a child process
//! of Debian's `etcd` (package `etcd-server`) on loopback ports, in a
//! temporary directory, stopped when the cluster is dropped. Members can be
//! killed and restarted to test faults.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to answer after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    /// Unique to this cluster, so that members of two clusters started at
    /// once never take each other for peers.
    token: String,
}

/// Whether `etcd` and `etcdctl` are installed: the tests that need them
/// fail (not skip) without them, with this as their message.
pub fn require_etcd() {
    for (tool, arg) in [("etcd", "--version"), ("etcdctl", "version")] {
        let found = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "{tool} is not installed: `apt-get install etcd-server etcd-client` (.ci/run does)"
        );
    }
}

/// A loopback port for a member, free now and kept for it: taken below
/// Linux's range of ephemeral ports (32768 and up), so that no client's
/// connection is given it while its member is down between a kill and a
/// restart, and from a counter, so that the clusters of one test process
/// never share one.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = 20_000 + (std::process::id() % 500) * 20;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one answers.
    pub fn start(size: usize) -> EtcdCluster {
        require_etcd();
        let dir = tempfile::tempdir().expect("temporary directory");
        let members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_url: format!("http://127.0.0.1:{}", free_port()),
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    child: None,
                }
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let token = format!(
            "shoal-test-{}",
            dir.path().file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())
        );
        let mut cluster = EtcdCluster { _dir: dir, members, initial_cluster, token };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        for i in 0..size {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("member log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .args(["--logger", "zap", "--log-level", "warn"])
            // Elections in tens of milliseconds, not seconds: faults heal fast.
            .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    fn wait_ready(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            let ok = self.etcdctl_at(&[i], &["endpoint", "health"]).is_ok();
            if ok {
                return;
            }
            let m = &mut self.members[i];
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("etcd member {} exited ({status}): {}", m.name, tail(&m.log));
            }
            assert!(start.elapsed() < READY_TIMEOUT, "etcd member {} not ready: {}", m.name, tail(&m.log));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Runs `etcdctl` against the running members; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let running: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].child.is_some()).collect();
        self.etcdctl_at(&running, args)
    }

    fn etcdctl_at(&self, members: &[usize], args: &[&str]) -> Result<String, String> {
        let endpoints: Vec<&str> = members.iter().map(|&i| self.members[i].client_url.as_str()).collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .args(["--command-timeout", "5s"])
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The index of the member that leads now.
    pub fn leader(&self) -> usize {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            // `endpoint status` prints "URL, ID, version, size, IS_LEADER, ...".
            if let Ok(line) = self.etcdctl_at(&[i], &["endpoint", "status"]) {
                if line.split(", ").nth(4) == Some("true") {
                    return i;
                }
            }
        }
        panic!("no etcd member leads");
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `i` without killing it (SIGSTOP): it holds its
    /// connections open and answers nothing, as a hung or cut-off host.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.members[i].child.as_ref().expect("running").id();
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts member `i` again on its data, and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i, "existing");
        self.wait_ready(i);
    }

    /// Compacts the history up to `revision`: a watch from before it fails.
    pub fn compact(&self, revision: i64) {
        self.etcdctl(&["compaction", "--physical", &revision.to_string()]).expect("compaction");
    }

    /// The cluster's revision now.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["get", "--write-out", "json", "shoal-test-no-such-key"]).expect("get");
        let at = out.find("\"revision\":").expect("a revision in the header") + "\"revision\":".len();
        out[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("a revision")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The last lines of a member's log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
