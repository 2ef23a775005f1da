# Sourced by tools/bench-live-capture.sh and tools/bench-pipeline.sh --live:
# a sender and a capturing namespace joined by one veth.
#
#   capture_pair GEN DUT WORK [MTU]
#
# GEN holds g0, DUT holds d0 (no address, so the stack drops what arrives
# after the capture sockets saw it), both up with the given MTU (default
# 1500), no IPv6 (no neighbour or router solicitations: d0 receives exactly
# the frames sent). Writes WORK/gw.toml, a config capturing d0 with its data
# in WORK. On exit the namespaces, whatever runs in DUT and WORK go.
# Also defines rx (frames d0 received) and cpu_ns PID (a process's CPU time).
capture_pair() {
    local gen=$1 dut=$2 work=$3 mtu=${4:-1500} ns
    # Globals, for the EXIT trap after this function returns.
    _capture_pair=("$gen" "$dut" "$work")
    trap _capture_pair_cleanup EXIT
    ip netns add "$gen"
    ip netns add "$dut"
    ip link add g0 netns "$gen" type veth peer name d0 netns "$dut"
    for ns in "$gen" "$dut"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip -n "$gen" link set g0 mtu "$mtu" up
    ip -n "$dut" link set d0 mtu "$mtu" up
    ip -n "$dut" link set lo up
    cat >"$work/gw.toml" <<TOML
node_id = "capture-bench"
[monitor]
data_dir = "$work/data"
[capture]
interface = "d0"
TOML
}

# Frames d0 (in DUT) has received so far.
rx() { ip netns exec "${_capture_pair[1]}" cat /sys/class/net/d0/statistics/rx_packets; }

# CPU time (ns) of every thread of process $1, from the scheduler's own accounting.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

_capture_pair_cleanup() {
    local gen=${_capture_pair[0]} dut=${_capture_pair[1]} work=${_capture_pair[2]}
    ip netns pids "$dut" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$gen" 2>/dev/null || true
    ip netns del "$dut" 2>/dev/null || true
    rm -rf "$work"
}
