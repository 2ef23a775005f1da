#!/usr/bin/env python3
"""Writes large synthetic captures for benchmarks and memory tests.

    python3 tools/make_traffic_pcap.py mix   OUT.pcap --packets 1000000
    python3 tools/make_traffic_pcap.py flood OUT.pcap --packets 2000000

mix:   TCP sessions (handshake, data, close) and UDP request/response pairs
       between 4096 clients (IPv4 and IPv6) and 256 servers; 64-byte snaps.
flood: a SYN flood with a random source address per packet (as
       `hping3 --rand-source` sends), to one victim, 1 µs apart.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["mix", "flood"])
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    w = Writer(a.out)
    (mix if a.mode == "mix" else flood)(w, a.packets, rnd)
    w.close()
    print(f"wrote {a.out}: {w.n} packets", file=sys.stderr)


if __name__ == "__main__":
    main()
