//! Blocklist files (plain lists, FireHOL `.netset`, Spamhaus DROP). Networks
//! and durations themselves are parsed in gatewarden-core (`net`, `duration`),
//! re-exported here for the feed code's callers.
//!
//! Parsing never stops at a bad line: good lines are kept, bad ones are
//! reported with their line numbers, so one typo does not void a feed.
//!
//! A feed is input from outside: whoever controls the file (or the site it
//! is fetched from) chooses what the gateway drops, both ways, on forward
//! and input. Besides the protections every block has (allowlist, the
//! gateway's own addresses, next hops, resolvers, fleet endpoints, bogons),
//! an import refuses entries overlapping the site's own networks, entries
//! wider than [`widest`] and a feed covering more than [`coverage_limit`]
//! (`Blocker::import_feed_with`); the last two can be lifted by the operator
//! (`gatewarden blocklist import --allow-wide`).

use std::fmt;

pub use gatewarden_core::duration::{format_duration, parse_duration};
pub use gatewarden_core::net::{addr_u128, merge, range_text, u128_addr, union_size, Cidr, Fam};

/// The widest IPv4 entry a feed may hold without `--allow-wide`: a /8, the
/// largest network one organisation holds (the legacy class A blocks).
/// Anything wider names a region of the internet, not a hostile network.
pub const WIDEST_V4: u8 = 8;

/// The widest IPv6 entry a feed may hold without `--allow-wide`: a /16,
/// 1/8192 of all global unicast IPv6 (2000::/3) and wider than what
/// registries allocate to one provider (typically /19 to /32), while
/// 2000::/4 (half of global unicast) is refused.
pub const WIDEST_V6: u8 = 16;

/// The widest prefix a feed entry of `fam` may have without `--allow-wide`.
pub fn widest(fam: Fam) -> u8 {
    match fam {
        Fam::V4 => WIDEST_V4,
        Fam::V6 => WIDEST_V6,
    }
}

/// Whether `c` is wider than [`widest`] allows.
pub fn too_wide(c: &Cidr) -> bool {
    c.prefix < widest(c.fam())
}

/// The most addresses of `fam` one feed may cover, all its entries together
/// (overlaps counted once), without `--allow-wide`: as many as four of its
/// widest entries, an IPv4 /6 (67 108 864 addresses, 1/64 of IPv4) and an
/// IPv6 /14. Threat lists name networks that attack; a feed past this
/// blocks a visible part of the internet, which no threat list does by
/// design: it is a mistake, an attack on the feed, or (a country list for
/// geo-blocking) something the operator must say they mean. Without the cap
/// a feed of 223 /8s, each within [`widest`], blocks nearly all of IPv4.
pub fn coverage_limit(fam: Fam) -> u128 {
    let bits: u32 = if fam == Fam::V4 { 32 } else { 128 };
    1u128 << (bits - u32::from(widest(fam)) + 2)
}

/// Whether `covered` addresses of `fam`, a feed's entries together, are more
/// than it may cover without `--allow-wide` ([`coverage_limit`]).
pub fn over_coverage(fam: Fam, covered: u128) -> bool {
    covered > coverage_limit(fam)
}

/// The range `lo..=hi` of `fam` as the fewest networks, in order, each the
/// widest aligned one that fits. An import merges adjacent entries into one
/// range (8.0.0.0/8 and 9.0.0.0/8 are written, and saved, as 8.0.0.0/7), so
/// a saved range is checked in these pieces: each entry it was merged from
/// lies inside one of them, so leaving out a piece a check refuses never
/// blocks more than the import would have (at worst, less).
pub fn range_cidrs(fam: Fam, lo: u128, hi: u128) -> impl Iterator<Item = Cidr> {
    let bits = fam.addr_len() * 8;
    let span = |k: u32| if k >= 128 { u128::MAX } else { (1u128 << k) - 1 };
    let mut next = (lo <= hi).then_some(lo);
    std::iter::from_fn(move || {
        let start = next?;
        let mut k = start.trailing_zeros().min(bits);
        while start.checked_add(span(k)).is_none_or(|end| end > hi) {
            k -= 1;
        }
        let end = start + span(k);
        next = (end < hi).then(|| end + 1);
        Some(Cidr { addr: u128_addr(fam, start), prefix: (bits - k) as u8 })
    })
}

/// What `n` addresses of `fam` are, for people: a count and a share of the
/// space for IPv4 (`256 IPv4 addresses (0.0000 % of IPv4)`), the prefix
/// holding as many for IPv6 (`as many IPv6 addresses as one /48 (…)`).
pub fn coverage_text(fam: Fam, n: u128) -> String {
    match fam {
        Fam::V4 => format!("{n} IPv4 addresses ({:.4} % of IPv4)", n as f64 / 2f64.powi(32) * 100.0),
        Fam::V6 => {
            let share = n as f64 / 2f64.powi(128) * 100.0;
            if n == 0 {
                return "no IPv6 addresses".into();
            }
            let prefix = if n.is_power_of_two() {
                (128 - n.trailing_zeros()).to_string()
            } else {
                format!("{:.1}", 128.0 - (n as f64).log2())
            };
            format!("as many IPv6 addresses as one /{prefix} ({share:.4} % of IPv6)")
        }
    }
}

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

    #[test]
    fn the_width_and_coverage_limits_and_how_coverage_reads() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(!too_wide(&c("10.0.0.0/8")) && too_wide(&c("8.0.0.0/7")));
        assert!(!too_wide(&c("2a00::/16")) && too_wide(&c("2000::/4")));
        assert_eq!(coverage_limit(Fam::V4), 67_108_864, "a /6");
        assert_eq!(coverage_limit(Fam::V6), 1u128 << 114, "a /14");
        // 223 /8s, each within the width limit, are far over the cap.
        let eights: Vec<Cidr> = (1..=223).map(|n| c(&format!("{n}.0.0.0/8"))).collect();
        assert!(union_size(&eights, Fam::V4) > coverage_limit(Fam::V4));
        // Four /8s are at it, and a fifth is over.
        assert_eq!(union_size(&eights[..4], Fam::V4), coverage_limit(Fam::V4));
        assert_eq!(coverage_text(Fam::V4, 256), "256 IPv4 addresses (0.0000 % of IPv4)");
        assert_eq!(coverage_text(Fam::V4, 1 << 30), "1073741824 IPv4 addresses (25.0000 % of IPv4)");
        assert_eq!(coverage_text(Fam::V6, 1 << 80), "as many IPv6 addresses as one /48 (0.0000 % of IPv6)");
        assert_eq!(coverage_text(Fam::V6, 3 << 80), "as many IPv6 addresses as one /46.4 (0.0000 % of IPv6)");
        assert_eq!(coverage_text(Fam::V6, 1 << 124), "as many IPv6 addresses as one /4 (6.2500 % of IPv6)");
        assert!(
            !over_coverage(Fam::V4, coverage_limit(Fam::V4)) && over_coverage(Fam::V4, coverage_limit(Fam::V4) + 1)
        );
    }

    #[test]
    fn a_range_splits_into_the_widest_aligned_networks_that_fit() {
        let pieces = |fam: Fam, a: &str, b: &str| -> Vec<String> {
            let (lo, hi) = (addr_u128(&a.parse().unwrap()), addr_u128(&b.parse().unwrap()));
            range_cidrs(fam, lo, hi).map(|c| c.to_string()).collect()
        };
        // Two /8s merged by an import: one aligned /7.
        assert_eq!(pieces(Fam::V4, "8.0.0.0", "9.255.255.255"), ["8.0.0.0/7"]);
        // Two /48s that are no /47.
        assert_eq!(
            pieces(Fam::V6, "2001:db8:77::", "2001:db8:78:ffff:ffff:ffff:ffff:ffff"),
            ["2001:db8:77::/48", "2001:db8:78::/48"]
        );
        assert_eq!(
            pieces(Fam::V4, "192.0.2.1", "192.0.2.6"),
            ["192.0.2.1", "192.0.2.2/31", "192.0.2.4/31", "192.0.2.6"]
        );
        assert_eq!(pieces(Fam::V4, "0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(pieces(Fam::V6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert_eq!(pieces(Fam::V6, "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").len(), 128);
        assert_eq!(pieces(Fam::V4, "255.255.255.255", "255.255.255.255"), ["255.255.255.255"]);
        assert!(pieces(Fam::V4, "192.0.2.9", "192.0.2.8").is_empty());
        // However odd the range, the pieces cover it exactly, in order.
        for (lo, hi) in [(3u128, 1_000_003u128), (1, u32::MAX as u128 - 1), (12_345, 12_345)] {
            let got: Vec<Cidr> = range_cidrs(Fam::V4, lo, hi).collect();
            assert!(got.len() <= 62, "{lo}-{hi}: {} pieces", got.len());
            assert_eq!(got.first().unwrap().range().0, lo);
            assert_eq!(got.last().unwrap().range().1, hi);
            assert!(got.windows(2).all(|w| w[0].range().1 + 1 == w[1].range().0));
        }
    }
}
