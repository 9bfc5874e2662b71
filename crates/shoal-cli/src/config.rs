//! `shoal config`: print a store's settings, or change some of them.

use std::path::Path;
use std::time::Duration;

use shoal::{Durability, Options, RetainTier};

use crate::args::DurabilityArg;
use crate::commands::durability_of;
use crate::{say, writer, CliResult};

/// The settings a `shoal config` asks to change (`None`: keep).
pub struct Change {
    pub durability: Option<DurabilityArg>,
    pub retain: Option<u32>,
    pub tiers: Option<Vec<RetainTier>>,
    pub max_value_bytes: Option<usize>,
}

/// The retention policy in words: "16 older versions, one per 1m for 1h".
pub fn retention_summary(options: &Options) -> String {
    let mut out = format!("{} older versions", options.retain_versions);
    for t in &options.retain_tiers {
        let every = shoal::retention::format_duration(t.every);
        let within = shoal::retention::format_duration(t.within);
        out += &if t.every.is_zero() {
            format!(", every version for {within}")
        } else {
            format!(", one per {every} for {within}")
        };
    }
    out
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        Durability::Sync => "sync",
    }
}

/// Tiers as `shoal config --tier` takes them: "1m:1h 1h:1d", or "none".
fn tiers_text(tiers: &[RetainTier]) -> String {
    if tiers.is_empty() {
        return "none".into();
    }
    let format = shoal::retention::format_duration;
    tiers.iter().map(|t| format!("{}:{}", format(t.every), format(t.within))).collect::<Vec<_>>().join(" ")
}

/// The settings `shoal config` can change, by name, as text.
fn changeable(o: &Options) -> [(&'static str, String); 4] {
    [
        ("durability", durability_name(o.durability).to_string()),
        ("retain", o.retain_versions.to_string()),
        ("tiers", tiers_text(&o.retain_tiers)),
        ("max-value-bytes", o.max_value_bytes.to_string()),
    ]
}

pub fn config(dir: &Path, change: Change, wait: Duration) -> CliResult {
    let asked = change.durability.is_some()
        || change.retain.is_some()
        || change.tiers.is_some()
        || change.max_value_bytes.is_some();
    if !asked {
        // Printing takes no lock: the settings are read as any reader may.
        let current = shoal::Reader::open(dir)?.settings()?;
        for (name, value) in changeable(&current) {
            say!("{name:<24} {value}");
        }
        say!("{:<24} {:o}", "mode", current.mode);
        say!("{:<24} {}", "group", current.group.map_or("-".to_string(), |g| g.to_string()));
        // Recorded too, but tuning rather than policy: shown, not changed here.
        say!("{:<24} {}", "map-reserve-bytes", current.map_reserve_bytes);
        say!("{:<24} {}", "checkpoint-journal-bytes", current.checkpoint_journal_bytes);
        say!("{:<24} {}", "auto-compact", current.auto_compact);
        say!("{:<24} {}", "compact-min-bytes", current.compact_min_bytes);
        say!("{:<24} {}", "compact-factor", current.compact_factor);
        return Ok(());
    }
    let current = writer::open(dir, wait)?.options().clone();
    let mut wanted = current.clone();
    if let Some(d) = change.durability {
        wanted.durability = durability_of(d);
    }
    if let Some(n) = change.retain {
        wanted.retain_versions = n;
    }
    if let Some(tiers) = change.tiers.clone() {
        wanted.retain_tiers = tiers;
    }
    if let Some(n) = change.max_value_bytes {
        wanted.max_value_bytes = n;
    }
    let before = changeable(&current);
    let after = changeable(&wanted);
    if before == after {
        say!("nothing changed: the store already has these settings");
        return Ok(());
    }
    let options = Options { replace_settings: true, lock_wait: wait, ..wanted };
    drop(writer::open_with(dir, options)?);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        if old != new {
            say!("{name}: {old} → {new}");
        }
    }
    Ok(())
}
