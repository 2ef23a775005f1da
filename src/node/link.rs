//! Link health: the UDP echo every node with `[link] listen` answers, and
//! the monitor's prober of `[link] peers`.

use std::time::Duration;

use super::{Context, Service, Wiring};
use crate::monitor::link::{LinkProber, LinkResponder};

/// Answers the monitor's link probes (`[link] listen`).
#[derive(Default)]
pub struct LinkEcho(Option<LinkResponder>);

impl Service for LinkEcho {
    fn name(&self) -> &'static str {
        "link-echo"
    }

    fn start(&mut self, cx: &Context<'_>, _w: &mut Wiring) -> anyhow::Result<()> {
        if !cx.cfg.link.listen.is_empty() {
            self.0 = Some(LinkResponder::start(&cx.cfg.link.listen)?);
        }
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(e) = self.0 {
            e.stop();
        }
    }
}

/// Probes `[link] peers` and feeds the link model (monitor).
#[derive(Default)]
pub struct LinkProbe(Option<LinkProber>);

impl Service for LinkProbe {
    fn name(&self) -> &'static str {
        "link-probe"
    }

    fn start(&mut self, cx: &Context<'_>, _w: &mut Wiring) -> anyhow::Result<()> {
        let link = &cx.cfg.link;
        if !link.peers.is_empty() {
            self.0 = Some(LinkProber::start(
                &link.peers,
                Duration::from_millis(link.probe_interval_ms),
                Duration::from_millis(link.timeout_ms),
                cx.state.clone(),
            )?);
        }
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(p) = self.0 {
            p.stop();
        }
    }
}
