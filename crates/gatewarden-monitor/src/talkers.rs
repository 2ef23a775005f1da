//! Top talkers: bytes per source address over recent flow batches, with
//! bounded memory (a spoofed flood of random sources churns the tail, not the
//! heap).

use std::net::IpAddr;

/// Keyed by attacker-chosen values (flow ids, source addresses): a hasher
/// seeded per process, and several times cheaper than SipHash on the
/// per-record path (a spoofed flood is a new source per record).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use gatewarden_proto::messages::FlowBatch;

/// Most flows whose last byte count is remembered (to turn snapshots into deltas).
pub const MAX_FLOWS: usize = 65_536;
/// Most source addresses tracked.
pub const MAX_TRACKED: usize = 4096;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Talker {
    /// The source.
    pub ip: IpAddr,
    /// Bytes sent and received in its flows.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
    /// Flows it opened.
    pub flows: u64,
    /// Its earliest flow's first packet, ns since the epoch (packet time:
    /// capture time in a replay); the incident view's "first packet".
    pub first_ns: u64,
}

/// Bytes per source, from flow batches.
#[derive(Debug)]
pub struct TopTalkers {
    last: HashMap<u64, (u64, u64)>,
    by_src: HashMap<IpAddr, Talker>,
    max: usize,
}

impl TopTalkers {
    /// Tracks at most `max` sources.
    pub fn new(max: usize) -> TopTalkers {
        TopTalkers { last: HashMap::default(), by_src: HashMap::default(), max: max.max(16) }
    }

    /// Adds a batch's growth since the flows were last seen.
    pub fn observe(&mut self, batch: &FlowBatch) {
        for f in &batch.flows {
            let bytes = f.fwd_bytes + f.rev_bytes;
            let packets = f.fwd_packets as u64 + f.rev_packets as u64;
            if self.last.len() >= MAX_FLOWS && !self.last.contains_key(&f.flow_id) {
                self.last.clear();
            }
            let (pb, pp) = self.last.insert(f.flow_id, (bytes, packets)).unwrap_or((0, 0));
            let new_flow = pb == 0 && pp == 0;
            if self.by_src.len() >= self.max && !self.by_src.contains_key(&f.src) {
                // Forget the smaller half: heavy hitters stay.
                let mut v: Vec<u64> = self.by_src.values().map(|t| t.bytes).collect();
                v.sort_unstable();
                let cut = v[v.len() / 2];
                self.by_src.retain(|_, t| t.bytes > cut);
            }
            let t = self.by_src.entry(f.src).or_insert(Talker {
                ip: f.src,
                bytes: 0,
                packets: 0,
                flows: 0,
                first_ns: f.first_ns,
            });
            t.first_ns = t.first_ns.min(f.first_ns);
            t.bytes += bytes.saturating_sub(pb);
            t.packets += packets.saturating_sub(pp);
            if new_flow {
                t.flows += 1;
            }
        }
    }

    /// The row of `ip`, if it is still tracked.
    pub fn get(&self, ip: &IpAddr) -> Option<Talker> {
        self.by_src.get(ip).cloned()
    }

    /// The `n` sources with the most bytes.
    pub fn top(&self, n: usize) -> Vec<Talker> {
        let mut v: Vec<Talker> = self.by_src.values().cloned().collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ip.cmp(&b.ip)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::{FlowRecord, Proto};

    fn rec(id: u64, src: &str, bytes: u64) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            sport: 1,
            dport: 2,
            proto: Proto::Tcp,
            first_ns: 0,
            last_ns: 0,
            fwd_packets: 1,
            rev_packets: 1,
            fwd_bytes: bytes,
            rev_bytes: 0,
            conn_state: gatewarden_proto::conn_state::ConnState::S0,
            src_answered: false,
        }
    }

    #[test]
    fn counts_growth_not_snapshots_and_stays_bounded() {
        let mut t = TopTalkers::new(16);
        let b = |flows| FlowBatch {
            node: "n".into(),
            seq: 0,
            flows,
            hosts: vec![],
            in_iface: String::new(),
            shed: Vec::new(),
        };
        t.observe(&b(vec![rec(1, "192.0.2.7", 100), rec(2, "2001:db8::1", 50)]));
        t.observe(&b(vec![rec(1, "192.0.2.7", 300)]));
        let top = t.top(10);
        assert_eq!(top[0].ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(top[0].bytes, 300);
        assert_eq!(top[0].flows, 1);
        assert_eq!(top[1].bytes, 50);
        for i in 0..1000u64 {
            t.observe(&b(vec![rec(10 + i, &format!("198.51.100.{}", i % 250), 1)]));
        }
        assert!(t.by_src.len() <= 16);
        assert_eq!(t.top(1)[0].bytes, 300, "the heavy hitter survives the churn");
    }

    #[test]
    fn remembers_the_earliest_first_packet_of_a_source() {
        let mut t = TopTalkers::new(16);
        let b = |flows| FlowBatch {
            node: "n".into(),
            seq: 0,
            flows,
            hosts: vec![],
            in_iface: String::new(),
            shed: Vec::new(),
        };
        let at = |id, first| FlowRecord { first_ns: first, ..rec(id, "192.0.2.7", 10) };
        t.observe(&b(vec![at(1, 500), at(2, 300)]));
        t.observe(&b(vec![at(3, 900)]));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(t.get(&ip).unwrap().first_ns, 300);
        assert_eq!(t.get(&"192.0.2.8".parse().unwrap()), None);
    }
}
