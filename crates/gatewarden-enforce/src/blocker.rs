//! Where a block rule is written: block / unblock / list, escalation for
//! repeat offenders, the allowlist that is never blocked, the set-size cap,
//! feed import, fail-closed and group rules. Each operation is one netlink
//! transaction.

pub use gatewarden_netlink::route::{local_addresses, neighbours};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::expr::{self, Dir, Expr, Fam, Verdict};
use super::feeds::{self, Cidr};
use super::netlink::{Batch, Netlink, NlError, ERESTART};
use super::persist;
use super::ruleset::{self, addr_bytes, fam_of, Layout, Origin};
use gatewarden_core::metrics::{Counter, Gauge, Registry};
use gatewarden_proto::messages::{PolicyAction, PolicyUpdate, Proto};

/// Most addresses whose block history is remembered for escalation.
pub const ESCALATION_HISTORY: usize = 65_536;

/// How many times a rewrite bound to a ruleset generation is tried when
/// another process keeps committing in between (each try is a fresh read).
const REWRITE_TRIES: usize = 8;

/// How the blocker behaves, from `[enforce]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Table layout (set sizes, meter rates).
    pub layout: Layout,
    /// A repeat block within this window of the previous one doubles the TTL.
    pub escalation_window: Duration,
    /// No detector block lasts longer: escalated TTLs stop growing here, and
    /// a verdict asking for more (its TTL comes off the wire) gets this.
    pub max_ttl: Duration,
    /// Networks never blocked (management, peers); the gateway's own addresses are added.
    pub allowlist: Vec<Cidr>,
    /// Addresses no real attacker can be (`0.0.0.0`, broadcast, multicast,
    /// loopback, link-local, reserved): a forged source must not make the
    /// gateway drop DHCP, mDNS or its own traffic. Unlike the allowlist they
    /// are only refused, never accepted early in the guard chain.
    pub never_block: Vec<Cidr>,
    /// The fleet's own endpoints: the MQTT broker and link peers, as
    /// `host:port`, `address:port`, `[v6]:port` or a bare address (the node
    /// fills them in from `mqtt.broker` and `link.peers`). Refused like the
    /// next hops ([`Protection::Infrastructure`]), never allowlisted:
    /// blocking the broker kills the router's session and the detector's
    /// heartbeats, and with `fail_closed` the whole site. Host names are
    /// resolved off the blocker's thread, at start and every minute.
    pub fleet_endpoints: Vec<String>,
}

/// The ranges a block request is refused for by default, whatever a verdict,
/// an operator or a feed says: unspecified, "this network", loopback,
/// link-local, multicast, reserved and limited broadcast (IPv4); unspecified,
/// loopback, link-local and multicast (IPv6). Documentation ranges
/// (TEST-NET, 2001:db8::/32) are not in it: labs use them as real hosts.
pub const DEFAULT_NEVER_BLOCK: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            layout: Layout::default(),
            escalation_window: Duration::from_secs(86_400),
            max_ttl: Duration::from_secs(7 * 86_400),
            allowlist: Vec::new(),
            never_block: DEFAULT_NEVER_BLOCK.iter().filter_map(|s| s.parse().ok()).collect(),
            fleet_endpoints: Vec::new(),
        }
    }
}

/// Why an address may not be blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// `[enforce] allowlist` (or the settings page's).
    Allowlist,
    /// An address of this gateway.
    OwnAddress,
    /// A next hop of this gateway's routes, a resolver it uses, or one of the
    /// fleet's endpoints (MQTT broker, link peer; [`Settings::fleet_endpoints`]):
    /// blocking it cuts the whole site off.
    Infrastructure,
    /// A bogon from `enforce.never_block`: not a real source.
    NeverBlock,
    /// A LAN MAC (this one) forged the address recently: blocking it would
    /// turn the router against the address's owner. The MAC is contained instead.
    Forged([u8; 6]),
    /// A detector verdict with no proof the source is real: not a verified
    /// LAN binding, and nothing it sent shows it receives at the address
    /// (`Verdict.source_proof`). Left to the meters.
    Unproven,
}

impl Protection {
    /// Words for logs and errors.
    pub fn describe(self) -> &'static str {
        match self {
            Protection::Allowlist => "allowlisted ([enforce] allowlist)",
            Protection::OwnAddress => "an address of this gateway (always on the allowlist)",
            Protection::Infrastructure => {
                "this gateway's router or DNS resolver, or the fleet's MQTT broker or a link peer"
            }
            Protection::NeverBlock => "a bogon address no real host sends from ([enforce] never_block)",
            Protection::Forged(_) => "an address a LAN device forged recently (its MAC is contained instead)",
            Protection::Unproven => {
                "a source with no proof it is real (no verified LAN binding, no answered traffic); left to the meters"
            }
        }
    }

    /// [`Protection::describe`] with the forging MAC, for logs and reasons.
    pub fn reason(self) -> String {
        match self {
            Protection::Forged(mac) => {
                format!(
                    "an address forged recently by LAN MAC {} (that MAC is contained instead)",
                    super::spoof::mac_text(&mac)
                )
            }
            other => other.describe().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct History {
    last: Instant,
    until: Instant,
    level: u32,
}

/// Repeat-offender memory: each new block of an address within the window
/// doubles its TTL (sshguard / fail2ban-recidive), up to `max_ttl`.
/// A verdict while the address is still blocked refreshes the block at the
/// same level, so a long attack does not escalate itself to the maximum.
#[derive(Debug)]
pub struct Escalation {
    window: Duration,
    max_ttl: Duration,
    cap: usize,
    hist: HashMap<IpAddr, History>,
}

impl Escalation {
    /// Remembers at most `cap` addresses.
    pub fn new(window: Duration, max_ttl: Duration, cap: usize) -> Escalation {
        Escalation { window, max_ttl, cap: cap.max(1), hist: HashMap::new() }
    }

    /// The TTL and escalation level (0 = first offence) for a block of `addr` now.
    pub fn next(&mut self, addr: IpAddr, base: Duration, now: Instant) -> (Duration, u32) {
        let level = match self.hist.get(&addr) {
            Some(h) if now < h.until => h.level,
            Some(h) if now.duration_since(h.last) <= self.window => h.level.saturating_add(1),
            _ => 0,
        };
        let ttl = base.saturating_mul(1u32 << level.min(31)).min(self.max_ttl);
        if !self.hist.contains_key(&addr) && self.hist.len() >= self.cap {
            // Forget the least recently blocked eighth in one go.
            let mut by_age: Vec<(Instant, IpAddr)> = self.hist.iter().map(|(a, h)| (h.last, *a)).collect();
            by_age.sort_unstable();
            for (_, a) in by_age.iter().take((self.cap / 8).max(1)) {
                self.hist.remove(a);
            }
        }
        self.hist.insert(addr, History { last: now, until: now + ttl, level });
        (ttl, level)
    }

    /// Forgets an address (after an admin unblock).
    pub fn forget(&mut self, addr: &IpAddr) {
        self.hist.remove(addr);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.hist.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }
}

/// What a block request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockOutcome {
    /// The address is in the block set with this timeout.
    Blocked {
        /// Timeout applied (after escalation).
        ttl: Duration,
        /// 0 for a first offence, n for the n-th repeat within the window.
        level: u32,
        /// Addresses evicted because the set was full (oldest-expiring first).
        evicted: Vec<IpAddr>,
    },
    /// The address is protected; nothing was written.
    Refused {
        /// The entry that protects it.
        allowed_by: Cidr,
        /// Which list that entry is on.
        why: Protection,
    },
}

/// One element of a block set as the kernel lists it (typed origin, timeout
/// and time left); what travels to other nodes is proto's `BlockEntry`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelBlock {
    /// Address, CIDR or range.
    pub target: String,
    /// Who blocked it.
    pub origin: Origin,
    /// Timeout given, seconds.
    pub timeout_s: u64,
    /// Seconds left.
    pub remaining_s: u64,
    /// Why (the element comment).
    pub reason: String,
    /// Packets the block rules dropped for this entry (its own element
    /// counter), counted since it was last written: `age_s` ago. `None`
    /// when the set keeps no per-element counters.
    pub dropped_packets: Option<u64>,
    /// Their bytes (IP header and up).
    pub dropped_bytes: Option<u64>,
    /// Seconds since the counter started: when the block was first written
    /// (a refresh by a new verdict carries count and start over), or when it
    /// was restored after a restart (counts are not saved). For an element
    /// without gatewarden's userdata: timeout minus time left.
    pub age_s: u64,
    /// A detector block's senders: the node ids of the detectors whose
    /// verdicts asked for it (at most [`ruleset::MAX_SENDERS`], from the
    /// element's userdata). Listed so an operator can see which blocks a
    /// detector asked for before revoking its certificate. Empty for
    /// admin and feed blocks, and for a detector block whose sender is
    /// unknown (restored from a version that did not keep senders).
    pub senders: Vec<String>,
}

impl KernelBlock {
    fn from_element(target: String, origin: Origin, e: &ruleset::KernelElement) -> KernelBlock {
        let now_s = gatewarden_core::clock::unix_now_ms() / 1000;
        KernelBlock {
            target,
            origin,
            timeout_s: e.timeout_ms.div_ceil(1000),
            remaining_s: e.expires_ms.div_ceil(1000),
            reason: e.comment.clone(),
            dropped_packets: e.counter.map(|c| c.packets),
            dropped_bytes: e.counter.map(|c| c.bytes),
            age_s: match e.counted_since_s {
                Some(since) => now_s.saturating_sub(since),
                None => e.timeout_ms.saturating_sub(e.expires_ms) / 1000,
            },
            senders: e.senders.clone(),
        }
    }
}

/// Result of a blocklist import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Networks written (after merging overlaps), both families.
    pub ranges: usize,
    /// Entries refused, each with why.
    pub refused: Vec<(Cidr, FeedRefusal)>,
    /// What the import did to each family's feed set (IPv4, then IPv6).
    pub families: Vec<FamilyImport>,
}

/// What a blocklist import did to one family's feed set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyImport {
    /// IPv4 or IPv6.
    pub fam: Fam,
    /// Whether the set was replaced: the import brought usable entries of
    /// this family (or cleared every feed). Otherwise it was left as it was.
    pub replaced: bool,
    /// Ranges written (after merging); 0 when not replaced.
    pub written: usize,
    /// Addresses they cover.
    pub covered: u128,
    /// Ranges the set held before: removed when replaced, kept otherwise.
    pub before: usize,
    /// Where those came from (their comments, e.g. `feed drop.txt`), each once.
    pub before_from: Vec<String>,
}

/// Why a feed entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRefusal {
    /// It overlaps a network of the site (the LAN interface's, one routed
    /// out of it, `enforce.lan_prefixes`): a feed names outside threats,
    /// and blocking the LAN cuts its devices off, both ways.
    Site(Cidr),
    /// It overlaps what no block may cover (allowlist, an address of this
    /// gateway, infrastructure, bogons).
    Protected(Protection),
    /// It is wider than `feeds::widest` (IPv4 /8, IPv6 /16), and the import
    /// did not allow wide entries.
    TooWide(u8),
    /// A saved feed range, not imported with `--allow-wide`, that covers
    /// these many addresses of its family: more than a whole feed may
    /// (`feeds::coverage_limit`), so no import without it wrote it.
    TooMuch(Fam, u128),
}

impl FeedRefusal {
    /// Words for the refusal, after the entry: `192.0.2.0/25 overlaps the LAN network 192.0.2.0/24`.
    pub fn describe(&self) -> String {
        match self {
            FeedRefusal::Site(c) => format!("overlaps the LAN network {c}"),
            FeedRefusal::Protected(Protection::Allowlist) => {
                "overlaps the allowlist ([enforce] allowlist or the settings page's)".into()
            }
            FeedRefusal::Protected(Protection::OwnAddress) => {
                "overlaps the allowlist (an address of this gateway)".into()
            }
            FeedRefusal::Protected(p) => format!("overlaps {}", p.describe()),
            FeedRefusal::TooWide(p) => format!("is wider than /{p}"),
            FeedRefusal::TooMuch(fam, n) => format!(
                "covers {}, more than a feed may without --allow-wide ({})",
                feeds::coverage_text(*fam, *n),
                feeds::coverage_text(*fam, feeds::coverage_limit(*fam))
            ),
        }
    }

    /// What the operator can do about a saved feed range refused at a restore.
    fn restore_advice(&self) -> &'static str {
        match self {
            FeedRefusal::Site(_) => {
                "a feed never blocks the LAN, --allow-wide or not; if that network is not the LAN, correct \
                 enforce.lan_prefixes or the LAN interface's routes and import the feed again"
            }
            FeedRefusal::Protected(_) => "no block may cover it; the rest of the feed is restored",
            FeedRefusal::TooWide(_) | FeedRefusal::TooMuch(..) => {
                "if the feed is meant to be that wide (a country list) and its source is trusted, import it again \
                 with --allow-wide"
            }
        }
    }

    /// What the operator can do about a feed range lifted because the
    /// LAN's networks or the gateway's addresses changed under it.
    fn lift_advice(&self) -> &'static str {
        match self {
            FeedRefusal::Site(_) => {
                "a feed never blocks the LAN, so the range is lifted and the rest of the feed stays; if that network \
                 is not the LAN, correct the LAN interface's addresses and routes (or enforce.lan_prefixes) and \
                 import the feed again"
            }
            _ => "no block may cover it, so the range is lifted and the rest of the feed stays",
        }
    }
}

/// What a feed import is checked against besides the protections every block has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedChecks {
    /// The site's networks ([`lan_networks`] and `enforce.lan_prefixes`): no entry may overlap one.
    pub site: Vec<Cidr>,
    /// Accept entries wider than `feeds::widest` and a feed covering more
    /// than `feeds::coverage_limit` (`--allow-wide`). The site and the
    /// protections still hold, and a /0 never parses as an entry.
    pub allow_wide: bool,
}

/// Why a feed import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Every entry was refused: the feed sets were left as they were.
    #[error("every entry of the feed was refused ({} of them); nothing was changed, the current feed stays", refused.len())]
    AllRefused {
        /// The entries, each with why.
        refused: Vec<(Cidr, FeedRefusal)>,
    },
    /// The entries left cover more of one family than a feed may.
    #[error(
        "the feed covers {}, over the limit of {}; nothing was changed, the current feed stays",
        feeds::coverage_text(*fam, *covered),
        feeds::coverage_text(*fam, feeds::coverage_limit(*fam))
    )]
    TooMuch {
        /// The family over the limit.
        fam: Fam,
        /// Addresses its entries cover (after the refusals).
        covered: u128,
        /// Entries refused on the way, each with why.
        refused: Vec<(Cidr, FeedRefusal)>,
    },
    /// nftables refused or failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
}

/// Metric series the blocker keeps current.
#[derive(Debug, Clone)]
struct Metrics {
    blocks: BTreeMap<Origin, Counter>,
    refused: BTreeMap<Origin, Counter>,
    feed_restore_refused: Counter,
    evicted: BTreeMap<Origin, Counter>,
    /// Blocks a full set evicted: the verdict's own sender's, another's.
    evicted_whose: [Counter; 2],
    errors: Counter,
    registry: std::sync::Arc<Registry>,
}

impl Metrics {
    /// Every series this blocker writes, registered at zero so a dashboard
    /// shows 0 (not "no data") before the first block, refusal or drop.
    fn new(r: &std::sync::Arc<Registry>) -> Metrics {
        let per_origin = |name: &'static str, help: &'static str| -> BTreeMap<Origin, Counter> {
            Origin::ALL.iter().map(|o| (*o, r.counter(name, help, &[("origin", o.as_str())]))).collect()
        };
        let m = Metrics {
            blocks: per_origin("gatewarden_enforce_blocks_total", "Block requests written to nftables, by origin."),
            refused: per_origin(
                "gatewarden_enforce_refused_total",
                "Block requests refused (allowlisted, protected, forged or unproven source), by origin.",
            ),
            evicted: per_origin(
                "gatewarden_enforce_evicted_total",
                "Blocks evicted early because a block set was full, by origin.",
            ),
            evicted_whose: ["own", "other"].map(|w| {
                r.counter(
                    "gatewarden_enforce_evicted_whose_total",
                    "Blocks evicted early because a block set was full, by whose they were: the same sender's as \
                     the block that needed the room (own; every admin block is the admin's), or another's (other: \
                     a detector holding more of the detector set, or blocks two detectors asked for). The router's \
                     log names the sender holding the most, at most once a minute.",
                    &[("whose", w)],
                )
            }),
            feed_restore_refused: r.counter(
                "gatewarden_enforce_feed_restore_refused_total",
                "Saved feed ranges (or parts of them) not restored at a start because an import would refuse them \
                 now: they overlap the LAN, the allowlist, the gateway or its infrastructure, or cover more than a \
                 feed may without --allow-wide; and feed ranges lifted later because the LAN's networks or the \
                 gateway's addresses appeared or changed under them (at boot the restore runs before the LAN \
                 interface has its addresses).",
                &[],
            ),
            errors: r.counter(
                "gatewarden_enforce_errors_total",
                "nftables operations that failed (a refreshed re-block is not a failure).",
                &[],
            ),
            registry: r.clone(),
        };
        for o in Origin::ALL {
            m.set_elements(o);
        }
        for name in Origin::ALL.iter().map(|o| o.counter_name()).chain(
            [
                ruleset::COUNTER_SYN_SRC,
                ruleset::COUNTER_SYN_DST,
                ruleset::COUNTER_FAILCLOSED,
                ruleset::COUNTER_CONTAINED,
            ]
            .map(String::from),
        ) {
            m.dropped(&name);
        }
        m
    }

    /// `gatewarden_enforce_set_elements{origin}`.
    fn set_elements(&self, o: Origin) -> Gauge {
        self.registry.gauge(
            "gatewarden_enforce_set_elements",
            "Entries currently in the block sets (addresses; ranges for feeds), by origin.",
            &[("origin", o.as_str())],
        )
    }

    /// The packet and byte counters of the nftables counter `name`.
    fn dropped(&self, name: &str) -> (Counter, Counter) {
        let labels = [("origin", counter_origin(name))];
        let labels = [(labels[0].0, labels[0].1.as_str())];
        (
            self.registry.counter(
                "gatewarden_nft_dropped_packets_total",
                "Packets dropped by gatewarden's nftables rules, by origin (block set, SYN meter, fail-closed, containment).",
                &labels,
            ),
            self.registry.counter(
                "gatewarden_nft_dropped_bytes_total",
                "Bytes dropped by gatewarden's nftables rules, by origin (block set, SYN meter, fail-closed, containment).",
                &labels,
            ),
        )
    }
}

/// The `origin` label of an nftables counter: the block set's origin
/// (`blocked_detector` → `detector`), or what else dropped (`syn_meter_src`,
/// `syn_meter_dst`, `fail_closed`, `contained`). One label name for every
/// series about blocks, so a panel can sum or group them alike.
pub fn counter_origin(name: &str) -> String {
    if let Some(o) = name.strip_prefix("blocked_") {
        return o.to_string();
    }
    match name {
        ruleset::COUNTER_SYN_SRC => "syn_meter_src".into(),
        ruleset::COUNTER_SYN_DST => "syn_meter_dst".into(),
        ruleset::COUNTER_FAILCLOSED => "fail_closed".into(),
        ruleset::COUNTER_CONTAINED => "contained".into(),
        other => other.to_string(),
    }
}

/// One neighbour-table entry: an address and its link-layer address.
pub type Neighbour = (IpAddr, [u8; 6]);

/// Writes and reads the gateway's block sets. Owns one netlink socket,
/// created in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Blocker {
    nl: Netlink,
    settings: Settings,
    allow: Vec<Cidr>,
    /// The gateway's own addresses when last read (sorted), part of `allow`.
    own: Vec<IpAddr>,
    /// Next hops, resolvers and fleet endpoints when last read (sorted): refused, not allowlisted.
    infrastructure: Vec<IpAddr>,
    /// The fleet's endpoints ([`Settings::fleet_endpoints`]), host names resolved on their own thread.
    endpoints: Endpoints,
    escalation: Escalation,
    metrics: Option<Metrics>,
    fail_closed: Option<bool>,
    policy_version: Option<u64>,
    policy_macs: Option<(PolicyUpdate, Vec<Neighbour>)>,
    /// The lookups the installed rules do (known only to the blocker that
    /// installed the table; see [`ruleset::Lookups`]).
    lookups: ruleset::Lookups,
    /// What the `mac_bound` / `mac_routed` sets hold, as this blocker last
    /// wrote them (`None`: unknown, the next write replaces them whole).
    bound_written: Option<super::spoof::BoundSources>,
    /// The LAN's spoof check gives this blocker its bindings
    /// ([`Blocker::set_bound_sources`]): MAC group members are resolved
    /// through them, not through the raw neighbour table.
    bindings_from_guard: bool,
    /// The site networks (sorted) and own addresses the feed sets were
    /// last checked against ([`Blocker::recheck_feed`]); `None`: never.
    feed_checked: Option<(Vec<Cidr>, Vec<IpAddr>)>,
    /// When a detector TTL cut to `max_ttl` was last logged.
    ttl_cut_told: Option<Instant>,
    /// When a full detector set's largest share was last named in the log.
    share_full_told: Option<Instant>,
}

/// Errors carry what was being done and what to do next.
pub type Result<T> = std::result::Result<T, NlError>;

impl Blocker {
    /// Opens the netlink socket and learns the gateway's own addresses
    /// (always allowlisted). Does not touch the ruleset; see [`Blocker::ensure`].
    pub fn open(settings: Settings, registry: Option<&std::sync::Arc<Registry>>) -> Result<Blocker> {
        let nl = Netlink::open()?;
        let mut own = local_addresses()?;
        own.sort();
        own.dedup();
        let allow = allowlist_with(&settings.allowlist, &own);
        let endpoints = Endpoints::start(&settings.fleet_endpoints);
        let infrastructure = infrastructure_with(&endpoints);
        let escalation = Escalation::new(settings.escalation_window, settings.max_ttl, ESCALATION_HISTORY);
        let metrics = registry.map(Metrics::new);
        Ok(Blocker {
            nl,
            settings,
            allow,
            own,
            infrastructure,
            endpoints,
            escalation,
            metrics,
            fail_closed: None,
            policy_version: None,
            policy_macs: None,
            lookups: ruleset::Lookups::ALL,
            bound_written: None,
            bindings_from_guard: false,
            feed_checked: None,
            ttl_cut_told: None,
            share_full_told: None,
        })
    }

    /// The effective allowlist (configured networks + own addresses).
    pub fn allowlist(&self) -> &[Cidr] {
        &self.allow
    }

    /// Waits up to `timeout` for the fleet endpoints' host names to be
    /// resolved once (a one-shot command, which has no second chance, calls
    /// it before it blocks anything; the router does not wait: its names
    /// join within a second of resolving). Returns the names that did not
    /// resolve: their addresses are not protected yet.
    pub fn await_fleet_endpoints(&mut self, timeout: Duration) -> Vec<String> {
        let unresolved = self.endpoints.wait(timeout);
        self.infrastructure = infrastructure_with(&self.endpoints);
        unresolved
    }

    /// Replaces the configured allowlist (the dashboard's settings page); the
    /// gateway's own addresses stay in. Addresses the new allowlist covers
    /// that are blocked now (detector or admin sets) are unblocked: the
    /// allowlist rule matches sources only, so a block would still drop
    /// traffic *to* them. Returns the addresses unblocked, or `None` when
    /// nothing changed.
    pub fn set_configured_allowlist(&mut self, allowlist: Vec<Cidr>) -> Result<Option<Vec<IpAddr>>> {
        if allowlist == self.settings.allowlist {
            return Ok(None);
        }
        let allow = allowlist_with(&allowlist, &self.own);
        if self.fail_closed.is_some() {
            self.commit(&ruleset::replace_allowlist_batch(&allow))?;
        }
        self.settings.allowlist = allowlist;
        self.allow = allow;
        let mut lifted = Vec::new();
        if self.fail_closed.is_some() {
            let blocked: Vec<IpAddr> = self
                .list()?
                .into_iter()
                .filter(|e| matches!(e.origin, Origin::Detector | Origin::Admin))
                .filter_map(|e| e.target.parse().ok())
                .collect();
            for ip in blocked {
                if self.allowed_by(&ip).is_some() && !self.unblock(ip)?.is_empty() && !lifted.contains(&ip) {
                    lifted.push(ip);
                }
            }
        }
        Ok(Some(lifted))
    }

    /// Re-reads the gateway's own addresses and, when they changed, rewrites
    /// the allowlist sets. The router may install its table before its
    /// interfaces have addresses (it starts before networking so the first
    /// rule is in place early); an address that appears later (DHCP, a VLAN)
    /// must never be blockable. Returns the addresses that were added.
    pub fn refresh_own_addresses(&mut self) -> Result<Vec<IpAddr>> {
        self.infrastructure = infrastructure_with(&self.endpoints);
        let mut own = local_addresses()?;
        own.sort();
        own.dedup();
        if own == self.own {
            return Ok(Vec::new());
        }
        let added: Vec<IpAddr> = own.iter().filter(|a| !self.own.contains(a)).copied().collect();
        let allow = allowlist_with(&self.settings.allowlist, &own);
        if self.fail_closed.is_some() {
            self.commit(&ruleset::replace_allowlist_batch(&allow))?;
        }
        self.allow = allow;
        self.own = own;
        Ok(added)
    }

    /// Creates the table, replacing a stale one from a previous run in the
    /// same transaction; the stale table's blocks are carried over with
    /// their remaining time (a crash must not unblock anyone). Idempotent.
    pub fn ensure(&mut self) -> Result<()> {
        self.ensure_restoring(Vec::new(), 0).map(|_| ())
    }

    /// [`Blocker::ensure_restoring_for`] with no site networks known (the
    /// other checks on feed ranges still hold).
    pub fn ensure_restoring(&mut self, saved: Vec<persist::SavedBlock>, now_unix_ms: u64) -> Result<RestoreReport> {
        self.ensure_restoring_for(saved, now_unix_ms, &[])
    }

    /// [`Blocker::ensure`], also restoring `saved` (from the state file,
    /// times relative to `now_unix_ms`). The table appears with its blocks
    /// in one transaction: no packet passes between "table installed" and
    /// "blocks back". Entries now protected (allowlist, bogons) or expired
    /// are left out; the report says how many of each.
    ///
    /// Feed ranges are checked as an import checks its entries, against
    /// what holds now: `site` (the LAN's networks, as
    /// [`FeedChecks::site`]), the allowlist (also the one in a previous
    /// run's table, which holds the settings page's), the gateway, its
    /// infrastructure and bogons, and unless the range was imported with
    /// `--allow-wide` ([`persist::SavedBlock::allow_wide`]) the coverage
    /// limit: the LAN may have moved since the import, and the state file
    /// may have been edited or damaged. What fails is left out with a
    /// warning saying why and what to do, counted in
    /// [`RestoreReport::feed_refused`] and
    /// `gatewarden_enforce_feed_restore_refused_total`.
    pub fn ensure_restoring_for(
        &mut self,
        saved: Vec<persist::SavedBlock>,
        now_unix_ms: u64,
        site: &[Cidr],
    ) -> Result<RestoreReport> {
        for _ in 1..REWRITE_TRIES {
            match self.ensure_restoring_once(saved.clone(), now_unix_ms, site) {
                // The admin CLI wrote to the old table after its blocks were read.
                Err(e) if e.errno() == Some(ERESTART) => continue,
                r => return r,
            }
        }
        self.ensure_restoring_once(saved, now_unix_ms, site)
    }

    /// One try of [`Blocker::ensure_restoring_for`], bound to the ruleset
    /// generation the stale table's blocks were read at: a block another
    /// process adds in between fails the transaction (`ERESTART`) instead
    /// of being deleted with the stale table.
    fn ensure_restoring_once(
        &mut self,
        saved: Vec<persist::SavedBlock>,
        now_unix_ms: u64,
        site: &[Cidr],
    ) -> Result<RestoreReport> {
        let generation = self.nl.generation()?;
        let stale = ruleset::table_exists(&mut self.nl)?;
        let now = if now_unix_ms == 0 { gatewarden_core::clock::unix_now_ms() } else { now_unix_ms };
        let mut carried = Vec::new();
        // The previous run's allowlist, as an import reads the running router's.
        let mut kernel_allow = Vec::new();
        if stale {
            tracing::info!("replacing the nftables table left by a previous run, keeping its blocks");
            match self.saved_blocks(now) {
                Ok(v) => carried = v,
                Err(e) => tracing::warn!("could not read the previous table's blocks: {e}"),
            }
            match self.kernel_allow_ranges() {
                Ok(v) => kernel_allow = v,
                Err(e) => tracing::warn!("could not read the previous table's allowlist: {e}"),
            }
        }
        let all = persist::merge(carried, saved);
        let mut report = RestoreReport::default();
        let mut feeds: BTreeMap<Fam, Vec<ruleset::RestoredRange>> = BTreeMap::new();
        let mut singles: BTreeMap<String, Vec<(u64, persist::SavedBlock)>> = BTreeMap::new();
        let mut contained = Vec::new();
        for blk in all {
            let remaining = blk.remaining_ms(now);
            if remaining == 0 {
                report.expired += 1;
                continue;
            }
            if blk.origin == persist::CONTAIN_ORIGIN {
                match super::spoof::parse_mac(&blk.target) {
                    Some(mac) => {
                        contained.push(ruleset::element_restored(&mac, blk.timeout_ms, remaining, 0, Some(&blk.reason)))
                    }
                    None => report.unreadable += 1,
                }
                continue;
            }
            let Some(origin) = blk.origin() else { continue };
            if origin.interval() {
                let Some((fam, lo, hi)) = parse_range(&blk.target) else {
                    report.unreadable += 1;
                    continue;
                };
                feeds.entry(fam).or_default().push(ruleset::RestoredRange {
                    lo,
                    hi,
                    // A saved 0 (an edited file) stays the shortest timeout, never none.
                    timeout_ms: blk.timeout_ms.max(1),
                    remaining_ms: remaining,
                    comment: blk.reason,
                    wide: blk.allow_wide,
                });
            } else {
                let Ok(addr) = blk.target.parse::<IpAddr>() else {
                    report.unreadable += 1;
                    continue;
                };
                if self.protected(&addr).is_some() {
                    report.protected += 1;
                    continue;
                }
                // A detector block never outlasts max_ttl (see `block_with`),
                // nor does one saved before that held or written into the
                // file by hand.
                let (remaining, blk) = if origin == Origin::Detector {
                    let max_ms = u64::try_from(self.settings.max_ttl.as_millis()).unwrap_or(u64::MAX);
                    let timeout_ms = blk.timeout_ms.min(max_ms);
                    (remaining.min(max_ms), persist::SavedBlock { timeout_ms, ..blk })
                } else {
                    (remaining, blk)
                };
                singles.entry(origin.set_name(fam_of(&addr))).or_default().push((remaining, blk));
            }
        }
        // Told and counted once the table is in (a try the kernel refuses is made again).
        let mut feed_refusals: Vec<(String, FeedRefusal)> = Vec::new();
        let mut feeds_too_much: Vec<(Fam, u128, usize)> = Vec::new();
        for (fam, ranges) in feeds.iter_mut() {
            ranges.sort_by_key(|r| r.lo);
            // Ranges came from one interval set: already disjoint; drop any overlap a hand-edited file brings.
            let mut disjoint: Vec<ruleset::RestoredRange> = Vec::with_capacity(ranges.len());
            for r in ranges.drain(..) {
                match disjoint.last() {
                    Some(last) if r.lo <= last.hi => report.unreadable += 1,
                    _ => disjoint.push(r),
                }
            }
            let screen =
                screen_saved_feed(*fam, disjoint, |lo, hi| self.feed_range_refusal(*fam, lo, hi, site, &kernel_allow));
            *ranges = screen.keep;
            report.feed_refused += screen.refused.len();
            feed_refusals.extend(screen.refused);
            if let Some((covered, n)) = screen.too_much {
                report.feed_refused += n;
                feeds_too_much.push((*fam, covered, n));
            }
        }
        let lookups = ruleset::Lookups::holding(
            |o, fam| match o {
                Origin::Feed => feeds.get(&fam).is_some_and(|v| !v.is_empty()),
                _ => singles.get(&o.set_name(fam)).is_some_and(|v| !v.is_empty()),
            },
            !contained.is_empty(),
        );
        let mut b = ruleset::ensure_batch(&self.settings.layout, &self.allow, stale, lookups).at_generation(generation);
        let cap = self.settings.layout.max_block_elements as usize;
        for (set, mut v) in singles {
            // Over the set's size (a state file and a previous table that
            // differ after a crash during a flood, or a smaller
            // max_block_elements): what a full set would give up goes, so
            // the largest sender's share loses, not the shortest blocks.
            let over = v.len().saturating_sub(cap);
            if over > 0 {
                let views: Vec<ruleset::KernelElement> = v.iter().map(|(rem, blk)| saved_view(*rem, blk)).collect();
                let gone: BTreeSet<usize> = fair_pick(&views, None, false, over).victims.into_iter().collect();
                v = v.into_iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, x)| x).collect();
            }
            report.over_capacity += over;
            let els: Vec<_> = v
                .iter()
                .filter_map(|(rem, blk)| {
                    let addr: IpAddr = blk.target.parse().ok()?;
                    Some(ruleset::element_restored_from(
                        &addr_bytes(&addr),
                        blk.timeout_ms,
                        *rem,
                        &blk.reason,
                        &blk.senders,
                    ))
                })
                .collect();
            report.restored += els.len();
            ruleset::push_elements(&mut b, &set, &els, true, &format!("restore {} blocks in {set}", els.len()));
        }
        if !contained.is_empty() {
            contained.truncate(self.settings.layout.max_contained as usize);
            report.restored += contained.len();
            let what = format!("restore {} contained MACs", contained.len());
            ruleset::push_elements(&mut b, ruleset::SET_CONTAIN, &contained, true, &what);
        }
        for (fam, ranges) in feeds {
            report.restored += ranges.len();
            ruleset::push_restored_intervals(&mut b, &Origin::Feed.set_name(fam), fam, &ranges);
        }
        // A refused generation is no failure: `ensure_restoring` reads again.
        if let Err(e) = self.nl.commit(&b) {
            if e.errno() != Some(ERESTART) {
                self.count_error();
            }
            return Err(e);
        }
        self.fail_closed = Some(false);
        self.lookups = lookups;
        // A new table's binding sets are empty.
        self.bound_written = Some(super::spoof::BoundSources::default());
        self.feed_checked = Some((sorted_site(site), self.own.clone()));
        tell_feed_refusals(&feed_refusals, &feeds_too_much);
        if let Some(m) = &self.metrics {
            m.feed_restore_refused.add(report.feed_refused as u64);
        }
        if report.restored + report.protected + report.feed_refused + report.over_capacity + report.unreadable > 0 {
            tracing::info!(
                restored = report.restored,
                protected = report.protected,
                feed_refused = report.feed_refused,
                expired = report.expired,
                over_capacity = report.over_capacity,
                unreadable = report.unreadable,
                "blocks restored from before the restart"
            );
        }
        Ok(report)
    }

    /// Checks the feed sets again, as an import checks its entries, when
    /// `site` (the LAN's networks now: [`lan_networks`] and
    /// `enforce.lan_prefixes`) or the gateway's own addresses differ from
    /// what they were last checked against; otherwise does nothing.
    ///
    /// Why: at boot the router restores its saved feed before networking
    /// has given the LAN interface its addresses, so that restore can check
    /// the feed only against `enforce.lan_prefixes`, and a LAN renumbered
    /// into a range the feed covers would stay blocked, both ways. The
    /// enforcement thread calls this on its LAN refresh (every second).
    ///
    /// The pieces of a range that overlap the site or a protection are
    /// lifted, the rest of the range stays with its timeout, time left,
    /// comment and `--allow-wide` mark, in one transaction per change
    /// (the family's feed set is rewritten; its per-element counters start
    /// again). Each lifted piece is logged with why and what to do, and
    /// counted in `gatewarden_enforce_feed_restore_refused_total`. The
    /// width and coverage limits are not applied again: they do not depend
    /// on the LAN. Only the blocker that installed the table does this;
    /// when another process changes the ruleset meanwhile, the next call
    /// tries again. Returns how many pieces were lifted.
    pub fn recheck_feed(&mut self, site: &[Cidr]) -> Result<usize> {
        let checked = (sorted_site(site), self.own.clone());
        if !self.owns_rules() || self.feed_checked.as_ref() == Some(&checked) {
            return Ok(0);
        }
        let generation = self.nl.generation()?;
        let mut b = Batch::new().at_generation(generation);
        let mut lifted: Vec<(String, FeedRefusal)> = Vec::new();
        for fam in [Fam::V4, Fam::V6] {
            let set = Origin::Feed.set_name(fam);
            let els = ruleset::elements(&mut self.nl, &set)?;
            let mut refused = Vec::new();
            let mut keep = Vec::new();
            for (lo, hi, e) in interval_ranges(fam, &els) {
                // An element with a timeout and no time left is on its way out.
                if e.timeout_ms > 0 && e.expires_ms == 0 {
                    continue;
                }
                let r = ruleset::RestoredRange {
                    lo,
                    hi,
                    timeout_ms: e.timeout_ms,
                    remaining_ms: e.expires_ms,
                    comment: e.comment.clone(),
                    wide: e.wide,
                };
                split_refused(
                    fam,
                    r,
                    |lo, hi| self.feed_range_refusal(fam, lo, hi, &checked.0, &[]),
                    &mut keep,
                    &mut refused,
                );
            }
            if refused.is_empty() {
                continue;
            }
            ruleset::flush_set(&mut b, &set);
            ruleset::push_restored_intervals(&mut b, &set, fam, &keep);
            lifted.extend(refused);
        }
        if !lifted.is_empty() {
            match self.nl.commit(&b) {
                Ok(()) => {}
                // An import or block from another process came in between: read again next time.
                Err(e) if e.errno() == Some(ERESTART) => return Ok(0),
                Err(e) => {
                    self.count_error();
                    return Err(e);
                }
            }
            if let Some(m) = &self.metrics {
                m.feed_restore_refused.add(lifted.len() as u64);
            }
            tell_feed_lifts(&lifted);
        }
        self.feed_checked = Some(checked);
        Ok(lifted.len())
    }

    /// Every block with its absolute expiry, for the state file.
    pub fn saved_blocks(&mut self, now_unix_ms: u64) -> Result<Vec<persist::SavedBlock>> {
        let mut out = Vec::new();
        for origin in Origin::ALL {
            for fam in [Fam::V4, Fam::V6] {
                let els = ruleset::elements(&mut self.nl, &origin.set_name(fam))?;
                let entries: Vec<(String, &ruleset::KernelElement)> = if origin.interval() {
                    interval_ranges(fam, &els)
                        .into_iter()
                        .map(|(lo, hi, e)| (feeds::range_text(fam, lo, hi), e))
                        .collect()
                } else {
                    els.iter().filter_map(|e| Some((key_addr(fam, &e.key)?.to_string(), e))).collect()
                };
                out.extend(entries.into_iter().filter(|(_, e)| e.expires_ms > 0).map(|(target, e)| {
                    persist::SavedBlock {
                        target,
                        origin: origin.as_str().into(),
                        timeout_ms: e.timeout_ms,
                        expires_unix_ms: now_unix_ms + e.expires_ms,
                        reason: e.comment.clone(),
                        allow_wide: e.wide,
                        senders: e.senders.clone(),
                    }
                }));
            }
        }
        // A table left by a version without containment has no such set.
        let contained = match ruleset::elements(&mut self.nl, ruleset::SET_CONTAIN) {
            Ok(v) => v,
            Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
            Err(e) => return Err(e),
        };
        for e in contained {
            let Ok(mac) = <[u8; 6]>::try_from(e.key.as_slice()) else { continue };
            if e.expires_ms > 0 {
                out.push(persist::SavedBlock {
                    target: super::spoof::mac_text(&mac),
                    origin: persist::CONTAIN_ORIGIN.into(),
                    timeout_ms: e.timeout_ms,
                    expires_unix_ms: now_unix_ms + e.expires_ms,
                    reason: e.comment.clone(),
                    allow_wide: false,
                    senders: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// Contains `mac`: its frames are dropped on the LAN side (input and
    /// forward) for `ttl`, except those from a source bound to it
    /// ([`Blocker::set_bound_sources`]): the MAC may be a device's that an
    /// attacker forged. Returns whether this is a new containment (the
    /// MAC was not contained), which is when one `spoofing` alert is due.
    /// A running containment is refreshed to `ttl`, never shortened. A full
    /// set evicts the containments closest to expiry.
    pub fn contain(&mut self, mac: [u8; 6], ttl: Duration, reason: &str) -> Result<bool> {
        let need = ruleset::Lookups::default().with_contain();
        self.turn_on(need)?;
        let set = ruleset::SET_CONTAIN;
        let ms = (ttl.as_millis() as u64).max(1000);
        let el = ruleset::element(&mac, Some(ms), 0, Some(reason));
        let mut add = Batch::new();
        ruleset::push_new_elements(
            &mut add,
            set,
            std::slice::from_ref(&el),
            &format!("contain {}", super::spoof::mac_text(&mac)),
        );
        let mut refresh = Batch::new();
        ruleset::push_elements(
            &mut refresh,
            set,
            &[ruleset::element(&mac, None, 0, None)],
            false,
            "drop a containment to refresh it",
        );
        ruleset::push_elements(&mut refresh, set, &[el], true, "re-contain");
        let running = ruleset::element_of(&mut self.nl, set, &mac)?;
        let first = match &running {
            Some(e) if e.expires_ms >= ms.saturating_sub(1000) => {
                if e.comment != reason && !reason.is_empty() {
                    // The MAC forged more addresses: the comment lists them, the time left stays.
                    let mut b = Batch::new();
                    let old = ruleset::element(&mac, None, 0, None);
                    ruleset::push_elements(&mut b, set, &[old], false, "drop a containment to update its reason");
                    let el = ruleset::element_restored(&mac, e.timeout_ms, e.expires_ms, 0, Some(reason));
                    ruleset::push_elements(&mut b, set, &[el], true, "re-contain with the updated reason");
                    self.commit(&b)?;
                }
                return Ok(false);
            }
            Some(_) => &refresh,
            None => &add,
        };
        match self.commit(first) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                self.commit(&refresh)?;
                return Ok(false);
            }
            Err(e) if e.errno() == Some(libc::ENFILE) => {
                let mut els = ruleset::elements(&mut self.nl, set)?;
                els.sort_by_key(|e| e.expires_ms);
                let n = (self.settings.layout.max_contained as usize / 16).max(1);
                let victims: Vec<_> = els.iter().take(n).map(|e| ruleset::element(&e.key, None, 0, None)).collect();
                let mut b = Batch::new();
                ruleset::push_elements(&mut b, set, &victims, false, "evict containments closest to expiry");
                self.commit(&b)?;
                tracing::warn!(
                    evicted = victims.len(),
                    "contain_mac full (enforce.max_contained_macs): evicted the containments closest to expiry"
                );
                self.commit(first)?;
            }
            Err(e) => return Err(e),
        }
        self.keep_on(need)?;
        Ok(running.is_none())
    }

    /// Makes the binding sets hold `want`: the sources a contained MAC may
    /// still send from (see `ruleset`'s module doc: a containment drops a
    /// frame only when its MAC and source are not bound). Writes only the
    /// difference from the last write, in one transaction; after a failed
    /// write, or when nothing was written yet, it replaces the sets whole.
    /// Lists longer than the sets are cut (the last in MAC order fall off,
    /// and are dropped whole if contained). Returns whether the kernel changed.
    pub fn set_bound_sources(&mut self, want: &super::spoof::BoundSources) -> Result<bool> {
        let (want, cut) = capped(want);
        if self.bound_written.as_ref() == Some(&want) {
            self.bindings_from_guard = true;
            return Ok(false);
        }
        if cut > 0 {
            tracing::warn!(
                left_out = cut,
                "more LAN bindings than the mac_bound sets hold: the MACs left out are dropped whole if contained"
            );
        }
        let mut b = Batch::new();
        let old = match self.bound_written.take() {
            Some(old) => old,
            None => {
                for fam in [Fam::V4, Fam::V6] {
                    ruleset::flush_set(&mut b, ruleset::bound_set(fam));
                    ruleset::flush_set(&mut b, ruleset::routed_set(fam));
                }
                super::spoof::BoundSources::default()
            }
        };
        for fam in [Fam::V4, Fam::V6] {
            let (set, routed) = (ruleset::bound_set(fam), ruleset::routed_set(fam));
            let (gone, new) = changes(&old.addrs, &want.addrs, |(_, ip)| fam_of(ip) == fam);
            let el = |v: Vec<&([u8; 6], IpAddr)>| {
                v.into_iter().map(|(m, ip)| ruleset::bound_element(m, ip)).collect::<Vec<_>>()
            };
            ruleset::push_elements(&mut b, set, &el(gone), false, "unbind LAN sources");
            ruleset::push_elements(&mut b, set, &el(new), true, "bind LAN sources");
            let (gone, new) = changes(&old.routed, &want.routed, |(_, c)| c.fam() == fam);
            let el = |v: Vec<&([u8; 6], Cidr)>| {
                v.into_iter().map(|(m, c)| ruleset::routed_element(m, c)).collect::<Vec<_>>()
            };
            ruleset::push_elements(&mut b, routed, &el(gone), false, "unbind routed networks");
            ruleset::push_elements(&mut b, routed, &el(new), true, "bind routed networks");
        }
        self.commit(&b)?;
        self.bound_written = Some(want);
        self.bindings_from_guard = true;
        Ok(true)
    }

    /// Lifts the containment of `mac` (an operator's `gatewarden unblock
    /// MAC`: a MAC-NAT repeater or a VM host wrongly contained). Returns
    /// whether it was contained. A MAC that goes on forging is contained again.
    pub fn uncontain(&mut self, mac: [u8; 6]) -> Result<bool> {
        let mut b = Batch::new();
        let el = ruleset::element(&mac, None, 0, None);
        let what = format!("uncontain {}", super::spoof::mac_text(&mac));
        ruleset::push_elements(&mut b, ruleset::SET_CONTAIN, &[el], false, &what);
        match self.commit(&b) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The contained MACs as an operator sees them (what each forged, since
    /// when, time left), longest time left first. A table left by a version
    /// without containment has none.
    pub fn contained_list(&mut self, now_unix_ms: u64) -> Result<Vec<super::spoof::ContainedMac>> {
        let els = match ruleset::elements(&mut self.nl, ruleset::SET_CONTAIN) {
            Ok(v) => v,
            Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut out: Vec<super::spoof::ContainedMac> = els
            .into_iter()
            .filter_map(|e| {
                let mac = <[u8; 6]>::try_from(e.key.as_slice()).ok()?;
                let elapsed_ms = e.timeout_ms.saturating_sub(e.expires_ms);
                Some(super::spoof::ContainedMac {
                    mac: super::spoof::mac_text(&mac),
                    forged: super::spoof::forged_in_reason(&e.comment),
                    since: now_unix_ms.saturating_sub(elapsed_ms) / 1000,
                    remaining_s: e.expires_ms.div_ceil(1000),
                    timeout_s: e.timeout_ms.div_ceil(1000),
                    reason: e.comment,
                })
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.remaining_s));
        Ok(out)
    }

    /// The contained MACs with their time left.
    pub fn contained(&mut self) -> Result<Vec<([u8; 6], Duration)>> {
        Ok(ruleset::elements(&mut self.nl, ruleset::SET_CONTAIN)?
            .into_iter()
            .filter_map(|e| Some((<[u8; 6]>::try_from(e.key.as_slice()).ok()?, Duration::from_millis(e.expires_ms))))
            .collect())
    }

    /// The range of the kernel's `allow4`/`allow6` set holding `addr`, if any
    /// (as a CIDR when it is one, else the address itself).
    fn kernel_allowed_by(&mut self, addr: &IpAddr) -> Result<Option<Cidr>> {
        if !ruleset::table_exists(&mut self.nl)? {
            return Ok(None);
        }
        let fam = fam_of(addr);
        let els = ruleset::elements(&mut self.nl, &format!("allow{}", fam.digit()))?;
        let a = feeds::addr_u128(addr);
        Ok(interval_ranges(fam, &els)
            .into_iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&a))
            .map(|(lo, hi, _)| feeds::range_text(fam, lo, hi).parse().unwrap_or(Cidr::host(*addr))))
    }

    /// Whether the table exists (the CLI needs a running router).
    pub fn table_exists(&mut self) -> Result<bool> {
        ruleset::table_exists(&mut self.nl)
    }

    /// Deletes the table (clean exit).
    pub fn remove(&mut self) -> Result<()> {
        if ruleset::table_exists(&mut self.nl)? {
            self.commit(&ruleset::remove_batch())?;
        }
        Ok(())
    }

    fn commit(&mut self, b: &Batch) -> Result<()> {
        let r = self.nl.commit(b);
        if r.is_err() {
            self.count_error();
        }
        r
    }

    /// Counts a failed nftables operation (`gatewarden_enforce_errors_total`).
    fn count_error(&self) {
        if let Some(m) = &self.metrics {
            m.errors.inc();
        }
    }

    /// The allowlist entry covering `addr`, if any.
    pub fn allowed_by(&self, addr: &IpAddr) -> Option<Cidr> {
        self.allow.iter().find(|c| c.contains(addr)).copied()
    }

    /// Why `addr` may not be blocked, if it may not: allowlist, own
    /// address, next hop or resolver, bogon. Checked in memory, so a block
    /// costs one netlink transaction.
    pub fn protected(&self, addr: &IpAddr) -> Option<(Cidr, Protection)> {
        if let Some(c) = self.allowed_by(addr) {
            let why = if self.own.contains(addr) { Protection::OwnAddress } else { Protection::Allowlist };
            return Some((c, why));
        }
        if self.infrastructure.contains(addr) {
            return Some((Cidr::host(*addr), Protection::Infrastructure));
        }
        self.settings.never_block.iter().find(|c| c.contains(addr)).map(|c| (*c, Protection::NeverBlock))
    }

    /// Like [`Blocker::protected`] for a range `lo..=hi` (feeds): any protected address inside it.
    fn protection_overlapping(&self, fam: Fam, lo: u128, hi: u128) -> Option<Protection> {
        let hits = |c: &Cidr| cidr_overlaps(c, fam, lo, hi);
        if self.allow.iter().any(hits) {
            return Some(Protection::Allowlist);
        }
        if self.infrastructure.iter().any(|a| hits(&Cidr::host(*a))) {
            return Some(Protection::Infrastructure);
        }
        self.settings.never_block.iter().any(hits).then_some(Protection::NeverBlock)
    }

    /// Blocks `addr` for `ttl` (escalated for detector verdicts). Re-blocking
    /// refreshes the timeout. A full set evicts its oldest-expiring entries.
    pub fn block(&mut self, addr: IpAddr, ttl: Duration, origin: Origin, reason: &str) -> Result<BlockOutcome> {
        self.block_with(addr, ttl, origin, reason, origin == Origin::Detector)
    }

    /// Counts a refusal the verdict gate decided (forged or unproven source).
    pub fn refuse(&mut self, addr: IpAddr, why: Protection, reason: &str) -> BlockOutcome {
        tracing::warn!(%addr, reason, protected_as = %why.reason(), "refused to block a verdict's source");
        if let Some(c) = self.metrics.as_ref().and_then(|m| m.refused.get(&Origin::Detector)) {
            c.inc();
        }
        BlockOutcome::Refused { allowed_by: Cidr::host(addr), why }
    }

    /// [`Blocker::block`]; `escalate` says whether this block counts towards
    /// the repeat-offender escalation (only verdicts whose source is proven
    /// real do: spoofable evidence never escalates). A detector block
    /// written here has no known sender: use [`Blocker::block_verdict`]
    /// for a verdict.
    pub fn block_with(
        &mut self,
        addr: IpAddr,
        ttl: Duration,
        origin: Origin,
        reason: &str,
        escalate: bool,
    ) -> Result<BlockOutcome> {
        self.block_from(addr, ttl, origin, reason, escalate, None, Read::Kernel)
    }

    /// A detector's verdict: [`Blocker::block_with`] in the detector set,
    /// the block marked with `sender`, the node id of the detector that
    /// sent it (as the bus proved it: the topic's node, which the broker's
    /// ACL binds to the certificate, and the envelope's signature).
    ///
    /// Why the sender: every fleet peer may be compromised, and a detector
    /// with a stolen certificate can send more verdicts than the set holds.
    /// A full set used to evict the blocks closest to expiry, which are the
    /// honest detectors' shorter ones, so one flood let real attackers back
    /// in. Now a full set evicts from the sender holding the most blocks,
    /// the soonest-expiring of that sender's first ([`fair_victims`]): a
    /// flood pushes out its own sender's blocks while that sender holds
    /// the largest share. A block two detectors asked for counts half in
    /// each one's share and is protected by the smaller of the two shares,
    /// so a flooder co-signing an honest detector's block cannot make it
    /// its own to evict. The limit: k stolen certificates hold k shares.
    /// Admin blocks and feeds are in sets of their own, which verdicts
    /// never evict from.
    pub fn block_verdict(
        &mut self,
        addr: IpAddr,
        ttl: Duration,
        reason: &str,
        escalate: bool,
        sender: &str,
    ) -> Result<BlockOutcome> {
        let sender = gatewarden_core::identity::valid_node_id(sender).then_some(sender);
        self.block_from(addr, ttl, Origin::Detector, reason, escalate, sender, Read::Kernel)
    }

    /// [`Blocker::block_verdict`] as if its read of the running element
    /// had found none: the add then meets an element another writer put
    /// there after the read (EEXIST), which is the race the fallback in
    /// `block_from` handles. Fault injection for the enforce test
    /// `a_verdict_racing_another_writer_keeps_both_senders_and_the_count`:
    /// two processes cannot be made to interleave there on demand.
    #[doc(hidden)]
    pub fn block_verdict_after_a_stale_read(
        &mut self,
        addr: IpAddr,
        ttl: Duration,
        reason: &str,
        sender: &str,
    ) -> Result<BlockOutcome> {
        let sender = gatewarden_core::identity::valid_node_id(sender).then_some(sender);
        self.block_from(addr, ttl, Origin::Detector, reason, false, sender, Read::AssumeAbsent)
    }

    #[allow(clippy::too_many_arguments)]
    fn block_from(
        &mut self,
        addr: IpAddr,
        ttl: Duration,
        origin: Origin,
        reason: &str,
        escalate: bool,
        sender: Option<&str>,
        read: Read,
    ) -> Result<BlockOutcome> {
        // A blocker that did not install the table (the `gatewarden block` CLI)
        // also honours what the running router allows now: an allowlist saved
        // on the dashboard's settings page is in the kernel, not in the config file.
        let protection = match self.protected(&addr) {
            None if self.fail_closed.is_none() => self.kernel_allowed_by(&addr)?.map(|c| (c, Protection::Allowlist)),
            known => known,
        };
        if let Some((allowed_by, why)) = protection {
            tracing::warn!(%addr, %allowed_by, origin = origin.as_str(), reason, protected_as = why.describe(), "refused to block a protected address");
            if let Some(c) = self.metrics.as_ref().and_then(|m| m.refused.get(&origin)) {
                c.inc();
            }
            return Ok(BlockOutcome::Refused { allowed_by, why });
        }
        // A detector's TTL comes off the wire: a stolen detector certificate
        // could ask for 2^32 s (136 years), a block that outlives its
        // revocation and every restart. No detector block outlasts max_ttl,
        // escalated or not.
        let ttl = if origin == Origin::Detector && ttl > self.settings.max_ttl {
            // Said, at most hourly: a detector's `block_ttl_s` above this
            // router's `max_ttl_s` is cut without the detector knowing.
            if self.ttl_cut_told.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                self.ttl_cut_told = Some(Instant::now());
                tracing::warn!(
                    %addr,
                    asked_s = ttl.as_secs(),
                    max_ttl_s = self.settings.max_ttl.as_secs(),
                    "a detector asked for a block longer than [enforce] max_ttl_s; it lasts max_ttl_s. Lower the detector's block_ttl_s (or raise max_ttl_s) if that is not what you want (said at most once an hour)"
                );
            }
            self.settings.max_ttl
        } else {
            ttl
        };
        let (ttl, level) = if origin == Origin::Detector && escalate {
            self.escalation.next(addr, ttl, Instant::now())
        } else {
            (ttl, 0)
        };
        let need = ruleset::Lookups::default().with_block(origin, fam_of(&addr));
        self.turn_on(need)?;
        let set = origin.set_name(fam_of(&addr));
        let ms = (ttl.as_millis() as u64).max(1000);
        let mut b = Batch::new();
        let mine: Vec<String> = sender.map(String::from).into_iter().collect();
        let el = ruleset::element_from(&addr_bytes(&addr), ms, reason, &mine);
        ruleset::push_new_elements(&mut b, &set, std::slice::from_ref(&el), &format!("block {addr} in {set}"));
        // The senders a block written over `running` keeps: the running
        // ones and this verdict's (a block two detectors asked for is
        // shared). One whose senders are unknown (an older version's, or
        // an admin's) stays unknown: no verdict can claim it.
        let senders_over = |running: Option<&ruleset::KernelElement>| -> Vec<String> {
            match running {
                None => mine.clone(),
                Some(r) if r.senders.is_empty() => Vec::new(),
                Some(r) => {
                    let mut v = r.senders.clone();
                    if let Some(s) = sender {
                        if v.len() < ruleset::MAX_SENDERS && !v.iter().any(|x| x == s) {
                            v.push(s.to_string());
                        }
                    }
                    v
                }
            }
        };
        // Already blocked: delete and re-add in one transaction, so the new
        // timeout takes effect on every kernel (a plain re-add refreshes only on ≥ 6.10).
        // The re-added element keeps the running one's count and start.
        let refresh_of = |running: Option<&ruleset::KernelElement>| {
            let mut refresh = Batch::new();
            let key = ruleset::element(&addr_bytes(&addr), None, 0, None);
            ruleset::push_elements(&mut refresh, &set, &[key], false, &format!("drop {addr} from {set} to refresh it"));
            let senders = senders_over(running);
            let again = match running.and_then(|r| Some((r.counter?, r))) {
                Some((c, r)) => {
                    let now_s = gatewarden_core::clock::unix_now_ms() / 1000;
                    let since = r
                        .counted_since_s
                        .unwrap_or_else(|| now_s.saturating_sub(r.timeout_ms.saturating_sub(r.expires_ms) / 1000));
                    ruleset::element_carried(&addr_bytes(&addr), ms, reason, c, since, &senders, None)
                }
                None => ruleset::element_from(&addr_bytes(&addr), ms, reason, &senders),
            };
            ruleset::push_elements(&mut refresh, &set, &[again], true, &format!("re-block {addr} in {set}"));
            refresh
        };
        // A shorter verdict never shortens a longer block (an admin's day
        // is not cut to a detector's five minutes): the running `el` is
        // kept as it is, but this sender asked for it too, so it names
        // both. Otherwise a stolen detector could block a real attacker
        // first (it sees the same flows), have the honest detector's
        // verdict kept as its own, and evict it with a flood.
        let kept = |el: &ruleset::KernelElement| {
            let left = Duration::from_millis(el.expires_ms);
            tracing::info!(%addr, left_s = left.as_secs(), asked_s = ttl.as_secs(), origin = origin.as_str(), "already blocked for longer; kept");
            (senders_over(Some(el)), BlockOutcome::Blocked { ttl: left, level, evicted: Vec::new() })
        };
        let mut evicted = Vec::new();
        // Read the running element first (a GET, no transaction) instead of
        // letting an exclusive add fail: every failed batch is aborted by the
        // kernel, and an abort waits for an RCU grace period — it made each
        // re-block cost 16 ms (p50) with 10 000 elements present.
        let running = match read {
            Read::Kernel => ruleset::element_of(&mut self.nl, &set, &addr_bytes(&addr))?,
            Read::AssumeAbsent => None,
        };
        let refresh = refresh_of(running.as_ref());
        let first = match running {
            Some(el) if el.expires_ms >= ms => {
                let (senders, outcome) = kept(&el);
                self.name_senders(&set, &addr, &el, &senders)?;
                return Ok(outcome);
            }
            Some(_) => &refresh,
            None => &b,
        };
        // The first try may fail the expected ways (handled below): only a
        // failure gatewarden cannot handle counts as an error.
        match self.nl.commit(first) {
            Ok(()) => {}
            // Added since the read (by another writer: the `gatewarden
            // block` CLI beside the router, a second blocker), or expired but
            // not yet reaped by the kernel. `refresh` was built over what the
            // read found, nothing, so written as it is it named this verdict's
            // sender alone: the other writer's detector lost its name on the
            // block (and with it the share that protects the block in a full
            // set: shares are counted from the senders each element names,
            // there is no other tally to update) and the element its count.
            // So read again and write over what is there now, as over any
            // running block: both writers' senders, its count carried, a
            // longer block kept. An element with no time left is the
            // unreaped one: nobody's any more.
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                let now = ruleset::element_of(&mut self.nl, &set, &addr_bytes(&addr))?.filter(|el| el.expires_ms > 0);
                match now {
                    Some(el) if el.expires_ms >= ms => {
                        let (senders, outcome) = kept(&el);
                        self.name_senders(&set, &addr, &el, &senders)?;
                        self.keep_on(need)?;
                        return Ok(outcome);
                    }
                    now => self.commit(&refresh_of(now.as_ref()))?,
                }
            }
            Err(e) if e.errno() == Some(libc::ENFILE) => {
                evicted = self.evict_fair(&set, fam_of(&addr), origin, sender)?;
                self.commit(first)?;
            }
            Err(e) => {
                self.count_error();
                return Err(e);
            }
        }
        self.keep_on(need)?;
        if let Some(m) = &self.metrics {
            if let Some(c) = m.blocks.get(&origin) {
                c.inc();
            }
            if let Some(c) = m.evicted.get(&origin) {
                c.add(evicted.len() as u64);
            }
        }
        tracing::info!(%addr, ttl_s = ttl.as_secs(), level, origin = origin.as_str(), reason, "blocked");
        Ok(BlockOutcome::Blocked { ttl, level, evicted })
    }

    /// Makes room in the full `set` for a block from `sender`: a sixteenth
    /// of the set goes, taken from the largest shares ([`fair_victims`]).
    /// Said at most once a minute, naming the sender whose share was the
    /// largest (node ids are not metric labels: any certificate may bring
    /// a new one; the counts by whose blocks went are bounded).
    fn evict_fair(&mut self, set: &str, fam: Fam, origin: Origin, sender: Option<&str>) -> Result<Vec<IpAddr>> {
        let els = ruleset::elements(&mut self.nl, set)?;
        let n = (self.settings.layout.max_block_elements as usize / 16).max(1);
        let fair = fair_victims(&els, sender, n);
        let victims: Vec<&ruleset::KernelElement> = fair.victims.iter().map(|i| &els[*i]).collect();
        let mut b = Batch::new();
        let attrs: Vec<_> = victims.iter().map(|e| ruleset::element(&e.key, None, 0, None)).collect();
        ruleset::push_elements(&mut b, set, &attrs, false, &format!("evict {} entries from {set}", attrs.len()));
        self.commit(&b)?;
        // Own: the requester's, alone or shared with another detector.
        let own = victims
            .iter()
            .filter(|e| match sender {
                Some(s) => e.senders.iter().any(|x| x == s),
                None => e.senders.is_empty(),
            })
            .count();
        if let Some(m) = &self.metrics {
            m.evicted_whose[0].add(own as u64);
            m.evicted_whose[1].add((victims.len() - own) as u64);
        }
        if origin != Origin::Detector {
            // One share: the entries closest to expiry.
            tracing::warn!(set = %set, evicted = victims.len(), "block set full: evicted the entries closest to expiry");
            return Ok(victims.iter().filter_map(|e| key_addr(fam, &e.key)).collect());
        }
        let largest = match fair.largest.as_deref() {
            None | Some(UNKNOWN_SENDER) => "unknown (blocks without a sender: restored from an older version's state)",
            Some(s) => s,
        };
        if self.share_full_told.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            self.share_full_told = Some(Instant::now());
            tracing::warn!(
                set = %set,
                evicted = victims.len(),
                largest_share = %largest,
                largest_share = %share_text(fair.largest_share),
                of = els.len(),
                verdict_from = %sender.unwrap_or("unknown"),
                "block set full: evicted the soonest-expiring blocks of the sender holding the most; a detector \
                 holding most of the set may be compromised: check it, and revoke it (`gatewarden pki revoke ID`) \
                 if so (said at most once a minute)"
            );
        }
        Ok(victims.iter().filter_map(|e| key_addr(fam, &e.key)).collect())
    }

    /// Makes the running block `el` name `senders`, if it does not already,
    /// without touching its time, comment or count: the same element written
    /// again, with the time it has left.
    fn name_senders(
        &mut self,
        set: &str,
        addr: &IpAddr,
        el: &ruleset::KernelElement,
        senders: &[String],
    ) -> Result<()> {
        if senders == el.senders.as_slice() {
            return Ok(());
        }
        let key = addr_bytes(addr);
        let mut b = Batch::new();
        ruleset::push_elements(
            &mut b,
            set,
            &[ruleset::element(&key, None, 0, None)],
            false,
            "drop a block to name one more sender",
        );
        let now_s = gatewarden_core::clock::unix_now_ms() / 1000;
        let since = el
            .counted_since_s
            .unwrap_or_else(|| now_s.saturating_sub(el.timeout_ms.saturating_sub(el.expires_ms) / 1000));
        let again = match el.counter {
            Some(c) => {
                ruleset::element_carried(&key, el.timeout_ms, &el.comment, c, since, senders, Some(el.expires_ms))
            }
            // A set without per-element counters (a table from an older version).
            None => ruleset::element_restored_from(&key, el.timeout_ms, el.expires_ms, &el.comment, senders),
        };
        ruleset::push_elements(
            &mut b,
            set,
            &[again],
            true,
            &format!("re-block {addr} in {set} naming one more sender"),
        );
        self.commit(&b)
    }

    /// Blocks many addresses in batched transactions (no escalation); returns how many were written.
    pub fn bulk_block(&mut self, addrs: &[IpAddr], ttl: Duration, origin: Origin, reason: &str) -> Result<usize> {
        let ms = (ttl.as_millis() as u64).max(1000);
        let mut written = 0;
        for fam in [Fam::V4, Fam::V6] {
            let set = origin.set_name(fam);
            let els: Vec<_> = addrs
                .iter()
                .filter(|a| fam_of(a) == fam && self.protected(a).is_none())
                .map(|a| ruleset::element(&addr_bytes(a), Some(ms), 0, Some(reason)))
                .collect();
            let need = ruleset::Lookups::default().with_block(origin, fam);
            if !els.is_empty() {
                self.turn_on(need)?;
            }
            for chunk in els.chunks(ruleset::ELEMENTS_PER_MESSAGE * 4) {
                let mut b = Batch::new();
                ruleset::push_elements(&mut b, &set, chunk, true, &format!("bulk block {} in {set}", chunk.len()));
                self.commit(&b)?;
                written += chunk.len();
            }
            if !els.is_empty() {
                self.keep_on(need)?;
            }
        }
        if let Some(m) = &self.metrics {
            if let Some(c) = m.blocks.get(&origin) {
                c.add(written as u64);
            }
        }
        Ok(written)
    }

    /// Removes `addr` from the detector and admin sets; returns the origins it was removed from.
    pub fn unblock(&mut self, addr: IpAddr) -> Result<Vec<Origin>> {
        self.escalation.forget(&addr);
        let mut removed = Vec::new();
        for origin in [Origin::Detector, Origin::Admin] {
            let set = origin.set_name(fam_of(&addr));
            let mut b = Batch::new();
            let el = ruleset::element(&addr_bytes(&addr), None, 0, None);
            ruleset::push_elements(&mut b, &set, &[el], false, &format!("unblock {addr} in {set}"));
            match self.nl.commit(&b) {
                Ok(()) => removed.push(origin),
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Every active block with its remaining time.
    pub fn list(&mut self) -> Result<Vec<KernelBlock>> {
        let mut out = Vec::new();
        for origin in Origin::ALL {
            for fam in [Fam::V4, Fam::V6] {
                let els = ruleset::elements(&mut self.nl, &origin.set_name(fam))?;
                if origin.interval() {
                    out.extend(intervals(fam, &els, origin));
                } else {
                    for e in els {
                        let Some(a) = key_addr(fam, &e.key) else { continue };
                        out.push(KernelBlock::from_element(a.to_string(), origin, &e));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Named nftables counters: name → (packets, bytes).
    pub fn counters(&mut self) -> Result<BTreeMap<String, (u64, u64)>> {
        ruleset::counters(&mut self.nl)
    }

    /// [`Blocker::import_feed_with`] with the default checks: no site
    /// networks known, the width and coverage limits on.
    pub fn import_feed(
        &mut self,
        entries: &[Cidr],
        ttl: Duration,
        comment: &str,
    ) -> std::result::Result<ImportReport, FeedError> {
        self.import_feed_with(entries, ttl, comment, &FeedChecks::default())
    }

    /// Imports a blocklist: replaces the feed set of each family `entries`
    /// brings usable entries for, in one transaction, and leaves the other
    /// family's as it was (an IPv4 list does not wipe an IPv6 one). An empty
    /// `entries` clears both (the CLI never passes one).
    ///
    /// Refused, each reported with why: entries overlapping `checks.site`,
    /// the allowlist (also the running router's, from the kernel, when this
    /// blocker did not install the table: the settings page's allowlist is
    /// not in the config file), the gateway's addresses, infrastructure or
    /// bogons; and unless `checks.allow_wide`, entries wider than
    /// `feeds::widest`. Nothing is written when every entry is refused
    /// ([`FeedError::AllRefused`]) or, unless `checks.allow_wide`, when the
    /// rest covers more than `feeds::coverage_limit` of a family
    /// ([`FeedError::TooMuch`]).
    pub fn import_feed_with(
        &mut self,
        entries: &[Cidr],
        ttl: Duration,
        comment: &str,
        checks: &FeedChecks,
    ) -> std::result::Result<ImportReport, FeedError> {
        let kernel_allow = if self.fail_closed.is_none() { self.kernel_allow_ranges()? } else { Vec::new() };
        let mut refused = Vec::new();
        let mut keep: Vec<Cidr> = Vec::new();
        for c in entries {
            match self.feed_refusal(c, checks, &kernel_allow) {
                Some(why) => refused.push((*c, why)),
                None => keep.push(*c),
            }
        }
        if !refused.is_empty() {
            if let Some(c) = self.metrics.as_ref().and_then(|m| m.refused.get(&Origin::Feed)) {
                c.add(refused.len() as u64);
            }
        }
        if !entries.is_empty() && keep.is_empty() {
            return Err(FeedError::AllRefused { refused });
        }
        if !checks.allow_wide {
            for fam in [Fam::V4, Fam::V6] {
                let covered = feeds::union_size(&keep, fam);
                if feeds::over_coverage(fam, covered) {
                    return Err(FeedError::TooMuch { fam, covered, refused });
                }
            }
        }
        let ms = (ttl.as_millis() as u64).max(1000);
        let replace = |fam: Fam| entries.is_empty() || keep.iter().any(|c| c.fam() == fam);
        let mut families = Vec::new();
        for fam in [Fam::V4, Fam::V6] {
            // What the set holds now, for the report: an import says what it replaced.
            let held = interval_ranges(fam, &ruleset::elements(&mut self.nl, &Origin::Feed.set_name(fam))?)
                .into_iter()
                .map(|(_, _, e)| e.comment.clone())
                .collect::<Vec<String>>();
            let from: BTreeSet<String> = held.iter().filter(|c| !c.is_empty()).cloned().collect();
            families.push(FamilyImport {
                fam,
                replaced: replace(fam),
                written: 0,
                covered: 0,
                before: held.len(),
                before_from: from.into_iter().collect(),
            });
        }
        let need = ruleset::Lookups::holding(|o, fam| o == Origin::Feed && keep.iter().any(|c| c.fam() == fam), false);
        self.turn_on(need)?;
        let mut b = Batch::new();
        let mut ranges = 0;
        for f in families.iter_mut().filter(|f| f.replaced) {
            let set = Origin::Feed.set_name(f.fam);
            ruleset::flush_set(&mut b, &set);
            let fam_entries: Vec<Cidr> = keep.iter().filter(|c| c.fam() == f.fam).copied().collect();
            if fam_entries.is_empty() {
                continue;
            }
            let merged = feeds::merge(&fam_entries);
            f.written = merged.len();
            f.covered = feeds::union_size(&fam_entries, f.fam);
            ranges += merged.len();
            ruleset::push_interval_elements(&mut b, &set, f.fam, &merged, Some(ms), Some(comment), checks.allow_wide);
        }
        self.commit(&b)?;
        self.keep_on(need)?;
        if let Some(m) = &self.metrics {
            if let Some(c) = m.blocks.get(&Origin::Feed) {
                c.add(ranges as u64);
            }
        }
        Ok(ImportReport { ranges, refused, families })
    }

    /// Why feed entry `c` may not be imported, if it may not: what
    /// [`Blocker::feed_range_refusal`] says, then its width.
    fn feed_refusal(&self, c: &Cidr, checks: &FeedChecks, kernel_allow: &[(Fam, u128, u128)]) -> Option<FeedRefusal> {
        let (lo, hi) = c.range();
        let fam = c.fam();
        if let Some(why) = self.feed_range_refusal(fam, lo, hi, &checks.site, kernel_allow) {
            return Some(why);
        }
        if !checks.allow_wide && feeds::too_wide(c) {
            return Some(FeedRefusal::TooWide(feeds::widest(fam)));
        }
        None
    }

    /// Why the feed range `lo..=hi` may not be blocked, whatever its width,
    /// if it may not: for an import's entries and a restore's saved ranges
    /// alike. The site's networks first: for a LAN range that also holds
    /// the gateway's own address, "the LAN" is the better reason.
    fn feed_range_refusal(
        &self,
        fam: Fam,
        lo: u128,
        hi: u128,
        site: &[Cidr],
        kernel_allow: &[(Fam, u128, u128)],
    ) -> Option<FeedRefusal> {
        let overlaps = |n: &Cidr| cidr_overlaps(n, fam, lo, hi);
        if let Some(n) = site.iter().find(|&n| overlaps(n)) {
            return Some(FeedRefusal::Site(*n));
        }
        if self.own.iter().any(|a| overlaps(&Cidr::host(*a))) {
            return Some(FeedRefusal::Protected(Protection::OwnAddress));
        }
        if let Some(p) = self.protection_overlapping(fam, lo, hi) {
            return Some(FeedRefusal::Protected(p));
        }
        if kernel_allow.iter().any(|(f, a, b)| *f == fam && *a <= hi && lo <= *b) {
            return Some(FeedRefusal::Protected(Protection::Allowlist));
        }
        None
    }

    /// The running router's allowlist as the kernel holds it (`allow4`,
    /// `allow6`): the settings page's entries are there, not in the config
    /// file a CLI blocker read.
    fn kernel_allow_ranges(&mut self) -> Result<Vec<(Fam, u128, u128)>> {
        let mut out = Vec::new();
        for fam in [Fam::V4, Fam::V6] {
            let els = ruleset::elements(&mut self.nl, &format!("allow{}", fam.digit()))?;
            out.extend(interval_ranges(fam, &els).into_iter().map(|(lo, hi, _)| (fam, lo, hi)));
        }
        Ok(out)
    }

    /// Drops new forwarded flows (`closed`) or lets them through; only writes on change.
    pub fn set_fail_closed(&mut self, closed: bool) -> Result<()> {
        if self.fail_closed == Some(closed) {
            return Ok(());
        }
        self.commit(&ruleset::failsafe_batch(closed))?;
        self.fail_closed = Some(closed);
        Ok(())
    }

    /// Replaces group sets and group rules atomically with `update`
    /// (rules sorted by priority, highest first). Older versions are ignored.
    /// MAC members are resolved to the addresses they are trusted with
    /// (see `group_member_addresses`); [`Blocker::refresh_group_macs`] re-resolves.
    pub fn replace_group_rules(&mut self, update: &PolicyUpdate) -> anyhow::Result<bool> {
        if self.policy_version.is_some_and(|v| update.version <= v) {
            return Ok(false);
        }
        let neighbours =
            if update.groups.iter().any(|(_, m)| m.iter().any(|x| gatewarden_core::net::parse_mac(x).is_some())) {
                self.group_member_addresses().unwrap_or_else(|e| {
                    tracing::warn!("cannot read the neighbour table for MAC group members: {e}");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
        self.apply_group_rules(update, &neighbours)?;
        self.policy_version = Some(update.version);
        self.policy_macs = Some((update.clone(), neighbours));
        Ok(true)
    }

    /// Re-resolves MAC group members; re-applies the current policy if a
    /// device's address changed. Returns whether it re-applied.
    pub fn refresh_group_macs(&mut self) -> anyhow::Result<bool> {
        let Some((update, old)) = self.policy_macs.clone() else { return Ok(false) };
        if !update.groups.iter().any(|(_, m)| m.iter().any(|x| gatewarden_core::net::parse_mac(x).is_some())) {
            return Ok(false);
        }
        let mut now = self.group_member_addresses()?;
        now.sort();
        let mut was = old.clone();
        was.sort();
        let macs: Vec<[u8; 6]> = update
            .groups
            .iter()
            .flat_map(|(_, m)| m.iter().filter_map(|x| gatewarden_core::net::parse_mac(x)))
            .collect();
        let relevant = |v: &[(IpAddr, [u8; 6])]| -> Vec<(IpAddr, [u8; 6])> {
            v.iter().filter(|(_, m)| macs.contains(m)).copied().collect()
        };
        if relevant(&now) == relevant(&was) {
            return Ok(false);
        }
        self.apply_group_rules(&update, &now)?;
        self.policy_macs = Some((update, now));
        Ok(true)
    }

    /// The (address, MAC) pairs a MAC group member stands for. With the LAN's
    /// spoof check running, its bindings (leases and undisputed neighbour
    /// entries, never a first sighting, never an address off the LAN): one
    /// ARP packet claiming the admin's laptop or a public resolver at a
    /// member's MAC put those addresses in the group's set, so a rule with
    /// the group as source cut the laptop off, and one with it as
    /// destination cut everyone in the source group off from the resolver.
    /// Without it (no LAN interface), the neighbour table less the addresses
    /// never blocked: the router's own, its next hops and resolvers, bogons.
    fn group_member_addresses(&self) -> anyhow::Result<Vec<Neighbour>> {
        if self.bindings_from_guard {
            let bound = self.bound_written.as_ref().map(|b| b.addrs.as_slice()).unwrap_or_default();
            return Ok(bound.iter().filter(|(_, ip)| !ip.is_unspecified()).map(|(mac, ip)| (*ip, *mac)).collect());
        }
        Ok(neighbours()?
            .into_iter()
            .filter(|(ip, _)| {
                !ip.is_unspecified()
                    && !self.own.contains(ip)
                    && !self.infrastructure.contains(ip)
                    && !self.settings.never_block.iter().any(|c| c.contains(ip))
            })
            .collect())
    }

    fn apply_group_rules(&mut self, update: &PolicyUpdate, neighbours: &[(IpAddr, [u8; 6])]) -> anyhow::Result<()> {
        let mut groups: BTreeMap<&str, Vec<Cidr>> = BTreeMap::new();
        for (name, members) in &update.groups {
            if name.is_empty()
                || name.len() > 24
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                anyhow::bail!("group name {name:?}: use 1 to 24 characters of A-Z, a-z, 0-9, '_' or '-'");
            }
            let mut parsed = Vec::new();
            for m in members {
                if let Some(mac) = gatewarden_core::net::parse_mac(m) {
                    parsed.extend(neighbours.iter().filter(|(_, x)| *x == mac).map(|(a, _)| Cidr::host(*a)));
                } else {
                    parsed.push(m.parse::<Cidr>().map_err(|e| anyhow::anyhow!("group {name}: {e}"))?);
                }
            }
            groups.insert(name, parsed);
        }
        for r in &update.rules {
            for g in [&r.source_group, &r.destination_group] {
                if !groups.contains_key(g.as_str()) {
                    anyhow::bail!("rule refers to group {g:?}, which the update does not define");
                }
            }
        }
        let existing = ruleset::set_names(&mut self.nl)?;
        let mut b = Batch::new();
        ruleset::flush_chain(&mut b, ruleset::CHAIN_GROUPS);
        for s in existing.iter().filter(|s| s.starts_with("grp_")) {
            ruleset::delete_set(&mut b, s);
        }
        let mut id = 1000;
        for (name, members) in &groups {
            for fam in [Fam::V4, Fam::V6] {
                let set = format!("grp_{name}{}", fam.digit());
                ruleset::add_interval_set(&mut b, &set, fam, id);
                id += 1;
                let m: Vec<Cidr> = members.iter().filter(|c| c.fam() == fam).copied().collect();
                if !m.is_empty() {
                    ruleset::push_interval_elements(&mut b, &set, fam, &feeds::merge(&m), None, None, false);
                }
            }
        }
        let mut rules = update.rules.clone();
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        for r in &rules {
            for fam in [Fam::V4, Fam::V6] {
                let has = |g: &str| groups.get(g).is_some_and(|m| m.iter().any(|c| c.fam() == fam));
                if !has(&r.source_group) || !has(&r.destination_group) {
                    continue;
                }
                // New connections only: replies of allowed connections pass,
                // and a deny stops the opening packet.
                let mut e = expr::ct_state_new();
                e.extend(expr::addr_in_set(fam, Dir::Saddr, &format!("grp_{}{}", r.source_group, fam.digit())));
                e.push(expr::load_addr(fam, Dir::Daddr));
                e.push(Expr::Lookup { set: format!("grp_{}{}", r.destination_group, fam.digit()), sreg: expr::REG_1 });
                if let Some(p) = r.protocol {
                    let number = if p == Proto::Icmp && fam == Fam::V6 { Proto::Icmpv6.number() } else { p.number() };
                    e.extend(expr::match_l4proto(number));
                    if let (Some((lo, hi)), Proto::Tcp | Proto::Udp) = (r.ports, p) {
                        e.extend(expr::dport_range(lo, hi));
                    }
                }
                e.push(Expr::Counter);
                e.push(Expr::Verdict(match r.action {
                    PolicyAction::Allow => Verdict::Accept,
                    PolicyAction::Deny => Verdict::Drop,
                }));
                let what = format!("{} -> {} {:?}", r.source_group, r.destination_group, r.action);
                ruleset::add_rule(&mut b, ruleset::CHAIN_GROUPS, &e, &what);
            }
        }
        self.commit(&b)?;
        Ok(())
    }

    /// Whether this blocker installed the table (the router's enforcement
    /// thread): only it turns lookups off, so what it last wrote or read of
    /// them is never more than what is installed.
    fn owns_rules(&self) -> bool {
        self.fail_closed.is_some()
    }

    /// Makes the installed rules look up what `need` names before an
    /// element goes into one of its sets: its own transaction, committed
    /// first. The owner of the table pays for this only when a set gets its
    /// first element; another blocker (the admin CLI) reads the installed
    /// rules every time and adds to them.
    fn turn_on(&mut self, need: ruleset::Lookups) -> Result<()> {
        if self.owns_rules() && self.lookups.covers(need) {
            return Ok(());
        }
        self.rewrite_lookups(|installed| installed.union(need))
    }

    /// After a blocker that does not own the table has written elements for
    /// `need`: makes sure their lookups are still on. The owner may have
    /// read the set as empty and turned its lookup off between this
    /// blocker's [`Blocker::turn_on`] and its write; its turn-off is bound to
    /// the generation it read the sets at, so once the write is in it can
    /// no longer happen, and one that already did is seen and undone here.
    fn keep_on(&mut self, need: ruleset::Lookups) -> Result<()> {
        if self.owns_rules() {
            return Ok(());
        }
        self.rewrite_lookups(|installed| installed.union(need))
    }

    /// Rewrites the rules to look up `want(installed)`, bound to the ruleset
    /// generation the installed rules were read at, and retried when
    /// another process changed the ruleset in between.
    fn rewrite_lookups(&mut self, want: impl Fn(ruleset::Lookups) -> ruleset::Lookups) -> Result<()> {
        for _ in 0..REWRITE_TRIES {
            let generation = self.nl.generation()?;
            let installed = ruleset::installed_lookups(&mut self.nl)?;
            if self.commit_lookups(generation, installed, want(installed))? {
                return Ok(());
            }
        }
        self.count_error();
        Err(NlError::Protocol(format!(
            "the nftables ruleset changed under each of {REWRITE_TRIES} tries to turn a set lookup on: \
something is rewriting it in a loop; stop it and run the command again"
        )))
    }

    /// Makes the installed rules look up `want`, computed from the sets as
    /// they were at `generation`; does nothing when the ruleset has moved on
    /// since (the caller decides again from fresh reads).
    fn settle_lookups(&mut self, generation: u32, want: ruleset::Lookups) -> Result<()> {
        let installed = ruleset::installed_lookups(&mut self.nl)?;
        if !self.commit_lookups(generation, installed, want)? {
            tracing::debug!("the ruleset changed while the sets were read; lookups are settled next refresh");
        }
        Ok(())
    }

    /// Rewrites the rules from `installed` to `want` in a transaction bound
    /// to `generation`. False when the kernel refused it because the
    /// ruleset has moved on (`ERESTART`); nothing changed then.
    fn commit_lookups(&mut self, generation: u32, installed: ruleset::Lookups, want: ruleset::Lookups) -> Result<bool> {
        self.lookups = installed;
        if want == installed {
            return Ok(true);
        }
        let mut b = Batch::new().at_generation(generation);
        ruleset::replace_rules(&mut b, &self.settings.layout, want);
        match self.nl.commit(&b) {
            Ok(()) => {
                tracing::debug!(from = ?installed, to = ?want, "set lookups follow which sets hold elements");
                self.lookups = want;
                Ok(true)
            }
            Err(e) if e.errno() == Some(ERESTART) => Ok(false),
            Err(e) => {
                self.count_error();
                Err(e)
            }
        }
    }

    /// Reads nft counters and set sizes into the metrics registry. The
    /// owner of the table also makes the rules look up exactly the sets
    /// that hold elements: lookups of sets that have emptied go (elements
    /// timed out or were lifted), a set found holding elements without its
    /// lookup (written by hand) gets it back. That rewrite is bound to the
    /// generation the sets were read at; when anything changed meanwhile it
    /// is left to the next refresh. Returns how many MACs are contained.
    pub fn refresh_sets(&mut self) -> Result<usize> {
        let generation = if self.owns_rules() { Some(self.nl.generation()?) } else { None };
        let mut sizes: BTreeMap<(Origin, Fam), usize> = BTreeMap::new();
        for origin in Origin::ALL {
            for fam in [Fam::V4, Fam::V6] {
                let els = ruleset::elements(&mut self.nl, &origin.set_name(fam))?;
                let n = if origin.interval() { intervals(fam, &els, origin).len() } else { els.len() };
                sizes.insert((origin, fam), n);
            }
        }
        let contained = self.contained()?.len();
        if let Some(generation) = generation {
            let want = ruleset::Lookups::holding(|o, fam| sizes[&(o, fam)] > 0, contained > 0);
            self.settle_lookups(generation, want)?;
        }
        let Some(m) = self.metrics.clone() else { return Ok(contained) };
        for (name, (packets, bytes)) in self.counters()? {
            let (p, b) = m.dropped(&name);
            p.set_total(packets);
            b.set_total(bytes);
        }
        for origin in Origin::ALL {
            m.set_elements(origin).set((sizes[&(origin, Fam::V4)] + sizes[&(origin, Fam::V6)]) as f64);
        }
        Ok(contained)
    }
}

/// `want` cut to what the binding sets hold (per family for addresses), and how many pairs were left out.
fn capped(want: &super::spoof::BoundSources) -> (super::spoof::BoundSources, usize) {
    let mut per_fam = [0usize; 2];
    let addrs: Vec<_> = want
        .addrs
        .iter()
        .filter(|(_, ip)| {
            let n = &mut per_fam[usize::from(ip.is_ipv6())];
            *n += 1;
            *n <= ruleset::MAX_BOUND_ELEMENTS as usize
        })
        .copied()
        .collect();
    let routed: Vec<_> = want.routed.iter().take(ruleset::MAX_ROUTED_ELEMENTS as usize).copied().collect();
    let cut = want.addrs.len() - addrs.len() + want.routed.len() - routed.len();
    (super::spoof::BoundSources { addrs, routed }, cut)
}

/// Of the items `keep` selects: those in `old` and not in `new` (to delete), and those in `new` and not in `old` (to add).
fn changes<'a, T: Ord>(old: &'a [T], new: &'a [T], keep: impl Fn(&T) -> bool) -> (Vec<&'a T>, Vec<&'a T>) {
    let old: std::collections::BTreeSet<&T> = old.iter().filter(|t| keep(t)).collect();
    let new: std::collections::BTreeSet<&T> = new.iter().filter(|t| keep(t)).collect();
    (old.difference(&new).copied().collect(), new.difference(&old).copied().collect())
}

fn key_addr(fam: Fam, key: &[u8]) -> Option<IpAddr> {
    match fam {
        Fam::V4 => <[u8; 4]>::try_from(key).ok().map(IpAddr::from),
        Fam::V6 => <[u8; 16]>::try_from(key).ok().map(IpAddr::from),
    }
}

fn key_u128(key: &[u8]) -> u128 {
    key.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128)
}

/// An interval set's ranges (first, last, the start element): the kernel
/// lists starts and ends as separate elements, in any order.
fn interval_ranges(fam: Fam, els: &[ruleset::KernelElement]) -> Vec<(u128, u128, &ruleset::KernelElement)> {
    let mut points: Vec<(u128, bool, &ruleset::KernelElement)> =
        els.iter().map(|e| (key_u128(&e.key), e.flags & ruleset::ELEM_INTERVAL_END != 0, e)).collect();
    points.sort_by_key(|p| (p.0, !p.1));
    let max = if fam == Fam::V4 { u32::MAX as u128 } else { u128::MAX };
    let mut out = Vec::new();
    for (i, (start, is_end, e)) in points.iter().enumerate() {
        if *is_end {
            continue;
        }
        let end = points[i + 1..].iter().find(|p| p.1).map(|p| p.0 - 1).unwrap_or(max);
        out.push((*start, end, *e));
    }
    out
}

/// An interval block set's entries.
fn intervals(fam: Fam, els: &[ruleset::KernelElement], origin: Origin) -> Vec<KernelBlock> {
    interval_ranges(fam, els)
        .into_iter()
        .map(|(lo, hi, e)| KernelBlock::from_element(feeds::range_text(fam, lo, hi), origin, e))
        .collect()
}

/// The configured allowlist plus the gateway's own addresses not already covered.
fn allowlist_with(configured: &[Cidr], own: &[IpAddr]) -> Vec<Cidr> {
    let mut allow = configured.to_vec();
    for a in own {
        if !allow.iter().any(|c| c.contains(a)) {
            allow.push(Cidr::host(*a));
        }
    }
    allow
}

/// What [`Blocker::ensure_restoring`] put back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Entries written back (addresses and feed ranges).
    pub restored: usize,
    /// Left out: addresses protected now (allowlist, bogon, own address).
    pub protected: usize,
    /// Left out: saved feed ranges, or pieces of them, an import would
    /// refuse now (the LAN, the allowlist, the gateway, infrastructure,
    /// bogons, or more than a feed may cover without `--allow-wide`).
    pub feed_refused: usize,
    /// Left out: ran out while the router was down.
    pub expired: usize,
    /// Left out: more than a set holds (the ones with the least time left).
    pub over_capacity: usize,
    /// Left out: a target that is not an address or range.
    pub unreadable: usize,
}

/// `a.b.c.d/n`, `a-b` or a bare address as (family, first, last).
fn parse_range(target: &str) -> Option<(Fam, u128, u128)> {
    if let Some((a, b)) = target.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.parse().ok()?, b.parse().ok()?);
        let (fa, fb) = (fam_of(&a), fam_of(&b));
        let (lo, hi) = (feeds::addr_u128(&a), feeds::addr_u128(&b));
        return (fa == fb && lo <= hi).then_some((fa, lo, hi));
    }
    let c: Cidr = target.parse().ok()?;
    let (lo, hi) = c.range();
    Some((c.fam(), lo, hi))
}

/// Most saved feed ranges a restore names in a warning each; the rest are counted in one.
const MAX_RESTORE_REFUSALS_LOGGED: usize = 32;

/// Warns of the saved feed ranges a restore left out: each (the first
/// [`MAX_RESTORE_REFUSALS_LOGGED`]) with why and what to do, and each family
/// left out whole for its coverage.
fn tell_feed_refusals(refused: &[(String, FeedRefusal)], too_much: &[(Fam, u128, usize)]) {
    for (range, why) in refused.iter().take(MAX_RESTORE_REFUSALS_LOGGED) {
        tracing::warn!("a saved feed range is not restored: {range} {}; {}", why.describe(), why.restore_advice());
    }
    if refused.len() > MAX_RESTORE_REFUSALS_LOGGED {
        tracing::warn!(
            "{} more saved feed ranges are not restored, for the reasons above \
             (gatewarden_enforce_feed_restore_refused_total counts them all)",
            refused.len() - MAX_RESTORE_REFUSALS_LOGGED
        );
    }
    for &(fam, covered, n) in too_much {
        let fam_name = if fam == Fam::V4 { "IPv4" } else { "IPv6" };
        tracing::warn!(
            "the saved {fam_name} feed covers {}, more than a feed may without --allow-wide ({}): its {n} ranges \
             are not restored, as an import of it would be refused whole (the state file was edited or damaged). \
             If the feed is meant to be that wide (a country list) and its source is trusted, import it again \
             with --allow-wide",
            feeds::coverage_text(fam, covered),
            feeds::coverage_text(fam, feeds::coverage_limit(fam))
        );
    }
}

/// What [`screen_saved_feed`] kept and left out of one family's saved feed.
#[derive(Debug, Default, PartialEq, Eq)]
struct SavedFeedScreen {
    /// The ranges to restore (what is left of a range a piece of which was refused, merged back).
    keep: Vec<ruleset::RestoredRange>,
    /// Ranges, or pieces of them, left out: as written (`range_text`), with why.
    refused: Vec<(String, FeedRefusal)>,
    /// Left out because the ranges not imported with `--allow-wide`
    /// together cover more than a feed may: the addresses they covered and how many they were.
    too_much: Option<(u128, usize)>,
}

/// The saved feed ranges of `fam` (sorted, disjoint) an import would write
/// now. `refusal` is the import's check of a range against the site and
/// the protections ([`Blocker::feed_range_refusal`]). A refused range is
/// checked again in the pieces of [`feeds::range_cidrs`] (the import
/// merged adjacent entries into it): the refused pieces are left out, the
/// rest kept. The width limit cannot be told from a merged range (two /8s
/// are saved as one /7), so a range not imported with `--allow-wide` is
/// held to the coverage limit instead: one covering more than a whole feed
/// may is left out, and when they together cover more, all of them are,
/// as an import is refused whole for it.
fn screen_saved_feed(
    fam: Fam,
    ranges: Vec<ruleset::RestoredRange>,
    refusal: impl Fn(u128, u128) -> Option<FeedRefusal>,
) -> SavedFeedScreen {
    let size = |lo: u128, hi: u128| (hi - lo).saturating_add(1);
    let mut out = SavedFeedScreen::default();
    for r in ranges {
        if !r.wide && feeds::over_coverage(fam, size(r.lo, r.hi)) {
            out.refused.push((feeds::range_text(fam, r.lo, r.hi), FeedRefusal::TooMuch(fam, size(r.lo, r.hi))));
            continue;
        }
        split_refused(fam, r, &refusal, &mut out.keep, &mut out.refused);
    }
    let narrow = out.keep.iter().filter(|r| !r.wide).fold(0u128, |n, r| n.saturating_add(size(r.lo, r.hi)));
    if feeds::over_coverage(fam, narrow) {
        let n = out.keep.iter().filter(|r| !r.wide).count();
        out.keep.retain(|r| r.wide);
        out.too_much = Some((narrow, n));
    }
    out
}

/// Splits feed range `r` of `fam` by `refusal`: the whole range to `keep`
/// when it passes; otherwise it is checked again in the pieces of
/// [`feeds::range_cidrs`] (an import merged adjacent entries into it), the
/// refused pieces go to `refused` (as written, with why) and the runs of
/// the others back to `keep` with `r`'s times, comment and mark.
fn split_refused(
    fam: Fam,
    r: ruleset::RestoredRange,
    refusal: impl Fn(u128, u128) -> Option<FeedRefusal>,
    keep: &mut Vec<ruleset::RestoredRange>,
    refused: &mut Vec<(String, FeedRefusal)>,
) {
    if refusal(r.lo, r.hi).is_none() {
        keep.push(r);
        return;
    }
    let mut run: Option<(u128, u128)> = None;
    for piece in feeds::range_cidrs(fam, r.lo, r.hi) {
        let (lo, hi) = piece.range();
        match refusal(lo, hi) {
            Some(why) => {
                refused.push((piece.to_string(), why));
                if let Some((lo, hi)) = run.take() {
                    keep.push(ruleset::RestoredRange { lo, hi, ..r.clone() });
                }
            }
            None => run = Some((run.map_or(lo, |(first, _)| first), hi)),
        }
    }
    if let Some((lo, hi)) = run {
        keep.push(ruleset::RestoredRange { lo, hi, ..r });
    }
}

/// Warns of the feed ranges [`Blocker::recheck_feed`] lifted (the first
/// [`MAX_RESTORE_REFUSALS_LOGGED`] each, with why and what to do).
fn tell_feed_lifts(lifted: &[(String, FeedRefusal)]) {
    for (range, why) in lifted.iter().take(MAX_RESTORE_REFUSALS_LOGGED) {
        tracing::warn!(
            "a feed range is lifted now that the LAN's networks or the gateway's addresses changed: {range} {}; {}",
            why.describe(),
            why.lift_advice()
        );
    }
    if lifted.len() > MAX_RESTORE_REFUSALS_LOGGED {
        tracing::warn!(
            "{} more feed ranges are lifted, for the reasons above \
             (gatewarden_enforce_feed_restore_refused_total counts them all)",
            lifted.len() - MAX_RESTORE_REFUSALS_LOGGED
        );
    }
}

/// `site` sorted and without repeats: what a feed check's site is compared by.
fn sorted_site(site: &[Cidr]) -> Vec<Cidr> {
    let mut v = site.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Next hops of this namespace's routes (rtnetlink `RTM_GETROUTE`, any
/// table) and the resolvers in /etc/resolv.conf. Blocking either would cut
/// the site off, and a forged source can name them as easily as any other.
/// Errors leave the list empty (logged): the bogon list still applies.
pub fn infrastructure_addresses() -> Vec<IpAddr> {
    let mut out = gatewarden_netlink::route::route_gateways().unwrap_or_else(|e| {
        tracing::warn!("cannot read the routing table for next hops: {e}");
        Vec::new()
    });
    if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
        out.extend(resolvers(&text));
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `c` shares an address with the range `lo..=hi` of family `fam`.
fn cidr_overlaps(c: &Cidr, fam: Fam, lo: u128, hi: u128) -> bool {
    let (a, b) = c.range();
    c.fam() == fam && a <= hi && lo <= b
}

/// [`infrastructure_addresses`] and the fleet's endpoints as last resolved, sorted.
fn infrastructure_with(endpoints: &Endpoints) -> Vec<IpAddr> {
    let mut out = infrastructure_addresses();
    out.extend(endpoints.addresses());
    out.sort();
    out.dedup();
    out
}

/// The site's own networks as the LAN interface shows them: its networks
/// and the networks the kernel routes out of it (a downstream router's
/// subnets). No feed may cover them: a feed names outside threats, and a
/// feed entry drops traffic both from and to its addresses. Left out: routes
/// wider than a feed entry may be without `--allow-wide` (a default route
/// out of the LAN, in a one-armed setup, is no LAN) and link-local networks
/// (bogons, refused anyway). An empty name, or an interface this namespace
/// does not have, gives none.
pub fn lan_networks(lan_interface: &str) -> Result<Vec<Cidr>> {
    if lan_interface.is_empty() {
        return Ok(Vec::new());
    }
    Ok(lan_networks_in(&super::spoof::lan_view(lan_interface)?))
}

/// [`lan_networks`] out of a view of the LAN interface already read (the
/// enforcement thread reads one every second for the spoof check).
pub fn lan_networks_in(view: &super::spoof::LanView) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = view
        .prefixes
        .iter()
        .chain(&view.routed)
        .filter(|c| !feeds::too_wide(c) && !is_link_local(c))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `c` lies in 169.254.0.0/16 or fe80::/10.
fn is_link_local(c: &Cidr) -> bool {
    let ll: [Cidr; 2] = [
        Cidr { addr: IpAddr::from([169, 254, 0, 0]), prefix: 16 },
        Cidr { addr: IpAddr::from([0xfe80u16, 0, 0, 0, 0, 0, 0, 0]), prefix: 10 },
    ];
    ll.iter().any(|l| l.prefix <= c.prefix && l.contains(&c.addr))
}

/// How often the fleet endpoints' host names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// The fleet's endpoints ([`Settings::fleet_endpoints`]) as addresses.
/// Literal addresses are known at once; host names are resolved on a
/// thread of their own, at start and every [`RESOLVE_EVERY`], so a DNS
/// server that does not answer holds up neither the table's installation
/// nor a verdict. A name that stops resolving keeps its last addresses
/// (the MQTT client may still be connected to one). The thread ends after
/// the blocker is dropped.
#[derive(Debug, Default)]
struct Endpoints {
    literal: Vec<IpAddr>,
    names: Vec<String>,
    resolved: Arc<(Mutex<Resolved>, Condvar)>,
}

/// What the resolver thread found.
#[derive(Debug, Default)]
struct Resolved {
    /// Addresses per host name, from its last successful lookup.
    by_name: BTreeMap<String, Vec<IpAddr>>,
    /// Rounds of lookups done.
    rounds: u64,
}

/// An endpoint as written: an address (bare, `addr:port`, `[v6]:port`) or a `host:port` to look up.
fn parse_endpoint(s: &str) -> Option<std::result::Result<IpAddr, (String, u16)>> {
    let s = s.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(Ok(a));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(Ok(sa.ip()));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    (!host.is_empty()).then(|| Err((host.to_string(), port)))
}

impl Endpoints {
    /// Parses `list`; starts the resolver thread when it names hosts.
    fn start(list: &[String]) -> Endpoints {
        let mut e = Endpoints::default();
        let mut lookups = Vec::new();
        for s in list {
            match parse_endpoint(s) {
                Some(Ok(a)) => e.literal.push(a),
                Some(Err((host, port))) => {
                    e.names.push(host.clone());
                    lookups.push((host, port));
                }
                None => tracing::warn!(endpoint = %s, "not an address or host:port; not protected as a fleet endpoint"),
            }
        }
        if lookups.is_empty() {
            return e;
        }
        let shared = std::sync::Arc::downgrade(&e.resolved);
        let spawned = std::thread::Builder::new().name("resolve-fleet".into()).spawn(move || {
            let mut failing: BTreeSet<String> = BTreeSet::new();
            loop {
                let mut found = Vec::new();
                for (host, port) in &lookups {
                    use std::net::ToSocketAddrs;
                    match (host.as_str(), *port).to_socket_addrs() {
                        Ok(addrs) => {
                            let mut v: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                            v.sort();
                            v.dedup();
                            if failing.remove(host) {
                                tracing::info!(%host, "fleet endpoint resolves again");
                            }
                            found.push((host.clone(), v));
                        }
                        Err(e) => {
                            if failing.insert(host.clone()) {
                                tracing::warn!(%host, "cannot resolve a fleet endpoint ({e}); its last addresses, if any, stay protected");
                            }
                        }
                    }
                }
                let Some(shared) = shared.upgrade() else { return };
                {
                    let mut r = shared.0.lock().unwrap_or_else(|p| p.into_inner());
                    for (host, v) in found.into_iter().filter(|(_, v)| !v.is_empty()) {
                        r.by_name.insert(host, v);
                    }
                    r.rounds += 1;
                }
                shared.1.notify_all();
                drop(shared);
                std::thread::sleep(RESOLVE_EVERY);
            }
        });
        if let Err(err) = spawned {
            tracing::warn!("cannot start the fleet endpoints' resolver ({err}); their host names are not protected");
        }
        e
    }

    /// Every address known now.
    fn addresses(&self) -> Vec<IpAddr> {
        let r = self.resolved.0.lock().unwrap_or_else(|p| p.into_inner());
        self.literal.iter().chain(r.by_name.values().flatten()).copied().collect()
    }

    /// Waits up to `timeout` for the first round of lookups; the names with no addresses then.
    fn wait(&self, timeout: Duration) -> Vec<String> {
        if self.names.is_empty() {
            return Vec::new();
        }
        let (lock, ready) = &*self.resolved;
        let r = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (r, _) = ready.wait_timeout_while(r, timeout, |r| r.rounds == 0).unwrap_or_else(|p| p.into_inner());
        self.names.iter().filter(|n| !r.by_name.contains_key(*n)).cloned().collect()
    }
}

/// How `block_from` learns the running element before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Asks the kernel (always, but in fault injection).
    Kernel,
    /// Takes it as absent, as a read just before another writer's add
    /// would (`Blocker::block_verdict_after_a_stale_read`).
    AssumeAbsent,
}

/// The share of a block whose sender is unknown: not a verdict's (an admin
/// block), or written by a version that did not keep senders. No node id
/// is empty, so it is no detector's share.
const UNKNOWN_SENDER: &str = "";

/// A saved block as a full set sees it: time left and senders (those the
/// kernel would keep: node ids, at most [`ruleset::MAX_SENDERS`]).
fn saved_view(remaining_ms: u64, blk: &persist::SavedBlock) -> ruleset::KernelElement {
    ruleset::KernelElement {
        key: Vec::new(),
        flags: 0,
        timeout_ms: blk.timeout_ms,
        expires_ms: remaining_ms,
        comment: String::new(),
        counter: None,
        counted_since_s: None,
        wide: false,
        senders: blk
            .senders
            .iter()
            .filter(|s| gatewarden_core::identity::valid_node_id(s))
            .take(ruleset::MAX_SENDERS)
            .cloned()
            .collect(),
    }
}

/// What a full set gives up, by [`fair_victims`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fair {
    /// Indices into the elements, in the order taken.
    victims: Vec<usize>,
    /// The sender whose share was the largest.
    largest: Option<String>,
    /// Its share, in half blocks ([`SHARE_ALONE`] per block of its own).
    largest_share: u64,
}

/// A block's weight in the share of each of its `k` senders, in half
/// blocks: a block of one sender's counts 2, one two detectors asked for
/// counts 1 in each of theirs (a block in all counts once, split evenly).
const SHARE_ALONE: u64 = 2;
const _: () = assert!(ruleset::MAX_SENDERS == 2, "a share is counted in halves: one block, at most two senders");

/// A share in blocks, for the log: "29.5".
fn share_text(halves: u64) -> String {
    format!("{}{}", halves / 2, if halves % 2 == 1 { ".5" } else { "" })
}

/// Picks `n` blocks to evict from a full set for a new block of
/// `requester`'s.
///
/// Shares: each sender's share is the blocks naming it, a block two
/// detectors asked for counting half in each (so a set's shares add up to
/// its size, and k stolen certificates hold k shares, never more); the new
/// block counts in full in the requester's. Blocks with no known sender
/// are one share of their own ([`UNKNOWN_SENDER`]).
///
/// Rule: a block is protected by the smallest share among its senders.
/// Each time, the block taken is the one whose smallest sender share is the
/// largest; on a tie a block naming the requester first, then the
/// soonest-expiring. Shares are counted again after each block taken.
/// So a sender's block of its own goes when that sender holds the most; a
/// block two flooders share goes when both hold the most (their flood
/// co-signed by each other is still theirs); a block an honest detector
/// holds together with a flooder (the flooder co-signed it, or blocked it
/// first) goes only when the honest detector's share is the largest left.
/// Memory: one entry per sender and per pair of senders present in the
/// set, for the length of the call.
fn fair_victims(els: &[ruleset::KernelElement], requester: Option<&str>, n: usize) -> Fair {
    fair_pick(els, requester, true, n)
}

/// [`fair_victims`]; `adds`: whether a new block of `requester`'s is
/// counted in its share (not when a restore over capacity trims what it has).
fn fair_pick(els: &[ruleset::KernelElement], requester: Option<&str>, adds: bool, n: usize) -> Fair {
    use std::cmp::Reverse;
    let requester = requester.unwrap_or(UNKNOWN_SENDER);
    let mut names: Vec<&str> = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut intern = |s| {
        *ids.entry(s).or_insert_with(|| {
            names.push(s);
            names.len() - 1
        })
    };
    // Groups of blocks with the same senders: (first, second or usize::MAX).
    let mut group_of: HashMap<(usize, usize), usize> = HashMap::new();
    let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
    let me = intern(requester);
    for (i, e) in els.iter().enumerate() {
        let mut who: Vec<usize> = e.senders.iter().take(ruleset::MAX_SENDERS).map(|s| intern(s.as_str())).collect();
        if who.is_empty() {
            who.push(intern(UNKNOWN_SENDER));
        }
        who.sort_unstable();
        who.dedup();
        let key = (who[0], who.get(1).copied().unwrap_or(usize::MAX));
        let g = *group_of.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let mut share = vec![0u64; names.len()];
    let senders = |key: (usize, usize)| [Some(key.0), (key.1 != usize::MAX).then_some(key.1)].into_iter().flatten();
    let weight = |key: (usize, usize)| if key.1 == usize::MAX { SHARE_ALONE } else { SHARE_ALONE / 2 };
    for (key, list) in &groups {
        for s in senders(*key) {
            share[s] += weight(*key) * list.len() as u64;
        }
    }
    if adds {
        share[me] += SHARE_ALONE;
    }
    let mut fair = Fair { victims: Vec::with_capacity(n), largest: None, largest_share: 0 };
    // The largest share: on a tie the requester's, then by name.
    if let Some(s) =
        (0..names.len()).filter(|s| share[*s] > 0).max_by_key(|s| (share[*s], *s == me, Reverse(names[*s])))
    {
        fair.largest = Some(names[s].to_string());
        fair.largest_share = share[s];
    }
    // Soonest-expiring last, to be popped first.
    for (_, list) in groups.iter_mut() {
        list.sort_by_key(|i| Reverse(els[*i].expires_ms));
    }
    let rank = |key: (usize, usize), share: &[u64]| senders(key).map(|s| share[s]).min().unwrap_or(0);
    // On a tie: the requester's own blocks first, then blocks it shares, then
    // the others' (a flooder's verdict must not take a block it co-signed with
    // an honest detector before one of its own).
    let mine = |key: (usize, usize)| match (key.0 == me && key.1 == usize::MAX, senders(key).any(|s| s == me)) {
        (true, _) => 2u8,
        (false, true) => 1,
        (false, false) => 0,
    };
    // Max-heap of (rank, names the requester, soonest expiry, group). A
    // rank only falls as blocks go, so an entry whose rank is stale is
    // pushed again with its rank now, and the top entry with a current
    // rank is the largest.
    let mut heap: std::collections::BinaryHeap<(u64, u8, Reverse<u64>, Reverse<usize>)> = groups
        .iter()
        .enumerate()
        .filter_map(|(g, (key, list))| {
            let next = *list.last()?;
            Some((rank(*key, &share), mine(*key), Reverse(els[next].expires_ms), Reverse(g)))
        })
        .collect();
    while fair.victims.len() < n {
        let Some((r, m, exp, Reverse(g))) = heap.pop() else { break };
        let key = groups[g].0;
        let now = rank(key, &share);
        if now != r {
            heap.push((now, m, exp, Reverse(g)));
            continue;
        }
        let Some(i) = groups[g].1.pop() else { continue };
        fair.victims.push(i);
        for s in senders(key) {
            share[s] -= weight(key);
        }
        if let Some(next) = groups[g].1.last() {
            heap.push((rank(key, &share), m, Reverse(els[*next].expires_ms), Reverse(g)));
        }
    }
    fair
}

/// `nameserver` lines of a resolv.conf (scoped IPv6 `%eth0` suffixes dropped).
fn resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .filter(|a: &IpAddr| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn escalation_doubles_within_the_window_and_caps() {
        let mut e = Escalation::new(Duration::from_secs(3600), Duration::from_secs(300), 100);
        let t0 = Instant::now();
        let base = Duration::from_secs(60);
        assert_eq!(e.next(a("192.0.2.1"), base, t0), (base, 0));
        // Still blocked: refresh at the same level.
        assert_eq!(e.next(a("192.0.2.1"), base, t0 + Duration::from_secs(30)), (base, 0));
        // Expired, within the window: double.
        assert_eq!(e.next(a("192.0.2.1"), base, t0 + Duration::from_secs(100)).0, Duration::from_secs(120));
        assert_eq!(e.next(a("192.0.2.1"), base, t0 + Duration::from_secs(300)).0, Duration::from_secs(240));
        // Capped at max_ttl.
        assert_eq!(e.next(a("192.0.2.1"), base, t0 + Duration::from_secs(600)), (Duration::from_secs(300), 3));
        // Outside the window: back to the base.
        assert_eq!(e.next(a("192.0.2.1"), base, t0 + Duration::from_secs(600 + 3601)), (base, 0));
        // Other addresses are independent.
        assert_eq!(e.next(a("2001:db8::1"), base, t0 + Duration::from_secs(700)), (base, 0));
    }

    #[test]
    fn escalation_history_is_bounded() {
        let mut e = Escalation::new(Duration::from_secs(3600), Duration::from_secs(3600), 16);
        let t0 = Instant::now();
        for i in 0..100u32 {
            e.next(
                IpAddr::from(0xc000_0200u32.wrapping_add(i).to_be_bytes()),
                Duration::from_secs(1),
                t0 + Duration::from_millis(i as u64),
            );
            assert!(e.len() <= 16);
        }
        e.forget(&IpAddr::from(0xc000_0200u32.wrapping_add(99).to_be_bytes()));
        assert!(e.len() < 16);
    }

    #[test]
    fn escalation_never_overflows() {
        let mut e = Escalation::new(Duration::from_secs(u32::MAX as u64), Duration::from_secs(86_400 * 30), 4);
        let t0 = Instant::now();
        let mut last = (Duration::ZERO, 0);
        for i in 0..80u64 {
            last = e.next(a("198.51.100.9"), Duration::from_secs(600), t0 + Duration::from_secs(i * 86_400 * 31));
        }
        assert_eq!(last.0, Duration::from_secs(86_400 * 30));
    }

    #[test]
    fn saved_targets_and_resolvers_parse_and_bogons_are_in_the_default() {
        assert_eq!(parse_range("192.0.2.0/24"), Some((Fam::V4, 0xc000_0200, 0xc000_02ff)));
        assert_eq!(parse_range("192.0.2.9"), Some((Fam::V4, 0xc000_0209, 0xc000_0209)));
        assert_eq!(parse_range("192.0.2.9-192.0.2.20"), Some((Fam::V4, 0xc000_0209, 0xc000_0214)));
        assert_eq!(parse_range("192.0.2.20-192.0.2.9"), None, "backwards");
        assert_eq!(parse_range("192.0.2.9-2001:db8::1"), None, "mixed families");
        assert_eq!(parse_range("gateway"), None);
        let r =
            resolvers("# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\nsearch lan\n");
        assert_eq!(r, vec!["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        let s = Settings::default();
        for bogon in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "127.0.0.1",
            "169.254.1.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
        ] {
            let a: IpAddr = bogon.parse().unwrap();
            assert!(s.never_block.iter().any(|c| c.contains(&a)), "{bogon}");
        }
        for real in ["192.0.2.1", "198.51.100.7", "203.0.113.1", "10.0.0.1", "100.64.0.1", "2001:db8::1", "fd00::1"] {
            let a: IpAddr = real.parse().unwrap();
            assert!(!s.never_block.iter().any(|c| c.contains(&a)), "{real} is a real host's address");
        }
    }

    #[test]
    fn fleet_endpoints_parse_and_host_names_resolve_off_the_callers_thread() {
        assert_eq!(parse_endpoint("192.0.2.7"), Some(Ok(a("192.0.2.7"))));
        assert_eq!(parse_endpoint("192.0.2.7:8883"), Some(Ok(a("192.0.2.7"))));
        assert_eq!(parse_endpoint("[2001:db8::7]:8883"), Some(Ok(a("2001:db8::7"))));
        assert_eq!(parse_endpoint("2001:db8::7"), Some(Ok(a("2001:db8::7"))));
        assert_eq!(parse_endpoint("monitor.lan:8883"), Some(Err(("monitor.lan".into(), 8883))));
        assert_eq!(parse_endpoint("monitor.lan"), None, "a name needs its port");
        assert_eq!(parse_endpoint(":8883"), None);

        let literal = Endpoints::start(&["192.0.2.7:8883".into(), "[2001:db8::7]:8883".into()]);
        assert_eq!(literal.addresses(), vec![a("192.0.2.7"), a("2001:db8::7")], "known at once");
        assert!(literal.wait(Duration::ZERO).is_empty(), "nothing to wait for");
        // `localhost` resolves from /etc/hosts, without a DNS server.
        let named = Endpoints::start(&["localhost:1883".into(), "192.0.2.8".into()]);
        assert!(named.wait(Duration::from_secs(10)).is_empty(), "localhost resolves");
        let addrs = named.addresses();
        assert!(addrs.contains(&a("192.0.2.8")) && addrs.iter().any(|x| x.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn link_local_networks_are_no_site_network() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(is_link_local(&c("fe80::/64")) && is_link_local(&c("169.254.0.0/16")));
        assert!(!is_link_local(&c("192.0.2.0/24")) && !is_link_local(&c("fe00::/7")));
    }

    #[test]
    fn feed_refusals_read_as_the_cli_prints_them() {
        let lan: Cidr = "192.0.2.0/24".parse().unwrap();
        assert_eq!(FeedRefusal::Site(lan).describe(), "overlaps the LAN network 192.0.2.0/24");
        assert_eq!(FeedRefusal::TooWide(8).describe(), "is wider than /8");
        assert!(FeedRefusal::Protected(Protection::OwnAddress).describe().starts_with("overlaps the allowlist"));
        assert!(FeedRefusal::Protected(Protection::Infrastructure).describe().contains("MQTT broker"));
        assert_eq!(
            FeedRefusal::TooMuch(Fam::V6, 1 << 124).describe(),
            "covers as many IPv6 addresses as one /4 (6.2500 % of IPv6), more than a feed may without \
             --allow-wide (as many IPv6 addresses as one /14 (0.0061 % of IPv6))"
        );
        assert!(FeedRefusal::TooMuch(Fam::V4, 1 << 30).restore_advice().contains("--allow-wide"));
        assert!(!FeedRefusal::Site(lan).restore_advice().contains("import it again with --allow-wide"));
        // A range lifted because the LAN moved under it says so, and that the rest stays.
        assert!(FeedRefusal::Site(lan).lift_advice().starts_with("a feed never blocks the LAN"));
        assert!(FeedRefusal::Protected(Protection::Infrastructure)
            .lift_advice()
            .contains("the rest of the feed stays"));
    }

    /// A saved feed range as the state file gives it.
    fn saved(range: &str, wide: bool) -> ruleset::RestoredRange {
        let (_, lo, hi) = parse_range(range).unwrap();
        ruleset::RestoredRange {
            lo,
            hi,
            timeout_ms: 7_200_000,
            remaining_ms: 7_000_000,
            comment: "feed f".into(),
            wide,
        }
    }

    fn texts(fam: Fam, ranges: &[ruleset::RestoredRange]) -> Vec<String> {
        ranges.iter().map(|r| feeds::range_text(fam, r.lo, r.hi)).collect()
    }

    /// The import's rules hold for a saved feed at a restore (the restore
    /// itself, against a real kernel and a router's config, is
    /// `enforce::a_restored_feed_is_checked_like_an_import_against_the_lan_it_comes_back_to`).
    #[test]
    fn a_saved_feed_is_held_to_the_imports_rules_range_by_range() {
        let lan: Vec<Cidr> = vec!["198.18.0.0/24".parse().unwrap(), "2001:db8:78::/48".parse().unwrap()];
        let refusal = |fam: Fam| {
            let lan = lan.clone();
            move |lo: u128, hi: u128| lan.iter().find(|n| cidr_overlaps(n, fam, lo, hi)).map(|n| FeedRefusal::Site(*n))
        };
        // Two /48s the import merged into one range: only the piece in the LAN goes.
        let v6 = vec![saved("2001:db8:77::-2001:db8:78:ffff:ffff:ffff:ffff:ffff", false), saved("3000::/4", false)];
        let got = screen_saved_feed(Fam::V6, v6, refusal(Fam::V6));
        assert_eq!(texts(Fam::V6, &got.keep), ["2001:db8:77::/48"]);
        let refused: Vec<String> = got.refused.iter().map(|(r, why)| format!("{r} {}", why.describe())).collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0], "2001:db8:78::/48 overlaps the LAN network 2001:db8:78::/48");
        assert!(refused[1].starts_with("3000::/4 covers as many IPv6 addresses as one /4"), "{refused:?}");
        assert_eq!(got.keep[0].comment, "feed f", "what is kept keeps its comment and times");
        assert_eq!((got.keep[0].timeout_ms, got.keep[0].remaining_ms), (7_200_000, 7_000_000));
        assert_eq!(got.too_much, None);

        // Pieces are the widest aligned networks: the one holding the LAN goes whole, as the
        // entry it may have been would (never more is blocked than an import would block).
        let merged = vec![saved("198.16.0.0-198.18.255.255", false)];
        let got = screen_saved_feed(Fam::V4, merged, refusal(Fam::V4));
        assert_eq!(texts(Fam::V4, &got.keep), ["198.16.0.0/15"]);
        assert_eq!(got.refused, [("198.18.0.0/16".to_string(), FeedRefusal::Site(lan[0]))]);
        let got = screen_saved_feed(Fam::V4, vec![saved("198.16.0.0/14", false)], refusal(Fam::V4));
        assert!(got.keep.is_empty() && got.refused[0].0 == "198.16.0.0/14", "{got:?}");
        let around = vec![saved("198.17.255.0-198.18.0.255", false)];
        let got = screen_saved_feed(Fam::V4, around, refusal(Fam::V4));
        assert_eq!(texts(Fam::V4, &got.keep), ["198.17.255.0/24"]);
        let middle = vec![saved("198.17.0.0-198.20.255.255", false)];
        let got = screen_saved_feed(Fam::V4, middle, refusal(Fam::V4));
        assert_eq!(texts(Fam::V4, &got.keep), ["198.17.0.0/16", "198.20.0.0/16"]);
        assert_eq!(got.refused[0].0, "198.18.0.0/15");

        // Imported with --allow-wide: as wide as it was, never the LAN.
        let wide = vec![saved("64.0.0.0/3", true), saved("198.18.0.0/24", true)];
        let got = screen_saved_feed(Fam::V4, wide, refusal(Fam::V4));
        assert_eq!(texts(Fam::V4, &got.keep), ["64.0.0.0/3"]);
        assert_eq!(got.refused.len(), 1);

        // Two /8s merged into a /7 are no wide entry; five /8s are more than a feed may cover, and go whole.
        let two = vec![saved("8.0.0.0/7", false)];
        assert_eq!(texts(Fam::V4, &screen_saved_feed(Fam::V4, two, refusal(Fam::V4)).keep), ["8.0.0.0/7"]);
        let five: Vec<_> = ["1.0.0.0/8", "3.0.0.0/8", "5.0.0.0/8", "7.0.0.0/8", "9.0.0.0/8"]
            .iter()
            .map(|r| saved(r, false))
            .chain([saved("64.0.0.0/3", true)])
            .collect();
        let got = screen_saved_feed(Fam::V4, five, refusal(Fam::V4));
        assert_eq!(got.too_much, Some((5 << 24, 5)));
        assert_eq!(
            texts(Fam::V4, &got.keep),
            ["64.0.0.0/3"],
            "the --allow-wide range is not counted against the limit"
        );
        assert!(got.refused.is_empty());

        // The whole of IPv6 from an edited file: no overflow, refused.
        let all = vec![saved("::/0", false)];
        let got = screen_saved_feed(Fam::V6, all, refusal(Fam::V6));
        assert!(got.keep.is_empty() && got.refused.len() == 1);
    }

    /// A detector block as the kernel lists it: `secs` left, from `senders`.
    fn held(last: u8, secs: u64, senders: &[&str]) -> ruleset::KernelElement {
        ruleset::KernelElement {
            key: vec![198, 51, 100, last],
            flags: 0,
            timeout_ms: 600_000,
            expires_ms: secs * 1000,
            comment: "scan".into(),
            counter: None,
            counted_since_s: None,
            wide: false,
            senders: senders.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn keys(els: &[ruleset::KernelElement], f: &Fair) -> Vec<u8> {
        f.victims.iter().map(|i| els[*i].key[3]).collect()
    }

    #[test]
    fn a_full_set_evicts_from_the_largest_share_its_soonest_expiring_first() {
        // det-1 (honest) holds two short blocks; det-2 floods with long ones.
        let mut els = vec![held(1, 60, &["det-1"]), held(2, 90, &["det-1"])];
        els.extend((10..20).map(|i| held(i, 600_000 - u64::from(i), &["det-2"])));
        let f = fair_victims(&els, Some("det-2"), 3);
        assert_eq!(keys(&els, &f), [19, 18, 17], "det-2's own, soonest-expiring first");
        assert_eq!((f.largest.as_deref(), f.largest_share), (Some("det-2"), 22));
        // det-1's next verdict also makes room at det-2's expense.
        let f = fair_victims(&els, Some("det-1"), 2);
        assert_eq!(keys(&els, &f), [19, 18]);
        // Taken down to det-1's share, the two alternate; a tie takes the requester's own.
        let f = fair_victims(&els, Some("det-1"), 10);
        assert_eq!(keys(&els, &f), [19, 18, 17, 16, 15, 14, 13, 1, 12, 2], "{f:?}");
    }

    #[test]
    fn shared_and_unknown_blocks_have_shares_of_their_own() {
        // Both detectors asked for 1 and 2; 3 and 4 come from an older state file.
        let els = vec![
            held(1, 10, &["det-1", "det-2"]),
            held(2, 20, &["det-2", "det-1"]),
            held(3, 30, &[]),
            held(4, 40, &[]),
            held(5, 500, &["det-2"]),
            held(6, 600, &["det-2"]),
        ];
        // Shares in half blocks: det-2 6 (two shared, half each) and its
        // new one 2, det-1 2, unknown 4. det-2's own go, the shared ones stay.
        let f = fair_victims(&els, Some("det-2"), 2);
        assert_eq!(keys(&els, &f), [5, 6]);
        // A block without a known sender is in the unknown share (6 with
        // the new one, as det-2's): a tie takes the requester's share first.
        let f = fair_victims(&els, None, 3);
        assert_eq!(keys(&els, &f), [3, 5, 4], "{f:?}");
        assert_eq!(f.largest.as_deref(), Some(UNKNOWN_SENDER));
        // For det-1 (4 with its new one): det-2's own first; the shared
        // ones when det-1 and det-2 are as large as the largest, on a tie
        // before the others (they name the requester).
        let f = fair_victims(&els, Some("det-1"), 6);
        assert_eq!(keys(&els, &f), [5, 1, 3, 2, 4, 6], "{f:?}");
        assert!(fair_victims(&[], Some("det-1"), 3).victims.is_empty());
    }

    /// Review finding: a block two detectors asked for was in no one's
    /// share, taken only when no single-sender block was left. Two stolen
    /// certificates co-signing each other's flood (det-4 sends a shorter
    /// verdict for each of det-2's addresses, which the kept path co-signs)
    /// made the whole flood shared, and det-1's blocks went first.
    #[test]
    fn a_flood_two_stolen_detectors_co_signed_evicts_its_own_blocks() {
        let mut els: Vec<_> = (1..=10).map(|i| held(i, 60, &["det-1"])).collect();
        els.extend((100..154).map(|i| held(i, 3600, &["det-2", "det-4"])));
        let f = fair_victims(&els, Some("det-2"), 4);
        let det1 = keys(&els, &f).into_iter().filter(|k| *k <= 10).collect::<Vec<_>>();
        assert!(det1.is_empty(), "the co-signed flood evicted det-1's {det1:?}: {f:?}");
        // The two flooders hold 27 blocks each, counted half each; det-1 holds 10.
        assert!(matches!(f.largest.as_deref(), Some("det-2" | "det-4")), "{f:?}");
    }

    /// Review finding: a shared block counted in full against each of its
    /// senders, so two honest detectors blocking the same attackers looked
    /// larger than a flooder, and the flooder's verdicts evicted theirs.
    #[test]
    fn two_honest_detectors_sharing_blocks_are_not_taken_for_the_flooder() {
        let mut els: Vec<_> = (1..=30).map(|i| held(i, 60, &["det-1", "det-3"])).collect();
        els.extend((31..=33).map(|i| held(i, 60, &["det-1"])));
        els.extend((34..=36).map(|i| held(i, 60, &["det-3"])));
        els.extend((100..129).map(|i| held(i, 3600 + u64::from(i), &["det-2"])));
        let f = fair_victims(&els, Some("det-2"), 4);
        assert_eq!(keys(&els, &f), [100, 101, 102, 103], "{f:?}");
        assert_eq!(f.largest.as_deref(), Some("det-2"), "{f:?}");
        // No flooder: the two honest detectors (18 blocks each, counted
        // half for the shared) give up their own blocks in turn, the
        // shared ones (here the longer) last.
        let mut els: Vec<_> = (1..=30).map(|i| held(i, 600, &["det-1", "det-3"])).collect();
        els.extend((31..=33).map(|i| held(i, 60, &["det-1"])));
        els.extend((34..=36).map(|i| held(i, 60, &["det-3"])));
        let f = fair_victims(&els, Some("det-1"), 3);
        assert_eq!(keys(&els, &f), [33, 32, 36], "{f:?}");
    }

    /// A flooder co-signing an honest detector's blocks (it sees the same
    /// flows) does not make them its own to evict: each stays protected by
    /// the honest detector's small share.
    /// At an exact tie of shares, the flooder's verdict takes one of its own
    /// blocks, not one it co-signed with the honest detector (whose sooner
    /// expiry came first before: the second review of session 27).
    #[test]
    fn at_a_tie_the_requesters_own_blocks_go_before_those_it_shares() {
        let mut els: Vec<_> = (1..=4).map(|i| held(i, 60, &["det-1"])).collect();
        els.extend((11..=14).map(|i| held(i, 60, &["det-1", "det-2"])));
        els.extend((100..=102).map(|i| held(i, 3600 + u64::from(i), &["det-2"])));
        let f = fair_victims(&els, Some("det-2"), 1);
        assert!(keys(&els, &f).iter().all(|k| *k >= 100), "{f:?}");
    }

    #[test]
    fn a_flooder_co_signing_an_honest_detectors_blocks_cannot_evict_them() {
        let mut els: Vec<_> = (1..=10).map(|i| held(i, 60, &["det-1", "det-2"])).collect();
        els.extend((11..=14).map(|i| held(i, 60, &["det-3"])));
        els.extend((100..150).map(|i| held(i, 3600 + u64::from(i), &["det-2"])));
        let f = fair_victims(&els, Some("det-2"), 50);
        assert!(keys(&els, &f).iter().all(|k| *k >= 100), "{f:?}");
    }

    #[test]
    fn intervals_pair_starts_with_ends() {
        let el = |k: u32, end: bool| ruleset::KernelElement {
            key: k.to_be_bytes().to_vec(),
            flags: if end { ruleset::ELEM_INTERVAL_END } else { 0 },
            timeout_ms: 60_000,
            expires_ms: 59_001,
            comment: "feed".into(),
            counter: None,
            counted_since_s: None,
            wide: false,
            senders: Vec::new(),
        };
        // Reverse order, as the rbtree dumps; plus the leading zero end marker.
        let els = vec![
            el(0xc633_6500 + 256, true),
            el(0xc633_6500, false),
            el(0xc000_0280, true),
            el(0xc000_0200, false),
            el(0, true),
        ];
        let got = intervals(Fam::V4, &els, Origin::Feed);
        let targets: Vec<&str> = got.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["192.0.2.0/25", "198.51.101.0/24"]);
        assert_eq!(got[0].remaining_s, 60);
    }
}
