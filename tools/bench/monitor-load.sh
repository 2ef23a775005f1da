#!/usr/bin/env bash
# Monitor load test: wrk at ~200 requests/s on /api/status (with a viewer
# token) while a max-speed replay runs in the same process. 4 connections,
# each pausing DELAY_MS (17) after every response: ~200 requests/s.
#   tools/bench/monitor-load.sh [seconds]        (SPEED=realtime for the same load on an idle pipeline)
# Needs: a release build (cargo build --release), wrk, python3, ~700 MB in $TMPDIR.
# The replay must still be running when wrk ends (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
work=$(mktemp -d)
trap 'kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; rm -rf "$work"' EXIT
# 300 copies of the lab capture, shifted in time: ~7.3 M packets (680 MB), long enough to outlast wrk.
python3 - "$work/big.pcap" <<'PY'
import struct, sys
d = open("samples/demo.pcap", "rb").read()
recs, off = [], 24
while off + 16 <= len(d):
    s, us, il, ol = struct.unpack("<IIII", d[off:off + 16]); recs.append((s, us, d[off + 16:off + 16 + il], ol)); off += 16 + il
span = recs[-1][0] - recs[0][0] + 1
with open(sys.argv[1], "wb") as f:
    f.write(d[:24])
    for k in range(300):
        for s, us, data, ol in recs:
            f.write(struct.pack("<IIII", s + k * span, us, len(data), ol)); f.write(data)
PY
port=18090
cat > "$work/g.toml" <<TOML
node_id = "bench"
[http]
listen = "127.0.0.1:$port"
rate_limit_per_s = 1000
rate_limit_burst = 2000
[monitor]
data_dir = "$work/data"
TOML
bin=target/release/gatewarden
token=$($bin token issue --role viewer --ttl 10m -c "$work/g.toml")
$bin replay "$work/big.pcap" --speed "${SPEED:-max}" --serve 127.0.0.1:$port -c "$work/g.toml" >/dev/null 2>"$work/gw.log" &
gw=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
sleep 1
GW_TOKEN=$token GW_DELAY_MS=${DELAY_MS:-17} wrk -t1 -c4 -d"${secs}s" --latency -s tools/bench/api_status.lua "http://127.0.0.1:$port/api/status"
echo "replay state after wrk:" "$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/status" | python3 -c 'import json,sys; r=json.load(sys.stdin)["replay"]; print(r["state"], r["packets"], "packets")')"
