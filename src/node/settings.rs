//! The settings page (monitor → every detector and router): checked here
//! against this node's config, then thresholds go to the detector task and
//! the allowlist to enforcement; the answer is a system alert.

use super::{next_or_shutdown, Context, Service, Wiring};
use crate::roles::settings;
use gatewarden_proto::messages::Message;

/// Applies settings updates from the dashboard (detector, router).
pub struct Settings {
    /// This node runs the detector: thresholds and the response policy go to it.
    pub detector: bool,
    /// This node runs the router: the allowlist goes to enforcement.
    pub router: bool,
}

impl Service for Settings {
    fn name(&self) -> &'static str {
        "settings"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let rx = cx.bus.settings.receiver();
        let sd = cx.shutdown.clone();
        let base = cx.cfg.clone();
        let out = w.out.clone();
        let to_enforcer = w.enforcer.as_ref().map(|e| e.sender());
        let node = cx.cfg.node_id.clone();
        let detector_settings_tx = w.detector_settings.0.clone();
        let (runs_detector, runs_router) = (self.detector, self.router);
        w.spawn(async move {
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
                        if runs_detector {
                            let _ = detector_settings_tx.try_send((c.detector.clone(), c.response.clone()));
                            applied.push(format!("detector thresholds, verdict TTL {} s", c.detector.block_ttl_s));
                            applied.push(settings::response_summary(&c.response));
                        }
                        if runs_router {
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
        });
        Ok(())
    }
}
