#!/usr/bin/env bash
# Benchmark: `sifovl seal` against the reference pipeline (fuse2fs -o ro,offset=N +
# mksquashfs upper/ -comp gzip, as SingularityCE's `overlay seal` runs it) and against plain
# mksquashfs of the same tree, for each corpus of scripts/corpus.sh put as `upper/` of an
# ext3 overlay inside an OCI-SIF; same machine, same run. Prints one markdown table row per
# corpus: times, speed-up, output sizes, peak memory, and the goals of issue 11 it misses
# (speed-up at least 2x over the reference pipeline, output at most plain mksquashfs's, peak
# at most 64 MiB); exits non-zero when any is missed. Needs root (fuse2fs mounts, owners)
# and /dev/fuse.
#
# usage: scripts/bench-seal.sh [CORPUS_DIR]      (default: /var/tmp/sifovl-corpus)
# env:   CORPORA="generated linux-root source" (default; any of corpus.sh's names)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus_dir=${1:-/var/tmp/sifovl-corpus}
read -r -a corpora <<<"${CORPORA:-generated linux-root source}"
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/sifovl
work=$(mktemp -d "${TMPDIR:-/var/tmp}/sifovl-bench.XXXXXX")
cleanup() { umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/mnt"
missed=0

reference() {
  fuse2fs -o "ro,offset=$offset,uid=0,gid=0" "$work/image.sif" "$work/mnt"
  mksquashfs "$work/mnt/upper" "$work/ref.sqfs" -noappend -quiet -no-progress -comp gzip -wildcards -e '... .wh..opq'
  umount "$work/mnt"
}
export -f reference; export work

echo "corpora in $corpus_dir; machine load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
echo
echo "| corpus | overlay | sifovl seal | fuse2fs + mksquashfs | speed-up | mksquashfs of the tree | seal bytes | reference bytes | plain mksquashfs bytes | size vs plain | seal peak | reference peak | goals missed |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for corpus in "${corpora[@]}"; do
  tree=$(scripts/corpus.sh "$corpus_dir" "$corpus" 2>/dev/null)
  rm -rf "$work/ovl" "$work"/*.sif "$work"/*.sqfs "$work/overlay.ext3"
  mkdir -p "$work/ovl/upper" "$work/ovl/work"
  cp -a "$tree/." "$work/ovl/upper/"
  # Room for the content (apparent size: mke2fs -d writes holes as zeros) and its inodes.
  size_mib=$(( $(du -s --apparent-size -BM "$tree" | cut -f1 | tr -d M) * 5 / 4 + 256 ))
  inodes=$(( $(find "$tree" | wc -l) * 2 + 10000 ))
  truncate -s "${size_mib}M" "$work/overlay.ext3"
  mke2fs -q -F -t ext3 -N "$inodes" -O none,has_journal,ext_attr,resize_inode,dir_index,filetype,sparse_super,large_file \
    -d "$work/ovl" "$work/overlay.ext3"
  cp testdata/sample.oci.sif "$work/image.sif"
  "$bin" add --from "$work/overlay.ext3" "$work/image.sif" >/dev/null
  offset=$("$bin" inspect --json "$work/image.sif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["overlay"]["offset"])')
  export offset
  cat "$work/image.sif" >/dev/null; find "$work/ovl" -type f -exec cat {} + >/dev/null  # warm caches
  read -r ref_s ref_m < <(python3 scripts/measure.py bash -c reference)
  read -r plain_s plain_m < <(python3 scripts/measure.py mksquashfs "$work/ovl/upper" "$work/plain.sqfs" -noappend -quiet -no-progress -comp gzip)
  cp --sparse=always "$work/image.sif" "$work/sealed.sif"
  read -r seal_s seal_m < <(python3 scripts/measure.py "$bin" seal --root-owned "$work/sealed.sif")
  "$bin" verify "$work/sealed.sif" >/dev/null
  ours=$("$bin" inspect --json "$work/sealed.sif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["size"])')
  ref_b=$(stat -c %s "$work/ref.sqfs"); plain_b=$(stat -c %s "$work/plain.sqfs")
  speedup=$(python3 -c "print(f'{$ref_s / $seal_s:.2f}')")
  size=$(python3 -c "print(f'{($ours - $plain_b) * 100 / $plain_b:+.2f}')")
  misses=()
  python3 -c "import sys; sys.exit(0 if $speedup >= 2 else 1)" || misses+=("speed < 2x")
  [ "$ours" -le "$plain_b" ] || misses+=("size > mksquashfs")
  python3 -c "import sys; sys.exit(0 if $seal_m <= 64 else 1)" || misses+=("peak > 64 MiB")
  [ ${#misses[@]} -eq 0 ] || missed=1
  printf '| %s | %s MiB | %.2f s | %.2f s | %sx | %.2f s | %s | %s | %s | %s%% | %.0f MiB | %.0f MiB | %s |\n' "$corpus" "$size_mib" \
    "$seal_s" "$ref_s" "$speedup" "$plain_s" "$ours" "$ref_b" "$plain_b" "$size" "$seal_m" "$ref_m" "$(IFS=';'; echo "${misses[*]:-none}")"
done
echo
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $missed
