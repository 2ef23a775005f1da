//! Durations as people type them (`30s`, `10m`, `1h30m`, `7d`, or plain
//! seconds): the one parser behind every `--ttl`, feed refresh and config
//! duration, and its inverse for display.

use std::time::Duration;

/// Parses `30s`, `10m`, `1h`, `2d`, `1h30m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let help = || format!("{s:?} is not a duration: use e.g. 30s, 10m, 1h, 1h30m, 7d or a number of seconds");
    if s.is_empty() {
        return Err(help());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(help()),
        };
        let n: u64 = num.parse().map_err(|_| help())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(help)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(help());
    }
    Ok(Duration::from_secs(total))
}

/// Renders seconds compactly: `1h2m3s`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

/// Parses a duration that must lie within `1s..=max_s`; `what` names it in the error
/// (`"a TTL"` → "a TTL must be between 1s and 365d").
pub fn parse_within(s: &str, max_s: u64, what: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d.as_secs() > max_s {
        return Err(format!("{:?}: {what} must be between 1s and {}", s.trim(), format_duration(max_s)));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        for bad in ["", "10x", "h", "1h30", "-5s", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("30s, 10m, 1h"), "{bad}: {e}");
        }
        assert_eq!(format_duration(3723), "1h2m3s");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn bounded_durations_say_the_bounds() {
        assert_eq!(parse_within("1h30m", 86_400, "a TTL").unwrap(), Duration::from_secs(5400));
        let e = parse_within("2d", 86_400, "a TTL").unwrap_err();
        assert!(e.contains("a TTL must be between 1s and 1d"), "{e}");
        assert!(parse_within("0s", 86_400, "a TTL").is_err());
    }
}
