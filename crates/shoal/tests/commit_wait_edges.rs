//! Edges of the group-commit wait protocol (committers sleep on a
//! process-private futex word and check publication without the lock),
//! the prefetches of a point lookup and the eight-byte key comparisons.
//!
//! * Every durable commit is published when it returns, while checkpoints
//!   (inside commits and explicit), compactions (flush, switch, journal
//!   truncation) and read-only waits race with it; no waiter misses its
//!   wake-up (none counted, none waits out the 1 s limit).
//! * A poison that lands while committers wait for a group sync (a failed
//!   journal sync of the leader, a failed arena sync of a compaction's
//!   unlocked step) leaves no committer stuck, and none returns `Ok` for a
//!   version that was not published.
//! * Lookups that compare prefixes and equal-hint suffixes eight bytes at a
//!   time find what a model holds and nothing else.
//! * Roots at or beyond the region's end, and leaves that end the region,
//!   do not make the prefetches panic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{put, sync_options};
use shoal::internals::{self, SyncFault};
use shoal::{Durability, Options, Reader, Store};

/// A committer whose wake-up went missing sleeps this long (publish.rs's
/// `SYNC_WAIT_LIMIT`) before it looks again.
const SYNC_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// A directory on tmpfs when there is one: syncs there take no time, so a
/// commit that takes a second can only be one that waited out a missed
/// wake-up.
fn fast_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// 12 durable committers race explicit checkpoints and compactions (each a
/// `flush` under the writer mutex, a switch, a journal truncation),
/// checkpoints inside commits (a 4 KiB journal limit), snapshots and
/// read-only commits (each a `wait_durable` of a published version).
/// Every commit is visible to a reader in another mapping when it returns,
/// no wait is counted as missed, and none sleeps out the wait limit.
#[test]
fn durable_commits_racing_checkpoints_and_compactions_are_published_on_return() {
    let dir = fast_dir();
    let store = Store::open(dir.path(), Options { checkpoint_journal_bytes: 4096, ..sync_options() }).unwrap();
    let start = store.version();
    let (threads, per_thread) = (12usize, 120usize);
    let stop = AtomicBool::new(false);
    let slowest = std::thread::scope(|s| {
        let (store, stop) = (&store, &stop);
        let maintenance = s.spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Acquire) {
                store.checkpoint().unwrap();
                store.compact().unwrap();
                let snapshot = store.snapshot();
                // A read-only commit waits until what it read is durable.
                let txn = store.begin();
                let base = txn.base_version();
                assert!(txn.commit().unwrap() >= base);
                assert!(snapshot.version() <= store.version());
                rounds += 1;
            }
            rounds
        });
        let committers: Vec<_> = (0..threads)
            .map(|t| {
                let dir = dir.path();
                s.spawn(move || {
                    let reader = Reader::open(dir).unwrap();
                    let mut slowest = Duration::ZERO;
                    for i in 0..per_thread {
                        let begun = Instant::now();
                        let version = put(store, &format!("/t{t}/{i}"), "v").unwrap();
                        slowest = slowest.max(begun.elapsed());
                        let seen = reader.snapshot().unwrap().version();
                        assert!(seen >= version, "commit of version {version} returned with {seen} published");
                    }
                    slowest
                })
            })
            .collect();
        let slowest = committers.into_iter().map(|c| c.join().unwrap()).max().unwrap();
        stop.store(true, Ordering::Release);
        assert!(maintenance.join().unwrap() > 0, "no checkpoint or compaction raced the commits");
        slowest
    });
    assert_eq!(internals::missed_sync_wakeups(&store), 0, "a waiter timed out although its sync had ended");
    assert!(
        slowest < SYNC_WAIT_LIMIT,
        "a commit took {slowest:?}: a waiter slept out the wait limit (a sync ended without waking it)"
    );
    let total = (threads * per_thread) as u64;
    assert_eq!(store.version(), start + total);
    let snapshot = Reader::open(dir.path()).unwrap().snapshot().unwrap();
    assert_eq!(snapshot.version(), start + total, "every acknowledged commit is published");
    for t in 0..threads {
        assert_eq!(snapshot.list(&format!("/t{t}")).unwrap().len(), per_thread);
    }
}

/// What one committer got: the versions acknowledged, with the index of
/// each commit.
struct Outcome {
    acknowledged: Vec<(usize, u64)>,
}

/// 16 committers commit until refused while `poison` makes a durability
/// step fail. Each committer checks, when its commit returns `Ok`, that a
/// reader sees the version published; all must finish within a minute (no
/// deadlock), none may have waited out a wake-up, no `Ok` may name a version beyond the one
/// finally published, and a reopen finds every acknowledged commit.
fn committers_meet_a_poison(dir: &std::path::Path, store: Store, poison: impl FnOnce(&Store) + Send) {
    let (done, finished) = mpsc::channel();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let store = &store;
        let committers: Vec<_> = (0..16)
            .map(|t| {
                let done = done.clone();
                s.spawn(move || {
                    let reader = Reader::open(dir).unwrap();
                    let mut acknowledged = Vec::new();
                    for i in 0..3000 {
                        match put(store, &format!("/t{t}/{i}"), "v") {
                            Ok(version) => {
                                let seen = reader.snapshot().unwrap().version();
                                assert!(seen >= version, "Ok for version {version} with {seen} published");
                                acknowledged.push((i, version));
                            }
                            Err(_) => break,
                        }
                    }
                    done.send(()).unwrap();
                    Outcome { acknowledged }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        poison(store);
        for _ in 0..16 {
            finished.recv_timeout(Duration::from_secs(60)).expect("a committer is stuck after the poison");
        }
        committers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(outcomes.iter().any(|o| o.acknowledged.len() < 3000), "the poison stopped nobody");
    assert!(put(&store, "/after", "x").is_err(), "the store is not poisoned");
    let published = Reader::open(dir).unwrap().snapshot().unwrap().version();
    assert_eq!(store.version(), published, "the writer shows a version it never published");
    for o in &outcomes {
        for &(_, version) in &o.acknowledged {
            assert!(version <= published, "version {version} acknowledged, {published} published");
        }
    }
    assert_eq!(internals::missed_sync_wakeups(&store), 0);
    drop(store);
    let store = Store::open(dir, sync_options()).unwrap();
    let snapshot = store.snapshot();
    assert!(snapshot.version() >= published);
    for (t, o) in outcomes.iter().enumerate() {
        for &(i, _) in &o.acknowledged {
            assert_eq!(snapshot.get(&format!("/t{t}/{i}")).unwrap(), Some(&b"v"[..]), "/t{t}/{i} lost");
        }
    }
}

/// The leader's journal sync fails while the others of its group sleep on
/// the futex word: they are woken by the poison and refused.
#[test]
fn a_failed_group_sync_wakes_its_waiters_and_acknowledges_nothing_unpublished() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    committers_meet_a_poison(dir.path(), store, |store| {
        internals::fail_next_syncs(store, SyncFault::Journal, 1);
    });
}

/// A compaction's unlocked arena sync fails (it poisons through
/// `Publisher::poison`, not through the group sync) while committers wait
/// for a journal sync: the sync that succeeds must not publish, and its
/// waiters must not return `Ok`.
#[test]
fn a_poison_from_a_compactions_arena_sync_refuses_the_waiting_committers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), sync_options()).unwrap();
    store.bulk_load((0..3000).map(|i| (format!("/k/{i}"), "v".repeat(40)))).unwrap();
    committers_meet_a_poison(dir.path(), store, |store| {
        internals::fail_next_syncs(store, SyncFault::Arena, 1);
        assert!(store.compact().is_err(), "the compaction's arena sync was to fail");
    });
}

/// Path segments of chosen byte lengths over characters of 1 to 3 bytes
/// (0x21 to 0xEF first bytes), many sharing their first 8 or 16 bytes, so
/// that nodes have long prefixes and many suffixes share a hint: lookups
/// then decide on `cmp_same_len` (prefix) and `cmp_short` (suffixes of
/// equal hints) at every length around the eight-byte step.
fn comparison_names() -> Vec<String> {
    let alphabet = ['!', '0', 'a', '~', '¡', 'ÿ', '\u{FFFD}'];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stems = ["", "abcdefgh", "abcdefghijklmnop", "abcdefg", "abcdefghi", "ÿÿÿÿ"];
    let mut names = BTreeSet::new();
    for stem in stems {
        for _ in 0..300 {
            let extra = (next() % 20) as usize;
            let mut name = stem.to_string();
            for _ in 0..extra {
                name.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            if !name.is_empty() && name != "." && name != ".." {
                names.insert(name);
            }
        }
    }
    names.into_iter().collect()
}

/// Probes around a stored name: one more character, the last one changed or
/// dropped, each of its prefixes.
fn probes_near(name: &str) -> Vec<String> {
    let mut out = vec![format!("{name}!"), format!("{name}\u{FFFD}"), format!("{name}a")];
    let chars: Vec<char> = name.chars().collect();
    for cut in 1..chars.len() {
        out.push(chars[..cut].iter().collect());
    }
    if let Some((last, rest)) = chars.split_last() {
        let rest: String = rest.iter().collect();
        for c in ['!', '0', 'b', '~', '¢', '\u{FFFC}'] {
            if c != *last {
                out.push(format!("{rest}{c}"));
            }
        }
    }
    out.retain(|p| !p.is_empty() && p != "." && p != "..");
    out
}

/// Point lookups and listings over keys built to exercise the eight-byte
/// comparisons agree with a model, for present and absent paths, through
/// the writer's snapshot and a reader's, with the tree built both by a bulk
/// load (bottom-up) and by transactions (merged, routed by `route`).
#[test]
fn lookups_over_keys_around_the_eight_byte_step_agree_with_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options { durability: Durability::None, ..sync_options() }).unwrap();
    let names = comparison_names();
    assert!(names.len() > 1000, "{} names", names.len());
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    model.insert("/d".into(), String::new());
    let (loaded, committed) = names.split_at(names.len() / 2);
    let mut items = Vec::new();
    for name in loaded {
        items.push((format!("/d/{name}"), name.clone()));
        items.push((format!("/d/{name}/c"), format!("{name}-c")));
    }
    store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_str()))).unwrap();
    model.extend(items);
    for chunk in committed.chunks(64) {
        let mut txn = store.begin();
        for name in chunk {
            txn.put(&format!("/d/{name}"), name).unwrap();
            txn.put(&format!("/d/{name}/c"), format!("{name}-c")).unwrap();
            model.insert(format!("/d/{name}"), name.clone());
            model.insert(format!("/d/{name}/c"), format!("{name}-c"));
        }
        txn.commit().unwrap();
    }
    let reader = Reader::open(dir.path()).unwrap();
    for snapshot in [store.snapshot(), reader.snapshot().unwrap()] {
        let mut probes = 0;
        for name in &names {
            for path in [format!("/d/{name}"), format!("/d/{name}/c")] {
                assert_eq!(snapshot.get(&path).unwrap(), model.get(&path).map(|v| v.as_bytes()), "{path:?}");
            }
            for near in probes_near(name) {
                let path = format!("/d/{near}");
                assert_eq!(snapshot.get(&path).unwrap(), model.get(&path).map(|v| v.as_bytes()), "{path:?}");
                probes += 1;
            }
        }
        assert!(probes > names.len());
        let mut listed = snapshot.list("/d").unwrap();
        listed.sort();
        assert_eq!(listed, names);
        for name in names.iter().step_by(37) {
            assert_eq!(snapshot.list(&format!("/d/{name}")).unwrap(), vec!["c".to_string()], "{name:?}");
        }
    }
}

/// Roots at the region's end, past it and near `u64::MAX`, and leaves that
/// end the region exactly (so the second prefetch of `leaf_for` starts at
/// or after the region's end): reads report damage or read the leaf, and no
/// prefetch slices out of bounds or overflows.
#[test]
fn prefetches_at_and_beyond_the_regions_end_do_not_panic() {
    use shoal::fuzz::{self, EntrySpec, Gen, Value};
    for seed in 0..20 {
        let mut g = Gen::new(seed);
        let region = fuzz::sample_region(&mut g);
        let len = region.bytes.len() as u64;
        let roots = [
            region.root,
            region.commit,
            len.saturating_sub(8) & !7,
            len & !7,
            len,
            len + 8,
            len + 1024,
            1 << 40,
            !7,
            (u64::MAX - 1023) & !7,
            (u64::MAX - 1024) & !7,
            u64::MAX,
        ];
        for root in roots {
            fuzz::tree(&region.bytes, root);
            fuzz::crafted_tree(&region.bytes, root);
        }
        // Every cut of the region, read at its own root.
        for cut in (8..region.bytes.len()).step_by(8) {
            fuzz::tree(&region.bytes[..cut], region.root);
            fuzz::crafted_tree(&region.bytes[..cut], region.root);
        }
    }
    // Leaves of a few hundred bytes to several KiB, each the last node of
    // its region: a lookup prefetches up to and past the region's end.
    for entries in [1usize, 4, 12, 40, 200] {
        let specs: Vec<EntrySpec> = (0..entries)
            .map(|i| EntrySpec {
                key: format!("key{i:05}").into_bytes(),
                value: Value::Inline(vec![b'x'; 200]),
                link: None,
            })
            .collect();
        let leaf = fuzz::encode_leaf(&specs);
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&leaf);
        fuzz::tree(&bytes, 8);
        fuzz::crafted_tree(&bytes, 8);
        assert_eq!(fuzz::walk_all(&bytes, 8).unwrap().len(), entries);
        // Cut within the leaf: its parse must refuse it.
        for cut in [bytes.len() - 8, 8 + 1024, 8 + 16] {
            if cut < bytes.len() {
                fuzz::tree(&bytes[..cut], 8);
                fuzz::crafted_tree(&bytes[..cut], 8);
            }
        }
    }
}
