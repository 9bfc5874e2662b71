//! Where shoald's settings come from: its flags, the TOML file `--config`
//! names, and the defaults. A flag given on the command line wins over the
//! file (a `--quota` flag over that one quota), the file over the defaults.
//!
//! Everything is checked here, before the store is opened: an unknown key,
//! a value of the wrong type or out of range is refused with the file, the
//! line and column, and the key (`quota.nodes`). The checks live in the
//! `Deserialize` impls of the values, so that the TOML parser points at the
//! offending text; the flags share the same parsers.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::Deserialize;
use shoald::xs::quota::{Quota, Quotas};

/// At most this many replies and events queued for one connection.
pub const QUEUED_MESSAGES_MAX: u64 = 1_048_576;
const QUEUED_MESSAGES_DEFAULT: u64 = 262_144;
const SOCKET_MODE_DEFAULT: u32 = 0o600;
/// At most this many threads serve requests.
pub const THREADS_MAX: u64 = 256;

/// The file's format, at the end of `--help` (and, commented, in
/// `contrib/shoald.toml`).
const FILE_HELP: &str = "\
Configuration file:
  --config PATH reads settings from a TOML file. Its keys are the long flags'
  names; every key is optional. A flag given on the command line wins over the
  file, and a --quota flag over that quota in the file. Relative paths are
  taken from the file's directory. An unknown key, a value of the wrong type
  or out of range stops shoald at start, naming the file, line and key.

    store = \"/var/lib/shoald\"                  # required, here or as --store
    xenstore-socket = \"/run/xenstored/socket\"  # default: as for the flag
    xenstore-socket-ro = \"/run/xenstored/socket_ro\"
    socket-mode = \"600\"                        # octal, as a string
    durability = \"sync\"                        # or \"none\"
    queued-messages = 262144                   # 1 to 1048576
    threads = 1                                # 1 to 256
    access-log = false
    sim-hypervisor = \"/run/shoald-sim\"         # tests without Xen
    cluster = \"http://10.0.0.1:2379,http://10.0.0.2:2379\"  # etcd: cluster mode
    cluster-prefix = \"/shoal\"                  # the tree's keys in etcd
    host-id = \"host1\"                          # default: the host name
    cluster-listen = \"10.0.0.1:7420\"           # where other hosts reach this one

    [quota]                                    # guests' quotas; 0: no limit
    nodes = 1000
    watches = 128
    outstanding = 20
    transactions = 10
    node-permissions = 5
    node-size = 2048

  A commented example is contrib/shoald.toml in shoald's source.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// A change is acknowledged once its journal record is on disk.
    Sync,
    /// Acknowledged at once; survives a crash of shoald, not a power loss.
    None,
}

impl From<DurabilityArg> for shoal::Durability {
    fn from(arg: DurabilityArg) -> shoal::Durability {
        match arg {
            DurabilityArg::Sync => shoal::Durability::Sync,
            DurabilityArg::None => shoal::Durability::None,
        }
    }
}

/// Serve a shoal store over the xenstore protocol, in place of xenstored.
#[derive(Parser, Debug)]
#[command(name = "shoald", version, after_long_help = FILE_HELP)]
pub struct Args {
    /// Read settings from this TOML file (its format is at the end of
    /// --help). A flag given as well wins over the file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The store directory (created if it holds no store). Required, as
    /// this flag or in the file.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The xenstore socket. Default /run/xenstored/socket as root,
    /// $XDG_RUNTIME_DIR/shoald/socket otherwise.
    #[arg(long, value_name = "PATH")]
    pub xenstore_socket: Option<PathBuf>,
    /// Also serve a read-only socket here (changes get EROFS).
    #[arg(long, value_name = "PATH")]
    pub xenstore_socket_ro: Option<PathBuf>,
    /// Mode of the socket files (octal). Default 600.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Durability of a store shoald creates (default sync; an existing
    /// store keeps the one it records; change it with `shoal config`).
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityArg>,
    /// A quota for guest domains, NAME=VALUE (repeatable; 0: no limit).
    /// Names and defaults: nodes=1000, watches=128, outstanding=20,
    /// transactions=10, node-permissions=5, node-size=2048. dom0 is held
    /// to none of them.
    #[arg(long = "quota", value_name = "NAME=VALUE", value_parser = parse_quota)]
    pub quotas: Vec<(Quota, u32)>,
    /// Replies and watch events queued for a connection that does not read
    /// them (default 262144; their bytes are bounded too: 2.5 MB for a
    /// guest, 64 MiB for a socket); a watch event that finds its queue full
    /// closes the connection (it is never dropped unnoticed).
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..=QUEUED_MESSAGES_MAX))]
    pub queued_messages: Option<u64>,
    /// Threads that serve requests (default 1, as the stock daemons). One
    /// thread costs the least per request: more add thread wake-ups to
    /// every request, and pay only with more cores than clients keep busy.
    /// A commit that waits for the disk (sync durability) waits on a thread
    /// of its own either way.
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..=THREADS_MAX))]
    pub threads: Option<u64>,
    /// Log every request and its outcome (target `shoald::access`, level
    /// info). Off by default; `--access-log=false` turns off what the file
    /// turns on; a `CONTROL log on|off` request toggles it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub access_log: Option<bool>,
    /// Serve guests' rings from a simulated hypervisor in this directory
    /// (its `pages` file and `evtchn` socket; see `shoald-sim`), for tests
    /// and benchmarks without Xen.
    #[arg(long, value_name = "DIR")]
    pub sim_hypervisor: Option<PathBuf>,
    /// Cluster mode: the etcd cluster's client URLs, comma-separated. The
    /// store becomes this host's replica of the cluster's tree (it must be
    /// empty or a replica of the same tree); writes commit through etcd.
    #[arg(long, value_name = "URLS", value_parser = checked_endpoints)]
    pub cluster: Option<String>,
    /// Cluster mode: the etcd key prefix of the tree (default /shoal).
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    pub cluster_prefix: Option<String>,
    /// Cluster mode: this host's name, unique in the cluster (default: the
    /// machine's host name).
    #[arg(long, value_name = "NAME", value_parser = parse_host_id)]
    pub host_id: Option<String>,
    /// Cluster mode: the address (IP:PORT) other hosts reach this one at,
    /// to send their writes while this host is the writer. Required in
    /// cluster mode.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen)]
    pub cluster_listen: Option<std::net::SocketAddr>,
}

/// What cluster mode takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub host_id: String,
    pub listen: std::net::SocketAddr,
}

const CLUSTER_PREFIX_DEFAULT: &str = "/shoal";

/// Every setting, resolved: flags over the file over the defaults.
#[derive(Debug)]
pub struct Settings {
    pub store: PathBuf,
    pub xenstore_socket: PathBuf,
    pub xenstore_socket_ro: Option<PathBuf>,
    pub socket_mode: u32,
    /// `None`: the store's own (`sync` for a store shoald creates).
    pub durability: Option<shoal::Durability>,
    pub quotas: Quotas,
    pub queued_messages: usize,
    pub threads: usize,
    pub access_log: bool,
    pub sim_hypervisor: Option<PathBuf>,
    pub cluster: Option<ClusterSettings>,
}

impl Settings {
    /// The settings `args` and the file it names make.
    pub fn resolve(args: Args) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => File::load(path)?,
            None => File::default(),
        };
        Settings::merge(args, file, default_socket)
    }

    fn merge(args: Args, file: File, default_socket: fn() -> Result<PathBuf, String>) -> Result<Settings, String> {
        let store = args
            .store
            .or(file.store)
            .ok_or("no store directory: give --store DIR, or `store` in the config file (--config)")?;
        let xenstore_socket = match args.xenstore_socket.or(file.xenstore_socket) {
            Some(path) => path,
            None => default_socket()?,
        };
        let mut quotas = Quotas::default();
        for &(quota, value) in file.quota.iter().flatten().chain(&args.quotas) {
            quotas.set(quota, value);
        }
        let prefix = args.cluster_prefix.or(file.cluster_prefix);
        let host_id = args.host_id.or(file.host_id);
        let listen = args.cluster_listen.or(file.cluster_listen);
        let cluster = match args.cluster.map(|text| parse_endpoints(&text)).transpose()?.or(file.cluster) {
            Some(endpoints) => Some(ClusterSettings {
                endpoints,
                prefix: prefix.unwrap_or_else(|| CLUSTER_PREFIX_DEFAULT.to_string()),
                host_id: match host_id {
                    Some(id) => id,
                    None => parse_host_id(&default_host_id()?)?,
                },
                listen: listen.ok_or(
                    "cluster mode needs the address other hosts reach this one at: give --cluster-listen IP:PORT, \
                     or `cluster-listen` in the config file",
                )?,
            }),
            None => {
                if prefix.is_some() || host_id.is_some() || listen.is_some() {
                    return Err(
                        "cluster-prefix, host-id and cluster-listen are settings of cluster mode: give --cluster too"
                            .into(),
                    );
                }
                None
            }
        };
        Ok(Settings {
            store,
            xenstore_socket,
            xenstore_socket_ro: args.xenstore_socket_ro.or(file.xenstore_socket_ro),
            socket_mode: args.socket_mode.or(file.socket_mode).unwrap_or(SOCKET_MODE_DEFAULT),
            durability: args.durability.or(file.durability).map(Into::into),
            quotas,
            queued_messages: args.queued_messages.or(file.queued_messages).unwrap_or(QUEUED_MESSAGES_DEFAULT) as usize,
            threads: args.threads.or(file.threads).unwrap_or(1) as usize,
            access_log: args.access_log.or(file.access_log).unwrap_or(false),
            sim_hypervisor: args.sim_hypervisor.or(file.sim_hypervisor),
            cluster,
        })
    }
}

fn default_host_id() -> Result<String, String> {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    // The short name: a domain's dots are allowed, but hosts of one
    // cluster usually differ before them.
    Ok(name.split('.').next().unwrap_or_default().to_string())
}

fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = text.split(',').map(str::trim).map(str::to_string).collect();
    for endpoint in &endpoints {
        let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
            return Err(format!("{endpoint:?} is not an etcd client URL such as http://10.0.0.1:2379"));
        }
    }
    Ok(endpoints)
}

fn checked_endpoints(text: &str) -> Result<String, String> {
    parse_endpoints(text).map(|_| text.to_string())
}

fn parse_prefix(text: &str) -> Result<String, String> {
    shoal_cluster::Layout::check_prefix(text).map_err(|e| e.to_string())
}

fn parse_host_id(text: &str) -> Result<String, String> {
    shoal_cluster::check_host_name(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let address: std::net::SocketAddr =
        text.parse().map_err(|_| format!("{text:?} is not an address such as 10.0.0.1:7420"))?;
    if address.ip().is_unspecified() {
        return Err(format!("{text}: give an address other hosts reach this one at, not {}", address.ip()));
    }
    Ok(address)
}

fn default_socket() -> Result<PathBuf, String> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/run/xenstored/socket"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("shoald/socket")),
        _ => Err(
            "not root and XDG_RUNTIME_DIR is not set: give --xenstore-socket, or `xenstore-socket` in the config file"
                .to_string(),
        ),
    }
}

/// An octal file mode, at most 777 (the flag's and the file's).
fn parse_mode(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("{text:?} is not an octal mode"));
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{text} is not a file mode (at most 777)")),
    }
}

fn quota_named(name: &str) -> Result<Quota, String> {
    Quota::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Quota::ALL.iter().map(|q| q.name()).collect();
        format!("no quota is named {name:?} (there are {})", names.join(", "))
    })
}

fn parse_quota(text: &str) -> Result<(Quota, u32), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let quota = quota_named(name)?;
    let value = value.parse().map_err(|_| format!("{value:?} is not a count"))?;
    Ok((quota, value))
}

/// What the file sets; `None` (or no quota) where it is silent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default, deserialize_with = "path")]
    store: Option<PathBuf>,
    #[serde(default, deserialize_with = "path")]
    xenstore_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "path")]
    xenstore_socket_ro: Option<PathBuf>,
    #[serde(default, deserialize_with = "mode")]
    socket_mode: Option<u32>,
    #[serde(default, deserialize_with = "durability")]
    durability: Option<DurabilityArg>,
    #[serde(default, deserialize_with = "queued_messages")]
    queued_messages: Option<u64>,
    #[serde(default, deserialize_with = "threads")]
    threads: Option<u64>,
    access_log: Option<bool>,
    #[serde(default, deserialize_with = "path")]
    sim_hypervisor: Option<PathBuf>,
    #[serde(default, deserialize_with = "quota_table")]
    quota: Option<Vec<(Quota, u32)>>,
    #[serde(default, deserialize_with = "endpoints")]
    cluster: Option<Vec<String>>,
    #[serde(default, deserialize_with = "prefix")]
    cluster_prefix: Option<String>,
    #[serde(default, deserialize_with = "host_id")]
    host_id: Option<String>,
    #[serde(default, deserialize_with = "listen")]
    cluster_listen: Option<std::net::SocketAddr>,
}

impl File {
    fn load(path: &Path) -> Result<File, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let mut file = File::parse(&text).map_err(|e| describe(path, &text, &e))?;
        // Relative paths are the file's directory's, wherever shoald starts.
        let base = path.parent().unwrap_or(Path::new(""));
        for setting in
            [&mut file.store, &mut file.xenstore_socket, &mut file.xenstore_socket_ro, &mut file.sim_hypervisor]
        {
            if let Some(p) = setting.as_mut() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    fn parse(text: &str) -> Result<File, toml::de::Error> {
        toml::from_str(text)
    }
}

/// `error` as one line: `FILE:LINE:COLUMN: KEY: what is wrong`.
fn describe(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().replacen("unknown field", "unknown key", 1);
    let Some(span) = error.span() else {
        return format!("{}: {message}", path.display());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    match key_at(text, span.start) {
        Some(key) => format!("{}:{line}:{column}: {key}: {message}", path.display()),
        None => format!("{}:{line}:{column}: {message}", path.display()),
    }
}

/// The dotted key (`quota.nodes`) whose name or value holds byte `at`:
/// the innermost, if tables nest.
fn key_at(text: &str, at: usize) -> Option<String> {
    fn walk(table: &toml::de::DeTable, prefix: &str, at: usize, best: &mut Option<(usize, String)>) {
        for (key, value) in table.iter() {
            let name =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            for span in [key.span(), value.span()] {
                if span.contains(&at) && best.as_ref().is_none_or(|(len, _)| span.len() < *len) {
                    *best = Some((span.len(), name.clone()));
                }
            }
            if let toml::de::DeValue::Table(inner) = value.get_ref() {
                walk(inner, &name, at, best);
            }
        }
    }
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut best = None;
    walk(root.get_ref(), "", at, &mut best);
    best.map(|(_, name)| name)
}

/// A visitor of a string, checked by `parse`.
struct Text<F> {
    expecting: &'static str,
    parse: F,
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for Text<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

/// A visitor of a whole number within `min..=max`.
struct Count {
    min: u64,
    max: u64,
    note: &'static str,
}

impl Visitor<'_> for Count {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from {}{} to {}", self.min, self.note, self.max)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(E::invalid_value(Unexpected::Unsigned(n), &self))
        }
    }
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let parse = |text: &str| match text {
        "" => Err("an empty path".to_string()),
        _ => Ok(PathBuf::from(text)),
    };
    d.deserialize_str(Text { expecting: "a path (a string)", parse }).map(Some)
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_str(Text { expecting: "an octal mode as a string, such as \"660\"", parse: parse_mode }).map(Some)
}

fn durability<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DurabilityArg>, D::Error> {
    let parse = |text: &str| {
        DurabilityArg::from_str(text, false)
            .map_err(|_| format!("no durability is named {text:?} (there are sync, none)"))
    };
    d.deserialize_str(Text { expecting: "\"sync\" or \"none\"", parse }).map(Some)
}

fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_str(Text { expecting: "etcd client URLs, comma-separated, as a string", parse: parse_endpoints })
        .map(Some)
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_str(Text { expecting: "an etcd key prefix such as \"/shoal\"", parse: parse_prefix }).map(Some)
}

fn host_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_str(Text { expecting: "a host name", parse: parse_host_id }).map(Some)
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    d.deserialize_str(Text { expecting: "an address such as \"10.0.0.1:7420\"", parse: parse_listen }).map(Some)
}

fn queued_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_u64(Count { min: 1, max: QUEUED_MESSAGES_MAX, note: "" }).map(Some)
}

fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_u64(Count { min: 1, max: THREADS_MAX, note: "" }).map(Some)
}

fn quota_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<(Quota, u32)>>, D::Error> {
    struct Name(Quota);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
            d.deserialize_str(Text { expecting: "a quota's name", parse: quota_named }).map(Name)
        }
    }
    struct Value(u32);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
            let count = Count { min: 0, max: u32::MAX.into(), note: " (no limit)" };
            d.deserialize_u64(count).map(|n| Value(n as u32))
        }
    }
    struct Table;
    impl<'de> Visitor<'de> for Table {
        type Value = Vec<(Quota, u32)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of quotas, such as `[quota]` then `nodes = 1000`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut quotas: Vec<(Quota, u32)> = Vec::new();
            while let Some(Name(quota)) = map.next_key()? {
                let Value(value) = map.next_value()?;
                if quotas.iter().any(|&(q, _)| q == quota) {
                    let name = quota.name();
                    return Err(de::Error::custom(format!("{name} is set twice (`permissions` is its old name)")));
                }
                quotas.push((quota, value));
            }
            Ok(quotas)
        }
    }
    d.deserialize_map(Table).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_default_socket() -> Result<PathBuf, String> {
        Err("no default socket in tests".into())
    }

    fn settings(flags: &[&str], file: &str) -> Result<Settings, String> {
        let args =
            Args::try_parse_from(std::iter::once("shoald").chain(flags.iter().copied())).map_err(|e| e.to_string())?;
        let file = File::parse(file).map_err(|e| describe(Path::new("t.toml"), file, &e))?;
        Settings::merge(args, file, no_default_socket)
    }

    const EVERY_KEY: &str = r#"
        store = "/s"
        xenstore-socket = "/x/socket"
        xenstore-socket-ro = "/x/socket_ro"
        socket-mode = "0640"
        durability = "none"
        queued-messages = 77
        threads = 3
        access-log = true
        sim-hypervisor = "/sim"
        cluster = "http://127.0.0.1:2379, http://127.0.0.2:2379"
        cluster-prefix = "/pool/"
        host-id = "h-1"
        cluster-listen = "127.0.0.1:7420"

        [quota]
        nodes = 1
        watches = 2
        outstanding = 3
        transactions = 4
        node-permissions = 5
        node-size = 0
    "#;

    #[test]
    fn the_file_sets_every_setting() {
        let s = settings(&[], EVERY_KEY).unwrap();
        assert_eq!(s.store, Path::new("/s"));
        assert_eq!(s.xenstore_socket, Path::new("/x/socket"));
        assert_eq!(s.xenstore_socket_ro.as_deref(), Some(Path::new("/x/socket_ro")));
        assert_eq!(s.socket_mode, 0o640);
        assert_eq!(s.durability, Some(shoal::Durability::None));
        assert_eq!(s.queued_messages, 77);
        assert_eq!(s.threads, 3);
        assert!(s.access_log);
        assert_eq!(s.sim_hypervisor.as_deref(), Some(Path::new("/sim")));
        let values: Vec<u32> = Quota::ALL.iter().map(|&q| s.quotas.get(q)).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 0]);
    }

    #[test]
    fn without_a_file_or_flags_the_defaults() {
        let s = settings(&["--store", "/s", "--xenstore-socket", "/x"], "").unwrap();
        assert_eq!(s.xenstore_socket_ro, None);
        assert_eq!(s.socket_mode, 0o600);
        assert_eq!(s.durability, None);
        assert_eq!(s.queued_messages, 262144);
        assert_eq!(s.threads, 1);
        assert!(!s.access_log);
        assert_eq!(s.sim_hypervisor, None);
        assert_eq!(s.quotas, Quotas::default());
        // The default socket is asked for only when neither sets one.
        assert_eq!(settings(&["--store", "/s"], "").unwrap_err(), "no default socket in tests");
        assert!(settings(&["--xenstore-socket", "/x"], "").unwrap_err().contains("no store directory"));
    }

    #[test]
    fn flags_win_over_the_file_one_quota_at_a_time() {
        let flags = [
            "--store=/s2",
            "--xenstore-socket=/y/socket",
            "--xenstore-socket-ro=/y/ro",
            "--socket-mode=600",
            "--durability=sync",
            "--queued-messages=5",
            "--threads=2",
            "--access-log=false",
            "--sim-hypervisor=/sim2",
            "--quota=watches=20",
            "--quota=node-size=4096",
        ];
        let s = settings(&flags, EVERY_KEY).unwrap();
        assert_eq!(s.store, Path::new("/s2"));
        assert_eq!(s.xenstore_socket, Path::new("/y/socket"));
        assert_eq!(s.xenstore_socket_ro.as_deref(), Some(Path::new("/y/ro")));
        assert_eq!(s.socket_mode, 0o600);
        assert_eq!(s.durability, Some(shoal::Durability::Sync));
        assert_eq!(s.queued_messages, 5);
        assert_eq!(s.threads, 2);
        assert!(!s.access_log);
        assert_eq!(s.sim_hypervisor.as_deref(), Some(Path::new("/sim2")));
        let values: Vec<u32> = Quota::ALL.iter().map(|&q| s.quotas.get(q)).collect();
        assert_eq!(values, [1, 20, 3, 4, 5, 4096]);
        // A bare --access-log turns it on.
        assert!(settings(&["--access-log"], "store = '/s'\nxenstore-socket = '/x'").unwrap().access_log);
    }

    #[test]
    fn threads_from_one_to_the_maximum() {
        let base = "store = '/s'\nxenstore-socket = '/x'\n";
        for n in [1, 2, THREADS_MAX - 1, THREADS_MAX] {
            assert_eq!(settings(&[&format!("--threads={n}")], base).unwrap().threads as u64, n);
            assert_eq!(settings(&[], &format!("{base}threads = {n}")).unwrap().threads as u64, n);
        }
        for n in [0, THREADS_MAX + 1] {
            let error = settings(&[&format!("--threads={n}")], base).unwrap_err();
            assert!(error.contains(&format!("{n} is not in 1..=256")), "{error}");
            assert!(settings(&[], &format!("{base}threads = {n}")).unwrap_err().contains("from 1 to 256"));
        }
    }

    /// The error for `file`, with the part after `t.toml:`.
    fn refused(file: &str) -> String {
        let error = settings(&[], file).unwrap_err();
        error.strip_prefix("t.toml:").unwrap_or_else(|| panic!("no file name in {error:?}")).to_string()
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases = [
            ("store = '/s'\nstor = '/t'", "2:1: stor: unknown key `stor`, expected one of `store`"),
            (
                "queued-messages = 'many'",
                "1:19: queued-messages: invalid type: string \"many\", expected a whole number",
            ),
            (
                "queued-messages = 0",
                "1:19: queued-messages: invalid value: integer `0`, expected a whole number from 1 to",
            ),
            ("queued-messages = 1048577", "1:19: queued-messages: invalid value: integer `1048577`"),
            ("threads = 0", "1:11: threads: invalid value: integer `0`, expected a whole number from 1 to 256"),
            ("threads = 257", "1:11: threads: invalid value: integer `257`, expected a whole number from 1 to 256"),
            ("socket-mode = 600", "1:15: socket-mode: invalid type: integer `600`, expected an octal mode as a string"),
            ("socket-mode = '1777'", "1:15: socket-mode: 1777 is not a file mode (at most 777)"),
            ("socket-mode = '68'", "1:15: socket-mode: \"68\" is not an octal mode"),
            ("durability = 'fast'", "1:14: durability: no durability is named \"fast\" (there are sync, none)"),
            ("access-log = 'yes'", "1:14: access-log: invalid type: string \"yes\", expected a boolean"),
            ("store = ''", "1:9: store: an empty path"),
            ("store = 5", "1:9: store: invalid type: integer `5`, expected a path (a string)"),
            (
                "[quota]\nnodes = 'lots'",
                "2:9: quota.nodes: invalid type: string \"lots\", expected a whole number from 0 (no limit)",
            ),
            ("[quota]\nnodes = -1", "2:9: quota.nodes: invalid value: integer `-1`"),
            ("[quota]\nnodes = 4294967296", "2:9: quota.nodes: invalid value: integer `4294967296`"),
            ("[quota]\nmemory = 5", "2:1: quota.memory: no quota is named \"memory\" (there are nodes, watches,"),
            ("quota.memory = 5", "1:7: quota.memory: no quota is named \"memory\""),
            ("quota = 5", "1:9: quota: invalid type: integer `5`, expected a table of quotas"),
            ("[quota]\npermissions = 1\nnode-permissions = 2", "1:1: quota: node-permissions is set twice"),
            ("[quotas]\nnodes = 1", "1:2: quotas: unknown key `quotas`"),
            ("store = /s", "1:9: string values must be quoted"),
            ("store = '/s'\nstore = '/t'", "2:1: duplicate key"),
        ];
        for (file, expected) in cases {
            let error = refused(file);
            assert!(error.starts_with(expected), "{file:?}: {error:?} does not start with {expected:?}");
        }
    }

    #[test]
    fn the_old_quota_name_is_accepted() {
        let s = settings(&[], "store = '/s'\nxenstore-socket = '/x'\n[quota]\npermissions = 9").unwrap();
        assert_eq!(s.quotas.get(Quota::NodePermissions), 9);
    }

    #[test]
    fn relative_paths_are_the_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(&path, "store = 'db'\nxenstore-socket = '/abs/socket'\nsim-hypervisor = '../sim'").unwrap();
        let file = File::load(&path).unwrap();
        assert_eq!(file.store, Some(dir.path().join("db")));
        assert_eq!(file.xenstore_socket.as_deref(), Some(Path::new("/abs/socket")));
        assert_eq!(file.sim_hypervisor, Some(dir.path().join("../sim")));
        let error = File::load(&dir.path().join("none.toml")).unwrap_err();
        assert!(error.starts_with("cannot read the config file "), "{error}");
    }

    /// The shipped example parses, and so does it with every commented
    /// setting uncommented, which then sets every key `--help` shows.
    #[test]
    fn the_example_file_and_the_help_show_every_key() {
        let example = include_str!("../../../contrib/shoald.toml");
        File::parse(example).unwrap();
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with('[') || (rest.contains(" = ") && !rest.starts_with(' ')) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let file = File::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(file.store.is_some() && file.xenstore_socket.is_some() && file.xenstore_socket_ro.is_some());
        assert!(file.socket_mode.is_some() && file.durability.is_some() && file.queued_messages.is_some());
        assert!(file.access_log.is_some() && file.sim_hypervisor.is_some());
        assert!(file.cluster.is_some() && file.cluster_prefix.is_some());
        assert!(file.host_id.is_some() && file.cluster_listen.is_some());
        let quotas: Vec<Quota> = file.quota.unwrap().iter().map(|&(q, _)| q).collect();
        assert!(quotas.len() == Quota::ALL.len() && Quota::ALL.iter().all(|q| quotas.contains(q)), "{quotas:?}");
        // The help's sample is a valid file too, and sets the same keys.
        let sample: String = FILE_HELP
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .map(|l| format!("{}\n", l.split(" #").next().unwrap()))
            .collect();
        let file = File::parse(&sample).unwrap_or_else(|e| panic!("{e}\n{sample}"));
        assert!(file.store.is_some() && file.xenstore_socket.is_some() && file.xenstore_socket_ro.is_some());
        assert!(file.socket_mode.is_some() && file.durability.is_some() && file.queued_messages.is_some());
        assert!(file.access_log.is_some() && file.sim_hypervisor.is_some());
        assert!(file.cluster.is_some() && file.cluster_prefix.is_some());
        assert!(file.host_id.is_some() && file.cluster_listen.is_some());
        assert_eq!(file.quota.unwrap().len(), Quota::ALL.len());
    }

    #[test]
    fn cluster_settings_are_checked_and_go_together() {
        let s = settings(&[], EVERY_KEY).unwrap();
        let cluster = s.cluster.unwrap();
        assert_eq!(cluster.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]);
        assert_eq!(cluster.prefix, "/pool");
        assert_eq!(cluster.host_id, "h-1");
        assert_eq!(cluster.listen, "127.0.0.1:7420".parse().unwrap());
        // Flags win; the prefix has a default.
        let s = settings(
            &[
                "--store=/s",
                "--xenstore-socket=/x",
                "--cluster=http://e:1",
                "--host-id=h2",
                "--cluster-listen=10.1.1.1:1",
            ],
            "",
        )
        .unwrap();
        let cluster = s.cluster.unwrap();
        assert_eq!((cluster.prefix.as_str(), cluster.host_id.as_str()), ("/shoal", "h2"));
        // Without a listening address, or the settings without cluster mode.
        assert!(settings(&["--store=/s", "--xenstore-socket=/x", "--cluster=http://e:1", "--host-id=h"], "")
            .unwrap_err()
            .contains("--cluster-listen"));
        for alone in ["--cluster-prefix=/p", "--host-id=h", "--cluster-listen=127.0.0.1:1"] {
            assert!(
                settings(&["--store=/s", "--xenstore-socket=/x", alone], "")
                    .unwrap_err()
                    .contains("give --cluster too"),
                "{alone}"
            );
        }
        for (flag, why) in [
            ("--cluster=e:2379", "not an etcd client URL"),
            ("--cluster=http://", "not an etcd client URL"),
            ("--cluster-prefix=shoal", "not a key prefix"),
            ("--cluster-prefix=/", "not a key prefix"),
            ("--cluster-prefix=/a b", "not a key prefix"),
            ("--cluster-prefix=/a#b", "not a key prefix"),
            ("--host-id=a/b", "not a host name"),
            ("--cluster-listen=0.0.0.0:1", "not 0.0.0.0"),
            ("--cluster-listen=host:1", "not an address"),
            ("--cluster-listen=127.0.0.1", "not an address"),
        ] {
            let mut flags = vec!["--store=/s", "--xenstore-socket=/x", flag];
            for default in ["--cluster=http://e:1", "--cluster-listen=127.0.0.1:1", "--host-id=h"] {
                if !flag.starts_with(default.split('=').next().unwrap()) {
                    flags.push(default);
                }
            }
            let error = settings(&flags, "").unwrap_err();
            assert!(error.contains(why), "{flag}: {error}");
        }
        // A host name at the limit, and just over it.
        let at = format!("--host-id={}", "h".repeat(shoal_cluster::HOST_NAME_MAX));
        let over = format!("--host-id={}", "h".repeat(shoal_cluster::HOST_NAME_MAX + 1));
        let base = ["--cluster=http://e:1", "--cluster-listen=127.0.0.1:1"];
        assert!(settings(&["--store=/s", "--xenstore-socket=/x", base[0], base[1], &at], "").is_ok());
        assert!(settings(&["--store=/s", "--xenstore-socket=/x", base[0], base[1], &over], "")
            .unwrap_err()
            .contains("not a host name"));
        assert!(
            refused("store = \"/s\"\nxenstore-socket = \"/x\"\nhost-id = \"a b\"\n").starts_with("3:11: host-id:"),
            "{}",
            refused("store = \"/s\"\nxenstore-socket = \"/x\"\nhost-id = \"a b\"\n")
        );
    }

    #[test]
    fn flags_keep_their_checks() {
        assert!(settings(&["--socket-mode=1000"], "").unwrap_err().contains("at most 777"));
        assert!(settings(&["--queued-messages=0"], "").unwrap_err().contains("0 is not in 1..=1048576"));
        assert!(settings(&["--quota=memory=1"], "").unwrap_err().contains("no quota is named \"memory\""));
    }
}
