#!/usr/bin/env bash
# Throughput of the traffic pipeline against ndpiReader, on the same capture,
# in one run. Prints a Markdown table for docs/PERFORMANCE.md.
#
#   tools/bench-pipeline.sh [PACKETS]            synthetic mix (default 2000000)
#   tools/bench-pipeline.sh --real [PACKETS]     real-tool traffic (default 300000):
#       the lab's recorded benign sessions with its nmap/hping3/hydra captures
#       laid over them (tools/make_realtool_pcap.py), padded to wire length
#
# Needs: python3, ndpiReader (Debian libndpi-bin), cargo. Uses one core
# (taskset -c 0 when available) for every contender.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=mix
if [[ ${1:-} == --real ]]; then
    kind=real
    shift
fi
packets=${1:-$([[ $kind == real ]] && echo 300000 || echo 2000000)}
work=${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/bench
mkdir -p "$work"
cap=$work/$kind-$packets.pcap
if ! command -v ndpiReader >/dev/null; then
    echo "error: ndpiReader not found: apt-get install libndpi-bin" >&2
    exit 1
fi
if [[ ! -f $cap ]]; then
    if [[ $kind == real ]]; then
        python3 tools/make_realtool_pcap.py "$cap" --packets "$packets"
    else
        python3 tools/make_traffic_pcap.py mix "$cap" --packets "$packets"
    fi
fi
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

cargo build --release --quiet
echo "==> ndpiReader -i $cap" >&2
ndpi=$("${pin[@]}" ndpiReader -i "$cap" 2>&1)
ndpi_ms=$(grep -oP 'Packet Processing Time:\s+\K[0-9]+' <<<"$ndpi")
ndpi_pps=$(python3 -c "print(round($packets / ($ndpi_ms / 1000)))")

echo "==> gatewarden replay --speed max (whole pipeline: parse, flows, features, detection)" >&2
replay=$("${pin[@]}" target/release/gatewarden replay "$cap" --speed max --json)
replay_pps=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['pps']))" "$replay")
replay_rss=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['peak_rss_mb']))" "$replay")

echo "==> criterion: parse + flow table + features (router path, frames in memory)" >&2
crit=$(GATEWARDEN_BENCH_PCAP=$cap "${pin[@]}" cargo bench --quiet --bench pipeline 2>&1)
# Criterion prints "router_path/<name>", then "time: [...]" and "thrpt: [lo mid hi]": take mid.
thrpt() {
    local script='import re, sys
name, text = sys.argv[1], sys.stdin.read()
m = re.search(r"router_path/" + re.escape(name) + r"\s.*?thrpt:\s+\[[0-9.]+ Melem/s ([0-9.]+) Melem/s", text, re.S)
print(m.group(1) if m else "n/a")'
    python3 -c "$script" "$1" <<<"$crit"
}
parse=$(thrpt parse)
flow=$(thrpt parse+flow)
feat=$(thrpt parse+flow+features)

ratio() { python3 -c "print(f'{$1 * 1e6 / $ndpi_pps:.1f}')"; }
load=$(cut -d" " -f1-3 /proc/loadavg)
cat <<TABLE
| contender ($packets-packet $kind capture, one core) | packets/s | vs ndpiReader |
|---|---|---|
| ndpiReader -i (nDPI $(ndpiReader -h 2>&1 | grep -oP 'nDPI \K[0-9.]+' | head -1), packet processing time ${ndpi_ms} ms) | $ndpi_pps | 1.0× |
| parse only | ${parse} M | $(ratio "$parse")× |
| parse + flow table | ${flow} M | $(ratio "$flow")× |
| **parse + flow table + features** | **${feat} M** | **$(ratio "$feat")×** |
| gatewarden replay --speed max (+ detection, batches, digest; peak RSS ${replay_rss} MiB) | $replay_pps | $(python3 -c "print(f'{$replay_pps / $ndpi_pps:.1f}')")× |

Load average at the end (other work on the 2 cores): $load.
TABLE
