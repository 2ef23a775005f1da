//! The `gatewarden ctl` endpoint (`[ctl] listen`): status, and on a router
//! with enforcement, `block|unblock|blocks` on its nftables sets.

use std::sync::Arc;
use std::time::Duration;

use super::{Context, Service, Wiring};

/// The ctl endpoint with this node's certificate.
#[derive(Default)]
pub struct Ctl(Option<crate::ctl::ControlServer>);

impl Service for Ctl {
    fn name(&self) -> &'static str {
        "ctl"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let cfg = cx.cfg;
        if cfg.ctl.listen.is_empty() {
            return Ok(());
        }
        let blocks = w.enforcer.as_ref().map(|e| Arc::new(e.control()) as Arc<dyn crate::ctl::BlockControl>);
        let ca = crate::pki::CaVerifier::load(&cfg.mqtt.ca).context("ctl.listen needs mqtt.ca (the fleet CA)")?;
        let id = crate::pki::Identity::load(&cfg.mqtt.cert, &cfg.mqtt.key, &ca)
            .context("ctl.listen needs this node's certificate (mqtt.cert, mqtt.key)")?;
        let st = cx.state.clone();
        let handler = crate::ctl::ControlHandler {
            status: Arc::new(move || {
                let mut v = st.status_json();
                if let Some(o) = v.as_object_mut() {
                    o.remove("history");
                }
                v
            }),
            // The router's nftables layer (gatewarden-enforce control.rs); None without enforcement.
            blocks,
            alerts: Some(w.out.clone()),
        };
        let secure = crate::secure::SecureConfig {
            max_skew: Duration::from_secs(cfg.mqtt.max_clock_skew_s),
            ..Default::default()
        };
        let server =
            crate::ctl::ControlServer::start(&cfg.ctl, id, ca, secure, handler, &cx.registry, cx.shutdown.clone())?;
        tracing::info!(addr = %server.addr, "ctl endpoint listening");
        self.0 = Some(server);
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(c) = self.0 {
            c.join();
        }
    }
}
