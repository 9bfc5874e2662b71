//! `shoald`: owns a shoal store's writer and serves the xenstore protocol on
//! unix sockets, in place of xenstored.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use shoal::{Durability, Options, Store};
use shoald::server::{self, Daemon, Limits, Listener};
use shoald::xs::quota::{Quota, Quotas};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    /// A change is acknowledged once its journal record is on disk.
    Sync,
    /// Acknowledged at once; survives a crash of shoald, not a power loss.
    None,
}

/// Serve a shoal store over the xenstore protocol, in place of xenstored.
#[derive(Parser, Debug)]
#[command(name = "shoald", version)]
struct Args {
    /// The store directory (created if it holds no store).
    #[arg(long)]
    store: PathBuf,
    /// The xenstore socket. Default /run/xenstored/socket as root,
    /// $XDG_RUNTIME_DIR/shoald/socket otherwise.
    #[arg(long, value_name = "PATH")]
    xenstore_socket: Option<PathBuf>,
    /// Also serve a read-only socket here (changes get EROFS).
    #[arg(long, value_name = "PATH")]
    xenstore_socket_ro: Option<PathBuf>,
    /// Mode of the socket files (octal).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    socket_mode: u32,
    /// Durability of a store shoald creates (an existing store keeps the
    /// one it records; change it with `shoal config`).
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// A quota for guest domains, NAME=VALUE (repeatable; 0: no limit).
    /// Names and defaults: nodes=1000, watches=128, outstanding=20,
    /// transactions=10, node-permissions=5, node-size=2048. dom0 is held
    /// to none of them.
    #[arg(long = "quota", value_name = "NAME=VALUE", value_parser = parse_quota)]
    quotas: Vec<(Quota, u32)>,
    /// Replies and watch events queued for a connection that does not read
    /// them; a watch event that finds its queue full closes the connection
    /// (it is never dropped unnoticed).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    queued_messages: u64,
    /// Log every request and its outcome (target `shoald::access`, level
    /// info). Off by default; `xenstore-control log on|off` toggles it.
    #[arg(long)]
    access_log: bool,
    /// Serve guests' rings from a simulated hypervisor in this directory
    /// (its `pages` file and `evtchn` socket; see `shoald-sim`), for tests
    /// and benchmarks without Xen.
    #[arg(long, value_name = "DIR")]
    sim_hypervisor: Option<PathBuf>,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text, 8).map_err(|_| format!("{text:?} is not an octal mode"))?;
    if mode > 0o777 {
        return Err(format!("{text} is not a file mode (at most 777)"));
    }
    Ok(mode)
}

fn parse_quota(text: &str) -> Result<(Quota, u32), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let quota = Quota::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Quota::ALL.iter().map(|q| q.name()).collect();
        format!("no quota is named {name:?} (there are {})", names.join(", "))
    })?;
    let value = value.parse().map_err(|_| format!("{value:?} is not a count"))?;
    Ok((quota, value))
}

fn default_socket() -> Result<PathBuf, String> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/run/xenstored/socket"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("shoald/socket")),
        _ => Err("not root and XDG_RUNTIME_DIR is not set: give --xenstore-socket".to_string()),
    }
}

fn open_store(args: &Args) -> Result<Store, String> {
    let wanted = args.durability.map(|d| match d {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::None => Durability::None,
    });
    let options = Options {
        create: true,
        durability: wanted.unwrap_or(Durability::Sync),
        // xenstore data is small and rewritten often: compacting from 8 MiB
        // (rather than 64) keeps the arena, and the daemon's resident
        // memory, within a few times the live data (BENCHMARKS.md).
        compact_min_bytes: 8 << 20,
        ..Options::default()
    };
    let store = Store::open(&args.store, options).map_err(|e| e.to_string())?;
    if let Some(wanted) = wanted {
        if store.options().durability != wanted {
            return Err(format!(
                "{} records durability {:?}; change it with `shoal config {} --durability ...` while shoald is stopped",
                args.store.display(),
                store.options().durability,
                args.store.display()
            ));
        }
    }
    Ok(store)
}

/// Tells systemd (`Type=notify`) that shoald is serving, and says so on
/// stdout for anything else that waits for it.
fn announce_ready(sockets: &[PathBuf]) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let socket = std::os::unix::net::UnixDatagram::unbound();
        if let Err(error) = socket.and_then(|s| s.send_to(b"READY=1", &path)) {
            tracing::warn!(%error, "could not notify systemd");
        }
    }
    let list: Vec<String> = sockets.iter().map(|p| p.display().to_string()).collect();
    println!("shoald ready: {}", list.join(" "));
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SHOALD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoald: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let socket = match &args.xenstore_socket {
        Some(path) => path.clone(),
        None => default_socket()?,
    };
    // The store lives as long as the process: open transactions borrow it.
    let store: &'static Store = Box::leak(Box::new(open_store(&args)?));
    shoald::xs::init(store).map_err(|e| format!("initialising the store: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut quotas = Quotas::default();
        for &(quota, value) in &args.quotas {
            quotas.set(quota, value);
        }
        let limits = Limits { queued_messages: args.queued_messages as usize, quotas, access_log: args.access_log };
        let rings = match &args.sim_hypervisor {
            Some(dir) => Some(
                shoald::ring::Backend::simulated(dir)
                    .await
                    .map_err(|e| format!("simulated hypervisor in {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let daemon = Daemon::start(store, limits, rings);
        let (stop, stopped) = watch::channel(false);
        let mut listeners =
            vec![Listener::bind(&socket, false, args.socket_mode).map_err(|e| format!("{}: {e}", socket.display()))?];
        if let Some(ro) = &args.xenstore_socket_ro {
            listeners.push(Listener::bind(ro, true, args.socket_mode).map_err(|e| format!("{}: {e}", ro.display()))?);
        }
        let paths: Vec<PathBuf> = listeners.iter().map(|l| l.path.clone()).collect();
        let mut servers = tokio::task::JoinSet::new();
        for listener in listeners {
            servers.spawn(server::serve(daemon.clone(), listener, stopped.clone()));
        }
        announce_ready(&paths);

        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping: finishing requests in flight");
        let _ = stop.send(true);
        daemon.stop_domains();
        while servers.join_next().await.is_some() {}
        Ok::<(), String>(())
    })?;
    store.wait_for_compaction();
    store.checkpoint().map_err(|e| format!("final checkpoint: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
