//! Writable ext3 overlay images as SingularityCE uses them: the header rule its runtime
//! applies before mounting one, and creation of a fresh one with `upper/` and `work/`.
//!
//! Creation drives `mke2fs -t ext3 -d` exactly as `singularity overlay create` does (the
//! issue accepts this), with the options pinned so a host `mke2fs.conf` cannot slip in a
//! feature the runtime's header check rejects.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result, ResultExt};
use crate::fs::ext::superblock::{self, Superblock};

/// What the runtime reads of an overlay before trusting it: the boot block and the
/// superblock.
pub const HEADER_LEN: usize = superblock::OFFSET + superblock::LEN;
/// Incompatible features ext3 may have: filetype, recover, meta_bg.
const INCOMPAT_ALLOWED: u32 =
    superblock::INCOMPAT_FILETYPE | superblock::INCOMPAT_RECOVER | superblock::INCOMPAT_META_BG;
/// Read-only-compatible features ext3 may have: sparse_super, large_file, btree_dir.
const RO_COMPAT_ALLOWED: u32 = superblock::RO_COMPAT_SPARSE_SUPER
    | superblock::RO_COMPAT_LARGE_FILE
    | superblock::RO_COMPAT_BTREE_DIR;

/// Facts from an overlay's superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext3Header {
    /// The journal needs recovery: the job that wrote it was killed.
    pub needs_recovery: bool,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// Filesystem size in blocks.
    pub blocks: u64,
}

/// Apply SingularityCE's `CheckExt3Header` rule to the first 2048 bytes of an overlay:
/// an ext2/3/4 magic, a journal, and no feature beyond ext3's.
pub fn check_ext3_header(header: &[u8]) -> Result<Ext3Header> {
    let sb = header
        .get(superblock::OFFSET..HEADER_LEN)
        .and_then(Superblock::decode)
        .ok_or_else(|| {
            Error::malformed(format!(
                "ext3 overlay: {} bytes, shorter than the 2048-byte header",
                header.len()
            ))
        })?;
    if !sb.has_magic() {
        return Err(Error::malformed(
            "ext3 overlay: no ext2/3/4 superblock magic at byte 1080",
        ));
    }
    if sb.feature_compat & superblock::COMPAT_HAS_JOURNAL == 0 {
        return Err(Error::unsupported(
            "ext3 overlay: the filesystem has no journal (ext2); SingularityCE needs ext3",
        ));
    }
    let incompat = sb.feature_incompat;
    if incompat & !INCOMPAT_ALLOWED != 0 {
        return Err(Error::unsupported(format!(
            "ext3 overlay: incompatible features {:#x} beyond ext3's (an ext4 image?); SingularityCE refuses it",
            incompat & !INCOMPAT_ALLOWED
        )));
    }
    let ro_compat = sb.feature_ro_compat;
    if ro_compat & !RO_COMPAT_ALLOWED != 0 {
        return Err(Error::unsupported(format!(
            "ext3 overlay: read-only-compatible features {:#x} beyond ext3's; SingularityCE refuses it",
            ro_compat & !RO_COMPAT_ALLOWED
        )));
    }
    let block_size = sb.block_size().ok_or_else(|| {
        Error::malformed(format!(
            "ext3 overlay: block size 2^(10+{}) is absurd",
            sb.log_block_size
        ))
    })?;
    Ok(Ext3Header {
        needs_recovery: sb.needs_recovery(),
        block_size,
        blocks: sb.blocks(),
    })
}

/// Read and check the header of an overlay stored at `offset` in `file`.
pub fn read_ext3_header(file: &File, offset: u64, size: u64) -> Result<Ext3Header> {
    if size < HEADER_LEN as u64 {
        return Err(Error::malformed(format!(
            "ext3 overlay: {size} bytes, shorter than 2048"
        )));
    }
    let mut buf = [0u8; HEADER_LEN];
    file.read_exact_at(&mut buf, offset)
        .context("reading the ext3 overlay header")?;
    check_ext3_header(&buf)
}

/// Options for a new overlay image.
#[derive(Debug, Clone)]
pub struct CreateOverlay {
    /// Size of the image in MiB, at least [`MIN_OVERLAY_MIB`].
    pub size_mib: u64,
    /// Directories to create inside `upper/` (as `--create-dir` does), relative or absolute.
    pub create_dirs: Vec<String>,
    /// Owner of `upper/` and `work/` (the user who will write into the overlay).
    pub uid: u32,
    /// Group of `upper/` and `work/`.
    pub gid: u32,
}

/// The smallest overlay `overlay create` accepts.
pub const MIN_OVERLAY_MIB: u64 = 64;

/// Build an ext3 overlay image at `dest` (created or truncated) with `upper/` and `work/`.
pub fn create_ext3_overlay(dest: &Path, options: &CreateOverlay) -> Result<()> {
    if options.size_mib < MIN_OVERLAY_MIB {
        return Err(Error::refused(format!(
            "overlay size {} MiB: must be at least {MIN_OVERLAY_MIB} MiB",
            options.size_mib
        )));
    }
    let size = options.size_mib.checked_mul(1 << 20).ok_or_else(|| {
        Error::refused(format!(
            "overlay size {} MiB is too large",
            options.size_mib
        ))
    })?;
    let tree = tempfile::Builder::new()
        .prefix("sifovl-overlay-")
        .tempdir()
        .context("creating a temporary directory")?;
    // As the reference: 0755, or 0777 when the owner's ids do not fit in 16 bits.
    let mode = if options.uid > 65535 || options.gid > 65535 {
        0o777
    } else {
        0o755
    };
    let mut dirs = vec!["upper".to_string(), "work".to_string()];
    for d in &options.create_dirs {
        let rel = d.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return Err(Error::refused(format!(
                "--create-dir {d:?}: `..` is not allowed"
            )));
        }
        if !rel.is_empty() {
            let mut path = String::from("upper");
            for component in rel.split('/').filter(|c| !c.is_empty()) {
                path.push('/');
                path.push_str(component);
                dirs.push(path.clone());
            }
        }
    }
    for d in &dirs {
        let path = tree.path().join(d);
        if !path.exists() {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .with_context(|| path.display())?;
        }
        // The umask may have narrowed the mode; set it exactly, and the owner.
        std::os::unix::fs::chown(&path, Some(options.uid), Some(options.gid))
            .with_context(|| path.display())?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| path.display())?;
    }
    let file = File::create(dest).with_context(|| dest.display())?;
    file.set_len(size).with_context(|| dest.display())?;
    drop(file);
    let output = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext3"])
        // Pin the feature set to what the runtime's header rule accepts.
        .args([
            "-O",
            "none,has_journal,ext_attr,resize_inode,dir_index,filetype,sparse_super,large_file",
        ])
        .arg("-d")
        .arg(tree.path())
        .arg(dest)
        .output()
        .map_err(|e| {
            Error::io(
                "running mke2fs (install e2fsprogs; it builds the ext3 overlay)",
                e,
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::new(
            crate::error::ErrorKind::Io,
            format!("mke2fs failed: {}", stderr.trim().replace('\n', "; ")),
        ));
    }
    // Refuse to hand back anything the runtime would not mount.
    let f = File::open(dest).with_context(|| dest.display())?;
    read_ext3_header(&f, 0, size).map_err(|e| e.context(dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(compat: u32, incompat: u32, ro: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[1080] = 0x53;
        h[1081] = 0xEF;
        h[1024 + 0x5C..1024 + 0x60].copy_from_slice(&compat.to_le_bytes());
        h[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
        h[1024 + 0x64..1024 + 0x68].copy_from_slice(&ro.to_le_bytes());
        h
    }

    #[test]
    fn header_rule_matches_the_runtime() {
        assert!(check_ext3_header(&superblock(0x4, 0x2, 0x3)).is_ok());
        let r = check_ext3_header(&superblock(0x4, 0x2 | 0x4, 0x3)).unwrap();
        assert!(r.needs_recovery);
        assert!(
            check_ext3_header(&superblock(0x0, 0x2, 0x3)).is_err(),
            "ext2 accepted"
        );
        assert!(
            check_ext3_header(&superblock(0x4, 0x2 | 0x40, 0x3)).is_err(),
            "extents accepted"
        );
        assert!(
            check_ext3_header(&superblock(0x4, 0x2, 0x400)).is_err(),
            "metadata_csum accepted"
        );
        assert!(check_ext3_header(&[0u8; 100]).is_err());
        assert!(check_ext3_header(&[0u8; 2048]).is_err());
    }
}
