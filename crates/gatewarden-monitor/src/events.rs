//! Live updates for the page over Server-Sent Events: every subscriber gets
//! a bounded queue; a subscriber that does not keep up loses events (counted)
//! instead of slowing the monitor down. The queues are async channels: each
//! stream is a task on the HTTP server's executor, not a thread.
//!
//! Places are shared out: one client (an IPv4 address or an IPv6 /64, see
//! [`client_key`]) holds at most [`STREAMS_PER_CLIENT`] without an admin
//! token, and the last [`ADMIN_RESERVED`] places are for admin tokens.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_channel::{bounded, Receiver, Sender, TrySendError};

use serde_json::Value;

use gatewarden_core::metrics::{Counter, Gauge, Registry};

use crate::auth::client_key;

/// Most page connections listening at once; more are refused with 503.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Streams one client may hold without an admin token. A person keeps a page
/// or two open per browser, so 4 leaves room for a few tabs and a wallboard,
/// while one client takes at most 1/16 of the places: the 32 connections an
/// address may open let two addresses take all 64 and the admin got 503.
pub const STREAMS_PER_CLIENT: usize = 4;
/// Places only admin tokens may take, so the operator's page gets live
/// updates however many others (`http.public_status`, viewer tokens) listen.
/// Admin streams are not held to [`STREAMS_PER_CLIENT`]: an admin shares its
/// IPv6 /64 with every device on its LAN.
pub const ADMIN_RESERVED: usize = 8;
/// Events queued per subscriber before new ones are dropped for it.
pub const QUEUE: usize = 256;

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The client holds [`STREAMS_PER_CLIENT`].
    Client,
    /// Every place this caller may take is taken.
    All,
}

/// One connected page.
struct Sub {
    tx: Sender<Arc<str>>,
    /// Its client ([`client_key`]).
    client: IpAddr,
    admin: bool,
}

/// Fans events out to every connected page.
pub struct Broadcaster {
    subs: Mutex<Vec<Sub>>,
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

    /// A new subscriber's queue for a page of `ip` (with an admin token: `admin`), or
    /// why not: the client holds [`STREAMS_PER_CLIENT`] (admins excepted), or
    /// [`MAX_SUBSCRIBERS`] are connected ([`ADMIN_RESERVED`] fewer for non-admins).
    pub fn subscribe(&self, ip: IpAddr, admin: bool) -> Result<Receiver<Arc<str>>, Full> {
        let client = client_key(ip);
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        // Pages that went away free their place now, not at the next event.
        subs.retain(|s| !s.tx.is_closed());
        self.clients.set(subs.len() as f64);
        if !admin {
            if subs.iter().filter(|s| !s.admin && s.client == client).count() >= STREAMS_PER_CLIENT {
                return Err(Full::Client);
            }
            if subs.len() >= MAX_SUBSCRIBERS - ADMIN_RESERVED {
                return Err(Full::All);
            }
        }
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(Full::All);
        }
        let (tx, rx) = bounded(QUEUE);
        subs.push(Sub { tx, client, admin });
        self.clients.set(subs.len() as f64);
        Ok(rx)
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
        subs.retain(|s| match s.tx.try_send(text.clone()) {
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
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let rx = b.subscribe(ip, false).unwrap();
        let gone = b.subscribe(ip, false).unwrap();
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

    #[test]
    fn places_are_shared_out_per_client_and_some_kept_for_admins() {
        let b = Broadcaster::new(&Registry::new());
        let in_64 = |i: usize| -> IpAddr { format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap() };
        let mut held: Vec<_> = (0..STREAMS_PER_CLIENT).map(|i| b.subscribe(in_64(i), false).unwrap()).collect();
        assert_eq!(b.subscribe(in_64(99), false).unwrap_err(), Full::Client, "another address of the /64");
        held.push(b.subscribe(in_64(99), true).expect("an admin in that /64"));
        // A page that goes away frees its place at once.
        held.remove(0);
        held.push(b.subscribe(in_64(100), false).expect("after one of the /64's pages closed"));
        let mut v4 = 0u32;
        while let Ok(rx) = b.subscribe(std::net::Ipv4Addr::from(0xc000_0200 + v4 / 4).into(), false) {
            held.push(rx);
            v4 += 1;
        }
        assert_eq!(held.len(), MAX_SUBSCRIBERS - ADMIN_RESERVED, "places without an admin token");
        assert_eq!(b.subscribe("198.51.100.1".parse().unwrap(), false).unwrap_err(), Full::All);
        while let Ok(rx) = b.subscribe("198.51.100.1".parse().unwrap(), true) {
            held.push(rx);
        }
        assert_eq!(held.len(), MAX_SUBSCRIBERS);
    }
}
