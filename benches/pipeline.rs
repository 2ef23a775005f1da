//! Throughput of the router's data path on one core: parse → flow table →
//! host/pair features, over captures held in memory (no I/O in the loop).
//!
//!     cargo bench --bench pipeline
//!     cargo bench --bench pipeline -- spoof_check   (the LAN spoof check alone)
//!     cargo bench --bench pipeline -- whole_pipeline  (replay's whole pipeline: mix vs spoofed flood)
//!
//! Uses `GATEWARDEN_BENCH_PCAP` if set (e.g. a 1 M-packet capture made by
//! `tools/make_traffic_pcap.py mix`), else generates a 200 k-packet mix.
//!
//! Time is the benchmark thread's own CPU time (`/proc/thread-self/schedstat`,
//! nanoseconds), not wall time: on a shared 2-core machine other work would
//! otherwise be charged to us, and "packets per second on one core" is
//! exactly packets per CPU-second.

use std::path::Path;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gatewarden::capture::{CaptureFile, Frame, LinkType, PacketSource};
use gatewarden::features::HostTracker;
use gatewarden::flow::FlowTable;
use gatewarden::packet;

/// A capture made by `tools/make_traffic_pcap.py KIND` with `packets` packets, cached in the temp dir.
fn generated(kind: &str, packets: u32) -> String {
    let p = std::env::temp_dir().join(format!("gatewarden-bench-{kind}-{packets}.pcap"));
    if !p.exists() {
        let ok = std::process::Command::new("python3")
            .args(["tools/make_traffic_pcap.py", kind, p.to_str().unwrap(), "--packets", &packets.to_string()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("python3 runs tools/make_traffic_pcap.py");
        assert!(ok.success());
    }
    p.to_string_lossy().into_owned()
}

fn load_frames() -> Vec<(u64, Vec<u8>)> {
    let path = std::env::var("GATEWARDEN_BENCH_PCAP").unwrap_or_else(|_| generated("mix", 200_000));
    read_frames(&path)
}

/// The spoofed SYN flood: a new source, so a new flow, per packet
/// (`GATEWARDEN_BENCH_FLOOD_PCAP`, else 100 k generated packets).
fn load_flood_frames() -> Vec<(u64, Vec<u8>)> {
    let path = std::env::var("GATEWARDEN_BENCH_FLOOD_PCAP").unwrap_or_else(|_| generated("flood", 100_000));
    read_frames(&path)
}

fn read_frames(path: &str) -> Vec<(u64, Vec<u8>)> {
    let mut cf = CaptureFile::open(Path::new(path)).expect("bench capture opens");
    let mut frames = Vec::new();
    while let Some(f) = cf.next_frame().expect("bench capture reads") {
        frames.push((f.ts_ns, f.data.to_vec()));
    }
    frames
}

/// CPU time of the calling thread, from the scheduler's own accounting.
struct ThreadCpu;

/// The whole pipeline as `gatewarden replay` builds it (default config, `--role all`),
/// with the monitor state it reports into.
fn whole_pipeline() -> (gatewarden::replay::Pipeline, std::sync::Arc<gatewarden::monitor::MonitorState>) {
    let state = gatewarden::monitor::MonitorState::new(
        gatewarden_proto::role::Role::All,
        gatewarden_proto::role::RoleSource::Flag,
        "bench".into(),
        gatewarden_core::metrics::Registry::new(),
    );
    (gatewarden::replay::Pipeline::new(&gatewarden::config::Config::default(), &state), state)
}

/// Hands every frame of a capture held in memory to `pipeline`.
fn feed(pipeline: &mut gatewarden::replay::Pipeline, frames: &[(u64, Vec<u8>)]) {
    for (ts, d) in frames {
        let f = Frame { ts_ns: *ts, link: LinkType::Ethernet, data: d, orig_len: d.len() as u32 };
        pipeline.on_frame(&f);
    }
}

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat is readable")
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical >= 1e9 {
            (1e9, "s")
        } else if typical >= 1e6 {
            (1e6, "ms")
        } else if typical >= 1e3 {
            (1e3, "µs")
        } else {
            (1.0, "ns")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let Throughput::Elements(n) = throughput else { return "?" };
        // values are ns per iteration; convert to elements per CPU-second.
        let _ = typical;
        values.iter_mut().for_each(|v| *v = *n as f64 * 1e9 / *v / 1e6);
        "Melem/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns() - i
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

fn bench(c: &mut Criterion<ThreadCpu>) {
    let frames = load_frames();
    let n = frames.len() as u64;
    let mut g = c.benchmark_group("router_path");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for (ts, d) in &frames {
                let f = Frame { ts_ns: *ts, link: LinkType::Ethernet, data: d, orig_len: d.len() as u32 };
                ok += packet::parse(&f).is_ok() as u64;
            }
            ok
        })
    });
    g.bench_function("parse+flow", |b| {
        b.iter_batched(
            || FlowTable::new(262_144, 60, 300),
            |mut table| {
                for (ts, d) in &frames {
                    let f = Frame { ts_ns: *ts, link: LinkType::Ethernet, data: d, orig_len: d.len() as u32 };
                    if let Ok(p) = packet::parse(&f) {
                        table.observe(&p);
                    }
                }
                table
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parse+flow+features", |b| {
        b.iter_batched(
            || (FlowTable::new(262_144, 60, 300), HostTracker::hosts_only(16_384)),
            |(mut table, mut tracker)| {
                for (ts, d) in &frames {
                    let f = Frame { ts_ns: *ts, link: LinkType::Ethernet, data: d, orig_len: d.len() as u32 };
                    if let Ok(p) = packet::parse(&f) {
                        // As the router counts: most packets wait in their
                        // flow's runs, credited at least every 50 ms and here
                        // at the end, as a batch cut would.
                        let o = table.observe(&p);
                        tracker.observe_in_flow(&p, o.new_flow, o.from_originator, table.uncounted(o.index));
                    }
                }
                table.take_updates_crediting(usize::MAX, &mut |originator, responder, runs| {
                    tracker.settle(originator, responder, runs)
                });
                (table, tracker)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // The whole pipeline as `gatewarden replay` runs it (router, detector
    // with model, heuristics, baseline and long-horizon history, fusion,
    // monitor), on the mix and on a spoofed SYN flood. Issue #19's goal is a
    // flood packet costing at most 2x a mix packet: compare the two
    // `ns/packet` lines (criterion's time ÷ packets) or run
    // `cargo bench --bench pipeline -- whole_pipeline`, which prints the ratio.
    let flood = load_flood_frames();
    let mut per_packet = Vec::new();
    for (name, frames) in [("mix", &frames), ("spoofed_flood", &flood)] {
        let mut g = c.benchmark_group("whole_pipeline");
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.sample_size(10);
        g.bench_function(name, |b| {
            b.iter_batched(
                whole_pipeline,
                |(mut pipeline, state)| {
                    feed(&mut pipeline, frames);
                    (pipeline.finish(Path::new(name)), state)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
        if !std::env::args().any(|a| a == "--bench") {
            continue; // `cargo test --all-targets` runs each case once, above; no ratio run
        }
        // One more timed run for the ratio line (thread CPU time, as above).
        let (mut pipeline, _state) = whole_pipeline();
        let t0 = thread_cpu_ns();
        feed(&mut pipeline, frames);
        let summary = pipeline.finish(Path::new(name));
        per_packet.push((name, (thread_cpu_ns() - t0) as f64 / frames.len() as f64, summary.peak_rss_mb));
    }
    if let [(_, mix, _), (_, flood, rss)] = per_packet[..] {
        println!(
            "whole_pipeline: mix {mix:.0} ns/packet, spoofed flood {flood:.0} ns/packet: flood/mix = {:.2} (issue #19 goal <= 2); peak RSS {rss:.0} MiB",
            flood / mix
        );
    }

    // The LAN spoof check as the capture thread runs it (SpoofLink::check:
    // a mutex and one hash lookup per frame), in its steady state: every
    // source already bound. Every address counts as LAN, so every frame
    // takes the binding path rather than an early "implausible" exit.
    let parsed: Vec<([u8; 6], packet::PacketInfo)> = frames
        .iter()
        .filter_map(|(ts, d)| {
            let f = Frame { ts_ns: *ts, link: LinkType::Ethernet, data: d, orig_len: d.len() as u32 };
            Some((packet::source_mac(&f)?, packet::parse(&f).ok()?))
        })
        .collect();
    let lan = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    let guard = gatewarden::enforce::spoof::SpoofGuard::new(Default::default(), lan, None);
    let (tx, _rx) = std::sync::mpsc::channel();
    let link = gatewarden::enforce::service::SpoofLink { guard: std::sync::Arc::new(std::sync::Mutex::new(guard)), tx };
    for (mac, p) in &parsed {
        link.check(*mac, &gatewarden::roles::router::source_frame(p));
    }
    let mut g = c.benchmark_group("spoof_check");
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.sample_size(10);
    g.bench_function("check", |b| {
        b.iter(|| {
            for (mac, p) in &parsed {
                link.check(*mac, &gatewarden::roles::router::source_frame(p));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench
}
criterion_main!(benches);
