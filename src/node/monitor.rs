//! The monitor's services: its alert store, the pages' hooks to the bus,
//! and the tasks that record what other roles send (alerts, heartbeats,
//! metrics, block tables, neighbour tables, verdict outcomes, flow batches,
//! evidence pcaps).

use std::sync::Arc;

use super::{next_or_shutdown, Context, Service, Wiring};
use crate::monitor::MonitorState;
use crate::policy::service::PolicyService;
use gatewarden_proto::messages::{Alert, Evidence, FlowBatch, Message, VerdictOutcome};

/// What the monitor does with each report that reaches it, in one place:
/// the node's tasks call it as messages arrive, `gatewarden replay` calls it
/// in lockstep (src/replay.rs), so a replay's page is filled by the same
/// code as a node's and cannot drift from it.
#[derive(Clone)]
pub struct Recorder {
    state: Arc<MonitorState>,
    policy: Option<Arc<PolicyService>>,
}

impl Recorder {
    /// Records into `state`; `policy` (if group policies are on) counts batches and alerts too.
    pub fn new(state: Arc<MonitorState>, policy: Option<Arc<PolicyService>>) -> Recorder {
        Recorder { state, policy }
    }

    /// An alert: counted between policy groups, then stored — at once, or,
    /// if it asks a router for a block, once that router answers
    /// ([`Recorder::outcome`]) or the wait runs out.
    pub fn alert(&self, a: Alert) {
        if let Some(p) = &self.policy {
            p.observe_alert(&a);
        }
        self.state.record_alert(a);
    }

    /// A router's answer to a verdict: settles the alert waiting for it.
    pub fn outcome(&self, o: VerdictOutcome) {
        self.state.record_outcome(o);
    }

    /// A router's evidence for an alert: written as a pcap with the capture
    /// crate's writer and kept in the monitor's evidence store.
    pub fn evidence(&self, e: &Evidence) {
        match evidence_pcap(e) {
            Ok(pcap) => self.state.record_evidence(e.alert_id, &e.node, pcap),
            Err(err) => tracing::warn!(alert_id = e.alert_id, node = %e.node, error = %err, "evidence not written"),
        }
    }

    /// A flow batch: the group policy's traffic matrix and the top talkers.
    pub fn batch(&self, b: &FlowBatch) {
        if let Some(p) = &self.policy {
            p.observe_batch(b);
        }
        self.state.observe_batch(b);
    }
}

/// `e` as a whole pcap file (its link type, microsecond times).
pub fn evidence_pcap(e: &Evidence) -> Result<Vec<u8>, crate::capture::pcap_writer::WriteError> {
    use crate::capture::pcap_writer::{pcap_bytes, OutFrame};
    pcap_bytes(e.link_type, e.packets.iter().map(|p| OutFrame { ts_ns: p.ts_ns, orig_len: p.orig_len, data: &p.data }))
}

/// Opens the alert store (`monitor.data_dir`) and the evidence pcaps beside
/// it (`<data_dir>/evidence`, in memory without a data directory): a node's
/// monitor, `replay` and `watch` keep them alike.
pub fn open_stores(state: &MonitorState, cfg: &crate::config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    state.open_store(&cfg.monitor).context("opening the alert store (monitor.data_dir)")?;
    let dir = cfg.monitor.data_dir.join("evidence");
    let dir = (!cfg.monitor.data_dir.as_os_str().is_empty()).then_some(dir.as_path());
    state.open_evidence(dir, cfg.evidence.store_bytes).context("opening the evidence store (monitor.data_dir)")
}

/// Opens the alert store (`monitor.data_dir`) and the evidence store beside
/// it (`<data_dir>/evidence`) before the page answers.
pub struct AlertStore;

impl Service for AlertStore {
    fn name(&self) -> &'static str {
        "alert-store"
    }

    fn start(&mut self, cx: &Context<'_>, _w: &mut Wiring) -> anyhow::Result<()> {
        open_stores(&cx.state, cx.cfg)?;
        if cx.cfg.monitor.data_dir.as_os_str().is_empty() {
            tracing::warn!("alerts are kept in memory only: set [monitor] data_dir to keep them across restarts");
        }
        Ok(())
    }
}

/// Connects the training page, the settings page and the dashboard's
/// remote unblock to the bus.
pub struct Pages {
    /// A detector can get uploads: in this process, or sealed to every detector node.
    pub training: bool,
    /// Saved settings are sent to every detector and router (else only kept).
    pub settings_out: bool,
    /// A block a router on another node holds is lifted by a sealed message to it.
    pub remote_unblock: bool,
}

impl Service for Pages {
    fn name(&self) -> &'static str {
        "pages"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let (cfg, state) = (cx.cfg, &cx.state);
        if self.training {
            let o = w.out.clone();
            state.training.set_sender(Arc::new(move |u| o.publish(Message::ModelUpdate(u))));
            state.training.set_limits(crate::detect::validator::Limits::from_config(&cfg.detector));
        }
        let store = crate::monitor::settings::SettingsStore::open(crate::roles::settings::settings_base(cfg));
        if self.settings_out {
            let o = w.out.clone();
            store.set_sender(Arc::new(move |u| o.publish(Message::SettingsUpdate(u))));
        }
        let _ = state.settings.set(store);
        if self.remote_unblock {
            let o = w.out.clone();
            state.set_remote_unblock(Arc::new(move |router, req| o.publish_to(router, Message::Unblock(req))));
        }
        Ok(())
    }
}

/// A monitor on its own node: flow batches from the routers feed the
/// traffic matrix (group policy) and the top talkers; the detector node
/// gets its own copy from the broker.
pub struct Traffic;

impl Service for Traffic {
    fn name(&self) -> &'static str {
        "traffic"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let rx = cx.bus.flows.receiver();
        let sd = cx.shutdown.clone();
        let rec = Recorder::new(cx.state.clone(), w.policy.clone());
        w.spawn(async move {
            loop {
                let Some(batch) = next_or_shutdown(&rx, &sd).await else { break };
                rec.batch(&batch);
                // Every task of the node shares one thread, and a waiting batch makes
                // `recv` ready at once: without a turn here, a backlog of batches keeps
                // alerts, heartbeats and block tables waiting until all of it is recorded
                // (the detector's task had the same loop, issue #15).
                smol::future::yield_now().await;
            }
        });
        Ok(())
    }
}

/// Records what the other roles send: alerts, heartbeats, node metrics,
/// routers' block tables and verdict outcomes, nodes going on and offline.
pub struct Consumers;

impl Service for Consumers {
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let (bus, sd, st) = (&cx.bus, &cx.shutdown, &cx.state);
        let rec = Recorder::new(st.clone(), w.policy.clone());
        {
            let (rx, sd, rec) = (bus.alerts.receiver(), sd.clone(), rec.clone());
            w.spawn(async move {
                loop {
                    let Some(a) = next_or_shutdown(&rx, &sd).await else { break };
                    let (id, src, kind) = (a.id, a.src, a.kind);
                    rec.alert(a);
                    if let Some(src) = src {
                        tracing::debug!(target: "timing", stage = "alert_received", alert_id = id, source = %src,
                            kind = kind.as_str(), "alert at the monitor (stored, or held for its block's outcome)");
                    }
                }
            });
        }
        let policy_push = w.policy_push.clone();
        {
            let (rx, sd, st) = (bus.heartbeats.receiver(), sd.clone(), st.clone());
            let push = policy_push.clone();
            w.spawn(async move {
                loop {
                    let Some(hb) = next_or_shutdown(&rx, &sd).await else { break };
                    st.record_heartbeat(&hb);
                    if let Some(push) = &push {
                        push.heartbeat(&hb);
                    }
                }
            });
        }
        {
            let (rx, sd, st) = (bus.metrics.receiver(), sd.clone(), st.clone());
            w.spawn(async move {
                loop {
                    let Some(m) = next_or_shutdown(&rx, &sd).await else { break };
                    st.node_metrics.record(&m, gatewarden_core::clock::unix_now_ns());
                }
            });
        }
        {
            let (rx, sd, st) = (bus.block_tables.receiver(), sd.clone(), st.clone());
            w.spawn(async move {
                loop {
                    let Some(t) = next_or_shutdown(&rx, &sd).await else { break };
                    st.record_block_table(t);
                }
            });
        }
        {
            // Routers' neighbour tables: MAC members of policy groups resolve through them.
            let (rx, sd, store) = (bus.neighbour_tables.receiver(), sd.clone(), w.neighbours.clone());
            let refused = cx.registry.counter(
                "gatewarden_neighbour_tables_refused_total",
                "Routers' neighbour tables not kept: past the number of routers kept, or from a name that is not a node id.",
                &[],
            );
            w.spawn(async move {
                loop {
                    let Some(t) = next_or_shutdown(&rx, &sd).await else { break };
                    if let Err(e) = store.record(t, std::time::Instant::now()) {
                        refused.inc();
                        tracing::debug!(error = %e, "neighbour table refused");
                    }
                }
            });
        }
        {
            // Routers' answers to verdicts: an alert is `blocked` only once one confirms.
            let (rx, sd, rec) = (bus.verdict_outcomes.receiver(), sd.clone(), rec.clone());
            w.spawn(async move {
                loop {
                    let Some(o) = next_or_shutdown(&rx, &sd).await else { break };
                    let (id, src, blocked) = (o.verdict_id, o.source, o.blocked);
                    rec.outcome(o);
                    tracing::debug!(target: "timing", stage = "outcome_recorded", verdict_id = id, source = %src, blocked,
                        "verdict outcome at the monitor (its held alert stored)");
                }
            });
        }
        {
            // Routers' evidence pcaps, one per alert that came with a verdict.
            let (rx, sd, rec, on) = (bus.evidence.receiver(), sd.clone(), rec.clone(), cx.cfg.evidence.enabled);
            w.spawn(async move {
                loop {
                    let Some(e) = next_or_shutdown(&rx, &sd).await else { break };
                    if on {
                        rec.evidence(&e);
                    }
                }
            });
        }
        if let Some(m) = &w.mqtt {
            let (rx, sd, st) = (m.status_receiver(), sd.clone(), st.clone());
            let push = policy_push;
            w.spawn(async move {
                loop {
                    let Some(s) = next_or_shutdown(&rx, &sd).await else { break };
                    st.set_node_online(&s.node, s.online);
                    if let Some(push) = &push {
                        push.node_online(&s.node, s.online);
                    }
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use gatewarden_core::metrics::Registry;
    use gatewarden_proto::attack::AttackKind;
    use gatewarden_proto::messages::Severity;
    use gatewarden_proto::role::{Role, RoleSource};
    use std::cell::Cell;
    use std::rc::Rc;

    /// A monitor node behind on flow batches (a loaded machine, a burst from
    /// many routers) must still record an alert that arrives behind them
    /// before it has recorded the whole backlog.
    #[test]
    fn an_alert_is_recorded_before_a_backlog_of_flow_batches() {
        let cfg = Config::default();
        let registry = Registry::new();
        let bus = crate::bus::LocalBus::new(cfg.bus.channel_capacity, &registry);
        let state = MonitorState::new(Role::Monitor, RoleSource::Flag, cfg.node_id.clone(), registry.clone());
        let shutdown = gatewarden_core::shutdown::Shutdown::new();
        let cx =
            Context { role: Role::Monitor, role_source: RoleSource::Flag, cfg: &cfg, registry, bus, state, shutdown };
        let mut w = Wiring::new(&cx.bus);
        Traffic.start(&cx, &mut w).unwrap();
        Consumers.start(&cx, &mut w).unwrap();
        const BACKLOG: u64 = 30;
        for seq in 1..=BACKLOG {
            let b = FlowBatch {
                node: "gw".into(),
                seq,
                flows: Vec::new(),
                hosts: Vec::new(),
                in_iface: String::new(),
                shed: Vec::new(),
            };
            assert!(cx.bus.publish(Message::FlowBatch(b)));
        }
        let alert = Alert::about_system(
            "gw",
            AttackKind::System,
            Severity::Low,
            9_000_001,
            "test",
            "behind the backlog".into(),
        );
        assert!(cx.bus.publish(Message::Alert(alert)));
        // Notes how many batches still wait when the alert is in the store.
        let waiting = Rc::new(Cell::new(None));
        let (flows, st, sd, seen) = (cx.bus.flows.receiver(), cx.state.clone(), cx.shutdown.clone(), waiting.clone());
        w.spawn(async move {
            while st.alerts_total() == 0 {
                smol::future::yield_now().await;
            }
            seen.set(Some(flows.len() as u64));
            sd.trigger();
        });
        let tasks = std::mem::take(&mut w.tasks);
        smol::block_on(w.ex.run(async {
            for t in tasks {
                t.await;
            }
        }));
        let left = waiting.get().expect("the alert was recorded");
        assert!(
            left + 2 >= BACKLOG,
            "the alert was recorded only after {} of the {BACKLOG} flow batches ahead of it",
            BACKLOG - left
        );
    }
}
