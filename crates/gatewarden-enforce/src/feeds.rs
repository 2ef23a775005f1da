//! Blocklist files (plain lists, FireHOL `.netset`, Spamhaus DROP). Networks
//! and durations themselves are parsed in gatewarden-core (`net`, `duration`),
//! re-exported here for the feed code's callers.
//!
//! Parsing never stops at a bad line: good lines are kept, bad ones are
//! reported with their line numbers, so one typo does not void a feed.

use std::fmt;

pub use gatewarden_core::duration::{format_duration, parse_duration};
pub use gatewarden_core::net::{addr_u128, merge, range_text, u128_addr, union_size, Cidr};

/// A line of a blocklist that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// The text (trimmed).
    pub text: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {:?}: {}", self.line, self.text, self.reason)
    }
}

/// What a blocklist file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feed {
    /// Usable networks, in file order.
    pub entries: Vec<Cidr>,
    /// Lines that were not.
    pub bad: Vec<BadLine>,
}

/// Parses a blocklist: one address or CIDR per line. Understands the
/// comment styles of plain lists and FireHOL `.netset` (`#`) and Spamhaus
/// DROP (`;`, with `NET ; SBLnnn` on each line). Blank lines are skipped.
pub fn parse_feed(text: &str) -> Feed {
    let mut feed = Feed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        // Some lists put extra columns after the network (tab or space separated).
        let token = line.split_whitespace().next().unwrap_or("");
        match token.parse::<Cidr>() {
            Ok(c) if c.prefix == 0 => feed.bad.push(BadLine {
                line: i + 1,
                text: raw.trim().into(),
                reason: "a /0 would block everything; refused".into(),
            }),
            Ok(c) => feed.entries.push(c),
            Err(reason) => feed.bad.push(BadLine { line: i + 1, text: raw.trim().into(), reason }),
        }
    }
    feed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_netset_and_drop_formats_with_bad_lines_numbered() {
        let text = "\
# FireHOL level1 style header
192.0.2.0/24
198.51.100.7
   
203.0.113.0/25 ; SBL123456
2001:db8::/48\textra column
not-an-ip
198.51.100.0/33
0.0.0.0/0
; Spamhaus comment line
";
        let f = parse_feed(text);
        let shown: Vec<String> = f.entries.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["192.0.2.0/24", "198.51.100.7", "203.0.113.0/25", "2001:db8::/48"]);
        let lines: Vec<usize> = f.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [7, 8, 9]);
        assert!(f.bad[0].to_string().starts_with("line 7: \"not-an-ip\""), "{}", f.bad[0]);
    }
}
