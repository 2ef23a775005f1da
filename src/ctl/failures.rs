//! Failed ctl handshakes, aggregated per peer address: the first failure from
//! an address raises an alert at once, later ones are counted and reported
//! at most once per interval ("N failed handshakes since …"). An attacker
//! sending thousands of forged hellos gets a handful of alerts, not one each.
//!
//! State is bounded: at most `cap` addresses are tracked (an IPv6 /64 counts
//! as one address, since a host picks freely inside it); failures from
//! addresses beyond that share one "other addresses" entry. An entry with
//! nothing to report is forgotten one interval after its last alert.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The address a connection is accounted under: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 cut to its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One alert's worth of failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    /// The address (see [`address_key`]), or `None` for "other addresses"
    /// once the table is full.
    pub addr: Option<IpAddr>,
    /// Failures this report covers.
    pub count: u64,
    /// Wall-clock time (ns since the epoch) of the first failure it covers.
    pub since_ns: u64,
    /// The most recent failure's reason (already sanitized by the caller).
    pub last_reason: String,
    /// Whether this is the first report for the address (then `count` is 1).
    pub first: bool,
}

#[derive(Debug)]
struct Entry {
    pending: u64,
    since_ns: u64,
    last_reason: String,
    last_alert: Instant,
}

/// Failed handshakes per address, turned into rate-limited reports.
#[derive(Debug)]
pub struct HandshakeFailures {
    interval: Duration,
    cap: usize,
    entries: HashMap<IpAddr, Entry>,
    other: Option<Entry>,
}

impl HandshakeFailures {
    /// At most one report per address per `interval`, `cap` addresses tracked.
    pub fn new(interval: Duration, cap: usize) -> HandshakeFailures {
        HandshakeFailures { interval, cap: cap.max(1), entries: HashMap::new(), other: None }
    }

    /// Addresses tracked now (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.entries.len() + usize::from(self.other.is_some())
    }

    /// Records one failure from `peer`; returns a report when one is due now.
    pub fn record(&mut self, peer: IpAddr, reason: String, now: Instant, now_ns: u64) -> Option<FailureReport> {
        let key = address_key(peer);
        let interval = self.interval;
        let (addr, slot) = if self.entries.contains_key(&key) || self.entries.len() < self.cap {
            (Some(key), self.entries.get_mut(&key))
        } else {
            (None, self.other.as_mut())
        };
        match slot {
            None => {
                let e = Entry { pending: 0, since_ns: now_ns, last_reason: String::new(), last_alert: now };
                match addr {
                    Some(k) => self.entries.insert(k, e),
                    None => self.other.replace(e),
                };
                Some(FailureReport { addr, count: 1, since_ns: now_ns, last_reason: reason, first: true })
            }
            Some(e) => {
                if e.pending == 0 {
                    e.since_ns = now_ns;
                }
                e.pending += 1;
                e.last_reason = reason;
                (now.saturating_duration_since(e.last_alert) >= interval).then(|| take(addr, e, now))
            }
        }
    }

    /// Reports counts whose interval has passed (so a burst that stopped is
    /// still reported) and forgets entries with nothing left to report.
    pub fn due(&mut self, now: Instant) -> Vec<FailureReport> {
        let interval = self.interval;
        let mut out = Vec::new();
        let mut visit = |addr: Option<IpAddr>, e: &mut Entry| -> bool {
            if now.saturating_duration_since(e.last_alert) < interval {
                return true;
            }
            if e.pending == 0 {
                return false;
            }
            out.push(take(addr, e, now));
            true
        };
        self.entries.retain(|k, e| visit(Some(*k), e));
        if let Some(e) = &mut self.other {
            if !visit(None, e) {
                self.other = None;
            }
        }
        out
    }
}

fn take(addr: Option<IpAddr>, e: &mut Entry, now: Instant) -> FailureReport {
    let r = FailureReport {
        addr,
        count: e.pending,
        since_ns: e.since_ns,
        last_reason: std::mem::take(&mut e.last_reason),
        first: false,
    };
    e.pending = 0;
    e.last_alert = now;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn first_failure_reports_at_once_then_one_count_per_interval() {
        let mut f = HandshakeFailures::new(MIN, 16);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = f.record(ip, "bad certificate".into(), t0, 1_000).unwrap();
        assert!(first.first && first.count == 1 && first.addr == Some(ip));
        // 1999 more within the minute: no report.
        for i in 1..2000u64 {
            let t = t0 + Duration::from_millis(i * 20);
            assert_eq!(f.record(ip, format!("forged {i}"), t, 1_000 + i), None, "failure {i}");
        }
        assert!(f.due(t0 + Duration::from_secs(59)).is_empty());
        // The minute passes with no new failure: the count is reported by `due`.
        let r = f.due(t0 + MIN);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].count, r[0].since_ns, r[0].last_reason.as_str(), r[0].first),
            (1999, 1_001, "forged 1999", false)
        );
        // Nothing pending: the entry is forgotten one interval later, and the
        // next failure is reported at once again.
        assert!(f.due(t0 + 2 * MIN).is_empty());
        assert_eq!(f.tracked(), 0);
        assert!(f.record(ip, "again".into(), t0 + 2 * MIN, 9).unwrap().first);
    }

    #[test]
    fn a_failure_after_the_interval_reports_the_count_itself() {
        let mut f = HandshakeFailures::new(MIN, 16);
        let t0 = Instant::now();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        f.record(ip, "x".into(), t0, 0).unwrap();
        assert_eq!(f.record(ip, "y".into(), t0 + Duration::from_secs(1), 5), None);
        let r = f.record(ip, "z".into(), t0 + MIN, 7).unwrap();
        assert_eq!((r.count, r.since_ns, r.last_reason.as_str()), (2, 5, "z"));
    }

    #[test]
    fn addresses_are_bounded_and_the_rest_share_one_entry() {
        let mut f = HandshakeFailures::new(MIN, 4);
        let t0 = Instant::now();
        let mut reports = 0;
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + i));
            reports += usize::from(f.record(ip, "x".into(), t0, 0).is_some());
        }
        // Four tracked addresses and one "other" entry: five reports, five entries.
        assert_eq!((reports, f.tracked()), (5, 5));
        let r = f.due(t0 + MIN);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].addr, r[0].count), (None, 995));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.9".parse::<IpAddr>().unwrap());
        let mut f = HandshakeFailures::new(MIN, 16);
        let t0 = Instant::now();
        assert!(f.record(a, "x".into(), t0, 0).is_some());
        assert!(f.record(b, "x".into(), t0, 0).is_none());
    }
}
