# Sourced by tools/bench-forwarding.sh and tools/bench-nft-variants.sh: the
# namespaces both measure forwarding through.
#
#   forwarding_site CLI RTR SRV WORK
#
# CLI (192.0.2.10) -- lan0 [RTR, forwarding] wan -- SRV (198.51.100.2), routed,
# IPv4, with an iperf3 server in SRV logging to WORK/iperf-server.log.
forwarding_site() {
    local cli=$1 rtr=$2 srv=$3 work=$4 ns
    for ns in "$cli" "$rtr" "$srv"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add eth0 netns "$cli" type veth peer name lan0 netns "$rtr"
    ip link add eth0 netns "$srv" type veth peer name wan netns "$rtr"
    ip -n "$cli" addr add 192.0.2.10/24 dev eth0
    ip -n "$rtr" addr add 192.0.2.1/24 dev lan0
    ip -n "$rtr" addr add 198.51.100.1/24 dev wan
    ip -n "$srv" addr add 198.51.100.2/24 dev eth0
    ip -n "$cli" link set eth0 up
    ip -n "$rtr" link set lan0 up
    ip -n "$rtr" link set wan up
    ip -n "$srv" link set eth0 up
    ip -n "$cli" route add default via 192.0.2.1
    ip -n "$srv" route add default via 198.51.100.1
    ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$srv" iperf3 -s -D --logfile "$work/iperf-server.log"
    sleep 0.5
}
