#!/usr/bin/env python3
"""Build a multi-layer OCI image layout from a directory tree, with GNU tar and gzip (tools
independent of sifovl), for the import/export benchmarks.

usage: make-layout.py TREE LAYOUT [LAYERS]

The tree's top-level entries are dealt into LAYERS-1 layers of about equal size (gzip -6
tar layers); a last layer deletes two of the larger top-level entries with AUFS whiteouts
and re-adds one file, so squashing has real work to do. The index tags the image `latest`.
"""
import gzip, hashlib, json, os, subprocess, sys, tempfile


def du(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total + os.lstat(path).st_size


def blob(layout, data_path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(data_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        size = os.path.getsize(data_path)
        dest = os.path.join(layout, "blobs/sha256", h.hexdigest())
        os.replace(data_path, dest)
    else:
        h.update(data)
        size = len(data)
        with open(os.path.join(layout, "blobs/sha256", h.hexdigest()), "wb") as f:
            f.write(data)
    return "sha256:" + h.hexdigest(), size


def sha256_of_gunzip(path):
    h = hashlib.sha256()
    p = subprocess.Popen(["gzip", "-dc", path], stdout=subprocess.PIPE)
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        h.update(chunk)
    p.wait()
    return "sha256:" + h.hexdigest()


def main():
    tree, layout = sys.argv[1], sys.argv[2]
    nlayers = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    os.makedirs(os.path.join(layout, "blobs/sha256"), exist_ok=True)
    entries = sorted(os.listdir(tree))
    sized = sorted(((du(os.path.join(tree, e)), e) for e in entries), reverse=True)
    groups = [[] for _ in range(max(1, nlayers - 1))]
    loads = [0] * len(groups)
    for size, name in sized:
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += size
    layers, diff_ids = [], []
    with tempfile.TemporaryDirectory(dir=layout) as work:
        for i, group in enumerate(g for g in groups if g):
            out = os.path.join(work, f"layer{i}.tar.gz")
            subprocess.run(f"tar -C {tree!r} --numeric-owner --xattrs -cf - {' '.join(map(repr, sorted(group)))} | gzip -6 -n > {out!r}",
                           shell=True, check=True)
            diff_ids.append(sha256_of_gunzip(out))
            digest, size = blob(layout, out)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": size, "digest": digest})
        # The last layer: whiteouts of two large entries, and one file re-added.
        top = os.path.join(work, "top")
        os.makedirs(top)
        doomed = [name for _, name in sized[:2]]
        for name in doomed:
            open(os.path.join(top, ".wh." + name), "wb").close()
        with open(os.path.join(top, "ADDED-BY-TOP-LAYER"), "wb") as f:
            f.write(b"the top layer\n")
        out = os.path.join(work, "top.tar.gz")
        subprocess.run(f"tar -C {top!r} --numeric-owner -cf - . | gzip -6 -n > {out!r}", shell=True, check=True)
        diff_ids.append(sha256_of_gunzip(out))
        digest, size = blob(layout, out)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": size, "digest": digest})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]},
                        separators=(",", ":")).encode()
    cdigest, csize = blob(layout, data=config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": csize, "digest": cdigest},
                           "layers": layers}, separators=(",", ":")).encode()
    mdigest, msize = blob(layout, data=manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "size": msize, "digest": mdigest,
                   "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(f"{len(layers)} layers, {sum(l['size'] for l in layers)} bytes compressed; whited out: {doomed}")


if __name__ == "__main__":
    main()
