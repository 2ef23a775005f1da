//! The command line: `run`, `replay`, `config check|show`, and the admin's
//! enforcement commands `block`, `unblock`, `blocks`, `blocklist import`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, config,
//! capture), 130 after a second Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::monitor::http::HttpServer;
use crate::monitor::MonitorState;
use crate::replay::{self, Speed};
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::role::{self, Role, RoleSource};

pub use crate::exit::{EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::output::{config_fail, fail, fail_with, json_mode, print_json, warn, JSON_MODE};

#[derive(Debug, Parser)]
#[command(
    name = "gatewarden",
    version,
    about = "IoT security gateway: router, detector and monitor roles in one binary",
    long_about = "gatewarden watches IoT traffic, detects scans, floods and brute force, blocks attackers in \
nftables and shows it all on a status page.\n\n\
Every node runs this same binary; the role (router, detector, monitor or all) comes from --role, \
GATEWARDEN_ROLE, gatewarden.role= on the kernel command line, or the config file, in that order.\n\n\
Try it on a laptop:\n  gatewarden replay samples/demo.pcap --serve 127.0.0.1:8080",
    propagate_version = true
)]
struct Cli {
    /// Log line format: human for terminals, json for log shippers (default: config `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Print results as JSON on stdout, and an error as one JSON object on stderr
    /// (`{"error": "...", "exit_code": N}`; same exit codes as without --json).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the role(s) and serve the status page until SIGTERM or Ctrl-C.
    #[command(long_about = "Start the role(s) and serve the status page until SIGTERM or Ctrl-C.\n\n\
The role is taken from, in order: --role; GATEWARDEN_ROLE; gatewarden.role= in /proc/cmdline; \
`role` in the config file. `all` runs router, detector and monitor in one process.")]
    Run(RunArgs),
    /// Run the whole pipeline over a pcap/pcapng capture and print what it found.
    #[command(long_about = "Run the whole `all` pipeline (flows → detectors → alerts) over a pcap or \
pcapng capture and print a summary: packets, flows, alerts by kind, elapsed time and packets/s.\n\n\
Examples:\n  gatewarden replay samples/demo.pcap\n  gatewarden replay big.pcap --json\n  \
gatewarden replay samples/demo.pcap --speed realtime --serve 127.0.0.1:8080")]
    Replay(ReplayArgs),
    /// Run the whole pipeline on a live interface (AF_PACKET) and print what it found.
    #[command(long_about = "Capture on a live interface with an AF_PACKET TPACKET_V3 ring (headers only) and \
run the whole `all` pipeline, like `replay` does for files. Stops after --duration or on Ctrl-C and prints \
the same summary, plus the kernel's drop counter. Needs root or CAP_NET_RAW.\n\n\
Examples:\n  gatewarden watch -i eth0 --duration 30s\n  gatewarden watch -i lan0 --serve 127.0.0.1:8080")]
    Watch(WatchArgs),
    /// Write one CSV row of features per flow from a capture, for training a model.
    #[command(long_about = "Write one CSV row per flow from a pcap/pcapng capture: identifying columns \
(flow_id, src, dst, sport, dport, proto, first_ts, last_ts), then every column of the feature schema \
(gatewarden-flow-host v1: per-flow statistics, then the source host's and the source→destination pair's \
damped statistics over 1 s, 10 s and 60 s half-lives), then `label`.\n\n\
A row is written when its flow ends (idle/active timeout, eviction or end of capture). Labels come from \
a CSV of `src,start,end,label` (Unix seconds); anything not covered is `benign`.\n\n\
Example:\n  gatewarden features samples/demo.pcap --labels samples/demo.labels.csv -o demo.csv")]
    Features(FeaturesArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Block an address in nftables now (origin "admin"), for a while.
    #[command(long_about = "Block an address in nftables now, in the admin block set, until the TTL passes. \
Blocking an address that is already blocked refreshes its timeout. Allowlisted addresses \
([enforce] allowlist and the gateway's own addresses) are refused.\n\n\
Needs the table that `gatewarden run --role router` installs ([enforce] enabled = true), and root or CAP_NET_ADMIN. \
Run it in the router's network namespace.\n\n\
Examples:\n  gatewarden block 192.0.2.44 --ttl 10m --reason \"camera port-scanning\"\n  gatewarden block 2001:db8::66 --ttl 1h")]
    Block(BlockArgs),
    /// Remove an address from the detector and admin block sets, or lift a contained MAC.
    #[command(long_about = "Remove an address from the detector and admin block sets (both, if present) and forget \
its repeat-offender history. Addresses inside an imported feed range stay blocked until the feed is re-imported \
without them.\n\n\
Given a MAC, lift its containment: the router contains a LAN MAC that sends frames with forged source addresses \
(`gatewarden blocks` lists it with origin contain and what it forged). A device wrongly contained (a MAC-NAT \
repeater, a VM host) gets its traffic back at once; one that goes on forging is contained again.\n\n\
Examples:\n  gatewarden unblock 192.0.2.44\n  gatewarden unblock 02:00:00:00:00:66")]
    Unblock(UnblockArgs),
    /// List active blocks and contained MACs with who blocked them, why, and the time left.
    #[command(long_about = "List active blocks: address or range, origin (detector, admin, feed), time left, \
timeout and reason. Then the contained LAN MACs (caught forging source addresses): MAC, the addresses it \
forged, since when, time left. Also shows the drop counters per origin and of the SYN meters.\n\n\
Examples:\n  gatewarden blocks\n  gatewarden blocks --json")]
    Blocks(BlocksArgs),
    /// Import threat-feed blocklists into nftables.
    #[command(subcommand)]
    Blocklist(BlocklistCommand),
    /// The fleet's certificate authority: create it, issue node certificates, write the Mosquitto config.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Ask a node for its status or change its blocks, over the signed and encrypted operator channel.
    #[command(long_about = "Talk to one node's control endpoint (`ctl.listen` in its config) over TCP, through the \
same handshake and envelope as the node bus: both sides prove their fleet certificate, agree on a fresh \
ECDH P-384 session key, and every request and answer is signed and encrypted. Needs an operator certificate \
(`gatewarden pki issue NAME --role operator`).\n\n\
Examples:\n  gatewarden ctl --node 192.0.2.1:7443 --pki /etc/gatewarden/pki --id alice status\n  \
gatewarden ctl --node gw1:7443 --ca ca.crt --cert alice.crt --key alice.key block 198.51.100.7 --ttl 1h")]
    Ctl(CtlArgs),
    /// Group policies: device groups, group-to-group rules, explain, suggestions.
    #[command(
        long_about = "Group policies: name groups of devices (addresses, CIDRs or MACs), write rules between groups (protocol, ports, allow/deny, priority) that the router enforces in nftables, ask which rule decides some traffic, and review rules suggested from the traffic matrix.\n\n\
Examples:\n  gatewarden policy group add cameras --member 192.0.2.0/28\n  gatewarden policy group add sensors --member 198.51.100.0/28\n  \
gatewarden policy rule create --from cameras --to sensors --proto tcp --ports 22 --action deny --priority 100\n  \
gatewarden policy explain cameras sensors tcp 22\n  gatewarden policy suggest\n  gatewarden policy accept s1a2b3c4d"
    )]
    Policy(crate::policy_cli::PolicyArgs),
    /// Check a detector model (.tflite + model card) against this binary, or show the embedded one.
    #[command(long_about = "Load a detector model the way the detector does: the float32 .tflite, its model \
card beside it (NAME.tflite → NAME.card.json), the card's feature schema checked against this binary's \
(name, version, input columns), and the card's reference inputs run and compared with its reference outputs \
(a file is checked in a child process with memory and time limits first, as uploads are). Prints the card's summary (classes, training data, \
held-out metrics) and exits 0, or says what is wrong and exits 2. Without a path: the embedded model.\n\n\
Train a new one with tools/train/train.sh; point `detector.model` in the config at it.\n\n\
Examples:\n  gatewarden model\n  gatewarden model /etc/gatewarden/models/site.tflite\n  gatewarden model --json")]
    Model(ModelArgs),
    /// Access tokens for the dashboard and JSON API (JWT, ES384).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Query the monitor's alert store: filters, a table for people, EVE lines with --json.
    #[command(
        long_about = "Read the monitor's alert store (the EVE files alerts.json.N … alerts.json in monitor.data_dir) and print the newest alerts that match every filter given, oldest first like `tail`: a table, or with --json the stored EVE lines themselves (one JSON object per line, for jq or a SIEM). The files are only read, so it runs beside a live monitor.\n\nExamples:\n  gatewarden alerts --since 1h\n  gatewarden alerts --kind port_scan --src 192.0.2.44 --limit 10\n  \
gatewarden alerts --action blocked --json | jq .src_ip\n  gatewarden alerts list --node router-1 --dir /var/lib/gatewarden"
    )]
    Alerts(crate::alerts_cli::AlertsArgs),
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// The .tflite to check (default: the model embedded in this binary).
    path: Option<PathBuf>,
    /// Internal: be the model validator's child process (a framed candidate on
    /// stdin, one JSON line on stdout); see src/detect/validator.rs.
    #[arg(long, hide = true, conflicts_with_all = ["path"])]
    validate_worker: bool,
    /// Largest batch dimension accepted (with --validate-worker or a path).
    #[arg(long, hide = true, default_value_t = crate::detect::model::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Internal (with --validate-worker): address-space limit the worker sets on itself, MiB.
    #[arg(long, hide = true, default_value_t = 512)]
    memory_limit_mb: u64,
    /// Internal (with --validate-worker): CPU-time limit the worker sets on itself, seconds.
    #[arg(long, hide = true, default_value_t = 20)]
    cpu_limit_s: u64,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a signed access token for the dashboard and API.
    #[command(
        long_about = "Print a JSON Web Token (ES384) that the monitor accepts: `viewer` reads the dashboard and \
API, `admin` also acknowledges and resolves alerts and lifts blocks. It is signed with the monitor's key \
(http.jwt_key, default <monitor.data_dir>/jwt-es384.pem; created if missing), so run it on the monitor node \
with the same config. The monitor publishes the public key at /.well-known/jwks.json.\n\n\
Use it as `Authorization: Bearer <token>`, or open http://<monitor>/#token=<token> once in a browser.\n\n\
Examples:\n  gatewarden token issue --role admin --ttl 1h\n  gatewarden token issue --role viewer --ttl 30d --sub wallboard\n  \
curl -H \"Authorization: Bearer $(gatewarden token issue --role viewer)\" http://127.0.0.1:8080/api/alerts"
    )]
    Issue {
        /// viewer reads; admin also changes alert states and unblocks.
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["viewer", "admin"]),
            |s: String| crate::monitor::auth::AccessRole::parse(&s).expect("one of the possible values")))]
        role: crate::monitor::auth::AccessRole,
        /// How long it is valid: 30s, 10m, 1h, 1h30m, 7d or seconds, at most the monitor's
        /// http.max_token_ttl_s (default 90d; read from -c, or the default with only --key).
        #[arg(long, default_value = "1h", value_parser = crate::monitor::auth::parse_ttl)]
        ttl: u64,
        /// Who it is for; recorded when they change an alert's state.
        #[arg(long, default_value = "operator")]
        sub: String,
        /// Signing key (PEM, PKCS#8 P-384) instead of the one the config names.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Config file (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
        #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the JWKS (public key set) the monitor verifies tokens against.
    #[command(long_about = "Print the JSON Web Key Set with the monitor's public signing key, as served at \
/.well-known/jwks.json, e.g. for another service that should accept the same tokens.\n\n\
Example:\n  gatewarden token jwks -c /etc/gatewarden/monitor.toml")]
    Jwks {
        /// Signing key instead of the one the config names.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Config file.
        #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct BlockArgs {
    /// IPv4 or IPv6 address to block.
    addr: std::net::IpAddr,
    /// How long: 30s, 10m, 1h, 1h30m, 7d, or seconds.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    /// Why, stored with the element (shown by `gatewarden blocks` and `nft list ruleset`).
    #[arg(long, default_value = "blocked by admin")]
    reason: String,
    /// Config file for the allowlist (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UnblockArgs {
    /// IPv4 or IPv6 address to unblock, or a contained MAC (aa:bb:cc:dd:ee:ff) to release.
    #[arg(value_parser = parse_unblock_target)]
    addr: UnblockTarget,
    /// Config file naming `enforce.state_file`, so the unblock is saved at once
    /// (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists; the router saves it within 5 s anyway).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

/// What `unblock` lifts: an address's block or a MAC's containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnblockTarget {
    Ip(std::net::IpAddr),
    Mac(crate::enforce::spoof::Mac),
}

impl std::fmt::Display for UnblockTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnblockTarget::Ip(a) => write!(f, "{a}"),
            UnblockTarget::Mac(m) => f.write_str(&crate::enforce::spoof::mac_text(m)),
        }
    }
}

fn parse_unblock_target(s: &str) -> Result<UnblockTarget, String> {
    if let Ok(a) = s.parse() {
        return Ok(UnblockTarget::Ip(a));
    }
    crate::enforce::spoof::parse_mac(s).map(UnblockTarget::Mac).ok_or_else(|| {
        format!("\"{s}\" is neither an IP address nor a MAC address (e.g. 192.0.2.44, 2001:db8::7, 02:00:00:00:00:66)")
    })
}

#[derive(Debug, Args)]
struct BlocksArgs {
    /// Config file (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BlocklistCommand {
    /// Replace the feed block set of each family FILE has networks for.
    #[command(long_about = "Import the networks in FILE as the feed: they replace the feed block set of each \
family FILE brings usable networks for (block4_feed, block6_feed), in one transaction; the other family's \
feed stays as it is, so an IPv4 list and an IPv6 list can be kept side by side. There is one feed per \
family: importing a second IPv4 list replaces the first (concatenate lists to keep both). The command \
says what it replaced and what it kept, and what the feed now covers. Understands plain lists (one \
address or CIDR per line), FireHOL .netset and Spamhaus DROP (`NET ; SBLnnn`); `#` and `;` start \
comments. Overlapping and adjacent networks are merged. Bad lines are reported with their line \
numbers and skipped; the good ones are applied.\n\n\
A feed entry drops traffic from and to its addresses, so whoever controls the file decides what the \
site can reach. Refused, each with its reason: networks overlapping the LAN (the networks of \
capture.interface and those routed out of it, and enforce.lan_prefixes: give the router's config with \
-c), the allowlist, the gateway's own addresses, its next hops and resolvers, the fleet's MQTT broker \
and link peers, and bogons; entries wider than an IPv4 /8 or an IPv6 /16. A feed covering more than \
an IPv4 /6 (1/64 of IPv4) or an IPv6 /14, all entries together, is refused whole. When every entry is \
refused nothing changes and the command fails.\n\n\
Examples:\n  gatewarden blocklist import firehol_level1.netset --ttl 1d -c /etc/gatewarden/gatewarden.toml\n  \
gatewarden blocklist import drop.txt")]
    Import {
        /// The list to import.
        file: PathBuf,
        /// How long the entries last: 30s, 10m, 1h, 1d…
        #[arg(long, default_value = "1d", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// Import entries wider than IPv4 /8 or IPv6 /16, and a feed covering more than an IPv4 /6 or an
        /// IPv6 /14. Risky: a wide feed blocks a large part of the internet for the whole site, both
        /// ways; use it only for a list you know is meant that wide (a country list) and from a source
        /// you trust. The LAN, the allowlist, the gateway, its infrastructure and bogons stay refused.
        #[arg(long)]
        allow_wide: bool,
        /// The router's config, for its allowlist, LAN interface (capture.interface), enforce.lan_prefixes
        /// and fleet endpoints (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
        #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    gatewarden_core::duration::parse_within(s, 365 * 86_400, "a TTL")
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a P-384 CA (ca.crt, ca.key) in DIR.
    Init {
        /// Where the CA lives.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (orphans every certificate it issued).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate + key for a node, an operator or an integration (Home Assistant), signed by the CA.
    Issue {
        /// The node id (becomes the certificate CN, the MQTT user and its topic level).
        node_id: String,
        /// What the holder may do.
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["router", "detector", "monitor", "operator", "broker", "integration"]),
            |s: String| crate::pki::CertRole::parse(&s).expect("one of the possible values")))]
        role: crate::pki::CertRole,
        /// Where the CA lives; the result goes to DIR/nodes/NODE_ID.{crt,key}.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
        /// Validity in days (default 397: a stolen key stops working within about a year;
        /// renew with `pki issue` + `pki bundle`).
        #[arg(long, default_value_t = crate::pki::NODE_CERT_DAYS)]
        days: u32,
    },
    /// Revoke every certificate issued to a node (a stolen or retired one).
    ///
    /// Adds them to DIR/ca.crl (signed by the CA) and moves them to DIR/revoked/;
    /// the node's key is deleted. Then:
    ///   1. re-run `gatewarden pki mosquitto-conf` and restart Mosquitto: the broker refuses
    ///      the certificate in the TLS handshake (SIGHUP re-reads the list too, but only for
    ///      new connections: a holder connected now stays connected until a restart);
    ///   2. give every node the new ca.crl (`gatewarden pki bundle`, or copy it beside
    ///      /etc/gatewarden/pki/ca.crt): within 10 s a running node drops the holder's key and
    ///      refuses its sealed messages (counted as `revoked`); the `ctl` endpoint refuses its
    ///      handshakes after the node's next start.
    ///
    /// To let the node back in, issue it a new certificate (`gatewarden pki issue`).
    ///
    /// Examples:
    ///   gatewarden pki revoke router-2
    ///   gatewarden pki revoke det-1 --reason cessation-of-operation
    #[command(verbatim_doc_comment)]
    Revoke {
        /// The node id (certificate CN) to revoke; `gatewarden pki list` shows them.
        node_id: String,
        /// Why (written into the CRL).
        #[arg(long, value_enum, default_value = "key-compromise")]
        reason: crate::pki::RevokeReason,
        /// Where the CA lives.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
    },
    /// List the certificates the CA issued: valid, superseded (an id issued again), expired, revoked.
    List {
        /// Where the CA lives.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
    },
    /// Write a TLS-only Mosquitto config and ACL (one block per issued certificate) plus the broker certificate.
    MosquittoConf {
        /// Where the CA lives.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
        /// Output directory (default: DIR/mosquitto).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Listener port.
        #[arg(long, default_value_t = 8883)]
        port: u16,
        /// Listener address.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Names clients use for the broker (certificate SANs; default localhost and 127.0.0.1). Repeatable.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Run Mosquitto as this user (it must be able to read the broker key). Without it, run as
        /// root, the broker key goes to the `mosquitto` user, which Mosquitto drops root to;
        /// `--user root` keeps Mosquitto root. Mosquitto started by another user ignores it.
        #[arg(long)]
        user: Option<String>,
        /// Keep Mosquitto's persistence database here.
        #[arg(long)]
        persistence: Option<PathBuf>,
        /// Log to this file with debug detail, so the monitor can count the broker's refusals
        /// (set the monitor's `[mqtt] broker_log` to the same path).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Write the files one node needs to join the fleet, as a tree to copy onto its image.
    ///
    /// The tree holds etc/gatewarden/pki/{ca.crt,node.crt,node.key}, etc/gatewarden/node.toml
    /// (node id and broker address; the image's start script puts it in front of the role's
    /// default config) and, for a monitor, etc/mosquitto/ with a TLS-only broker config, its
    /// certificate and an ACL naming every node issued so far (issue all nodes first).
    /// The CA key stays in DIR.
    ///
    /// Examples:
    ///   gatewarden pki bundle router-1 --broker 192.168.50.3:8883 --out slot1/
    ///   gatewarden pki bundle monitor-1 --broker 192.168.50.3:8883 --out slot3/
    ///   tools/make-image.sh --bundle slot1/ --out images/slot1
    #[command(verbatim_doc_comment)]
    Bundle {
        /// The node id issued with `pki issue`.
        node_id: String,
        /// host:port of the broker's TLS listener as the node reaches it.
        #[arg(long)]
        broker: String,
        /// Where the CA lives.
        #[arg(long, default_value = "/etc/gatewarden/pki")]
        dir: PathBuf,
        /// Root of the tree to write.
        #[arg(long)]
        out: PathBuf,
        /// Extra names for the broker certificate (monitor only; default: the --broker host). Repeatable.
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct CtlArgs {
    /// The node's control endpoint, host:port.
    #[arg(long)]
    node: String,
    /// A PKI directory holding ca.crt and nodes/ID.{crt,key} (with --id).
    #[arg(long)]
    pki: Option<PathBuf>,
    /// The operator id inside --pki.
    #[arg(long)]
    id: Option<String>,
    /// The fleet CA certificate (instead of --pki).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The operator certificate (instead of --pki/--id).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The operator key (instead of --pki/--id).
    #[arg(long)]
    key: Option<PathBuf>,
    /// How long to wait for the node: 10s, 1m, … or seconds.
    #[arg(long, default_value = "10s", value_parser = gatewarden_core::duration::parse_duration)]
    timeout: std::time::Duration,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The node's status (JSON).
    Status,
    /// Addresses blocked now.
    Blocks,
    /// Block an address.
    Block {
        /// The address.
        ip: std::net::IpAddr,
        /// How long: 30s, 10m, 1h, 1h30m, 7d, or seconds.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Lift a block, or a contained MAC's containment.
    Unblock {
        /// The address, or the MAC (aa:bb:cc:dd:ee:ff).
        #[arg(value_parser = parse_unblock_target)]
        ip: UnblockTarget,
    },
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Interface to capture on (default: config `capture.interface`).
    #[arg(long, short = 'i')]
    interface: Option<String>,
    /// Stop after this long, e.g. 30s, 5m, 1h (default: until Ctrl-C).
    #[arg(long, value_parser = gatewarden_core::duration::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Bytes kept per packet, at least 128 (default: config `capture.snap_len`).
    #[arg(long)]
    snap_len: Option<u32>,
    /// Capture frames not addressed to this host too.
    #[arg(long)]
    promiscuous: bool,
    /// Serve the status page on this address while capturing.
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// Config file (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FeaturesArgs {
    /// The capture to read (pcap or pcapng).
    capture: PathBuf,
    /// Ground truth: CSV lines `src,start,end,label` (times in Unix seconds).
    #[arg(long, value_name = "LABELS.csv")]
    labels: Option<PathBuf>,
    /// Where to write the CSV (written to OUT.partial first, renamed when complete).
    #[arg(long, short = 'o', value_name = "OUT.csv")]
    output: PathBuf,
    /// Config file for flow-table limits (default: built-in defaults).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Which role to run (overrides GATEWARDEN_ROLE, the kernel command line and the config file).
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Config file (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists, else built-in defaults).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Router (or all): instead of a live interface, replay this pcap/pcapng into the bus once (for tests and
    /// demos of a multi-node setup), then keep running to receive verdicts.
    #[arg(long, value_name = "CAPTURE")]
    replay: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Capture traffic into flows and enforce verdicts.
    Router,
    /// Turn flows into verdicts and alerts.
    Detector,
    /// Store alerts, keep metrics, serve the dashboard.
    Monitor,
    /// All three in one process.
    All,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Router => Role::Router,
            RoleArg::Detector => Role::Detector,
            RoleArg::Monitor => Role::Monitor,
            RoleArg::All => Role::All,
        }
    }
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The capture to replay (pcap or pcapng; Ethernet, raw IP or Linux cooked).
    capture: PathBuf,
    /// max: as fast as possible; realtime: at the recorded pace (a pause longer than 10 s is
    /// shortened to 10 s, with a warning). Results are identical.
    #[arg(long, value_enum, default_value = "max")]
    speed: Speed,
    /// Serve the status page on this address during the replay and keep serving until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// Config file for thresholds (default: built-in defaults).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exit 0 if it is usable, 2 with every problem listed if not.
    Check {
        /// The file to check (default: /etc/gatewarden/gatewarden.toml).
        path: Option<PathBuf>,
    },
    /// Print the effective configuration with every default filled in.
    Show {
        /// Config file to read (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
        #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Whether `args` ask for JSON, looked at before parsing so that a usage error is JSON too.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json")
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, i32> {
    Config::load_or_default(path).map(|(c, _)| c).map_err(config_fail)
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    JSON_MODE.store(wants_json(&argv), std::sync::atomic::Ordering::Relaxed);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if json_mode() && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let detail = e.to_string();
                let first = detail.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
                let hint = "see `gatewarden --help`, or the command's --help";
                return fail_with(e.exit_code(), first, Some(hint), serde_json::Map::new());
            }
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Run(args) => cmd_run(args, cli.log_format),
        Command::Replay(args) => cmd_replay(args, cli.log_format),
        Command::Features(args) => cmd_features(args),
        Command::Watch(args) => cmd_watch(args, cli.log_format),
        Command::Config(ConfigCommand::Check { path }) => {
            let path = path.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
            match Config::load(&path) {
                Ok(cfg) => match check_model(&cfg.detector).and_then(|m| Ok((m, check_bus(&cfg)?))) {
                    Ok((model, bus)) if json_mode() => print_json(
                        serde_json::json!({"file": path.display().to_string(), "ok": true, "model": model, "bus": bus}),
                    ),
                    Ok((model, bus)) => {
                        println!("{}: ok", path.display());
                        println!("  model: {}", model["summary"].as_str().unwrap_or_default());
                        println!("  bus:   {bus}");
                        0
                    }
                    Err(e) => fail(EXIT_BAD_INPUT, format!("{}: {e}", path.display())),
                },
                Err(e) => config_fail(e),
            }
        }
        Command::Block(args) => cmd_block(args),
        Command::Unblock(args) => cmd_unblock(args),
        Command::Blocks(args) => cmd_blocks(args),
        Command::Blocklist(BlocklistCommand::Import { file, ttl, allow_wide, config }) => {
            cmd_import(&file, ttl, allow_wide, config.as_deref())
        }
        Command::Pki(cmd) => cmd_pki(cmd),
        Command::Ctl(args) => cmd_ctl(args),
        Command::Policy(args) => crate::policy_cli::run(args),
        Command::Model(args) => cmd_model(args),
        Command::Token(cmd) => cmd_token(cmd),
        Command::Alerts(args) => crate::alerts_cli::run(args),
        Command::Config(ConfigCommand::Show { config }) => match load_config(config.as_deref()) {
            Ok(c) if json_mode() => print_json(&c),
            Ok(c) => {
                print!("{}", c.to_toml());
                0
            }
            Err(code) => code,
        },
    }
}

/// `config check`'s look at `[mqtt]`: with a broker set, the CA, this node's
/// certificate and key are loaded and checked as `run` will at start (same
/// messages), so a missing or mismatched certificate is found before the node
/// is started, not by its failing. The role is checked when the file names one.
fn check_bus(cfg: &Config) -> Result<String, String> {
    if cfg.mqtt.broker.trim().is_empty() {
        return Ok("in-process only (no [mqtt] broker set)".into());
    }
    let role = cfg.role.unwrap_or(gatewarden_proto::role::Role::Router);
    let settings = crate::bus::mqtt::MqttSettings::from_config(&cfg.node_id, &cfg.mqtt, &cfg.bus, role);
    crate::bus::mqtt::check_identity(&settings, cfg.role).map_err(|e| format!("{e:#}"))?;
    Ok(format!(
        "broker {} as node {:?}, certificate {} checked against {}",
        cfg.mqtt.broker,
        cfg.node_id,
        cfg.mqtt.cert.display(),
        cfg.mqtt.ca.display()
    ))
}

/// `config check`'s look at `detector.model`: the file and its card loaded the way the
/// detector will (in the validator's child, with the configured limits), without the side
/// effects of a start (a stored upload is neither loaded nor set aside here).
fn check_model(d: &crate::config::DetectorConfig) -> Result<serde_json::Value, String> {
    use crate::detect::model::HostModel;
    let path = match d.model.trim() {
        "off" => return Ok(serde_json::json!({"path": "off", "summary": "off (heuristics and baseline only)"})),
        "" => {
            let m = HostModel::embedded().map_err(|e| format!("the embedded model: {e}"))?;
            let name = m.card().name.clone();
            return Ok(serde_json::json!({"path": "", "name": name, "summary": format!("embedded ({name})")}));
        }
        p => std::path::PathBuf::from(p),
    };
    let card = HostModel::card_path(&path);
    if path.is_file() && !card.exists() {
        return Err(format!(
            "detector.model = {}: no model card: {} is missing. Put the card tools/train/train.py wrote for this \
model beside it (NAME.tflite → NAME.card.json), or set detector.model = \"\" for the embedded model",
            path.display(),
            card.display()
        ));
    }
    let limits = crate::detect::validator::Limits::from_config(d);
    let what = format!("detector.model = {} (card {})", path.display(), card.display());
    let m = crate::roles::detector::load_checked(&path, &limits).map_err(|e| format!("{what}: {e}"))?;
    m.check_reference().map_err(|e| format!("{what}: {e}"))?;
    let c = m.card();
    Ok(serde_json::json!({
        "path": path,
        "card": card,
        "name": c.name,
        "schema": format!("{} v{}", c.feature_schema.name, c.feature_schema.version),
        "summary": format!("{} ok ({}, card {})", path.display(), c.name, card.display()),
    }))
}

fn cmd_run(args: RunArgs, log_format: Option<LogFormat>) -> i32 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A daemon: log to [log] file when set, reopened on SIGHUP (logrotate); SIGHUP never stops it.
    let log_file = if cfg.log.file.as_os_str().is_empty() {
        None
    } else {
        match crate::logging::LogFile::open(&cfg.log.file) {
            Ok(f) => Some(f),
            Err(e) => return fail(EXIT_BAD_INPUT, format!("{e:#}: fix log.file, or leave it empty to log to stderr")),
        }
    };
    crate::logging::init_to(&cfg.log.level, log_format.unwrap_or(cfg.log.format), log_file.clone());
    let hup = match &log_file {
        Some(f) => f.reopen_on_sighup(),
        None => crate::logging::ignore_sighup(),
    };
    if let Err(e) = hup {
        return fail(EXIT_FAILURE, format!("cannot install the SIGHUP handler: {e}"));
    }
    let (role, source) = match role::resolve_from_system(args.role.map(Role::from), cfg.role) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handlers() {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    if args.replay.is_some() && !role.runs_router() {
        return fail(
            EXIT_BAD_INPUT,
            format!("--replay feeds a router; this process runs {role} (add --role router or --role all)"),
        );
    }
    let opts = crate::node::RunOptions { replay: args.replay };
    match crate::node::run_with(role, source, &cfg, shutdown, opts) {
        Ok(()) => 0,
        Err(e) => fail(EXIT_FAILURE, format!("{e:#}")),
    }
}

fn cmd_pki(cmd: PkiCommand) -> i32 {
    use crate::pki::{self, PkiDir};
    let r = match cmd {
        PkiCommand::Init { dir, days, force } => pki::init(&dir, days, force).map(|p| {
            if json_mode() {
                print_json(serde_json::json!({"ca_cert": p.ca_cert(), "ca_key": p.ca_key()}));
                return;
            }
            println!(
                "CA written: {} (key {}, keep it offline if you can)",
                p.ca_cert().display(),
                p.ca_key().display()
            );
        }),
        PkiCommand::Issue { node_id, role, dir, days } => pki::issue(&dir, &node_id, role, &[], days).map(|(c, k)| {
            if json_mode() {
                print_json(serde_json::json!({"node": node_id, "role": role.to_string(), "cert": c, "key": k}));
                return;
            }
            println!("{role} certificate for {node_id}: {} (key {})", c.display(), k.display());
            println!("re-run `gatewarden pki mosquitto-conf` so the broker's ACL knows {node_id}");
        }),
        PkiCommand::Revoke { node_id, reason, dir } => pki::revoke(&dir, &node_id, reason).map(|done| {
            if json_mode() {
                let revoked: Vec<_> = done
                    .iter()
                    .map(|r| serde_json::json!({"node": r.node, "role": r.role.to_string(), "serial": r.serial.to_string()}))
                    .collect();
                print_json(serde_json::json!({"revoked": revoked, "crl": PkiDir(dir.clone()).crl()}));
                return;
            }
            for r in &done {
                println!("revoked {} ({}, serial {})", r.node, r.role, r.serial);
            }
            println!("{} now lists {} certificate(s).", PkiDir(dir.clone()).crl().display(), done.len());
            println!(
                "Next: `gatewarden pki mosquitto-conf --dir {}` and restart Mosquitto (SIGHUP keeps a connected holder connected); copy the new ca.crl beside each node's ca.crt (`gatewarden pki bundle`): running nodes take it within 10 s.",
                dir.display()
            );
        }),
        PkiCommand::List { dir } => pki::list(&dir).map(|certs| {
            if json_mode() {
                print_json(&certs);
                return;
            }
            println!("{:<24} {:<9} {:<11} {:<34} not after", "node", "role", "state", "serial");
            for c in &certs {
                println!("{:<24} {:<9} {:<11} {:<34} {}", c.node, c.role, c.state, c.serial, c.not_after);
            }
        }),
        PkiCommand::Bundle { node_id, broker, dir, out, names } => {
            let opts = pki::BundleOptions { node_id, broker, broker_names: names, out: out.clone() };
            pki::bundle(&dir, &opts).map(|files| {
                if json_mode() {
                    print_json(serde_json::json!({"node": opts.node_id, "out": out, "files": files}));
                    return;
                }
                for f in &files {
                    println!("{}", f.display());
                }
                println!("{} files for {} under {}", files.len(), opts.node_id, out.display());
            })
        }
        PkiCommand::MosquittoConf { dir, out, port, bind, names, user, persistence, log } => {
            let opts = pki::MosquittoOptions {
                out: out.unwrap_or_else(|| dir.join("mosquitto")),
                port,
                bind,
                names,
                run_as: user,
                persistence_dir: persistence,
                log,
            };
            pki::mosquitto_conf_here(&dir, &opts).map(|p| {
                if json_mode() {
                    print_json(serde_json::json!({"config": p}));
                    return;
                }
                println!("Mosquitto config: {} (run `mosquitto -c {}`)", p.display(), p.display());
            })
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(EXIT_FAILURE, format!("{e:#}")),
    }
}

fn cmd_ctl(args: CtlArgs) -> i32 {
    use crate::ctl::{ControlRequest, ControlResponse};
    use crate::pki::{CaVerifier, Identity, PkiDir};
    let (ca, cert, key) = match (&args.pki, &args.id, &args.ca, &args.cert, &args.key) {
        (Some(dir), Some(id), None, None, None) => {
            let p = PkiDir(dir.clone());
            (p.ca_cert(), p.node_cert(id), p.node_key(id))
        }
        (None, None, Some(ca), Some(c), Some(k)) => (ca.clone(), c.clone(), k.clone()),
        _ => return fail(EXIT_BAD_INPUT, "give either --pki DIR --id NAME, or --ca, --cert and --key"),
    };
    let ca = match CaVerifier::load(&ca) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("{e:#}")),
    };
    let id = match Identity::load(&cert, &key, &ca) {
        Ok(i) => i,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("{e:#}")),
    };
    let req = match args.command {
        CtlCommand::Status => ControlRequest::Status,
        CtlCommand::Blocks => ControlRequest::Blocks,
        CtlCommand::Block { ip, ttl } => {
            ControlRequest::Block { ip, ttl_s: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX) }
        }
        CtlCommand::Unblock { ip: UnblockTarget::Ip(ip) } => ControlRequest::Unblock { ip },
        CtlCommand::Unblock { ip: UnblockTarget::Mac(m) } => {
            ControlRequest::UnblockMac { mac: crate::enforce::spoof::mac_text(&m) }
        }
    };
    match crate::ctl::request(&args.node, id, ca, &req, args.timeout) {
        Ok(ControlResponse::Status(json)) if json_mode() => match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(v) => print_json(v),
            Err(e) => fail(EXIT_FAILURE, format!("the node's status is not JSON: {e}")),
        },
        Ok(ControlResponse::Status(json)) => {
            match serde_json::from_str::<serde_json::Value>(&json).and_then(|v| serde_json::to_string_pretty(&v)) {
                Ok(p) => println!("{p}"),
                Err(_) => println!("{json}"),
            }
            0
        }
        Ok(ControlResponse::Blocks(list)) => print_ctl_blocks(&args.node, &list, None),
        Ok(ControlResponse::BlocksPartial { shown, total }) => print_ctl_blocks(&args.node, &shown, Some(total)),
        Ok(ControlResponse::Done(s)) if json_mode() => print_json(serde_json::json!({ "done": s })),
        // The node's words: escaped like its block reasons.
        Ok(ControlResponse::Done(s)) => {
            println!("{}", crate::logging::escape(&s));
            0
        }
        Ok(ControlResponse::Error(e)) => fail(EXIT_FAILURE, crate::logging::escape(&e)),
        Err(e) => fail(EXIT_FAILURE, format!("{e:#}")),
    }
}

/// One row of `ctl blocks`: the router's words (the reason is a verdict's,
/// i.e. a detector's) with control characters escaped, so a compromised
/// detector or router cannot write escape sequences or forged rows into the
/// operator's terminal.
fn ctl_block_row(b: &crate::ctl::BlockEntry) -> String {
    let exp = b
        .expires_in_s
        .map(|s| gatewarden_core::duration::format_duration(u64::from(s)))
        .unwrap_or_else(|| "no timeout".into());
    // The element's own counter (packets since the block was written); "-" when it has none.
    let dropped = b.dropped.map_or_else(|| "-".to_string(), |d| d.packets.to_string());
    use crate::logging::escape;
    format!(
        "{:<40} {:>12} {:>9}  {:<9} {:<24} {}",
        escape(&b.target),
        exp,
        dropped,
        escape(&b.origin),
        senders_text(&b.senders),
        escape(&b.reason)
    )
}

/// The BY column of a block row: the detectors whose verdicts asked for a
/// detector block, comma-joined, "-" when none is known (an admin or feed
/// block, or one restored from a version that did not keep senders).
/// Escaped like the reason: the names are a router's words (`ctl blocks`
/// checks they are node ids first; this holds without that check too).
fn senders_text(senders: &[String]) -> String {
    if senders.is_empty() {
        return "-".into();
    }
    crate::logging::escape(&senders.join(","))
}

/// Prints a router's block list (`ctl blocks`); `total` when the router sent
/// only the first rows of a longer list.
fn print_ctl_blocks(node: &str, list: &[crate::ctl::BlockEntry], total: Option<usize>) -> i32 {
    if json_mode() {
        let blocks: Vec<_> = list
            .iter()
            .map(|b| {
                serde_json::json!({"target": b.target, "expires_in_s": b.expires_in_s, "origin": b.origin, "reason": b.reason, "senders": b.senders})
            })
            .collect();
        return print_json(serde_json::json!({ "blocks": blocks, "total": total.unwrap_or(list.len()) }));
    }
    // The answer is the router's word, checked as a bus message's would be.
    if let Err(e) = list.iter().try_for_each(|b| b.check()) {
        return fail(EXIT_FAILURE, format!("{node} answered an impossible block list: {e}"));
    }
    if list.is_empty() {
        println!("no blocks");
        return 0;
    }
    println!("{:<40} {:>12} {:>9}  {:<9} {:<24} REASON", "ADDRESS", "REMAINING", "DROPPED", "ORIGIN", "BY");
    for b in list {
        println!("{}", ctl_block_row(b));
    }
    if let Some(total) = total {
        println!(
            "showing {} of {total} blocks (the operator's and contained ones first); the whole list is \
                 on the router: `gatewarden blocks` there, or `nft list table inet gatewarden`",
            list.len()
        );
    }
    0
}

fn cmd_replay(args: ReplayArgs, log_format: Option<LogFormat>) -> i32 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(
        if args.serve.is_some() { &cfg.log.level } else { "warn" },
        log_format.unwrap_or(cfg.log.format),
    );
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handlers() {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    let registry = Registry::new();
    let state = MonitorState::new(Role::All, RoleSource::Flag, cfg.node_id.clone(), registry);
    if let Err(e) = crate::node::monitor::open_stores(&state, &cfg) {
        return fail(EXIT_FAILURE, format!("{e:#}"));
    }
    let server = match &args.serve {
        Some(addr) => match serve_for_cli(addr, &cfg, &state) {
            Ok(s) => Some(s),
            Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
        },
        None => None,
    };
    // Keep the charts moving while the replay runs.
    let sampler = server.as_ref().map(|_| {
        let st = state.clone();
        let sd = shutdown.clone();
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                while !sd.is_triggered() {
                    st.sample();
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            })
            .ok()
    });
    let progress = !json_mode() && std::io::stderr().is_terminal();
    let result = replay::replay(&args.capture, args.speed, &cfg, &state, &shutdown, progress);
    let code = match result {
        Ok(summary) => {
            if json_mode() {
                match serde_json::to_string(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(EXIT_FAILURE, e),
                }
            } else {
                print!("{}", summary.human());
            }
            0
        }
        Err(e) => fail(EXIT_BAD_INPUT, e),
    };
    if let Some(server) = server {
        if code == 0 && !shutdown.is_triggered() {
            eprintln!("replay finished; still serving http://{}/ — press Ctrl-C to stop", server.addr);
            state.sample();
            shutdown.wait_blocking();
        }
        shutdown.trigger();
        server.stop();
        if let Some(Some(t)) = sampler {
            let _ = t.join();
        }
    }
    code
}

fn cmd_features(args: FeaturesArgs) -> i32 {
    use crate::capture::{CaptureFile, PacketSource};
    use crate::features::{extract, labels::Labels};
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let labels = match &args.labels {
        Some(p) => match Labels::load(p) {
            Ok(l) => l,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        },
        None => Labels::default(),
    };
    let mut source = match CaptureFile::open(&args.capture) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let partial = args.output.with_extension("csv.partial");
    let file = match std::fs::File::create(&partial) {
        Ok(f) => f,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot create {}: {e}", partial.display())),
    };
    let mut out = std::io::BufWriter::new(file);
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(source.size_hint().unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template("extracting [{bar:30}] {bytes}/{total_bytes} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let result = extract::extract(&mut source, &labels, &cfg.flow, &mut out, |pos| {
        if let Some(b) = &bar {
            b.set_position(pos)
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    drop(out);
    match result {
        Ok(summary) => {
            if let Err(e) = std::fs::rename(&partial, &args.output) {
                return fail(
                    EXIT_FAILURE,
                    format!("cannot rename {} to {}: {e}", partial.display(), args.output.display()),
                );
            }
            if json_mode() {
                return print_json(serde_json::json!({
                    "output": args.output,
                    "rows": summary.rows,
                    "packets": summary.packets,
                    "skipped": summary.skipped,
                    "labels": summary.labels,
                }));
            }
            let labels: Vec<String> = summary.labels.iter().map(|(k, v)| format!("{k} {v}")).collect();
            eprintln!(
                "wrote {}: {} rows from {} packets ({} skipped); labels: {}",
                args.output.display(),
                summary.rows,
                summary.packets,
                summary.skipped,
                labels.join(", ")
            );
            0
        }
        Err(e) => {
            let code = if matches!(e, extract::ExtractError::Capture(_)) { EXIT_BAD_INPUT } else { EXIT_FAILURE };
            fail(code, format!("{e} (rows so far kept in {})", partial.display()))
        }
    }
}

fn cmd_watch(args: WatchArgs, log_format: Option<LogFormat>) -> i32 {
    let mut cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(i) = args.interface {
        cfg.capture.interface = i;
    }
    if let Some(n) = args.snap_len {
        cfg.capture.snap_len = n;
    }
    cfg.capture.promiscuous |= args.promiscuous;
    if cfg.capture.interface.is_empty() {
        return fail(EXIT_BAD_INPUT, "no interface: pass --interface IFACE or set capture.interface in the config");
    }
    let errors = cfg.validate();
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return fail(EXIT_BAD_INPUT, list.join("; "));
    }
    crate::logging::init(
        if args.serve.is_some() { &cfg.log.level } else { "warn" },
        log_format.unwrap_or(cfg.log.format),
    );
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handlers() {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    let state = MonitorState::new(Role::All, RoleSource::Flag, cfg.node_id.clone(), Registry::new());
    if let Err(e) = crate::node::monitor::open_stores(&state, &cfg) {
        return fail(EXIT_FAILURE, format!("{e:#}"));
    }
    let server = match &args.serve {
        Some(addr) => match start_server_for_cli(addr, &cfg, &state) {
            Ok(s) => Some(s),
            Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
        },
        None => None,
    };
    let iface = cfg.capture.interface.clone();
    // The login link only once the capture is open: a user without CAP_NET_RAW gets
    // the error alone, not a link to a page that is about to go away.
    let result = replay::watch(&cfg, &state, &shutdown, args.duration, || {
        if let Some(s) = &server {
            print_login_link(s, &cfg);
        }
        eprintln!("capturing on {iface}");
    });
    if let Some(s) = server {
        s.stop();
    }
    match result {
        Ok(summary) => {
            if json_mode() {
                match serde_json::to_string(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(EXIT_FAILURE, e),
                }
            } else {
                print!("{}", summary.human());
                if let Some(d) = summary.kernel_drops {
                    println!("  kernel drops {d}");
                }
            }
            0
        }
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

/// Opens the blocker for an admin command; the table must exist.
fn open_blocker(config: Option<&std::path::Path>) -> Result<crate::enforce::Blocker, i32> {
    open_blocker_with(config).map(|(b, _)| b)
}

/// [`open_blocker`] and the config it read (for `enforce.state_file`).
fn open_blocker_with(config: Option<&std::path::Path>) -> Result<(crate::enforce::Blocker, Config), i32> {
    let cfg = load_config(config)?;
    let enforce = crate::node::enforcement::enforce_config(&cfg);
    let mut b = crate::enforce::Blocker::open(enforce.settings(), None).map_err(|e| fail(EXIT_FAILURE, e))?;
    match b.table_exists() {
        Ok(true) => Ok((b, cfg)),
        Ok(false) => Err(fail(
            EXIT_FAILURE,
            "there is no `inet gatewarden` nftables table in this network namespace: start the router first \
(`gatewarden run --role router` with [enforce] enabled = true), or run this command in its namespace",
        )),
        Err(e) => Err(fail(EXIT_FAILURE, e)),
    }
}

/// Waits for the fleet endpoints' host names (`mqtt.broker`, link peers) to
/// resolve before a command blocks anything: a one-shot command has no second
/// chance, and blocking the broker cuts the node off from the fleet.
fn await_fleet_endpoints(b: &mut crate::enforce::Blocker) {
    for name in b.await_fleet_endpoints(std::time::Duration::from_secs(5)) {
        warn(format!(
            "cannot resolve {name} (mqtt.broker or a link peer) within 5 s: this command does not know its \
addresses, so it cannot refuse to block them; check the name, or put an address in the config"
        ));
    }
}

/// Saves the block sets to `enforce.state_file` after an admin change, so a
/// crash right after it keeps the change (the router also saves within 5 s).
fn save_block_state(b: &mut crate::enforce::Blocker, cfg: &Config) {
    if cfg.enforce.state_file.is_empty() {
        return;
    }
    let file = crate::enforce::persist::StateFile::new(&cfg.enforce.state_file);
    if let Err(e) = file.snapshot(gatewarden_core::clock::unix_now_ms, |now| b.saved_blocks(now), |_| false) {
        warn(format!("the change is in the kernel but not saved yet ({e:#}); the router saves it within 5 s"));
    }
}

fn cmd_block(args: BlockArgs) -> i32 {
    let (mut b, cfg) = match open_blocker_with(args.config.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    await_fleet_endpoints(&mut b);
    match b.block(args.addr, args.ttl, crate::enforce::Origin::Admin, &args.reason) {
        Ok(crate::enforce::BlockOutcome::Blocked { ttl, evicted, .. }) => {
            save_block_state(&mut b, &cfg);
            if json_mode() {
                return print_json(serde_json::json!({
                    "blocked": args.addr,
                    "origin": "admin",
                    "ttl_s": ttl.as_secs(),
                    "kept_longer": ttl > args.ttl,
                    "evicted": evicted.len(),
                }));
            }
            if ttl > args.ttl {
                println!(
                    "{} is already blocked for longer: {} left (admin); kept",
                    args.addr,
                    gatewarden_core::duration::format_duration(ttl.as_secs())
                );
                return 0;
            }
            println!("blocked {} for {} (admin)", args.addr, gatewarden_core::duration::format_duration(ttl.as_secs()));
            if !evicted.is_empty() {
                warn(format!("the admin block set was full; evicted {} entries closest to expiry", evicted.len()));
            }
            0
        }
        Ok(crate::enforce::BlockOutcome::Refused { allowed_by, why }) => fail(
            EXIT_FAILURE,
            match why {
                crate::enforce::Protection::Allowlist => format!(
                    "refused: {} is allowlisted by {allowed_by} ([enforce] allowlist); nothing was blocked",
                    args.addr
                ),
                other => format!("refused: {} is {} ({allowed_by}); nothing was blocked", args.addr, other.describe()),
            },
        ),
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

fn cmd_unblock(args: UnblockArgs) -> i32 {
    let (mut b, cfg) = match open_blocker_with(args.config.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let addr = match args.addr {
        UnblockTarget::Ip(a) => a,
        UnblockTarget::Mac(mac) => {
            return match b.uncontain(mac) {
                Ok(true) => {
                    save_block_state(&mut b, &cfg);
                    if json_mode() {
                        return print_json(serde_json::json!({"released": args.addr.to_string()}));
                    }
                    println!("lifted the containment of {}", args.addr);
                    0
                }
                Ok(false) => fail(
                    EXIT_FAILURE,
                    format!("{} is not contained (expired or already lifted; see `gatewarden blocks`)", args.addr),
                ),
                Err(e) => fail(EXIT_FAILURE, e),
            }
        }
    };
    match b.unblock(addr) {
        Ok(origins) if !origins.is_empty() => {
            save_block_state(&mut b, &cfg);
            let names: Vec<&str> = origins.iter().map(|o| o.as_str()).collect();
            if json_mode() {
                return print_json(serde_json::json!({"unblocked": addr, "origins": names}));
            }
            println!("unblocked {addr} ({})", names.join(", "));
            0
        }
        Ok(_) => {
            fail(EXIT_FAILURE, format!("{addr} is not in the detector or admin block sets (see `gatewarden blocks`)"))
        }
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

fn cmd_blocks(args: BlocksArgs) -> i32 {
    let mut b = match open_blocker(args.config.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (list, counters) = match (b.list(), b.counters()) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_FAILURE, e),
    };
    let contained = match b.contained_list(gatewarden_core::clock::unix_now_ms()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    if json_mode() {
        let counters: serde_json::Map<String, serde_json::Value> =
            counters.iter().map(|(k, (p, by))| (k.clone(), serde_json::json!({"packets": p, "bytes": by}))).collect();
        println!("{}", serde_json::json!({"blocks": list, "contained": contained, "counters": counters}));
        return 0;
    }
    use gatewarden_core::duration::format_duration;
    println!(
        "{:<40} {:<9} {:>10} {:>10} {:>9}  {:<24} REASON",
        "ADDRESS", "ORIGIN", "REMAINING", "TIMEOUT", "DROPPED", "BY"
    );
    for e in &list {
        println!("{}", block_row(e));
    }
    println!("{} active block(s)", list.len());
    if !contained.is_empty() {
        println!();
        println!("{:<17} {:>10} {:>10}  {:<27}  FORGED", "CONTAINED MAC", "REMAINING", "TIMEOUT", "SINCE");
        for c in &contained {
            let more = c.reason.rsplit_once(" +").map(|(_, m)| format!(" +{m}")).unwrap_or_default();
            println!(
                "{:<17} {:>10} {:>10}  {:<27}  {}{more}",
                c.mac,
                format_duration(c.remaining_s),
                format_duration(c.timeout_s),
                gatewarden_core::clock::rfc3339(c.since.saturating_mul(1_000_000_000)),
                c.forged.join(", ")
            );
        }
        println!("{} contained MAC(s); lift one with `gatewarden unblock MAC`", contained.len());
    }
    for (name, (p, _)) in &counters {
        println!("counter {name}: {p} packets");
    }
    0
}

/// One row of `gatewarden blocks`: the kernel's element with, for a
/// detector block, the detectors that asked for it (BY), so an operator
/// sees which blocks a detector whose certificate may be stolen wrote.
fn block_row(e: &crate::enforce::blocker::KernelBlock) -> String {
    use gatewarden_core::duration::format_duration;
    // The element's own counter (packets since the block was written); "-" in a table without them.
    let dropped = e.dropped_packets.map_or_else(|| "-".to_string(), |p| p.to_string());
    format!(
        "{:<40} {:<9} {:>10} {:>10} {:>9}  {:<24} {}",
        e.target,
        e.origin.as_str(),
        format_duration(e.remaining_s),
        format_duration(e.timeout_s),
        dropped,
        senders_text(&e.senders),
        // A verdict's reason (a detector's words): escaped as `ctl blocks` does.
        crate::logging::escape(&e.reason)
    )
}

fn cmd_import(
    file: &std::path::Path,
    ttl: std::time::Duration,
    allow_wide: bool,
    config: Option<&std::path::Path>,
) -> i32 {
    use crate::enforce::blocker::{FeedChecks, FeedError, FeedRefusal};
    use crate::enforce::feeds::{coverage_text, Cidr};
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("cannot read {}: {e}", file.display())),
    };
    let feed = crate::enforce::feeds::parse_feed(&text);
    for bad in &feed.bad {
        warn(format!("{}: {bad} (skipped)", file.display()));
    }
    if feed.entries.is_empty() {
        return fail(
            EXIT_BAD_INPUT,
            format!("{}: no usable address or CIDR lines; nothing was changed", file.display()),
        );
    }
    let (mut b, cfg) = match open_blocker_with(config) {
        Ok(b) => b,
        Err(code) => return code,
    };
    await_fleet_endpoints(&mut b);
    // The LAN: what no feed may cover.
    let iface = &cfg.capture.interface;
    let mut site = match crate::enforce::blocker::lan_networks(iface) {
        Ok(v) => v,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot read the networks of the LAN interface {iface}: {e}")),
    };
    if iface.is_empty() {
        warn(
            "capture.interface is not set in the config, so this command does not know the LAN and cannot refuse \
feed entries that cover it: give the router's config with -c, or list the LAN in enforce.lan_prefixes",
        );
    } else if site.is_empty() {
        warn(format!(
            "the LAN interface {iface} (capture.interface) has no networks here, so feed entries covering the LAN \
cannot be refused: run this in the router's network namespace, or list the LAN in enforce.lan_prefixes"
        ));
    }
    site.extend(cfg.enforce.lan_prefixes.iter().filter_map(|s| s.parse::<Cidr>().ok()));
    let checks = FeedChecks { site, allow_wide };
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let show_refused = |refused: &[(Cidr, FeedRefusal)]| {
        for (c, why) in refused {
            let more = if matches!(why, FeedRefusal::TooWide(_)) { "; --allow-wide imports it" } else { "" };
            warn(format!("{}: {c} {}{more} (refused)", file.display(), why.describe()));
        }
    };
    let refusals = |refused: &[(Cidr, FeedRefusal)]| -> serde_json::Value {
        refused.iter().map(|(c, why)| serde_json::json!({"entry": c.to_string(), "reason": why.describe()})).collect()
    };
    let report = match b.import_feed_with(&feed.entries, ttl, &format!("feed {name}"), &checks) {
        Ok(r) => r,
        Err(FeedError::AllRefused { refused }) => {
            show_refused(&refused);
            let mut extra = serde_json::Map::new();
            extra.insert("refusals".into(), refusals(&refused));
            return fail_with(
                EXIT_BAD_INPUT,
                format!(
                    "{}: every entry was refused ({}); nothing was changed, the current feed stays",
                    file.display(),
                    refused.len()
                ),
                Some(
                    "see each entry's reason above: a feed may not cover the LAN, the allowlist, this gateway, \
its infrastructure or bogons",
                ),
                extra,
            );
        }
        Err(e @ FeedError::TooMuch { .. }) => {
            let mut extra = serde_json::Map::new();
            if let FeedError::TooMuch { refused, .. } = &e {
                show_refused(refused);
                extra.insert("refusals".into(), refusals(refused));
            }
            return fail_with(
                EXIT_BAD_INPUT,
                format!("{}: {e}", file.display()),
                Some(
                    "a threat feed covers far less: check where the file comes from. If it is meant to be this wide \
(a country list) and its source is trusted, import it again with --allow-wide",
                ),
                extra,
            );
        }
        Err(FeedError::Netlink(e)) => return fail(EXIT_FAILURE, e),
    };
    save_block_state(&mut b, &cfg);
    show_refused(&report.refused);
    let fam_name = |f: crate::enforce::feeds::Fam| if f == crate::enforce::feeds::Fam::V4 { "IPv4" } else { "IPv6" };
    let ranges = |n: usize| if n == 1 { "1 range".to_string() } else { format!("{n} ranges") };
    let from = |v: &[String]| if v.is_empty() { String::new() } else { format!(" ({})", v.join(", ")) };
    if json_mode() {
        let families: Vec<serde_json::Value> = report
            .families
            .iter()
            .map(|f| {
                serde_json::json!({
                    "family": fam_name(f.fam),
                    "replaced": f.replaced,
                    "ranges": f.written,
                    "addresses": f.covered.to_string(),
                    "covers": coverage_text(f.fam, f.covered),
                    "before": f.before,
                    "before_from": f.before_from,
                })
            })
            .collect();
        return print_json(serde_json::json!({
            "file": file,
            "imported": feed.entries.len() - report.refused.len(),
            "ranges": report.ranges,
            "ttl_s": ttl.as_secs(),
            "bad_lines": feed.bad.len(),
            "refused": report.refused.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
            "refusals": refusals(&report.refused),
            "allow_wide": allow_wide,
            "families": families,
        }));
    }
    println!(
        "imported {} entries as {} from {} for {} ({} bad lines, {} refused)",
        feed.entries.len() - report.refused.len(),
        ranges(report.ranges),
        file.display(),
        gatewarden_core::duration::format_duration(ttl.as_secs()),
        feed.bad.len(),
        report.refused.len()
    );
    for f in &report.families {
        let fam = fam_name(f.fam);
        if f.replaced {
            let before = match f.before {
                0 => format!("the {fam} feed was empty"),
                n => format!("replaced {}{}", ranges(n), from(&f.before_from)),
            };
            println!("{fam}: wrote {}, covers {}; {before}", ranges(f.written), coverage_text(f.fam, f.covered));
        } else {
            let why = if feed.entries.iter().any(|c| c.fam() == f.fam) {
                format!("every {fam} entry of this file was refused")
            } else {
                format!("this file has no {fam} entries")
            };
            match f.before {
                0 => println!("{fam}: the feed stays empty: {why}"),
                n => println!("{fam}: kept the current feed, {}{}: {why}", ranges(n), from(&f.before_from)),
            }
        }
    }
    0
}

fn cmd_model(args: ModelArgs) -> i32 {
    use crate::detect::model::HostModel;
    use crate::detect::validator::{worker_main, Limits};
    if args.validate_worker {
        return worker_main(args.max_batch, args.memory_limit_mb, args.cpu_limit_s);
    }
    let loaded = match &args.path {
        // A file is checked in the validator's child first: a crafted one cannot crash this command.
        Some(p) => crate::roles::detector::load_checked(p, &Limits { max_batch: args.max_batch, ..Limits::default() }),
        None => HostModel::embedded(),
    };
    let model = match loaded {
        Ok(m) => m,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    if model.card().reference.is_some() {
        if let Err(e) = model.check_reference() {
            return fail(EXIT_BAD_INPUT, e);
        }
    }
    let zero = vec![0.0f32; crate::detect::model::host_columns().len()];
    if let Err(e) = model.classify(&[zero.as_slice()]) {
        return fail(EXIT_BAD_INPUT, e);
    }
    let card = model.card();
    if json_mode() {
        println!("{}", serde_json::to_string_pretty(card).unwrap_or_default());
        return 0;
    }
    println!("{}: ok", model.origin());
    println!("  name        {} (created {})", card.name, card.created);
    println!(
        "  schema      {} v{}, {} input columns",
        card.feature_schema.name,
        card.feature_schema.version,
        card.feature_schema.columns.len()
    );
    println!("  classes     {}", card.classes.join(", "));
    println!("  layers      {}", card.architecture);
    let c = &card.calibration;
    println!(
        "  calibration {} T = {:.3}: expected calibration error {:.4} before, {:.4} after ({} bins, {} held-out rows)",
        c.method, c.temperature, c.ece_before, c.ece_after, c.bins, c.rows
    );
    println!("  held out    {} sessions: {}", c.held_out_sessions.len(), c.held_out_sessions.join(", "));
    // Per-class precision on the held-out sessions: the raw argmax, and what the detector gets
    // (after OOD abstentions, calibration and the class floors) when train.py measured it.
    let precision = |per: &serde_json::Map<String, serde_json::Value>| -> String {
        card.classes
            .iter()
            .filter_map(|k| per.get(k).map(|v| (k, v)))
            .map(|(k, v)| match v.get("precision").and_then(|x| x.as_f64()) {
                Some(p) => format!("{k} {p:.3} ({} rows)", v.get("support").and_then(|x| x.as_u64()).unwrap_or(0)),
                None => format!("{k} – (never predicted)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(per) = card.validation_metrics.get("per_class").and_then(|v| v.as_object()) {
        println!("  precision   {} (held-out sessions, raw)", precision(per));
    }
    if let Some(g) = card.validation_metrics.get("guarded") {
        if let Some(per) = g.get("per_class").and_then(|v| v.as_object()) {
            println!(
                "              {} (held-out sessions, as the detector sees it: {} of {} rows abstained)",
                precision(per),
                g.get("abstained").and_then(|x| x.as_u64()).unwrap_or(0),
                g.get("rows").and_then(|x| x.as_u64()).unwrap_or(0)
            );
        }
    }
    if let Some(v) = card.validation_metrics.get("sources") {
        println!("  validation  {v}");
    }
    for f in &card.class_floors {
        println!("  floor       \"{}\" only at {} ≥ {}; below, it counts as benign", f.class, f.column, f.min);
    }
    println!(
        "  OOD ranges  the model abstains on a host when an input is outside min–max ± {:.0} % of the range:",
        card.ood.margin * 100.0
    );
    println!("    {:<28} {:>12} {:>12} {:>12} {:>12}", "input", "min", "p0.5", "p99.5", "max");
    for r in &card.ood.features {
        println!("    {:<28} {:>12} {:>12} {:>12} {:>12}", r.column, num(r.min), num(r.p0_5), num(r.p99_5), num(r.max));
    }
    0
}

/// A statistic for a table column: integers plainly, others with up to 4 decimals.
fn num(x: f32) -> String {
    if x.fract() == 0.0 && x.abs() < 1e12 {
        format!("{x:.0}")
    } else {
        format!("{:.4}", x).trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `replay --serve` and `watch --serve`: access control from the config, and a login link for the operator who started it.
fn serve_for_cli(addr: &str, cfg: &Config, state: &std::sync::Arc<MonitorState>) -> anyhow::Result<HttpServer> {
    let server = start_server_for_cli(addr, cfg, state)?;
    print_login_link(&server, cfg);
    Ok(server)
}

/// Binds the status page for `replay`/`watch --serve` (so a taken address fails before
/// anything else starts) without printing its login link yet.
fn start_server_for_cli(addr: &str, cfg: &Config, state: &std::sync::Arc<MonitorState>) -> anyhow::Result<HttpServer> {
    let access = crate::monitor::http::Access::from_config(&cfg.http, &cfg.monitor)?;
    HttpServer::start_with(addr, state.clone(), access)
}

/// Whoever started this from a terminal is the operator: give them an admin link
/// (12 h, or less when http.max_token_ttl_s says so: the server would refuse a longer one).
fn print_login_link(server: &HttpServer, cfg: &Config) {
    let ttl_s = (12 * 3600).min(cfg.http.max_token_ttl_s);
    let token = server.issue_token("operator", crate::monitor::auth::AccessRole::Admin, ttl_s);
    eprintln!("status page: http://{}/#token={token}", server.addr);
}

fn cmd_token(cmd: TokenCommand) -> i32 {
    use crate::monitor::auth::TokenSigner;
    let (key, config) = match &cmd {
        TokenCommand::Issue { key, config, .. } | TokenCommand::Jwks { key, config } => (key.clone(), config.clone()),
    };
    // The config says how long a token may live; with only --key, the default cap.
    let cfg = if key.is_none() || config.is_some() {
        match load_config(config.as_deref()) {
            Ok(c) => Some(c),
            Err(code) => return code,
        }
    } else {
        None
    };
    let max_ttl_s = cfg.as_ref().map_or(crate::monitor::auth::DEFAULT_MAX_TOKEN_TTL_S, |c| c.http.max_token_ttl_s);
    if let TokenCommand::Issue { ttl, .. } = &cmd {
        if *ttl > max_ttl_s {
            use gatewarden_core::duration::format_duration as dur;
            return fail(
                EXIT_BAD_INPUT,
                format!(
                    "--ttl {}: the monitor accepts tokens living at most {} (http.max_token_ttl_s) and would refuse this one; \
                     give a shorter --ttl, or raise http.max_token_ttl_s in the monitor's config and pass it with -c",
                    dur(*ttl),
                    dur(max_ttl_s)
                ),
            );
        }
    }
    let path = match key.or_else(|| cfg.as_ref().and_then(|c| TokenSigner::configured_path(&c.http, &c.monitor))) {
        Some(p) => p,
        None => {
            return fail(
                EXIT_BAD_INPUT,
                "the config names no signing key: set [monitor] data_dir (or [http] jwt_key) in the monitor's config and pass it with -c, or give --key FILE",
            )
        }
    };
    let signer = match TokenSigner::load_or_create(&path) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
    };
    match cmd {
        TokenCommand::Issue { role, ttl, sub, .. } => {
            if sub.is_empty() || sub.len() > 128 {
                return fail(EXIT_BAD_INPUT, "--sub must be 1 to 128 characters");
            }
            let now = gatewarden_core::clock::unix_now();
            let token = signer.issue(&sub, role, ttl, now);
            if json_mode() {
                return print_json(serde_json::json!({
                    "token": token,
                    "role": role.as_str(),
                    "sub": sub,
                    "expires": now + ttl,
                }));
            }
            println!("{token}");
        }
        TokenCommand::Jwks { .. } if json_mode() => return print_json(signer.jwks()),
        TokenCommand::Jwks { .. } => println!("{}", signer.jwks()),
    }
    0
}

#[cfg(test)]
mod blocks_tests {
    use super::*;

    /// Red-team finding: a verdict's reason (a detector's words) becomes the
    /// block's nftables comment, and `ctl blocks` printed it as it came: a
    /// compromised detector could clear the operator's screen, set the
    /// terminal's title or clipboard, or print forged rows.
    #[test]
    fn a_block_reason_with_escape_sequences_prints_inert_on_one_row() {
        let b = crate::ctl::BlockEntry {
            target: "192.0.2.9\u{1b}[8m".into(),
            expires_in_s: Some(60),
            origin: "detector\r".into(),
            reason:
                "scan\u{1b}[2J\u{1b}[H\u{1b}]52;c;cm0gLXJmIH4=\u{7}\n203.0.113.1  1h  -  admin  ok\u{9b}31m\u{202e}"
                    .into(),
            dropped: None,
            senders: vec!["det-1\u{1b}]0;x\u{7}".into()],
        };
        let row = ctl_block_row(&b);
        assert!(!row.chars().any(|c| c.is_control() || c == '\u{202e}'), "{row:?}");
        assert!(row.contains("scan") && row.contains("192.0.2.9") && row.contains("detector"), "{row:?}");
        assert!(row.contains("det-1"), "{row:?}");
    }

    /// An operator deciding whether to revoke a detector's certificate must
    /// see which blocks it asked for: `gatewarden blocks` and `ctl blocks`
    /// print a detector block's senders (BY), "-" for a block without
    /// (an admin's, or one whose sender is unknown).
    #[test]
    fn a_detector_blocks_senders_are_printed() {
        use crate::enforce::blocker::KernelBlock;
        let kernel = |origin, senders: &[&str]| KernelBlock {
            target: "203.0.113.7".into(),
            origin,
            timeout_s: 300,
            remaining_s: 200,
            reason: "port scan".into(),
            dropped_packets: Some(3),
            dropped_bytes: Some(180),
            age_s: 100,
            senders: senders.iter().map(|s| s.to_string()).collect(),
        };
        let shared = block_row(&kernel(crate::enforce::Origin::Detector, &["det-1", "det-2"]));
        assert!(shared.contains(" det-1,det-2 "), "{shared:?}");
        assert!(shared.ends_with("port scan"), "{shared:?}");
        let admin = block_row(&kernel(crate::enforce::Origin::Admin, &[]));
        assert!(admin.contains(" -  ") && !admin.contains("det-"), "{admin:?}");
        // `--json` carries them as a list.
        let json = serde_json::to_value(kernel(crate::enforce::Origin::Detector, &["det-1"])).unwrap();
        assert_eq!(json["senders"], serde_json::json!(["det-1"]), "{json}");
        // `ctl blocks`: the router's entry, the same column.
        let entry = crate::ctl::BlockEntry {
            target: "203.0.113.7".into(),
            expires_in_s: Some(200),
            origin: "detector".into(),
            reason: "port scan".into(),
            dropped: None,
            senders: vec!["det-2".into()],
        };
        let row = ctl_block_row(&entry);
        assert!(row.contains(" det-2 ") && row.ends_with("port scan"), "{row:?}");
        let none = ctl_block_row(&crate::ctl::BlockEntry { senders: Vec::new(), ..entry });
        assert!(!none.contains("det-2"), "{none:?}");
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn issue(args: &[&str]) -> i32 {
        let cli = Cli::try_parse_from([&["gatewarden", "token", "issue", "--role", "viewer"], args].concat())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Token(cmd) = cli.command else { panic!("not a token command") };
        cmd_token(cmd)
    }

    #[test]
    fn token_issue_refuses_a_ttl_over_the_cap_and_takes_the_block_duration_syntax() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("jwt.pem");
        let key = key.to_str().unwrap();
        // Over the default cap (90 d): refused before any key is made.
        assert_eq!(issue(&["--ttl", "91d", "--key", key]), EXIT_BAD_INPUT);
        assert!(!d.path().join("jwt.pem").exists(), "a refused issue made a key");
        assert_eq!(issue(&["--ttl", "90d", "--key", key]), 0);
        assert_eq!(issue(&["--ttl", "1h30m", "--key", key]), 0, "`gatewarden block --ttl` syntax");
        // Past the absolute ceiling, clap refuses it with the parser's message.
        let e = Cli::try_parse_from(["gatewarden", "token", "issue", "--role", "admin", "--ttl", "400d"]).unwrap_err();
        assert!(e.to_string().contains("between 1s and 366d"), "{e}");
        // The configured cap, from -c.
        let cfg = d.path().join("gw.toml");
        std::fs::write(&cfg, "[http]\nmax_token_ttl_s = 3600\n").unwrap();
        let cfg = cfg.to_str().unwrap();
        assert_eq!(issue(&["--ttl", "1h", "--key", key, "-c", cfg]), 0);
        assert_eq!(issue(&["--ttl", "1h1s", "--key", key, "-c", cfg]), EXIT_BAD_INPUT);
        // A cap outside a minute to a year is a config error.
        std::fs::write(d.path().join("bad.toml"), "[http]\nmax_token_ttl_s = 0\n").unwrap();
        let err = Config::load(&d.path().join("bad.toml")).unwrap_err().to_string();
        assert!(err.contains("http.max_token_ttl_s"), "{err}");
    }
}
