#![no_main]
//! Structure-aware squashfs: valid images with superblock, inode, directory header and
//! entry, fragment, id and xattr table fields set or nudged by the input, where random bytes
//! rarely get past the superblock and the compressed metadata. Opening, walking the whole
//! tree and reading every file and its xattrs must not panic, must fail in one line and must
//! stay bounded; on the OCI-SIF base, so must `ls`, `diff` and `cat`.
//!
//! Bases (byte 0 of the input picks one):
//! 0. our writer's image (4 KiB blocks) of a tree with fragments, a directory of several
//!    metadata blocks, xattrs, hard links, symlinks, devices, a file of several blocks and a
//!    sparse file; its metadata re-laid out uncompressed (see `uncompress_metadata`), so
//!    every inode and entry is at a fixed position;
//! 1. `mksquashfs -noI -noD -noF -noX` of a like tree, `fuzz/seeds/squashfs-mksquashfs.sqfs`
//!    (made by `fuzz/make-fields-seeds.py`);
//! 2. the gzip layer of `testdata/sample.oci.sif`, in that SIF (compressed metadata: only
//!    the superblock and the tables' pointers are fields), for the commands.
//!
//! Then 12-byte records, see `fields/mod.rs`.
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{Entry, EntryKind, EntrySink, EntrySource, Metadata, Xattr};
use sifovl::fs::squashfs::{Compression, SquashfsReader, SquashfsWriter, WriterOptions};
use sifovl::ops::{browse, view};

#[path = "fields/mod.rs"]
mod fields;
use fields::{Base, Class, Field};

const OCI_SIF: &[u8] = include_bytes!("../../testdata/sample.oci.sif");
const MKSQUASHFS_SEED: &[u8] = include_bytes!("../seeds/squashfs-mksquashfs.sqfs");
const NO_TABLE: u64 = u64::MAX;
const NO_FRAGMENT: u64 = 0xFFFF_FFFF;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u8)
                .wrapping_mul(7)
                .wrapping_add(seed)
                .wrapping_add((i >> 10) as u8)
        })
        .collect()
}

fn ours() -> Vec<u8> {
    let meta = |xattrs: &[(&str, Vec<u8>)]| Metadata {
        permissions: 0o644,
        uid: 1000,
        gid: 100,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        xattrs: xattrs
            .iter()
            .map(|(n, v)| Xattr {
                name: n.as_bytes().to_vec(),
                value: v.clone(),
            })
            .collect(),
    };
    let mut entries: Vec<(Entry, Vec<u8>)> = Vec::new();
    let mut add = |path: &str, kind: EntryKind, xattrs: &[(&str, Vec<u8>)], content: Vec<u8>| {
        entries.push((
            Entry {
                path: path.as_bytes().to_vec(),
                kind,
                metadata: meta(xattrs),
            },
            content,
        ));
    };
    let file = |content: &Vec<u8>| EntryKind::File {
        size: content.len() as u64,
    };
    add("", EntryKind::Directory, &[], vec![]);
    let small = b"hello\n".repeat(17);
    add(
        "small",
        file(&small),
        &[("user.inline", b"v1".to_vec())],
        small,
    );
    let big = pattern(5 * 4096 + 1000, 1);
    add(
        "big",
        file(&big),
        &[
            ("user.big", pattern(300, 5)),
            ("trusted.second", vec![b'x'; 20]),
        ],
        big,
    );
    let mut sparse = vec![0u8; 6 * 4096];
    sparse[2 * 4096..2 * 4096 + 6].copy_from_slice(b"middle");
    add("sparse", file(&sparse), &[], sparse);
    add(
        "hardlink",
        EntryKind::HardLink {
            target: b"small".to_vec(),
        },
        &[("user.inline", b"v1".to_vec())],
        vec![],
    );
    add(
        "longlink",
        EntryKind::Symlink {
            target: [vec![b't'; 100], b"/target".to_vec()].concat(),
        },
        &[],
        vec![],
    );
    add(
        "link",
        EntryKind::Symlink {
            target: b"small".to_vec(),
        },
        &[],
        vec![],
    );
    add(
        "chardev",
        EntryKind::CharDevice { major: 1, minor: 3 },
        &[],
        vec![],
    );
    add(
        "blockdev",
        EntryKind::BlockDevice {
            major: 8,
            minor: 300,
        },
        &[],
        vec![],
    );
    add("fifo", EntryKind::Fifo, &[], vec![]);
    add("socket", EntryKind::Socket, &[], vec![]);
    add(
        "bigdir",
        EntryKind::Directory,
        &[("trusted.overlay.opaque", b"y".to_vec())],
        vec![],
    );
    for i in 0..200 {
        let content = format!("{i}").into_bytes();
        add(
            &format!("bigdir/entry-with-a-rather-long-name-to-fill-blocks-{i:03}"),
            file(&content),
            &[],
            content,
        );
    }
    let file = tempfile::tempfile().expect("temp file");
    let options = WriterOptions {
        compression: Compression::Gzip { level: 1 },
        block_size: 4096,
        mkfs_time: Some(0),
        threads: 1,
    };
    let mut writer = SquashfsWriter::new(&file, 0, options).expect("writer");
    for (e, content) in &entries {
        writer
            .add_entry(e, Some(&mut &content[..]))
            .expect("add_entry");
    }
    let len = writer.finish().expect("finish");
    let mut image = vec![0u8; len as usize];
    file.read_exact_at(&mut image, 0).expect("read");
    image
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes(s.try_into().unwrap()) as u64)
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()) as u64)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// A metadata table read from the image: its uncompressed bytes, where each lies in the
/// image (when its block is stored uncompressed) and where each block begins in both.
#[derive(Default)]
struct Meta {
    stream: Vec<u8>,
    pos: Vec<Option<u64>>,
    /// Block position relative to the table start -> its first byte in `stream`.
    starts: HashMap<u64, usize>,
    /// Each block: (position relative to the table start, stream range).
    blocks: Vec<(u64, std::ops::Range<usize>)>,
}

impl Meta {
    fn read(img: &[u8], start: u64, end: u64) -> Meta {
        let mut m = Meta::default();
        let mut at = start as usize;
        while at + 2 <= (end as usize).min(img.len()) {
            let header = u16_at(img, at) as usize;
            let len = header & 0x7fff;
            let body = img.get(at + 2..at + 2 + len).unwrap_or(&[]);
            let first = m.stream.len();
            m.starts.insert((at as u64) - start, first);
            if header & 0x8000 != 0 {
                m.stream.extend_from_slice(body);
                m.pos
                    .extend((0..body.len()).map(|i| Some((at + 2 + i) as u64)));
            } else {
                let mut out = Vec::new();
                if flate2::read::ZlibDecoder::new(body)
                    .read_to_end(&mut out)
                    .is_err()
                {
                    break;
                }
                m.pos.extend(std::iter::repeat_n(None, out.len()));
                m.stream.extend_from_slice(&out);
            }
            m.blocks.push(((at as u64) - start, first..m.stream.len()));
            at += 2 + len;
        }
        m
    }

    /// The field of `width` bytes at stream index `i`, if its bytes are in the image as such.
    fn field(&self, i: usize, width: usize) -> Option<Field> {
        let bytes: Option<Vec<u64>> = self.pos.get(i..i + width)?.iter().copied().collect();
        Some(Field {
            bytes: bytes?,
            big_endian: false,
        })
    }

    fn fields(&self, i: usize, list: &[(usize, usize)]) -> Vec<Field> {
        list.iter()
            .filter_map(|&(o, w)| self.field(i + o, w))
            .collect()
    }

    fn u16(&self, i: usize) -> u64 {
        u16_at(&self.stream, i)
    }

    fn u32(&self, i: usize) -> u64 {
        u32_at(&self.stream, i)
    }

    fn u64(&self, i: usize) -> u64 {
        u64_at(&self.stream, i)
    }

    /// Stream index of the reference (block, offset) into this table.
    fn at_ref(&self, block: u64, offset: u64) -> Option<usize> {
        self.starts.get(&block).map(|s| s + offset as usize)
    }
}

/// The table positions of a superblock, and where each metadata region ends.
struct Tables {
    block_size: u64,
    root: u64,
    inodes: u64,
    dirs: u64,
    frags: u64,
    export: u64,
    ids: u64,
    xattrs: u64,
    /// Every start of a region, to find where the one before it ends.
    starts: Vec<u64>,
}

impl Tables {
    fn of(img: &[u8]) -> Tables {
        let t = |o| u64_at(img, o);
        let mut starts = vec![t(40), t(64), t(72)];
        for o in [48, 56, 80, 88] {
            let table = t(o);
            if table != NO_TABLE && (table as usize) < img.len() {
                starts.push(table);
                // The first metadata block of a lookup table (of the xattr table: the
                // key/value blocks, whose start heads it).
                starts.push(u64_at(img, table as usize));
            }
        }
        Tables {
            block_size: u32_at(img, 12),
            root: t(32),
            inodes: t(64),
            dirs: t(72),
            frags: t(80),
            export: t(88),
            ids: t(48),
            xattrs: t(56),
            starts,
        }
    }

    fn end_of(&self, start: u64) -> u64 {
        self.starts
            .iter()
            .copied()
            .filter(|&s| s > start)
            .min()
            .unwrap_or(start)
    }
}

/// The inode at stream index `i`: its fields, its length, and (for a directory) where its
/// listing is (dir-table block, offset, size).
fn inode(
    m: &Meta,
    i: usize,
    block_size: u64,
) -> Option<(Vec<Field>, usize, Option<(u64, u64, u64)>)> {
    let kind = m.u16(i);
    let common = [(0, 2), (2, 2), (4, 2), (6, 2), (8, 4), (12, 4)];
    let mut f = m.fields(i, &common);
    let blocks = |size: u64, fragment: u64| {
        let full = size / block_size.max(1);
        if fragment == NO_FRAGMENT && size % block_size.max(1) != 0 {
            full + 1
        } else {
            full
        }
    };
    let size_list = |f: &mut Vec<Field>, at: usize, n: u64| {
        for k in [0, 1, n.saturating_sub(1)] {
            if k < n {
                f.extend(m.field(at + 4 * k as usize, 4));
            }
        }
    };
    let (len, dir) = match kind {
        1 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4), (24, 2), (26, 2), (28, 4)]));
            (32, Some((m.u32(i + 16), m.u16(i + 26), m.u16(i + 24))))
        }
        8 => {
            f.extend(m.fields(
                i,
                &[
                    (16, 4),
                    (20, 4),
                    (24, 4),
                    (28, 4),
                    (32, 2),
                    (34, 2),
                    (36, 4),
                ],
            ));
            let count = m.u16(i + 32) as usize;
            let mut at = i + 40;
            for k in 0..count {
                if k < 2 {
                    f.extend(m.fields(at, &[(0, 4), (4, 4), (8, 4)]));
                }
                at += 12 + m.u32(at + 8) as usize + 1;
            }
            (at - i, Some((m.u32(i + 24), m.u16(i + 34), m.u32(i + 20))))
        }
        2 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4), (24, 4), (28, 4)]));
            let n = blocks(m.u32(i + 28), m.u32(i + 20));
            size_list(&mut f, i + 32, n);
            (32 + 4 * n as usize, None)
        }
        9 => {
            f.extend(m.fields(
                i,
                &[
                    (16, 8),
                    (24, 8),
                    (32, 8),
                    (40, 4),
                    (44, 4),
                    (48, 4),
                    (52, 4),
                ],
            ));
            let n = blocks(m.u64(i + 24), m.u32(i + 44));
            size_list(&mut f, i + 56, n);
            (56 + 4 * n as usize, None)
        }
        3 | 10 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4)]));
            let target = m.u32(i + 20) as usize;
            if kind == 10 {
                f.extend(m.field(i + 24 + target, 4));
                (28 + target, None)
            } else {
                (24 + target, None)
            }
        }
        4 | 5 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4)]));
            (24, None)
        }
        11 | 12 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4), (24, 4)]));
            (28, None)
        }
        6 | 7 => {
            f.extend(m.fields(i, &[(16, 4)]));
            (20, None)
        }
        13 | 14 => {
            f.extend(m.fields(i, &[(16, 4), (20, 4)]));
            (24, None)
        }
        _ => return None,
    };
    Some((f, len, dir))
}

/// The objects of a valid squashfs image.
fn classes(img: &[u8]) -> Vec<Class> {
    let t = Tables::of(img);
    let sb_fields = [
        (4, 4),
        (12, 4),
        (16, 4),
        (20, 2),
        (22, 2),
        (24, 2),
        (26, 2),
        (28, 2),
        (32, 8),
        (32, 2),
        (34, 4),
        (40, 8),
        (48, 8),
        (56, 8),
        (64, 8),
        (72, 8),
        (80, 8),
        (88, 8),
    ];
    let sb = sb_fields.iter().map(|&(o, w)| Field::le(o, w)).collect();
    let inodes = Meta::read(img, t.inodes, t.end_of(t.inodes));
    let dirs = Meta::read(img, t.dirs, t.end_of(t.dirs));

    // Directory listings, followed from the root; inodes found through their entries.
    let mut inode_objects = Vec::new();
    let mut headers = Vec::new();
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue = vec![inodes.at_ref(t.root >> 16, t.root & 0xffff)];
    while let Some(Some(i)) = queue.pop() {
        if !seen.insert(i) || seen.len() > 2000 {
            continue;
        }
        let Some((f, _, dir)) = inode(&inodes, i, t.block_size) else {
            continue;
        };
        inode_objects.push(f);
        let Some((block, offset, size)) = dir else {
            continue;
        };
        let Some(mut d) = dirs.at_ref(block, offset) else {
            continue;
        };
        let end = d + size.saturating_sub(3) as usize;
        while d + 12 <= end {
            headers.push(dirs.fields(d, &[(0, 4), (4, 4), (8, 4)]));
            let (count, start) = (dirs.u32(d) + 1, dirs.u32(d + 4));
            d += 12;
            for _ in 0..count.min(256) {
                if d + 8 > end {
                    break;
                }
                entries.push(dirs.fields(d, &[(0, 2), (2, 2), (4, 2), (6, 2)]));
                queue.push(inodes.at_ref(start, dirs.u16(d)));
                d += 8 + dirs.u16(d + 6) as usize + 1;
            }
        }
    }

    // Lookup tables: their pointers, and the entries of their first block.
    let lookup = |table: u64,
                  entry: usize,
                  fields: &[(usize, usize)]|
     -> (Vec<Vec<Field>>, Vec<Vec<Field>>) {
        if table == NO_TABLE || table as usize + 8 > img.len() {
            return (vec![], vec![]);
        }
        let first = u64_at(img, table as usize);
        let pointers = (0..t.end_of(table).saturating_sub(table).min(64) / 8)
            .map(|k| vec![Field::le(table + 8 * k, 8)])
            .collect();
        let m = Meta::read(img, first, table);
        let objects = (0..m.stream.len() / entry)
            .take(64)
            .map(|k| m.fields(k * entry, fields))
            .collect();
        (pointers, objects)
    };
    let (mut pointers, fragments) = lookup(t.frags, 16, &[(0, 8), (8, 4), (12, 4)]);
    let (p, ids) = lookup(t.ids, 4, &[(0, 4)]);
    pointers.extend(p);
    let (p, _) = lookup(t.export, 8, &[(0, 8)]);
    pointers.extend(p);

    // Xattrs: the id table's header and entries, and the key/value pairs.
    let mut xattr_ids = Vec::new();
    let mut xattr_kv = Vec::new();
    if t.xattrs != NO_TABLE && (t.xattrs as usize) + 16 <= img.len() {
        let x = t.xattrs;
        xattr_ids.push(vec![
            Field::le(x, 8),
            Field::le(x + 8, 4),
            Field::le(x + 16, 8),
        ]);
        let first = u64_at(img, x as usize + 16);
        let m = Meta::read(img, first, x);
        for k in 0..(m.stream.len() / 16).min(64) {
            xattr_ids.push(m.fields(16 * k, &[(0, 8), (8, 4), (12, 4)]));
        }
        let kv_start = u64_at(img, x as usize);
        let kv = Meta::read(img, kv_start, first);
        let mut i = 0;
        while i + 4 <= kv.stream.len() && xattr_kv.len() < 64 {
            let name = kv.u16(i + 2) as usize;
            let v = i + 4 + name;
            xattr_kv.push(
                kv.fields(i, &[(0, 2), (2, 2)])
                    .into_iter()
                    .chain(kv.field(v, 4))
                    .collect(),
            );
            i = v + 4 + kv.u32(v) as usize;
        }
    }
    vec![
        Class {
            name: "superblock",
            objects: vec![sb],
        },
        Class {
            name: "inodes",
            objects: inode_objects,
        },
        Class {
            name: "directory headers",
            objects: headers,
        },
        Class {
            name: "directory entries",
            objects: entries,
        },
        Class {
            name: "table pointers",
            objects: pointers,
        },
        Class {
            name: "fragment entries",
            objects: fragments,
        },
        Class {
            name: "ids",
            objects: ids,
        },
        Class {
            name: "xattr ids",
            objects: xattr_ids,
        },
        Class {
            name: "xattr keys and values",
            objects: xattr_kv,
        },
    ]
}

/// `img` with every metadata block stored uncompressed, so that the inodes and directory
/// entries of our writer's image are at fixed positions. Data blocks stay as they are;
/// the metadata tables are appended after them in their order, uncompressed, and every
/// reference to a metadata block position is moved: the superblock's table starts and root
/// inode, the lookup tables' pointers, directory inodes' listing blocks (and their index
/// entries), directory headers' inode blocks and xattr ids' key/value blocks.
fn uncompress_metadata(img: &[u8]) -> Vec<u8> {
    let t = Tables::of(img);
    let mut out = img[..t.inodes as usize].to_vec();
    let bytes_used = u64_at(img, 40);
    // Regions in image order: each metadata table and each lookup array.
    let mut regions: Vec<u64> = t
        .starts
        .iter()
        .copied()
        .filter(|&s| s >= t.inodes && s < bytes_used)
        .collect();
    regions.sort();
    regions.dedup();
    // The lookup arrays and the xattr table's header with its pointers are not metadata.
    let raw_regions: Vec<u64> = [t.frags, t.ids, t.export, t.xattrs]
        .into_iter()
        .filter(|&x| x != NO_TABLE)
        .collect();
    // New position of every old metadata block and region start (absolute).
    let mut moved: HashMap<u64, u64> = HashMap::new();
    let mut new_start: HashMap<u64, u64> = HashMap::new();
    for (k, &start) in regions.iter().enumerate() {
        let end = regions.get(k + 1).copied().unwrap_or(bytes_used);
        new_start.insert(start, out.len() as u64);
        if raw_regions.contains(&start) {
            out.extend_from_slice(&img[start as usize..end as usize]);
            continue;
        }
        let m = Meta::read(img, start, end);
        for (block_at, range) in &m.blocks {
            moved.insert(start + block_at, out.len() as u64);
            out.extend_from_slice(&((range.len() as u16) | 0x8000).to_le_bytes());
            out.extend_from_slice(&m.stream[range.clone()]);
        }
    }
    let new_of = |old: u64| {
        moved
            .get(&old)
            .copied()
            .or_else(|| new_start.get(&old).copied())
    };
    let rel_block = |table_old: u64, table_new: u64, block: u64| -> u64 {
        new_of(table_old + block).map_or(block, |n| n - table_new)
    };
    // The superblock.
    let (inodes_new, dirs_new) = (new_start[&t.inodes], new_start[&t.dirs]);
    out[64..72].copy_from_slice(&inodes_new.to_le_bytes());
    out[72..80].copy_from_slice(&dirs_new.to_le_bytes());
    for o in [48usize, 56, 80, 88] {
        let old = u64_at(img, o);
        if let Some(n) = new_start.get(&old) {
            out[o..o + 8].copy_from_slice(&n.to_le_bytes());
        }
    }
    let root = rel_block(t.inodes, inodes_new, t.root >> 16) << 16 | (t.root & 0xffff);
    out[32..40].copy_from_slice(&root.to_le_bytes());
    let used = out.len() as u64;
    out[40..48].copy_from_slice(&used.to_le_bytes());
    // Lookup pointers, and the xattr table's key/value start.
    for &arr in &raw_regions {
        let n = new_start[&arr] as usize;
        let first = if arr == t.xattrs { 16 } else { 0 };
        let mut p = n + first;
        let end = n + (t.end_of(arr).min(u64_at(img, 40)) - arr) as usize;
        while p + 8 <= end.min(out.len()) {
            if let Some(new) = new_of(u64_at(&out, p)) {
                out[p..p + 8].copy_from_slice(&new.to_le_bytes());
            }
            p += 8;
        }
        if arr == t.xattrs {
            if let Some(new) = new_of(u64_at(&out, n)) {
                out[n..n + 8].copy_from_slice(&new.to_le_bytes());
            }
        }
    }
    // References inside the (now uncompressed) inode, directory and xattr id tables.
    let fixed = out.clone();
    let inodes = Meta::read(&fixed, inodes_new, dirs_new);
    let put32 = |out: &mut Vec<u8>, pos: Option<u64>, v: u64| {
        if let Some(p) = pos {
            out[p as usize..p as usize + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
    };
    let mut i = 0;
    while i + 16 <= inodes.stream.len() {
        let Some((_, len, _)) = inode(&inodes, i, t.block_size) else {
            break;
        };
        match inodes.u16(i) {
            1 => put32(
                &mut out,
                inodes.pos[i + 16],
                rel_block(t.dirs, dirs_new, inodes.u32(i + 16)),
            ),
            8 => {
                put32(
                    &mut out,
                    inodes.pos[i + 24],
                    rel_block(t.dirs, dirs_new, inodes.u32(i + 24)),
                );
                let mut at = i + 40;
                for _ in 0..inodes.u16(i + 32) {
                    put32(
                        &mut out,
                        inodes.pos[at + 4],
                        rel_block(t.dirs, dirs_new, inodes.u32(at + 4)),
                    );
                    at += 12 + inodes.u32(at + 8) as usize + 1;
                }
            }
            _ => {}
        }
        i += len;
    }
    let dirs_end_new = new_start
        .get(&t.end_of(t.dirs))
        .copied()
        .unwrap_or(fixed.len() as u64);
    let dirs = Meta::read(&fixed, dirs_new, dirs_end_new);
    let mut d = 0;
    while d + 12 <= dirs.stream.len() {
        let count = dirs.u32(d) + 1;
        put32(
            &mut out,
            dirs.pos[d + 4],
            rel_block(t.inodes, inodes_new, dirs.u32(d + 4)),
        );
        d += 12;
        for _ in 0..count {
            d += 8 + dirs.u16(d + 6) as usize + 1;
        }
    }
    if t.xattrs != NO_TABLE {
        let x = new_start[&t.xattrs] as usize;
        let (kv_old, kv_new) = (u64_at(img, t.xattrs as usize), u64_at(&out, x));
        let first = u64_at(&out, x + 16);
        let ids = Meta::read(&fixed, first, x as u64);
        for k in 0..ids.stream.len() / 16 {
            let r = ids.u64(16 * k);
            let new = rel_block(kv_old, kv_new, r >> 16) << 16 | (r & 0xffff);
            if let Some(p) = ids.pos[16 * k] {
                out[p as usize..p as usize + 8].copy_from_slice(&new.to_le_bytes());
            }
        }
    }
    // squashfs images are padded to 4 KiB by convention; the reader does not need it.
    out
}

fn bases() -> &'static [Base] {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = DIR
            .get_or_init(|| tempfile::tempdir().expect("temp dir"))
            .path();
        let in_file = |name: &'static str, image: Vec<u8>| {
            let path = dir.join(format!("{name}.sqfs"));
            std::fs::write(&path, &image).expect("write the base image");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open");
            let classes = classes(&image);
            Base {
                name,
                image,
                file,
                offset: 0,
                sif: None,
                classes,
            }
        };
        let writer = uncompress_metadata(&ours());
        let mut bases = vec![
            in_file("writer", writer),
            in_file("mksquashfs", MKSQUASHFS_SEED.to_vec()),
        ];
        let sif = dir.join("sample.oci.sif");
        std::fs::write(&sif, OCI_SIF).expect("write the SIF");
        let (_, offset, size) =
            browse::locate(&sif, browse::Target::Layer(0)).expect("the sample's layer");
        let image = OCI_SIF[offset as usize..(offset + size) as usize].to_vec();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&sif)
            .expect("open the SIF");
        let classes = classes(&image);
        bases.push(Base {
            name: "sample layer",
            image,
            file,
            offset,
            sif: Some(sif),
            classes,
        });
        for b in &bases {
            // Each base must read as it is, or the harness would test nothing.
            let reader = SquashfsReader::open(&b.file, b.offset, b.image.len() as u64)
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            let mut walk = reader.walk().unwrap();
            let mut n = 0;
            while let Some(e) = walk
                .next_entry()
                .unwrap_or_else(|e| panic!("{}: {e}", b.name))
            {
                if let EntryKind::File { size } = e.kind {
                    let got =
                        std::io::copy(&mut walk.read_content().unwrap(), &mut std::io::sink());
                    assert_eq!(got.unwrap_or_else(|e| panic!("{}: {e}", b.name)), size);
                }
                n += 1;
            }
            eprintln!("squashfs_fields: {} entries; {}", n, fields::describe(b));
        }
        bases
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, records)) = data.split_first() else {
        return;
    };
    let bases = bases();
    let base = &bases[pick as usize % bases.len()];
    let patched = fields::apply(base, records);
    match SquashfsReader::open(&base.file, base.offset, patched.len) {
        Ok(reader) => match reader.walk() {
            Ok(mut walk) => fields::walk_all(&mut walk, 8 << 20),
            Err(e) => fields::one_line("walk", Err::<(), _>(e)),
        },
        Err(e) => fields::one_line("open", Err::<(), _>(e)),
    }
    if let Some(path) = &base.sif {
        fields::one_line("ls", browse::list(path, browse::Target::Layer(0), false));
        fields::one_line("diff", view::diff(path, Some(0)));
        for inside in ["/hello.txt", "/etc/os-release"] {
            let mut out = fields::Capped { left: 1 << 20 };
            fields::one_line(
                "cat",
                view::cat(path, inside, view::Scope::Merged, &mut out),
            );
        }
    }
    drop(patched);
});
