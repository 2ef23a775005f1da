//! The detector service: flow batches in, verdicts (to the router whose
//! traffic caused them) and alerts out; models uploaded on the training
//! page and thresholds from the settings page applied between batches.
//!
//! [`Analysis`] is the service's state and is shared with `gatewarden
//! replay`, which calls it in lockstep instead of from the task.

use std::collections::HashMap;
use std::sync::Arc;

use smol::future::FutureExt;

use super::{Context, DetectorSettings, Service, Wiring};
use crate::config::Config;
use crate::roles::detector::{DetectorStage, Findings, ModelUploads};
use gatewarden_core::metrics::Registry;
use gatewarden_proto::messages::{Alert, FlowBatch, Message, ModelUpdate};

/// Most gateways a detector keeps separate state for.
pub const MAX_GATEWAYS: usize = 64;

/// One detector state per gateway: an attacker already flagged at one
/// router must still be detected (and blocked) at another. Bounded: past
/// [`MAX_GATEWAYS`], further gateways share one overflow stage.
pub struct Analysis {
    /// The stage loaded at start, given to the first gateway seen.
    spare: Option<DetectorStage>,
    stages: HashMap<String, DetectorStage>,
    overflow: Option<DetectorStage>,
    /// The config new stages are made with: thresholds change with the settings page.
    cfg: Config,
    registry: Arc<Registry>,
    uploads: ModelUploads,
    /// `detector.state_dir`: each gateway's table of answered services across restarts.
    state_dir: Option<std::path::PathBuf>,
}

/// How often each gateway's table of answered services is saved (`detector.state_dir`):
/// what a `kill -9` loses, against 2 MiB written per gateway each time.
pub const SAVE_ANSWERED_EVERY: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Analysis {
    /// Around `first`, the stage loaded at start (its model is shared by every gateway's stage).
    pub fn new(first: DetectorStage, cfg: &Config, registry: &Arc<Registry>) -> Analysis {
        Analysis {
            spare: Some(first),
            stages: HashMap::new(),
            overflow: None,
            cfg: cfg.clone(),
            registry: registry.clone(),
            uploads: ModelUploads::default(),
            state_dir: (!cfg.detector.state_dir.trim().is_empty())
                .then(|| std::path::PathBuf::from(cfg.detector.state_dir.trim())),
        }
    }

    /// Where gateway `node`'s table of answered services is kept (node ids are a strict
    /// character set, so the name stays in the directory).
    fn answered_path(&self, node: &str) -> Option<std::path::PathBuf> {
        let dir = self.state_dir.as_ref()?;
        gatewarden_core::identity::valid_node_id(node).then(|| dir.join(format!("answered-{node}.bin")))
    }

    /// Every gateway's table of answered services as (file, bytes), to write off the
    /// detector's thread ([`write_answered`]). The overflow stage (gateways past
    /// [`MAX_GATEWAYS`]) is not kept.
    pub fn answered_to_save(&self) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        self.stages
            .iter()
            .filter_map(|(node, stage)| Some((self.answered_path(node)?, stage.save_answered())))
            .collect()
    }

    /// What went wrong loading the model at start, to publish at once (taken once).
    pub fn take_start_alert(&mut self) -> Option<Alert> {
        self.spare.as_mut().and_then(|s| s.take_start_alert())
    }

    /// Analyses one batch with the state of the gateway that sent it. An
    /// alert names that gateway, so a monitor shared by a fleet keeps
    /// gateways apart.
    pub fn on_batch(&mut self, batch: &FlowBatch) -> Findings {
        let Some(stage) = self.stage_for(&batch.node) else { return Findings::default() };
        let findings = stage.on_batch(batch);
        filed_under(findings, &batch.node)
    }

    /// The end of the input (a replay), for every gateway's stage: what is
    /// still held for the verdict budget is counted and said.
    pub fn finish(&mut self, now_ns: u64) -> Findings {
        let mut all = Findings::default();
        for (node, stage) in self.stages.iter_mut() {
            let f = filed_under(stage.finish(now_ns), node);
            all.alerts.extend(f.alerts);
            all.verdicts.extend(f.verdicts);
        }
        if let Some(stage) = self.overflow.as_mut() {
            let f = stage.finish(now_ns);
            all.alerts.extend(f.alerts);
            all.verdicts.extend(f.verdicts);
        }
        all
    }

    /// Analyses the ARP/NDP requests a gateway saw, with that gateway's state.
    pub fn on_lan_probes(&mut self, probes: &gatewarden_proto::messages::LanProbes) -> Findings {
        let Some(stage) = self.stage_for(&probes.node) else { return Findings::default() };
        let findings = stage.on_lan_probes(probes);
        filed_under(findings, &probes.node)
    }

    /// The stage of gateway `node` (made on first sight; past
    /// [`MAX_GATEWAYS`] the shared overflow stage).
    fn stage_for(&mut self, node: &str) -> Option<&mut DetectorStage> {
        if !self.stages.contains_key(node) && self.stages.len() < MAX_GATEWAYS {
            // A new gateway runs what the others run now (an uploaded model, new settings).
            let mut stage = match self.spare.take() {
                Some(s) => s,
                None => self.new_stage(),
            };
            if let Some(path) = self.answered_path(node) {
                match read_answered(&path) {
                    Ok(Some(bytes)) => match stage.restore_answered(&bytes) {
                        Ok(()) => {
                            tracing::info!("{}: services that answered {node}'s devices restored", path.display())
                        }
                        Err(e) => tracing::warn!("{}: {e}; starting without it", path.display()),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{}: {e}; starting without it", path.display()),
                }
            }
            self.stages.insert(node.to_string(), stage);
        }
        if self.stages.contains_key(node) {
            return self.stages.get_mut(node);
        }
        if self.overflow.is_none() {
            self.overflow = Some(self.new_stage());
        }
        self.overflow.as_mut()
    }

    fn new_stage(&self) -> DetectorStage {
        let model = self.all().find_map(|s| s.shared_model());
        DetectorStage::with_model(&self.cfg, &self.registry, Ok(model))
    }

    fn all(&self) -> impl Iterator<Item = &DetectorStage> {
        self.spare.iter().chain(self.stages.values()).chain(self.overflow.iter())
    }

    /// New thresholds and response policy for every gateway's stage.
    pub fn set_settings(&mut self, d: &crate::config::DetectorConfig, r: &crate::detect::response::ResponseConfig) {
        for s in self.spare.iter_mut().chain(self.stages.values_mut()).chain(self.overflow.iter_mut()) {
            s.set_detector_config(d);
            s.set_response_config(r);
        }
        self.cfg.detector = d.clone();
        self.cfg.response = r.clone();
    }

    /// An uploaded model, checked in the validator on this thread (a
    /// replay's lockstep): the answer for the monitor and the card when loaded.
    pub fn apply_model(&mut self, update: &ModelUpdate, node: &str) -> Option<(Alert, Option<serde_json::Value>)> {
        let all = self.spare.iter_mut().chain(self.stages.values_mut()).chain(self.overflow.iter_mut());
        self.uploads.apply(update, &self.cfg.detector, node, all)
    }

    /// [`Analysis::apply_model`] with the validation off the executor's thread.
    pub async fn apply_model_off_thread(
        &mut self,
        update: &ModelUpdate,
        node: &str,
    ) -> Option<(Alert, Option<serde_json::Value>)> {
        let all = self.spare.iter_mut().chain(self.stages.values_mut()).chain(self.overflow.iter_mut());
        self.uploads.apply_off_thread(update, &self.cfg.detector, node, all).await
    }
}

/// Files a gateway's findings' alerts under that gateway.
fn filed_under(mut findings: Findings, node: &str) -> Findings {
    if !node.is_empty() {
        for a in &mut findings.alerts {
            a.node = node.to_string();
        }
    }
    findings
}

/// Loads the detector's model before the page answers, so the model page
/// never reports "no model" for the seconds a load takes.
pub struct LoadModel;

impl Service for LoadModel {
    fn name(&self) -> &'static str {
        "model"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        w.first_stage = Some(load_stage(cx.cfg, &cx.registry, &cx.state));
        Ok(())
    }
}

/// A detector stage with the configured model; the model page shows the
/// card of the model it runs.
pub fn load_stage(cfg: &Config, registry: &Arc<Registry>, state: &crate::monitor::MonitorState) -> DetectorStage {
    let stage = DetectorStage::new(cfg, registry);
    if let Some(card) = stage.model_card().and_then(|c| serde_json::to_value(c).ok()) {
        state.set_model(card);
    }
    stage
}

/// What the detector task waits for.
enum Input {
    Batch(FlowBatch),
    Probes(gatewarden_proto::messages::LanProbes),
    Model(ModelUpdate),
    Settings(Box<DetectorSettings>),
}

/// The detector task.
pub struct Detector {
    /// The monitor shares this process: batches feed its top talkers.
    pub top_talkers: bool,
}

impl Service for Detector {
    fn name(&self) -> &'static str {
        "detector"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let Some(first) = w.first_stage.take() else {
            anyhow::bail!("the detector service needs the model service before it")
        };
        let mut analysis = Analysis::new(first, cx.cfg, &cx.registry);
        let rx = cx.bus.flows.receiver();
        // The monitor shares this process: batches feed it here (one consumer of the flow channel).
        let monitor = self.top_talkers.then(|| super::monitor::Recorder::new(cx.state.clone(), w.policy.clone()));
        let probes = cx.bus.lan_probes.receiver();
        let out = w.out.clone();
        let sd = cx.shutdown.clone();
        let models = cx.bus.models.receiver();
        let st = cx.state.clone();
        let node = cx.cfg.node_id.clone();
        let new_settings = w.detector_settings.1.clone();
        w.spawn(async move {
            // A stored model refused at start is reported now, not with the first batch.
            if let Some(a) = analysis.take_start_alert() {
                out.publish(Message::Alert(a));
            }
            let mut saved = std::time::Instant::now();
            // The save under way, if any: the next waits for it, and so does the last one at
            // a stop (two writers of one file could leave a truncated table behind).
            let mut saving: Option<smol::Task<()>> = None;
            loop {
                // Flow batches; a model uploaded on the training page or new
                // thresholds from the settings page, applied between batches.
                let next = async { rx.recv().await.ok().map(Input::Batch) }
                    .or(async { probes.recv().await.ok().map(Input::Probes) })
                    .or(async { models.recv().await.ok().map(Input::Model) })
                    .or(async { new_settings.recv().await.ok().map(|s| Input::Settings(Box::new(s))) })
                    .or(async {
                        sd.wait().await;
                        None
                    })
                    .await;
                if saved.elapsed() >= SAVE_ANSWERED_EVERY && saving.as_ref().is_none_or(|t| t.is_finished()) {
                    saved = std::time::Instant::now();
                    let tables = analysis.answered_to_save();
                    saving = Some(smol::unblock(move || write_answered(tables)));
                }
                let batch = match next {
                    None => {
                        // A clean stop keeps what was learnt since the last save.
                        if let Some(t) = saving.take() {
                            t.await;
                        }
                        write_answered(analysis.answered_to_save());
                        break;
                    }
                    Some(Input::Model(update)) => {
                        // Validated in a child process off this executor's thread.
                        if let Some((alert, card)) = analysis.apply_model_off_thread(&update, &node).await {
                            if let Some(card) = card {
                                st.set_model(card);
                            }
                            out.publish(Message::Alert(alert));
                        }
                        continue;
                    }
                    Some(Input::Settings(settings)) => {
                        let (d, r) = *settings;
                        analysis.set_settings(&d, &r);
                        continue;
                    }
                    Some(Input::Probes(p)) => {
                        let findings = analysis.on_lan_probes(&p);
                        for v in findings.verdicts {
                            out.publish_to(&p.node, Message::Verdict(v));
                        }
                        for a in findings.alerts {
                            out.publish(Message::Alert(a));
                        }
                        continue;
                    }
                    Some(Input::Batch(batch)) => batch,
                };
                let received = std::time::Instant::now();
                let queued = rx.len();
                if let Some(m) = &monitor {
                    m.batch(&batch);
                }
                let hooks = received.elapsed();
                let findings = analysis.on_batch(&batch);
                let timing = BatchTiming::of(&batch, received, hooks, queued, findings.verdicts.len());
                // Verdicts go back to the router whose traffic caused them.
                for v in findings.verdicts {
                    timing.verdict(&v);
                    out.publish_to(&batch.node, Message::Verdict(v));
                }
                for a in findings.alerts {
                    out.publish(Message::Alert(a));
                }
                // Every task of the node shares one thread, and a waiting batch makes
                // `recv` ready at once: without a turn for the others here, a detector
                // that fell behind (a loaded machine: 0.1-0.5 s a batch) kept its
                // verdict from enforcement until the whole backlog was analysed (5 s in
                // the lab). Now the verdict and alert tasks run between two batches.
                smol::future::yield_now().await;
            }
        });
        Ok(())
    }
}

/// Reads a saved table of answered services: `None` when there is none; refused unless
/// it is a regular file (not a link, a FIFO or a device: a link to /dev/zero left in the
/// directory would have had the detector read without end) of exactly the size one has.
pub fn read_answered(path: &std::path::Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let want = crate::detect::long_horizon::ANSWERED_FILE_BYTES;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.file_type().is_file() {
        return Err("not a regular file (a link, a FIFO or a device); remove it".into());
    }
    if meta.len() != want as u64 {
        return Err(format!("{} bytes, a saved table has {want}", meta.len()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    // What was opened, not what was looked at (it may have been swapped in between).
    let opened = file.metadata().map_err(|e| e.to_string())?;
    if !opened.file_type().is_file() || opened.len() != want as u64 {
        return Err("changed while it was opened: not a regular file of a table's size".into());
    }
    let mut bytes = Vec::with_capacity(want);
    file.take(want as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Writes the tables [`Analysis::answered_to_save`] gave (atomically, the directory made
/// if need be); a failure is logged and the next save tries again.
pub fn write_answered(tables: Vec<(std::path::PathBuf, Vec<u8>)>) {
    for (path, bytes) in tables {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = gatewarden_core::atomic_file::write_atomic(&path, &bytes) {
            tracing::warn!(
                "{}: {e:#}; the services that answered are kept in memory until the next save",
                path.display()
            );
        }
    }
}

/// A batch's way through the detector task, for the `timing` log target
/// (docs/DETECTION.md "Time to block, live"): how long after its capture
/// it arrived, how many batches still waited behind it, how long the policy
/// and top-talker hooks took and how long the analysis.
struct BatchTiming {
    seq: u64,
    /// Capture time of the batch's newest packet (what a verdict's time is).
    capture_ns: u64,
    /// Capture → taken from the channel.
    arrived_ms: u64,
    queued: usize,
    hooks_us: u64,
    analysis_us: u64,
}

/// An analysis this slow holds up every task on the node's executor: reported at debug.
const SLOW_ANALYSIS_US: u64 = 200_000;

impl BatchTiming {
    fn of(
        batch: &FlowBatch,
        received: std::time::Instant,
        hooks: std::time::Duration,
        queued: usize,
        verdicts: usize,
    ) -> BatchTiming {
        let total = received.elapsed();
        let (hooks_us, analysis_us) = (hooks.as_micros() as u64, total.saturating_sub(hooks).as_micros() as u64);
        let capture_ns = batch.capture_ns();
        let arrived_ns = gatewarden_core::clock::unix_now_ns().saturating_sub(total.as_nanos() as u64);
        let t = BatchTiming {
            seq: batch.seq,
            capture_ns,
            arrived_ms: arrived_ns.saturating_sub(capture_ns) / 1_000_000,
            queued,
            hooks_us,
            analysis_us,
        };
        if hooks_us + analysis_us >= SLOW_ANALYSIS_US {
            tracing::debug!(target: "timing", stage = "batch_analysed", seq = t.seq, flows = batch.flows.len(),
                arrived_ms = t.arrived_ms, queued, hooks_us, analysis_us, verdicts, "slow batch analysis");
        } else {
            tracing::trace!(target: "timing", stage = "batch_analysed", seq = t.seq, flows = batch.flows.len(),
                arrived_ms = t.arrived_ms, queued, hooks_us, analysis_us, verdicts, "batch analysed");
        }
        t
    }

    /// One line per verdict: the batch it came from and where its time went so far.
    fn verdict(&self, v: &gatewarden_proto::messages::Verdict) {
        tracing::debug!(
            target: "timing",
            stage = "verdict_decided",
            verdict_id = v.id,
            source = %v.source,
            kind = v.kind.as_str(),
            seq = self.seq,
            issued_ns = v.issued_ns,
            batch_capture_ns = self.capture_ns,
            arrived_ms = self.arrived_ms,
            queued = self.queued,
            hooks_us = self.hooks_us,
            analysis_us = self.analysis_us,
            "verdict decided"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(node: &str) -> FlowBatch {
        FlowBatch {
            node: node.into(),
            seq: 1,
            flows: Vec::new(),
            hosts: Vec::new(),
            in_iface: String::new(),
            shed: Vec::new(),
        }
    }

    /// Stands in for 200 refused connections from one LAN source: a port scan verdict.
    fn scan_batch() -> FlowBatch {
        use gatewarden_proto::conn_state::ConnState;
        use gatewarden_proto::messages::{FlowRecord, Proto};
        let flows = (0..200u16)
            .map(|i| FlowRecord {
                flow_id: u64::from(i) + 1,
                src: "192.0.2.66".parse().unwrap(),
                dst: "198.51.100.10".parse().unwrap(),
                sport: 40000,
                dport: i + 1,
                proto: Proto::Tcp,
                first_ns: 1_000_000_000 + u64::from(i) * 5_000_000,
                last_ns: 1_000_000_000 + u64::from(i) * 5_000_000 + 1000,
                fwd_packets: 1,
                rev_packets: 1,
                fwd_bytes: 60,
                rev_bytes: 54,
                conn_state: ConnState::REJ,
                src_answered: false,
            })
            .collect();
        FlowBatch { node: "lab".into(), seq: 1, flows, hosts: vec![], in_iface: String::new(), shed: Vec::new() }
    }

    /// The lab's stalled block (docs/DETECTION.md "Time to block, live"): on a
    /// loaded machine the detector fell behind, and while batches waited it
    /// kept the node's one task thread, so its verdict reached enforcement
    /// (and its alert the monitor) only once the backlog was worked off, 5 s
    /// later. A verdict must be forwarded before the next waiting batch is analysed.
    #[test]
    fn a_verdict_is_forwarded_before_the_detector_works_off_a_backlog() {
        use std::cell::Cell;
        use std::rc::Rc;
        let cfg = Config::default();
        let registry = Registry::new();
        let bus = crate::bus::LocalBus::new(cfg.bus.channel_capacity, &registry);
        let state = crate::monitor::MonitorState::new(
            gatewarden_proto::role::Role::Detector,
            gatewarden_proto::role::RoleSource::Flag,
            cfg.node_id.clone(),
            registry.clone(),
        );
        let shutdown = gatewarden_core::shutdown::Shutdown::new();
        let cx = Context {
            role: gatewarden_proto::role::Role::Detector,
            role_source: gatewarden_proto::role::RoleSource::Flag,
            cfg: &cfg,
            registry: registry.clone(),
            bus,
            state,
            shutdown: shutdown.clone(),
        };
        let mut w = Wiring::new(&cx.bus);
        w.first_stage = Some(DetectorStage::with_model(&cfg, &registry, Ok(None)));
        Detector { top_talkers: false }.start(&cx, &mut w).unwrap();
        // A scan, then a backlog of quiet batches behind it.
        assert!(cx.bus.publish(Message::FlowBatch(scan_batch())));
        const BACKLOG: usize = 30;
        for i in 0..BACKLOG as u64 {
            let mut b = batch("lab");
            b.seq = i + 2;
            assert!(cx.bus.publish(Message::FlowBatch(b)));
        }
        // The router's verdict task: notes how many batches still wait when the verdict arrives.
        let waiting = Rc::new(Cell::new(None));
        let (verdicts, flows, seen) = (cx.bus.verdicts.receiver(), cx.bus.flows.receiver(), waiting.clone());
        w.spawn(async move {
            if let Ok(v) = verdicts.recv().await {
                assert_eq!(v.source.to_string(), "192.0.2.66");
                seen.set(Some(flows.len()));
            }
            shutdown.trigger();
        });
        let tasks = std::mem::take(&mut w.tasks);
        smol::block_on(w.ex.run(async {
            for t in tasks {
                t.await;
            }
        }));
        let left = waiting.get().expect("a verdict for the scan");
        assert!(
            left >= BACKLOG - 1,
            "the verdict was forwarded only after the detector analysed {} of the {BACKLOG} batches waiting behind it",
            BACKLOG - left
        );
    }

    /// A monitoring server polling 30 devices on SNMP, each answering, every minute; then
    /// the detector restarts in the evening and the devices are off: the same polls go
    /// unanswered. Without `detector.state_dir` that was a `host_sweep` verdict against the
    /// monitor at its first poll after the restart; with it, the gateway's table of answered
    /// services comes back and the monitor is left alone.
    #[test]
    fn a_monitor_polling_devices_that_are_off_after_a_restart_is_left_alone_with_a_state_dir() {
        use gatewarden_proto::conn_state::ConnState;
        use gatewarden_proto::messages::{FlowRecord, Proto};
        let polls = |seq: u64, answered: bool| {
            let t0 = 1_000_000_000 + seq * 60_000_000_000;
            let flows = (0..30u64)
                .map(|i| FlowRecord {
                    flow_id: seq * 1000 + i + 1,
                    src: "192.168.1.10".parse().unwrap(),
                    dst: format!("192.168.1.{}", 100 + i).parse().unwrap(),
                    sport: 20_000 + (seq * 30 + i) as u16,
                    dport: 161,
                    proto: Proto::Udp,
                    first_ns: t0 + i * 10_000_000,
                    last_ns: t0 + i * 10_000_000 + if answered { 1_000_000 } else { 4_000_000_000 },
                    fwd_packets: if answered { 1 } else { 3 },
                    rev_packets: u32::from(answered),
                    fwd_bytes: 75,
                    rev_bytes: if answered { 200 } else { 0 },
                    conn_state: if answered { ConnState::SF } else { ConnState::S0 },
                    src_answered: false,
                })
                .collect();
            FlowBatch { seq, flows, ..batch("gw-1") }
        };
        let dir = tempfile::tempdir().unwrap();
        let run = |state_dir: &str| {
            let mut cfg = Config::default();
            cfg.detector.state_dir = state_dir.into();
            let registry = Registry::new();
            let mut before = Analysis::new(DetectorStage::new(&cfg, &registry), &cfg, &registry);
            for seq in 0..3 {
                assert!(before.on_batch(&polls(seq, true)).verdicts.is_empty());
            }
            write_answered(before.answered_to_save());
            let mut after = Analysis::new(DetectorStage::new(&cfg, &registry), &cfg, &registry);
            (10..13).flat_map(|seq| after.on_batch(&polls(seq, false)).verdicts).collect::<Vec<_>>()
        };
        let without = run("");
        assert!(
            without.iter().any(|v| v.kind == gatewarden_proto::messages::AttackKind::HostSweep),
            "without a state dir the restart forgets the devices: {without:?}"
        );
        let with = run(dir.path().to_str().unwrap());
        assert!(with.is_empty(), "{with:?}");
        assert!(dir.path().join("answered-gw-1.bin").exists());
    }

    /// What is left in the state directory is read only if it is a saved table: a link
    /// to /dev/zero, a FIFO or a file of another size is refused at once, not read without end.
    #[test]
    fn only_a_regular_file_of_a_tables_size_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        assert_eq!(read_answered(&p("none.bin")), Ok(None));
        std::os::unix::fs::symlink("/dev/zero", p("zero.bin")).unwrap();
        assert!(read_answered(&p("zero.bin")).unwrap_err().contains("not a regular file"));
        assert!(std::process::Command::new("mkfifo").arg(p("fifo.bin")).status().unwrap().success());
        assert!(read_answered(&p("fifo.bin")).unwrap_err().contains("not a regular file"));
        std::fs::write(p("short.bin"), b"GWANS01\n").unwrap();
        assert!(read_answered(&p("short.bin")).unwrap_err().contains("a saved table has"));
        let cfg = Config::default();
        let stage = DetectorStage::new(&cfg, &Registry::new());
        std::fs::write(p("ok.bin"), stage.save_answered()).unwrap();
        let back = read_answered(&p("ok.bin")).unwrap().map(|b| b.len());
        assert_eq!(back, Some(crate::detect::long_horizon::ANSWERED_FILE_BYTES));
    }

    #[test]
    fn the_first_gateway_gets_the_loaded_stage_and_gateways_past_the_cap_share_one() {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut a = Analysis::new(DetectorStage::new(&cfg, &registry), &cfg, &registry);
        a.on_batch(&batch("gw-0"));
        assert!(a.spare.is_none(), "the stage loaded at start serves the first gateway");
        for i in 1..MAX_GATEWAYS + 10 {
            a.on_batch(&batch(&format!("gw-{i}")));
        }
        assert_eq!(a.stages.len(), MAX_GATEWAYS);
        assert!(a.overflow.is_some(), "gateways past the cap share the overflow stage");
        // Every stage runs the same model as the one loaded at start.
        let models: Vec<bool> = a.all().map(|s| s.shared_model().is_some()).collect();
        assert!(models.iter().all(|m| *m == models[0]));
    }
}
