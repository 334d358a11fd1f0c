#!/usr/bin/env bash
# Build the benchmark corpus set (issue 11) under DIR, each corpus its own directory, and
# print their paths, one a line, in a fixed order (the benchmarks loop over them).
# Idempotent: a corpus is built once into NAME.tmp, renamed to NAME when complete, and kept
# with a stamp (DIR/NAME.stamp, beside it, not inside) that records how it was made; it is
# rebuilt only when that recipe changes. Everything generated is deterministic (seeded).
#
#   generated    scripts/gen-tree.py: 20,000 files, 500 MB of text-like, random and zero data
#   linux-root   a Debian bookworm system made by debootstrap (minbase plus DEBIAN_INCLUDE)
#                from the Debian package registry; where debootstrap cannot run, a copy of
#                this machine's /usr
#   repeat       long-distance repetition: files made of one random 4, 8, 16, 32 or 64 KiB
#                piece repeated (a sampling compressibility test cannot see it)
#   compressed   already-compressed files: .gz, .zst, .xz of text, random .jpg-like files
#   zeros        all-zero files and sparse files (a few data islands in large holes)
#   tiny         100,000 files under 100 bytes
#   bigfile      one large file (BIG_MB, default 2048 MiB, less when the disk is tight) of
#                mixed text, random and zero stretches
#   shapes       deep and wide directories, many hard links, 255-byte names, symlinks,
#                xattrs, varied modes and owners
#   source       a source tree of many small text files: a copy of the cargo registry
#                sources of this machine (~/.cargo/registry/src), else /usr/share/doc
#
# usage: scripts/corpus.sh DIR [NAME...]     (no NAME: all of them)
# env:   BIG_MB (size of bigfile), DEBIAN_INCLUDE (extra packages, comma-separated)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: corpus.sh DIR [NAME...]}
shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
all=(generated linux-root repeat compressed zeros tiny bigfile shapes source)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")

log() { echo "corpus: $*" >&2; }

# Default big-file size: 2 GiB, unless less than 8 times that is free (the benchmarks
# write images of it beside the corpus).
avail_mb=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
big_default=2048
while [ "$big_default" -gt 64 ] && [ $((big_default * 8)) -gt "$avail_mb" ]; do big_default=$((big_default / 2)); done
BIG_MB=${BIG_MB:-$big_default}
DEBIAN_INCLUDE=${DEBIAN_INCLUDE:-perl,python3,git,less,xz-utils,ca-certificates}

# The recipe of a corpus: what its stamp records.
recipe() {
  case $1 in
    repeat|shapes) echo "v2" ;;
    generated) echo "gen-tree.py 20000 500 $(sha256sum "$here/gen-tree.py" | cut -c1-16)" ;;
    linux-root) echo "debootstrap minbase bookworm include=$DEBIAN_INCLUDE, else /usr" ;;
    bigfile) echo "v1 $BIG_MB MiB" ;;
    source) echo "v1 cargo registry src" ;;
    *) echo "v1" ;;
  esac
}

# Python generators of the synthetic corpora: gen NAME OUT_DIR
gen() {
  python3 - "$@" <<'PY'
import os, random, subprocess, sys
name, out = sys.argv[1], sys.argv[2]
big_mb = int(os.environ.get("BIG_MB", "2048"))
rng = random.Random(11)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
pool = []
def text(n):
    """n bytes of text-like data: a slice of a 16 MiB pool of random words and lines."""
    if not pool:
        lines = (b" ".join(rng.choices(words, k=rng.randint(4, 14))) for _ in range(1_500_000))
        pool.append(b"\n".join(lines)[:16 << 20])
    data = pool[0]
    if n > len(data):
        return (data * (n // len(data) + 1))[:n]
    start = rng.randrange(0, len(data) - n + 1)
    return data[start:start + n]
def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

if name == "repeat":
    # 20 files per piece size, 1-4 MiB each (~230 MiB): one random piece repeated,
    # and, every other file, a different random piece per MiB (repetition within 1 MiB).
    for piece_kib in (4, 8, 16, 32, 64):
        for i in range(20):
            size = rng.choice((1, 2, 4)) << 20 if i % 4 else 1 << 20
            if i % 2:
                data = b"".join((rng.randbytes(piece_kib << 10) * ((1 << 20) // (piece_kib << 10)))
                                for _ in range(size >> 20))
            else:
                data = (rng.randbytes(piece_kib << 10) * (size // (piece_kib << 10) + 1))[:size]
            write(f"{out}/p{piece_kib:02d}k/file-{i:02d}.bin", data)
elif name == "compressed":
    tools = {"gz": ["gzip", "-9", "-n", "-c"], "zst": ["zstd", "-19", "-q", "-c"], "xz": ["xz", "-6", "-c"]}
    for i in range(150):
        size = int(min(rng.expovariate(1 / 600_000), 8 << 20)) + 1000
        ext = ("gz", "zst", "xz", "jpg")[i % 4]
        if ext == "jpg":
            # JPEG-like: the SOI/APP0 marker, then entropy-coded (random) data, EOI.
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(size) + b"\xff\xd9"
        else:
            data = subprocess.run(tools[ext], input=text(size * 3), stdout=subprocess.PIPE, check=True).stdout
        write(f"{out}/{ext}/file-{i:03d}.{ext}", data)
elif name == "zeros":
    for i, size in enumerate((1, 100, 4096, 65536, 131072, 131073, 1 << 20, 5 << 20, 64 << 20, 200 << 20)):
        write(f"{out}/zero/z{i:02d}", bytes(size))
    # Sparse files: holes with a few islands of data (text, then random).
    os.makedirs(f"{out}/sparse", exist_ok=True)
    for i, size in enumerate((1 << 20, 10 << 20, 256 << 20, 1 << 30)):
        with open(f"{out}/sparse/s{i}", "wb") as f:
            f.truncate(size)
            for j in range(8):
                f.seek(rng.randrange(0, size - 8192))
                f.write(text(4096) if j % 2 else rng.randbytes(4096))
elif name == "tiny":
    for i in range(100_000):
        n = rng.randint(0, 99)
        data = text(n) if i % 3 else rng.randbytes(n)
        write(f"{out}/d{i // 1000:03d}/f{i:06d}", data)
elif name == "bigfile":
    # Stretches of 1-8 MiB: text (55%), random (35%), zeros (10%).
    noise = rng.randbytes(32 << 20)
    sample = text(16 << 20)
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/big.img", "wb") as f:
        left = big_mb << 20
        while left > 0:
            n = min(rng.randint(1, 8) << 20, left)
            kind = rng.random()
            if kind < 0.55:
                start = rng.randrange(0, len(sample) - n); f.write(sample[start:start + n])
            elif kind < 0.9:
                start = rng.randrange(0, len(noise) - n); f.write(noise[start:start + n])
            else:
                f.write(bytes(n))
            left -= n
elif name == "shapes":
    # Deep: a 120-level chain (names of 20 bytes), a file at each level.
    d = out + "/deep"
    for level in range(120):
        d = os.path.join(d, f"level-{level:03d}-xxxxxxxx")
        write(f"{d}/here.txt", text(200 + level))
    # Wide: 30,000 entries in one directory (small files, symlinks, empty dirs).
    for i in range(30_000):
        p = f"{out}/wide/entry-{i:05d}"
        if i % 10 == 0:
            os.makedirs(p, exist_ok=True)
        elif i % 10 == 1:
            os.makedirs(os.path.dirname(p), exist_ok=True); os.symlink(f"entry-{i - 1:05d}", p)
        else:
            write(p, text(rng.randint(0, 300)))
    # Hard links: 2,000 files of 4 names each, 100 with 50 names.
    for i in range(2_000):
        first = f"{out}/links/a/f{i:04d}"
        write(first, text(rng.randint(10, 20_000)))
        for k in range(3):
            os.makedirs(f"{out}/links/{'bcd'[k]}", exist_ok=True)
            os.link(first, f"{out}/links/{'bcd'[k]}/f{i:04d}")
    for i in range(100):
        first = f"{out}/links/many/f{i:03d}-0"
        write(first, rng.randbytes(rng.randint(1, 30_000)))
        for k in range(1, 50):
            os.link(first, f"{out}/links/many/f{i:03d}-{k}")
    # Long names: 255 bytes, some of them UTF-8.
    for i in range(500):
        stem = f"{i:03d}-" + ("ü" * 60 if i % 2 else "n" * 100)
        name = (stem + "x" * 255)[:255] if i % 2 == 0 else stem + "y" * (255 - len(stem.encode()))
        write(f"{out}/long/{name}", text(i * 10))
    # Modes, owners, xattrs.
    for i in range(1_000):
        p = f"{out}/meta/f{i:04d}"
        write(p, text(i))
        os.chmod(p, (0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777, 0o400)[i % 7])
        os.chown(p, i % 13 * 1000, i % 7 * 1000)
        if i % 3 == 0:
            os.setxattr(p, "user.sifovl.corpus", f"value {i}".encode())
        if i % 9 == 0:
            os.setxattr(p, "user.sifovl.big", bytes(rng.randrange(256) for _ in range(600)))
else:
    sys.exit(f"no generator for {name}")
PY
}

build() {
  local name=$1 tmp=$2
  case $name in
    generated) python3 "$here/gen-tree.py" "$tmp" 20000 500 >&2 ;;
    linux-root)
      if command -v debootstrap >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -qq debootstrap >/dev/null 2>&1; }; then
        if debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" bookworm "$tmp" http://deb.debian.org/debian >"$dir/$name.log" 2>&1; then
          return 0
        fi
        log "debootstrap failed (see $dir/$name.log); copying /usr instead"
      fi
      rm -rf "$tmp"; mkdir -p "$tmp"
      cp -a /usr "$tmp/usr"
      echo "copy of /usr" >"$dir/$name.log" ;;
    source)
      mkdir -p "$tmp"
      if [ -d "$HOME/.cargo/registry/src" ]; then cp -a "$HOME/.cargo/registry/src/." "$tmp/"
      else cp -a /usr/share/doc/. "$tmp/"; fi ;;
    *) gen "$name" "$tmp" ;;
  esac
}

for name in "${names[@]}"; do
  case " ${all[*]} " in *" $name "*) ;; *) echo "corpus.sh: no corpus named $name (${all[*]})" >&2; exit 2 ;; esac
  want=$(recipe "$name")
  if [ -d "$dir/$name" ] && [ "$(cat "$dir/$name.stamp" 2>/dev/null)" = "$want" ]; then
    log "$name: cached"
  else
    log "$name: building ($want)"
    rm -rf "${dir:?}/$name" "$dir/$name.tmp"
    BIG_MB=$BIG_MB build "$name" "$dir/$name.tmp"
    mv "$dir/$name.tmp" "$dir/$name"
    echo "$want" >"$dir/$name.stamp"
    log "$name: $(du -sh --apparent-size "$dir/$name" | cut -f1), $(find "$dir/$name" | wc -l) entries"
  fi
  echo "$dir/$name"
done
