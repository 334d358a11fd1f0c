#!/usr/bin/env python3
"""Generate testdata/malformed/: broken SIF files, each with the command that must refuse it.

Every file is a small mutation of testdata/sample.sif (native) or testdata/sample.oci.sif.
cases.tsv lists: file, sifovl arguments, a substring the one-line error must contain.
Deterministic: re-running reproduces the same bytes.
"""
import json, os, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
testdata = os.path.join(here, "..", "testdata")
out = os.path.join(testdata, "malformed")
native = open(os.path.join(testdata, "sample.sif"), "rb").read()
oci = open(os.path.join(testdata, "sample.oci.sif"), "rb").read()
DESC = 4096  # descriptor table offset in both samples
SLOT = 585

cases = []


def emit(name, data, args, expect):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    cases.append((name, args, expect))


def patch(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def slot(i, field_offset):
    return DESC + SLOT * i + field_offset


os.makedirs(out, exist_ok=True)
for f in os.listdir(out):
    os.remove(os.path.join(out, f))

emit("empty.sif", b"", "list", "EOF")
emit("truncated-header.sif", native[:100], "header", "unexpected EOF")
emit("truncated-table.sif", native[:5000], "list", "past the end")
emit("truncated-data.sif", native[:-1000], "list", "past the end")
emit("wrong-magic.sif", native[:32] + b"SIF_MAGIX\0" + native[42:], "header", "invalid SIF magic")
emit("bad-version.sif", native[:42] + b"02\0" + native[45:], "header", "incompatible SIF version")
emit("not-a-sif.sif", b"#!/bin/sh\necho hello\n" * 20, "list", "invalid SIF magic")
emit("negative-descriptor-count.sif", patch(native, 88, "<q", -1), "list", "descriptor count")
emit("huge-descriptor-count.sif", patch(native, 88, "<q", 1 << 40), "list", "descriptor count")
emit("descriptor-offset-past-end.sif", patch(native, 96, "<q", 1 << 30), "list", "past the end")
emit("descriptor-offset-negative.sif", patch(native, 96, "<q", -4096), "list", "descriptor table offset")
emit("descriptor-size-too-small.sif", patch(native, 104, "<q", 100), "list", "descriptor table size")
emit("data-offset-past-end.sif", patch(native, 112, "<q", 1 << 40), "list", "data offset")
emit("negative-data-size.sif", patch(native, 120, "<q", -5), "list", "data size")
emit("free-count-mismatch.sif", patch(native, 80, "<q", 3), "list", "free descriptors")
emit("object-offset-past-end.sif", patch(native, slot(1, 17), "<q", 1 << 50), "list", "past the end")
emit("object-size-huge.sif", patch(native, slot(1, 25), "<q", (1 << 62)), "list", "past the end")
emit("object-offset-negative.sif", patch(native, slot(1, 17), "<q", -1), "list", "negative offset")
emit("object-before-data.sif", patch(native, slot(0, 17), "<q", 100), "list", "before the data section")
first = struct.unpack_from("<q", native, slot(0, 17))[0]
emit("overlapping-objects.sif", patch(native, slot(1, 17), "<q", first), "list", "overlap")
emit("duplicate-ids.sif", patch(native, slot(1, 5), "<I", 1), "list", "id used twice")
emit("zero-id.sif", patch(native, slot(1, 5), "<I", 0), "list", "invalid id 0")
emit("unknown-data-type.sif", patch(native, slot(0, 0), "<i", 0x5001), "list", "unknown data type")
emit("info-missing-object.sif", native, "info 9", "object 9 not found")

# OCI-SIF: the container is fine, the image inside is not.
def oci_object(i):
    off = struct.unpack_from("<q", oci, slot(i, 17))[0]
    size = struct.unpack_from("<q", oci, slot(i, 25))[0]
    return off, size

root_off, root_size = oci_object(3)
broken = bytearray(oci)
broken[root_off] = ord("[")
emit("oci-index-broken-json.sif", bytes(broken), "inspect", "invalid JSON")
index = json.loads(oci[root_off:root_off + root_size])
index["manifests"] = []
body = json.dumps(index, separators=(",", ":")).encode().ljust(root_size, b" ")
broken = bytearray(oci)
broken[root_off:root_off + root_size] = body
emit("oci-index-no-image.sif", bytes(broken), "inspect", "no image manifest")
man_off, man_size = oci_object(2)
broken = bytearray(oci)
broken[man_off:man_off + man_size] = b"{" + b" " * (man_size - 1)
emit("oci-manifest-truncated-json.sif", bytes(broken), "verify", "invalid JSON")
emit("oci-bad-digest-text.sif", patch(oci, slot(1, 201), "<7s", b"sha512:"), "inspect", "not sha256")
emit("oci-missing-config.sif", patch(oci, slot(1, 201 + 7), "<4s", b"0000"), "reconcile", "no OCI.Blob object holds it")
two_roots = patch(oci, slot(0, 0), "<i", 0x400A)
emit("oci-two-root-indexes.sif", two_roots, "inspect", "exactly one")

with open(os.path.join(out, "cases.tsv"), "w") as f:
    f.write("# file\targuments\texpected error text\n")
    for name, args, expect in cases:
        f.write(f"{name}\t{args}\t{expect}\n")
print(f"{len(cases)} malformed files in {out}")
