#!/usr/bin/env bash
# Live CPU of two gatewarden builds on the same traffic, alternated round by
# round, so a per-frame change shows through this machine's noise (a
# single live run moves by ±5 %; callgrind counts instructions, not the
# cycles a frame really costs live).
#
#   sudo tools/bench-live-ab.sh BEFORE AFTER [--rounds N] [--pps R] [--capture F]
#
# BEFORE and AFTER are two `gatewarden` binaries (e.g. a release build of
# the old commit in a worktree, and target/release/gatewarden). Each round
# sends the capture (default: the real-tool one tools/bench-pipeline.sh
# --real makes) over a veth with tcpreplay at R packets/s (default 50000)
# to `gatewarden watch` of one build, then of the other, each pinned to core
# 1 with tcpreplay on core 0, and reads the CPU time all its threads spent
# (/proc/PID/task/*/schedstat) over the send and one second after. Prints a
# Markdown table of every round, the medians, and AFTER's median as a share
# of BEFORE's; fails if either build loses a frame.
#
# Needs root (network namespaces), tcpreplay and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
rounds=7
pps=50000
cap=${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/bench/real-300000.pcap
bins=()
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --pps) pps=$2; shift 2 ;;
        --capture) cap=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) bins+=("$1"); shift ;;
    esac
done
((${#bins[@]} == 2)) || { echo "error: give two gatewarden binaries, BEFORE and AFTER (see --help)" >&2; exit 2; }
for b in "${bins[@]}"; do
    [[ -x $b ]] || { echo "error: $b is not an executable gatewarden build" >&2; exit 2; }
done
((rounds >= 1)) || { echo "error: --rounds must be at least 1" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "error: needs root (network namespaces); run it with sudo" >&2; exit 1; }
command -v tcpreplay >/dev/null || { echo "error: tcpreplay not found: apt-get install tcpreplay" >&2; exit 1; }
if [[ ! -f $cap ]]; then
    echo "error: no capture at $cap: make it with tools/bench-pipeline.sh --real (or python3 tools/make_realtool_pcap.py $cap --packets 300000), or pass --capture" >&2
    exit 1
fi

gen=gwab-gen$$
dut=gwab-dut$$
work=$(mktemp -d -p /dev/shm)
. tools/bench/capture-pair.sh
# The real-tool capture holds GRO super-packets up to 64 KiB: the veth must carry them.
capture_pair $gen $dut "$work" 65535
cpu1=(taskset -c 1)
[[ $(nproc) -ge 2 ]] || cpu1=()

# One round of one build: prints "cpu_ns frames_counted frames_received".
one() {
    local bin=$1 pid before after c0 c1 got
    ip netns exec $dut "${cpu1[@]}" "$bin" watch -c "$work/gw.toml" --json >"$work/gw.json" 2>"$work/gw.err" &
    pid=$!
    for _ in $(seq 300); do grep -q "capturing on" "$work/gw.err" && break; sleep 0.1; done
    grep -q "capturing on" "$work/gw.err" || { echo "error: $bin watch did not start: $(tail -3 "$work/gw.err")" >&2; exit 1; }
    before=$(rx); c0=$(cpu_ns $pid)
    ip netns exec $gen taskset -c 0 tcpreplay -q -i g0 --pps="$pps" "$cap" >"$work/tcpreplay.out" 2>&1
    sleep 1
    after=$(rx); c1=$(cpu_ns $pid)
    kill -INT $pid
    wait $pid || { echo "error: $bin watch failed: $(tail -3 "$work/gw.err")" >&2; exit 1; }
    got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packets"])' "$work/gw.json")
    echo "$((c1 - c0)) $got $((after - before))"
}

rows=()
declare -a ms_before=() ms_after=()
for r in $(seq "$rounds"); do
    # Alternate which build goes first, so a drift in the machine's load
    # does not always favour one.
    order=(0 1)
    ((r % 2 == 0)) && order=(1 0)
    for i in "${order[@]}"; do
        printf '\r[%d/%d] %-6s ...' "$r" "$rounds" "$([[ $i == 0 ]] && echo before || echo after)" >&2
        read -r cpu got recv < <(one "${bins[$i]}")
        ((got >= recv)) || { echo "error: ${bins[$i]} counted $got of $recv frames: lost frames make its CPU figure meaningless; lower --pps" >&2; exit 1; }
        ms=$((cpu / 1000000))
        if ((i == 0)); then ms_before+=("$ms"); else ms_after+=("$ms"); fi
        rows+=("| $r | $([[ $i == 0 ]] && echo before || echo after) | $recv | $ms | $(python3 -c "print(round($cpu / max($recv, 1)))") |")
    done
done
printf '\r%40s\r' '' >&2
spread() { python3 -c 'import statistics,sys; v=sorted(map(int,sys.argv[1:])); print(round(statistics.median(v)), v[0], v[-1])' "$@"; }
read -r mb lb hb < <(spread "${ms_before[@]}")
read -r ma la ha < <(spread "${ms_after[@]}")
cat <<TABLE
$(basename "$cap"): sent over a veth by tcpreplay at $pps packets/s to \`gatewarden watch\`, $rounds alternated rounds
(before: ${bins[0]}, after: ${bins[1]}; pinned to core 1, tcpreplay on core 0):

| round | build | frames | CPU ms (all threads) | CPU ns a frame |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

Median CPU: before $mb ms ($lb-$hb), after $ma ms ($la-$ha): after takes
$(python3 -c "print(f'{$ma / max($mb, 1) * 100:.1f}')") % of before's CPU.
Load average at the end: $(cut -d" " -f1-3 /proc/loadavg).
TABLE
