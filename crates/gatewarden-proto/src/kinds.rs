//! The one table of message kinds. A kind is a topic level
//! (`gatewarden/v1/<node>/<kind>`) and a broker ACL line; whether it is
//! sealed end to end, for whom, whether it is spooled until acknowledged and
//! whether a router-only node mirrors it to the broker are properties of the
//! kind, written once here. The MQTT layer, the Mosquitto ACL that `pki
//! mosquitto-conf` writes and the decoder's checks all read this table, so a
//! new kind cannot be allowed in one place and forgotten in another.

use crate::role::CertRole;
use CertRole::{Detector, Integration, Monitor, Operator, Router};

/// The first two levels of every fleet topic: `gatewarden/v1/<node>/<kind>`.
pub const TOPIC_PREFIX: &str = "gatewarden/v1";

/// Flows a router saw, for the detector (and the monitor's traffic matrix).
pub const FLOW_BATCH: &str = "flow_batch";
/// A detector's decision to block, for the routers.
pub const VERDICT: &str = "verdict";
/// Something an operator should see.
pub const ALERT: &str = "alert";
/// A node's counters.
pub const METRICS: &str = "metrics";
/// A node's liveness and role.
pub const HEARTBEAT: &str = "heartbeat";
/// `online`/`offline`, retained (the broker's last will).
pub const STATUS: &str = "status";
/// A node's envelope key announcement.
pub const KEY: &str = "key";
/// "I have these message ids from you."
pub const ACK: &str = "ack";
/// Group policy from the monitor.
pub const POLICY_UPDATE: &str = "policy_update";
/// A model uploaded at the monitor, for the detectors.
pub const MODEL_UPDATE: &str = "model_update";
/// Settings changed on the status page.
pub const SETTINGS_UPDATE: &str = "settings_update";
/// A router's current blocks.
pub const BLOCK_TABLE: &str = "block_table";
/// An operator asked the monitor to lift a block.
pub const UNBLOCK: &str = "unblock";
/// What a router did with a verdict (blocked, or why not).
pub const VERDICT_OUTCOME: &str = "verdict_outcome";
/// A router's neighbour table (IP ↔ MAC), for the monitor's MAC group members.
pub const NEIGHBOUR_TABLE: &str = "neighbour_table";
/// ARP/neighbour-discovery requests a router saw, for the detector's LAN-mapping check.
pub const LAN_PROBES: &str = "lan_probes";
/// The first packets behind an alert, from the router that saw them, for the monitor's evidence pcaps.
pub const EVIDENCE: &str = "evidence";

/// Everything the fleet needs to know about one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// The topic level.
    pub name: &'static str,
    /// Certificate roles the broker lets publish it (on their own node's topic).
    pub published_by: &'static [CertRole],
    /// Certificate roles that subscribe to it (the monitor reads every kind; see [`acl_for`]).
    pub read_by: &'static [CertRole],
    /// Sealed end to end (signed and encrypted) for these roles; empty: TLS and the ACL only.
    pub sealed_for: &'static [CertRole],
    /// Spooled on disk until acknowledged (survives broker outages and restarts).
    pub durable: bool,
    /// A router-only node also sends it to the broker (not only to its in-process bus).
    pub mirrored: bool,
}

const ALL_NODES: &[CertRole] = &[Router, Detector, Monitor];

/// Every kind, in topic order.
pub const TABLE: [KindSpec; 17] = [
    KindSpec {
        name: FLOW_BATCH,
        published_by: &[Router],
        read_by: &[Detector, Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: false,
    },
    KindSpec {
        name: VERDICT,
        published_by: &[Detector],
        read_by: &[Router],
        sealed_for: &[Router],
        durable: true,
        mirrored: false,
    },
    KindSpec {
        name: ALERT,
        published_by: ALL_NODES,
        read_by: &[Monitor],
        sealed_for: &[],
        durable: true,
        mirrored: true,
    },
    KindSpec {
        name: METRICS,
        published_by: ALL_NODES,
        read_by: &[Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
    KindSpec {
        name: HEARTBEAT,
        published_by: ALL_NODES,
        read_by: &[Monitor, Operator],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
    // An integration (Home Assistant) reads it: the discovery configs name
    // it as their availability topic.
    KindSpec {
        name: STATUS,
        published_by: ALL_NODES,
        read_by: &[Monitor, Operator, Integration],
        sealed_for: &[],
        durable: false,
        mirrored: false,
    },
    KindSpec {
        name: KEY,
        published_by: ALL_NODES,
        read_by: ALL_NODES,
        sealed_for: &[],
        durable: false,
        mirrored: false,
    },
    KindSpec {
        name: ACK,
        published_by: ALL_NODES,
        read_by: ALL_NODES,
        sealed_for: &[],
        durable: false,
        mirrored: false,
    },
    KindSpec {
        name: POLICY_UPDATE,
        published_by: &[Monitor],
        read_by: &[Router],
        sealed_for: &[Router],
        durable: true,
        mirrored: false,
    },
    KindSpec {
        name: MODEL_UPDATE,
        published_by: &[Monitor],
        read_by: &[Detector],
        sealed_for: &[Detector],
        durable: true,
        mirrored: false,
    },
    KindSpec {
        name: SETTINGS_UPDATE,
        published_by: &[Monitor],
        read_by: &[Router, Detector],
        sealed_for: &[Detector, Router],
        durable: true,
        mirrored: false,
    },
    KindSpec {
        name: BLOCK_TABLE,
        published_by: &[Router],
        read_by: &[Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
    KindSpec {
        name: UNBLOCK,
        published_by: &[Monitor],
        read_by: &[Router],
        sealed_for: &[Router],
        durable: true,
        mirrored: false,
    },
    KindSpec {
        name: VERDICT_OUTCOME,
        published_by: &[Router],
        read_by: &[Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
    // Not sealed: like block tables, neither a secret from the broker nor a
    // command; the ACL keeps everyone but routers from publishing one, and
    // the receiver checks the table names its sender. Best effort: the next
    // one comes within 15 s.
    KindSpec {
        name: NEIGHBOUR_TABLE,
        published_by: &[Router],
        read_by: &[Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
    // Like flow batches: plain (TLS + ACL), lossy, only for the detector.
    KindSpec {
        name: LAN_PROBES,
        published_by: &[Router],
        read_by: &[Detector],
        sealed_for: &[],
        durable: false,
        mirrored: false,
    },
    // Like verdict outcomes: plain (TLS + ACL; packets a router saw are no
    // secret from the broker of its own fleet), the receiver checks the body
    // names its sender; best effort, and a router-only node mirrors it to
    // the broker because its monitor is elsewhere.
    KindSpec {
        name: EVIDENCE,
        published_by: &[Router],
        read_by: &[Monitor],
        sealed_for: &[],
        durable: false,
        mirrored: true,
    },
];

/// The table's row for `kind` (`None`: no such kind: drop the message).
pub fn spec(kind: &str) -> Option<&'static KindSpec> {
    TABLE.iter().find(|k| k.name == kind)
}

/// Whether `kind` travels sealed end to end.
pub fn sealed(kind: &str) -> bool {
    spec(kind).is_some_and(|k| !k.sealed_for.is_empty())
}

/// Whether `kind` is spooled until acknowledged.
pub fn durable(kind: &str) -> bool {
    spec(kind).is_some_and(|k| k.durable)
}

/// Whether a router-only node mirrors `kind` to the broker.
pub fn mirrored(kind: &str) -> bool {
    spec(kind).is_some_and(|k| k.mirrored)
}

/// Roles a sealed `kind` sent to every node is sealed for.
pub fn sealed_for(kind: &str) -> &'static [CertRole] {
    spec(kind).map_or(&[], |k| k.sealed_for)
}

/// Kinds the MQTT layer sends on its own (liveness, key announcements,
/// acknowledgements), as opposed to the messages of a node's services.
pub const TRANSPORT: [&str; 3] = [STATUS, KEY, ACK];

/// Kinds a node's services publish (everything but [`TRANSPORT`]): the MQTT
/// layer keeps one "published" counter for each, so every series exists from
/// the start.
pub fn service_kinds() -> Vec<&'static str> {
    TABLE.iter().map(|k| k.name).filter(|k| !TRANSPORT.contains(k)).collect()
}

/// Plain (unsealed) kinds whose body names the sending node, which the
/// receiver checks against the topic's node level (no signature vouches for
/// them): all unsealed kinds but the retained status and the key
/// announcement, which the certificate itself vouches for.
pub fn claims_its_node(kind: &str) -> bool {
    spec(kind).is_some_and(|k| k.sealed_for.is_empty() && k.name != STATUS && k.name != KEY)
}

/// Kinds a certificate role may publish.
pub fn published_by(role: CertRole) -> Vec<&'static str> {
    TABLE.iter().filter(|k| k.published_by.contains(&role)).map(|k| k.name).collect()
}

/// Kinds a certificate role subscribes to.
pub fn read_by(role: CertRole) -> Vec<&'static str> {
    TABLE.iter().filter(|k| k.read_by.contains(&role)).map(|k| k.name).collect()
}

/// The broker ACL of a certificate role: kinds it may write on its own node's
/// topics, and topic filters (below `gatewarden/v1/`) it may read. The
/// monitor reads everything (`#`): the fleet view shows every node.
pub fn acl_for(role: CertRole) -> (Vec<&'static str>, Vec<String>) {
    let read = match role {
        Monitor => vec!["#".to_string()],
        Broker => Vec::new(),
        r => read_by(r).into_iter().map(|k| format!("+/{k}")).collect(),
    };
    (published_by(role), read)
}

use CertRole::Broker;

/// The JSON mirror for integrations (Home Assistant, Node-RED, Filebeat …):
/// `gatewarden/v1/<node>/json/<what>`, plain JSON any MQTT client reads.
/// These are not message kinds (nothing in the fleet consumes them), so
/// they are not rows of [`TABLE`]; their ACL lines come from [`json_acl`].
pub const JSON_LEVEL: &str = "json";
/// Each stored alert as a Suricata EVE object.
pub const JSON_ALERT: &str = "alert";
/// The node's key numbers, every `[mqtt] json_interval_s`.
pub const JSON_METRICS: &str = "metrics";
/// Retained: nodes online, blocked sources, alerts per minute, version.
pub const JSON_STATE: &str = "state";
/// Everything below a node's `json/` level.
pub const JSON_TOPICS: [&str; 3] = [JSON_ALERT, JSON_METRICS, JSON_STATE];
/// Home Assistant's default MQTT discovery prefix.
pub const HA_DISCOVERY_PREFIX: &str = "homeassistant";
/// Certificate roles that may publish the mirror of their own node: a
/// monitor, and an all-in-one gateway (which joins with a router certificate).
pub const JSON_PUBLISHERS: [CertRole; 2] = [Router, Monitor];

/// `gatewarden/v1/<node>/json/<what>`.
pub fn json_topic(node: &str, what: &str) -> String {
    format!("{TOPIC_PREFIX}/{node}/{JSON_LEVEL}/{what}")
}

/// The `<node_id>` level of a node's Home Assistant discovery topics
/// (`homeassistant/sensor/<node_id>/<object_id>/config`); HA allows
/// `[a-zA-Z0-9_-]`, which is what a valid node id is made of.
pub fn ha_node_id(node: &str) -> String {
    format!("gatewarden_{node}")
}

/// The broker ACL of the JSON mirror for a certificate `role` held by `node`:
/// (topics it may write, filters it may read), each a full topic. Publishers
/// write only their own node's mirror and discovery configs; an integration
/// reads every node's mirror and discovery and writes nothing. Read rights on
/// fleet kinds (an integration reads `+/status`) come from [`acl_for`].
pub fn json_acl(role: CertRole, node: &str) -> (Vec<String>, Vec<String>) {
    if JSON_PUBLISHERS.contains(&role) {
        let mut w: Vec<String> = JSON_TOPICS.iter().map(|t| json_topic(node, t)).collect();
        w.push(format!("{HA_DISCOVERY_PREFIX}/sensor/{}/+/config", ha_node_id(node)));
        (w, Vec::new())
    } else if role == Integration {
        (Vec::new(), vec![format!("{TOPIC_PREFIX}/+/{JSON_LEVEL}/#"), format!("{HA_DISCOVERY_PREFIX}/#")])
    } else {
        (Vec::new(), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_kinds_and_claimed_kinds_come_from_the_table() {
        assert_eq!(service_kinds().len(), TABLE.len() - TRANSPORT.len());
        assert!(service_kinds().contains(&UNBLOCK) && !service_kinds().contains(&ACK));
        for k in [FLOW_BATCH, ALERT, METRICS, HEARTBEAT, BLOCK_TABLE, VERDICT_OUTCOME, NEIGHBOUR_TABLE, EVIDENCE, ACK] {
            assert!(claims_its_node(k), "{k}");
        }
        for k in [VERDICT, STATUS, KEY, POLICY_UPDATE, MODEL_UPDATE, SETTINGS_UPDATE, UNBLOCK, "nonsense"] {
            assert!(!claims_its_node(k), "{k}");
        }
    }

    #[test]
    fn every_message_has_a_row_and_names_are_unique() {
        let mut names: Vec<&str> = TABLE.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        for m in crate::messages::tests::samples() {
            assert!(spec(m.kind()).is_some(), "{} has no row", m.kind());
        }
        assert!(spec("nonsense").is_none() && !sealed("nonsense") && !durable("nonsense"));
    }

    #[test]
    fn sealed_kinds_are_published_by_one_role_and_read_only_by_those_they_are_sealed_for() {
        for k in TABLE.iter().filter(|k| !k.sealed_for.is_empty()) {
            assert_eq!(k.published_by.len(), 1, "{}", k.name);
            assert!(k.read_by.iter().all(|r| k.sealed_for.contains(r)), "{}", k.name);
            assert!(k.durable, "{}: a sealed command must not be lost in an outage", k.name);
        }
    }

    /// The broker ACL that shipped before the table (pki.rs `acl_for`), kept
    /// as the contract: deriving it must not widen or narrow any role's rights.
    #[test]
    fn the_derived_acl_is_the_one_fleets_run() {
        let (w, r) = acl_for(Router);
        assert_eq!(
            sorted(w),
            sorted(vec![
                "flow_batch",
                "alert",
                "heartbeat",
                "metrics",
                "status",
                "key",
                "ack",
                "block_table",
                "verdict_outcome",
                "neighbour_table",
                "lan_probes",
                "evidence"
            ])
        );
        assert_eq!(
            sorted_s(r),
            sorted_s(["+/verdict", "+/policy_update", "+/settings_update", "+/unblock", "+/key", "+/ack"])
        );
        let (w, r) = acl_for(Detector);
        assert_eq!(sorted(w), sorted(vec!["verdict", "alert", "heartbeat", "metrics", "status", "key", "ack"]));
        assert_eq!(
            sorted_s(r),
            sorted_s(["+/flow_batch", "+/model_update", "+/settings_update", "+/key", "+/ack", "+/lan_probes"])
        );
        let (w, r) = acl_for(Monitor);
        assert_eq!(
            sorted(w),
            sorted(vec![
                "policy_update",
                "model_update",
                "settings_update",
                "unblock",
                "alert",
                "heartbeat",
                "metrics",
                "status",
                "key",
                "ack"
            ])
        );
        assert_eq!(r, ["#"]);
        let (w, r) = acl_for(Operator);
        assert!(w.is_empty());
        assert_eq!(sorted_s(r), sorted_s(["+/status", "+/heartbeat"]));
        assert_eq!(acl_for(Broker), (vec![], vec![]));
        let (w, r) = acl_for(Integration);
        assert!(w.is_empty(), "an integration publishes nothing");
        assert_eq!(r, ["+/status"], "only the availability topic of the fleet's kinds");
    }

    #[test]
    fn the_json_mirror_acl_reads_only_json_and_discovery_and_writes_only_its_own() {
        let (w, r) = json_acl(Integration, "ha");
        assert!(w.is_empty());
        assert_eq!(r, ["gatewarden/v1/+/json/#", "homeassistant/#"]);
        for role in [Router, Monitor] {
            let (w, r) = json_acl(role, "gw");
            assert!(r.is_empty());
            assert_eq!(
                w,
                [
                    "gatewarden/v1/gw/json/alert",
                    "gatewarden/v1/gw/json/metrics",
                    "gatewarden/v1/gw/json/state",
                    "homeassistant/sensor/gatewarden_gw/+/config"
                ]
            );
        }
        for role in [Detector, Operator, Broker] {
            assert_eq!(json_acl(role, "x"), (vec![], vec![]), "{role}");
        }
        // No control kind is below `json/`: a json/# reader cannot read one.
        for k in TABLE.iter() {
            assert_ne!(k.name, JSON_LEVEL);
        }
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v
    }
    fn sorted_s<S: ToString>(v: impl IntoIterator<Item = S>) -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(|s| s.to_string()).collect();
        v.sort_unstable();
        v
    }
}
