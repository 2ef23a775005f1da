//! The per-device baseline's cost per flow snapshot (src/detect/baseline.rs),
//! on one core: a fleet of devices streaming to their usual servers, some
//! also contacting new hosts (the new-host probation's bookkeeping), fed in
//! 100 ms snapshots after the warm-up.
//!
//!     cargo bench --bench baseline
//!
//! Criterion reports elements/s = flow snapshots judged per second.
//! Recorded in docs/PERFORMANCE.md.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gatewarden::detect::baseline::{Baseline, BaselineConfig};
use gatewarden::flow::ConnState;
use gatewarden_proto::messages::{FlowRecord, Proto};

/// One device's snapshot of one flow at `t` seconds with `bytes` sent so far.
fn snapshot(device: u32, flow: u64, dst: IpAddr, t: f64, bytes: u64) -> FlowRecord {
    FlowRecord {
        flow_id: (u64::from(device) << 16) | flow,
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + device)),
        dst,
        sport: 40_000,
        dport: 443,
        proto: Proto::Tcp,
        first_ns: 0,
        last_ns: (t * 1e9) as u64,
        fwd_packets: (bytes / 1000) as u32,
        rev_packets: 0,
        fwd_bytes: bytes,
        rev_bytes: 0,
        conn_state: ConnState::S1,
        src_answered: false,
    }
}

/// `devices` devices from `from` to `to` seconds: each streams 50 kB/s to its
/// server; every 8th also polls a new host (a different one each 10 s).
fn traffic(devices: u32, from: f64, to: f64) -> Vec<FlowRecord> {
    let server = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        for d in 0..devices {
            out.push(snapshot(d, 1, server, t, (t * 50_000.0) as u64));
            if d % 8 == 0 {
                let slot = (t / 10.0) as u32;
                let new_host = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + slot % 200));
                out.push(snapshot(d, 2 + u64::from(slot), new_host, t, ((t % 10.0) * 2_000.0) as u64));
            }
        }
        t += 0.1;
    }
    out
}

fn baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    for devices in [64u32, 4096] {
        let warm = traffic(devices, 0.0, 40.0);
        let judged = traffic(devices, 40.0, 50.0);
        g.throughput(Throughput::Elements(judged.len() as u64));
        g.sample_size(10);
        g.bench_function(format!("observe_{devices}_devices"), |b| {
            b.iter_batched(
                || {
                    let mut base = Baseline::new(BaselineConfig { warmup_s: 30, ..Default::default() });
                    for r in &warm {
                        base.observe(r);
                    }
                    base
                },
                |mut base| {
                    let mut found = 0usize;
                    for r in &judged {
                        found += base.observe(std::hint::black_box(r)).len();
                    }
                    // Steady devices and quiet polls: nothing to report.
                    assert_eq!(found, 0);
                    base
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, baseline);
criterion_main!(benches);
