//! The enforcement thread (router): nftables block sets, the spoof check's
//! containment, group policy rules. Started first, stopped after everything
//! that asks it.

use super::{Context, Service, Wiring};

/// Starts `gatewarden-enforce`'s service thread when `[enforce] enabled`.
pub struct Enforcement;

impl Service for Enforcement {
    fn name(&self) -> &'static str {
        "enforcement"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let cfg = cx.cfg;
        if cfg.enforce.enabled {
            w.enforcer = Some(crate::enforce::service::EnforceService::start_on(
                &cfg.enforce,
                &cfg.capture.interface,
                &cx.registry,
                crate::roles::enforcement_reports(&cx.bus),
                cfg.node_id.clone(),
            )?);
        } else {
            tracing::warn!("enforcement is off: verdicts are only logged. Set [enforce] enabled = true (needs root or CAP_NET_ADMIN) to block in nftables");
        }
        Ok(())
    }

    fn stop(self: Box<Self>, w: &mut Wiring) {
        if let Some(e) = w.enforcer.take() {
            e.stop();
        }
    }
}
