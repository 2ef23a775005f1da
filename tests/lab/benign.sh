#!/usr/bin/env bash
# Benign home/small-office traffic for the traffic lab, one behaviour per run,
# inside a device namespace (tests/lab/harness.rs starts several per device;
# by hand: `ip netns exec NS env LAB_SEED=7 tests/lab/benign.sh …`).
#
# Every parameter (rates, sizes, intervals, start offsets) is drawn from bash's
# RANDOM seeded with LAB_SEED, so the same seed repeats the same plan; the
# first line on stdout is `behaviour=… key=value …`, what this run chose.
# Every behaviour stops after SECONDS; traffic goes to the lab's WAN side
# (198.51.100.0/24), the LAN's DHCP server and multicast groups, the home
# automation segment (192.0.2.128/25) — never anywhere else.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 BEHAVIOUR SECONDS [ARG]   (env LAB_SEED: the run's seed, LAB_DEVICE: device name)
behaviours:
  camera_udp SECONDS PORT    UDP video (iperf3 -u) at 1-8 Mbit/s, on 20-90 s, off 5-30 s
  camera_tcp SECONDS PORT    TCP video (iperf3) at 1-8 Mbit/s, on 20-90 s, off 5-30 s, reconnects
  ota_http SECONDS           firmware download 10-100 MB at 1-10 MB/s over HTTP
  ota_https SECONDS          the same over HTTPS
  backup SECONDS             cloud backup: 20-100 MB upload (HTTPS PUT) at 1-5 MB/s to 198.51.100.20
  mqtt_msg SECONDS TOPIC     a new MQTT connection per message, every 2-30 s
  mqtt_session SECONDS ID    one persistent MQTT session (clean session off, keepalive 10-30 s)
                             publishing every 2-15 s and subscribed to commands; reconnects
  mqtt_burst SECONDS TOPIC   bursts of 20-200 messages on one connection every 30-180 s
  poll SECONDS               HTTP polling every 5-60 s of a server failing 5-30 % (curl --retry 2-4)
  dns SECONDS                DNS lookups (dig) of 2-5 names every 5-60 s
  ntp SECONDS                NTP v4 request to port 123 every 16-64 s
  mdns SECONDS               mDNS queries and announcements (224.0.0.251:5353) every 10-60 s
  ssdp SECONDS               SSDP M-SEARCH and NOTIFY (239.255.255.250:1900) every 20-120 s
  dhcp SECONDS               DHCP (busybox udhcpc, broadcast) against the router every 60-300 s
  speedtest SECONDS PORT     download then upload (iperf3) at 20-100 Mbit/s for 5-10 s, every 2-10 min
  browse SECONDS             web browsing: pages and assets from 64 hosts (HTTP and HTTPS), DNS first
  update SECONDS             software update: 3-8 packages of 1-20 MB from 2-4 mirrors over HTTPS
  admin SECONDS DIR          SSH sessions (key DIR/admin) running commands, scp up- and downloads
  hub SECONDS                home-automation hub polling 30 devices (192.0.2.130-159) every 10-30 s
USAGE
    exit 2
}

[[ $# -ge 2 ]] || usage
behaviour=$1
secs=$2
arg=${3:-}
[[ $secs =~ ^[0-9]+$ ]] || { echo "error: SECONDS must be a whole number, got '$secs'" >&2; exit 2; }
seed=${LAB_SEED:-$$}
[[ $seed =~ ^[0-9]+$ ]] || { echo "error: LAB_SEED must be a whole number, got '$seed'" >&2; exit 2; }
RANDOM=$seed
WAN=198.51.100.10
BACKUP=198.51.100.20
dev=${LAB_DEVICE:-$(hostname)}
end=$((SECONDS + secs))

# rnd LO HI: R = a whole number in [LO, HI]. Never inside $(…): a subshell
# reseeds RANDOM, and the run would no longer follow its seed.
rnd() { R=$(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }
left() { echo $((end - SECONDS > 0 ? end - SECONDS : 0)); }
nap() { # nap N: sleep N seconds, but not past the end
    local n=$1 l
    l=$(left)
    ((n > l)) && n=$l
    ((n > 0)) && sleep "$n"
    return 0
}
params() { echo "behaviour=$behaviour device=$dev seed=$seed $*"; }
need_arg() { [[ -n $arg ]] || usage; }
# Devices do not start in lockstep; long behaviours start somewhere in the first third.
start_offset() {
    rnd 0 "$1"
    nap "$R"
    rnd 1 9
    sleep "0.$R"
}
nap_rnd() { # nap_rnd LO HI: nap a random whole number of seconds in [LO, HI]
    rnd "$1" "$2"
    nap "$R"
}

case $behaviour in
camera_udp | camera_tcp)
    need_arg
    rnd 1 8
    rate=$R
    params "port=$arg rate_mbit=$rate on_s=20-90 off_s=5-30"
    start_offset 5
    udp=()
    [[ $behaviour == camera_udp ]] && udp=(-u -l 1200)
    while (($(left) > 1)); do
        rnd 20 90
        on=$R
        l=$(left)
        ((on > l)) && on=$l
        # A failed start (the WAN is down, the server busy) is retried after a back-off.
        timeout $((on + 5)) iperf3 -c "$WAN" -p "$arg" "${udp[@]}" -b "${rate}M" -t "$on" >/dev/null 2>&1 ||
            nap_rnd 2 6
        nap_rnd 5 30
    done
    ;;
ota_http | ota_https)
    rnd 10 100
    size=$R
    rnd 1 10
    rate=$R
    scheme=${behaviour#ota_}
    params "scheme=$scheme size_mb=$size rate_mb_s=$rate"
    start_offset $((secs / 3 < 60 ? secs / 3 : 60))
    while (($(left) > 1)); do
        curl -sk -o /dev/null --limit-rate "${rate}M" --max-time "$(left)" --retry 2 \
            "$scheme://$WAN/blob/$((size << 20))" || true
        nap_rnd 120 600
    done
    ;;
backup)
    rnd 20 100
    size=$R
    rnd 1 5
    rate=$R
    params "host=$BACKUP size_mb=$size rate_mb_s=$rate"
    start_offset $((secs / 3 < 60 ? secs / 3 : 60))
    while (($(left) > 1)); do
        head -c $((size << 20)) /dev/zero |
            curl -sk -o /dev/null -T - --limit-rate "${rate}M" --max-time "$(left)" "https://$BACKUP/upload" || true
        nap_rnd 120 600
    done
    ;;
mqtt_msg)
    need_arg
    rnd 2 30
    every=$R
    rnd 0 1
    qos=$R
    params "topic=lab/$arg interval_s=$every qos=$qos"
    start_offset 3
    while (($(left) > 0)); do
        rnd 10 30
        temp=$R
        rnd 20 90
        mosquitto_pub -h "$WAN" -p 1883 -q "$qos" -t "lab/$arg" \
            -m "{\"temp\":$temp,\"rh\":$R}" >/dev/null 2>&1 || true
        nap "$every"
    done
    ;;
mqtt_session)
    need_arg
    rnd 2 15
    every=$R
    rnd 10 30
    keep=$R
    params "client_id=$arg interval_s=$every keepalive_s=$keep"
    start_offset 3
    # Commands: a persistent subscription; mosquitto_sub reconnects by itself.
    mosquitto_sub -h "$WAN" -p 1883 -i "$arg-cmd" -c -q 1 -k "$keep" -t "cmd/$arg" -W "$(left)" \
        >/dev/null 2>&1 &
    while (($(left) > 1)); do
        # Telemetry on one connection; when it drops (a WAN outage) the
        # device reconnects after a short back-off, as they all do at once.
        (while ((SECONDS < end)); do
            rnd 0 2000
            echo "{\"state\":$((R % 2)),\"w\":$R}"
            sleep "$every"
        done) | timeout "$(left)" mosquitto_pub -h "$WAN" -p 1883 -i "$arg" -c -q 1 -k "$keep" -l \
            -t "lab/$arg/state" >/dev/null 2>&1 || true
        nap_rnd 1 5
    done
    wait || true
    ;;
mqtt_burst)
    need_arg
    rnd 20 200
    n=$R
    params "topic=lab/$arg/burst messages=$n interval_s=30-180"
    start_offset 20
    while (($(left) > 0)); do
        seq "$n" | sed 's/.*/{"seq":&}/' |
            timeout 20 mosquitto_pub -h "$WAN" -p 1883 -q 0 -l -t "lab/$arg/burst" >/dev/null 2>&1 || true
        nap_rnd 30 180
    done
    ;;
poll)
    rnd 5 60
    every=$R
    rnd 5 30
    fail=$R
    rnd 2 4
    retries=$R
    params "interval_s=$every fail_pct=$fail retries=$retries"
    start_offset 5
    while (($(left) > 0)); do
        curl -s -o /dev/null --max-time 5 --retry "$retries" --retry-delay 1 "http://$WAN/flaky?fail=$fail" || true
        nap "$every"
    done
    ;;
dns)
    rnd 5 60
    every=$R
    all=(time cloud updates api telemetry cdn push firmware weather backup)
    rnd 2 5
    k=$R
    names=()
    for ((i = 0; i < k; i++)); do
        rnd 0 9
        names+=("${all[$R]}.lab.example")
    done
    params "interval_s=$every names=$(
        IFS=,
        echo "${names[*]}"
    )"
    start_offset 5
    while (($(left) > 0)); do
        for name in "${names[@]}"; do
            dig +short +time=1 +tries=2 @"$WAN" "$name" >/dev/null 2>&1 || true
        done
        nap "$every"
    done
    ;;
ntp)
    rnd 16 64
    every=$R
    params "interval_s=$every"
    start_offset 10
    # NTP v4 client header (LI=0, VN=4, mode=3) padded to 48 bytes.
    req=$(printf '\x23%047d' 0)
    while (($(left) > 0)); do
        bash -c "exec 3<>/dev/udp/$WAN/123; printf '%s' '$req' >&3; timeout 1 head -c 48 <&3 >/dev/null" \
            >/dev/null 2>&1 || true
        nap "$every"
    done
    ;;
mdns | ssdp)
    if [[ $behaviour == mdns ]]; then rnd 10 60; else rnd 20 120; fi
    every=$R
    params "interval_s=$every"
    start_offset 5
    exec timeout "$(left)" python3 "$(dirname "$0")/discovery.py" "$behaviour" "$every" "$dev" "$RANDOM"
    ;;
dhcp)
    rnd 60 300
    every=$R
    params "interval_s=$every client=busybox-udhcpc"
    start_offset 30
    while (($(left) > 0)); do
        # -s /bin/true: take part in the exchange but keep the lab's static address.
        timeout 15 busybox udhcpc -i eth0 -f -q -n -t 3 -T 2 -s /bin/true -x "hostname:$dev" \
            >/dev/null 2>&1 || true
        nap "$every"
    done
    ;;
speedtest)
    need_arg
    rnd 20 100
    rate=$R
    rnd 5 10
    dur=$R
    params "port=$arg rate_mbit=$rate seconds=$dur interval_s=120-600"
    start_offset $((secs / 3 < 90 ? secs / 3 : 90))
    while (($(left) > 2 * dur)); do
        timeout $((dur + 5)) iperf3 -c "$WAN" -p "$arg" -R -b "${rate}M" -t "$dur" >/dev/null 2>&1 || true
        timeout $((dur + 5)) iperf3 -c "$WAN" -p "$arg" -b "${rate}M" -t "$dur" >/dev/null 2>&1 || true
        nap_rnd 120 600
    done
    ;;
browse)
    rnd 3 20
    think=$R
    params "hosts=198.51.100.100-163 think_s=1-$think active_s=30-120 idle_s=20-120"
    start_offset 10
    while (($(left) > 0)); do
        rnd 30 120
        active_end=$((SECONDS + R))
        while ((SECONDS < active_end && SECONDS < end)); do
            # A page from one site, assets from 2-8 others (CDNs, trackers, fonts).
            rnd 3 9
            fetches=$R
            for ((j = 0; j < fetches; j++)); do
                rnd 100 163
                h=$R
                name="site$h.web.example"
                dig +short +time=1 +tries=1 @"$WAN" "$name" >/dev/null 2>&1 || true
                rnd 0 9
                if ((R < 7)); then scheme=https port=443; else scheme=http port=80; fi
                if ((j == 0)); then rnd 20 500; else rnd 1 200; fi
                kb=$R
                curl -sk -o /dev/null --max-time 10 --resolve "$name:$port:198.51.100.$h" \
                    "$scheme://$name/blob/$((kb * 1024))" || true
            done
            nap_rnd 1 "$think"
        done
        nap_rnd 20 120
    done
    ;;
update)
    params "packages=3-8 size_mb=1-20 mirrors=2-4 interval_s=120-600"
    start_offset $((secs / 3 < 60 ? secs / 3 : 60))
    while (($(left) > 0)); do
        mirrors=()
        rnd 2 4
        for ((i = 0, n = R; i < n; i++)); do
            rnd 100 163
            mirrors+=("198.51.100.$R")
        done
        rnd 3 8
        for ((i = 0, n = R; i < n; i++)); do
            rnd 0 $((${#mirrors[@]} - 1))
            m=${mirrors[$R]}
            rnd 1 20
            curl -sk -o /dev/null --max-time "$(left)" "https://$m/blob/$((R << 20))" || true
            (($(left) > 0)) || break
        done
        nap_rnd 120 600
    done
    ;;
admin)
    need_arg
    key=$arg/admin
    [[ -r $key ]] || { echo "error: no SSH key at $key" >&2; exit 2; }
    ssh_opts=(-i "$key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
    rnd 2 10
    every=$R
    rnd 1 20
    up=$R
    params "command_interval_s=$every session_s=30-120 scp_up_mb=$up scp_down=firmware.bin"
    start_offset 5
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    head -c $((up << 20)) /dev/urandom >"$tmp"
    while (($(left) > 0)); do
        rnd 30 120
        n=$((R / every + 1))
        timeout "$(($(left) + 1))" ssh "${ssh_opts[@]}" root@"$WAN" \
            "i=0; while [ \$i -lt $n ]; do uptime; ls / >/dev/null; sleep $every; i=\$((i+1)); done" \
            >/dev/null 2>&1 || true
        (($(left) > 0)) || break
        timeout "$(($(left) + 1))" scp -q "${ssh_opts[@]}" "$tmp" root@"$WAN":/dev/null >/dev/null 2>&1 || true
        timeout "$(($(left) + 1))" scp -q "${ssh_opts[@]}" root@"$WAN":"$arg/www/firmware.bin" /dev/null \
            >/dev/null 2>&1 || true
        nap_rnd 30 120
    done
    ;;
hub)
    rnd 10 30
    every=$R
    params "devices=192.0.2.130-159 cycle_s=$every"
    start_offset 5
    while (($(left) > 0)); do
        t0=$SECONDS
        for i in $(seq 130 159); do
            curl -s -o /dev/null --max-time 1 "http://192.0.2.$i/status.json" || true
            rnd 0 3
            sleep "0.$R"
            (($(left) > 0)) || break
        done
        nap $((every - (SECONDS - t0) > 0 ? every - (SECONDS - t0) : 1))
    done
    ;;
*)
    usage
    ;;
esac
