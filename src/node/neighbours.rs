//! The router tells the monitor its neighbour table (IP ↔ MAC), so MAC
//! members of policy groups resolve at a monitor on any node the way this
//! router's enforcement resolves them: the monitor reaches the router only
//! through messages. Read every 2 s; sent when the pairs change and every
//! 15 s (so a restarted monitor catches up and a silent router's table ages
//! out there), never more than once per read.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Context, Service, Wiring};
use gatewarden_proto::messages::{Message, Neighbour, NeighbourTable, MAX_NEIGHBOUR_ROWS};

/// How often the kernel's table is read (and at most how often one is sent).
pub const READ_EVERY: Duration = Duration::from_secs(2);
/// An unchanged table is sent again this often.
pub const RESEND_EVERY: Duration = Duration::from_secs(15);

/// The `neighbours` thread (router, when a monitor listens: in process or over MQTT).
#[derive(Default)]
pub struct Neighbours(Option<std::thread::JoinHandle<()>>);

/// The message for a table read now: the most recently confirmed
/// [`MAX_NEIGHBOUR_ROWS`] entries first, `total` saying how many there were.
/// Multicast and broadcast link-layer addresses (IPv6 multicast entries)
/// are no device and are left out.
pub fn table_message(
    node: &str,
    mut entries: Vec<gatewarden_netlink::route::NeighbourEntry>,
    now_ns: u64,
) -> NeighbourTable {
    entries.retain(|e| e.mac[0] & 1 == 0);
    let total = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    entries.sort_by_key(|e| (e.confirmed_ago_ms, e.ip, e.mac));
    entries.truncate(MAX_NEIGHBOUR_ROWS);
    NeighbourTable {
        node: node.to_string(),
        taken_ns: now_ns,
        total,
        entries: entries
            .into_iter()
            .map(|e| Neighbour { ip: e.ip, mac: e.mac, age_s: e.confirmed_ago_ms / 1000 })
            .collect(),
    }
}

/// The pairs of a table: what decides "changed" (not their ages).
type Pairs = BTreeSet<(IpAddr, [u8; 6])>;

fn pairs(t: &NeighbourTable) -> Pairs {
    t.entries.iter().map(|n| (n.ip, n.mac)).collect()
}

impl Service for Neighbours {
    fn name(&self) -> &'static str {
        "neighbours"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let out = w.out.clone();
        let sd = cx.shutdown.clone();
        let node = cx.cfg.node_id.clone();
        let spawned = std::thread::Builder::new().name("neighbours".into()).spawn(move || {
            let mut last: Option<(Pairs, Instant)> = None;
            let mut warned = false;
            while !sd.is_triggered() {
                match gatewarden_netlink::route::neighbour_entries() {
                    Ok(entries) => {
                        let t = table_message(&node, entries, gatewarden_core::clock::unix_now_ns());
                        let now = pairs(&t);
                        let due = match &last {
                            None => true,
                            Some((before, at)) => *before != now || at.elapsed() >= RESEND_EVERY,
                        };
                        if due {
                            out.publish(Message::NeighbourTable(t));
                            last = Some((now, Instant::now()));
                        }
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "cannot read the neighbour table: MAC group members will not resolve at the monitor (retrying)");
                    }
                    Err(e) => tracing::debug!(error = %e, "neighbour table not read"),
                }
                let start = Instant::now();
                while start.elapsed() < READ_EVERY && !sd.is_triggered() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        // Like the block table: a thread that could not be spawned means no table, not a failed start.
        self.0 = spawned.ok();
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(t) = self.0 {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_netlink::route::NeighbourEntry;

    #[test]
    fn above_the_bound_the_freshest_entries_are_sent_and_the_total_says_how_many_were_left_out() {
        let entries: Vec<NeighbourEntry> = (0..MAX_NEIGHBOUR_ROWS as u32 + 10)
            .map(|i| NeighbourEntry {
                ip: IpAddr::from(std::net::Ipv4Addr::from(0xc000_0000 + i)),
                mac: [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                // Entry i was confirmed i seconds ago.
                confirmed_ago_ms: i * 1000,
            })
            .rev()
            .collect();
        let t = table_message("router-1", entries, 5);
        assert_eq!(t.total as usize, MAX_NEIGHBOUR_ROWS + 10);
        assert_eq!(t.entries.len(), MAX_NEIGHBOUR_ROWS);
        assert_eq!(t.entries[0].age_s, 0);
        assert_eq!(t.entries.last().unwrap().age_s as usize, MAX_NEIGHBOUR_ROWS - 1, "the 10 oldest left out");
        // It decodes at the monitor (within every wire limit).
        let m = Message::NeighbourTable(t);
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }
}
