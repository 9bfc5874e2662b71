//! An idle store is tidied (`Options::tidy_when_idle`): after a burst of
//! commits its files shrink to about twice its live data, without ever
//! deleting a generation a reader still reads.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal::{Durability, Options, Reader, Store};

fn options(tidy: Option<Duration>) -> Options {
    Options {
        durability: Durability::None,
        compact_min_bytes: 4 << 20,
        retain_versions: 2,
        tidy_when_idle: tidy,
        create: true,
        ..Options::default()
    }
}

/// Bytes the store directory's files take on disk, as `du` counts them.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().blocks() * 512).sum()
}

/// Overwrites 2,000 values of 200 bytes until the arena has been compacted
/// at least twice: the arena is mostly garbage, and a spare file is left.
fn burst(store: &Store) {
    let value = vec![b'v'; 200];
    let start_generation = store.stat().unwrap().generation;
    let mut i = 0u64;
    while i < 10_000 || store.stat().unwrap().generation < start_generation + 2 {
        let mut txn = store.begin();
        for k in 0..20 {
            txn.put(&format!("/d/{}", (i * 20 + k) % 2000), &value).unwrap();
        }
        txn.commit().unwrap();
        i += 1;
    }
    store.wait_for_compaction();
}

/// Polls `done` for up to 10 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn an_idle_store_holds_about_twice_its_live_data_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Some(Duration::from_millis(300)))).unwrap();
    burst(&store);
    let busy = disk_bytes(dir.path());
    // Compacted when more than half of the arena is garbage, and at least
    // 1 MiB.
    let bound = |live: u64| (2 * live).max(live + (1 << 20));
    let tidy = eventually(|| {
        let stat = store.stat().unwrap();
        stat.spare_generation.is_none() && stat.old_generations.is_empty() && stat.arena_bytes <= bound(stat.live_bytes)
    });
    let stat = store.stat().unwrap();
    assert!(tidy, "not tidied: {stat:?}");
    let idle = disk_bytes(dir.path());
    // The arena within that bound, its file up to 4 MiB more (prefilled
    // ahead of the writes, in whole 2 MiB steps), and the small files
    // (control, meta, reader table, settings) a few pages.
    assert!(
        idle <= bound(stat.live_bytes) + (4 << 20) + (64 << 10),
        "{idle} bytes on disk for {} live ({busy} while busy)",
        stat.live_bytes
    );
    assert!(idle * 3 < busy, "{idle} bytes on disk idle, {busy} busy");
    // Everything is still there.
    let snap = store.snapshot();
    assert_eq!(snap.list("/d").unwrap().len(), 2000);
    snap.verify().unwrap();
}

#[test]
fn without_tidying_the_spare_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(None)).unwrap();
    burst(&store);
    // The compaction's own reclaim may have run while the burst's last
    // transaction still read the generation it retired; nothing else pins
    // it now, so it is freed, and the newest freed file is kept as the spare.
    assert_eq!(store.reclaim(), Vec::<u64>::new());
    std::thread::sleep(Duration::from_millis(1200));
    let stat = store.stat().unwrap();
    assert!(stat.spare_generation.is_some(), "{stat:?}");
    assert!(stat.old_generations.is_empty(), "{stat:?}");
}

#[test]
fn a_generation_a_reader_holds_is_kept_until_it_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Some(Duration::from_millis(300)))).unwrap();
    burst(&store);
    // A reader holds a snapshot of the current generation; more commits
    // then move the store to a newer one.
    let reader = Reader::open(dir.path()).unwrap();
    let held = reader.snapshot().unwrap();
    let held_generation = held.generation();
    let before: Vec<(String, Vec<u8>)> =
        held.scan("/d").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    burst(&store);
    assert!(store.stat().unwrap().generation > held_generation);
    // Idle: everything else is tidied, the held generation stays readable.
    assert!(eventually(|| store.stat().unwrap().spare_generation.is_none()));
    std::thread::sleep(Duration::from_millis(700));
    assert!(store.stat().unwrap().old_generations.contains(&held_generation));
    let again: Vec<(String, Vec<u8>)> =
        held.scan("/d").unwrap().map(|e| e.map(|e| (e.path(), e.value().to_vec())).unwrap()).collect();
    assert_eq!(again, before);
    // Let go: its file goes too.
    drop(held);
    drop(reader);
    let stat_ok = eventually(|| {
        let stat = store.stat().unwrap();
        stat.old_generations.is_empty() && stat.spare_generation.is_none()
    });
    assert!(stat_ok, "{:?}", store.stat().unwrap());
    assert!(!dir.path().join(shoal::internals::arena_file_name(held_generation)).exists());
}

#[test]
fn a_busy_store_is_not_tidied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Some(Duration::from_millis(500)))).unwrap();
    burst(&store);
    assert!(store.stat().unwrap().spare_generation.is_some());
    // A commit every 50 ms for 1.5 s: never idle for 500 ms.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let mut txn = store.begin();
        txn.put("/tick", "t").unwrap();
        txn.commit().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(store.stat().unwrap().spare_generation.is_some(), "tidied while busy");
}

/// CPU ticks used so far by each of this process's idle threads (user +
/// system), by thread id, from /proc/self/task: the other tests' stores run
/// beside this one, and a short-lived walker thread may come and go.
fn idle_threads_cpu_ticks() -> std::collections::HashMap<String, u64> {
    let mut ticks = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        if &stat[open + 1..close] != "shoal-idle" {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let used = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks.insert(task.file_name().to_string_lossy().into_owned(), used);
    }
    ticks
}

/// CPU time the idle threads used between two readings (a thread that
/// ended in between counts for what it used before; one that started, for
/// all it used).
fn idle_cpu_between(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> Duration {
    let ticks: u64 = after.iter().map(|(tid, t)| t.saturating_sub(before.get(tid).copied().unwrap_or(0))).sum();
    Duration::from_millis(ticks * 10)
}

/// At the limit: tidying after no wait at all still tidies, and the idle
/// thread does not spin while the store rests.
#[test]
fn a_zero_wait_tidies_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(Some(Duration::ZERO))).unwrap();
    burst(&store);
    assert!(eventually(|| store.stat().unwrap().spare_generation.is_none()), "{:?}", store.stat().unwrap());
    let before = idle_threads_cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = idle_cpu_between(&before, &idle_threads_cpu_ticks());
    assert!(used < Duration::from_millis(150), "{used:?} of CPU in 1 s at rest");
}
