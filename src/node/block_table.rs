//! Every 5 s the router tells the monitor what its block sets hold (the
//! dashboard's current blocks); at once after a dashboard unblock.

use std::time::Duration;

use super::{Context, Service, Wiring};
use gatewarden_proto::messages::Message;

/// The `block-table` thread (router with enforcement).
#[derive(Default)]
pub struct BlockTable(Option<std::thread::JoinHandle<()>>);

impl Service for BlockTable {
    fn name(&self) -> &'static str {
        "block-table"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let Some(e) = &w.enforcer else { return Ok(()) };
        let Some(table_now_rx) = w.table_now_rx.take() else { return Ok(()) };
        let control = e.control();
        let out = w.out.clone();
        let sd = cx.shutdown.clone();
        let node = cx.cfg.node_id.clone();
        let spawned = std::thread::Builder::new().name("block-table".into()).spawn(move || {
            use crate::ctl::BlockControl;
            while !sd.is_triggered() {
                match control.list() {
                    Ok(mut entries) => {
                        let total = entries.len() as u32;
                        entries.sort_by_key(|e| std::cmp::Reverse(e.expires_in_s.unwrap_or(u32::MAX)));
                        entries.truncate(gatewarden_proto::messages::MAX_BLOCK_ROWS);
                        out.publish(Message::BlockTable(gatewarden_proto::messages::BlockTable {
                            node: node.clone(),
                            total,
                            entries,
                        }));
                    }
                    Err(e) => tracing::debug!(error = %e, "block table not read"),
                }
                for _ in 0..50 {
                    if sd.is_triggered() {
                        break;
                    }
                    match table_now_rx.recv_timeout(Duration::from_millis(100)) {
                        // One table answers a burst of unblocks.
                        Ok(()) => {
                            while table_now_rx.try_recv().is_ok() {}
                            break;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        // No one can ask any more: plain pacing, never a spin.
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                    }
                }
            }
        });
        // As before the split: a thread that could not be spawned means no table, not a failed start.
        self.0 = spawned.ok();
        Ok(())
    }

    /// Before enforcement stops: the reader asks the enforcement thread.
    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(t) = self.0 {
            let _ = t.join();
        }
    }
}
