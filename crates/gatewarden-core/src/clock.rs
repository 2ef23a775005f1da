//! The wall clock as every layer reads it: Unix time in s, ms and ns, and the
//! RFC 3339 text alerts and logs carry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time now in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time now in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Unix time now in nanoseconds.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Formats nanoseconds since the epoch as RFC 3339 with microseconds, UTC, in
/// Suricata's timestamp shape (`2023-11-14T22:13:20.123456+0000`).
pub fn rfc3339(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000+0000");
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551+0000");
    }

    #[test]
    fn the_clock_is_after_2020() {
        assert!(unix_now() > 1_577_836_800);
        assert!(unix_now_ms() / 1000 >= unix_now() - 1);
    }
}
