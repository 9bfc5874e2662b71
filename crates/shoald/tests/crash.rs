//! shoald SIGKILLed while clients write: every write it acknowledged is
//! there after a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{nul, Client, Shoald};
use shoald::wire::MsgType;

const WRITERS: usize = 4;

/// One writer's acknowledged writes: (path, value), in order.
type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn writer(socket: std::path::PathBuf, id: usize, round: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut client = Client::connect(&socket);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/crash/w{id}/k{}", n % 50);
        let value = format!("round {round} write {n}").into_bytes();
        // A write the daemon died before answering is not acknowledged.
        let mut payload = nul(&path);
        payload.extend_from_slice(&value);
        match client.try_request(MsgType::Write, 0, &payload) {
            Some(reply) if reply.text() == "OK" => acked.lock().unwrap().push((path, value)),
            Some(reply) => panic!("write failed: {}", reply.text()),
            None => return,
        }
        // Every few writes, a transaction of two writes that must land together.
        if n.is_multiple_of(7) && !pair(&mut client, id, round, n, &acked) {
            return;
        }
        n += 1;
    }
}

/// Writes both halves of a pair in one transaction; false if the daemon died.
fn pair(client: &mut Client, id: usize, round: usize, n: u64, acked: &Acked) -> bool {
    let Some(reply) = client.try_request(MsgType::TransactionStart, 0, b"\0") else { return false };
    let tx: u32 = reply.text().parse().expect("a transaction id");
    let value = format!("round {round} write {n} pair").into_bytes();
    let halves = [format!("/crash/w{id}/pair-a"), format!("/crash/w{id}/pair-b")];
    for path in &halves {
        let mut payload = nul(path);
        payload.extend_from_slice(&value);
        match client.try_request(MsgType::Write, tx, &payload) {
            Some(reply) if reply.text() == "OK" => {}
            Some(reply) => panic!("write in a transaction failed: {}", reply.text()),
            None => return false,
        }
    }
    match client.try_request(MsgType::TransactionEnd, tx, b"T\0") {
        Some(reply) if reply.text() == "OK" => {
            let mut acked = acked.lock().unwrap();
            for path in halves {
                acked.push((path, value.clone()));
            }
            true
        }
        Some(reply) => panic!("transaction end failed: {}", reply.text()),
        None => false,
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut shoald = Shoald::start();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..6 {
        let stop = Arc::new(AtomicBool::new(false));
        let logs: Vec<Acked> = (0..WRITERS).map(|_| Acked::default()).collect();
        let threads: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(id, log)| {
                let (socket, log, stop) = (shoald.socket.clone(), log.clone(), stop.clone());
                std::thread::spawn(move || writer(socket, id, round, log, stop))
            })
            .collect();
        // Kill at a pseudo-random moment between 50 and 400 ms in.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 350));
        let dir = shoald.stop(9);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }

        shoald = Shoald::start_in(dir, &[]);
        let mut check = shoald.connect();
        let mut total = 0;
        for log in &logs {
            let log = log.lock().unwrap();
            total += log.len();
            // The last acknowledged value of each path is what is there now.
            let mut last = std::collections::HashMap::new();
            for (path, value) in log.iter() {
                last.insert(path.clone(), value.clone());
            }
            for (path, value) in last {
                let now = check.read(&path).unwrap_or_else(|e| panic!("round {round}: {path}: {e}"));
                // A later write may have landed without its reply: it is
                // then a later write of this round, never an older one.
                if now != value {
                    let now_text = String::from_utf8_lossy(&now).into_owned();
                    let acked_text = String::from_utf8_lossy(&value).into_owned();
                    assert!(
                        later(&now_text, &acked_text),
                        "round {round}: {path} is {now_text:?}, acknowledged {acked_text:?}"
                    );
                }
            }
        }
        assert!(total > 0, "round {round}: no write was acknowledged before the kill");
        // Both halves of every transaction agree.
        for id in 0..WRITERS {
            let a = check.read(&format!("/crash/w{id}/pair-a"));
            let b = check.read(&format!("/crash/w{id}/pair-b"));
            assert_eq!(a, b, "round {round}: writer {id}'s pair was torn");
        }
    }
}

/// Whether value `now` was written after `acked` by the same writer.
fn later(now: &str, acked: &str) -> bool {
    let number = |s: &str| -> Option<(u64, u64)> {
        let mut words = s.split(' ');
        let round = words.nth(1)?.parse().ok()?;
        let n = words.nth(1)?.parse().ok()?;
        Some((round, n))
    };
    matches!((number(now), number(acked)), (Some(a), Some(b)) if a > b)
}
