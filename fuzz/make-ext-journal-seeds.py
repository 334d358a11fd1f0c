#!/usr/bin/env python3
"""Turn ext images (dirty journals) into seeds for the ext_journal fuzz target.

Usage: make-ext-journal-seeds.py OUT_DIR IMAGE...

Encoding (see fuzz_targets/ext_journal.rs): u32 LE length in KiB, then for every 1 KiB
chunk that is not all zeros, u32 LE KiB offset + the 1024 bytes.
"""
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    kib = len(data) // 1024
    seed = bytearray(struct.pack("<I", kib))
    for i in range(kib):
        chunk = data[i * 1024:(i + 1) * 1024]
        if any(chunk):
            seed += struct.pack("<I", i) + chunk
    name = os.path.join(out, os.path.basename(path) + ".seed")
    open(name, "wb").write(seed)
    print(name, len(seed))
