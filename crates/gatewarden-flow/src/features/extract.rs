//! `gatewarden features`: one CSV row per flow, for training.
//!
//! A row is written when a flow leaves the table (idle or active timeout,
//! eviction, or end of capture). Its host and pair columns are the source's
//! statistics at that moment (capture time), so the output is deterministic.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::labels::Labels;
use super::{flow_vector, schema, HostTracker};
use crate::config::FlowConfig;
use crate::packet;
use crate::{Flow, FlowTable};
use gatewarden_capture::{CaptureError, PacketSource};

/// What an extraction produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractSummary {
    /// Frames read.
    pub packets: u64,
    /// Frames skipped by the parser.
    pub skipped: u64,
    /// Rows written (one per flow).
    pub rows: u64,
    /// Rows per label.
    pub labels: BTreeMap<String, u64>,
    /// Flows evicted at the table cap.
    pub evicted: u64,
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The capture is unreadable.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Writing the CSV failed.
    #[error("writing the CSV: {0}")]
    Write(#[from] std::io::Error),
}

/// The CSV header: identifying columns, the schema's columns, then `label`.
pub fn header() -> String {
    let mut cols: Vec<String> = ["flow_id", "src", "dst", "sport", "dport", "proto", "first_ts", "last_ts"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(schema::columns().into_iter().map(|(n, _)| n));
    cols.push("label".into());
    cols.join(",")
}

fn write_row(out: &mut impl Write, f: &Flow, tracker: &HostTracker, now: u64, label: &str) -> std::io::Result<()> {
    let v = flow_vector(f, tracker, now);
    write!(
        out,
        "{},{},{},{},{},{},{:.6},{:.6}",
        f.flow_id,
        f.src(),
        f.dst(),
        f.sport(),
        f.dport(),
        f.key.proto,
        f.first_ns as f64 / 1e9,
        f.last_ns as f64 / 1e9
    )?;
    for x in v {
        if x == x.trunc() && x.abs() < 1e9 {
            write!(out, ",{}", x as i64)?;
        } else {
            write!(out, ",{x:.6}")?;
        }
    }
    writeln!(out, ",{label}")
}

/// Reads every frame of `source` and writes one CSV row per flow to `out`.
pub fn extract(
    source: &mut dyn PacketSource,
    labels: &Labels,
    cfg: &FlowConfig,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<ExtractSummary, ExtractError> {
    let mut table = FlowTable::new(cfg.max_flows, cfg.idle_timeout_s, cfg.active_timeout_s);
    let mut tracker = HostTracker::new(cfg.max_hosts, cfg.max_pairs);
    let mut fragments = crate::fragments::FragmentHeads::new();
    let mut summary = ExtractSummary::default();
    writeln!(out, "{}", header())?;
    let mut next_expire = 0u64;
    let mut now = 0u64;
    let emit = |table: &mut FlowTable,
                tracker: &mut HostTracker,
                summary: &mut ExtractSummary,
                now: u64,
                out: &mut dyn Write|
     -> std::io::Result<()> {
        for (_, f) in table.take_exports() {
            tracker.flow_finished(f.src(), f.conn_state().is_failed_attempt(), now);
            let label = labels.label(f.src(), f.first_ns);
            let mut buf = Vec::with_capacity(512);
            write_row(&mut buf, &f, tracker, now, label)?;
            out.write_all(&buf)?;
            summary.rows += 1;
            *summary.labels.entry(label.to_string()).or_insert(0) += 1;
        }
        Ok(())
    };
    while let Some(frame) = source.next_frame()? {
        summary.packets += 1;
        now = now.max(frame.ts_ns);
        match packet::parse(&frame) {
            Ok(mut p) => {
                if p.fragment.is_some() {
                    fragments.resolve(&mut p, packet::fragment_data(&frame).unwrap_or_default());
                }
                let o = table.observe(&p);
                tracker.observe(&p, o.new_flow);
            }
            Err(_) => summary.skipped += 1,
        }
        if now >= next_expire {
            table.expire(now);
            next_expire = now + 1_000_000_000;
        }
        emit(&mut table, &mut tracker, &mut summary, now, out)?;
        if summary.packets % 65_536 == 0 {
            progress(source.stats().bytes_read);
        }
    }
    table.flush();
    emit(&mut table, &mut tracker, &mut summary, now, out)?;
    summary.evicted = table.stats().evicted;
    out.flush()?;
    Ok(summary)
}
