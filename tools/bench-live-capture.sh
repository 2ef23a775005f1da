#!/usr/bin/env bash
# Highest packet rate captured with zero loss on a live interface:
# gatewarden's AF_PACKET ring (`gatewarden watch`, the whole pipeline) against
# `tcpdump -w /dev/null`, on the same veth, in the same run (issue #19).
#
#   tools/bench-live-capture.sh [--rates 50000,100000,...] [--seconds 5] [--flows 256]
#
# Two network namespaces joined by a veth pair: trafgen (netsniff-ng) in one
# sends 60-byte UDP frames over --flows flows at each rate for --seconds; in
# the other, gatewarden and then tcpdump capture the receiving end, one at a
# time, at each rate. A rate is lossless for a contender when it saw every
# frame the interface received (its rx_packets delta) and the kernel dropped
# none. Prints a Markdown table for docs/PERFORMANCE.md.
#
# Needs root, iproute2, trafgen (apt-get install netsniff-ng), tcpdump, and a
# release build (cargo build --release; GATEWARDEN_BIN overrides the binary).
set -euo pipefail
cd "$(dirname "$0")/.."

rates=50000,100000,200000,300000,400000,600000,800000,1000000,1200000
seconds=5
flows=256
while (($#)); do
    case $1 in
        --rates) rates=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --flows) flows=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
((flows >= 1 && flows <= 256)) || { echo "error: --flows must be 1-256" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "error: needs root (network namespaces); run it with sudo" >&2; exit 1; }
for t in trafgen tcpdump ip; do
    command -v $t >/dev/null || { echo "error: $t not found: apt-get install netsniff-ng tcpdump iproute2" >&2; exit 1; }
done
bin=${GATEWARDEN_BIN:-target/release/gatewarden}
[[ -x $bin ]] || { echo "error: $bin not found: cargo build --release first" >&2; exit 1; }

gen=gwlc-gen$$
dut=gwlc-dut$$
# tmpfs: start-up writes (the alert store, fsynced) must not wait on a busy disk.
work=$(mktemp -d -p /dev/shm)
. tools/bench/capture-pair.sh
capture_pair $gen $dut "$work"
dmac=$(ip -n $dut -o link show d0 | grep -oP 'link/ether \K[0-9a-f:]+')
smac=$(ip -n $gen -o link show g0 | grep -oP 'link/ether \K[0-9a-f:]+')
hexmac() { sed 's/^/0x/; s/:/, 0x/g' <<<"$1"; }

# 60-byte frames, 10.9.0.1:4096+k -> 10.9.0.2:9 (k in 0..flows-1); d0 has no
# address, so the stack drops them after the capture sockets saw them.
cat >"$work/udp.cfg" <<CFG
{
  $(hexmac "$dmac"), $(hexmac "$smac"), const16(0x0800),
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 9, 0, 1, 10, 9, 0, 2,
  0x10, dinc(0, $((flows - 1))), const16(9), const16(26), const16(0),
  fill(0x00, 18)
}
CFG

# Sends --seconds worth of frames at the rate; records the rate achieved.
send() {
    local t0 t1
    t0=$(date +%s%N)
    ip netns exec $gen trafgen -q -C -P 1 -d g0 -c "$work/udp.cfg" -b "${1}pps" -n $(($1 * seconds)) >/dev/null 2>&1
    t1=$(date +%s%N)
    echo $(($1 * seconds * 1000000000 / (t1 - t0))) >"$work/achieved"
}

# One contender at one rate: prints "captured dropped received".
run_gatewarden() {
    local rate=$1 before after out
    ip netns exec $dut "$bin" watch -c "$work/gw.toml" --json >"$work/gw.json" 2>"$work/gw.err" &
    local pid=$!
    for _ in $(seq 300); do grep -q "capturing on" "$work/gw.err" && break; sleep 0.1; done
    if ! grep -q "capturing on" "$work/gw.err"; then
        echo "error: gatewarden watch did not say 'capturing on' within 30 s; its state: $(grep -h State /proc/$pid/status 2>/dev/null), stderr: $(cat "$work/gw.err")" >&2
        exit 1
    fi
    before=$(rx)
    send "$rate"
    sleep 1
    after=$(rx)
    kill -INT $pid
    wait $pid || { echo "error: gatewarden watch failed: $(tail -5 "$work/gw.err")" >&2; exit 1; }
    out=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["packets"], s.get("kernel_drops") or 0)' "$work/gw.json")
    echo "$out $((after - before))"
}
run_tcpdump() {
    local rate=$1 before after
    ip netns exec $dut tcpdump -i d0 -n -w /dev/null 2>"$work/td.err" &
    local pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$work/td.err" && break; sleep 0.1; done
    before=$(rx)
    send "$rate"
    sleep 1
    after=$(rx)
    kill -INT $pid
    wait $pid || true
    local cap drop
    cap=$(grep -oP '^\d+(?= packets captured)' "$work/td.err")
    drop=$(grep -oP '^\d+(?= packets dropped by kernel)' "$work/td.err")
    echo "$cap $drop $((after - before))"
}

best_gw=0
best_td=0
gw_lost=0
td_lost=0
rows=()
IFS=, read -ra list <<<"$rates"
total=$((${#list[@]} * 2))
step=0
for rate in "${list[@]}"; do
    for who in gatewarden tcpdump; do
        step=$((step + 1))
        printf '\r[%2d/%2d] %-10s at %7d packets/s ...' $step $total $who "$rate" >&2
        read -r cap drop recv < <(run_$who "$rate")
        [[ -n $recv ]] || exit 1
        achieved=$(cat "$work/achieved")
        lossless=no
        if ((drop == 0 && cap >= recv)); then
            lossless=yes
        fi
        # The highest rate below the first loss (a lossless run above a lossy
        # one is luck, not capacity).
        if [[ $who == gatewarden ]]; then
            [[ $lossless == yes && $gw_lost == 0 ]] && best_gw=$rate
            [[ $lossless == no ]] && gw_lost=1
        else
            [[ $lossless == yes && $td_lost == 0 ]] && best_td=$rate
            [[ $lossless == no ]] && td_lost=1
        fi
        rows+=("| $rate | $achieved | $who | $recv | $cap | $drop | $lossless |")
    done
done
printf '\r%60s\r' '' >&2
cat <<TABLE
| offered packets/s | sent packets/s | contender | frames received by d0 | captured | kernel drops | zero loss |
|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

Highest rate below the first loss: gatewarden ${best_gw} packets/s, tcpdump ${best_td} packets/s
(${seconds} s per rate, ${flows} flows, 60-byte frames; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)).
TABLE
