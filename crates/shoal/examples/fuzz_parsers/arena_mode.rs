//! The arena replayed as a hostile process could leave it: a small real
//! store, then M random mutations of its arena file's nodes (never the
//! header page), each read by a fresh `Reader` (a new mapping, nothing
//! checked yet). Every read must give the intact store's answers or
//! `Error::Corrupt`/`Error::Format`, never other data and never a panic.

use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use shoal::{Durability, Error, Options, Reader, Store};

/// Everything a reader can be asked about the newest version, in one value.
#[derive(Debug, PartialEq)]
struct Contents {
    scan: Vec<(String, Vec<u8>)>,
    gets: Vec<Option<Vec<u8>>>,
    lists: Vec<Vec<String>>,
    history: Vec<(u64, u64, u64)>,
    changes: Vec<(u64, String)>,
    older: Vec<(String, Vec<u8>)>,
}

fn contents(dir: &std::path::Path) -> Result<Contents, Error> {
    let reader = Reader::open(dir)?;
    let snapshot = reader.snapshot()?;
    let mut scan = Vec::new();
    for entry in snapshot.scan("/")? {
        let entry = entry?;
        scan.push((entry.path(), entry.value().to_vec()));
    }
    // The same scan with paths rendered into the scan's buffer (a damaged
    // key shows lossily) reads the same.
    let mut rendered = snapshot.scan("/")?;
    for (path, value) in &scan {
        let (again, again_value) = rendered.next_path().expect("as long as the first scan")?;
        assert_eq!((again, again_value), (path.as_str(), value.as_slice()), "Scan::next_path differs from Entry::path");
    }
    assert!(rendered.next_path().is_none(), "Scan::next_path reads past the first scan's end");
    let mut gets = Vec::new();
    for (path, _) in &scan {
        gets.push(snapshot.get(path)?.map(<[u8]>::to_vec));
    }
    gets.push(snapshot.get("/absent/key")?.map(<[u8]>::to_vec));
    let mut lists = Vec::new();
    for dir in ["/", "/d", "/d/3", "/copy", "/copy/3", "/big"] {
        lists.push(snapshot.list(dir)?);
    }
    let history = snapshot.history()?.iter().map(|v| (v.version, v.commit_time_ns, v.key_count)).collect();
    let oldest = snapshot.versions()?.last().copied().unwrap_or(0);
    let changes = snapshot.changes(oldest, "/")?.iter().map(|c| (c.version(), c.path())).collect();
    let mut older = Vec::new();
    for entry in snapshot.at_version(oldest)?.scan("/d/1")? {
        let entry = entry?;
        older.push((entry.path(), entry.value().to_vec()));
    }
    Ok(Contents { scan, gets, lists, history, changes, older })
}

/// A store of a few versions: small and large values (in leaves, in blobs,
/// one page-aligned), a subtree copied by reference, deletions.
fn build(dir: &std::path::Path) -> (u64, u64) {
    let options = Options { durability: Durability::None, retain_versions: 8, ..Options::default() };
    let store = Store::create(dir, options).expect("create the store");
    store
        .bulk_load((0..120).map(|i| {
            let value = match i % 40 {
                0 => vec![b'b'; 300 + i],
                _ => format!("value-{i}").into_bytes(),
            };
            (format!("/d/{}/k{i}", i % 7), value)
        }))
        .expect("load");
    let mut txn = store.begin();
    txn.put("/big/page", vec![7u8; 20 << 10]).expect("put");
    txn.copy_tree("/d/3", "/copy/3").expect("copy");
    txn.commit().expect("commit");
    let mut txn = store.begin();
    txn.put("/copy/3/new", b"below a copy").expect("put");
    txn.delete("/d/1/k8").expect("delete");
    txn.delete_tree("/d/5").expect("delete subtree");
    txn.commit().expect("commit");
    let stat = store.stat().expect("stat");
    (stat.generation, stat.arena_bytes)
}

/// Runs `mutations` mutations; returns how many were read as other data
/// or failed otherwise than as damage (0 on success).
pub fn run(mutations: u64, seed: u64) -> u64 {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let (generation, used) = build(tmp.path());
    let intact = contents(tmp.path()).expect("the intact store reads");
    let arena_path = tmp.path().join(shoal::internals::arena_file_name(generation));
    let arena = std::fs::OpenOptions::new().read(true).write(true).open(&arena_path).expect("open the arena");
    let mut original = vec![0u8; used as usize];
    arena.read_exact_at(&mut original, 0).expect("read the arena");
    const HEADER_PAGE: usize = 4096;

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xA7E4A);
    let (mut same, mut corrupt, mut format, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    for m in 0..mutations {
        let mut bytes = original.clone();
        let mut touched = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let at = rng.gen_range(HEADER_PAGE..bytes.len());
            let width = [1, 2, 4, 8][rng.gen_range(0..4)];
            let at = at.min(bytes.len() - width);
            match rng.gen_range(0..4) {
                0 => bytes[at] ^= 1 << rng.gen_range(0..8),
                1 => bytes[at..at + width].fill(0),
                2 => bytes[at..at + width].fill(0xFF),
                _ => rng.fill(&mut bytes[at..at + width]),
            }
            touched.push(at..at + width);
        }
        for range in &touched {
            arena.write_all_at(&bytes[range.clone()], range.start as u64).expect("damage the arena");
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| contents(tmp.path())));
        match outcome {
            Ok(Ok(read)) if read == intact => same += 1,
            Ok(Ok(_)) => {
                wrong += 1;
                println!("ARENA {m}: damage at {touched:?} was read as other data");
            }
            Ok(Err(Error::Corrupt { .. })) => corrupt += 1,
            Ok(Err(Error::Format { .. })) => format += 1,
            Ok(Err(e)) => {
                wrong += 1;
                println!("ARENA {m}: damage at {touched:?} gave an unclear error: {e}");
            }
            Err(_) => {
                wrong += 1;
                println!("ARENA {m}: damage at {touched:?} made a reader panic");
            }
        }
        for range in &touched {
            arena.write_all_at(&original[range.clone()], range.start as u64).expect("repair the arena");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "\narena: {mutations} mutations of {} node bytes in {elapsed:.1} s: {same} read as the intact store, \
         {corrupt} Corrupt, {format} Format, {wrong} other (other data, other errors or panics)",
        used as usize - HEADER_PAGE
    );
    assert_eq!(contents(tmp.path()).expect("the repaired store reads"), intact);
    wrong
}
