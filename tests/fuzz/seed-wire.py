#!/usr/bin/env python3
"""seed-wire.py DIR: write seed inputs for fuzz_wire (a valid session:
hello, map with a memfd, reads; see fuzz_wire.c for the framing)."""
import os
import struct
import sys

MAGIC = 0x53465457


def pkt(body, fd=False):
    return struct.pack("<BH", 1 if fd else 0, len(body)) + body


hello = struct.pack("=IIQII", MAGIC, 1, 1, 1, 0)
mapm = struct.pack("=IIQQiI", MAGIC, 2, 2, 1 << 20, 0, 0)
reads = [struct.pack("=IIQQQQQiIq", MAGIC, 3, 3 + i, 2, off, n, 0, 0, 0, 0)
         for i, (off, n) in enumerate([(0, 4096), (1 << 20, 1 << 20),
                                       ((3 << 20) - 10, 100)])]
os.makedirs(sys.argv[1], exist_ok=True)
seeds = {
    "session": pkt(hello) + pkt(mapm, fd=True) + b"".join(map(pkt, reads)),
    "hello": pkt(hello),
    "nomap": pkt(hello) + pkt(reads[0]),
}
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], "seed-" + name), "wb") as f:
        f.write(data)
