//! Group policies (#9) live with the monitor: the engine (its API is on the
//! page) and a thread that ticks it once a second, publishing the compiled
//! policy to the routers. MAC members resolve through the routers' neighbour
//! tables, which reach the monitor only as messages (`neighbour_table`).

use std::time::Duration;

use super::{Context, Service, Wiring};
use gatewarden_proto::messages::Message;

/// The policy engine and its tick thread (monitor).
pub struct Policy {
    /// The tick thread.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Service for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    /// Opens the policy engine (a broken state directory disables policies with
    /// a warning instead of stopping the monitor) and starts its tick thread.
    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let out = w.out.clone();
        let publish = Box::new(move |u: gatewarden_proto::messages::PolicyUpdate| {
            out.publish(Message::PolicyUpdate(u));
        });
        // MAC members resolve through the routers' tables as their messages
        // brought them (src/node/neighbours.rs sends, the monitor's consumers
        // keep them): the same path whether the router runs here or elsewhere.
        // With which routers reported each pair, so a suggestion names whose
        // table made an address a member.
        let store = w.neighbours.clone();
        let neighbours: crate::policy::service::Neighbours =
            Box::new(move || Some(store.resolutions(std::time::Instant::now())));
        let svc = match crate::policy::service::PolicyService::start(&cx.cfg.policy, publish, neighbours) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("group policies are off: {e:#} (set policy.state_dir to a writable directory)");
                return Ok(());
            }
        };
        let _ = cx.state.policy.set(svc.clone());
        let s2 = svc.clone();
        let shutdown = cx.shutdown.clone();
        let Ok(thread) = std::thread::Builder::new().name("policy".into()).spawn(move || {
            while !shutdown.is_triggered() {
                s2.tick();
                for _ in 0..10 {
                    if shutdown.is_triggered() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }) else {
            return Ok(());
        };
        self.thread = Some(thread);
        w.policy = Some(svc);
        Ok(())
    }

    fn stop(self: Box<Self>, w: &mut Wiring) {
        if let Some(t) = self.thread {
            let _ = t.join();
            if let Some(p) = w.policy.take() {
                p.shutdown();
            }
        }
    }
}
