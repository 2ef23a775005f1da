//! Explicit overload: when the capture ring fills faster than the pipeline
//! drains it, the router sheds load on purpose instead of letting the kernel
//! drop whatever arrives next.
//!
//! [`Overload`] is the controller. The capture thread shows it the ring's
//! backlog and the kernel's drop counter every [`CHECK_EVERY_FRAMES`] frames
//! (and when the ring is idle); it answers with a shedding level: admit one
//! in 2^level of the frames that would open a flow for a source the router
//! has never seen. Frames of known flows and known sources are never shed, so
//! a scan from a real device is still seen while a spoofed flood (a new
//! source per packet, the costliest traffic there is) is sampled. Which
//! frames are admitted is decided by a hash of the flow key and the current
//! second (the caller's [`Overload::admit`]), so it is deterministic, not
//! biased to arrival order, and a retrying source gets a fresh chance every
//! second.
//!
//! The level rises at most every [`RAISE_EVERY_NS`] while half the ring is
//! waiting (at two looks in a row) or the kernel drops, and falls one step per [`LOWER_AFTER_NS`] of
//! an empty backlog. One episode of overload yields one report for a system
//! alert, but only once it has cost the router a material share of what it
//! should have seen: at least [`ALERT_LOSS_SHARE`] of the episode's frames
//! dropped by the kernel or shed. A spoofed flood loses most of its frames
//! and is alerted on within a second; a busy moment in which the kernel drops
//! a handful of frames of a fast download (counted in
//! `gatewarden_capture_kernel_drops_total`, logged when the episode ends) is
//! not an overload worth paging anyone about. A new episode (and alert)
//! starts only after [`QUIET_NS`] without shedding.

use crate::afpacket::{KernelCounters, RingBacklog};

/// Frames between two looks at the ring (a look is a few loads and one
/// `getsockopt`).
pub const CHECK_EVERY_FRAMES: u32 = 256;
/// The shedding level rises at most this often (ns): one 1 MiB block of
/// 128-byte frames is ~8000 frames, a few ms of a flood.
pub const RAISE_EVERY_NS: u64 = 20_000_000;
/// An empty backlog for this long (ns) lowers the level one step.
pub const LOWER_AFTER_NS: u64 = 1_000_000_000;
/// Highest level: admit one in 4096 unseen-source new flows.
pub const MAX_LEVEL: u32 = 12;
/// The alert is sent once shedding has gone on this long (ns), so it can say
/// how much was shed, or earlier if the overload is already over; never
/// before the episode's loss reached [`ALERT_LOSS_SHARE`].
pub const ALERT_AFTER_NS: u64 = 1_000_000_000;
/// The share of an episode's frames (kernel drops plus frames shed, over
/// every frame the kernel saw) from which it is an overload worth a system
/// alert: one frame in a hundred unseen is where flow counts and rates start
/// to be wrong, not a handful dropped in a busy millisecond.
pub const ALERT_LOSS_SHARE: f64 = 0.01;
/// Without shedding for this long (ns), an episode is over; the next
/// overload is a new episode with its own alert.
pub const QUIET_NS: u64 = 60_000_000_000;

/// Why the router sheds: what showed the pipeline falling behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Half the ring or more was full and waiting for user space.
    RingBacklog,
    /// The kernel dropped frames because the ring was full.
    KernelDrops,
}

impl ShedReason {
    /// Every reason, in metric-label order.
    pub const ALL: [ShedReason; 2] = [ShedReason::RingBacklog, ShedReason::KernelDrops];

    /// The `reason` label of `gatewarden_capture_shed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::RingBacklog => "ring_backlog",
            ShedReason::KernelDrops => "kernel_drops",
        }
    }

    /// Position in [`ShedReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an overload episode did, for its system alert and log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverloadReport {
    /// Capture time the shedding started (ns since the Unix epoch).
    pub started_ns: u64,
    /// How long it has lasted so far (ns).
    pub elapsed_ns: u64,
    /// Frames shed (would have opened a flow from an unseen source).
    pub shed: u64,
    /// Frames of that kind seen while shedding (shed + admitted).
    pub candidates: u64,
    /// What first triggered it.
    pub reason: ShedReason,
    /// Most ring blocks seen waiting at once, and the ring's size.
    pub worst_waiting: u32,
    /// Blocks in the ring.
    pub blocks: u32,
    /// Frames the kernel dropped during the episode.
    pub kernel_drops: u64,
    /// Frames the kernel saw during the episode, dropped ones included (0:
    /// not known).
    pub kernel_packets: u64,
    /// The highest sampling rate: admitted one in this many.
    pub worst_one_in: u32,
}

impl OverloadReport {
    /// The share of the episode's frames the router did not process: kernel
    /// drops plus frames shed, over every frame the kernel saw (1.0 when
    /// that count is not known).
    pub fn loss_share(&self) -> f64 {
        let lost = self.kernel_drops + self.shed;
        if lost == 0 {
            return 0.0;
        }
        lost as f64 / self.kernel_packets.max(lost) as f64
    }

    /// One sentence for the system alert: how much was shed and why.
    pub fn sentence(&self, interface: &str) -> String {
        let why = match self.reason {
            ShedReason::RingBacklog => "the capture ring filled faster than the pipeline drained it",
            ShedReason::KernelDrops => "the kernel dropped frames because the capture ring was full",
        };
        format!(
            "capture on {interface} overloaded: {why} ({} of {} ring blocks waiting at worst, {} frames dropped by the kernel, \
             {:.1} % of the frames lost with the frames shed); \
             in {:.1} s shed {} of {} frames that would have opened a flow from a source never seen before \
             (admitting 1 in {} at most); known flows and sources keep full processing and enforcement in the kernel is unaffected",
            self.worst_waiting,
            self.blocks,
            self.kernel_drops,
            self.loss_share() * 100.0,
            self.elapsed_ns as f64 / 1e9,
            self.shed,
            self.candidates,
            self.worst_one_in,
        )
    }
}

/// What [`Overload::observe`] has to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverloadEvent {
    /// The episode has lost at least [`ALERT_LOSS_SHARE`] of its frames and
    /// gone on long enough to report (once per episode): raise the system
    /// alert.
    Alert(OverloadReport),
    /// The episode is over (no shedding for [`QUIET_NS`]): its totals, for
    /// the log. An episode that lost too little ends here without an alert.
    Over(OverloadReport),
}

#[derive(Debug, Clone)]
struct Episode {
    started_ns: u64,
    /// When the level last fell back to 0, if it has.
    calm_ns: Option<u64>,
    alerted: bool,
    shed: u64,
    candidates: u64,
    reason: ShedReason,
    worst_waiting: u32,
    blocks: u32,
    drops_at_start: u64,
    drops: u64,
    packets_at_start: u64,
    packets: u64,
    worst_level: u32,
    last_ns: u64,
}

impl Episode {
    fn report(&self) -> OverloadReport {
        OverloadReport {
            started_ns: self.started_ns,
            elapsed_ns: self.calm_ns.unwrap_or(self.last_ns).saturating_sub(self.started_ns),
            shed: self.shed,
            candidates: self.candidates,
            reason: self.reason,
            worst_waiting: self.worst_waiting,
            blocks: self.blocks,
            kernel_drops: self.drops - self.drops_at_start,
            kernel_packets: self.packets - self.packets_at_start,
            worst_one_in: 1 << self.worst_level,
        }
    }
}

/// The shedding controller of one capture (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Overload {
    level: u32,
    reason: Option<ShedReason>,
    last_raise_ns: Option<u64>,
    /// Since when the backlog has been empty (for lowering the level).
    empty_since_ns: Option<u64>,
    last_kernel: Option<KernelCounters>,
    /// Consecutive looks that found half the ring waiting.
    backlog_looks: u32,
    episode: Option<Episode>,
}

impl Overload {
    /// No shedding.
    pub fn new() -> Overload {
        Overload::default()
    }

    /// Whether frames are being shed now.
    pub fn overloaded(&self) -> bool {
        self.level > 0
    }

    /// Admitting one in this many unseen-source new flows (1: all).
    pub fn one_in(&self) -> u32 {
        1 << self.level
    }

    /// Why it sheds now (the reason the episode started).
    pub fn reason(&self) -> ShedReason {
        self.reason.unwrap_or(ShedReason::RingBacklog)
    }

    /// Whether a frame that would open a flow from an unseen source is
    /// processed, given a hash of its flow key and the current second; counts
    /// the decision into the episode.
    pub fn admit(&mut self, hash: u64) -> bool {
        if self.level == 0 {
            return true;
        }
        let admitted = hash & (u64::from(self.one_in()) - 1) == 0;
        if let Some(e) = &mut self.episode {
            e.candidates += 1;
            e.shed += u64::from(!admitted);
        }
        admitted
    }

    /// Looks at the ring: its backlog and the kernel's counters (totals
    /// since the socket opened) at `now_ns`; adjusts the level.
    pub fn observe(&mut self, now_ns: u64, ring: RingBacklog, kernel: KernelCounters) -> Option<OverloadEvent> {
        let before = self.last_kernel.unwrap_or(kernel);
        let new_drops = kernel.drops > before.drops;
        self.last_kernel = Some(kernel);
        // Half the ring waiting at two looks in a row: one look can be a
        // scheduling hiccup over a few nearly empty blocks (each retires
        // after its 10 ms timeout), drained well before the next look.
        if ring.waiting * 2 >= ring.blocks && ring.waiting > 0 {
            self.backlog_looks = self.backlog_looks.saturating_add(1);
        } else {
            self.backlog_looks = 0;
        }
        let backlog = self.backlog_looks >= 2;
        if new_drops || backlog {
            self.empty_since_ns = None;
            if self.level < MAX_LEVEL && self.last_raise_ns.is_none_or(|r| now_ns.saturating_sub(r) >= RAISE_EVERY_NS) {
                if self.level == 0 {
                    self.reason = Some(if new_drops { ShedReason::KernelDrops } else { ShedReason::RingBacklog });
                }
                self.level += 1;
                self.last_raise_ns = Some(now_ns);
            }
        } else if ring.waiting == 0 && self.level > 0 {
            let since = *self.empty_since_ns.get_or_insert(now_ns);
            if now_ns.saturating_sub(since) >= LOWER_AFTER_NS {
                self.level -= 1;
                self.empty_since_ns = Some(now_ns);
            }
        }
        self.track_episode(now_ns, ring, before, kernel)
    }

    fn track_episode(
        &mut self,
        now_ns: u64,
        ring: RingBacklog,
        before: KernelCounters,
        kernel: KernelCounters,
    ) -> Option<OverloadEvent> {
        if self.level > 0 && self.episode.is_none() {
            self.episode = Some(Episode {
                started_ns: now_ns,
                calm_ns: None,
                alerted: false,
                shed: 0,
                candidates: 0,
                reason: self.reason(),
                worst_waiting: 0,
                blocks: ring.blocks,
                drops_at_start: before.drops,
                drops: kernel.drops,
                packets_at_start: before.packets,
                packets: kernel.packets,
                worst_level: 0,
                last_ns: now_ns,
            });
        }
        let level = self.level;
        let e = self.episode.as_mut()?;
        e.last_ns = now_ns;
        e.drops = kernel.drops.max(e.drops);
        e.packets = kernel.packets.max(e.packets);
        e.worst_level = e.worst_level.max(level);
        e.blocks = ring.blocks;
        if level > 0 {
            e.worst_waiting = e.worst_waiting.max(ring.waiting);
            e.calm_ns = None;
        } else if e.calm_ns.is_none() {
            e.calm_ns = Some(now_ns);
        }
        // A loaded machine drops a handful of frames now and then: only a
        // material loss is an overload to alert on.
        if !e.alerted && (now_ns.saturating_sub(e.started_ns) >= ALERT_AFTER_NS || e.calm_ns.is_some()) {
            let report = e.report();
            if report.loss_share() >= ALERT_LOSS_SHARE {
                e.alerted = true;
                return Some(OverloadEvent::Alert(report));
            }
        }
        if e.calm_ns.is_some_and(|c| now_ns.saturating_sub(c) >= QUIET_NS) {
            let report = e.report();
            self.episode = None;
            self.reason = None;
            return Some(OverloadEvent::Over(report));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ring(waiting: u32) -> RingBacklog {
        RingBacklog { waiting, blocks: 4 }
    }

    /// Kernel counters with `drops` and no count of frames seen (a loss
    /// share of 1 once anything is lost).
    fn k(drops: u64) -> KernelCounters {
        KernelCounters { packets: 0, drops }
    }

    #[test]
    fn an_idle_ring_never_sheds() {
        let mut o = Overload::new();
        for i in 0..10_000u64 {
            assert_eq!(o.observe(i * MS, ring(i as u32 % 2), k(0)), None);
            assert!(o.admit(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        }
        assert!(!o.overloaded());
        // A hiccup: the whole ring waiting at one look, drained by the next.
        for i in 0..100u64 {
            o.observe(20_000 * MS + i * 50 * MS, ring(if i % 2 == 0 { 4 } else { 0 }), k(0));
            assert!(!o.overloaded(), "look {i}");
        }
    }

    #[test]
    fn a_full_ring_raises_the_level_stepwise_and_one_alert_reports_what_was_shed() {
        let mut o = Overload::new();
        let mut t = 1_000 * MS;
        assert_eq!(o.observe(t, ring(2), k(0)), None);
        assert!(!o.overloaded(), "one look at a backlog may be a scheduling hiccup");
        assert_eq!(o.observe(t + MS, ring(2), k(0)), None);
        assert_eq!((o.overloaded(), o.one_in(), o.reason()), (true, 2, ShedReason::RingBacklog));
        // Within 20 ms the level does not rise again.
        o.observe(t + 5 * MS, ring(3), k(0));
        assert_eq!(o.one_in(), 2);
        let mut alerts = Vec::new();
        let mut admitted = 0u64;
        for i in 0..120u64 {
            t += 10 * MS;
            for h in 0..1000u64 {
                admitted += u64::from(o.admit(h + i * 1000));
            }
            if let Some(ev) = o.observe(t, ring(3), k(0)) {
                alerts.push(ev);
            }
        }
        assert_eq!(o.one_in(), 1 << MAX_LEVEL, "sustained pressure reaches the top level");
        assert_eq!(alerts.len(), 1, "one alert per episode: {alerts:?}");
        let OverloadEvent::Alert(r) = &alerts[0] else { panic!("{alerts:?}") };
        assert!(r.shed > 0 && r.candidates >= r.shed, "{r:?}");
        assert!(r.candidates <= 120_000 && admitted <= 120_000 - r.shed, "{r:?}, admitted {admitted}");
        assert_eq!((r.worst_waiting, r.blocks, r.reason), (3, 4, ShedReason::RingBacklog));
        let s = r.sentence("lan0");
        assert!(s.contains("lan0") && s.contains(&format!("shed {} of {}", r.shed, r.candidates)), "{s}");
    }

    #[test]
    fn kernel_drops_start_shedding_and_name_the_reason() {
        let mut o = Overload::new();
        o.observe(0, ring(0), k(5));
        assert!(!o.overloaded(), "drops before the first look are history, not pressure");
        o.observe(10 * MS, ring(0), k(9));
        assert_eq!((o.overloaded(), o.reason()), (true, ShedReason::KernelDrops));
        let mut t = 10 * MS;
        let mut events = Vec::new();
        while o.overloaded() {
            t += 100 * MS;
            for h in 0..8u64 {
                o.admit(h);
            }
            events.extend(o.observe(t, ring(0), k(9)));
        }
        assert!(t < 2_000 * MS, "one step, lowered after a calm second");
        assert!(matches!(&events[..], [OverloadEvent::Alert(r)] if r.kernel_drops == 4 && r.shed > 0), "{events:?}");
    }

    /// What two loaded soaks showed: a fast download at ~7 000 frames/s, the
    /// kernel drops 9 frames (and one new source's frame is shed) in a busy
    /// moment. The router saw 99.9 % of its traffic: a report when the
    /// episode ends, no alert.
    #[test]
    fn a_handful_of_frames_lost_in_a_busy_moment_raise_no_alert_only_a_report_when_the_episode_ends() {
        let mut o = Overload::new();
        let mut kc = KernelCounters { packets: 1_000_000, drops: 0 };
        o.observe(0, ring(0), kc);
        let mut t = 0;
        let mut events = Vec::new();
        let step = |o: &mut Overload, t: &mut u64, kc: &mut KernelCounters, drops: u64, events: &mut Vec<_>| {
            *t += 50 * MS;
            kc.packets += 350;
            kc.drops += drops;
            events.extend(o.observe(*t, ring(0), *kc));
        };
        step(&mut o, &mut t, &mut kc, 9, &mut events);
        assert!(o.overloaded());
        assert!(!o.admit(1), "hash 1 is shed at one in two");
        while t < 70_000 * MS {
            step(&mut o, &mut t, &mut kc, 0, &mut events);
        }
        assert!(!o.overloaded());
        assert!(
            matches!(&events[..], [OverloadEvent::Over(r)] if r.shed == 1 && r.kernel_drops == 9 && r.loss_share() < 0.001),
            "only the end-of-episode report, no alert: {events:?}"
        );
    }

    /// Kernel drops alone are an overload when they are material: a big
    /// stream the pipeline cannot keep up with loses 5 % of its frames, no
    /// new source is shed, and the alert still comes (never silent drops).
    #[test]
    fn material_kernel_drops_alert_even_with_nothing_shed() {
        let mut o = Overload::new();
        let mut kc = KernelCounters { packets: 0, drops: 0 };
        o.observe(0, ring(0), kc);
        let mut events = Vec::new();
        for i in 1..=40u64 {
            kc.packets += 1_000;
            kc.drops += 50;
            events.extend(o.observe(i * 50 * MS, ring(2), kc));
        }
        let alerts: Vec<_> = events.iter().filter(|e| matches!(e, OverloadEvent::Alert(_))).collect();
        assert!(
            matches!(&alerts[..], [OverloadEvent::Alert(r)] if r.shed == 0 && (0.04..0.06).contains(&r.loss_share())),
            "{events:?}"
        );
        let OverloadEvent::Alert(r) = alerts[0] else { unreachable!() };
        assert!(r.sentence("lan0").contains("5.0 % of the frames lost"), "{}", r.sentence("lan0"));
    }

    #[test]
    fn the_level_falls_after_calm_and_a_new_episode_alerts_only_after_the_quiet_period() {
        let mut o = Overload::new();
        let mut t = 0;
        let mut events = Vec::new();
        fn run(o: &mut Overload, t: &mut u64, waiting: u32, ms: u64, events: &mut Vec<OverloadEvent>) {
            for _ in 0..ms / 10 {
                *t += 10 * MS;
                for h in 0..16u64 {
                    o.admit(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                }
                events.extend(o.observe(*t, ring(waiting), k(0)));
            }
        }
        run(&mut o, &mut t, 4, 2_000, &mut events);
        assert!(o.overloaded());
        run(&mut o, &mut t, 0, 20_000, &mut events);
        assert!(!o.overloaded(), "one step down per calm second");
        // Back within the quiet period: the same episode, no second alert.
        run(&mut o, &mut t, 4, 2_000, &mut events);
        run(&mut o, &mut t, 0, 20_000, &mut events);
        assert_eq!(events.iter().filter(|e| matches!(e, OverloadEvent::Alert(_))).count(), 1, "{events:?}");
        run(&mut o, &mut t, 0, 61_000, &mut events);
        assert!(matches!(events.last(), Some(OverloadEvent::Over(r)) if r.worst_waiting == 4), "{events:?}");
        run(&mut o, &mut t, 4, 2_000, &mut events);
        assert_eq!(events.iter().filter(|e| matches!(e, OverloadEvent::Alert(_))).count(), 2, "a new episode alerts");
    }

    #[test]
    fn admission_is_a_function_of_the_hash() {
        let mut o = Overload::new();
        o.observe(0, ring(4), k(0));
        o.observe(30 * MS, ring(4), k(0));
        o.observe(60 * MS, ring(4), k(0));
        assert_eq!(o.one_in(), 4);
        let first: Vec<bool> = (0..64u64).map(|h| o.admit(h)).collect();
        let again: Vec<bool> = (0..64u64).map(|h| o.admit(h)).collect();
        assert_eq!(first, again);
        assert_eq!(first.iter().filter(|a| **a).count(), 16);
    }
}
