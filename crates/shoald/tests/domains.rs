//! Guest domains over rings from the simulated hypervisor: permissions
//! between domains, relative paths, the special watches, RELEASE, and
//! guests that misbehave on their ring.

mod common;

use std::time::Duration;

use common::asyncclient::{connect, AsyncClient};
use common::guests::{host, port, wait_for};
use shoald::ring::page;
use shoald::wire::MsgType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reads_and_writes_its_own_home_through_its_ring() {
    let mut host = host(8).await;
    let mut guest = host.guest(3).await;
    guest.write("data/x", b"hello").await.unwrap();
    assert_eq!(guest.read("data/x").await.unwrap(), b"hello");
    assert_eq!(guest.read("/local/domain/3/data/x").await.unwrap(), b"hello");
    assert_eq!(host.dom0.read("/local/domain/3/data/x").await.unwrap(), b"hello");
    // What a guest creates inherits its parent's permissions: it owns it.
    assert_eq!(host.dom0.get_perms("/local/domain/3/data/x").await.unwrap(), vec!["n3"]);
    // GET_DOMAIN_PATH answers for any domain id.
    let path = guest.call(MsgType::GetDomainPath, 0, b"7\0").await.unwrap();
    assert_eq!(path, b"/local/domain/7\0");
    // A value as large as a message allows crosses the 1 KiB ring in pieces.
    let big = vec![b'v'; 2000];
    guest.write("big", &big).await.unwrap();
    assert_eq!(guest.read("big").await.unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_read_write_or_watch_another_guests_nodes() {
    let mut host = host(8).await;
    let mut one = host.guest(1).await;
    let mut two = host.guest(2).await;
    one.write("secret", b"s").await.unwrap();

    assert_eq!(two.read("/local/domain/1/secret").await, Err("EACCES".into()));
    assert_eq!(two.write("/local/domain/1/secret", b"x").await, Err("EACCES".into()));
    assert_eq!(two.write("/local/domain/1/new", b"x").await, Err("EACCES".into()));
    assert_eq!(two.rm("/local/domain/1/secret").await, Err("EACCES".into()));
    assert_eq!(two.directory("/local/domain/1").await, Err("EACCES".into()));
    assert_eq!(two.get_perms("/local/domain/1/secret").await, Err("EACCES".into()));
    // A node that does not exist under an unreadable parent is EACCES too:
    // the answer must not tell whether it exists.
    assert_eq!(two.read("/local/domain/1/nothing").await, Err("EACCES".into()));
    // Nor may a guest write outside its home.
    assert_eq!(two.write("/elsewhere", b"x").await, Err("EACCES".into()));
    assert_eq!(one.read("/local/domain/1/secret").await.unwrap(), b"s");

    // A watch on another guest's node is accepted and fires once at once,
    // as the stock daemons do, but no change to that node reaches it.
    two.watch("/local/domain/1/secret", "peek").await.unwrap();
    assert_eq!(two.next_event(Duration::from_secs(5)).await, Some(("/local/domain/1/secret".into(), "peek".into())));
    one.write("secret", b"changed").await.unwrap();
    assert_eq!(two.events_until_quiet(Duration::from_millis(300)).await, vec![]);

    // The owner grants read access to dom2: now it reads, and hears changes.
    one.set_perms("secret", &["n1", "r2"]).await.unwrap();
    assert_eq!(two.read("/local/domain/1/secret").await.unwrap(), b"changed");
    assert_eq!(two.write("/local/domain/1/secret", b"x").await, Err("EACCES".into()));
    one.write("secret", b"again").await.unwrap();
    let events = two.events_until_quiet(Duration::from_millis(300)).await;
    assert!(events.contains(&("/local/domain/1/secret".into(), "peek".into())), "{events:?}");

    // An unprivileged domain may not give its node away.
    assert_eq!(one.set_perms("secret", &["n2"]).await, Err("EPERM".into()));
    // Privileged-only requests are refused.
    assert_eq!(one.introduce(5, 5, port(5)).await, Err("EACCES".into()));
    assert_eq!(one.release(2).await, Err("EACCES".into()));
    assert_eq!(one.call(MsgType::SetTarget, 0, b"1\x002\0").await, Err("EACCES".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_target_lets_a_stub_domain_act_for_its_target() {
    let mut host = host(8).await;
    let mut guest = host.guest(4).await;
    let mut stub = host.guest(5).await;
    guest.write("device", b"d").await.unwrap();
    assert_eq!(stub.read("/local/domain/4/device").await, Err("EACCES".into()));
    host.dom0.call(MsgType::SetTarget, 0, b"5\x004\0").await.unwrap();
    assert_eq!(stub.read("/local/domain/4/device").await.unwrap(), b"d");
    stub.write("/local/domain/4/device", b"e").await.unwrap();
    assert_eq!(guest.read("device").await.unwrap(), b"e");
    // Still not privileged.
    assert_eq!(stub.read("/tool/xenstored").await, Err("EACCES".into()));
    assert_eq!(stub.write("/tool/x", b"1").await, Err("EACCES".into()));
    // A target that is not introduced is ENOENT.
    assert_eq!(host.dom0.call(MsgType::SetTarget, 0, b"5\x0099\0").await, Err("ENOENT".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introduce_and_release_fire_the_special_watches_and_release_removes_the_guests_nodes() {
    let mut host = host(8).await;
    let mut watcher = connect(&host.shoald.socket).await;
    watcher.watch("@introduceDomain", "in").await.unwrap();
    watcher.watch("@releaseDomain", "out").await.unwrap();
    watcher.watch("/local/domain/6", "home").await.unwrap();
    let initial = watcher.events_until_quiet(Duration::from_millis(300)).await;
    assert_eq!(initial.len(), 3, "{initial:?}");

    let mut guest = host.guest(6).await;
    assert_eq!(host.dom0.call(MsgType::IsDomainIntroduced, 0, b"6\0").await.unwrap(), b"T\0");
    assert_eq!(host.dom0.call(MsgType::IsDomainIntroduced, 0, b"7\0").await.unwrap(), b"F\0");
    guest.write("a/b", b"1").await.unwrap();
    // A node elsewhere that the toolstack gave to the guest, under one it keeps.
    host.dom0.write("/vm/6/name", b"guest").await.unwrap();
    host.dom0.set_perms("/vm/6/name", &["n6"]).await.unwrap();
    let mut other = host.guest(7).await;
    other.write("x", b"7").await.unwrap();
    let events = watcher.events_until_quiet(Duration::from_millis(300)).await;
    assert!(events.contains(&("@introduceDomain".into(), "in".into())), "{events:?}");

    host.dom0.release(6).await.unwrap();
    let events = watcher.events_until_quiet(Duration::from_millis(300)).await;
    // Every node the guest owns goes with its subtree, with watch events as
    // for RM (cxenstored's default), then @releaseDomain fires.
    assert_eq!(events, vec![("/local/domain/6".into(), "home".into()), ("@releaseDomain".into(), "out".into())]);
    assert_eq!(host.dom0.read("/local/domain/6/a/b").await, Err("ENOENT".into()));
    assert_eq!(host.dom0.read("/vm/6/name").await, Err("ENOENT".into()));
    assert_eq!(host.dom0.directory("/vm/6").await.unwrap(), Vec::<String>::new());
    assert_eq!(host.dom0.read("/local/domain/7/x").await.unwrap(), b"7");
    assert_eq!(other.read("x").await.unwrap(), b"7");
    assert_eq!(host.dom0.call(MsgType::IsDomainIntroduced, 0, b"6\0").await.unwrap(), b"F\0");
    assert_eq!(host.dom0.release(6).await, Err("ENOENT".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_scribbling_on_its_ring_indices_is_cut_off_and_others_are_served() {
    let mut host = host(8).await;
    let mut bad = host.guest(1).await;
    let mut good = host.guest(2).await;
    bad.write("before", b"1").await.unwrap();

    // The request producer claims more than a ring's worth of bytes.
    let ring = host.hypervisor.page(1);
    let cons = ring.load(page::REQ_CONS);
    ring.store(page::REQ_PROD, cons.wrapping_add(5000));
    host.hypervisor.guest_kick(port(1));
    wait_for(|| ring.load(page::ERROR) == page::ERROR_RINGIDX).await;

    good.write("still", b"served").await.unwrap();
    assert_eq!(host.dom0.read("/local/domain/2/still").await.unwrap(), b"served");
    assert_eq!(host.dom0.read("/local/domain/1/before").await.unwrap(), b"1");

    // Introduced again, the domain starts on a clean ring.
    let (input, output) = host.hypervisor.guest(1, port(1));
    host.dom0.introduce(1, 1, port(1)).await.unwrap();
    let mut bad = AsyncClient::new(input, output);
    assert_eq!(ring.load(page::ERROR), page::ERROR_NONE);
    assert_eq!(bad.read("before").await.unwrap(), b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sending_an_oversized_message_gets_a_protocol_error() {
    let mut host = host(8).await;
    let mut bad = host.guest(1).await;
    let mut good = host.guest(2).await;
    // A header claiming 5000 bytes of payload.
    let mut header = Vec::new();
    for word in [MsgType::Write as u32, 1, 0, 5000] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    bad.send_raw(&header).await;
    let ring = host.hypervisor.page(1);
    wait_for(|| ring.load(page::ERROR) == page::ERROR_PROTO).await;
    good.write("ok", b"1").await.unwrap();
    assert_eq!(good.read("ok").await.unwrap(), b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introduce_checks_its_arguments() {
    let mut host = host(4).await;
    // A page the hypervisor does not have, port 0, dom0, reserved ids.
    assert_eq!(host.dom0.introduce(1, 99, port(1)).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.introduce(1, 1, 0).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.introduce(0, 1, port(0)).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.introduce(0x7ff0, 1, port(1)).await, Err("EINVAL".into()));
    assert_eq!(host.dom0.call(MsgType::Introduce, 0, b"1\x002\0").await, Err("EINVAL".into()));
    assert_eq!(host.dom0.call(MsgType::Introduce, 0, b"x\x001\x001001\0").await, Err("EINVAL".into()));
    // None of them introduced anything.
    assert_eq!(host.dom0.call(MsgType::IsDomainIntroduced, 0, b"1\0").await.unwrap(), b"F\0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_asks_to_reconnect_gets_a_clean_ring_and_keeps_its_data() {
    let mut host = host(8).await;
    let mut guest = host.guest(3).await;
    guest.write("kept", b"1").await.unwrap();
    guest.watch("kept", "old").await.unwrap();
    guest.start_transaction().await.unwrap();
    assert_eq!(guest.next_event(Duration::from_secs(5)).await, Some(("kept".into(), "old".into())));
    // Half a request left in the ring, then "reconnect in progress".
    guest.send_raw(&[MsgType::Read as u8, 0, 0]).await;
    let ring = host.hypervisor.page(3);
    assert_eq!(ring.load(page::SERVER_FEATURES) & 1, 1, "reconnection is offered");
    ring.store(page::CONNECTION, page::RECONNECT);
    host.hypervisor.guest_kick(port(3));
    wait_for(|| ring.load(page::CONNECTION) == page::CONNECTED).await;
    for field in [page::REQ_CONS, page::REQ_PROD, page::RSP_CONS, page::RSP_PROD] {
        assert_eq!(ring.load(field), 0, "the queues are empty");
    }
    // A fresh connection: the data is there, the old watch is gone, and the
    // transaction quota counts from zero.
    let (input, output) = host.hypervisor.guest(3, port(3));
    let mut guest = common::asyncclient::AsyncClient::new(input, output);
    assert_eq!(guest.read("kept").await.unwrap(), b"1");
    host.dom0.write("/local/domain/3/kept", b"2").await.unwrap();
    assert_eq!(guest.events_until_quiet(Duration::from_millis(300)).await, vec![]);
    for _ in 0..10 {
        guest.start_transaction().await.unwrap();
    }
    assert_eq!(guest.start_transaction().await, Err("ENOSPC".into()));
    // Its quotas and its place among domains are the same.
    assert_eq!(host.dom0.call(MsgType::IsDomainIntroduced, 0, b"3\0").await.unwrap(), b"T\0");
    assert_eq!(guest.read("/tool/xenstored").await, Err("EACCES".into()));
}
