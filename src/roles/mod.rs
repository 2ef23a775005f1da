//! Starting the roles: each is a set of tasks on one smol executor, wired by
//! the in-process bus; blocking work (HTTP, capture) runs on named threads.

pub mod detector;
pub mod router;

use std::time::Duration;

use smol::future::FutureExt;

use crate::bus::messages::Heartbeat;
use crate::bus::LocalBus;
use crate::config::Config;
use crate::metrics::Registry;
use crate::monitor::http::HttpServer;
use crate::monitor::MonitorState;
use crate::role::{Role, RoleSource};
use crate::shutdown::Shutdown;

/// Runs `role` until `shutdown` fires; returns once every task has stopped.
pub fn run(role: Role, role_source: RoleSource, cfg: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let registry = Registry::new();
    let bus = LocalBus::new(cfg.bus.channel_capacity, &registry);
    let state = MonitorState::new(role, role_source, cfg.node_id.clone(), registry.clone());
    let http = HttpServer::start(&cfg.http.listen, state.clone())?;
    tracing::info!(role = %role, source = %role_source, node = %cfg.node_id, "gatewarden {} starting", env!("CARGO_PKG_VERSION"));
    if role != Role::All {
        tracing::warn!(
            "role {role} runs alone: until the MQTT node bus is configured, it exchanges no messages with other nodes"
        );
    }
    let capture = if role.runs_router() && !cfg.capture.interface.is_empty() {
        Some(router::spawn_capture(cfg, &registry, bus.clone(), shutdown.clone())?)
    } else {
        if role.runs_router() {
            tracing::warn!("no capture.interface configured: the router sees no traffic (set it to the LAN interface)");
        }
        None
    };

    // Enforcement runs on its own thread (netlink blocks); start it first so a
    // missing privilege stops the start-up with a clear message.
    let enforcer = if role.runs_router() && cfg.enforce.enabled {
        Some(crate::enforce::service::EnforceService::start(&cfg.enforce, &registry, bus.clone(), cfg.node_id.clone())?)
    } else {
        if role.runs_router() {
            tracing::warn!("enforcement is off: verdicts are only logged. Set [enforce] enabled = true (needs root or CAP_NET_ADMIN) to block in nftables");
        }
        None
    };

    let ex = smol::LocalExecutor::new();
    let mut tasks = Vec::new();
    if role.runs_detector() {
        let rx = bus.flows.receiver();
        let mut stage = detector::DetectorStage::new(cfg, &registry);
        let bus = bus.clone();
        let sd = shutdown.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let next = async { rx.recv().await.ok() }.or(async {
                    sd.wait().await;
                    None
                });
                let Some(batch) = next.await else { break };
                let findings = stage.on_batch(&batch);
                for v in findings.verdicts {
                    bus.verdicts.publish(v);
                }
                for a in findings.alerts {
                    bus.alerts.publish(a);
                }
            }
        }));
    }
    if role.runs_router() {
        let rx = bus.verdicts.receiver();
        let sd = shutdown.clone();
        let received = registry.counter("gatewarden_verdicts_received_total", "Verdicts received by the router.", &[]);
        let to_enforcer = enforcer.as_ref().map(|e| e.sender());
        tasks.push(ex.spawn(async move {
            loop {
                let next = async { rx.recv().await.ok() }.or(async {
                    sd.wait().await;
                    None
                });
                let Some(v) = next.await else { break };
                received.inc();
                tracing::info!(source = %v.source, kind = v.kind.as_str(), ttl_s = v.ttl_s, reason = %v.reason, "verdict");
                if let Some(tx) = &to_enforcer {
                    let _ = tx.send(crate::enforce::service::Command::Verdict(v));
                }
            }
        }));
        if let Some(tx) = enforcer.as_ref().map(|e| e.sender()) {
            let rx = bus.policy.receiver();
            let sd = shutdown.clone();
            tasks.push(ex.spawn(async move {
                loop {
                    let next = async { rx.recv().await.ok() }.or(async {
                        sd.wait().await;
                        None
                    });
                    let Some(p) = next.await else { break };
                    let _ = tx.send(crate::enforce::service::Command::Policy(p));
                }
            }));
        }
    }
    if role.runs_monitor() {
        let rx = bus.alerts.receiver();
        let sd = shutdown.clone();
        let st = state.clone();
        tasks.push(ex.spawn(async move {
            loop {
                let next = async { rx.recv().await.ok() }.or(async {
                    sd.wait().await;
                    None
                });
                let Some(a) = next.await else { break };
                st.record_alert(a);
            }
        }));
    }
    {
        // Once a second: chart sample and heartbeat.
        let sd = shutdown.clone();
        let st = state.clone();
        let bus = bus.clone();
        let node = cfg.node_id.clone();
        // The in-process detector is alive as long as this loop runs.
        let detector_alive = if role.runs_detector() { enforcer.as_ref().map(|e| e.liveness()) } else { None };
        tasks.push(ex.spawn(async move {
            loop {
                st.sample();
                if let Some(seen) = &detector_alive {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    seen.store(now, std::sync::atomic::Ordering::Relaxed);
                }
                bus.heartbeats.publish(Heartbeat {
                    node: node.clone(),
                    role,
                    version: env!("CARGO_PKG_VERSION").into(),
                    uptime_s: st.uptime_s() as u64,
                    sent_ns: crate::monitor::unix_now() * 1_000_000_000,
                });
                // Nothing consumes heartbeats in one process yet; keep the channel from filling.
                while bus.heartbeats.receiver().try_recv().is_ok() {}
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
    if let Some(e) = enforcer {
        e.stop();
    }
    http.stop();
    tracing::info!("stopped cleanly");
    Ok(())
}
