//! The long-horizon per-source history's cost per observation
//! (crates/gatewarden-detect/src/source_history.rs) at 100 000 tracked sources,
//! and the table's memory, on one core.
//!
//!     cargo bench --bench horizon
//!
//! Three streams against a table already holding 100 000 sources (the default
//! size) and 1 024 protected scanners:
//! - `known_sources`: probes from sources already tracked (the common case);
//! - `spoofed_flood`: one probe each from new sources, every one evicting another;
//! - `protected_scanners`: scanners hitting new ports (sketch updates).
//!
//! Criterion reports elements/s = observations per second. The table's own byte
//! count is printed once. Recorded in docs/PERFORMANCE.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewarden::detect::source_history::{SourceHistory, SourceHistoryConfig, Window};
use gatewarden_proto::messages::Proto;

const T0: u64 = 1_796_000_000 * 1_000_000_000;
const SOURCES: u32 = 100_000;
const BATCH: u32 = 10_000;

fn src(i: u32) -> IpAddr {
    if i % 2 == 0 {
        IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))
    } else {
        IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(i)))
    }
}

fn target(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i % 256))
}

/// A full default table: 100 000 sources, 1 024 of them protected scanners.
fn full_table() -> SourceHistory {
    let cfg = SourceHistoryConfig::default();
    let mut h = SourceHistory::with_seed(cfg, 7).expect("default config is valid");
    for i in 0..SOURCES {
        h.observe(src(i), target(i), 443, Proto::Tcp, true, T0);
    }
    for i in 0..cfg.max_protected as u32 {
        for p in 0..8u16 {
            h.observe(src(i), target(i), 1000 + p, Proto::Tcp, false, T0 + 1_000_000_000);
        }
    }
    h
}

fn horizon(c: &mut Criterion) {
    // One table reused across iterations: cloning 30 MB per batch would dominate.
    let mut h = full_table();
    let bytes = h.memory_bytes();
    println!(
        "source_history: {} sources tracked, {} bytes = {:.1} MB ({:.0} bytes per source)",
        h.len(),
        bytes,
        bytes as f64 / 1e6,
        bytes as f64 / h.len() as f64
    );
    let mut g = c.benchmark_group("horizon");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.sample_size(10);
    let mut round = 0u32;
    g.bench_function("observe_known_100k", |b| {
        b.iter(|| {
            round += 1;
            let ts = T0 + 2_000_000_000 + u64::from(round) * 1_000_000;
            for i in 0..BATCH {
                let s = (i.wrapping_mul(7919) + round) % SOURCES;
                h.observe(std::hint::black_box(src(s)), target(i), 443, Proto::Tcp, true, ts);
            }
        })
    });
    let mut fresh = SOURCES;
    g.bench_function("observe_spoofed_flood_100k", |b| {
        b.iter(|| {
            let ts = T0 + 3_000_000_000;
            for i in 0..BATCH {
                fresh = fresh.wrapping_add(1);
                h.observe(std::hint::black_box(src(fresh)), target(i), 80, Proto::Tcp, false, ts);
            }
        })
    });
    let mut port = 2000u16;
    g.bench_function("observe_protected_scanners_100k", |b| {
        b.iter(|| {
            port = port.wrapping_add(1);
            let ts = T0 + 4_000_000_000;
            for i in 0..BATCH {
                h.observe(std::hint::black_box(src(i % 1024)), target(i), port, Proto::Tcp, false, ts);
            }
        })
    });
    g.bench_function("stats_hour_100k", |b| {
        b.iter(|| {
            let mut ports = 0u64;
            for i in 0..BATCH {
                if let Some(s) = h.stats(src(i % SOURCES), Window::Hour, T0 + 5_000_000_000) {
                    ports += u64::from(s.distinct_ports);
                }
            }
            ports
        })
    });
    g.finish();
    let bytes = h.memory_bytes();
    println!("source_history after the runs: {} sources, {} bytes = {:.1} MB", h.len(), bytes, bytes as f64 / 1e6);
    assert!(bytes <= 32_000_000);
}

criterion_group!(benches, horizon);
criterion_main!(benches);
