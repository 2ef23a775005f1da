//! A router whose monitor is on another node: the enforcement thread
//! reports on this node's local bus, and its alerts (a contained MAC, a full
//! block set) and verdict outcomes are forwarded to the monitor.

use super::{next_or_shutdown, Context, Service, Wiring};
use gatewarden_proto::messages::Message;

/// Forwards enforcement's alerts and outcomes to the broker (router without monitor, with `[mqtt]`).
pub struct Reports;

impl Service for Reports {
    fn name(&self) -> &'static str {
        "reports"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let (rx_alerts, rx_outcomes) = (cx.bus.alerts.receiver(), cx.bus.verdict_outcomes.receiver());
        let (sd, o) = (cx.shutdown.clone(), w.out.clone());
        w.spawn(async move {
            loop {
                let Some(a) = next_or_shutdown(&rx_alerts, &sd).await else { break };
                o.publish(Message::Alert(a));
            }
        });
        let (sd, o, st) = (cx.shutdown.clone(), w.out.clone(), cx.state.clone());
        w.spawn(async move {
            loop {
                let Some(v) = next_or_shutdown(&rx_outcomes, &sd).await else { break };
                // This node's own page lists a verdict's block only once it is in the kernel.
                st.confirm_block(&v);
                o.publish(Message::VerdictOutcome(v));
            }
        });
        Ok(())
    }
}
