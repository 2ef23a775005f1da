//! Once a second on every node: the chart sample, this node's `/proc`
//! metrics for a remote monitor, and the heartbeat.

use std::time::Duration;

use smol::future::FutureExt;

use super::{Context, Service, Wiring};
use gatewarden_proto::messages::{Heartbeat as HeartbeatMsg, Message};

/// The once-a-second tick.
pub struct Heartbeat {
    /// The monitor runs here: it settles overdue alerts; no metrics are sent.
    pub monitor: bool,
    /// The detector runs here: the enforcement thread's watchdog sees it alive.
    pub detector: bool,
    /// Nothing in this process consumes heartbeats, metrics or outcomes: drain them.
    pub drain: bool,
}

impl Service for Heartbeat {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let sd = cx.shutdown.clone();
        let st = cx.state.clone();
        let bus = cx.bus.clone();
        let out = w.out.clone();
        let node = cx.cfg.node_id.clone();
        let role = cx.role;
        let (monitor, drain) = (self.monitor, self.drain);
        // The in-process detector is alive as long as this loop runs.
        let detector_alive = if self.detector { w.enforcer.as_ref().map(|e| e.liveness()) } else { None };
        w.spawn(async move {
            loop {
                let sample = st.sample();
                if monitor {
                    // Alerts whose block no router confirmed in time: stored as `allowed`.
                    st.settle_overdue();
                }
                if let Some(s) = st.settings.get() {
                    s.resend_if_due(&st.live_workers());
                }
                // A node without the monitor sends its /proc numbers to the one that has it.
                if !monitor {
                    out.publish(Message::Metrics(sample));
                }
                if let Some(seen) = &detector_alive {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    seen.store(now, std::sync::atomic::Ordering::Relaxed);
                }
                out.publish(Message::Heartbeat(HeartbeatMsg {
                    node: node.clone(),
                    role,
                    version: env!("CARGO_PKG_VERSION").into(),
                    uptime_s: st.uptime_s() as u64,
                    sent_ns: gatewarden_core::clock::unix_now_ns(),
                }));
                // Without a monitor in this process nothing consumes them; keep the channel from filling.
                if drain {
                    while bus.heartbeats.receiver().try_recv().is_ok() {}
                    while bus.metrics.receiver().try_recv().is_ok() {}
                    while bus.verdict_outcomes.receiver().try_recv().is_ok() {}
                    while bus.evidence.receiver().try_recv().is_ok() {}
                }
                let tick = async {
                    smol::Timer::after(Duration::from_secs(1)).await;
                    false
                };
                if tick
                    .or(async {
                        sd.wait().await;
                        true
                    })
                    .await
                {
                    break;
                }
            }
        });
        Ok(())
    }
}
