#!/usr/bin/env bash
# Benchmark: reconcile a changed 1 GiB overlay, against `openssl dgst -sha256` of the same
# bytes measured in the same run (both with a warm page cache). Prints the time ratio and
# the bytes sifovl wrote into the image. Usage: scripts/bench-reconcile.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
cargo build --release --locked --quiet
bin=$PWD/target/release/sifovl
work=$(mktemp -d "${TMPDIR:-/tmp}/sifovl-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
img=$work/image.oci.sif
cp testdata/sample.oci.sif "$img"
"$bin" add --size "$size_mib" "$img" >/dev/null
read -r offset size < <("$bin" inspect --json "$img" | python3 -c 'import json,sys; o=json.load(sys.stdin)["overlay"]; print(o["offset"], o["size"])')
# Fill the overlay's data area with random bytes past the first MiB (superblock and group
# descriptors stay intact), as a long --writable job would.
head -c $(( (size_mib - 2) << 20 )) /dev/urandom | dd of="$img" bs=1M oflag=seek_bytes seek=$((offset + (1 << 20))) conv=notrunc status=none
dd if="$img" of="$work/overlay.bytes" bs=4M iflag=skip_bytes,count_bytes skip="$offset" count="$size" status=none
cat "$img" "$work/overlay.bytes" >/dev/null   # warm the page cache for both

best() { # best of 3 wall-clock seconds of a command
  local best=
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    local t; t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  echo "$best"
}
openssl_s=$(best openssl dgst -sha256 "$work/overlay.bytes")
# Each reconcile run needs a changed overlay: flip one byte back and forth between runs.
reconcile_once() {
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); at = int(sys.argv[2]); os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xff]), at)' \
    "$img" $((offset + size - 1))
  local t0 t1
  t0=$(date +%s.%N); "$bin" reconcile --json "$img" >"$work/report.json"; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
best_r=
for _ in 1 2 3; do
  t=$(reconcile_once)
  if [ -z "$best_r" ] || (( $(echo "$t < $best_r" | bc -l) )); then best_r=$t; fi
done
written=$(python3 -c 'import json; print(json.load(open("'"$work/report.json"'"))["bytes_written"])')
"$bin" verify "$img" >/dev/null
printf 'overlay: %d MiB\n' "$size_mib"
printf 'openssl dgst -sha256: %.3f s\n' "$openssl_s"
printf 'sifovl reconcile:     %.3f s\n' "$best_r"
printf 'ratio (sifovl / openssl): %.3f\n' "$(echo "$best_r / $openssl_s" | bc -l)"
printf 'bytes written into the image by the last reconcile: %s\n' "$written"
