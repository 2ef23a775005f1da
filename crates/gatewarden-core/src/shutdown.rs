//! SIGTERM/SIGINT → one shutdown signal every task and thread can watch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A one-shot, cloneable shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    // Dropping the sender closes the channel, which wakes every async waiter.
    tx: Arc<Mutex<Option<async_channel::Sender<()>>>>,
    rx: async_channel::Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        let (tx, rx) = async_channel::bounded(1);
        Shutdown { flag: Arc::new(AtomicBool::new(false)), tx: Arc::new(Mutex::new(Some(tx))), rx }
    }

    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves when the signal fires.
    pub async fn wait(&self) {
        let _ = self.rx.recv().await;
    }

    /// Blocks the thread until the signal fires.
    pub fn wait_blocking(&self) {
        let _ = self.rx.recv_blocking();
    }

    /// Fires on the first SIGTERM or SIGINT; a second one exits at once.
    pub fn install_signal_handlers(&self) -> anyhow::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let me = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                if me.is_triggered() {
                    eprintln!("second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal = sig, "shutting down");
                me.trigger();
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_waiters() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_blocking());
        assert!(!s.is_triggered());
        s.trigger();
        s.trigger();
        t.join().unwrap();
        assert!(s.is_triggered());
        smol::block_on(s.wait());
    }
}
