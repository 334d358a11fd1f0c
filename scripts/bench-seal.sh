#!/usr/bin/env bash
# Benchmark: `sifovl seal` against the reference pipeline (fuse2fs -o ro,offset=N +
# mksquashfs upper/ -comp gzip, as SingularityCE's `overlay seal` runs it) and against plain
# mksquashfs of the same tree, on the same generated overlay content (~500 MB, ~20k files),
# same machine, same run. Prints times, ratios, output sizes and peak memory. Needs root
# (fuse2fs mounts) and /dev/fuse. usage: scripts/bench-seal.sh [FILES] [TOTAL_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}; total=${2:-500}
cargo build --release --locked --quiet
bin=$PWD/target/release/sifovl
work=$(mktemp -d "${TMPDIR:-/tmp}/sifovl-bench.XXXXXX")
cleanup() { umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
python3 scripts/gen-tree.py "$work/ovl/upper" "$files" "$total"
mkdir -p "$work/ovl/work" "$work/mnt"
size_mib=$(( total * 2 + 256 ))
truncate -s "${size_mib}M" "$work/overlay.ext3"
mke2fs -q -F -t ext3 -O none,has_journal,ext_attr,resize_inode,dir_index,filetype,sparse_super,large_file \
  -d "$work/ovl" "$work/overlay.ext3"
cp testdata/sample.oci.sif "$work/image.sif"
"$bin" add --from "$work/overlay.ext3" "$work/image.sif" >/dev/null
offset=$("$bin" inspect --json "$work/image.sif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["overlay"]["offset"])')
cat "$work/image.sif" >/dev/null; find "$work/ovl" -type f -exec cat {} + >/dev/null  # warm caches

reference() {
  fuse2fs -o "ro,offset=$offset,uid=0,gid=0" "$work/image.sif" "$work/mnt"
  mksquashfs "$work/mnt/upper" "$work/ref.sqfs" -noappend -quiet -no-progress -comp gzip -wildcards -e '... .wh..opq'
  umount "$work/mnt"
}
export -f reference; export work offset
read -r ref_s ref_m < <(python3 scripts/measure.py bash -c reference)
read -r plain_s plain_m < <(python3 scripts/measure.py mksquashfs "$work/ovl/upper" "$work/plain.sqfs" -noappend -quiet -no-progress -comp gzip)
cp --sparse=always "$work/image.sif" "$work/sealed.sif"
read -r seal_s seal_m < <(python3 scripts/measure.py "$bin" seal --root-owned "$work/sealed.sif")
"$bin" verify "$work/sealed.sif" >/dev/null
ours=$("$bin" inspect --json "$work/sealed.sif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["size"])')
ref_b=$(stat -c %s "$work/ref.sqfs"); plain_b=$(stat -c %s "$work/plain.sqfs")
echo "overlay: $size_mib MiB ext3 holding $files files, $total MB"
printf '%-34s %8s %10s %14s\n' pipeline seconds peak_MiB squashfs_bytes
printf '%-34s %8.2f %10.0f %14d\n' "sifovl seal --root-owned" "$seal_s" "$seal_m" "$ours"
printf '%-34s %8.2f %10.0f %14d\n' "fuse2fs + mksquashfs (reference)" "$ref_s" "$ref_m" "$ref_b"
printf '%-34s %8.2f %10.0f %14d\n' "mksquashfs of the plain tree" "$plain_s" "$plain_m" "$plain_b"
printf 'speed-up over the reference pipeline: %.2fx\n' "$(echo "$ref_s / $seal_s" | bc -l)"
printf 'size versus plain mksquashfs: %+.2f%%\n' "$(echo "($ours - $plain_b) * 100 / $plain_b" | bc -l)"
