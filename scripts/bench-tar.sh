#!/usr/bin/env bash
# Benchmark: writing a tar layer with sifovl (gzip level 6 and zstd level 3, digests and
# diff_id computed in the same pass) against `tar | gzip -6` and `tar | zstd -3 -T2` of the
# same generated tree (~500 MB, ~20k files), in the same run.
# usage: scripts/bench-tar.sh [FILES] [TOTAL_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}; total=${2:-500}
cargo build --release --locked --quiet
bin=$PWD/target/release/sifovl
# Outputs on tmpfs when there is one, so the disk's write-back does not time the run.
work=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/sifovl-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 scripts/gen-tree.py "$work/tree" "$files" "$total" >/dev/null
find "$work/tree" -type f -exec cat {} + >/dev/null
export work
read -r gz_ref _ < <(python3 scripts/measure.py bash -c 'tar -C "$work/tree" -cf - . | gzip -6 > "$work/ref.tgz"')
read -r zs_ref _ < <(python3 scripts/measure.py bash -c 'tar -C "$work/tree" -cf - . | zstd -3 -T2 -q > "$work/ref.tzst"')
read -r gz_ours gz_mem < <(python3 scripts/measure.py "$bin" mktar --compression gzip:6 "$work/tree" "$work/ours.tgz")
read -r zs_ours zs_mem < <(python3 scripts/measure.py "$bin" mktar --compression zstd:3 "$work/tree" "$work/ours.tzst")
printf '%-8s %10s %12s %8s %14s %14s\n' codec sifovl_s reference_s ratio sifovl_bytes reference_bytes
printf '%-8s %10.2f %12.2f %7.2fx %14d %14d\n' gzip:6 "$gz_ours" "$gz_ref" "$(echo "$gz_ref / $gz_ours" | bc -l)" "$(stat -c %s "$work/ours.tgz")" "$(stat -c %s "$work/ref.tgz")"
printf '%-8s %10.2f %12.2f %7.2fx %14d %14d\n' zstd:3 "$zs_ours" "$zs_ref" "$(echo "$zs_ref / $zs_ours" | bc -l)" "$(stat -c %s "$work/ours.tzst")" "$(stat -c %s "$work/ref.tzst")"
echo "(sifovl also computed digest, diff_id and size in the same pass; peak memory gzip ${gz_mem} MiB, zstd ${zs_mem} MiB)"
