//! Starting the roles: each is a set of tasks on one smol executor; blocking
//! work (HTTP, capture, MQTT) runs on named threads.
//!
//! Tasks publish through one [`Publisher`]: the in-process [`LocalBus`]
//! (`--role all`, or any role without `[mqtt] broker`), or the MQTT node bus
//! ([`MqttBus`]) when a single role runs with a broker configured. Tasks
//! always *receive* from a `LocalBus`; the MQTT transport feeds it.

pub mod detector;
pub mod router;
pub mod settings;
pub mod unblock;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;

use crate::bus::mqtt::{MqttBus, MqttSettings};
use crate::bus::{LocalBus, Publisher};
use crate::config::Config;
use crate::monitor::http::HttpServer;
use crate::monitor::MonitorState;
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::{Heartbeat, Message};
use gatewarden_proto::role::{Role, RoleSource};

/// Most gateways a detector keeps separate state for.
pub const MAX_GATEWAYS: usize = 64;

/// Extra ways to start a role.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Router: replay this capture into the bus instead of capturing live.
    pub replay: Option<PathBuf>,
}

/// Runs `role` until `shutdown` fires; returns once every task has stopped.
pub fn run(role: Role, role_source: RoleSource, cfg: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    run_with(role, role_source, cfg, shutdown, RunOptions::default())
}

/// [`run`] with options.
pub fn run_with(
    role: Role,
    role_source: RoleSource,
    cfg: &Config,
    shutdown: Shutdown,
    opts: RunOptions,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let registry = Registry::new();
    let bus = LocalBus::new(cfg.bus.channel_capacity, &registry);
    let state = MonitorState::new(role, role_source, cfg.node_id.clone(), registry.clone());
    // Enforcement runs on its own thread (netlink blocks). It starts first,
    // before the page, the node bus and the capture: the block sets are in the
    // kernel before the first packet is seen (boot-to-first-rule,
    // docs/PERFORMANCE.md), and a missing privilege stops the start-up with a
    // clear message.
    let enforcer = if role.runs_router() && cfg.enforce.enabled {
        Some(crate::enforce::service::EnforceService::start_on(
            &cfg.enforce,
            &cfg.capture.interface,
            &registry,
            enforcement_reports(&bus),
            cfg.node_id.clone(),
        )?)
    } else {
        if role.runs_router() {
            tracing::warn!("enforcement is off: verdicts are only logged. Set [enforce] enabled = true (needs root or CAP_NET_ADMIN) to block in nftables");
        }
        None
    };

    if role.runs_monitor() {
        state.open_store(&cfg.monitor).context("opening the alert store (monitor.data_dir)")?;
        if cfg.monitor.data_dir.as_os_str().is_empty() {
            tracing::warn!("alerts are kept in memory only: set [monitor] data_dir to keep them across restarts");
        }
    }
    let link_echo = if cfg.link.listen.is_empty() {
        None
    } else {
        Some(crate::monitor::link::LinkResponder::start(&cfg.link.listen)?)
    };
    let link_probe = if role.runs_monitor() && !cfg.link.peers.is_empty() {
        Some(crate::monitor::link::LinkProber::start(
            &cfg.link.peers,
            Duration::from_millis(cfg.link.probe_interval_ms),
            Duration::from_millis(cfg.link.timeout_ms),
            state.clone(),
        )?)
    } else {
        None
    };
    // The detector loads its model before the HTTP server answers, so the
    // model page never reports "no model" for the seconds a load takes.
    let first_stage = role.runs_detector().then(|| {
        let stage = detector::DetectorStage::new(cfg, &registry);
        // The model page shows the card of the model this detector runs.
        if let Some(card) = stage.model_card().and_then(|c| serde_json::to_value(c).ok()) {
            state.set_model(card);
        }
        stage
    });
    let access = crate::monitor::http::Access::from_config(&cfg.http, &cfg.monitor)
        .context("loading the token signing key (http.jwt_key)")?;
    let http = HttpServer::start_with(&cfg.http.listen, state.clone(), access)?;
    tracing::info!(role = %role, source = %role_source, node = %cfg.node_id, "gatewarden {} starting", env!("CARGO_PKG_VERSION"));
    let mqtt = if cfg.mqtt.enabled() {
        let m = MqttBus::start(
            &MqttSettings::from_config(&cfg.node_id, &cfg.mqtt, &cfg.bus, role),
            bus.clone(),
            &registry,
            shutdown.clone(),
        )
        .context("starting the MQTT node bus ([mqtt] in the config)")?;
        tracing::info!(broker = %cfg.mqtt.broker, "node bus: MQTT over mutual TLS");
        Some(Arc::new(m))
    } else {
        if role != Role::All {
            tracing::warn!(
                "role {role} runs alone: set [mqtt] broker (and ca/cert/key) to exchange messages with other nodes"
            );
        }
        None
    };
    let out: Arc<dyn Publisher> = match &mqtt {
        // --role all: everything in process; alerts, heartbeats and metrics also go to the broker (bus/transport.rs).
        Some(m) if role == Role::All => Arc::new(crate::bus::transport::Uplink::new(bus.clone(), m.clone())),
        Some(m) => m.clone(),
        None => Arc::new(bus.clone()),
    };
    // Group policies (#9) live with the monitor: the engine, its API and a
    // thread that publishes the compiled policy to the routers.
    let policy =
        if role.runs_monitor() { start_policy(cfg, role, &state, out.clone(), shutdown.clone()) } else { None };
    // The training page's uploads go to the detector in this process, or sealed to every detector node.
    if role.runs_monitor() && (role.runs_detector() || mqtt.is_some()) {
        let o = out.clone();
        state.training.set_sender(Arc::new(move |u| o.publish(Message::ModelUpdate(u))));
        state.training.set_limits(crate::detect::validator::Limits::from_config(&cfg.detector));
    }
    // The settings page: kept by the monitor, sent to every detector and router.
    if role.runs_monitor() {
        let store = crate::monitor::settings::SettingsStore::open(crate::roles::settings::settings_base(cfg));
        if role != Role::Monitor || mqtt.is_some() {
            let o = out.clone();
            store.set_sender(Arc::new(move |u| o.publish(Message::SettingsUpdate(u))));
        }
        let _ = state.settings.set(store);
    }
    // The page's "unblock" for a block a router on another node holds: sealed to that router.
    if role.runs_monitor() && mqtt.is_some() {
        let o = out.clone();
        state.set_remote_unblock(Arc::new(move |router, req| o.publish_to(router, Message::Unblock(req))));
    }
    let capture = if let (true, Some(path)) = (role.runs_router(), &opts.replay) {
        Some(router::spawn_replay(path, cfg, &registry, out.clone(), shutdown.clone())?)
    } else if role.runs_router() && !cfg.capture.interface.is_empty() {
        let spoof = enforcer.as_ref().map(|e| e.spoof_link());
        Some(router::spawn_capture(cfg, &registry, out.clone(), spoof, shutdown.clone())?)
    } else {
        if role.runs_router() {
            tracing::warn!("no capture.interface configured: the router sees no traffic (set it to the LAN interface)");
        }
        None
    };

    // After enforcement: on a router, `ctl block|unblock|blocks` drive its nftables sets.
    let ctl = if cfg.ctl.listen.is_empty() {
        None
    } else {
        let blocks = enforcer.as_ref().map(|e| Arc::new(e.control()) as Arc<dyn crate::ctl::BlockControl>);
        Some(start_ctl(cfg, &registry, &state, out.clone(), blocks, shutdown.clone())?)
    };

    // Every 5 s the router tells the monitor what its block sets hold (the
    // dashboard's current blocks); at once after a dashboard unblock.
    let (table_now_tx, table_now_rx) = std::sync::mpsc::channel::<()>();
    let block_table = enforcer.as_ref().map(|e| {
        let control = e.control();
        let out = out.clone();
        let sd = shutdown.clone();
        let node = cfg.node_id.clone();
        std::thread::Builder::new().name("block-table".into()).spawn(move || {
            use crate::ctl::BlockControl;
            while !sd.is_triggered() {
                match control.list() {
                    Ok(mut entries) => {
                        let total = entries.len() as u32;
                        entries.sort_by_key(|e| std::cmp::Reverse(e.expires_in_s.unwrap_or(u32::MAX)));
                        entries.truncate(gatewarden_proto::messages::MAX_BLOCK_ROWS);
                        out.publish(Message::BlockTable(gatewarden_proto::messages::BlockTable {
                            node: node.clone(),
                            total,
                            entries,
                        }));
                    }
                    Err(e) => tracing::debug!(error = %e, "block table not read"),
                }
                for _ in 0..50 {
                    if sd.is_triggered() {
                        break;
                    }
                    match table_now_rx.recv_timeout(Duration::from_millis(100)) {
                        // One table answers a burst of unblocks.
                        Ok(()) => {
                            while table_now_rx.try_recv().is_ok() {}
                            break;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        // No one can ask any more: plain pacing, never a spin.
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                    }
                }
            }
        })
    });
    // On the node hosting Mosquitto: its refusals (no certificate, ACL denials) become counters and alerts.
    let broker_log = if role.runs_monitor() && !cfg.mqtt.broker_log.as_os_str().is_empty() {
        Some(crate::bus::broker_log::BrokerLogWatch::start(
            &cfg.mqtt.broker_log,
            &cfg.node_id,
            Arc::new(bus.clone()),
            &registry,
            shutdown.clone(),
        )?)
    } else {
        None
    };
    let policy_push = Arc::new(crate::bus::policy_push::PolicyPush::new(out.clone(), &registry));
    let ex = smol::LocalExecutor::new();
    let mut tasks = Vec::new();
    // The settings page (monitor → every detector and router): checked here
    // against this node's config, then thresholds go to the detector task and
    // the allowlist to enforcement; the answer is a system alert.
    let (detector_settings_tx, detector_settings_rx) =
        async_channel::bounded::<(crate::config::DetectorConfig, crate::detect::response::ResponseConfig)>(4);
    if role.runs_detector() || role.runs_router() {
        let rx = bus.settings.receiver();
        let sd = shutdown.clone();
        let base = cfg.clone();
        let out = out.clone();
        let to_enforcer = enforcer.as_ref().map(|e| e.sender());
        let node = cfg.node_id.clone();
        tasks.push(ex.spawn(async move {
            let mut newest = 0u64;
            loop {
                let Some(u) = next_or_shutdown(&rx, &sd).await else { break };
                if u.version <= newest {
                    continue; // the monitor's periodic resend of what this node already runs
                }
                newest = u.version;
                let answer = match settings::check(&u, &base) {
                    Ok(c) => {
                        let mut applied = Vec::new();
                        if role.runs_detector() {
                            let _ = detector_settings_tx.try_send((c.detector.clone(), c.response.clone()));
                            applied.push(format!("detector thresholds, verdict TTL {} s", c.detector.block_ttl_s));
                            applied.push(settings::response_summary(&c.response));
                        }
                        if role.runs_router() {
                            match &to_enforcer {
                                Some(tx) => {
                                    let n = c.allowlist.len();
                                    let _ =
                                        tx.send(crate::enforce::service::Command::Allowlist(c.allowlist, u.version));
                                    applied.push(format!("allowlist of {n} networks"));
                                }
                                None => applied.push("allowlist not applied: enforcement is off".into()),
                            }
                        }
                        tracing::info!(version = u.version, by = %u.by, "settings from the dashboard applied");
                        settings::settings_alert(&node, u.version, Ok(&applied.join("; ")))
                    }
                    Err(e) => {
                        tracing::error!(version = u.version, error = %e, "settings from the dashboard refused");
                        settings::settings_alert(&node, u.version, Err(&e))
                    }
                };
                out.publish(Message::Alert(answer));
            }
        }));
    }
    if let Some(mut overflow) = first_stage {
        let rx = bus.flows.receiver();
        // One detector state per gateway: an attacker already flagged at one
        // router must still be detected (and blocked) at another. Bounded:
        // past MAX_GATEWAYS, further gateways share one overflow stage.
        let mut stages: std::collections::HashMap<String, detector::DetectorStage> = Default::default();
        let dcfg = cfg.clone();
        let dreg = registry.clone();
        // Top talkers, when the monitor shares this process.
        let talkers = role.runs_monitor().then(|| state.clone());
        let out = out.clone();
        let sd = shutdown.clone();
        let pol = policy.as_ref().map(|(p, _)| p.clone());
        let models = bus.models.receiver();
        let st = state.clone();
        let node = cfg.node_id.clone();
        let new_settings = detector_settings_rx.clone();
        tasks.push(ex.spawn(async move {
            let mut dcfg = dcfg;
            let mut uploads = detector::ModelUploads::default();
            // A stored model refused at start is reported now, not with the first batch.
            if let Some(a) = overflow.take_start_alert() {
                out.publish(Message::Alert(a));
            }
            loop {
                // Flow batches; a model uploaded on the training page or new
                // thresholds from the settings page, applied between batches.
                let next = async { rx.recv().await.ok().map(DetectorInput::Batch) }
                    .or(async { models.recv().await.ok().map(DetectorInput::Model) })
                    .or(async { new_settings.recv().await.ok().map(|s| DetectorInput::Settings(Box::new(s))) })
                    .or(async {
                        sd.wait().await;
                        None
                    })
                    .await;
                let batch = match next {
                    None => break,
                    Some(DetectorInput::Model(update)) => {
                        let all = stages.values_mut().chain(std::iter::once(&mut overflow));
                        // Validated in a child process off this executor's thread.
                        if let Some((alert, card)) = uploads.apply_off_thread(&update, &dcfg.detector, &node, all).await
                        {
                            if let Some(card) = card {
                                st.set_model(card);
                            }
                            out.publish(Message::Alert(alert));
                        }
                        continue;
                    }
                    Some(DetectorInput::Settings(settings)) => {
                        let (d, r) = *settings;
                        for s in stages.values_mut().chain(std::iter::once(&mut overflow)) {
                            s.set_detector_config(&d);
                            s.set_response_config(&r);
                        }
                        dcfg.detector = d;
                        dcfg.response = r;
                        continue;
                    }
                    Some(DetectorInput::Batch(batch)) => batch,
                };
                if let Some(p) = &pol {
                    p.observe_batch(&batch);
                }
                if let Some(st) = &talkers {
                    st.observe_batch(&batch);
                }
                if !stages.contains_key(&batch.node) && stages.len() < MAX_GATEWAYS {
                    // A new gateway runs what the others run now (an uploaded model, new settings).
                    let stage = detector::DetectorStage::with_model(&dcfg, &dreg, Ok(overflow.shared_model()));
                    stages.insert(batch.node.clone(), stage);
                }
                let stage = stages.get_mut(&batch.node).unwrap_or(&mut overflow);
                let findings = stage.on_batch(&batch);
                // Verdicts go back to the router whose traffic caused them.
                for v in findings.verdicts {
                    out.publish_to(&batch.node, Message::Verdict(v));
                }
                // An alert names the gateway whose traffic it is about, so a
                // monitor shared by a fleet keeps gateways apart.
                for mut a in findings.alerts {
                    if !batch.node.is_empty() {
                        a.node = batch.node.clone();
                    }
                    out.publish(Message::Alert(a));
                }
            }
        }));
    }
    if role.runs_router() {
        let rx = bus.verdicts.receiver();
        let sd = shutdown.clone();
        let received = registry.counter("gatewarden_verdicts_received_total", "Verdicts received by the router.", &[]);
        let to_enforcer = enforcer.as_ref().map(|e| e.sender());
        let st = state.clone();
        if let Some(e) = &enforcer {
            // The dashboard's "unblock" in this process goes through the enforcement
            // thread, as `gatewarden ctl unblock` does (escalation starts over).
            use crate::ctl::BlockControl;
            let control = Arc::new(e.control());
            let (mac_control, table_now) = (control.clone(), table_now_tx.clone());
            state.set_unblock_mac_hook(Arc::new(move |mac| {
                let text = crate::enforce::spoof::mac_text(&mac);
                match mac_control.unblock_mac(mac) {
                    Ok(true) => {
                        let _ = table_now.send(());
                        Ok(format!("lifted the containment of {text}"))
                    }
                    Ok(false) => anyhow::bail!("{text} is not contained (expired or already lifted)"),
                    Err(e) => anyhow::bail!("{e}"),
                }
            }));
            let (hook_control, table_now) = (control.clone(), table_now_tx.clone());
            state.set_unblock_hook(Arc::new(move |ip| match hook_control.unblock(ip) {
                Ok(true) => {
                    let _ = table_now.send(());
                    Ok(format!("unblocked {ip}"))
                }
                Ok(false) => {
                    anyhow::bail!("{ip} is not in the detector or admin block sets (expired or already lifted)")
                }
                Err(e) => anyhow::bail!("{e}"),
            }));
            // A monitor on another node asks for it over the bus (sealed for this router).
            let rx = bus.unblocks.receiver();
            let sd = shutdown.clone();
            let out = out.clone();
            let node = cfg.node_id.clone();
            let table_now = table_now_tx.clone();
            tasks.push(ex.spawn(async move {
                loop {
                    let Some(req) = next_or_shutdown(&rx, &sd).await else { break };
                    let (c, n) = (control.clone(), node.clone());
                    // The enforcement thread may take a moment: not on the executor.
                    let answer = smol::unblock(move || {
                        unblock::apply(c.as_ref(), &n, &req, gatewarden_core::clock::unix_now_ns())
                    })
                    .await;
                    tracing::info!(reason = %answer.reason, "dashboard unblock");
                    let _ = table_now.send(());
                    out.publish(Message::Alert(answer));
                }
            }));
        }
        let (out_verdicts, node_verdicts) = (out.clone(), cfg.node_id.clone());
        tasks.push(ex.spawn(async move {
            loop {
                let Some(v) = next_or_shutdown(&rx, &sd).await else { break };
                received.inc();
                st.record_verdict(&v);
                tracing::info!(source = %v.source, kind = v.kind.as_str(), ttl_s = v.ttl_s, reason = %v.reason, "verdict");
                if let Some(tx) = &to_enforcer {
                    let _ = tx.send(crate::enforce::service::Command::Verdict(v));
                } else {
                    // Nothing blocks here: say so, so the alert does not claim a block.
                    out_verdicts.publish(Message::VerdictOutcome(gatewarden_proto::messages::VerdictOutcome {
                        node: node_verdicts.clone(),
                        verdict_id: v.id,
                        source: v.source,
                        blocked: false,
                        why: "enforcement is off on this router ([enforce] enabled = false)".into(),
                    }));
                }
            }
        }));
        if let Some(tx) = enforcer.as_ref().map(|e| e.sender()) {
            let rx = bus.policy.receiver();
            let sd = shutdown.clone();
            tasks.push(ex.spawn(async move {
                loop {
                    let Some(p) = next_or_shutdown(&rx, &sd).await else { break };
                    let _ = tx.send(crate::enforce::service::Command::Policy(p));
                }
            }));
        }
    }
    if role.runs_router() && !role.runs_monitor() && mqtt.is_some() {
        // The enforcement thread reports on this node's local bus: its alerts (a
        // contained MAC, a full block set) and verdict outcomes go to the monitor.
        let (rx_alerts, rx_outcomes) = (bus.alerts.receiver(), bus.verdict_outcomes.receiver());
        let (sd, o) = (shutdown.clone(), out.clone());
        tasks.push(ex.spawn(async move {
            loop {
                let Some(a) = next_or_shutdown(&rx_alerts, &sd).await else { break };
                o.publish(Message::Alert(a));
            }
        }));
        let (sd, o, st) = (shutdown.clone(), out.clone(), state.clone());
        tasks.push(ex.spawn(async move {
            loop {
                let Some(v) = next_or_shutdown(&rx_outcomes, &sd).await else { break };
                // This node's own page lists a verdict's block only once it is in the kernel.
                st.confirm_block(&v);
                o.publish(Message::VerdictOutcome(v));
            }
        }));
    }
    if role.runs_monitor() && !role.runs_detector() {
        // A monitor on its own node: flow batches from the routers feed the
        // traffic matrix (group policy) and the top talkers; the detector
        // node gets its own copy from the broker.
        let rx = bus.flows.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        let pol = policy.as_ref().map(|(p, _)| p.clone());
        tasks.push(ex.spawn(async move {
            loop {
                let Some(batch) = next_or_shutdown(&rx, &sd).await else { break };
                if let Some(p) = &pol {
                    p.observe_batch(&batch);
                }
                st.observe_batch(&batch);
            }
        }));
    }
    if role.runs_monitor() {
        let rx = bus.alerts.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        let pol = policy.as_ref().map(|(p, _)| p.clone());
        tasks.push(ex.spawn(async move {
            loop {
                let Some(a) = next_or_shutdown(&rx, &sd).await else { break };
                if let Some(p) = &pol {
                    p.observe_alert(&a);
                }
                st.record_alert(a);
            }
        }));
        let rx = bus.heartbeats.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        // Group policy to routers (bus/policy_push.rs): the policy engine calls
        // `policy_push.publish(update)`; routers that join or restart get the current one.
        let push = policy_push.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let Some(hb) = next_or_shutdown(&rx, &sd).await else { break };
                st.record_heartbeat(&hb);
                push.heartbeat(&hb);
            }
        }));
        let rx = bus.metrics.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let Some(m) = next_or_shutdown(&rx, &sd).await else { break };
                st.node_metrics.record(&m, gatewarden_core::clock::unix_now_ns());
            }
        }));
        let rx = bus.block_tables.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let Some(t) = next_or_shutdown(&rx, &sd).await else { break };
                st.record_block_table(t);
            }
        }));
        // Routers' answers to verdicts: an alert is `blocked` only once one confirms.
        let rx = bus.verdict_outcomes.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let Some(o) = next_or_shutdown(&rx, &sd).await else { break };
                st.record_outcome(o);
            }
        }));
        if let Some(m) = &mqtt {
            let rx = m.status_receiver();
            let sd = shutdown.clone();
            let st = state.clone();
            let push = policy_push.clone();
            tasks.push(ex.spawn(async move {
                loop {
                    let Some(s) = next_or_shutdown(&rx, &sd).await else { break };
                    st.set_node_online(&s.node, s.online);
                    push.node_online(&s.node, s.online);
                }
            }));
        }
    }
    {
        // Once a second: chart sample and heartbeat.
        let sd = shutdown.clone();
        let st = state.clone();
        let bus = bus.clone();
        let out = out.clone();
        let node = cfg.node_id.clone();
        // The in-process detector is alive as long as this loop runs.
        let detector_alive = if role.runs_detector() { enforcer.as_ref().map(|e| e.liveness()) } else { None };
        let drain = !role.runs_monitor() && mqtt.is_none();
        tasks.push(ex.spawn(async move {
            loop {
                let sample = st.sample();
                if role.runs_monitor() {
                    // Alerts whose block no router confirmed in time: stored as `allowed`.
                    st.settle_overdue();
                }
                if let Some(s) = st.settings.get() {
                    s.resend_if_due(&st.live_workers());
                }
                // A node without the monitor sends its /proc numbers to the one that has it.
                if !role.runs_monitor() {
                    out.publish(Message::Metrics(sample));
                }
                if let Some(seen) = &detector_alive {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    seen.store(now, std::sync::atomic::Ordering::Relaxed);
                }
                out.publish(Message::Heartbeat(Heartbeat {
                    node: node.clone(),
                    role,
                    version: env!("CARGO_PKG_VERSION").into(),
                    uptime_s: st.uptime_s() as u64,
                    sent_ns: gatewarden_core::clock::unix_now_ns(),
                }));
                // Without a monitor in this process nothing consumes them; keep the channel from filling.
                if drain {
                    while bus.heartbeats.receiver().try_recv().is_ok() {}
                    while bus.metrics.receiver().try_recv().is_ok() {}
                    while bus.verdict_outcomes.receiver().try_recv().is_ok() {}
                }
                let tick = async {
                    smol::Timer::after(Duration::from_secs(1)).await;
                    false
                };
                if tick
                    .or(async {
                        sd.wait().await;
                        true
                    })
                    .await
                {
                    break;
                }
            }
        }));
    }
    smol::block_on(ex.run(async {
        for t in tasks {
            t.await;
        }
    }));
    if let Some(t) = capture {
        let _ = t.join();
    }
    if let Some((p, t)) = policy {
        let _ = t.join();
        p.shutdown();
    }
    // Before enforcement stops: the reader asks the enforcement thread.
    if let Some(Ok(t)) = block_table {
        let _ = t.join();
    }
    if let Some(e) = enforcer {
        e.stop();
    }
    if let Some(c) = ctl {
        c.join();
    }
    if let Some(w) = broker_log {
        w.join();
    }
    if let Some(m) = mqtt {
        m.stop();
    }
    if let Some(p) = link_probe {
        p.stop();
    }
    if let Some(e) = link_echo {
        e.stop();
    }
    http.stop();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts the `gatewarden ctl` endpoint with this node's certificate.
fn start_ctl(
    cfg: &Config,
    registry: &Arc<Registry>,
    state: &Arc<MonitorState>,
    alerts: Arc<dyn Publisher>,
    blocks: Option<Arc<dyn crate::ctl::BlockControl>>,
    shutdown: Shutdown,
) -> anyhow::Result<crate::ctl::ControlServer> {
    use anyhow::Context;
    let ca = crate::pki::CaVerifier::load(&cfg.mqtt.ca).context("ctl.listen needs mqtt.ca (the fleet CA)")?;
    let id = crate::pki::Identity::load(&cfg.mqtt.cert, &cfg.mqtt.key, &ca)
        .context("ctl.listen needs this node's certificate (mqtt.cert, mqtt.key)")?;
    let st = state.clone();
    let handler = crate::ctl::ControlHandler {
        status: Arc::new(move || {
            let mut v = st.status_json();
            if let Some(o) = v.as_object_mut() {
                o.remove("history");
            }
            v
        }),
        // The router's nftables layer (src/enforce/control.rs); None without enforcement.
        blocks,
        alerts: Some(alerts),
    };
    let secure =
        crate::secure::SecureConfig { max_skew: Duration::from_secs(cfg.mqtt.max_clock_skew_s), ..Default::default() };
    let server = crate::ctl::ControlServer::start(&cfg.ctl, id, ca, secure, handler, registry, shutdown)?;
    tracing::info!(addr = %server.addr, "ctl endpoint listening");
    Ok(server)
}

/// The enforcement thread's reports, onto this node's bus.
pub fn enforcement_reports(bus: &LocalBus) -> crate::enforce::service::Reports {
    let (alerts, outcomes) = (bus.clone(), bus.clone());
    crate::enforce::service::Reports {
        alert: Box::new(move |a| {
            alerts.alerts.publish(a);
        }),
        outcome: Box::new(move |o| {
            outcomes.verdict_outcomes.publish(o);
        }),
    }
}

/// What the detector task waits for.
enum DetectorInput {
    Batch(gatewarden_proto::messages::FlowBatch),
    Model(gatewarden_proto::messages::ModelUpdate),
    Settings(Box<(crate::config::DetectorConfig, crate::detect::response::ResponseConfig)>),
}

/// The next message on `rx`, or `None` once shutdown fires or the channel closes:
/// the loop head of every role task.
async fn next_or_shutdown<T>(rx: &async_channel::Receiver<T>, shutdown: &Shutdown) -> Option<T> {
    async { rx.recv().await.ok() }
        .or(async {
            shutdown.wait().await;
            None
        })
        .await
}

/// Opens the policy engine (a broken state directory disables policies with
/// a warning instead of stopping the monitor) and starts its tick thread.
fn start_policy(
    cfg: &Config,
    role: Role,
    state: &Arc<MonitorState>,
    out: Arc<dyn Publisher>,
    shutdown: Shutdown,
) -> Option<(Arc<crate::policy::service::PolicyService>, std::thread::JoinHandle<()>)> {
    let publish = Box::new(move |u: gatewarden_proto::messages::PolicyUpdate| {
        out.publish(Message::PolicyUpdate(u));
    });
    // MAC members resolve through the router's neighbour table, so only a node
    // that runs the router reads one; elsewhere MAC members stay unresolved.
    let runs_router = role.runs_router();
    let neighbours: crate::policy::service::Neighbours =
        Box::new(move || if runs_router { crate::enforce::blocker::neighbours().ok() } else { None });
    let svc = match crate::policy::service::PolicyService::start(&cfg.policy, publish, neighbours) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("group policies are off: {e:#} (set policy.state_dir to a writable directory)");
            return None;
        }
    };
    let _ = state.policy.set(svc.clone());
    let s2 = svc.clone();
    let thread = std::thread::Builder::new()
        .name("policy".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                s2.tick();
                for _ in 0..10 {
                    if shutdown.is_triggered() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .ok()?;
    Some((svc, thread))
}
