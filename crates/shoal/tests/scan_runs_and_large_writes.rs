//! The scan's plain runs and the arena's large writes: every way
//! of scanning against a model, through copies, compactions, held snapshots,
//! damage, reopens, recycled generations and a small reservation.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal::{Durability, Options, Snapshot, Store};

mod crafted;
use crafted::{leaf_entry, leaves, reseal};

type Items = Vec<(String, Vec<u8>)>;
type Model = BTreeMap<String, Vec<u8>>;

fn options() -> Options {
    Options { durability: Durability::None, auto_compact: false, create: true, ..Options::default() }
}

/// Path order: the key order, `\0` for `/`.
fn key_of(p: &str) -> Vec<u8> {
    p[1..].bytes().map(|b| if b == b'/' { 0 } else { b }).collect()
}

fn below(p: &str, root: &str) -> bool {
    root == "/" || p == root || p.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

fn expected(m: &Model, root: &str) -> Items {
    let mut v: Items = m.iter().filter(|(k, _)| below(k, root)).map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by_key(|(k, _)| key_of(k));
    v
}

type Scanned = Vec<Result<(String, Vec<u8>), String>>;

/// `next_path` (`mix` 0), `next` (`mix` 100), or the two interleaved at
/// random: what a scan yields up to its end or its first error.
fn by_mixed(snap: &Snapshot, root: &str, rng: &mut StdRng, mix: u32) -> Scanned {
    let mut scan = snap.scan(root).unwrap();
    let mut out = Vec::new();
    loop {
        let next = if rng.gen_range(0..100) < mix {
            scan.next().map(|e| e.map(|e| (e.path(), e.value().to_vec())))
        } else {
            scan.next_path().map(|e| e.map(|(p, v)| (p.to_string(), v.to_vec())))
        };
        let Some(next) = next else { break };
        let failed = next.is_err();
        out.push(next.map_err(|e| e.to_string()));
        if failed {
            return out;
        }
    }
    // A finished scan stays finished, both ways.
    assert!(scan.next_path().is_none() && scan.next().is_none(), "{root}: a scan yielded after its end");
    out
}

/// Every way of scanning `root` reads exactly as the model.
fn check(snap: &Snapshot, m: &Model, root: &str, rng: &mut StdRng, what: &str) {
    let want: Scanned = expected(m, root).into_iter().map(Ok).collect();
    for mix in [100, 0, 5, 50, 95] {
        let got = by_mixed(snap, root, rng, mix);
        let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        let short = |x: Option<&Result<(String, Vec<u8>), String>>| {
            x.map(|r| r.as_ref().map(|(p, v)| format!("{p} ({} bytes)", v.len())).map_err(String::clone))
        };
        let (g, w) = (short(got.get(i)), short(want.get(i)));
        assert!(got == want, "{what}: scan of {root} ({mix}% next) differs at {i}: got {g:?}, want {w:?}");
    }
}

/// Names chosen around the edges: prefixes of each other, multi-byte
/// characters that share their first byte, lengths around 8 and 16 bytes.
const NAMES: &str = "a b bc b- bcd ü é è éé 日本 日本語 xxxxxxx yyyyyyyy zzzzzzzzz aaaaaaaaaaaaaaa \
    aaaaaaaaaaaaaaaa aaaaaaaaaaaaaaaaa aaaaaaaé aaaaaaaaaaaaaaaé ~ 0 00";

fn random_path(rng: &mut StdRng) -> String {
    let names: Vec<&str> = NAMES.split(' ').collect();
    let depth = rng.gen_range(1..=4);
    let mut p = String::new();
    for _ in 0..depth {
        p.push('/');
        if rng.gen_range(0..20) == 0 {
            p.push_str(&"q".repeat(rng.gen_range(30..=253)));
        } else {
            p.push_str(names[rng.gen_range(0..names.len())]);
        }
        if rng.gen_range(0..3) == 0 {
            p.push_str(&rng.gen_range(0..40).to_string());
        }
    }
    p
}

fn random_value(rng: &mut StdRng, tag: usize) -> Vec<u8> {
    let len = [0, 1, 7, 8, 9, 100, 255, 256, 257, 1000][rng.gen_range(0..10)];
    (0..len).map(|i| (tag.wrapping_mul(31) + i) as u8).collect()
}

fn put_model(m: &mut Model, path: &str, value: Vec<u8>) {
    let mut at = path;
    while let Some(cut) = at.rfind('/').filter(|&c| c > 0) {
        at = &at[..cut];
        m.entry(at.to_string()).or_default();
    }
    m.insert(path.to_string(), value);
}

fn delete_tree_model(m: &mut Model, path: &str) {
    m.retain(|k, _| !below(k, path));
}

#[test]
fn random_operations_scan_as_the_model_every_way_through_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { auto_compact: true, compact_min_bytes: 256 << 10, ..options() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5ca1);
    let mut m = Model::new();
    let mut held: Vec<(Snapshot, Model)> = Vec::new();
    let mut tag = 0;
    let mut last_to = "/first".to_string();
    for round in 0..24 {
        let mut txn = store.begin();
        let mut next = m.clone();
        for _ in 0..rng.gen_range(20..200) {
            let p = random_path(&mut rng);
            tag += 1;
            let v = random_value(&mut rng, tag);
            txn.put(&p, &v).unwrap();
            put_model(&mut next, &p, v);
        }
        // Writes below the last copy split it.
        for _ in 0..rng.gen_range(0..4) {
            let p = format!("{last_to}{}", random_path(&mut rng));
            // Too long a path is refused, and leaves the model alone.
            if txn.put(&p, b"split").is_ok() {
                put_model(&mut next, &p, b"split".to_vec());
            }
        }
        if rng.gen_range(0..3) == 0 {
            let p = random_path(&mut rng);
            txn.delete_tree(&p).unwrap();
            delete_tree_model(&mut next, &p);
        }
        txn.commit().unwrap();
        m = next;
        // A copy by reference, alone in its transaction, from the version
        // just committed.
        let keys: Vec<&String> = m.keys().collect();
        // Sometimes a whole top-level subtree, sometimes into its own
        // subtree or over an existing node.
        let mut from = keys[rng.gen_range(0..keys.len())].clone();
        if round % 2 == 0 {
            from.truncate(from[1..].find('/').map_or(from.len(), |c| c + 1));
        }
        let to = match round % 3 {
            0 => format!("{from}/copy{round}"),
            1 => keys[rng.gen_range(0..keys.len())].clone(),
            _ => format!("{}/copy{round}", keys[rng.gen_range(0..keys.len())]),
        };
        let mut txn = store.begin();
        if txn.copy_tree(&from, &to).is_ok() && txn.commit().is_ok() {
            let copied: Items = m
                .iter()
                .filter(|(k, _)| below(k, &from))
                .map(|(k, v)| (k[from.len()..].to_string(), v.clone()))
                .collect();
            delete_tree_model(&mut m, &to);
            for (rest, v) in copied {
                put_model(&mut m, &format!("{to}{rest}"), v);
            }
        }
        last_to = to.clone();
        let snap = store.snapshot();
        let mut roots = vec!["/".to_string(), from.clone(), to.clone(), "/b".into(), "/bc".into(), "/é".into()];
        roots.push(random_path(&mut rng));
        for root in &roots {
            check(&snap, &m, root, &mut rng, &format!("round {round}"));
        }
        if round % 4 == 1 {
            held.push((snap, m.clone()));
        }
        if round % 6 == 5 {
            store.compact().unwrap();
        }
    }
    store.wait_for_compaction();
    // Snapshots held through later commits and compactions still read as
    // they did.
    for (i, (snap, m)) in held.iter().enumerate() {
        check(snap, m, "/", &mut rng, &format!("held snapshot {i}"));
    }
    check(&store.snapshot(), &m, "/", &mut rng, "after the rounds");
    drop((held, store));
    let store = Store::open_existing(dir.path()).unwrap();
    check(&store.snapshot(), &m, "/", &mut rng, "reopened");
}

#[test]
fn suffixes_of_every_length_and_separator_position_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let mut m = Model::new();
    let mut txn = store.begin();
    let mut put = |txn: &mut shoal::Transaction<'_>, p: String, len: usize| {
        let v: Vec<u8> = (0..len).map(|i| (i as u8) ^ (p.len() as u8)).collect();
        txn.put(&p, &v).unwrap();
        put_model(&mut m, &p, v);
    };
    // Under several parents (one ending in a character that a sibling
    // shares the first byte of): names of 1 to 40 bytes, names with a
    // separator at every position up to 20, non-ASCII characters astride
    // the eighth and sixteenth byte, values at the inline limit and past it.
    for parent in ["/p", "/pé", "/pè", "/p/q/r"] {
        for n in 1..=40 {
            put(&mut txn, format!("{parent}/{}", "n".repeat(n)), [0, 256, 257][n % 3]);
            put(&mut txn, format!("{parent}/{}", "m".repeat(n)), 8);
        }
        for cut in 1..=20 {
            put(&mut txn, format!("{parent}/s{}/{}", "s".repeat(cut - 1), "t".repeat(21 - cut)), cut);
        }
        for at in [5, 6, 7, 8, 14, 15, 16, 17] {
            put(&mut txn, format!("{parent}/{}é{}", "u".repeat(at), "v".repeat(3)), 256);
            put(&mut txn, format!("{parent}/{}日{}", "u".repeat(at), "w".repeat(9)), 1);
        }
        put(&mut txn, format!("{parent}/{}", "z".repeat(255)), 3);
        // Suffixes whose first eight bytes (their hints) are all equal.
        for i in 0..40 {
            put(&mut txn, format!("{parent}/hhhhhhhh{i}"), i % 3);
            put(&mut txn, format!("{parent}/hhhhhhhh/{i}"), 2);
            put(&mut txn, format!("{parent}/hhhhhhh{}", "h".repeat(i)), 1);
        }
    }
    // One path of exactly the limit, and one a byte short of it.
    for total in [shoal::path::MAX_PATH_BYTES - 1, shoal::path::MAX_PATH_BYTES] {
        let mut p = format!("/long{total}");
        while p.len() + 256 <= total {
            p.push('/');
            p.push_str(&"L".repeat(255));
        }
        p.push('/');
        p.push_str(&"E".repeat(total - p.len()));
        assert_eq!(p.len(), total);
        put(&mut txn, p, 256);
    }
    txn.commit().unwrap();
    let snap = store.snapshot();
    let mut rng = StdRng::seed_from_u64(17);
    for root in ["/", "/p", "/pé", "/pè", "/p/q", "/p/q/r", "/p/nnnnnnn", "/long3072", "/long3071"] {
        check(&snap, &m, root, &mut rng, "suffixes");
    }
    // And the same once compaction rewrote every leaf.
    store.compact().unwrap();
    check(&store.snapshot(), &m, "/", &mut rng, "suffixes, compacted");
}

/// The arena files and their lengths, newest generation last.
fn arenas(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().unwrap().starts_with("arena-"))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

/// A transaction of `n` values of about `size` bytes each: a large flush.
fn commit_batch(store: &Store, m: &mut Model, batch: usize, n: usize, size: usize) -> shoal::Result<u64> {
    let mut txn = store.begin();
    let mut next = m.clone();
    for i in 0..n {
        let p = format!("/batch{batch:03}/{:x}/{i}", i % 16);
        let v: Vec<u8> = (0..size + i % 3).map(|j| (batch * 7 + i + j) as u8).collect();
        txn.put(&p, &v)?;
        put_model(&mut next, &p, v);
    }
    let version = txn.commit()?;
    *m = next;
    Ok(version)
}

#[test]
fn large_writes_survive_reopens_recycled_generations_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut m = Model::new();
    let items: Items = (0..24_000).map(|i| (format!("/load/{}/{i:06}", i % 97), vec![(i % 251) as u8; 150])).collect();
    {
        let store = Store::open(dir.path(), Options { durability: Durability::Sync, ..options() }).unwrap();
        store.bulk_load(items.iter().map(|(p, v)| (p.as_str(), v.as_slice()))).unwrap();
        for (p, v) in &items {
            put_model(&mut m, p, v.clone());
        }
        commit_batch(&store, &mut m, 0, 600, 300).unwrap();
    }
    let store = Store::open_existing(dir.path()).unwrap();
    check(&store.snapshot(), &m, "/", &mut rng, "loaded, reopened");
    // Compactions move to new generations, the later ones into recycled
    // files that keep their old bytes past the new data; large commits
    // between them, each checked after a reopen.
    for batch in 1..5 {
        let held = store.snapshot();
        let held_model = m.clone();
        store.compact().unwrap();
        commit_batch(&store, &mut m, batch, 700, 257).unwrap();
        commit_batch(&store, &mut m, batch + 100, 40, 8).unwrap();
        check(&held, &held_model, "/load/5", &mut rng, "held across a compaction");
        check(&store.snapshot(), &m, "/", &mut rng, &format!("batch {batch}"));
        store.reclaim();
    }
    drop(store);
    let store = Store::open_existing(dir.path()).unwrap();
    check(&store.snapshot(), &m, "/", &mut rng, "after recycled generations, reopened");
    store.verify().unwrap();
}

#[test]
fn a_small_reservation_is_never_exceeded_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // Not a multiple of the 2 MiB chunk.
    let reserve = (5 << 20) + 3 * 4096;
    let opts = Options { map_reserve_bytes: reserve, max_value_bytes: 4096, ..options() };
    let mut rng = StdRng::seed_from_u64(9);
    let mut m = Model::new();
    let within = |dir: &std::path::Path| {
        for (path, len) in arenas(dir) {
            assert!(len <= reserve, "{path:?}: {len} bytes, past the reservation of {reserve}");
        }
    };
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let mut full = false;
        for batch in 0..60 {
            // Alternating large flushes and small ones, until the arena is full.
            let (n, size) = if batch % 2 == 0 { (600, 400) } else { (3, 10) };
            if commit_batch(&store, &mut m, batch, n, size).is_err() {
                full = true;
                break;
            }
            within(dir.path());
        }
        assert!(full, "the arena never filled");
        check(&store.snapshot(), &m, "/", &mut rng, "full arena");
    }
    within(dir.path());
    let store = Store::open(dir.path(), opts).unwrap();
    check(&store.snapshot(), &m, "/", &mut rng, "full arena, reopened");
}

/// Single bytes of leaf suffixes changed (resealed, so only the order
/// check can catch them): every scan reads the same paths up to the same
/// error, in increasing key order, never one twice.
#[test]
fn damaged_suffixes_are_reported_the_same_way_by_every_scan() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        let name = |i: usize| format!("/d/{i:05}-{}", "x".repeat(i % 19));
        store.bulk_load((0..2500).map(|i| (name(i), vec![b'v'; i % 5]))).unwrap();
        store.checkpoint().unwrap();
    }
    let path = arenas(dir.path()).pop().unwrap().0;
    let bytes = std::fs::read(&path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    let all = leaves(&bytes);
    assert!(all.len() > 10, "{} leaves", all.len());
    let mut rng = StdRng::seed_from_u64(5);
    let (mut cases, mut errors) = (0, 0);
    for (at, node) in all.iter().step_by(3).take(8) {
        let count = u16::from_le_bytes([node[2], node[3]]) as usize;
        for i in [0, 1, count / 2, count - 2, count - 1] {
            let (fixed, tail) = leaf_entry(node, i);
            assert_eq!(node[fixed + 2], 0, "a plain entry");
            if tail.is_empty() {
                continue;
            }
            for (pos, byte) in [(tail.end - 1, b'0'), (tail.end - 1, 0xFF), (tail.start, b'~'), (tail.end - 1, 0)] {
                let mut damaged = node.clone();
                damaged[pos] = byte;
                reseal(&mut damaged);
                file.write_all_at(&damaged, *at as u64).unwrap();
                let reader = shoal::Reader::open(dir.path()).unwrap();
                let snap = reader.snapshot().unwrap();
                let [entries, by_path, mixed] = [100, 0, 50].map(|mix| by_mixed(&snap, "/", &mut rng, mix));
                let what = format!("leaf at {at}, entry {i}, byte {pos} set to {byte:#x}");
                assert!(by_path == entries && mixed == entries, "{what}: {by_path:?} / {mixed:?} vs {entries:?}");
                let keys: Vec<Vec<u8>> = entries.iter().flatten().map(|(p, _)| key_of(p)).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "{what}: keys out of order or twice");
                cases += 1;
                errors += usize::from(entries.last().is_some_and(|e| e.is_err()));
            }
        }
        file.write_all_at(node, *at as u64).unwrap();
    }
    assert!(cases >= 100 && errors >= cases / 8, "{cases} cases, {errors} reported as damage");
}
