//! The one table gatewarden owns, `inet gatewarden`, and the messages that
//! create, read and remove it.
//!
//! What `nft list table inet gatewarden` shows (v4 shown; every rule has a v6 twin):
//!
//! ```text
//! counter blocked_detector / blocked_admin / blocked_feed   drops per origin
//! counter syn_dropped_src / syn_dropped_dst                  meter drops
//! counter failclosed_dropped                                 new flows dropped while the detector is away
//! set allow4          { type ipv4_addr; flags interval; }            never blocked
//! set block4_detector { type ipv4_addr; flags timeout; size N; counter; }  one set per origin,
//! set block4_admin    { type ipv4_addr; flags timeout; size N; counter; }  a counter per element
//! set block4_feed     { type ipv4_addr; flags interval,timeout; counter; } imported lists (CIDRs)
//! set syn4_src, syn4_dst { type ipv4_addr; flags dynamic,timeout; }  SYN meters
//! chain guard {
//!     ip saddr @allow4 accept
//!     ip saddr @block4_detector counter name "blocked_detector" drop   (and daddr, each origin;
//!                                      detector sets only while they hold elements, see Lookups)
//!     tcp flags & (fin|syn|rst|ack) == syn update @syn4_src { ip saddr limit rate over P/second burst B packets } counter name "syn_dropped_src" drop
//!     … the same per destination with syn4_dst
//! }
//! chain failsafe { }   filled with `ct state new … drop` only while fail-closed and the detector is away
//! chain groups { }     group-to-group policy rules, replaced atomically
//! set contain_mac   { type ether_addr; flags timeout; size N; }    LAN MACs caught forging sources
//! set mac_bound4    { type ether_addr . ipv4_addr; size 65536; }    (MAC, address) a lease or neighbour entry binds
//! set mac_routed4   { type ether_addr . ipv4_addr; size 4096; flags interval; }  (next hop's MAC, network routed through it)
//! chain contain {
//!     meta nfproto ipv4 ether saddr . ip saddr != @mac_bound4 ether saddr . ip saddr != @mac_routed4
//!         counter name "contained_dropped" drop
//!     (the same for ip6 saddr with mac_bound6 / mac_routed6) }
//! chain forward { type filter hook forward priority -10; policy accept;
//!     ether saddr @contain_mac jump contain   (while a MAC is contained)
//!     jump guard; jump failsafe; jump groups }
//! chain input   { type filter hook input priority -10; policy accept;
//!     ether saddr @contain_mac jump contain
//!     jump guard }
//! ```
//!
//! The containment rule comes before the allowlist's accept: a contained MAC
//! forging an allowlisted address must not pass. It matches frames *from* the
//! MAC only (the link-layer header exists on ingress, also through a bridge);
//! see docs/ARCHITECTURE.md for why no rule drops traffic *to* it.
//!
//! A contained MAC's frame is dropped only when its source is not an address
//! the router binds to that MAC (a DHCP lease, the neighbour table, and the
//! networks routed through a LAN next hop with that MAC). An Ethernet source
//! is as easy to forge as an IP one: one frame with a device's MAC and a WAN
//! source contains the device's MAC, and a rule on the MAC alone cut the
//! device off for the whole containment. The binding sets are kept by the
//! enforcement thread from the spoof check's bindings
//! ([`crate::spoof::SpoofGuard::bound_sources`]); a MAC nothing binds is
//! dropped whole, as before.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::expr::{self, Dir, Expr, Fam, Verdict};
use super::feeds::Cidr;
use super::netlink::{
    be_u32, be_u64, c_str, family, msg, parse_attrs, Attrs, Batch, Netlink, NlError, NLM_F_APPEND, NLM_F_CREATE,
};
use gatewarden_core::identity::valid_node_id;

/// The table's name (family inet).
pub const TABLE: &str = "gatewarden";
/// Chain with the allowlist, block sets and meters, jumped to from both hooks.
pub const CHAIN_GUARD: &str = "guard";
/// Chain with the per-source and per-destination SYN meters, jumped to from
/// `guard` by one rule that matches bare SYNs: every other packet pays one
/// test instead of one per meter (docs/PERFORMANCE.md).
pub const CHAIN_SYN_METER: &str = "syn_meter";
/// Chain holding the fail-closed drop while the detector is unreachable.
pub const CHAIN_FAILSAFE: &str = "failsafe";
/// Chain holding group-to-group policy rules.
pub const CHAIN_GROUPS: &str = "groups";
/// Base chain on the forward hook.
pub const CHAIN_FORWARD: &str = "forward";
/// Base chain on the input hook.
pub const CHAIN_INPUT: &str = "input";
/// Hook priority: before the usual `filter` (0) tables, so blocks act first.
pub const PRIORITY: i32 = -10;

/// Counter names the metrics exporter reads.
pub const COUNTER_SYN_SRC: &str = "syn_dropped_src";
/// Drops by the per-destination SYN meter (spoofed floods).
pub const COUNTER_SYN_DST: &str = "syn_dropped_dst";
/// Drops of new flows while fail-closed.
pub const COUNTER_FAILCLOSED: &str = "failclosed_dropped";
/// Drops of frames from contained (spoofing) MACs.
pub const COUNTER_CONTAINED: &str = "contained_dropped";
/// The set of contained LAN MACs (`ether_addr`, per-element timeout).
pub const SET_CONTAIN: &str = "contain_mac";
/// `TYPE_ETHERADDR` in nft's datatype numbering.
const KEY_TYPE_ETHER: u32 = 9;
/// Regular chain the containment rules jump to: it drops the contained
/// MAC's frame unless its source is bound to the MAC. Written once with the
/// table (its rules never change; only the jumps to it come and go).
pub const CHAIN_CONTAIN: &str = "contain";
/// Most elements of each `mac_bound` set. The spoof check keeps at most
/// `enforce.max_bindings` bindings (16 384 by default), plus one DHCP entry
/// per MAC; a longer list is cut to this (the kernel would refuse it whole).
pub const MAX_BOUND_ELEMENTS: u32 = 65_536;
/// Most elements of each `mac_routed` set (next hops × routed networks).
pub const MAX_ROUTED_ELEMENTS: u32 = 4_096;
/// `NFT_REG32_02`: where a concatenation's second field goes when the first
/// is a MAC (6 bytes, padded to 8, in `NFT_REG32_00` and `_01`), as nft does.
const REG32_02: u32 = 10;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// `NFT_SET_ELEM_INTERVAL_END`: the element closes an interval.
pub const ELEM_INTERVAL_END: u32 = 1;

const SET_F_INTERVAL: u32 = 0x4;
const SET_F_TIMEOUT: u32 = 0x10;
const SET_F_EVAL: u32 = 0x20;
/// `NFT_SET_CONCAT`: an interval set whose key is a concatenation (nft sets it with `flags interval`).
const SET_F_CONCAT: u32 = 0x80;
/// `NFTA_SET_ELEM_KEY_END`: the last key of a concatenated range.
const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// `NFTA_LOOKUP_FLAGS` and `NFT_LOOKUP_F_INV`: the lookup matches when the key is *not* in the set.
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFT_LOOKUP_F_INV: u32 = 1;

/// Who asked for a block; each origin has its own sets and drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A verdict from the detector.
    Detector,
    /// An operator, with `gatewarden block`.
    Admin,
    /// An imported blocklist (`gatewarden blocklist import`).
    Feed,
}

impl Origin {
    /// Every origin.
    pub const ALL: [Origin; 3] = [Origin::Detector, Origin::Admin, Origin::Feed];

    /// Lower-case name used in set, counter and metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Detector => "detector",
            Origin::Admin => "admin",
            Origin::Feed => "feed",
        }
    }

    /// `block4_detector`, `block6_feed`, …
    pub fn set_name(self, fam: Fam) -> String {
        format!("block{}_{}", fam.digit(), self.as_str())
    }

    /// `blocked_detector`, …
    pub fn counter_name(self) -> String {
        format!("blocked_{}", self.as_str())
    }

    /// Feed sets hold CIDR intervals; the others single addresses.
    pub fn interval(self) -> bool {
        self == Origin::Feed
    }
}

/// Which family an address belongs to.
pub fn fam_of(addr: &IpAddr) -> Fam {
    match addr {
        IpAddr::V4(_) => Fam::V4,
        IpAddr::V6(_) => Fam::V6,
    }
}

/// Address bytes in network order (the set key).
pub fn addr_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The tunables of the layout, from `[enforce]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Kernel size limit of each detector/admin block set.
    pub max_block_elements: u32,
    /// Per-source SYN rate above which SYNs are dropped.
    pub syn_meter_pps: u32,
    /// Burst allowed above that rate.
    pub syn_meter_burst: u32,
    /// Per-destination SYN rate (spoofed floods from many sources).
    pub syn_meter_dst_pps: u32,
    /// Most sources (and destinations) tracked by each meter.
    pub meter_size: u32,
    /// Kernel size limit of the `contain_mac` set.
    pub max_contained: u32,
    /// The LAN interface (`capture.interface`) the containment rule is
    /// limited to; empty: every interface. MACs are contained for what they
    /// forged on the LAN, and a MAC forged there (the upstream modem's, say)
    /// must not drop that device's genuine frames on the WAN side, where no
    /// binding vouches for them: the whole Internet would be cut off.
    pub contain_interface: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            max_block_elements: 65_536,
            syn_meter_pps: 200,
            syn_meter_burst: 100,
            syn_meter_dst_pps: 5_000,
            meter_size: 65_536,
            max_contained: 1024,
            contain_interface: String::new(),
        }
    }
}

fn table_attrs() -> Attrs {
    Attrs::new().str(1, TABLE)
}

fn add_set(b: &mut Batch, name: &str, fam: Fam, flags: u32, size: u32, timeout_ms: u64, id: u32) {
    let key_type = if fam == Fam::V4 { 7 } else { 8 };
    add_typed_set(b, name, (key_type, fam.addr_len()), flags, size, timeout_ms, id, false);
}

/// A block set: like [`add_set`], and every element carries its own counter
/// (`NFTA_SET_EXPR` counter, nft's `counter;` in the set), so the packets
/// dropped for each blocked address can be read back (issue #18).
fn add_block_set(b: &mut Batch, name: &str, fam: Fam, flags: u32, size: u32, id: u32) {
    let key_type = if fam == Fam::V4 { 7 } else { 8 };
    add_typed_set(b, name, (key_type, fam.addr_len()), flags, size, 0, id, true);
}

#[allow(clippy::too_many_arguments)]
fn add_typed_set(
    b: &mut Batch,
    name: &str,
    key: (u32, u32),
    flags: u32,
    size: u32,
    timeout_ms: u64,
    id: u32,
    counter: bool,
) {
    // NFTA_SET_TABLE, NAME, FLAGS, KEY_TYPE (7 ipv4_addr / 8 ipv6_addr / 9 ether_addr), KEY_LEN, DESC{SIZE}, ID, TIMEOUT.
    let mut a = Attrs::new().str(1, TABLE).str(2, name).u32(3, flags).u32(4, key.0).u32(5, key.1);
    if size > 0 {
        a = a.nested(9, Attrs::new().u32(1, size));
    }
    a = a.u32(10, id);
    if timeout_ms > 0 {
        a = a.u64(11, timeout_ms);
    }
    if counter {
        a = a.nested(expr::NFTA_SET_EXPR, expr::set_counter());
    }
    b.push(msg::NEWSET, family::INET, NLM_F_CREATE, a, format!("add set {name}"));
}

/// `mac_bound4` / `mac_bound6`: (MAC, address) pairs the router knows.
pub fn bound_set(fam: Fam) -> &'static str {
    match fam {
        Fam::V4 => "mac_bound4",
        Fam::V6 => "mac_bound6",
    }
}

/// `mac_routed4` / `mac_routed6`: (next hop's MAC, network routed through it).
pub fn routed_set(fam: Fam) -> &'static str {
    match fam {
        Fam::V4 => "mac_routed4",
        Fam::V6 => "mac_routed6",
    }
}

/// A set keyed on `ether_addr . ipv4_addr` (or `ipv6_addr`), as nft declares
/// it: the key type is the two nft types six bits apart, the key the MAC
/// padded to 8 bytes and the address. An interval set also names its
/// fields' lengths (`NFTA_SET_DESC_CONCAT`), which the kernel's
/// concatenated-range set (pipapo) needs.
fn add_binding_set(b: &mut Batch, name: &str, fam: Fam, interval: bool, size: u32, id: u32) {
    let addr_type = if fam == Fam::V4 { 7 } else { 8 };
    let mut desc = Attrs::new().u32(1, size);
    let mut flags = 0;
    if interval {
        flags = SET_F_INTERVAL | SET_F_CONCAT;
        let field = |len: u32| Attrs::new().u32(1, len);
        desc = desc.nested(2, Attrs::new().nested(1, field(6)).nested(1, field(fam.addr_len())));
    }
    let a = Attrs::new()
        .str(1, TABLE)
        .str(2, name)
        .u32(3, flags)
        .u32(4, (KEY_TYPE_ETHER << 6) | addr_type)
        .u32(5, 8 + fam.addr_len())
        .nested(9, desc)
        .u32(10, id);
    b.push(msg::NEWSET, family::INET, NLM_F_CREATE, a, format!("add set {name}"));
}

/// The key of `mac` and an address (as an integer of family `fam`) in a binding set.
fn binding_key(mac: &[u8; 6], fam: Fam, addr: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(mac);
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&key_of(fam, addr));
    k
}

/// A `mac_bound` element: `mac` may send from `addr` while contained.
pub fn bound_element(mac: &[u8; 6], addr: &IpAddr) -> Attrs {
    let key = binding_key(mac, fam_of(addr), super::feeds::addr_u128(addr));
    Attrs::new().nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, &key))
}

/// A `mac_routed` element: `mac` may send from any address of `net`
/// (its first and last key; a concatenated range has no end-marker element).
pub fn routed_element(mac: &[u8; 6], net: &Cidr) -> Attrs {
    let (lo, hi) = net.range();
    Attrs::new()
        .nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, &binding_key(mac, net.fam(), lo)))
        .nested(NFTA_SET_ELEM_KEY_END, Attrs::new().bytes(1, &binding_key(mac, net.fam(), hi)))
}

/// `ether saddr . ip saddr != @set` over the key the rule loaded in `REG_1`:
/// a `lookup` with `NFT_LOOKUP_F_INV`, which [`Expr::Lookup`] does not carry.
fn lookup_not_in(set: &str) -> Attrs {
    let data = Attrs::new().str(1, set).u32(2, expr::REG_1).u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    Attrs::new().str(1, "lookup").nested(2, data)
}

/// The `contain` chain's rules, one per family: drop the frame unless its
/// (MAC, source) is a binding or lies in a network routed through that MAC.
fn push_contain_rules(b: &mut Batch) {
    for fam in [Fam::V4, Fam::V6] {
        // `meta iiftype ether` again (the jump came after it): without it in
        // the rule, `nft list` cannot print the load as `ether saddr`.
        let mut load = expr::ether_saddr_in_set(SET_CONTAIN);
        load.truncate(2);
        load.extend(expr::match_family(fam));
        load.push(Expr::Payload { base: expr::Base::LinkLayer, offset: 6, len: 6, dreg: expr::REG_1 });
        let offset = if fam == Fam::V4 { 12 } else { 8 };
        load.push(Expr::Payload { base: expr::Base::Network, offset, len: fam.addr_len(), dreg: REG32_02 });
        let list = Expr::list(&load)
            .nested(1, lookup_not_in(bound_set(fam)))
            .nested(1, lookup_not_in(routed_set(fam)))
            .nested(1, Expr::CounterRef(COUNTER_CONTAINED.into()).element())
            .nested(1, Expr::Verdict(Verdict::Drop).element());
        add_rule_list(b, CHAIN_CONTAIN, list, &format!("contained MACs' IPv{} sources not bound to them", fam.digit()));
    }
}

fn add_counter(b: &mut Batch, name: &str) {
    // NFTA_OBJ_TABLE, NAME, TYPE = NFT_OBJECT_COUNTER, DATA {BYTES, PACKETS}.
    let a = Attrs::new().str(1, TABLE).str(2, name).u32(3, 1).nested(4, Attrs::new().u64(1, 0).u64(2, 0));
    b.push(msg::NEWOBJ, family::INET, NLM_F_CREATE, a, format!("add counter {name}"));
}

fn add_chain(b: &mut Batch, name: &str, hook: Option<u32>) {
    let mut a = Attrs::new().str(1, TABLE).str(3, name);
    if let Some(hooknum) = hook {
        a = a
            .nested(4, Attrs::new().u32(1, hooknum).u32(2, PRIORITY as u32))
            .u32(5, 1) // policy accept
            .str(7, "filter");
    }
    b.push(msg::NEWCHAIN, family::INET, NLM_F_CREATE, a, format!("add chain {name}"));
}

/// Appends a rule to `chain`.
pub fn add_rule(b: &mut Batch, chain: &str, exprs: &[Expr], what: &str) {
    add_rule_list(b, chain, Expr::list(exprs), what);
}

/// Appends a rule whose expression list (`NFTA_RULE_EXPRESSIONS`) is built already.
fn add_rule_list(b: &mut Batch, chain: &str, list: Attrs, what: &str) {
    let a = Attrs::new().str(1, TABLE).str(2, chain).nested(4, list);
    b.push(msg::NEWRULE, family::INET, NLM_F_CREATE | NLM_F_APPEND, a, format!("add rule to {chain}: {what}"));
}

/// Deletes every rule of `chain` (a `DELRULE` naming only the chain).
pub fn flush_chain(b: &mut Batch, chain: &str) {
    let a = Attrs::new().str(1, TABLE).str(2, chain);
    b.push(msg::DELRULE, family::INET, 0, a, format!("flush chain {chain}"));
}

/// Whether `inet gatewarden` exists (e.g. left by a previous run).
pub fn table_exists(nl: &mut Netlink) -> Result<bool, NlError> {
    let tables = nl.dump(msg::GETTABLE, family::INET, &Attrs::new())?;
    Ok(tables.iter().any(|t| parse_attrs(t).any(|(ty, v)| ty == 1 && c_str(v) == TABLE)))
}

/// The transaction that (re)creates the whole table: if a stale one exists
/// it is deleted first in the same transaction, so there is no moment
/// without a ruleset and never duplicate rules. Only the sets `lookups`
/// names are looked up (those the transaction also fills).
pub fn ensure_batch(layout: &Layout, allow: &[Cidr], stale_exists: bool, lookups: Lookups) -> Batch {
    let mut b = Batch::new();
    if stale_exists {
        b.push(msg::DELTABLE, family::INET, 0, table_attrs(), "delete stale table inet gatewarden");
    }
    b.push(msg::NEWTABLE, family::INET, NLM_F_CREATE, table_attrs(), "add table inet gatewarden");
    for o in Origin::ALL {
        add_counter(&mut b, &o.counter_name());
    }
    for c in [COUNTER_SYN_SRC, COUNTER_SYN_DST, COUNTER_FAILCLOSED, COUNTER_CONTAINED] {
        add_counter(&mut b, c);
    }
    let mut id = 1;
    for fam in [Fam::V4, Fam::V6] {
        add_set(&mut b, &format!("allow{}", fam.digit()), fam, SET_F_INTERVAL, 0, 0, id);
        id += 1;
        for o in Origin::ALL {
            let (flags, size) = if o.interval() {
                (SET_F_INTERVAL | SET_F_TIMEOUT, 0)
            } else {
                (SET_F_TIMEOUT, layout.max_block_elements)
            };
            add_block_set(&mut b, &o.set_name(fam), fam, flags, size, id);
            id += 1;
        }
        for dir in ["src", "dst"] {
            add_set(
                &mut b,
                &format!("syn{}_{dir}", fam.digit()),
                fam,
                SET_F_EVAL | SET_F_TIMEOUT,
                layout.meter_size,
                60_000,
                id,
            );
            id += 1;
        }
    }
    add_typed_set(&mut b, SET_CONTAIN, (KEY_TYPE_ETHER, 6), SET_F_TIMEOUT, layout.max_contained, 0, id, false);
    for fam in [Fam::V4, Fam::V6] {
        id += 1;
        add_binding_set(&mut b, bound_set(fam), fam, false, MAX_BOUND_ELEMENTS, id);
        id += 1;
        add_binding_set(&mut b, routed_set(fam), fam, true, MAX_ROUTED_ELEMENTS, id);
    }
    push_allowlist(&mut b, allow);
    for (name, hook) in [
        (CHAIN_GUARD, None),
        (CHAIN_SYN_METER, None),
        (CHAIN_FAILSAFE, None),
        (CHAIN_GROUPS, None),
        (CHAIN_CONTAIN, None),
        (CHAIN_FORWARD, Some(2)), // NF_INET_FORWARD
        (CHAIN_INPUT, Some(1)),   // NF_INET_LOCAL_IN
    ] {
        add_chain(&mut b, name, hook);
    }
    push_contain_rules(&mut b);
    push_rules(&mut b, layout, lookups);
    b
}

/// Which block and containment sets the hooks look up. A packet pays for
/// every lookup whether or not the set holds anything (a hash set with
/// timeouts costs about 2 % of small-packet forwarding, docs/PERFORMANCE.md),
/// so only sets that hold elements are looked up. Whoever writes a set's
/// first element turns its lookup on first; only the blocker that installed
/// the table turns lookups off, once their set has emptied, and it decides
/// that in a transaction bound to the ruleset generation it read the sets
/// at (see [`Blocker::refresh_sets`](crate::Blocker::refresh_sets)), so a
/// writer in another process (the admin CLI) cannot lose its lookup to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lookups {
    bits: u8,
}

impl Lookups {
    /// Every lookup on (a table whose contents are unknown).
    pub const ALL: Lookups = Lookups { bits: 0x7f };

    fn block_bit(o: Origin, fam: Fam) -> u8 {
        let i = Origin::ALL.iter().position(|x| *x == o).unwrap_or(0) * 2 + usize::from(fam == Fam::V6);
        1 << i
    }

    /// With the lookup of `o`'s set of family `fam` on.
    pub fn with_block(self, o: Origin, fam: Fam) -> Lookups {
        Lookups { bits: self.bits | Self::block_bit(o, fam) }
    }

    /// Whether `o`'s set of family `fam` is looked up.
    pub fn block(self, o: Origin, fam: Fam) -> bool {
        self.bits & Self::block_bit(o, fam) != 0
    }

    /// With the contained-MAC lookup on.
    pub fn with_contain(self) -> Lookups {
        Lookups { bits: self.bits | 0x40 }
    }

    /// Whether the contained-MAC set is looked up.
    pub fn contain(self) -> bool {
        self.bits & 0x40 != 0
    }

    /// Whether every lookup `need` names is on here.
    pub fn covers(self, need: Lookups) -> bool {
        self.bits & need.bits == need.bits
    }

    /// What the rules must look up for sets in this state: each block set
    /// that holds elements, and `contain_mac` when it does.
    pub fn holding(block_holds: impl Fn(Origin, Fam) -> bool, contain_holds: bool) -> Lookups {
        let mut l = Lookups::default();
        for o in Origin::ALL {
            for fam in [Fam::V4, Fam::V6] {
                if block_holds(o, fam) {
                    l = l.with_block(o, fam);
                }
            }
        }
        if contain_holds {
            l = l.with_contain();
        }
        l
    }

    /// The lookup that reads `set`, if it is a block or containment set.
    fn of_set(set: &str) -> Option<Lookups> {
        if set == SET_CONTAIN {
            return Some(Lookups::default().with_contain());
        }
        Origin::ALL
            .iter()
            .flat_map(|o| [(*o, Fam::V4), (*o, Fam::V6)])
            .find_map(|(o, fam)| (o.set_name(fam) == set).then(|| Lookups::default().with_block(o, fam)))
    }

    /// Both sets of lookups.
    pub fn union(self, other: Lookups) -> Lookups {
        Lookups { bits: self.bits | other.bits }
    }
}

/// The rules of the guard, forward and input chains for `lookups`, appended
/// to `b`; the chains must be empty (new, or flushed by [`replace_rules`]).
fn push_rules(b: &mut Batch, layout: &Layout, lookups: Lookups) {
    for fam in [Fam::V4, Fam::V6] {
        let mut r = expr::addr_in_set(fam, Dir::Saddr, &format!("allow{}", fam.digit()));
        r.push(Expr::Verdict(Verdict::Accept));
        add_rule(b, CHAIN_GUARD, &r, "allowlist");
    }
    for o in Origin::ALL {
        for fam in [Fam::V4, Fam::V6] {
            if !lookups.block(o, fam) {
                continue;
            }
            for dir in [Dir::Saddr, Dir::Daddr] {
                let mut r = expr::addr_in_set(fam, dir, &o.set_name(fam));
                r.push(Expr::CounterRef(o.counter_name()));
                r.push(Expr::Verdict(Verdict::Drop));
                add_rule(b, CHAIN_GUARD, &r, &format!("block {}", o.as_str()));
            }
        }
    }
    let mut syn = expr::tcp_syn_only();
    syn.push(Expr::Verdict(Verdict::Jump(CHAIN_SYN_METER.into())));
    add_rule(b, CHAIN_GUARD, &syn, "bare SYNs to the meters");
    for fam in [Fam::V4, Fam::V6] {
        for (dir, label, pps, burst, counter) in [
            (Dir::Saddr, "src", layout.syn_meter_pps, layout.syn_meter_burst, COUNTER_SYN_SRC),
            (Dir::Daddr, "dst", layout.syn_meter_dst_pps, layout.syn_meter_dst_pps, COUNTER_SYN_DST),
        ] {
            let mut r = expr::match_family(fam);
            r.push(expr::load_addr(fam, dir));
            r.push(Expr::Dynset {
                set: format!("syn{}_{label}", fam.digit()),
                sreg_key: expr::REG_1,
                timeout_ms: 60_000,
                expr: Box::new(Expr::Limit { rate: pps as u64, unit_s: 1, burst, over: true }),
            });
            r.push(Expr::CounterRef(counter.into()));
            r.push(Expr::Verdict(Verdict::Drop));
            add_rule(b, CHAIN_SYN_METER, &r, &format!("syn meter per {label}"));
        }
    }
    if lookups.contain() {
        for chain in [CHAIN_FORWARD, CHAIN_INPUT] {
            let mut r = Vec::new();
            if !layout.contain_interface.is_empty() {
                r.extend(expr::iifname_is(&layout.contain_interface));
            }
            r.extend(expr::ether_saddr_in_set(SET_CONTAIN));
            r.push(Expr::Verdict(Verdict::Jump(CHAIN_CONTAIN.into())));
            add_rule(b, chain, &r, "contained MACs");
        }
    }
    for chain in [CHAIN_GUARD, CHAIN_FAILSAFE, CHAIN_GROUPS] {
        add_rule(b, CHAIN_FORWARD, &[Expr::Verdict(Verdict::Jump(chain.into()))], &format!("jump {chain}"));
    }
    add_rule(b, CHAIN_INPUT, &[Expr::Verdict(Verdict::Jump(CHAIN_GUARD.into()))], "jump guard");
}

/// Rewrites the guard, forward and input chains for `lookups`, appended to
/// `b`: in one transaction with what else `b` does, so no packet sees the
/// chains half-written and a set's first element comes with its lookup.
pub fn replace_rules(b: &mut Batch, layout: &Layout, lookups: Lookups) {
    for chain in [CHAIN_GUARD, CHAIN_SYN_METER, CHAIN_FORWARD, CHAIN_INPUT] {
        flush_chain(b, chain);
    }
    push_rules(b, layout, lookups);
}

/// The lookups the installed rules do, read back from the kernel: a rule
/// that names a block or containment set in a `lookup` expression turns that
/// lookup on. Another process may have turned lookups on since this one
/// wrote the rules, so a rewrite starts from what is installed.
pub fn installed_lookups(nl: &mut Netlink) -> Result<Lookups, NlError> {
    let rules = nl.dump(msg::GETRULE, family::INET, &Attrs::new().str(1, TABLE))?;
    Ok(lookups_in_rules(&rules))
}

/// [`installed_lookups`] of dumped rules (`NFTA_RULE_*` attributes each).
fn lookups_in_rules(rules: &[Vec<u8>]) -> Lookups {
    const NFTA_RULE_EXPRESSIONS: u16 = 4;
    const NFTA_LIST_ELEM: u16 = 1;
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    const NFTA_LOOKUP_SET: u16 = 1;
    let mut found = Lookups::default();
    for rule in rules {
        for (_, exprs) in parse_attrs(rule).filter(|(ty, _)| *ty == NFTA_RULE_EXPRESSIONS) {
            for (_, e) in parse_attrs(exprs).filter(|(ty, _)| *ty == NFTA_LIST_ELEM) {
                if !parse_attrs(e).any(|(ty, v)| ty == NFTA_EXPR_NAME && c_str(v) == "lookup") {
                    continue;
                }
                for (_, data) in parse_attrs(e).filter(|(ty, _)| *ty == NFTA_EXPR_DATA) {
                    for (_, set) in parse_attrs(data).filter(|(ty, _)| *ty == NFTA_LOOKUP_SET) {
                        if let Some(l) = Lookups::of_set(&c_str(set)) {
                            found = found.union(l);
                        }
                    }
                }
            }
        }
    }
    found
}

/// The failsafe chain's content: empty (fail-open) or dropping new flows.
pub fn failsafe_batch(closed: bool) -> Batch {
    let mut b = Batch::new();
    flush_chain(&mut b, CHAIN_FAILSAFE);
    if closed {
        let mut log = expr::ct_state_new();
        log.push(Expr::Limit { rate: 1, unit_s: 1, burst: 5, over: false });
        log.push(Expr::Log { prefix: "gatewarden fail-closed: ".into(), group: None });
        add_rule(&mut b, CHAIN_FAILSAFE, &log, "log new flows while fail-closed");
        let mut r = expr::ct_state_new();
        r.push(Expr::CounterRef(COUNTER_FAILCLOSED.into()));
        r.push(Expr::Verdict(Verdict::Drop));
        add_rule(&mut b, CHAIN_FAILSAFE, &r, "drop new flows while fail-closed");
    }
    b
}

/// Deletes the table (clean exit).
pub fn remove_batch() -> Batch {
    let mut b = Batch::new();
    b.push(msg::DELTABLE, family::INET, 0, table_attrs(), "delete table inet gatewarden");
    b
}

/// `userdata` with an nft comment (`NFTNL_UDATA_SET_ELEM_COMMENT`), shown by `nft list`.
/// The comment is cut to at most `max` bytes (and 120).
fn comment_udata(text: &str, max: usize) -> Vec<u8> {
    let max = max.min(120);
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let t = &text[..end];
    let mut v = vec![0u8, (t.len() + 1) as u8];
    v.extend_from_slice(t.as_bytes());
    v.push(0);
    v
}

/// Userdata type gatewarden adds after the comment: when the element's
/// counter started (u64 big-endian Unix seconds). nft shows comments (type 0)
/// and skips types it does not know, so `nft list` is unchanged; a high
/// number keeps clear of nft's own (comment 0, flags 1).
const UDATA_COUNTED_SINCE: u8 = 0xf7;

/// Userdata type gatewarden adds to a feed range imported with
/// `--allow-wide` (no value): the state file is a listing of the sets, so
/// the operator's choice is kept here, and a deliberately wide feed comes
/// back as wide after a restart while any other saved range is held to the
/// coverage limit (see `Blocker::ensure_restoring_for`). nft skips it.
const UDATA_WIDE: u8 = 0xf6;

/// Userdata type gatewarden adds to a detector block: the node ids of the
/// detectors whose verdicts wrote it (at most [`MAX_SENDERS`], joined by
/// `,`, which no node id holds). A full detector set evicts by the senders'
/// shares (`Blocker::block_verdict`), so the sender must
/// be known for every element, also one written by another process or
/// restored after a restart; the kernel keeps it with the element, so no
/// table of senders lives in gatewarden's memory. nft skips it.
const UDATA_SENDERS: u8 = 0xf5;

/// Most senders kept with one element: the first detector that blocked it
/// and one more that blocked it again. A shared block counts half in each
/// one's share and is protected by the smaller share (`Blocker::block_verdict`).
pub const MAX_SENDERS: usize = 2;

/// Longest userdata the kernel keeps for an element. `NFT_USERDATA_MAXLEN`
/// is 256, but measured (enforce test
/// `two_longest_sender_ids_and_a_long_reason_fit_the_kernels_userdata`):
/// 256 bytes are accepted and all of the userdata silently dropped, 255
/// are refused (EINVAL); 254 are kept.
const USERDATA_MAX: usize = 254;

/// The comment's userdata followed by when counting began, the
/// `--allow-wide` mark when `wide` and the verdicts' senders. The comment
/// is cut further when the senders would not fit beside it.
fn element_udata(comment: &str, since_s: u64, wide: bool, senders: &[String]) -> Vec<u8> {
    let mut tail = vec![UDATA_COUNTED_SINCE, 8];
    tail.extend_from_slice(&since_s.to_be_bytes());
    if wide {
        tail.extend_from_slice(&[UDATA_WIDE, 0]);
    }
    let senders: Vec<&str> =
        senders.iter().map(String::as_str).filter(|s| valid_node_id(s)).take(MAX_SENDERS).collect();
    if !senders.is_empty() {
        let joined = senders.join(",");
        tail.push(UDATA_SENDERS);
        tail.push(joined.len() as u8);
        tail.extend_from_slice(joined.as_bytes());
    }
    let room = USERDATA_MAX.saturating_sub(tail.len() + 3).min(120);
    let mut v = if comment.is_empty() { Vec::new() } else { comment_udata(comment, room) };
    v.extend_from_slice(&tail);
    v
}

/// What gatewarden keeps in an element's userdata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Udata {
    comment: String,
    since: Option<u64>,
    wide: bool,
    senders: Vec<String>,
}

/// Comment, counting start and the `--allow-wide` mark out of an element's
/// userdata. Userdata is opaque to the kernel (anyone with nft can write
/// any), so what does not parse is left out, never an error that would hide
/// the block list.
fn parse_udata(u: &[u8]) -> Udata {
    let mut out = Udata::default();
    let mut rest = u;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        let Some(v) = rest.get(2..2 + len) else { break };
        match ty {
            0 => out.comment = c_str(v),
            UDATA_COUNTED_SINCE => out.since = <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes),
            UDATA_WIDE => out.wide = true,
            UDATA_SENDERS => {
                out.senders = std::str::from_utf8(v)
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| valid_node_id(s))
                    .take(MAX_SENDERS)
                    .map(String::from)
                    .collect()
            }
            _ => {}
        }
        rest = &rest[2 + len..];
    }
    out
}

/// An element written again (a refresh) that keeps what its counter had
/// counted and since when: the new element starts with those values
/// (`NFTA_SET_ELEM_EXPR` counter with initial packets and bytes, as `nft
/// add element … { a counter packets N bytes M }` sends), so a verdict
/// refreshing a long attack's block does not zero the count the incident
/// view shows.
/// `senders`: the detectors whose verdicts wrote it (see [`UDATA_SENDERS`]);
/// `remaining_ms`: the time it has left, when that is not its whole timeout
/// (a block rewritten only to name one more sender keeps its time).
pub fn element_carried(
    key: &[u8],
    timeout_ms: u64,
    comment: &str,
    counter: expr::CounterValue,
    since_s: u64,
    senders: &[String],
    remaining_ms: Option<u64>,
) -> Attrs {
    let mut a = Attrs::new()
        .nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, key))
        .u64(NFTA_SET_ELEM_TIMEOUT, timeout_ms)
        .bytes(NFTA_SET_ELEM_USERDATA, &element_udata(comment, since_s, false, senders));
    if let Some(left) = remaining_ms {
        a = a.u64(NFTA_SET_ELEM_EXPIRATION, left.clamp(1, timeout_ms.max(1)));
    }
    let data = Attrs::new().u64(1, counter.bytes).u64(2, counter.packets);
    a = a.nested(expr::NFTA_SET_ELEM_EXPR, Attrs::new().str(1, "counter").nested(2, data));
    a
}

/// One element to add: key, per-element timeout, flags, comment. An element
/// with a comment also records that its counter starts now.
pub fn element(key: &[u8], timeout_ms: Option<u64>, flags: u32, comment: Option<&str>) -> Attrs {
    element_marked(key, timeout_ms, flags, comment, false, &[])
}

/// A detector block: [`element`] with the node ids of the detectors whose
/// verdicts wrote it, so a full set knows whose share each block is in.
pub fn element_from(key: &[u8], timeout_ms: u64, comment: &str, senders: &[String]) -> Attrs {
    element_marked(key, Some(timeout_ms), 0, Some(comment), false, senders)
}

/// [`element`], marked as a feed range imported with `--allow-wide` when
/// `wide`, and with its verdicts' senders.
fn element_marked(
    key: &[u8],
    timeout_ms: Option<u64>,
    flags: u32,
    comment: Option<&str>,
    wide: bool,
    senders: &[String],
) -> Attrs {
    let mut a = Attrs::new().nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, key));
    if flags != 0 {
        a = a.u32(NFTA_SET_ELEM_FLAGS, flags);
    }
    if let Some(t) = timeout_ms {
        a = a.u64(NFTA_SET_ELEM_TIMEOUT, t);
    }
    let comment = comment.unwrap_or("");
    if !comment.is_empty() || wide || !senders.is_empty() {
        let now_s = gatewarden_core::clock::unix_now_ms() / 1000;
        a = a.bytes(NFTA_SET_ELEM_USERDATA, &element_udata(comment, now_s, wide, senders));
    }
    a
}

/// Largest number of elements per NEWSETELEM message (attributes are limited to 64 KiB).
pub const ELEMENTS_PER_MESSAGE: usize = 256;

/// Adds (`add == true`) or deletes `elements` in `set`, split into messages that fit.
pub fn push_elements(b: &mut Batch, set: &str, elements: &[Attrs], add: bool, what: &str) {
    let (kind, flags) = if add { (msg::NEWSETELEM, NLM_F_CREATE) } else { (msg::DELSETELEM, 0) };
    push_element_messages(b, set, elements, kind, flags, what);
}

fn push_element_messages(b: &mut Batch, set: &str, elements: &[Attrs], kind: u8, flags: u16, what: &str) {
    for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
        let list = chunk.iter().fold(Attrs::new(), |a, e| a.nested(1, e.clone()));
        let a = Attrs::new()
            .str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
            .str(NFTA_SET_ELEM_LIST_SET, set)
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS, list);
        b.push(kind, family::INET, flags, a, what.to_string());
    }
}

/// Adds elements that must not exist yet (`NLM_F_EXCL`): the kernel answers
/// `EEXIST` for a present one, on every kernel version, which lets the caller
/// refresh it explicitly (kernels before 6.10 keep the old timeout on a plain re-add).
pub fn push_new_elements(b: &mut Batch, set: &str, elements: &[Attrs], what: &str) {
    push_element_messages(b, set, elements, msg::NEWSETELEM, NLM_F_CREATE | super::netlink::NLM_F_EXCL, what);
}

/// Adds merged, non-overlapping CIDR ranges to an interval set the way nft
/// does: a leading "interval end" at the zero address, then start/end pairs.
/// `wide`: a feed imported with `--allow-wide` (kept with each range).
pub fn push_interval_elements(
    b: &mut Batch,
    set: &str,
    fam: Fam,
    ranges: &[(u128, u128)],
    timeout_ms: Option<u64>,
    comment: Option<&str>,
    wide: bool,
) {
    let mut elems = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges.first().is_some_and(|r| r.0 != 0) {
        elems.push(element(&key_of(fam, 0), None, ELEM_INTERVAL_END, None));
    }
    let max = if fam == Fam::V4 { u32::MAX as u128 } else { u128::MAX };
    for &(lo, hi) in ranges {
        elems.push(element_marked(&key_of(fam, lo), timeout_ms, 0, comment, wide, &[]));
        if hi < max {
            elems.push(element(&key_of(fam, hi + 1), None, ELEM_INTERVAL_END, None));
        }
    }
    push_elements(b, set, &elems, true, &format!("add {} ranges to {set}", ranges.len()));
}

/// A feed range put back after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredRange {
    /// First address.
    pub lo: u128,
    /// Last address.
    pub hi: u128,
    /// The timeout it was given, ms; 0: none (an element written by hand
    /// without one, kept as it was when the LAN check rewrites the set).
    pub timeout_ms: u64,
    /// Time it has left, ms.
    pub remaining_ms: u64,
    /// Its comment (`feed drop.txt`).
    pub comment: String,
    /// Imported with `--allow-wide`.
    pub wide: bool,
}

/// Puts disjoint, sorted feed ranges back after a restart, each with its own
/// timeout, time left, comment and `--allow-wide` mark.
pub fn push_restored_intervals(b: &mut Batch, set: &str, fam: Fam, ranges: &[RestoredRange]) {
    if ranges.is_empty() {
        return;
    }
    let mut elems = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges[0].lo != 0 {
        elems.push(element(&key_of(fam, 0), None, ELEM_INTERVAL_END, None));
    }
    let max = if fam == Fam::V4 { u32::MAX as u128 } else { u128::MAX };
    for r in ranges {
        let key = key_of(fam, r.lo);
        elems.push(if r.timeout_ms == 0 {
            element_marked(&key, None, 0, Some(&r.comment), r.wide, &[])
        } else {
            restored(&key, r.timeout_ms, r.remaining_ms, 0, Some(&r.comment), r.wide, &[])
        });
        if r.hi < max {
            elems.push(element(&key_of(fam, r.hi + 1), None, ELEM_INTERVAL_END, None));
        }
    }
    push_elements(b, set, &elems, true, &format!("restore {} ranges in {set}", ranges.len()));
}

/// Fills the `allow4` / `allow6` interval sets with `allow`, merged.
fn push_allowlist(b: &mut Batch, allow: &[Cidr]) {
    for fam in [Fam::V4, Fam::V6] {
        let ranges: Vec<Cidr> = allow.iter().filter(|c| c.fam() == fam).copied().collect();
        if !ranges.is_empty() {
            let merged = super::feeds::merge(&ranges);
            push_interval_elements(b, &format!("allow{}", fam.digit()), fam, &merged, None, None, false);
        }
    }
}

/// Replaces the allowlist sets' contents in one transaction: the gateway
/// gained or lost an address after the table was installed (DHCP, a VLAN
/// brought up after gatewarden started).
pub fn replace_allowlist_batch(allow: &[Cidr]) -> Batch {
    let mut b = Batch::new();
    flush_set(&mut b, "allow4");
    flush_set(&mut b, "allow6");
    push_allowlist(&mut b, allow);
    b
}

/// Deletes every element of `set` (a `DELSETELEM` without elements).
pub fn flush_set(b: &mut Batch, set: &str) {
    let a = Attrs::new().str(NFTA_SET_ELEM_LIST_TABLE, TABLE).str(NFTA_SET_ELEM_LIST_SET, set);
    b.push(msg::DELSETELEM, family::INET, 0, a, format!("flush set {set}"));
}

/// The key bytes of an address given as an integer.
pub fn key_of(fam: Fam, v: u128) -> Vec<u8> {
    match fam {
        Fam::V4 => (v as u32).to_be_bytes().to_vec(),
        Fam::V6 => v.to_be_bytes().to_vec(),
    }
}

/// An element as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelElement {
    /// Key bytes.
    pub key: Vec<u8>,
    /// `NFT_SET_ELEM_*` flags.
    pub flags: u32,
    /// Timeout given when added, ms.
    pub timeout_ms: u64,
    /// Time left, ms.
    pub expires_ms: u64,
    /// The comment (reason), if any.
    pub comment: String,
    /// The element's own counter: what the rules dropped for this entry
    /// since it was written (block, refresh, restore). `None` in a set
    /// without per-element counters (a table from an older version).
    pub counter: Option<expr::CounterValue>,
    /// When that counter started, Unix seconds (gatewarden's userdata; `None`
    /// for an element written by someone else).
    pub counted_since_s: Option<u64>,
    /// A feed range imported with `--allow-wide` (gatewarden's userdata).
    pub wide: bool,
    /// The detectors whose verdicts wrote it (gatewarden's userdata; at most
    /// [`MAX_SENDERS`]); empty when unknown: not a detector block, written
    /// by a version that did not keep them, or by someone else.
    pub senders: Vec<String>,
}

/// Every element of `set`.
pub fn elements(nl: &mut Netlink, set: &str) -> Result<Vec<KernelElement>, NlError> {
    let req = Attrs::new().str(NFTA_SET_ELEM_LIST_TABLE, TABLE).str(NFTA_SET_ELEM_LIST_SET, set);
    let replies = nl.dump(msg::GETSETELEM, family::INET, &req)?;
    parse_elements(&replies).map_err(|e| in_set(e, set))
}

/// The element of `set` with this key, if present: one round trip, however
/// large the set (a re-block must learn the running timeout without listing 65 536 entries).
pub fn element_of(nl: &mut Netlink, set: &str, key: &[u8]) -> Result<Option<KernelElement>, NlError> {
    let req = Attrs::new().str(NFTA_SET_ELEM_LIST_TABLE, TABLE).str(NFTA_SET_ELEM_LIST_SET, set).nested(
        NFTA_SET_ELEM_LIST_ELEMENTS,
        Attrs::new().nested(1, Attrs::new().nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, key))),
    );
    match nl.get(msg::GETSETELEM, family::INET, &req) {
        Ok(replies) => Ok(parse_elements(&replies).map_err(|e| in_set(e, set))?.into_iter().find(|e| e.key == key)),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A single-address element restored after a restart: its original timeout
/// and the time it had left (`nft` shows both as `timeout` and `expires`).
pub fn element_restored(key: &[u8], timeout_ms: u64, remaining_ms: u64, flags: u32, comment: Option<&str>) -> Attrs {
    restored(key, timeout_ms, remaining_ms, flags, comment, false, &[])
}

/// [`element_restored`] for a detector block, with its verdicts' senders
/// (kept in the state file, so a restart does not put every restored
/// block in one "unknown" share that a full set would evict first).
pub fn element_restored_from(
    key: &[u8],
    timeout_ms: u64,
    remaining_ms: u64,
    comment: &str,
    senders: &[String],
) -> Attrs {
    restored(key, timeout_ms, remaining_ms, 0, Some(comment), false, senders)
}

/// [`element_restored`], marked as imported with `--allow-wide` when
/// `wide`, and with its verdicts' senders.
fn restored(
    key: &[u8],
    timeout_ms: u64,
    remaining_ms: u64,
    flags: u32,
    comment: Option<&str>,
    wide: bool,
    senders: &[String],
) -> Attrs {
    let timeout_ms = timeout_ms.max(1000);
    element_marked(key, Some(timeout_ms), flags, comment, wide, senders)
        .u64(NFTA_SET_ELEM_EXPIRATION, remaining_ms.clamp(1, timeout_ms))
}

/// Names the set in a reply the parser refused.
fn in_set(e: NlError, set: &str) -> NlError {
    match e {
        NlError::Protocol(m) => NlError::Protocol(format!("listing set {set}: {m}")),
        other => other,
    }
}

/// The elements in GETSETELEM replies. The walk is strict: a truncated or
/// malformed attribute fails the listing (the counts reach an operator and
/// must not silently shrink), and nothing in a reply can make it panic.
fn parse_elements(replies: &[Vec<u8>]) -> Result<Vec<KernelElement>, NlError> {
    let mut out = Vec::new();
    for r in replies {
        for (ty, v) in super::netlink::parse_attrs_strict(r, "element list")? {
            if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (_, e) in super::netlink::parse_attrs_strict(v, "elements")? {
                let mut el = KernelElement {
                    key: vec![],
                    flags: 0,
                    timeout_ms: 0,
                    expires_ms: 0,
                    comment: String::new(),
                    counter: None,
                    counted_since_s: None,
                    wide: false,
                    senders: Vec::new(),
                };
                for (aty, av) in super::netlink::parse_attrs_strict(e, "element")? {
                    if let Some(c) = expr::element_counter(aty, av)? {
                        el.counter = Some(c);
                        continue;
                    }
                    match aty {
                        NFTA_SET_ELEM_KEY => {
                            if let Some((_, k)) = parse_attrs(av).next() {
                                el.key = k.to_vec();
                            }
                        }
                        NFTA_SET_ELEM_FLAGS => el.flags = be_u32(av),
                        NFTA_SET_ELEM_TIMEOUT => el.timeout_ms = be_u64(av),
                        NFTA_SET_ELEM_EXPIRATION => el.expires_ms = be_u64(av),
                        NFTA_SET_ELEM_USERDATA => {
                            let u = parse_udata(av);
                            (el.comment, el.counted_since_s, el.wide, el.senders) =
                                (u.comment, u.since, u.wide, u.senders);
                        }
                        _ => {}
                    }
                }
                out.push(el);
            }
        }
    }
    Ok(out)
}

/// Named counters of the table: name → (packets, bytes).
pub fn counters(nl: &mut Netlink) -> Result<BTreeMap<String, (u64, u64)>, NlError> {
    let req = Attrs::new().str(1, TABLE).u32(3, 1);
    let replies = nl.dump(msg::GETOBJ, family::INET, &req)?;
    let mut out = BTreeMap::new();
    for r in replies {
        let (mut name, mut table, mut ty, mut packets, mut bytes) = (String::new(), String::new(), 0, 0, 0);
        for (t, v) in parse_attrs(&r) {
            match t {
                1 => table = c_str(v),
                2 => name = c_str(v),
                3 => ty = be_u32(v),
                4 => {
                    for (ct, cv) in parse_attrs(v) {
                        match ct {
                            1 => bytes = be_u64(cv),
                            2 => packets = be_u64(cv),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if table == TABLE && ty == 1 {
            out.insert(name, (packets, bytes));
        }
    }
    Ok(out)
}

/// Names of the table's sets.
pub fn set_names(nl: &mut Netlink) -> Result<Vec<String>, NlError> {
    let replies = nl.dump(msg::GETSET, family::INET, &Attrs::new().str(1, TABLE))?;
    let mut out = Vec::new();
    for r in replies {
        let mut table = String::new();
        let mut name = String::new();
        for (t, v) in parse_attrs(&r) {
            match t {
                1 => table = c_str(v),
                2 => name = c_str(v),
                _ => {}
            }
        }
        if table == TABLE {
            out.push(name);
        }
    }
    Ok(out)
}

/// Creates an interval set (for group members) in a batch.
pub fn add_interval_set(b: &mut Batch, name: &str, fam: Fam, id: u32) {
    add_set(b, name, fam, SET_F_INTERVAL, 0, 0, id);
}

/// Deletes a set in a batch.
pub fn delete_set(b: &mut Batch, name: &str) {
    b.push(msg::DELSET, family::INET, 0, Attrs::new().str(1, TABLE).str(2, name), format!("delete set {name}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GETSETELEM reply as the kernel sends it: table, set, then the list
    /// of elements (key 10.0.0.1 with its counter of 3 packets / 252 bytes).
    fn reply_with_counter() -> Vec<u8> {
        let el = Attrs::new()
            .nested(NFTA_SET_ELEM_KEY, Attrs::new().bytes(1, &[10, 0, 0, 1]))
            .nested(
                expr::NFTA_SET_ELEM_EXPR,
                Attrs::new().str(1, "counter").nested(2, Attrs::new().u64(1, 252).u64(2, 3)),
            )
            .u64(NFTA_SET_ELEM_TIMEOUT, 60_000)
            .u64(NFTA_SET_ELEM_EXPIRATION, 50_000);
        Attrs::new()
            .str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
            .str(NFTA_SET_ELEM_LIST_SET, "block4_admin")
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS, Attrs::new().nested(1, el))
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn listed_elements_carry_their_counter_and_a_cut_reply_is_an_error() {
        let r = reply_with_counter();
        let els = parse_elements(std::slice::from_ref(&r)).unwrap();
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].counter, Some(expr::CounterValue { packets: 3, bytes: 252 }));
        assert_eq!((els[0].timeout_ms, els[0].expires_ms), (60_000, 50_000));
        // Cut anywhere inside the element list: refused, not a shorter list.
        let list_start = r.len() - parse_attrs(&r).last().unwrap().1.len();
        for cut in list_start..r.len() {
            assert!(parse_elements(&[r[..cut].to_vec()]).is_err(), "cut at {cut} accepted");
        }
    }

    /// The attributes of every `kind` message (nftables subsystem) in `b`.
    fn messages_of(b: &Batch, kind: u8) -> Vec<Vec<(u16, Vec<u8>)>> {
        raw_messages_of(b, kind).iter().map(|m| parse_attrs(m).map(|(t, v)| (t, v.to_vec())).collect()).collect()
    }

    /// The attribute bytes of `b`'s messages of `kind`, as a dump returns them.
    fn raw_messages_of(b: &Batch, kind: u8) -> Vec<Vec<u8>> {
        let bytes = b.encode(1);
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while rest.len() >= 20 {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            if u16::from_ne_bytes([rest[4], rest[5]]) == (10 << 8) | kind as u16 {
                out.push(rest[20..len].to_vec());
            }
            rest = &rest[(len + 3) & !3..];
        }
        out
    }

    /// Attribute 2 (the name of a set; the chain of a rule).
    fn attr_2(attrs: &[(u16, Vec<u8>)]) -> String {
        attrs.iter().find(|(t, _)| *t == 2).map(|(_, v)| c_str(v)).unwrap()
    }

    #[test]
    fn block_sets_declare_a_counter_per_element_and_other_sets_do_not() {
        let b = ensure_batch(&Layout::default(), &[], false, Lookups::ALL);
        let msgs: Vec<(String, bool)> = messages_of(&b, msg::NEWSET)
            .iter()
            .map(|attrs| {
                let counted =
                    attrs.iter().any(|(t, v)| *t == expr::NFTA_SET_EXPR && v == expr::set_counter().as_bytes());
                (attr_2(attrs), counted)
            })
            .collect();
        for (name, counted) in &msgs {
            assert_eq!(*counted, name.starts_with("block"), "{name}");
        }
        assert_eq!(msgs.iter().filter(|m| m.1).count(), 6, "three origins, two families");
    }

    /// NEWRULE messages in `b`, by chain.
    fn rules_by_chain(b: &Batch) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for attrs in messages_of(b, msg::NEWRULE) {
            *out.entry(attr_2(&attrs)).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn only_sets_with_elements_are_looked_up() {
        let mut seen = 0u8;
        for o in Origin::ALL {
            for fam in [Fam::V4, Fam::V6] {
                let l = Lookups::default().with_block(o, fam);
                assert!(l.block(o, fam) && !l.contain() && Lookups::ALL.block(o, fam));
                assert_eq!(l.bits & seen, 0, "{o:?} {fam:?} has a bit of its own");
                seen |= l.bits;
            }
        }
        assert!(Lookups::ALL.contain() && !Lookups::default().contain());
        assert_eq!(Lookups::holding(|_, _| false, false), Lookups::default(), "empty sets are not looked up");
        assert_eq!(
            Lookups::holding(|o, f| f == Fam::V6 || o == Origin::Admin, true),
            Lookups::default()
                .with_block(Origin::Detector, Fam::V6)
                .with_block(Origin::Feed, Fam::V6)
                .with_block(Origin::Admin, Fam::V6)
                .with_block(Origin::Admin, Fam::V4)
                .with_contain()
        );
        let admin = Lookups::default().with_block(Origin::Admin, Fam::V4);
        assert!(Lookups::ALL.covers(admin) && admin.covers(Lookups::default()) && !admin.covers(Lookups::ALL));
        assert_eq!(Lookups::default().with_contain().union(Lookups { bits: seen }), Lookups::ALL);
        let count = |l: Lookups| rules_by_chain(&ensure_batch(&Layout::default(), &[], false, l));
        let none = count(Lookups::default());
        // Allowlist (2) and the one SYN test; the four meters behind it; the
        // three jumps; one jump.
        assert_eq!(none.get("guard"), Some(&3));
        assert_eq!(none.get("syn_meter"), Some(&4));
        assert_eq!(none.get("forward"), Some(&3));
        assert_eq!(none.get("input"), Some(&1));
        let one = count(Lookups::default().with_block(Origin::Detector, Fam::V4).with_contain());
        assert_eq!(
            (one["guard"], one["forward"], one["input"]),
            (5, 4, 2),
            "source and destination; a MAC rule per hook"
        );
        let mut all = count(Lookups::ALL);
        assert_eq!((all["guard"], all["syn_meter"], all["forward"], all["input"]), (15, 4, 4, 2));
        // The containment's binding checks are written once, with the table.
        assert_eq!((none.get("contain"), all.remove("contain")), (Some(&2), Some(2)), "one per family");
        // A rewrite flushes the four chains first, then writes them whole.
        let mut b = Batch::new();
        replace_rules(&mut b, &Layout::default(), Lookups::ALL);
        assert_eq!(rules_by_chain(&b), all);
        assert_eq!(b.len(), 4 + 25);
    }

    /// One expression of a rule: its name and its data's attributes.
    type RuleExpr = (String, Vec<(u16, Vec<u8>)>);

    /// Each expression of a NEWRULE's attributes.
    fn exprs_of(rule: &[u8]) -> Vec<RuleExpr> {
        let mut out = Vec::new();
        for (_, list) in parse_attrs(rule).filter(|(t, _)| *t == 4) {
            for (_, e) in parse_attrs(list) {
                let name = parse_attrs(e).find(|(t, _)| *t == 1).map(|(_, v)| c_str(v)).unwrap_or_default();
                let data = parse_attrs(e)
                    .filter(|(t, _)| *t == 2)
                    .flat_map(|(_, d)| parse_attrs(d).map(|(t, v)| (t, v.to_vec())).collect::<Vec<_>>())
                    .collect();
                out.push((name, data));
            }
        }
        out
    }

    /// The sets a rule looks up, with whether each lookup is inverted (`!= @set`).
    fn lookups_of(rule: &[u8]) -> Vec<(String, bool)> {
        exprs_of(rule)
            .into_iter()
            .filter(|(n, _)| n == "lookup")
            .map(|(_, d)| {
                let set = d.iter().find(|(t, _)| *t == 1).map(|(_, v)| c_str(v)).unwrap_or_default();
                let inverted = d.iter().any(|(t, v)| *t == 5 && be_u32(v) & 1 == 1);
                (set, inverted)
            })
            .collect()
    }

    /// The verdict code a rule ends with (0 drop, 1 accept, -3 jump), if any.
    fn verdict_of(rule: &[u8]) -> Option<i32> {
        exprs_of(rule).into_iter().filter(|(n, _)| n == "immediate").find_map(|(_, d)| {
            let (_, data) = d.iter().find(|(t, _)| *t == 2)?;
            let (_, verdict) = parse_attrs(data).find(|(t, _)| *t == 2)?;
            parse_attrs(verdict).find(|(t, _)| *t == 1).map(|(_, v)| be_u32(v) as i32)
        })
    }

    /// The red team's finding: one frame with a device's MAC and a forged
    /// WAN source put the MAC in `contain_mac`, whose rule dropped every
    /// frame from it, so the device lost its own traffic for an hour. A
    /// containment drops a frame only when its (MAC, source) is neither a
    /// known binding (`mac_bound4`/`6`, hash sets of `ether_addr . ipv4_addr`
    /// / `ipv6_addr`) nor a routed subnet behind that MAC (`mac_routed4`/`6`,
    /// the same keys with intervals); no rule drops on the MAC alone.
    #[test]
    fn a_containment_drops_only_frames_whose_mac_and_source_are_not_a_known_binding() {
        let b = ensure_batch(&Layout::default(), &[], false, Lookups::default().with_contain());
        let sets = messages_of(&b, msg::NEWSET);
        for (name, key_type, key_len, flags) in [
            ("mac_bound4", (9 << 6) | 7, 12, 0),
            ("mac_bound6", (9 << 6) | 8, 24, 0),
            ("mac_routed4", (9 << 6) | 7, 12, SET_F_INTERVAL | 0x80),
            ("mac_routed6", (9 << 6) | 8, 24, SET_F_INTERVAL | 0x80),
        ] {
            let set = sets.iter().find(|a| attr_2(a) == name).unwrap_or_else(|| panic!("no set {name}"));
            let attr = |ty: u16| set.iter().find(|(t, _)| *t == ty).map(|(_, v)| be_u32(v));
            assert_eq!(attr(4), Some(key_type), "{name}: ether_addr . ip address");
            assert_eq!(attr(5), Some(key_len), "{name}: a MAC padded to 8 bytes, then the address");
            assert_eq!(attr(3), Some(flags), "{name}");
        }
        let rules = raw_messages_of(&b, msg::NEWRULE);
        let chain_of = |r: &Vec<u8>| parse_attrs(r).find(|(t, _)| *t == 2).map(|(_, v)| c_str(v)).unwrap_or_default();
        let on_mac: Vec<&Vec<u8>> =
            rules.iter().filter(|r| lookups_of(r).iter().any(|(s, inv)| s == SET_CONTAIN && !inv)).collect();
        assert_eq!(on_mac.len(), 2, "forward and input look the MAC up");
        for r in &on_mac {
            assert_ne!(verdict_of(r), Some(0), "a rule drops on the contained MAC alone: {:?}", lookups_of(r));
        }
        for fam in ["4", "6"] {
            let want = vec![(format!("mac_bound{fam}"), true), (format!("mac_routed{fam}"), true)];
            let drop = rules.iter().find(|r| lookups_of(r) == want).unwrap_or_else(|| {
                panic!("no rule drops IPv{fam} frames whose (MAC, source) is not bound: {:?}", rules_by_chain(&b))
            });
            assert_eq!(verdict_of(drop), Some(0), "IPv{fam}");
            let into = chain_of(drop);
            assert!(
                on_mac.iter().all(|r| exprs_of(r).iter().any(|(n, d)| n == "immediate"
                    && d.iter().any(|(_, v)| v.windows(into.len()).any(|w| w == into.as_bytes())))),
                "the MAC rules jump to the chain with the binding checks ({into})"
            );
        }
    }

    #[test]
    fn the_installed_lookups_are_read_back_from_the_rules() {
        let admin4 = Lookups::default().with_block(Origin::Admin, Fam::V4);
        for l in [
            Lookups::default(),
            admin4,
            admin4.with_block(Origin::Feed, Fam::V6).with_contain(),
            Lookups::default().with_block(Origin::Detector, Fam::V6),
            Lookups::ALL,
        ] {
            let rules = raw_messages_of(&ensure_batch(&Layout::default(), &[], false, l), msg::NEWRULE);
            assert!(!rules.is_empty());
            assert_eq!(lookups_in_rules(&rules), l, "the allowlist lookup and the meters turn nothing on");
        }
        assert_eq!(lookups_in_rules(&[vec![0xff; 3], Vec::new()]), Lookups::default(), "garbage reads as nothing");
    }

    #[test]
    fn set_and_counter_names_say_who_blocked() {
        assert_eq!(Origin::Detector.set_name(Fam::V4), "block4_detector");
        assert_eq!(Origin::Feed.set_name(Fam::V6), "block6_feed");
        assert_eq!(Origin::Admin.counter_name(), "blocked_admin");
    }

    #[test]
    fn ensure_deletes_a_stale_table_first_in_the_same_transaction() {
        let fresh = ensure_batch(&Layout::default(), &[], false, Lookups::ALL);
        let stale = ensure_batch(&Layout::default(), &[], true, Lookups::ALL);
        assert_eq!(stale.len(), fresh.len() + 1);
        let bytes = stale.encode(1);
        // The first message after BATCH_BEGIN (20 bytes) is DELTABLE.
        assert_eq!(u16::from_ne_bytes([bytes[24], bytes[25]]), (10 << 8) | msg::DELTABLE as u16);
    }

    #[test]
    fn the_counting_start_follows_the_comment_and_odd_userdata_is_skipped() {
        let u = element_udata("scan", 1_700_000_000, false, &[]);
        let want = Udata { comment: "scan".into(), since: Some(1_700_000_000), wide: false, senders: vec![] };
        assert_eq!(parse_udata(&u), want);
        assert_eq!(parse_udata(&comment_udata("by nft", 120)), Udata { comment: "by nft".into(), ..Udata::default() });
        for cut in 0..u.len() {
            let _ = parse_udata(&u[..cut]);
        }
        assert_eq!(parse_udata(&[0xf7, 3, 1, 2, 3]).since, None, "a since of the wrong size is left out");
    }

    #[test]
    fn a_feed_imported_with_allow_wide_is_marked_so_in_its_userdata() {
        let u = element_udata("feed country.txt", 1_700_000_000, true, &[]);
        let want =
            Udata { comment: "feed country.txt".into(), since: Some(1_700_000_000), wide: true, senders: vec![] };
        assert_eq!(parse_udata(&u), want);
        assert_eq!(
            &u[..u.len() - 2],
            &element_udata("feed country.txt", 1_700_000_000, false, &[])[..],
            "nft's part is unchanged"
        );
        let no_comment = parse_udata(&element_udata("", 1, true, &[]));
        assert!(no_comment.wide && no_comment.comment.is_empty());
        assert_eq!(element_udata("", 1, false, &[])[0], UDATA_COUNTED_SINCE, "no empty comment is written");
    }

    #[test]
    fn a_detector_blocks_senders_fit_beside_the_longest_comment_and_odd_ones_are_left_out() {
        let long = "x".repeat(300);
        let two = vec!["d".repeat(64), "e".repeat(64)];
        let u = element_udata(&long, 1_700_000_000, false, &two);
        assert!(u.len() <= 254, "{} bytes of userdata: the kernel keeps at most 254", u.len());
        let got = parse_udata(&u);
        assert_eq!(got.senders, two);
        assert!(!got.comment.is_empty() && long.starts_with(&got.comment), "the comment is cut, not lost");
        assert_eq!(got.since, Some(1_700_000_000));
        // A short comment is kept whole.
        let u = element_udata("port scan", 1, false, &["det-1".to_string()]);
        assert_eq!(parse_udata(&u).comment, "port scan");
        assert_eq!(parse_udata(&u).senders, ["det-1"]);
        // Userdata is anyone's to write: what is no node id is left out, and never more than two.
        assert_eq!(
            parse_udata(&[0xf5, 11, b'd', b'e', b't', b',', b'a', b' ', b'b', b',', b'x', b',', b'y']).senders,
            ["det", "x"]
        );
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(parse_udata(&element_udata("", 1, false, &three)).senders, ["a", "b"]);
        for cut in 0..u.len() {
            let _ = parse_udata(&u[..cut]);
        }
    }

    #[test]
    fn comments_are_nft_udata_and_truncated_on_a_char_boundary() {
        assert_eq!(comment_udata("hi", 120), vec![0, 3, b'h', b'i', 0]);
        let long = "é".repeat(100);
        let u = comment_udata(&long, 120);
        assert_eq!(u[1] as usize, u.len() - 2);
        assert!(std::str::from_utf8(&u[2..u.len() - 1]).is_ok());
    }

    #[test]
    fn intervals_start_with_a_zero_end_marker_and_skip_the_end_at_the_top() {
        let mut b = Batch::new();
        let ranges = [(10, 20), (30, u32::MAX as u128)];
        push_interval_elements(&mut b, "block4_feed", Fam::V4, &ranges, Some(1000), None, false);
        assert_eq!(b.len(), 1);
        let bytes = b.encode(1);
        // 0-end, 10, 21-end, 30 (no end past 255.255.255.255)
        let payload = &bytes[20 + 20..];
        let top: Vec<_> = parse_attrs(payload).collect();
        let elems: Vec<_> = parse_attrs(top[2].1).collect();
        assert_eq!(elems.len(), 4);
    }

    #[test]
    fn element_chunks_respect_the_attribute_size_limit() {
        let elems: Vec<Attrs> = (0..1300u32).map(|i| element(&i.to_be_bytes(), Some(1000), 0, Some("x"))).collect();
        let mut b = Batch::new();
        push_elements(&mut b, "block4_detector", &elems, true, "bulk");
        assert_eq!(b.len(), 6);
    }
}
