//! What each role does with the traffic, as plain stages and checks that
//! know nothing of channels or threads: the router's stage (frames → flow
//! batches, `router.rs`), the detector's stage (batches → verdicts and
//! alerts, `detector.rs`), the settings page's checks (`settings.rs`) and
//! the router's side of a dashboard unblock (`unblock.rs`).
//!
//! The node (src/node/) starts them as services; `gatewarden replay` calls
//! them in lockstep (src/replay.rs).

pub mod detector;
pub mod router;
pub mod settings;
pub mod unblock;

use crate::bus::LocalBus;

/// The enforcement thread's reports, onto this node's bus.
pub fn enforcement_reports(bus: &LocalBus) -> crate::enforce::service::Reports {
    let (alerts, outcomes) = (bus.clone(), bus.clone());
    crate::enforce::service::Reports {
        alert: Box::new(move |a| {
            alerts.alerts.publish(a);
        }),
        outcome: Box::new(move |o| {
            outcomes.verdict_outcomes.publish(o);
        }),
    }
}
