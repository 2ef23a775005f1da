//! Durations as people type them (`30s`, `10m`, `1h30m`, `7d`, or plain
//! seconds): the one parser behind every `--ttl`, feed refresh and config
//! duration, and its inverse for display.

use std::time::Duration;

/// Parses `30s`, `10m`, `1h`, `2d`, `1h30m`, `250ms` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let help = || format!("{s:?} is not a duration: use e.g. 30s, 10m, 1h, 1h30m, 7d or a number of seconds");
    if s.is_empty() {
        return Err(help());
    }
    if s.contains(['.', ',']) {
        return Err(format!(
            "{s:?} is not a duration: fractions are not accepted, write smaller units instead (1h30m for 1.5h, 1500ms for 1.5s)"
        ));
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total_ms: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit_ms: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(help()),
        };
        let n: u64 = num.parse().map_err(|_| help())?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long a duration (at most about 584 million years)"))?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(help());
    }
    Ok(Duration::from_millis(total_ms))
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
    if d.subsec_nanos() != 0 {
        return Err(format!("{:?}: {what} is counted in whole seconds", s.trim()));
    }
    if d.is_zero() || d.as_secs() > max_s {
        return Err(format!("{:?}: {what} must be between 1s and {}", s.trim(), format_duration(max_s)));
    }
    Ok(d)
}

/// A config key in whole seconds (`*_s`): an integer, or a duration as
/// [`parse_duration`] reads it (`idle_timeout_s = "1h30m"`), so every key that
/// counts time is written like every `--ttl`. Use with
/// `#[serde(deserialize_with = "gatewarden_core::duration::secs")]`.
pub fn secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let ms = d.deserialize_any(DurationVisitor { per_integer_ms: 1000 })?;
    if ms % 1000 != 0 {
        return Err(serde::de::Error::custom(format!(
            "{ms} ms is not a whole number of seconds (this key counts seconds)"
        )));
    }
    Ok(ms / 1000)
}

/// A config key in milliseconds (`*_ms`): an integer of milliseconds, or a
/// duration as [`parse_duration`] reads it (`"250ms"`, `"2s"`, `"1h30m"`).
/// A number without a unit counts in the key's own unit, quoted or not
/// (`"250"` is 250 ms here), so quoting a value never changes what it means.
pub fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(DurationVisitor { per_integer_ms: 1 })
}

/// Reads an integer (in the key's own unit) or a duration text, as milliseconds.
struct DurationVisitor {
    per_integer_ms: u64,
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a whole number or a duration such as \"30s\", \"10m\", \"1h30m\", \"7d\"")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        v.checked_mul(self.per_integer_ms)
            .ok_or_else(|| E::custom(format!("{v} is too long a duration (at most about 584 million years)")))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{v}: a duration cannot be negative")))?;
        self.visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!(
            "{v} is not a whole number: write the duration in smaller units, e.g. \"1h30m\" or \"1500ms\""
        )))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        if let Ok(n) = v.trim().parse::<u64>() {
            return self.visit_u64(n);
        }
        let d = parse_duration(v).map_err(E::custom)?;
        u64::try_from(d.as_millis()).map_err(|_| E::custom(format!("{v:?} is too long")))
    }
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
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s500ms").unwrap(), Duration::from_millis(90_500));
        assert!(parse_duration("5ss").is_err() && parse_duration("ms").is_err());
        assert_eq!(format_duration(3723), "1h2m3s");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn bounded_durations_say_the_bounds() {
        assert_eq!(parse_within("1h30m", 86_400, "a TTL").unwrap(), Duration::from_secs(5400));
        let e = parse_within("2d", 86_400, "a TTL").unwrap_err();
        assert!(e.contains("a TTL must be between 1s and 1d"), "{e}");
        assert!(parse_within("0s", 86_400, "a TTL").is_err());
        assert!(parse_within("500ms", 86_400, "a TTL").unwrap_err().contains("whole seconds"));
    }

    #[test]
    fn fractions_and_overflow_say_what_to_write() {
        let e = parse_duration("1.5h").unwrap_err();
        assert!(e.contains("fractions are not accepted") && e.contains("1h30m"), "{e}");
        let e = parse_duration("999999999999d").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
    }

    /// `secs`/`millis` over the values a TOML or JSON config hands them.
    fn read(f: fn(SerdeValue) -> Result<u64, SerdeError>, v: SerdeValue) -> Result<u64, String> {
        f(v).map_err(|e| e.to_string())
    }
    type SerdeError = serde::de::value::Error;
    enum SerdeValue {
        Int(u64),
        Neg(i64),
        Float(f64),
        Text(&'static str),
    }
    impl<'de> serde::Deserializer<'de> for SerdeValue {
        type Error = SerdeError;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, SerdeError> {
            match self {
                SerdeValue::Int(n) => v.visit_u64(n),
                SerdeValue::Neg(n) => v.visit_i64(n),
                SerdeValue::Float(x) => v.visit_f64(x),
                SerdeValue::Text(s) => v.visit_str(s),
            }
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
        }
    }

    #[test]
    fn config_keys_take_integers_in_their_unit_or_the_duration_syntax() {
        use SerdeValue::*;
        let s = |v| read(secs, v);
        let ms = |v| read(millis, v);
        assert_eq!(s(Int(90)), Ok(90));
        assert_eq!(s(Text("1h30m")), Ok(5400));
        assert_eq!(s(Text("90")), Ok(90), "a quoted number counts in the key's unit");
        assert_eq!(s(Int(0)), Ok(0));
        assert_eq!(s(Text("0s")), Ok(0));
        assert_eq!(ms(Int(250)), Ok(250));
        assert_eq!(ms(Text("250ms")), Ok(250));
        assert_eq!(ms(Text("250")), Ok(250), "a quoted number counts in the key's unit");
        assert_eq!(ms(Text("1m30s")), Ok(90_000));
        assert_eq!(ms(Text("0ms")), Ok(0));
        // A seconds key cannot hold a fraction of a second.
        let e = s(Text("1500ms")).unwrap_err();
        assert!(e.contains("1500 ms is not a whole number of seconds"), "{e}");
        // Fractions, negatives, nonsense and overflow are refused with what to write.
        let e = s(Text("1.5h")).unwrap_err();
        assert!(e.contains("\"1.5h\"") && e.contains("fractions are not accepted") && e.contains("1h30m"), "{e}");
        let e = s(Float(1.5)).unwrap_err();
        assert!(e.contains("1.5 is not a whole number") && e.contains("1h30m"), "{e}");
        let e = s(Neg(-5)).unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = s(Text("5 parsecs")).unwrap_err();
        assert!(e.contains("30s, 10m, 1h"), "{e}");
        let e = s(Int(u64::MAX)).unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = ms(Text("999999999999d")).unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = s(Text("18446744073709551615")).unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert_eq!(ms(Int(u64::MAX)), Ok(u64::MAX), "milliseconds are stored as written");
    }
}
