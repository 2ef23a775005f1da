#!/usr/bin/env bash
# Which part of gatewarden's nftables table costs forwarding (issue #19):
# 64-byte UDP through a router namespace with variants of the table loaded by
# `nft -f`, round-robin so machine load hits all alike.
#
#   tools/bench-nft-variants.sh [--rounds 3] [--seconds 4] [--before BIN] [--only LIST]
#
# The table is gatewarden's own: a release binary starts in a scratch
# namespace with enforcement on and keep_table_on_exit, is stopped, and
# `nft list table inet gatewarden` is the "gatewarden" variant. The others
# are edits of it: IPv4 and IPv6 rules in two chains behind one
# `meta nfproto vmap` ("vmap"), and that without one kind of lookup each
# (allowlist, feed blocks, contained MACs, detector and admin blocks), plus
# an empty forward chain and a one-lookup chain for reference. With
# --before BIN, the table another build installs is one more variant
# ("before"), so a change to the table is measured in the same rounds.
# --only none,before,gatewarden,empty-chain measures just those (more rounds
# in the same time when the machine is noisy). Prints
# the median (min-max) packets/s the server received for each, and the
# change against no ruleset.
#
# Needs root, iperf3, nft, python3 and a release build (GATEWARDEN_BIN overrides it).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/bench/forwarding-site.sh
rounds=3
seconds=4
before=
only=
while (($#)); do
    case $1 in
        --before) before=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "error: needs root (network namespaces); run it with sudo" >&2; exit 1; }
for t in iperf3 nft python3; do command -v $t >/dev/null || { echo "error: $t not found" >&2; exit 1; }; done
bin=${GATEWARDEN_BIN:-target/release/gatewarden}
[[ -x $bin ]] || { echo "error: $bin not found: cargo build --release first" >&2; exit 1; }
[[ -z $before || -x $before ]] || { echo "error: --before $before is not an executable" >&2; exit 1; }

cli=gwnv-cli$$
rtr=gwnv-rtr$$
srv=gwnv-srv$$
dump=gwnv-dump$$
work=$(mktemp -d -p /dev/shm)
cleanup() {
    for ns in $cli $rtr $srv $dump; do
        ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# gatewarden's table, as it installs it: dump_table BIN OUT.
ip netns add $dump
ip -n $dump link add lan0 type veth peer name peer0
ip -n $dump link set lan0 up
cat >"$work/gw.toml" <<TOML
node_id = "nft-variants"
[http]
listen = "127.0.0.1:0"
[monitor]
data_dir = "$work/data"
[capture]
interface = "lan0"
[enforce]
enabled = true
keep_table_on_exit = true
TOML
dump_table() {
    ip netns exec $dump nft delete table inet gatewarden 2>/dev/null || true
    ip netns exec $dump "$1" run --role router --config "$work/gw.toml" >"$work/gw.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do grep -q capturing "$work/gw.log" && break; sleep 0.1; done
    kill $pid
    wait $pid || true
    ip netns exec $dump nft list table inet gatewarden >"$2" ||
        { echo "error: $1 left no table: $(tail -5 "$work/gw.log")" >&2; exit 1; }
}
dump_table "$bin" "$work/gatewarden.nft"
[[ -z $before ]] || dump_table "$before" "$work/before.nft"

python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
s = open(f"{work}/gatewarden.nft").read()
head, rest = s.split("\tchain guard {", 1)
rules = [l.strip() for l in rest.split("\t}", 1)[0].strip().splitlines()]
# Chains other than guard that guard jumps to (the SYN meters), kept as they are.
jumped = "".join(
    "\tchain " + c.split("\n\t}", 1)[0] + "\n\t}\n"
    for c in rest.split("\tchain ")[1:]
    if c.split(" ", 1)[0] in {r.rsplit("jump ", 1)[1] for r in rules if "jump " in r}
)
v4 = [r for r in rules if "ip saddr" in r or "ip daddr" in r]
v6 = [r for r in rules if "ip6 saddr" in r or "ip6 daddr" in r]
both = [r for r in rules if r not in v4 and r not in v6]
assert all("jump " in r for r in both), "a guard rule is neither IPv4, IPv6 nor a jump: update this script"
v4, v6 = v4 + both, v6 + both
def chain(name, rs):
    return f"\tchain {name} {{\n" + "".join(f"\t\t{r}\n" for r in rs) + "\t}\n"
def vmap(v4rules, contain=True):
    fwd = "\t\tether saddr @contain_mac counter name \"contained_dropped\" drop\n" if contain else ""
    return (head + jumped + chain("guard4", v4rules) + chain("guard6", v6) + chain("failsafe", []) + chain("groups", [])
            + "\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n" + fwd
            + "\t\tmeta nfproto vmap { ipv4 : jump guard4, ipv6 : jump guard6 }\n\t\tjump failsafe\n\t\tjump groups\n\t}\n}\n")
without = lambda *pats: [r for r in v4 if not any(p in r for p in pats)]
variants = {
    "gatewarden": s,
    "empty-chain": "table inet t {\n chain forward { type filter hook forward priority filter - 10; policy accept; }\n}\n",
    "one-lookup": "table inet t {\n set s { type ipv4_addr; flags timeout; }\n"
                  " chain forward { type filter hook forward priority filter - 10; policy accept;\n  ip saddr @s drop\n }\n}\n",
    "vmap": vmap(v4),
    "vmap-no-allow": vmap(without("@allow4")),
    "vmap-no-feed": vmap(without("@block4_feed")),
    "vmap-no-contain": vmap(v4, contain=False),
    "vmap-no-block-hash": vmap(without("@block4_admin", "@block4_detector")),
}
for name, text in variants.items():
    open(f"{work}/{name}.nft", "w").write(text)
PY
variants="none $(cd "$work" && ls -1 *.nft | grep -v '^gatewarden.nft$' | sed 's/\.nft$//' | tr '\n' ' ') gatewarden"
if [[ -n $only ]]; then
    for v in ${only//,/ }; do
        [[ " $variants " == *" $v "* ]] || { echo "error: --only: no variant $v (there are: $variants)" >&2; exit 2; }
    done
    variants=${only//,/ }
fi

forwarding_site $cli $rtr $srv "$work"
for v in $variants; do
    [[ $v == none ]] || ip netns exec $rtr nft -c -f "$work/$v.nft" || { echo "error: nft refuses variant $v" >&2; exit 1; }
done

: >"$work/results"
for r in $(seq "$rounds"); do
    for v in $variants; do
        printf '\r[round %d/%d] %-20s' "$r" "$rounds" "$v" >&2
        ip netns exec $rtr nft flush ruleset
        [[ $v == none ]] || ip netns exec $rtr nft -f "$work/$v.nft"
        ip netns exec $cli iperf3 -c 198.51.100.2 -u -l 64 -b 0 -t "$seconds" --json >"$work/udp.json"
        echo "$v $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]["sum"]; print(round((e["packets"]-e["lost_packets"])/e["seconds"]))' "$work/udp.json")" >>"$work/results"
    done
done
printf '\r%40s\r' '' >&2
python3 - "$work/results" "$rounds" "$seconds" <<'PY'
import collections, statistics, sys
got = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, pps = line.split()
    got.setdefault(name, []).append(int(pps))
base = statistics.median(got["none"])
print(f"| ruleset in the router namespace ({sys.argv[2]} rounds of {sys.argv[3]} s, UDP 64 B) | packets/s: median (min–max) | vs none |")
print("|---|---|---|")
for name, v in got.items():
    m = statistics.median(v)
    print(f"| {name} | {m:,.0f} ({min(v):,}–{max(v):,}) | {(m / base - 1) * 100:+.1f} % |")
PY
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
