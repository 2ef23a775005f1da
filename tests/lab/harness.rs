//! The traffic lab: a small IoT site in network namespaces, real services,
//! benign device profiles, attacks with real tools, captures with ground
//! truth, and scoring against a live `gatewarden run --role all`.
//!
//! ```text
//!  cam1-3 sensor1-2 thermostat1 plug1-2 tv1 pc1 nas1 admin hub1 (13 benign devices)   attacker
//!    └─────────────────────────────────────────────────────────────────────┴───────────┘
//!          veth ports of bridge `lan0` (192.0.2.1/24, 2001:db8:10::1/64)
//!          [router namespace: gatewarden, tcpdump, dnsmasq DHCP on lan0]
//!              │ lan1 192.0.2.129/25 ── [iot: 30 polled devices 192.0.2.130-159, HTTP :80]
//!              │ wan0 198.51.100.1, 2001:db8:20::1
//!              [wan namespace 198.51.100.10, 2001:db8:20::10, 203.0.113.50,
//!               backup host 198.51.100.20, 64 web hosts 198.51.100.100-163]
//!       HTTP :80 and HTTPS :443 (+ Basic-auth /admin/, POST /login, /blob/SIZE,
//!       /flaky, PUT /upload), Mosquitto :1883 (anonymous or with a password),
//!       busybox telnetd :23, dnsmasq :53, sshd :22 (+ sftp), NTP-like :123, iperf3
//!                                      │ inet0 203.0.113.129/25
//!                    [inet_attacker 203.0.113.166: attacks from the Internet side]
//! ```
//!
//! The hub (192.0.2.50/25) reaches its 30 polled devices through the router
//! (they sit on the router's `lan1`), so that traffic crosses `lan0`'s own
//! port, where gatewarden captures: frames bridged between two `lan0` ports
//! never reach that capture.
//!
//! The attacker also has 2001:db8:10::66 for the IPv6 scenarios.
//!
//! Only TEST-NET addresses; nothing touches the root namespace. Every
//! namespace is named `gw<pid>-<seq>-<role>` (see `common::netns`), so parallel
//! runs do not collide; dropping the [`Lab`] kills every process inside and
//! deletes the namespaces. The router only sees traffic that crosses it (it
//! is the LAN's gateway, not a tap), so attacks target the WAN side.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::netns::{link, link_to_bridge, Netns};
use crate::common::{root, shipped_bin, Guard};

/// The WAN server's address (all services).
pub const WAN: &str = "198.51.100.10";
/// An external host no device has talked to before (on the WAN namespace's loopback).
pub const NEW_HOST: &str = "203.0.113.50";
/// The attacker's LAN address.
pub const ATTACKER: &str = "192.0.2.66";
/// The attacker's IPv6 LAN address.
pub const ATTACKER6: &str = "2001:db8:10::66";
/// The WAN server's IPv6 address.
pub const WAN6: &str = "2001:db8:20::10";
/// An attacker on the Internet side, beyond the WAN server.
pub const INET_ATTACKER: &str = "203.0.113.166";

/// Tools the lab runs; `tools/test.sh` installs them.
pub const TOOLS: [&str; 21] = [
    "tcpdump",
    "nmap",
    "hping3",
    "hydra",
    "dnsmasq",
    "sshd",
    "ssh",
    "ssh-keygen",
    "mosquitto",
    "mosquitto_pub",
    "mosquitto_passwd",
    "busybox",
    "slowhttptest",
    "iperf3",
    "dig",
    "curl",
    "python3",
    "openssl",
    "scp",
    "nft",
    "arp-scan",
];

/// Whether the lab can run here: root, iproute2 and every tool in [`TOOLS`].
/// With env `CI` set a missing prerequisite panics; otherwise it prints
/// `SKIPPED` and returns false.
pub fn prerequisites(test: &str) -> bool {
    if !crate::common::netns::require_root(test) {
        return false;
    }
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| which(t).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("missing {}: tools/test.sh installs them (as root)", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; CI must run the lab");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// Unix time now, seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A device (or the attacker) on the LAN.
pub struct Device {
    /// Short name, e.g. `cam1`.
    pub name: &'static str,
    /// Group: cameras, sensors, plugs, admin, attacker.
    pub group: &'static str,
    /// LAN address.
    pub addr: &'static str,
    /// IPv6 address, where the device has one (the attackers).
    pub addr6: Option<&'static str>,
    /// Benign behaviours it runs (see tests/lab/benign.sh), with their argument.
    pub profiles: &'static [(&'static str, &'static str)],
    /// Network prefix length of its LAN address.
    pub prefix: u8,
    /// Its namespace.
    pub ns: Netns,
}

/// (name, group, address, profiles).
type DeviceSpec = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The benign devices (each with several behaviours of tests/lab/benign.sh;
/// "DIR" is replaced by the lab's directory) and the attacker.
const DEVICES: [DeviceSpec; 14] = [
    (
        "cam1",
        "cameras",
        "192.0.2.11",
        &[("camera_udp", "5211"), ("poll", ""), ("dns", ""), ("ntp", ""), ("dhcp", ""), ("mqtt_session", "cam1")],
    ),
    (
        "cam2",
        "cameras",
        "192.0.2.12",
        &[("camera_tcp", "5212"), ("dns", ""), ("ntp", ""), ("mdns", ""), ("ota_https", "")],
    ),
    (
        "cam3",
        "cameras",
        "192.0.2.13",
        &[("camera_udp", "5213"), ("backup", ""), ("ntp", ""), ("dhcp", ""), ("mqtt_msg", "cam3")],
    ),
    (
        "sensor1",
        "sensors",
        "192.0.2.21",
        &[("mqtt_msg", "sensor1"), ("dns", ""), ("ntp", ""), ("mqtt_burst", "sensor1")],
    ),
    (
        "sensor2",
        "sensors",
        "192.0.2.22",
        &[("mqtt_session", "sensor2"), ("ntp", ""), ("dhcp", ""), ("mqtt_burst", "sensor2")],
    ),
    (
        "thermostat1",
        "sensors",
        "192.0.2.23",
        &[("poll", ""), ("mqtt_msg", "thermostat1"), ("ntp", ""), ("ssdp", ""), ("ota_http", "")],
    ),
    (
        "plug1",
        "plugs",
        "192.0.2.31",
        &[("mqtt_msg", "plug1"), ("poll", ""), ("ota_http", ""), ("dns", ""), ("mdns", "")],
    ),
    ("plug2", "plugs", "192.0.2.32", &[("mqtt_session", "plug2"), ("ntp", ""), ("mdns", ""), ("dhcp", "")]),
    (
        "tv1",
        "media",
        "192.0.2.35",
        &[("ssdp", ""), ("mdns", ""), ("speedtest", "5221"), ("ota_https", ""), ("dns", "")],
    ),
    ("admin", "admin", "192.0.2.40", &[("admin", "DIR"), ("dns", ""), ("ntp", "")]),
    (
        "pc1",
        "pcs",
        "192.0.2.41",
        &[("browse", ""), ("update", ""), ("dns", ""), ("ntp", ""), ("speedtest", "5222"), ("mdns", ""), ("dhcp", "")],
    ),
    (
        "nas1",
        "storage",
        "192.0.2.45",
        &[("backup", ""), ("ntp", ""), ("dns", ""), ("ssdp", ""), ("dhcp", ""), ("mqtt_session", "nas1")],
    ),
    (
        HUB_NAME,
        "hubs",
        "192.0.2.50",
        &[("hub", ""), ("mqtt_session", "hub1"), ("mdns", ""), ("ntp", ""), ("dns", ""), ("ssdp", "")],
    ),
    ("attacker", "attacker", ATTACKER, &[]),
];

/// The home-automation hub: a /25 address, so its 30 polled devices
/// (192.0.2.130-159, [`POLLED`]) are reached through the router.
const HUB_NAME: &str = "hub1";
/// How many devices the hub polls (192.0.2.130 onwards, on the router's `lan1`).
pub const POLLED: u8 = 30;
/// The backup host (on the WAN namespace's loopback).
pub const BACKUP_HOST: &str = "198.51.100.20";
/// iperf3 server ports: cameras, speed tests, and 5209 for the exfiltration scenario.
const IPERF_PORTS: [&str; 6] = ["5209", "5211", "5212", "5213", "5221", "5222"];
/// Lab capture snap length (headers only; gatewarden reads lengths from the IP header).
pub const SNAPLEN: u32 = 128;

/// The whole site. Dropping it kills everything and deletes the namespaces.
pub struct Lab {
    services: Vec<Guard>,
    /// The router: bridge `lan0` (LAN gateway) and `wan0`.
    pub router: Netns,
    /// The WAN side with the services.
    pub wan: Netns,
    /// LAN devices, the attacker last.
    pub devices: Vec<Device>,
    /// Keys, configs, web root, logs.
    pub dir: tempfile::TempDir,
    /// Sessions run the router with `[enforce] enabled = true`, so verdicts
    /// become block elements and time-to-block is measured (on by default;
    /// recording training captures turns it off so attacks run to the end).
    pub enforce: bool,
    /// The home-automation segment behind the router's `lan1` (the hub's polled devices).
    pub iot: Netns,
    /// The run's seed (env `GATEWARDEN_LAB_SEED`, else from the clock; printed):
    /// every benign behaviour's parameters follow from it and the session number.
    pub seed: u64,
    /// Snap length of the session captures.
    pub snaplen: u32,
    sessions: std::cell::Cell<u64>,
}

impl Lab {
    /// Builds the site and starts the WAN services; returns once they listen.
    pub fn new() -> Lab {
        let seed = lab_seed();
        eprintln!("lab seed {seed} (GATEWARDEN_LAB_SEED={seed} repeats this run's benign parameters)");
        let router = Netns::new("rtr");
        let wan = Netns::new("wan");
        router.exec(&["ip", "link", "add", "lan0", "type", "bridge"]);
        router.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "lan0"]);
        router.exec(&["ip", "-6", "addr", "add", "2001:db8:10::1/64", "dev", "lan0", "nodad"]);
        router.exec(&["ip", "link", "set", "lan0", "up"]);
        let mut devices = Vec::new();
        for (name, group, addr, profiles) in DEVICES {
            let ns = Netns::new(name);
            let addr6 = (name == "attacker").then_some(ATTACKER6);
            let prefix = if name == HUB_NAME { 25 } else { 24 };
            let mut addrs = vec![format!("{addr}/{prefix}")];
            addrs.extend(addr6.map(|a| format!("{a}/64")));
            let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
            link_to_bridge(&ns, "eth0", &addrs, &router, "lan0");
            ns.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
            if addr6.is_some() {
                ns.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:10::1"]);
            }
            devices.push(Device { name, group, addr, addr6, profiles, prefix, ns });
        }
        let wan6 = format!("{WAN6}/64");
        link(&router, "wan0", &["198.51.100.1/24", "2001:db8:20::1/64"], &wan, "eth0", &[&format!("{WAN}/24"), &wan6]);
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        router.exec(&["ip", "route", "add", "203.0.113.0/24", "via", WAN]);
        wan.exec(&["ip", "addr", "add", &format!("{NEW_HOST}/32"), "dev", "lo"]);
        wan.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
        wan.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:20::1"]);
        // The Internet beyond the WAN server, with an attacker in it.
        let inet = Netns::new("inet");
        link(&wan, "inet0", &["203.0.113.129/25"], &inet, "eth0", &[&format!("{INET_ATTACKER}/25")]);
        wan.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        inet.exec(&["ip", "route", "add", "default", "via", "203.0.113.129"]);
        devices.push(Device {
            name: "inet_attacker",
            group: "attacker",
            addr: INET_ATTACKER,
            addr6: None,
            profiles: &[],
            prefix: 25,
            ns: inet,
        });
        let dir = tempfile::tempdir().unwrap();
        // The WAN side's extra hosts: the backup host and 64 web sites / mirrors.
        let mut batch = format!("address add {BACKUP_HOST}/32 dev lo\n");
        for h in 100..164 {
            let _ = writeln!(batch, "address add 198.51.100.{h}/32 dev lo");
        }
        std::fs::write(dir.path().join("wan.ipbatch"), batch).unwrap();
        wan.exec(&["ip", "-batch", dir.path().join("wan.ipbatch").to_str().unwrap()]);
        // The home-automation segment: 30 devices the hub polls, routed by the router.
        let iot = Netns::new("iot");
        let polled: Vec<String> = (0..POLLED).map(|i| format!("192.0.2.{}/25", 130 + i as u32)).collect();
        let polled: Vec<&str> = polled.iter().map(String::as_str).collect();
        link(&router, "lan1", &["192.0.2.129/25"], &iot, "eth0", &polled);
        iot.exec(&["ip", "route", "add", "default", "via", "192.0.2.129"]);
        let mut lab = Lab {
            services: Vec::new(),
            router,
            wan,
            devices,
            dir,
            enforce: true,
            iot,
            seed,
            snaplen: SNAPLEN,
            sessions: std::cell::Cell::new(0),
        };
        lab.start_services();
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_services(&mut self) {
        let d = self.dir.path().to_path_buf();
        let p = |n: &str| d.join(n).to_str().unwrap().to_string();
        // Web root with a status document and a 4 MiB "firmware".
        std::fs::create_dir_all(d.join("www")).unwrap();
        std::fs::write(d.join("www/status.json"), "{\"ok\":true}\n").unwrap();
        std::fs::write(d.join("www/firmware.bin"), vec![0x5a; 4 << 20]).unwrap();
        // HTTPS: a self-signed certificate (the devices use curl -k, as many do).
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=lab.example", "-keyout", &p("tls.key"), "-out", &p("tls.crt")])
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        // SSH: host key, admin key, its authorized_keys, an sshd config.
        for key in ["host", "admin"] {
            let out =
                Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &p(key)]).output().unwrap();
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::copy(d.join("admin.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {WAN}:22\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM no\n\
StrictModes no\nPermitRootLogin prohibit-password\nMaxStartups 100\nLoginGraceTime 10\nSubsystem sftp {}\n",
                p("host"),
                p("authorized_keys"),
                sftp_server()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege-separation directory
                                                       // One MQTT listener as a device vendor's broker has it: the lab's sensors publish
                                                       // anonymously; a client that gives a user name must give its password (the only
                                                       // account's is not in the attack's word list), so guesses are refused with
                                                       // CONNACK "not authorised".
        let out = Command::new("mosquitto_passwd")
            .args(["-c", "-b", &p("mosquitto.passwd"), "camera", "lab-camera-Secret-7"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(
            d.join("mosquitto.conf"),
            format!("listener 1883 {WAN}\nallow_anonymous true\npassword_file {}\n", p("mosquitto.passwd")),
        )
        .unwrap();
        let ntp = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{WAN}',123))\n\
while True:\n    d,a=s.recvfrom(512)\n    s.sendto(d[:48].ljust(48,b'\\0'),a)\n"
        );
        let log = |name: &str| std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
        let www = p("www");
        let lab_script = |n: &str| root().join("tests/lab").join(n).to_str().unwrap().to_string();
        let services: Vec<(&str, Vec<String>)> = vec![
            (
                "http",
                // Every WAN address: the server, the backup host, the web sites.
                vec![
                    "python3".into(),
                    lab_script("web.py"),
                    "--bind".into(),
                    "0.0.0.0".into(),
                    "--port".into(),
                    "80".into(),
                    "--directory".into(),
                    www.clone(),
                    "--tls-port".into(),
                    "443".into(),
                    "--cert".into(),
                    p("tls.crt"),
                    "--key".into(),
                    p("tls.key"),
                ],
            ),
            (
                "telnetd",
                vec![
                    "busybox".into(),
                    "telnetd".into(),
                    "-F".into(),
                    "-p".into(),
                    "23".into(),
                    "-b".into(),
                    WAN.into(),
                    "-l".into(),
                    lab_script("telnet-login.sh"),
                ],
            ),
            ("mosquitto", vec!["mosquitto".into(), "-c".into(), p("mosquitto.conf")]),
            (
                "dnsmasq",
                [
                    "dnsmasq",
                    "-k",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--user=root",
                    "--pid-file=",
                    "--log-facility=-",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([format!("--listen-address={WAN}"), format!("--address=/lab.example/{WAN}")])
                .chain((100..164).map(|h| format!("--host-record=site{h}.web.example,198.51.100.{h}")))
                .collect(),
            ),
            (
                "sshd",
                vec![
                    which("sshd").unwrap().to_str().unwrap().into(),
                    "-D".into(),
                    "-e".into(),
                    "-f".into(),
                    p("sshd_config"),
                ],
            ),
            ("ntp", vec!["python3".into(), "-c".into(), ntp]),
        ];
        for (name, argv) in services {
            let mut cmd = self.wan.command(&argv[0]);
            cmd.args(&argv[1..]).stdout(log(name)).stderr(log(name));
            self.services.push(Guard::spawn(&mut cmd));
        }
        // The LAN's DHCP server on the router (DHCP only: --port=0), as a home router has it;
        // the devices' udhcpc takes part in the exchange but keeps its static address.
        let mut dhcp = self.router.command("dnsmasq");
        dhcp.args(["-k", "--conf-file=/dev/null", "--port=0", "--interface=lan0", "--bind-interfaces"])
            .args(["--dhcp-range=192.0.2.100,192.0.2.127,255.255.255.0,10m", "--user=root", "--pid-file="])
            .args(["--log-facility=-", &format!("--dhcp-leasefile={}", p("dhcp.leases"))])
            .stdout(log("dhcp"))
            .stderr(log("dhcp"));
        self.services.push(Guard::spawn(&mut dhcp));
        // The hub's polled devices: a web server on every address of the segment.
        let mut polled = self.iot.command("python3");
        polled
            .args([&lab_script("web.py"), "--bind", "0.0.0.0", "--port", "80", "--directory", &www])
            .stdout(log("iot"))
            .stderr(log("iot"));
        self.services.push(Guard::spawn(&mut polled));
        self.wait_listening(&["tcp 80", "tcp 443", "tcp 1883", "tcp 22", "tcp 23", "udp 53", "udp 123"]);
        wait_listening_in(&self.router, &["udp 67"], &d, &["dhcp"]);
        wait_listening_in(&self.iot, &["tcp 80"], &d, &["iot"]);
    }

    /// Waits until `ss` in the WAN namespace lists every `proto port` on the WAN address.
    fn wait_listening(&self, want: &[&str]) {
        let logs = ["http", "telnetd", "mosquitto", "dnsmasq", "sshd", "ntp"];
        wait_listening_in(&self.wan, want, self.dir.path(), &logs);
    }
}

/// Waits until `ss` in `ns` lists every `proto port`; after 15 s panics with
/// what `ss` says and the named service logs in `dir`.
fn wait_listening_in(ns: &Netns, want: &[&str], dir: &Path, logs: &[&str]) {
    {
        let start = Instant::now();
        loop {
            let out = ns.command("ss").args(["-Hlnut"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let missing: Vec<&&str> = want
                .iter()
                .filter(|w| {
                    let (proto, port) = w.split_once(' ').unwrap();
                    !text.lines().any(|l| l.starts_with(proto) && l.contains(&format!(":{port} ")))
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let logs: String = logs
                    .iter()
                    .map(|n| {
                        format!(
                            "--- {n}: {}",
                            std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!("lab services in {} not listening on {missing:?} after 15 s; ss says:\n{text}\n{logs}", ns.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Lab {
    /// Every namespace name of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.router.name.clone(), self.wan.name.clone(), self.iot.name.clone()];
        v.extend(self.devices.iter().map(|d| d.ns.name.clone()));
        v
    }

    /// Every process id running in any lab namespace.
    pub fn pids(&self) -> Vec<u32> {
        self.namespaces().iter().flat_map(|n| pids_in(n)).collect()
    }

    /// The device called `name`.
    pub fn device(&self, name: &str) -> &Device {
        self.devices.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no device {name}"))
    }

    /// Benign (non-attacker) LAN addresses, the hub's polled devices included.
    pub fn benign_addrs(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> =
            self.devices.iter().filter(|d| d.group != "attacker").map(|d| d.addr.to_string()).collect();
        out.extend((0..POLLED).map(|i| format!("192.0.2.{}", 130 + i as u32)));
        out
    }

    /// The benign devices with their own namespace (what device-hours count).
    pub fn benign_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|d| d.group != "attacker")
    }

    /// Starts tcpdump on the router's `lan0`, gatewarden (`run --role all`,
    /// capturing `lan0`, shipped detector defaults) and, if `benign_s > 0`,
    /// every device's benign behaviours for that many seconds, with the next
    /// session seed (the lab's seed + sessions started so far). The returned
    /// [`Session`] records alerts and block-set elements as they appear.
    pub fn session(&self, capture: &Path, benign_s: u64) -> Session<'_> {
        let seed = self.seed.wrapping_add(self.sessions.get());
        self.session_with(Some(capture), benign_s, seed)
    }

    /// [`Lab::session`] with an explicit seed for the benign behaviours, and
    /// optionally no capture (`None`: long soaks, whose capture would be GBs).
    pub fn session_with(&self, capture: Option<&Path>, benign_s: u64, seed: u64) -> Session<'_> {
        self.sessions.set(self.sessions.get() + 1);
        let tag = capture.map_or("session".to_string(), |c| c.file_stem().unwrap().to_str().unwrap().to_string());
        let mut procs = Vec::new();
        // iperf3 servers per session: a client killed mid-test must not leave one busy.
        for port in IPERF_PORTS {
            procs.push(Guard::spawn(
                self.wan.command("iperf3").args(["-s", "-p", port]).stdout(Stdio::null()).stderr(Stdio::null()),
            ));
        }
        if let Some(capture) = capture {
            let tcpdump_log = self.path(&format!("{tag}.tcpdump.log"));
            procs.push(Guard::spawn(
                self.router
                    .command("tcpdump")
                    .args(["-i", "lan0", "-s", &self.snaplen.to_string(), "-U", "-n", "-w", capture.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&tcpdump_log).unwrap()),
            ));
            wait_file_contains(&tcpdump_log, "listening on", "tcpdump");
        }
        // A previous session's gatewarden that did not exit within its grace time
        // (see `finish`) leaves its table, and the poller would report that
        // session's blocks as this one's (a tool is stopped 2 s after its source
        // shows up blocked). The new gatewarden replaces a stale table anyway;
        // this makes sure nothing is read before it does, and says so.
        if which("nft").is_some() {
            let leftover = self.router.command("nft").args(["delete", "table", "inet", "gatewarden"]).output();
            if leftover.is_ok_and(|o| o.status.success()) {
                eprintln!("        (removed table inet gatewarden left by the previous session)");
            }
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        // Block elements as the kernel announces them (before gatewarden creates its table).
        let watcher = which("nft").map(|_| {
            let mut g = Guard::spawn(self.router.command("nft").args(["-j", "monitor"]).stdout(Stdio::piped()));
            let out = g.child().stdout.take().expect("nft monitor's stdout");
            procs.push(g);
            let seen = seen.clone();
            std::thread::spawn(move || watch_elements(out, &seen))
        });
        let cfg = self.path("gatewarden.toml");
        let enforce = if self.enforce { "[enforce]\nenabled = true\n" } else { "" };
        // Shipped detector defaults: no warm-up or threshold overrides (issue #15).
        // home_net is where this site's devices are (a fact of the network, like
        // capture.interface): the lab's LAN is in TEST-NET-1 and 2001:db8:10::/64.
        std::fs::write(
            &cfg,
            format!(
                "node_id = \"lab\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n[capture]\ninterface = \"lan0\"\n\
                 [detector]\nhome_net = [\"192.0.2.0/24\", \"2001:db8:10::/64\"]\n{enforce}"
            ),
        )
        .unwrap();
        let gw_log = self.path(&format!("{tag}.gatewarden.log"));
        procs.push(Guard::spawn(
            router_command(&self.router)
                .args(["run", "--role", "all", "--log-format", "json", "--config", cfg.to_str().unwrap()])
                .env("RUST_LOG", timing_log_filter())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&gw_log).unwrap()),
        ));
        wait_file_contains(&gw_log, "capturing", "gatewarden run");
        let ports: Vec<String> = IPERF_PORTS.iter().map(|p| format!("tcp {p}")).collect();
        self.wait_listening(&ports.iter().map(String::as_str).collect::<Vec<_>>());
        let script = root().join("tests/lab/benign.sh");
        let mut behaviours = Vec::new();
        if benign_s > 0 {
            for (di, d) in self.benign_devices().enumerate() {
                for (bi, (profile, arg)) in d.profiles.iter().enumerate() {
                    let arg =
                        if *arg == "DIR" { self.dir.path().to_str().unwrap().to_string() } else { arg.to_string() };
                    let bseed = behaviour_seed(seed, di as u64, bi as u64);
                    let out = self.path(&format!("{tag}.{}.{profile}.out", d.name));
                    procs.push(Guard::spawn(
                        d.ns.command("env")
                            .args([&format!("LAB_SEED={bseed}"), &format!("LAB_DEVICE={}", d.name), "bash"])
                            .args([script.to_str().unwrap(), profile, &benign_s.to_string(), &arg])
                            .stdout(std::fs::File::create(&out).unwrap())
                            .stderr(Stdio::null()),
                    ));
                    behaviours.push((d.name, d.addr, *profile, out));
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (seen, stop, router) = (seen.clone(), stop.clone(), self.router.name.clone());
            std::thread::spawn(move || poll(&router, &seen, &stop))
        };
        Session {
            lab: self,
            capture: capture.map(Path::to_path_buf),
            seed,
            started: now(),
            behaviours,
            procs,
            seen,
            stop,
            poller: Some(poller),
            attacks: Vec::new(),
            outages: Vec::new(),
            tag,
            watcher,
        }
    }
}

/// The run's seed: env `GATEWARDEN_LAB_SEED`, else one from the clock.
pub fn lab_seed() -> u64 {
    match std::env::var("GATEWARDEN_LAB_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("GATEWARDEN_LAB_SEED must be a whole number, got {s:?}")),
        Err(_) => 1000 + SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 1_000_000,
    }
}

/// One behaviour's seed (bash RANDOM takes it): a splitmix64 mix of the
/// session seed, the device's and the behaviour's index, below 2^31.
pub fn behaviour_seed(session: u64, device: u64, behaviour: u64) -> u64 {
    let mut z = session.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (device << 32) ^ (behaviour << 16) ^ 0x5EED;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & 0x7FFF_FFFF
}

/// Where the SFTP server sshd runs for scp lives (Debian's path first).
fn sftp_server() -> String {
    ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("/usr/lib/openssh/sftp-server")
        .to_string()
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.services.clear();
        // Device processes (benign profiles, attack tools) die with their namespaces.
    }
}

fn pids_in(ns: &str) -> Vec<u32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Whether a process is still alive (zombies waiting for their parent do not count).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_file_contains(path: &Path, needle: &str, what: &str) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what} never said {needle:?}: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alerts and block elements as the poller first saw them.
#[derive(Default)]
struct Seen {
    /// gatewarden alert id → (wall time first seen, EVE JSON).
    alerts: BTreeMap<u64, (f64, serde_json::Value)>,
    /// Blocked address → wall time first seen in a gatewarden block set.
    blocks: BTreeMap<String, f64>,
    /// Whether `table inet gatewarden` ever existed.
    enforcement: bool,
    /// Every poll: (start, `/api/alerts` answered, `nft` listing returned), wall time.
    /// A slow poll delays what "first seen" means; the kept trace shows it.
    polls: Vec<(f64, f64, f64)>,
    /// Block elements added, as `nft monitor` announced them: (wall time, set, address).
    added: Vec<(f64, String, String)>,
    /// Blocked address → when a poll's listing first showed it (for comparison with the monitor).
    listed: BTreeMap<String, f64>,
}

/// Polls `/api/alerts` (and `nft -j list ruleset`) inside the router every 100 ms.
fn poll(router: &str, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let have_nft = which("nft").is_some();
    loop {
        let last = stop.load(Ordering::Relaxed);
        let started = now();
        let out = Command::new("ip")
            .args(["netns", "exec", router, "curl", "-s", "--max-time", "2", "http://127.0.0.1:8080/api/alerts"])
            .output();
        let t = now();
        if let Ok(v) = out.map(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()) {
            let mut s = seen.lock().unwrap();
            for a in v["alerts"].as_array().into_iter().flatten() {
                if let Some(id) = a["gatewarden"]["id"].as_u64() {
                    s.alerts.entry(id).or_insert((t, a.clone()));
                }
            }
        }
        if have_nft {
            if let Ok(o) = Command::new("ip").args(["netns", "exec", router, "nft", "-j", "list", "ruleset"]).output() {
                // The listing shows the sets as they were at some moment while `nft` ran:
                // an element is surely there by the time it returns.
                let listed = now();
                let (present, blocked) = block_elements(&String::from_utf8_lossy(&o.stdout));
                let mut s = seen.lock().unwrap();
                s.enforcement |= present;
                for addr in blocked {
                    s.listed.entry(addr.clone()).or_insert(listed);
                    let first = s.blocks.entry(addr).or_insert(listed);
                    *first = first.min(listed);
                }
            }
        }
        seen.lock().unwrap().polls.push((started, t, now()));
        if last {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `nft -j monitor` until it ends: each block element gatewarden adds
/// is recorded as seen the moment the kernel announces it. The poller's
/// listings (every 100 ms, but a poll takes 0.1–1.4 s on a loaded machine:
/// two `ip netns exec` forks) only bound that moment from above; the earlier
/// of the two counts.
fn watch_elements(out: std::process::ChildStdout, seen: &Mutex<Seen>) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let t = now();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        // A new element is announced as `create` (gatewarden adds it exclusively), a refresh as `add`.
        let el = if v["create"]["element"].is_object() { &v["create"]["element"] } else { &v["add"]["element"] };
        let Some(set) = el["name"].as_str().filter(|n| n.starts_with("block") && el["table"] == "gatewarden") else {
            continue;
        };
        let mut s = seen.lock().unwrap();
        s.enforcement = true;
        for e in el["elem"]["set"].as_array().into_iter().flatten() {
            let val = e.get("elem").map_or(e, |x| &x["val"]);
            if let Some(addr) = val.as_str() {
                let first = s.blocks.entry(addr.to_string()).or_insert(t);
                *first = first.min(t);
                s.added.push((t, set.to_string(), addr.to_string()));
            }
        }
    }
}

/// From `nft -j list ruleset`: whether `table inet gatewarden` exists, and
/// the addresses in its block sets (`block4`, `block6`, or any set whose name
/// starts with `block`), per the layout in DESIGN.md §4.
pub fn block_elements(json: &str) -> (bool, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut present = false;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if item["table"]["name"] == "gatewarden" {
            present = true;
        }
        let set = &item["set"];
        if set["table"] == "gatewarden" && set["name"].as_str().is_some_and(|n| n.starts_with("block")) {
            for e in set["elem"].as_array().into_iter().flatten() {
                // Plain `"192.0.2.66"` or `{"elem": {"val": "192.0.2.66", "timeout": …}}`.
                let val = e.get("elem").map_or(e, |x| &x["val"]);
                if let Some(a) = val.as_str() {
                    out.push(a.to_string());
                }
            }
        }
    }
    (present, out)
}

/// An attack with a real tool, bounded in count and time.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name, e.g. `syn_flood`.
    pub name: &'static str,
    /// Ground-truth label for the labels file.
    pub label: &'static str,
    /// Device it runs in (`attacker`, or e.g. `cam1` for a compromised device).
    pub from: &'static str,
    /// The command line (run with `timeout`).
    pub argv: &'static [&'static str],
    /// The target address.
    pub victim: &'static str,
    /// Alert kinds that count as detecting it.
    pub expect: &'static [&'static str],
    /// Source addresses are forged (`--rand-source`): the alert has no source.
    pub spoofed: bool,
    /// Hard limit for the tool, seconds.
    pub timeout_s: u64,
    /// What the shipped response policy does about it.
    pub policy: Expect,
    /// Seconds of benign traffic before the attack (a per-device baseline
    /// needs the shipped 60 s warm-up of normal traffic first).
    pub pre_idle_s: f64,
}

/// What the shipped response policy should do with a detected attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Alert and block the (real) source: `alert.action` = `blocked`.
    Block,
    /// Alert only, block nothing: `alert.action` = `allowed` (e.g. the
    /// baseline alone, which the policy never lets block).
    AlertOnly,
    /// The policy asks for a block, but the source is on the WAN side and
    /// nothing it sent proves its address (a SYN scan: forgeable): the router
    /// refuses the block and leaves the source to its meters.
    RefusedUnproven,
}

macro_rules! scenario {
    ($name:expr, $label:expr, $from:expr, $victim:expr, $expect:expr, [$($arg:expr),* $(,)?]) => {
        Scenario { name: $name, label: $label, from: $from, argv: &[$($arg),*], victim: $victim, expect: $expect,
            spoofed: false, timeout_s: 90, policy: Expect::Block, pre_idle_s: 3.0 }
    };
}

const SCAN: &[&str] = &["port_scan"];

/// Every attack scenario of a full scoring run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "nmap_syn_T3",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sS", "-T3", "-p", "1-1000", WAN]
        ),
        scenario!(
            "nmap_syn_T4",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-1000", WAN]
        ),
        scenario!(
            "nmap_syn6_T4",
            "port_scan",
            "attacker",
            WAN6,
            SCAN,
            ["nmap", "-6", "-n", "-Pn", "-sS", "-T4", "-p", "1-1000", WAN6]
        ),
        Scenario {
            policy: Expect::RefusedUnproven,
            ..scenario!(
            "nmap_wan_to_lan_T4",
            "port_scan",
            "inet_attacker",
            "192.0.2.11",
            SCAN,
            ["nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-1000", "192.0.2.11"]
        )
        },
        scenario!(
            "nmap_connect_T3",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sT", "-T3", "-p", "1-1000", WAN]
        ),
        // Scan types the detector was never tuned on (session 29): FIN probes (closed ports
        // answer RST, open ones nothing) and an IP protocol scan (one probe per protocol).
        scenario!(
            "nmap_fin_T4",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sF", "-T4", "-p", "1-1000", WAN]
        ),
        scenario!(
            "nmap_ip_protocol_scan",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sO", "-T4", WAN]
        ),
        scenario!(
            "nmap_connect_T4",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            ["nmap", "-n", "-Pn", "-sT", "-T4", "-p", "1-1000", WAN]
        ),
        scenario!(
            "nmap_udp_T3",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            [
                "nmap",
                "-n",
                "-Pn",
                "-sU",
                "-T3",
                "--top-ports",
                "100",
                "--max-retries",
                "1",
                "--host-timeout",
                "80s",
                WAN
            ]
        ),
        scenario!(
            "nmap_udp_T4",
            "port_scan",
            "attacker",
            WAN,
            SCAN,
            [
                "nmap",
                "-n",
                "-Pn",
                "-sU",
                "-T4",
                "--top-ports",
                "100",
                "--max-retries",
                "1",
                "--host-timeout",
                "80s",
                WAN
            ]
        ),
        scenario!(
            "nmap_telnet_sweep",
            "host_sweep",
            "attacker",
            "203.0.113.0/25",
            &["host_sweep"],
            ["nmap", "-n", "-Pn", "-sS", "-T4", "--max-retries", "1", "-p", "23", "203.0.113.0/25"]
        ),
        scenario!(
            "hping3_syn_flood",
            "syn_flood",
            "attacker",
            WAN,
            &["syn_flood"],
            ["hping3", "-S", "-p", "80", "--faster", "-c", "2000", WAN]
        ),
        Scenario {
            spoofed: true,
            ..scenario!(
                "hping3_syn_flood_rand_source",
                "syn_flood",
                "attacker",
                WAN,
                &["syn_flood"],
                ["hping3", "-S", "-p", "80", "--faster", "--rand-source", "-c", "2000", WAN]
            )
        },
        // ACK and RST floods never send a SYN: the `tcp_flood` rule counts them.
        scenario!(
            "hping3_ack_flood",
            "tcp_flood",
            "attacker",
            WAN,
            &["tcp_flood"],
            ["hping3", "-A", "-p", "80", "--faster", "-c", "2000", WAN]
        ),
        scenario!(
            "hping3_rst_flood",
            "tcp_flood",
            "attacker",
            WAN,
            &["tcp_flood"],
            ["hping3", "-R", "-p", "80", "--faster", "-c", "2000", WAN]
        ),
        scenario!(
            "hping3_udp_flood",
            "udp_flood",
            "attacker",
            WAN,
            &["udp_flood"],
            ["hping3", "-2", "-p", "9999", "--faster", "-c", "2000", WAN]
        ),
        scenario!(
            "hping3_icmp_flood",
            "icmp_flood",
            "attacker",
            WAN,
            &["icmp_flood"],
            ["hping3", "-1", "--faster", "-c", "2000", WAN]
        ),
        scenario!(
            "hydra_ssh_t4",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "4", "-I", "-q", "ssh://198.51.100.10"]
        ),
        scenario!(
            "hydra_ssh_t16",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "16", "-I", "-q", "ssh://198.51.100.10"]
        ),
        scenario!(
            "hydra_telnet_t4",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "4", "-I", "-q", "telnet://198.51.100.10"]
        ),
        scenario!(
            "hydra_http_get_t16",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "16", "-I", "-q", "http-get://198.51.100.10/admin/"]
        ),
        scenario!(
            "hydra_http_post_form_t4",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            [
                "hydra",
                "-l",
                "admin",
                "-P",
                "WORDLIST",
                "-t",
                "4",
                "-I",
                "-q",
                "198.51.100.10",
                "http-post-form",
                "/login:user=^USER^&pass=^PASS^:F=Login failed"
            ]
        ),
        // hydra 9.4 has no MQTT module: the real client, one CONNECT per guess.
        scenario!(
            "mosquitto_pub_password_guess",
            "brute_force",
            "attacker",
            WAN,
            &["brute_force"],
            [
                "bash",
                "-c",
                "while read -r p; do mosquitto_pub -h 198.51.100.10 -p 1883 -u admin -P \"$p\" -t lab/x -m x; done < \"$1\"",
                "mqtt-guess",
                "WORDLIST"
            ]
        ),
        scenario!(
            "slowhttptest_slowloris_i5",
            "slow_http",
            "attacker",
            WAN,
            &["slow_http"],
            ["slowhttptest", "-H", "-c", "100", "-r", "50", "-i", "5", "-l", "20", "-u", "http://198.51.100.10/"]
        ),
        scenario!(
            "slowhttptest_slowloris_i10",
            "slow_http",
            "attacker",
            WAN,
            &["slow_http"],
            ["slowhttptest", "-H", "-c", "100", "-r", "50", "-i", "10", "-l", "25", "-u", "http://198.51.100.10/"]
        ),
        // The baseline alone finds it: an alert, no block. It needs the
        // shipped 60 s warm-up of the camera's normal traffic (a 1-8 Mbit/s
        // stream that starts and stops), and an upload well above 3x that.
        Scenario {
            policy: Expect::AlertOnly,
            pre_idle_s: 65.0,
            ..scenario!(
                "camera_exfil_new_host",
                "exfiltration",
                "cam1",
                NEW_HOST,
                &["anomaly"],
                ["iperf3", "-c", NEW_HOST, "-p", "5209", "-b", "40M", "-t", "3"]
            )
        },
        // Issue #17: slow and distributed scans (the long-horizon detectors).
        // nmap -T2: a probe every 0.4 s, 50 ports in ~20 s, under port_scan's 50 ports in 10 s.
        scenario!(
            "nmap_syn_T2",
            "port_scan",
            "attacker",
            WAN,
            &["slow_scan"],
            ["nmap", "-n", "-Pn", "-sS", "-T2", "-p", "1-50", WAN]
        ),
        scenario!(
            "nmap_syn6_T2",
            "port_scan",
            "attacker",
            WAN6,
            &["slow_scan"],
            ["nmap", "-6", "-n", "-Pn", "-sS", "-T2", "-p", "1-50", WAN6]
        ),
        // A slow sweep in random host order. nmap applies --scan-delay per host and probes a
        // host group (up to 128 hosts here) in parallel, so without --max-hostgroup 1 this is a
        // fast sweep (measured: 66 probes in 4 s); with it, one host at a time, ~1 probe per
        // 2 s here. (The 5 s one is in long_scenarios.)
        scenario!(
            "nmap_sweep_scan_delay_1s",
            "host_sweep",
            "attacker",
            "203.0.113.0/25",
            &["slow_scan"],
            [
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "--max-hostgroup",
                "1",
                "--scan-delay",
                "1s",
                "--randomize-hosts",
                "--max-retries",
                "0",
                "-p",
                "23",
                "203.0.113.0/25"
            ]
        ),
        // 60 Internet sources, 3 SYNs each to closed ports of one LAN device. One namespace holds
        // the 60 addresses (nmap -S, each address its own, answered to it): at the router every
        // packet from the WAN side carries the upstream's MAC anyway, so 60 namespaces behind the
        // WAN host would look the same there, at 60 times the set-up cost on a 2-core machine.
        Scenario {
            spoofed: true,
            policy: Expect::AlertOnly,
            ..scenario!(
                "distributed_scan_60_sources",
                "port_scan",
                "inet_attacker",
                "192.0.2.11",
                &["distributed_scan"],
                [
                    "bash",
                    "-c",
                    DISTRIBUTED_SCAN,
                    "distributed-scan",
                    "192.0.2.11"
                ]
            )
        },
        // LAN mapping (issue #17): a LAN device sweeping its own subnet with
        // ARP or neighbour solicitations; the router sees the requests, not
        // the answers. The policy alerts (the ARP sender address is forgeable).
        Scenario {
            policy: Expect::AlertOnly,
            ..scenario!(
                "nmap_sn_lan_arp",
                "lan_mapping",
                "attacker",
                "192.0.2.0/24",
                &["lan_mapping"],
                ["nmap", "-n", "-sn", "192.0.2.0/24"]
            )
        },
        Scenario {
            policy: Expect::AlertOnly,
            ..scenario!(
                "arp_scan_localnet",
                "lan_mapping",
                "attacker",
                "192.0.2.0/24",
                &["lan_mapping"],
                ["arp-scan", "--localnet", "--interface", "eth0"]
            )
        },
        Scenario {
            policy: Expect::AlertOnly,
            ..scenario!(
                "nmap6_sn_ns_sweep",
                "lan_mapping",
                "attacker",
                "2001:db8:10::/120",
                &["lan_mapping"],
                ["nmap", "-6", "-n", "-sn", "2001:db8:10::/120"]
            )
        },
    ]
}

/// Adds 203.0.113.170-229 to the namespace's `eth0` and sends 3 SYNs from each to ports of `$1`
/// (1000-1179: closed), 10 sources at a time.
const DISTRIBUTED_SCAN: &str = "for n in $(seq 170 229); do ip addr add 203.0.113.$n/32 dev eth0 2>/dev/null; done; \
    sleep 1; i=0; for n in $(seq 170 229); do p=$((1000 + (n - 170) * 3)); \
    nmap -n -Pn -sS -e eth0 -S 203.0.113.$n --max-retries 0 -p $p,$((p + 1)),$((p + 2)) \"$1\" >/dev/null 2>&1 & \
    i=$((i + 1)); [ $((i % 10)) -eq 0 ] && wait; done; wait";

/// Scenarios of minutes to an hour (issue #17), run by the ignored `lab_long_horizon`:
/// nmap -T1 (15 s between probes), a sweep with `--scan-delay 5s`, and slow password guessing.
pub fn long_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            timeout_s: 1200,
            ..scenario!(
                "nmap_syn_T1",
                "port_scan",
                "attacker",
                WAN,
                &["slow_scan"],
                ["nmap", "-n", "-Pn", "-sS", "-T1", "-p", "1-60", WAN]
            )
        },
        Scenario {
            timeout_s: 300,
            ..scenario!(
                "nmap_sweep_scan_delay_5s",
                "host_sweep",
                "attacker",
                "203.0.113.0/25",
                &["slow_scan"],
                [
                    "nmap",
                    "-n",
                    "-Pn",
                    "-sS",
                    "--max-hostgroup",
                    "1",
                    "--scan-delay",
                    "5s",
                    "--randomize-hosts",
                    "--max-retries",
                    "0",
                    "-p",
                    "23",
                    "203.0.113.0/25"
                ]
            )
        },
        Scenario {
            timeout_s: 3600,
            policy: Expect::AlertOnly,
            ..scenario!(
                "hydra_ssh_t1_w30",
                "brute_force",
                "attacker",
                WAN,
                &["slow_guessing"],
                ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "1", "-W", "30", "-I", "-q", "ssh://198.51.100.10"]
            )
        },
        Scenario {
            timeout_s: 3600,
            policy: Expect::AlertOnly,
            ..scenario!(
                "hydra_telnet_t1_w30",
                "brute_force",
                "attacker",
                WAN,
                &["slow_guessing"],
                ["hydra", "-l", "admin", "-P", "WORDLIST", "-t", "1", "-W", "30", "-I", "-q", "telnet://198.51.100.10"]
            )
        },
        Scenario {
            timeout_s: 3600,
            policy: Expect::AlertOnly,
            ..scenario!(
                "mosquitto_pub_guess_every_30s",
                "brute_force",
                "attacker",
                WAN,
                &["slow_guessing"],
                [
                    "bash",
                    "-c",
                    "while read -r p; do mosquitto_pub -h 198.51.100.10 -p 1883 -u admin -P \"$p\" -t lab/x -m x; sleep 30; done < \"$1\"",
                    "mqtt-guess",
                    "WORDLIST"
                ]
            )
        },
    ]
}

/// The short run CI does: scenarios the detector is expected to catch today.
pub fn short_scenarios() -> Vec<Scenario> {
    let keep = [
        "nmap_syn_T4",
        "nmap_syn6_T4",
        "nmap_wan_to_lan_T4",
        "nmap_connect_T3",
        "nmap_fin_T4",
        "nmap_ip_protocol_scan",
        "nmap_telnet_sweep",
        "hping3_syn_flood",
        "hping3_syn_flood_rand_source",
        "hping3_ack_flood",
        "hping3_udp_flood",
        "hping3_icmp_flood",
        "hydra_ssh_t16",
        "hydra_telnet_t4",
        "hydra_http_get_t16",
        "mosquitto_pub_password_guess",
        "slowhttptest_slowloris_i5",
        "camera_exfil_new_host",
        "nmap_syn_T2",
        "nmap_syn6_T2",
        "nmap_sweep_scan_delay_1s",
        "distributed_scan_60_sources",
        "nmap_sn_lan_arp",
        "arp_scan_localnet",
        "nmap6_sn_ns_sweep",
    ];
    scenarios().into_iter().filter(|s| keep.contains(&s.name)).collect()
}

/// One attack as it happened in a session.
#[derive(Clone, Debug)]
pub struct AttackRun {
    /// The scenario.
    pub scenario: Scenario,
    /// The source address it came from.
    pub src: String,
    /// Wall-clock start and end of the tool.
    pub started: f64,
    /// Wall-clock end of the tool.
    pub ended: f64,
    /// The tool's exit status (hping3 `--faster` exits 1: expected).
    pub exit: Option<i32>,
    /// Stopped [`BLOCKED_GRACE_S`] after its source was blocked.
    pub cut_short: bool,
    /// The tool's stdout and stderr (in the lab's directory).
    pub log: PathBuf,
}

impl AttackRun {
    /// Whether alert `v` names this attack: its source, or for a spoofed
    /// flood (no single source) its victim.
    fn named_by(&self, v: &serde_json::Value) -> bool {
        if self.scenario.spoofed {
            v["src_ip"].is_null() && v["dest_ip"] == self.scenario.victim
        } else {
            v["src_ip"] == self.src.as_str()
        }
    }

    /// Whether alert `v` is of a kind this scenario should raise.
    fn expects(&self, v: &serde_json::Value) -> bool {
        self.scenario.expect.iter().any(|k| v["gatewarden"]["kind"] == *k)
    }
}

/// How long an attack tool keeps running once its source is in a block set.
pub const BLOCKED_GRACE_S: f64 = 2.0;

/// A running capture + gatewarden + benign traffic; see [`Lab::session`].
pub struct Session<'a> {
    lab: &'a Lab,
    capture: Option<PathBuf>,
    /// The session's seed (each behaviour's follows from it).
    pub seed: u64,
    /// Wall time the session started.
    pub started: f64,
    /// (device, address, behaviour, its stdout file) of every behaviour started.
    behaviours: Vec<(&'static str, &'static str, &'static str, PathBuf)>,
    outages: Vec<(f64, f64)>,
    procs: Vec<Guard>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    attacks: Vec<AttackRun>,
    /// Names this session's files in the lab directory (`<tag>.gatewarden.log`).
    tag: String,
    /// Reads `nft -j monitor` (ends when the monitor is stopped with the other processes).
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Session<'_> {
    /// Runs one scenario to completion (bounded by its timeout).
    pub fn attack(&mut self, s: &Scenario) {
        let dev = self.lab.device(s.from);
        let wordlist = self.lab.path("passwords.txt");
        if !wordlist.exists() {
            let words: String = (0..60).map(|i| format!("iot{i:02}pass\n")).collect();
            std::fs::write(&wordlist, words).unwrap();
        }
        let argv: Vec<String> = s
            .argv
            .iter()
            .map(|a| if *a == "WORDLIST" { wordlist.to_str().unwrap().to_string() } else { a.to_string() })
            .collect();
        // IPv6 scenarios come from the device's IPv6 address.
        let src = if s.victim.contains(':') {
            dev.addr6.unwrap_or_else(|| panic!("{} has no IPv6 address for {}", dev.name, s.name)).to_string()
        } else {
            dev.addr.to_string()
        };
        let log = self.lab.path(&format!("{}.tool.log", s.name));
        let out = std::fs::File::create(&log).unwrap();
        let started = now();
        // In the lab's directory: hydra writes `hydra.restore` into its working directory when stopped.
        let mut tool = dev
            .ns
            .command("timeout")
            .current_dir(self.lab.dir.path())
            .arg(s.timeout_s.to_string())
            .args(&argv)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        // A blocked tool only waits for answers that never come (nmap slows
        // down, hydra retries): stop it a moment after its source is blocked.
        let mut cut_short = false;
        let status = loop {
            if let Some(st) = tool.try_wait().unwrap() {
                break st;
            }
            let blocked_at = self.seen.lock().unwrap().blocks.get(&src).copied();
            if blocked_at.is_some_and(|t| now() - t > BLOCKED_GRACE_S) {
                let _ = Command::new("kill").args(["-TERM", &tool.id().to_string()]).status();
                cut_short = true;
                break tool.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let ended = now();
        self.attacks.push(AttackRun { scenario: s.clone(), src, started, ended, exit: status.code(), cut_short, log });
    }

    /// Sleeps while benign traffic and the detector carry on.
    pub fn idle(&self, secs: f64) {
        std::thread::sleep(Duration::from_secs_f64(secs));
    }

    /// A WAN outage of `secs` seconds: the router drops everything it would
    /// forward to or from `wan0` (its own table `inet lab_outage`, silently,
    /// as a dead uplink does), then lets it through again, and every device
    /// with a persistent connection reconnects at about the same moment (the
    /// reconnect storm).
    pub fn wan_outage(&mut self, secs: f64) {
        let nft = |args: &[&str]| {
            let out = self.lab.router.command("nft").args(args).output().unwrap();
            assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        nft(&["add", "table", "inet", "lab_outage"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "lab_outage",
            "outage",
            "{ type filter hook forward priority -50; policy accept; }",
        ]);
        nft(&["add", "rule", "inet", "lab_outage", "outage", "oifname", "wan0", "drop"]);
        nft(&["add", "rule", "inet", "lab_outage", "outage", "iifname", "wan0", "drop"]);
        let t0 = now();
        self.idle(secs);
        nft(&["delete", "table", "inet", "lab_outage"]);
        self.outages.push((t0, now()));
    }

    /// Alerts and blocked addresses seen so far (for progress lines).
    pub fn seen_so_far(&self) -> (usize, usize) {
        let s = self.seen.lock().unwrap();
        (s.alerts.len(), s.blocks.len())
    }

    /// Whether every attack so far has an alert of an expected kind naming it
    /// (its source, or its victim for spoofed floods) and, with enforcement,
    /// its real source in a block set, as the poller saw them.
    fn every_attack_answered(&self) -> bool {
        let seen = self.seen.lock().unwrap();
        self.attacks.iter().all(|a| {
            let blocked = a.scenario.spoofed
                || a.scenario.policy != Expect::Block
                || !seen.enforcement
                || seen.blocks.contains_key(&a.src);
            blocked && seen.alerts.values().any(|(_, v)| a.named_by(v) && a.expects(v))
        })
    }

    /// Stops everything it started and analyses the capture.
    pub fn finish(mut self) -> SessionRecord {
        // A loaded machine can lag: give the API and nftables up to 8 s more
        // to show the alerts and blocks (scoring still uses the alerts' own
        // timestamps and the block's first sighting against the first attack
        // packet, so a late answer cannot pass for a prompt one).
        let settle = Instant::now();
        while !self.every_attack_answered() && settle.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // One last poll after the detector's final batch.
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            p.join().unwrap();
        }
        // Benign profiles (and their curl, iperf3, … children) and any tool still running first.
        for d in &self.lab.devices {
            for pid in pids_in(&d.ns.name) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
        // Then gatewarden, tcpdump (flushes the capture) and the iperf3 servers.
        for g in self.procs.iter_mut() {
            if g.child().try_wait().unwrap().is_none() {
                let _ = Command::new("kill").args(["-INT", &g.child().id().to_string()]).stderr(Stdio::null()).status();
            }
        }
        for g in self.procs.iter_mut() {
            if g.wait_timeout(Duration::from_secs(3)).is_none() {
                let _ = g.child().kill();
            }
        }
        self.procs.clear();
        // A gatewarden that needed the SIGKILL leaves its table behind, and the
        // next start carries a stale table's blocks over (issue #15): remove it,
        // so each session starts with no blocks, as scoring assumes.
        let _ = self
            .lab
            .router
            .command("nft")
            .args(["delete", "table", "inet", "gatewarden"])
            .stderr(Stdio::null())
            .output();
        // Server sides of the attack's connections outlive the killed tool: sshd
        // keeps a blocked hydra's sessions for its LoginGraceTime (the client's
        // FIN/RST were dropped by the block). The next session's fresh gatewarden
        // would see them as new sessions and flag the attacker before its next
        // attack starts (it did: "5 sessions to 198.51.100.10:22 (SSH) in 0.0 s"
        // during the telnet scenario's warm-up). Abort them now, unobserved.
        for a in &self.attacks {
            let _ = self.lab.wan.command("ss").args(["-K", "-tn", "dst", &a.src]).output();
        }
        let _ = self.lab.router.command("nft").args(["delete", "table", "inet", "lab_outage"]).output();
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let timing = self.stage_timings(&seen);
        for line in &timing {
            eprintln!("        {line}");
        }
        self.keep(&seen, &timing);
        let packets = self.capture.as_deref().map(read_pcap).unwrap_or_default();
        let behaviours = self
            .behaviours
            .iter()
            .map(|(device, addr, behaviour, out)| {
                let text = std::fs::read_to_string(out).unwrap_or_default();
                let params = text.lines().next().unwrap_or("").to_string();
                BehaviourRun { device, addr, behaviour, params }
            })
            .collect();
        SessionRecord {
            capture: self.capture.clone(),
            packets,
            attacks: std::mem::take(&mut self.attacks),
            alerts: seen.alerts.into_values().collect(),
            blocks: seen.blocks,
            enforcement: seen.enforcement,
            benign: self.lab.benign_addrs(),
            seed: self.seed,
            started: self.started,
            ended: now(),
            behaviours,
            outages: std::mem::take(&mut self.outages),
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
    }
}

/// One captured packet's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Pkt {
    /// Capture time, Unix seconds.
    pub ts: f64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// Reads IP addresses and times from a classic Ethernet pcap as tcpdump writes it.
/// ARP requests and replies count as packets from the sender to the target
/// address, an IPv6 neighbour solicitation as one to its target (not the
/// solicited-node multicast group it is sent to): LAN mapping is made of them.
pub fn read_pcap(path: &Path) -> Vec<Pkt> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 24, "{} is not a pcap", path.display());
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let nanos = match magic {
        0xa1b2c3d4 => false,
        0xa1b23c4d => true,
        m => panic!("{}: unexpected pcap magic {m:#x}", path.display()),
    };
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let (sec, frac, incl) = (u32at(off), u32at(off + 4), u32at(off + 8) as usize);
        let data = &b[off + 16..(off + 16 + incl).min(b.len())];
        off += 16 + incl;
        let ts = sec as f64 + frac as f64 / if nanos { 1e9 } else { 1e6 };
        if data.len() < 14 {
            continue;
        }
        let ip = &data[14..];
        match u16::from_be_bytes([data[12], data[13]]) {
            0x0800 if ip.len() >= 20 => {
                let a: [u8; 4] = ip[12..16].try_into().unwrap();
                let d: [u8; 4] = ip[16..20].try_into().unwrap();
                out.push(Pkt { ts, src: IpAddr::from(a), dst: IpAddr::from(d) });
            }
            0x86dd if ip.len() >= 40 => {
                let a: [u8; 16] = ip[8..24].try_into().unwrap();
                let mut d: [u8; 16] = ip[24..40].try_into().unwrap();
                if ip[6] == 58 && ip.len() >= 64 && ip[40] == 135 {
                    d = ip[48..64].try_into().unwrap();
                }
                out.push(Pkt { ts, src: IpAddr::from(a), dst: IpAddr::from(d) });
            }
            0x0806 if ip.len() >= 28 && ip[0..6] == [0, 1, 8, 0, 6, 4] => {
                let a: [u8; 4] = ip[14..18].try_into().unwrap();
                let d: [u8; 4] = ip[24..28].try_into().unwrap();
                out.push(Pkt { ts, src: IpAddr::from(a), dst: IpAddr::from(d) });
            }
            _ => {}
        }
    }
    out
}

/// Parses the EVE timestamp `2026-11-23T22:13:15.099682+0000` (UTC) to Unix seconds.
pub fn parse_eve_time(s: &str) -> Option<f64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = rest.get(..15)?; // HH:MM:SS.ffffff
    let h: i64 = time.get(0..2)?.parse().ok()?;
    let mi: i64 = time.get(3..5)?.parse().ok()?;
    let sec: f64 = time.get(6..)?.parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// One benign behaviour as a session ran it.
#[derive(Clone, Debug)]
pub struct BehaviourRun {
    /// Device name.
    pub device: &'static str,
    /// Its LAN address.
    pub addr: &'static str,
    /// Behaviour (tests/lab/benign.sh).
    pub behaviour: &'static str,
    /// The `behaviour=… key=value …` line it printed: the parameters it drew.
    pub params: String,
}

/// What a session produced.
pub struct SessionRecord {
    /// The capture file, if the session had one.
    pub capture: Option<PathBuf>,
    /// The session's seed.
    pub seed: u64,
    /// Wall-clock start and end.
    pub started: f64,
    /// Wall-clock end.
    pub ended: f64,
    /// Every benign behaviour with its parameters.
    pub behaviours: Vec<BehaviourRun>,
    /// WAN outages the harness caused: (start, end), wall clock.
    pub outages: Vec<(f64, f64)>,
    /// Its packets' addresses and times.
    pub packets: Vec<Pkt>,
    /// The attacks, in order.
    pub attacks: Vec<AttackRun>,
    /// (wall time first seen in the API, EVE JSON) per alert.
    pub alerts: Vec<(f64, serde_json::Value)>,
    /// Blocked address → wall time first seen in the block set.
    pub blocks: BTreeMap<String, f64>,
    /// Whether gatewarden's nftables table existed.
    pub enforcement: bool,
    /// Benign device addresses.
    pub benign: BTreeSet<String>,
}

/// The score of one attack.
#[derive(Clone, Debug)]
pub struct Score {
    /// Scenario name.
    pub name: &'static str,
    /// Ground-truth label.
    pub label: &'static str,
    /// The command, for the table.
    pub command: String,
    /// Attack packets seen on the router's LAN side.
    pub packets: usize,
    /// First and last attack packet (capture time).
    pub span: Option<(f64, f64)>,
    /// An expected alert was raised.
    pub detected: bool,
    /// Alert kinds attributed to this attack.
    pub kinds: BTreeSet<String>,
    /// First attack packet → alert timestamp (the detector's decision, capture clock).
    pub to_verdict_s: Option<f64>,
    /// First attack packet → alert first seen in `/api/alerts` (100 ms polling).
    pub to_api_s: Option<f64>,
    /// Block-set observation, or why there is none.
    pub block: Block,
    /// `alert.action` of the expected alerts (`blocked`, `allowed`).
    pub actions: BTreeSet<String>,
    /// What the policy should have done.
    pub policy: Expect,
}

/// Time to block and packets let through, from `nft -j list ruleset`.
#[derive(Clone, Debug)]
pub enum Block {
    /// `table inet gatewarden` never appeared: the session ran without enforcement.
    NotMerged,
    /// Enforcement ran but the source was never put in a block set.
    NotBlocked,
    /// The source appeared in a block set.
    Blocked {
        /// First attack packet → element seen.
        after_s: f64,
        /// Attack packets captured before that moment.
        packets_before: usize,
    },
    /// Spoofed sources are rate-limited, not blocked.
    Spoofed,
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Block::NotMerged => write!(f, "n/a (enforcement off) | n/a (enforcement off)"),
            Block::NotBlocked => write!(f, "not blocked | –"),
            Block::Blocked { after_s, packets_before } => write!(f, "{after_s:.2} s | {packets_before}"),
            Block::Spoofed => write!(f, "n/a (spoofed: SYN meter, no block) | –"),
        }
    }
}

fn alert_time(a: &serde_json::Value) -> Option<f64> {
    parse_eve_time(a["timestamp"].as_str()?)
}

impl SessionRecord {
    fn attack_packets(&self, a: &AttackRun) -> Vec<Pkt> {
        let lab_addr = |ip: &IpAddr| {
            let s = ip.to_string();
            s.starts_with("192.0.2.") || s.starts_with("198.51.100.")
        };
        // A subnet victim (a sweep): IPv4 /24 and /25 by their first three
        // octets, an IPv6 /120 by its text up to the last group.
        let victim_net = a.scenario.victim.split_once('/').map(|(n, _)| match n.contains(':') {
            true => n.to_string(),
            false => n.rsplit_once('.').unwrap().0.to_string() + ".",
        });
        let to_victim = |p: &Pkt| match &victim_net {
            Some(prefix) => p.dst.to_string().starts_with(prefix.as_str()),
            None => p.dst.to_string() == a.scenario.victim,
        };
        self.packets
            .iter()
            .filter(|p| p.ts >= a.started - 0.5 && p.ts <= a.ended + 0.5 && to_victim(p))
            .filter(|p| if a.scenario.spoofed { !lab_addr(&p.src) } else { p.src.to_string() == a.src })
            .copied()
            .collect()
    }

    fn attributed<'b>(&'b self, a: &'b AttackRun) -> impl Iterator<Item = &'b (f64, serde_json::Value)> + 'b {
        self.alerts.iter().filter(move |(_, v)| {
            let t = alert_time(v).unwrap_or(0.0);
            let in_time = t >= a.started - 0.5 && t <= a.ended + 3.0;
            in_time && a.named_by(v)
        })
    }

    /// Scores every attack of the session.
    pub fn scores(&self) -> Vec<Score> {
        self.attacks
            .iter()
            .map(|a| {
                let pkts = self.attack_packets(a);
                let span = pkts.first().map(|f| (f.ts, pkts.last().unwrap().ts));
                let kinds: BTreeSet<String> = self
                    .attributed(a)
                    .filter_map(|(_, v)| v["gatewarden"]["kind"].as_str().map(String::from))
                    .collect();
                let hits: Vec<&(f64, serde_json::Value)> = self.attributed(a).filter(|(_, v)| a.expects(v)).collect();
                let first = span.map(|s| s.0);
                let to_verdict_s = first
                    .and_then(|f| hits.iter().filter_map(|(_, v)| alert_time(v)).min_by(f64::total_cmp).map(|t| t - f));
                let to_api_s = first.and_then(|f| hits.iter().map(|(w, _)| *w).min_by(f64::total_cmp).map(|t| t - f));
                let block = if a.scenario.spoofed {
                    Block::Spoofed
                } else if !self.enforcement {
                    Block::NotMerged
                } else {
                    match (self.blocks.get(&a.src), first) {
                        (Some(&t), Some(f)) => {
                            Block::Blocked { after_s: t - f, packets_before: pkts.iter().filter(|p| p.ts < t).count() }
                        }
                        _ => Block::NotBlocked,
                    }
                };
                Score {
                    name: a.scenario.name,
                    label: a.scenario.label,
                    command: a.scenario.argv.join(" ").replace("WORDLIST", "60-words.txt"),
                    packets: pkts.len(),
                    span,
                    detected: !hits.is_empty(),
                    kinds,
                    to_verdict_s,
                    to_api_s,
                    block,
                    actions: hits.iter().filter_map(|(_, v)| v["alert"]["action"].as_str().map(String::from)).collect(),
                    policy: a.scenario.policy,
                }
            })
            .collect()
    }

    /// Benign devices that any alert named as its source: (address, kinds).
    pub fn flagged_benign(&self) -> BTreeMap<String, BTreeSet<String>> {
        let attack_srcs: BTreeSet<&str> = self.attacks.iter().map(|a| a.src.as_str()).collect();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, v) in &self.alerts {
            if let Some(src) = v["src_ip"].as_str() {
                if self.benign.contains(src) && !attack_srcs.contains(src) {
                    out.entry(src.into()).or_default().insert(v["gatewarden"]["kind"].as_str().unwrap_or("?").into());
                }
            }
        }
        out
    }

    /// Benign addresses that appeared in a block set, with when (wall time);
    /// a device that ran one of the session's attacks (a compromised camera)
    /// is not benign here: its scenario's policy expectation judges it.
    pub fn blocked_benign(&self) -> BTreeMap<String, f64> {
        let attack_srcs: BTreeSet<&str> = self.attacks.iter().map(|a| a.src.as_str()).collect();
        self.blocks
            .iter()
            .filter(|(a, _)| self.benign.contains(*a) && !attack_srcs.contains(a.as_str()))
            .map(|(a, t)| (a.clone(), *t))
            .collect()
    }

    /// `behaviours.csv`: device,addr,behaviour,params (one line per behaviour run).
    pub fn behaviours_csv(&self) -> String {
        let mut s = String::from("device,addr,behaviour,params\n");
        for b in &self.behaviours {
            let _ = writeln!(s, "{},{},{},\"{}\"", b.device, b.addr, b.behaviour, b.params.replace('"', "'"));
        }
        s
    }

    /// Alerts blaming an address that is neither an attacker nor a LAN device
    /// (e.g. a victim's replies): (address, kinds).
    pub fn flagged_other(&self) -> BTreeMap<String, BTreeSet<String>> {
        let attack_srcs: BTreeSet<&str> = self.attacks.iter().map(|a| a.src.as_str()).collect();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, v) in &self.alerts {
            if let Some(src) = v["src_ip"].as_str() {
                if !self.benign.contains(src) && !attack_srcs.contains(src) && src.starts_with("198.51.100.") {
                    out.entry(src.into()).or_default().insert(v["gatewarden"]["kind"].as_str().unwrap_or("?").into());
                }
            }
        }
        out
    }

    /// Ground truth in the format `gatewarden features --labels` reads:
    /// `src,start,end,label`, one line per attack (per forged source for
    /// spoofed floods), times of the first and last attack packet.
    pub fn labels_csv(&self) -> String {
        let mut s = String::from("src,start,end,label\n");
        for a in &self.attacks {
            let pkts = self.attack_packets(a);
            let mut by_src: BTreeMap<String, (f64, f64)> = BTreeMap::new();
            for p in &pkts {
                let e = by_src.entry(p.src.to_string()).or_insert((p.ts, p.ts));
                e.1 = p.ts;
            }
            for (src, (t0, t1)) in by_src {
                let _ = writeln!(s, "{src},{t0:.6},{:.6},{}", t1 + 1e-6, a.scenario.label);
            }
        }
        s
    }
}

/// Formats the scoring table (Markdown).
pub fn table(
    scores: &[Score],
    flagged: &BTreeMap<String, BTreeSet<String>>,
    other: &BTreeMap<String, BTreeSet<String>>,
) -> String {
    let mut s = String::new();
    s.push_str("| scenario | label | command | attack packets | detected | alert kinds | first packet → verdict | → in /api/alerts | → block element | packets before block |\n");
    s.push_str("|---|---|---|---:|---|---|---:|---:|---:|---:|\n");
    for sc in scores {
        let secs = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3} s"));
        let kinds =
            if sc.kinds.is_empty() { "–".into() } else { sc.kinds.iter().cloned().collect::<Vec<_>>().join(", ") };
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} |",
            sc.name,
            sc.label,
            sc.command,
            sc.packets,
            if sc.detected { "yes" } else { "**no**" },
            kinds,
            secs(sc.to_verdict_s),
            secs(sc.to_api_s),
            sc.block
        );
    }
    let hosts = |m: &BTreeMap<String, BTreeSet<String>>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(h, k)| format!("{h} ({})", k.iter().cloned().collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let _ = writeln!(s, "\nBenign LAN devices ever flagged: {}.", hosts(flagged));
    let _ = writeln!(s, "\nWAN hosts (victims, servers) ever flagged as a source: {}.", hosts(other));
    s
}

/// Env `GATEWARDEN_LAB_KEEP=DIR`: every session's evidence is copied to
/// `DIR/<start>-<tag>/` before the lab directory is removed: gatewarden's log
/// (with the `timing` target at trace: one line per flow batch), its config,
/// the capture, tcpdump's and the attack tools' output, the poller's trace
/// (`poll.csv`) and the stage timings (`timing.txt`). So a slow block can be
/// explained after the run (docs/DETECTION.md "Time to block, live").
pub fn keep_dir() -> Option<PathBuf> {
    std::env::var_os("GATEWARDEN_LAB_KEEP").filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// `gatewarden` as the lab runs it in the router namespace: in a session of
/// its own (`setsid`), as the router is a box of its own. The kernel's
/// autogroup scheduling gives each session one share of the CPUs; in the
/// test's session the gateway shared one share with every device's traffic
/// generator (iperf3 streams, curl loops, web servers, the poller's forks),
/// and on a loaded machine it waited 0.1-0.7 s to run for each 2 ms of work,
/// so the detector fell seconds behind the capture (docs/DETECTION.md "Time
/// to block, live"). Env `GATEWARDEN_LAB_SHARED_CPU=1` keeps it in the test's
/// session, for comparison.
fn router_command(router: &Netns) -> Command {
    let gatewarden = shipped_bin().to_str().unwrap().to_string();
    if std::env::var_os("GATEWARDEN_LAB_SHARED_CPU").is_some_and(|v| v == "1") {
        return router.command(&gatewarden);
    }
    // Not a process group leader (spawned in the test's group), so setsid execs in place:
    // the guarded pid stays gatewarden's.
    let mut c = router.command("setsid");
    c.arg(gatewarden);
    c
}

/// gatewarden's log filter in the lab: info, plus the `timing` target's
/// per-verdict stage lines (debug); with [`keep_dir`], per-batch lines too (trace).
pub fn timing_log_filter() -> &'static str {
    if keep_dir().is_some() {
        "info,timing=trace"
    } else {
        "info,timing=debug"
    }
}

/// A log line's `timestamp` (`2026-12-04T22:52:47.123456Z`) as Unix seconds.
fn log_time(v: &serde_json::Value) -> Option<f64> {
    parse_eve_time(v["timestamp"].as_str()?)
}

impl Session<'_> {
    /// One `timing key=value …` line per attack with a real source: where the
    /// time went from the first verdict naming it (its capture time, `+0`) to
    /// the block element, in milliseconds, from gatewarden's `timing` log lines
    /// and the poller; plus whatever stalled in that span (the node's task
    /// thread, the enforcement thread, the capture thread, a slow poll).
    fn stage_timings(&self, seen: &Seen) -> Vec<String> {
        let log = std::fs::read_to_string(self.lab.path(&format!("{}.gatewarden.log", self.tag))).unwrap_or_default();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| l.contains("\"timing\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "timing")
            .collect();
        let mut out = Vec::new();
        for a in self.attacks.iter().filter(|a| !a.scenario.spoofed) {
            let Some(decided) = lines.iter().find(|v| v["stage"] == "verdict_decided" && v["source"] == a.src.as_str())
            else {
                out.push(format!("timing src={} scenario={} verdict=none", a.src, a.scenario.name));
                continue;
            };
            let id = decided["verdict_id"].as_u64().unwrap_or(0);
            let zero = decided["issued_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
            let ms = |t: f64| format!("{:+.0}", (t - zero) * 1000.0);
            let at = |stage: &str, key: &str| {
                lines
                    .iter()
                    .find(|v| v["stage"] == stage && v[key].as_u64() == Some(id) && v["source"] == a.src.as_str())
                    .and_then(log_time)
            };
            let mut line = format!(
                "timing src={} scenario={} verdict={id} kind={} arrived_ms={} queued={} analysis_ms={:.1}",
                a.src,
                a.scenario.name,
                decided["kind"].as_str().unwrap_or("?"),
                decided["arrived_ms"],
                decided["queued"],
                decided["analysis_us"].as_f64().unwrap_or(0.0) / 1000.0,
            );
            let mut last = zero;
            for (name, stage, key) in [
                ("decided", "verdict_decided", "verdict_id"),
                ("forwarded", "verdict_forwarded", "verdict_id"),
                ("enforce", "enforce_received", "verdict_id"),
                ("acked", "block_acked", "verdict_id"),
                ("outcome", "outcome_recorded", "verdict_id"),
                ("alert", "alert_received", "alert_id"),
            ] {
                match at(stage, key) {
                    Some(t) => {
                        let _ = write!(line, " {name}={}", ms(t));
                        last = last.max(t);
                    }
                    None => {
                        let _ = write!(line, " {name}=none");
                    }
                }
            }
            let api = seen
                .alerts
                .values()
                .filter(|(_, v)| v["src_ip"] == a.src.as_str())
                .map(|(t, _)| *t)
                .min_by(f64::total_cmp);
            let element = seen.blocks.get(&a.src).copied();
            let listed = seen.listed.get(&a.src).copied();
            for (name, t) in [("api", api), ("element", element), ("listed", listed)] {
                match t {
                    Some(t) => {
                        let _ = write!(line, " {name}={}", ms(t));
                        last = last.max(t);
                    }
                    None => {
                        let _ = write!(line, " {name}=none");
                    }
                }
            }
            // What stalled between one second before the verdict's capture and the block seen.
            let (from, to) = (zero - 1.0, last + 0.1);
            let mut stalls = Vec::new();
            for v in &lines {
                let Some(t) = log_time(v).filter(|t| (from..=to).contains(t)) else { continue };
                let us = |k: &str| v[k].as_u64().unwrap_or(0) / 1000;
                // cpu: on a CPU meanwhile; run: runnable, waiting for a CPU (the rest: blocked).
                let what = match v["stage"].as_str().unwrap_or("") {
                    "executor_stall" => {
                        format!("executor:{}ms(cpu={},run={})", v["late_ms"], v["cpu_ms"], v["waited_to_run_ms"])
                    }
                    "task_slow_poll" => format!(
                        "task:{}:{}ms(cpu={},run={})",
                        v["task"].as_str().unwrap_or("?"),
                        v["took_ms"],
                        v["cpu_ms"],
                        v["waited_to_run_ms"]
                    ),
                    "enforce_slow_turn" => {
                        format!(
                            "enforce:{}ms({})",
                            v["took_ms"],
                            v["steps_ms"].as_str().unwrap_or("").replace(' ', ",")
                        )
                    }
                    "capture_lag" => format!("capture_lag:{}ms", v["lag_ms"]),
                    "batch_analysed" if us("hooks_us") + us("analysis_us") >= 200 => {
                        format!("analysis:{}ms(hooks={})", us("analysis_us"), us("hooks_us"))
                    }
                    _ => continue,
                };
                stalls.push(format!("{what}@{}", ms(t)));
            }
            for (start, _, end) in seen.polls.iter().filter(|(s, _, e)| *e >= from && *s <= to) {
                if end - start > 0.5 {
                    stalls.push(format!("poll:{:.0}ms@{}", (end - start) * 1000.0, ms(*start)));
                }
            }
            let _ = write!(line, " stalls=[{}]", stalls.join(" "));
            out.push(line);
        }
        out
    }

    /// Copies this session's evidence to [`keep_dir`] (when set).
    fn keep(&self, seen: &Seen, timing: &[String]) {
        let Some(base) = keep_dir() else { return };
        let dest = base.join(format!("{}-{}", self.started as u64, self.tag));
        if let Err(e) = std::fs::create_dir_all(&dest) {
            eprintln!("        GATEWARDEN_LAB_KEEP: cannot create {}: {e}", dest.display());
            return;
        }
        let mut files = vec![
            self.lab.path(&format!("{}.gatewarden.log", self.tag)),
            self.lab.path(&format!("{}.tcpdump.log", self.tag)),
            self.lab.path("gatewarden.toml"),
        ];
        files.extend(self.capture.clone());
        files.extend(self.attacks.iter().map(|a| a.log.clone()));
        for f in files {
            if let Some(name) = f.file_name() {
                if let Err(e) = std::fs::copy(&f, dest.join(name)) {
                    eprintln!("        GATEWARDEN_LAB_KEEP: {} not kept: {e}", f.display());
                }
            }
        }
        let mut polls = String::from("start,alerts_answered,nft_listed\n");
        for (a, b, c) in &seen.polls {
            let _ = writeln!(polls, "{a:.6},{b:.6},{c:.6}");
        }
        let mut attacks = String::from("scenario,src,started,ended,exit,cut_short\n");
        for a in &self.attacks {
            let _ = writeln!(
                attacks,
                "{},{},{:.6},{:.6},{:?},{}",
                a.scenario.name, a.src, a.started, a.ended, a.exit, a.cut_short
            );
        }
        let mut added = String::from("seen,set,addr\n");
        for (t, set, addr) in &seen.added {
            let _ = writeln!(added, "{t:.6},{set},{addr}");
        }
        let _ = std::fs::write(dest.join("elements.csv"), added);
        let _ = std::fs::write(dest.join("poll.csv"), polls);
        let _ = std::fs::write(dest.join("attacks.csv"), attacks);
        let _ = std::fs::write(dest.join("timing.txt"), timing.join("\n") + "\n");
        eprintln!("        kept in {}", dest.display());
    }
}
