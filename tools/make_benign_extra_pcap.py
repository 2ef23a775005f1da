#!/usr/bin/env python3
"""Writes captures of benign home and office behaviours the lab's benign
corpus (tests/lab/benign.sh) never generated, to check that the shipped
defaults block none of them (tests/benign_extra.rs replays them).

    python3 tools/make_benign_extra_pcap.py BEHAVIOUR OUT.pcap [--seed N]
    python3 tools/make_benign_extra_pcap.py all OUTDIR [--seed N]

Behaviours (LAN 192.168.1.0/24, inside the default `detector.home_net`;
internet peers are random public addresses drawn from the seed):
  dht       BitTorrent: a DHT node (UDP 6881) querying ~500 peers on random
            ports over 3 minutes, 30-60 % of them never answering; TCP peer
            connections (45 % never answer, 15 % refused); a uTP download from
            8 peers at ~20 Mbit/s, each data packet acknowledged.
  voip      A SIP phone: REGISTER/OPTIONS to its provider, two calls with
            G.711 RTP both ways (50 packets/s) and RTCP.
  quic      A browser: 30 HTTP/3 connections to CDN hosts in one second (some
            with UDP 443 blocked, falling back to TCP), a QUIC video download
            at 50-300 Mbit/s (the client acknowledges every second packet),
            a QUIC upload at ~40 Mbit/s.
  vpn       A laptop on WireGuard (UDP 51820): a 15 s download at 50-300 Mbit/s
            (inner TCP acknowledgements every second packet), then an upload;
            keepalives.
  console   A game console: STUN, SSDP and UPnP IGD to the router, a P2P lobby
            of 12-18 peers at 30-60 packets/s each, 30 % behind NATs that
            never answer (probed every second for 10 s).
  monitor   A monitoring server pinging and SNMP-polling 40 LAN hosts every
            minute for 5 minutes; 20 % are down, 30 % of the rest run no
            SNMP (ICMP port unreachable).
  resume    A laptop resuming from sleep: it used ~45 servers for two minutes,
            slept 5-60 minutes, and on waking retries ~60 TLS connections
            within a second, 20-50 % of the servers gone (SYN retransmitted at
            1, 3 and 7 s); IMAP, XMPP and MQTT reconnects.
  resume_cold  The same wake-up without the earlier sessions in the capture.
  browser   A PC opening 120 TLS connections to 70 CDN hosts in one second,
            Happy Eyeballs (IPv6 tried first, broken for some hosts, IPv4
            250 ms later), from three IPv6 privacy addresses.
  office    Printer discovery (WSD, mDNS, IPP, SNMP, 9100, LPD), a NAS's SMB
            burst (a folder copy: 8 connections), Chromecast DIAL/cast.

Still blocked by the shipped defaults (docs/DETECTION.md, "Benign behaviours
beyond the lab corpus"; tests/benign_extra.rs, ignored test):
  tailscale     disco pings to 10 peers' candidate endpoints (a host_sweep
                of udp/41641: their private addresses never answer from here).

Blocked before the floods needed a victim (a rate towards one host), now not:
  console_host  a P2P lobby host with 24 peers (~1 250 small packets/s).
  smokeping     FPing over 250 targets at 1 ms spacing (250 echo requests/s).
  torrent_quit  port unreachables to 600 peers after the client closed.

Frames carry headers only (no application bytes), each record keeping its
full original length, like datasets/benign/ (tests/lab/headers_only.py).
Deterministic for a seed. Standard library only.
"""
import argparse
import ipaddress
import os
import random
import struct
import sys

T0 = 1_800_000_000_000_000  # µs
MAC_LAN = bytes.fromhex("02000000aa01")
MAC_GW = bytes.fromhex("02000000aa00")


def eth(src_lan, v6):
    """Ethernet header: LAN hosts talk to the gateway's MAC and back."""
    a, b = (MAC_GW, MAC_LAN) if src_lan else (MAC_LAN, MAC_GW)
    return a + b + (b"\x86\xdd" if v6 else b"\x08\x00")


def ip_hdr(src, dst, proto, l4_len):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 6:
        return struct.pack("!IHBB", 6 << 28, l4_len, proto, 64) + s.packed + d.packed, True
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4_len, 0, 0x4000, 64, proto, 0, s.packed, d.packed), False


def is_lan(addr):
    a = ipaddress.ip_address(addr)
    return a.is_private or a.is_link_local or a.is_multicast


class Capture:
    """Frames of one behaviour, sorted by time when written."""

    def __init__(self):
        self.frames = []

    def _add(self, t_us, src, proto, hdr_rest, l4_len, dst):
        ip, v6 = ip_hdr(src, dst, proto, l4_len)
        frame = eth(is_lan(src), v6) + ip + hdr_rest
        wire = 14 + len(ip) + l4_len
        self.frames.append((int(t_us), frame, wire))

    def udp(self, t, src, sport, dst, dport, payload):
        hdr = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
        self._add(t, src, 17, hdr, 8 + payload, dst)

    def tcp(self, t, src, sport, dst, dport, flags, seq, ack, payload=0):
        fl = 0
        for ch, bit in (("F", 1), ("S", 2), ("R", 4), ("P", 8), ("A", 16)):
            if ch in flags:
                fl |= bit
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, fl, 64240, 0, 0)
        self._add(t, src, 6, hdr, 20 + payload, dst)

    def icmp(self, t, src, dst, typ, ident, seq, payload=56, v6=False):
        hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq & 0xFFFF)
        self._add(t, src, 58 if v6 else 1, hdr, 8 + payload, dst)

    def write(self, path):
        self.frames.sort(key=lambda f: f[0])
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for t, frame, wire in self.frames:
                f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), wire))
                f.write(frame)
        return len(self.frames)


def public_ip(rnd):
    while True:
        a = ipaddress.IPv4Address(rnd.getrandbits(32))
        if a.is_global and not a.is_multicast:
            return str(a)


def public_ip6(rnd):
    return str(ipaddress.IPv6Address((0x2A00 << 112) | rnd.getrandbits(100)))


def tcp_session(c, t, cli, sport, srv, dport, rnd, up=300, down=4000, rtt=0.03):
    """A full TCP connection: handshake, request, response, close. Returns its end time (µs)."""
    r = rtt * 1e6
    ci, si = rnd.getrandbits(32), rnd.getrandbits(32)
    c.tcp(t, cli, sport, srv, dport, "S", ci, 0)
    c.tcp(t + r / 2, srv, dport, cli, sport, "SA", si, ci + 1)
    c.tcp(t + r / 2 + 100, cli, sport, srv, dport, "A", ci + 1, si + 1)
    t += r / 2 + 200
    c.tcp(t, cli, sport, srv, dport, "PA", ci + 1, si + 1, up)
    t += r
    sent = 0
    while sent < down:
        n = min(1448, down - sent)
        c.tcp(t, srv, dport, cli, sport, "PA", si + 1 + sent, ci + 1 + up, n)
        sent += n
        t += 120
        if (sent // 1448) % 2 == 0:
            c.tcp(t, cli, sport, srv, dport, "A", ci + 1 + up, si + 1 + sent)
    t += r
    c.tcp(t, cli, sport, srv, dport, "FA", ci + 1 + up, si + 1 + sent)
    c.tcp(t + r / 2, srv, dport, cli, sport, "FA", si + 1 + sent, ci + 2 + up)
    c.tcp(t + r / 2 + 100, cli, sport, srv, dport, "A", ci + 2 + up, si + 2 + sent)
    return t + r


def tcp_unanswered(c, t, cli, sport, srv, dport, rnd, retries=(1.0, 3.0, 7.0)):
    """A connection to a host that is gone: the SYN and its retransmissions, no answer."""
    ci = rnd.getrandbits(32)
    c.tcp(t, cli, sport, srv, dport, "S", ci, 0)
    for r in retries:
        c.tcp(t + r * 1e6, cli, sport, srv, dport, "S", ci, 0)


def tcp_refused(c, t, cli, sport, srv, dport, rnd):
    ci = rnd.getrandbits(32)
    c.tcp(t, cli, sport, srv, dport, "S", ci, 0)
    c.tcp(t + 40_000, srv, dport, cli, sport, "RA", 0, ci + 1)


def dht(c, rnd):
    me = "192.168.1.20"
    silent_share = rnd.uniform(0.3, 0.6)
    t = T0
    peers = []
    # Bootstrap burst: 40 queries in 2 s, then ~3 a second for 3 minutes.
    times = [T0 + i * 50_000 for i in range(40)]
    tt = T0 + 2e6
    while tt < T0 + 180e6:
        tt += rnd.expovariate(3.0) * 1e6
        times.append(tt)
    for t in times:
        peer = public_ip(rnd)
        port = 6881 if rnd.random() < 0.15 else rnd.randrange(1025, 65536)
        c.udp(t, me, 6881, peer, port, rnd.randrange(90, 115))
        if rnd.random() >= silent_share:
            c.udp(t + rnd.uniform(30e3, 300e3), peer, port, me, 6881, rnd.randrange(200, 420))
            peers.append((peer, port))
        elif rnd.random() < 0.3:
            # libtorrent re-sends a timed-out query once.
            c.udp(t + 2.5e6, me, 6881, peer, port, rnd.randrange(90, 115))
    # TCP peer connections from tracker/DHT results over the 3 minutes.
    for i in range(60):
        t = T0 + rnd.uniform(3e6, 170e6)
        peer, port = public_ip(rnd), rnd.randrange(1025, 65536)
        sport = 40000 + i
        u = rnd.random()
        if u < 0.45:
            tcp_unanswered(c, t, me, sport, peer, port, rnd, retries=(1.0, 3.0))
        elif u < 0.6:
            tcp_refused(c, t, me, sport, peer, port, rnd)
        else:
            tcp_session(c, t, me, sport, peer, port, rnd, up=68 + 300, down=rnd.randrange(20_000, 300_000), rtt=0.08)
    # uTP download from 8 peers, ~250 data packets/s each for 20 s, each acknowledged.
    seeds = [(public_ip(rnd), rnd.randrange(1025, 65536)) for _ in range(8)]
    start = T0 + 20e6
    for k, (peer, port) in enumerate(seeds):
        t = start + k * 300e3
        c.udp(t, me, 6881, peer, port, 20)  # ST_SYN
        c.udp(t + 80e3, peer, port, me, 6881, 20)  # ST_STATE
        t += 100e3
        while t < start + 20e6:
            c.udp(t, peer, port, me, 6881, 1382)
            c.udp(t + 200, me, 6881, peer, port, 20 + rnd.choice((0, 0, 4, 8)))
            t += rnd.uniform(2e3, 6e3)


def voip(c, rnd):
    phone, sip = "192.168.1.30", public_ip(rnd)
    for k in range(6):
        t = T0 + k * 30e6
        c.udp(t, phone, 5060, sip, 5060, 620)
        c.udp(t + 40e3, sip, 5060, phone, 5060, 480)
        c.udp(t + 15e6, phone, 5060, sip, 5060, 420)  # OPTIONS keepalive
        c.udp(t + 15e6 + 40e3, sip, 5060, phone, 5060, 380)
    for call in range(2):
        t = T0 + 20e6 + call * 80e6
        c.udp(t, phone, 5060, sip, 5060, 900)  # INVITE
        for j, size in enumerate((350, 520, 860)):  # 100, 180, 200
            c.udp(t + (j + 1) * 300e3, sip, 5060, phone, 5060, size)
        c.udp(t + 1.0e6, phone, 5060, sip, 5060, 400)  # ACK
        media = public_ip(rnd)
        lport, rport = 10000 + 2 * call * 2, rnd.randrange(16384, 32767) & ~1
        t0, dur = t + 1.0e6, rnd.uniform(40e6, 60e6)
        tt = t0
        while tt < t0 + dur:
            c.udp(tt, phone, lport, media, rport, 172)
            c.udp(tt + rnd.uniform(1e3, 8e3), media, rport, phone, lport, 172)
            tt += 20e3
        tt = t0
        while tt < t0 + dur:
            c.udp(tt, phone, lport + 1, media, rport + 1, 84)
            c.udp(tt + 30e3, media, rport + 1, phone, lport + 1, 84)
            tt += 5e6
        c.udp(t0 + dur, phone, 5060, sip, 5060, 450)  # BYE
        c.udp(t0 + dur + 40e3, sip, 5060, phone, 5060, 380)


def quic_handshake(c, t, pc, sport, srv):
    c.udp(t, pc, sport, srv, 443, 1252)
    for j in range(3):
        c.udp(t + 20e3 + j * 100, srv, 443, pc, sport, 1252)
    c.udp(t + 21e3, pc, sport, srv, 443, 1252)
    c.udp(t + 22e3, pc, sport, srv, 443, 120)


def quic(c, rnd):
    pc = "192.168.1.40"
    blocked = set(rnd.sample(range(30), 3))
    for i in range(30):
        srv, sport, t = public_ip(rnd), 50000 + i, T0 + rnd.uniform(0, 1e6)
        if i in blocked:
            # UDP 443 dropped somewhere: Chrome retries the Initial, then races TCP.
            c.udp(t, pc, sport, srv, 443, 1252)
            c.udp(t + 300e3, pc, sport, srv, 443, 1252)
            tcp_session(c, t + 300e3, pc, 52000 + i, srv, 443, rnd)
            continue
        quic_handshake(c, t, pc, sport, srv)
        tt = t + 40e3
        for _ in range(rnd.randrange(5, 40)):
            c.udp(tt, srv, 443, pc, sport, 1350)
            c.udp(tt + 300, srv, 443, pc, sport, 1350)
            c.udp(tt + 600, pc, sport, srv, 443, 45)
            tt += 2e3
    # A video download at 50-300 Mbit/s for 10 s: the client acknowledges every second packet.
    mbit = rnd.choice((50, 100, 200, 300))
    gap = 1350 * 8 / mbit  # µs per packet
    srv, sport = public_ip(rnd), 50100
    t = T0 + 3e6
    quic_handshake(c, t, pc, sport, srv)
    t += 40e3
    n = 0
    while t < T0 + 13e6:
        c.udp(t, srv, 443, pc, sport, 1350)
        n += 1
        if n % 2 == 0:
            c.udp(t + 50, pc, sport, srv, 443, rnd.randrange(35, 60))
        t += gap * rnd.uniform(0.8, 1.2)
    # An upload at ~40 Mbit/s for 5 s; the server acknowledges every second packet.
    srv, sport = public_ip(rnd), 50101
    t = T0 + 20e6
    quic_handshake(c, t, pc, sport, srv)
    t += 40e3
    n = 0
    while t < T0 + 25e6:
        c.udp(t, pc, sport, srv, 443, 1350)
        n += 1
        if n % 2 == 0:
            c.udp(t + 20e3, srv, 443, pc, sport, 45)
        t += 270 * rnd.uniform(0.8, 1.2)


def vpn(c, rnd):
    laptop, server = "192.168.1.50", public_ip(rnd)
    sport = rnd.randrange(40000, 60000)
    c.udp(T0, laptop, sport, server, 51820, 148)  # handshake initiation
    c.udp(T0 + 30e3, server, 51820, laptop, sport, 92)
    for k in range(1, 12):  # persistent keepalive
        c.udp(T0 + k * 25e6, laptop, sport, server, 51820, 32)
    mbit = rnd.choice((50, 100, 200, 300))
    gap = 1420 * 8 / mbit
    t, n = T0 + 5e6, 0
    while t < T0 + 20e6:
        c.udp(t, server, 51820, laptop, sport, 1420)
        n += 1
        if n % 2 == 0:
            c.udp(t + 60, laptop, sport, server, 51820, 32 + 16 + 52)
        t += gap * rnd.uniform(0.8, 1.2)
    t, n = T0 + 40e6, 0
    while t < T0 + 50e6:  # upload at ~30 Mbit/s
        c.udp(t, laptop, sport, server, 51820, 1420)
        n += 1
        if n % 2 == 0:
            c.udp(t + 30e3, server, 51820, laptop, sport, 100)
        t += 380 * rnd.uniform(0.8, 1.2)


def console(c, rnd):
    xb, gw = "192.168.1.60", "192.168.1.1"
    for k, (stun, port) in enumerate(((public_ip(rnd), 3478), (public_ip(rnd), 19302))):
        for j in range(4):
            t = T0 + k * 100e3 + j * 500e3
            c.udp(t, xb, 3074, stun, port, 20)
            c.udp(t + 30e3, stun, port, xb, 3074, 32)
    c.udp(T0 + 10e3, xb, 1900, "239.255.255.250", 1900, 120)
    c.udp(T0 + 30e3, gw, 1900, xb, 1900, 300)
    for j in range(3):
        tcp_session(c, T0 + 200e3 + j * 50e3, xb, 49000 + j, gw, 5000, rnd, up=600, down=2500, rtt=0.002)
    peers = [(public_ip(rnd), rnd.randrange(1025, 65536)) for _ in range(rnd.randrange(12, 19))]
    start = T0 + 2e6
    for peer, port in peers:
        if rnd.random() < 0.3:
            for k in range(10):
                c.udp(start + k * 1e6, xb, 3074, peer, port, 60)
            continue
        pps = rnd.uniform(30, 60)
        t = start + rnd.uniform(0, 1e6)
        while t < start + 60e6:
            c.udp(t, xb, 3074, peer, port, rnd.randrange(60, 200))
            c.udp(t + rnd.uniform(10e3, 60e3), peer, port, xb, 3074, rnd.randrange(60, 200))
            t += 1e6 / pps


def monitor(c, rnd):
    nms = "192.168.1.10"
    hosts = [f"192.168.1.{100 + i}" for i in range(40)]
    down = set(rnd.sample(hosts, 8))
    no_snmp = set(rnd.sample([h for h in hosts if h not in down], 10))
    for rnd_i in range(5):
        base = T0 + rnd_i * 60e6
        for i, h in enumerate(hosts):
            t = base + i * 25e3
            c.icmp(t, nms, h, 8, 0x4242, rnd_i * 40 + i)
            if h not in down:
                c.icmp(t + 500, h, nms, 0, 0x4242, rnd_i * 40 + i)
            sport = 30000 + rnd_i * 64 + i
            c.udp(t + 2e6, nms, sport, h, 161, 45)
            if h in down:
                for r in (1, 2):  # the poller retries
                    c.udp(t + 2e6 + r * 1e6, nms, sport, h, 161, 45)
            elif h in no_snmp:
                c.icmp(t + 2e6 + 600, h, nms, 3, 0, 0, payload=28 + 45)
            else:
                c.udp(t + 2e6 + 900, h, 161, nms, sport, rnd.randrange(60, 400))


def monitor_large(c, rnd):
    """A monitoring server (Zabbix, LibreNMS) checking 70 devices each minute with SNMP and
    an HTTP check: all up for the first 3 minutes, then, in the evening, 40-65 % of them
    (phones, laptops, TVs) switched off for the next 7 minutes."""
    nms = "192.168.1.10"
    hosts = [f"192.168.1.{100 + i}" for i in range(70)]
    night = rnd.uniform(0.4, 0.65)
    for cycle in range(10):
        down = set(rnd.sample(hosts, int(len(hosts) * night))) if cycle >= 3 else set()
        base = T0 + cycle * 60e6
        for i, h in enumerate(hosts):
            t = base + i * 50e3
            sport = 20000 + (cycle * 70 + i) % 40000
            c.udp(t, nms, sport, h, 161, 45)
            if h in down:
                for r in (1, 2):
                    c.udp(t + r * 1e6, nms, sport, h, 161, 45)
                tcp_unanswered(c, t + 10e3, nms, 50000 + (cycle * 70 + i) % 15000, h, 80, rnd, retries=(1.0,))
            else:
                c.udp(t + 900, h, 161, nms, sport, rnd.randrange(60, 400))
                tcp_session(c, t + 10e3, nms, 50000 + (cycle * 70 + i) % 15000, h, 80, rnd, up=120, down=900, rtt=0.002)


def resume(c, rnd, cold=False):
    lap, dns = "192.168.1.70", "192.168.1.1"
    gone_share = rnd.uniform(0.2, 0.5)
    hosts = [public_ip(rnd) for _ in range(45)]
    gone = set(rnd.sample(hosts, int(len(hosts) * gone_share)))
    ports = [443 if i % 10 else rnd.choice((993, 5222, 8883)) for i in range(60)]
    t_wake = T0
    if not cold:
        # Before sleeping, the laptop used these servers (the gateway saw them answer);
        # it sleeps 5 to 60 minutes.
        for i in range(60):
            t = T0 + rnd.uniform(0, 120e6)
            tcp_session(c, t, lap, 30000 + i, hosts[i % len(hosts)], ports[i], rnd, up=600, down=rnd.randrange(2000, 60000))
        t_wake = T0 + 125e6 + rnd.uniform(5 * 60e6, 60 * 60e6)
    for i in range(20):
        c.udp(t_wake + i * 5e3, lap, 53000 + i, dns, 53, 40)
        c.udp(t_wake + i * 5e3 + 2e3, dns, 53, lap, 53000 + i, 120)
    for i in range(60):
        h = hosts[i % len(hosts)]
        t = t_wake + 150e3 + rnd.uniform(0, 1e6)
        if h in gone:
            tcp_unanswered(c, t, lap, 45000 + i, h, ports[i], rnd)
        else:
            tcp_session(c, t, lap, 45000 + i, h, ports[i], rnd, up=600, down=rnd.randrange(2000, 60000))


def resume_cold(c, rnd):
    """The same wake-up without the laptop's earlier sessions in view (it slept elsewhere,
    or the gateway restarted while it slept)."""
    resume(c, rnd, cold=True)


def browser(c, rnd):
    pc4 = "192.168.1.80"
    pcs6 = [public_ip6(rnd) for _ in range(3)]
    hosts = [(public_ip(rnd), public_ip6(rnd), rnd.random() < 0.4, rnd.random() < 0.15) for _ in range(70)]
    for i in range(120):
        h4, h6, has6, broken6 = hosts[i % 70] if i < 70 else hosts[rnd.randrange(70)]
        t = T0 + rnd.uniform(0, 1e6)
        src6 = pcs6[i % 3]
        if has6 and not broken6:
            tcp_session(c, t, src6, 40000 + i, h6, 443, rnd, up=520, down=rnd.randrange(3000, 90000))
        elif has6:
            # Happy Eyeballs: IPv6 SYN never answered, IPv4 250 ms later.
            tcp_unanswered(c, t, src6, 40000 + i, h6, 443, rnd, retries=(1.0,))
            tcp_session(c, t + 250e3, pc4, 40000 + i, h4, 443, rnd, up=520, down=rnd.randrange(3000, 90000))
        else:
            tcp_session(c, t, pc4, 40000 + i, h4, 443, rnd, up=520, down=rnd.randrange(3000, 90000))


def office(c, rnd):
    pc, printer, nas, cast = "192.168.1.90", "192.168.1.200", "192.168.1.210", "192.168.1.220"
    c.udp(T0, pc, 3702, "239.255.255.250", 3702, 700)  # WSD probe
    c.udp(T0 + 40e3, printer, 3702, pc, 3702, 1100)
    c.udp(T0 + 10e3, pc, 5353, "224.0.0.251", 5353, 60)
    c.udp(T0 + 30e3, printer, 5353, "224.0.0.251", 5353, 400)
    t = T0 + 200e3
    for j, port in enumerate((631, 80, 443, 9100, 515, 5357, 8080)):
        if port in (515, 8080):
            tcp_refused(c, t + j * 20e3, pc, 41000 + j, printer, port, rnd)
        else:
            tcp_session(c, t + j * 20e3, pc, 41000 + j, printer, port, rnd, rtt=0.003)
    c.udp(t, pc, 41500, printer, 161, 50)
    c.udp(t + 3e3, printer, 161, pc, 41500, 300)
    # NAS folder copy: 8 SMB connections, bulk transfer.
    for j in range(8):
        tcp_session(c, T0 + 2e6 + j * 1e3, pc, 42000 + j, nas, 445, rnd, up=2000, down=2_000_000, rtt=0.001)
    c.udp(T0 + 2e6, pc, 137, "192.168.1.255", 137, 50)
    # Chromecast: SSDP, DIAL, cast channel.
    c.udp(T0 + 5e6, pc, 50000, "239.255.255.250", 1900, 130)
    c.udp(T0 + 5e6 + 20e3, cast, 1900, pc, 50000, 280)
    for j, port in enumerate((8008, 8009, 8443)):
        tcp_session(c, T0 + 5.1e6 + j * 10e3, pc, 43000 + j, cast, port, rnd, rtt=0.004)


def icmp_unreachable(c, t, src, dst, quoted):
    """ICMP destination unreachable, port unreachable (v4 type 3 code 3)."""
    c._add(t, src, 1, struct.pack("!BBHI", 3, 3, 0, 0), 8 + quoted, dst)


# Behaviours the shipped defaults still block (docs/DETECTION.md, "Benign behaviours
# beyond the lab corpus"); tests/benign_extra.rs keeps them in an ignored test.


def tailscale(c, rnd):
    """A Tailscale node setting up paths to 10 peers (at start, or after waking): disco
    pings from its one socket (UDP 41641) to each peer's candidate endpoints — two private
    addresses of the peer's own sites (never answering from here) and its public one —
    three times each, then WireGuard traffic over the public path."""
    me = "192.168.1.30"
    for k in range(10):
        pub, pubport = public_ip(rnd), rnd.choice((41641, rnd.randrange(1025, 65536)))
        privs = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                 f"192.168.{rnd.randrange(2, 256)}.{rnd.randrange(2, 255)}"]
        t = T0 + k * 150e3 + rnd.uniform(0, 100e3)
        for rep in range(3):
            tt = t + rep * 1e6
            for a in privs:
                c.udp(tt, me, 41641, a, 41641, 100)
            c.udp(tt, me, 41641, pub, pubport, 100)
            c.udp(tt + 40e3, pub, pubport, me, 41641, 100)
        tt = t + 3e6
        while tt < t + 20e6:
            c.udp(tt, me, 41641, pub, pubport, 200)
            c.udp(tt + 30e3, pub, pubport, me, 41641, 300)
            tt += 200e3


def console_host(c, rnd):
    """A console hosting a P2P lobby of 24 peers at 45-60 packets/s each, both ways
    (small packets: ~1 250/s from the console)."""
    xb = "192.168.1.60"
    for _ in range(24):
        peer, port = public_ip(rnd), rnd.randrange(1025, 65536)
        pps = rnd.uniform(45, 60)
        t = T0 + rnd.uniform(0, 1e6)
        while t < T0 + 30e6:
            c.udp(t, xb, 3074, peer, port, rnd.randrange(60, 200))
            c.udp(t + rnd.uniform(10e3, 60e3), peer, port, xb, 3074, rnd.randrange(60, 200))
            t += 1e6 / pps


def smokeping(c, rnd):
    """SmokePing's FPing probe (mininterval 1 ms, one ping a target a second, 20 pings)
    over 250 LAN and WAN targets, 30 % of them down: 250 echo requests a second."""
    nms = "192.168.1.10"
    targets = [f"192.168.{1 + i // 250}.{1 + i % 250}" for i in range(250)]
    down = set(rnd.sample(targets, 75))
    for k in range(20):
        for i, h in enumerate(targets):
            t = T0 + k * 1e6 + i * 1e3
            c.icmp(t, nms, h, 8, 0x1000, k)
            if h not in down:
                c.icmp(t + 400, h, nms, 0, 0x1000, k)


def torrent_quit(c, rnd):
    """A BitTorrent client just closed: 600 DHT/uTP peers keep sending to its port for two
    minutes (each every 1-4 s) and the host answers each with ICMP port unreachable."""
    me = "192.168.1.20"
    for _ in range(600):
        peer, port = public_ip(rnd), rnd.randrange(1025, 65536)
        t = T0 + rnd.uniform(0, 5e6)
        while t < T0 + 120e6:
            c.udp(t, peer, port, me, 6881, rnd.randrange(60, 130))
            icmp_unreachable(c, t + 100, me, peer, 28 + 100)
            t += rnd.uniform(1e6, 4e6)


BEHAVIOURS = {f.__name__: f for f in (dht, voip, quic, vpn, console, monitor, monitor_large, resume, resume_cold, browser, office,
                                           tailscale, console_host, smokeping, torrent_quit)}


def make(name, path, seed):
    c = Capture()
    # One stream per behaviour and seed, so adding a behaviour does not change the others.
    BEHAVIOURS[name](c, random.Random(f"{name}-{seed}"))
    return c.write(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("behaviour", choices=sorted(BEHAVIOURS) + ["all"])
    ap.add_argument("out", help="the capture (a directory for `all`)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    names = sorted(BEHAVIOURS) if a.behaviour == "all" else [a.behaviour]
    if a.behaviour == "all":
        os.makedirs(a.out, exist_ok=True)
    for name in names:
        path = os.path.join(a.out, f"{name}.pcap") if a.behaviour == "all" else a.out
        n = make(name, path, a.seed)
        print(f"wrote {path}: {n} packets", file=sys.stderr)


if __name__ == "__main__":
    main()
