//! shoald in cluster mode: three shoald processes, each over its own store,
//! on a 3-member etcd cluster on this machine. Writes through any of them
//! commit through etcd; every host serves the same tree, and its readers
//! see versions in one order.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{check_versions_agree, follow_store, tree, Seen};
use common::{shoal_binary, Client, Shoald};
use shoal_testkit::etcd::EtcdCluster;

const PREFIX: &str = "/shoald-test";

fn start_host(cluster: &EtcdCluster, name: &str) -> Shoald {
    common::cluster::start_host(cluster, PREFIX, name)
}

/// Waits until `read` on `client` gives `want` (another host's write
/// arrives through etcd).
fn until_read(client: &mut Client, path: &str, want: &[u8]) {
    let start = Instant::now();
    loop {
        if client.read(path).as_deref() == Ok(want) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{path} never read {:?}", String::from_utf8_lossy(want));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Adds one to `path` in a xenstore transaction, again after EAGAIN.
fn increment(client: &mut Client, path: &str) {
    loop {
        let tx = client.start_transaction();
        let mut payload = common::nul(path);
        let value: u64 = match client.request(shoald::wire::MsgType::Read, tx, &payload).result() {
            Ok(v) => String::from_utf8(v).unwrap().parse().unwrap(),
            Err(e) if e == "ENOENT" => 0,
            Err(e) => panic!("read in a transaction: {e}"),
        };
        payload.extend_from_slice((value + 1).to_string().as_bytes());
        client.request(shoald::wire::MsgType::Write, tx, &payload).result().unwrap();
        match client.end_transaction(tx, true) {
            Ok(()) => return,
            Err(e) if e == "EAGAIN" => continue,
            Err(e) => panic!("TRANSACTION_END: {e}"),
        }
    }
}

#[test]
fn three_hosts_serve_one_tree_written_through_any_of_them() {
    const EACH: usize = 15;
    let cluster = EtcdCluster::start(3);
    let hosts: Vec<Shoald> = ["h1", "h2", "h3"].iter().map(|name| start_host(&cluster, name)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = hosts.iter().map(|h| follow_store(h.dir.path().join("store"), "/", stop.clone())).collect();
    let mut clients: Vec<Client> = hosts.iter().map(Shoald::connect).collect();

    // The tree is prepared for xenstore once, by whichever host came first.
    for client in &mut clients {
        assert_eq!(client.directory("/tool").unwrap(), ["xenstored"]);
    }

    // A watcher on h3 hears of a write made on h1.
    clients[2].watch("/data", "tok").unwrap();
    assert_eq!(clients[2].next_event(Duration::from_secs(5)), Some(("/data".into(), "tok".into())));

    // Each host writes; it reads its own write at once, and the others
    // soon after.
    for (i, client) in clients.iter_mut().enumerate() {
        let path = format!("/data/h{}", i + 1);
        client.write(&path, format!("from h{}", i + 1).as_bytes()).unwrap();
        assert_eq!(client.read(&path).unwrap(), format!("from h{}", i + 1).as_bytes());
    }
    assert_eq!(clients[2].next_event(Duration::from_secs(10)), Some(("/data/h1".into(), "tok".into())));
    for client in &mut clients {
        for i in 1..=3 {
            until_read(client, &format!("/data/h{i}"), format!("from h{i}").as_bytes());
        }
    }

    // Transactions on every host at once: increments of one counter, none
    // lost (each host's TRANSACTION_END is checked by the one writer).
    let sockets: Vec<_> = hosts.iter().map(|h| h.socket.clone()).collect();
    let runs: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket);
                for _ in 0..EACH {
                    increment(&mut client, "/counter");
                }
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    for client in &mut clients {
        until_read(client, "/counter", (3 * EACH).to_string().as_bytes());
    }

    // Removal and permissions replicate too.
    clients[1].rm("/data/h2").unwrap();
    until_read(&mut clients[0], "/data/h3", b"from h3");
    let start = Instant::now();
    while clients[0].read("/data/h2") != Err("ENOENT".into()) {
        assert!(start.elapsed() < Duration::from_secs(20), "the removal never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The `shoal` CLI writes on any host through its shoald, and the
    // cluster: its write reaches the other hosts.
    let store = hosts[2].dir.path().join("store");
    let out = Command::new(shoal_binary()).arg("put").arg(&store).args(["/from-cli", "yes"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until_read(&mut clients[0], "/from-cli", b"yes");

    // A bulk load (`shoal import`) through a host commits as several
    // transactions: more entries and bytes than etcd takes in one, deep
    // paths whose ancestors are nodes too, a value that goes as a blob.
    let big = "b".repeat(100 << 10);
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!("{{\"path\": \"/imported/{}/{i}\", \"value\": \"{}\"}}\n", i % 7, "v".repeat(i * 100)));
    }
    lines.push_str(&format!("{{\"path\": \"/imported/big\", \"value\": \"{big}\"}}\n"));
    // Each of these adds four ancestors: 64 of them are five times etcd's
    // 128 operations, so the host halves its transactions until they fit.
    for i in 0..100 {
        lines.push_str(&format!("{{\"path\": \"/imported/deep/{i}/a/b/c\", \"value\": \"{i}\"}}\n"));
    }
    let import = |input: &str| {
        let mut child = Command::new(shoal_binary())
            .arg("import")
            .arg(&store)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = import(&lines);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until_read(&mut clients[0], "/imported/big", big.as_bytes());
    let value_299 = "v".repeat(29_900);
    until_read(&mut clients[1], "/imported/5/299", value_299.as_bytes());
    until_read(&mut clients[2], "/imported/deep/99/a/b/c", b"99");
    assert_eq!(clients[2].directory("/imported/deep").unwrap().len(), 100);
    // One the cluster refuses part way: what came before it is committed,
    // and the error says so.
    let mut refused = String::new();
    for i in 0..100 {
        refused.push_str(&format!("{{\"path\": \"/partial/{i}\", \"value\": \"x\"}}\n"));
    }
    refused.push_str("{\"path\": \"/.shoald/cluster/revision\", \"value\": \"1\"}\n");
    let out = import(&refused);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("its first 64 of 101 entries were committed"), "{stderr}");
    until_read(&mut clients[0], "/partial/63", b"x");
    assert_eq!(clients[0].read("/partial/64"), Err("ENOENT".into()));

    // Every host holds the same tree; every reader saw revisions in
    // increasing order, and any revision two hosts both showed held the
    // same tree on both.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for (host, seen) in seen.iter().enumerate() {
        assert!(seen.versions.len() > 10, "host {host} saw {} versions", seen.versions.len());
    }
    check_versions_agree(&seen.iter().collect::<Vec<_>>());
    let trees: Vec<_> = hosts
        .iter()
        .map(|h| tree(&shoal::Reader::open(h.dir.path().join("store")).unwrap().snapshot().unwrap()))
        .collect();
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[1], trees[2]);
}
