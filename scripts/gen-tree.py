#!/usr/bin/env python3
"""Generate a deterministic benchmark tree: ~N files, ~TOTAL bytes, mixed content.

usage: gen-tree.py DIR [FILES=20000] [TOTAL_MB=500]
Content mixes text-like (compressible), random (incompressible) and sparse/zero data, in
nested directories, plus symlinks and hard links, like a real root filesystem layer.
"""
import os, random, sys

out = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
total = (int(sys.argv[3]) if len(sys.argv) > 3 else 500) << 20
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
text = b" ".join(rng.choice(words) for _ in range(3_000_000))  # ~20 MB of text
noise = rng.randbytes(32 << 20)
mean = total / files
os.makedirs(out, exist_ok=True)
written = 0
for i in range(files):
    d = os.path.join(out, f"d{i % 97:02d}", f"s{i % 13:02d}")
    os.makedirs(d, exist_ok=True)
    size = min(int(rng.expovariate(1 / mean)), 24 << 20)
    kind = rng.random()
    if kind < 0.55:
        start = rng.randrange(0, len(text) - size) if size < len(text) else 0
        data = text[start:start + size]
    elif kind < 0.9:
        start = rng.randrange(0, len(noise) - size) if size < len(noise) else 0
        data = noise[start:start + size]
    else:
        data = bytes(size)
    path = os.path.join(d, f"file-{i:05d}.dat")
    with open(path, "wb") as f:
        f.write(data)
    written += len(data)
    if i % 500 == 0:
        os.symlink(f"file-{i:05d}.dat", os.path.join(d, f"link-{i:05d}"))
    if i % 700 == 0:
        os.link(path, os.path.join(d, f"hard-{i:05d}"))
print(f"{files} files, {written >> 20} MiB in {out}")
