//! Quotas, each at its limit, just below and just above, for a guest over
//! its ring; dom0 is held to none of them. Then the requests that read and
//! change quotas and features, and `CONTROL`.

mod common;

use std::time::Duration;

use common::guests::{host, host_with};
use shoald::ring::page;
use shoald::wire::{Header, MsgType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_per_domain() {
    let mut host = host_with(8, &["--durability", "none", "--quota", "nodes=10"]).await;
    let mut guest = host.guest(1).await;
    // The home counts: the guest owns it.
    for i in 1..9 {
        guest.write(&format!("n{i}"), b"").await.unwrap();
    }
    // 9 owned: a write that would create two nodes does not fit, and
    // creates nothing.
    assert_eq!(guest.write("a/b", b"").await, Err("ENOSPC".into()));
    assert_eq!(guest.read("a").await, Err("ENOENT".into()));
    guest.write("n9", b"").await.unwrap(); // the 10th
    assert_eq!(guest.write("n10", b"").await, Err("ENOSPC".into()));
    assert_eq!(guest.call(MsgType::Mkdir, 0, b"n10\0").await, Err("ENOSPC".into()));
    // Writing what exists creates nothing and is allowed.
    guest.write("n9", b"again").await.unwrap();
    // A removal gives room back.
    guest.rm("n9").await.unwrap();
    guest.write("n10", b"").await.unwrap();
    assert_eq!(guest.write("n11", b"").await, Err("ENOSPC".into()));
    // dom0 is not held to it. What it creates in the guest's home inherits
    // the home's permissions, owner included (as with cxenstored), so it
    // counts against the guest's quota.
    for i in 0..20 {
        host.dom0.write(&format!("/local/domain/1/by-dom0-{i}"), b"").await.unwrap();
    }
    let usage = host.dom0.text(MsgType::Control, &["quota", "1"]).await.unwrap();
    assert_eq!(usage.lines().nth(1), Some("nodes           :       30"));
    assert_eq!(guest.write("n11", b"").await, Err("ENOSPC".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_created_in_a_transaction_count_at_once() {
    let mut host = host_with(8, &["--durability", "none", "--quota", "nodes=4"]).await;
    let mut guest = host.guest(1).await;
    guest.write("a", b"").await.unwrap(); // 2 owned
    let tx = guest.start_transaction().await.unwrap();
    guest.write_tx(tx, "b", b"").await.unwrap();
    guest.write_tx(tx, "c", b"").await.unwrap(); // 4 with the transaction's
    assert_eq!(guest.write_tx(tx, "d", b"").await, Err("ENOSPC".into()));
    guest.end_transaction(tx, true).await.unwrap();
    assert_eq!(guest.write("d", b"").await, Err("ENOSPC".into()));
    // An abandoned transaction's nodes were never owned.
    guest.rm("c").await.unwrap();
    let tx = guest.start_transaction().await.unwrap();
    guest.write_tx(tx, "x", b"").await.unwrap();
    guest.end_transaction(tx, false).await.unwrap();
    guest.write("y", b"").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_transactions_cannot_multiply_the_node_quota() {
    let mut host = host_with(8, &["--durability", "none", "--quota", "nodes=30"]).await;
    let mut guest = host.guest(1).await;
    // A directory for each transaction (so that they do not conflict):
    // with the home, 11 nodes.
    for t in 0..10 {
        guest.mkdir(&format!("t{t}")).await.unwrap();
    }
    // Ten transactions, each creating 3 nodes: each fits on its own.
    let mut open = Vec::new();
    for t in 0..10 {
        let tx = guest.start_transaction().await.unwrap();
        for n in 0..3 {
            guest.write_tx(tx, &format!("t{t}/n{n}"), b"").await.unwrap();
        }
        open.push(tx);
    }
    let mut committed = 0;
    let mut refused = 0;
    for tx in open {
        match guest.end_transaction(tx, true).await {
            Ok(()) => committed += 1,
            Err(e) if e == "ENOSPC" => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // 11 and 6 × 3 nodes: 29; a 7th would make 32.
    assert_eq!((committed, refused), (6, 4));
    let usage = host.dom0.text(MsgType::Control, &["quota", "1"]).await.unwrap();
    assert_eq!(usage.lines().nth(1), Some("nodes           :       29"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_of_1000_nodes() {
    let mut host = host_with(8, &["--durability", "none"]).await;
    let mut guest = host.guest(1).await;
    // The home, 10 directories of 98 nodes, 9 more: 1000. (Not 999 nodes
    // in one directory: their names would take the directory past the
    // node-size quota.)
    let mut paths: Vec<String> = Vec::new();
    for d in 0..10 {
        paths.extend((0..98).map(|j| format!("d{d}/n{j}")));
    }
    paths.extend((0..9).map(|j| format!("d9/m{j}")));
    for (i, path) in paths.iter().enumerate() {
        guest.write(path, b"").await.unwrap_or_else(|e| panic!("node {i} ({path}): {e}"));
    }
    let usage = host.dom0.text(MsgType::Control, &["quota", "1"]).await.unwrap();
    assert!(usage.contains("nodes           :     1000"), "{usage}");
    assert_eq!(guest.write("d0/one-more", b"").await, Err("ENOSPC".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_size() {
    let mut host = host(8).await;
    let mut guest = host.guest(1).await;
    // 24 bytes of header and 8 for the one permission: 2015 bytes of
    // value make a 2047-byte node, the largest below the quota of 2048.
    guest.write("v", &[b'x'; 2015]).await.unwrap();
    assert_eq!(guest.write("v", &[b'x'; 2016]).await, Err("ENOSPC".into()));
    assert_eq!(guest.write("w", &[b'x'; 2016]).await, Err("ENOSPC".into()));
    assert_eq!(guest.read("w").await, Err("ENOENT".into()));
    assert_eq!(guest.read("v").await.unwrap().len(), 2015);
    // A second permission takes 8 bytes of room.
    guest.write("p", &[b'x'; 2007]).await.unwrap();
    guest.set_perms("p", &["n1", "r0"]).await.unwrap();
    guest.write("p", &[b'x'; 2007]).await.unwrap();
    assert_eq!(guest.write("p", &[b'x'; 2008]).await, Err("ENOSPC".into()));
    assert_eq!(guest.set_perms("v", &["n1", "r0"]).await, Err("ENOSPC".into()));
    // Children's names count in their parent's size.
    guest.write("parent", &[b'x'; 2000]).await.unwrap(); // 2032 bytes
    guest.write("parent/abcdefghijklmn", b"").await.unwrap(); // + 15: 2047
    assert_eq!(guest.write("parent/b", b"").await, Err("ENOSPC".into())); // + 2: 2049
                                                                          // dom0 writes what a message holds.
    host.dom0.write("/local/domain/1/big", &[b'x'; 4000]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_per_domain() {
    let mut host = host(8).await;
    let mut guest = host.guest(1).await;
    for i in 0..128 {
        guest.watch(&format!("w{i}"), "t").await.unwrap();
    }
    assert_eq!(guest.watch("w128", "t").await, Err("E2BIG".into()));
    // A duplicate is EEXIST before it is over quota.
    assert_eq!(guest.watch("w0", "t").await, Err("EEXIST".into()));
    guest.unwatch("w5", "t").await.unwrap();
    guest.watch("w128", "t").await.unwrap();
    assert_eq!(guest.watch("w129", "t").await, Err("E2BIG".into()));
    guest.call(MsgType::ResetWatches, 0, b"").await.unwrap();
    guest.watch("w129", "t").await.unwrap();
    // dom0: no limit.
    for i in 0..200 {
        host.dom0.watch(&format!("/w{i}"), "t").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_per_domain() {
    let mut host = host(8).await;
    let mut guest = host.guest(1).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(guest.start_transaction().await.unwrap());
    }
    assert_eq!(guest.start_transaction().await, Err("ENOSPC".into()));
    guest.end_transaction(open.pop().unwrap(), false).await.unwrap();
    open.push(guest.start_transaction().await.unwrap());
    assert_eq!(guest.start_transaction().await, Err("ENOSPC".into()));
    // dom0: no limit (as the stock daemons).
    for _ in 0..100 {
        host.dom0.start_transaction().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_per_node() {
    let mut host = host(8).await;
    let mut guest = host.guest(1).await;
    guest.write("n", b"").await.unwrap();
    guest.set_perms("n", &["n1", "r2", "r3", "r4", "r5"]).await.unwrap();
    assert_eq!(guest.set_perms("n", &["n1", "r2", "r3", "r4", "r5", "r6"]).await, Err("ENOSPC".into()));
    assert_eq!(guest.get_perms("n").await.unwrap().len(), 5);
    host.dom0.set_perms("/local/domain/1/n", &["n1", "r2", "r3", "r4", "r5", "r6", "r7"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_leaves_its_replies_untaken_is_not_read_from() {
    let mut host = host_with(8, &["--quota", "outstanding=5"]).await;
    let guest = host.guest(1).await;
    let ring = host.hypervisor.page(1);
    let start = ring.load(page::REQ_CONS);
    // 150 reads of a missing node (18 bytes each; each reply is a 23-byte
    // ENOENT), sent without reading a reply.
    let request = {
        let mut m = Vec::new();
        for word in [MsgType::Read as u32, 7, 0, 2] {
            m.extend_from_slice(&word.to_le_bytes());
        }
        m.extend_from_slice(b"x\0");
        m
    };
    let (mut input, mut output) = guest.into_parts();
    let sender = tokio::spawn(async move {
        for _ in 0..150 {
            output.write_all(&request).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The response ring holds 44 replies; then 5 wait in the daemon, and
    // one request is in hand: the daemon reads no further.
    let consumed = ring.load(page::REQ_CONS).wrapping_sub(start) / 18;
    assert!((45..=55).contains(&consumed), "the daemon read {consumed} requests");
    // Others are served meanwhile.
    let mut other = host.guest(2).await;
    other.write("x", b"1").await.unwrap();
    // Taking the replies lets the rest through, every one answered.
    for i in 0..150 {
        let mut head = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(10), input.read_exact(&mut head)).await.unwrap().unwrap();
        let header = Header::decode(&head);
        assert_eq!((header.kind, header.req_id, header.len), (MsgType::Error as u32, 7, 7), "reply {i}");
        let mut body = [0u8; 7];
        input.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ENOENT\0");
    }
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_feature_requests() {
    let mut host = host(8).await;
    let dom0 = &mut host.dom0;
    assert_eq!(
        dom0.text(MsgType::GetQuota, &[]).await.unwrap(),
        "nodes watches outstanding transactions node-permissions node-size"
    );
    assert_eq!(dom0.text(MsgType::GetQuota, &["watches"]).await.unwrap(), "128");
    assert_eq!(dom0.text(MsgType::GetQuota, &["memory"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::GetQuota, &["x1", "nodes"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::GetQuota, &["1", "nodes", "x"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::GetQuota, &["32752", "nodes"]).await, Err("ENOENT".into()));
    // Set before the domain is introduced; it starts with them.
    dom0.text(MsgType::SetQuota, &["3", "watches", "2"]).await.unwrap();
    assert_eq!(dom0.text(MsgType::GetQuota, &["3", "watches"]).await.unwrap(), "2");
    assert_eq!(dom0.text(MsgType::GetQuota, &["watches"]).await.unwrap(), "128");
    dom0.text(MsgType::SetFeature, &["3", "1"]).await.unwrap();
    assert_eq!(dom0.text(MsgType::SetFeature, &["3", "4"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::GetFeature, &["3"]).await.unwrap(), "1");
    assert_eq!(dom0.text(MsgType::GetFeature, &[]).await.unwrap(), "3");

    let mut guest = host.guest(3).await;
    assert_eq!(host.hypervisor.page(3).load(page::SERVER_FEATURES), 1);
    guest.watch("a", "t").await.unwrap();
    guest.watch("b", "t").await.unwrap();
    assert_eq!(guest.watch("c", "t").await, Err("E2BIG".into()));
    // Raised while introduced: takes effect at once.
    host.dom0.text(MsgType::SetQuota, &["3", "watches", "3"]).await.unwrap();
    guest.watch("c", "t").await.unwrap();
    // Features are fixed once introduced.
    assert_eq!(host.dom0.text(MsgType::SetFeature, &["3", "3"]).await, Err("EBUSY".into()));
    // A guest may ask for its own features, not another's, and may not set
    // quotas.
    assert_eq!(guest.text(MsgType::GetFeature, &[]).await.unwrap(), "1");
    assert_eq!(guest.text(MsgType::GetFeature, &["0"]).await, Err("EACCES".into()));
    assert_eq!(guest.text(MsgType::GetQuota, &["nodes"]).await, Err("EACCES".into()));
    assert_eq!(guest.text(MsgType::SetQuota, &["nodes", "5000"]).await, Err("EACCES".into()));

    // A junk value is refused, not read as 0 (which would mean no limit).
    assert_eq!(host.dom0.text(MsgType::SetQuota, &["3", "watches", "abc"]).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.text(MsgType::SetQuota, &["watches", "-1"]).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.text(MsgType::SetFeature, &["5", "junk"]).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.text(MsgType::GetQuota, &["3", "watches"]).await.unwrap(), "3");

    // A global value applies at once to every domain without its own value
    // for it, introduced before or after (as cxenstored's quotas do).
    host.dom0.text(MsgType::SetQuota, &["transactions", "1"]).await.unwrap();
    guest.start_transaction().await.unwrap();
    assert_eq!(guest.start_transaction().await, Err("ENOSPC".into()));
    let mut later = host.guest(4).await;
    later.start_transaction().await.unwrap();
    assert_eq!(later.start_transaction().await, Err("ENOSPC".into()));
    // ... but not to one with its own.
    host.dom0.text(MsgType::SetQuota, &["watches", "1"]).await.unwrap();
    later.watch("a", "t").await.unwrap();
    assert_eq!(later.watch("b", "t").await, Err("E2BIG".into()));
    assert_eq!(host.dom0.text(MsgType::GetQuota, &["3", "watches"]).await.unwrap(), "3");
    assert_eq!(host.dom0.text(MsgType::GetQuota, &["4", "watches"]).await.unwrap(), "1");
    // 0: no limit.
    host.dom0.text(MsgType::SetQuota, &["4", "transactions", "0"]).await.unwrap();
    later.start_transaction().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands() {
    let mut host = host(8).await;
    let mut guest = host.guest(2).await;
    guest.write("a", b"").await.unwrap();
    guest.watch("a", "t").await.unwrap();
    let dom0 = &mut host.dom0;
    let table = dom0.text(MsgType::Control, &["quota"]).await.unwrap();
    assert!(table.starts_with("Quota settings:\nnodes            :     1000 Nodes per domain\n"), "{table}");
    dom0.text(MsgType::Control, &["quota", "set", "nodes", "77"]).await.unwrap();
    assert_eq!(dom0.text(MsgType::GetQuota, &["nodes"]).await.unwrap(), "77");
    assert_eq!(dom0.text(MsgType::Control, &["quota", "set", "nodes", "0"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::Control, &["quota", "set", "bogus", "1"]).await, Err("EINVAL".into()));
    let usage = dom0.text(MsgType::Control, &["quota", "2"]).await.unwrap();
    assert_eq!(
        usage,
        "Domain 2:\nnodes           :        2\nwatches         :        1\ntransactions    :        0\n"
    );
    assert_eq!(dom0.text(MsgType::Control, &["quota", "9"]).await, Err("ENOENT".into()));
    assert_eq!(dom0.text(MsgType::Control, &["check"]).await.unwrap(), "OK");
    assert_eq!(dom0.text(MsgType::Control, &["log", "on"]).await.unwrap(), "OK");
    assert_eq!(dom0.text(MsgType::Control, &["log", "off"]).await.unwrap(), "OK");
    assert_eq!(dom0.text(MsgType::Control, &["log", "maybe"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.text(MsgType::Control, &["print", "hello"]).await.unwrap(), "OK");
    let report = dom0.text(MsgType::Control, &["memreport"]).await.unwrap();
    assert!(report.contains("domains          : 1\n") && report.contains("watches          : 1\n"), "{report}");
    assert!(dom0.text(MsgType::Control, &["help"]).await.unwrap().starts_with("check\t\n"));
    assert_eq!(dom0.text(MsgType::Control, &["live-update", "-s"]).await, Err("EINVAL".into()));
    assert_eq!(dom0.call(MsgType::Control, 0, b"").await, Err("EINVAL".into()));
    assert_eq!(guest.text(MsgType::Control, &["help"]).await, Err("EACCES".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_takes_no_events_cannot_make_shoald_hold_more_than_its_share() {
    let mut host = host(8).await;
    let mut guest = host.guest(1).await;
    let token = "t".repeat(4000);
    for w in 0..18 {
        guest.watch("data", &format!("{w:02}{token}")).await.unwrap();
    }
    guest.events_until_quiet(Duration::from_millis(300)).await;
    let watches = |report: String| report.lines().find(|l| l.starts_with("watches")).unwrap_or_default().to_string();
    let before = host.dom0.text(MsgType::Control, &["memreport"]).await.unwrap();
    assert_eq!(watches(before), "watches          : 18");
    // One commit of 100 nodes below the watched path: 1,800 events of 4 KiB
    // (7 MiB) for a guest that reads none of them.
    let tx = host.dom0.start_transaction().await.unwrap();
    for n in 0..100 {
        host.dom0.write_tx(tx, &format!("/local/domain/1/data/n{n}"), b"").await.unwrap();
    }
    host.dom0.end_transaction(tx, true).await.unwrap();
    // Past 2.5 MB queued, the guest's further events are held back as one
    // event per watch, for the watch's own path: the guest keeps its
    // connection and its watches, and dom0 is served meanwhile.
    host.dom0.write("/after", b"1").await.unwrap();
    let report = host.dom0.text(MsgType::Control, &["memreport"]).await.unwrap();
    assert_eq!(watches(report), "watches          : 18");
    // When the guest reads, it hears what fitted, then every watch once
    // more for its own path: it knows to re-read, and nothing went missing
    // unnoticed.
    let events = guest.events_until_quiet(Duration::from_millis(500)).await;
    assert!(events.len() < 1800, "events were held back ({} arrived)", events.len());
    for w in 0..18 {
        let token = format!("{w:02}{token}");
        let last = events.iter().rposition(|(_, t)| *t == token).expect("the watch's events");
        assert_eq!(events[last].0, "data", "watch {w}'s last event is for its own path");
    }
    // The guest is served as before.
    guest.write("data/more", b"1").await.unwrap();
    assert_eq!(guest.read("data/more").await.unwrap(), b"1");
    drop(guest);
}
