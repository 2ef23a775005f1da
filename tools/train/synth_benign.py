#!/usr/bin/env python3
"""Writes seeded, varied *benign* captures for training the host model.

    python3 tools/train/synth_benign.py OUT_DIR --seeds 1,2,3,4,101,102

Each seed writes OUT_DIR/seed-N/home.pcap (+ an empty home.labels.csv: no
attacker) with a randomised household/small office: parameters (rates,
sizes, counts, start times) are drawn from the seed, so held-out seeds are
behaviour mixes the model was not trained on. Behaviours, each with the
rates issue #15 names:

  firmware/OTA downloads (HTTP and HTTPS, 10–40 MB at 1–10 MB/s), camera
  streams over UDP and TCP at 1–8 Mbit/s that start and stop, cloud backups
  (large uploads), per-message MQTT connections, a persistent MQTT session
  with publish bursts, HTTP polling with retries against a dead host, DNS,
  NTP, mDNS, SSDP and DHCP (broadcast and multicast), a reconnect storm
  after a WAN outage, a speed test, a PC browsing many hosts, an admin SSH
  session with scp, a home-automation hub polling 30 LAN devices.

Frames carry headers only (as `tcpdump -s 128` would keep) with the real
wire length. This stands in for the lab's recorded corpus
(datasets/benign/seed-*/, recorded with real tools) until that lands;
train.py reads both the same way. Standard library only; deterministic.
"""
import argparse
import heapq
import os
import random
import struct
import sys

T0 = 1_790_000_000_000_000  # µs
MSS = 1448


def mac(ip):
    return b"\x02\x00" + ip


def ipb(s):
    return bytes(int(x) for x in s.split("."))


class Cap:
    """Packets from many generators, written in time order."""

    def __init__(self):
        self.heap = []
        self.n = 0

    def add(self, t, frame, wire):
        heapq.heappush(self.heap, (t, self.n, frame, wire))
        self.n += 1

    def tcp(self, t, src, dst, sport, dport, flags, seq=0, ack=0, payload=0):
        eth = mac(dst) + mac(src) + b"\x08\x00"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + payload, 0, 0x4000, 64, 6, 0, src, dst)
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 64240, 0, 0)
        self.add(t, eth + ip + tcp, 14 + 40 + payload)

    def udp(self, t, src, dst, sport, dport, payload):
        dmac = b"\xff" * 6 if dst == b"\xff\xff\xff\xff" else (
            b"\x01\x00\x5e" + bytes([dst[1] & 0x7F, dst[2], dst[3]]) if dst[0] >= 224 else mac(dst))
        eth = dmac + mac(src) + b"\x08\x00"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 0, 0, 64, 17, 0, src, dst)
        udp = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
        self.add(t, eth + ip + udp, 14 + 28 + payload)

    def write(self, path):
        with open(path, "wb", buffering=1 << 20) as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 128, 1))
            while self.heap:
                t, _, frame, wire = heapq.heappop(self.heap)
                f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), wire))
                f.write(frame)


S_FIN, S_SYN, S_RST, S_PSH, S_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def handshake(c, t, cl, sv, sp, dp, rtt):
    c.tcp(t, cl, sv, sp, dp, S_SYN, 1000)
    c.tcp(t + rtt // 2, sv, cl, dp, sp, S_SYN | S_ACK, 5000, 1001)
    c.tcp(t + rtt, cl, sv, sp, dp, S_ACK, 1001, 5001)
    return t + rtt


def close(c, t, cl, sv, sp, dp, rtt):
    c.tcp(t, cl, sv, sp, dp, S_FIN | S_ACK, 2000, 6000)
    c.tcp(t + rtt // 2, sv, cl, dp, sp, S_FIN | S_ACK, 6000, 2001)
    c.tcp(t + rtt, cl, sv, sp, dp, S_ACK, 2001, 6001)
    return t + rtt


def bulk(c, t, snd, rcv, sport, dport, nbytes, rate_bps, rtt):
    """`snd` sends nbytes at rate_bps (bytes/s), `rcv` ACKs every second segment."""
    gap = max(1, int(MSS * 1_000_000 / rate_bps))
    seq, i = 1, 0
    while nbytes > 0:
        n = min(MSS, nbytes)
        c.tcp(t, snd, rcv, sport, dport, S_ACK | (S_PSH if n < MSS else 0), seq, 1, n)
        seq += n
        nbytes -= n
        i += 1
        if i % 2 == 0 or nbytes <= 0:
            c.tcp(t + rtt // 2, rcv, snd, dport, sport, S_ACK, 1, seq)
        t += gap
    return t


def session(c, rnd, t, cl, sv, dp, down=0, up=0, rate=0, rtt=None, tls=False):
    rtt = rtt or rnd.randint(2_000, 40_000)
    sp = rnd.randint(32768, 60999)
    t = handshake(c, t, cl, sv, sp, dp, rtt)
    if tls:  # ClientHello / ServerHello ... Finished
        c.tcp(t, cl, sv, sp, dp, S_PSH | S_ACK, 1001, 5001, 517)
        c.tcp(t + rtt // 2, sv, cl, dp, sp, S_PSH | S_ACK, 5001, 1518, 3000)
        c.tcp(t + rtt, cl, sv, sp, dp, S_PSH | S_ACK, 1518, 8001, 80)
        t += rtt
    c.tcp(t, cl, sv, sp, dp, S_PSH | S_ACK, 1, 1, rnd.randint(80, 400))  # request
    t += rtt // 2
    if down:
        t = bulk(c, t, sv, cl, dp, sp, down, rate, rtt)
    if up:
        t = bulk(c, t, cl, sv, sp, dp, up, rate, rtt)
    if not down and not up:
        c.tcp(t, sv, cl, dp, sp, S_PSH | S_ACK, 1, 400, rnd.randint(60, 1400))
        t += rtt // 2
    return close(c, t + 1000, cl, sv, sp, dp, rtt)


def wan(rnd):
    return bytes([198, 51, 100, rnd.randint(20, 250)]) if rnd.random() < 0.5 else bytes([203, 0, 113, rnd.randint(1, 250)])


def home(seed, dur_s):
    rnd = random.Random(seed)
    c = Cap()
    end = T0 + dur_s * 1_000_000
    lan = [bytes([192, 0, 2, 100 + i]) for i in range(60)]
    nvr = bytes([192, 0, 2, 5])
    dns, ntp = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 123])
    us = 1_000_000
    devices = iter(rnd.sample(lan, len(lan)))

    # Firmware/OTA downloads, HTTP and HTTPS, 10–40 MB at 1–10 MB/s.
    for _ in range(rnd.randint(1, 3)):
        d = next(devices)
        t = T0 + rnd.randint(0, dur_s // 2) * us
        session(c, rnd, t, d, wan(rnd), rnd.choice((80, 443)), down=rnd.randint(10, 40) * 1_000_000,
                rate=rnd.uniform(1e6, 10e6), tls=rnd.random() < 0.5)
    # Cameras: UDP and TCP streams at 1–8 Mbit/s that start and stop.
    for _ in range(rnd.randint(2, 4)):
        d = next(devices)
        dst = nvr if rnd.random() < 0.4 else wan(rnd)
        udp = rnd.random() < 0.5
        rate = rnd.uniform(1e6, 8e6) / 8
        size = rnd.randint(900, 1400)
        t = T0 + rnd.randint(0, 10) * us
        while t < end:
            on = rnd.randint(5, 25) * us
            if udp:
                sp, dp = rnd.randint(20000, 40000), rnd.choice((5004, 8554, 10000))
                gap = int(size * 1_000_000 / rate)
                s = t
                while s < min(t + on, end):
                    c.udp(s + rnd.randint(0, gap // 4), d, dst, sp, dp, size)
                    s += gap
                t = s
            else:
                t = session(c, rnd, t, d, dst, rnd.choice((443, 554, 8443)), up=int(rate * on / us), rate=rate)
            t += rnd.randint(2, 12) * us
    # Cloud backups: large uploads to a known host.
    for _ in range(rnd.randint(0, 2)):
        d = next(devices)
        session(c, rnd, T0 + rnd.randint(0, dur_s // 2) * us, d, bytes([198, 51, 100, 77]), 443,
                up=rnd.randint(5, 30) * 1_000_000, rate=rnd.uniform(0.5e6, 5e6), tls=True)
    # Sensors with one MQTT connection per message, and persistent sessions with bursts.
    broker = bytes([198, 51, 100, 10])
    for _ in range(rnd.randint(2, 6)):
        d = next(devices)
        t = T0 + rnd.randint(0, 3000) * 1000
        period = rnd.uniform(0.3, 5.0)
        while t < end:
            t = session(c, rnd, t, d, broker, rnd.choice((1883, 8883)), tls=rnd.random() < 0.3)
            t += int(rnd.expovariate(1 / period) * us) + 1000
    for _ in range(rnd.randint(1, 4)):
        d = next(devices)
        sp, t, rtt = rnd.randint(32768, 60999), T0 + rnd.randint(0, 2000) * 1000, rnd.randint(2000, 30000)
        t = handshake(c, t, d, broker, sp, 1883, rtt)
        while t < end:
            for _ in range(rnd.choice((1, 1, 1, 5, 20, 50))):
                c.tcp(t, d, broker, sp, 1883, S_PSH | S_ACK, 1, 1, rnd.randint(30, 600))
                c.tcp(t + rtt // 2, broker, d, 1883, sp, S_ACK, 1, 1)
                t += rnd.randint(1000, 20000)
            t += int(rnd.uniform(0.5, 30) * us)
    # HTTP polling with retries; some hosts are down (SYNs retried, unanswered).
    for _ in range(rnd.randint(1, 4)):
        d, srv, dead = next(devices), wan(rnd), rnd.random() < 0.4
        t, period = T0 + rnd.randint(0, 5000) * 1000, rnd.uniform(1, 15)
        while t < end:
            if dead and rnd.random() < 0.5:
                sp = rnd.randint(32768, 60999)
                for k in range(rnd.randint(1, 4)):
                    c.tcp(t + (1 << k) * us, d, srv, sp, 80, S_SYN, 1000)
            else:
                session(c, rnd, t, d, srv, rnd.choice((80, 443, 8080)))
            t += int(period * us)
    # DNS, NTP, mDNS, SSDP, DHCP for everyone in the house.
    talkers = rnd.sample(lan, rnd.randint(10, 40))
    for d in talkers:
        t = T0 + rnd.randint(0, 10_000) * 1000
        while t < end:
            r = rnd.random()
            sp = rnd.randint(1024, 65535)
            if r < 0.5:
                c.udp(t, d, dns, sp, 53, rnd.randint(30, 60))
                c.udp(t + rnd.randint(500, 30000), dns, d, 53, sp, rnd.randint(60, 300))
            elif r < 0.6:
                c.udp(t, d, ntp, 123, 123, 48)
                c.udp(t + rnd.randint(5000, 50000), ntp, d, 123, 123, 48)
            elif r < 0.8:
                c.udp(t, d, bytes([224, 0, 0, 251]), 5353, 5353, rnd.randint(40, 400))
            elif r < 0.95:
                c.udp(t, d, bytes([239, 255, 255, 250]), rnd.randint(40000, 60000), 1900, rnd.randint(120, 300))
            else:
                c.udp(t, bytes(4), b"\xff\xff\xff\xff", 68, 67, 300)
            t += int(rnd.expovariate(1 / rnd.uniform(2, 20)) * us)
    # A reconnect storm: after a WAN outage every device reconnects at once.
    t = T0 + rnd.randint(dur_s // 3, dur_s * 2 // 3) * us
    for d in rnd.sample(lan, rnd.randint(15, 40)):
        for _ in range(rnd.randint(1, 4)):
            session(c, rnd, t + rnd.randint(0, 2_000_000), d, rnd.choice((broker, wan(rnd))), rnd.choice((443, 1883, 8883)))
    # A speed test: parallel streams down, then up.
    if rnd.random() < 0.7:
        d, srv = next(devices), wan(rnd)
        t, rate = T0 + rnd.randint(0, dur_s // 2) * us, rnd.uniform(2e6, 12e6)
        for _ in range(rnd.randint(2, 6)):
            session(c, rnd, t, d, srv, 8080, down=int(rate * 4), rate=rate / 3)
            session(c, rnd, t + 5 * us, d, srv, 8080, up=int(rate * 2), rate=rate / 4)
    # A PC updating software and browsing many hosts.
    d = next(devices)
    t = T0 + rnd.randint(0, 5) * us
    for _ in range(rnd.randint(20, 120)):
        session(c, rnd, t, d, wan(rnd), 443, down=rnd.randint(2_000, 400_000), rate=rnd.uniform(1e5, 5e6), tls=True)
        t += int(rnd.expovariate(1 / 0.8) * us)
    # An admin using SSH and scp to a LAN device.
    admin, box = next(devices), next(devices)
    t = T0 + rnd.randint(0, dur_s // 2) * us
    session(c, rnd, t, admin, box, 22, down=rnd.randint(20_000, 200_000), rate=5e4)
    session(c, rnd, t + 10 * us, admin, box, 22, up=rnd.randint(1, 20) * 1_000_000, rate=rnd.uniform(2e6, 10e6))
    # A home-automation hub polling 30 devices on the LAN.
    hub = next(devices)
    polled = rnd.sample(lan, 30)
    t, period = T0 + rnd.randint(0, 3) * us, rnd.uniform(5, 30)
    while t < end:
        for k, dev in enumerate(polled):
            session(c, rnd, t + k * rnd.randint(5_000, 60_000), hub, dev, rnd.choice((80, 8080)), rtt=rnd.randint(1000, 5000))
        t += int(period * us)
    return c


def write_seed(out, seed, duration=90):
    """OUT/seed-N/home.pcap + home.labels.csv, unless already there."""
    d = os.path.join(out, f"seed-{seed}")
    os.makedirs(d, exist_ok=True)
    pcap = os.path.join(d, "home.pcap")
    if os.path.exists(pcap):
        return pcap
    c = home(seed, duration)
    n = len(c.heap)
    with open(os.path.join(d, "home.labels.csv"), "w") as f:
        f.write("src,start,end,label\n")
    c.write(pcap + ".tmp")
    os.replace(pcap + ".tmp", pcap)
    print(f"wrote {pcap}: {n} packets", file=sys.stderr)
    return pcap


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seeds", default="1,2,3,4,101,102")
    ap.add_argument("--duration", type=int, default=90, help="seconds per capture")
    a = ap.parse_args()
    for seed in (int(s) for s in a.seeds.split(",")):
        write_seed(a.out, seed, a.duration)


if __name__ == "__main__":
    main()
