#!/usr/bin/env bash
# Benchmark: creating overlays with sifovl's own ext3 writer.
#  1. `add --sparse --size 10240` (10 GiB) against one sha256sum pass over a 10 GiB sparse file
#     and `mke2fs -t ext3` of the same size (goal: at most 1.2x the hash pass, SIF sparse);
#  2. `add --from-dir` against `mke2fs -t ext3 -d` on the corpus trees (goal: at least as fast);
#  3. `resize` of a 1 GiB overlay holding 500 MB to 2 GiB and back to 1 GiB, and a shrink
#     of a 2 GiB one whose 500 MB lie past 1.2 GiB (they must move).
# usage: [ONLY=123] scripts/bench-ext-create.sh [CORPUS_DIR]   (ONLY: the parts to run)   (default /work/corpus-squashfs; trees
#        `generated` and `linux-root` from scripts/corpus.sh; missing ones are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-/work/corpus-squashfs}
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/sifovl
work=$(mktemp -d "${TMPDIR:-/tmp}/sifovl-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
t() { python3 scripts/measure.py "$@" | tail -1 | cut -d' ' -f1; }
ratio() { echo "scale=2; ($1) / ($2)" | bc -l; }
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
only=${ONLY:-123}

if [[ $only == *1* ]]; then
# 1. an empty 10 GiB overlay
cp testdata/sample.oci.sif "$work/a.sif"
add=$(t "$bin" add --sparse --size 10240 "$work/a.sif")
alloc=$(du -k "$work/a.sif" | cut -f1)
truncate -s 10G "$work/zero.img"
sha=$(t sha256sum "$work/zero.img")
rm -f "$work/zero.img"; truncate -s 10G "$work/m.img"
mkfs=$(t mke2fs -q -F -t ext3 "$work/m.img"); rm -f "$work/m.img"
# sifovl's own hash pass over the overlay it just added (SHA-NI where the CPU has it).
rehash=$(t "$bin" reconcile --check "$work/a.sif")
printf '10 GiB overlay:  add --sparse %6.2f s (SIF allocates %s KiB)\n' "$add" "$alloc"
printf '                 sha256sum    %6.2f s  add/sha256sum = %s\n' "$sha" "$(ratio "$add" "$sha")"
printf '                 reconcile --check (one sifovl hash pass) %6.2f s  add/that = %s\n' "$rehash" "$(ratio "$add" "$rehash")"
printf '                 mke2fs ext3  %6.2f s (a bare file, no hash, no SIF)\n' "$mkfs"
fi

# 2. --from-dir against mke2fs -d: wall and CPU seconds, and bytes written (the content
#    should be written once). An OCI-SIF overlay also needs its digest: one SHA-256 pass over
#    the overlay's whole size, which a bare `mke2fs -d` does not do; the native SIF (no
#    digest) compares the writers alone, and "mke2fs -d + hash" adds a hash pass of
#    mke2fs's image (`openssl dgst -sha256`, SHA-NI where the CPU has it: what a tool that
#    reads the image to hash it pays) for the like-for-like OCI-SIF figure.
tm() { /usr/bin/time -f '%e %U %S %O' "$@" 2>&1 >/dev/null | tail -1; }
[[ $only == *2* ]] || corpus=/nonexistent
for tree in generated linux-root; do
  src=$corpus/$tree
  [ -d "$src" ] || { echo "$tree: not in $corpus, skipped"; continue; }
  mib=$(( $(du -sm "$src" | cut -f1) * 2 + 256 ))
  find "$src" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
  mkdir -p "$work/ovl/work"; rm -rf "$work/ovl/upper"; cp -a "$src" "$work/ovl/upper"
  for run in 1 2; do
    cp testdata/sample.oci.sif "$work/b.sif"; cp testdata/sample.sif "$work/n.sif"
    read -r ow ou os oo < <(tm "$bin" add --sparse --size "$mib" --from-dir "$src" "$work/b.sif")
    read -r nw nu ns no < <(tm "$bin" add --sparse --size "$mib" --from-dir "$src" "$work/n.sif")
    truncate -s "${mib}M" "$work/m.img"
    read -r mw mu ms mo < <(tm mke2fs -q -F -t ext3 -d "$work/ovl" "$work/m.img")
    read -r hw hu hs _ < <(tm openssl dgst -sha256 "$work/m.img")
    rm -f "$work/m.img" "$work/b.sif" "$work/n.sif"
    printf '%-10s run %s (%s MiB overlay): mke2fs -d %5.2f s wall %5.2f s cpu, wrote %s MB\n' \
      "$tree" "$run" "$mib" "$mw" "$(echo "$mu + $ms" | bc)" "$((mo / 2048))"
    printf '   native SIF add --from-dir %5.2f s wall %5.2f s cpu, wrote %s MB: wall ratio %s, cpu ratio %s\n' \
      "$nw" "$(echo "$nu + $ns" | bc)" "$((no / 2048))" "$(ratio "$nw" "$mw")" "$(ratio "$nu + $ns" "$mu + $ms")"
    printf '   OCI-SIF add --from-dir    %5.2f s wall %5.2f s cpu, wrote %s MB: wall ratio %s (vs mke2fs -d + the hash pass %s; that pass alone %s s)\n' \
      "$ow" "$(echo "$ou + $os" | bc)" "$((oo / 2048))" "$(ratio "$ow" "$mw")" "$(ratio "$ow" "$mw + $hw")" "$hw"
  done
done

if [[ $only == *3* ]]; then
# 3. resize a 1 GiB overlay holding 500 MB: time, and bytes written (wchar), against
#    resize2fs growing the same filesystem (extracted) and cp of the SIF.
wrote() { sh -c '"$@" >/dev/null || exit 3; grep "^wchar:" /proc/$$/io' sh "$@" | awk '{print $2}'; }
python3 scripts/gen-tree.py "$work/t500" 2000 500 >/dev/null
cp testdata/sample.oci.sif "$work/c.sif"
"$bin" add --sparse --size 1024 --from-dir "$work/t500" "$work/c.sif" >/dev/null
read -r off size < <("$bin" inspect --json "$work/c.sif" | python3 -c 'import json,sys; o=json.load(sys.stdin)["overlay"]; print(o["offset"], o["size"])')
dd if="$work/c.sif" of="$work/ov.ext3" iflag=skip_bytes,count_bytes skip="$off" count="$size" conv=sparse status=none
cp --sparse=always "$work/c.sif" "$work/w.sif"
cat "$work/c.sif" "$work/ov.ext3" >/dev/null
grow=$(t "$bin" resize --size 2048 "$work/c.sif")
grow_w=$(wrote "$bin" resize --size 2048 "$work/w.sif")
truncate -s 2G "$work/ov.ext3"
r2fs=$(t resize2fs -f "$work/ov.ext3")
shrink=$(t "$bin" resize --size 1024 "$work/c.sif")
shrink_w=$(wrote "$bin" resize --size 1024 "$work/w.sif")
dd if="$work/c.sif" of=/dev/null bs=4M 2>/dev/null
cp_t=$(t cp --sparse=always "$work/c.sif" "$work/copy.sif"); rm -f "$work/copy.sif"
printf 'resize 1 GiB holding 500 MB: to 2 GiB %6.2f s, %s bytes written (resize2fs of the same filesystem %6.2f s: %sx); back to 1 GiB %6.2f s, %s bytes written; cp of the SIF %6.2f s\n' \
  "$grow" "$grow_w" "$r2fs" "$(ratio "$grow" "$r2fs")" "$shrink" "$shrink_w" "$cp_t"
# A shrink that must move the content: a 2 GiB overlay whose 500 MB lie past 1.2 GiB
# (`mke2fs -d` of a non-zero filler then the tree, the filler deleted with debugfs),
# shrunk to 1 GiB, against resize2fs shrinking the same filesystem.
mkdir -p "$work/spread"; cp -a "$work/t500" "$work/spread/upper"
head -c 1200M /dev/zero | tr '\0' '\7' > "$work/spread/0filler"
truncate -s 2G "$work/sp.ext3"
mke2fs -q -F -t ext3 -d "$work/spread" "$work/sp.ext3"
debugfs -w -R "rm /0filler" "$work/sp.ext3" 2>/dev/null
rm -rf "$work/spread"
cp testdata/sample.oci.sif "$work/s.sif"
"$bin" add --from "$work/sp.ext3" "$work/s.sif" >/dev/null
cp --sparse=always "$work/s.sif" "$work/s2.sif"; cp --sparse=always "$work/s.sif" "$work/s3.sif"
cat "$work/s.sif" >/dev/null
moved=$("$bin" resize --json --size 1024 "$work/s.sif" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["data_bytes"], r["method"])')
cat "$work/s2.sif" >/dev/null
spread_t=$(t "$bin" resize --size 1024 "$work/s2.sif")
rm -f "$work/s.sif" "$work/s2.sif"
spread_w=$(wrote "$bin" resize --size 1024 "$work/s3.sif")
r2fs_s=$(t resize2fs -f "$work/sp.ext3" 1G)
printf 'shrink 2 GiB holding 500 MB past 1.2 GiB to 1 GiB: %6.2f s, moved %s, %s bytes written (resize2fs of the same filesystem %6.2f s: %sx)\n' \
  "$spread_t" "$moved" "$spread_w" "$r2fs_s" "$(ratio "$spread_t" "$r2fs_s")"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
