//! `gatewarden replay`: the whole `all` pipeline over a capture file.
//!
//! The stages run in lockstep on one thread (router → detector → monitor),
//! so a replay is deterministic: batches are cut on capture time, and the
//! result is the same at `--speed max` as at `--speed realtime`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bus::messages::FlowBatch;
use crate::capture::{CaptureError, CaptureFile, PacketSource};
use crate::config::Config;
use crate::metrics::Registry;
use crate::monitor::MonitorState;
use crate::roles::detector::DetectorStage;
use crate::roles::router::RouterStage;
use crate::shutdown::Shutdown;

/// How fast to feed the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Speed {
    /// As fast as the pipeline goes.
    Max,
    /// At the pace the packets were recorded.
    Realtime,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// The capture file.
    pub file: PathBuf,
    /// Frames read from the capture.
    pub packets: u64,
    /// Frames skipped by the parser, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Flows created.
    pub flows: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted: u64,
    /// Alert counts by kind.
    pub alerts: BTreeMap<String, u64>,
    /// Verdicts (block requests) issued.
    pub verdicts: u64,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Frames per second of wall-clock time.
    pub pps: f64,
    /// Seconds between the first and last frame.
    pub capture_span_s: f64,
}

impl ReplaySummary {
    /// The human summary printed at the end.
    pub fn human(&self) -> String {
        let mut s = format!(
            "replayed {}\n  packets   {} ({} skipped)\n  flows     {}{}\n  verdicts  {}\n  alerts    {}\n",
            self.file.display(),
            self.packets,
            self.skipped.values().sum::<u64>(),
            self.flows,
            if self.flows_evicted > 0 {
                format!(" ({} evicted at the table cap)", self.flows_evicted)
            } else {
                String::new()
            },
            self.verdicts,
            self.alerts.values().sum::<u64>(),
        );
        for (kind, n) in &self.alerts {
            s.push_str(&format!("    {kind:<12} {n}\n"));
        }
        s.push_str(&format!(
            "  elapsed   {:.3} s for {:.1} s of traffic ({:.0} packets/s)\n",
            self.elapsed_s, self.capture_span_s, self.pps
        ));
        s
    }
}

/// Replays `path` through router, detector and monitor stages that report into `state`.
pub fn replay(
    path: &Path,
    speed: Speed,
    cfg: &Config,
    state: &Arc<MonitorState>,
    shutdown: &Shutdown,
    progress: bool,
) -> Result<ReplaySummary, CaptureError> {
    let registry: &Arc<Registry> = &state.registry;
    let mut source = CaptureFile::open(path)?;
    let mut router = RouterStage::new(cfg, registry);
    let mut detector = DetectorStage::new(cfg, registry);
    let bar = progress.then(|| progress_bar(source.size_hint()));
    let started = Instant::now();
    let mut first_ts: Option<u64> = None;
    let mut last_ts = 0u64;
    let mut verdicts = 0u64;
    let mut frames = 0u64;
    let mut handle = |batch: FlowBatch, verdicts: &mut u64| {
        let f = detector.on_batch(&batch);
        *verdicts += f.verdicts.len() as u64;
        for a in f.alerts {
            state.record_alert(a);
        }
    };
    let file_name = path.display().to_string();
    let mut result = Ok(());
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        frames += 1;
        let first = *first_ts.get_or_insert(frame.ts_ns);
        last_ts = last_ts.max(frame.ts_ns);
        if speed == Speed::Realtime {
            let due = Duration::from_nanos(frame.ts_ns.saturating_sub(first));
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        if let Some(batch) = router.on_frame(&frame) {
            handle(batch, &mut verdicts);
        }
        if frames % 65_536 == 0 {
            let pos = source.stats().bytes_read;
            if let Some(b) = &bar {
                b.set_position(pos);
            }
            state.set_replay(serde_json::json!({"file": file_name, "state": "running", "packets": frames}));
        }
    }
    for batch in router.finish() {
        handle(batch, &mut verdicts);
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    result?;
    state.set_replay(serde_json::json!({"file": file_name, "state": "finished", "packets": frames}));
    let elapsed_s = started.elapsed().as_secs_f64();
    let stats = router.table().stats();
    let snap = registry.snapshot();
    let skipped = crate::packet::SkipReason::ALL
        .iter()
        .map(|r| {
            let key = format!("gatewarden_packets_skipped_total{{reason={}}}", r.as_str());
            (r.as_str().to_string(), snap.get(&key).copied().unwrap_or(0.0) as u64)
        })
        .collect();
    Ok(ReplaySummary {
        file: path.to_path_buf(),
        packets: frames,
        skipped,
        flows: stats.created,
        flows_evicted: stats.evicted,
        alerts: state.alerts_by_kind(),
        verdicts,
        elapsed_s,
        pps: frames as f64 / elapsed_s.max(1e-9),
        capture_span_s: first_ts.map_or(0.0, |f| (last_ts - f) as f64 / 1e9),
    })
}

fn progress_bar(size: Option<u64>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(size, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}
