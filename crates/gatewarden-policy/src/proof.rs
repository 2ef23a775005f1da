//! Which alerts are about a source proven real, judged from the flows the
//! policy already counts: an alert says nothing of the sort (and cannot
//! without a wire change every node must take together), and a deny for a
//! whole group must not rest on addresses anyone on the LAN can forge.
//!
//! - A **brute-force** alert counts when its source itself completed
//!   (`src_answered`) at least half the attempts the detector's rule needs,
//!   to the alert's destination and port, in that rule's window before the
//!   alert: [`GUESS_COMPLETED`] in [`GUESS_WINDOW_NS`] (the connection-rate
//!   rule, 20 in 10 s), or on a login port [`LOGIN_COMPLETED`] in
//!   [`LOGIN_WINDOW_NS`] (the session rule, 5 in 60 s). A guesser completes
//!   nearly every attempt, as it must to send a password. The one connection
//!   an alert names proves nothing: the rule counts unanswered attempts too,
//!   so SYNs forged with a member's address can make that member's own real
//!   reconnect the attempt that crosses the limit. A device reconnecting
//!   every few seconds (MQTT telemetry) completes 2–5 in 10 s, forged SYNs
//!   none. Completed connections are counted per second of their first
//!   packet, so the count in a window is right however fast the source is
//!   (a guesser's newest connections may all follow the alert: hydra -t 16
//!   completes 100 in 10 s, and the batches after the alert can arrive
//!   before it is judged). The window is taken to the whole second: at most
//!   a second more each side, about a source that completes them (a device
//!   reconnecting every 2 s counts at most 7, below the bar).
//! - A **scan** alert counts when its source acknowledged what the target sent
//!   it within [`PROOF_WINDOW_NS`] of the alert, on any port (a scan's probes
//!   prove nothing themselves), as the detector's "source proven" says.
//!
//! An alert nothing proves yet waits (at most [`MAX_PENDING`]) and is judged
//! again as completed connections arrive: the monitor may record it ahead of
//! a backlog of flow batches, or the detector raise it before the crossing
//! connection's ACK was seen. A proof the monitor never gets (a dropped
//! batch) leaves the alert unproven: shown, never the ground for a deny.
//!
//! A waiting alert ages by the flows that could prove it, those of its own
//! source and destination, not by one clock of every flow and alert: a flow
//! of its pair stamped more than [`PENDING_NS`] after it proves nothing, and
//! [`PAST_WAIT_FLOWS`] of them (distinct flows, not snapshots of one) end
//! its wait. Flow records come from routers
//! over MQTT; one router's skewed (or compromised) clock, or an alert stamped
//! far ahead, moved the one clock and ended every wait at once, so the late
//! proofs from the other routers never counted. Now a router stamping far
//! ahead ends only the waits its own flows decide (which, stamped so, could
//! not prove them either), and one mis-stamped record of a pair not even
//! those. An alert whose pair sends nothing more waits until
//! [`MAX_PENDING`] pushes it out, oldest first. A flow stamped more than
//! [`MAX_AHEAD_NS`] ahead of the monitor's clock proves nothing at all.
//!
//! Limits: the alert carries no count of its own (only the reason sentence),
//! so the bars mirror the detector's defaults; with `bruteforce_attempts` or
//! `bruteforce_sessions` set lower, a guesser below the bar here is shown as
//! unproven. Forging a member's address still makes its alerts count when
//! that member really completes that many connections to the port (for a
//! login port, 3 sessions a minute: the matrix's own guessing count
//! already treats such a device as guessing).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use gatewarden_core::lru::evict_oldest;
use gatewarden_proto::messages::{Alert, AttackKind, FlowRecord};

/// How long a source's acknowledgement proves it towards a target: the detector's window.
pub const PROOF_WINDOW_NS: u64 = 120_000_000_000;
/// Most entries per table; only real sources can add one (a forger never
/// acknowledges), and at the limit the oldest eighth goes.
pub const MAX_PROOFS: usize = 16_384;
/// Completed connections a brute-force alert's source needs in
/// [`GUESS_WINDOW_NS`]: half the detector's `bruteforce_attempts` default (20),
/// mirrored here (the policy does not depend on the detector).
pub const GUESS_COMPLETED: usize = 10;
/// The detector's `window_s` default (10 s), over which it counts `bruteforce_attempts`.
pub const GUESS_WINDOW_NS: u64 = 10_000_000_000;
/// Completed sessions to a login port in [`LOGIN_WINDOW_NS`] that prove one
/// too: half the detector's `bruteforce_sessions` default (5), rounded up.
pub const LOGIN_COMPLETED: usize = 3;
/// The detector's `bruteforce_window_s` default (60 s).
pub const LOGIN_WINDOW_NS: u64 = 60_000_000_000;
/// The detector's session-rule ports (`LOGIN_PORTS`: SSH, telnet, FTP, RDP,
/// VNC, POP3; not MQTT, whose telemetry reconnects by design).
pub const LOGIN_PORTS: [u16; 8] = [21, 22, 23, 2222, 2323, 3389, 5900, 110];
/// (source, destination, port) entries of completed connections kept; at the
/// limit the eighth completed longest ago goes. Each holds at most
/// [`MAX_SECONDS_PER_KEY`] counts of 8 bytes and [`MAX_IDS_PER_KEY`] flow ids
/// (1.3 KiB with the deques' spare room), so the table stays under 6 MiB.
pub const MAX_GUESS_KEYS: usize = 4096;
/// Seconds with a completed connection counted per entry, the newest: the
/// login window's 61 whole seconds and 35 more, for an alert judged after
/// the flows that followed it (flow batches come every 100 ms; the margin is
/// for a backlog). A source completing one a second or faster is counted in
/// full over its last 96 s; a slower one over longer.
pub const MAX_SECONDS_PER_KEY: usize = 96;
/// Flow ids remembered per entry, the last seen: a connection is reported in
/// several snapshots and counts once while it is among them. A source keeping
/// more than this many completed connections to one port reported at once
/// may count one again; it completes them, so it is real either way, and the
/// count lands in the second the connection started.
pub const MAX_IDS_PER_KEY: usize = 32;
/// Alerts waiting for a proof; at the limit the oldest goes. Each holds its
/// router's name (at most 128 bytes), so the list stays under 200 KiB.
pub const MAX_PENDING: usize = 1024;
/// How long, in the flow time of its own source and destination, an alert
/// waits for a proof.
pub const PENDING_NS: u64 = 120_000_000_000;
/// Flows of an alert's source and destination stamped more than
/// [`PENDING_NS`] after it that end its wait: two distinct flows, so one
/// mis-stamped connection (however many snapshots report it) does not.
pub const PAST_WAIT_FLOWS: u8 = 2;
/// How far ahead of the monitor's clock a flow may be stamped (its first
/// and its last packet) and still prove anything: well past the skew NTP
/// leaves, and short enough that seconds stamped ahead fill at most this
/// many of a key's [`MAX_SECONDS_PER_KEY`] (96), so the login window's 61
/// real seconds stay counted. A router (or monitor) clock further off
/// proves nothing, counted in [`Proofs::ahead_ignored`] and logged hourly.
pub const MAX_AHEAD_NS: u64 = 30_000_000_000;

/// An alert's facts a proof is judged on: what waits for one, and what a late proof returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Brute force, port scan or host sweep.
    pub kind: AttackKind,
    /// The source it accuses.
    pub src: IpAddr,
    /// Its target.
    pub dst: IpAddr,
    /// The port a brute-force alert names (0 for scans).
    pub dport: u16,
    /// When it was raised, ns.
    pub ts_ns: u64,
    /// The router it is filed under (`Alert::node`: a detector files a
    /// traffic alert under the router whose flows raised it), named by a
    /// deny that counts it once proven. A proof shows the source is real,
    /// not that the router is honest: the flows that prove it may come from
    /// the same router. At most 128 bytes (the wire's label limit).
    pub node: String,
}

impl Claim {
    /// The facts of `a`, when it is a kind a proof is judged for and names both ends.
    pub fn of(a: &Alert) -> Option<Claim> {
        let (Some(src), Some(dst)) = (a.src, a.dst) else { return None };
        match a.kind {
            AttackKind::BruteForce | AttackKind::PortScan | AttackKind::HostSweep => {
                Some(Claim { kind: a.kind, src, dst, dport: a.dport, ts_ns: a.ts_ns, node: a.node.clone() })
            }
            _ => None,
        }
    }
}

/// The whole second of `ns` since the epoch; `None` past 2106, a clock no
/// proof is taken from (so the count fits 8 bytes a second).
fn second(ns: u64) -> Option<u32> {
    u32::try_from(ns / 1_000_000_000).ok()
}

/// Connections one source completed to one destination port, counted per
/// second they started in: a count, unlike a list of the newest, is right
/// however many the source completes.
#[derive(Debug, Default)]
struct Completed {
    /// (second, connections that started in it), ascending, the newest
    /// [`MAX_SECONDS_PER_KEY`] seconds.
    seconds: VecDeque<(u32, u32)>,
    /// The last [`MAX_IDS_PER_KEY`] flow ids seen, least recently seen first.
    ids: VecDeque<u64>,
    /// The newest packet of any, ns: which entry the table evicts.
    last_ns: u64,
}

impl Completed {
    /// Counts a connection once while its id is remembered (a flow is reported in several snapshots).
    fn add(&mut self, flow_id: u64, first_ns: u64, last_ns: u64) {
        self.last_ns = self.last_ns.max(last_ns);
        if let Some(i) = self.ids.iter().position(|id| *id == flow_id) {
            // Seen again, so kept longest: a long connection keeps its place.
            self.ids.remove(i);
            self.ids.push_back(flow_id);
            return;
        }
        if self.ids.len() >= MAX_IDS_PER_KEY {
            self.ids.pop_front();
        }
        self.ids.push_back(flow_id);
        let Some(s) = second(first_ns) else { return };
        match self.seconds.binary_search_by_key(&s, |b| b.0) {
            Ok(i) => self.seconds[i].1 = self.seconds[i].1.saturating_add(1),
            // Older than every second kept, with no room: the newest stay.
            Err(0) if self.seconds.len() >= MAX_SECONDS_PER_KEY => {}
            Err(i) => {
                self.seconds.insert(i, (s, 1));
                if self.seconds.len() > MAX_SECONDS_PER_KEY {
                    self.seconds.pop_front();
                }
            }
        }
    }

    /// Connections that started in the whole seconds of `[ts − window, ts]`.
    fn within(&self, ts_ns: u64, window_ns: u64) -> usize {
        let (Some(from), Some(to)) = (second(ts_ns.saturating_sub(window_ns)), second(ts_ns)) else { return 0 };
        self.seconds.iter().filter(|(s, _)| (from..=to).contains(s)).map(|(_, n)| *n as usize).sum()
    }
}

/// An alert waiting for a proof, and how many flows of its pair came stamped past its wait.
#[derive(Debug, Clone)]
struct Waiting {
    claim: Claim,
    past: u8,
    /// The flow that last counted in `past`: a connection is reported in
    /// several snapshots and counts once.
    past_flow: Option<u64>,
}

/// Recent proofs that member addresses receive at their address, and the alerts waiting for one.
#[derive(Debug, Default)]
pub struct Proofs {
    /// (source, destination) → last time, ns, the source acknowledged what the destination sent it.
    towards: HashMap<(IpAddr, IpAddr), u64>,
    /// (source, destination, port) → the connections the source completed there.
    completed: HashMap<(IpAddr, IpAddr, u16), Completed>,
    /// Alerts nothing proved yet, oldest first.
    pending: VecDeque<Waiting>,
    /// (source, destination) → how many of `pending` are about it (a flow of
    /// another pair never looks through the list).
    pending_pairs: HashMap<(IpAddr, IpAddr), u32>,
    /// Waiting alerts a later flow proved, for the engine to count.
    late: Vec<Claim>,
    /// Answered flows ignored as stamped ahead of the monitor's clock.
    ahead_ignored: u64,
    /// When that was last logged (the monitor's clock, ns).
    ahead_told_ns: u64,
}

impl Proofs {
    /// Answered flows that proved nothing because they were stamped more
    /// than [`MAX_AHEAD_NS`] ahead of the monitor's clock.
    pub fn ahead_ignored(&self) -> u64 {
        self.ahead_ignored
    }

    /// Remembers `f` if its originator acknowledged what it was sent, and
    /// judges again the alerts about its source and destination that wait.
    pub fn note(&mut self, f: &FlowRecord) {
        self.note_at(f, gatewarden_core::clock::unix_now_ns());
    }

    /// [`Proofs::note`] with the monitor's clock at `now_ns`. A flow stamped
    /// more than [`MAX_AHEAD_NS`] after it proves nothing: a router's clock a
    /// year ahead (skewed once, or set by whoever holds the router) left an
    /// acknowledgement that proved every scan alert about that pair for the
    /// year, judged on arrival, forged ones included; and connections counted
    /// in seconds stamped ahead pushed a real guesser's out of the key's
    /// newest seconds (found by review).
    fn note_at(&mut self, f: &FlowRecord, now_ns: u64) {
        if !f.src_answered {
            return;
        }
        let limit = now_ns.saturating_add(MAX_AHEAD_NS);
        if f.first_ns > f.last_ns || f.last_ns > limit {
            self.ahead_ignored += 1;
            if self.ahead_told_ns == 0 || now_ns.saturating_sub(self.ahead_told_ns) >= 3_600_000_000_000 {
                self.ahead_told_ns = now_ns.max(1);
                tracing::warn!(
                    router_clock_ahead_s = f.last_ns.saturating_sub(now_ns) / 1_000_000_000,
                    ignored = self.ahead_ignored,
                    "policy: flows stamped ahead of this monitor's clock prove no alert's source; check the clocks (NTP) of the routers and of this node (said at most hourly)"
                );
            }
            return;
        }
        let pair = (f.src, f.dst);
        if !self.towards.contains_key(&pair) && self.towards.len() >= MAX_PROOFS {
            evict_oldest(&mut self.towards, MAX_PROOFS / 8, |t| *t);
        }
        let t = self.towards.entry(pair).or_default();
        *t = (*t).max(f.last_ns);
        let key = (f.src, f.dst, f.dport);
        if !self.completed.contains_key(&key) && self.completed.len() >= MAX_GUESS_KEYS {
            evict_oldest(&mut self.completed, MAX_GUESS_KEYS / 8, |c| c.last_ns);
        }
        self.completed.entry(key).or_default().add(f.flow_id, f.first_ns, f.last_ns);
        if self.pending_pairs.contains_key(&pair) {
            self.rejudge(f);
        }
    }

    /// Whether `a`'s source is proven real (see the module docs); alerts of other kinds never are.
    pub fn proven(&self, a: &Alert) -> bool {
        Claim::of(a).is_some_and(|c| self.holds(&c))
    }

    fn holds(&self, c: &Claim) -> bool {
        match c.kind {
            AttackKind::BruteForce => self.completed.get(&(c.src, c.dst, c.dport)).is_some_and(|done| {
                done.within(c.ts_ns, GUESS_WINDOW_NS) >= GUESS_COMPLETED
                    || (LOGIN_PORTS.contains(&c.dport) && done.within(c.ts_ns, LOGIN_WINDOW_NS) >= LOGIN_COMPLETED)
            }),
            AttackKind::PortScan | AttackKind::HostSweep => {
                self.towards.get(&(c.src, c.dst)).is_some_and(|t| t.saturating_add(PROOF_WINDOW_NS) >= c.ts_ns)
            }
            _ => false,
        }
    }

    /// Keeps `a`, which nothing proves yet, to be judged again as flows arrive.
    pub fn wait_for_proof(&mut self, a: &Alert) {
        let Some(c) = Claim::of(a) else { return };
        if c.kind == AttackKind::BruteForce && c.dport == 0 {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            if let Some(w) = self.pending.pop_front() {
                self.forget_pair(w.claim.src, w.claim.dst);
            }
        }
        *self.pending_pairs.entry((c.src, c.dst)).or_default() += 1;
        self.pending.push_back(Waiting { claim: c, past: 0, past_flow: None });
    }

    /// The waiting alerts flows proved since the last call, each once.
    pub fn take_late_proofs(&mut self) -> Vec<Claim> {
        std::mem::take(&mut self.late)
    }

    /// Alerts waiting for a proof.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Judges again the waiting alerts about `f`'s source and destination,
    /// which `f` (already noted) may prove or, stamped past their wait, end.
    fn rejudge(&mut self, f: &FlowRecord) {
        let pair = (f.src, f.dst);
        let mut pending = std::mem::take(&mut self.pending);
        let (mut proven, mut ended) = (Vec::new(), Vec::new());
        pending.retain_mut(|w| {
            if (w.claim.src, w.claim.dst) != pair {
                return true;
            }
            if f.last_ns > w.claim.ts_ns.saturating_add(PENDING_NS) {
                if w.past_flow == Some(f.flow_id) {
                    return true;
                }
                w.past_flow = Some(f.flow_id);
                w.past += 1;
                if w.past >= PAST_WAIT_FLOWS {
                    ended.push((w.claim.src, w.claim.dst));
                    return false;
                }
                return true;
            }
            let c = &w.claim;
            let done = match c.kind {
                AttackKind::BruteForce => self.holds(c),
                // This flow's acknowledgement, not the newest of the pair,
                // which a record stamped far ahead may have set.
                _ => f.last_ns.saturating_add(PROOF_WINDOW_NS) >= c.ts_ns,
            };
            if done {
                proven.push(c.clone());
            }
            !done
        });
        self.pending = pending;
        for (src, dst) in ended {
            self.forget_pair(src, dst);
        }
        for c in proven {
            self.forget_pair(c.src, c.dst);
            self.late.push(c);
        }
    }

    fn forget_pair(&mut self, src: IpAddr, dst: IpAddr) {
        if let Some(n) = self.pending_pairs.get_mut(&(src, dst)) {
            *n -= 1;
            if *n == 0 {
                self.pending_pairs.remove(&(src, dst));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::conn_state::ConnState;
    use gatewarden_proto::messages::{AlertAction, Proto, Severity};

    const S: u64 = 1_000_000_000;

    /// A connection to 198.51.100.5:`port` starting at `t_ms`.
    fn flow(id: u64, src: &str, port: u16, t_ms: u64, answered: bool) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: "198.51.100.5".parse().unwrap(),
            sport: 40000,
            dport: port,
            proto: Proto::Tcp,
            first_ns: t_ms * 1_000_000,
            last_ns: t_ms * 1_000_000 + 5_000_000,
            fwd_packets: 3,
            rev_packets: 2,
            fwd_bytes: 180,
            rev_bytes: 120,
            conn_state: if answered { ConnState::SF } else { ConnState::S0 },
            src_answered: answered,
        }
    }

    fn alert(kind: AttackKind, src: &str, port: u16, flow_id: u64, t_s: u64) -> Alert {
        Alert {
            flow_id,
            kind,
            src: Some(src.parse().unwrap()),
            dst: Some("198.51.100.5".parse().unwrap()),
            dport: port,
            ts_ns: t_s * S,
            action: AlertAction::Allowed,
            ..Alert::about_system("d", kind, Severity::High, 1, "x", String::new())
        }
    }

    #[test]
    fn a_guess_counts_by_the_connections_its_source_completed_in_the_detectors_window() {
        let mut p = Proofs::default();
        // A device reconnecting to MQTT every 3 s, and 19 SYNs forged in its name: the
        // named connection (its own, completed) is attempt 20, yet it completed 4 in 10 s.
        for i in 0..40u64 {
            p.note(&flow(i, "192.0.2.5", 1883, 1_000_000 + i * 3_000, true));
        }
        for i in 0..19u64 {
            p.note(&flow(100 + i, "192.0.2.5", 1883, 1_110_000 + i * 400, false));
        }
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.5", 1883, 39, 1_117)));
        // A guesser: 10 completed in the 10 s before the alert, on the alert's port only.
        for i in 0..10u64 {
            p.note(&flow(200 + i, "192.0.2.9", 1883, 1_100_000 + i * 900, true));
        }
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 1883, 0, 1_109)));
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 1883, 0, 1_111)), "1 s too late");
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 22, 0, 1_109)), "another port");
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.6", 1883, 209, 1_109)), "another source");
        // Snapshots of the same connection count once.
        for _ in 0..3 {
            p.note(&flow(300, "192.0.2.8", 1883, 1_100_000, true));
        }
        for i in 0..8u64 {
            p.note(&flow(301 + i, "192.0.2.8", 1883, 1_101_000, true));
        }
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.8", 1883, 0, 1_102)), "9 connections");
        // The session rule's login ports: 3 sessions in 60 s (hydra holds each for several tries).
        for i in 0..3u64 {
            p.note(&flow(400 + i, "192.0.2.7", 22, 1_100_000 + i * 20_000, true));
        }
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.7", 22, 402, 1_141)));
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.7", 22, 402, 1_161)), "older than 60 s");
        for i in 0..3u64 {
            p.note(&flow(500 + i, "192.0.2.7", 1883, 1_100_000 + i * 20_000, true));
        }
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.7", 1883, 502, 1_141)), "MQTT is no login port");
    }

    /// hydra -t 16 against MQTT or SSH: 100 connections completed in 10 s,
    /// all reported before the alert is judged (the detector raises it about
    /// 2 s in; the batches after it arrive first). Only the newest 16 were
    /// kept, all after the alert's time: it counted none and never counted.
    #[test]
    fn a_fast_guessers_alert_counts_when_its_flows_arrived_first() {
        let mut p = Proofs::default();
        for (port, base) in [(1883, 0), (22, 1_000)] {
            for i in 0..100u64 {
                p.note(&flow(base + i, "192.0.2.9", port, 1_100_000 + i * 100, true));
            }
        }
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 1883, 19, 1_101)), "20 in the 10 s before it");
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 22, 1_004, 1_100)), "10 in the 60 s before it");
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 1883, 0, 1_099)), "before it began");
    }

    /// One flow record stamped a year ahead (a router's clock skewed, or set
    /// by whoever controls the router) moved the one clock every waiting
    /// alert aged by: all were forgotten at once, and the flows that proved
    /// them at normal times counted nothing.
    #[test]
    fn a_flow_stamped_far_ahead_does_not_end_the_wait_of_alerts() {
        const YEAR_MS: u64 = 365 * 86_400_000;
        let mut p = Proofs::default();
        let guess = alert(AttackKind::BruteForce, "192.0.2.9", 1883, 9, 1_100);
        let scan = alert(AttackKind::PortScan, "192.0.2.4", 0, 0, 1_100);
        p.wait_for_proof(&guess);
        p.wait_for_proof(&scan);
        // Another pair's flow, and one of each accused source's own, a year ahead.
        p.note(&flow(1, "192.0.2.6", 1883, 1_100_000 + YEAR_MS, true));
        p.note(&flow(2, "192.0.2.9", 1883, 1_100_000 + YEAR_MS, true));
        p.note(&flow(3, "192.0.2.4", 80, 1_100_000 + YEAR_MS, true));
        assert!(p.take_late_proofs().is_empty(), "a flow stamped a year after an alert proves nothing");
        assert_eq!(p.pending(), 2, "one flow stamped a year ahead ended the wait");
        for i in 0..10u64 {
            p.note(&flow(10 + i, "192.0.2.9", 1883, 1_095_000 + i * 100, true));
        }
        p.note(&flow(20, "192.0.2.4", 80, 1_150_000, true));
        assert_eq!(p.take_late_proofs(), vec![Claim::of(&guess).unwrap(), Claim::of(&scan).unwrap()]);
    }

    /// A router's clock a year ahead once (then put right by NTP): its
    /// acknowledgement, kept as the pair's newest, proved every scan alert
    /// about that source and target for the year, forged ones included.
    #[test]
    fn an_acknowledgement_stamped_far_ahead_of_the_clock_proves_nothing() {
        const DAY_MS: u64 = 86_400_000;
        let now_ns = 1_000 * S;
        let mut p = Proofs::default();
        p.note_at(&flow(1, "192.0.2.4", 80, 1_000_000 + 365 * DAY_MS, true), now_ns);
        assert!(
            !p.proven(&alert(AttackKind::PortScan, "192.0.2.4", 0, 0, 1_000 + 30 * 86_400)),
            "a scan alert a month later was proven by the acknowledgement stamped a year ahead"
        );
        p.note_at(&flow(2, "192.0.2.4", 80, 1_000_000 + 20_000, true), now_ns);
        assert!(p.proven(&alert(AttackKind::PortScan, "192.0.2.4", 0, 0, 1_020)), "20 s ahead still counts");
        assert_eq!(p.ahead_ignored(), 1);
    }

    /// A stolen router reports 96 completed connections whose first packets
    /// are stamped in 96 seconds ahead: they filled the key's newest seconds
    /// and pushed out a real guesser's 20, so its alert was no longer proven
    /// (found by review).
    #[test]
    fn connections_stamped_ahead_do_not_push_a_real_guessers_out() {
        let now_ns = 1_200 * S;
        let mut p = Proofs::default();
        for i in 0..20u64 {
            p.note_at(&flow(i, "192.0.2.9", 22, 1_100_000 + i * 100, true), now_ns);
        }
        for i in 0..96u64 {
            let mut f = flow(1_000 + i, "192.0.2.9", 22, 1_200_000, true);
            f.first_ns = (1_201 + i * 5) * S;
            f.last_ns = f.first_ns + 5_000_000;
            p.note_at(&f, now_ns);
        }
        assert!(
            p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 22, 0, 1_102)),
            "the real guesser's seconds were pushed out"
        );
    }

    /// A connection is reported in several snapshots: one mis-stamped
    /// connection reported twice ended a wait meant to take two flows.
    #[test]
    fn one_connection_reported_twice_past_the_wait_does_not_end_it() {
        let mut p = Proofs::default();
        p.wait_for_proof(&alert(AttackKind::BruteForce, "192.0.2.9", 1883, 9, 1_100));
        p.note(&flow(5, "192.0.2.9", 1883, 1_221_000, true));
        p.note(&flow(5, "192.0.2.9", 1883, 1_222_000, true));
        assert_eq!(p.pending(), 1, "two snapshots of one connection ended the wait");
        p.note(&flow(6, "192.0.2.9", 1883, 1_223_000, true));
        assert_eq!(p.pending(), 0, "a second connection does");
    }

    #[test]
    fn a_scan_counts_by_a_recent_acknowledgement_of_the_target() {
        let mut p = Proofs::default();
        p.note(&flow(1, "192.0.2.5", 1883, 1_000_000, true));
        p.note(&flow(2, "192.0.2.6", 1883, 1_000_000, false));
        assert!(p.proven(&alert(AttackKind::PortScan, "192.0.2.5", 0, 0, 1_120)));
        assert!(!p.proven(&alert(AttackKind::PortScan, "192.0.2.5", 0, 0, 1_121)), "older than the window");
        assert!(!p.proven(&alert(AttackKind::HostSweep, "192.0.2.6", 0, 0, 1_010)));
        assert!(!p.proven(&alert(AttackKind::Anomaly, "192.0.2.5", 1883, 1, 1_002)));
    }

    #[test]
    fn a_waiting_alert_is_proven_once_by_flows_that_arrive_later_and_forgotten_after_120_s_of_its_pairs_flows() {
        let mut p = Proofs::default();
        let guess = alert(AttackKind::BruteForce, "192.0.2.9", 1883, 9, 1_100);
        let forged = alert(AttackKind::BruteForce, "192.0.2.5", 1883, 0, 1_100);
        let scan = alert(AttackKind::PortScan, "192.0.2.4", 0, 0, 1_100);
        for a in [&guess, &forged, &scan] {
            p.wait_for_proof(a);
        }
        p.wait_for_proof(&alert(AttackKind::Anomaly, "192.0.2.4", 0, 0, 1_100));
        assert_eq!(p.pending(), 3, "only scan and brute-force alerts wait");
        for i in 0..10u64 {
            p.note(&flow(i, "192.0.2.9", 1883, 1_095_000 + i * 100, true));
        }
        p.note(&flow(20, "192.0.2.4", 80, 1_150_000, true));
        p.note(&flow(30, "192.0.2.5", 1883, 1_099_000, true));
        let late = p.take_late_proofs();
        assert_eq!(late, vec![Claim::of(&guess).unwrap(), Claim::of(&scan).unwrap()]);
        assert!(p.take_late_proofs().is_empty(), "each once");
        assert_eq!(p.pending(), 1);
        // Flow time passes 120 s after the alert: another pair's says nothing of
        // this one's; two of its own end its wait (one could be mis-stamped).
        p.note(&flow(40, "192.0.2.6", 1883, 1_221_000, true));
        p.note(&flow(41, "192.0.2.5", 1883, 1_221_000, true));
        assert_eq!(p.pending(), 1);
        p.note(&flow(42, "192.0.2.5", 1883, 1_222_000, true));
        assert_eq!((p.pending(), p.pending_pairs.len()), (0, 0));
        for i in 0..10u64 {
            p.note(&flow(50 + i, "192.0.2.5", 1883, 1_095_000 + i * 100, true));
        }
        assert!(p.take_late_proofs().is_empty());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut p = Proofs::default();
        for i in 0..(MAX_PROOFS as u64 + 100) {
            let src = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).to_string();
            p.note(&flow(i + 1, &src, 22, 1_000_000 + i, true));
        }
        assert!(p.towards.len() <= MAX_PROOFS && p.completed.len() <= MAX_GUESS_KEYS);
        // One source completing thousands of connections keeps counts of its newest seconds.
        for i in 0..5_000u64 {
            p.note(&flow(1_000_000 + i, "192.0.2.9", 22, 2_000_000 + i * 100, true));
        }
        let key = ("192.0.2.9".parse().unwrap(), "198.51.100.5".parse().unwrap(), 22);
        let done = &p.completed[&key];
        assert_eq!((done.seconds.len(), done.ids.len()), (MAX_SECONDS_PER_KEY, MAX_IDS_PER_KEY));
        assert!(done.seconds.capacity() * 8 + done.ids.capacity() * 8 <= 1_300, "the bound the docs state");
        assert_eq!(done.within(2_499 * S, LOGIN_WINDOW_NS), 610, "the newest 61 whole seconds, in full");
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 22, 0, 2_450)), "the newest are kept");
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.9", 22, 0, 2_050)), "older seconds go");
        for i in 0..(MAX_PENDING as u64 + 10) {
            p.wait_for_proof(&alert(AttackKind::BruteForce, "192.0.2.5", 1883, i, 2_050));
        }
        assert_eq!(p.pending(), MAX_PENDING);
        assert_eq!(p.pending_pairs.values().sum::<u32>() as usize, MAX_PENDING);
    }
}
