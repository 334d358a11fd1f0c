#!/usr/bin/env bash
# Benchmark: sifovl's squashfs writer against mksquashfs on the same generated tree
# (~500 MB, ~20k files), same block size, both on all cores, measured in the same run.
# Prints time ratio, size ratio and peak memory for gzip, zstd level 3 and zstd level 15.
# usage: scripts/bench-squashfs.sh [FILES] [TOTAL_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}; total=${2:-500}
cargo build --release --locked --quiet
bin=$PWD/target/release/sifovl
# Outputs on tmpfs when there is one, so the disk's write-back does not time the run.
work=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/sifovl-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 scripts/gen-tree.py "$work/tree" "$files" "$total"
cat $(find "$work/tree" -type f | head -0) /dev/null >/dev/null
find "$work/tree" -type f -exec cat {} + >/dev/null   # warm the page cache
printf '%-10s %10s %10s %8s %12s %12s %8s %10s %10s\n' codec sifovl_s mksq_s speedup sifovl_bytes mksq_bytes size% sifovl_MiB mksq_MiB
for codec in gzip zstd:3 zstd:15; do
  name=${codec%%:*}; level=${codec#*:}
  mk_opts=(-comp "$name")
  [ "$name" = zstd ] && mk_opts+=(-Xcompression-level "$level")
  read -r ms mm < <(python3 scripts/measure.py mksquashfs "$work/tree" "$work/ref.sqfs" -noappend -quiet -no-progress -b 131072 "${mk_opts[@]}")
  read -r os om < <(python3 scripts/measure.py "$bin" mksquashfs --compression "$codec" "$work/tree" "$work/ours.sqfs")
  ob=$(stat -c %s "$work/ours.sqfs"); mb=$(stat -c %s "$work/ref.sqfs")
  printf '%-10s %10.2f %10.2f %7.2fx %12d %12d %7.2f%% %10.0f %10.0f\n' "$codec" "$os" "$ms" \
    "$(echo "$ms / $os" | bc -l)" "$ob" "$mb" "$(echo "($ob - $mb) * 100 / $mb" | bc -l)" "$om" "$mm"
  sqfsdiff --old "$work/ref.sqfs" --new "$work/ours.sqfs" >/dev/null || echo "  (sqfsdiff reports differences!)"
done
