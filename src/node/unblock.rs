//! The dashboard's "unblock" on a router with enforcement: in this process
//! through hooks on the page's state, from a monitor on another node as a
//! sealed message. Both go through the enforcement thread, as
//! `gatewarden ctl unblock` does (escalation starts over).

use std::sync::Arc;

use super::{next_or_shutdown, Context, Service, Wiring};
use gatewarden_proto::messages::Message;

/// Unblock hooks and the bus unblock task (router).
pub struct Unblock;

impl Service for Unblock {
    fn name(&self) -> &'static str {
        "unblock"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        use crate::ctl::BlockControl;
        let Some(e) = &w.enforcer else { return Ok(()) };
        let state = &cx.state;
        let control = Arc::new(e.control());
        let (mac_control, table_now) = (control.clone(), w.table_now.clone());
        state.set_unblock_mac_hook(Arc::new(move |mac| {
            let text = crate::enforce::spoof::mac_text(&mac);
            match mac_control.unblock_mac(mac) {
                Ok(true) => {
                    let _ = table_now.send(());
                    Ok(format!("lifted the containment of {text}"))
                }
                Ok(false) => anyhow::bail!("{text} is not contained (expired or already lifted)"),
                Err(e) => anyhow::bail!("{e}"),
            }
        }));
        let (hook_control, table_now) = (control.clone(), w.table_now.clone());
        state.set_unblock_hook(Arc::new(move |ip| match hook_control.unblock(ip) {
            Ok(true) => {
                let _ = table_now.send(());
                Ok(format!("unblocked {ip}"))
            }
            Ok(false) => {
                anyhow::bail!("{ip} is not in the detector or admin block sets (expired or already lifted)")
            }
            Err(e) => anyhow::bail!("{e}"),
        }));
        // A monitor on another node asks for it over the bus (sealed for this router).
        let rx = cx.bus.unblocks.receiver();
        let sd = cx.shutdown.clone();
        let out = w.out.clone();
        let node = cx.cfg.node_id.clone();
        let table_now = w.table_now.clone();
        w.spawn(async move {
            loop {
                let Some(req) = next_or_shutdown(&rx, &sd).await else { break };
                let (c, n) = (control.clone(), node.clone());
                // The enforcement thread may take a moment: not on the executor.
                let answer = smol::unblock(move || {
                    crate::roles::unblock::apply(c.as_ref(), &n, &req, gatewarden_core::clock::unix_now_ns())
                })
                .await;
                tracing::info!(reason = %answer.reason, "dashboard unblock");
                let _ = table_now.send(());
                out.publish(Message::Alert(answer));
            }
        });
        Ok(())
    }
}
