#!/usr/bin/env python3
"""seed-wire.py DIR: write seed inputs for fuzz_wire (a valid session:
hello, grant, map with a memfd, reads, prefetch, evict; see fuzz_wire.c for the framing)."""
import os
import struct
import sys

MAGIC = 0x53465457


def pkt(body, fd=False, grant_all=False):
    flags = (1 if fd else 0) | (2 if grant_all else 0)
    return struct.pack("<BH", flags, len(body)) + body


hello = struct.pack("=IIQIIQ", MAGIC, 1, 1, 2, 0, 0)
grant = struct.pack("=IIQQq", MAGIC, 6, 4, 0, 0)
prefetch = struct.pack("=IIQQQQQiIq", MAGIC, 4, 20, 2, 0, 1 << 20, 0, 0, 0, 0)
evict = struct.pack("=IIQQQQQiIq", MAGIC, 5, 21, 2, 0, 0, 0, 0, 0, 0)
mapm = struct.pack("=IIQQiI", MAGIC, 2, 2, 1 << 20, 0, 0)
reads = [struct.pack("=IIQQQQQiIq", MAGIC, 3, 3 + i, 2, off, n, 0, 0, 0, 0)
         for i, (off, n) in enumerate([(0, 4096), (1 << 20, 1 << 20),
                                       ((3 << 20) - 10, 100)])]
os.makedirs(sys.argv[1], exist_ok=True)
seeds = {
    # Flags bit 1 on the first packet: files count as granted (no mount).
    "session": pkt(hello, grant_all=True) + pkt(mapm, fd=True) +
    b"".join(map(pkt, reads)) + pkt(prefetch) + pkt(evict),
    "ungranted": pkt(hello) + pkt(mapm, fd=True) + pkt(reads[0]),
    "grant": pkt(hello) + pkt(grant, fd=True) + pkt(grant) + pkt(reads[0]),
    "hello": pkt(hello),
    "nomap": pkt(hello) + pkt(reads[0]),
}
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], "seed-" + name), "wb") as f:
        f.write(data)
