//! The work queue recipe: every item claimed exactly once by workers racing
//! in their own transactions; an item whose claim's lease ran out is
//! claimed again; only its holder can finish it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use shoal::queue::{self, Claimed};
use shoal::{Durability, Error, Options, Store};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options { durability: Durability::None, create: true, ..Options::default() }).unwrap()
}

/// Conflicts retried by [`atomically`], over all tests.
static CONFLICTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `f` in a transaction until it commits (conflicts are retried).
fn atomically<T>(store: &Store, mut f: impl FnMut(&mut shoal::Transaction<'_>) -> shoal::Result<T>) -> T {
    loop {
        let mut txn = store.begin();
        let out = f(&mut txn).unwrap();
        match txn.commit() {
            Ok(_) => return out,
            Err(Error::Conflict { .. }) => {
                CONFLICTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn racing_workers_claim_every_item_exactly_once() {
    const ITEMS: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..ITEMS {
        let item = atomically(&store, |t| queue::push(t, "jobs", format!("job {i}").as_bytes()));
        assert_eq!(item, i);
    }
    let claims: Mutex<HashMap<u64, Vec<String>>> = Mutex::default();
    std::thread::scope(|s| {
        for w in 0..4 {
            let (store, claims) = (&store, &claims);
            s.spawn(move || {
                let owner = format!("worker-{w}");
                let lease = Duration::from_secs(3600);
                while let Some(Claimed { item, payload }) =
                    atomically(store, |t| queue::claim(t, "jobs", &owner, SystemTime::now(), lease))
                {
                    assert_eq!(payload, format!("job {item}").as_bytes());
                    claims.lock().unwrap().entry(item).or_default().push(owner.clone());
                    assert!(atomically(store, |t| queue::done(t, "jobs", item, &owner)));
                }
            });
        }
    });
    let claims = claims.into_inner().unwrap();
    assert_eq!(claims.len() as u64, ITEMS, "every item claimed");
    let twice: Vec<_> = claims.iter().filter(|(_, by)| by.len() != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    // The workers did race for the same items (so a claim that did not
    // conflict would have shown as an item claimed twice).
    assert!(CONFLICTS.load(std::sync::atomic::Ordering::Relaxed) > 0, "no claim ever conflicted");
    assert!(store.snapshot().list("/queues/jobs/items").unwrap().is_empty());
    assert!(store.snapshot().list("/queues/jobs/claims").unwrap().is_empty());
}

#[test]
fn an_expired_claim_is_claimed_again_and_only_its_holder_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for payload in ["first", "second"] {
        atomically(&store, |t| queue::push(t, "q", payload.as_bytes()));
    }
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let lease = Duration::from_secs(10);
    let a = atomically(&store, |t| queue::claim(t, "q", "a", t0, lease)).unwrap();
    let payload = |item: u64| if item == 0 { b"first".to_vec() } else { b"second".to_vec() };
    assert_eq!(a.payload, payload(a.item));
    // Within a's lease: b gets the other item.
    let b = atomically(&store, |t| queue::claim(t, "q", "b", t0 + Duration::from_secs(5), lease)).unwrap();
    assert_eq!(b.item, 1 - a.item);
    // Nothing free until a's lease ends, exactly at its end.
    let before_end = t0 + lease - Duration::from_millis(1);
    assert_eq!(atomically(&store, |t| queue::claim(t, "q", "c", before_end, lease)), None);
    let c = atomically(&store, |t| queue::claim(t, "q", "c", t0 + lease, lease)).unwrap();
    assert_eq!(c, Claimed { item: a.item, payload: payload(a.item) });
    // a comes back late: the item is c's now.
    assert!(!atomically(&store, |t| queue::done(t, "q", a.item, "a")));
    assert!(atomically(&store, |t| queue::done(t, "q", a.item, "c")));
    assert!(!atomically(&store, |t| queue::done(t, "q", a.item, "c")), "done twice");
    assert!(atomically(&store, |t| queue::done(t, "q", b.item, "b")));
    assert_eq!(atomically(&store, |t| queue::claim(t, "q", "d", t0 + Duration::from_secs(100), lease)), None);
}

#[test]
fn bad_queue_and_owner_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut txn = store.begin();
    for name in ["", "a/b", "/a"] {
        assert!(matches!(queue::push(&mut txn, name, b"x"), Err(Error::InvalidPath { .. })), "{name:?}");
    }
    for owner in ["", "two words"] {
        let claimed = queue::claim(&mut txn, "q", owner, SystemTime::now(), Duration::from_secs(1));
        assert!(matches!(claimed, Err(Error::InvalidPath { .. })), "{owner:?}");
    }
}
