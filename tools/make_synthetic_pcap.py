#!/usr/bin/env python3
"""Writes samples/synthetic.pcap: a short, labelled mix of IoT-like benign traffic
and synthetic attacks (port scan, SYN flood, brute force, ICMP and UDP floods,
over IPv4 and IPv6), for the README's first command and for tests.

It is synthetic on purpose and deterministic (fixed seed), for tests that need
exact numbers; captures of real attack tools (samples/demo.pcap, datasets/lab/)
come from the traffic lab (tests/lab/record.sh). Only the Python standard library is used.

    python3 tools/make_synthetic_pcap.py samples/synthetic.pcap
"""
import random
import struct
import sys

T0 = 1_763_900_000.0  # capture start, Unix seconds
MAC_DEV = bytes.fromhex("020000000001")
MAC_GW = bytes.fromhex("020000000002")

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def ip6(a):
    import ipaddress
    return ipaddress.IPv6Address(a).packed


def l4(proto, src, dst, sport, dport, flags=0, payload=b"", icmp_type=8, seq=0):
    if proto == 6:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 64240, 0, 0)
        return hdr + payload
    if proto == 17:
        return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    # ICMP echo (v4 type 8, v6 type 128)
    return struct.pack("!BBHHH", icmp_type, 0, 0, sport, seq & 0xFFFF) + payload


def packet(src, dst, proto, sport, dport, flags=0, payload=b"", seq=0):
    v6 = ":" in src
    if proto == 1 and v6:
        proto, icmp_type = 58, 128
    else:
        icmp_type = 8
    body = l4(proto, src, dst, sport, dport, flags, payload, icmp_type, seq)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(body), proto, 64) + ip6(src) + ip6(dst)
        return MAC_GW + MAC_DEV + b"\x86\xdd" + ip + body
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq & 0xFFFF, 0, 64, proto, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return MAC_GW + MAC_DEV + b"\x08\x00" + hdr + body


class Capture:
    def __init__(self):
        self.records = []

    def add(self, t, frame):
        self.records.append((t, frame))

    def write(self, path):
        self.records.sort(key=lambda r: r[0])
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for t, frame in self.records:
                sec = int(t)
                usec = int(round((t - sec) * 1e6))
                if usec >= 1_000_000:
                    sec, usec = sec + 1, usec - 1_000_000
                f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
                f.write(frame)


def tcp_session(cap, t, c, s, cport, sport, req=200, resp=600):
    cap.add(t, packet(c, s, 6, cport, sport, SYN))
    cap.add(t + 0.001, packet(s, c, 6, sport, cport, SYN | ACK))
    cap.add(t + 0.002, packet(c, s, 6, cport, sport, ACK))
    cap.add(t + 0.003, packet(c, s, 6, cport, sport, PSH | ACK, b"q" * req))
    cap.add(t + 0.010, packet(s, c, 6, sport, cport, PSH | ACK, b"r" * resp))
    cap.add(t + 0.011, packet(c, s, 6, cport, sport, FIN | ACK))
    cap.add(t + 0.012, packet(s, c, 6, sport, cport, FIN | ACK))
    cap.add(t + 0.013, packet(c, s, 6, cport, sport, ACK))


def main(path):
    rnd = random.Random(7)
    cap = Capture()
    labels = []
    duration = 60.0
    broker, web, dns = "198.51.100.10", "198.51.100.20", "198.51.100.53"
    devices = [f"192.0.2.{i}" for i in range(10, 20)] + ["2001:db8:1::10", "2001:db8:1::11"]
    # Benign: MQTT telemetry every 5 s, HTTP polling every 15 s, DNS every 10 s.
    for d in devices:
        v6 = ":" in d
        b = "2001:db8:2::10" if v6 else broker
        w = "2001:db8:2::20" if v6 else web
        n = "2001:db8:2::53" if v6 else dns
        port = rnd.randrange(30000, 60000)
        phase = rnd.random() * 5
        t = phase
        while t < duration:
            tcp_session(cap, T0 + t, d, b, port, 1883, 80, 20)
            port += 1
            t += 5
        t = phase + 1
        while t < duration:
            tcp_session(cap, T0 + t, d, w, port, 80, 300, 1200)
            port += 1
            t += 15
        t = phase + 2
        while t < duration:
            q = rnd.randrange(1024, 65535)
            cap.add(T0 + t, packet(d, n, 17, q, 53, payload=b"d" * 30))
            cap.add(T0 + t + 0.004, packet(n, d, 17, 53, q, payload=b"a" * 60))
            t += 10
    # Attack 1: vertical SYN scan of a camera, 1000 ports in 2 s; closed ports answer RST.
    scanner, camera = "203.0.113.66", "192.0.2.10"
    t = 10.0
    for i, p in enumerate(rnd.sample(range(1, 10000), 1000)):
        ts = T0 + t + i * 0.002
        cap.add(ts, packet(scanner, camera, 6, 61000, p, SYN))
        cap.add(ts + 0.0003, packet(camera, scanner, 6, p, 61000, RST | ACK))
    labels.append((scanner, T0 + t, T0 + t + 2.0, "port_scan"))
    # Attack 2: SYN flood from one source, 5000 SYNs/s for 2 s, no answers.
    flooder = "203.0.113.77"
    t = 20.0
    for i in range(10000):
        cap.add(T0 + t + i * 0.0002, packet(flooder, web, 6, 1024 + i % 60000, 80, SYN, seq=i))
    labels.append((flooder, T0 + t, T0 + t + 2.0, "syn_flood"))
    # Attack 3: SSH brute force against a device, 60 short sessions in 12 s.
    guesser = "203.0.113.88"
    t = 30.0
    for i in range(60):
        tcp_session(cap, T0 + t + i * 0.2, guesser, "192.0.2.12", 40000 + i, 22, 120, 90)
    labels.append((guesser, T0 + t, T0 + t + 12.0, "brute_force"))
    # Attack 4: ICMPv6 echo flood, 1000/s for 3 s.
    pinger = "2001:db8:bad::1"
    t = 40.0
    for i in range(3000):
        cap.add(T0 + t + i * 0.001, packet(pinger, "2001:db8:1::10", 1, 77, 0, payload=b"p" * 56, seq=i))
    labels.append((pinger, T0 + t, T0 + t + 3.0, "icmp_flood"))
    # Attack 5: UDP flood, 4000/s for 2 s.
    udp = "203.0.113.99"
    t = 48.0
    for i in range(8000):
        cap.add(T0 + t + i * 0.00025, packet(udp, "192.0.2.14", 17, 5555, 9999, payload=b"u" * 100))
    labels.append((udp, T0 + t, T0 + t + 2.0, "udp_flood"))
    cap.write(path)
    with open(path.rsplit(".", 1)[0] + ".labels.csv", "w") as f:
        f.write("src,start,end,label\n")
        for src, a, b, label in labels:
            f.write(f"{src},{a:.6f},{b:.6f},{label}\n")
    print(f"wrote {path}: {len(cap.records)} packets, {len(labels)} labelled attacks")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "samples/synthetic.pcap")
