//! The one interface roles publish through, whether the other roles live in
//! this process ([`super::LocalBus`]) or on other nodes ([`super::mqtt::MqttBus`]).
//! Receiving is always from a [`super::LocalBus`]: the MQTT transport feeds
//! what it receives into one, so role tasks never know where a message came from.

use gatewarden_proto::messages::Message;

/// Something messages can be published to.
pub trait Publisher: Send + Sync {
    /// Publishes to whoever consumes this kind; false if it was dropped (and counted).
    fn publish(&self, msg: Message) -> bool;

    /// Publishes to one node (e.g. a verdict for the router whose flows caused
    /// it). In one process there is one router, so the default ignores `to`.
    fn publish_to(&self, to: &str, msg: Message) -> bool {
        let _ = to;
        self.publish(msg)
    }

    /// Whether messages currently leave this node (always true in process).
    fn connected(&self) -> bool {
        true
    }
}

impl Publisher for super::LocalBus {
    fn publish(&self, msg: Message) -> bool {
        super::LocalBus::publish(self, msg)
    }
}

/// `--role all` with `[mqtt]` configured: every message stays on the
/// in-process bus (the local detector, router and monitor work exactly as
/// without a broker), and what an external monitor of a fleet wants —
/// alerts, heartbeats and metrics — is also published to the broker. Flow
/// batches and verdicts stay local: the detector's verdicts are for this
/// gateway's own router, and no other node consumes them.
pub struct Uplink {
    local: super::LocalBus,
    remote: std::sync::Arc<dyn Publisher>,
}

impl Uplink {
    /// Local bus plus the broker connection.
    pub fn new(local: super::LocalBus, remote: std::sync::Arc<dyn Publisher>) -> Uplink {
        Uplink { local, remote }
    }

    /// Whether `kind` is also sent to the broker.
    pub fn mirrored(kind: &str) -> bool {
        gatewarden_proto::kinds::mirrored(kind)
    }
}

impl Publisher for Uplink {
    fn publish(&self, msg: Message) -> bool {
        if Uplink::mirrored(msg.kind()) {
            self.remote.publish(msg.clone());
        }
        self.local.publish(msg)
    }

    fn connected(&self) -> bool {
        self.remote.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::Heartbeat;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Remote(Mutex<Vec<&'static str>>);
    impl Publisher for Remote {
        fn publish(&self, msg: Message) -> bool {
            self.0.lock().unwrap().push(msg.kind());
            true
        }
    }

    #[test]
    fn uplink_keeps_everything_local_and_mirrors_only_reports() {
        let reg = gatewarden_core::metrics::Registry::new();
        let local = super::super::LocalBus::new(16, &reg);
        let remote = std::sync::Arc::new(Remote::default());
        let up = Uplink::new(local.clone(), remote.clone());
        let hb = Heartbeat {
            node: "gw".into(),
            role: gatewarden_proto::role::Role::All,
            version: "v".into(),
            uptime_s: 1,
            sent_ns: 0,
        };
        assert!(up.publish(Message::Heartbeat(hb)));
        let p = gatewarden_proto::messages::PolicyUpdate { version: 1, groups: vec![], rules: vec![] };
        assert!(up.publish_to("gw", Message::PolicyUpdate(p)));
        assert_eq!(local.heartbeats.len(), 1);
        assert_eq!(local.policy.len(), 1);
        assert_eq!(*remote.0.lock().unwrap(), vec!["heartbeat"], "policy (like verdicts and flow batches) stays local");
        assert!(Uplink::mirrored("alert") && Uplink::mirrored("metrics"));
        assert!(!Uplink::mirrored("verdict") && !Uplink::mirrored("flow_batch"));
    }
}
