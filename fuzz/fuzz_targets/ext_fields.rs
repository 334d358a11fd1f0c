#![no_main]
//! Structure-aware ext3: valid images with superblock, group descriptor, inode, directory
//! entry, indirect block, xattr and journal fields set or nudged by the input, where random
//! bytes rarely get past the superblock checks. Opening (replayed and unreplayed), walking
//! the whole tree, reading every file and its xattrs, `TreeNeeds::scan`, planning a resize
//! in place (grow and shrink), and `ls`, `diff` and `cat` on an OCI-SIF holding the image
//! as its overlay must not panic, must fail in one line and must stay bounded.
//!
//! Bases (byte 0 of the input picks one):
//! 0. our writer's ext3 (4 KiB blocks, one group, a clean 4 MiB journal) of a tree with
//!    files in direct, indirect and double-indirect blocks, a sparse file, a directory of
//!    several blocks, a long and a fast symlink, a hard link, xattrs in the inode and in an
//!    xattr block, devices, a FIFO and a socket;
//! 1. `mke2fs -t ext3 -d` of a like tree (1 KiB blocks, four groups, a journal holding a
//!    committed transaction to replay), `fuzz/seeds/ext3-mke2fs-1k.chunks`, made by
//!    `fuzz/make-ext-fields-seed.py`.
//!
//! Then 12-byte records, see `fields/mod.rs`.
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};
use sifovl::fs::ext::{Ext3Options, ExtFs, TreeNeeds, resize, write_ext3};
use sifovl::fs::target::Target;
use sifovl::ops::{add, browse, view};

#[path = "fields/mod.rs"]
mod fields;
use fields::{Base, Class, Field};

const OCI_SIF: &[u8] = include_bytes!("../../testdata/sample.oci.sif");
const MKE2FS_SEED: &[u8] = include_bytes!("../seeds/ext3-mke2fs-1k.chunks");

/// An in-memory tree.
struct Mem {
    entries: Vec<(Entry, Vec<u8>)>,
    next: usize,
}

impl EntrySource for Mem {
    fn next_entry(&mut self) -> sifovl::error::Result<Option<Entry>> {
        self.next += 1;
        Ok(self.entries.get(self.next - 1).map(|(e, _)| e.clone()))
    }

    fn read_content(&mut self) -> sifovl::error::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self.entries[self.next - 1].1[..]))
    }
}

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

fn tree() -> Mem {
    let meta = |xattrs: &[(&str, Vec<u8>)]| Metadata {
        permissions: 0o644,
        uid: 1000,
        gid: 100,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        xattrs: xattrs
            .iter()
            .map(|(n, v)| Xattr {
                name: n.as_bytes().to_vec(),
                value: v.clone(),
            })
            .collect(),
    };
    let mut entries = Vec::new();
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
    add("upper", EntryKind::Directory, &[], vec![]);
    let small = b"hello\n".repeat(17);
    add(
        "upper/small",
        file(&small),
        &[("user.inline", b"v1".to_vec())],
        small,
    );
    let direct = pattern(20_000, 1);
    add(
        "upper/direct",
        file(&direct),
        &[
            ("user.big", pattern(300, 5)),
            ("user.second", vec![b'x'; 20]),
        ],
        direct,
    );
    let indirect = pattern(15 * 4096 + 100, 2);
    add("upper/indirect", file(&indirect), &[], indirect);
    // Past 12 + 1024 blocks: double indirect; the zeros between become holes.
    let mut dind = pattern(5000, 3);
    dind.resize(4_400_000, 0);
    dind.extend(pattern(5000, 4));
    add("upper/dindirect", file(&dind), &[], dind);
    let mut sparse = vec![0u8; 1 << 20];
    sparse[512 * 1024..512 * 1024 + 6].copy_from_slice(b"middle");
    add("upper/sparse", file(&sparse), &[], sparse);
    add(
        "upper/hardlink",
        EntryKind::HardLink {
            target: b"upper/small".to_vec(),
        },
        &[("user.inline", b"v1".to_vec())],
        vec![],
    );
    add(
        "upper/longlink",
        EntryKind::Symlink {
            target: [vec![b't'; 100], b"/target".to_vec()].concat(),
        },
        &[],
        vec![],
    );
    add(
        "upper/fastlink",
        EntryKind::Symlink {
            target: b"small".to_vec(),
        },
        &[],
        vec![],
    );
    add(
        "upper/chardev",
        EntryKind::CharDevice { major: 1, minor: 3 },
        &[],
        vec![],
    );
    add(
        "upper/blockdev",
        EntryKind::BlockDevice {
            major: 8,
            minor: 300,
        },
        &[],
        vec![],
    );
    add("upper/fifo", EntryKind::Fifo, &[], vec![]);
    add("upper/socket", EntryKind::Socket, &[], vec![]);
    add(
        "upper/bigdir",
        EntryKind::Directory,
        &[("trusted.overlay.opaque", b"y".to_vec())],
        vec![],
    );
    for i in 0..150 {
        let content = format!("{i}").into_bytes();
        add(
            &format!("upper/bigdir/entry-with-a-rather-long-name-to-fill-blocks-{i:03}"),
            file(&content),
            &[],
            content,
        );
    }
    add("work", EntryKind::Directory, &[], vec![]);
    Mem { entries, next: 0 }
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as u64
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as u64
}

fn be32_at(b: &[u8], at: usize) -> u64 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as u64
}

/// The objects of a valid ext3 image, found by reading it as the format says.
fn classes(img: &[u8]) -> Vec<Class> {
    const SB: usize = 1024;
    let bs = 1024usize << u32_at(img, SB + 24);
    let first_data = u32_at(img, SB + 20) as usize;
    let blocks = u32_at(img, SB + 4) as usize;
    let bpg = u32_at(img, SB + 32) as usize;
    let ipg = u32_at(img, SB + 40) as usize;
    let inodes = u32_at(img, SB + 0) as usize;
    let isize = u16_at(img, SB + 88) as usize;
    let groups = (blocks - first_data).div_ceil(bpg);
    let gdt = (first_data + 1) * bs;
    let ptrs = bs / 4;

    let sb_fields = [
        0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 56, 58, 76, 84, 92, 96, 100, 224, 0x150,
    ];
    let mut sb: Vec<Field> = sb_fields
        .iter()
        .map(|&o| Field::le((SB + o) as u64, 4))
        .collect();
    // The 16-bit ones: magic, state, inode size, reserved GDT blocks, descriptor size,
    // extra isize wanted.
    for o in [56, 58, 88, 0xCE, 0xFE, 0x15C] {
        sb.push(Field::le((SB + o) as u64, 2));
    }
    let mut group_objects = Vec::new();
    let mut tables = Vec::new();
    for g in 0..groups {
        let at = gdt + g * 32;
        tables.push(u32_at(img, at + 8) as usize);
        group_objects.push(
            [
                (0, 4),
                (4, 4),
                (8, 4),
                (12, 2),
                (14, 2),
                (16, 2),
                (18, 2),
                (28, 2),
            ]
            .iter()
            .map(|&(o, w)| Field::le((at + o) as u64, w))
            .collect(),
        );
    }
    let inode_at = |n: usize| tables[(n - 1) / ipg] * bs + (n - 1) % ipg * isize;
    let mut inode_objects = Vec::new();
    let mut dirents = Vec::new();
    let mut slots = Vec::new();
    let mut xattr_headers = Vec::new();
    let mut xattr_entries = Vec::new();
    let xattr_entries_in = |at: usize, end: usize, out: &mut Vec<Vec<Field>>| {
        let mut e = at;
        while e + 16 <= end && u32_at(img, e) != 0 {
            out.push(
                [(0, 1), (1, 1), (2, 2), (4, 4), (8, 4), (12, 4)]
                    .iter()
                    .map(|&(o, w)| Field::le((e + o) as u64, w))
                    .collect(),
            );
            e += (16 + img[e] as usize).next_multiple_of(4);
        }
    };
    for n in 1..=inodes.min(400) {
        let at = inode_at(n);
        let mode = u16_at(img, at);
        if mode == 0 && u16_at(img, at + 26) == 0 && n != 8 {
            continue;
        }
        let mut f: Vec<Field> = [
            (0, 2),
            (2, 2),
            (4, 4),
            (24, 2),
            (26, 2),
            (28, 4),
            (32, 4),
            (104, 4),
            (108, 4),
        ]
        .iter()
        .map(|&(o, w)| Field::le((at + o) as u64, w))
        .collect();
        for k in 0..15 {
            f.push(Field::le((at + 40 + 4 * k) as u64, 4));
        }
        if isize > 128 {
            f.push(Field::le((at + 128) as u64, 2));
            let extra = u16_at(img, at + 128) as usize;
            let h = at + 128 + extra;
            if extra >= 4 && h + 4 <= at + isize && u32_at(img, h) == 0xEA02_0000 {
                xattr_headers.push(vec![Field::le(h as u64, 4)]);
                xattr_entries_in(h + 4, at + isize, &mut xattr_entries);
            }
        }
        inode_objects.push(f);
        let block = |k: usize| u32_at(img, at + 40 + 4 * k) as usize;
        let is_dir = mode & 0xF000 == 0x4000;
        let is_link = mode & 0xF000 == 0xA000;
        if is_dir {
            for k in 0..12 {
                let b = block(k);
                if b == 0 {
                    continue;
                }
                let mut e = b * bs;
                while e + 8 <= (b + 1) * bs {
                    dirents.push(
                        [(0, 4), (4, 2), (6, 1), (7, 1)]
                            .iter()
                            .map(|&(o, w)| Field::le((e + o) as u64, w))
                            .collect(),
                    );
                    let rec = u16_at(img, e + 4) as usize;
                    if rec < 8 {
                        break;
                    }
                    e += rec;
                }
            }
        }
        // Block pointers in indirect blocks: the first few and the last used of each.
        if !is_link && block(12) != 0 {
            let ind = block(12) * bs;
            let used = (0..ptrs)
                .filter(|&i| u32_at(img, ind + 4 * i) != 0)
                .collect::<Vec<_>>();
            for i in used.iter().take(3).chain(used.last()) {
                slots.push(vec![Field::le((ind + 4 * i) as u64, 4)]);
            }
            let dind = block(13);
            if dind != 0 {
                slots.push(vec![Field::le((dind * bs) as u64, 4)]);
                let child = u32_at(img, dind * bs) as usize;
                if child != 0 {
                    slots.push(vec![Field::le((child * bs) as u64, 4)]);
                    slots.push(vec![Field::le((child * bs + 4) as u64, 4)]);
                }
            }
        }
        let acl = u32_at(img, at + 104) as usize;
        if acl != 0 && acl < blocks {
            let x = acl * bs;
            xattr_headers.push(
                [(0, 4), (4, 4), (8, 4), (16, 4)]
                    .iter()
                    .map(|&(o, w)| Field::le((x + o) as u64, w))
                    .collect(),
            );
            xattr_entries_in(x + 32, x + bs, &mut xattr_entries);
        }
    }
    // The journal: its superblock and the blocks of its log (descriptor, commit, revoke).
    let mut journal = Vec::new();
    let jino = u32_at(img, SB + 224) as usize;
    if jino != 0 {
        let at = inode_at(jino);
        let logical = |l: usize| -> usize {
            if l < 12 {
                u32_at(img, at + 40 + 4 * l) as usize
            } else if l < 12 + ptrs {
                u32_at(img, u32_at(img, at + 40 + 48) as usize * bs + 4 * (l - 12)) as usize
            } else {
                0
            }
        };
        let jsb = logical(0) * bs;
        let mut f: Vec<Field> = (0..12)
            .map(|k| Field::be((jsb + 4 * k) as u64, 4))
            .collect();
        f.push(Field::be((jsb + 0x40) as u64, 4)); // nr_users
        journal.push(f);
        let maxlen = (be32_at(img, jsb + 16) as usize).min(12 + ptrs);
        for l in 1..maxlen {
            let b = logical(l) * bs;
            if b == 0 || be32_at(img, b) != 0xC03B_3998 {
                continue;
            }
            // Header; a descriptor's first two tags (block, flags), a revoke's count and
            // first block.
            journal.push(
                [
                    (0, 4),
                    (4, 4),
                    (8, 4),
                    (12, 4),
                    (16, 4),
                    (18, 2),
                    (36, 4),
                    (42, 2),
                ]
                .iter()
                .map(|&(o, w)| Field::be((b + o) as u64, w))
                .collect(),
            );
        }
    }
    vec![
        Class {
            name: "superblock",
            objects: vec![sb],
        },
        Class {
            name: "group descriptors",
            objects: group_objects,
        },
        Class {
            name: "inodes",
            objects: inode_objects,
        },
        Class {
            name: "directory entries",
            objects: dirents,
        },
        Class {
            name: "indirect pointers",
            objects: slots,
        },
        Class {
            name: "xattr headers",
            objects: xattr_headers,
        },
        Class {
            name: "xattr entries",
            objects: xattr_entries,
        },
        Class {
            name: "journal blocks",
            objects: journal,
        },
    ]
}

/// The image in an OCI-SIF as its overlay (`sifovl add --from`), for the commands; or in a
/// plain file when `add` refuses it.
fn base(name: &'static str, image: Vec<u8>, dir: &std::path::Path) -> Base {
    let raw = dir.join(format!("{name}.img"));
    std::fs::write(&raw, &image).expect("write the base image");
    let sif = dir.join(format!("{name}.oci.sif"));
    std::fs::write(&sif, OCI_SIF).expect("write the SIF");
    let options = add::AddOptions {
        from: Some(raw.clone()),
        sparse: true,
        ..Default::default()
    };
    let classes = classes(&image);
    // `add` refuses an overlay whose journal needs recovery: add it with the flag cleared,
    // then put the image's own bytes in place (the commands do not check the digest).
    let recover_flag = 1024 + 96;
    if image[recover_flag] & 4 != 0 {
        let mut clean = image.clone();
        clean[recover_flag] &= !4;
        std::fs::write(&raw, &clean).expect("write the base image");
    }
    match add::add_overlay(&sif, &options) {
        Ok(report) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&sif)
                .expect("open the SIF");
            file.write_all_at(&image, report.offset)
                .expect("write the overlay");
            let mut check = vec![0u8; image.len()];
            file.read_exact_at(&mut check, report.offset)
                .expect("read the overlay");
            assert!(check == image, "the overlay is the image");
            Base {
                name,
                image,
                file,
                offset: report.offset,
                sif: Some(sif),
                classes,
            }
        }
        Err(e) => {
            eprintln!("ext_fields: {name}: add --from refused it ({e}); reader only");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&raw)
                .expect("open the image");
            Base {
                name,
                image,
                file,
                offset: 0,
                sif: None,
                classes,
            }
        }
    }
}

fn bases() -> &'static [Base] {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = DIR
            .get_or_init(|| tempfile::tempdir().expect("temp dir"))
            .path();
        let ours = {
            let file = tempfile::tempfile().expect("temp file");
            let size = 6u64 << 20;
            file.set_len(size).expect("set_len");
            let options = Ext3Options {
                size,
                uuid: Some([7; 16]),
                hash_seed: Some([9; 16]),
                time: Some(1_700_000_000),
                min_inodes: 0,
            };
            let outcome =
                write_ext3(Target::at(&file, 0), &options, &mut tree()).expect("write_ext3");
            assert!(
                matches!(outcome, sifovl::fs::ext::Outcome::Written(_)),
                "{outcome:?}"
            );
            let mut image = vec![0u8; size as usize];
            file.read_exact_at(&mut image, 0).expect("read");
            image
        };
        let bases = vec![
            base("writer", ours, dir),
            base("mke2fs", fields::unchunk(MKE2FS_SEED), dir),
        ];
        for b in &bases {
            eprintln!("ext_fields: {}", fields::describe(b));
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
    let (file, offset, len) = (&base.file, base.offset, patched.len);
    // The unreplayed view differs only when there is a journal to replay (or it failed).
    let mut unreplayed_differs = true;
    for replayed in [true, false] {
        if !replayed && !unreplayed_differs {
            break;
        }
        let fs = if replayed {
            ExtFs::open(file, offset, len)
        } else {
            ExtFs::open_unreplayed(file, offset, len)
        };
        let fs = match fs {
            Ok(fs) => fs,
            Err(e) => {
                fields::one_line("open", Err::<(), _>(e));
                continue;
            }
        };
        unreplayed_differs = fs.replay().is_some();
        match fs.walk() {
            Ok(mut walk) => fields::walk_all(&mut walk, 8 << 20),
            Err(e) => fields::one_line("walk", Err::<(), _>(e)),
        }
        if let Ok(mut walk) = fs.walk() {
            fields::one_line("TreeNeeds::scan", TreeNeeds::scan(&mut walk));
        }
        if let Ok(mut walk) = fs.walk_dir(b"upper/bigdir") {
            fields::walk_all(&mut walk, 1 << 16);
        }
    }
    // Resizing in place plans over the damaged image: an error or a plan, never a panic,
    // and a shrink's plan writes only below its new end and reads only past it.
    let mut read = |at: u64, buf: &mut [u8]| {
        if at + buf.len() as u64 > len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        file.read_exact_at(buf, offset + at)
    };
    fields::one_line("plan_growth", resize::plan_growth(&mut read, len * 2));
    if let Ok(resize::Shrink::InPlace(plan)) = resize::plan_shrink(&mut read, len / 2) {
        for m in &plan.moves {
            assert!(m.src >= plan.fs_bytes && m.dst + m.len <= plan.fs_bytes, "{m:?}");
        }
        for (at, bytes) in &plan.patches {
            assert!(at + bytes.len() as u64 <= plan.fs_bytes, "patch at {at}");
        }
    }
    if let Some(path) = &base.sif {
        fields::one_line("ls", browse::list(path, browse::Target::Overlay, false));
        fields::one_line("diff", view::diff(path, None));
        // One file per run (each `cat` merges the layers again): the bits above the base's.
        let inside = [
            "/fastlink",
            "/indirect",
            "/bigdir/entry-with-a-rather-long-name-to-fill-blocks-149",
        ][(pick as usize / bases.len()) % 3];
        let mut out = fields::Capped { left: 1 << 20 };
        fields::one_line(
            "cat",
            view::cat(path, inside, view::Scope::Merged, &mut out),
        );
    }
    drop(patched);
});
