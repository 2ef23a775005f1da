//! Ground truth for training: `src,start,end,label` lines mapping a source
//! address and a time range (Unix seconds) to a label. Flows from other
//! sources or times are `benign`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// The label of anything not listed.
pub const BENIGN: &str = "benign";

/// A bad line in a labels file.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read.
    #[error("cannot read labels file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A line that does not parse.
    #[error("{path}:{line}: {detail} (expected `src,start,end,label`, times in Unix seconds)")]
    Line {
        /// The path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Labelled time ranges per source address.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    by_src: HashMap<IpAddr, Vec<(u64, u64, String)>>,
}

impl Labels {
    /// Parses labels text; `path` is for messages. A header line starting with `src` is skipped.
    pub fn parse(text: &str, path: &str) -> Result<Labels, LabelsError> {
        let mut labels = Labels::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("src")) {
                continue;
            }
            let bad = |detail: String| LabelsError::Line { path: path.into(), line: i + 1, detail };
            let parts: Vec<&str> = line.split(',').map(str::trim).collect();
            if parts.len() != 4 {
                return Err(bad(format!("{} fields", parts.len())));
            }
            let src: IpAddr = parts[0].parse().map_err(|_| bad(format!("{:?} is not an IP address", parts[0])))?;
            let time = |s: &str| -> Result<u64, LabelsError> {
                let v: f64 = s.parse().map_err(|_| bad(format!("{s:?} is not a time in seconds")))?;
                if !(0.0..1e11).contains(&v) {
                    return Err(bad(format!("{s:?} is out of range")));
                }
                // Exact decimal → ns: through f64, 1.8e18 ns rounds to 256 ns,
                // which put a flow starting at the first attack packet outside its label.
                Ok(match s.split_once('.') {
                    Some((int, frac)) if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) => {
                        let secs: u64 = int.parse().map_err(|_| bad(format!("{s:?} is not a time in seconds")))?;
                        let frac_ns: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
                        secs * 1_000_000_000 + frac_ns
                    }
                    _ => (v * 1e9).round() as u64,
                })
            };
            let (start, end) = (time(parts[1])?, time(parts[2])?);
            if end < start {
                return Err(bad("end is before start".into()));
            }
            let label = parts[3];
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(bad(format!("label {label:?} must be letters, digits, '_' or '-'")));
            }
            labels.by_src.entry(src).or_default().push((start, end, label.to_string()));
        }
        Ok(labels)
    }

    /// Reads a labels file.
    pub fn load(path: &Path) -> Result<Labels, LabelsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LabelsError::Read { path: path.display().to_string(), source })?;
        Labels::parse(&text, &path.display().to_string())
    }

    /// The label for traffic from `src` at `ts_ns`.
    pub fn label(&self, src: IpAddr, ts_ns: u64) -> &str {
        self.by_src
            .get(&src)
            .and_then(|ranges| ranges.iter().find(|(s, e, _)| (*s..=*e).contains(&ts_ns)))
            .map_or(BENIGN, |(_, _, l)| l.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_source_and_time() {
        let l =
            Labels::parse("src,start,end,label\n203.0.113.9,10,20.5,port_scan\n2001:db8::1,0,1,icmp_flood\n", "l.csv")
                .unwrap();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(l.label(a, 15_000_000_000), "port_scan");
        assert_eq!(l.label(a, 20_500_000_000), "port_scan");
        assert_eq!(l.label(a, 21_000_000_000), BENIGN);
        assert_eq!(l.label("192.0.2.1".parse().unwrap(), 15_000_000_000), BENIGN);
        assert_eq!(l.label("2001:db8::1".parse().unwrap(), 500_000_000), "icmp_flood");
    }

    #[test]
    fn label_times_are_exact_to_the_nanosecond() {
        // A flow starting at the first attack packet must get the label (f64 would round up 128 ns here).
        let l = Labels::parse("192.0.2.66,1795473568.992773,1795473569.102502,icmp_flood\n", "l.csv").unwrap();
        assert_eq!(l.label("192.0.2.66".parse().unwrap(), 1_795_473_568_992_773_000), "icmp_flood");
        assert_eq!(l.label("192.0.2.66".parse().unwrap(), 1_795_473_569_102_502_000), "icmp_flood");
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        for (text, needle) in [
            ("1.2.3.4,1,2\n", "3 fields"),
            ("nope,1,2,x\n", "not an IP"),
            ("1.2.3.4,a,2,x\n", "not a time"),
            ("1.2.3.4,5,2,x\n", "before start"),
            ("1.2.3.4,1,2,a b\n", "label"),
        ] {
            let err = Labels::parse(&format!("# comment\n{text}"), "l.csv").unwrap_err().to_string();
            assert!(err.contains("l.csv:2") && err.contains(needle), "{err}");
        }
    }
}
