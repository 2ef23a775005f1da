//! The node: one process running a list of services, chosen from its role.
//!
//! [`Node::for_role`] is the one place that decides from the role which
//! services run (each service file then reads only its own config); the
//! node starts them in list order, runs their tasks on one smol executor,
//! and once shutdown fires and the tasks have ended, stops their threads in
//! [`STOP_ORDER`]. Blocking work (HTTP, capture, MQTT, netlink) runs on
//! named threads the services own.
//!
//! Tasks publish through one [`Publisher`] ([`Wiring::out`]): the in-process
//! [`LocalBus`] (`--role all`, or any role without `[mqtt] broker`), or the
//! MQTT node bus when a single role runs with a broker configured. Tasks
//! always *receive* from a `LocalBus`; the MQTT transport feeds it.
//!
//! `gatewarden replay` drives the detector service's [`detector::Analysis`]
//! and the monitor service's [`monitor::Recorder`] in lockstep instead of
//! on the executor (src/replay.rs).

pub mod block_table;
pub mod broker_log;
pub mod capture;
pub mod ctl;
pub mod detector;
pub mod enforcement;
pub mod heartbeat;
pub mod http;
pub mod json_mirror;
pub mod link;
pub mod monitor;
pub mod mqtt;
pub mod neighbours;
pub mod policy;
pub mod reports;
pub mod settings;
pub mod unblock;
pub mod verdicts;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use smol::future::FutureExt;

use crate::bus::{LocalBus, Publisher};
use crate::config::Config;
use crate::monitor::MonitorState;
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::role::{Role, RoleSource};

/// Extra ways to start a role.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Router: replay this capture into the bus instead of capturing live.
    pub replay: Option<PathBuf>,
}

/// Runs `role` until `shutdown` fires; returns once every task has stopped.
pub fn run(role: Role, role_source: RoleSource, cfg: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    run_with(role, role_source, cfg, shutdown, RunOptions::default())
}

/// [`run`] with options: builds the node's context (registry, bus, state)
/// and runs the services its role needs.
pub fn run_with(
    role: Role,
    role_source: RoleSource,
    cfg: &Config,
    shutdown: Shutdown,
    opts: RunOptions,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let bus = LocalBus::new(cfg.bus.channel_capacity, &registry);
    let state = MonitorState::new(role, role_source, cfg.node_id.clone(), registry.clone());
    let cx = Context { role, role_source, cfg, registry, bus, state, shutdown };
    Node::for_role(role, cfg, &opts).run(&cx)
}

/// What every service reads: the node's identity, config, metrics, bus and status.
pub struct Context<'a> {
    /// The role this node runs.
    pub role: Role,
    /// Where the role came from (flag, kernel command line, config).
    pub role_source: RoleSource,
    /// The whole validated config.
    pub cfg: &'a Config,
    /// Metrics of this process.
    pub registry: Arc<Registry>,
    /// The in-process bus every task receives from.
    pub bus: LocalBus,
    /// The status page's state (alerts, nodes, blocks) of this node.
    pub state: Arc<MonitorState>,
    /// Fires once on SIGTERM/SIGINT (or a test's stop).
    pub shutdown: Shutdown,
}

/// Settings from the dashboard, checked, on their way to the detector task.
pub type DetectorSettings = (crate::config::DetectorConfig, crate::detect::response::ResponseConfig);

/// What a started service hands to the services started after it, and the
/// executor their tasks run on.
pub struct Wiring {
    /// The enforcement thread (router with `[enforce] enabled`).
    pub enforcer: Option<crate::enforce::service::EnforceService>,
    /// The detector stage, loaded before the page answers.
    pub first_stage: Option<crate::roles::detector::DetectorStage>,
    /// The MQTT node bus, when `[mqtt] broker` is set.
    pub mqtt: Option<Arc<crate::bus::mqtt::MqttBus>>,
    /// Where tasks publish: the local bus, the MQTT bus, or both (`--role all` with a broker).
    pub out: Arc<dyn Publisher>,
    /// The group policy engine (monitor).
    pub policy: Option<Arc<crate::policy::service::PolicyService>>,
    /// Group policy to routers that join or restart (monitor).
    pub policy_push: Option<Arc<crate::bus::policy_push::PolicyPush>>,
    /// Asks the block-table reader for a table now (after a dashboard unblock).
    pub table_now: std::sync::mpsc::Sender<()>,
    /// The reader's end of [`Wiring::table_now`], taken by the block-table service.
    pub table_now_rx: Option<std::sync::mpsc::Receiver<()>>,
    /// Settings task → detector task.
    pub detector_settings: (async_channel::Sender<DetectorSettings>, async_channel::Receiver<DetectorSettings>),
    /// Routers' neighbour tables as they arrive (monitor): filled by the
    /// monitor's consumers, read by the policy service for MAC members.
    pub neighbours: Arc<crate::policy::neighbours::NeighbourStore>,
    /// The capture's evidence ring (router): the verdict task sends a verdict's source's packets to the monitor.
    pub evidence: Option<crate::flow::evidence::SharedRing>,
    ex: smol::LocalExecutor<'static>,
    tasks: Vec<smol::Task<()>>,
    /// The service being started: names its tasks in `timing` lines.
    starting: &'static str,
    /// The executor thread's scheduler counters, when the `timing` target is on at debug.
    sched: Option<std::rc::Rc<SchedStat>>,
}

impl Wiring {
    fn new(bus: &LocalBus) -> Wiring {
        let (table_now, table_now_rx) = std::sync::mpsc::channel::<()>();
        Wiring {
            enforcer: None,
            first_stage: None,
            mqtt: None,
            out: Arc::new(bus.clone()),
            policy: None,
            policy_push: None,
            table_now,
            table_now_rx: Some(table_now_rx),
            detector_settings: async_channel::bounded(4),
            neighbours: Arc::new(crate::policy::neighbours::NeighbourStore::new()),
            evidence: None,
            ex: smol::LocalExecutor::new(),
            tasks: Vec::new(),
            starting: "",
            // Made on the thread that runs the executor (Node::run), which /proc/thread-self names.
            sched: tracing::enabled!(target: "timing", tracing::Level::DEBUG)
                .then(|| std::rc::Rc::new(SchedStat::open())),
        }
    }

    /// Adds a task to the node's executor; it runs once every service has started.
    /// With the `timing` target at debug, a turn of the task that holds the
    /// thread for [`SLOW_POLL`] or more is logged with the service's name.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + 'static) {
        let task = match &self.sched {
            Some(sched) => self.ex.spawn(Timed { name: self.starting, sched: sched.clone(), fut: Box::pin(task) }),
            None => self.ex.spawn(task),
        };
        self.tasks.push(task);
    }
}

/// One turn of a task this long holds up every other task (a verdict waiting
/// to be forwarded, an outcome waiting to be recorded): logged.
const SLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A task whose turns are timed (see [`Wiring::spawn`]).
struct Timed {
    name: &'static str,
    sched: std::rc::Rc<SchedStat>,
    fut: std::pin::Pin<Box<dyn Future<Output = ()>>>,
}

impl Future for Timed {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let (start, before) = (std::time::Instant::now(), self.sched.read());
        let r = self.fut.as_mut().poll(cx);
        let took = start.elapsed();
        if took >= SLOW_POLL {
            let (cpu_ms, waited_ms) = SchedStat::delta(before, self.sched.read());
            tracing::debug!(target: "timing", stage = "task_slow_poll", task = self.name, took_ms = took.as_millis() as u64,
                cpu_ms, waited_to_run_ms = waited_ms, "a task held the node's task thread");
        }
        r
    }
}

/// `/proc/thread-self/schedstat` of the thread that opened it: nanoseconds
/// on a CPU and nanoseconds runnable but waiting for one. Tells a thread
/// that was busy or starved of CPU from one that was blocked (a lock, I/O).
struct SchedStat(Option<std::fs::File>);

impl SchedStat {
    fn open() -> SchedStat {
        SchedStat(std::fs::File::open("/proc/thread-self/schedstat").ok())
    }

    /// (on CPU, waiting to run), nanoseconds since the thread started.
    fn read(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::FileExt;
        let f = self.0.as_ref()?;
        let mut buf = [0u8; 96];
        let n = f.read_at(&mut buf, 0).ok()?;
        let mut it = std::str::from_utf8(&buf[..n]).ok()?.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// Milliseconds on a CPU and waiting for one between two readings (0 when unreadable).
    fn delta(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> (u64, u64) {
        match (a, b) {
            (Some(a), Some(b)) => (b.0.saturating_sub(a.0) / 1_000_000, b.1.saturating_sub(a.1) / 1_000_000),
            _ => (0, 0),
        }
    }
}

/// One part of a node: starts its threads and tasks, stops its threads.
pub trait Service {
    /// Its name (logs, [`STOP_ORDER`]).
    fn name(&self) -> &'static str;
    /// Starts it; services started before it have filled in `w`.
    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()>;
    /// Stops and joins its threads, after every task has ended. Tasks stop by
    /// themselves when shutdown fires.
    fn stop(self: Box<Self>, _w: &mut Wiring) {}
}

/// Which services stop in which order, once the tasks have ended: what feeds
/// the pipeline first (capture, the policy tick), then the block-table reader
/// (it asks the enforcement thread), enforcement, and the endpoints last.
/// Services not named here own no thread.
pub const STOP_ORDER: &[&str] = &[
    "capture",
    "policy",
    "neighbours",
    "block-table",
    "enforcement",
    "ctl",
    "broker-log",
    "mqtt",
    "link-probe",
    "link-echo",
    "http",
];

/// A list of services for one role.
pub struct Node {
    services: Vec<Box<dyn Service>>,
}

impl Node {
    /// The services `role` runs, in start order. Every role check of start-up is here.
    pub fn for_role(role: Role, cfg: &Config, opts: &RunOptions) -> Node {
        let (router, detector, monitor) = (role.runs_router(), role.runs_detector(), role.runs_monitor());
        let with_broker = cfg.mqtt.enabled();
        let mut s: Vec<Box<dyn Service>> = Vec::new();
        // Enforcement runs on its own thread (netlink blocks). It starts first,
        // before the page, the node bus and the capture: the block sets are in the
        // kernel before the first packet is seen (boot-to-first-rule,
        // docs/PERFORMANCE.md), and a missing privilege stops the start-up with a
        // clear message.
        if router {
            s.push(Box::new(enforcement::Enforcement));
        }
        if monitor {
            s.push(Box::new(monitor::AlertStore));
        }
        s.push(Box::new(link::LinkEcho::default()));
        if monitor {
            s.push(Box::new(link::LinkProbe::default()));
        }
        // The detector loads its model before the HTTP server answers, so the
        // model page never reports "no model" for the seconds a load takes.
        if detector {
            s.push(Box::new(detector::LoadModel));
        }
        s.push(Box::new(http::Http::default()));
        // --role all: everything in process; alerts, heartbeats and metrics also go to the broker (bus/transport.rs).
        s.push(Box::new(mqtt::Mqtt { uplink: role == Role::All, mqtt: None }));
        // Group policies (#9) live with the monitor: the engine, its API and a
        // thread that publishes the compiled policy to the routers. MAC members
        // resolve through the routers' neighbour tables, which reach the
        // monitor as messages (in process or over MQTT, one path).
        if monitor {
            s.push(Box::new(policy::Policy { thread: None }));
            s.push(Box::new(monitor::Pages {
                // The training page's uploads go to the detector in this process, or sealed to every detector node.
                training: detector || with_broker,
                // The settings page: kept by the monitor, sent to every detector and router.
                settings_out: role != Role::Monitor || with_broker,
                // The page's "unblock" for a block a router on another node holds.
                remote_unblock: with_broker,
            }));
        }
        if router {
            s.push(Box::new(capture::Capture { replay: opts.replay.clone(), thread: None }));
        }
        // After enforcement: on a router, `ctl block|unblock|blocks` drive its nftables sets.
        s.push(Box::new(ctl::Ctl::default()));
        if router {
            s.push(Box::new(block_table::BlockTable::default()));
        }
        // The router's neighbour table, for a monitor in this process or on another node.
        if router && (monitor || with_broker) {
            s.push(Box::new(neighbours::Neighbours::default()));
        }
        if monitor {
            s.push(Box::new(broker_log::BrokerLog::default()));
        }
        // Tasks.
        if detector || router {
            s.push(Box::new(settings::Settings { detector, router }));
        }
        if detector {
            s.push(Box::new(detector::Detector { top_talkers: monitor }));
        }
        if router {
            s.push(Box::new(unblock::Unblock));
            s.push(Box::new(verdicts::Verdicts));
        }
        if router && !monitor && with_broker {
            s.push(Box::new(reports::Reports));
        }
        if monitor && !detector {
            s.push(Box::new(monitor::Traffic));
        }
        if monitor {
            s.push(Box::new(monitor::Consumers));
        }
        // Alerts, key numbers and Home Assistant discovery as plain JSON for integrations (off by default).
        if monitor && with_broker && cfg.mqtt.json_mirror {
            s.push(Box::new(json_mirror::JsonMirror));
        }
        s.push(Box::new(heartbeat::Heartbeat {
            monitor,
            detector,
            // Without a monitor in this process nothing consumes heartbeats; keep the channel from filling.
            drain: !monitor && !with_broker,
        }));
        Node { services: s }
    }

    /// The services' names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.services.iter().map(|s| s.name()).collect()
    }

    /// Starts every service, runs the tasks until shutdown, stops the threads.
    pub fn run(mut self, cx: &Context<'_>) -> anyhow::Result<()> {
        let mut w = Wiring::new(&cx.bus);
        for s in &mut self.services {
            w.starting = s.name();
            s.start(cx, &mut w)?;
            tracing::debug!(service = s.name(), "started");
        }
        if let Some(sched) = w.sched.clone() {
            w.starting = "executor-watch";
            w.spawn(executor_watch(cx.shutdown.clone(), sched));
        }
        let tasks = std::mem::take(&mut w.tasks);
        let ex = std::mem::replace(&mut w.ex, smol::LocalExecutor::new());
        smol::block_on(ex.run(async {
            for t in tasks {
                t.await;
            }
        }));
        let mut rest = self.services;
        for name in STOP_ORDER {
            if let Some(i) = rest.iter().position(|s| s.name() == *name) {
                rest.remove(i).stop(&mut w);
            }
        }
        for s in rest {
            s.stop(&mut w);
        }
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// How often [`executor_watch`] wakes, and how late a wake-up must be to be reported.
const WATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
const WATCH_LATE: std::time::Duration = std::time::Duration::from_millis(200);

/// Every task of the node (detector, verdict forwarding, alert recording)
/// shares one thread: a task that blocks it, or a thread the kernel does not
/// schedule, delays every verdict. With the `timing` log target at debug
/// this task wakes every [`WATCH_PERIOD`] and reports wake-ups later than
/// [`WATCH_LATE`] (docs/DETECTION.md "Time to block, live").
async fn executor_watch(shutdown: Shutdown, sched: std::rc::Rc<SchedStat>) {
    loop {
        let asked = std::time::Instant::now();
        let before = sched.read();
        let woke = async {
            smol::Timer::after(WATCH_PERIOD).await;
            true
        }
        .or(async {
            shutdown.wait().await;
            false
        })
        .await;
        if !woke {
            return;
        }
        let late = asked.elapsed().saturating_sub(WATCH_PERIOD);
        if late >= WATCH_LATE {
            // Busy (on CPU), starved (waiting to run) or blocked (neither) since the timer was set.
            let (cpu_ms, waited_ms) = SchedStat::delta(before, sched.read());
            tracing::debug!(target: "timing", stage = "executor_stall", late_ms = late.as_millis() as u64, cpu_ms,
                waited_to_run_ms = waited_ms, "the node's task thread woke late");
        }
    }
}

/// The next message on `rx`, or `None` once shutdown fires or the channel closes:
/// the loop head of every service task.
pub async fn next_or_shutdown<T>(rx: &async_channel::Receiver<T>, shutdown: &Shutdown) -> Option<T> {
    async { rx.recv().await.ok() }
        .or(async {
            shutdown.wait().await;
            None
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_starts_enforcement_first_and_stops_every_thread_owner() {
        let cfg = Config::default();
        for role in [Role::Router, Role::Detector, Role::Monitor, Role::All] {
            let names = Node::for_role(role, &cfg, &RunOptions::default()).names();
            if role.runs_router() {
                assert_eq!(names[0], "enforcement", "{role}: {names:?}");
                let capture = names.iter().position(|n| *n == "capture").unwrap();
                let http = names.iter().position(|n| *n == "http").unwrap();
                assert!(http < capture, "{role}: the page answers before the capture starts");
            }
            assert_eq!(names.last(), Some(&"heartbeat"));
            let mut seen = std::collections::HashSet::new();
            for n in &names {
                assert!(seen.insert(*n), "{role}: {n} twice");
            }
        }
        let all = Node::for_role(Role::All, &cfg, &RunOptions::default()).names();
        for n in STOP_ORDER {
            assert!(all.contains(n), "{n} in STOP_ORDER but not a service of --role all");
        }
        let monitor = Node::for_role(Role::Monitor, &cfg, &RunOptions::default()).names();
        assert!(!monitor.contains(&"enforcement") && !monitor.contains(&"detector") && monitor.contains(&"traffic"));
        // The neighbour table is sent only where a monitor can take it: in process, or over MQTT.
        assert!(all.contains(&"neighbours") && !monitor.contains(&"neighbours"));
        assert!(!Node::for_role(Role::Router, &cfg, &RunOptions::default()).names().contains(&"neighbours"));
        let mut fleet = Config::default();
        fleet.mqtt.broker = "127.0.0.1:8883".into();
        assert!(Node::for_role(Role::Router, &fleet, &RunOptions::default()).names().contains(&"neighbours"));
        assert!(!all.contains(&"json-mirror"), "the JSON mirror is off by default");
        fleet.mqtt.json_mirror = true;
        assert!(Node::for_role(Role::All, &fleet, &RunOptions::default()).names().contains(&"json-mirror"));
        assert!(Node::for_role(Role::Monitor, &fleet, &RunOptions::default()).names().contains(&"json-mirror"));
        assert!(!Node::for_role(Role::Router, &fleet, &RunOptions::default()).names().contains(&"json-mirror"));
    }
}
