//! The node bus over MQTT: rumqttc with rustls on `ring`, client
//! certificates required, to a Mosquitto broker. rumqttc's internal tokio
//! runtime lives only here (its blocking `Client`/`Connection` API on two
//! named threads); nothing else in gatewarden sees tokio.
//!
//! Topics are `gatewarden/v1/<sender-node>/<kind>`:
//!
//! | kind | QoS | payload | who publishes |
//! |---|---|---|---|
//! | `flow_batch` | 0 | plain frame | router |
//! | `verdict` | 1 | sealed envelope, spooled until acked | detector |
//! | `policy_update` | 1 | sealed envelope, spooled until acked | monitor |
//! | `model_update` | 1 | sealed envelope, spooled until acked | monitor |
//! | `settings_update` | 1 | sealed envelope, spooled until acked | monitor |
//! | `unblock` | 1 | sealed envelope for one router, spooled until acked | monitor |
//! | `alert` | 1 | plain frame, spooled until acked | detector, router, monitor |
//! | `heartbeat`, `metrics` | 0 | plain frame | every node |
//! | `block_table` | 0 | plain frame | router |
//! | `verdict_outcome` | 0 | plain frame: whether a verdict's block is in the kernel, or why not | router |
//! | `neighbour_table` | 0 | plain frame: the router's IP ↔ MAC table, for MAC group members | router |
//! | `status` | 1, retained | `online` / `offline` (last will) | every node |
//! | `key` | 1, retained | signed [`gatewarden_secure::Announce`] | every node |
//! | `ack` | 1 | ids received, for one sender | receivers of spooled kinds |
//!
//! Plain frames are protected by mutual TLS and the broker's ACL (each role
//! may publish only its own kinds under its own node id); verdicts and policy
//! updates are additionally end-to-end sealed ([`gatewarden_secure`]), so neither
//! the broker nor another node can forge or alter them.
//!
//! # Identity of plain messages
//!
//! The ACL fixes a topic's node level to the publisher's certificate CN, but
//! a plain message also names a node inside (`FlowBatch.node`, `Alert.node`,
//! `MetricsSample.node`, `Heartbeat.node` and its role, `BlockTable.node`,
//! `NeighbourTable.node`).
//! A receiver takes it only if that claim is the topic's node
//! ([`check_claim`]); the one exception is a detector's traffic alert, filed
//! under the router whose flows raised it, which must name a node whose
//! certificate says router. Anything else is dropped, counted in
//! `gatewarden_bus_identity_mismatch_total{kind}` and raises a
//! `ChannelAbuse` alert. Acknowledgements are held to the same rule: a node
//! may acknowledge only what was sent to it ([`may_ack`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};

use super::spool::Spool;
use super::transport::Publisher;
use super::LocalBus;
use crate::config::{BusConfig, MqttConfig};
use gatewarden_core::logfile::RotatingLog;
use gatewarden_core::metrics::{Counter, Gauge, Registry};
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::Message;
use gatewarden_secure::anomaly::ChannelWatch;
use gatewarden_secure::certs::{CaVerifier, CertRole, Identity};
use gatewarden_secure::{envelope, Announced, Envelope, PayloadKind, Rejection, SecureChannel, SecureConfig};

/// Topic prefix and version.
pub const TOPIC_PREFIX: &str = gatewarden_proto::kinds::TOPIC_PREFIX;
/// Largest MQTT packet sent or accepted.
pub const MAX_PACKET: usize = 8 << 20;
/// Receivers remember this many (sender, message id) pairs for de-duplication.
pub const DEDUP_CAPACITY: usize = 262_144;

/// The topic for `kind` messages from `node`.
pub fn topic(node: &str, kind: &str) -> String {
    format!("{TOPIC_PREFIX}/{node}/{kind}")
}

/// Splits a topic into (node, kind).
pub fn parse_topic(t: &str) -> Option<(&str, &str)> {
    let rest = t.strip_prefix(TOPIC_PREFIX)?.strip_prefix('/')?;
    let (node, kind) = rest.split_once('/')?;
    (!node.is_empty() && !kind.contains('/')).then_some((node, kind))
}

/// What travels in a plain or sealed MQTT payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameBody {
    /// A message (version byte + postcard), protected by TLS and the ACL only.
    Plain(Vec<u8>),
    /// A [`gatewarden_secure::Envelope`] whose plaintext is the message.
    Sealed(Vec<u8>),
}

/// An MQTT payload: message id (de-duplication) + body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Sender-unique id; for sealed bodies it must equal the envelope's `msg_id`.
    pub id: u64,
    /// The message.
    pub body: FrameBody,
}

/// "I have these ids from you" (payload of `…/<receiver>/ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBatch {
    /// The sender being acknowledged.
    pub to: String,
    /// Message ids received (stored or seen before).
    pub ids: Vec<u64>,
}

fn sealed_kind(kind: &str) -> bool {
    gatewarden_proto::kinds::sealed(kind)
}

fn durable_kind(kind: &str) -> bool {
    gatewarden_proto::kinds::durable(kind)
}

/// Which roles a sealed kind sent to everyone is sealed for.
fn sealed_recipients(kind: &str) -> &'static [CertRole] {
    gatewarden_proto::kinds::sealed_for(kind)
}

/// Which roles take a kind sent to every node (`to: None`), and so may acknowledge it.
fn broadcast_receivers(kind: &str) -> &'static [CertRole] {
    match kind {
        "alert" => &[CertRole::Monitor],
        k if sealed_kind(k) => sealed_recipients(k),
        _ => &[],
    }
}

/// Whether `acker` (the node level of the `ack` topic, which the broker's ACL
/// binds to its certificate), holding a certificate with `acker_role` (if its
/// key announcement was seen), may acknowledge a spooled `kind` message sent
/// to `to` (`None`: to every node that takes the kind).
///
/// Without this any node could acknowledge, and so silently drop, another
/// node's queued verdicts or alerts.
pub fn may_ack(kind: &str, to: Option<&str>, acker: &str, acker_role: Option<CertRole>) -> bool {
    match to {
        Some(to) => to == acker,
        None => acker_role.is_some_and(|r| broadcast_receivers(kind).contains(&r)),
    }
}

/// At most 64 characters of a name from the wire, for messages (`{:?}` escapes control characters).
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What [`check_claim`] found about the node a plain message names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim is the sender's (or a detector's alert for a router).
    Fine,
    /// The message claims another node (or role) than its sender's certificate: drop it.
    Mismatch(String),
    /// Cannot tell yet (a certificate role not announced yet): drop it unacknowledged, so it is resent.
    Unknown(String),
}

/// Topic filters a node running `role` subscribes to: what each role it runs
/// reads in the one kinds table (the broker ACL comes from the same rows).
fn subscriptions(role: gatewarden_proto::role::Role) -> Vec<String> {
    use gatewarden_proto::kinds::{read_by, POLICY_UPDATE, STATUS, TRANSPORT, UNBLOCK};
    use gatewarden_proto::role::CertRole;
    use gatewarden_proto::role::Role;
    let mut kinds: Vec<&str> = vec!["key", "ack"];
    if role == Role::All {
        // An all-in-one gateway runs its own detector and monitor in
        // process; from the fleet it takes only group policy and unblocks.
        kinds.extend([POLICY_UPDATE, UNBLOCK]);
        return kinds.into_iter().map(|k| format!("{TOPIC_PREFIX}/+/{k}")).collect();
    }
    // What each role this node runs reads, from the one kinds table (the
    // broker's ACL comes from the same rows).
    for (runs, role) in [
        (role.runs_router(), CertRole::Router),
        (role.runs_detector(), CertRole::Detector),
        (role.runs_monitor(), CertRole::Monitor),
    ] {
        if runs {
            for k in read_by(role) {
                if !TRANSPORT.contains(&k) || k == STATUS {
                    kinds.push(k);
                }
            }
        }
    }
    kinds.sort_unstable();
    kinds.dedup();
    kinds.into_iter().map(|k| format!("{TOPIC_PREFIX}/+/{k}")).collect()
}

/// [`subscriptions`] with a detector's flow-batch filter moved into the
/// shared subscription `$share/<group>/…` (`mqtt.shared_group`), so the
/// broker hands each batch to one detector of the group. The broker delivers
/// with the original topic, so receiving is unchanged.
fn subscriptions_shared(role: gatewarden_proto::role::Role, group: &str) -> Vec<String> {
    let share = !group.is_empty() && role == gatewarden_proto::role::Role::Detector;
    subscriptions(role)
        .into_iter()
        .map(|t| if share && t.ends_with("/flow_batch") { format!("$share/{group}/{t}") } else { t })
        .collect()
}

/// Checks the node (and role) a plain message names against `from`, the
/// topic's node level, which the broker's ACL binds to the sender's
/// certificate CN. `role_of` gives a node's certificate role from its key
/// announcement, if seen.
pub fn check_claim(from: &str, msg: &Message, role_of: impl Fn(&str) -> Option<CertRole>) -> Claim {
    use gatewarden_proto::messages::AttackKind;
    let own = |claimed: &str, what: &str| {
        if claimed == from {
            Claim::Fine
        } else {
            Claim::Mismatch(format!("{what} from {from} claims node {:?}", short(claimed)))
        }
    };
    match msg {
        Message::FlowBatch(b) => own(&b.node, "flow batch"),
        Message::Metrics(m) => own(&m.node, "metrics"),
        Message::BlockTable(t) => own(&t.node, "block table"),
        Message::VerdictOutcome(o) => own(&o.node, "verdict outcome"),
        Message::NeighbourTable(t) => own(&t.node, "neighbour table"),
        Message::LanProbes(p) => own(&p.node, "LAN probes"),
        Message::Evidence(e) => own(&e.node, "evidence"),
        Message::Heartbeat(h) => match own(&h.node, "heartbeat") {
            Claim::Fine => match role_of(from) {
                Some(r) if r != gatewarden_proto::role::cert_role_for(h.role) => {
                    Claim::Mismatch(format!("heartbeat from {from} (a {r} certificate) claims role {}", h.role))
                }
                _ => Claim::Fine,
            },
            other => other,
        },
        Message::Alert(a) if a.node == from => Claim::Fine,
        Message::Alert(a) => {
            let traffic = !matches!(a.kind, AttackKind::System | AttackKind::ChannelAbuse | AttackKind::LinkHealth);
            match (traffic, role_of(from), role_of(&a.node)) {
                // A detector files its traffic alerts under the router whose flows raised them.
                (true, Some(CertRole::Detector), Some(CertRole::Router)) => Claim::Fine,
                (true, None, _) | (true, Some(CertRole::Detector), None) => Claim::Unknown(format!(
                    "alert from {from} for {:?}: certificate roles not announced yet",
                    short(&a.node)
                )),
                _ => Claim::Mismatch(format!("{} alert from {from} claims node {:?}", a.kind.as_str(), short(&a.node))),
            }
        }
        // Sealed kinds: the envelope names and proves the sender.
        _ => Claim::Fine,
    }
}

/// Which role may publish a sealed kind.
fn sealed_sender(kind: &str) -> CertRole {
    if kind == "verdict" {
        CertRole::Detector
    } else {
        CertRole::Monitor
    }
}

/// Everything needed to join the bus, from `[mqtt]` and `node_id`.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// This node's id (must be the certificate's CN).
    pub node: String,
    /// What this process consumes.
    pub role: gatewarden_proto::role::Role,
    /// `host:port`.
    pub broker: String,
    /// CA, certificate, key (PEM).
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's key.
    pub key: PathBuf,
    /// Spool and audit log directory.
    pub spool_dir: PathBuf,
    /// Spool bound in messages.
    pub spool_max_messages: usize,
    /// Spool bound in bytes.
    pub spool_max_bytes: usize,
    /// Resend period for unacknowledged messages.
    pub resend_after: Duration,
    /// Secure channel limits.
    pub secure: SecureConfig,
    /// MQTT keep-alive.
    pub keepalive: Duration,
    /// Audit log rotation size.
    pub audit_max_bytes: u64,
    /// Audit logs kept.
    pub audit_keep: usize,
    /// Capacity of the inbound channels.
    pub channel_capacity: usize,
    /// `mqtt.shared_group`: a detector takes flow batches through `$share/<group>/…`; empty: off.
    pub shared_group: String,
}

impl MqttSettings {
    /// From the config file.
    pub fn from_config(
        node: &str,
        m: &MqttConfig,
        bus: &BusConfig,
        role: gatewarden_proto::role::Role,
    ) -> MqttSettings {
        MqttSettings {
            node: node.to_string(),
            role,
            broker: m.broker.clone(),
            ca: m.ca.clone(),
            cert: m.cert.clone(),
            key: m.key.clone(),
            spool_dir: m.spool_dir.clone(),
            spool_max_messages: m.spool_max_messages,
            spool_max_bytes: m.spool_max_bytes,
            resend_after: Duration::from_millis(m.resend_after_ms),
            secure: SecureConfig {
                max_skew: Duration::from_secs(m.max_clock_skew_s),
                rekey_interval: Duration::from_secs(m.rekey_interval_s),
                ..SecureConfig::default()
            },
            keepalive: Duration::from_secs(m.keepalive_s),
            audit_max_bytes: m.audit_log_max_bytes,
            audit_keep: m.audit_log_keep,
            channel_capacity: bus.channel_capacity,
            shared_group: m.shared_group.clone(),
        }
    }
}

/// Everything a node needs to join the bus that can be checked before it
/// tries: the CA, its certificate and key (matching, signed by the CA, named
/// `node_id`, for `role` when known) and the broker's `host:port`. `run`
/// checks it at start and `config check` ahead of it, with the same messages.
pub fn check_identity(s: &MqttSettings, role: Option<gatewarden_proto::role::Role>) -> anyhow::Result<JoinCheck> {
    let ca =
        CaVerifier::load(&s.ca).context("mqtt.ca: the fleet CA certificate (make it with `gatewarden pki init`)")?;
    let id = Identity::load(&s.cert, &s.key, &ca)
        .context("mqtt.cert/mqtt.key: this node's certificate (issue it with `gatewarden pki issue`)")?;
    if id.node != s.node {
        bail!(
            "the certificate {} is for node {:?} but node_id is {:?}: set node_id to the certificate's name or issue a certificate for {:?}",
            s.cert.display(),
            id.node,
            s.node,
            s.node
        );
    }
    if let Some(role) = role {
        let wanted = gatewarden_proto::role::cert_role_for(role);
        if id.role != wanted {
            bail!(
                "the certificate {} is for role {} but this process runs {} (it needs a {} certificate)",
                s.cert.display(),
                id.role,
                role,
                wanted
            );
        }
    }
    let tls = tls_config(&s.ca, &s.cert, &s.key)?;
    let (host, port) = s
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("mqtt.broker {:?} is not host:port", s.broker))?;
    Ok(JoinCheck { ca, id, tls, host, port })
}

/// What [`check_identity`] loaded, for the bus to start with.
pub struct JoinCheck {
    /// The fleet CA.
    pub ca: CaVerifier,
    /// This node's certificate and key.
    pub id: Identity,
    /// TLS to the broker.
    pub tls: rustls::ClientConfig,
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
}

/// A rustls client config on the `ring` provider with the fleet CA as the only root and our certificate.
pub fn tls_config(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading CA {}", ca.display()))? {
        roots.add(c.with_context(|| format!("parsing CA {}", ca.display()))?).context("adding the CA")?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the certificate and key do not form a usable client identity")
}

/// Online/offline transitions seen on `…/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// Whether it said `online` (false after `offline` or its last will).
    pub online: bool,
}

/// The (sender, message id) pairs already delivered, so a resend after a
/// lost ack is not delivered twice. Bounded by [`DEDUP_CAPACITY`] in all; at
/// the limit the oldest pair of the sender holding the most goes, so a node
/// sending fresh ids as fast as it can (a stolen certificate) pushes out its
/// own pairs, not the other nodes' (one shared first-in-first-out list let it
/// make their resends deliver twice).
#[derive(Default)]
struct Dedup {
    /// Sender → its pairs' ids, oldest first, and the same as a set.
    by_sender: HashMap<String, (VecDeque<u64>, HashSet<u64>)>,
    len: usize,
}

impl Dedup {
    fn contains(&self, k: &(String, u64)) -> bool {
        self.by_sender.get(&k.0).is_some_and(|(_, set)| set.contains(&k.1))
    }

    fn insert(&mut self, k: (String, u64)) {
        let (order, set) = self.by_sender.entry(k.0).or_default();
        if !set.insert(k.1) {
            return;
        }
        order.push_back(k.1);
        self.len += 1;
        while self.len > DEDUP_CAPACITY {
            // Senders are certificates the broker admitted: a few hundred at most.
            let Some(biggest) = self.by_sender.iter().max_by_key(|(_, (o, _))| o.len()).map(|(n, _)| n.clone()) else {
                break;
            };
            let Some((order, set)) = self.by_sender.get_mut(&biggest) else { break };
            if let Some(old) = order.pop_front() {
                set.remove(&old);
                self.len -= 1;
            }
            if order.is_empty() {
                self.by_sender.remove(&biggest);
            }
        }
    }
}

struct Counters {
    connected: Gauge,
    connects: Counter,
    connect_errors: Counter,
    published: HashMap<&'static str, Counter>,
    dropped_offline: Counter,
    received: Counter,
    duplicates: Counter,
    malformed: Counter,
    inbound_dropped: Counter,
    abuse_alerts: Counter,
    anomalies: Counter,
    refused: HashMap<&'static str, Counter>,
    resent: Counter,
    identity_mismatch: HashMap<&'static str, Counter>,
}

struct Shared {
    node: String,
    role: gatewarden_proto::role::Role,
    client: Client,
    connected: AtomicBool,
    secure: Mutex<SecureChannel>,
    spool: Mutex<Spool>,
    inbound: LocalBus,
    status_tx: async_channel::Sender<NodeStatus>,
    dedup: Mutex<Dedup>,
    acks: Mutex<HashMap<String, Vec<u64>>>,
    watch: Mutex<ChannelWatch>,
    abuse_last: Mutex<HashMap<(String, &'static str), Instant>>,
    audit: Mutex<Option<RotatingLog>>,
    resend_after: Duration,
    counters: Counters,
    /// The fleet CA certificate; `ca.crl` beside it is re-read when it changes.
    ca_path: PathBuf,
    /// `mqtt.shared_group` (empty: off).
    shared_group: String,
}

/// How often a running node looks at `ca.crl` for a new revocation list.
pub const CRL_CHECK_INTERVAL: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection to the broker; implements [`Publisher`] and feeds what it receives into a [`LocalBus`].
pub struct MqttBus {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    status_rx: async_channel::Receiver<NodeStatus>,
}

impl std::fmt::Debug for MqttBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBus").field("node", &self.shared.node).finish_non_exhaustive()
    }
}

impl MqttBus {
    /// Loads the identity, opens the spool and starts connecting (in the background; reconnects forever).
    pub fn start(
        s: &MqttSettings,
        inbound: LocalBus,
        registry: &Arc<Registry>,
        shutdown: Shutdown,
    ) -> anyhow::Result<MqttBus> {
        let JoinCheck { ca, id, tls, host, port } = check_identity(s, Some(s.role))?;
        let mut opts = MqttOptions::new(s.node.clone(), host, port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
        opts.set_keep_alive(s.keepalive);
        opts.set_clean_session(false);
        opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        opts.set_inflight(256);
        opts.set_last_will(LastWill::new(topic(&s.node, "status"), "offline", QoS::AtLeastOnce, true));
        let (client, mut connection) = Client::new(opts, 8192);
        // Small messages (verdicts) must not wait for Nagle + delayed ACK:
        // with it on, a sealed verdict could sit ~40 ms in the socket.
        let mut net = connection.eventloop.network_options();
        net.set_tcp_nodelay(true);
        connection.eventloop.set_network_options(net);
        let spool = Spool::open(&s.spool_dir, s.spool_max_messages, s.spool_max_bytes, registry)?;
        let audit = match RotatingLog::open(&s.spool_dir.join("channel-audit.log"), s.audit_max_bytes, s.audit_keep) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no channel audit log; rejections are still counted and alerted");
                None
            }
        };
        let (status_tx, status_rx) = async_channel::bounded(1024);
        let published = gatewarden_proto::kinds::service_kinds()
            .into_iter()
            .map(|k| {
                (
                    k,
                    registry.counter(
                        "gatewarden_mqtt_published_total",
                        "Messages handed to the MQTT client, by kind.",
                        &[("kind", k)],
                    ),
                )
            })
            .collect();
        let counters = Counters {
            connected: registry.gauge("gatewarden_mqtt_connected", "1 while connected to the broker.", &[]),
            connects: registry.counter("gatewarden_mqtt_connects_total", "Successful broker connections.", &[]),
            connect_errors: registry.counter(
                "gatewarden_mqtt_connection_errors_total",
                "Broker connections that failed or broke (TLS refused, broker down, …).",
                &[],
            ),
            published,
            dropped_offline: registry.counter(
                "gatewarden_mqtt_dropped_total",
                "Best-effort messages (flow batches, heartbeats, metrics) dropped while the broker was unreachable.",
                &[],
            ),
            received: registry.counter("gatewarden_mqtt_received_total", "Messages received and accepted from the bus.", &[]),
            duplicates: registry.counter(
                "gatewarden_mqtt_duplicates_total",
                "Messages received again (resends after a lost ack or reconnect) and dropped by id.",
                &[],
            ),
            malformed: registry.counter("gatewarden_mqtt_malformed_total", "Payloads that were not valid frames or messages.", &[]),
            inbound_dropped: registry.counter(
                "gatewarden_mqtt_inbound_dropped_total",
                "Received messages not taken because a local channel was full (not acked, so resent).",
                &[],
            ),
            abuse_alerts: registry.counter(
                "gatewarden_channel_abuse_alerts_total",
                "ChannelAbuse alerts raised (rejections and channel anomalies; at most one per peer, reason and second).",
                &[],
            ),
            anomalies: registry.counter("gatewarden_channel_anomalies_total", "Channel anomalies (floods, odd sizes, rejection bursts).", &[]),
            resent: registry.counter(
                "gatewarden_mqtt_resent_total",
                "Spooled messages sent by the resend pass: after a reconnect or a missing peer key, or because the receiving node did not ack within resend_after_ms (receiver away, or the broker dropped them: an ACL denial still gets a PUBACK in MQTT 3.1.1).",
                &[],
            ),
            refused: ["tls", "connack"]
                .into_iter()
                .map(|r| {
                    (
                        r,
                        registry.counter(
                            "gatewarden_mqtt_refused_total",
                            "Connections the broker refused: tls (our certificate was not accepted) or connack (MQTT CONNECT refused).",
                            &[("reason", r)],
                        ),
                    )
                })
                .collect(),
            identity_mismatch: HashMap::new(),
        };
        let mut counters = counters;
        counters.identity_mismatch =
            gatewarden_proto::kinds::TABLE
            .iter()
            .map(|k| k.name)
            .filter(|k| gatewarden_proto::kinds::claims_its_node(k))
            .map(|k| {
                (
                    k,
                    registry.counter(
                        "gatewarden_bus_identity_mismatch_total",
                        "Plain messages dropped because they name another node (or role) than the sender's certificate, and acks for messages not sent to the acking node, by kind.",
                        &[("kind", k)],
                    ),
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            node: s.node.clone(),
            role: s.role,
            client,
            connected: AtomicBool::new(false),
            secure: Mutex::new(SecureChannel::new(id, ca, s.secure.clone(), registry)),
            spool: Mutex::new(spool),
            inbound,
            status_tx,
            dedup: Mutex::new(Dedup::default()),
            acks: Mutex::new(HashMap::new()),
            watch: Mutex::new(ChannelWatch::new(1024)),
            abuse_last: Mutex::new(HashMap::new()),
            audit: Mutex::new(audit),
            resend_after: s.resend_after,
            counters,
            ca_path: s.ca.clone(),
            shared_group: s.shared_group.clone(),
        });
        let mut threads = Vec::new();
        {
            let sh = shared.clone();
            let sd = shutdown.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("mqtt-events".into())
                    .spawn(move || event_loop(sh, connection, sd))
                    .context("spawning the MQTT thread")?,
            );
        }
        {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("mqtt-outbox".into())
                    .spawn(move || outbox_loop(sh, shutdown))
                    .context("spawning the MQTT outbox thread")?,
            );
        }
        Ok(MqttBus { shared, threads: Mutex::new(threads), status_rx })
    }

    /// Online/offline changes of other nodes (for the monitor).
    pub fn status_receiver(&self) -> async_channel::Receiver<NodeStatus> {
        self.status_rx.clone()
    }

    /// Messages waiting in the outbox.
    pub fn spooled(&self) -> usize {
        lock(&self.shared.spool).len()
    }

    /// Waits until connected, up to `timeout`; returns whether it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.shared.connected.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Says `offline` (retained), disconnects and joins the threads (after shutdown fired).
    pub fn stop(&self) {
        let sh = &self.shared;
        if sh.connected.load(Ordering::SeqCst) {
            let _ = sh.client.try_publish(topic(&sh.node, "status"), QoS::AtLeastOnce, true, "offline");
            flush_acks(sh);
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = sh.client.try_disconnect();
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl MqttBus {
    /// Publishes `payload` as is on `topic`, outside the node bus (the JSON
    /// mirror and Home Assistant discovery, `bus/json_mirror.rs`): QoS 1, no
    /// frame, not spooled. False when the broker is unreachable or the
    /// client's request queue is full: the mirror is best effort, the alert
    /// store and the node bus are the record.
    pub fn publish_raw(&self, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        let sh = &self.shared;
        sh.connected.load(Ordering::SeqCst)
            && sh.client.try_publish(topic.to_string(), QoS::AtLeastOnce, retain, payload).is_ok()
    }
}

impl Publisher for MqttBus {
    fn publish(&self, msg: Message) -> bool {
        self.shared.send(None, msg)
    }

    fn publish_to(&self, to: &str, msg: Message) -> bool {
        self.shared.send(Some(to), msg)
    }

    fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn send(&self, to: Option<&str>, msg: Message) -> bool {
        let kind = msg.kind();
        let payload = msg.encode();
        if durable_kind(kind) {
            let entry = {
                let mut spool = lock(&self.spool);
                match spool.push(kind, to, payload) {
                    Ok(id) => {
                        if self.connected.load(Ordering::SeqCst) {
                            spool.take_for_send(id)
                        } else {
                            None
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "cannot write the outbox spool; message lost (check disk space on mqtt.spool_dir)");
                        return false;
                    }
                }
            };
            if let Some(e) = entry {
                if !self.transmit(e.id, &e.kind, e.to.as_deref(), &e.payload) {
                    lock(&self.spool).mark_unsent(e.id);
                }
            }
            true
        } else if self.connected.load(Ordering::SeqCst) {
            let frame = envelope_frame(rand_core::RngCore::next_u64(&mut rand_core::OsRng), FrameBody::Plain(payload));
            let ok = self.client.try_publish(topic(&self.node, kind), QoS::AtMostOnce, false, frame).is_ok();
            if ok {
                if let Some(c) = self.counters.published.get(kind) {
                    c.inc();
                }
            } else {
                self.counters.dropped_offline.inc();
            }
            ok
        } else {
            self.counters.dropped_offline.inc();
            false
        }
    }

    /// Publishes one spooled entry (sealing it per recipient if needed); false if it could not go now.
    fn transmit(&self, id: u64, kind: &str, to: Option<&str>, payload: &[u8]) -> bool {
        let t = topic(&self.node, kind);
        let mut frames = Vec::new();
        if sealed_kind(kind) {
            let mut sc = lock(&self.secure);
            let recipients = match to {
                Some(r) => vec![r.to_string()],
                None => sealed_recipients(kind).iter().flat_map(|r| sc.peers_with_role(*r)).collect(),
            };
            for r in recipients {
                match sc.seal(&r, id, PayloadKind::Message, payload) {
                    Ok(env) => frames.push(envelope_frame(id, FrameBody::Sealed(env))),
                    Err(e) => tracing::debug!(error = %e, "verdict waits for the recipient's key"),
                }
            }
            if frames.is_empty() {
                return false;
            }
        } else {
            frames.push(envelope_frame(id, FrameBody::Plain(payload.to_vec())));
        }
        for f in frames {
            if self.client.try_publish(t.clone(), QoS::AtLeastOnce, false, f).is_err() {
                return false;
            }
        }
        if let Some(c) = self.counters.published.get(kind) {
            c.inc();
        }
        true
    }

    fn audit(&self, line: String) {
        if let Some(log) = lock(&self.audit).as_mut() {
            if let Err(e) = log.line(&line) {
                tracing::warn!(error = %format!("{e:#}"), "channel audit log write failed");
            }
        }
    }

    /// Counts nothing itself (the secure channel did); raises a rate-limited ChannelAbuse alert and audits.
    fn abuse(&self, peer: &str, what: &'static str, reason: String) {
        tracing::warn!(peer, what, %reason, "channel abuse: refused or anomalous bus traffic");
        self.audit(
            serde_json::json!({"ts": gatewarden_core::clock::rfc3339(gatewarden_core::clock::unix_now_ns()), "peer": peer, "what": what, "reason": reason})
                .to_string(),
        );
        {
            let mut last = lock(&self.abuse_last);
            let key = (peer.to_string(), what);
            if last.get(&key).is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            if last.len() >= 4096 {
                last.clear();
            }
            last.insert(key, Instant::now());
        }
        self.counters.abuse_alerts.inc();
        let now = gatewarden_core::clock::unix_now_ns();
        let alert = gatewarden_proto::messages::Alert::channel_abuse(
            self.node.as_str(),
            now,
            format!("{what} from {peer}: {reason}"),
        );
        if self.role.runs_monitor() {
            // Our own alerts would not come back to us over the broker.
            if self.role == gatewarden_proto::role::Role::All {
                // An all-in-one gateway also reports to the fleet's monitor.
                self.send(None, Message::Alert(alert.clone()));
            }
            self.inbound.publish(Message::Alert(alert));
        } else {
            self.send(None, Message::Alert(alert));
        }
    }

    fn rejected(&self, peer: &str, r: &Rejection) {
        let now = gatewarden_core::clock::unix_now_ns();
        if let Some(a) = lock(&self.watch).observe_rejection(peer, now) {
            self.counters.anomalies.inc();
            self.abuse(&a.peer, a.what, a.reason);
        }
        self.abuse(peer, r.reason.as_str(), r.detail.clone());
    }

    fn on_connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        self.counters.connected.set(1.0);
        self.counters.connects.inc();
        tracing::info!(node = %self.node, "connected to the MQTT broker");
        for t in subscriptions_shared(self.role, &self.shared_group) {
            let _ = self.client.try_subscribe(t, QoS::AtLeastOnce);
        }
        let announce = lock(&self.secure).announce();
        let _ = self.client.try_publish(topic(&self.node, "key"), QoS::AtLeastOnce, true, announce);
        let _ = self.client.try_publish(topic(&self.node, "status"), QoS::AtLeastOnce, true, "online");
        lock(&self.spool).mark_all_unsent();
    }

    fn on_publish(&self, t: &str, payload: &[u8]) {
        let Some((from, kind)) = parse_topic(t) else { return };
        let now = gatewarden_core::clock::unix_now_ns();
        if from == self.node {
            return;
        }
        // One baseline per (peer, kind): flow batches and verdicts have nothing in common.
        for a in lock(&self.watch).observe_with(&format!("{from}/{kind}"), payload.len(), now, kind != "flow_batch") {
            self.counters.anomalies.inc();
            self.abuse(&a.peer, a.what, a.reason);
        }
        match kind {
            "key" => {
                let r = {
                    let mut sc = lock(&self.secure);
                    sc.accept_announce_key(payload, Some(from)).map(|a| (sc.peer_role(&a.node), a))
                };
                match r {
                    Ok((role, a)) => key_announced(&mut lock(&self.spool), &a, role),
                    Err(e) => self.rejected(from, &e),
                }
            }
            "status" => {
                let online = payload == b"online";
                let _ = self.status_tx.try_send(NodeStatus { node: from.to_string(), online });
            }
            "ack" => {
                match postcard::from_bytes::<AckBatch>(payload) {
                    Ok(a) if a.to == self.node => {
                        let role = lock(&self.secure).peer_role(from);
                        let mut refused = 0u64;
                        {
                            let mut spool = lock(&self.spool);
                            for id in a.ids {
                                let allowed = match spool.get(id) {
                                    Some(e) => may_ack(&e.kind, e.to.as_deref(), from, role),
                                    None => continue,
                                };
                                if !allowed {
                                    refused += 1;
                                    continue;
                                }
                                if let Err(e) = spool.ack(id) {
                                    tracing::warn!(error = %format!("{e:#}"), "cannot record an ack in the spool");
                                }
                            }
                        }
                        if refused > 0 {
                            if let Some(c) = self.counters.identity_mismatch.get("ack") {
                                c.add(refused);
                            }
                            self.abuse(
                            from,
                            "identity_mismatch",
                            format!("{from} acknowledged {refused} message(s) that were not sent to it; they stay queued"),
                        );
                        }
                    }
                    Ok(_) => {}
                    Err(_) => self.counters.malformed.inc(),
                }
            }
            _ => self.on_message(from, kind, payload, now),
        }
    }

    fn on_message(&self, from: &str, kind: &str, payload: &[u8], now: u64) {
        let Ok(frame) = envelope::decode::<Frame>(payload) else {
            self.counters.malformed.inc();
            return;
        };
        let (id, bytes) = match frame.body {
            FrameBody::Plain(b) => {
                if sealed_kind(kind) {
                    let r = lock(&self.secure).reject_unauthorized(from, format!("{kind} sent without an envelope"));
                    self.rejected(from, &r);
                    return;
                }
                (frame.id, b)
            }
            FrameBody::Sealed(env_bytes) => {
                // Envelopes for other routers share the topic: skip them without complaint.
                let header = match envelope::decode::<Envelope>(&env_bytes) {
                    Ok(e) if e.header.recipient != self.node => return,
                    Ok(e) => e.header,
                    Err(_) => {
                        self.counters.malformed.inc();
                        return;
                    }
                };
                // The header's sender is a claim until its signature checks;
                // the topic's node is the publisher's certificate (the
                // broker's ACL). A refusal is charged to the topic's node, and
                // an envelope naming another sender is refused unopened:
                // otherwise a stolen certificate could send envelopes that
                // cannot open in an innocent node's name and have the audit
                // log and ChannelAbuse alerts blame that node.
                if header.sender != from {
                    let r = lock(&self.secure).reject_unauthorized(
                        from,
                        format!("envelope claiming sender {:?} on {from}'s topic", short(&header.sender)),
                    );
                    self.rejected(from, &r);
                    return;
                }
                let opened = lock(&self.secure).open(&env_bytes, now);
                let o = match opened {
                    Ok(o) => o,
                    Err(e) => {
                        self.rejected(from, &e);
                        return;
                    }
                };
                if o.sender != from || o.msg_id != frame.id || o.kind != PayloadKind::Message {
                    let r = lock(&self.secure)
                        .reject_unauthorized(from, format!("envelope from {} inside a frame from {from}", o.sender));
                    self.rejected(from, &r);
                    return;
                }
                if o.sender_role != sealed_sender(kind) {
                    let r = lock(&self.secure)
                        .reject_unauthorized(from, format!("a {} may not send {kind}", o.sender_role));
                    self.rejected(from, &r);
                    return;
                }
                (o.msg_id, o.plaintext)
            }
        };
        let mut msg = match Message::decode(&bytes) {
            Ok(m) if m.kind() == kind => m,
            _ => {
                self.counters.malformed.inc();
                return;
            }
        };
        let durable = durable_kind(kind);
        let claim = {
            let sc = lock(&self.secure);
            check_claim(from, &msg, |n| {
                if n == self.node {
                    Some(gatewarden_proto::role::cert_role_for(self.role))
                } else {
                    sc.peer_role(n)
                }
            })
        };
        match claim {
            Claim::Fine => {}
            Claim::Mismatch(why) => {
                if let Some(c) = self.counters.identity_mismatch.get(kind) {
                    c.inc();
                }
                self.abuse(from, "identity_mismatch", why);
                // Acked all the same: the sender's queue is its own, and a
                // forged message must not come back every resend period.
                if durable {
                    self.queue_ack(from, id);
                }
                return;
            }
            Claim::Unknown(why) => {
                tracing::debug!(%why, "message held back until the sender's certificate role is known");
                return;
            }
        }
        // A table is the sender's (checked above): the dashboard's unblock is sealed to the router named here.
        if let Message::BlockTable(t) = &mut msg {
            t.node = from.to_string();
        }
        // A verdict's sender is the topic's node, proven above (never on the
        // wire): the router gives each detector its own share of a full block set.
        if let Message::Verdict(v) = &mut msg {
            v.sender = from.to_string();
        }
        let key = (from.to_string(), id);
        if durable && lock(&self.dedup).contains(&key) {
            self.counters.duplicates.inc();
            self.queue_ack(from, id);
            return;
        }
        if self.inbound.publish(msg) {
            self.counters.received.inc();
            if durable {
                lock(&self.dedup).insert(key);
                self.queue_ack(from, id);
            }
        } else {
            self.counters.inbound_dropped.inc();
        }
    }

    fn queue_ack(&self, to: &str, id: u64) {
        let full = {
            let mut acks = lock(&self.acks);
            let v = acks.entry(to.to_string()).or_default();
            v.push(id);
            v.len() >= 512
        };
        if full {
            flush_acks(self);
        }
    }
}

/// What a peer's accepted key announcement sets going in the outbox: a new
/// key (the node restarted or rotated) means what was sealed to its old one
/// cannot be opened and what waited for a key can go, so the entries that
/// node takes ([`may_ack`]) go again now rather than after `resend_after`.
/// A key already held changes nothing: retained announcements come back on
/// every reconnect and a node can replay its own at will, and each used to
/// resend every node's whole outbox.
fn key_announced(spool: &mut Spool, a: &Announced, role: Option<CertRole>) {
    if a.new_key {
        spool.mark_unsent_where(|e| may_ack(&e.kind, e.to.as_deref(), &a.node, role));
    }
}

/// Key announcements the secure channel refused as a flood (over their
/// node's budget) and kept, checked again once the budget allows: a node's
/// key is published once (retained) and the broker sends it again only when
/// this node reconnects, so a node that really restarted several times in a
/// row would otherwise stay unknown until its next rotation.
fn retry_deferred_keys(sh: &Shared) {
    let retried = {
        let mut sc = lock(&sh.secure);
        let done = sc.retry_deferred();
        done.into_iter().map(|(node, r)| (sc.peer_role(&node), node, r)).collect::<Vec<_>>()
    };
    for (role, node, r) in retried {
        match r {
            Ok(a) => key_announced(&mut lock(&sh.spool), &a, role),
            Err(e) => sh.rejected(&node, &e),
        }
    }
}

fn envelope_frame(id: u64, body: FrameBody) -> Vec<u8> {
    envelope::encode(&Frame { id, body })
}

fn flush_acks(sh: &Shared) {
    let batches: Vec<(String, Vec<u64>)> = lock(&sh.acks).drain().collect();
    for (to, ids) in batches {
        let bytes = postcard::to_allocvec(&AckBatch { to, ids }).expect("acks are encodable");
        let _ = sh.client.try_publish(topic(&sh.node, "ack"), QoS::AtLeastOnce, false, bytes);
    }
}

/// Whether a connection error is the broker refusing us (rather than the
/// broker being unreachable): a TLS alert about our certificate, or a CONNACK refusal.
pub fn refusal_reason(e: &rumqttc::ConnectionError) -> Option<&'static str> {
    use rumqttc::ConnectionError as E;
    match e {
        E::Tls(_) => Some("tls"),
        E::ConnectionRefused(_) => Some("connack"),
        // With TLS 1.3 the broker checks our certificate after the handshake,
        // so its alert (UnknownCA, CertificateRequired, …) arrives on the
        // first read, wrapped in an I/O or MQTT state error.
        other => {
            let t = other.to_string().to_ascii_lowercase();
            (t.contains("fatal alert") || t.contains("certificate")).then_some("tls")
        }
    }
}

fn event_loop(sh: Arc<Shared>, mut connection: rumqttc::Connection, shutdown: Shutdown) {
    let mut last_error_log: Option<Instant> = None;
    let mut last_refusal_alert: Option<Instant> = None;
    for ev in connection.iter() {
        if shutdown.is_triggered() && !sh.connected.load(Ordering::SeqCst) {
            break;
        }
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => sh.on_connected(),
            Ok(Event::Incoming(Packet::Publish(p))) => sh.on_publish(&p.topic, &p.payload),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                sh.connected.store(false, Ordering::SeqCst);
                sh.counters.connected.set(0.0);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let was = sh.connected.swap(false, Ordering::SeqCst);
                sh.counters.connected.set(0.0);
                sh.counters.connect_errors.inc();
                if let Some(reason) = refusal_reason(&e) {
                    // Once a minute: the alert waits in the spool (or reaches the local monitor).
                    if last_refusal_alert.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_refusal_alert = Some(Instant::now());
                        tracing::error!(error = %e, "the MQTT broker refused this node: check that mqtt.cert is issued by the fleet CA the broker trusts, and re-run `gatewarden pki mosquitto-conf` after issuing it");
                        sh.abuse("broker", "connection_refused", format!("{reason}: {e}"));
                    }
                    // Counted after the alert is spooled, so whoever sees the
                    // count also finds the alert.
                    if let Some(c) = sh.counters.refused.get(reason) {
                        c.inc();
                    }
                }
                if was || last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!(error = %e, "MQTT broker unreachable; alerts and verdicts are spooled until it is back");
                }
                if shutdown.is_triggered() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

/// When `ca.crl` beside the CA certificate was last modified (None: no list).
fn crl_mtime(ca: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(ca.with_file_name("ca.crl")).and_then(|m| m.modified()).ok()
}

/// Takes a new `ca.crl` into the secure channel without a restart: a peer it
/// revokes is dropped at once and refused from then on. A list that does not
/// load keeps the one in use (and says why).
fn reload_crl(sh: &Shared) {
    match CaVerifier::load(&sh.ca_path) {
        Ok(ca) => {
            let n = ca.revoked_count();
            let dropped = lock(&sh.secure).set_ca(ca);
            tracing::info!(revoked = n, ?dropped, "revocation list (ca.crl) reloaded");
        }
        Err(e) => tracing::error!(
            error = %format!("{e:#}"),
            "a new ca.crl did not load; the previous revocation list stays in force"
        ),
    }
}

fn outbox_loop(sh: Arc<Shared>, shutdown: Shutdown) {
    let mut last_resend = Instant::now();
    let mut crl_checked = Instant::now();
    let mut crl_seen = crl_mtime(&sh.ca_path);
    while !shutdown.is_triggered() {
        std::thread::sleep(Duration::from_millis(20));
        flush_acks(&sh);
        if crl_checked.elapsed() >= CRL_CHECK_INTERVAL {
            crl_checked = Instant::now();
            let now = crl_mtime(&sh.ca_path);
            if now != crl_seen {
                crl_seen = now;
                reload_crl(&sh);
            }
        }
        if !sh.connected.load(Ordering::SeqCst) {
            continue;
        }
        let rotated = lock(&sh.secure).rotate_if_due();
        if rotated {
            let a = lock(&sh.secure).announce();
            let _ = sh.client.try_publish(topic(&sh.node, "key"), QoS::AtLeastOnce, true, a);
        }
        if last_resend.elapsed() < Duration::from_millis(100) {
            continue;
        }
        last_resend = Instant::now();
        retry_deferred_keys(&sh);
        let due = lock(&sh.spool).due(sh.resend_after, 2048);
        sh.counters.resent.add(due.len() as u64);
        for e in due {
            if !sh.transmit(e.id, &e.kind, e.to.as_deref(), &e.payload) {
                lock(&sh.spool).mark_unsent(e.id);
                // Request queue full or recipient unknown: try again on the next pass.
                if sealed_kind(&e.kind) {
                    continue;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_largest_evidence_a_router_may_send_fits_in_one_frame() {
        use gatewarden_proto::messages::{Evidence, EvidencePacket, MAX_EVIDENCE_BYTES, MAX_EVIDENCE_PACKETS};
        // Every field at its widest: the frame decoder refuses more than MAX_SECURE_BYTES.
        let e = Evidence {
            node: "r".repeat(64),
            alert_id: u64::MAX,
            source: "2001:db8::1".parse().unwrap(),
            link_type: 1,
            packets: (0..MAX_EVIDENCE_PACKETS)
                .map(|_| EvidencePacket {
                    ts_ns: u64::MAX,
                    orig_len: u32::MAX,
                    data: vec![0xab; MAX_EVIDENCE_BYTES / MAX_EVIDENCE_PACKETS],
                })
                .collect(),
            left_out: u32::MAX,
        };
        e.check().unwrap();
        let msg = Message::Evidence(e);
        let wire = envelope::encode(&Frame { id: u64::MAX, body: FrameBody::Plain(msg.encode()) });
        let frame: Frame = envelope::decode(&wire)
            .unwrap_or_else(|err| panic!("a {}-byte evidence frame is refused: {err}", wire.len()));
        let FrameBody::Plain(bytes) = frame.body else { panic!("not plain") };
        assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn each_role_subscribes_to_what_the_kinds_table_says_it_reads() {
        use gatewarden_proto::role::Role;
        let subs = |r| -> Vec<String> {
            subscriptions(r).into_iter().map(|t| t.rsplit('/').next().unwrap().to_string()).collect()
        };
        assert_eq!(subs(Role::Router), ["ack", "key", "policy_update", "settings_update", "unblock", "verdict"]);
        assert_eq!(subs(Role::Detector), ["ack", "flow_batch", "key", "lan_probes", "model_update", "settings_update"]);
        assert_eq!(
            subs(Role::Monitor),
            [
                "ack",
                "alert",
                "block_table",
                "evidence",
                "flow_batch",
                "heartbeat",
                "key",
                "metrics",
                "neighbour_table",
                "status",
                "verdict_outcome"
            ]
        );
        assert_eq!(subs(Role::All), ["key", "ack", "policy_update", "unblock"]);
    }

    use super::*;

    #[test]
    fn only_a_detectors_flow_batches_go_through_the_shared_subscription() {
        use gatewarden_proto::role::Role;
        let det = subscriptions_shared(Role::Detector, "detectors");
        assert!(det.contains(&"$share/detectors/gatewarden/v1/+/flow_batch".to_string()), "{det:?}");
        assert!(!det.iter().any(|t| t.starts_with("gatewarden/v1/+/flow_batch")), "{det:?}");
        assert_eq!(det.iter().filter(|t| t.starts_with("$share/")).count(), 1, "{det:?}");
        assert_eq!(subscriptions_shared(Role::Detector, ""), subscriptions(Role::Detector));
        for r in [Role::Router, Role::Monitor, Role::All] {
            assert_eq!(subscriptions_shared(r, "detectors"), subscriptions(r), "{r}");
        }
    }

    #[test]
    fn topics_round_trip_and_reject_junk() {
        assert_eq!(topic("router-1", "verdict"), "gatewarden/v1/router-1/verdict");
        assert_eq!(parse_topic("gatewarden/v1/router-1/verdict"), Some(("router-1", "verdict")));
        assert_eq!(parse_topic("gatewarden/v2/router-1/verdict"), None);
        assert_eq!(parse_topic("gatewarden/v1/router-1/verdict/x"), None);
        assert_eq!(parse_topic("gatewarden/v1//verdict"), None);
    }

    #[test]
    fn commands_are_sealed_and_only_by_their_role() {
        for k in ["verdict", "policy_update", "model_update", "settings_update", "unblock"] {
            assert!(sealed_kind(k) && durable_kind(k), "{k}");
        }
        for k in ["alert", "flow_batch", "metrics", "heartbeat", "block_table"] {
            assert!(!sealed_kind(k), "{k}");
        }
        assert!(durable_kind("alert") && !durable_kind("flow_batch") && !durable_kind("block_table"));
        assert_eq!(sealed_sender("verdict"), CertRole::Detector);
        for k in ["policy_update", "model_update", "settings_update", "unblock"] {
            assert_eq!(sealed_sender(k), CertRole::Monitor, "{k}");
        }
        assert_eq!(sealed_recipients("model_update"), &[CertRole::Detector]);
        assert_eq!(sealed_recipients("settings_update"), &[CertRole::Detector, CertRole::Router]);
        assert_eq!(sealed_recipients("policy_update"), &[CertRole::Router]);
        assert_eq!(sealed_recipients("unblock"), &[CertRole::Router]);
    }

    #[test]
    fn broker_refusals_are_told_apart_from_an_unreachable_broker() {
        use rumqttc::ConnectionError as E;
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: UnknownCA");
        assert_eq!(refusal_reason(&E::Io(alert)), Some("tls"));
        assert_eq!(refusal_reason(&E::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)), Some("connack"));
        let down = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        assert_eq!(refusal_reason(&E::Io(down)), None);
        assert_eq!(refusal_reason(&E::NetworkTimeout), None);
    }

    #[test]
    fn plain_messages_must_name_their_sender() {
        use gatewarden_proto::messages::{Alert, AttackKind, Heartbeat, MetricsSample, Severity};
        let roles = |n: &str| match n {
            "r1" | "r2" => Some(CertRole::Router),
            "d1" => Some(CertRole::Detector),
            _ => None,
        };
        let hb = |node: &str, role| {
            Message::Heartbeat(Heartbeat { node: node.into(), role, version: "v".into(), uptime_s: 1, sent_ns: 0 })
        };
        let m = |node: &str| Message::Metrics(MetricsSample { node: node.into(), ts_ns: 0, values: vec![] });
        let alert =
            |node: &str, kind| Message::Alert(Alert::about_system(node, kind, Severity::Low, 1, "s", "r".into()));
        use gatewarden_proto::role::Role;
        assert_eq!(check_claim("r1", &hb("r1", Role::Router), roles), Claim::Fine);
        assert!(matches!(check_claim("r1", &hb("d1", Role::Detector), roles), Claim::Mismatch(_)));
        assert!(matches!(check_claim("r1", &hb("r1", Role::Detector), roles), Claim::Mismatch(_)));
        assert_eq!(check_claim("x", &hb("x", Role::Detector), roles), Claim::Fine, "role unknown: its name is its own");
        assert!(matches!(check_claim("r1", &m("d1"), roles), Claim::Mismatch(_)));
        assert_eq!(check_claim("r1", &m("r1"), roles), Claim::Fine);
        // A detector files traffic alerts under a router, never system alerts, never under a detector.
        assert_eq!(check_claim("d1", &alert("r1", AttackKind::PortScan), roles), Claim::Fine);
        assert!(matches!(check_claim("d1", &alert("r1", AttackKind::System), roles), Claim::Mismatch(_)));
        assert!(matches!(check_claim("r2", &alert("r1", AttackKind::PortScan), roles), Claim::Mismatch(_)));
        assert!(matches!(check_claim("r1", &alert("d1", AttackKind::System), roles), Claim::Mismatch(_)));
        assert!(matches!(check_claim("d1", &alert("r9", AttackKind::PortScan), roles), Claim::Unknown(_)));
    }

    #[test]
    fn only_the_receiver_may_acknowledge() {
        assert!(may_ack("verdict", Some("r1"), "r1", Some(CertRole::Router)));
        assert!(!may_ack("verdict", Some("r1"), "r2", Some(CertRole::Router)));
        assert!(may_ack("alert", None, "m1", Some(CertRole::Monitor)));
        assert!(!may_ack("alert", None, "r2", Some(CertRole::Router)));
        assert!(!may_ack("alert", None, "m1", None), "role not announced yet: wait");
        assert!(may_ack("model_update", None, "d1", Some(CertRole::Detector)));
        assert!(!may_ack("model_update", None, "r1", Some(CertRole::Router)));
    }

    /// Red-team finding: a node that replays its own key announcement (or a
    /// broker redelivering the retained one) made every receiver resend its
    /// whole outbox, each time. Only a key not held before sends anything
    /// again, and only what that node takes: a new key cannot unblock
    /// messages for anyone else.
    #[test]
    fn only_a_new_key_resends_and_only_what_its_node_takes() {
        use std::time::Duration;
        let d = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(d.path(), 100, 1 << 20, &Registry::new()).unwrap();
        let for_r1 = spool.push("unblock", Some("router-1"), vec![1]).unwrap();
        spool.push("unblock", Some("router-2"), vec![2]).unwrap();
        let verdict = spool.push("verdict", None, vec![3]).unwrap();
        spool.push("model_update", None, vec![4]).unwrap();
        spool.push("alert", None, vec![5]).unwrap();
        let resent =
            |s: &mut Spool| -> Vec<u64> { s.due(Duration::from_secs(3600), 100).iter().map(|e| e.id).collect() };
        assert_eq!(resent(&mut spool).len(), 5, "everything sent once");
        let repeat = Announced { node: "router-1".into(), new_key: false };
        for _ in 0..10 {
            key_announced(&mut spool, &repeat, Some(CertRole::Router));
        }
        assert_eq!(resent(&mut spool), Vec::<u64>::new(), "a known key resends nothing");
        key_announced(&mut spool, &Announced { new_key: true, ..repeat }, Some(CertRole::Router));
        assert_eq!(
            resent(&mut spool),
            vec![for_r1, verdict],
            "router-1's new key: its unblock and the routers' verdict"
        );
    }

    #[test]
    fn dedup_is_bounded() {
        let mut d = Dedup::default();
        for i in 0..(DEDUP_CAPACITY as u64 + 10) {
            d.insert(("a".into(), i));
        }
        assert_eq!(d.len, DEDUP_CAPACITY);
        assert!(!d.contains(&("a".into(), 0)) && d.contains(&("a".into(), DEDUP_CAPACITY as u64 + 9)));
    }

    /// A node sending fresh message ids as fast as it can (a stolen
    /// certificate) pushed every other node's pairs out of the one shared
    /// list: their resends after a lost ack were delivered twice (a second
    /// alert, a second verdict). It now pushes out its own.
    #[test]
    fn a_sender_flooding_fresh_ids_does_not_push_out_the_other_senders_pairs() {
        let mut d = Dedup::default();
        for i in 0..1_000u64 {
            d.insert(("det-1".into(), i));
        }
        for i in 0..(2 * DEDUP_CAPACITY as u64) {
            d.insert(("router-9".into(), i));
        }
        assert_eq!(d.len, DEDUP_CAPACITY);
        assert!((0..1_000u64).all(|i| d.contains(&("det-1".into(), i))), "det-1's resends would deliver twice");
        assert!(d.contains(&("router-9".into(), 2 * DEDUP_CAPACITY as u64 - 1)));
    }
}
