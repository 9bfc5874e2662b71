//! A writer process for crash tests: `writer-child STORE [--abort-in-compaction-at N]`.
//!
//! Opens the store with durability `sync` and commits forever: commit `n`
//! writes `/c/<n>` and sets `/last` to `n`, with a value large enough now
//! and then to need a blob node; commit `n` with `n % 7 == 3` (from 10 on)
//! also copies `/c/<n-3>`, a blob, to `/copy/<n>` by reference; commit `n`
//! with `n % 11 == 5` (from 16 on) first copies the whole of `/c` to
//! `/snap/<n>` by reference and drops the snapshot copy made 33 commits
//! before. After each commit returns it prints
//! `ack <n>` (flushed), so the parent knows exactly which commits were
//! acknowledged when it kills this process. With `--abort-in-compaction-at
//! N`, after commit `N` it compacts and aborts right after the switch to the
//! new generation, before the checkpoint that names it.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("store dir").clone();
    let abort_at: Option<u64> = match args.get(2).map(String::as_str) {
        Some("--abort-in-compaction-at") => Some(args.get(3).and_then(|n| n.parse().ok()).expect("a commit number")),
        Some(other) => panic!("unknown argument {other}"),
        None => None,
    };
    let options = shoal::Options {
        durability: shoal::Durability::Sync,
        map_reserve_bytes: 1 << 30,
        checkpoint_journal_bytes: 64 << 10,
        compact_min_bytes: 1 << 20,
        retain_versions: 4,
        create: true,
        ..shoal::Options::default()
    };
    let store = shoal::Store::open(&dir, options).expect("open store");
    let mut next = store
        .snapshot()
        .get("/last")
        .expect("read /last")
        .map_or(0, |v| std::str::from_utf8(v).expect("utf8").parse::<u64>().expect("number") + 1);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready next={next}").ok();
    out.flush().ok();
    loop {
        let mut txn = store.begin();
        if next % 11 == 5 && next >= 16 {
            txn.copy_tree("/c", &format!("/snap/{next}")).expect("copy_tree");
            if next >= 49 {
                txn.delete_tree(&format!("/snap/{}", next - 33)).expect("delete_tree");
            }
        }
        let value = if next.is_multiple_of(7) { vec![b'x'; 600] } else { next.to_string().into_bytes() };
        txn.put(&format!("/c/{next}"), value).expect("put");
        txn.put("/last", next.to_string()).expect("put");
        if next % 7 == 3 && next >= 10 {
            txn.copy(&format!("/c/{}", next - 3), &format!("/copy/{next}")).expect("copy");
        }
        if next.is_multiple_of(50) && next >= 50 {
            txn.delete_tree(&format!("/c/{}", next - 25)).expect("delete_tree");
        }
        txn.commit().expect("commit");
        writeln!(out, "ack {next}").ok();
        out.flush().ok();
        if abort_at == Some(next) {
            shoal::internals::abort_in_next_compaction_after_switch(&store);
            store.compact().expect("compact");
            unreachable!("the compaction should have aborted the process");
        }
        next += 1;
    }
}
