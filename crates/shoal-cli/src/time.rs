//! Commit times for people: RFC 3339 in UTC with milliseconds.

/// `2026-12-06T05:16:11.123Z` for a time in nanoseconds since the Unix epoch.
pub fn rfc3339_utc(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let millis = ns % 1_000_000_000 / 1_000_000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01, by Howard
/// Hinnant's `civil_from_days` (eras of 400 years, years starting in March
/// so that the leap day falls at the end), for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, the start of an era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1_000_000_000;

    #[test]
    fn known_dates() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (86_399, "1970-01-01T23:59:59.000Z"),
            (68_169_600, "1972-02-29T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (951_868_800, "2000-03-01T00:00:00.000Z"),
            (978_307_199, "2000-12-31T23:59:59.000Z"),
            (1_234_567_890, "2009-02-13T23:31:30.000Z"),
            (1_709_164_800, "2024-02-29T00:00:00.000Z"),
            (4_102_444_800, "2100-01-01T00:00:00.000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000Z"),
            (13_574_563_200, "2400-02-29T00:00:00.000Z"),
            (18_446_744_073, "2554-07-21T23:34:33.000Z"),
        ] {
            assert_eq!(rfc3339_utc(seconds * NS), text, "{seconds}");
        }
        assert_eq!(rfc3339_utc(1_796_534_171 * NS + 123_456_789), "2026-12-06T05:16:11.123Z");
        assert_eq!(rfc3339_utc(u64::MAX), "2554-07-21T23:34:33.709Z");
    }

    /// Every day from 1970 to 2554 follows the one before it.
    #[test]
    fn days_follow_each_other() {
        let month_days = |y: u64, m: u64| match m {
            2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..=u64::MAX / NS / 86_400 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < month_days(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
