#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# (including the ones that need root and network namespaces).
#
# Installs what the tests need from Debian when it is missing and we are root
# (CI runs this as root with no stdin). Run it from anywhere:
#     tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v promtool >/dev/null || need_pkgs+=(prometheus)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v hping3 >/dev/null || need_pkgs+=(hping3)
command -v python3 >/dev/null || need_pkgs+=(python3)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "==> the bundled demo capture is what tools/make_demo_pcap.py makes"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 tools/make_demo_pcap.py "$tmp/demo.pcap" >/dev/null
cmp "$tmp/demo.pcap" samples/demo.pcap
cmp "$tmp/demo.labels.csv" samples/demo.labels.csv
echo "==> cargo test --doc"
cargo test --doc --quiet
echo "==> cargo test (unit, integration; root suites need root)"
cargo test --all-targets
