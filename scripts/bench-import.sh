#!/usr/bin/env bash
# Benchmark import and export against the reference pipelines, in the same run, on one or
# more trees (default: the generated tree of scripts/gen-tree.py, ~500 MB):
#   import --keep-layers          vs  gzip -dc | tar2sqfs, layer by layer   (goal >= 2x)
#   import (squashed)             vs  umoci raw unpack + mksquashfs         (goal >= 2x)
#   export --layer-format tar     vs  sqfs2tar | gzip -6, layer by layer    (goal >= 2.5x)
# and sifovl's peak memory (goal <= 128 MiB), with the CPU seconds (user + system) of both
# sides and the load average at the start of each tree (the machine may be shared). Each
# tree becomes a 5-layer gzip OCI layout (scripts/make-layout.py: four layers of content
# and one of whiteouts).
# Exits non-zero when a goal is missed.
# usage: scripts/bench-import.sh [TREE...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/sifovl
work=$(mktemp -d "$( [ -d /dev/shm ] && [ "$(df -m --output=avail /dev/shm | tail -1)" -gt 6000 ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/sifovl-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trees=("$@")
if [ ${#trees[@]} -eq 0 ]; then
  python3 scripts/gen-tree.py "$work/generated" 20000 500 >/dev/null
  trees=("$work/generated")
fi
measure() { python3 scripts/measure.py --cpu "$@"; }
ratio() { echo "$1 / $2" | bc -l; }
failed=0
printf '%-28s %-26s %9s %11s %7s %9s %6s %8s %8s\n' tree step sifovl_s reference_s ratio peak_MiB goal cpu_s ref_cpu_s
for tree in "${trees[@]}"; do
  name=$(basename "$tree")
  echo "$name: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  t=$work/$name; mkdir -p "$t"
  python3 scripts/make-layout.py "$tree" "$t/layout" 5 >/dev/null
  cat "$t"/layout/blobs/sha256/* >/dev/null
  export t
  mapfile -t layers < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"][7:]; print("\n".join(l["digest"][7:] for l in json.load(open(sys.argv[1]+"/blobs/sha256/"+m))["layers"]))' "$t/layout")
  # import --keep-layers vs tar2sqfs per layer
  read -r ref _ refcpu < <(measure bash -c 'i=0; for l in '"${layers[*]}"'; do gzip -dc "$t/layout/blobs/sha256/$l" | tar2sqfs -q -f -c gzip -j 2 "$t/ref$i.sqfs" >/dev/null; i=$((i+1)); done')
  read -r ours mem cpu < <(measure "$bin" import --force --keep-layers "$t/layout" "$t/keep.sif")
  r=$(ratio "$ref" "$ours"); printf '%-28s %-26s %9.2f %11.2f %6.2fx %9.1f %6s %8.2f %8.2f\n' "$name" "import --keep-layers" "$ours" "$ref" "$r" "$mem" ">=2x" "$cpu" "$refcpu"
  (( $(echo "$r < 2" | bc) )) && failed=1
  (( $(echo "$mem > 128" | bc) )) && failed=1
  # import (squashed) vs umoci raw unpack + mksquashfs
  read -r ref _ refcpu < <(measure bash -c 'rm -rf "$t/rootfs"; umoci raw unpack --rootless --image "$t/layout:latest" "$t/rootfs" >/dev/null 2>&1 && mksquashfs "$t/rootfs" "$t/ref.sqfs" -comp gzip -processors 2 -noappend -quiet -no-progress >/dev/null')
  read -r ours mem cpu < <(measure "$bin" import --force "$t/layout" "$t/squashed.sif")
  r=$(ratio "$ref" "$ours"); printf '%-28s %-26s %9.2f %11.2f %6.2fx %9.1f %6s %8.2f %8.2f\n' "$name" "import (squashed)" "$ours" "$ref" "$r" "$mem" ">=2x" "$cpu" "$refcpu"
  (( $(echo "$r < 2" | bc) )) && failed=1
  (( $(echo "$mem > 128" | bc) )) && failed=1
  rm -rf "$t/rootfs"
  # export --layer-format tar vs sqfs2tar | gzip -6, on the squashfs layers of keep.sif
  objects=$("$bin" inspect --json "$t/keep.sif" | python3 -c 'import json,sys; print(" ".join(str(l["object"]) for l in json.load(sys.stdin)["layers"]))')
  for o in $objects; do "$bin" dump "$o" "$t/keep.sif" > "$t/keep$o.sqfs"; done
  read -r ref _ refcpu < <(measure bash -c 'for o in '"$objects"'; do sqfs2tar "$t/keep$o.sqfs" 2>/dev/null | gzip -6 > "$t/ref$o.tar.gz"; done')
  read -r ours mem cpu < <(measure "$bin" export --force --layer-format tar "$t/keep.sif" "oci-archive:$t/export.tar")
  r=$(ratio "$ref" "$ours"); printf '%-28s %-26s %9.2f %11.2f %6.2fx %9.1f %6s %8.2f %8.2f\n' "$name" "export --layer-format tar" "$ours" "$ref" "$r" "$mem" ">=2.5x" "$cpu" "$refcpu"
  (( $(echo "$r < 2.5" | bc) )) && failed=1
  (( $(echo "$mem > 128" | bc) )) && failed=1
  printf '%-28s sizes: squashed %d B (mksquashfs %d B), export %d B (sqfs2tar|gzip %d B)\n' "$name" \
    "$(stat -c %s "$t/squashed.sif")" "$(stat -c %s "$t/ref.sqfs")" "$(stat -c %s "$t/export.tar")" \
    "$(cat "$t"/ref*.tar.gz | wc -c)"
  rm -rf "$t"
done
exit $failed
