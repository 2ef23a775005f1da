//! Where the router's packets come from: the live AF_PACKET ring on
//! `capture.interface`, or a capture file (`run --replay FILE`), each on its
//! own thread publishing flow batches. Its evidence ring goes to the
//! verdict task ([`Wiring::evidence`]).

use std::path::PathBuf;

use super::{Context, Service, Wiring};
use crate::roles::router;

/// The router's capture thread.
pub struct Capture {
    /// Replay this file into the bus instead of capturing live.
    pub replay: Option<PathBuf>,
    /// The capture (or replay) thread.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Service for Capture {
    fn name(&self) -> &'static str {
        "capture"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let cfg = cx.cfg;
        if let Some(path) = &self.replay {
            let (t, ring) = router::spawn_replay(path, cfg, &cx.registry, w.out.clone(), cx.shutdown.clone())?;
            (self.thread, w.evidence) = (Some(t), Some(ring));
        } else if !cfg.capture.interface.is_empty() {
            let spoof = w.enforcer.as_ref().map(|e| e.spoof_link());
            let (t, ring) = router::spawn_capture(cfg, &cx.registry, w.out.clone(), spoof, cx.shutdown.clone())?;
            (self.thread, w.evidence) = (Some(t), Some(ring));
        } else {
            tracing::warn!("no capture.interface configured: the router sees no traffic (set it to the LAN interface)");
        }
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(t) = self.thread {
            let _ = t.join();
        }
    }
}
