//! Runs the router path (parse → flow table → features) once over a capture:
//! a fixed workload for `valgrind --tool=callgrind`, whose instruction counts
//! do not depend on what else the machine is doing.
//!
//!     cargo build --profile profiling --example router_path
//!     valgrind --tool=callgrind target/profiling/examples/router_path CAPTURE

use gatewarden::capture::{CaptureFile, PacketSource};
use gatewarden::features::HostTracker;
use gatewarden::flow::FlowTable;

fn main() {
    let path = std::env::args().nth(1).expect("usage: router_path CAPTURE");
    let mut frames = Vec::new();
    let mut cf = CaptureFile::open(std::path::Path::new(&path)).expect("capture opens");
    while let Some(f) = cf.next_frame().expect("capture reads") {
        frames.push((f.ts_ns, f.data.to_vec()));
    }
    let mut table = FlowTable::new(262_144, 60, 300);
    let mut tracker = HostTracker::hosts_only(16_384);
    let mut parsed = 0u64;
    for (ts, d) in &frames {
        let f = gatewarden::capture::Frame {
            ts_ns: *ts,
            link: gatewarden::capture::LinkType::Ethernet,
            data: d,
            orig_len: d.len() as u32,
        };
        if let Ok(p) = gatewarden::packet::parse(&f) {
            let o = table.observe(&p);
            tracker.observe(&p, o.new_flow);
            parsed += 1;
        }
    }
    println!("{parsed} packets, {} flows, {} hosts", table.len(), tracker.hosts());
}
