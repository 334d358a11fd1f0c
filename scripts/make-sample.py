#!/usr/bin/env python3
"""Generate the small sample images in testdata/ (deterministic; re-run to check).

testdata/sample.oci.sif   an OCI-SIF with one squashfs layer, as SingularityCE pulls it
testdata/sample.sif       a native SIF with a squashfs primary system partition

The SIF framing follows ../shared/spec/sif-format.md (deterministic mode: nil UUID, Go zero
time) and the OCI-SIF conventions of ../shared/spec/oci-sif.md section 1. The squashfs is
made by mksquashfs with fixed times and owners so the bytes do not depend on the host.
"""
import hashlib, json, os, struct, subprocess, sys, tempfile

GO_ZERO = -62135596800
SLOT = 585
OCI_ROOT_INDEX, OCI_BLOB, DEFFILE, PARTITION = 0x400A, 0x400B, 0x4001, 0x4004


def squashfs(tree_files):
    with tempfile.TemporaryDirectory() as d:
        root = os.path.join(d, "root")
        for path, content in tree_files.items():
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(content)
        out = os.path.join(d, "layer.sqfs")
        subprocess.run(["mksquashfs", root, out, "-noappend", "-quiet", "-comp", "gzip",
                        "-all-root", "-mkfs-time", "0", "-all-time", "0", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        return open(out, "rb").read()


def go_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sif(objects, capacity, arch=b"00"):
    """objects: list of (type, group, data, extra, alignment, name)."""
    data_offset = 4096 + SLOT * capacity
    end, body, descs = data_offset, bytearray(), []
    for i, (dtype, group, data, extra, align, name) in enumerate(objects):
        offset = end if align == 0 else (end + align - 1) // align * align
        pad = offset - end
        body += b"\0" * pad + data
        d = struct.pack("<iBIIIqqqqqqq", dtype, 1, i + 1, 0xF0000000 | group, 0, offset,
                        len(data), pad + len(data), GO_ZERO, GO_ZERO, 0, 0)
        d += name.ljust(128, b"\0") + extra.ljust(384, b"\0")
        descs.append(d)
        end = offset + len(data)
    table = b"".join(descs) + b"\0" * SLOT * (capacity - len(objects))
    header = b"\0" * 32 + b"SIF_MAGIC\0" + b"01\0" + arch + b"\0" + b"\0" * 16
    header += struct.pack("<qqqqqqqq", GO_ZERO, GO_ZERO, capacity - len(objects), capacity,
                          4096, SLOT * capacity, data_offset, end - data_offset)
    return header + b"\0" * (4096 - 128) + table + bytes(body)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "testdata")
    files = {
        "etc/os-release": b'NAME="sifovl sample"\nID=sample\n',
        "hello.txt": b"Hello from the sifovl sample image.\n",
        "bin/.keep": b"",
    }
    layer = squashfs(files)
    ld = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = go_json({
        "architecture": "amd64", "created": "2026-01-01T00:00:00Z",
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "scripts/make-sample.py"}],
        "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]},
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
    })
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = go_json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "digest": cd},
        "layers": [{"mediaType": "application/vnd.sylabs.image.layer.v1.squashfs", "size": len(layer), "digest": ld}],
    })
    md = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = go_json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(manifest),
                       "digest": md, "artifactType": "application/vnd.oci.image.config.v1+json"}],
    })
    idx = "sha256:" + hashlib.sha256(index).hexdigest()
    oci = sif([(OCI_BLOB, 1, layer, ld.encode(), 0, b""),
               (OCI_BLOB, 1, config, cd.encode(), 0, b""),
               (OCI_BLOB, 1, manifest, md.encode(), 0, b""),
               (OCI_ROOT_INDEX, 1, index, idx.encode(), 0, b"")], capacity=1 + 2 + 1 + 8)
    with open(os.path.join(out_dir, "sample.oci.sif"), "wb") as f:
        f.write(oci)
    part_extra = struct.pack("<ii", 1, 2) + b"02\0"  # Squashfs, PrimSys, amd64
    native = sif([(DEFFILE, 1, b"bootstrap: scratch\n", b"", 4096, b""),
                  (PARTITION, 1, layer, part_extra, 4096, b"")], capacity=48, arch=b"02")
    with open(os.path.join(out_dir, "sample.sif"), "wb") as f:
        f.write(native)


if __name__ == "__main__":
    main()
