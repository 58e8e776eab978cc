//! Sizes and durations as people read and write them: one format for every report, progress
//! line and error, so the same number never reads two ways (machines get plain byte counts
//! with `--json`), and one parser for the ages and timeouts a config holds.

/// `1536` -> `1.5 KiB`.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The longest wait any timeout key may ask for: one day. Timeouts become deadlines
/// (`Instant + Duration`), which panic on overflow, so a huge number must be refused when the
/// config is read, not found by a nightly run.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// Refuses a timeout of 0 or above [`MAX_TIMEOUT_SECS`], naming the key.
///
/// # Errors
/// The message, starting with the key.
pub fn check_seconds(key: &str, secs: u64) -> Result<(), String> {
    if secs == 0 || secs > MAX_TIMEOUT_SECS {
        return Err(format!(
            "{key} = {secs} is out of range: give seconds from 1 to {MAX_TIMEOUT_SECS} (one day)"
        ));
    }
    Ok(())
}

/// Parses a retention age: a number and a unit `h`, `d`, `w`, `m` (30 days) or `y` (365
/// days), e.g. `7d`.
///
/// # Errors
/// A message showing the accepted form.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    /// 100 years: an age beyond it overflowed the arithmetic (a panic), or became a span the
    /// retention code cannot hold and was silently dropped, which would forget sets.
    const MAX_HOURS: u64 = 100 * 365 * 24;
    let s = s.trim();
    let bad = || format!("\"{s}\" is not an age like 12h, 7d, 2w, 6m or 1y");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let per = match unit {
        'h' => 1,
        'd' => 24,
        'w' => 24 * 7,
        'm' => 24 * 30,
        'y' => 24 * 365,
        _ => return Err(bad()),
    };
    match n.checked_mul(per) {
        Some(hours) if hours <= MAX_HOURS => Ok(std::time::Duration::from_secs(hours * 3600)),
        _ => Err(format!(
            "\"{s}\" is longer than the 100 years an age may be"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    /// Byte counts are shown in binary units.
    fn human() {
        assert_eq!(super::human_bytes(5), "5 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
