#!/usr/bin/env python3
"""Cuts every packet of a classic pcap (Ethernet, as tcpdump writes it in the
lab) right after its transport header, in place, keeping each record's
original length: what gatewarden reads (addresses, ports, flags, lengths from
the IP header) stays, application bytes go. The benign corpus's captures
(datasets/benign/) are kept this small; tests/lab.rs `lab_record_benign`
runs it after each session.

Run: headers_only.py CAPTURE.pcap [...]
"""
import os
import struct
import sys

MAGICS = {0xA1B2C3D4: "<", 0xA1B23C4D: "<", 0xD4C3B2A1: ">", 0x4D3CB2A1: ">"}


def header_end(data):
    """Bytes up to the end of the L4 header (or everything, if not understood)."""
    off = 14
    if len(data) < off:
        return len(data)
    ethertype = struct.unpack_from("!H", data, 12)[0]
    while ethertype in (0x8100, 0x88A8) and len(data) >= off + 4:
        ethertype = struct.unpack_from("!H", data, off + 2)[0]
        off += 4
    if ethertype == 0x0800 and len(data) >= off + 20:
        ihl = (data[off] & 0x0F) * 4
        proto = data[off + 9]
        frag = struct.unpack_from("!H", data, off + 6)[0] & 0x1FFF
        off += ihl
        if frag:
            return min(len(data), off)
    elif ethertype == 0x86DD and len(data) >= off + 40:
        proto = data[off + 6]
        off += 40
    else:
        return len(data)
    if proto == 6 and len(data) >= off + 13:
        return min(len(data), off + (data[off + 12] >> 4) * 4)
    if proto in (17, 1, 58):
        return min(len(data), off + 8)
    return len(data)


def cut(path):
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 24:
        sys.exit("%s: not a pcap" % path)
    magic = struct.unpack_from("<I", b, 0)[0]
    if magic not in MAGICS:
        sys.exit("%s: not a classic pcap (magic %#x)" % (path, magic))
    e = MAGICS[magic]
    out = [b[:24]]
    off = 24
    while off + 16 <= len(b):
        sec, frac, incl, orig = struct.unpack_from(e + "IIII", b, off)
        data = b[off + 16 : off + 16 + incl]
        off += 16 + incl
        keep = header_end(data)
        out.append(struct.pack(e + "IIII", sec, frac, keep, orig))
        out.append(data[:keep])
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(out))
    os.replace(tmp, path)
    return len(b), os.path.getsize(path)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: headers_only.py CAPTURE.pcap [...]")
    for p in sys.argv[1:]:
        before, after = cut(p)
        print("%s: %.1f MB -> %.1f MB" % (p, before / 1e6, after / 1e6))


if __name__ == "__main__":
    main()
