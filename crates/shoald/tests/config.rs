//! `shoald --config FILE`: the real binary, started from a TOML file. The
//! file's settings take effect (sockets, their mode, quotas, durability, the
//! access log), a flag wins over the file, and every kind of bad file stops
//! shoald at start with a message that names the file and the key.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{nul, Client};
use shoald::wire::MsgType;

const SHOALD: &str = env!("CARGO_BIN_EXE_shoald");

/// A shoald started by a test; stopped with SIGTERM when dropped.
struct Running {
    child: Option<Child>,
    /// The `shoald ready: ...` line, without its newline.
    ready: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Starts shoald with `args` in `cwd`; panics, with its stderr, if it
    /// does not say it is ready.
    fn start(cwd: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(SHOALD)
            .args(args)
            .current_dir(cwd)
            .env("SHOALD_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoald");
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if !line.starts_with("shoald ready: ") {
            let _ = child.wait();
            panic!("shoald did not start: {line:?}; it said {:?}", stderr.join().unwrap());
        }
        Running { child: Some(child), ready: line.trim_end().to_string(), stderr: Some(stderr) }
    }

    /// Stops shoald (SIGTERM, as systemd does) and returns what it logged.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        terminate(&child);
        assert!(child.wait().unwrap().success(), "shoald failed to stop cleanly");
        self.stderr.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// Runs shoald with `args`, which must make it refuse to start; returns
/// what it said on stderr.
fn refused(cwd: &Path, args: &[&str]) -> String {
    let mut child = Command::new(SHOALD)
        .args(args)
        .current_dir(cwd)
        .env("SHOALD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoald");
    // Its stdout closes when it exits; a line there means it got ready.
    let stdout = child.stdout.take().unwrap();
    let (sender, first_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    match first_line.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.is_empty() => {}
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoald {args:?} should have refused to start; its stdout: {outcome:?}");
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "shoald {args:?} exited with success; it said {stderr:?}");
    stderr
}

/// `dir/name` holding `text`; its path, as a string.
fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn quota(client: &mut Client, name: &str) -> String {
    client.request(MsgType::GetQuota, 0, &nul(name)).text()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The durability the store in `dir` records (shoald stopped).
fn recorded_durability(dir: &Path) -> shoal::Durability {
    let store = shoal::Store::open(dir, shoal::Options::default()).unwrap();
    store.options().durability
}

#[test]
fn a_file_sets_the_sockets_a_quota_and_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("sockets/rw");
    let ro = dir.path().join("sockets/ro");
    let text = format!(
        r#"
# The store path is relative: to the file's directory, not shoald's.
store = "../store"
xenstore-socket = "{}"
xenstore-socket-ro = "{}"
socket-mode = "640"
durability = "none"
access-log = true

[quota]
nodes = 7
node-permissions = 3
"#,
        rw.display(),
        ro.display()
    );
    write_file(dir.path(), "etc/shoald.toml", &text);
    // Started from another directory, with a relative --config.
    let shoald = Running::start(dir.path(), &["--config", "etc/shoald.toml"]);
    assert_eq!(shoald.ready, format!("shoald ready: {} {}", rw.display(), ro.display()));
    assert_eq!((mode(&rw), mode(&ro)), (0o640, 0o640));

    let mut client = Client::connect(&rw);
    client.write("/from-config", b"yes").unwrap();
    assert_eq!(client.read("/from-config").unwrap(), b"yes");
    assert_eq!(quota(&mut client, "nodes"), "7");
    assert_eq!(quota(&mut client, "node-permissions"), "3");
    assert_eq!(quota(&mut client, "watches"), "128", "a quota the file does not set keeps its default");

    let mut reader = Client::connect(&ro);
    assert_eq!(reader.read("/from-config").unwrap(), b"yes");
    assert_eq!(reader.write("/from-config", b"no"), Err("EROFS".to_string()));

    let log = shoald.stop();
    assert!(log.contains("WRITE /from-config -> OK"), "the access log is on: {log}");
    assert!(dir.path().join("store").is_dir(), "the store is beside etc/, where the file said");
    assert_eq!(recorded_durability(&dir.path().join("store")), shoal::Durability::None);
}

#[test]
fn a_flag_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        r#"
store = "{d}/store"
xenstore-socket = "{d}/file-socket"
socket-mode = "600"
durability = "none"
access-log = true

[quota]
nodes = 7
watches = 9
"#
    );
    let config = write_file(dir.path(), "shoald.toml", &text);
    let flag_socket = dir.path().join("flag-socket");
    let shoald = Running::start(
        dir.path(),
        &[
            "--config",
            &config,
            "--xenstore-socket",
            flag_socket.to_str().unwrap(),
            "--socket-mode",
            "660",
            "--durability",
            "sync",
            "--access-log=false",
            "--quota",
            "nodes=11",
        ],
    );
    assert_eq!(shoald.ready, format!("shoald ready: {}", flag_socket.display()));
    assert!(!dir.path().join("file-socket").exists(), "the file's socket was bound too");
    assert_eq!(mode(&flag_socket), 0o660);

    let mut client = Client::connect(&flag_socket);
    assert_eq!(quota(&mut client, "nodes"), "11", "the flag's quota");
    assert_eq!(quota(&mut client, "watches"), "9", "the file's other quota stays");
    assert_eq!(quota(&mut client, "outstanding"), "20", "the default");
    client.write("/from-flags", b"yes").unwrap();

    let log = shoald.stop();
    assert!(!log.contains("shoald::access"), "--access-log=false wins over the file: {log}");
    assert_eq!(recorded_durability(&dir.path().join("store")), shoal::Durability::Sync);
}

/// Writes a file that is valid but for `bad` (its store and socket are in
/// `dir`: were `bad` ignored, shoald would start), runs shoald on it and
/// checks it refused with a message naming the file and each of `expected`.
fn refuses(bad: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!("store = \"{d}/store\"\nxenstore-socket = \"{d}/socket\"\n{bad}\n");
    let config = write_file(dir.path(), "shoald.toml", &text);
    let stderr = refused(dir.path(), &["--config", &config]);
    assert!(stderr.starts_with(&format!("shoald: {config}:")), "{bad:?}: the message names no file: {stderr:?}");
    for part in expected {
        assert!(stderr.contains(part), "{bad:?}: {part:?} is not in {stderr:?}");
    }
    assert!(!dir.path().join("socket").exists() && !dir.path().join("store").exists(), "{bad:?}: shoald started");
}

#[test]
fn an_unknown_key_is_refused() {
    refuses("queued-mesages = 10", &[":3:1: queued-mesages: unknown key `queued-mesages`", "`queued-messages`"]);
    refuses("[quotas]\nnodes = 10", &[":3:2: quotas: unknown key `quotas`"]);
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    refuses("queued-messages = \"many\"", &[":3:19: queued-messages: invalid type: string \"many\""]);
    refuses("access-log = \"yes\"", &[":3:14: access-log: invalid type: string \"yes\", expected a boolean"]);
    refuses("socket-mode = 660", &[":3:15: socket-mode: invalid type: integer `660`", "as a string"]);
    refuses("sim-hypervisor = 1", &[":3:18: sim-hypervisor: invalid type: integer `1`, expected a path"]);
    refuses("[quota]\nnodes = \"lots\"", &[":4:9: quota.nodes: invalid type: string \"lots\""]);
    refuses("quota = 5", &[":3:9: quota: invalid type: integer `5`, expected a table of quotas"]);
}

#[test]
fn an_unknown_quota_is_refused() {
    refuses("[quota]\nnodes = 5\nmemory = 5", &[":5:1: quota.memory: no quota is named \"memory\"", "node-size"]);
    refuses("quota.watch = 5", &[":3:7: quota.watch: no quota is named \"watch\""]);
}

#[test]
fn a_bad_value_is_refused() {
    refuses("socket-mode = \"1777\"", &[":3:15: socket-mode: 1777 is not a file mode (at most 777)"]);
    refuses("socket-mode = \"rw\"", &[":3:15: socket-mode: \"rw\" is not an octal mode"]);
    refuses("queued-messages = 0", &[":3:19: queued-messages: invalid value: integer `0`", "from 1 to 1048576"]);
    refuses("queued-messages = 2000000", &[":3:19: queued-messages: invalid value: integer `2000000`"]);
    refuses("durability = \"fast\"", &[":3:14: durability: no durability is named \"fast\""]);
    refuses("[quota]\nwatches = -1", &[":4:11: quota.watches: invalid value: integer `-1`"]);
    refuses("xenstore-socket-ro = \"\"", &[":3:22: xenstore-socket-ro: an empty path"]);
}

#[test]
fn a_file_that_is_not_toml_is_refused_with_its_line() {
    refuses("durability = sync", &[":3:14: ", "string values must be quoted"]);
    refuses("store = \"/elsewhere\"", &[":3:1: duplicate key"]);
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.toml");
    let stderr = refused(dir.path(), &["--config", missing.to_str().unwrap()]);
    let expected = format!("shoald: cannot read the config file {}: No such file or directory", missing.display());
    assert!(stderr.starts_with(&expected), "{stderr:?}");
}

#[test]
fn a_store_is_required_from_the_flags_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "shoald.toml", &format!("xenstore-socket = \"{}/s\"\n", dir.path().display()));
    let stderr = refused(dir.path(), &["--config", &config]);
    assert!(stderr.contains("no store directory: give --store DIR, or `store` in the config file"), "{stderr:?}");
    // The flag supplies what the file lacks.
    let store = dir.path().join("store");
    let shoald = Running::start(dir.path(), &["--config", &config, "--store", store.to_str().unwrap()]);
    assert_eq!(shoald.ready, format!("shoald ready: {}/s", dir.path().display()));
    drop(shoald);
    assert!(store.is_dir());
}

#[test]
fn the_help_describes_the_file() {
    let output = Command::new(SHOALD).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let keys = [
        "store = ",
        "xenstore-socket = ",
        "xenstore-socket-ro = ",
        "socket-mode = ",
        "durability = ",
        "queued-messages = ",
        "threads = ",
        "access-log = ",
        "sim-hypervisor = ",
        "[quota]",
        "nodes = 1000",
        "watches = 128",
        "outstanding = 20",
        "transactions = 10",
        "node-permissions = 5",
        "node-size = 2048",
    ];
    assert!(help.contains("--config <PATH>"), "{help}");
    for key in keys {
        assert!(help.contains(key), "--help does not show {key:?}:\n{help}");
    }
}
