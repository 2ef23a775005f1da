//! `gatewarden replay`: the whole `all` pipeline over a capture file.
//!
//! The stages run in lockstep on one thread (router → detector → monitor),
//! so a replay is deterministic: batches are cut on capture time, and the
//! result is the same at `--speed max` as at `--speed realtime`. The router
//! stage is fed by the capture file instead of the live ring; the detector
//! is the node's detector service state ([`crate::node::detector::Analysis`]:
//! per-gateway stages, uploaded models, settings), loaded as the node's model
//! service loads it; the settings page is checked as the node's settings
//! service checks it; what reaches the page goes through the monitor
//! service's [`crate::node::monitor::Recorder`], as on a node. What differs
//! is the driver (lockstep, not tasks) and the router's end: nothing
//! enforces, so each verdict is listed as `replay` and answered at once with
//! "not blocked: a replay enforces nothing", as a router with enforcement
//! off answers it — in the same call, so no alert waits and none is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewarden_core::clock::RealtimePacer;
use serde::Serialize;

use crate::capture::{CaptureError, CaptureFile, Frame, PacketSource};
use crate::config::Config;
use crate::monitor::timeline::Timeline;
use crate::monitor::MonitorState;
use crate::roles::router::RouterStage;
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::FlowBatch;

/// How fast to feed the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Speed {
    /// As fast as the pipeline goes.
    Max,
    /// At the pace the packets were recorded.
    Realtime,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// The capture file.
    pub file: PathBuf,
    /// Frames read from the capture.
    pub packets: u64,
    /// Frames skipped by the parser, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Flows created.
    pub flows: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted: u64,
    /// Alert counts by kind.
    pub alerts: BTreeMap<String, u64>,
    /// Verdicts (block requests) issued.
    pub verdicts: u64,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Frames per second of wall-clock time.
    pub pps: f64,
    /// Seconds between the first and last frame.
    pub capture_span_s: f64,
    /// Capture time of the first frame, Unix seconds (µs precision), if any.
    pub first_ts: Option<f64>,
    /// Capture time of the last frame, Unix seconds (µs precision), if any.
    pub last_ts: Option<f64>,
    /// Flow batches sent to the detector.
    pub batches: u64,
    /// FNV-1a digest of every encoded FlowBatch (flows and host features):
    /// equal digests mean identical detector input, whatever the speed.
    pub batches_digest: String,
    /// Peak resident memory of the process so far (VmHWM), MiB.
    pub peak_rss_mb: f64,
    /// Packets the kernel dropped (live capture only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<u64>,
    /// pcapng blocks of types gatewarden does not read, skipped as the spec
    /// says (any packets in them were not replayed): counted, never silent.
    #[serde(skip_serializing_if = "is_zero")]
    pub blocks_skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ReplaySummary {
    /// The human summary printed at the end.
    pub fn human(&self) -> String {
        let mut s = format!(
            "replayed {}\n  packets   {} ({} skipped)\n  flows     {}{}\n  verdicts  {}\n  alerts    {}\n",
            self.file.display(),
            self.packets,
            self.skipped.values().sum::<u64>(),
            self.flows,
            if self.flows_evicted > 0 {
                format!(" ({} evicted at the table cap)", self.flows_evicted)
            } else {
                String::new()
            },
            self.verdicts,
            self.alerts.values().sum::<u64>(),
        );
        if self.blocks_skipped > 0 {
            s.push_str(&format!("  skipped   {} pcapng block(s) of unknown types\n", self.blocks_skipped));
        }
        for (kind, n) in &self.alerts {
            s.push_str(&format!("    {kind:<12} {n}\n"));
        }
        s.push_str(&format!(
            "  elapsed   {:.3} s for {:.1} s of traffic ({:.0} packets/s), peak memory {:.0} MiB\n",
            self.elapsed_s, self.capture_span_s, self.pps, self.peak_rss_mb
        ));
        s
    }
}

/// The detector and monitor half of the pipeline.
struct Analysis {
    /// The node's detector service state, driven in lockstep.
    detector: crate::node::detector::Analysis,
    /// Models uploaded on the training page while the replay runs.
    models: async_channel::Receiver<gatewarden_proto::messages::ModelUpdate>,
    /// Settings saved on the settings page while the replay runs, and the config they are checked against.
    settings: async_channel::Receiver<gatewarden_proto::messages::SettingsUpdate>,
    base: Config,
    state: Arc<MonitorState>,
    /// The monitor service's recording: alerts, verdict answers, batches.
    monitor: crate::node::monitor::Recorder,
    digest: Fnv64,
    batches: u64,
    verdicts: u64,
    /// The router stage's evidence ring: each verdict's source's first packets.
    evidence: crate::flow::evidence::SharedRing,
}

impl Analysis {
    fn handle_lan_probes(&mut self, probes: &gatewarden_proto::messages::LanProbes) {
        let f = self.detector.on_lan_probes(probes);
        self.verdicts += f.verdicts.len() as u64;
        for v in &f.verdicts {
            self.state.record_replayed_verdict(v);
        }
        for a in f.alerts {
            self.state.record_alert(crate::monitor::confirm::unenforced(a, "a replay enforces nothing"));
        }
    }

    fn handle(&mut self, batch: FlowBatch) {
        while let Ok(update) = self.settings.try_recv() {
            let node = self.state.node.clone();
            let answer = match crate::roles::settings::check(&update, &self.base) {
                Ok(c) => {
                    self.detector.set_settings(&c.detector, &c.response);
                    let what = format!(
                        "detector thresholds, verdict TTL {} s; {}; no enforcement in a replay",
                        c.detector.block_ttl_s,
                        crate::roles::settings::response_summary(&c.response)
                    );
                    crate::roles::settings::settings_alert(&node, update.version, Ok(&what))
                }
                Err(e) => crate::roles::settings::settings_alert(&node, update.version, Err(&e)),
            };
            self.monitor.alert(answer);
        }
        while let Ok(update) = self.models.try_recv() {
            let node = self.state.node.clone();
            if let Some((alert, card)) = self.detector.apply_model(&update, &node) {
                if let Some(card) = card {
                    self.state.set_model(card);
                }
                self.monitor.alert(alert);
            }
        }
        self.batches += 1;
        self.digest.write_flow_batch(&batch);
        self.monitor.batch(&batch);
        let f = self.detector.on_batch(&batch);
        self.verdicts += f.verdicts.len() as u64;
        // The monitor's end, as on a node: alerts first (one asking for a
        // block waits for its router's answer) …
        for a in f.alerts {
            self.monitor.alert(a);
        }
        // … then the router's end: nothing enforces here, so each verdict is
        // answered "not blocked" at once, which settles its waiting alert.
        for v in &f.verdicts {
            self.state.record_replayed_verdict(v);
            // As a router answers a verdict (src/node/verdicts.rs): the evidence, then the outcome.
            let e = self.evidence.lock().ok().and_then(|r| r.evidence(&batch.node, v.id, v.source));
            if let Some(e) = e {
                self.monitor.evidence(&e);
            }
            self.monitor.outcome(replay_outcome(&batch.node, v));
        }
    }
}

/// Why a replay's verdicts are not blocked.
pub const REPLAY_ENFORCES_NOTHING: &str = "a replay enforces nothing";

/// A replay's router's answer to a verdict: not blocked, as a router with
/// enforcement off answers (src/node/verdicts.rs), from the router whose
/// batch raised it (the alert is filed under that name).
pub fn replay_outcome(
    router: &str,
    v: &gatewarden_proto::messages::Verdict,
) -> gatewarden_proto::messages::VerdictOutcome {
    gatewarden_proto::messages::VerdictOutcome {
        node: router.to_string(),
        verdict_id: v.id,
        source: v.source,
        blocked: false,
        why: REPLAY_ENFORCES_NOTHING.into(),
        not_blocked: Some(gatewarden_proto::messages::NotBlocked::EnforcementOff),
    }
}

/// Router, detector and monitor stages in lockstep, fed frame by frame.
pub struct Pipeline {
    router: RouterStage,
    analysis: Analysis,
    state: Arc<MonitorState>,
    frames: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    started: Instant,
}

impl Pipeline {
    /// Stages reporting into `state`.
    pub fn new(cfg: &Config, state: &Arc<MonitorState>) -> Pipeline {
        let registry: &Arc<Registry> = &state.registry;
        // The model page shows the card of the model this replay runs.
        let detector = crate::node::detector::Analysis::new(
            crate::node::detector::load_stage(cfg, registry, state),
            cfg,
            registry,
        );
        // Uploads reach this replay's detector while it runs; once it is done
        // the channel is closed and the training page says no detector runs.
        let (tx, models) = async_channel::bounded(4);
        state.training.set_sender(Arc::new(move |u| tx.try_send(u).is_ok()));
        state.training.set_limits(crate::detect::validator::Limits::from_config(&cfg.detector));
        let (tx, settings) = async_channel::bounded(4);
        let store = crate::monitor::settings::SettingsStore::open(crate::roles::settings::settings_base(cfg));
        store.set_sender(Arc::new(move |u| tx.try_send(u).is_ok()));
        let _ = state.settings.set(store);
        let router = RouterStage::new(cfg, registry);
        let analysis = Analysis {
            evidence: router.evidence(),
            detector,
            models,
            settings,
            base: cfg.clone(),
            state: state.clone(),
            // A replay runs no group-policy service.
            monitor: crate::node::monitor::Recorder::new(state.clone(), None),
            digest: Fnv64::new(),
            batches: 0,
            verdicts: 0,
        };
        Pipeline {
            router,
            analysis,
            state: state.clone(),
            frames: 0,
            first_ts: None,
            last_ts: 0,
            started: Instant::now(),
        }
    }

    /// Feeds one frame.
    pub fn on_frame(&mut self, frame: &Frame<'_>) {
        self.frames += 1;
        // Min, not first: a live ring on several CPUs can hand over a frame
        // stamped slightly earlier than one already seen.
        self.first_ts = Some(self.first_ts.map_or(frame.ts_ns, |t| t.min(frame.ts_ns)));
        self.last_ts = self.last_ts.max(frame.ts_ns);
        if let Some(batch) = self.router.on_frame(frame) {
            self.analysis.handle(batch);
        }
        self.lan_probes();
    }

    /// Hands the router's ARP/NDP requests to the detector (LAN mapping).
    fn lan_probes(&mut self) {
        if let Some(p) = self.router.take_lan_probes() {
            self.analysis.handle_lan_probes(&p);
        }
    }

    /// Lets the router cut a batch when traffic is quiet (live capture).
    pub fn tick(&mut self, now_ns: u64) {
        if let Some(batch) = self.router.tick(now_ns) {
            self.analysis.handle(batch);
        }
        self.lan_probes();
    }

    /// Frames fed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Ends all flows, analyses the rest and summarises.
    pub fn finish(mut self, file: &Path) -> ReplaySummary {
        let analysis = &mut self.analysis;
        self.router.finish(|b| analysis.handle(b));
        if let Some(p) = self.router.take_lan_probes() {
            analysis.handle_lan_probes(&p);
        }
        // Findings the verdict budget still held: counted and said, not forgotten.
        let end = analysis.detector.finish(self.last_ts);
        for a in end.alerts {
            analysis.monitor.alert(a);
        }
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let stats = self.router.table().stats();
        let snap = self.state.registry.snapshot();
        let skipped = crate::packet::SkipReason::ALL
            .iter()
            .map(|r| {
                let key = format!("gatewarden_packets_skipped_total{{reason={}}}", r.as_str());
                (r.as_str().to_string(), snap.get(&key).copied().unwrap_or(0.0) as u64)
            })
            .collect();
        ReplaySummary {
            file: file.to_path_buf(),
            packets: self.frames,
            skipped,
            flows: stats.created,
            flows_evicted: stats.evicted,
            alerts: self.state.alerts_by_kind(),
            verdicts: self.analysis.verdicts,
            elapsed_s,
            pps: self.frames as f64 / elapsed_s.max(1e-9),
            capture_span_s: self.first_ts.map_or(0.0, |f| (self.last_ts - f) as f64 / 1e9),
            first_ts: self.first_ts.map(|t| (t / 1000) as f64 / 1e6),
            last_ts: self.first_ts.map(|_| (self.last_ts / 1000) as f64 / 1e6),
            batches: self.analysis.batches,
            batches_digest: format!("{:016x}", self.analysis.digest.0),
            kernel_drops: None,
            blocks_skipped: 0,
            peak_rss_mb: peak_rss_mb(),
        }
    }
}

/// Bytes of each packet a replay reads at least: every header chain the
/// parser follows fits, however long the packet.
pub const REPLAY_KEEP_BYTES: usize = 1024;

/// Longest a realtime replay waits for the next frame (the pipeline runs on
/// capture time, so shortening a pause changes no result).
pub use gatewarden_core::clock::MAX_REALTIME_WAIT;

/// Longest a realtime wait sleeps before it looks at the shutdown signal again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Sleeps `wait` in slices of at most [`WAIT_SLICE`]; returns false, early,
/// when `shutdown` fires.
fn sleep_unless_shutdown(wait: Duration, shutdown: &Shutdown) -> bool {
    let until = Instant::now() + wait;
    loop {
        if shutdown.is_triggered() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(WAIT_SLICE));
    }
}

/// Replays `path` through router, detector and monitor stages that report into `state`.
pub fn replay(
    path: &Path,
    speed: Speed,
    cfg: &Config,
    state: &Arc<MonitorState>,
    shutdown: &Shutdown,
    progress: bool,
) -> Result<ReplaySummary, CaptureError> {
    let mut source = CaptureFile::open(path)?;
    // The pipeline reads headers, and evidence keeps the first bytes of a
    // packet: payload beyond both is skipped, not copied (a capture with
    // full payloads spent most of its replay time copying them).
    source.keep_at_most(REPLAY_KEEP_BYTES.max(cfg.capture.snap_len as usize).max(cfg.evidence.snap_bytes as usize));
    let mut pipeline = Pipeline::new(cfg, state);
    let bar = progress.then(|| progress_bar(source.size_hint()));
    let mut pacer = RealtimePacer::default();
    let paced_since = Instant::now();
    let mut first_ts: Option<u64> = None;
    let file_name = path.display().to_string();
    let mut timeline: Option<Timeline> = None;
    let mut pushed = Instant::now();
    let mut result = Ok(());
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let first = *first_ts.get_or_insert(frame.ts_ns);
        if speed == Speed::Realtime {
            let pace = pacer.pace(frame.ts_ns, paced_since.elapsed().as_nanos() as u64);
            if let Some(shortened) = pace.shortened {
                let warn = || {
                    tracing::warn!(
                        "{file_name}: frame {}, stamped {:.6} (Unix time), is due {:.3} s from now; a realtime \
                         replay waits at most {} s, so this pause is shortened by {:.3} s",
                        pipeline.frames() + 1,
                        frame.ts_ns as f64 / 1e9,
                        (pace.wait + shortened).as_secs_f64(),
                        MAX_REALTIME_WAIT.as_secs(),
                        shortened.as_secs_f64(),
                    )
                };
                // Not through the progress bar's line.
                match &bar {
                    Some(b) => b.suspend(warn),
                    None => warn(),
                }
            }
            if !sleep_unless_shutdown(pace.wait, shutdown) {
                break;
            }
        }
        pipeline.on_frame(&frame);
        // The charts' capture-time series: pushed to the page twice a second
        // (checked every frame only when pacing makes frames rare).
        timeline.get_or_insert_with(|| Timeline::new(first)).add(frame.ts_ns);
        if (speed == Speed::Realtime || pipeline.frames() % 256 == 0) && pushed.elapsed() >= Duration::from_millis(500)
        {
            pushed = Instant::now();
            if let Some(t) = &timeline {
                state.set_timeline(t.clone());
            }
        }
        if pipeline.frames() % 65_536 == 0 {
            let pos = source.stats().bytes_read;
            if let Some(b) = &bar {
                b.set_position(pos);
            }
            state.set_replay(serde_json::json!({"file": file_name, "state": "running", "packets": pipeline.frames()}));
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let stats = source.stats();
    if let Some((kind, offset)) = stats.first_skipped_block {
        tracing::warn!(
            "{file_name}: skipped {} pcapng block(s) of types gatewarden does not read (the first: type \
             {kind:#x} at byte offset {offset}); packets in them, if any, were not replayed",
            stats.blocks_skipped
        );
    }
    result?;
    let mut summary = pipeline.finish(path);
    summary.blocks_skipped = stats.blocks_skipped;
    if let Some(t) = timeline {
        state.set_timeline(t);
    }
    state.set_replay(serde_json::json!({"file": file_name, "state": "finished", "packets": summary.packets,
        "first_ts": summary.first_ts, "last_ts": summary.last_ts}));
    Ok(summary)
}

/// Runs the pipeline on a live interface until `duration` passes or `shutdown` fires.
pub fn watch(
    cfg: &Config,
    state: &Arc<MonitorState>,
    shutdown: &Shutdown,
    duration: Option<Duration>,
    on_ready: impl FnOnce(),
) -> Result<ReplaySummary, CaptureError> {
    let acfg = crate::capture::AfPacketConfig::from_config(&cfg.capture);
    let mut source = crate::capture::AfPacketSource::open(&acfg)?;
    let mut pipeline = Pipeline::new(cfg, state);
    // Live frames: their interface is known and named in every alert (EVE `in_iface`).
    pipeline.router.set_capture_interface(&cfg.capture.interface);
    let drops = state.registry.counter(
        "gatewarden_capture_kernel_drops_total",
        "Packets the kernel dropped because the capture ring was full.",
        &[("interface", &cfg.capture.interface)],
    );
    let started = Instant::now();
    let mut clock = gatewarden_core::clock::FrameClock::default();
    let mut next_stats_ns = 0;
    on_ready();
    while !shutdown.is_triggered() {
        let frame_ts = match source.poll_frame(Duration::from_millis(50))? {
            Some(frame) => {
                pipeline.on_frame(&frame);
                Some(frame.ts_ns)
            }
            None => None,
        };
        let now = clock.now(frame_ts);
        pipeline.tick(now.ns);
        if now.read {
            if duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
            if now.ns >= next_stats_ns {
                next_stats_ns = now.ns + 1_000_000_000;
                drops.set_total(source.kernel_stats().drops);
            }
        }
    }
    let kernel_drops = source.kernel_stats().drops;
    drops.set_total(kernel_drops);
    let mut summary = pipeline.finish(Path::new(&format!("interface:{}", cfg.capture.interface)));
    summary.kernel_drops = Some(kernel_drops);
    Ok(summary)
}

/// Peak resident set size (VmHWM) in MiB, 0 if unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// FNV-1a, 64-bit: a stable digest for comparing runs (not for security).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.push(*b);
        }
    }
    fn push(&mut self, b: u8) {
        self.0 ^= b as u64;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    /// Digests `batch` exactly as its wire encoding (`Message::FlowBatch(batch).encode()`:
    /// version byte, variant 0, postcard body) without cloning the batch or
    /// building the bytes: a spoofed flood makes batches of thousands of
    /// one-packet flows, and the copy cost more than the digest.
    fn write_flow_batch(&mut self, batch: &FlowBatch) {
        self.write(&[gatewarden_proto::messages::WIRE_VERSION, 0]);
        // Hashing cannot fail; postcard only fails on unencodable types, which FlowBatch is not.
        let _ = postcard::serialize_with_flavor::<_, _, ()>(batch, FnvFlavor(self));
    }
}

/// A postcard output that feeds the digest instead of a buffer.
struct FnvFlavor<'a>(&'a mut Fnv64);

impl postcard::ser_flavors::Flavor for FnvFlavor<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.write(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn progress_bar(size: Option<u64>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(size, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realtime_wait_ends_when_shutdown_fires() {
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let trigger = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            sd.trigger();
        });
        let started = Instant::now();
        assert!(!sleep_unless_shutdown(Duration::from_secs(3600), &shutdown));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        trigger.join().unwrap();
        assert!(sleep_unless_shutdown(Duration::ZERO, &Shutdown::new()));
    }

    #[test]
    fn the_batch_digest_hashes_exactly_the_wire_encoding() {
        let cfg = Config::default();
        let mut router = RouterStage::new(&cfg, &Registry::new());
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/synthetic.pcap");
        let mut source = CaptureFile::open(&path).expect("the bundled capture opens");
        let mut batches = Vec::new();
        while let Some(frame) = source.next_frame().expect("the bundled capture reads") {
            batches.extend(router.on_frame(&frame));
        }
        router.finish(|b| batches.push(b));
        assert!(batches.len() > 5 && batches.iter().any(|b| !b.hosts.is_empty()));
        let (mut streamed, mut encoded) = (Fnv64::new(), Fnv64::new());
        for b in &batches {
            streamed.write_flow_batch(b);
            encoded.write(&gatewarden_proto::messages::Message::FlowBatch(b.clone()).encode());
            assert_eq!(streamed.0, encoded.0, "batch {}", b.seq);
        }
    }
}
