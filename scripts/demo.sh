#!/usr/bin/env bash
# Build sifovl and run the main job on the bundled sample image: add a writable overlay,
# simulate a `--writable` run that changes it, reconcile the OCI digests, verify, seal.
# Works on a copy in a temporary directory; testdata/ is never modified.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/sifovl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp testdata/sample.oci.sif "$work/image.oci.sif"
img=$work/image.oci.sif

step() { printf '\n== %s\n' "$*"; }

step "the sample image"
"$bin" list "$img"
"$bin" inspect "$img"

step "add a 64 MiB ext3 overlay (sparse, with /data inside upper/)"
"$bin" add --sparse --create-dir /data "$img"
"$bin" inspect "$img"

step "simulate a --writable run: write a file into the overlay in place"
offset=$("$bin" inspect --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["overlay"]["offset"])')
size=$("$bin" inspect --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["overlay"]["size"])')
dd if="$img" of="$work/overlay.img" bs=4096 iflag=skip_bytes,count_bytes skip="$offset" count="$size" status=none
echo "results of the job" > "$work/result.txt"
debugfs -w -R "write $work/result.txt /upper/data/result.txt" "$work/overlay.img" >/dev/null 2>&1
dd if="$work/overlay.img" of="$img" bs=4096 oflag=seek_bytes seek="$offset" conv=notrunc,sparse status=none

step "the OCI digests are now stale"
"$bin" reconcile --check "$img" || echo "(exit $?: out of sync, as expected)"

step "reconcile: rehash only the overlay, rewrite the small JSON blobs in place"
"$bin" reconcile "$img"
"$bin" reconcile --check "$img"
"$bin" verify "$img"

step "seal: the overlay becomes a read-only squashfs layer"
"$bin" seal "$img"
"$bin" verify "$img"
"$bin" inspect "$img"

step "what the sealed layer holds (read in place, no mount)"
"$bin" ls --layer 1 "$img"

step "export as an image Docker and Podman run (tar layers), then import it back squashed"
"$bin" export --layer-format tar "$img" "oci-archive:$work/image.tar"
"$bin" import "oci-archive:$work/image.tar" "$work/reimported.oci.sif"
"$bin" verify "$work/reimported.oci.sif"
"$bin" ls "$work/reimported.oci.sif"
echo
echo "demo finished: all steps succeeded"
