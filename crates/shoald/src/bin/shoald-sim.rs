//! `shoald-sim`: many guest domains without Xen. Starts a simulated
//! hypervisor and a shoald serving it, sets up and introduces N guests as a
//! toolstack would (a home owned by each, `INTRODUCE` over its ring), drives
//! a workload through every guest's ring, checks what each guest reads and
//! hears, releases them, and reports rates, latencies and shoald's memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shoald::client::{connect, AsyncClient, SocketClient};
use shoald::ring::sim::Hypervisor;
use shoald::wire::MsgType;
use tokio::sync::Semaphore;

/// Drive N simulated guest domains through a shoald.
#[derive(Parser, Debug)]
#[command(name = "shoald-sim", version)]
struct Args {
    /// Guest domains (ids 1..=N).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..32752))]
    domains: u32,
    /// Nodes each guest writes, reads back and hears of through a watch.
    #[arg(long, default_value_t = 8)]
    nodes: u32,
    /// Guests running their workload at the same time (0: all).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Durability of shoald's store.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// Work directory (store, sockets, ring pages); a temporary one if not
    /// given.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The shoald binary (default: next to this one).
    #[arg(long)]
    shoald: Option<PathBuf>,
    /// Leave the guests introduced (skip the release phase).
    #[arg(long)]
    keep: bool,
    /// An extra argument for shoald (repeatable), such as `--quota=nodes=50`.
    #[arg(long = "shoald-arg", value_name = "ARG", allow_hyphen_values = true)]
    shoald_args: Vec<String>,
}

/// Guests' event-channel ports: far from the domain ids, to catch mixing.
fn port(domid: u32) -> u32 {
    100_000 + domid
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoald-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoald-sim: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).expect("a child's pid"),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

fn start_shoald(args: &Args, dir: &Path, hypervisor: &Path) -> Result<Daemon, String> {
    let binary = match &args.shoald {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("shoald"),
    };
    let socket = dir.join("socket");
    let mut child = Command::new(&binary)
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--xenstore-socket")
        .arg(&socket)
        .arg("--sim-hypervisor")
        .arg(hypervisor)
        .arg("--durability")
        .arg(&args.durability)
        .args(&args.shoald_args)
        .env("SHOALD_LOG", std::env::var("SHOALD_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("shoald ready") {
        let _ = child.kill();
        return Err(format!("shoald did not start (it said {line:?})"));
    }
    Ok(Daemon { child, socket })
}

/// shoald's resident memory now and at its peak, in KiB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Homes for `domids`, each owned by its domain, as a toolstack makes them
/// (in transactions of a few hundred, as one commit each).
async fn make_homes(dom0: &mut SocketClient, domids: &[u32]) -> Result<(), String> {
    for chunk in domids.chunks(256) {
        loop {
            let tx = dom0.start_transaction().await?;
            for &domid in chunk {
                let home = format!("/local/domain/{domid}");
                let mut payload = home.clone().into_bytes();
                payload.push(0);
                dom0.call(MsgType::Mkdir, tx, &payload).await?;
                payload.extend_from_slice(format!("n{domid}\0").as_bytes());
                dom0.call(MsgType::SetPerms, tx, &payload).await?;
            }
            match dom0.call(MsgType::TransactionEnd, tx, b"T\0").await {
                Ok(_) => break,
                Err(e) if e == "EAGAIN" => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One guest's workload: watch its data, write each node, read each back,
/// then hear one event per write; last, watch `@releaseDomain`. Returns
/// each request's latency.
async fn guest_workload<R, W>(client: &mut AsyncClient<R, W>, domid: u32, nodes: u32) -> Result<Vec<Duration>, String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut latencies = Vec::with_capacity(2 * nodes as usize + 2);
    let start = Instant::now();
    client.watch("data", "w").await.map_err(|e| format!("dom{domid} WATCH: {e}"))?;
    latencies.push(start.elapsed());
    let value = |i: u32| format!("dom{domid}-value-{i}");
    for i in 0..nodes {
        let start = Instant::now();
        client.write(&format!("data/k{i}"), value(i).as_bytes()).await.map_err(|e| format!("dom{domid} WRITE: {e}"))?;
        latencies.push(start.elapsed());
    }
    for i in 0..nodes {
        let start = Instant::now();
        let read = client.read(&format!("data/k{i}")).await.map_err(|e| format!("dom{domid} READ: {e}"))?;
        latencies.push(start.elapsed());
        if read != value(i).as_bytes() {
            return Err(format!("dom{domid} read {:?} for data/k{i}", String::from_utf8_lossy(&read)));
        }
    }
    // The watch's first event, then one per write (each before its reply).
    let mut heard = 0;
    while heard < nodes + 1 {
        match client.next_event(Duration::from_secs(20)).await {
            Some((path, token)) if token == "w" && (path == "data" || path.starts_with("data/")) => heard += 1,
            Some(other) => return Err(format!("dom{domid} heard an event it did not expect: {other:?}")),
            None => return Err(format!("dom{domid} heard {heard} events, expected {}", nodes + 1)),
        }
    }
    let start = Instant::now();
    client.watch("@releaseDomain", "rel").await.map_err(|e| format!("dom{domid} WATCH @releaseDomain: {e}"))?;
    latencies.push(start.elapsed());
    match client.next_event(Duration::from_secs(20)).await {
        Some((path, token)) if path == "@releaseDomain" && token == "rel" => {}
        other => return Err(format!("dom{domid}: {other:?} instead of the watch's first event")),
    }
    Ok(latencies)
}

/// A guest's share of the release phase: exactly `count` `@releaseDomain`
/// events, and nothing else.
async fn hear_releases<R, W>(client: &mut AsyncClient<R, W>, domid: u32, count: u32) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    for heard in 0..count {
        match client.next_event(Duration::from_secs(30)).await {
            Some((path, token)) if path == "@releaseDomain" && token == "rel" => {}
            Some(other) => return Err(format!("dom{domid} heard {other:?} during the releases")),
            None => return Err(format!("dom{domid} heard {heard} of {count} @releaseDomain events")),
        }
    }
    if let Some(extra) = client.next_event(Duration::from_millis(100)).await {
        return Err(format!("dom{domid} heard one event too many: {extra:?}"));
    }
    // It stops listening before it stops reading its ring: the rest of the
    // releases are not its business.
    client.unwatch("@releaseDomain", "rel").await.map_err(|e| format!("dom{domid} UNWATCH @releaseDomain: {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    let temp = tempfile::Builder::new().prefix("shoald-sim.").tempdir().map_err(|e| e.to_string())?;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let n = args.domains;
    let hv_dir = dir.join("hv");
    let mut hypervisor = Hypervisor::create(&hv_dir, n as usize + 1).map_err(|e| format!("hypervisor: {e}"))?;
    let daemon = start_shoald(&args, &dir, &hv_dir)?;
    hypervisor.accept_daemon().await.map_err(|e| format!("hypervisor: {e}"))?;
    let mut dom0 = connect(&daemon.socket).await.map_err(|e| format!("{}: {e}", daemon.socket.display()))?;
    let (rss_start, _) = memory_of(daemon.child.id());
    let domids: Vec<u32> = (1..=n).collect();

    let started = Instant::now();
    make_homes(&mut dom0, &domids).await?;
    let homes = started.elapsed();
    // Guests may hear of other domains' release (others may read it).
    dom0.set_perms("@releaseDomain", &["r0"]).await.map_err(|e| format!("SET_PERMS @releaseDomain: {e}"))?;

    let started = Instant::now();
    let mut guests = Vec::with_capacity(n as usize);
    for &domid in &domids {
        let (input, output) = hypervisor.guest(domid as usize, port(domid));
        dom0.introduce(domid, domid as usize, port(domid)).await.map_err(|e| format!("INTRODUCE {domid}: {e}"))?;
        guests.push((domid, AsyncClient::new(input, output)));
    }
    let introduced = started.elapsed();

    let concurrency = if args.concurrency == 0 { n as usize } else { args.concurrency };
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let nodes = args.nodes;
    for (domid, mut client) in guests {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("the gate stays open");
            guest_workload(&mut client, domid, nodes).await.map(|l| (l, domid, client))
        });
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut guests = Vec::with_capacity(n as usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok((l, domid, client))) => {
                latencies.extend(l);
                guests.push((domid, client));
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let workload = started.elapsed();
    let (rss_loaded, _) = memory_of(daemon.child.id());
    if !failures.is_empty() {
        return Err(format!("{} guests failed; first: {}", failures.len(), failures[0]));
    }
    latencies.sort();

    let mut released = Duration::ZERO;
    if !args.keep {
        // The first releases, heard by every guest still there (dom0 let
        // them hear @releaseDomain), and only those.
        let first = n.min(10) - u32::from(n <= 10);
        let mut listening = tokio::task::JoinSet::new();
        for (domid, mut client) in guests.drain(..) {
            if domid > first {
                listening.spawn(async move { hear_releases(&mut client, domid, first).await });
            }
        }
        let started = Instant::now();
        for domid in 1..=first {
            dom0.release(domid).await.map_err(|e| format!("RELEASE {domid}: {e}"))?;
        }
        let mut failures = Vec::new();
        while let Some(done) = listening.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if !failures.is_empty() {
            return Err(format!("{} guests heard the releases wrong; first: {}", failures.len(), failures[0]));
        }
        for domid in first + 1..=n {
            dom0.release(domid).await.map_err(|e| format!("RELEASE {domid}: {e}"))?;
        }
        released = started.elapsed();
        let left = dom0.directory("/local/domain").await.unwrap_or_default();
        if !left.is_empty() {
            return Err(format!("{} homes are left after RELEASE", left.len()));
        }
    }
    let (_, rss_peak) = memory_of(daemon.child.id());

    let per_sec = |count: f64, d: Duration| count / d.as_secs_f64().max(1e-9);
    let ops = latencies.len() as f64;
    println!(
        "shoald-sim: {n} guest domains, {nodes} nodes each, {concurrency} at a time, durability {}",
        args.durability
    );
    println!("homes made      : {:>10.0} domains/s ({:.2} s)", per_sec(n as f64, homes), homes.as_secs_f64());
    println!("introduced      : {:>10.0} domains/s ({:.2} s)", per_sec(n as f64, introduced), introduced.as_secs_f64());
    println!(
        "guest requests  : {:>10.0} /s ({} in {:.2} s; p50 {:?}, p99 {:?}, max {:?})",
        per_sec(ops, workload),
        latencies.len(),
        workload.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    if !args.keep {
        println!("released        : {:>10.0} domains/s ({:.2} s)", per_sec(n as f64, released), released.as_secs_f64());
    }
    println!(
        "shoald memory   : {} KiB at start, {} KiB with every guest loaded, {} KiB peak ({:.1} KiB per guest)",
        rss_start,
        rss_loaded,
        rss_peak,
        (rss_loaded.saturating_sub(rss_start)) as f64 / n as f64
    );
    println!("every guest read back what it wrote and heard every event, its own and @releaseDomain: ok");
    drop(daemon);
    Ok(())
}
