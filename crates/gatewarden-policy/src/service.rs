//! The monitor's policy service: one [`PolicyEngine`] behind a mutex, shared
//! by the HTTP API, the flow/alert tasks and the once-a-second tick, which
//! publishes the compiled policy to the routers (as a `PolicyUpdate` on the
//! bus: in process, or signed and encrypted over MQTT).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::neighbours::Resolutions;
use super::{PolicyConfig, PolicyEngine};
use gatewarden_proto::messages::{Alert, FlowBatch, PolicyUpdate};

/// Republish the current policy this often, so a restarted router catches up.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(30);

type Publish = Box<dyn Fn(PolicyUpdate) + Send + Sync>;

/// Where the routers' neighbour tables (IP ↔ MAC) come from, for groups with
/// MAC members: the node hands in the union its [`crate::neighbours::NeighbourStore`]
/// keeps from the routers' `neighbour_table` messages (never the monitor's own
/// ARP table, which says nothing about a router's LAN), with which routers
/// reported each pair, so suggestions can name whose table made an address a
/// member; `None` leaves the last resolution in place.
pub type Neighbours = Box<dyn Fn() -> Option<Resolutions> + Send + Sync>;

/// Shared policy state of a running monitor.
pub struct PolicyService {
    engine: Mutex<PolicyEngine>,
    publish: Publish,
    neighbours: Neighbours,
    last_publish: Mutex<Option<(u64, Instant)>>,
    last_neighbours: Mutex<Instant>,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService").finish_non_exhaustive()
    }
}

impl PolicyService {
    /// Opens the engine; `publish` sends a policy to the routers.
    pub fn start(cfg: &PolicyConfig, publish: Publish, neighbours: Neighbours) -> anyhow::Result<Arc<PolicyService>> {
        let engine = PolicyEngine::open(cfg)?;
        let s = Arc::new(PolicyService {
            engine: Mutex::new(engine),
            publish,
            neighbours,
            last_publish: Mutex::new(None),
            last_neighbours: Mutex::new(Instant::now() - Duration::from_secs(60)),
        });
        s.tick();
        Ok(s)
    }

    /// The engine, locked.
    pub fn engine(&self) -> MutexGuard<'_, PolicyEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the current policy now (after a change).
    pub fn publish_now(&self) {
        let update = self.engine().compile();
        let version = update.version;
        (self.publish)(update);
        *self.last_publish.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, Instant::now()));
        tracing::info!(version, "group policy published");
    }

    /// Once a second: pick up CLI edits of `policy.json`, republish now and
    /// then, refresh MAC resolutions, save the matrix when due.
    pub fn tick(&self) {
        let (changed, version, macs) = {
            let mut e = self.engine();
            let changed = match e.reload() {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!("policy file not reloaded: {err:#}");
                    false
                }
            };
            if let Err(err) = e.maybe_save_matrix() {
                tracing::warn!("traffic matrix not saved: {err:#}");
            }
            (changed, e.version(), e.uses_macs())
        };
        if macs {
            let mut last = self.last_neighbours.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= Duration::from_secs(10) {
                *last = Instant::now();
                if let Some(n) = (self.neighbours)() {
                    self.engine().set_resolutions(n);
                }
            }
        }
        let due = match *self.last_publish.lock().unwrap_or_else(|e| e.into_inner()) {
            None => version > 0,
            Some((v, at)) => v != version || at.elapsed() >= REPUBLISH_EVERY,
        };
        if changed || due {
            self.publish_now();
        }
    }

    /// Counts flows into the matrix, naming the router that sent them (`batch.node`).
    pub fn observe_batch(&self, batch: &FlowBatch) {
        self.engine().observe_batch(batch);
    }

    /// Counts a scan / brute-force alert between groups, naming the router it is filed under (`a.node`).
    pub fn observe_alert(&self, a: &Alert) {
        self.engine().observe_alert(a);
    }

    /// Saves the matrix (on exit).
    pub fn shutdown(&self) {
        let mut e = self.engine();
        if !e.matrix_dirty() {
            return;
        }
        if let Err(e) = e.save_matrix() {
            tracing::warn!("traffic matrix not saved on exit: {e:#}");
        }
    }
}
