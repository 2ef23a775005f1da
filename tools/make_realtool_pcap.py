#!/usr/bin/env python3
"""Build a capture of real-tool traffic for throughput benchmarks.

The synthetic mix (tools/make_traffic_pcap.py) is regular: every flow is
short and alike. This capture is what the lab's real tools recorded instead:
the benign corpus (datasets/benign/seed-*, 13 devices doing 19 behaviours:
OTA downloads, camera streams, MQTT, DNS, a reconnect storm ...) with the
lab's attacks (nmap, hping3, hydra captures in datasets/lab/) laid over it.
Each segment is one benign session with the next few attack captures shifted
to start with it and merged by time, so attacks run during ordinary traffic
as they would on a real LAN. Segments follow each other in time until the
capture holds at least --packets packets.

  tools/make_realtool_pcap.py OUT [--packets 300000] [--seeds 100,101,...]

The recorded captures keep only headers (snap length 96-128). nDPI skips a
packet whose capture is shorter than its IP length, which would let it skip
most of the work, so each packet is padded back to its wire length with
zero bytes: both contenders then read whole packets (about 4.6 kB per
packet on average: 300 000 packets are ~1.4 GB).

Benchmarks only: never train or tune on its output (it contains held-out
seeds by default). Every input is a classic little-endian pcap with
Ethernet framing (what tcpdump wrote); anything else is refused.
"""

import argparse
import heapq
import lzma
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PCAP_MAGIC_US = b"\xd4\xc3\xb2\xa1"
LINKTYPE_ETHERNET = 1


def read_pcap(path):
    """All (t_us, incl_bytes, orig_len) of a classic pcap, times relative to its first packet."""
    raw = lzma.open(path).read() if path.suffix == ".xz" else path.read_bytes()
    if len(raw) < 24 or raw[:4] != PCAP_MAGIC_US:
        sys.exit(f"error: {path}: not a little-endian microsecond pcap (re-record it with tcpdump -w)")
    linktype = struct.unpack_from("<I", raw, 20)[0]
    if linktype != LINKTYPE_ETHERNET:
        sys.exit(f"error: {path}: link type {linktype}, only Ethernet (1) is supported")
    out, off, t0 = [], 24, None
    while off + 16 <= len(raw):
        sec, usec, incl, orig = struct.unpack_from("<IIII", raw, off)
        data = raw[off + 16 : off + 16 + incl]
        if len(data) < incl:
            print(f"warning: {path}: truncated last record dropped", file=sys.stderr)
            break
        t = sec * 1_000_000 + usec
        t0 = t if t0 is None else t0
        out.append((t - t0, data, orig))
        off += 16 + incl
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--packets", type=int, default=300_000, help="at least this many packets (default 300000)")
    ap.add_argument(
        "--seeds",
        default="100,101,102,103,104,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20",
        help="benign corpus seeds, in order of use",
    )
    ap.add_argument("--attacks-per-segment", type=int, default=4)
    args = ap.parse_args()

    attacks = sorted(p for p in (ROOT / "datasets/lab").glob("*.pcap") if p.stem != "benign")
    if not attacks:
        sys.exit("error: no attack captures in datasets/lab/")
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    w = args.out.open("wb")
    w.write(PCAP_MAGIC_US + struct.pack("<HHiIII", 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
    base_us = 1_700_000_000 * 1_000_000
    written, next_attack, used = 0, 0, []
    for seed in seeds:
        if written >= args.packets:
            break
        benign = ROOT / f"datasets/benign/seed-{seed}/benign.pcap.xz"
        if not benign.exists():
            sys.exit(f"error: {benign} not found (seeds present: ls datasets/benign)")
        parts = [read_pcap(benign)]
        names = [f"seed-{seed}"]
        for _ in range(args.attacks_per_segment):
            a = attacks[next_attack % len(attacks)]
            next_attack += 1
            parts.append(read_pcap(a))
            names.append(a.stem)
        end = 0
        for t, data, orig in heapq.merge(*parts, key=lambda r: r[0]):
            if written >= args.packets:
                break
            ts = base_us + t
            w.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, max(orig, len(data)), orig))
            w.write(data)
            if orig > len(data):
                w.write(bytes(orig - len(data)))
            written += 1
            end = max(end, t)
        base_us += end + 1_000_000
        used.append("+".join(names))
        print(f"  {written:>9} packets after {used[-1]}", file=sys.stderr)
    w.close()
    if written < args.packets:
        sys.exit(f"error: only {written} packets from the seeds given; add seeds with --seeds")
    print(f"{args.out}: {written} packets from {len(used)} segments", file=sys.stderr)


if __name__ == "__main__":
    main()
