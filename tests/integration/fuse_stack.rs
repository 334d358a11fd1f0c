//! Integration tests: the real overlay stack SingularityCE runs a `--writable` job on
//! (squashfuse for each squashfs layer at its offset in the SIF, fuse2fs for the ext3
//! overlay inside the SIF, fuse-overlayfs on top), then reconcile and seal, then the sealed
//! image stacked by the kernel's overlayfs (loop-mounted squashfs layers) and by
//! fuse-overlayfs (squashfuse lowers): both must show exactly what the job saw.
//!
//! Needs root, /dev/fuse, loop devices and the kernel's overlayfs; skipped with a message
//! where any is missing, and failing under CI (CI=true).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::{Digest, Sha256};

use crate::util::{have_tool, run_ok, sifovl};
use crate::{require_fixtures, sifcheck};

const TOOLS: [&str; 6] = [
    "squashfuse",
    "fuse2fs",
    "fuse-overlayfs",
    "mount",
    "umount",
    "setfattr",
];

/// Why this machine cannot run the stack, or None when it can: root, every tool, /dev/fuse
/// usable, and a kernel overlayfs mount that works (probed with empty directories).
pub fn cannot_mount() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    for tool in TOOLS {
        if !have_tool(tool) {
            return Some(format!(
                "{tool} not installed (scripts/install-test-deps.sh installs it)"
            ));
        }
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse unusable: {e}"));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for fs in ["overlay", "squashfs", "fuse"] {
        if !filesystems.split_whitespace().any(|w| w == fs) {
            return Some(format!("the kernel has no {fs} filesystem"));
        }
    }
    let probe = tempfile::tempdir().unwrap();
    let p = probe.path();
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(p.join(d)).unwrap();
    }
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            p.join("lower").display(),
            p.join("upper").display(),
            p.join("work").display()
        ))
        .arg(p.join("merged"))
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let _ = Command::new("umount").arg(p.join("merged")).status();
        }
        Ok(o) => {
            return Some(format!(
                "cannot mount the kernel's overlayfs: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("cannot run mount: {e}")),
    }
    if !Command::new("losetup")
        .arg("-f")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("no free loop device".into());
    }
    None
}

/// Return early (with the reason) when the stack cannot be mounted here; under CI (CI=true)
/// that is a failure: CI runs as root on a machine with FUSE, loop devices and overlayfs.
#[macro_export]
macro_rules! require_mount {
    () => {
        if let Some(why) = $crate::fuse_stack::cannot_mount() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mounting is required under CI: {why}");
            }
            eprintln!("SKIPPED: cannot mount the overlay stack: {why}");
            return;
        }
    };
}

/// Whether `path` is a mount point now (mountinfo escapes space, tab, newline and `\` as
/// `\ooo`).
fn mounted(path: &Path) -> bool {
    let want = path.to_str().unwrap();
    let unescape = |field: &str| {
        let (mut out, b) = (Vec::new(), field.as_bytes());
        let mut i = 0;
        while i < b.len() {
            let octal = b
                .get(i + 1..i + 4)
                .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
            match (b[i], octal) {
                (b'\\', Some(o)) => {
                    out.push(o.iter().fold(0u8, |n, c| n * 8 + (c - b'0')));
                    i += 4;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap_or_default()
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|field| unescape(field) == want)
}

struct Mount {
    path: PathBuf,
    /// The FUSE daemon (run in the foreground), waited for after unmounting so that its
    /// last writes (fuse2fs closing the ext3) are done.
    daemon: Option<(Child, PathBuf)>,
}

/// Mounts made by a test, unmounted in reverse order when dropped (lazily if a plain
/// unmount keeps failing), so a failing test leaves nothing mounted.
struct Mounts {
    dir: PathBuf,
    stack: Vec<Mount>,
}

impl Mounts {
    fn new(dir: &Path) -> Mounts {
        Mounts {
            dir: dir.to_path_buf(),
            stack: Vec::new(),
        }
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path.canonicalize().unwrap()
    }

    /// Start a FUSE daemon in the foreground (`-f` is added) and wait until its mount is
    /// there (or the daemon has died).
    fn fuse(&mut self, program: &str, args: &[String], name: &str) -> PathBuf {
        let path = self.mountpoint(name);
        let log = self.dir.join(format!("{name}.log"));
        let child = Command::new(program)
            .args(args)
            .arg(&path)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.stack.push(Mount {
            path: path.clone(),
            daemon: Some((child, log.clone())),
        });
        loop {
            if mounted(&path) {
                return path;
            }
            let (child, _) = self.stack.last_mut().unwrap().daemon.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                self.stack.pop();
                panic!("{program} {args:?} exited ({status}) before mounting: {log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `mount ARGS... MOUNTPOINT` by the kernel.
    fn kernel(&mut self, args: &[String], name: &str) -> PathBuf {
        let path = self.mountpoint(name);
        run_ok(Command::new("mount").args(args).arg(&path));
        self.stack.push(Mount {
            path: path.clone(),
            daemon: None,
        });
        path
    }

    /// Squashfs at `offset` (`size` bytes) of `image`: squashfuse or a loop mount.
    fn squashfs(
        &mut self,
        image: &Path,
        offset: u64,
        size: u64,
        fuse: bool,
        name: &str,
    ) -> PathBuf {
        if fuse {
            self.fuse(
                "squashfuse",
                &[
                    "-o".into(),
                    format!("offset={offset}"),
                    image.display().to_string(),
                ],
                name,
            )
        } else {
            self.kernel(
                &[
                    "-t".into(),
                    "squashfs".into(),
                    "-o".into(),
                    format!("ro,loop,offset={offset},sizelimit={size}"),
                    image.display().to_string(),
                ],
                name,
            )
        }
    }

    fn unmount_one(mount: Mount) -> Result<(), String> {
        let mut result = Ok(());
        let mut tries = 0;
        while mounted(&mount.path) {
            let out = Command::new("umount").arg(&mount.path).output().unwrap();
            if out.status.success() {
                break;
            }
            tries += 1;
            if tries == 100 {
                // Still busy after ~10 s: detach it, and report.
                let _ = Command::new("umount").arg("-l").arg(&mount.path).status();
                result = Err(format!(
                    "{}: busy, unmounted lazily: {}",
                    mount.path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Some((mut child, log)) = mount.daemon {
            // Unmounted, the daemon finishes (fuse2fs closes the ext3) and exits; after a
            // lazy unmount it may wait for the last open file: stop it after ~10 s.
            let mut waited = 0;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if waited == 500 {
                    let _ = child.kill();
                    result = result.and(Err(format!(
                        "{}: daemon still running after the unmount: killed",
                        mount.path.display()
                    )));
                    break child.wait().unwrap();
                }
                waited += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            if !status.success() && result.is_ok() {
                result = Err(format!(
                    "{}: daemon exited with {status}: {}",
                    mount.path.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
        }
        result
    }

    /// Unmount everything, newest first; panics if anything went wrong.
    fn unmount_all(&mut self) {
        let mut errors = Vec::new();
        while let Some(mount) = self.stack.pop() {
            if let Err(e) = Self::unmount_one(mount) {
                errors.push(e);
            }
        }
        assert!(errors.is_empty(), "unmounting: {errors:?}");
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(mount) = self.stack.pop() {
            if let Err(e) = Self::unmount_one(mount) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// What one path looks like through a mounted view. Equality leaves out `link` and
/// `nlink`, which `assert_same_view` compares for the hard links the job's view shows.
#[derive(Debug, Clone)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// Files: size and sha256; symlinks: the target; devices: rdev.
    data: String,
    /// The first path (in walk order) of this file's inode: equal for hard links.
    link: String,
    nlink: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        (
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.mtime,
            &self.data,
            &self.xattrs,
        ) == (
            other.kind,
            other.mode,
            other.uid,
            other.gid,
            other.mtime,
            &other.data,
            &other.xattrs,
        )
    }
}

/// The xattrs of `path` as compared between views. Two normalisations, both about the
/// drivers rather than the layers:
/// * overlay control xattrs (`trusted.overlay.*`, `user.overlay.*`, and
///   `security.overlay.*`, see below) are left out: each driver hides some of them and not
///   others (the kernel's overlayfs hides `user.overlay.*` only with `userxattr`), and what
///   they control, whiteouts and opaque directories, is checked by the tree itself;
/// * `security.*` and `trusted.*` are not told apart: squashfuse before 0.5 (Debian 12 has
///   0.1.105) reports one as the other (vasi/squashfuse#83).
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        // A squashfs without an xattr table (mksquashfs -no-xattrs, or none to store).
        Err(rustix::io::Errno::OPNOTSUPP) => 0,
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap().to_string();
        let (namespace, rest) = name.split_once('.').unwrap();
        if rest.starts_with("overlay.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])
            .unwrap_or_else(|e| panic!("getxattr {} {name}: {e}", path.display()));
        value.truncate(len);
        let namespace = match namespace {
            "trusted" | "security" => "trusted|security",
            other => other,
        };
        out.insert(format!("{namespace}.{rest}"), value);
    }
    out
}

type Inode = (u64, u64, u64, i64, i64, i64);

fn inode(meta: &std::fs::Metadata) -> Inode {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// Walk a mounted view: every path (relative, `/` for the root) with its metadata,
/// content hashes, symlink targets and xattrs. Never follows symlinks.
fn view(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    // Hard links: names of one inode. fuse-overlayfs reports the underlying inode numbers
    // under one st_dev, so numbers of different layers collide: only files with several
    // names are grouped, by inode and times.
    let mut inodes: BTreeMap<Inode, (String, String)> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let rel = format!("/{}", path.strip_prefix(root).unwrap().display());
        let ft = meta.file_type();
        let (kind, data) = if ft.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            stack.extend(children.into_iter().rev());
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&path).unwrap().display().to_string(),
            )
        } else if ft.is_file() {
            let data = inodes
                .get(&inode(&meta))
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| {
                    let mut hasher = Sha256::new();
                    let mut f = std::fs::File::open(&path).unwrap();
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = f.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                    format!("{} bytes {}", meta.len(), hex::encode(hasher.finalize()))
                });
            ("file", data)
        } else if ft.is_char_device() {
            ("char", format!("{:x}", meta.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{:x}", meta.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("socket", String::new())
        };
        let link = if ft.is_dir() || meta.nlink() < 2 {
            rel.clone()
        } else {
            inodes
                .entry(inode(&meta))
                .or_insert_with(|| (rel.clone(), data.clone()))
                .0
                .clone()
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                data,
                link,
                nlink: if ft.is_dir() { 0 } else { meta.nlink() },
                xattrs: xattrs(&path),
            },
        );
    }
    out
}

/// Panic with the differences when two views differ. `links`: also compare the hard links
/// the job's view shows (not through squashfuse + fuse-overlayfs, which show every name of
/// a lower file as an inode of its own with one link, for mksquashfs images as well).
fn assert_same_view(
    what: &str,
    job: &BTreeMap<String, Node>,
    sealed: &BTreeMap<String, Node>,
    links: bool,
) {
    let mut diffs = Vec::new();
    for (path, node) in job {
        match sealed.get(path) {
            None => diffs.push(format!("{path}: missing (job saw {node:?})")),
            Some(other) if other != node => diffs.push(format!(
                "{path}:\n    job    {node:?}\n    sealed {other:?}"
            )),
            _ => {}
        }
    }
    for (path, node) in sealed {
        if !job.contains_key(path) {
            diffs.push(format!("{path}: not in the job's view, but {node:?}"));
        }
    }
    // Hard links the job's view shows: the same names share one inode, with the same count.
    for (path, node) in job.iter().filter(|(_, n)| links && n.nlink > 1) {
        let Some(other) = sealed.get(path) else {
            continue;
        };
        let linked = sealed.get(&node.link).is_some_and(|f| f.link == other.link);
        if other.nlink != node.nlink || !linked {
            diffs.push(format!(
                "{path}: job: {} links, one inode with {}; sealed: {} links, {}",
                node.nlink,
                node.link,
                other.nlink,
                if linked { "linked" } else { "not linked" }
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: the sealed image differs from the job's view:\n{}",
        diffs.join("\n")
    );
}

fn assert_no_wh_names(what: &str, view: &BTreeMap<String, Node>) {
    let wh: Vec<&String> = view
        .keys()
        .filter(|p| p.split('/').any(|c| c.starts_with(".wh.")))
        .collect();
    assert!(wh.is_empty(), "{what}: .wh. names visible: {wh:?}");
}

/// (offset, size) of an object in a SIF.
type Range = (u64, u64);

/// (offset, size) of the squashfs layers of an OCI-SIF, top layer first (lowerdir order),
/// and of the ext3 overlay if there is one.
fn oci_layers(image: &Path) -> (Vec<Range>, Option<Range>) {
    let report: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(image))).unwrap();
    let mut squashfs = Vec::new();
    let mut overlay = None;
    for layer in report["layers"].as_array().unwrap() {
        let range = (
            layer["offset"].as_u64().unwrap(),
            layer["size"].as_u64().unwrap(),
        );
        match layer["media_type"].as_str().unwrap() {
            "application/vnd.sylabs.image.layer.v1.squashfs" => squashfs.push(range),
            "application/vnd.sylabs.image.layer.v1.ext3" => overlay = Some(range),
            other => panic!("unexpected layer {other}"),
        }
    }
    squashfs.reverse();
    (squashfs, overlay)
}

/// How a sealed image is stacked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stack {
    /// Loop-mounted squashfs layers, the kernel's overlayfs (trusted.overlay.* xattrs).
    Kernel,
    /// The same with `userxattr` (user.overlay.* xattrs), as a rootless kernel overlay.
    KernelUserxattr,
    /// squashfuse layers, fuse-overlayfs.
    Fuse,
}

const STACKS: [Stack; 3] = [Stack::Kernel, Stack::KernelUserxattr, Stack::Fuse];

/// Mount the squashfs `layers` (top first) of `image` and stack them read-only. Returns
/// the merged dir.
fn stack_sealed(mounts: &mut Mounts, image: &Path, layers: &[(u64, u64)], how: Stack) -> PathBuf {
    let fuse = how == Stack::Fuse;
    let tag = format!("{how:?}");
    let lowers: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, &(offset, size))| {
            mounts
                .squashfs(image, offset, size, fuse, &format!("{tag}-layer{i}"))
                .display()
                .to_string()
        })
        .collect();
    let lowerdir = format!("lowerdir={}", lowers.join(":"));
    let options = match how {
        Stack::Fuse => {
            return mounts.fuse(
                "fuse-overlayfs",
                &["-o".into(), lowerdir],
                &format!("{tag}-merged"),
            );
        }
        Stack::Kernel => format!("ro,{lowerdir}"),
        Stack::KernelUserxattr => format!("ro,userxattr,{lowerdir}"),
    };
    mounts.kernel(
        &[
            "-t".into(),
            "overlay".into(),
            "overlay".into(),
            "-o".into(),
            options,
        ],
        &format!("{tag}-merged"),
    )
}

/// The `--writable` run as SingularityCE sets it up: squashfuse for each squashfs `lower`
/// (top first), fuse2fs for the ext3 overlay at `overlay_offset` of `image`, fuse-overlayfs
/// with upper/ and work/ of the overlay. Runs `job` in the merged view, records the view,
/// and unmounts everything.
fn writable_run(
    image: &Path,
    lowers: &[(u64, u64)],
    overlay_offset: u64,
    scratch: &Path,
    job: impl FnOnce(&Path),
) -> BTreeMap<String, Node> {
    let mut mounts = Mounts::new(scratch);
    let lowerdirs: Vec<String> = lowers
        .iter()
        .enumerate()
        .map(|(i, &(offset, size))| {
            mounts
                .squashfs(image, offset, size, true, &format!("job-layer{i}"))
                .display()
                .to_string()
        })
        .collect();
    let ext = mounts.fuse(
        "fuse2fs",
        &[
            "-o".into(),
            format!("rw,offset={overlay_offset}"),
            image.display().to_string(),
        ],
        "job-ext3",
    );
    let merged = mounts.fuse(
        "fuse-overlayfs",
        &[
            "-o".into(),
            format!(
                "lowerdir={},upperdir={},workdir={}",
                lowerdirs.join(":"),
                ext.join("upper").display(),
                ext.join("work").display()
            ),
        ],
        "job-merged",
    );
    job(&merged);
    let mut seen = view(&merged);
    // A merged directory has the attributes of its upper directory, when there is one; but
    // through fuse-overlayfs on fuse2fs, the first stat after a change inside a directory
    // may still give its mtime from before (a FUSE attribute cache; stat-ing the upper
    // directory itself refreshes it). Take directory mtimes from upper/ directly.
    for (path, node) in seen.iter_mut().filter(|(_, n)| n.kind == "dir") {
        let upper = ext.join("upper").join(path.trim_start_matches('/'));
        if let Ok(meta) = std::fs::symlink_metadata(&upper)
            && meta.is_dir()
        {
            node.mtime = meta.mtime();
        }
    }
    mounts.unmount_all();
    seen
}

/// The entry names of a tar file (directories without their trailing `/`).
fn tar_names(tar: &Path) -> std::collections::BTreeSet<String> {
    String::from_utf8(run_ok(Command::new("tar").arg("-tf").arg(tar)))
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

fn write(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run_ok(
        Command::new("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(path),
    );
}

/// A sparse file: `len` bytes, data only at its start and end.
fn sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tail", len - 4).unwrap();
}

fn sealed_report(image: &Path, extra: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&run_ok(
        sifovl().args(["seal", "--json"]).args(extra).arg(image),
    ))
    .unwrap()
}

/// The first job makes the tree the second job then changes: it becomes a squashfs layer
/// of its own (sealed from a fuse-overlayfs upper too).
fn base_job(m: &Path) {
    for d in ["doomed/sub", "replaced/sub", "kept"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    write(&m.join("doomed/a.txt"), b"doomed a\n");
    write(&m.join("doomed/sub/b.txt"), b"doomed b\n");
    write(&m.join("replaced/old.txt"), b"old\n");
    write(&m.join("replaced/sub/old2.txt"), b"old 2\n");
    write(&m.join("kept/modify.txt"), b"version 1\n");
    write(&m.join("kept/perm.txt"), b"permissions change\n");
    write(&m.join("kept/link-me.txt"), b"linked later\n");
    write(&m.join("kept/delete-me.txt"), b"deleted later\n");
    write(&m.join("kept/stays.txt"), b"untouched\n");
    // An old mtime, so the second job's edits differ from it even within the same second
    // (squashfs keeps whole seconds).
    for f in ["kept/modify.txt", "kept/stays.txt"] {
        std::fs::File::options()
            .write(true)
            .open(m.join(f))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))
            .unwrap();
    }
}

/// The `--writable` job: every kind of change, on files of both lower layers.
fn main_job(m: &Path) {
    use std::os::unix::fs::{PermissionsExt, chown, symlink};
    // New directory and files; a hard link; a symlink; a sparse file; user xattrs.
    std::fs::create_dir_all(m.join("new/deeper")).unwrap();
    write(&m.join("new/file.txt"), b"created by the job\n");
    write(&m.join("new/deeper/x.txt"), b"x\n");
    std::fs::hard_link(m.join("new/file.txt"), m.join("new/file-link.txt")).unwrap();
    symlink("../kept/modify.txt", m.join("new/link")).unwrap();
    sparse(&m.join("new/sparse.bin"), 8 << 20);
    setfattr(&m.join("new/file.txt"), "user.job", "done");
    // Modified files (copy-up) in layer 1 and layer 0, one with a user xattr.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("kept/modify.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"version 2\n").unwrap();
    drop(f);
    write(&m.join("etc/os-release"), b"NAME=\"changed by the job\"\n");
    setfattr(&m.join("kept/modify.txt"), "user.changed", "yes");
    // chmod / chown of a lower file and of a new one.
    std::fs::set_permissions(
        m.join("kept/perm.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    chown(m.join("kept/perm.txt"), Some(1234), Some(5678)).unwrap();
    chown(m.join("new/file.txt"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(m.join("new"), std::fs::Permissions::from_mode(0o750)).unwrap();
    // A hard link to a lower file.
    std::fs::hard_link(m.join("kept/link-me.txt"), m.join("kept/link-me-too.txt")).unwrap();
    // Deleted files (layer 0 and layer 1), a deleted directory tree (layer 1) and a
    // deleted directory of layer 0.
    std::fs::remove_file(m.join("hello.txt")).unwrap();
    std::fs::remove_file(m.join("kept/delete-me.txt")).unwrap();
    std::fs::remove_dir_all(m.join("doomed")).unwrap();
    std::fs::remove_dir_all(m.join("bin")).unwrap();
    // A replaced directory: same name, new contents only.
    std::fs::remove_dir_all(m.join("replaced")).unwrap();
    std::fs::create_dir(m.join("replaced")).unwrap();
    write(&m.join("replaced/fresh.txt"), b"fresh\n");
    // A file deleted and created again, and one the job made and removed.
    std::fs::remove_file(m.join("kept/stays.txt")).unwrap();
    write(&m.join("kept/stays.txt"), b"recreated\n");
    write(&m.join("new/temporary"), b"gone before the end\n");
    std::fs::remove_file(m.join("new/temporary")).unwrap();
}

fn assert_job_effects(job: &BTreeMap<String, Node>) {
    for gone in [
        "/hello.txt",
        "/bin",
        "/doomed",
        "/replaced/old.txt",
        "/kept/delete-me.txt",
    ] {
        assert!(!job.contains_key(gone), "the job deleted {gone}: {job:#?}");
    }
    for present in [
        "/new/file.txt",
        "/new/sparse.bin",
        "/replaced/fresh.txt",
        "/kept/link-me-too.txt",
        "/etc/os-release",
    ] {
        assert!(job.contains_key(present), "the job made {present}");
    }
    assert_eq!(job["/new/file.txt"].link, job["/new/file-link.txt"].link);
    assert_eq!(
        (job["/kept/perm.txt"].uid, job["/kept/perm.txt"].mode),
        (1234, 0o600)
    );
    assert_eq!(job["/new/file.txt"].xattrs["user.job"], b"done");
}

#[test]
fn sealed_oci_sif_gives_the_jobs_view_under_kernel_overlayfs_and_fuse_overlayfs() {
    crate::require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().canonicalize().unwrap();
    let image = scratch.join("job.oci.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();

    // The first job, sealed: layer 1.
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let (lowers, overlay) = oci_layers(&image);
    writable_run(
        &image,
        &lowers,
        overlay.unwrap().0,
        &scratch.join("run1"),
        base_job,
    );
    run_ok(sifovl().arg("reconcile").arg(&image));
    let report = sealed_report(&image, &[]);
    assert!(
        report["aufs_markers"]["opaque_markers"].as_u64().unwrap() > 0,
        "{report}"
    );

    // The second job on the two squashfs layers.
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let (lowers, overlay) = oci_layers(&image);
    assert_eq!(lowers.len(), 2);
    let job = writable_run(
        &image,
        &lowers,
        overlay.unwrap().0,
        &scratch.join("run2"),
        main_job,
    );
    assert_job_effects(&job);
    assert_no_wh_names("the job's view", &job);

    // Without mounting, extract gives the job's view and diff says what the job did.
    let extracted = scratch.join("extracted");
    run_ok(sifovl().arg("extract").arg(&image).arg("/").arg(&extracted));
    assert_same_view("extract", &job, &view(&extracted), true);
    let diff = String::from_utf8(run_ok(sifovl().arg("diff").arg(&image))).unwrap();
    for line in [
        "D /hello.txt",
        "D /bin",
        "D /doomed",
        "D /kept/delete-me.txt",
        "O /replaced",
        "A /replaced/fresh.txt",
        "M /etc/os-release (content, mtime)",
        "M /kept/modify.txt (content, xattrs, mtime)",
        "M /kept/perm.txt (mode, owner)",
        "M /kept/stays.txt (content, mtime)",
        "A /kept/link-me-too.txt",
        "A /new",
        "A /new/file.txt",
        "A /new/file-link.txt",
        "A /new/link",
        "A /new/sparse.bin",
        "A /new/deeper/x.txt",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "diff: no {line:?} in:\n{diff}"
        );
    }
    for absent in [
        "/new/temporary",
        "/kept/link-me.txt",
        "/kept/same.txt",
        "/etc ",
    ] {
        assert!(!diff.contains(absent), "diff: {absent} listed:\n{diff}");
    }
    assert_eq!(
        String::from_utf8(run_ok(sifovl().arg("cat").arg(&image).arg("/new/link"))).unwrap(),
        "version 1\nversion 2\n"
    );

    // What fuse-overlayfs left in upper/: AUFS markers, which `ls` reads as deletions.
    let listing: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["ls", "--json"]).arg(&image))).unwrap();
    let deletes: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["deletes"].as_str())
        .collect();
    for gone in [
        "/upper/hello.txt",
        "/upper/bin",
        "/upper/doomed",
        "/upper/kept/delete-me.txt",
    ] {
        assert!(
            deletes.contains(&gone),
            "ls: {gone} not a deletion: {deletes:?}"
        );
    }
    let replaced = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/upper/replaced")
        .unwrap();
    assert_eq!(replaced["opaque"], true, "{replaced}");

    // export-layer of the overlay: its upper/ as a tar layer, AUFS form only, once.
    let overlay_tar = scratch.join("overlay.tar");
    run_ok(
        sifovl()
            .arg("export-layer")
            .arg(&image)
            .arg(&overlay_tar)
            .args(["--compression", "none"]),
    );
    let overlay_names = tar_names(&overlay_tar);
    for name in [
        ".wh.hello.txt",
        ".wh.bin",
        ".wh.doomed",
        "kept/.wh.delete-me.txt",
        "replaced/.wh..wh..opq",
    ] {
        assert!(
            overlay_names.contains(name),
            "export-layer: {name} missing: {overlay_names:?}"
        );
    }
    assert!(
        !overlay_names
            .iter()
            .any(|n| n.rsplit('/').next() == Some(".wh..opq")),
        "{overlay_names:?}"
    );
    let listing = String::from_utf8(run_ok(
        Command::new("tar")
            .args(["--xattrs", "-tvf"])
            .arg(&overlay_tar),
    ))
    .unwrap();
    assert!(
        !listing.lines().any(|l| l.starts_with('c')),
        "no devices: {listing}"
    );

    run_ok(sifovl().arg("reconcile").arg(&image));
    let reference = scratch.join("reference.oci.sif");
    std::fs::copy(&image, &reference).unwrap();
    let report = sealed_report(&image, &[]);
    let markers = &report["aufs_markers"];
    // hello.txt, bin, doomed, kept/delete-me.txt (replaced/ is an opaque directory).
    assert_eq!(markers["whiteouts"], 4, "{report}");
    assert_eq!(markers["warnings"], serde_json::json!([]), "{report}");
    run_ok(sifovl().arg("verify").arg(&image));
    let (layers, overlay) = oci_layers(&image);
    assert!(overlay.is_none());
    assert_eq!(layers.len(), 3);
    // The sealed layer exports to the same tar entries as the overlay did.
    let sealed_tar = scratch.join("sealed.tar");
    run_ok(
        sifovl()
            .arg("export-layer")
            .arg(&image)
            .arg(&sealed_tar)
            .args(["--compression", "none"]),
    );
    assert_eq!(tar_names(&sealed_tar), overlay_names);

    for how in STACKS {
        let what = format!("{how:?}");
        let mut mounts = Mounts::new(&scratch.join(format!("sealed-{what}")));
        let merged = stack_sealed(&mut mounts, &image, &layers, how);
        let sealed = view(&merged);
        mounts.unmount_all();
        assert_no_wh_names(&what, &sealed);
        assert_same_view(&what, &job, &sealed, how != Stack::Fuse);
    }

    // The reference's bytes (--keep-aufs-markers), what the comparisons above catch:
    // fuse-overlayfs, which honours AUFS markers in lower layers, shows the job's view, the
    // kernel shows the deleted files again, and the markers as files.
    let report = sealed_report(&reference, &["--keep-aufs-markers"]);
    assert_eq!(report["aufs_markers"]["whiteouts"], 0, "{report}");
    let (layers, _) = oci_layers(&reference);
    let mut mounts = Mounts::new(&scratch.join("reference"));
    let merged = stack_sealed(&mut mounts, &reference, &layers, Stack::Fuse);
    let fuse = view(&merged);
    let merged = stack_sealed(&mut mounts, &reference, &layers, Stack::Kernel);
    let kernel = view(&merged);
    mounts.unmount_all();
    assert_same_view("reference, fuse-overlayfs", &job, &fuse, false);
    for shown in [
        "/hello.txt",
        "/.wh.hello.txt",
        "/bin/.keep",
        "/doomed/a.txt",
        "/.wh.doomed",
        "/kept/delete-me.txt",
        "/replaced/.wh..wh..opq",
    ] {
        assert!(
            kernel.contains_key(shown),
            "reference, kernel: {shown} missing"
        );
    }
}

#[test]
fn sealed_native_overlay_partition_gives_the_jobs_view_under_kernel_overlayfs() {
    crate::require_mount!();
    let fixtures = require_fixtures!();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().canonicalize().unwrap();
    let image = scratch.join("busybox.sif");
    std::fs::copy(fixtures.join("singularity/busybox_amd64.sif"), &image).unwrap();
    let mut perm = std::fs::metadata(&image).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    std::fs::set_permissions(&image, perm).unwrap();
    run_ok(sifovl().args(["add", "--sparse", "--force"]).arg(&image));

    // Partitions: (fstype, parttype) 1/2 = squashfs primary system, 2/4 = ext3 overlay.
    let partitions = |image: &Path| {
        let bytes = std::fs::read(image).unwrap();
        sifcheck::parse(&bytes)
            .objects
            .into_iter()
            .filter(|d| d.dtype == sifcheck::PARTITION)
            .map(|d| {
                let fs = u32::from_le_bytes(d.extra[..4].try_into().unwrap());
                let part = u32::from_le_bytes(d.extra[4..8].try_into().unwrap());
                ((fs, part), (d.offset, d.size))
            })
            .collect::<Vec<_>>()
    };
    let parts = partitions(&image);
    let rootfs = parts.iter().find(|(k, _)| *k == (1, 2)).unwrap().1;
    let overlay = parts.iter().find(|(k, _)| *k == (2, 4)).unwrap().1;

    let job = writable_run(&image, &[rootfs], overlay.0, &scratch.join("run"), |m| {
        use std::os::unix::fs::{PermissionsExt, chown, symlink};
        // bin/ holds busybox's hard links: delete one, change another's owner.
        std::fs::remove_file(m.join("bin/ls")).unwrap();
        chown(m.join("bin/cat"), Some(42), Some(43)).unwrap();
        std::fs::remove_dir_all(m.join("etc")).unwrap();
        std::fs::create_dir(m.join("etc")).unwrap();
        write(&m.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
        std::fs::create_dir_all(m.join("data/out")).unwrap();
        write(&m.join("data/out/result.txt"), b"native job output\n");
        std::fs::hard_link(m.join("data/out/result.txt"), m.join("data/result.txt")).unwrap();
        symlink("out/result.txt", m.join("data/latest")).unwrap();
        sparse(&m.join("data/sparse.bin"), 3 << 20);
        setfattr(&m.join("data/out/result.txt"), "user.origin", "native");
        std::fs::set_permissions(m.join("data/out"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    });
    assert!(!job.contains_key("/bin/ls") && job.contains_key("/bin/sh"));
    assert_eq!(job["/etc"].kind, "dir");
    assert_eq!(
        job.keys()
            .filter(|p| p.starts_with("/etc/"))
            .collect::<Vec<_>>(),
        ["/etc/passwd"]
    );
    assert_no_wh_names("the job's view", &job);

    let report = sealed_report(&image, &["--force"]);
    assert!(
        report["aufs_markers"]["whiteouts"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["aufs_markers"]["warnings"], serde_json::json!([]));
    let parts = partitions(&image);
    let sealed_part = parts
        .iter()
        .find(|(k, _)| *k == (1, 4))
        .expect("squashfs overlay")
        .1;
    assert_eq!(parts.iter().find(|(k, _)| *k == (1, 2)).unwrap().1, rootfs);

    // SingularityCE's native mode: the sealed overlay partition is a lower directory above
    // the root filesystem.
    for how in STACKS {
        let what = format!("{how:?}");
        let mut mounts = Mounts::new(&scratch.join(format!("sealed-{what}")));
        let merged = stack_sealed(&mut mounts, &image, &[sealed_part, rootfs], how);
        let sealed = view(&merged);
        mounts.unmount_all();
        assert_no_wh_names(&what, &sealed);
        assert_same_view(&what, &job, &sealed, how != Stack::Fuse);
    }
}

#[test]
fn mounts_are_undone_when_a_test_fails() {
    crate::require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().canonicalize().unwrap();
    let (tmpfs, squashfs);
    {
        let mut mounts = Mounts::new(&scratch);
        // A name with a space: mountinfo escapes it.
        tmpfs = mounts.kernel(&["-t".into(), "tmpfs".into(), "tmpfs".into()], "a b");
        let image = scratch.join("sample.oci.sif");
        std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();
        let (layers, _) = oci_layers(&image);
        squashfs = mounts.squashfs(&image, layers[0].0, layers[0].1, true, "fuse layer");
        assert!(mounted(&tmpfs) && mounted(&squashfs));
        assert!(squashfs.join("hello.txt").is_file());
        // A busy mount (a file open in it) falls back to a lazy unmount.
        let busy = std::fs::File::open(squashfs.join("hello.txt")).unwrap();
        std::mem::forget(busy);
        // Dropped without unmount_all, as when a test panics.
    }
    assert!(!mounted(&tmpfs) && !mounted(&squashfs));
}
