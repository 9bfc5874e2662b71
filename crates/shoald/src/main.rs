//! `shoald`: owns a shoal store's writer and serves the xenstore protocol on
//! unix sockets, in place of xenstored. Its settings (flags, `--config`
//! file) are resolved in `config.rs`.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use config::{Args, Settings};
use shoal::{Durability, Options, Store};
use shoald::server::{self, Daemon, Limits, Listener};
use tokio::sync::watch;

fn open_store(settings: &Settings) -> Result<Store, String> {
    let wanted = settings.durability;
    // A replica's acknowledged writes are etcd's to keep: after a crash it
    // reopens at an older version, and follows etcd from the revision that
    // version holds.
    let default = if settings.cluster.is_some() { Durability::None } else { Durability::Sync };
    let options = Options {
        create: true,
        durability: wanted.unwrap_or(default),
        // xenstore data is small and rewritten often: compacting from 8 MiB
        // (rather than 64) keeps the arena, and the daemon's resident
        // memory, within a few times the live data. It costs writes: a
        // small store under writes compacts several times a second
        // (BENCHMARKS.md: 17 MiB against 67 MiB RSS at 1,000 domains,
        // a quarter fewer writes/s than from 32 MiB with 4 clients).
        compact_min_bytes: 8 << 20,
        ..Options::default()
    };
    let store = Store::open(&settings.store, options).map_err(|e| e.to_string())?;
    if let Some(wanted) = wanted {
        if store.options().durability != wanted {
            return Err(format!(
                "{} records durability {:?}; change it with `shoal config {} --durability ...` while shoald is stopped",
                settings.store.display(),
                store.options().durability,
                settings.store.display()
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

/// Joins the cluster with `store` as this host's replica, and prepares the
/// cluster's tree for xenstore if no host has yet.
async fn join_cluster(
    store: &'static Store,
    settings: &config::ClusterSettings,
) -> Result<std::sync::Arc<shoal_cluster::Host>, String> {
    let layout = shoal_cluster::Layout::new(&settings.prefix);
    let options = shoal_cluster::HostOptions::new(&settings.host_id, settings.listen);
    let host = shoal_cluster::Host::start(store, &settings.endpoints, layout, options)
        .await
        .map_err(|e| format!("joining the cluster at {}: {e}", settings.endpoints.join(",")))?;
    loop {
        let mut txn = store.begin();
        if !shoald::xs::prepare(&mut txn).map_err(|e| format!("initialising the store: {e}"))? {
            break;
        }
        match host.commit_local(txn).await {
            Ok(_) => break,
            // Another host prepared it meanwhile.
            Err(shoal_cluster::Error::Conflict { .. }) => continue,
            Err(e) => {
                host.stop().await;
                return Err(format!("initialising the cluster's tree: {e}"));
            }
        }
    }
    tracing::info!(host = %settings.host_id, prefix = %settings.prefix, "serving a replica of the cluster's tree");
    Ok(std::sync::Arc::new(host))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SHOALD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match Settings::resolve(args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoald: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> Result<(), String> {
    let socket = &settings.xenstore_socket;
    // The store lives as long as the process: open transactions borrow it.
    let store: &'static Store = Box::leak(Box::new(open_store(&settings)?));
    if settings.cluster.is_none() {
        shoald::xs::init(store).map_err(|e| format!("initialising the store: {e}"))?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let limits = Limits {
            queued_messages: settings.queued_messages,
            quotas: settings.quotas,
            access_log: settings.access_log,
        };
        let rings = match &settings.sim_hypervisor {
            Some(dir) => Some(
                shoald::ring::Backend::simulated(dir)
                    .await
                    .map_err(|e| format!("simulated hypervisor in {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let cluster = match &settings.cluster {
            Some(cluster) => Some(join_cluster(store, cluster).await?),
            None => None,
        };
        let daemon = Daemon::start(store, limits, rings, cluster.clone());
        let (stop, stopped) = watch::channel(false);
        // The store's own socket first: if it cannot be bound, no xenstore
        // socket file is left behind for clients to find dead.
        let (store_listener, store_socket) =
            server::remote::bind(store.dir()).map_err(|e| format!("the store's socket: {e}"))?;
        let mode = settings.socket_mode;
        if mode & 0o006 != 0 {
            tracing::warn!(
                "socket mode {mode:o} lets every local user connect, and a socket client is dom0: it may do \
                 anything to the store and to guests"
            );
        }
        let mut listeners =
            vec![Listener::bind(socket, false, mode).map_err(|e| format!("{}: {e}", socket.display()))?];
        if let Some(ro) = &settings.xenstore_socket_ro {
            listeners.push(Listener::bind(ro, true, mode).map_err(|e| format!("{}: {e}", ro.display()))?);
        }
        let paths: Vec<PathBuf> = listeners.iter().map(|l| l.path.clone()).collect();
        let mut servers = tokio::task::JoinSet::new();
        for listener in listeners {
            servers.spawn(server::serve(daemon.clone(), listener, stopped.clone()));
        }
        // The store's own socket: the `shoal` CLI's writes while shoald
        // holds the writer.
        servers.spawn(server::remote::serve(daemon.clone(), store_listener, store_socket, stopped.clone()));
        announce_ready(&paths);

        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        let cluster_failed = async {
            match &cluster {
                Some(host) => host.failed().await,
                None => std::future::pending().await,
            }
        };
        let mut outcome = Ok(());
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            reason = cluster_failed => {
                outcome = Err(format!("the replica stopped following the cluster: {reason}"));
            }
        }
        tracing::info!("stopping: finishing requests in flight");
        let _ = stop.send(true);
        daemon.stop_domains();
        while servers.join_next().await.is_some() {}
        if let Some(host) = &cluster {
            host.stop().await;
        }
        outcome
    })?;
    store.wait_for_compaction();
    store.checkpoint().map_err(|e| format!("final checkpoint: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
