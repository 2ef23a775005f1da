//! `[enforce]`: the block sets' sizes and meters, escalation, the allowlist
//! and never-block list, state file, spoof-check caps. The binary composes
//! this into its TOML file (same keys) and validates it with the rest.

use serde::{Deserialize, Serialize};

/// nftables enforcement on the router (`[enforce]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceConfig {
    /// Program nftables. Off by default so a laptop or CI run never changes the
    /// host firewall; the appliance image turns it on. Needs root or CAP_NET_ADMIN.
    pub enabled: bool,
    /// Leave the `inet gatewarden` table in place on a clean exit, so the
    /// blocks keep dropping while gatewarden is stopped; the next start
    /// carries them over (as it does after a crash, when the table is left
    /// behind anyway). Blocks survive a reboot only through `state_file`.
    pub keep_table_on_exit: bool,
    /// Where the block sets are kept across restarts and reboots (detector,
    /// admin and feed blocks with their expiry; rewritten atomically after
    /// every change, read back before the table is installed). Empty: not
    /// kept, and a start logs a warning. The appliance images set
    /// `/var/lib/gatewarden/enforce-state.json`.
    pub state_file: String,
    /// Networks never blocked by any verdict, operator or feed, in addition
    /// to the allowlist and the gateway's own addresses, next hops and
    /// resolvers: by default the bogons (unspecified, loopback, link-local,
    /// multicast, reserved, broadcast), which forged sources name to turn the
    /// gateway against DHCP, mDNS or itself. Unlike the allowlist they get no
    /// early accept in the firewall.
    pub never_block: Vec<String>,
    /// Most addresses in each detector/admin block set; when full, a
    /// sixteenth is evicted and an alert is raised: from the detector set,
    /// the blocks of the detector holding the most (its soonest-expiring
    /// first), so one detector's flood evicts only its own; from the admin
    /// set, the entries closest to expiry.
    pub max_block_elements: u32,
    /// SYNs per second one source may open before the meter drops the excess.
    pub syn_meter_pps: u32,
    /// Extra SYNs allowed in a burst above `syn_meter_pps`.
    pub syn_meter_burst: u32,
    /// SYNs per second towards one destination (floods from many, possibly spoofed, sources).
    pub syn_meter_dst_pps: u32,
    /// Most sources (and destinations) each SYN meter tracks at once.
    pub meter_size: u32,
    /// A repeat block of the same address within this many seconds doubles its TTL (0: never escalate).
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub escalation_window_s: u64,
    /// No detector block lasts longer, in seconds: escalated TTLs stop
    /// growing here, and a verdict asking for more gets this.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub max_ttl_s: u64,
    /// Networks never blocked: management networks, peer nodes. The gateway's own
    /// addresses are always added.
    pub allowlist: Vec<String>,
    /// The allowlist, all entries together, may cover at most as many IPv4
    /// addresses as one network of this prefix length (default a /8).
    /// `0.0.0.0/1` + `128.0.0.0/1` would otherwise switch blocking off as
    /// surely as a /0, and the settings page can change the allowlist with an
    /// admin token; a wider list needs `allowlist_force` in this file.
    pub allowlist_limit_v4: u8,
    /// The same bound for IPv6 (default a /32, a large provider's whole allocation).
    pub allowlist_limit_v6: u8,
    /// Accept an allowlist wider than the limits above (only in the config
    /// file: the settings page cannot set it). A /0 is refused regardless.
    pub allowlist_force: bool,
    /// When the detector is unreachable, drop new forwarded flows instead of
    /// letting them through (the issue's `router.fail_closed`). Existing flows and the allowlist still pass.
    pub fail_closed: bool,
    /// Seconds without a verdict or heartbeat from a detector before it counts as unreachable.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub detector_timeout_s: u64,
    /// A DHCP server's lease file (dnsmasq format: `expiry mac ip name id`),
    /// re-read when it changes. Its bindings are the most trusted proof of
    /// which MAC owns a LAN address (above the neighbour table, which
    /// gratuitous ARP can change). Empty: no lease file.
    pub dhcp_leases: String,
    /// Networks that reach the router through the LAN interface besides the
    /// interface's own networks and those the kernel routes out of it (a
    /// downstream router's subnets with no route here). Frames from other
    /// sources on the LAN are spoofed.
    pub lan_prefixes: Vec<String>,
    /// How long a LAN MAC caught forging source addresses is contained
    /// (its frames dropped unless their source is bound to it by a lease or
    /// the neighbour table), in seconds; refreshed while it goes on.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub contain_ttl_s: u64,
    /// Most MACs contained at once (the `contain_mac` set's size) and
    /// tracked as spoofers.
    pub max_contained_macs: u32,
    /// Most LAN IP to MAC bindings kept for the spoof check (and most forged
    /// addresses remembered); the oldest are evicted and counted.
    pub max_bindings: u32,
    /// Most forged addresses listed per MAC in its alert and reports; more are counted.
    pub max_forged_per_mac: u32,
    /// The fleet's own endpoints, refused like the next hops by every block
    /// and feed: the node fills them in from `mqtt.broker` and `link.peers`
    /// (`host:port` or an address); not a key of this section.
    #[serde(skip)]
    pub fleet_endpoints: Vec<String>,
    /// The LAN interface (`capture.interface`), which containment is limited
    /// to; the node fills it in; not a key of this section.
    #[serde(skip)]
    pub lan_interface: String,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            enabled: false,
            keep_table_on_exit: false,
            state_file: String::new(),
            never_block: crate::blocker::DEFAULT_NEVER_BLOCK.iter().map(|s| s.to_string()).collect(),
            max_block_elements: 65_536,
            syn_meter_pps: 200,
            syn_meter_burst: 100,
            syn_meter_dst_pps: 5_000,
            meter_size: 65_536,
            escalation_window_s: 86_400,
            max_ttl_s: 7 * 86_400,
            allowlist: Vec::new(),
            allowlist_limit_v4: 8,
            allowlist_limit_v6: 32,
            allowlist_force: false,
            fail_closed: false,
            detector_timeout_s: 15,
            dhcp_leases: String::new(),
            lan_prefixes: Vec::new(),
            contain_ttl_s: 3600,
            max_contained_macs: 1024,
            max_bindings: 16_384,
            max_forged_per_mac: 16,
            fleet_endpoints: Vec::new(),
            lan_interface: String::new(),
        }
    }
}

impl EnforceConfig {
    /// The blocker's settings (call after validation: bad allowlist entries are skipped).
    pub fn settings(&self) -> crate::Settings {
        crate::Settings {
            layout: crate::ruleset::Layout {
                max_block_elements: self.max_block_elements,
                syn_meter_pps: self.syn_meter_pps,
                syn_meter_burst: self.syn_meter_burst,
                syn_meter_dst_pps: self.syn_meter_dst_pps,
                meter_size: self.meter_size,
                max_contained: self.max_contained_macs,
                contain_interface: self.lan_interface.clone(),
            },
            escalation_window: std::time::Duration::from_secs(self.escalation_window_s),
            max_ttl: std::time::Duration::from_secs(self.max_ttl_s),
            allowlist: self.allowlist.iter().filter_map(|s| s.parse().ok()).collect(),
            never_block: self.never_block.iter().filter_map(|s| s.parse().ok()).collect(),
            fleet_endpoints: self.fleet_endpoints.clone(),
        }
    }
}

impl EnforceConfig {
    /// The spoof check's caps.
    pub fn spoof_limits(&self) -> crate::spoof::Limits {
        crate::spoof::Limits {
            max_bindings: self.max_bindings as usize,
            max_spoofers: self.max_contained_macs as usize,
            max_forged_per_mac: self.max_forged_per_mac as usize,
            forged_memory_ns: self.contain_ttl_s.saturating_mul(1_000_000_000),
        }
    }
}
