//! The node bus: MQTT over mutual TLS when `[mqtt] broker` is set, and the
//! publisher every task sends through.

use std::sync::Arc;

use super::{Context, Service, Wiring};
use crate::bus::mqtt::{MqttBus, MqttSettings};
use crate::bus::Publisher;
use gatewarden_proto::role::Role;

/// Starts the MQTT node bus (if configured) and decides [`Wiring::out`].
pub struct Mqtt {
    /// `--role all`: the pipeline stays in process; alerts, heartbeats and
    /// metrics are also mirrored to the broker (bus/transport.rs).
    pub uplink: bool,
    /// The running bus, stopped last but for the endpoints.
    pub mqtt: Option<Arc<MqttBus>>,
}

impl Service for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let cfg = cx.cfg;
        let mqtt = if cfg.mqtt.enabled() {
            let m = MqttBus::start(
                &MqttSettings::from_config(&cfg.node_id, &cfg.mqtt, &cfg.bus, cx.role),
                cx.bus.clone(),
                &cx.registry,
                cx.shutdown.clone(),
            )
            .context("starting the MQTT node bus ([mqtt] in the config)")?;
            tracing::info!(broker = %cfg.mqtt.broker, "node bus: MQTT over mutual TLS");
            Some(Arc::new(m))
        } else {
            if cx.role != Role::All {
                tracing::warn!(
                    "role {} runs alone: set [mqtt] broker (and ca/cert/key) to exchange messages with other nodes",
                    cx.role
                );
            }
            None
        };
        if cfg.mqtt.json_mirror && !cx.role.runs_monitor() {
            tracing::warn!(role = %cx.role, "mqtt.json_mirror is set but the JSON mirror runs only where the monitor does (role monitor or all); ignored here");
        }
        w.out = match &mqtt {
            Some(m) if self.uplink => Arc::new(crate::bus::transport::Uplink::new(cx.bus.clone(), m.clone())),
            Some(m) => m.clone(),
            None => Arc::new(cx.bus.clone()),
        };
        // Group policy to routers (bus/policy_push.rs): routers that join or restart get the current one.
        let out: Arc<dyn Publisher> = w.out.clone();
        w.policy_push = Some(Arc::new(crate::bus::policy_push::PolicyPush::new(out, &cx.registry)));
        w.mqtt = mqtt.clone();
        self.mqtt = mqtt;
        Ok(())
    }

    fn stop(self: Box<Self>, w: &mut Wiring) {
        w.mqtt = None;
        if let Some(m) = self.mqtt {
            m.stop();
        }
    }
}
