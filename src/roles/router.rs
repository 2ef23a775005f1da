//! The router's data path: frames → packets → flow table → FlowBatch.
//!
//! Batches are cut on capture time, not wall time, so a replay at any speed
//! yields the same batches.

use std::net::IpAddr;
use std::sync::Arc;

use crate::capture::Frame;
use crate::config::Config;
use crate::features::HostTracker;
use crate::flow::FlowTable;
use crate::packet::{self, SkipReason};
use gatewarden_capture::overload::{Overload, OverloadEvent, ShedReason};
use gatewarden_capture::{KernelCounters, RingBacklog};
use gatewarden_core::metrics::{Counter, Gauge, LocalCounter, Registry};
use gatewarden_proto::messages::{FlowBatch, FlowRecord, HostSnapshot, LanProbes, Message, Proto, ShedCount};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Parses frames into the flow table and emits FlowBatch messages at a fixed cadence.
pub struct RouterStage {
    node: String,
    table: FlowTable,
    tracker: HostTracker,
    /// Which sources get a host snapshot: those the detector will judge.
    admission: gatewarden_core::seen_before::Admission,
    /// Finished flows waiting for room in a batch; bounded, overflow counted.
    pending: std::collections::VecDeque<gatewarden_proto::messages::FlowRecord>,
    /// Flows that left the table since the last batch cut, as records, taken from
    /// the table after every frame: a spoofed flood evicts a batch interval's worth
    /// (100 000 flows under the 1 M-packet flood), and the table held them as full
    /// flows (152 B each, 19 MiB) until the cut; a record is 96 B.
    ended: Vec<gatewarden_proto::messages::FlowRecord>,
    batch_interval_ns: u64,
    max_batch: usize,
    next_batch_ns: u64,
    next_expire_ns: u64,
    seq: u64,
    last_ns: u64,
    /// Per-frame counts, published with the others at each batch cut (`sync_counters`).
    packets: LocalCounter,
    bytes: LocalCounter,
    skipped: [LocalCounter; SkipReason::ALL.len()],
    flows_created: Counter,
    flows_evicted: Counter,
    flows_active: Gauge,
    updates_deferred: Counter,
    /// Host first packets dropped for another's (`HostTracker::first_packets_dropped`).
    host_first_packets_dropped: Counter,
    exports_dropped: Counter,
    ends_unsent: LocalCounter,
    /// Recent fragmented datagrams' transport headers (fixed size).
    fragments: crate::flow::fragments::FragmentHeads,
    fragments_seen: Counter,
    fragments_unmapped: Counter,
    /// The LAN spoof check (live capture with enforcement on).
    spoof: Option<crate::enforce::service::SpoofLink>,
    /// ARP and neighbour discovery on the LAN, for the LAN-mapping detector.
    lan: crate::flow::lan::LanWatch,
    /// Requests cut at the last batch boundary, waiting for [`RouterStage::take_lan_probes`].
    lan_ready: Vec<gatewarden_proto::messages::LanProbe>,
    lan_frames: Counter,
    lan_dropped: Counter,
    lan_overflow: u64,
    /// The live capture's interface, named in every batch (EVE `in_iface`);
    /// empty for a replayed file, whose interface nobody can name honestly.
    in_iface: String,
    /// Live capture only: the shedding controller the capture thread feeds.
    overload: gatewarden_capture::overload::Overload,
    /// Keys the admission hash; random per process so a flood cannot aim at admitted keys.
    shed_keys: std::collections::hash_map::RandomState,
    shed: [Counter; 2],
    /// What was shed since the last batch, by destination: sent with the
    /// batch so the per-victim detectors still see a flood that forced
    /// shedding (at most `MAX_SHED_DESTS` destinations; the rest are only
    /// in the `shed` counters).
    shed_by_dst: HashMap<(IpAddr, u16, u8), ShedCount>,
    overloaded: Gauge,
    shed_one_in: Gauge,
    /// The first packets of each source's flows, for evidence pcaps (shared with the verdict task).
    evidence: crate::flow::evidence::SharedRing,
    /// `evidence.packets_per_flow`, 0 when evidence is off: checked before taking the ring's lock.
    evidence_packets: u64,
}

impl RouterStage {
    /// A router stage with its metrics registered in `registry`.
    pub fn new(cfg: &Config, registry: &Arc<Registry>) -> RouterStage {
        let skipped = SkipReason::ALL.map(|r| {
            LocalCounter::new(registry.counter(
                "gatewarden_packets_skipped_total",
                "Frames skipped by the parser, by reason.",
                &[("reason", r.as_str())],
            ))
        });
        let shed = ShedReason::ALL.map(|r| {
            registry.counter(
                "gatewarden_capture_shed_total",
                "Frames not processed because the capture was overloaded: each would have opened a flow from a source never seen before (sampled, not dropped blindly), by what showed the overload.",
                &[("reason", r.as_str())],
            )
        });
        RouterStage {
            node: cfg.node_id.clone(),
            table: FlowTable::new(cfg.flow.max_flows, cfg.flow.idle_timeout_s, cfg.flow.active_timeout_s),
            tracker: HostTracker::hosts_only(cfg.flow.max_hosts),
            admission: Default::default(),
            pending: std::collections::VecDeque::new(),
            ended: Vec::new(),
            batch_interval_ns: cfg.flow.batch_interval_ms * 1_000_000,
            max_batch: cfg.flow.max_batch_flows,
            next_batch_ns: 0,
            next_expire_ns: 0,
            seq: 0,
            last_ns: 0,
            packets: LocalCounter::new(registry.counter(
                "gatewarden_packets_total",
                "IP packets counted into flows.",
                &[],
            )),
            bytes: LocalCounter::new(registry.counter("gatewarden_bytes_total", "IP bytes counted into flows.", &[])),
            skipped,
            flows_created: registry.counter("gatewarden_flows_created_total", "Flows created.", &[]),
            flows_evicted: registry.counter(
                "gatewarden_flows_evicted_total",
                "Flows evicted because the flow table was at flow.max_flows.",
                &[],
            ),
            flows_active: registry.gauge("gatewarden_flows_active", "Flows currently in the flow table.", &[]),
            updates_deferred: registry.counter(
                "gatewarden_flow_updates_deferred_total",
                "Flow updates held for a later batch because a batch was full.",
                &[],
            ),
            host_first_packets_dropped: registry.counter(
                "gatewarden_host_first_packets_dropped_total",
                "First packets of hosts met once, dropped for a newer host's before their host sent again: that host's statistics start from its second packet. A steady rise is a flood of one-packet (usually forged) sources.",
                &[],
            ),
            exports_dropped: registry.counter(
                "gatewarden_flow_exports_dropped_total",
                "Finished-flow records dropped because more flows ended than batches could carry (spoofed floods).",
                &[],
            ),
            ends_unsent: LocalCounter::new(registry.counter(
                "gatewarden_flow_ends_unsent_total",
                "Flows that ended with no packet since their last update: counted in the host statistics, not sent again.",
                &[],
            )),
            fragments: crate::flow::fragments::FragmentHeads::new(),
            fragments_seen: registry.counter(
                "gatewarden_fragments_total",
                "IP fragments counted (each in its datagram's flow when its first fragments were seen).",
                &[],
            ),
            fragments_unmapped: registry.counter(
                "gatewarden_fragments_unmapped_total",
                "IP fragments counted without their datagram's ports: its first fragments were not seen in time.",
                &[],
            ),
            spoof: None,
            lan: crate::flow::lan::LanWatch::new(),
            lan_ready: Vec::new(),
            lan_overflow: 0,
            lan_frames: registry.counter(
                "gatewarden_lan_neighbour_frames_total",
                "ARP and IPv6 neighbour solicitation/advertisement frames read for LAN-mapping detection.",
                &[],
            ),
            lan_dropped: registry.counter(
                "gatewarden_lan_probes_dropped_total",
                "Address-resolution requests not reported because a batch interval held more than one message carries (floods).",
                &[],
            ),
            in_iface: String::new(),
            evidence: crate::flow::evidence::shared(&cfg.evidence),
            evidence_packets: if cfg.evidence.enabled { cfg.evidence.packets_per_flow as u64 } else { 0 },
            overload: Overload::new(),
            shed_keys: std::collections::hash_map::RandomState::new(),
            shed,
            shed_by_dst: HashMap::default(),
            overloaded: registry.gauge(
                "gatewarden_capture_overloaded",
                "1 while the capture sheds new flows from unseen sources because the pipeline cannot keep up, else 0.",
                &[],
            ),
            shed_one_in: registry.gauge(
                "gatewarden_capture_shed_one_in",
                "While overloaded, one in this many new flows from unseen sources is processed (1: all are).",
                &[],
            ),
        }
    }

    /// Names the interface the frames are captured on, for every batch from
    /// now on (EVE `in_iface`). A name longer than Linux allows
    /// (`MAX_IFACE_NAME`) cannot be a capture interface and is not sent: the
    /// batches say "unknown" rather than be refused by every detector.
    pub fn set_capture_interface(&mut self, interface: &str) {
        if interface.len() > gatewarden_proto::messages::MAX_IFACE_NAME {
            tracing::warn!(%interface, "capture interface name longer than Linux allows; alerts will not name it");
            self.in_iface.clear();
        } else {
            self.in_iface = interface.to_string();
        }
    }

    /// Shows the shedding controller the capture ring (backlog, kernel drops
    /// so far) at `now_ns`; returns an event to alert on or log.
    pub fn look_at_ring(&mut self, now_ns: u64, ring: RingBacklog, kernel: KernelCounters) -> Option<OverloadEvent> {
        let ev = self.overload.observe(now_ns, ring, kernel);
        self.overloaded.set(if self.overload.overloaded() { 1.0 } else { 0.0 });
        self.shed_one_in.set(self.overload.one_in() as f64);
        ev
    }

    /// Under overload, whether this parsed frame is shed: only a frame that
    /// would open a flow from a source the router has never seen (not in the
    /// flow table or host statistics, and not a LAN address the neighbour
    /// table binds to the frame's MAC: the caller checks that), and then
    /// admitted one in N by a keyed hash of its flow key and second.
    fn shed(&mut self, p: &crate::packet::PacketInfo) -> bool {
        if !self.overload.overloaded() || self.table.contains(p) || self.tracker.knows(p.src) {
            return false;
        }
        let (key, _) = crate::flow::FlowKey::of(p);
        let h = std::hash::BuildHasher::hash_one(&self.shed_keys, (key, p.ts_ns / 1_000_000_000));
        if self.overload.admit(h) {
            return false;
        }
        self.shed[self.overload.reason().index()].inc();
        let full = self.shed_by_dst.len() >= gatewarden_proto::messages::MAX_SHED_DESTS;
        let key = (p.dst, p.dport, p.proto);
        if let Some(c) = self.shed_by_dst.get_mut(&key) {
            count_shed(c, p);
        } else if !full {
            let proto = Proto::from_number(p.proto);
            let mut c = ShedCount { dst: p.dst, dport: p.dport, proto, frames: 0, syns: 0, last_ns: 0 };
            count_shed(&mut c, p);
            self.shed_by_dst.insert(key, c);
        }
        true
    }

    /// The evidence ring this stage fills: a verdict about a source reads
    /// its packets from it (src/node/verdicts.rs, src/replay.rs).
    pub fn evidence(&self) -> crate::flow::evidence::SharedRing {
        self.evidence.clone()
    }

    /// Checks every LAN frame's source against its MAC (the capture interface is the LAN side).
    pub fn with_spoof_link(mut self, link: Option<crate::enforce::service::SpoofLink>) -> RouterStage {
        self.spoof = link;
        self
    }

    /// Address-conflict probes to send on the LAN now, and conflicts whose
    /// wait is over judged (the capture loop calls it after every frame and
    /// when idle; see enforce's spoof module).
    pub fn neighbour_probes(&self, now_ns: u64) -> Vec<crate::enforce::spoof::NeighbourProbe> {
        match &self.spoof {
            Some(link) => {
                link.tick(now_ns);
                link.take_probes()
            }
            None => Vec::new(),
        }
    }

    /// The capture can send its probes: see [`RouterStage::neighbour_probes`].
    pub fn enable_probing(&self) {
        if let Some(link) = &self.spoof {
            link.enable_probing();
        }
    }

    /// The capture interface's own MAC: the router's own ARP/NDP requests
    /// are not a LAN device mapping the LAN.
    pub fn set_own_mac(&mut self, mac: Option<[u8; 6]>) {
        self.lan.set_own_mac(mac);
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The flow table, for summaries.
    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// Counts one frame; returns a batch when the cadence says one is due.
    pub fn on_frame(&mut self, frame: &Frame<'_>) -> Option<FlowBatch> {
        match packet::parse(frame) {
            Ok(mut p) => {
                if p.fragment.is_some() {
                    // A fragment counts in its datagram's flow, not a port-less one.
                    self.fragments.resolve(&mut p, packet::fragment_data(frame).unwrap_or_default());
                }
                let mac = packet::source_mac(frame);
                let verified = match (&self.spoof, mac) {
                    (Some(link), Some(mac)) => {
                        let dst_mac = packet::dest_mac(frame).unwrap_or([0; 6]);
                        let sf = crate::enforce::spoof::SourceFrame { dst_mac, ..source_frame(&p) };
                        link.check_verified(mac, &sf, self.overload.overloaded())
                    }
                    _ => false,
                };
                if let Some(mac) = mac {
                    self.lan.saw_sender(p.src, mac);
                }
                // Neighbour discovery is address resolution, as ARP is: it
                // goes to the LAN watch, not into flows (a "flow" to a
                // solicited-node multicast group made an NS sweep an ICMP
                // flood). A malformed one stays a flow, as before.
                if packet::is_neighbour_discovery(&p) && self.observe_neighbour(frame) {
                    return self.after_frame(frame);
                }
                if !verified && self.shed(&p) {
                    return self.after_frame(frame);
                }
                let o = self.table.observe(&p);
                let f = self.table.get(o.index);
                if f.packets() <= self.evidence_packets {
                    if let Ok(mut ring) = self.evidence.lock() {
                        ring.keep(f.src(), frame, f.packets());
                    }
                }
                self.tracker.observe_in_flow(&p, o.new_flow, o.from_originator, self.table.uncounted(o.index));
                self.take_ended();
                self.packets.inc();
                self.bytes.add(p.ip_len as u64);
            }
            Err(reason) => {
                if reason == SkipReason::NotIp {
                    self.observe_neighbour(frame);
                }
                self.skipped[reason.index()].inc()
            }
        }
        self.after_frame(frame)
    }

    /// The batch cadence, after each frame.
    fn after_frame(&mut self, frame: &Frame<'_>) -> Option<FlowBatch> {
        self.last_ns = self.last_ns.max(frame.ts_ns);
        if self.next_batch_ns == 0 {
            self.next_batch_ns = frame.ts_ns.saturating_add(self.batch_interval_ns);
            self.next_expire_ns = frame.ts_ns.saturating_add(1_000_000_000);
        }
        if frame.ts_ns >= self.next_batch_ns {
            self.next_batch_ns = frame.ts_ns.saturating_add(self.batch_interval_ns);
            self.cut_lan_probes();
            return self.cut_batch();
        }
        None
    }

    /// Feeds an ARP or NDP frame to the LAN watch; false if it is not a well-formed one.
    fn observe_neighbour(&mut self, frame: &Frame<'_>) -> bool {
        match packet::neighbour(frame) {
            Some(n) => {
                // An answer for an address (a reply, or a device announcing
                // its own) settles a probed address conflict (enforce's spoof check).
                let announces = n.op == packet::NeighbourOp::Reply || n.sender == n.target;
                if let (Some(link), true) = (&self.spoof, announces) {
                    link.saw_answer(n.src_mac, n.target);
                }
                self.lan_frames.inc();
                self.lan.observe(&n);
                true
            }
            None => false,
        }
    }

    /// Moves the requests seen since the last batch boundary out for
    /// [`RouterStage::take_lan_probes`] (one message per batch interval).
    fn cut_lan_probes(&mut self) {
        let more = self.lan.take();
        let room = gatewarden_proto::messages::MAX_LAN_PROBES.saturating_sub(self.lan_ready.len());
        self.lan_overflow += more.len().saturating_sub(room) as u64;
        self.lan_ready.extend(more.into_iter().take(room));
        self.lan_dropped.set_total(self.lan.dropped() + self.lan_overflow);
    }

    /// The ARP/NDP requests cut at the last batch boundary, if any: sent
    /// beside the flow batches (their own message kind, see
    /// `gatewarden_proto::messages::LanProbes`).
    pub fn take_lan_probes(&mut self) -> Option<LanProbes> {
        if self.lan_ready.is_empty() {
            return None;
        }
        Some(LanProbes { node: self.node.clone(), probes: std::mem::take(&mut self.lan_ready) })
    }

    /// Emits whatever changed since the last batch (used on a timer when traffic is quiet).
    pub fn tick(&mut self, now_ns: u64) -> Option<FlowBatch> {
        if now_ns >= self.next_batch_ns && self.next_batch_ns != 0 {
            self.next_batch_ns = now_ns + self.batch_interval_ns;
            self.last_ns = self.last_ns.max(now_ns);
            self.cut_lan_probes();
            return self.cut_batch();
        }
        None
    }

    fn cut_batch(&mut self) -> Option<FlowBatch> {
        if self.last_ns >= self.next_expire_ns {
            self.table.expire(self.last_ns);
            self.next_expire_ns = self.last_ns.saturating_add(1_000_000_000);
        }
        self.queue_exports();
        let mut flows = self.take_updates();
        let room = self.max_batch - flows.len();
        let n = room.min(self.pending.len());
        flows.extend(self.pending.drain(..n));
        self.sync_counters();
        // A batch of shed counts alone still goes out: under a spoofed flood
        // at one in 4096 it may be all the detector hears of it.
        if flows.is_empty() && self.shed_by_dst.is_empty() {
            return None;
        }
        Some(self.batch(flows))
    }

    /// The table's updates for the next batch, after every flow's uncounted
    /// packets are credited to the host statistics the batch's snapshots read.
    fn take_updates(&mut self) -> Vec<FlowRecord> {
        let tracker = &mut self.tracker;
        self.table.take_updates_crediting(self.max_batch, &mut |originator, responder, runs| {
            tracker.settle(originator, responder, runs)
        })
    }

    fn batch(&mut self, flows: Vec<FlowRecord>) -> FlowBatch {
        self.seq += 1;
        // A snapshot of each source the detector will judge, in flow order: the
        // same admission rule asked the same questions in the same order (see
        // `Admission`). A spoofed flood's one-packet sources get none; their
        // snapshots were a third of the bytes of such a batch, never read.
        // Sized and hashed for that flood, where every record is a new source.
        let mut packets: HashMap<std::net::IpAddr, (u64, bool)> =
            HashMap::with_capacity_and_hasher(flows.len(), Default::default());
        for r in &flows {
            packets.entry(r.src).or_default().0 += r.admission_packets();
        }
        let mut hosts = Vec::new();
        for r in &flows {
            let Some((n, asked)) = packets.get_mut(&r.src) else { continue };
            if std::mem::replace(asked, true) || !self.admission.admit(r.src, *n) {
                continue;
            }
            hosts.push(HostSnapshot {
                addr: r.src,
                ts_ns: self.last_ns,
                features: self.tracker.host_features(r.src, self.last_ns).to_vec(),
            });
        }
        let shed = self.shed_by_dst.drain().map(|(_, c)| c).collect();
        FlowBatch { node: self.node.clone(), seq: self.seq, flows, hosts, in_iface: self.in_iface.clone(), shed }
    }

    /// Moves what left the table since the last call into `ended`. A flow
    /// with no packet since its last update is not sent again: records are
    /// cumulative, so the detector already has its final one (under a
    /// spoofed flood that is every flow, and resending them doubled the
    /// detector's work). Its end still counts in the host statistics.
    fn take_ended(&mut self) {
        if !self.table.has_exports() {
            return;
        }
        let now = self.last_ns;
        let mut unsent = 0;
        for (_, mut f) in self.table.drain_exports() {
            if f.has_uncounted() {
                self.tracker.settle(f.src(), f.dst(), &mut f.runs());
            }
            if f.unchanged_since_reported() {
                self.tracker.flow_finished(f.src(), f.conn_state().is_failed_attempt(), now);
                unsent += 1;
            } else {
                self.ended.push(f.record());
            }
        }
        self.ends_unsent.add(unsent);
    }

    /// Moves flows that left the table into the pending queue, updating host
    /// statistics; beyond four batches' worth the oldest are dropped and counted.
    /// They are dropped before they are queued, not after: under a spoofed flood a
    /// batch interval evicts ~100 000 flows, and queueing them all first grew the
    /// queue to 131 072 records (12 MiB, kept for the rest of the run) only to
    /// drop all but 16 384.
    fn queue_exports(&mut self) {
        let now = self.last_ns;
        self.take_ended();
        let limit = 4 * self.max_batch;
        let extra = (self.pending.len() + self.ended.len()).saturating_sub(limit);
        let from_queue = extra.min(self.pending.len());
        self.pending.drain(..from_queue);
        // The oldest `extra - from_queue` of the new records would be dropped at once.
        let skip = extra - from_queue;
        for (k, r) in self.ended.drain(..).enumerate() {
            self.tracker.flow_finished(r.src, r.conn_state.is_failed_attempt(), now);
            if k >= skip {
                self.pending.push_back(r);
            }
        }
        if extra > 0 {
            self.exports_dropped.add(extra as u64);
        }
    }

    /// The per-host statistics, for feature vectors.
    pub fn tracker(&self) -> &HostTracker {
        &self.tracker
    }

    /// Ends every flow and hands every remaining batch to `sink` (end of
    /// capture, shutdown). Nothing is dropped here, and the table is drained
    /// a batch at a time so memory does not spike at the end.
    pub fn finish(&mut self, mut sink: impl FnMut(FlowBatch)) {
        self.cut_lan_probes();
        while let Some(b) = self.cut_batch_all() {
            sink(b);
        }
        let now = self.last_ns;
        // The queue, then the table a batch at a time, with the flows evicted
        // since the last cut ahead of the first: every flow that left counts in
        // the host statistics before any batch of them takes its host features.
        loop {
            while !self.pending.is_empty() {
                let n = self.max_batch.min(self.pending.len());
                let chunk: Vec<_> = self.pending.drain(..n).collect();
                let b = self.batch(chunk);
                sink(b);
            }
            self.table.flush_some(self.max_batch);
            self.take_ended();
            if self.ended.is_empty() {
                break;
            }
            for r in self.ended.drain(..) {
                self.tracker.flow_finished(r.src, r.conn_state.is_failed_attempt(), now);
                self.pending.push_back(r);
            }
        }
        self.sync_counters();
    }

    fn cut_batch_all(&mut self) -> Option<FlowBatch> {
        let flows = self.take_updates();
        if flows.is_empty() && self.shed_by_dst.is_empty() {
            return None;
        }
        Some(self.batch(flows))
    }

    /// Publishes the counts kept locally on the per-frame path and the
    /// table's own (once per batch cut: `/metrics` lags by one batch interval at most).
    fn sync_counters(&mut self) {
        self.packets.publish();
        self.bytes.publish();
        self.ends_unsent.publish();
        for c in &mut self.skipped {
            c.publish();
        }
        self.fragments_seen.set_total(self.fragments.fragments);
        self.fragments_unmapped.set_total(self.fragments.unmapped);
        let s = self.table.stats();
        self.flows_created.set_total(s.created);
        self.flows_evicted.set_total(s.evicted);
        self.updates_deferred.set_total(s.updates_deferred);
        self.host_first_packets_dropped.set_total(self.tracker.first_packets_dropped());
        self.flows_active.set(s.active as f64);
    }
}

/// Runs live capture on `cfg.capture.interface` on a thread named `capture`,
/// publishing flow batches on the bus until `shutdown` fires. With `spoof`
/// (enforcement on), every frame's source address is checked against its
/// source MAC and forgers are reported for containment.
pub fn spawn_capture(
    cfg: &Config,
    registry: &Arc<Registry>,
    bus: Arc<dyn crate::bus::Publisher>,
    spoof: Option<crate::enforce::service::SpoofLink>,
    shutdown: gatewarden_core::shutdown::Shutdown,
) -> anyhow::Result<(std::thread::JoinHandle<()>, crate::flow::evidence::SharedRing)> {
    use anyhow::Context;
    let acfg = crate::capture::AfPacketConfig::from_config(&cfg.capture);
    let open = move || {
        crate::capture::AfPacketSource::open(&acfg)
            .with_context(|| format!("starting live capture on {} (capture.interface)", acfg.interface))
    };
    // The appliance starts its router before networking, so the capture
    // interface (a VLAN such as eth0.20) may not exist yet: wait for it in
    // the capture thread. An interface that exists but cannot be opened is
    // an error now.
    let present = crate::capture::afpacket::interface_exists(&cfg.capture.interface);
    let mut ready = if present { Some(open()?) } else { None };
    let mut stage = RouterStage::new(cfg, registry).with_spoof_link(spoof);
    let evidence = stage.evidence();
    let drops = registry.counter(
        "gatewarden_capture_kernel_drops_total",
        "Packets the kernel dropped because the capture ring was full.",
        &[("interface", &cfg.capture.interface)],
    );
    let interface = cfg.capture.interface.clone();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            if ready.is_none() {
                tracing::warn!(%interface, "capture interface does not exist yet; waiting for it to appear");
                while !crate::capture::afpacket::interface_exists(&interface) {
                    if shutdown.is_triggered() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                match open() {
                    Ok(s) => ready = Some(s),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "live capture failed; the router keeps forwarding but sees no traffic");
                        return;
                    }
                }
            }
            let Some(mut source) = ready else { return };
            tracing::info!(%interface, "capturing");
            stage.set_own_mac(interface_mac(&interface));
            stage.set_capture_interface(&interface);
            stage.enable_probing();
            let mut last_look_ns = gatewarden_core::clock::unix_now_ns();
            let mut since_look = 0u32;
            let mut lag = LagReport::default();
            let mut next_probe_look_ns = 0u64;
            let mut probe_failed = false;
            let mut clock = gatewarden_core::clock::FrameClock::default();
            while !shutdown.is_triggered() {
                let mut idle = false;
                let mut frame_ts = None;
                match source.poll_frame(std::time::Duration::from_millis(50)) {
                    Ok(Some(frame)) => {
                        since_look += 1;
                        frame_ts = Some(frame.ts_ns);
                        if let Some(b) = stage.on_frame(&frame) {
                            publish_batch(&*bus, b, "frame");
                        }
                        publish_lan_probes(&mut stage, &*bus);
                    }
                    Ok(None) => idle = true,
                    Err(e) => {
                        tracing::error!(error = %e, "live capture failed; the router keeps forwarding but sees no traffic");
                        break;
                    }
                }
                let turn = clock.now(frame_ts);
                let now = turn.ns;
                if let (true, Some(ts)) = (turn.read, frame_ts) {
                    lag.frame(now, ts);
                }
                if let Some(b) = stage.tick(now) {
                    publish_batch(&*bus, b, "tick");
                }
                // Address-conflict probes: sent and judged every 10 ms, not per frame (a lock each).
                if now >= next_probe_look_ns {
                    next_probe_look_ns = now + 10_000_000;
                    for probe in stage.neighbour_probes(now) {
                        if let Err(e) = source.send(&probe.frame()) {
                            if !probe_failed {
                                tracing::warn!(%interface, target = %probe.target, "cannot send an address-conflict probe ({e}); such conflicts are judged unanswered (forged), as without probing");
                            }
                            probe_failed = true;
                        }
                    }
                }
                publish_lan_probes(&mut stage, &*bus);
                // Look at the ring every few hundred frames, every 50 ms of
                // slow traffic (checked when the frame clock reads the system
                // clock) and when idle: its backlog and the kernel's drops
                // drive the shedding.
                if idle
                    || since_look >= gatewarden_capture::overload::CHECK_EVERY_FRAMES
                    || (turn.read && now >= last_look_ns + 50_000_000)
                {
                    since_look = 0;
                    last_look_ns = now;
                    let kernel = source.kernel_stats();
                    drops.set_total(kernel.drops);
                    match stage.look_at_ring(now, source.backlog(), kernel) {
                        Some(OverloadEvent::Alert(r)) => {
                            let reason = r.sentence(&interface);
                            tracing::warn!(%interface, shed = r.shed, kernel_drops = r.kernel_drops, "{reason}");
                            bus.publish(Message::Alert(overload_alert(stage.node(), reason)));
                        }
                        // An episode that lost too little for an alert: its
                        // kernel drops are in /metrics and said here.
                        Some(OverloadEvent::Over(r))
                            if r.loss_share() < gatewarden_capture::overload::ALERT_LOSS_SHARE =>
                        {
                            tracing::warn!(
                                %interface,
                                kernel_drops = r.kernel_drops,
                                shed = r.shed,
                                seconds = r.elapsed_ns / 1_000_000_000,
                                "capture fell behind briefly: {:.2} % of its frames were dropped by the kernel or shed, \
                                 too few for an overload alert",
                                r.loss_share() * 100.0
                            )
                        }
                        Some(OverloadEvent::Over(r)) => tracing::info!(
                            %interface,
                            shed = r.shed,
                            candidates = r.candidates,
                            kernel_drops = r.kernel_drops,
                            seconds = r.elapsed_ns / 1_000_000_000,
                            "capture overload over"
                        ),
                        None => {}
                    }
                }
            }
            stage.finish(|b| {
                bus.publish(gatewarden_proto::messages::Message::FlowBatch(b));
            });
            publish_lan_probes(&mut stage, &*bus);
        })
        .context("spawning the capture thread")
        .map(|t| (t, evidence))
}

/// Adds one shed frame to its destination's count.
fn count_shed(c: &mut ShedCount, p: &crate::packet::PacketInfo) {
    use crate::packet::tcp_flags::{ACK, SYN};
    c.frames = c.frames.saturating_add(1);
    if p.proto == 6 && p.tcp_flags & (SYN | ACK) == SYN {
        c.syns = c.syns.saturating_add(1);
    }
    c.last_ns = c.last_ns.max(p.ts_ns);
}

/// The system alert for an overload episode (one per episode, see
/// `gatewarden_capture::overload`).
pub fn overload_alert(node: &str, reason: String) -> gatewarden_proto::messages::Alert {
    gatewarden_proto::messages::Alert::about_system(
        node,
        gatewarden_proto::messages::AttackKind::System,
        gatewarden_proto::messages::Severity::Medium,
        gatewarden_proto::signatures::CAPTURE_OVERLOAD,
        "GATEWARDEN SYSTEM capture overloaded, load shed",
        reason,
    )
}

/// Publishes a live batch; with the `timing` log target at trace, one line
/// per batch (its seq, capture time and how late it leaves) for the lab's
/// stage timings (docs/DETECTION.md "Time to block, live").
fn publish_batch(bus: &dyn crate::bus::Publisher, b: FlowBatch, by: &'static str) {
    let (seq, flows) = (b.seq, b.flows.len());
    let capture_ns = b.capture_ns();
    let sent = bus.publish(gatewarden_proto::messages::Message::FlowBatch(b));
    tracing::trace!(
        target: "timing",
        stage = "batch_emitted",
        seq,
        flows,
        by,
        sent,
        lag_ms = gatewarden_core::clock::unix_now_ns().saturating_sub(capture_ns) / 1_000_000,
        "flow batch emitted"
    );
}

/// Frames the capture thread reads well after the kernel stamped them (the
/// thread was not scheduled, or fell behind): one `timing` line per second
/// at most, with the worst lag, so a late verdict can be traced to the capture.
#[derive(Default)]
struct LagReport {
    worst_ms: u64,
    last: Option<std::time::Instant>,
}

/// A frame read this long after its capture is reported.
const CAPTURE_LAG_REPORT_MS: u64 = 250;

impl LagReport {
    /// A frame stamped `ts_ns` by the kernel, read at `now_ns` (a fresh clock read).
    fn frame(&mut self, now_ns: u64, ts_ns: u64) {
        let lag_ms = now_ns.saturating_sub(ts_ns) / 1_000_000;
        if lag_ms < CAPTURE_LAG_REPORT_MS {
            return;
        }
        self.worst_ms = self.worst_ms.max(lag_ms);
        if self.last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
            tracing::debug!(target: "timing", stage = "capture_lag", lag_ms = self.worst_ms, "capture thread reads frames late");
            self.worst_ms = 0;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// An interface's MAC from sysfs (`None` if it has none or cannot be read).
fn interface_mac(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    gatewarden_core::net::parse_mac(&text)
}

/// Publishes the LAN probes cut at the last batch boundary, if any.
fn publish_lan_probes(stage: &mut RouterStage, bus: &dyn crate::bus::Publisher) {
    if let Some(p) = stage.take_lan_probes() {
        bus.publish(Message::LanProbes(p));
    }
}

/// Replays a capture file into the bus once (`gatewarden run --role router --replay FILE`), on a thread
/// named `replay`: waits up to 30 s for the bus to connect, then publishes every batch, retrying briefly
/// when the transport is momentarily full.
pub fn spawn_replay(
    path: &std::path::Path,
    cfg: &Config,
    registry: &Arc<Registry>,
    bus: Arc<dyn crate::bus::Publisher>,
    shutdown: gatewarden_core::shutdown::Shutdown,
) -> anyhow::Result<(std::thread::JoinHandle<()>, crate::flow::evidence::SharedRing)> {
    use crate::capture::PacketSource;
    use anyhow::Context;
    let mut source = crate::capture::CaptureFile::open(path).with_context(|| format!("--replay {}", path.display()))?;
    let mut stage = RouterStage::new(cfg, registry);
    let evidence = stage.evidence();
    let path = path.to_path_buf();
    let live = cfg.capture.replay_live;
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let start = std::time::Instant::now();
            while !bus.connected() && start.elapsed() < std::time::Duration::from_secs(30) && !shutdown.is_triggered() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let send = |b: FlowBatch| {
                let msg = gatewarden_proto::messages::Message::FlowBatch(b);
                for _ in 0..200 {
                    if bus.publish(msg.clone()) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            };
            let mut batches = 0u64;
            let mut pace = live.then(LivePace::default);
            loop {
                if shutdown.is_triggered() {
                    return;
                }
                match source.next_frame() {
                    Ok(Some(frame)) => {
                        let frame = match &mut pace {
                            Some(p) => {
                                let ts_ns = p.wait(frame.ts_ns, &shutdown, |now| {
                                    if let Some(b) = stage.tick(now) {
                                        batches += 1;
                                        send(b);
                                    }
                                });
                                crate::capture::Frame { ts_ns, ..frame }
                            }
                            None => frame,
                        };
                        if let Some(b) = stage.on_frame(&frame) {
                            batches += 1;
                            send(b);
                        }
                        publish_lan_probes(&mut stage, &*bus);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "replay stopped");
                        break;
                    }
                }
            }
            stage.finish(|b| {
                batches += 1;
                send(b)
            });
            publish_lan_probes(&mut stage, &*bus);
            tracing::info!(path = %path.display(), batches, "replay finished; still receiving verdicts");
        })
        .context("spawning the replay thread")
        .map(|t| (t, evidence))
}

/// `capture.replay_live`: plays a capture at its recorded pace and stamps
/// each frame with the wall clock, as the AF_PACKET ring would, so a fleet
/// of routers can be fed from files without interfaces or root and their
/// alerts' times compare with the monitor's clock.
#[derive(Default)]
struct LivePace {
    /// The same pacing rule as the replay's, on the Unix clock.
    pacer: gatewarden_core::clock::RealtimePacer,
}

impl LivePace {
    /// Sleeps until the frame recorded at `ts_ns` is due (by
    /// [`RealtimePacer`]'s rule), calling `tick` with the wall clock at least
    /// every 50 ms meanwhile (batches are cut on time, as in live capture);
    /// returns the frame's wall-clock stamp. A pause longer than
    /// [`MAX_REALTIME_WAIT`] is shortened to it with a warning.
    ///
    /// [`RealtimePacer`]: gatewarden_core::clock::RealtimePacer
    /// [`MAX_REALTIME_WAIT`]: gatewarden_core::clock::MAX_REALTIME_WAIT
    fn wait(&mut self, ts_ns: u64, shutdown: &gatewarden_core::shutdown::Shutdown, mut tick: impl FnMut(u64)) -> u64 {
        let now = gatewarden_core::clock::unix_now_ns;
        let n = now();
        let pace = self.pacer.pace(ts_ns, n);
        if let Some(shortened) = pace.shortened {
            tracing::warn!(
                frame_ts_ns = ts_ns,
                shortened_s = shortened.as_secs_f64(),
                "replay: a pause in the capture is longer than {} s; shortened to that",
                gatewarden_core::clock::MAX_REALTIME_WAIT.as_secs()
            );
        }
        let due = n.saturating_add(pace.wait.as_nanos() as u64);
        loop {
            let n = now();
            tick(n);
            if n >= due || shutdown.is_triggered() {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_nanos((due - n).min(50_000_000)));
        }
    }
}

/// What the spoof check reads of a parsed LAN frame.
pub fn source_frame(p: &crate::packet::PacketInfo) -> crate::enforce::spoof::SourceFrame {
    crate::enforce::spoof::SourceFrame {
        ts_ns: p.ts_ns,
        src: p.src,
        proto: p.proto,
        sport: p.sport,
        dport: p.dport,
        dst_mac: [0; 6],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::LinkType;
    use gatewarden_proto::messages::{AlertAction, AttackKind};

    #[test]
    fn live_pace_keeps_the_recorded_spacing_on_the_wall_clock_and_ticks_meanwhile() {
        let sd = gatewarden_core::shutdown::Shutdown::new();
        let mut pace = LivePace::default();
        let before = gatewarden_core::clock::unix_now_ns();
        let recorded = 1_700_000_000_000_000_000u64;
        let first = pace.wait(recorded, &sd, |_| {});
        assert!(first >= before && first - before < 1_000_000_000, "the first frame is stamped now");
        let mut ticks = Vec::new();
        let second = pace.wait(recorded + 150_000_000, &sd, |now| ticks.push(now));
        assert!(second - first >= 150_000_000, "150 ms recorded is 150 ms on the wall clock: {}", second - first);
        assert!(ticks.len() >= 3, "batches are cut on time while waiting (a tick per 50 ms at most): {ticks:?}");
        // A frame recorded before the last one is not held back.
        let third = pace.wait(recorded, &sd, |_| {});
        assert!(third >= second);
    }

    #[test]
    fn live_pace_waits_at_most_the_bound_for_a_far_future_frame_and_keeps_the_pace_after_it() {
        let sd = gatewarden_core::shutdown::Shutdown::new();
        let mut pace = LivePace::default();
        let recorded = 1_700_000_000_000_000_000u64;
        pace.wait(recorded, &sd, |_| {});
        // A stamp in the year 2100 would have been waited for until then.
        let far = 4_102_444_800_000_000_000u64;
        let (t0, w0) = pace.pacer.anchor().expect("anchored");
        assert_eq!(t0, recorded);
        let started = std::time::Instant::now();
        let stopper = {
            let sd = sd.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                sd.trigger();
            })
        };
        let stamped = pace.wait(far, &sd, |_| {});
        stopper.join().expect("stopper");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "shutdown ends the wait");
        let (t1, w1) = pace.pacer.anchor().expect("re-anchored");
        assert_eq!(t1, far, "the pace starts again from the far frame");
        let bound = gatewarden_core::clock::MAX_REALTIME_WAIT.as_nanos() as u64;
        assert!(
            w1 - w0 <= bound + 1_000_000_000,
            "due at most the bound after the last frame: {} s",
            (w1 - w0) / 1_000_000_000
        );
        assert!(stamped >= w0);
        // Time going back re-anchors at once instead of playing the rest unpaced.
        let sd2 = gatewarden_core::shutdown::Shutdown::new();
        let back = pace.wait(recorded + 1_000, &sd2, |_| {});
        assert_eq!(pace.pacer.anchor().map(|o| o.0), Some(recorded + 1_000));
        let next = pace.wait(recorded + 1_000 + 100_000_000, &sd2, |_| {});
        assert!(next - back >= 100_000_000, "the frames after a jump back keep their spacing: {} ns", next - back);
    }

    fn syn(i: u32) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, (i >> 8) as u8, i as u8, 192, 0, 2, 10]);
        f.extend([0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(mac);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend(mac);
        f.extend(sender);
        f.extend([0; 6]);
        f.extend(target);
        f
    }

    /// An `nmap -sn` of the /24 from one LAN device, with 20 devices that
    /// talk (so the router knows them alive) and a hub polling them: the
    /// requests reach the detector once per batch interval, the sweep
    /// becomes one `lan_mapping` alert naming the MAC, blocking nothing;
    /// the hub stays quiet.
    #[test]
    fn an_arp_sweep_reaches_the_detector_as_lan_probes_and_is_alerted() {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let mut detector = crate::roles::detector::DetectorStage::with_model(&cfg, &registry, Ok(None));
        let scanner = [2, 0, 0, 0, 0, 0x66];
        let hub = [2, 0, 0, 0, 0, 0xc8];
        let mut t = 1_000_000_000_000u64;
        let mut alerts = Vec::new();
        let mut probes = 0;
        let mut feed = |stage: &mut RouterStage, data: &[u8], t: u64| {
            stage.on_frame(&Frame { ts_ns: t, link: LinkType::Ethernet, data, orig_len: data.len() as u32 });
            if let Some(p) = stage.take_lan_probes() {
                probes += p.probes.len();
                let f = detector.on_lan_probes(&p);
                assert!(f.verdicts.is_empty(), "alert only: {:?}", f.verdicts);
                alerts.extend(f.alerts);
            }
        };
        // 20 devices .1-.20 send (UDP to the WAN) from their own MACs.
        for d in 1..=20u8 {
            let mut f = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 1, d, 0x08, 0x00];
            f.extend([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, d, 198, 51, 100, 10]);
            f.extend([0x13, 0x88, 0x00, 0x35, 0, 8, 0, 0]);
            t += 1_000_000;
            feed(&mut stage, &f, t);
        }
        // The hub polls its 20 devices three times.
        for _ in 0..3 {
            for d in 1..=20u8 {
                t += 1_000_000;
                feed(&mut stage, &arp_request(hub, [192, 0, 2, 200], [192, 0, 2, d]), t);
            }
        }
        for d in 1..=254u8 {
            t += 10_000_000;
            feed(&mut stage, &arp_request(scanner, [192, 0, 2, 66], [192, 0, 2, d]), t);
        }
        // The end of the capture cuts what is left.
        stage.finish(|_| {});
        let rest = stage.take_lan_probes().expect("the last requests");
        probes += rest.probes.len();
        alerts.extend(detector.on_lan_probes(&rest).alerts);
        // .66 is the scanner itself (sender = target: not a question).
        assert_eq!(probes, 20 + 253, "one probe per (MAC, target): the hub's repeats are not resent");
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!((a.kind, a.action, a.signature_id), (AttackKind::LanMapping, AlertAction::Allowed, 9_000_013));
        assert!(a.reason.contains("02:00:00:00:00:66") && a.reason.contains("64 distinct"), "{}", a.reason);
        assert!(a.reason.contains("44 of them (69%)"), "the 20 live devices count as answered: {}", a.reason);
        assert!(registry.snapshot()["gatewarden_lan_neighbour_frames_total"] >= 314.0);
    }

    /// `nmap -6 -sn 2001:db8:10::/120`: 255 neighbour solicitations in
    /// 0.5 s. They are LAN probes with the target from the payload, not
    /// ICMPv6 flows to solicited-node groups (which made the sweep an
    /// `icmp_flood` in the lab, and blocked it); one `lan_mapping` alert.
    #[test]
    fn a_neighbour_solicitation_sweep_is_lan_probes_not_icmp_flows() {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let mut detector = crate::roles::detector::DetectorStage::with_model(&cfg, &registry, Ok(None));
        let mac = [2, 0, 0, 0, 0, 0x66];
        let ns = |last: u8| {
            let mut f = vec![0x33, 0x33, 0xff, 0, 0, last];
            f.extend(mac);
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
            f.extend([0x20, 1, 0x0d, 0xb8, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66]);
            f.extend([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, last]);
            f.extend([135, 0, 0, 0, 0, 0, 0, 0]);
            f.extend([0x20, 1, 0x0d, 0xb8, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]);
            f.extend([1, 1]);
            f.extend(mac);
            f
        };
        let mut findings = Vec::new();
        let mut flows = 0;
        for d in 1..=255u8 {
            let data = ns(d);
            let frame = Frame {
                ts_ns: 1_000_000_000_000 + d as u64 * 2_000_000,
                link: LinkType::Ethernet,
                data: &data,
                orig_len: 86,
            };
            if let Some(b) = stage.on_frame(&frame) {
                flows += b.flows.len();
                findings.extend(detector.on_batch(&b).alerts);
            }
            if let Some(p) = stage.take_lan_probes() {
                findings.extend(detector.on_lan_probes(&p).alerts);
            }
        }
        assert_eq!((flows, stage.table().stats().created), (0, 0), "no ICMPv6 flows for neighbour discovery");
        let kinds: Vec<AttackKind> = findings.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AttackKind::LanMapping], "{findings:#?}");
        assert!(findings[0].reason.contains("IPv6 neighbour solicitations"), "{}", findings[0].reason);
        assert_eq!(findings[0].src, Some("2001:db8:10::66".parse().unwrap()));
    }

    fn syn_from(src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
        f.extend(src);
        f.extend([198, 51, 100, 2, 0x9c, 0x40, (dport >> 8) as u8, dport as u8]);
        f.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    /// With the ring backed up, new flows from never-seen sources are
    /// sampled (one in 2^level, counted) while a source seen before keeps
    /// every new flow; with the ring drained, nothing is shed.
    #[test]
    fn under_overload_unseen_sources_are_sampled_and_known_ones_keep_full_processing() {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let mut t = 1_000_000_000_000u64;
        let mut batches = Vec::new();
        let mut feed = |stage: &mut RouterStage, data: Vec<u8>| {
            t += 10_000;
            batches.extend(stage.on_frame(&Frame { ts_ns: t, link: LinkType::Ethernet, data: &data, orig_len: 54 }));
        };
        feed(&mut stage, syn_from([192, 0, 2, 10], 1));
        let full = RingBacklog { waiting: 3, blocks: 4 };
        for i in 0..4u64 {
            assert!(stage.look_at_ring(i * 30_000_000, full, KernelCounters::default()).is_none());
        }
        let snap = registry.snapshot();
        assert_eq!((snap["gatewarden_capture_overloaded"], snap["gatewarden_capture_shed_one_in"]), (1.0, 8.0));
        for i in 0..8000u32 {
            feed(&mut stage, syn_from([10, 1, (i >> 8) as u8, i as u8], 80));
            if i % 80 == 0 {
                feed(&mut stage, syn_from([192, 0, 2, 10], 2 + (i / 80) as u16));
            }
        }
        let shed_total = |r: &Registry| {
            r.snapshot()
                .iter()
                .filter(|(k, _)| k.starts_with("gatewarden_capture_shed_total{"))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        let shed = shed_total(&registry);
        let by_backlog = registry.snapshot().into_iter().find(|(k, _)| k.contains("shed_total{reason=ring_backlog"));
        assert_eq!(by_backlog.map(|(_, v)| v), Some(shed), "all shed for the backlog");
        assert!((6000.0..=7600.0).contains(&shed), "about 7 in 8 unseen-source flows shed: {shed}");
        let created = stage.table().stats().created as f64;
        assert_eq!(created, 1.0 + 100.0 + (8000.0 - shed), "every flow of the known source was created");
        // Drained for a second: back to full processing, step by step.
        let calm = RingBacklog { waiting: 0, blocks: 4 };
        let mut now = 100_000_000;
        let mut events = Vec::new();
        while registry.snapshot()["gatewarden_capture_overloaded"] > 0.0 {
            events.extend(stage.look_at_ring(now, calm, KernelCounters::default()));
            now += 100_000_000;
            assert!(now < 10_000_000_000, "the level never fell");
        }
        assert!(matches!(&events[..], [OverloadEvent::Alert(r)] if r.shed == shed as u64), "{events:?}");
        for i in 0..100u32 {
            feed(&mut stage, syn_from([10, 2, 0, i as u8], 80));
        }
        assert_eq!(shed_total(&registry), shed, "nothing shed once drained");
        // Every shed frame still reaches the detector, counted by where it
        // went: SYNs to 198.51.100.2:80, no source named.
        stage.finish(|b| batches.push(b));
        let counts: Vec<_> = batches.iter().flat_map(|b| b.shed.iter()).collect();
        let victim: std::net::IpAddr = "198.51.100.2".parse().unwrap();
        assert!(counts.iter().all(|c| c.dst == victim && c.dport == 80 && c.proto == Proto::Tcp), "{counts:?}");
        assert_eq!(counts.iter().map(|c| c.frames as f64).sum::<f64>(), shed, "{counts:?}");
        assert_eq!(counts.iter().map(|c| c.syns as f64).sum::<f64>(), shed, "every shed frame was a bare SYN");
    }

    #[test]
    fn batches_follow_capture_time_cadence_and_are_bounded() {
        let cfg = Config {
            flow: crate::config::FlowConfig { max_batch_flows: 50, ..Default::default() },
            ..Default::default()
        };
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let mut batches = Vec::new();
        // 1000 new flows over one second of capture time: 1 ms apart.
        for i in 0..1000u32 {
            let data = syn(i);
            let frame = Frame {
                ts_ns: 1_000_000_000_000 + i as u64 * 1_000_000,
                link: LinkType::Ethernet,
                data: &data,
                orig_len: 54,
            };
            if let Some(b) = stage.on_frame(&frame) {
                batches.push((i, b));
            }
        }
        assert_eq!(batches.len(), 9, "one batch per 100 ms of capture time");
        for (i, (at, b)) in batches.iter().enumerate() {
            assert_eq!(*at as usize, (i + 1) * 100, "cut at the 100 ms boundary");
            assert!(b.flows.len() <= 50, "bounded by flow.max_batch_flows");
            assert_eq!(b.seq, i as u64 + 1);
            assert!(b.hosts.is_empty(), "one-packet newcomers: no snapshot, the detector judges none");
        }
        // The rest is deferred, not lost: finish delivers every flow.
        let mut sent: usize = batches.iter().map(|(_, b)| b.flows.len()).sum();
        stage.finish(|b| sent += b.flows.len());
        assert!(sent >= 1000, "every flow reached the detector ({sent})");
        assert!(registry.snapshot()["gatewarden_flow_updates_deferred_total"] > 0.0);
    }

    /// A spoofed flood evicts far more flows in one batch interval than batches can
    /// carry: only the newest four batches' worth are queued, the rest counted as dropped,
    /// and the queue never grows past that (it grew to every eviction of the interval,
    /// 100 000 records under the 1 M-packet flood, before trimming).
    /// Red-team finding: a capture frame stamped at the end of time (a
    /// pcapng timestamp of 0xFFFF_FFFF_FFFF_FFFF) overflowed the batch
    /// cadence's arithmetic: a panic in debug builds, a wrapped clock in
    /// release. Every frame's time must be safe to add to.
    #[test]
    fn a_frame_stamped_at_the_end_of_time_neither_panics_nor_stops_the_batches() {
        let registry = Registry::new();
        let mut stage = RouterStage::new(&Config::default(), &registry);
        for (i, ts) in [1_000_000_000_000u64, u64::MAX, u64::MAX - 1, 1_000_000_000_001].into_iter().enumerate() {
            let data = syn(i as u32);
            let _ = stage.on_frame(&Frame { ts_ns: ts, link: LinkType::Ethernet, data: &data, orig_len: 54 });
        }
        stage.finish(|_| {});
    }

    #[test]
    fn a_flood_of_evictions_queues_only_what_batches_can_carry() {
        let cfg = Config {
            flow: crate::config::FlowConfig { max_flows: 100, max_batch_flows: 10, ..Default::default() },
            ..Default::default()
        };
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let at = |i: u32| 1_000_000_000_000 + i as u64 * 1_000;
        // 5000 new sources 1 µs apart: one batch interval, 4900 evictions.
        for i in 0..5000u32 {
            let data = syn(i);
            let frame = Frame { ts_ns: at(i), link: LinkType::Ethernet, data: &data, orig_len: 54 };
            assert!(stage.on_frame(&frame).is_none(), "no batch is due within the first 100 ms");
        }
        // Until the cut, the evicted flows wait as records, not as full flows in the table.
        assert!(stage.table.take_exports().is_empty(), "the table holds no evicted flows");
        assert_eq!(stage.ended.len(), 4900);
        let data = syn(5000);
        let frame = Frame { ts_ns: at(0) + 100_000_000, link: LinkType::Ethernet, data: &data, orig_len: 54 };
        let batch = stage.on_frame(&frame).expect("the interval's batch");
        assert_eq!(batch.flows.len(), 10);
        assert_eq!(stage.pending.len(), 40, "four batches' worth queued");
        assert!(stage.pending.capacity() <= 64, "queue capacity {}", stage.pending.capacity());
        // The newest evictions are the ones kept: the frame that cuts the batch evicted flow
        // 4900 first, so 4901 left and the newest 40 are flows 4861 (10.0.18.253) to 4900.
        let first = stage.pending.front().unwrap().src;
        let last = stage.pending.back().unwrap().src;
        assert_eq!((first.to_string().as_str(), last.to_string().as_str()), ("10.0.18.253", "10.0.19.36"));
        assert_eq!(registry.snapshot()["gatewarden_flow_exports_dropped_total"], 4861.0);
        let mut ended = 0;
        stage.finish(|b| ended += b.flows.iter().filter(|r| r.last_ns <= at(4900)).count());
        assert_eq!(ended, 40, "finish delivers the queue, and nothing older");
    }

    /// A UDP datagram 10.0.0.`host`:5000 → 192.0.2.10:53 of `len` IP bytes.
    fn udp(host: u8, len: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let [l0, l1] = len.to_be_bytes();
        let [u0, u1] = (len - 20).to_be_bytes();
        f.extend([0x45, 0, l0, l1, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, host, 192, 0, 2, 10]);
        f.extend([0x13, 0x88, 0, 53, u0, u1, 0, 0]);
        f.resize(14 + len as usize, 0);
        f
    }

    /// Most packets are counted in their flow and credited to the host
    /// statistics at the batch cut: a flow evicted before the cut still
    /// credits its sender, and the batch's host snapshots say what counting
    /// every packet says.
    #[test]
    fn host_snapshots_count_every_packet_of_flows_that_left_before_the_cut() {
        let cfg =
            Config { flow: crate::config::FlowConfig { max_flows: 1, ..Default::default() }, ..Default::default() };
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let mut exact = HostTracker::hosts_only(16);
        let t0 = 1_000_000_000_000u64;
        let mut feed = |stage: &mut RouterStage, ts_ns: u64, data: &[u8], new_flow: bool| {
            let frame = Frame { ts_ns, link: LinkType::Ethernet, data, orig_len: data.len() as u32 };
            exact.observe(&packet::parse(&frame).unwrap(), new_flow);
            stage.on_frame(&frame)
        };
        // 80 datagrams of 10.0.0.1, then 10.0.0.2's first evicts its flow (one flow fits).
        for i in 0..80u64 {
            assert!(feed(&mut stage, t0 + i * 1_000_000, &udp(1, 100 + i as u16), i == 0).is_none());
        }
        assert!(feed(&mut stage, t0 + 85_000_000, &udp(2, 200), true).is_none());
        assert!(feed(&mut stage, t0 + 86_000_000, &udp(2, 200), false).is_none());
        let batch = feed(&mut stage, t0 + 100_000_000, &udp(2, 200), false).expect("the interval's batch");
        // Its end counts at the cut (an unanswered datagram: a failed attempt).
        exact.flow_finished("10.0.0.1".parse().unwrap(), true, t0 + 100_000_000);
        let evicted = batch.flows.iter().find(|r| r.src.to_string() == "10.0.0.1").expect("the evicted flow's record");
        assert_eq!(evicted.fwd_packets, 80);
        for host in ["10.0.0.1", "10.0.0.2"] {
            let snap = batch.hosts.iter().find(|h| h.addr.to_string() == host).expect("a snapshot");
            let want = exact.host_features(snap.addr, snap.ts_ns);
            let bytes = gatewarden_flow::features::schema::HOST_STATS.iter().position(|c| c.name == "host_byte_rate");
            for (c, (got, want)) in snap.features.iter().zip(want).enumerate() {
                // Bytes are credited at the packets' mean time: these grow
                // with time, so their rate is off at first order (≤ 6 %, see
                // HostTracker::settle); packets to second order.
                let tol =
                    if Some(c % gatewarden_flow::features::schema::HOST_STATS.len()) == bytes { 0.06 } else { 1e-3 };
                assert!((got - want).abs() <= tol * want.abs() + 1e-6, "{host} column {c}: {got} against {want}");
            }
            assert!(snap.features[0] > 0.0, "{host} counted");
        }
    }

    /// Records are cumulative: a flow that ended with no packet since its update
    /// is not sent again (its end still counts in the host statistics), while
    /// one that changed after its update is. Sending the unchanged ends again
    /// doubled a spoofed flood's records, and let an HTTP poller's sessions be
    /// counted twice by a detector whose per-session memory had moved on (a
    /// benign poller's 15 sessions became a 30-session `brute_force`).
    #[test]
    fn a_flow_that_ended_unchanged_since_its_update_is_not_sent_again() {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        let t0 = 1_000_000_000_000u64;
        fn feed(stage: &mut RouterStage, ts_ns: u64, data: &[u8]) -> Option<FlowBatch> {
            stage.on_frame(&Frame { ts_ns, link: LinkType::Ethernet, data, orig_len: 54 })
        }
        let (a, b, c) = (syn(1), syn(2), syn(3));
        assert!(feed(&mut stage, t0, &a).is_none());
        assert!(feed(&mut stage, t0 + 1_000, &b).is_none());
        // A frame after the interval cuts the batch: the three flows go out as updates.
        let batch = feed(&mut stage, t0 + 100_000_000, &c).expect("the first interval's batch");
        let sent: Vec<String> = batch.flows.iter().map(|r| r.src.to_string()).collect();
        assert_eq!(sent, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        // Flow 2 gets another packet (a retransmitted SYN); a fourth flow starts.
        let d = syn(4);
        assert!(feed(&mut stage, t0 + 150_000_000, &b).is_none());
        assert!(feed(&mut stage, t0 + 160_000_000, &d).is_none());
        let mut ended = Vec::new();
        stage.finish(|b| ended.extend(b.flows.iter().map(|r| (r.src.to_string(), r.fwd_packets))));
        ended.sort();
        assert_eq!(
            ended,
            [("10.0.0.2".to_string(), 2), ("10.0.0.4".to_string(), 1)],
            "flows 1 and 3 ended as last reported: not sent again; flows 2 and 4 go out once more, \
             as the final updates finish sends before it ends the table"
        );
        // Then every flow ends as last sent: none goes out twice.
        assert_eq!(registry.snapshot()["gatewarden_flow_ends_unsent_total"], 4.0);
        // Its end still counts: 10.0.0.1's one flow finished as a failed attempt.
        let failed_share =
            gatewarden_flow::features::schema::HOST_STATS.iter().position(|c| c.name == "host_failed_share").unwrap();
        let features = stage.tracker().host_features("10.0.0.1".parse().unwrap(), t0 + 200_000_000);
        assert!(features[failed_share] > 0.0, "the unsent end counted in the host statistics: {features:?}");
        // The router keeps host statistics only: nothing live reads pair features.
        assert_eq!(stage.tracker().pairs(), 0);
    }

    /// One TCP segment 198.51.100.7 ⇄ 192.0.2.10 (`to_target`: the scanner's SYN, else the RST/ACK answer).
    fn scan_segment(port: u16, to_target: bool) -> Vec<u8> {
        let (scanner, target) = ([198, 51, 100, 7], [192, 0, 2, 10]);
        let (src, dst, sport, dport, flags) =
            if to_target { (scanner, target, 40000, port, 0x02) } else { (target, scanner, port, 40000, 0x14) };
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        let ack = if to_target { [0, 0, 0, 0] } else { [0, 0, 0, 2] };
        f.extend([0, 0, 0, 1]);
        f.extend(ack);
        f.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    /// A refused port scan through a router stage and a detector, as `run
    /// --role all` wires them; returns the batches and the alerts.
    fn scan_through(iface: Option<&str>) -> (Vec<FlowBatch>, Vec<gatewarden_proto::messages::Alert>) {
        let cfg = Config::default();
        let registry = Registry::new();
        let mut stage = RouterStage::new(&cfg, &registry);
        if let Some(i) = iface {
            stage.set_capture_interface(i);
        }
        let mut batches = Vec::new();
        for port in 1..=300u16 {
            for to_target in [true, false] {
                let data = scan_segment(port, to_target);
                let ts_ns = 1_000_000_000_000 + u64::from(port) * 3_000_000 + u64::from(!to_target) * 1000;
                let frame = Frame { ts_ns, link: LinkType::Ethernet, data: &data, orig_len: data.len() as u32 };
                batches.extend(stage.on_frame(&frame));
            }
        }
        stage.finish(|b| batches.push(b));
        let mut detector = crate::roles::detector::DetectorStage::with_model(&cfg, &registry, Ok(None));
        let alerts = batches.iter().flat_map(|b| detector.on_batch(b).alerts).collect();
        (batches, alerts)
    }

    /// Issue #18: a live capture names its interface in every batch and the
    /// alert about its flows carries it (EVE `in_iface`); a replayed file's
    /// batches name none (nobody can say which interface it was taken on),
    /// and a name longer than Linux allows is not sent.
    #[test]
    fn a_live_captured_batchs_alert_names_the_capture_interface() {
        let (batches, alerts) = scan_through(Some("lan0"));
        assert!(!batches.is_empty() && batches.iter().all(|b| b.in_iface == "lan0"), "{batches:#?}");
        let scan = alerts.iter().find(|a| a.kind == AttackKind::PortScan).unwrap_or_else(|| panic!("{alerts:#?}"));
        assert_eq!(scan.in_iface, "lan0", "{scan:#?}");
        assert!(scan.flow.is_some(), "the evidence flow is known: {scan:#?}");

        let (batches, alerts) = scan_through(None);
        assert!(batches.iter().all(|b| b.in_iface.is_empty()));
        let scan = alerts.iter().find(|a| a.kind == AttackKind::PortScan).unwrap_or_else(|| panic!("{alerts:#?}"));
        assert_eq!(scan.in_iface, "", "a replay names no interface");

        let (batches, _) = scan_through(Some("an-interface-name-too-long"));
        assert!(batches.iter().all(|b| b.in_iface.is_empty()), "never sent: every detector would refuse it");
    }
}
