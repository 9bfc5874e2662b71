//! `xenstore-bench`: shoald against the stock xenstore daemons (cxenstored
//! and oxenstored of Xen 4.17, run without Xen by `xenstored-nox/start`),
//! the same workloads over the same unix-socket protocol, dom0 clients, in
//! one run. Rows run daemon after daemon within each row, so drift on a
//! shared machine falls on all of them alike. Reported as rates and as
//! shoald's ratio to each stock daemon.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use shoald::client::SyncClient;

/// Compare shoald with cxenstored and oxenstored.
#[derive(Parser, Debug)]
#[command(name = "xenstore-bench")]
struct Args {
    /// Daemons to run, in order: shoald (durability none, like the stock
    /// daemons, which keep their data in memory), shoald-sync (every write
    /// on disk before its reply), cxenstored, oxenstored.
    #[arg(long, value_delimiter = ',', default_value = "shoald,shoald-sync,cxenstored,oxenstored")]
    daemons: Vec<String>,
    /// Requests per client in each row.
    #[arg(long, default_value_t = 20_000)]
    ops: u32,
    /// Clients in the concurrent rows.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Domain homes in the many-domains rows (8 nodes each).
    #[arg(long, default_value_t = 10_000)]
    domains: u32,
    /// The `start` script of xenstored-nox.
    #[arg(long, default_value = "../shared/xenstored-nox/start")]
    nox: PathBuf,
    /// The shoald binary (default: next to this one).
    #[arg(long)]
    shoald: Option<PathBuf>,
    /// Run only the rows whose name contains this text.
    #[arg(long)]
    only: Option<String>,
}

/// A running daemon.
struct Daemon {
    name: String,
    socket: PathBuf,
    pid: u32,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

fn start(name: &str, args: &Args) -> Result<Daemon, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    match name {
        "shoald" | "shoald-sync" => {
            let binary = match &args.shoald {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("shoald"),
            };
            let socket = dir.path().join("socket");
            let durability = if name == "shoald" { "none" } else { "sync" };
            let mut child = Command::new(&binary)
                .arg("--store")
                .arg(dir.path().join("store"))
                .arg("--xenstore-socket")
                .arg(&socket)
                .args(["--durability", durability])
                .env("SHOALD_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{}: {e}", binary.display()))?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| e.to_string())?;
            if !line.starts_with("shoald ready") {
                return Err(format!("shoald did not start: {line:?}"));
            }
            let pid = child.id();
            Ok(Daemon { name: name.into(), socket, pid, child: Some(child), _dir: dir })
        }
        "cxenstored" | "oxenstored" => {
            let out = Command::new(&args.nox)
                .arg(name)
                .arg(dir.path())
                .output()
                .map_err(|e| format!("{}: {e}", args.nox.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!("{name} did not start: {text}{}", String::from_utf8_lossy(&out.stderr)));
            }
            let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
            let socket = field("socket=").ok_or("no socket= line")?;
            let pid = field("pid=").and_then(|p| p.parse().ok()).ok_or("no pid= line")?;
            Ok(Daemon { name: name.into(), socket: socket.into(), pid, child: None, _dir: dir })
        }
        other => Err(format!("unknown daemon {other:?}")),
    }
}

fn client(daemon: &Daemon) -> SyncClient {
    SyncClient::connect(&daemon.socket).unwrap_or_else(|e| panic!("{}: {e}", daemon.name))
}

fn ok<T>(daemon: &Daemon, what: &str, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{} {what}: {e}", daemon.name))
}

/// Resident and proportional set size of a process, KiB.
fn memory(pid: u32) -> (u64, u64) {
    let read = |file: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (read("status", "VmRSS:"), read("smaps_rollup", "Pss:"))
}

/// Runs `work(client index)` on `clients` threads at once; returns the
/// requests per second over all of them.
fn concurrent(daemon: &Daemon, clients: u32, requests_each: u32, work: impl Fn(&mut SyncClient, u32) + Sync) -> f64 {
    let mut connections: Vec<SyncClient> = (0..clients).map(|_| client(daemon)).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (i, c) in connections.iter_mut().enumerate() {
            let work = &work;
            s.spawn(move || work(c, i as u32));
        }
    });
    f64::from(clients * requests_each) / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One row's figure for one daemon: a rate (higher is better) or a time
/// (lower is better).
#[derive(Clone, Copy)]
enum Figure {
    Rate(f64),
    Micros(f64),
    KiB(u64),
}

impl Figure {
    fn show(self) -> String {
        match self {
            Figure::Rate(r) => format!("{r:.0}/s"),
            Figure::Micros(us) => format!("{us:.1} µs"),
            Figure::KiB(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        }
    }

    /// How many times better `self` is than `other`.
    fn ratio(self, other: Figure) -> Option<f64> {
        match (self, other) {
            (Figure::Rate(a), Figure::Rate(b)) => Some(a / b),
            (Figure::Micros(a), Figure::Micros(b)) => Some(b / a),
            (Figure::KiB(a), Figure::KiB(b)) => Some(b as f64 / a as f64),
            _ => None,
        }
    }
}

type Row = (&'static str, Vec<(String, Figure)>);

fn main() {
    let args = Args::parse();
    let ops = args.ops;
    let clients = args.clients;
    let mut daemons: Vec<Daemon> = Vec::new();
    for name in &args.daemons {
        match start(name, &args) {
            Ok(d) => daemons.push(d),
            Err(e) => {
                eprintln!("xenstore-bench: {e}");
                std::process::exit(1);
            }
        }
    }
    // The data every row reads.
    for d in &daemons {
        let mut c = client(d);
        for i in 0..100 {
            ok(d, "prefill", c.write(0, &format!("/bench/r/k{i}"), format!("value-{i:010}").as_bytes()));
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let only = args.only.clone();
    let mut row = |name: &'static str, f: &dyn Fn(&Daemon) -> Figure| {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            return;
        }
        let figures = daemons.iter().map(|d| (d.name.clone(), f(d))).collect();
        rows.push((name, figures));
    };
    macro_rules! rate_row {
        ($name:expr, $f:expr) => {
            row($name, &|d| Figure::Rate(($f)(d)))
        };
    }

    rate_row!("read, 1 client", &|d| {
        concurrent(d, 1, ops, |c, _| {
            for i in 0..ops {
                ok(d, "READ", c.read(&format!("/bench/r/k{}", i % 100)));
            }
        })
    });
    rate_row!("read, P clients", &|d| {
        concurrent(d, clients, ops, |c, _| {
            for i in 0..ops {
                ok(d, "READ", c.read(&format!("/bench/r/k{}", i % 100)));
            }
        })
    });
    rate_row!("write, 1 client", &|d| {
        concurrent(d, 1, ops / 4, |c, _| {
            for i in 0..ops / 4 {
                ok(d, "WRITE", c.write(0, &format!("/bench/w/k{}", i % 1000), b"0123456789abcdef"));
            }
        })
    });
    rate_row!("write, P clients", &|d| {
        concurrent(d, clients, ops / 4, |c, n| {
            for i in 0..ops / 4 {
                ok(d, "WRITE", c.write(0, &format!("/bench/w{n}/k{}", i % 1000), b"0123456789abcdef"));
            }
        })
    });
    rate_row!("transaction (start, write, commit), 1 client", &|d| {
        let n = ops / 12;
        concurrent(d, 1, n, |c, _| {
            for i in 0..n {
                let tx = ok(d, "TRANSACTION_START", c.start_transaction());
                ok(d, "WRITE", c.write(tx, &format!("/bench/t/a{}", i % 100), b"x"));
                ok(d, "TRANSACTION_END", c.end_transaction(tx, true));
            }
        })
    });
    rate_row!("transaction (start, write, commit), P clients", &|d| {
        let n = ops / 12;
        // Each client writes its own nodes; a conflict the daemon reports
        // all the same (cxenstored's are coarser than per node) is retried,
        // as clients do, and only committed transactions count.
        concurrent(d, clients, n, |c, k| {
            for i in 0..n {
                loop {
                    let tx = ok(d, "TRANSACTION_START", c.start_transaction());
                    ok(d, "WRITE", c.write(tx, &format!("/bench/t{k}/a{}", i % 100), b"x"));
                    match c.end_transaction(tx, true) {
                        Err(e) if e == "EAGAIN" => continue,
                        r => break ok(d, "TRANSACTION_END", r),
                    }
                }
            }
        })
    });
    rate_row!("directory of 100 children, 1 client", &|d| {
        concurrent(d, 1, ops / 4, |c, _| {
            for _ in 0..ops / 4 {
                let names = ok(d, "DIRECTORY", c.directory("/bench/r"));
                assert_eq!(names.len(), 100, "{}", d.name);
            }
        })
    });
    rate_row!("directory of 100 children, P clients", &|d| {
        concurrent(d, clients, ops / 4, |c, _| {
            for _ in 0..ops / 4 {
                let names = ok(d, "DIRECTORY", c.directory("/bench/r"));
                assert_eq!(names.len(), 100, "{}", d.name);
            }
        })
    });
    row("watch event after a write, p50", &|d| watch_latency(d, ops / 10, 0.5));
    row("watch event after a write, p99", &|d| watch_latency(d, ops / 10, 0.99));

    let domains = args.domains;
    rate_row!("populate N domain homes × 8 nodes, P clients", &|d| {
        let per_client = domains.div_ceil(clients);
        concurrent(d, clients, per_client * 9, |c, n| {
            for domid in (n * per_client + 1)..=((n + 1) * per_client).min(domains) {
                let home = format!("/local/domain/{domid}");
                ok(d, "WRITE", c.write(0, &format!("{home}/name"), format!("guest-{domid}").as_bytes()));
                for k in 0..7 {
                    ok(d, "WRITE", c.write(0, &format!("{home}/device/vif/{k}/state"), b"4"));
                }
                // (Not SET_PERMS to the domain: cxenstored without Xen
                // crashes on permissions naming a domain it does not know.)
                ok(d, "WRITE", c.write(0, &format!("{home}/domid"), domid.to_string().as_bytes()));
            }
        })
    });
    rate_row!("read among N domains, P clients", &|d| {
        concurrent(d, clients, ops, |c, n| {
            for i in 0..ops {
                let domid = (i * 7919 + n * 104_729) % domains + 1;
                ok(d, "READ", c.read(&format!("/local/domain/{domid}/device/vif/{}/state", i % 7)));
            }
        })
    });
    rate_row!("write among N domains, P clients", &|d| {
        concurrent(d, clients, ops / 4, |c, n| {
            for i in 0..ops / 4 {
                let domid = (i * 7919 + n * 104_729) % domains + 1;
                ok(d, "WRITE", c.write(0, &format!("/local/domain/{domid}/device/vif/{}/state", i % 7), b"5"));
            }
        })
    });
    row("daemon resident memory with N domains (RSS)", &|d| Figure::KiB(memory(d.pid).0));
    row("daemon proportional memory with N domains (PSS)", &|d| Figure::KiB(memory(d.pid).1));

    report(&args, &rows);
}

/// The unix-socket round trip on this machine: an echo server that answers
/// every request with a 19-byte `OK` reply, one thread per connection, the
/// same client code as the rows. Returns requests per second with `clients`
/// clients of `ops` requests each.
fn socket_floor(clients: u32, ops: u32) -> f64 {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("echo");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind the echo socket");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = [0u8; 16];
                let mut body = vec![0u8; 4096];
                while stream.read_exact(&mut head).is_ok() {
                    let len = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
                    if len > body.len() || stream.read_exact(&mut body[..len]).is_err() {
                        return;
                    }
                    let mut reply = head;
                    reply[12..16].copy_from_slice(&3u32.to_le_bytes());
                    let mut out = reply.to_vec();
                    out.extend_from_slice(b"OK\0");
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut connections: Vec<SyncClient> =
        (0..clients).map(|_| SyncClient::connect(&path).expect("connect to the echo socket")).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in connections.iter_mut() {
            s.spawn(move || {
                for i in 0..ops {
                    c.write(0, &format!("/bench/w/k{}", i % 1000), b"0123456789abcdef").expect("an echo");
                }
            });
        }
    });
    f64::from(clients * ops) / start.elapsed().as_secs_f64()
}

fn watch_latency(d: &Daemon, samples: u32, p: f64) -> Figure {
    let mut watcher = client(d);
    let mut writer = client(d);
    ok(d, "WATCH", watcher.watch("/bench/wl", "t"));
    ok(d, "first event", watcher.next_event());
    let mut times = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        let start = Instant::now();
        ok(d, "WRITE", writer.write(0, "/bench/wl/x", i.to_string().as_bytes()));
        let (path, _) = ok(d, "event", watcher.next_event());
        times.push(start.elapsed());
        assert_eq!(path, "/bench/wl/x");
    }
    times.sort();
    Figure::Micros(percentile(&times, p).as_secs_f64() * 1e6)
}

fn report(args: &Args, rows: &[Row]) {
    let names: Vec<&str> = args.daemons.iter().map(String::as_str).collect();
    let stock: Vec<&str> = names.iter().copied().filter(|n| n.ends_with("xenstored")).collect();
    let mut header = format!("| row (P = {}, N = {}) |", args.clients, args.domains);
    for n in &names {
        header.push_str(&format!(" {n} |"));
    }
    for s in &stock {
        header.push_str(&format!(" shoald/{s} |"));
    }
    println!("{header}");
    println!("|{}", " --- |".repeat(1 + names.len() + stock.len()));
    for (name, figures) in rows {
        let mut line = format!("| {name} |");
        for (_, f) in figures {
            line.push_str(&format!(" {} |", f.show()));
        }
        let shoald = figures.iter().find(|(n, _)| n == "shoald").map(|(_, f)| *f);
        for s in &stock {
            let other = figures.iter().find(|(n, _)| n == s).map(|(_, f)| *f);
            match (shoald, other) {
                (Some(a), Some(b)) => line.push_str(&format!(" {:.2}× |", a.ratio(b).unwrap_or(f64::NAN))),
                _ => line.push_str(" — |"),
            }
        }
        println!("{line}");
    }
    println!();
    println!("Ratios > 1 mean shoald (durability none) is better: faster, sooner or smaller.");
    let one = socket_floor(1, args.ops);
    let many = socket_floor(args.clients, args.ops);
    println!();
    println!(
        "The unix-socket floor on this machine (an echo server answering each WRITE with OK, same client): \
         {one:.0}/s with 1 client, {many:.0}/s with {} clients.",
        args.clients
    );
}
