#!/usr/bin/env bash
# What forwarding through the router pays for gatewarden (issue #19): iperf3
# through a router namespace, without and with `gatewarden run` (its nftables
# table, the capture ring on the LAN side, default snap length), alternated
# run by run so machine load hits both alike.
#
#   tools/bench-forwarding.sh [--runs 5] [--seconds 10] [--role all|router] [--split]
#
# --split adds three phases that take gatewarden apart: its nftables table
# alone (left behind by a stopped gatewarden with keep_table_on_exit), its
# capture ring and pipeline alone (`gatewarden watch -i lan0`, no table), and
# `tcpdump -w /dev/null` on the same interface with the same snap length, the
# cost any packet capture pays.
#
# Namespaces: client (192.0.2.10) -- lan0 [router] wan -- server (198.51.100.2),
# routed, IPv4. Per run: 64-byte UDP at full speed (packets/s the server
# received) and TCP bulk (Mbit/s). gatewarden runs with enforcement on and a
# `[response]` policy of alerts only, so it does all its work but never blocks
# the bench's own traffic (which looks like a flood). Prints a Markdown
# table with the median and the spread (min-max) of each, and the cost in
# per cent of the median.
#
# Needs root, iperf3, iproute2, and a release build (cargo build --release;
# GATEWARDEN_BIN overrides the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/bench/forwarding-site.sh

runs=5
seconds=10
role=all
split=0
while (($#)); do
    case $1 in
        --split) split=1; shift ;;
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --role) role=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "error: needs root (network namespaces); run it with sudo" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "error: iperf3 not found: apt-get install iperf3" >&2; exit 1; }
bin=${GATEWARDEN_BIN:-target/release/gatewarden}
[[ -x $bin ]] || { echo "error: $bin not found: cargo build --release first" >&2; exit 1; }
case $role in all | router) ;; *) echo "error: --role must be all or router" >&2; exit 2 ;; esac
((split == 0)) || command -v tcpdump >/dev/null || { echo "error: --split needs tcpdump: apt-get install tcpdump" >&2; exit 1; }

cli=gwfw-cli$$
rtr=gwfw-rtr$$
srv=gwfw-srv$$
# tmpfs: start-up writes (the alert store, fsynced) must not wait on a busy disk.
work=$(mktemp -d -p /dev/shm)
gw_pid=
cleanup() {
    [[ -n $gw_pid ]] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
    for ns in $cli $rtr $srv; do
        ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
forwarding_site $cli $rtr $srv "$work"

cat >"$work/gw.toml" <<TOML
node_id = "fw-bench"
[http]
listen = "127.0.0.1:18080"
[monitor]
data_dir = "$work/data"
[capture]
interface = "lan0"
[enforce]
enabled = true
# 64-byte UDP at full speed from one host is a UDP flood by any definition:
# every kind only alerts, so the whole path (capture, detection, the guard
# chain) runs while the bench's own traffic keeps flowing.
[response]
$(for k in port_scan host_sweep syn_flood udp_flood icmp_flood brute_force slow_http anomaly slow_scan distributed_scan slow_guessing model_alone baseline_alone baseline_surge_alone udp_stream; do echo "$k = \"alert\""; done)
TOML

sed 's/^enabled = true$/enabled = true\nkeep_table_on_exit = true/' "$work/gw.toml" >"$work/gw-keep.toml"

start_gw() {
    ip netns exec $rtr "$bin" run --role "$role" --config "${1:-$work/gw.toml}" >"$work/gw.log" 2>&1 &
    gw_pid=$!
    for _ in $(seq 300); do grep -q "capturing" "$work/gw.log" && return; sleep 0.1; done
    echo "error: gatewarden did not start capturing: $(tail -5 "$work/gw.log")" >&2
    exit 1
}
# Stops whatever part runs (gatewarden, watch or tcpdump) and removes the table.
stop_gw() {
    [[ -n $gw_pid ]] && { kill "$gw_pid"; wait "$gw_pid" || true; }
    gw_pid=
    ip netns exec $rtr nft list tables | grep -q gatewarden && ip netns exec $rtr nft delete table inet gatewarden || true
}
udp_pps() {
    ip netns exec $cli iperf3 -c 198.51.100.2 -u -l 64 -b 0 -t "$seconds" --json >"$work/udp.json"
    python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]["sum"]; print(round((e["packets"]-e["lost_packets"])/e["seconds"]))' "$work/udp.json"
}
tcp_mbit() {
    ip netns exec $cli iperf3 -c 198.51.100.2 -t "$seconds" --json >"$work/tcp.json"
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$work/tcp.json"
}

# The split phases: each starts its part, runs both measurements, stops it.
table_only() {
    start_gw "$work/gw-keep.toml"
    kill "$gw_pid"
    wait "$gw_pid" || true
    gw_pid=
    ip netns exec $rtr nft list table inet gatewarden >/dev/null ||
        { echo "error: the table did not outlive gatewarden (keep_table_on_exit)" >&2; exit 1; }
}
capture_only() {
    ip netns exec $rtr "$bin" watch -i lan0 --config "$work/gw.toml" >"$work/gw.log" 2>&1 &
    gw_pid=$!
    sleep 1
    kill -0 "$gw_pid" 2>/dev/null || { echo "error: gatewarden watch did not start: $(tail -5 "$work/gw.log")" >&2; exit 1; }
}
tcpdump_only() {
    local snap
    snap=$("$bin" config show --config "$work/gw.toml" | sed -n '/^\[capture\]/,/^\[/ s/^snap_len = //p')
    ip netns exec $rtr tcpdump -q -i lan0 -s "$snap" -w /dev/null 2>"$work/tcpdump.log" &
    gw_pid=$!
    sleep 1
}

declare -a udp_off udp_on tcp_off tcp_on udp_table tcp_table udp_capture tcp_capture udp_tcpdump tcp_tcpdump
for r in $(seq "$runs"); do
    printf '\r[run %d/%d] without gatewarden ...' "$r" "$runs" >&2
    udp_off+=("$(udp_pps)")
    tcp_off+=("$(tcp_mbit)")
    printf '\r[run %d/%d] with gatewarden    ...' "$r" "$runs" >&2
    start_gw
    udp_on+=("$(udp_pps)")
    tcp_on+=("$(tcp_mbit)")
    stop_gw
    if ((split)); then
        for part in table capture tcpdump; do
            printf '\r[run %d/%d] %-8s only     ...' "$r" "$runs" "$part" >&2
            "${part}_only"
            eval "udp_$part+=(\"\$(udp_pps)\")"
            eval "tcp_$part+=(\"\$(tcp_mbit)\")"
            stop_gw
        done
    fi
done
printf '\r%50s\r' '' >&2

python3 - "$role" "$runs" "$seconds" "${udp_off[*]}" "${udp_on[*]}" "${tcp_off[*]}" "${tcp_on[*]}" \
    "${udp_table[*]:-}" "${tcp_table[*]:-}" "${udp_capture[*]:-}" "${tcp_capture[*]:-}" "${udp_tcpdump[*]:-}" "${tcp_tcpdump[*]:-}" <<'PY'
import statistics, sys
role, runs, secs = sys.argv[1:4]
uo, un, to, tn = ([int(x) for x in a.split()] for a in sys.argv[4:8])
parts = [[int(x) for x in a.split()] for a in sys.argv[8:14]]
def cell(v): return f"{statistics.median(v):,.0f} ({min(v):,}–{max(v):,})"
def cost(off, on): return f"{(statistics.median(on) / statistics.median(off) - 1) * 100:+.1f} %"
print(f"| traffic ({runs} runs of {secs} s each, alternated) | without gatewarden: median (min–max) | with `run --role {role}` | change of the median |")
print("|---|---|---|---|")
print(f"| UDP, 64-byte payload, packets/s received | {cell(uo)} | {cell(un)} | {cost(uo, un)} |")
print(f"| TCP bulk, Mbit/s | {cell(to)} | {cell(tn)} | {cost(to, tn)} |")
names = ["gatewarden's table alone (keep_table_on_exit)", "`gatewarden watch -i lan0` alone (ring + pipeline, no table)", "`tcpdump -w /dev/null` alone"]
if parts[0]:
    print()
    print(f"| split ({runs} runs, same order each run) | UDP packets/s: median (min–max) | change | TCP Mbit/s: median (min–max) | change |")
    print("|---|---|---|---|---|")
    for i, name in enumerate(names):
        u, t = parts[2 * i], parts[2 * i + 1]
        print(f"| {name} | {cell(u)} | {cost(uo, u)} | {cell(t)} | {cost(to, t)} |")
print()
print("Every run: without " + " ".join(map(str, uo)) + " / with " + " ".join(map(str, un)) + " (UDP packets/s); without "
      + " ".join(map(str, to)) + " / with " + " ".join(map(str, tn)) + " (TCP Mbit/s).")
PY
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
