#!/usr/bin/env bash
# Throughput of the traffic pipeline against ndpiReader, on the same capture,
# in one run. Prints Markdown tables for docs/PERFORMANCE.md.
#
#   tools/bench-pipeline.sh [PACKETS]            synthetic mix (default 2000000)
#   tools/bench-pipeline.sh --real [PACKETS]     real-tool traffic (default 300000):
#       the lab's recorded benign sessions with its nmap/hping3/hydra captures
#       laid over them (tools/make_realtool_pcap.py), padded to wire length
#   --rounds N   replays of each contender, alternated (default 5); the
#                table gives the median and the range, the ratio is of medians
#   --live       also live (needs root and tcpreplay): the same capture is
#                sent over a veth (tcpreplay --pps, MTU 65535 for its GRO
#                records) to ndpiReader -i and to gatewarden watch, one at a
#                time; compares the CPU time each spent (all its threads,
#                /proc/PID/task/*/schedstat) and checks neither lost a frame
#   --live-pps R the live sending rate (default 50000 packets/s)
#   --warm       live: before the measured send, send the capture once with its
#                hosts renumbered within their /24s (tcprewrite --pnat swaps
#                each network's halves: 192.0.2.11 is 192.0.2.139) and leave
#                it out of the figures: both contenders' tables have grown
#                and their pages are resident, as on a box that has run for
#                a while, and every measured flow is still new to them
#
# Needs: python3, ndpiReader (Debian libndpi-bin), cargo. Uses one core
# (taskset -c 0 when available) for every contender.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=mix
rounds=5
live=no
live_pps=50000
warm=no
packets=
while (($#)); do
    case $1 in
        --real) kind=real; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --live) live=yes; shift ;;
        --live-pps) live_pps=$2; shift 2 ;;
        --warm) warm=yes; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        [0-9]*) packets=$1; shift ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
packets=${packets:-$([[ $kind == real ]] && echo 300000 || echo 2000000)}
((rounds >= 1)) || { echo "error: --rounds must be at least 1" >&2; exit 2; }
if [[ $live == yes ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "error: --live needs root (network namespaces); run it with sudo" >&2; exit 1; }
    command -v tcpreplay >/dev/null || { echo "error: tcpreplay not found: apt-get install tcpreplay" >&2; exit 1; }
fi
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
bin=${GATEWARDEN_BIN:-target/release/gatewarden}
# Alternated rounds: the machine's load moves both contenders alike.
ndpi_runs=()
gw_runs=()
rss_runs=()
for r in $(seq "$rounds"); do
    printf '\r[%d/%d] ndpiReader -i, then gatewarden replay --speed max ...' "$r" "$rounds" >&2
    ndpi=$("${pin[@]}" ndpiReader -i "$cap" 2>&1)
    ndpi_runs+=("$(grep -oP 'Packet Processing Time:\s+\K[0-9]+' <<<"$ndpi")")
    replay=$("${pin[@]}" "$bin" replay "$cap" --speed max --json)
    gw_runs+=("$(python3 -c "import json,sys; print(round(${packets} / json.loads(sys.argv[1])['pps'] * 1000))" "$replay")")
    rss_runs+=("$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['peak_rss_mb']))" "$replay")")
done
printf '\r%70s\r' '' >&2
# "median lo-hi" of a list of milliseconds.
spread() { python3 -c 'import statistics,sys; v=sorted(map(int,sys.argv[1:])); print(round(statistics.median(v)), v[0], v[-1])' "$@"; }
read -r ndpi_ms ndpi_lo ndpi_hi < <(spread "${ndpi_runs[@]}")
read -r gw_ms gw_lo gw_hi < <(spread "${gw_runs[@]}")
replay_rss=$(printf '%s\n' "${rss_runs[@]}" | sort -n | tail -1)
ndpi_pps=$(python3 -c "print(round($packets / ($ndpi_ms / 1000)))")
replay_pps=$(python3 -c "print(round($packets / ($gw_ms / 1000)))")

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
| ndpiReader -i (nDPI $(ndpiReader -h 2>&1 | grep -oP 'nDPI \K[0-9.]+' | head -1), packet processing time: median ${ndpi_ms} ms of $rounds, ${ndpi_lo}-${ndpi_hi}) | $ndpi_pps | 1.0× |
| parse only | ${parse} M | $(ratio "$parse")× |
| parse + flow table | ${flow} M | $(ratio "$flow")× |
| **parse + flow table + features** | **${feat} M** | **$(ratio "$feat")×** |
| gatewarden replay --speed max (+ detection, batches, digest; median ${gw_ms} ms of $rounds, ${gw_lo}-${gw_hi}; peak RSS ${replay_rss} MiB) | $replay_pps | $(python3 -c "print(f'{$replay_pps / $ndpi_pps:.2f}')")× |

Load average at the end (other work on the 2 cores): $load.
TABLE

[[ $live == yes ]] || exit 0

# ---- Live: the same capture sent over a veth to each contender in turn ----
gen=gwbp-gen$$
dut=gwbp-dut$$
live_work=$(mktemp -d -p /dev/shm)
. tools/bench/capture-pair.sh
# The capture holds GRO super-packets up to 64 KiB: the veth must carry them.
capture_pair $gen $dut "$live_work" 65535
# The contender runs on core 1, tcpreplay (and the veth's delivery, in its
# context) on core 0, so a contender's CPU is its own work.
cpu1=(taskset -c 1)
[[ $(nproc) -ge 2 ]] || cpu1=()
send() { ip netns exec $gen taskset -c 0 tcpreplay -q -i g0 --pps="$live_pps" "${1:-$cap}" >"$live_work/tcpreplay.out" 2>&1; }
sends=1
if [[ $warm == yes ]]; then
    command -v tcprewrite >/dev/null || { echo "error: --warm needs tcprewrite (apt-get install tcpreplay)" >&2; exit 1; }
    warm_cap=${cap%.pcap}.warm.pcap
    halves=192.0.2.0/25:192.0.2.128/25,192.0.2.128/25:192.0.2.0/25
    halves+=,198.51.100.0/25:198.51.100.128/25,198.51.100.128/25:198.51.100.0/25
    halves+=,203.0.113.0/25:203.0.113.128/25,203.0.113.128/25:203.0.113.0/25
    [[ -f $warm_cap ]] || tcprewrite --pnat="$halves" --fixcsum --infile="$cap" --outfile="$warm_cap" 2>/dev/null
    sends=2
fi
# The warm-up send (with --warm), out of the main figures: prints
# "cpu_ns received" for it (the cold figure: a contender's first send).
warm_up() {
    [[ $warm == yes ]] || { echo "0 0"; return; }
    local before after c0 c1
    before=$(rx); c0=$(cpu_ns "$1")
    send "$warm_cap"
    sleep 1
    after=$(rx); c1=$(cpu_ns "$1")
    echo "$((c1 - c0)) $((after - before))"
}

# Sends the capture while contender PID captures: prints "cpu_ns received",
# its CPU time over the send (and a second after) and the frames d0 got.
measure_send() {
    local before after c0 c1
    before=$(rx); c0=$(cpu_ns "$1")
    send
    sleep 1
    after=$(rx); c1=$(cpu_ns "$1")
    echo "$((c1 - c0)) $((after - before))"
}

# One contender: prints "cpu_ns captured received".
live_gatewarden() {
    ip netns exec $dut "${cpu1[@]}" "$bin" watch -c "$live_work/gw.toml" --json >"$live_work/gw.json" 2>"$live_work/gw.err" &
    local pid=$! cpu recv
    for _ in $(seq 300); do grep -q "capturing on" "$live_work/gw.err" && break; sleep 0.1; done
    grep -q "capturing on" "$live_work/gw.err" || { echo "error: gatewarden watch did not start: $(cat "$live_work/gw.err")" >&2; exit 1; }
    local warmed cold
    read -r cold warmed < <(warm_up $pid)
    read -r cpu recv < <(measure_send $pid)
    kill -INT $pid
    wait $pid || { echo "error: gatewarden watch failed: $(tail -5 "$live_work/gw.err")" >&2; exit 1; }
    local got drops
    read -r got drops < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["packets"], s.get("kernel_drops") or 0)' "$live_work/gw.json")
    ((drops == 0)) || echo "note: gatewarden watch reports $drops kernel drops" >&2
    echo "$cpu $((got - warmed)) $recv $cold $warmed"
}
live_ndpi() {
    # -s: capture for long enough to cover the whole send, then print the totals.
    local secs=$((sends * packets / live_pps + sends * 2 + 8))
    # Line-buffered, so "Running thread" shows when its capture has started.
    ip netns exec $dut "${cpu1[@]}" stdbuf -oL ndpiReader -i d0 -s $secs >"$live_work/nd.out" 2>&1 &
    local pid=$! cpu recv
    for _ in $(seq 100); do grep -q "Running thread" "$live_work/nd.out" && break; sleep 0.1; done
    grep -q "Running thread" "$live_work/nd.out" || { echo "error: ndpiReader did not start: $(cat "$live_work/nd.out")" >&2; exit 1; }
    sleep 0.5
    local warmed cold
    read -r cold warmed < <(warm_up $pid)
    read -r cpu recv < <(measure_send $pid)
    wait $pid || true
    local got
    got=$(grep -oP 'of \K[0-9]+(?= packets total)' "$live_work/nd.out" | head -1) ||
        { echo "error: no packet total in ndpiReader's output: $(tail -5 "$live_work/nd.out")" >&2; exit 1; }
    echo "$cpu $((got - warmed)) $recv $cold $warmed"
}

live_rows=()
nd_cpu=()
gw_cpu=()
nd_cold=()
gw_cold=()
for r in $(seq "$rounds"); do
    for who in ndpi gatewarden; do
        printf '\r[%d/%d] live: %-10s (%d packets at %d/s) ...' "$r" "$rounds" "$who" "$packets" "$live_pps" >&2
        read -r cpu got recv cold warmed < <(live_$who)
        [[ -n ${recv:-} ]] || exit 1
        lost=$((recv - got))
        ((lost < 0)) && lost=0
        row="| $r | $who | $recv | $got | $lost | $((cpu / 1000000)) | $(python3 -c "print(round($cpu / max($got, 1)))") |"
        [[ $warm == yes ]] && row+=" $((cold / 1000000)) | $(python3 -c "print(round($cold / max($warmed, 1)))") |"
        live_rows+=("$row")
        if [[ $who == ndpi ]]; then nd_cpu+=("$((cpu / 1000000))"); else gw_cpu+=("$((cpu / 1000000))"); fi
        if [[ $who == ndpi ]]; then nd_cold+=("$((cold / 1000000))"); else gw_cold+=("$((cold / 1000000))"); fi
    done
done
printf '\r%70s\r' '' >&2
read -r nd_med _ _ < <(spread "${nd_cpu[@]}")
read -r gw_med _ _ < <(spread "${gw_cpu[@]}")
cat <<TABLE

Live: $packets packets of the same capture sent over a veth by tcpreplay at $live_pps packets/s,
each contender capturing d0 alone, pinned to core 1 (tcpreplay on core 0)$([[ $warm == yes ]] && echo ", each
measured after a warm-up send of the capture with its hosts renumbered (tcprewrite --pnat), left out"):

| round | contender | frames d0 received | frames the contender counted | lost | CPU ms (all threads) | CPU ns a frame |$([[ $warm == yes ]] && echo " first (cold) send: CPU ms | its CPU ns a frame |")
|---|---|---|---|---|---|---|$([[ $warm == yes ]] && echo "---|---|")
$(printf '%s\n' "${live_rows[@]}")

Median CPU: ndpiReader ${nd_med} ms, gatewarden ${gw_med} ms: gatewarden needs
$(python3 -c "print(f'{$nd_med / max($gw_med, 1):.2f}')")× less CPU than ndpiReader for the same live traffic.$(
    if [[ $warm == yes ]]; then
        read -r ndc _ _ < <(spread "${nd_cold[@]}")
        read -r gwc _ _ < <(spread "${gw_cold[@]}")
        echo
        echo "First (cold) sends: ndpiReader ${ndc} ms, gatewarden ${gwc} ms: $(python3 -c "print(f'{$ndc / max($gwc, 1):.2f}')")× less CPU."
    fi)
Load average at the end: $(cut -d" " -f1-3 /proc/loadavg).
TABLE
