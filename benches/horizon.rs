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
//! Then the long-horizon detectors per flow record over the same table (`long_horizon/*`).
//!
//! Criterion reports elements/s = observations (records) per second. The table's own byte
//! count is printed once. Recorded in docs/PERFORMANCE.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewarden::detect::config::DetectorConfig;
use gatewarden::detect::long_horizon::LongHorizon;
use gatewarden::detect::source_history::{SourceHistory, SourceHistoryConfig, Window};
use gatewarden::flow::ConnState;
use gatewarden_proto::messages::{FlowRecord, Proto};

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

/// A TCP flow snapshot from `src` to `dst:dport`.
fn record(id: u64, src: IpAddr, dst: IpAddr, dport: u16, ts: u64, rev: u32, state: ConnState) -> FlowRecord {
    FlowRecord {
        flow_id: id,
        src,
        dst,
        sport: 40_000 + (id % 20_000) as u16,
        dport,
        proto: Proto::Tcp,
        first_ns: ts,
        last_ns: ts,
        fwd_packets: 2,
        rev_packets: rev,
        fwd_bytes: 120,
        rev_bytes: u64::from(rev) * 60,
        conn_state: state,
        src_answered: rev > 0,
    }
}

/// The long-horizon detectors (crates/gatewarden-detect/src/long_horizon/) per flow record, over
/// the same full table: answered flows of known sources, a spoofed SYN flood (each record
/// waits for its answer and is settled by `tick`, as in the detector stage), and a scanner's
/// refused probes (each checked by the slow-scan and distributed-scan rules).
fn long_horizon(c: &mut Criterion) {
    let mut lh = LongHorizon::with_history(&DetectorConfig::default(), full_table());
    println!(
        "long_horizon: {} bytes = {:.1} MB with 100 000 sources",
        lh.memory_bytes(),
        lh.memory_bytes() as f64 / 1e6
    );
    let mut g = c.benchmark_group("long_horizon");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.sample_size(10);
    let mut id = 0u64;
    let mut ts = T0 + 10_000_000_000;
    g.bench_function("observe_answered_known_100k", |b| {
        b.iter(|| {
            ts += 100_000_000;
            for i in 0..BATCH {
                id += 1;
                let s = i.wrapping_mul(7919) % SOURCES;
                lh.observe(std::hint::black_box(&record(id, src(s), target(i), 443, ts, 2, ConnState::S1)));
            }
            lh.tick(ts)
        })
    });
    let mut fresh = SOURCES;
    g.bench_function("observe_spoofed_syn_flood", |b| {
        b.iter(|| {
            ts += 100_000_000;
            for i in 0..BATCH {
                id += 1;
                fresh = fresh.wrapping_add(1);
                lh.observe(std::hint::black_box(&record(id, src(fresh), target(i), 80, ts, 0, ConnState::S0)));
            }
            lh.tick(ts)
        })
    });
    g.bench_function("observe_scanner_refused", |b| {
        b.iter(|| {
            ts += 100_000_000;
            for i in 0..BATCH {
                id += 1;
                let port = (id % 60_000) as u16 + 1;
                lh.observe(std::hint::black_box(&record(id, src(i % 16), target(1), port, ts, 1, ConnState::REJ)));
            }
            lh.tick(ts)
        })
    });
    g.finish();
    println!("long_horizon after the runs: {} bytes = {:.1} MB", lh.memory_bytes(), lh.memory_bytes() as f64 / 1e6);
}

criterion_group!(benches, horizon, long_horizon);
criterion_main!(benches);
