//! The router's side of verdicts and group policy: each verdict is listed
//! on this node's page and handed to enforcement (or answered "not
//! blocked" when enforcement is off), and the first packets of its
//! source's flows go to the monitor as evidence; compiled group policies go
//! to enforcement too.

use super::{next_or_shutdown, Context, Service, Wiring};
use gatewarden_proto::messages::Message;

/// Verdict and policy tasks (router).
pub struct Verdicts;

impl Service for Verdicts {
    fn name(&self) -> &'static str {
        "verdicts"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let rx = cx.bus.verdicts.receiver();
        let sd = cx.shutdown.clone();
        let received =
            cx.registry.counter("gatewarden_verdicts_received_total", "Verdicts received by the router.", &[]);
        let latency = cx.registry.histogram(
            "gatewarden_verdict_latency_seconds",
            "From the capture of the packet that completed a detection to its verdict reaching this router, seconds (live capture only).",
            &[],
            gatewarden_core::metrics::LATENCY_BUCKETS,
        );
        let to_enforcer = w.enforcer.as_ref().map(|e| e.sender());
        let st = cx.state.clone();
        let (out_verdicts, node_verdicts) = (w.out.clone(), cx.cfg.node_id.clone());
        let ring = w.evidence.clone();
        w.spawn(async move {
            loop {
                let Some(v) = next_or_shutdown(&rx, &sd).await else { break };
                received.inc();
                if let Some(s) = verdict_latency(v.issued_ns, gatewarden_core::clock::unix_now_ns()) {
                    latency.observe(s);
                }
                st.record_verdict(&v);
                // The packets behind the verdict's alert (same id), for the monitor's evidence pcap.
                if let Some(e) = ring.as_ref().and_then(|r| r.lock().ok()?.evidence(&node_verdicts, v.id, v.source)) {
                    out_verdicts.publish(Message::Evidence(e));
                }
                tracing::info!(verdict_id = v.id, source = %v.source, kind = v.kind.as_str(), ttl_s = v.ttl_s, reason = %v.reason, "verdict");
                tracing::debug!(target: "timing", stage = "verdict_forwarded", verdict_id = v.id, source = %v.source,
                    queued = rx.len(), "verdict to enforcement");
                if let Some(tx) = &to_enforcer {
                    let _ = tx.send(crate::enforce::service::Command::Verdict(v));
                } else {
                    // Nothing blocks here: say so, so the alert does not claim a block.
                    out_verdicts.publish(Message::VerdictOutcome(gatewarden_proto::messages::VerdictOutcome {
                        node: node_verdicts.clone(),
                        verdict_id: v.id,
                        source: v.source,
                        blocked: false,
                        why: "enforcement is off on this router ([enforce] enabled = false)".into(),
                    }));
                }
            }
        });
        if let Some(tx) = w.enforcer.as_ref().map(|e| e.sender()) {
            let rx = cx.bus.policy.receiver();
            let sd = cx.shutdown.clone();
            w.spawn(async move {
                loop {
                    let Some(p) = next_or_shutdown(&rx, &sd).await else { break };
                    let _ = tx.send(crate::enforce::service::Command::Policy(p));
                }
            });
        }
        Ok(())
    }
}

/// Longest capture-to-verdict time taken as a latency: a verdict about a
/// capture file replayed long after it was recorded carries the file's time,
/// not a latency, and would drown the real ones.
pub const MAX_VERDICT_LATENCY_S: f64 = 600.0;

/// Seconds from `issued_ns` (the capture time of the packet that completed
/// the detection) to `now_ns`, when that is a latency: not in the future
/// (clocks of two nodes apart) and not older than [`MAX_VERDICT_LATENCY_S`].
pub fn verdict_latency(issued_ns: u64, now_ns: u64) -> Option<f64> {
    let s = now_ns.checked_sub(issued_ns)? as f64 / 1e9;
    (s <= MAX_VERDICT_LATENCY_S).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_capture_times_are_latencies() {
        let now = 1_800_000_000_000_000_000;
        assert_eq!(verdict_latency(now - 3_000_000, now), Some(0.003));
        assert_eq!(verdict_latency(now + 1, now), None, "a verdict from the future (skewed clock)");
        assert_eq!(verdict_latency(now - 3_600_000_000_000, now), None, "a replayed old capture");
    }
}
