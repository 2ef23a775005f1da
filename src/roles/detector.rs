//! The detector stage: FlowBatch in, verdicts and alerts out.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bus::messages::{Alert, AlertAction, AttackKind, FlowBatch, Severity, Verdict};
use crate::config::Config;
use crate::detect::{Detection, Heuristics};
use crate::metrics::{Counter, Registry};

/// Runs the detectors over flow batches and turns findings into messages.
pub struct DetectorStage {
    node: String,
    heuristics: Heuristics,
    ttl_s: u32,
    next_id: u64,
    registry: Arc<Registry>,
    verdicts: BTreeMap<AttackKind, Counter>,
    batches: Counter,
    records: Counter,
}

/// What one batch produced.
#[derive(Debug, Default)]
pub struct Findings {
    /// For the router to enforce.
    pub verdicts: Vec<Verdict>,
    /// For the monitor to show.
    pub alerts: Vec<Alert>,
}

/// Suricata-style signature ids, stable per detector.
pub fn signature_id(kind: AttackKind) -> u32 {
    9_000_000
        + match kind {
            AttackKind::PortScan => 1,
            AttackKind::HostSweep => 2,
            AttackKind::SynFlood => 3,
            AttackKind::UdpFlood => 4,
            AttackKind::IcmpFlood => 5,
            AttackKind::BruteForce => 6,
            AttackKind::Anomaly => 7,
            AttackKind::ChannelAbuse => 8,
            AttackKind::LinkHealth => 9,
            AttackKind::System => 10,
        }
}

/// Human signature name.
pub fn signature(kind: AttackKind) -> &'static str {
    match kind {
        AttackKind::PortScan => "GATEWARDEN SCAN vertical port scan",
        AttackKind::HostSweep => "GATEWARDEN SCAN horizontal host sweep",
        AttackKind::SynFlood => "GATEWARDEN DOS TCP SYN flood",
        AttackKind::UdpFlood => "GATEWARDEN DOS UDP flood",
        AttackKind::IcmpFlood => "GATEWARDEN DOS ICMP flood",
        AttackKind::BruteForce => "GATEWARDEN AUTH brute force",
        AttackKind::Anomaly => "GATEWARDEN ANOMALY device behaviour",
        AttackKind::ChannelAbuse => "GATEWARDEN BUS channel abuse",
        AttackKind::LinkHealth => "GATEWARDEN LINK health",
        AttackKind::System => "GATEWARDEN SYSTEM event",
    }
}

impl DetectorStage {
    /// A detector stage with thresholds from config.
    pub fn new(cfg: &Config, registry: &Arc<Registry>) -> DetectorStage {
        DetectorStage {
            node: cfg.node_id.clone(),
            heuristics: Heuristics::new(cfg.detector.clone()),
            ttl_s: cfg.detector.block_ttl_s.min(u32::MAX as u64) as u32,
            next_id: 1,
            registry: registry.clone(),
            verdicts: BTreeMap::new(),
            batches: registry.counter("gatewarden_flow_batches_total", "Flow batches analysed by the detector.", &[]),
            records: registry.counter("gatewarden_flow_records_total", "Flow records analysed by the detector.", &[]),
        }
    }

    fn count_verdict(&mut self, kind: AttackKind) {
        let reg = self.registry.clone();
        self.verdicts
            .entry(kind)
            .or_insert_with(|| {
                reg.counter("gatewarden_verdicts_total", "Verdicts issued, by attack kind.", &[("kind", kind.as_str())])
            })
            .inc();
    }

    /// Analyses one batch.
    pub fn on_batch(&mut self, batch: &FlowBatch) -> Findings {
        self.batches.inc();
        self.records.add(batch.flows.len() as u64);
        let mut out = Findings::default();
        for r in &batch.flows {
            for d in self.heuristics.observe(r) {
                self.emit(d, r.sport, &mut out);
            }
        }
        out
    }

    fn emit(&mut self, d: Detection, sport: u16, out: &mut Findings) {
        let id = self.next_id;
        self.next_id += 1;
        self.count_verdict(d.kind);
        let action = if d.source.is_some() { AlertAction::Blocked } else { AlertAction::Allowed };
        if let Some(source) = d.source {
            out.verdicts.push(Verdict {
                id,
                source,
                kind: d.kind,
                confidence: d.confidence,
                reason: d.reason.clone(),
                evidence: d.evidence.clone(),
                ttl_s: self.ttl_s,
                issued_ns: d.ts_ns,
            });
        }
        let severity = match d.kind {
            AttackKind::SynFlood | AttackKind::UdpFlood | AttackKind::IcmpFlood | AttackKind::BruteForce => {
                Severity::High
            }
            AttackKind::PortScan | AttackKind::HostSweep | AttackKind::Anomaly => Severity::Medium,
            _ => Severity::Low,
        };
        out.alerts.push(Alert {
            id,
            ts_ns: d.ts_ns,
            node: self.node.clone(),
            flow_id: d.flow_id,
            kind: d.kind,
            severity,
            src: d.source,
            dst: d.target,
            sport: if d.source.is_some() { sport } else { 0 },
            dport: d.port,
            proto: d.proto,
            action,
            signature_id: signature_id(d.kind),
            signature: signature(d.kind).to_string(),
            confidence: d.confidence,
            reason: d.reason,
        });
    }
}
