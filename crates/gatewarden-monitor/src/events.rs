//! Live updates for the page over Server-Sent Events: every subscriber gets
//! a bounded queue; a subscriber that does not keep up loses events (counted)
//! instead of slowing the monitor down. The queues are async channels: each
//! stream is a task on the HTTP server's executor, not a thread.

use std::sync::{Arc, Mutex};

use async_channel::{bounded, Receiver, Sender, TrySendError};

use serde_json::Value;

use gatewarden_core::metrics::{Counter, Gauge, Registry};

/// Most page connections listening at once; more are refused with 503.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Events queued per subscriber before new ones are dropped for it.
pub const QUEUE: usize = 256;

/// Fans events out to every connected page.
pub struct Broadcaster {
    subs: Mutex<Vec<Sender<Arc<str>>>>,
    dropped: Counter,
    clients: Gauge,
}

impl Broadcaster {
    /// An empty broadcaster with its metrics in `registry`.
    pub fn new(registry: &Registry) -> Broadcaster {
        Broadcaster {
            subs: Mutex::new(Vec::new()),
            dropped: registry.counter(
                "gatewarden_sse_dropped_total",
                "Live page events dropped because a client did not read fast enough.",
                &[],
            ),
            clients: registry.gauge("gatewarden_sse_clients", "Pages connected to the live event stream.", &[]),
        }
    }

    /// A new subscriber's queue, or `None` when [`MAX_SUBSCRIBERS`] are connected.
    pub fn subscribe(&self) -> Option<Receiver<Arc<str>>> {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if subs.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (tx, rx) = bounded(QUEUE);
        subs.push(tx);
        self.clients.set(subs.len() as f64);
        Some(rx)
    }

    /// Whether any page listens (lets callers skip building events nobody reads).
    pub fn has_subscribers(&self) -> bool {
        !self.subs.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Sends `data` as event `name` to every subscriber.
    pub fn send(&self, name: &str, data: &Value) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if subs.is_empty() {
            return;
        }
        let text: Arc<str> = format!("event: {name}\ndata: {data}\n\n").into();
        subs.retain(|s| match s.try_send(text.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.inc();
                true
            }
            Err(TrySendError::Closed(_)) => false,
        });
        self.clients.set(subs.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_subscribers_lose_events_and_gone_ones_are_forgotten() {
        let r = Registry::new();
        let b = Broadcaster::new(&r);
        let rx = b.subscribe().unwrap();
        let gone = b.subscribe().unwrap();
        drop(gone);
        for i in 0..QUEUE + 10 {
            b.send("tick", &serde_json::json!({"i": i}));
        }
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), QUEUE);
        assert_eq!(b.subs.lock().unwrap().len(), 1);
        assert!(b.dropped.get() >= 10);
        let first = format!("event: tick\ndata: {}\n\n", serde_json::json!({"i": 0}));
        b.send("tick", &serde_json::json!({"i": 0}));
        assert_eq!(&*rx.try_recv().unwrap(), first);
    }
}
