#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# (including the ones that need root and network namespaces).
#
# Installs what the tests need from Debian when it is missing and we are root
# (CI runs this as root with no stdin). Run it from anywhere:
#     tools/test.sh
#
# Before `cargo test` it cross-builds the static aarch64 binary
# (tools/cross-build.sh) and assembles the QEMU images (tools/make-image.sh);
# tests/qemu.rs boots them. Outside CI, GATEWARDEN_SKIP_IMAGES=1 skips both
# (the QEMU tests then print SKIPPED); in CI (env CI set) that is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v promtool >/dev/null || need_pkgs+=(prometheus)
# The dashboard test (tests/grafana.rs) runs a real Prometheus server against a 3-node fleet.
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v hping3 >/dev/null || need_pkgs+=(hping3)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v nmap >/dev/null || need_pkgs+=(nmap)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
# The traffic lab (tests/lab.rs, tests/lab/): services, benign profiles, attack tools.
command -v hping3 >/dev/null || need_pkgs+=(hping3)
command -v hydra >/dev/null || need_pkgs+=(hydra)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v mosquitto_pub >/dev/null || need_pkgs+=(mosquitto-clients)
command -v slowhttptest >/dev/null || need_pkgs+=(slowhttptest)
# LAN mapping scenarios (issue #17): arp-scan lives in /usr/sbin.
command -v arp-scan >/dev/null || [[ -x /usr/sbin/arp-scan ]] || need_pkgs+=(arp-scan)
# The lab's telnet service is busybox telnetd: only busybox-static has that applet.
busybox telnetd --help >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v dig >/dev/null || need_pkgs+=(bind9-dnsutils)
# The lab's HTTPS (a self-signed certificate for OTA downloads, backups, browsing).
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v ssh >/dev/null || need_pkgs+=(openssh-client)
command -v ss >/dev/null || need_pkgs+=(iproute2)
# The dashboard browser test (tests/browser.rs) and the monitor load test (docs/PERFORMANCE.md).
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
command -v wrk >/dev/null || need_pkgs+=(wrk)
# Appliance images (tools/cross-build.sh, tools/make-image.sh, tests/qemu.rs).
command -v qemu-system-aarch64 >/dev/null || need_pkgs+=(qemu-system-arm)
command -v qemu-aarch64-static >/dev/null || need_pkgs+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-readelf >/dev/null || need_pkgs+=(binutils-aarch64-linux-gnu)
command -v mcopy >/dev/null || need_pkgs+=(mtools)
PATH=$PATH:/usr/sbin:/sbin
command -v mkfs.vfat >/dev/null || need_pkgs+=(dosfstools)
command -v mke2fs >/dev/null || need_pkgs+=(e2fsprogs)
command -v sfdisk >/dev/null || need_pkgs+=(fdisk)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v file >/dev/null || need_pkgs+=(file)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
# Node bus tests (tests/bus.rs) run a real Mosquitto broker with TLS.
command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || need_pkgs+=(mosquitto)
# The benign corpus is stored as xz (datasets/README.md).
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v sshd >/dev/null || need_pkgs+=(openssh-server)
# Group-policy page test (tests/policy.rs) renders /policy in a real headless browser.
command -v chromium >/dev/null || need_pkgs+=(chromium)
# The fleet test (tests/fleet.rs) also runs against a two-node RabbitMQ cluster (MQTT plugin, mutual TLS).
[[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || need_pkgs+=(rabbitmq-server)
if ((${#need_pkgs[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "==> installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "error: missing ${need_pkgs[*]}; install them (sudo apt-get install ${need_pkgs[*]}) or run as root" >&2
        exit 1
    fi
fi

# A fresh clone gains nothing from incremental caches, and they cost gigabytes.
[[ -n ${CI:-} ]] && export CARGO_INCREMENTAL=0
# Linkers die with "Bus error" when the disk fills mid-link: say so up front.
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
if ((free_kb < 12 * 1024 * 1024)); then
    echo "warning: $((free_kb / 1024)) MiB free for $target_dir; the suite's build needs about 12 GiB (free some space or set CARGO_TARGET_DIR)" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> layers (tools/check-layers.py: the crate table of docs/ARCHITECTURE.md, no module cycles)"
python3 tools/check-layers.py
echo "==> the bundled synthetic capture is what tools/make_synthetic_pcap.py makes"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 tools/make_synthetic_pcap.py "$tmp/synthetic.pcap" >/dev/null
cmp "$tmp/synthetic.pcap" samples/synthetic.pcap
cmp "$tmp/synthetic.labels.csv" samples/synthetic.labels.csv
# samples/demo.pcap is a lab recording (tests/lab/record.sh); tests/cli.rs checks what it shows.
if [[ -n ${GATEWARDEN_SKIP_IMAGES:-} && -z ${CI:-} ]]; then
    echo "==> GATEWARDEN_SKIP_IMAGES set: no aarch64 build, no images; the QEMU tests will say SKIPPED"
else
    echo "==> static aarch64 binary (tools/cross-build.sh)"
    tools/cross-build.sh
    echo "==> QEMU images (tools/make-image.sh)"
    tools/make-image.sh
fi
echo "==> release binary for the traffic lab (tests/lab.rs runs the gateway as shipped)"
cargo build --release --quiet
export GATEWARDEN_LAB_BIN="$(cd "$target_dir" && pwd)/release/gatewarden"
echo "==> cargo test --doc"
cargo test --workspace --doc --quiet
echo "==> cargo test (unit, integration; root suites need root)"
cargo test --workspace --all-targets 2>&1 | tee "$tmp/test.log"
# One closing line for the whole suite (cargo prints one per test binary, and
# the last binary may be a bench with no tests of its own).
python3 - "$tmp/test.log" <<'PY'
import re, sys
passed = failed = ignored = 0
for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", open(sys.argv[1]).read()):
    passed += int(m.group(1)); failed += int(m.group(2)); ignored += int(m.group(3))
print(f"tests: {passed} passed, {failed} failed, {ignored} skipped")
PY
