#!/usr/bin/env bash
# Benign IoT-like traffic for the traffic lab, run inside a device namespace
# by tests/lab/harness.rs (or by hand: `ip netns exec NS tests/lab/benign.sh …`).
# Every profile stops after SECONDS; all traffic goes to the lab's WAN
# namespace (198.51.100.10), never anywhere else.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 PROFILE SECONDS [ARG]
profiles:
  telemetry SECONDS TOPIC    MQTT publish (mosquitto_pub) every 2 s
  poll SECONDS               HTTP GET /status.json (curl) every 3 s
  dns SECONDS                DNS lookups (dig) against the lab's dnsmasq every 5 s
  ntp SECONDS                48-byte NTP-like UDP request to port 123 every 4 s
  camera SECONDS PORT        UDP stream at 400 kbit/s (iperf3 -u) to PORT
  admin SECONDS KEY          one SSH session (ssh -i KEY) running uptime every 2 s
  firmware SECONDS           one 4 MiB download (curl) after a short pause
USAGE
    exit 2
}

[[ $# -ge 2 ]] || usage
profile=$1
secs=$2
arg=${3:-}
[[ $secs =~ ^[0-9]+$ ]] || { echo "error: SECONDS must be a whole number, got '$secs'" >&2; exit 2; }
WAN=198.51.100.10
end=$((SECONDS + secs))
# Devices do not start in lockstep.
sleep "0.$((RANDOM % 9 + 1))"

every() { # every N CMD…: run CMD every N seconds until the end, ignoring its failures
    local n=$1
    shift
    while ((SECONDS < end)); do
        "$@" >/dev/null 2>&1 || true
        sleep "$n"
    done
}

case $profile in
telemetry)
    [[ -n $arg ]] || usage
    every 2 mosquitto_pub -h "$WAN" -p 1883 -q 1 -t "lab/$arg" -m "{\"temp\":$((RANDOM % 30)),\"rh\":$((RANDOM % 100))}"
    ;;
poll)
    every 3 curl -s -o /dev/null --max-time 2 "http://$WAN/status.json"
    ;;
dns)
    n=0
    while ((SECONDS < end)); do
        for name in time cloud updates; do
            dig +short +time=1 +tries=1 @"$WAN" "$name.lab.example" >/dev/null 2>&1 || true
        done
        n=$((n + 1))
        sleep 5
    done
    ;;
ntp)
    # NTP v4 client header (LI=0, VN=4, mode=3) padded to 48 bytes.
    req=$(printf '\x23%047d' 0)
    every 4 bash -c "exec 3<>/dev/udp/$WAN/123; printf '%s' '$req' >&3; timeout 1 head -c 48 <&3 >/dev/null; exec 3>&-"
    ;;
camera)
    [[ -n $arg ]] || usage
    timeout $((secs + 5)) iperf3 -c "$WAN" -p "$arg" -u -b 400K -l 1000 -t "$secs" >/dev/null 2>&1 || true
    ;;
admin)
    [[ -n $arg ]] || usage
    timeout $((secs + 5)) ssh -i "$arg" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR root@"$WAN" "i=0; while [ \$i -lt $((secs / 2)) ]; do uptime; sleep 2; i=\$((i+1)); done" \
        >/dev/null 2>&1 || true
    ;;
firmware)
    sleep $((secs / 3))
    curl -s -o /dev/null --max-time "$secs" "http://$WAN/firmware.bin" || true
    ;;
*)
    usage
    ;;
esac
