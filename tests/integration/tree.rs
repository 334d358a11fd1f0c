//! Listing of a real directory tree in the same text form as the codec listings, so a
//! filesystem image can be compared with the tree it was made from.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// `major`/`minor` of a Linux dev_t.
pub fn dev_major_minor(rdev: u64) -> (u64, u64) {
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}

fn xattrs(path: &Path) -> Vec<String> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out: Vec<String> = names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let name = std::str::from_utf8(name).unwrap();
            let mut value = vec![0u8; 65536];
            let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
            format!("{name}={}", hex::encode(&value[..len]))
        })
        .collect();
    out.sort();
    out
}

/// path -> "kind mode uid:gid mtime=S [xattrs]" for every entry under `root` (root itself
/// excluded), in pre-order with sorted siblings; later names of a file are `hardlink FIRST`.
pub fn host_listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let mut order = Vec::new();
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        let mut subdirs = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let child = format!("{rel}/{}", name.to_string_lossy());
            order.push((path.clone(), child.clone()));
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                subdirs.push((path, child));
            }
        }
        // Pre-order: a directory's children come right after it, so walk depth-first.
        for s in subdirs.into_iter().rev() {
            stack.push(s);
        }
    }
    // Re-derive true pre-order from paths (sorting "/a", "/a/x", "/b" by components).
    order.sort_by(|a, b| {
        let ka: Vec<&[u8]> = a.1.as_bytes().split(|&c| c == b'/').collect();
        let kb: Vec<&[u8]> = b.1.as_bytes().split(|&c| c == b'/').collect();
        ka.cmp(&kb)
    });
    for (path, rel) in order {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_char_device() || ft.is_block_device() {
            let (ma, mi) = dev_major_minor(meta.rdev());
            format!(
                "{} {ma},{mi}",
                if ft.is_char_device() { "char" } else { "block" }
            )
        } else if ft.is_fifo() {
            "fifo".into()
        } else if ft.is_socket() {
            "socket".into()
        } else if meta.nlink() > 1 && seen.contains_key(&(meta.dev(), meta.ino())) {
            format!(
                "hardlink {}",
                seen[&(meta.dev(), meta.ino())].trim_start_matches('/')
            )
        } else {
            if meta.nlink() > 1 {
                seen.insert((meta.dev(), meta.ino()), rel.clone());
            }
            format!(
                "file {}",
                crate::sifcheck::sha256(&std::fs::read(&path).unwrap())
            )
        };
        out.insert(
            rel,
            format!(
                "{kind} {:o} {}:{} mtime={} [{}]",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                xattrs(&path).join(",")
            ),
        );
    }
    out
}

/// The same listing form for any entry stream (root excluded).
pub fn source_listing(source: &mut dyn sifovl::fs::entry::EntrySource) -> BTreeMap<String, String> {
    use sifovl::fs::entry::EntryKind;
    use std::io::Read;
    let mut out = BTreeMap::new();
    while let Some(e) = source.next_entry().unwrap() {
        let kind = match &e.kind {
            EntryKind::File { size } => {
                let mut data = Vec::new();
                source
                    .read_content()
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                assert_eq!(data.len() as u64, *size, "{}", e.display_path());
                format!("file {}", crate::sifcheck::sha256(&data))
            }
            EntryKind::Directory => "dir".into(),
            EntryKind::Symlink { target } => format!("symlink {}", String::from_utf8_lossy(target)),
            EntryKind::CharDevice { major, minor } => format!("char {major},{minor}"),
            EntryKind::BlockDevice { major, minor } => format!("block {major},{minor}"),
            EntryKind::Fifo => "fifo".into(),
            EntryKind::Socket => "socket".into(),
            EntryKind::HardLink { target } => {
                format!("hardlink {}", String::from_utf8_lossy(target))
            }
        };
        if e.path.is_empty() {
            continue;
        }
        let xattrs: Vec<String> = e
            .metadata
            .xattrs
            .iter()
            .map(|x| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&x.name),
                    hex::encode(&x.value)
                )
            })
            .collect();
        out.insert(
            e.display_path(),
            format!(
                "{kind} {:o} {}:{} mtime={} [{}]",
                e.metadata.permissions,
                e.metadata.uid,
                e.metadata.gid,
                e.metadata.mtime,
                xattrs.join(",")
            ),
        );
    }
    out
}
