//! The machine a run happens on, dates, and PSS.

use std::path::Path;

use crate::Result;

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The mount holding `dir`: (mount point, file system type, device).
fn mount_of(dir: &Path) -> Option<(String, String, String)> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string(), f[0].to_string()))
        })
        .filter(|(mp, ..)| dir.starts_with(mp))
        .max_by_key(|(mp, ..)| mp.len())
}

/// Facts about the machine, for the report.
pub fn machine(dir: &Path) -> Vec<(String, String)> {
    let mut out = vec![
        ("nproc".to_string(), nproc().to_string()),
        (
            "memory (free -g total)".to_string(),
            meminfo_kib("MemTotal").map_or("unknown".into(), |k| format!("{} GiB", k >> 20)),
        ),
        ("CPU".to_string(), cpu_model()),
    ];
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        out.push(("kernel".into(), release.trim().to_string()));
    }
    if let Some((mp, fs, dev)) = mount_of(dir) {
        out.push(("store directory".into(), format!("{} ({fs} on {dev}, mounted at {mp})", dir.display())));
    }
    if let Some(source) = shoal_source() {
        out.push(("shoal source".into(), source));
    }
    let v = heed::lmdb_version();
    out.push(("LMDB".into(), format!("{}.{}.{} (heed 0.23)", v.major, v.minor, v.patch)));
    out.push((
        "Redis".into(),
        crate::engines::redis::version().map_or("redis-server not installed".into(), |v| format!("redis-server {v}")),
    ));
    out
}

/// The commit the workspace is at, and whether the library has uncommitted changes.
fn shoal_source() -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").arg("-C").arg(&repo).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--", "crates/shoal"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("git {head} + uncommitted changes in crates/shoal") } else { format!("git {head}") })
}

/// PSS of `pid` in KiB, from /proc/<pid>/smaps_rollup.
pub fn pss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no Pss in /proc/{pid}/smaps_rollup").into())
}

/// Now, in UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}
