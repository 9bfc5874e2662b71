//! Which versions survive a compaction: the newest `retain_versions + 1`,
//! plus, for each [`RetainTier`], the newest version of every interval of
//! commit time the tier spans, like the archives of a round-robin database
//! (every version for a minute, one a minute for an hour, one an hour for a
//! day).
//!
//! Between compactions every version since the last one stays readable (the
//! arena only grows); the policy decides what the next compaction copies.
//! Invariants, checked by the tests below: the newest version is always
//! kept; so are the newest `keep_last`; a tier keeps exactly the newest
//! version of each of its intervals among the versions it spans (intervals
//! are aligned to multiples of `every` since the Unix epoch, so a version
//! chosen once stays chosen by that tier while it is young enough, and a
//! coarser tier whose `every` is a multiple of a finer one's picks a subset
//! of what the finer one would); and nothing else is kept.

use std::time::Duration;

use crate::error::{Error, Result};

/// One tier of thinned history: keep the newest version of every `every`
/// of commit time, for versions committed within `within` of the
/// compaction. `every` of zero keeps every version within `within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainTier {
    pub every: Duration,
    pub within: Duration,
}

/// Most tiers a store may have.
pub const MAX_TIERS: usize = 16;

impl RetainTier {
    /// One version per `every`, for `within`.
    pub fn new(every: Duration, within: Duration) -> RetainTier {
        RetainTier { every, within }
    }
}

pub(crate) fn validate(tiers: &[RetainTier]) -> Result<()> {
    let bad = |reason: String| Err(Error::InvalidOption { name: "retain_tiers", reason });
    if tiers.len() > MAX_TIERS {
        return bad(format!("{} tiers; at most {MAX_TIERS}", tiers.len()));
    }
    for t in tiers {
        if t.within.is_zero() {
            return bad(format!("a tier must span some time (every {:?} within 0)", t.every));
        }
        if t.every > t.within {
            return bad(format!("a tier's interval ({:?}) exceeds what it spans ({:?})", t.every, t.within));
        }
        if t.every.subsec_nanos() % 1_000_000 != 0 || t.within.subsec_nanos() % 1_000_000 != 0 {
            return bad(format!("tiers are kept in whole milliseconds (every {:?} within {:?})", t.every, t.within));
        }
        if u64::try_from(t.within.as_nanos()).is_err() {
            return bad(format!("a tier spans more than 2^64 ns ({:?})", t.within));
        }
    }
    Ok(())
}

/// Which of `times` (commit times in ns since the Unix epoch, newest
/// version first, as the commit chain lists them) to keep at `now_ns`.
/// Commit times come from the wall clock, so they may step backwards; that
/// can only make a tier keep an extra version, never drop the newest.
pub(crate) fn select(times: &[u64], keep_last: usize, tiers: &[RetainTier], now_ns: u64) -> Vec<bool> {
    let mut keep: Vec<bool> = (0..times.len()).map(|i| i < keep_last.max(1)).collect();
    for tier in tiers {
        let within = u64::try_from(tier.within.as_nanos()).unwrap_or(u64::MAX);
        let every = u64::try_from(tier.every.as_nanos()).unwrap_or(u64::MAX);
        let mut last_bucket = None;
        for (i, &t) in times.iter().enumerate() {
            if now_ns.saturating_sub(t) > within {
                continue;
            }
            if every == 0 {
                keep[i] = true;
                continue;
            }
            let bucket = t / every;
            if last_bucket != Some(bucket) {
                keep[i] = true;
                last_bucket = Some(bucket);
            }
        }
    }
    keep
}

/// Parses `EVERY:WITHIN` with durations such as `500ms`, `30s`, `1m`, `2h`,
/// `1d` (a bare number is seconds), e.g. `1m:1h`: one version a minute for
/// an hour.
pub fn parse_tier(text: &str) -> std::result::Result<RetainTier, String> {
    let (every, within) =
        text.split_once(':').ok_or_else(|| format!("{text:?}: expected EVERY:WITHIN, such as 1m:1h"))?;
    Ok(RetainTier { every: parse_duration(every)?, within: parse_duration(within)? })
}

/// Parses a duration such as `500ms`, `30s`, `1m`, `2h` or `1d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| format!("{text:?}: expected a number with a unit (ms, s, m, h, d)"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis).ok_or_else(|| format!("{text:?}: too long"))
}

/// Formats a duration the way [`parse_duration`] reads it, in its largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn kept(times: &[u64], keep_last: usize, tiers: &[RetainTier], now: u64) -> Vec<usize> {
        select(times, keep_last, tiers, now).iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i).collect()
    }

    #[test]
    fn newest_few_then_one_per_interval() {
        // One version a second for 10 minutes, newest first; `now` is a
        // whole minute, so version i sits in minute `(now - i s) / 60 s`.
        let now = 600_000 * S;
        let times: Vec<u64> = (0..600).map(|i| now - i * S).collect();
        let minute = RetainTier::new(Duration::from_secs(60), Duration::from_secs(300));
        let picked = kept(&times, 3, &[minute], now);
        // The 3 newest; then i = 0 alone in the current minute, and the
        // newest of each earlier minute (i = 1, 61, ...) up to 300 s old.
        assert_eq!(picked, vec![0, 1, 2, 61, 121, 181, 241]);
        // Without tiers only the newest few.
        assert_eq!(kept(&times, 3, &[], now), vec![0, 1, 2]);
        // `every` zero: every version within the span.
        let all = RetainTier::new(Duration::ZERO, Duration::from_secs(10));
        assert_eq!(kept(&times, 1, &[all], now), (0..=10).collect::<Vec<_>>());
        // keep_last of 0 still keeps the newest.
        assert_eq!(kept(&times, 0, &[], now), vec![0]);
        assert!(kept(&[], 3, &[minute], now).is_empty());
    }

    #[test]
    fn clock_steps_backwards_keep_extra_never_fewer() {
        let now = 100 * S;
        // Newest first; the clock stepped back 30 s between the third and second.
        let times = [95 * S, 66 * S, 96 * S, 94 * S];
        let tier = RetainTier::new(Duration::from_secs(10), Duration::from_secs(60));
        let picked = kept(&times, 1, &[tier], now);
        assert!(picked.contains(&0));
        assert_eq!(picked, vec![0, 1, 2]);
    }

    #[test]
    fn parsing_and_validation() {
        assert_eq!(parse_tier("1m:1h").unwrap(), RetainTier::new(Duration::from_secs(60), Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(2 * 86_400));
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").unwrap_err().contains("expected a number"));
        assert!(parse_tier("1m").unwrap_err().contains("EVERY:WITHIN"));
        for d in [Duration::from_millis(1500), Duration::from_secs(60), Duration::from_secs(86_400), Duration::ZERO] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert!(validate(&[RetainTier::new(Duration::from_secs(60), Duration::from_secs(3600))]).is_ok());
        let err = validate(&[RetainTier::new(Duration::from_secs(2), Duration::from_secs(1))]).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err = validate(&[RetainTier::new(Duration::ZERO, Duration::ZERO)]).unwrap_err();
        assert!(err.to_string().contains("span some time"), "{err}");
        assert!(validate(&vec![RetainTier::new(Duration::ZERO, Duration::from_secs(1)); MAX_TIERS + 1]).is_err());
        // Saved in milliseconds: a finer tier would come back as another one.
        let err = validate(&[RetainTier::new(Duration::from_micros(500), Duration::from_secs(1))]).unwrap_err();
        assert!(err.to_string().contains("whole milliseconds"), "{err}");
    }

    proptest! {
        /// The selection is exactly the union of its parts, checked against
        /// a brute force per interval.
        #[test]
        fn selection_is_the_newest_per_interval(
            gaps in proptest::collection::vec(0u64..5_000, 0..300),
            keep_last in 0usize..6,
            tiers in proptest::collection::vec((0u64..4, 1u64..40), 0..3),
            lag in 0u64..10_000,
        ) {
            // Monotone commit times in ms, newest first.
            let mut t = 1_000_000_000u64;
            let mut times: Vec<u64> = gaps.iter().map(|g| { t -= g; t * 1_000_000 }).collect();
            times.insert(0, 1_000_000_000 * 1_000_000);
            let now = times[0] + lag * 1_000_000;
            let tiers: Vec<RetainTier> = tiers
                .iter()
                .map(|&(e, w)| RetainTier::new(Duration::from_millis(e * 1000), Duration::from_millis(w * 1000)))
                .collect();
            let keep = select(&times, keep_last, &tiers, now);
            prop_assert!(keep[0]);
            for (i, &t) in times.iter().enumerate() {
                let mut expected = i < keep_last.max(1);
                for tier in &tiers {
                    let (every, within) = (tier.every.as_nanos() as u64, tier.within.as_nanos() as u64);
                    if now - t > within {
                        continue;
                    }
                    // Newest in its interval: no newer version (smaller index) in the same one.
                    expected |= every == 0 || times[..i].iter().all(|&u| u / every != t / every);
                }
                prop_assert_eq!(keep[i], expected, "index {} time {}", i, t);
            }
        }
    }
}
