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
}

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
        }
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
            let stage = match self.spare.take() {
                Some(s) => s,
                None => self.new_stage(),
            };
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
        let probes = cx.bus.lan_probes.receiver();
        let talkers = self.top_talkers.then(|| cx.state.clone());
        let out = w.out.clone();
        let sd = cx.shutdown.clone();
        let pol = w.policy.clone();
        let models = cx.bus.models.receiver();
        let st = cx.state.clone();
        let node = cx.cfg.node_id.clone();
        let new_settings = w.detector_settings.1.clone();
        w.spawn(async move {
            // A stored model refused at start is reported now, not with the first batch.
            if let Some(a) = analysis.take_start_alert() {
                out.publish(Message::Alert(a));
            }
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
                let batch = match next {
                    None => break,
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
                if let Some(p) = &pol {
                    p.observe_batch(&batch);
                }
                if let Some(st) = &talkers {
                    st.observe_batch(&batch);
                }
                let findings = analysis.on_batch(&batch);
                // Verdicts go back to the router whose traffic caused them.
                for v in findings.verdicts {
                    out.publish_to(&batch.node, Message::Verdict(v));
                }
                for a in findings.alerts {
                    out.publish(Message::Alert(a));
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(node: &str) -> FlowBatch {
        FlowBatch { node: node.into(), seq: 1, flows: Vec::new(), hosts: Vec::new() }
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
