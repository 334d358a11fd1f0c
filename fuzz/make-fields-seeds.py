#!/usr/bin/env python3
"""Make the base images of the ext_fields and squashfs_fields targets that other tools
make: fuzz/seeds/ext3-mke2fs-1k.chunks and fuzz/seeds/squashfs-mksquashfs.sqfs.

Usage: make-fields-seeds.py OUT_DIR (needs root for mknod, mke2fs 1.47, debugfs and
mksquashfs 4.5).

A 4 MiB ext3 with 1 KiB blocks and 1024 blocks per group (four groups, so group
descriptors and backups matter), 256-byte inodes, a 1 MiB journal holding one committed
transaction that was never checkpointed (the image needs recovery), and a tree with files
mapped by direct, indirect and double-indirect blocks, a sparse file, a directory of several
blocks, a long and a fast symlink, a hard link, xattrs in the inode and in an xattr block,
a character device and a FIFO, under `upper/` as an overlay has it.

The squashfs image is mksquashfs's of the same tree with 4 KiB blocks and nothing
compressed (-noI -noD -noF -noX), so the harness finds every inode and directory entry at a
fixed position.

Encoding of the ext image (what ext_fields.rs decodes; zeros are most of an image): u32 LE length in KiB,
then for every 1 KiB chunk that is not all zeros, u32 LE KiB offset + the 1024 bytes.
"""
import os
import struct
import subprocess
import sys
import tempfile


def run(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)


def debugfs(image, commands):
    out = subprocess.run(["debugfs", "-w", "-f", "-", image], input="\n".join(commands) + "\n",
                         text=True, check=True, capture_output=True)
    if "rror" in out.stderr:
        sys.exit(f"debugfs {commands}: {out.stderr}")


def pattern(n, seed):
    return bytes((i * 7 + seed + (i >> 10)) & 0xff for i in range(n))


out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
out = os.path.join(out_dir, "ext3-mke2fs-1k.chunks")
with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "root")
    upper = os.path.join(root, "upper")
    os.makedirs(os.path.join(root, "work"))
    os.makedirs(os.path.join(upper, "bigdir"))
    open(os.path.join(upper, "small"), "wb").write(b"hello\n" * 17)
    open(os.path.join(upper, "direct"), "wb").write(pattern(5000, 1))
    open(os.path.join(upper, "indirect"), "wb").write(pattern(16 * 1024, 2))
    with open(os.path.join(upper, "dindirect"), "wb") as f:
        f.write(pattern(3000, 3))
        f.seek(300 * 1024)  # past 12 + 256 blocks: double indirect
        f.write(pattern(3000, 4))
    with open(os.path.join(upper, "sparse"), "wb") as f:
        f.seek(512 * 1024)
        f.write(b"middle")
        f.truncate(1 << 20)
    for i in range(60):
        open(os.path.join(upper, "bigdir", f"entry-with-a-longish-name-{i:03}"), "wb").write(b"%d" % i)
    os.symlink("t" * 100 + "/target", os.path.join(upper, "longlink"))
    os.symlink("small", os.path.join(upper, "fastlink"))
    os.link(os.path.join(upper, "small"), os.path.join(upper, "hardlink"))
    os.mkfifo(os.path.join(upper, "fifo"))
    os.mknod(os.path.join(upper, "chardev"), 0o20644, os.makedev(1, 3))
    os.setxattr(os.path.join(upper, "small"), "user.inline", b"v1")
    os.setxattr(os.path.join(upper, "direct"), "user.big", pattern(300, 5))
    os.setxattr(os.path.join(upper, "direct"), "user.second", b"x" * 20)
    os.setxattr(os.path.join(upper, "bigdir"), "trusted.overlay.opaque", b"y")

    sqfs = os.path.join(out_dir, "squashfs-mksquashfs.sqfs")
    run("mksquashfs", root, sqfs, "-noappend", "-b", "4096", "-noI", "-noD", "-noF", "-noX",
        "-mkfs-time", "1700000000", "-all-time", "1700000000", "-quiet")
    print(sqfs, os.path.getsize(sqfs), "bytes")

    image = os.path.join(tmp, "ext3.img")
    run("mke2fs", "-q", "-F", "-t", "ext3", "-b", "1024", "-g", "1024", "-I", "256", "-J", "size=1", "-O", "^resize_inode",
        "-E", "lazy_itable_init=0,root_owner=0:0", "-U", "0b5b2a4a-6f7e-4c8f-9a55-0123456789ab",
        "-d", root, image, "4M", env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})

    # One committed transaction, never checkpointed: a new directory and file as debugfs
    # makes them on a copy, their changed blocks written to the journal of the original.
    after = os.path.join(tmp, "after.img")
    run("cp", image, after)
    debugfs(after, ["mkdir upper/journaled", "write /etc/hostname upper/journaled/file"])
    before_bytes, after_bytes = open(image, "rb").read(), open(after, "rb").read()
    bs = 1024
    changed = [b for b in range(len(before_bytes) // bs)
               if before_bytes[b * bs:(b + 1) * bs] != after_bytes[b * bs:(b + 1) * bs]]
    data = os.path.join(tmp, "txn.bin")
    open(data, "wb").write(b"".join(after_bytes[b * bs:(b + 1) * bs] for b in changed))
    debugfs(image, ["jo", f"jw -b {','.join(map(str, changed))} {data}", "jc"])

    raw = open(image, "rb").read()
    kib = len(raw) // 1024
    seed = bytearray(struct.pack("<I", kib))
    for i in range(kib):
        chunk = raw[i * 1024:(i + 1) * 1024]
        if any(chunk):
            seed += struct.pack("<I", i) + chunk
    open(out, "wb").write(seed)
    print(out, len(seed), "bytes,", len(changed), "blocks in the journal")
