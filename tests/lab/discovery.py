#!/usr/bin/env python3
"""Local discovery chatter of a home device for the traffic lab (run by
tests/lab/benign.sh inside a device namespace until it is stopped):

- mdns: a DNS-SD query (PTR _hap._tcp / _googlecast._tcp / _airplay._tcp …)
  and an unsolicited announcement of the device's own service, to
  224.0.0.251:5353 from port 5353, TTL 255, every INTERVAL seconds;
- ssdp: an M-SEARCH (ssdp:all / a device type) and a NOTIFY ssdp:alive to
  239.255.255.250:1900, TTL 2, every INTERVAL seconds.

Only multicast on the LAN: the router sees it on its bridge (the bridge's own
port receives every multicast frame), nothing crosses to the WAN.
Run: discovery.py mdns|ssdp INTERVAL DEVICE SEED
"""
import random
import socket
import struct
import sys
import time


def name(labels):
    out = b""
    for label in labels.split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def mdns_query(rng):
    service = rng.choice(["_hap._tcp.local", "_googlecast._tcp.local", "_airplay._tcp.local", "_ipp._tcp.local",
                          "_spotify-connect._tcp.local", "_services._dns-sd._udp.local"])
    header = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
    return header + name(service) + struct.pack("!HH", 12, 1)  # PTR, IN


def mdns_announce(device):
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
    target = name(device + "._http._tcp.local")
    rr = name("_http._tcp.local") + struct.pack("!HHIH", 12, 0x8001, 120, len(target)) + target
    return header + rr


def ssdp_search(rng):
    st = rng.choice(["ssdp:all", "urn:schemas-upnp-org:device:MediaRenderer:1", "urn:dial-multiscreen-org:service:dial:1",
                     "upnp:rootdevice"])
    return ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n"
            "ST: %s\r\n\r\n" % st).encode()


def ssdp_notify(device):
    return ("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
            "LOCATION: http://%s/desc.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
            "SERVER: Linux/5.10 UPnP/1.0 lab/1.0\r\nUSN: uuid:lab-%s::upnp:rootdevice\r\n\r\n"
            % (socket.gethostname(), device)).encode()


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("mdns", "ssdp"):
        sys.exit("usage: discovery.py mdns|ssdp INTERVAL DEVICE SEED")
    kind, interval, device, seed = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if kind == "mdns":
        s.bind(("", 5353))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        group = ("224.0.0.251", 5353)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        group = ("239.255.255.250", 1900)
    announce_every = rng.randint(2, 5)
    n = 0
    while True:
        try:
            if kind == "mdns":
                s.sendto(mdns_query(rng), group)
                if n % announce_every == 0:
                    s.sendto(mdns_announce(device), group)
            else:
                s.sendto(ssdp_search(rng), group)
                if n % announce_every == 0:
                    s.sendto(ssdp_notify(device), group)
        except OSError:
            pass  # no route for a moment: try again next time
        n += 1
        time.sleep(interval * rng.uniform(0.8, 1.2))


if __name__ == "__main__":
    main()
