#!/usr/bin/env bash
# Benchmark: `sifovl mksquashfs` against mksquashfs over the corpus set (scripts/corpus.sh)
# and every codec, both tools on all cores, same block size (128 KiB), measured in the same
# run, runs alternating, best of RUNS. For each corpus and codec it prints one markdown
# table row: times, speed-up, sizes, size difference, peak memory (scripts/measure.py), and
# the goals of issue 11 the row misses. Checks too, unless CHECK=0: `unsquashfs` extraction
# of sifovl's gzip image equals the corpus (content, type, mode, owner, times, xattrs, hard
# link groups, symlink targets), and `sqfsdiff` finds no difference between the two images
# of every codec. Exits non-zero when any goal is missed or any check fails.
#
# Goals: size at most mksquashfs's + 0.5% (gzip: at most mksquashfs's); speed-up at least
# 2x for gzip and zstd:3, 1.3x for zstd:15 and xz (lz4: none); peak memory at most 64 MiB.
#
# usage: scripts/bench-squashfs.sh [CORPUS_DIR]    (default: /var/tmp/sifovl-corpus)
# env:   CORPORA="generated repeat ..." (default: all of corpus.sh's), CODECS="gzip zstd:3
#        zstd:15 xz lz4" (default), RUNS=3, SLOW_RUNS=1 (runs for zstd:15 and xz), CHECK=1
set -euo pipefail
cd "$(dirname "$0")/.."
corpus_dir=${1:-/var/tmp/sifovl-corpus}
read -r -a corpora <<<"${CORPORA:-generated linux-root repeat compressed zeros tiny bigfile shapes source}"
read -r -a codecs <<<"${CODECS:-gzip zstd:3 zstd:15 xz lz4}"
runs=${RUNS:-3}; slow_runs=${SLOW_RUNS:-1}; check=${CHECK:-1}
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/sifovl
# Images on tmpfs when there is one, so the disk's write-back does not time the run;
# extractions (large) on disk.
work=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/sifovl-bench.XXXXXX")
scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/sifovl-bench-x.XXXXXX")
trap 'rm -rf "$work" "$scratch"' EXIT
missed=0

# Compare two trees: every entry's type, mode, owner, mtime, size, content digest, symlink
# target, device number, xattrs, and the grouping of hard links. Prints differences and
# exits 1 when there are any.
treecmp() {
  python3 - "$1" "$2" <<'PY'
import hashlib, os, stat, sys
def walk(root):
    out, groups = {}, {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n); rel = os.path.relpath(p, root); st = os.lstat(p)
            m = st.st_mode
            rec = [stat.S_IFMT(m), stat.S_IMODE(m), st.st_uid, st.st_gid, int(st.st_mtime)]
            if stat.S_ISREG(m):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                rec += [st.st_size, h.hexdigest()]
                if st.st_nlink > 1:
                    groups.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(m):
                rec.append(os.readlink(p))
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                rec.append(st.st_rdev)
            try:
                names = sorted(os.listxattr(p, follow_symlinks=False))
                rec.append([(x, os.getxattr(p, x, follow_symlinks=False)) for x in names])
            except OSError:
                rec.append(None)
            out[rel] = rec
    links = sorted(sorted(g) for g in groups.values())
    return out, links
(a, la), (b, lb) = walk(sys.argv[1]), walk(sys.argv[2])
bad = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
for k in bad[:10]:
    print(f"  differs: {k}: {a.get(k)} vs {b.get(k)}")
if la != lb:
    print(f"  hard link groups differ ({len(la)} vs {len(lb)})"); bad.append("links")
print(f"  checked {len(a)} entries, {len(la)} hard link groups: {'OK' if not bad else 'DIFFERENT'}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# `goal VALUE OP LIMIT` is true when VALUE OP LIMIT holds (floating point).
goal() { python3 -c "import sys; v, op, l = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]); sys.exit(0 if (v <= l if op == 'le' else v >= l) else 1)" "$@"; }

echo "corpora in $corpus_dir; machine load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
for corpus in "${corpora[@]}"; do
  tree=$(scripts/corpus.sh "$corpus_dir" "$corpus" 2>/dev/null)
  find "$tree" -type f -exec cat {} + >/dev/null   # warm the page cache
  echo
  echo "### $corpus: $(du -s --apparent-size -BM "$tree" | cut -f1)B apparent, $(find "$tree" | wc -l) entries"
  echo
  echo "| codec | sifovl | mksquashfs | speed-up | sifovl bytes | mksquashfs bytes | size | sifovl peak | mksquashfs peak | goals missed |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for codec in "${codecs[@]}"; do
    name=${codec%%:*}; level=${codec#*:}
    mk_opts=(-comp "$name")
    [ "$name" = zstd ] && mk_opts+=(-Xcompression-level "$level")
    n=$runs; case $codec in zstd:15|xz) n=$slow_runs ;; esac
    best_o=; best_m=; peak_o=0; peak_m=0
    for _ in $(seq "$n"); do
      rm -f "$work/ref.sqfs" "$work/ours.sqfs"
      read -r ms mm < <(python3 scripts/measure.py mksquashfs "$tree" "$work/ref.sqfs" -noappend -quiet -no-progress -b 131072 "${mk_opts[@]}")
      read -r os om < <(python3 scripts/measure.py "$bin" mksquashfs --compression "$codec" "$tree" "$work/ours.sqfs")
      best_m=$(python3 -c "print(min(float(x) for x in '$ms ${best_m:-$ms}'.split()))")
      best_o=$(python3 -c "print(min(float(x) for x in '$os ${best_o:-$os}'.split()))")
      peak_m=$(python3 -c "print(max($mm, $peak_m))"); peak_o=$(python3 -c "print(max($om, $peak_o))")
    done
    ob=$(stat -c %s "$work/ours.sqfs"); mb=$(stat -c %s "$work/ref.sqfs")
    speedup=$(python3 -c "print(f'{$best_m / $best_o:.2f}')")
    size=$(python3 -c "print(f'{($ob - $mb) * 100 / $mb:+.2f}')")
    misses=()
    if [ "$name" = gzip ]; then goal "$ob" le "$mb" || misses+=("size > mksquashfs")
    else goal "$size" le 0.5 || misses+=("size > +0.5%"); fi
    case $codec in
      gzip|zstd:3) goal "$speedup" ge 2 || misses+=("speed < 2x") ;;
      zstd:15|xz) goal "$speedup" ge 1.3 || misses+=("speed < 1.3x") ;;
    esac
    goal "$peak_o" le 64 || misses+=("peak > 64 MiB")
    if [ "$check" = 1 ]; then
      sqfsdiff --timestamps --old "$work/ref.sqfs" --new "$work/ours.sqfs" >"$scratch/sqfsdiff.txt" 2>&1 \
        || misses+=("sqfsdiff: $(head -c 200 "$scratch/sqfsdiff.txt" | tr '\n' ' ')")
      if [ "$codec" = "${codecs[0]}" ]; then
        rm -rf "$scratch/out"
        if unsquashfs -quiet -no-progress -d "$scratch/out" "$work/ours.sqfs" >/dev/null 2>"$scratch/unsquashfs.txt"; then
          treecmp "$tree" "$scratch/out" >"$scratch/treecmp.txt" || misses+=("extraction differs: $(head -c 300 "$scratch/treecmp.txt" | tr '\n' ' ')")
        else
          misses+=("unsquashfs failed: $(head -c 200 "$scratch/unsquashfs.txt" | tr '\n' ' ')")
        fi
        rm -rf "$scratch/out"
      fi
    fi
    [ ${#misses[@]} -eq 0 ] || missed=1
    printf '| %s | %.2f s | %.2f s | %sx | %s | %s | %s%% | %.0f MiB | %.0f MiB | %s |\n' "$codec" "$best_o" "$best_m" \
      "$speedup" "$ob" "$mb" "$size" "$peak_o" "$peak_m" "$(IFS=';'; echo "${misses[*]:-none}")"
  done
done
echo
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $missed
