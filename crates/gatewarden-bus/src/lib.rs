//! How roles talk: typed, bounded channels in one process (`--role all`);
//! the MQTT transport for separate nodes carries the same [`messages`].
//!
//! Publishing never blocks the data path: a full channel drops the message
//! and counts it in `gatewarden_bus_dropped_total{kind=…}`.
//!
//! gatewarden-bus depends on gatewarden-core, gatewarden-proto and
//! gatewarden-secure (sealing). [`config`] is `[bus]` and `[mqtt]`.
#![forbid(unsafe_code)]

pub mod broker_log;
pub mod config;
pub mod json_mirror;
pub use gatewarden_proto::messages;
pub mod mqtt;
pub mod policy_push;
pub mod spool;
pub mod transport;

pub use transport::Publisher;

use std::sync::Arc;

use messages::{
    Alert, BlockTable, FlowBatch, Heartbeat, Message, MetricsSample, ModelUpdate, NeighbourTable, PolicyUpdate,
    SettingsUpdate, UnblockRequest, Verdict, VerdictOutcome,
};

use gatewarden_core::metrics::{Counter, Registry};

/// One bounded, multi-producer channel for one message kind.
#[derive(Debug, Clone)]
pub struct Channel<T> {
    tx: async_channel::Sender<T>,
    rx: async_channel::Receiver<T>,
    sent: Counter,
    dropped: Counter,
}

impl<T> Channel<T> {
    fn new(kind: &'static str, capacity: usize, registry: &Registry) -> Channel<T> {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        Channel {
            tx,
            rx,
            sent: registry.counter(
                "gatewarden_bus_sent_total",
                "Messages published on the in-process bus.",
                &[("kind", kind)],
            ),
            dropped: registry.counter(
                "gatewarden_bus_dropped_total",
                "Messages dropped because a bus channel was full or closed.",
                &[("kind", kind)],
            ),
        }
    }

    /// Sends without waiting; returns false (and counts a drop) if the channel is full.
    pub fn publish(&self, msg: T) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.sent.inc();
                true
            }
            Err(_) => {
                self.dropped.inc();
                false
            }
        }
    }

    /// The receiving end; clones share one queue (each message goes to one receiver).
    pub fn receiver(&self) -> async_channel::Receiver<T> {
        self.rx.clone()
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Every channel of the in-process bus.
#[derive(Debug, Clone)]
pub struct LocalBus {
    /// Router → detector.
    pub flows: Channel<FlowBatch>,
    /// Detector → router.
    pub verdicts: Channel<Verdict>,
    /// Any → monitor.
    pub alerts: Channel<Alert>,
    /// Any → monitor.
    pub metrics: Channel<MetricsSample>,
    /// Any → monitor.
    pub heartbeats: Channel<Heartbeat>,
    /// Monitor → router.
    pub policy: Channel<PolicyUpdate>,
    /// Monitor → detector.
    pub models: Channel<ModelUpdate>,
    /// Monitor → detector and router.
    pub settings: Channel<SettingsUpdate>,
    /// Router → monitor.
    pub block_tables: Channel<BlockTable>,
    /// Monitor → router (the dashboard's unblock).
    pub unblocks: Channel<UnblockRequest>,
    /// Router → monitor: what became of each verdict.
    pub verdict_outcomes: Channel<VerdictOutcome>,
    /// Router → monitor: its neighbour table, for MAC group members.
    pub neighbour_tables: Channel<NeighbourTable>,
    /// Router → detector: ARP/neighbour-discovery requests (LAN mapping).
    pub lan_probes: Channel<gatewarden_proto::messages::LanProbes>,
    /// Router → monitor: the first packets behind an alert.
    pub evidence: Channel<gatewarden_proto::messages::Evidence>,
}

impl LocalBus {
    /// A bus whose channels each hold `capacity` messages.
    pub fn new(capacity: usize, registry: &Arc<Registry>) -> LocalBus {
        LocalBus {
            flows: Channel::new("flow_batch", capacity, registry),
            verdicts: Channel::new("verdict", capacity, registry),
            alerts: Channel::new("alert", capacity, registry),
            metrics: Channel::new("metrics", capacity, registry),
            heartbeats: Channel::new("heartbeat", capacity, registry),
            policy: Channel::new("policy_update", capacity, registry),
            models: Channel::new("model_update", capacity.min(4), registry),
            settings: Channel::new("settings_update", capacity.min(16), registry),
            block_tables: Channel::new("block_table", capacity.min(64), registry),
            unblocks: Channel::new("unblock", capacity.min(64), registry),
            verdict_outcomes: Channel::new("verdict_outcome", capacity.min(1024), registry),
            neighbour_tables: Channel::new("neighbour_table", capacity.min(64), registry),
            lan_probes: Channel::new("lan_probes", capacity, registry),
            // Up to 896 KiB each: a short queue (a verdict storm loses evidence, not memory).
            evidence: Channel::new("evidence", capacity.min(64), registry),
        }
    }

    /// Routes any message to its channel.
    pub fn publish(&self, msg: Message) -> bool {
        match msg {
            Message::FlowBatch(m) => self.flows.publish(m),
            Message::Verdict(m) => self.verdicts.publish(m),
            Message::Alert(m) => self.alerts.publish(m),
            Message::Metrics(m) => self.metrics.publish(m),
            Message::Heartbeat(m) => self.heartbeats.publish(m),
            Message::PolicyUpdate(m) => self.policy.publish(m),
            Message::ModelUpdate(m) => self.models.publish(m),
            Message::SettingsUpdate(m) => self.settings.publish(m),
            Message::BlockTable(m) => self.block_tables.publish(m),
            Message::Unblock(m) => self.unblocks.publish(m),
            Message::VerdictOutcome(m) => self.verdict_outcomes.publish(m),
            Message::NeighbourTable(m) => self.neighbour_tables.publish(m),
            Message::LanProbes(m) => self.lan_probes.publish(m),
            Message::Evidence(m) => self.evidence.publish(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_channel_drops_and_counts_instead_of_blocking() {
        let r = Registry::new();
        let bus = LocalBus::new(2, &r);
        let hb = |n: u64| Heartbeat {
            node: "n".into(),
            role: gatewarden_proto::role::Role::All,
            version: "v".into(),
            uptime_s: n,
            sent_ns: 0,
        };
        assert!(bus.publish(Message::Heartbeat(hb(1))));
        assert!(bus.publish(Message::Heartbeat(hb(2))));
        assert!(!bus.publish(Message::Heartbeat(hb(3))));
        assert_eq!(bus.heartbeats.dropped(), 1);
        assert_eq!(r.snapshot()["gatewarden_bus_dropped_total{kind=heartbeat}"], 1.0);
        assert_eq!(r.snapshot()["gatewarden_bus_sent_total{kind=heartbeat}"], 2.0);
        let rx = bus.heartbeats.receiver();
        assert_eq!(rx.try_recv().unwrap().uptime_s, 1);
        assert_eq!(rx.try_recv().unwrap().uptime_s, 2);
        assert!(rx.try_recv().is_err());
    }
}
