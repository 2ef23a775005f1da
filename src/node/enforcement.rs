//! The enforcement thread (router): nftables block sets, the spoof check's
//! containment, group policy rules. Started first, stopped after everything
//! that asks it.

use super::{Context, Service, Wiring};

/// `[enforce]` with the fleet's endpoints filled in (`mqtt.broker`, the
/// addresses of `link.peers`): no verdict, admin block or feed may block
/// them, since that cuts this node off from the fleet (and, with
/// `enforce.fail_closed`, the site from the internet once the detector's
/// heartbeats stop). The enforcement thread and the admin commands that
/// block (`gatewarden block`, `blocklist import`) take their settings from here.
pub fn enforce_config(cfg: &crate::config::Config) -> crate::enforce::config::EnforceConfig {
    let mut e = cfg.enforce.clone();
    e.lan_interface = cfg.capture.interface.clone();
    if !cfg.mqtt.broker.is_empty() {
        e.fleet_endpoints.push(cfg.mqtt.broker.clone());
    }
    e.fleet_endpoints.extend(
        cfg.link.peers.iter().filter_map(|p| crate::monitor::link::parse_peer(p).ok()).map(|(_, a)| a.ip().to_string()),
    );
    e
}

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
                &enforce_config(cfg),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_broker_and_link_peers_become_fleet_endpoints() {
        let mut cfg = crate::config::Config::default();
        assert!(super::enforce_config(&cfg).fleet_endpoints.is_empty());
        cfg.mqtt.broker = "monitor.lan:8883".into();
        cfg.link.peers = vec!["mon=192.0.2.9:7946".into(), "det=[2001:db8::2]:7946".into()];
        let e = super::enforce_config(&cfg);
        assert_eq!(e.fleet_endpoints, ["monitor.lan:8883", "192.0.2.9", "2001:db8::2"]);
        assert_eq!(e.settings().fleet_endpoints, e.fleet_endpoints, "they reach the blocker's settings");
    }
}
