//! On the node hosting Mosquitto: its refusals (no certificate, ACL
//! denials) become counters and alerts (monitor, `[mqtt] broker_log`).

use std::sync::Arc;

use super::{Context, Service, Wiring};
use crate::bus::broker_log::BrokerLogWatch;

/// Follows Mosquitto's log file.
#[derive(Default)]
pub struct BrokerLog(Option<BrokerLogWatch>);

impl Service for BrokerLog {
    fn name(&self) -> &'static str {
        "broker-log"
    }

    fn start(&mut self, cx: &Context<'_>, _w: &mut Wiring) -> anyhow::Result<()> {
        if !cx.cfg.mqtt.broker_log.as_os_str().is_empty() {
            self.0 = Some(BrokerLogWatch::start(
                &cx.cfg.mqtt.broker_log,
                &cx.cfg.node_id,
                Arc::new(cx.bus.clone()),
                &cx.registry,
                cx.shutdown.clone(),
            )?);
        }
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(b) = self.0 {
            b.join();
        }
    }
}
