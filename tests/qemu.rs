//! The appliance image booted in QEMU (aarch64, TCG): the role comes only
//! from the kernel command line, init brings up the network and the services
//! for that role, and the status API answers through QEMU's hostfwd.
//!
//! Needs `qemu-system-aarch64` and the images that `tools/make-image.sh`
//! writes to `target/images/` (override with `GATEWARDEN_IMAGES`);
//! `tools/test.sh` installs QEMU and builds the images before `cargo test`.
//! When either is missing the tests fail if `CI` is set and print a skip
//! message otherwise. The cluster test also needs root (network namespaces, taps, bridges).
//!
//! Boot-to-healthz times are printed (`cargo test --test qemu -- --nocapture`).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{link_to_bridge, Netns};
use common::{free_port, http, root};

/// How long a VM may take from QEMU start to `/healthz` under TCG on a busy CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a VM may take to power off once asked.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// The port the guest's test hook listens on; a connection to it powers the VM off.
const POWEROFF_PORT: u16 = 7999;
/// Guest-side backstop: every VM powers itself off this many seconds after boot.
const GUEST_BACKSTOP_S: u32 = 240;

fn images_dir() -> PathBuf {
    std::env::var_os("GATEWARDEN_IMAGES").map(PathBuf::from).unwrap_or_else(|| root().join("target/images"))
}

/// Returns the images directory, or `None` (after saying why) when the tests
/// cannot run here. In CI a missing prerequisite is a failure, never a skip.
fn prerequisites(need_root: bool) -> Option<PathBuf> {
    let dir = images_dir();
    let mut missing = Vec::new();
    if Command::new("qemu-system-aarch64").arg("--version").output().is_err() {
        missing.push("qemu-system-aarch64 (apt-get install qemu-system-arm)".to_string());
    }
    for f in ["vmlinuz", "initramfs.cpio.gz", "gatewarden-qemu-aarch64.img"] {
        if !dir.join(f).is_file() {
            missing.push(format!("{} (run tools/make-image.sh)", dir.join(f).display()));
        }
    }
    if need_root && !is_root() {
        missing.push("root, for network namespaces and taps (run tools/test.sh as root)".to_string());
    }
    if missing.is_empty() {
        return Some(dir);
    }
    let msg = format!("QEMU image test cannot run; missing: {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}. CI must run this test: tools/test.sh installs QEMU and builds the images");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// One NIC of a VM.
enum Nic {
    /// QEMU user networking (the guest gets 10.0.2.15 by DHCP) with the guest's
    /// port 8080 and the power-off port forwarded to the host.
    User { http_port: u16, poweroff_port: u16 },
    /// User networking with nothing forwarded (a second, isolated segment).
    Isolated,
    /// A tap device that already exists in the VM's namespace (plugged into a
    /// Linux bridge there, so network namespaces can share the segment).
    Tap { ifname: String, mac: String },
}

struct VmSpec<'a> {
    name: &'a str,
    cmdline: String,
    nics: Vec<Nic>,
    disk: Option<PathBuf>,
    kernel: PathBuf,
    initrd: PathBuf,
    /// Run QEMU inside the network namespace of this process (via nsenter).
    netns_pid: Option<u32>,
}

/// A running VM; killed on drop so a failing test leaves nothing behind.
struct Vm {
    name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
    netns_pid: Option<u32>,
    http_port: u16,
    poweroff_port: u16,
    /// Sent as `Authorization: Bearer` by [`Vm::get`] (the monitor's API needs one).
    token: Option<String>,
}

impl Vm {
    fn start(spec: VmSpec<'_>, logdir: &Path) -> Vm {
        let log = logdir.join(format!("{}.serial.log", spec.name));
        let mut args: Vec<String> = vec![
            "-M".into(),
            "virt".into(),
            "-cpu".into(),
            "cortex-a72".into(),
            "-m".into(),
            "512".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", log.display()),
            "-kernel".into(),
            spec.kernel.display().to_string(),
            "-initrd".into(),
            spec.initrd.display().to_string(),
            "-append".into(),
            format!(
                "console=ttyAMA0 {} gatewarden.test_poweroff_port={POWEROFF_PORT} \
                 gatewarden.test_poweroff={GUEST_BACKSTOP_S}",
                spec.cmdline
            ),
        ];
        let (mut http_port, mut poweroff_port) = (0, 0);
        for (i, nic) in spec.nics.iter().enumerate() {
            let netdev = match nic {
                Nic::User { http_port: h, poweroff_port: p } => {
                    http_port = *h;
                    poweroff_port = *p;
                    format!(
                        "user,id=n{i},restrict=on,hostfwd=tcp:127.0.0.1:{h}-:8080,\
                         hostfwd=tcp:127.0.0.1:{p}-:{POWEROFF_PORT}"
                    )
                }
                Nic::Isolated => format!("user,id=n{i},restrict=on"),
                Nic::Tap { ifname, .. } => format!("tap,id=n{i},ifname={ifname},script=no,downscript=no"),
            };
            let mac = match nic {
                Nic::Tap { mac, .. } => format!(",mac={mac}"),
                _ => String::new(),
            };
            args.extend([
                "-netdev".into(),
                netdev,
                "-device".into(),
                format!("virtio-net-pci,netdev=n{i},romfile={mac}"),
            ]);
        }
        if let Some(disk) = &spec.disk {
            args.extend(["-drive".into(), format!("file={},format=raw,if=virtio,snapshot=on", disk.display())]);
        }
        let mut cmd = match spec.netns_pid {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-n", "qemu-system-aarch64"]);
                c
            }
            None => Command::new("qemu-system-aarch64"),
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-aarch64");
        Vm {
            name: spec.name.to_string(),
            child,
            log,
            started: Instant::now(),
            netns_pid: spec.netns_pid,
            http_port,
            poweroff_port,
            token: None,
        }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the guest's port 8080 through hostfwd: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.http_port);
        match self.netns_pid {
            None => http("GET", &addr, path).ok().map(|(s, _, b)| (s, b)),
            Some(pid) => {
                let mut args = vec!["-t".to_string(), pid.to_string(), "-n".into(), "curl".into(), "-s".into()];
                args.extend(["-m", "3", "-w", "\n%{http_code}"].map(String::from));
                if let Some(t) = &self.token {
                    args.extend(["-H".to_string(), format!("Authorization: Bearer {t}")]);
                }
                let out = Command::new("nsenter").args(&args).arg(format!("http://{addr}{path}")).output().ok()?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let (body, code) = text.rsplit_once('\n')?;
                Some((code.trim().parse().ok()?, body.to_string()))
            }
        }
    }

    /// Polls `/healthz` until it answers 200; returns the time since QEMU started.
    fn wait_healthz(&mut self) -> Duration {
        while self.started.elapsed() < BOOT_TIMEOUT {
            if let Some((200, body)) = self.get("/healthz") {
                assert!(body.contains("\"status\":\"ok\""), "{}: /healthz said {body}", self.name);
                return self.started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{}: QEMU exited ({status}) before /healthz answered. Serial console:\n{}",
                    self.name,
                    self.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{}: no /healthz within {BOOT_TIMEOUT:?}. Serial console:\n{}", self.name, self.serial());
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = self
            .get("/api/status")
            .unwrap_or_else(|| panic!("{}: /api/status unreachable. Serial console:\n{}", self.name, self.serial()));
        assert_eq!(code, 200, "{}: /api/status: {body}. Serial console:\n{}", self.name, self.serial());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{}: /api/status is not JSON ({e}): {body}", self.name))
    }

    /// Waits until the serial console shows `needle`.
    fn wait_serial(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.serial().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{}: serial console never showed {needle:?} within {timeout:?}:\n{}", self.name, self.serial());
    }

    /// Asks the guest to power off (test hook) and waits for QEMU to exit.
    fn poweroff(mut self) {
        let ask = || -> std::io::Result<()> {
            match self.netns_pid {
                None => TcpStream::connect(("127.0.0.1", self.poweroff_port))?.write_all(b"poweroff\n"),
                // Any connection will do: curl connects, the guest's `nc -l` sees it close after 2 s.
                Some(pid) => Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-n", "curl", "-s", "-m", "2", "-o", "/dev/null"])
                    .arg(format!("http://127.0.0.1:{}/", self.poweroff_port))
                    .status()
                    .map(|_| ()),
            }
        };
        ask().unwrap_or_else(|e| panic!("{}: cannot reach the power-off hook: {e}", self.name));
        let start = Instant::now();
        while start.elapsed() < POWEROFF_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{}: QEMU exit status {status}", self.name);
                let serial = self.serial();
                assert!(
                    serial.contains("reboot: Power down"),
                    "{}: VM exited without powering off:\n{serial}",
                    self.name
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{}: did not power off within {POWEROFF_TIMEOUT:?}:\n{}", self.name, self.serial());
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spec<'a>(dir: &Path, name: &'a str, cmdline: &str, nics: Vec<Nic>) -> VmSpec<'a> {
    VmSpec {
        name,
        cmdline: cmdline.to_string(),
        nics,
        disk: None,
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initramfs.cpio.gz"),
        netns_pid: None,
    }
}

fn user_nic() -> Nic {
    Nic::User { http_port: free_port(), poweroff_port: free_port() }
}

fn assert_role(vm: &Vm, role: &str) {
    let s = vm.status();
    assert_eq!(s["role"], role, "{}: {s}", vm.name);
    assert_eq!(s["role_source"], "kernel_cmdline", "{}: the role must come from the kernel command line: {s}", vm.name);
    assert_eq!(s["node"], format!("gw-{role}"), "{}: node id is the hostname init set: {s}", vm.name);
}

#[test]
fn monitor_boots_from_initramfs_with_role_from_cmdline_and_starts_mosquitto() {
    let Some(dir) = prerequisites(false) else { return };
    let logs = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(spec(&dir, "monitor", "gatewarden.role=monitor", vec![user_nic()]), logs.path());
    let t = vm.wait_healthz();
    println!("boot-to-healthz (monitor, initramfs, TCG): {:.2} s", t.as_secs_f64());
    assert_role(&vm, "monitor");
    // The broker runs with the shared libraries the image carries, on loopback only.
    vm.wait_serial("mosquitto: listening on 127.0.0.1:1883", Duration::from_secs(20));
    let serial = vm.serial();
    assert!(serial.contains("network: eth0 (dhcp): 10.0.2.15/24"), "{serial}");
    assert!(serial.contains("supervise[gatewarden]: started pid"), "{serial}");
    vm.poweroff();
}

#[test]
fn router_gets_wan_and_lan_forwards_and_is_restarted_after_a_crash() {
    let Some(dir) = prerequisites(false) else { return };
    let logs = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(
        spec(
            &dir,
            "router",
            "gatewarden.role=router gatewarden.test_kill=1 gatewarden.test_first_rule=1",
            vec![user_nic(), Nic::Isolated],
        ),
        logs.path(),
    );
    let t = vm.wait_healthz();
    println!("boot-to-healthz (router, initramfs, TCG): {:.2} s", t.as_secs_f64());
    assert_role(&vm, "router");
    // One router booting alone: the boot-to-first-rule figure of docs/PERFORMANCE.md.
    vm.wait_serial("s after kernel start", Duration::from_secs(30));
    let serial = vm.serial();
    let first_rule = serial.split("testhooks: first rule ").nth(1).and_then(|t| t.split_whitespace().next());
    println!("router alone: first nftables rule {} s after kernel start (TCG)", first_rule.unwrap_or("?"));
    assert!(first_rule.is_some_and(|t| t.parse::<f64>().is_ok()), "the router logs its first rule:\n{serial}");
    let serial = vm.serial();
    assert!(serial.contains("network: eth0 (dhcp): 10.0.2.15/24"), "WAN by DHCP:\n{serial}");
    assert!(serial.contains("network: eth1 (192.168.50.1/24): 192.168.50.1/24"), "LAN static:\n{serial}");
    assert!(serial.contains("router: wan eth0, lan eth1, ip_forward=1"), "forwarding on:\n{serial}");
    // gatewarden.test_kill=1 SIGKILLs gatewarden once; the supervisor must bring it back.
    vm.wait_serial("supervise[gatewarden]: exited with status 137", Duration::from_secs(30));
    let start = Instant::now();
    loop {
        let serial = vm.serial();
        let restarted = serial.matches("supervise[gatewarden]: started pid").count() >= 2;
        if restarted && matches!(vm.get("/healthz"), Some((200, _))) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "gatewarden was not restarted:\n{serial}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_role(&vm, "router");
    vm.poweroff();
}

/// The dd-able image: boot files from its vfat partition, root filesystem from its ext4 partition.
#[test]
fn disk_image_boots_from_its_partitions() {
    let Some(dir) = prerequisites(false) else { return };
    let img = dir.join("gatewarden-qemu-aarch64.img");
    let tmp = tempfile::tempdir().unwrap();
    // Partition 1 starts at 1 MiB (tools/make-image.sh); take the kernel, initramfs and cmdline from it.
    for f in ["vmlinuz", "initramfs.cpio.gz", "cmdline.txt"] {
        let out = Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@1M", img.display()))
            .arg(format!("::{f}"))
            .arg(tmp.path().join(f))
            .output()
            .expect("mcopy (apt-get install mtools)");
        assert!(out.status.success(), "mcopy {f}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cmdline = std::fs::read_to_string(tmp.path().join("cmdline.txt")).unwrap();
    assert!(cmdline.contains("root=/dev/vda2") && cmdline.contains("gatewarden.role="), "{cmdline}");
    // A later gatewarden.role= overrides the one in cmdline.txt, as on a board.
    let mut s = spec(&dir, "disk", &format!("{} gatewarden.role=detector", cmdline.trim()), vec![user_nic()]);
    s.kernel = tmp.path().join("vmlinuz");
    s.initrd = tmp.path().join("initramfs.cpio.gz");
    s.disk = Some(img);
    let mut vm = Vm::start(s, tmp.path());
    let t = vm.wait_healthz();
    println!("boot-to-healthz (detector, disk image, TCG): {:.2} s", t.as_secs_f64());
    assert_role(&vm, "detector");
    let serial = vm.serial();
    assert!(serial.contains("EXT4-fs (vda2): mounted filesystem"), "root must be the disk's ext4:\n{serial}");
    vm.poweroff();
}

/// The fleet on a board, in VMs: router, detector and monitor, each role
/// chosen only by its kernel command line and each provisioned with its own
/// `gatewarden pki bundle` (added as a second initramfs archive, as a user
/// would add it with `tools/make-image.sh --bundle`). The detector and the
/// router reach Mosquitto on the monitor over mutual TLS; an nmap scan from an
/// attacker namespace on the LAN bridge against a host on the WAN bridge goes
/// through the router VM, whose flows travel to the detector, whose verdict
/// comes back and becomes a block element in the router's nftables (the
/// attacker loses the WAN); the monitor's `/api/alerts` lists the alert.
/// Prints boot-to-first-rule time (docs/PERFORMANCE.md).
#[test]
fn three_node_cluster_detects_and_blocks_a_scan_over_mutual_tls() {
    let Some(dir) = prerequisites(true) else { return };
    for tool in ["cpio", "nmap", "curl", "python3"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).status().is_ok_and(|s| s.success());
        if !found {
            assert!(std::env::var_os("CI").is_none(), "{tool} is missing: tools/test.sh installs it");
            eprintln!("SKIPPED three_node_cluster: {tool} not installed");
            return;
        }
    }
    let logs = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();

    // Provisioning, as an operator would on a laptop: one CA, one certificate per node.
    let pki = work.path().join("pki");
    let gw = |args: &[&str]| {
        let out = Command::new(common::bin()).args(args).output().unwrap();
        assert!(out.status.success(), "gatewarden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let pki_s = pki.to_str().unwrap();
    gw(&["pki", "init", "--dir", pki_s]);
    let roles = ["router", "detector", "monitor"];
    for role in roles {
        gw(&["pki", "issue", &format!("gw-{role}"), "--role", role, "--dir", pki_s]);
    }
    let base = std::fs::read(dir.join("initramfs.cpio.gz")).unwrap();
    let initrd_for = |role: &str| -> PathBuf {
        let tree = work.path().join(format!("bundle-{role}"));
        let id = format!("gw-{role}");
        gw(&["pki", "bundle", &id, "--broker", "192.0.2.3:8883", "--dir", pki_s, "--out", tree.to_str().unwrap()]);
        // The monitor's token key, so this test can read its API as a viewer.
        if role == "monitor" {
            let key = tree.join("var/lib/gatewarden/monitor/jwt-es384.pem");
            std::fs::create_dir_all(key.parent().unwrap()).unwrap();
            gw(&["token", "jwks", "--key", key.to_str().unwrap()]);
        }
        // Mosquitto drops root for its own user: let it read its key and ACL.
        let tls = tree.join("etc/mosquitto/tls");
        if tls.exists() {
            for f in ["broker.key", "acl"] {
                std::os::unix::fs::chown(tls.join(f), Some(100), Some(101)).unwrap();
            }
        }
        let cpio = Command::new("sh")
            .current_dir(&tree)
            .args(["-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet"])
            .output()
            .unwrap();
        assert!(cpio.status.success() && !cpio.stdout.is_empty(), "cpio: {}", String::from_utf8_lossy(&cpio.stderr));
        let path = work.path().join(format!("{role}.initrd"));
        // The kernel reads a second archive only from a 4-byte boundary; zeros between are skipped.
        let pad = vec![0u8; (512 - base.len() % 512) % 512];
        std::fs::write(&path, [base.as_slice(), &pad, cpio.stdout.as_slice()].concat()).unwrap();
        path
    };

    // The board's switch: a LAN bridge and a WAN bridge in one namespace, the
    // VMs' taps plugged in, plus an attacker on the LAN and a server on the WAN.
    let sw = Netns::new("sw");
    for br in ["brlan", "brwan"] {
        sw.exec(&["ip", "link", "add", br, "type", "bridge"]);
        sw.exec(&["ip", "link", "set", br, "up"]);
    }
    let taps = [("t-rlan", "brlan"), ("t-rwan", "brwan"), ("t-det", "brlan"), ("t-mon", "brlan")];
    for (tap, br) in taps {
        sw.exec(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
        sw.exec(&["ip", "link", "set", tap, "master", br, "up"]);
    }
    let attacker = Netns::new("atk");
    link_to_bridge(&attacker, "eth0", &["192.0.2.66/24"], &sw, "brlan");
    attacker.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
    let server = Netns::new("srv");
    link_to_bridge(&server, "eth0", &["198.51.100.10/24"], &sw, "brwan");
    server.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
    let mut web = server
        .command("python3")
        .args(["-m", "http.server", "8080", "--bind", "198.51.100.10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // QEMU joins the switch namespace through a process that lives in it.
    let mut holder = sw.command("sleep").arg("900").spawn().unwrap();

    let tap = |ifname: &str, mac: &str| Nic::Tap { ifname: ifname.into(), mac: mac.into() };
    let common_args = "gatewarden.mgmt=eth0 gatewarden.if=eth1";
    let nodes = [
        (
            "router",
            "gatewarden.role=router gatewarden.mgmt=eth0 gatewarden.lan=eth1 gatewarden.lan_addr=192.0.2.1/24 \
             gatewarden.wan=eth2 gatewarden.wan_addr=198.51.100.1/24 gatewarden.nat=no \
             gatewarden.test_first_rule=1 gatewarden.test_watch_blocks=200 gatewarden.test_ping=192.0.2.3"
                .to_string(),
            vec![user_nic(), tap("t-rlan", "52:54:00:00:02:01"), tap("t-rwan", "52:54:00:00:03:01")],
        ),
        (
            "detector",
            format!(
                "gatewarden.role=detector {common_args} gatewarden.addr=192.0.2.2/24 gatewarden.test_ping=192.0.2.3"
            ),
            vec![user_nic(), tap("t-det", "52:54:00:00:02:02")],
        ),
        (
            "monitor",
            format!("gatewarden.role=monitor {common_args} gatewarden.addr=192.0.2.3/24"),
            vec![user_nic(), tap("t-mon", "52:54:00:00:02:03")],
        ),
    ];
    let start = Instant::now();
    let mut vms: Vec<Vm> = nodes
        .into_iter()
        .map(|(name, cmdline, nics)| {
            let mut s = spec(&dir, name, &cmdline, nics);
            s.initrd = initrd_for(name);
            s.netns_pid = Some(holder.id());
            Vm::start(s, logs.path())
        })
        .collect();
    for vm in &mut vms {
        vm.wait_healthz();
    }
    println!(
        "three-VM cluster: all /healthz answered {:.1} s after the first QEMU started",
        start.elapsed().as_secs_f64()
    );
    for (vm, role) in vms.iter().zip(roles) {
        assert_role(vm, role);
        vm.wait_serial(&format!("provisioned node: \"gw-{role}\", broker \"192.0.2.3:8883\""), Duration::from_secs(5));
    }
    let key = work.path().join("bundle-monitor/var/lib/gatewarden/monitor/jwt-es384.pem");
    let token = Command::new(common::bin())
        .args(["token", "issue", "--role", "viewer", "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    vms[2].token = Some(String::from_utf8(token.stdout).unwrap().trim().to_string());
    let (router, detector, monitor) = (&vms[0], &vms[1], &vms[2]);
    monitor.wait_serial(
        "mosquitto: listening on 0.0.0.0:8883 (TLS, client certificates required)",
        Duration::from_secs(30),
    );
    router.wait_serial("testhooks: ping 192.0.2.3 ok", Duration::from_secs(40));
    detector.wait_serial("testhooks: ping 192.0.2.3 ok", Duration::from_secs(40));
    router.wait_serial("s after kernel start", Duration::from_secs(60));
    let serial = router.serial();
    let first_rule = serial.split("testhooks: first rule ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap();
    println!("router: first nftables rule {first_rule} s after kernel start (TCG); its boot:");
    for l in serial.lines().filter(|l| l.starts_with("[") && !l.starts_with("[ ")) {
        println!("  {l}");
    }

    // Both peers reach the broker over mutual TLS: the monitor hears their heartbeats.
    let wait_until = |what: &str, limit: Duration, mut ok: Box<dyn FnMut() -> Option<String> + '_>| {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < limit {
            match ok() {
                None => return,
                Some(state) => last = state,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "{what} within {limit:?}; last seen: {last}\nrouter:\n{}\ndetector:\n{}\nmonitor:\n{}",
            router.serial(),
            detector.serial(),
            monitor.serial()
        );
    };
    wait_until(
        "the monitor hears gw-router and gw-detector through Mosquitto",
        Duration::from_secs(60),
        Box::new(|| {
            let nodes = monitor.status()["nodes"].to_string();
            (!(nodes.contains("gw-router") && nodes.contains("gw-detector"))).then_some(nodes)
        }),
    );

    // Before the scan the attacker reaches the WAN server through the router.
    let reach = || {
        attacker
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "http://198.51.100.10:8080/"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    wait_until(
        "the attacker reaches the WAN server through the router VM",
        Duration::from_secs(30),
        Box::new(|| (reach() != "200").then(|| "no HTTP 200".into())),
    );
    let scan_started = Instant::now();
    let scan = attacker
        .command("timeout")
        .args(["90", "nmap", "-n", "-Pn", "-sS", "-T4", "--top-ports", "200", "198.51.100.10"])
        .output()
        .unwrap();
    println!(
        "nmap took {:.1} s: {}",
        scan_started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&scan.stdout).lines().last().unwrap_or("")
    );
    router.wait_serial("testhooks: blocked 192.0.2.66", Duration::from_secs(60));
    println!("router blocked the scanner {:.1} s after the scan started", scan_started.elapsed().as_secs_f64());
    // The kernel drops it: the attacker no longer reaches the WAN.
    assert_ne!(reach(), "200", "the block element must cut the attacker off");
    wait_until(
        "the monitor's /api/alerts lists the scan from 192.0.2.66",
        Duration::from_secs(60),
        Box::new(|| {
            let (code, body) = monitor.get("/api/alerts").unwrap_or_default();
            (!(code == 200 && body.contains("192.0.2.66"))).then_some(body)
        }),
    );
    println!("whole cluster test: {:.1} s", start.elapsed().as_secs_f64());
    for vm in vms {
        vm.poweroff();
    }
    let _ = web.kill();
    let _ = holder.kill();
    let _ = (web.wait(), holder.wait());
}
