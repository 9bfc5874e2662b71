//! shoal-bench: measures shoal and the systems users would pick instead
//! (LMDB through `heed`, Redis over a unix socket) on one generated dataset,
//! in one run; prints a markdown table and, with `--out FILE`, writes JSON.
//!
//! Rows: 1 point reads (1 and P reader processes), 2 ordered scan, 3
//! single-key commits (durability off/on, 1 and 16 committers), 4 bulk load,
//! 5 update propagation to another process, 6 memory (PSS) of P+1 processes
//! holding the dataset, 7 reopen → first read. Each row: a warm-up, then
//! `--reps` repetitions; cells show the median with min–max. Rows 1
//! and 3a interleave the engines' repetitions (see `interleaved_rows`).

mod dataset;
mod engines;
mod futex;
mod report;
mod sysinfo;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::Parser;

use dataset::{Dataset, Spec, SCAN_PREFIX, SEQ_KEY};
use engines::{Durability, Engine, MemoryOwner, Reopen};
use report::{Better, Cell, Figure, Report, Row, Target};
use worker::WorkerProc;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", about = "Measure shoal against LMDB and Redis on one generated dataset")]
struct Args {
    /// Keys in the dataset (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    keys: Option<usize>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seed of the values and of the random key orders.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// 100,000 keys, 3 repetitions, shorter windows: under a minute.
    #[arg(long)]
    quick: bool,
    /// Repetitions per row after the warm-up (default 5; 3 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Reader processes P for the multi-process rows (default: the number of cores).
    #[arg(long)]
    processes: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these rows (1-7), e.g. --only 1,5.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Engines to measure.
    #[arg(long, value_delimiter = ',', default_value = "shoal,lmdb,redis")]
    engines: Vec<String>,
    /// Directory for the stores (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keys per read batch (one snapshot / read transaction / pipeline).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Length of one timed window, in milliseconds (default 1000; 250 with --quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Commits sampled for update propagation (default 2000; 300 with --quick).
    #[arg(long)]
    samples: Option<usize>,
}

/// Everything a run is configured with.
struct Config {
    spec: Spec,
    reps: usize,
    processes: usize,
    window: Duration,
    samples: usize,
    batch: usize,
    committers: usize,
    rows: Vec<u32>,
    engines: Vec<String>,
    scan_keys: usize,
}

impl Config {
    fn wants(&self, row: u32) -> bool {
        self.rows.contains(&row)
    }
}

/// Row 6c: keys in the small store (the demo's 10,000 domains' worth)...
const BURST_STORE_KEYS: usize = 40_000;
/// ...the seconds of commits it takes...
const BURST_SECS: u64 = 3;
/// ...and the seconds it rests before its files are measured: past shoal's
/// default `tidy_when_idle` of 2 s.
const IDLE_SECS: u64 = 3;

/// The row layout: id, row number, title, unit, which way is better.
fn row_layout(cfg: &Config) -> Vec<(&'static str, u32, String, &'static str, Better)> {
    let p = cfg.processes;
    vec![
        ("1a", 1, "Random point reads, 1 reader process".into(), "gets/s", Better::Higher),
        ("1b", 1, format!("Random point reads, {p} reader processes (P)"), "gets/s", Better::Higher),
        ("2", 2, format!("Ordered scan of {} keys of a subtree", cfg.scan_keys), "keys/s", Better::Higher),
        ("3a", 3, "Single-key commits, durability off, 1 committer".into(), "commits/s", Better::Higher),
        ("3b", 3, "Single-key commits, durability on, 1 committer".into(), "commits/s", Better::Higher),
        (
            "3c",
            3,
            format!("Single-key commits, durability on, {} committers", cfg.committers),
            "commits/s",
            Better::Higher,
        ),
        ("4", 4, "Bulk load of the whole dataset".into(), "keys/s", Better::Higher),
        ("5a", 5, "Update propagation p50 (commit returned → seen in another process)".into(), "µs", Better::Lower),
        ("5b", 5, "Update propagation p99 (commit returned → seen)".into(), "µs", Better::Lower),
        ("5c", 5, "Update propagation p99.9 (commit returned → seen)".into(), "µs", Better::Lower),
        ("5d", 5, "Update propagation p99 from commit start (commit + propagation)".into(), "µs", Better::Lower),
        ("5e", 5, "Update propagation p99, polling reader (commit returned → seen)".into(), "µs", Better::Lower),
        ("5f", 5, "Update propagation p99.9, polling reader".into(), "µs", Better::Lower),
        (
            "5g",
            5,
            "Futex wake floor p99 (a sleeping process woken by another; the machine's, per run)".into(),
            "µs",
            Better::Lower,
        ),
        ("5h", 5, "Futex wake floor p99.9".into(), "µs", Better::Lower),
        (
            "6a",
            6,
            format!("Memory: total PSS of {} processes that read the whole dataset", p + 1),
            "MiB",
            Better::Lower,
        ),
        ("6b", 6, "Memory: the store's own size after the load".into(), "MiB", Better::Lower),
        (
            "6c",
            6,
            format!(
                "Disk: a store of {BURST_STORE_KEYS} keys after {BURST_SECS} s of commits and {IDLE_SECS} s at rest, over its live data"
            ),
            "× live",
            Better::Lower,
        ),
        ("7a", 7, "Reopen a store of N keys: owner open → first read".into(), "ms", Better::Lower),
        ("7b", 7, "Reopen: a new reader process opens → first read".into(), "ms", Better::Lower),
    ]
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(worker::SUBCOMMAND) {
        let job = argv.get(2).cloned().unwrap_or_default();
        if let Err(e) = worker::main(&job) {
            eprintln!("shoal-bench worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Err(e) = run(args, argv.join(" ")) {
        eprintln!("shoal-bench: {e}");
        std::process::exit(1);
    }
}

/// Removes the run's directory at the end, also on panic.
struct TempRoot(PathBuf);

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: Args, command: String) -> Result<()> {
    let keys = args.keys.unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    if keys == 0 || args.value_size == 0 || args.batch == 0 {
        return Err("--keys, --value-size and --batch must be at least 1".into());
    }
    for e in &args.engines {
        if !engines::ALL.contains(&e.as_str()) {
            return Err(format!("unknown engine {e:?} (known: {})", engines::ALL.join(",")).into());
        }
    }
    let rows: Vec<u32> = if args.only.is_empty() { (1..=7).collect() } else { args.only.clone() };
    if let Some(bad) = rows.iter().find(|r| !(1..=7).contains(*r)) {
        return Err(format!("--only: no row {bad} (rows are 1-7)").into());
    }
    let cfg = Config {
        spec: Spec { keys, value_size: args.value_size, seed: args.seed },
        reps: args.reps.unwrap_or(if args.quick { 3 } else { 5 }).max(1),
        processes: args.processes.unwrap_or_else(sysinfo::nproc).max(1),
        window: Duration::from_millis(args.window_ms.unwrap_or(if args.quick { 250 } else { 1000 })),
        samples: args.samples.unwrap_or(if args.quick { 300 } else { 2000 }).max(10),
        batch: args.batch,
        committers: 16,
        rows,
        engines: engines::ALL.iter().filter(|e| args.engines.iter().any(|a| a == *e)).map(|e| e.to_string()).collect(),
        scan_keys: keys.min(10_000),
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = TempRoot(base.join(format!("shoal-bench-{}", std::process::id())));
    std::fs::create_dir_all(&root.0)?;

    let mut report = Report {
        date: sysinfo::utc_now(),
        command,
        machine: sysinfo::machine(&root.0),
        engines: cfg.engines.clone(),
        ..Report::default()
    };
    let raw = cfg.spec.raw_bytes();
    report.sizes.insert("dataset".into(), vec![("raw keys + values bytes".into(), raw)]);
    report.config = vec![
        (
            "dataset".into(),
            format!(
                "{} keys `{SCAN_PREFIX}/<d>/<field>` ({} domains × {} fields), {}-byte values, seed {}",
                cfg.spec.keys,
                cfg.spec.keys.div_ceil(dataset::FIELDS.len()),
                dataset::FIELDS.len(),
                cfg.spec.value_size,
                cfg.spec.seed
            ),
        ),
        ("dataset raw size (keys + values)".into(), format!("{:.1} MiB", raw as f64 / (1 << 20) as f64)),
        (
            "method".into(),
            format!(
                "1 warm-up + {} repetitions per row, {} ms windows, {} keys per read batch, P = {} reader processes",
                cfg.reps,
                cfg.window.as_millis(),
                cfg.batch,
                cfg.processes
            ),
        ),
    ];
    let layout = row_layout(&cfg);
    let mut rows: Vec<Row> = layout
        .iter()
        .filter(|(_, n, ..)| cfg.wants(*n))
        .map(|(id, _, title, unit, better)| Row {
            id,
            title: title.clone(),
            unit,
            better: *better,
            cells: BTreeMap::new(),
        })
        .collect();

    eprintln!("shoal-bench: generating {} keys ...", cfg.spec.keys);
    let data = cfg.spec.generate();
    let mut engine_notes = Vec::new();
    let available: Vec<&String> = cfg.engines.iter().filter(|n| engines::unavailable(n).is_none()).collect();
    if let Err(e) = interleaved_rows(&cfg, &data, &root.0, &available, &mut rows) {
        eprintln!("shoal-bench: interleaved rows: error: {e}");
        for row in rows.iter_mut().filter(|r| INTERLEAVED.contains(&r.id)) {
            for name in &available {
                row.cells.insert(name.to_string(), Cell::Text(format!("error: {e}")));
            }
        }
    }
    for name in &cfg.engines {
        if let Some(reason) = engines::unavailable(name) {
            eprintln!("shoal-bench: {name}: {reason}");
            for row in &mut rows {
                row.cells.insert(name.clone(), Cell::Text(reason.clone()));
            }
            continue;
        }
        let mut bench = EngineRun { cfg: &cfg, data: &data, name, rows: &mut rows, sizes: None, notes: Vec::new() };
        if let Err(e) = bench.run(&root.0) {
            // A failure before any row could run: every remaining cell says so.
            let text = format!("error: {e}");
            eprintln!("shoal-bench: {name}: {text}");
            for row in bench.rows.iter_mut() {
                row.cells.entry(name.clone()).or_insert_with(|| Cell::Text(text.clone()));
            }
        }
        if let Some(sizes) = bench.sizes.take() {
            report.sizes.insert(name.clone(), sizes);
        }
        engine_notes.append(&mut bench.notes);
    }
    report.rows = rows;
    notes(&cfg, &mut report);
    report.notes.extend(engine_notes);
    report.targets = targets(&report);

    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report.json())? + "\n")?;
        eprintln!("shoal-bench: wrote {}", out.display());
    }
    Ok(())
}

fn notes(cfg: &Config, report: &mut Report) {
    let notes = vec![
        "Processes, not threads: every reader, poller and memory reader is a separate process \
         (the binary re-executes itself); concurrent readers start together on a `go` line."
            .to_string(),
        "Interleaved: rows 1a, 1b and 3a load every engine first, then run each repetition as one \
         window of every engine back to back, so that the machine's drift over the run falls on all \
         engines alike. In 3a each counted window follows an uncounted lead-in window of the same engine \
         (the previous engine's background work, such as shoal's compaction or writeback, spills into \
         it), and the engines' order alternates between repetitions. The other rows run engine after \
         engine."
            .to_string(),
        format!(
            "Point reads: each process reads random dataset keys in batches of {}: shoal takes a fresh \
             `Reader::snapshot()` per batch, LMDB one read transaction per batch, Redis one pipeline of GETs \
             per batch over the unix socket.",
            cfg.batch
        ),
        "Scan: shoal `Snapshot::scan(\"/local/domain\")` and LMDB `prefix_iter(\"/local/domain/\")` read \
         in key order from the start of the subtree until that many dataset values were read, taking each \
         entry's key (shoal: its path from `Scan::next_path`, rendered into a buffer the scan reuses) and value; shoal also passes the \
         empty-valued `/local/domain/<d>` parents. Redis has no ordered key space."
            .to_string(),
        "Commits: each is one transaction writing one random existing key. Durability off: shoal \
         `Durability::None`, LMDB `NO_SYNC | NO_META_SYNC`, Redis without persistence. On: shoal \
         `Durability::Sync` (group commit), LMDB default synced commits (writers serialize, one sync \
         each), Redis a second server loaded from the first one's RDB with `appendonly yes` and \
         `appendfsync always`."
            .to_string(),
        "Bulk load: shoal `Store::bulk_load` (one version), LMDB one write transaction, Redis pipelined \
         SETs (1000 per round trip); the same key order for all, timed until readable."
            .to_string(),
        format!(
            "Update propagation: {} sampled commits of one key (durability off) after {} warm-up ones; \
             `seen` is stamped with CLOCK_MONOTONIC in the reader process; a reader that sees the version \
             before `commit()` returned counts as 0 µs in rows 5a–5c (5d counts from the commit's start).",
            cfg.samples,
            (cfg.samples / 10).max(20)
        ),
        "Memory: PSS from /proc/<pid>/smaps_rollup, summed. shoal: the writer process (`Store::open`) and \
         P `Reader` processes, each reading every key through a snapshot it keeps. LMDB: an env owner and \
         P read-only env processes, each reading every key in a read transaction it keeps open. Redis: the \
         server plus P client processes, each holding a copy of every value it read (a Vec<Vec<u8>>)."
            .to_string(),
        "Reopen: shoal `Store::open` (7a; recovery checks the commit records, the scrub every node after open, in the background) and `Reader::open` \
         (7b); LMDB env open with no other process (7a) and read-only while the writer holds it (7b); \
         Redis `redis-server` start loading its RDB file (7a, includes exec) and a new client \
         connection (7b). Each in a fresh process, files in the page cache."
            .to_string(),
    ];
    report.notes.extend(notes);
}

fn targets(report: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    let ratio_target = |id: &str, what: &str| -> Target {
        let value = report.row(id).and_then(|r| r.ratio("lmdb"));
        Target {
            what: what.into(),
            goal: "shoal/LMDB ≥ 1.0×".into(),
            value,
            met: value.map(|v| v >= 1.0),
            detail: value.map_or(String::new(), |v| {
                if v >= 1.0 {
                    "×".into()
                } else {
                    format!("× (shoal {:.0}% below LMDB)", (1.0 - v) * 100.0)
                }
            }),
        }
    };
    out.push(ratio_target("1a", "Point reads, 1 process"));
    out.push(ratio_target("1b", "Point reads, P processes"));
    out.push(ratio_target("3a", "Single-key commits, durability off"));
    // A figure of shoal's own that must stay at or below `limit`.
    let at_most = |row: &str, what: &str, goal: &str, limit: f64, unit: &str| {
        let value = report.row(row).and_then(|r| r.median("shoal"));
        Target {
            what: what.into(),
            goal: goal.into(),
            value,
            met: value.map(|v| v <= limit),
            detail: value.map_or(String::new(), |v| {
                if v <= limit {
                    unit.into()
                } else {
                    format!("{unit} ({:.1}× the goal)", v / limit)
                }
            }),
        }
    };
    out.push(at_most("5b", "Update propagation p99 (shoal)", "≤ 50 µs", 50.0, "µs"));
    out.push(at_most("6c", "Disk after a write burst, idle (shoal)", "≤ 3× live", 3.0, "× live"));
    let pss = report.row("6a").and_then(|r| r.median("shoal"));
    let live = report
        .sizes
        .get("shoal")
        .and_then(|s| s.iter().find(|(k, _)| k.starts_with("arena live")).map(|(_, v)| *v as f64 / (1 << 20) as f64));
    let ratio = pss.zip(live).map(|(p, l)| p / l);
    out.push(Target {
        what: "PSS of the P+1 processes / arena live size (shoal)".into(),
        goal: "≤ 1.2×".into(),
        value: ratio,
        met: ratio.map(|r| r <= 1.2),
        detail: match (pss, live) {
            (Some(p), Some(l)) => format!("× ({p:.1} MiB PSS / {l:.1} MiB live)"),
            _ => String::new(),
        },
    });
    out
}

/// All the rows of one engine.
struct EngineRun<'a> {
    cfg: &'a Config,
    data: &'a Dataset,
    name: &'a str,
    rows: &'a mut Vec<Row>,
    sizes: Option<Vec<(String, u64)>>,
    notes: Vec<String>,
}

impl EngineRun<'_> {
    fn set(&mut self, id: &str, cell: Cell) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.id == id) {
            row.cells.insert(self.name.to_string(), cell);
        }
    }

    fn set_result(&mut self, id: &str, result: Result<Figure>) {
        let cell = match result {
            Ok(f) => Cell::Figure(f),
            Err(e) => {
                eprintln!("shoal-bench: {} row {id}: error: {e}", self.name);
                Cell::Text(format!("error: {e}"))
            }
        };
        self.set(id, cell);
    }

    fn progress(&self, what: &str) {
        eprintln!("shoal-bench: {}: {what}", self.name);
    }

    fn run(&mut self, root: &std::path::Path) -> Result<()> {
        let cfg = self.cfg;
        let mut engine = engines::engine(self.name, root, &cfg.spec)?;
        let e = engine.as_mut();
        if cfg.wants(5) {
            self.notes.push(format!("Update propagation, {}: {}.", self.name, e.propagation_method()));
        }

        // 4: bulk load (its last repetition is the store every other row reads).
        if cfg.wants(4) {
            self.progress("bulk load");
            let result = self.bulk_load(e);
            self.set_result("4", result);
        }
        if !cfg.wants(4)
            || self.rows.iter().any(|r| r.id == "4" && matches!(r.cells.get(self.name), Some(Cell::Text(_))))
        {
            e.create(Durability::Off)?;
            e.bulk_load(self.data)?;
        }
        self.sizes = e.sizes().ok();
        if cfg.wants(6) {
            let size = match &self.sizes {
                Some(s) => Ok(Figure::single(s[0].1 as f64 / (1 << 20) as f64).with_detail(s[0].0.clone())),
                None => Err("no sizes".into()),
            };
            self.set_result("6b", size);
        }

        // Row 1: measured by `interleaved_rows`.
        if cfg.wants(2) {
            if self.name == "redis" {
                self.set(
                    "2",
                    Cell::Text(
                        "n/a: Redis keys are unordered (SCAN is unordered); an ordered subtree needs an \
                         application-kept sorted-set index"
                            .into(),
                    ),
                );
            } else {
                self.progress("scan");
                let result = self.scan(e);
                self.set_result("2", result);
            }
        }
        if cfg.wants(7) {
            self.progress("reopen");
            let result = self.reopen(e, Reopen::Owner);
            self.set_result("7a", result);
            let result = self.reopen(e, Reopen::Reader);
            self.set_result("7b", result);
        }
        if cfg.wants(6) {
            self.progress("memory");
            let result = self.memory(e);
            self.set_result("6a", result);
            e.open(Durability::Off)?;
        }
        if cfg.wants(5) {
            self.progress("update propagation");
            match self.propagation(e, false) {
                Ok(figs) => {
                    for (id, f) in ["5a", "5b", "5c", "5d"].into_iter().zip(figs) {
                        self.set(id, Cell::Figure(f));
                    }
                }
                Err(e) => {
                    eprintln!("shoal-bench: {} propagation: error: {e}", self.name);
                    for id in ["5a", "5b", "5c", "5d"] {
                        self.set(id, Cell::Text(format!("error: {e}")));
                    }
                }
            }
            self.progress("futex wake floor");
            match futex_floor(self.cfg) {
                Ok(figs) => {
                    self.set("5g", Cell::Figure(figs[0].clone()));
                    self.set("5h", Cell::Figure(figs[1].clone()));
                }
                Err(e) => {
                    for id in ["5g", "5h"] {
                        self.set(id, Cell::Text(format!("error: {e}")));
                    }
                }
            }
            if e.polls() {
                self.progress("update propagation, polling reader");
                match self.propagation(e, true) {
                    Ok(figs) => {
                        self.set("5e", Cell::Figure(figs[1].clone()));
                        self.set("5f", Cell::Figure(figs[2].clone()));
                    }
                    Err(e) => {
                        eprintln!("shoal-bench: {} polling propagation: error: {e}", self.name);
                        for id in ["5e", "5f"] {
                            self.set(id, Cell::Text(format!("error: {e}")));
                        }
                    }
                }
            } else {
                for id in ["5e", "5f"] {
                    self.set(id, Cell::Text("n/a (no polling reader)".into()));
                }
            }
        }
        if cfg.wants(3) {
            // 3a: measured by `interleaved_rows`.
            self.progress("commits, durability on");
            let result = self.commits(e, Durability::On, 1);
            self.set_result("3b", result);
            self.progress(&format!("commits, durability on, {} committers", cfg.committers));
            let result = self.commits(e, Durability::On, cfg.committers);
            self.set_result("3c", result);
            e.open(Durability::Off)?;
        }
        if cfg.wants(6) && self.name == "redis" {
            self.set("6c", Cell::Text("n/a (run without persistence: no files)".into()));
        } else if cfg.wants(6) {
            self.progress("disk after a write burst, at rest");
            let result = self.disk_at_rest(e);
            self.set_result("6c", result);
        }
        e.close()?;
        Ok(())
    }

    /// Warm-up + reps; each repetition loads into a fresh store.
    fn bulk_load(&self, e: &mut dyn Engine) -> Result<Figure> {
        let mut samples = Vec::new();
        for rep in 0..=self.cfg.reps {
            e.create(Durability::Off)?;
            let start = Instant::now();
            e.bulk_load(self.data)?;
            let secs = start.elapsed().as_secs_f64();
            if rep > 0 {
                samples.push(self.data.keys.len() as f64 / secs);
            }
        }
        Ok(Figure::from_samples(samples))
    }

    fn scan(&self, e: &mut dyn Engine) -> Result<Figure> {
        let cfg = self.cfg;
        let mut job = worker::reads_job(self.name, &e.location(), &cfg.spec, 0, 1, cfg.batch);
        job["op"] = serde_json::json!("scan");
        job["scan_keys"] = serde_json::json!(cfg.scan_keys);
        let rates = run_windows(vec![job], cfg.reps, cfg.window, |w| {
            let d = w.expect("done")?;
            let keys: f64 = d.first().ok_or("done: keys")?.parse()?;
            let ns: f64 = d.get(1).ok_or("done: ns")?.parse()?;
            Ok(keys / (ns / 1e9))
        })?;
        Ok(Figure::from_samples(rates))
    }

    fn reopen(&self, e: &mut dyn Engine, mode: Reopen) -> Result<Figure> {
        let key = self.data.keys[self.data.keys.len() / 2].clone();
        let mut samples = Vec::new();
        for rep in 0..=self.cfg.reps {
            let t = e.reopen(mode, &key)?;
            if rep > 0 {
                samples.push(t.as_secs_f64() * 1e3);
            }
        }
        Ok(Figure::from_samples(samples))
    }

    fn memory(&self, e: &mut dyn Engine) -> Result<Figure> {
        let cfg = self.cfg;
        let mut workers = Vec::new();
        let mut pids = Vec::new();
        match e.memory_owner()? {
            MemoryOwner::Worker(job) => {
                let mut w = WorkerProc::spawn(&worker::with_spec(job, &cfg.spec))?;
                w.expect("ready")?;
                pids.push(("owner", w.pid()));
                workers.push(w);
            }
            MemoryOwner::Pid(pid) => pids.push(("server", pid)),
        }
        let location = e.location();
        let mut readers = (0..cfg.processes)
            .map(|_| WorkerProc::spawn(&worker::with_spec(worker::memory_job(self.name, &location, false), &cfg.spec)))
            .collect::<Result<Vec<_>>>()?;
        for w in &mut readers {
            w.expect("ready")?;
            pids.push(("reader", w.pid()));
        }
        workers.extend(readers);
        let mut total = 0.0;
        let mut parts = Vec::new();
        for (role, pid) in &pids {
            let mib = sysinfo::pss_kib(*pid)? as f64 / 1024.0;
            total += mib;
            parts.push(format!("{role} {mib:.1}"));
        }
        for w in workers {
            w.finish()?;
        }
        Ok(Figure::single(total).with_detail(format!("PSS MiB: {}", parts.join(" + "))))
    }

    /// p50, p99, p99.9 from the commit's return, and p99 from its start, in µs.
    /// Rows 5a–5d (5e and 5f with `poll`, from the same figures).
    fn propagation(&self, e: &mut dyn Engine, poll: bool) -> Result<Vec<Figure>> {
        e.open(Durability::Off)?;
        e.watchable(true)?;
        let result = self.sample_propagation(e, poll);
        e.watchable(false)?;
        result
    }

    fn sample_propagation(&self, e: &mut dyn Engine, poll: bool) -> Result<Vec<Figure>> {
        let cfg = self.cfg;
        let mut w = WorkerProc::spawn(&worker::watch_job(self.name, &e.location(), poll))?;
        w.expect("ready")?;
        let mut committer = e.committer()?;
        let warm = (cfg.samples / 10).max(20);
        let (mut from_return, mut from_start) = (Vec::new(), Vec::new());
        let mut early = 0usize;
        for k in 0..warm + cfg.samples {
            let value = format!("{k:020}");
            let t0 = worker::monotonic_ns();
            committer.commit(SEQ_KEY, value.as_bytes())?;
            let t1 = worker::monotonic_ns();
            let seen = w.expect("seen")?;
            let t: u64 = seen.get(1).ok_or("seen: no time")?.parse()?;
            if k >= warm {
                if t < t1 {
                    early += 1;
                }
                from_return.push(t.saturating_sub(t1) as f64 / 1e3);
                from_start.push(t.saturating_sub(t0) as f64 / 1e3);
            }
        }
        drop(committer);
        w.finish()?;
        let n = from_return.len();
        let detail = format!("{n} commits; {early} seen before commit() returned");
        Ok(vec![
            Figure::single(percentile(&from_return, 50.0)).with_detail(detail),
            Figure::single(percentile(&from_return, 99.0)),
            Figure::single(percentile(&from_return, 99.9)),
            Figure::single(percentile(&from_start, 99.0))
                .with_detail(format!("p50 from commit start {:.1} µs", percentile(&from_start, 50.0))),
        ])
    }

    /// Row 6c, the demo's case: a fresh store of the first
    /// [`BURST_STORE_KEYS`] dataset keys, [`BURST_SECS`] of single-key
    /// commits over them (durability off), then [`IDLE_SECS`] at rest; the
    /// store's files over its live data. Leaves a fresh store behind.
    fn disk_at_rest(&self, e: &mut dyn Engine) -> Result<Figure> {
        let spec = Spec { keys: BURST_STORE_KEYS.min(self.cfg.spec.keys), ..self.cfg.spec };
        e.create(Durability::Off)?;
        e.bulk_load(&spec.generate())?;
        let load = CommitLoad {
            keys: vec![spec.random_keys(77, 4096)],
            values: (0..64).map(|i| spec.value(i, 1 + i as u64)).collect(),
        };
        let (rate, _) = load.window(e, Duration::from_secs(BURST_SECS))?;
        std::thread::sleep(Duration::from_secs(IDLE_SECS));
        let (du, live) = e.disk()?;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        Ok(Figure::single(du as f64 / live.max(1) as f64).with_detail(format!(
            "{:.1} MiB on disk for {:.1} MiB live after {:.0} commits",
            mib(du),
            mib(live),
            rate * BURST_SECS as f64
        )))
    }

    /// Commits/s of `threads` committers for one window per repetition.
    fn commits(&self, e: &mut dyn Engine, durability: Durability, threads: usize) -> Result<Figure> {
        let cfg = self.cfg;
        e.open(durability)?;
        let load = CommitLoad::new(cfg, threads);
        let mut samples = Vec::new();
        let mut retries = 0u64;
        for rep in 0..=cfg.reps {
            let (rate, r) = load.window(e, cfg.window)?;
            retries += r;
            if rep > 0 {
                samples.push(rate);
            }
        }
        let fig = Figure::from_samples(samples);
        Ok(if retries > 0 { fig.with_detail(format!("{retries} conflict retries")) } else { fig })
    }
}

/// The futex wake floor (rows 5g, 5h): a worker process sleeps on a word of
/// a shared file mapping; this one stamps the clock and wakes it, 200 µs
/// after its last report (long enough for it to be asleep again); the
/// worker stamps the clock when it runs. Returns p99 and p99.9 in µs.
fn futex_floor(cfg: &Config) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("futex-word");
    let word = futex::SharedWord::create(&path)?;
    let mut w = WorkerProc::spawn(&worker::futex_job(&path))?;
    w.expect("ready")?;
    let warm = (cfg.samples / 10).max(20);
    let mut latency = Vec::new();
    for k in 0..warm + cfg.samples {
        std::thread::sleep(Duration::from_micros(200));
        let t0 = worker::monotonic_ns();
        word.bump();
        let seen = w.expect("seen")?;
        let t: u64 = seen.get(1).ok_or("seen: no time")?.parse()?;
        if k >= warm {
            latency.push(t.saturating_sub(t0) as f64 / 1e3);
        }
    }
    word.stop();
    w.finish()?;
    let detail = format!("{} wakes; p50 {:.1} µs", latency.len(), percentile(&latency, 50.0));
    Ok(vec![Figure::single(percentile(&latency, 99.0)).with_detail(detail), Figure::single(percentile(&latency, 99.9))])
}

/// The keys and values of a commit row, one key list per committer thread.
struct CommitLoad {
    keys: Vec<Vec<String>>,
    values: Vec<Vec<u8>>,
}

impl CommitLoad {
    fn new(cfg: &Config, threads: usize) -> CommitLoad {
        CommitLoad {
            keys: (0..threads).map(|t| cfg.spec.random_keys(1000 + t as u64, 4096)).collect(),
            values: (0..64).map(|i| cfg.spec.value(i, 1 + i as u64)).collect(),
        }
    }

    /// One window of commits from every committer thread at once: the sum
    /// of their rates, and the conflict retries.
    fn window(&self, e: &dyn Engine, window: Duration) -> Result<(f64, u64)> {
        let threads = self.keys.len();
        let committers = (0..threads).map(|_| e.committer()).collect::<Result<Vec<_>>>()?;
        let barrier = Barrier::new(threads);
        let results: Vec<Result<(u64, u64, f64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = committers
                .into_iter()
                .zip(&self.keys)
                .map(|(mut c, keys)| {
                    let (values, barrier) = (&self.values, &barrier);
                    s.spawn(move || -> Result<(u64, u64, f64)> {
                        barrier.wait();
                        let start = Instant::now();
                        let (mut n, mut retries) = (0usize, 0u64);
                        while start.elapsed() < window {
                            retries += c.commit(&keys[n % keys.len()], &values[n % values.len()])?;
                            n += 1;
                        }
                        Ok((n as u64, retries, start.elapsed().as_secs_f64()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a committer panicked".into()))).collect()
        });
        let (mut total, mut retries) = (0.0, 0u64);
        for r in results {
            let (n, r, secs) = r?;
            total += n as f64 / secs;
            retries += r;
        }
        Ok((total, retries))
    }
}

/// The rows whose engines run their repetitions interleaved.
const INTERLEAVED: [&str; 3] = ["1a", "1b", "3a"];

/// Rows 1 and 3a with the engines' windows interleaved: each repetition runs
/// one window of every engine back to back, so that the machine's drift over
/// a run (on this VM an anchor's own figure moved by a third between two
/// runs minutes apart, and LMDB's commits by 1.6× between two runs of row 3)
/// falls on every engine alike, and each ratio compares windows seconds
/// apart. In 3a each counted window follows an uncounted lead-in window of
/// the same engine: a store's background work (shoal's compaction,
/// writeback) that outlasts its counted window lands in the next engine's
/// lead-in, and the counted window starts with the engine's own background
/// work as it is in a continuous run, so neither flatters the engine that
/// caused it. The durable commit rows (3b, 3c) run engine after engine.
fn interleaved_rows(
    cfg: &Config,
    data: &Dataset,
    root: &std::path::Path,
    names: &[&String],
    rows: &mut [Row],
) -> Result<()> {
    if !cfg.wants(1) && !cfg.wants(3) {
        return Ok(());
    }
    let dir = root.join("interleaved");
    std::fs::create_dir_all(&dir)?;
    let mut engines = Vec::new();
    for name in names {
        eprintln!("shoal-bench: {name}: loading for the interleaved rows");
        let mut e = engines::engine(name, &dir, &cfg.spec)?;
        e.create(Durability::Off)?;
        e.bulk_load(data)?;
        engines.push(e);
    }
    let mut set = |id: &str, name: &str, fig: Figure| {
        if let Some(row) = rows.iter_mut().find(|r| r.id == id) {
            row.cells.insert(name.to_string(), Cell::Figure(fig));
        }
    };
    if cfg.wants(1) {
        for (id, procs) in [("1a", 1), ("1b", cfg.processes)] {
            eprintln!("shoal-bench: point reads, {procs} process(es), engines interleaved");
            let pool = cfg.spec.keys.clamp(1, 1 << 18);
            let mut workers = Vec::new();
            for e in &engines {
                let jobs = (0..procs)
                    .map(|i| worker::reads_job(e.name(), &e.location(), &cfg.spec, i as u64, pool, cfg.batch));
                let mut ws = jobs.map(|j| WorkerProc::spawn(&j)).collect::<Result<Vec<_>>>()?;
                for w in &mut ws {
                    w.expect("ready")?;
                }
                workers.push(ws);
            }
            let mut samples = vec![Vec::new(); engines.len()];
            for rep in 0..=cfg.reps {
                for (k, ws) in workers.iter_mut().enumerate() {
                    for w in ws.iter_mut() {
                        w.send(&format!("go {}", cfg.window.as_millis()))?;
                    }
                    let mut total = 0.0;
                    for w in ws.iter_mut() {
                        let d = w.expect("done")?;
                        let gets: f64 = d.first().ok_or("done: gets")?.parse()?;
                        let ns: f64 = d.get(1).ok_or("done: ns")?.parse()?;
                        total += gets / (ns / 1e9);
                    }
                    if rep > 0 {
                        samples[k].push(total);
                    }
                }
            }
            for ws in workers {
                for w in ws {
                    w.finish()?;
                }
            }
            for (e, s) in engines.iter().zip(samples) {
                set(id, e.name(), Figure::from_samples(s));
            }
        }
    }
    if cfg.wants(3) {
        eprintln!("shoal-bench: commits, durability off, engines interleaved");
        for e in engines.iter_mut() {
            e.open(Durability::Off)?;
        }
        let load = CommitLoad::new(cfg, 1);
        let mut samples = vec![Vec::new(); engines.len()];
        let mut retries = vec![0u64; engines.len()];
        for rep in 0..cfg.reps {
            // Alternate the order, so that no engine always follows the same one.
            let order: Vec<usize> = match rep % 2 {
                0 => (0..engines.len()).collect(),
                _ => (0..engines.len()).rev().collect(),
            };
            for k in order {
                let e = engines[k].as_ref();
                // A lead-in window, not counted: the previous engine's
                // background work (compaction, writeback) spills into it,
                // and this engine's own reaches the state it has in a
                // continuous run before the counted window starts.
                load.window(e, cfg.window)?;
                let (rate, r) = load.window(e, cfg.window)?;
                samples[k].push(rate);
                retries[k] += r;
            }
        }
        for ((e, s), r) in engines.iter().zip(samples).zip(retries) {
            let fig = Figure::from_samples(s);
            set("3a", e.name(), if r > 0 { fig.with_detail(format!("{r} conflict retries")) } else { fig });
        }
    }
    for mut e in engines {
        e.close()?;
    }
    // Their files hold what the commits without durability left dirty in
    // the page cache (a gigabyte or so): kept, the kernel would write it
    // back during the rows that follow, slowing the durable commits of
    // whichever engine runs next. Deleted, it is dropped unwritten; the
    // sync then leaves the disk quiet for every engine alike.
    // Failing costs the rows after a quiet disk, not the rows measured.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("shoal-bench: cannot delete the interleaved rows' stores ({e}); the rows after them may be slower");
    }
    rustix::fs::sync();
    Ok(())
}

/// Starts one worker per job, waits until all are ready, then runs a warm-up
/// and `reps` windows in which all workers run at once; each window's figure
/// is the sum of `collect` over the workers.
fn run_windows(
    jobs: Vec<serde_json::Value>,
    reps: usize,
    window: Duration,
    mut collect: impl FnMut(&mut WorkerProc) -> Result<f64>,
) -> Result<Vec<f64>> {
    let mut workers = jobs.iter().map(WorkerProc::spawn).collect::<Result<Vec<_>>>()?;
    for w in &mut workers {
        w.expect("ready")?;
    }
    let mut samples = Vec::new();
    for rep in 0..=reps {
        for w in &mut workers {
            w.send(&format!("go {}", window.as_millis()))?;
        }
        let mut total = 0.0;
        for w in &mut workers {
            total += collect(w)?;
        }
        if rep > 0 {
            samples.push(total);
        }
    }
    for w in workers {
        w.finish()?;
    }
    Ok(samples)
}

/// The `p`-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
