#!/usr/bin/env python3
"""Writes large synthetic captures for benchmarks and memory tests.

    python3 tools/make_traffic_pcap.py mix      OUT.pcap --packets 1000000
    python3 tools/make_traffic_pcap.py flood    OUT.pcap --packets 2000000
    python3 tools/make_traffic_pcap.py scanners OUT.pcap --sources 16 --packets 65536
    python3 tools/make_traffic_pcap.py decoys   OUT.pcap --sources 100

mix:   TCP sessions (handshake, data, close) and UDP request/response pairs
       between 4096 clients (IPv4 and IPv6) and 256 servers; 64-byte snaps.
flood: a SYN flood with a random source address per packet (as
       `hping3 --rand-source` sends), to one victim, 1 µs apart.
scanners: --sources spoofed sources (100.64.0.s) one after another, 6 s
       apart, each sending --packets SYNs to every port of 192.0.2.10 in
       5 s (add --together to interleave them in the same 5 s): the
       detector's per-source memory (docs/PERFORMANCE.md, Memory).
decoys: --sources spoofed sources a second for 30 s, each sending SYNs to
       port 23 of 20 hosts, while 198.51.100.66 scans 300 ports of
       192.0.2.50 from 10 s on: the verdict budget must still report the
       real scan (docs/DETECTION.md).
Deterministic (fixed seed). Standard library only.
"""
import argparse
import random
import struct
import sys

ETH4 = bytes.fromhex("020000000002" "020000000001" "0800")
ETH6 = bytes.fromhex("020000000002" "020000000001" "86dd")


def tcp_frame(src, dst, sport, dport, flags, v6, payload_len=0):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, 20 + payload_len, 6, 64) + src + dst
        return ETH6 + ip + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + payload_len, 0, 0, 64, 6, 0, src, dst)
    return ETH4 + ip + tcp


def udp_frame(src, dst, sport, dport, v6, payload_len):
    udp = struct.pack("!HHHH", sport, dport, 8 + payload_len, 0)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, 8 + payload_len, 17, 64) + src + dst
        return ETH6 + ip + udp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload_len, 0, 0, 64, 17, 0, src, dst)
    return ETH4 + ip + udp


class Writer:
    def __init__(self, path):
        self.f = open(path, "wb", buffering=1 << 20)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.n = 0

    def add(self, t_us, frame, wire_len=None):
        wire = max(wire_len or len(frame), len(frame))
        self.f.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), wire))
        self.f.write(frame)
        self.n += 1

    def close(self):
        self.f.close()


def mix(w, packets, rnd):
    clients = []
    for i in range(4096):
        if i % 4 == 3:
            clients.append((bytes.fromhex("20010db8000100000000000000%06x" % i), True))
        else:
            clients.append((bytes([10, 1 + (i >> 16), (i >> 8) & 255, i & 255]), False))
    servers4 = [bytes([198, 51, 100, i]) for i in range(1, 255)]
    servers6 = [bytes.fromhex("20010db8000200000000000000%06x" % i) for i in range(1, 255)]
    t = 1_700_000_000_000_000
    port = 20000
    while w.n < packets:
        c, v6 = clients[rnd.randrange(len(clients))]
        s = (servers6 if v6 else servers4)[rnd.randrange(254)]
        port = 20000 + (port - 19999) % 40000
        t += rnd.randrange(1, 4)
        if rnd.random() < 0.7:
            dport = rnd.choice((80, 443, 1883, 8883, 22))
            for flags, fwd, plen in ((0x02, 1, 0), (0x12, 0, 0), (0x10, 1, 0), (0x18, 1, 200), (0x18, 0, 900), (0x11, 1, 0), (0x11, 0, 0), (0x10, 1, 0)):
                frame = tcp_frame(c, s, port, dport, flags, v6) if fwd else tcp_frame(s, c, dport, port, flags, v6)
                w.add(t, frame, len(frame) + plen)
                t += 1
        else:
            dport = rnd.choice((53, 123, 5683))
            w.add(t, udp_frame(c, s, port, dport, v6, 40))
            w.add(t + 1, udp_frame(s, c, dport, port, v6, 120))
            t += 2


def flood(w, packets, rnd):
    victim = bytes([192, 0, 2, 10])
    t = 1_700_000_000_000_000
    for i in range(packets):
        src = struct.pack("!I", rnd.getrandbits(32))
        w.add(t + i, tcp_frame(src, victim, rnd.randrange(1024, 65535), 80, 0x02, False))


def scanners(w, sources, per, together):
    victim = bytes([192, 0, 2, 10])
    t0 = 1000 * 1_000_000
    frames = []
    for s in range(sources):
        src = bytes([100, 64, s >> 8, s & 255])
        for i in range(per):
            if together:
                t = t0 + (i * sources + s) * 5_000_000 // (sources * per)
            else:
                t = t0 + s * 6_000_000 + i * 5_000_000 // per
            frames.append((t, tcp_frame(src, victim, 40000 + (i >> 16), 1 + i % 65535, 0x02, False)))
    frames.sort(key=lambda f: f[0])
    for t, f in frames:
        w.add(t, f)


def decoys(w, per_s):
    frames = []
    t0 = 1000 * 1_000_000
    for k in range(30 * per_s):
        start = t0 + k * 1_000_000 // per_s
        src = bytes([100, 64 + ((k >> 16) & 63), (k >> 8) & 255, k & 255])
        for h in range(20):
            frames.append((start + h * 10, tcp_frame(src, bytes([192, 0, 2, 100 + h]), 40000 + h, 23, 0x02, False)))
    for i, port in enumerate(range(1, 301)):
        frames.append((t0 + 10_000_000 + i * 10_000, tcp_frame(bytes([198, 51, 100, 66]), bytes([192, 0, 2, 50]), 50000, port, 0x02, False)))
    frames.sort(key=lambda f: f[0])
    for t, f in frames:
        w.add(t, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["mix", "flood", "scanners", "decoys"])
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets (scanners: per source)")
    ap.add_argument("--sources", type=int, default=16, help="scanners: sources; decoys: new sources a second")
    ap.add_argument("--together", action="store_true", help="scanners: all sources in the same 5 s")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    w = Writer(a.out)
    if a.mode == "mix":
        mix(w, a.packets, rnd)
    elif a.mode == "flood":
        flood(w, a.packets, rnd)
    elif a.mode == "scanners":
        scanners(w, a.sources, a.packets, a.together)
    else:
        decoys(w, a.sources)
    w.close()
    print(f"wrote {a.out}: {w.n} packets", file=sys.stderr)


if __name__ == "__main__":
    main()
