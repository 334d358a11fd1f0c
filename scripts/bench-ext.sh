#!/usr/bin/env bash
# Benchmark: walking and hashing every file of an ext3 overlay with sifovl's reader
# (`sifovl ls --hash`) against `debugfs -R "rdump"` + sha256sum and against a fuse2fs mount
# + find + sha256sum, on the same generated content, in the same run.
# usage: scripts/bench-ext.sh [FILES] [TOTAL_MB]   (fuse2fs part needs root and /dev/fuse)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}; total=${2:-500}
cargo build --release --locked --quiet
bin=$PWD/target/release/sifovl
work=$(mktemp -d "${TMPDIR:-/tmp}/sifovl-bench.XXXXXX")
cleanup() { umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
python3 scripts/gen-tree.py "$work/ovl/upper" "$files" "$total" >/dev/null
mkdir -p "$work/ovl/work" "$work/mnt" "$work/rdump"
truncate -s "$(( total * 2 + 256 ))M" "$work/overlay.ext3"
mke2fs -q -F -t ext3 -d "$work/ovl" "$work/overlay.ext3"
cp testdata/sample.oci.sif "$work/image.sif"
"$bin" add --from "$work/overlay.ext3" "$work/image.sif" >/dev/null
offset=$("$bin" inspect --json "$work/image.sif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["overlay"]["offset"])')
cat "$work/image.sif" "$work/overlay.ext3" >/dev/null
export work bin offset
read -r ours _ < <(python3 scripts/measure.py "$bin" ls --hash "$work/image.sif")
read -r rdump _ < <(python3 scripts/measure.py bash -c 'debugfs -R "rdump / $work/rdump" "$work/overlay.ext3" 2>/dev/null && find "$work/rdump" -type f -print0 | xargs -0 sha256sum >/dev/null')
read -r fuse _ < <(python3 scripts/measure.py bash -c 'fuse2fs -o ro,offset=$offset "$work/image.sif" "$work/mnt" && find "$work/mnt" -type f -print0 | xargs -0 sha256sum >/dev/null; umount "$work/mnt"')
printf 'walk + hash every file, %s files, %s MB:\n' "$files" "$total"
printf '  sifovl ls --hash (inside the SIF)     %6.2f s\n' "$ours"
printf '  debugfs rdump + sha256sum            %6.2f s  (%.1fx)\n' "$rdump" "$(echo "$rdump / $ours" | bc -l)"
printf '  fuse2fs mount + find + sha256sum     %6.2f s  (%.1fx)\n' "$fuse" "$(echo "$fuse / $ours" | bc -l)"
