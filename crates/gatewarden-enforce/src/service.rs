//! The router's enforcement thread. Netlink sockets block, so the
//! [`Blocker`] lives on its own thread; the async router task hands it
//! verdicts through a channel. The thread also watches detector liveness
//! (fail-open or fail-closed), refreshes metrics from the nft counters, and
//! removes the table on a clean exit unless told to keep it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use std::sync::Mutex;

use super::blocker::{BlockOutcome, Blocker, Protection};
use super::persist::{SavedBlock, StateFile};
use super::spoof::{mac_text, SourceClass, SpoofGuard, SpoofReport};
use crate::config::EnforceConfig;
use gatewarden_core::clock::unix_now_ms as now_ms;
use gatewarden_core::metrics::Registry;
use gatewarden_proto::messages::{
    Alert, AlertAction, AttackKind, NotBlocked, PolicyUpdate, Severity, SourceProof, Verdict, VerdictOutcome,
};

pub use gatewarden_proto::signatures::BLOCK_SET_FULL as SIG_BLOCK_SET_FULL;
/// A new containment's alert waits this long, so it lists what the MAC
/// forged in its first burst (one alert per MAC per containment).
pub const SPOOF_ALERT_GATHER: Duration = Duration::from_secs(2);

/// What the capture thread needs to report spoofed frames: the guard it
/// checks frames against and the enforcement thread's queue.
#[derive(Debug, Clone)]
pub struct SpoofLink {
    /// Bindings and spoofers, shared with the enforcement thread.
    pub guard: Arc<Mutex<SpoofGuard>>,
    /// Where reports go.
    pub tx: mpsc::Sender<Command>,
}

impl SpoofLink {
    /// Checks one parsed LAN frame from `mac`; a spoofed one is reported to the enforcement thread.
    pub fn check(&self, mac: super::spoof::Mac, p: &super::spoof::SourceFrame) {
        self.check_verified(mac, p, false);
    }

    /// [`SpoofLink::check`], and with `classify` (the capture is overloaded)
    /// whether the frame's source is a LAN address the router's neighbour
    /// table or leases bind to this MAC: a real device, never a random
    /// forged source, so its frames keep full processing. One lock for both.
    pub fn check_verified(&self, mac: super::spoof::Mac, p: &super::spoof::SourceFrame, classify: bool) -> bool {
        let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let report = guard.check(mac, p);
        let verified = classify
            && matches!(guard.classify(&p.src, p.ts_ns), super::spoof::SourceClass::LanVerified(m) if m == mac);
        let judged = if guard.probing_now() { guard.judge_probes(p.ts_ns) } else { Vec::new() };
        drop(guard);
        for r in report.into_iter().chain(judged) {
            let _ = self.tx.send(Command::Spoofed(r));
        }
        verified
    }

    /// The capture thread can send on the LAN: conflicts are probed before
    /// they are judged (see `spoof`'s module doc).
    pub fn enable_probing(&self) {
        self.guard.lock().unwrap_or_else(|e| e.into_inner()).enable_probing();
    }

    /// Probes to send now (the capture thread sends them on its interface).
    pub fn take_probes(&self) -> Vec<super::spoof::NeighbourProbe> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner()).take_probes()
    }

    /// An ARP reply, neighbour advertisement or announcement from `mac` for `addr`.
    pub fn saw_answer(&self, mac: super::spoof::Mac, addr: std::net::IpAddr) {
        self.guard.lock().unwrap_or_else(|e| e.into_inner()).saw_answer(mac, addr);
    }

    /// Judges probes whose wait is over at `now_ns` (called when the capture is idle, too).
    pub fn tick(&self, now_ns: u64) {
        let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        if !guard.probing_now() {
            return;
        }
        let judged = guard.judge_probes(now_ns);
        drop(guard);
        for r in judged {
            let _ = self.tx.send(Command::Spoofed(r));
        }
    }
}

/// Work for the enforcement thread.
#[derive(Debug)]
pub enum Command {
    /// Block the verdict's source.
    Verdict(Verdict),
    /// A LAN MAC sent a frame with a forged source: contain it.
    Spoofed(SpoofReport),
    /// Replace the group policy.
    Policy(PolicyUpdate),
    /// Replace the configured allowlist (settings page), with the settings version.
    Allowlist(Vec<super::feeds::Cidr>, u64),
    /// An operator request from `gatewarden ctl` ([`super::control::EnforceControl`]); the answer goes back on the sender.
    Control(super::control::ControlOp, mpsc::Sender<super::control::ControlReply>),
    /// Stop now, even while others (the dashboard's unblock, `ctl`) still hold senders.
    Stop,
}

/// Handle to the running enforcement thread.
#[derive(Debug)]
pub struct EnforceService {
    tx: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
    detector_seen_ms: Arc<AtomicU64>,
    guard: Arc<Mutex<SpoofGuard>>,
}

/// Where the enforcement thread's reports go: alerts (spoofing, a full
/// block set) and each verdict's outcome (blocked, or why not). The node hands
/// it its bus; enforcement knows no bus.
pub struct Reports {
    /// Publishes an alert.
    pub alert: Box<dyn Fn(Alert) + Send + Sync>,
    /// Publishes a verdict's outcome.
    pub outcome: Box<dyn Fn(gatewarden_proto::messages::VerdictOutcome) + Send + Sync>,
}

impl EnforceService {
    /// `gatewarden ctl` blocks, block and unblock, carried out on this thread.
    pub fn control(&self) -> super::control::EnforceControl {
        let tx = self.sender();
        super::control::EnforceControl::new(move |op, reply| tx.send(Command::Control(op, reply)).is_ok())
    }

    /// Opens netlink, installs the ruleset (replacing a stale one) and starts
    /// the thread. Fails with what to do when we lack the privilege. No LAN
    /// interface: every verdict needs its own proof (see [`EnforceService::start_on`]).
    pub fn start(
        cfg: &EnforceConfig,
        registry: &Arc<Registry>,
        reports: Reports,
        node: String,
    ) -> anyhow::Result<Self> {
        Self::start_on(cfg, "", registry, reports, node)
    }

    /// [`EnforceService::start`] for a router whose LAN is `lan_interface`
    /// (`capture.interface`): its neighbour table and networks feed the
    /// spoof check and the verdict gate, refreshed every second.
    pub fn start_on(
        cfg: &EnforceConfig,
        lan_interface: &str,
        registry: &Arc<Registry>,
        bus: Reports,
        node: String,
    ) -> anyhow::Result<Self> {
        let extra_lan = cfg.lan_prefixes.iter().filter_map(|s| s.parse().ok()).collect();
        let guard = Arc::new(Mutex::new(SpoofGuard::new(cfg.spoof_limits(), extra_lan, Some(registry))));
        let lan = Lan {
            interface: lan_interface.to_string(),
            guard: guard.clone(),
            leases: Leases::default(),
            last_refresh: Instant::now(),
            bound_failing: false,
            site: None,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let (tx, rx) = mpsc::channel::<Command>();
        let detector_seen_ms = Arc::new(AtomicU64::new(now_ms()));
        let seen = detector_seen_ms.clone();
        let cfg = cfg.clone();
        let registry = registry.clone();
        let thread = std::thread::Builder::new()
            .name("enforce".into())
            .spawn(move || {
                let state = (!cfg.state_file.is_empty()).then(|| StateFile::new(&cfg.state_file));
                let saved = match &state {
                    None => {
                        tracing::warn!(
                            "enforce.state_file is not set: blocks will not survive a reboot (nor a clean exit unless \
                             enforce.keep_table_on_exit); set it, e.g. to /var/lib/gatewarden/enforce-state.json"
                        );
                        Vec::new()
                    }
                    Some(f) => f.load(now_ms()).unwrap_or_else(|e| {
                        let aside = f.set_aside().map(|p| p.display().to_string()).unwrap_or_else(|e| format!("not moved: {e:#}"));
                        tracing::error!(
                            "cannot read the saved blocks ({e:#}); starting without them. The file was kept aside ({aside}) \
                             for an operator to inspect"
                        );
                        Vec::new()
                    }),
                };
                let restoring = saved.len();
                // What no feed may cover, read as `blocklist import` reads it: the LAN interface's
                // networks and those routed out of it, and enforce.lan_prefixes. The saved feed is
                // checked against them as they are now, not as they were at its import.
                let mut site = super::blocker::lan_networks(&lan.interface).unwrap_or_else(|e| {
                    tracing::warn!(
                        "cannot read the networks of the LAN interface {} ({e}): saved feed ranges are checked \
                         against enforce.lan_prefixes only",
                        lan.interface
                    );
                    Vec::new()
                });
                site.extend(cfg.lan_prefixes.iter().filter_map(|s| s.parse::<super::feeds::Cidr>().ok()));
                let opened = Blocker::open(cfg.settings(), Some(&registry))
                    .and_then(|mut b| b.ensure_restoring_for(saved, now_ms(), &site).map(|_| b));
                let mut blocker = match opened {
                    Ok(b) => {
                        // Seconds since the kernel started: the appliance's boot-to-first-rule figure.
                        let since_boot_s = std::fs::read_to_string("/proc/uptime")
                            .ok()
                            .and_then(|u| u.split_whitespace().next().map(str::to_owned))
                            .unwrap_or_default();
                        tracing::info!(
                            since_boot_s = %since_boot_s,
                            "enforcement ready: table inet gatewarden with its block sets and meters is in the kernel"
                        );
                        let _ = ready_tx.send(Ok(()));
                        b
                    }
                    Err(e) => {
                        let advice = install_failure_advice(e.errno(), restoring, &cfg.state_file);
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context(advice)));
                        return;
                    }
                };
                let mut persister = state.map(Persister::new);
                let mut lan = lan;
                lan.refresh(&cfg);
                lan.sync_bound_sources(&mut blocker);
                run_loop(&mut blocker, &cfg, &rx, &seen, &bus, &node, &mut persister, &mut lan, &registry);
                if let Some(p) = persister.as_mut() {
                    p.save(&mut blocker);
                }
                if cfg.keep_table_on_exit {
                    tracing::info!("keeping the nftables table (enforce.keep_table_on_exit)");
                } else if let Err(e) = blocker.remove() {
                    tracing::error!("could not remove the nftables table on exit: {e}");
                } else {
                    tracing::info!("removed the nftables table");
                }
            })
            .context("cannot start the enforcement thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(EnforceService { tx, thread, detector_seen_ms, guard }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the enforcement thread stopped during start-up")
            }
        }
    }

    /// Queues work; false if the thread has stopped.
    pub fn submit(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }

    /// Shared liveness clock, for tasks that see detector heartbeats.
    pub fn liveness(&self) -> Arc<AtomicU64> {
        self.detector_seen_ms.clone()
    }

    /// A sender for other tasks.
    pub fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    /// What the capture thread checks LAN frames with.
    pub fn spoof_link(&self) -> SpoofLink {
        SpoofLink { guard: self.guard.clone(), tx: self.tx.clone() }
    }

    /// Stops the thread (removing the table unless configured to keep it) and waits for it.
    pub fn stop(self) {
        let _ = self.tx.send(Command::Stop);
        let _ = self.thread.join();
    }
}

/// The LAN side as the enforcement thread keeps it: the interface, the
/// shared spoof guard, and the lease file's last reading.
struct Lan {
    interface: String,
    guard: Arc<Mutex<SpoofGuard>>,
    leases: Leases,
    last_refresh: Instant,
    /// The last write of the binding sets failed (logged once until one works).
    bound_failing: bool,
    /// What no feed may cover, as of the last refresh: the LAN interface's
    /// networks and those routed out of it, and `enforce.lan_prefixes`
    /// (`None` before a refresh read the interface).
    site: Option<Vec<super::feeds::Cidr>>,
}

/// A verdict for an unverified LAN source re-reads the neighbour table at most this often.
const LAN_RECHECK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Leases {
    mtime: Option<std::time::SystemTime>,
    entries: Vec<(std::net::IpAddr, super::spoof::Mac)>,
    failing: bool,
}

impl Lan {
    /// Re-reads the LAN interface (MACs, networks, neighbours) and the lease
    /// file if it changed, and hands them to the guard.
    /// What the guard knows about a verdict's source; `None` without a LAN interface.
    fn classify(&self, ip: &std::net::IpAddr) -> Option<SourceClass> {
        (!self.interface.is_empty()).then(|| {
            self.guard.lock().unwrap_or_else(|e| e.into_inner()).classify(ip, gatewarden_core::clock::unix_now_ns())
        })
    }

    fn refresh(&mut self, cfg: &EnforceConfig) {
        if self.interface.is_empty() {
            return;
        }
        self.last_refresh = Instant::now();
        if !cfg.dhcp_leases.is_empty() {
            let path = std::path::Path::new(&cfg.dhcp_leases);
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if mtime != self.leases.mtime || mtime.is_none() {
                // Lease files are small; a huge one is cut at 4 MiB rather than read whole.
                let read = std::fs::File::open(path).and_then(|f| {
                    use std::io::Read;
                    let mut text = String::new();
                    f.take(4 << 20).read_to_string(&mut text).map(|_| text)
                });
                match read {
                    Ok(text) => {
                        self.leases.entries = super::spoof::parse_leases(&text, now_ms() / 1000);
                        self.leases.mtime = mtime;
                        self.leases.failing = false;
                    }
                    Err(e) => {
                        if !self.leases.failing {
                            tracing::warn!(path = %path.display(), "cannot read enforce.dhcp_leases ({e}); LAN bindings come from the neighbour table only");
                        }
                        self.leases.failing = true;
                        self.leases.entries.clear();
                    }
                }
            }
        }
        match super::spoof::lan_view(&self.interface) {
            Ok(view) => {
                let mut site = super::blocker::lan_networks_in(&view);
                site.extend(cfg.lan_prefixes.iter().filter_map(|s| s.parse::<super::feeds::Cidr>().ok()));
                self.site = Some(site);
                // The next hops say whose MAC a downstream subnet's traffic comes with (see `bound_sources`).
                let next_hops = gatewarden_netlink::route::route_gateways().unwrap_or_else(|e| {
                    tracing::debug!("cannot read the routes' next hops: {e}");
                    Vec::new()
                });
                let behind: Vec<_> = view.routed.iter().filter(|c| !view.prefixes.contains(c)).copied().collect();
                let mut g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
                g.set_own_macs(view.own_macs);
                g.set_own_addrs(view.own_addrs, view.lan_mac);
                g.set_lan_prefixes(view.prefixes.into_iter().chain(view.routed).collect());
                g.set_routes(behind, next_hops);
                g.refresh(&view.neighbours, &self.leases.entries, gatewarden_core::clock::unix_now_ns());
            }
            Err(e) => tracing::warn!("cannot read the LAN interface's neighbour table for the spoof check: {e}"),
        }
    }

    /// Writes the sources the LAN's MACs may still send from while contained
    /// (their lease and neighbour bindings, `spoof::BoundSources`) to the
    /// kernel's binding sets, so that containing a MAC someone forged drops
    /// the forgery and not the device. Only changes are written.
    fn sync_bound_sources(&mut self, blocker: &mut Blocker) {
        if self.interface.is_empty() {
            return;
        }
        let want = self.guard.lock().unwrap_or_else(|e| e.into_inner()).bound_sources();
        match blocker.set_bound_sources(&want) {
            Ok(changed) => {
                if self.bound_failing {
                    tracing::info!("the LAN's bindings reach the kernel again");
                }
                self.bound_failing = false;
                if changed {
                    tracing::debug!(
                        addresses = want.addrs.len(),
                        routed = want.routed.len(),
                        "LAN bindings written for containments"
                    );
                }
            }
            Err(e) => {
                if !self.bound_failing {
                    tracing::error!(
                        "cannot write the LAN's bindings to the kernel: a contained MAC whose binding is missing \
                         loses its own traffic too: {e}"
                    );
                }
                self.bound_failing = true;
            }
        }
    }
}

/// Metrics of the verdict gate and the containments.
struct GateMetrics {
    unproven: gatewarden_core::metrics::Counter,
    forged: gatewarden_core::metrics::Counter,
    containments: gatewarden_core::metrics::Counter,
    contained: gatewarden_core::metrics::Gauge,
    /// From the enforcement thread taking a verdict to the kernel's netlink ack of its block.
    block_latency: gatewarden_core::metrics::Histogram,
}

impl GateMetrics {
    fn new(r: &Registry) -> GateMetrics {
        GateMetrics {
            unproven: r.counter(
                "gatewarden_enforce_unproven_refused_total",
                "Verdicts refused because nothing proves their source is real (no verified LAN binding, no answered traffic).",
                &[],
            ),
            forged: r.counter(
                "gatewarden_enforce_forged_refused_total",
                "Verdicts refused because a LAN MAC forged their source address recently.",
                &[],
            ),
            containments: r.counter(
                "gatewarden_spoof_containments_total",
                "LAN MACs contained for forging source addresses (new containments).",
                &[],
            ),
            contained: r.gauge("gatewarden_spoof_contained_macs", "LAN MACs contained now (contain_mac).", &[]),
            block_latency: r.histogram(
                "gatewarden_block_latency_seconds",
                "From the router's enforcement taking a verdict to the kernel's ack of its block (blocked verdicts only), seconds.",
                &[("origin", "detector")],
                gatewarden_core::metrics::LATENCY_BUCKETS,
            ),
        }
    }
}

/// The verdict gate: a forged source is never blocked; a source is blocked
/// only when it is a verified LAN binding or the verdict proves it real.
/// Only a verified LAN binding escalates. A WAN source's proof is a flow in
/// which it acknowledged what it was sent, and that flow is never one of
/// the offending ones (a SYN flood or scan acknowledges nothing): it shows
/// the address is real, not that these packets were its own, so anyone can
/// forge a flood in the name of a host that had a session (a review found
/// such floods got an innocent host blocked for up to seven days). Such a
/// block keeps its TTL and never grows.
fn gate(
    blocker: &mut Blocker,
    v: &Verdict,
    class: Option<SourceClass>,
    m: &GateMetrics,
) -> super::blocker::Result<BlockOutcome> {
    let ttl = Duration::from_secs(u64::from(v.ttl_s.max(1)));
    match class {
        Some(SourceClass::Forged(mac)) => {
            m.forged.inc();
            Ok(blocker.refuse(v.source, Protection::Forged(mac), &v.reason))
        }
        Some(SourceClass::LanVerified(_)) => blocker.block_verdict(v.source, ttl, &v.reason, true, &v.sender),
        _ if v.source_proof == SourceProof::Answered => {
            blocker.block_verdict(v.source, ttl, &v.reason, false, &v.sender)
        }
        _ => {
            m.unproven.inc();
            Ok(blocker.refuse(v.source, Protection::Unproven, &v.reason))
        }
    }
}

/// The answer to one verdict for the monitor: in the kernel, or why not.
fn outcome_of(node: &str, v: &Verdict, result: &super::blocker::Result<BlockOutcome>) -> VerdictOutcome {
    let (not_blocked, why) = match result {
        Ok(BlockOutcome::Blocked { ttl, level, .. }) => {
            let repeat = if *level > 0 { format!(", repeat offence {level}") } else { String::new() };
            (None, format!("in the detector block set for {} s{repeat}", ttl.as_secs()))
        }
        Ok(BlockOutcome::Refused { allowed_by, why }) => {
            let code = match why {
                Protection::Allowlist
                | Protection::OwnAddress
                | Protection::Infrastructure
                | Protection::NeverBlock => NotBlocked::Allowlisted,
                Protection::Forged(_) => NotBlocked::Forged,
                Protection::Unproven => NotBlocked::Unproven,
            };
            (Some(code), format!("router refused the block: {} ({allowed_by})", why.reason()))
        }
        Err(e) => (Some(NotBlocked::RouterError), format!("router could not write the block: {e}")),
    };
    VerdictOutcome {
        node: node.to_string(),
        verdict_id: v.id,
        source: v.source,
        blocked: not_blocked.is_none(),
        why,
        not_blocked,
    }
}

/// A new containment's alert, waiting [`SPOOF_ALERT_GATHER`] for the addresses of the first burst.
struct PendingAlert {
    due: Instant,
    report: SpoofReport,
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    blocker: &mut Blocker,
    cfg: &EnforceConfig,
    rx: &mpsc::Receiver<Command>,
    seen: &AtomicU64,
    bus: &Reports,
    node: &str,
    persister: &mut Option<Persister>,
    lan: &mut Lan,
    registry: &Registry,
) {
    let mut last_metrics = Instant::now() - Duration::from_secs(60);
    let mut last_addresses = Instant::now();
    // The feed re-check is retried every second while it fails; said once a minute.
    let mut feed_recheck_failed: (u64, Option<Instant>) = (0, None);
    let mut detector_down = false;
    let mut alert_id: u64 = (now_ms() << 16) ^ 0x6e66;
    let gm = GateMetrics::new(registry);
    let mut pending: std::collections::HashMap<super::spoof::Mac, PendingAlert> = std::collections::HashMap::new();
    loop {
        let received = rx.recv_timeout(Duration::from_millis(250));
        let mut steps = Steps::new();
        // Anything that may have written a block set: saved within PERSIST_DELAY.
        let changed = matches!(
            received,
            Ok(Command::Verdict(_) | Command::Control(..) | Command::Allowlist(..) | Command::Spoofed(_))
        );
        match received {
            Ok(Command::Spoofed(r)) => {
                let ttl = Duration::from_secs(cfg.contain_ttl_s);
                // The comment lists what it forged so far: `gatewarden blocks` and the dashboard show it.
                let reason = super::spoof::contain_reason(&r.all_forged, r.more);
                match blocker.contain(r.mac, ttl, &reason) {
                    Ok(true) => {
                        gm.containments.inc();
                        if let Ok(c) = blocker.contained() {
                            gm.contained.set(c.len() as f64);
                        }
                        tracing::warn!(mac = %mac_text(&r.mac), forged = %r.forged, why = %r.forgery.describe(), ttl_s = ttl.as_secs(), "contained a LAN MAC forging source addresses");
                        pending.insert(r.mac, PendingAlert { due: Instant::now() + SPOOF_ALERT_GATHER, report: r });
                    }
                    Ok(false) => {
                        if let Some(p) = pending.get_mut(&r.mac) {
                            p.report = r;
                        }
                    }
                    Err(e) => tracing::error!(mac = %mac_text(&r.mac), "containment failed: {e}"),
                }
            }
            Ok(Command::Verdict(v)) => {
                tracing::debug!(target: "timing", stage = "enforce_received", verdict_id = v.id, source = %v.source, "verdict taken by enforcement");
                seen.store(now_ms(), Ordering::Relaxed);
                let mut class = lan.classify(&v.source);
                // The neighbour table may have learned the source since the last refresh
                // (a device that just started talking): look again before refusing.
                if class == Some(SourceClass::LanUnverified) && lan.last_refresh.elapsed() >= LAN_RECHECK {
                    lan.refresh(cfg);
                    class = lan.classify(&v.source);
                }
                let result = gate(blocker, &v, class, &gm);
                if matches!(result, Ok(BlockOutcome::Blocked { .. })) {
                    gm.block_latency.observe_duration(steps.started.elapsed());
                }
                tracing::debug!(
                    target: "timing",
                    stage = "block_acked",
                    verdict_id = v.id,
                    source = %v.source,
                    blocked = matches!(result, Ok(BlockOutcome::Blocked { .. })),
                    took_us = steps.started.elapsed().as_micros() as u64,
                    "verdict applied (netlink acked)"
                );
                // The monitor writes the verdict's alert as `blocked` only on this answer.
                (bus.outcome)(outcome_of(node, &v, &result));
                match result {
                    Ok(BlockOutcome::Blocked { evicted, .. }) if !evicted.is_empty() => {
                        alert_id = alert_id.wrapping_add(1);
                        let reason = format!(
                            "block set full (enforce.max_block_elements = {}): evicted {} entries of the detector \
                             holding the most, closest to expiry first, e.g. {} (the router's log names that detector)",
                            cfg.max_block_elements,
                            evicted.len(),
                            evicted[0]
                        );
                        (bus.alert)(Alert {
                            id: alert_id,
                            src: Some(v.source),
                            action: AlertAction::Blocked,
                            not_blocked: None,
                            ..Alert::about_system(
                                node,
                                AttackKind::System,
                                Severity::Medium,
                                SIG_BLOCK_SET_FULL,
                                "gatewarden block set full",
                                reason,
                            )
                        });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(addr = %v.source, "block failed: {e}"),
                }
            }
            Ok(Command::Control(op, reply)) => {
                let _ = reply.send(super::control::apply(blocker, op));
            }
            Ok(Command::Policy(p)) => match blocker.replace_group_rules(&p) {
                Ok(true) => tracing::info!(version = p.version, rules = p.rules.len(), "group policy applied"),
                Ok(false) => tracing::debug!(version = p.version, "older group policy ignored"),
                Err(e) => tracing::error!(version = p.version, "group policy not applied: {e:#}"),
            },
            Ok(Command::Allowlist(list, version)) => match blocker.set_configured_allowlist(list) {
                Ok(Some(lifted)) => {
                    let lifted: Vec<String> = lifted.iter().map(|a| a.to_string()).collect();
                    tracing::info!(version, unblocked = %lifted.join(" "), "allowlist from the settings page applied")
                }
                Ok(None) => {}
                Err(e) => tracing::error!(version, "allowlist from the settings page not applied: {e}"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        steps.mark("command");
        // One alert per new containment, once its first burst is in.
        let due: Vec<super::spoof::Mac> =
            pending.iter().filter(|(_, p)| p.due <= Instant::now()).map(|(m, _)| *m).collect();
        for mac in due {
            if let Some(p) = pending.remove(&mac) {
                alert_id = alert_id.wrapping_add(1);
                let mut a = spoofing_alert(node, alert_id, &p.report, cfg.contain_ttl_s);
                // The frames came in on the LAN interface (EVE `in_iface`).
                a.in_iface = lan.interface.clone();
                (bus.alert)(a);
            }
        }
        steps.mark("alerts");
        if let Some(p) = persister.as_mut() {
            p.tick(blocker, changed);
        }
        steps.mark("persist");
        // Addresses that appear after start-up (DHCP, VLANs) join the allowlist within a second;
        // the LAN's bindings follow its neighbour table and leases as often.
        if last_addresses.elapsed() >= Duration::from_secs(1) {
            last_addresses = Instant::now();
            lan.refresh(cfg);
            lan.sync_bound_sources(blocker);
            match blocker.refresh_own_addresses() {
                Ok(added) if !added.is_empty() => {
                    let added: Vec<String> = added.iter().map(|a| a.to_string()).collect();
                    tracing::info!(added = %added.join(" "), "own addresses added to the allowlist");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot re-read the gateway's own addresses: {e}"),
            }
            // At boot the saved feed is restored before the LAN interface has its addresses:
            // a feed range the LAN's networks overlap once they appear (or change) is lifted.
            if let Some(site) = &lan.site {
                match blocker.recheck_feed(site) {
                    Ok(_) => feed_recheck_failed = (0, None),
                    Err(e) => {
                        feed_recheck_failed.0 += 1;
                        if feed_recheck_failed.1.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            feed_recheck_failed.1 = Some(Instant::now());
                            tracing::warn!(
                                failures = feed_recheck_failed.0,
                                "cannot check the feed against the LAN's networks (retried every second, said once a \
                                 minute): {e}; until it succeeds a feed range may cover the LAN: list the feed with \
                                 `gatewarden blocks`, import it again without a range that covers the LAN \
                                 (`gatewarden blocklist import`), or list the LAN in enforce.lan_prefixes"
                            );
                        }
                    }
                }
            }
        }
        steps.mark("lan_refresh");
        let silent_ms = now_ms().saturating_sub(seen.load(Ordering::Relaxed));
        let down = silent_ms > cfg.detector_timeout_s * 1000;
        if down != detector_down {
            detector_down = down;
            // Switch first, log after: an operator (or a test) that reads
            // "fail-closed" must be able to rely on the drop rule being there.
            let switched = !cfg.fail_closed
                || match blocker.set_fail_closed(down) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!("cannot switch fail-closed mode (detector down: {down}): {e}");
                        false
                    }
                };
            match (switched, down, cfg.fail_closed) {
                (false, ..) => {}
                (true, true, true) => tracing::warn!(
                    silent_s = silent_ms / 1000,
                    "detector unreachable: fail-closed, dropping new forwarded flows"
                ),
                (true, true, false) => tracing::warn!(
                    silent_s = silent_ms / 1000,
                    "detector unreachable: fail-open, forwarding continues and existing blocks expire normally"
                ),
                (true, false, _) => tracing::info!("detector reachable again"),
            }
        }
        steps.mark("liveness");
        if last_metrics.elapsed() >= Duration::from_secs(2) {
            last_metrics = Instant::now();
            match blocker.refresh_sets() {
                Ok(contained) => gm.contained.set(contained as f64),
                Err(e) => tracing::warn!("cannot read nftables counters: {e}"),
            }
            // MAC group members follow their devices' current addresses.
            match blocker.refresh_group_macs() {
                Ok(true) => tracing::info!("group policy re-applied: a MAC member's address changed"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot re-resolve MAC group members: {e:#}"),
            }
        }
        steps.mark("metrics");
        steps.report();
    }
}

/// One turn of the enforcement loop, timed step by step: a verdict that
/// arrives while the thread is busy waits for the whole turn, so a slow
/// turn is logged (`timing` target, debug) with what took the time.
struct Steps {
    started: Instant,
    last: Instant,
    took: Vec<(&'static str, Duration)>,
}

/// A turn (after the command wait) this long is reported.
const SLOW_TURN: Duration = Duration::from_millis(50);

impl Steps {
    fn new() -> Steps {
        let now = Instant::now();
        Steps { started: now, last: now, took: Vec::new() }
    }

    /// The step that ends now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.took.push((name, now - self.last));
        self.last = now;
    }

    fn report(&self) {
        let total = self.last - self.started;
        if total < SLOW_TURN {
            return;
        }
        let steps: Vec<String> = self.took.iter().map(|(n, d)| format!("{n}={}", d.as_millis())).collect();
        tracing::debug!(target: "timing", stage = "enforce_slow_turn", took_ms = total.as_millis() as u64, steps_ms = %steps.join(" "), "enforcement turn slow");
    }
}

/// The one `spoofing` alert of a containment: the MAC and what it forged.
fn spoofing_alert(node: &str, id: u64, r: &SpoofReport, ttl_s: u64) -> Alert {
    let list: Vec<String> = r.all_forged.iter().map(|a| a.to_string()).collect();
    let more = if r.more > 0 { format!(" and {} more", r.more) } else { String::new() };
    let reason = format!(
        "LAN MAC {} sent frames with forged source addresses: {}{more}; the MAC is contained for {ttl_s} s: its frames are \
         dropped unless their source is bound to it (DHCP lease, neighbour table), so a device whose MAC was forged keeps \
         its own traffic; the forged addresses are never blocked",
        mac_text(&r.mac),
        list.join(", ")
    );
    Alert {
        id,
        action: AlertAction::Blocked,
        not_blocked: None,
        ..Alert::about_system(
            node,
            AttackKind::Spoofing,
            Severity::High,
            gatewarden_proto::signatures::signature_id(AttackKind::Spoofing),
            gatewarden_proto::signatures::signature(AttackKind::Spoofing),
            reason,
        )
    }
}

/// A change is saved at most this long after it was made (a burst of
/// verdicts costs one listing and one write per interval, not one each).
pub const PERSIST_DELAY: Duration = Duration::from_millis(200);
/// The kernel's sets are compared with the last save this often, so blocks
/// made by another process (`gatewarden block` with another config) and
/// blocks that ran out reach the file too.
pub const PERSIST_CHECK: Duration = Duration::from_secs(5);

/// What a save is compared by: origin, target, expiry in whole seconds, senders.
type Fingerprint = (String, String, u64, Vec<String>);

/// Keeps `enforce.state_file` in step with the block sets.
struct Persister {
    file: StateFile,
    pending: bool,
    last_save: Instant,
    last_check: Instant,
    /// (origin, target, expiry in whole seconds, senders) of the last save.
    last: Vec<Fingerprint>,
    failing: bool,
}

impl Persister {
    fn new(file: StateFile) -> Persister {
        let long_ago = Instant::now() - PERSIST_CHECK;
        Persister { file, pending: true, last_save: long_ago, last_check: long_ago, last: Vec::new(), failing: false }
    }

    fn tick(&mut self, blocker: &mut Blocker, changed: bool) {
        self.pending |= changed;
        let due = self.pending && self.last_save.elapsed() >= PERSIST_DELAY;
        if due || self.last_check.elapsed() >= PERSIST_CHECK {
            self.save(blocker);
        }
    }

    /// Lists the sets and rewrites the file when they differ from the last save.
    fn save(&mut self, blocker: &mut Blocker) {
        self.last_check = Instant::now();
        // The senders too: a verdict kept as it is but co-signed by a
        // second detector changes only them, and a restart must keep it
        // in the honest detector's share.
        let fingerprint = |v: &[SavedBlock]| -> Vec<Fingerprint> {
            let mut f: Vec<_> = v
                .iter()
                .map(|b| (b.origin.clone(), b.target.clone(), b.expires_unix_ms / 1000, b.senders.clone()))
                .collect();
            f.sort();
            f
        };
        let last = &self.last;
        let result = self.file.snapshot(now_ms, |now| blocker.saved_blocks(now), |v| fingerprint(v) == *last);
        match result {
            Ok((listed, _written)) => {
                if self.failing {
                    tracing::info!(path = %self.file.path().display(), "saving blocks works again");
                }
                self.failing = false;
                self.pending = false;
                self.last_save = Instant::now();
                self.last = fingerprint(&listed);
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(path = %self.file.path().display(), "cannot save the blocks, they will not survive a restart: {e:#}");
                }
                self.failing = true;
            }
        }
    }
}

/// What to tell the operator when the table could not be installed. Only a
/// refused permission is fixed by root or setcap; any other refusal with
/// saved blocks in the same transaction most likely comes from the state
/// file, and telling that operator to run as root (which they already do)
/// sent them the wrong way.
fn install_failure_advice(errno: Option<i32>, restoring: usize, state_file: &str) -> String {
    let permission = matches!(errno, Some(libc::EPERM) | Some(libc::EACCES));
    if permission || errno.is_none() || restoring == 0 {
        return "cannot install the nftables ruleset ([enforce] enabled = true); \
                run as root or `setcap cap_net_admin+ep` on the binary, or set [enforce] enabled = false"
            .into();
    }
    format!(
        "the kernel refused the nftables ruleset together with the {restoring} blocks saved in {state_file}; \
         move that file aside to start without them (keep it to restore by hand with `gatewarden block`), \
         and report the file's contents as a bug"
    )
}

#[cfg(test)]
mod tests {
    use super::install_failure_advice;

    #[test]
    fn a_refused_restore_points_at_the_state_file_and_a_refused_permission_at_root() {
        let file = "/var/lib/gatewarden/enforce-state.json";
        let denied = install_failure_advice(Some(libc::EPERM), 3, file);
        assert!(denied.contains("run as root"), "{denied}");
        let nothing_saved = install_failure_advice(Some(libc::ERANGE), 0, file);
        assert!(nothing_saved.contains("run as root"), "{nothing_saved}");
        let refused = install_failure_advice(Some(libc::ERANGE), 3, file);
        assert!(!refused.contains("root") && refused.contains(file) && refused.contains("3 blocks"), "{refused}");
    }
}
