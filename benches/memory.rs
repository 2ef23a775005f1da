//! Memory at scale: resident memory of the flow table and the host/pair
//! tracker holding 1 M concurrent flows (one per spoofed source, as a
//! `--rand-source` flood creates them).
//!
//!     cargo bench --bench memory
//!
//! Under `cargo test` (no `--bench` argument) it runs with 100 k flows and
//! checks the per-flow cost against the budget, so the bound stays tested.

use gatewarden::features::HostTracker;
use gatewarden::flow::FlowTable;
use gatewarden::packet::PacketInfo;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let flows: u32 = if full { 1_000_000 } else { 100_000 };
    let before = rss_kib();
    let mut table = FlowTable::new(flows as usize, 60, 300);
    let mut tracker = HostTracker::hosts_only(16_384);
    let mut x: u32 = 0x1234_5678;
    for i in 0..flows {
        // xorshift: a different pseudo-random source per packet.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let p = PacketInfo {
            ts_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
            src: std::net::Ipv4Addr::from(x).into(),
            dst: std::net::Ipv4Addr::new(192, 0, 2, 10).into(),
            proto: 6,
            sport: (i % 60_000) as u16 + 1024,
            dport: 80,
            tcp_flags: 0x02,
            tcp_seq: 0,
            tcp_ack: 0,
            icmp_type: 0,
            icmp_code: 0,
            ip_len: 40,
            payload_len: 0,
            fragment: None,
        };
        let o = table.observe(&p);
        tracker.observe(&p, o.new_flow);
        if i % 65_536 == 0 {
            table.take_updates(4096);
        }
    }
    let after = rss_kib();
    let table_mib = (after - before) as f64 / 1024.0;
    let per_flow = (after - before) as f64 * 1024.0 / table.len() as f64;
    println!(
        "flows {} | RSS before {:.1} MiB, after {:.1} MiB, growth {:.1} MiB | {:.0} bytes/flow measured, {} bytes/flow budget (Flow {} B) | hosts {} pairs {} | bytes per host/pair {:?}",
        table.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        table_mib,
        per_flow,
        FlowTable::bytes_per_flow(),
        std::mem::size_of::<gatewarden::flow::Flow>(),
        tracker.hosts(),
        tracker.pairs(),
        HostTracker::bytes_per_host_and_pair(),
    );
    assert_eq!(table.len(), flows as usize);
    if full {
        // Issue #3's budget: 1 M concurrent flows in 200 MB.
        let growth_mb = (after - before) as f64 * 1024.0 / 1e6;
        assert!(growth_mb <= 200.0, "1 M flows took {growth_mb:.1} MB, over the 200 MB budget");
    }
    if !full {
        // At 100 k flows the full host/pair tracker weighs relatively more: take
        // its own budget out, and the flow part must stay near the flow budget.
        let (per_host, per_pair) = HostTracker::bytes_per_host_and_pair();
        let tracker = (tracker.hosts() * per_host + tracker.pairs() * per_pair) as f64;
        let flow_part = ((after - before) as f64 * 1024.0 - tracker) / table.len() as f64;
        let budget = FlowTable::bytes_per_flow() as f64;
        println!("flow part {flow_part:.0} bytes/flow after the tracker's {:.1} MiB", tracker / 1048576.0);
        assert!(flow_part < budget * 1.5, "{flow_part:.0} bytes per flow beyond the tracker, budget {budget}");
    }
}
