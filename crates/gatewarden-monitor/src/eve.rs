//! Alerts as Suricata EVE JSON that validates against Suricata's own
//! `etc/schema.json` (kept in `schema/`, with the commit it came from):
//! the root holds only Suricata's keys (`additionalProperties: false`), so
//! gatewarden's own fields are string arrays in `alert.metadata` (the
//! extension object rule metadata uses), the node is `host`, absent values
//! are omitted (never `null`), ports are written for TCP, UDP and SCTP,
//! `icmp_type`/`icmp_code` for ICMP and ICMPv6, protocol names are spelled
//! as Suricata's table (`util-proto-name.c`) spells them, and `flow{}` holds
//! the evidence flow's packets and bytes each way, its start and state.
//!
//! [`from_eve`] reads these lines back, and the lines written before issue
//! #18 (a root `gatewarden{}` object, `null`s, `IPV6-ICMP`, `PROTO-47`).

use std::net::IpAddr;

use anyhow::{anyhow, bail};
use serde_json::{json, Map, Value};

use gatewarden_core::clock::rfc3339;
use gatewarden_proto::conn_state::ConnState;
use gatewarden_proto::messages::{Alert, AlertAction, AlertFlow, NotBlocked, Proto, Severity};

/// Suricata's protocol names by number (`known_proto` in `src/util-proto-name.c`
/// at the schema's commit); past the table, and for numbers it has no name
/// for, Suricata writes the number.
pub const SURICATA_PROTO_NAMES: [&str; 144] = [
    "HOPOPT",
    "ICMP",
    "IGMP",
    "GGP",
    "IP-in-IP",
    "ST",
    "TCP",
    "CBT",
    "EGP",
    "IGP",
    "BBN-RCC-MON",
    "NVP-II",
    "PUP",
    "ARGUS",
    "EMCON",
    "XNET",
    "CHAOS",
    "UDP",
    "MUX",
    "DCN-MEAS",
    "HMP",
    "PRM",
    "XNS-IDP",
    "TRUNK-1",
    "TRUNK-2",
    "LEAF-1",
    "LEAF-2",
    "RDP",
    "IRTP",
    "ISO-TP4",
    "NETBLT",
    "MFE-NSP",
    "MERIT-INP",
    "DCCP",
    "3PC",
    "IDPR",
    "XTP",
    "DDP",
    "IDPR-CMTP",
    "TP++",
    "IL",
    "IPv6",
    "SDRP",
    "IPv6-Route",
    "IPv6-Frag",
    "IDRP",
    "RSVP",
    "GRE",
    "DSR",
    "BNA",
    "ESP",
    "AH",
    "I-NLSP",
    "SwIPe",
    "NARP",
    "MOBILE",
    "TLSP",
    "SKIP",
    "IPv6-ICMP",
    "IPv6-NoNxt",
    "IPv6-Opts",
    "Any",
    "CFTP",
    "Any",
    "SAT-EXPAK",
    "KRYPTOLAN",
    "RVD",
    "IPPC",
    "Any",
    "SAT-MON",
    "VISA",
    "IPCU",
    "CPNX",
    "CPHB",
    "WSN",
    "PVP",
    "BR-SAT-MON",
    "SUN-ND",
    "WB-MON",
    "WB-EXPAK",
    "ISO-IP",
    "VMTP",
    "SECURE-VMTP",
    "VINES",
    "TTP",
    "NSFNET-IGP",
    "DGP",
    "TCF",
    "EIGRP",
    "OSPF",
    "Sprite-RPC",
    "LARP",
    "MTP",
    "AX.25",
    "OS",
    "MICP",
    "SCC-SP",
    "ETHERIP",
    "ENCAP",
    "Any",
    "GMTP",
    "IFMP",
    "PNNI",
    "PIM",
    "ARIS",
    "SCPS",
    "QNX",
    "A/N",
    "IPComp",
    "SNP",
    "Compaq-Peer",
    "IPX-in-IP",
    "VRRP",
    "PGM",
    "Any",
    "L2TP",
    "DDX",
    "IATP",
    "STP",
    "SRP",
    "UTI",
    "SMP",
    "SM",
    "PTP",
    "IS-IS",
    "FIRE",
    "CRTP",
    "CRUDP",
    "SSCOPMCE",
    "IPLT",
    "SPS",
    "PIPE",
    "SCTP",
    "FC",
    "RSVP-E2E-IGNORE",
    "Mobility",
    "UDPLite",
    "MPLS-in-IP",
    "manet",
    "HIP",
    "Shim6",
    "WESP",
    "ROHC",
    "Ethernet",
];

/// The protocol as Suricata's EVE spells it (`TCP`, `IPv6-ICMP`, `GRE`, `200`).
/// The table's placeholder `Any` (five numbers share it) is written as the
/// number instead, so the store reads back the protocol it wrote.
pub fn proto_name(p: Proto) -> String {
    let n = p.number();
    match SURICATA_PROTO_NAMES.get(usize::from(n)) {
        Some(s) if *s != "Any" => (*s).to_string(),
        _ => n.to_string(),
    }
}

/// Parses [`proto_name`]'s words back (and the pre-#18 spellings `IPV6-ICMP`, `PROTO-47`).
pub fn proto_from_name(s: &str) -> Option<Proto> {
    if let Ok(n) = s.parse::<u8>() {
        return Some(Proto::from_number(n));
    }
    if let Some(n) = s.strip_prefix("PROTO-").and_then(|n| n.parse::<u8>().ok()) {
        return Some(Proto::from_number(n));
    }
    let i = SURICATA_PROTO_NAMES.iter().position(|k| k.eq_ignore_ascii_case(s))?;
    u8::try_from(i).ok().map(Proto::from_number)
}

/// Whether EVE writes ports for this protocol (Suricata: TCP, UDP, SCTP).
fn has_ports(p: Proto) -> bool {
    matches!(p, Proto::Tcp | Proto::Udp | Proto::Other(132))
}

/// Suricata's flow state for a Zeek connection state (`new` until the
/// responder answered, `established`, `closed` once a TCP flow ended).
pub fn suricata_state(s: ConnState, proto: Option<Proto>) -> &'static str {
    match s {
        ConnState::S0 => "new",
        ConnState::S1 | ConnState::S2 | ConnState::S3 | ConnState::OTH => "established",
        ConnState::SF if proto != Some(Proto::Tcp) => "established",
        _ => "closed",
    }
}

fn meta(m: &mut Map<String, Value>, k: &str, v: impl ToString) {
    m.insert(k.to_string(), json!([v.to_string()]));
}

/// The alert as one EVE object (see the module documentation).
pub fn to_eve(a: &Alert) -> Value {
    let mut o = Map::new();
    o.insert("timestamp".into(), json!(rfc3339(a.ts_ns)));
    if a.flow_id != 0 {
        o.insert("flow_id".into(), json!(a.flow_id));
    }
    if !a.in_iface.is_empty() {
        o.insert("in_iface".into(), json!(a.in_iface));
    }
    o.insert("event_type".into(), json!("alert"));
    if let Some(s) = a.src {
        o.insert("src_ip".into(), json!(s.to_string()));
    }
    let ports = a.proto.is_none_or(has_ports);
    if ports && a.sport != 0 {
        o.insert("src_port".into(), json!(a.sport));
    }
    if let Some(d) = a.dst {
        o.insert("dest_ip".into(), json!(d.to_string()));
    }
    if ports && a.dport != 0 {
        o.insert("dest_port".into(), json!(a.dport));
    }
    if let Some(p) = a.proto {
        o.insert("proto".into(), json!(proto_name(p)));
        if let (Proto::Icmp | Proto::Icmpv6, Some(f)) = (p, a.flow) {
            o.insert("icmp_type".into(), json!(f.sport));
            o.insert("icmp_code".into(), json!(f.dport));
        }
    }
    if !a.node.is_empty() {
        o.insert("host".into(), json!(a.node));
    }
    let mut m = Map::new();
    meta(&mut m, "gatewarden_id", a.id);
    meta(&mut m, "kind", a.kind.as_str());
    meta(&mut m, "confidence", a.confidence);
    meta(&mut m, "reason", &a.reason);
    meta(&mut m, "ts_ns", a.ts_ns);
    if let Some(rule) = gatewarden_detect::response::rule_in_reason(&a.reason) {
        meta(&mut m, "rule", rule);
    }
    if a.action == AlertAction::Allowed {
        if let Some(n) = a.not_blocked {
            meta(&mut m, "not_blocked", n.as_str());
        }
    }
    if let Some(f) = a.flow {
        meta(&mut m, "conn_state", f.state.as_str());
        meta(&mut m, "flow_start_ns", f.start_ns);
        if a.proto.is_none_or(has_ports) {
            meta(&mut m, "flow_ports", format!("{}-{}", f.sport, f.dport));
        }
    }
    o.insert(
        "alert".into(),
        json!({
            "action": match a.action { AlertAction::Blocked => "blocked", AlertAction::Allowed => "allowed" },
            "gid": 1,
            "signature_id": a.signature_id,
            "rev": 1,
            "signature": a.signature,
            "category": a.kind.as_str(),
            "severity": a.severity as u8,
            "metadata": m,
        }),
    );
    if let Some(f) = a.flow {
        o.insert(
            "flow".into(),
            json!({
                "pkts_toserver": f.pkts_toserver,
                "pkts_toclient": f.pkts_toclient,
                "bytes_toserver": f.bytes_toserver,
                "bytes_toclient": f.bytes_toclient,
                "start": rfc3339(f.start_ns),
                "state": suricata_state(f.state, a.proto),
            }),
        );
    }
    Value::Object(o)
}

/// Builds an [`Alert`] back from one of our EVE lines, old (root
/// `gatewarden{}`) or new (`alert.metadata`).
pub fn from_eve(v: &Value) -> anyhow::Result<Alert> {
    if v.get("event_type").and_then(Value::as_str) != Some("alert") {
        bail!("not an alert event");
    }
    let al = v.get("alert").ok_or_else(|| anyhow!("no `alert` object"))?;
    let str_of = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let u64_of = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64);
    // Ours: the pre-#18 object, or the metadata's one-string arrays.
    let (ours, old) = match v.get("gatewarden") {
        Some(gw) => (gw.clone(), true),
        None => {
            let m = al.get("metadata").and_then(Value::as_object).ok_or_else(|| anyhow!("no `alert.metadata`"))?;
            let flat: Map<String, Value> = m
                .iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_array()?.first()?.as_str()?.to_string().into())))
                .collect();
            (Value::Object(flat), false)
        }
    };
    let num = |k: &str| -> Option<u64> {
        match ours.get(k)? {
            Value::String(s) => s.parse().ok(),
            x => x.as_u64(),
        }
    };
    let ip_of = |k: &str| -> anyhow::Result<Option<IpAddr>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| anyhow!("bad address in {k}: {s}")),
            Some(o) => Err(anyhow!("bad {k}: {o}")),
        }
    };
    let kind = str_of(&ours, "kind")
        .and_then(|k| gatewarden_proto::signatures::KINDS.into_iter().find(|x| x.as_str() == k))
        .ok_or_else(|| anyhow!("unknown kind"))?;
    let severity = match u64_of(al, "severity") {
        Some(1) => Severity::High,
        Some(2) => Severity::Medium,
        Some(3) => Severity::Low,
        _ => bail!("severity must be 1, 2 or 3"),
    };
    let proto = match str_of(v, "proto") {
        None => None,
        Some(p) => Some(proto_from_name(&p).ok_or_else(|| anyhow!("bad proto {p}"))?),
    };
    let port = |k: &str| u64_of(v, k).and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    let confidence = match ours.get("confidence") {
        Some(Value::String(s)) => s.parse::<f32>().map_err(|_| anyhow!("bad confidence {s}"))?,
        Some(x) => x.as_f64().unwrap_or(0.0) as f32,
        None => 0.0,
    };
    let action =
        if str_of(al, "action").as_deref() == Some("blocked") { AlertAction::Blocked } else { AlertAction::Allowed };
    let flow = match v.get("flow") {
        Some(f) if !old => {
            let n = |k: &str| u64_of(f, k).ok_or_else(|| anyhow!("flow.{k} missing"));
            let state = str_of(&ours, "conn_state")
                .and_then(|s| ConnState::ALL.into_iter().find(|c| c.as_str() == s))
                .ok_or_else(|| anyhow!("flow without metadata conn_state"))?;
            let (sport, dport) = match proto {
                Some(Proto::Icmp | Proto::Icmpv6) => (port("icmp_type"), port("icmp_code")),
                _ => str_of(&ours, "flow_ports")
                    .and_then(|s| {
                        let (a, b) = s.split_once('-')?;
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .unwrap_or((0, 0)),
            };
            Some(AlertFlow {
                sport,
                dport,
                pkts_toserver: u32::try_from(n("pkts_toserver")?)?,
                pkts_toclient: u32::try_from(n("pkts_toclient")?)?,
                bytes_toserver: n("bytes_toserver")?,
                bytes_toclient: n("bytes_toclient")?,
                start_ns: num("flow_start_ns").ok_or_else(|| anyhow!("flow without metadata flow_start_ns"))?,
                state,
            })
        }
        _ => None,
    };
    let not_blocked = match str_of(&ours, "not_blocked") {
        Some(s) => Some(NotBlocked::parse(&s).ok_or_else(|| anyhow!("unknown not_blocked {s}"))?),
        // Before #18 an `allowed` said why only in its reason.
        None => None,
    };
    Ok(Alert {
        id: num(if old { "id" } else { "gatewarden_id" }).ok_or_else(|| anyhow!("no id"))?,
        ts_ns: num("ts_ns").ok_or_else(|| anyhow!("no ts_ns"))?,
        node: if old { str_of(&ours, "node") } else { str_of(v, "host") }.unwrap_or_default(),
        flow_id: u64_of(v, "flow_id").unwrap_or(0),
        kind,
        severity,
        src: ip_of("src_ip")?,
        dst: ip_of("dest_ip")?,
        sport: port("src_port"),
        dport: port("dest_port"),
        proto,
        action,
        signature_id: u64_of(al, "signature_id").and_then(|s| u32::try_from(s).ok()).unwrap_or(0),
        signature: str_of(al, "signature").unwrap_or_default(),
        confidence,
        reason: str_of(&ours, "reason").unwrap_or_default(),
        flow,
        not_blocked,
        in_iface: str_of(v, "in_iface").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every protocol number reads back as itself, whatever its spelling
    /// (the table names five numbers `Any`: those are written as numbers).
    #[test]
    fn every_protocol_number_round_trips_through_its_name() {
        for n in 0..=u8::MAX {
            let p = Proto::from_number(n);
            let name = proto_name(p);
            assert_eq!(proto_from_name(&name), Some(p), "{n} written as {name}");
        }
        assert_eq!(proto_name(Proto::Icmpv6), "IPv6-ICMP");
        assert_eq!(proto_name(Proto::Other(63)), "63");
        // The pre-#18 spellings still parse.
        assert_eq!(proto_from_name("IPV6-ICMP"), Some(Proto::Icmpv6));
        assert_eq!(proto_from_name("PROTO-47"), Some(Proto::Other(47)));
    }
}
