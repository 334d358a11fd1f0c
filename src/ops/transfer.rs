//! Registry operations: `push` (the OCI-SIF as stored, as tar layers, or the whole SIF as
//! an ORAS artifact), `pull` (`docker://` through `import`, `oras://` as the file itself),
//! `tags`, `catalog`, `delete`, `login`, `logout`.
//!
//! Blobs go on the wire straight from their byte ranges in the SIF; downloads stream into
//! temporary files beside the output, verified while they arrive; an output appears only
//! by a rename once everything checked out, so a failed command leaves nothing behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::Value;

use super::Image;
use super::export::{ExportDest, ExportOptions, LayerFormat, export};
use super::import::{ImportOptions, ImportReport, ImportSource, import};
use super::reconcile::{reconcile, reconciled_image};
use crate::digest::{Digest, hash_range};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::oci::layout::{LayoutDir, select_image};
use crate::oci::{Descriptor, Manifest, MediaType, Platform};
use crate::registry::auth::{Credentials, remove_credentials, store_credentials};
use crate::registry::reference::canonical_registry;
use crate::registry::{
    BlobAction, BlobSource, ClientOptions, FileRange, Reference, Repository, Transport,
};

/// The ORAS layer type of a whole SIF (SingularityCE).
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The legacy (misspelt) ORAS layer type old SingularityCE versions pushed.
pub const SIF_LAYER_LEGACY: &str = "appliciation/vnd.sylabs.sif.layer.tar";
/// The ORAS config type; the config is the two bytes `{}`.
pub const SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Registry connection and credentials.
    pub client: ClientOptions,
    /// `None`: the image as stored. `Some(Tar)`: the `export --layer-format tar` image.
    /// `Some(Squashfs)`: as stored, after checking every layer is squashfs.
    pub layer_format: Option<LayerFormat>,
    /// Push the whole SIF file as an ORAS artifact.
    pub oras: bool,
    /// Try a cross-repository mount from this repository of the same registry first.
    pub mount_from: Option<String>,
    /// Blobs uploaded at once (0 means 3).
    pub jobs: usize,
}

/// One blob of a push.
#[derive(Debug, Clone, Serialize)]
pub struct PushedBlob {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// What happened to it.
    pub action: BlobAction,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The image file pushed.
    pub image: String,
    /// Where it went.
    pub reference: String,
    /// `image`, `tar` or `oras`.
    pub mode: String,
    /// The pushed manifest's digest.
    pub manifest_digest: String,
    /// The pushed manifest's media type.
    pub media_type: String,
    /// Layers then config, in manifest order.
    pub blobs: Vec<PushedBlob>,
    /// Bytes uploaded (blobs the registry lacked).
    pub uploaded_bytes: u64,
    /// The writable overlay before the push: `none`, `in-sync`, `reconciled` (the file was
    /// updated first) or `reconciled-in-memory` (the file is read-only and was left alone).
    pub overlay: String,
}

/// A blob to push and where its bytes are.
struct Outgoing<'a> {
    descriptor: Descriptor,
    source: Box<dyn BlobSource + 'a>,
}

/// The image to push, ready: blobs (layers then config) and the manifest.
struct Prepared<'a> {
    blobs: Vec<Outgoing<'a>>,
    manifest_bytes: Vec<u8>,
    media_type: MediaType,
}

/// Whether `path` may be opened for writing (a read-only file or medium may not).
fn writable(path: &Path) -> Result<bool> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(true),
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                || e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io(format!("{}: opening", path.display()), e)),
    }
}

/// Push the image file `image` to `reference`.
pub fn push(image: &Path, reference: &Reference, options: &PushOptions) -> Result<PushReport> {
    if options.oras {
        return push_oras(image, reference, options);
    }
    if options.layer_format == Some(LayerFormat::Tar) {
        // The tar image is exported into a scratch layout (converted layers staged in
        // files, never in memory), then pushed like any layout.
        let staging = tempfile::Builder::new()
            .prefix("sifovl-push-")
            .tempdir()
            .context("creating a staging directory")?;
        let dir = staging.path().join("layout");
        export(
            image,
            &ExportDest::Layout { dir: dir.clone() },
            &ExportOptions {
                layer_format: LayerFormat::Tar,
                ..ExportOptions::default()
            },
        )?;
        let mut report = push_layout(&dir, None, reference, options)?;
        report.image = image.display().to_string();
        report.mode = "tar".into();
        return Ok(report);
    }

    // A stale overlay is reconciled first, as SingularityCE's push does; on a file that
    // cannot be written the reconciled image is pushed from memory instead. Everything
    // that can refuse the push (the layer check, the registry, the credentials) is asked
    // before, so a failed push leaves the file as it was.
    let mut overlay_state = "none";
    let mut in_memory = None;
    let repo;
    {
        let opened = Image::open_read(image)?;
        if opened.oci.is_none() {
            return Err(Error::unsupported(format!(
                "{}: a native SIF holds no OCI image; push the file as an ORAS artifact (oras://{})",
                opened.name,
                reference.name()
            )));
        }
        let oci = opened.require_oci()?;
        if options.layer_format == Some(LayerFormat::Squashfs)
            && let Some(bad) = oci
                .layers
                .iter()
                .find(|l| l.descriptor.media_type != MediaType::SquashfsLayer)
        {
            return Err(Error::refused(format!(
                "{}: layer {} is {}, not squashfs (seal the overlay first, or push without --layer-format)",
                opened.name, bad.descriptor.digest, bad.descriptor.media_type
            )));
        }
        repo = connect_for_push(reference, options)?;
        if let Some(layer) = oci.overlay() {
            if writable(image)? {
                drop(opened);
                let report = reconcile(image, false)?;
                overlay_state = if report.updated {
                    "reconciled"
                } else {
                    "in-sync"
                };
            } else {
                let actual = opened.hash_overlay()?;
                if oci.overlay_in_sync(layer, &actual) {
                    overlay_state = "in-sync";
                } else {
                    if layer.descriptor.size != layer.object_size {
                        return Err(Error::malformed(format!(
                            "{}: overlay object {} holds {} bytes but the manifest says {}",
                            opened.name, layer.object, layer.object_size, layer.descriptor.size
                        )));
                    }
                    let new = reconciled_image(oci, layer, &actual)
                        .map_err(|e| e.context(&opened.name))?;
                    in_memory = Some((actual, new));
                    overlay_state = "reconciled-in-memory";
                }
            }
        }
    }

    let opened = Image::open_read(image)?;
    let oci = opened.require_oci()?;
    let name = &opened.name;
    let (manifest_bytes, config_bytes, overlay_digest) = match &in_memory {
        Some((actual, new)) => (
            new.manifest_bytes.clone(),
            new.config_bytes.clone(),
            Some(*actual),
        ),
        None => (oci.manifest_bytes.clone(), oci.config_bytes.clone(), None),
    };
    let manifest = Manifest::parse(&manifest_bytes, &format!("{name}: manifest"))?;
    let mut blobs = Vec::new();
    for (i, (descriptor, layer)) in manifest.layers().iter().zip(&oci.layers).enumerate() {
        let is_overlay = i + 1 == oci.layers.len() && overlay_digest.is_some();
        if !is_overlay && layer.object_size != descriptor.size {
            return Err(Error::malformed(format!(
                "{name}: layer {} is {} bytes in the SIF but {} in the manifest",
                descriptor.digest, layer.object_size, descriptor.size
            )));
        }
        blobs.push(Outgoing {
            descriptor: descriptor.clone(),
            source: Box::new(FileRange {
                file: &opened.file,
                offset: layer.offset,
                len: descriptor.size,
            }),
        });
    }
    blobs.push(Outgoing {
        descriptor: manifest.config().clone(),
        source: Box::new(config_bytes),
    });
    let media_type = manifest
        .media_type()
        .unwrap_or_else(|| oci.image.descriptor.media_type.clone());
    let prepared = Prepared {
        blobs,
        manifest_bytes,
        media_type,
    };
    let mut report = send(&repo, name, prepared, reference, options)?;
    report.overlay = overlay_state.into();
    Ok(report)
}

/// Push the image of the OCI layout `dir` (the one image, or the one tagged `tag`).
pub fn push_layout(
    dir: &Path,
    tag: Option<&str>,
    reference: &Reference,
    options: &PushOptions,
) -> Result<PushReport> {
    let layout = LayoutDir::open(dir)?;
    let selected = select_image(&layout, tag, &Platform::host())?;
    let name = dir.display().to_string();
    let mut files = Vec::new();
    for layer in selected.manifest.layers() {
        let path = LayoutDir::blob_path(dir, &layer.digest);
        let file = File::open(&path).with_context(|| path.display())?;
        files.push((layer.clone(), file));
    }
    let mut blobs: Vec<Outgoing<'_>> = files
        .iter()
        .map(|(descriptor, file)| Outgoing {
            descriptor: descriptor.clone(),
            source: Box::new(FileRange {
                file,
                offset: 0,
                len: descriptor.size,
            }),
        })
        .collect();
    blobs.push(Outgoing {
        descriptor: selected.manifest.config().clone(),
        source: Box::new(selected.config_bytes.clone()),
    });
    let prepared = Prepared {
        blobs,
        manifest_bytes: selected.manifest_bytes.clone(),
        media_type: selected.media_type.clone(),
    };
    let repo = connect_for_push(reference, options)?;
    let mut report = send(&repo, &name, prepared, reference, options)?;
    report.overlay = "none".into();
    Ok(report)
}

/// Connect for a push, and make one authenticated request (a blob HEAD), so that wrong
/// credentials or an unreachable registry fail before anything local is touched.
fn connect_for_push(reference: &Reference, options: &PushOptions) -> Result<Repository> {
    let extra: Vec<String> = options.mount_from.iter().cloned().collect();
    let repo = Repository::connect(reference, true, &extra, &options.client)?;
    repo.blob_exists(&Digest::of(b"{}"))?;
    Ok(repo)
}

/// Upload the blobs the registry lacks (in parallel), then the manifest.
fn send(
    repo: &Repository,
    name: &str,
    prepared: Prepared<'_>,
    reference: &Reference,
    options: &PushOptions,
) -> Result<PushReport> {
    // A reference pinning another digest can never be satisfied: refuse before uploading.
    let manifest_digest = Digest::of(&prepared.manifest_bytes);
    if let Some(pinned) = reference.digest
        && pinned != manifest_digest
    {
        return Err(Error::refused(format!(
            "{reference}: the manifest to push is {manifest_digest}, not the digest the reference pins"
        )));
    }
    let jobs = match options.jobs {
        0 => 3,
        n => n,
    }
    .min(prepared.blobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<BlobAction>>>> =
        Mutex::new((0..prepared.blobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(blob) = prepared.blobs.get(i) else {
                        break;
                    };
                    let d = &blob.descriptor;
                    let label = format!("push {}", &d.digest.hex()[..12]);
                    let result = repo.push_blob(
                        &d.digest,
                        blob.source.as_ref(),
                        options.mount_from.as_deref(),
                        &label,
                    );
                    let failed = result.is_err();
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(result);
                    }
                    if failed {
                        // Let the other workers finish the blob they hold, take no more.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| Error::new(ErrorKind::Io, "a blob upload thread panicked"))?;
    let mut blobs = Vec::new();
    let mut uploaded_bytes = 0;
    for (blob, result) in prepared.blobs.iter().zip(results) {
        let Some(result) = result else { continue };
        let action = result.map_err(|e| e.context(name))?;
        if action == BlobAction::Uploaded {
            uploaded_bytes += blob.descriptor.size;
        }
        blobs.push(PushedBlob {
            digest: blob.descriptor.digest.to_string(),
            size: blob.descriptor.size,
            media_type: blob.descriptor.media_type.to_string(),
            action,
        });
    }
    if blobs.len() != prepared.blobs.len() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{name}: not every blob was uploaded"),
        ));
    }
    let digest = Digest::of(&prepared.manifest_bytes);
    let target = reference.manifest_reference();
    repo.put_manifest(&target, &prepared.manifest_bytes, &prepared.media_type)?;
    Ok(PushReport {
        image: name.to_string(),
        reference: reference.to_string(),
        mode: "image".into(),
        manifest_digest: digest.to_string(),
        media_type: prepared.media_type.to_string(),
        blobs,
        uploaded_bytes,
        overlay: String::new(),
    })
}

/// Go's `encoding/json` string: HTML-safe escapes as SingularityCE's manifests have them.
fn go_json_string(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The ORAS manifest SingularityCE 4.x pushes for a SIF of `size` bytes and `digest`.
pub fn oras_manifest(digest: &Digest, size: u64, title: &str) -> Vec<u8> {
    let config = Digest::of(b"{}");
    format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"{}","size":2,"digest":"{}"}},"#,
            r#""layers":[{{"mediaType":"{}","size":{},"digest":"{}","#,
            r#""annotations":{{"org.opencontainers.image.title":{}}}}}]}}"#
        ),
        SIF_CONFIG,
        config,
        SIF_LAYER,
        size,
        digest,
        go_json_string(title)
    )
    .into_bytes()
}

/// The whole SIF as an ORAS artifact (no overlay reconcile, no conversion).
fn push_oras(image: &Path, reference: &Reference, options: &PushOptions) -> Result<PushReport> {
    // Opening checks it is a SIF and holds a shared lock while we read.
    let opened = Image::open_read(image)?;
    let name = opened.name.clone();
    let size = opened
        .file
        .metadata()
        .with_context(|| image.display())?
        .len();
    let digest = hash_range(&opened.file, 0, size).map_err(|e| e.context(&name))?;
    let title = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest_bytes = oras_manifest(&digest, size, &title);
    let blobs = vec![
        Outgoing {
            descriptor: Descriptor {
                media_type: MediaType::parse(SIF_LAYER),
                size,
                digest,
            },
            source: Box::new(FileRange {
                file: &opened.file,
                offset: 0,
                len: size,
            }),
        },
        Outgoing {
            descriptor: Descriptor {
                media_type: MediaType::parse(SIF_CONFIG),
                size: 2,
                digest: Digest::of(b"{}"),
            },
            source: Box::new(b"{}".to_vec()),
        },
    ];
    let prepared = Prepared {
        blobs,
        manifest_bytes,
        media_type: MediaType::OciManifest,
    };
    let repo = connect_for_push(reference, options)?;
    let mut report = send(&repo, &name, prepared, reference, options)?;
    report.mode = "oras".into();
    report.overlay = "none".into();
    Ok(report)
}

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registry connection and credentials.
    pub client: ClientOptions,
    /// The platform to pick from a multi-platform image (`None`: the host's).
    pub platform: Option<Platform>,
    /// One squashfs layer per image layer (see `import`).
    pub keep_layers: bool,
    /// Replace the output if it exists.
    pub force: bool,
    /// The `created` time of the history entry a conversion writes (Unix seconds;
    /// `None` for now).
    pub created: Option<i64>,
    /// Blobs downloaded at once (0 means 3).
    pub jobs: usize,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// Where it came from.
    pub reference: String,
    /// The OCI-SIF or SIF written.
    pub output: String,
    /// `image` or `oras`.
    pub mode: String,
    /// The registry manifest's digest (of the platform's image, for a multi-platform one).
    pub source_manifest: String,
    /// Bytes downloaded (blobs).
    pub downloaded_bytes: u64,
    /// What `import` did, for a `docker://` pull.
    pub import: Option<ImportReport>,
}

/// Pull `reference` into the new file `out`.
pub fn pull(
    transport: Transport,
    reference: &Reference,
    out: &Path,
    options: &PullOptions,
) -> Result<PullReport> {
    if out.exists() && !options.force {
        return Err(Error::refused(format!(
            "{}: already exists (use --force to replace it)",
            out.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::not_found(format!(
            "{}: no such directory",
            parent.display()
        )));
    }
    let repo = Repository::connect(reference, false, &[], &options.client)?;
    match transport {
        Transport::Oras => pull_oras(&repo, reference, out, &parent, options),
        Transport::Docker => pull_image(&repo, reference, out, &parent, options),
    }
}

fn pull_oras(
    repo: &Repository,
    reference: &Reference,
    out: &Path,
    parent: &Path,
    options: &PullOptions,
) -> Result<PullReport> {
    let fetched = repo.get_manifest(&reference.manifest_reference())?;
    let what = format!("{reference}");
    let manifest = Manifest::parse(&fetched.bytes, &format!("{what}: manifest"))?;
    let layer = match manifest.layers() {
        [one] if matches!(one.media_type.as_str(), SIF_LAYER | SIF_LAYER_LEGACY) => one.clone(),
        layers => {
            let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(Error::unsupported(format!(
                "{what}: not a SIF ORAS artifact (one {SIF_LAYER} layer expected, found {types:?}); use docker:// for container images"
            )));
        }
    };
    // 0666 less the umask, as any new file (a temporary file alone would be 0600).
    let mut tmp = tempfile::Builder::new()
        .prefix(".sifovl-pull-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(parent)
        .with_context(|| parent.display())?;
    let label = format!("pull {}", &layer.digest.hex()[..12]);
    let n = repo.pull_blob(&layer.digest, Some(layer.size), tmp.as_file_mut(), &label)?;
    tmp.as_file()
        .sync_all()
        .with_context(|| tmp.path().display())?;
    super::objects::read_container(tmp.path(), tmp.as_file())
        .map_err(|e| Error::malformed(format!("{what}: the artifact is not a SIF ({e})")))?;
    persist(tmp, out, options.force)?;
    Ok(PullReport {
        reference: what,
        output: out.display().to_string(),
        mode: "oras".into(),
        source_manifest: fetched.digest.to_string(),
        downloaded_bytes: n,
        import: None,
    })
}

/// Rename the finished temporary file onto `out`.
fn persist(tmp: tempfile::NamedTempFile, out: &Path, force: bool) -> Result<()> {
    let result = if force {
        tmp.persist(out).map(|_| ())
    } else {
        tmp.persist_noclobber(out).map(|_| ())
    };
    result.map_err(|e| Error::io(format!("{}: writing", out.display()), e.error))
}

/// Pick the manifest for `platform` from an index or manifest list.
fn pick_platform(bytes: &[u8], platform: &Platform, what: &str) -> Result<(Digest, u64)> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| Error::malformed(format!("{what}: the index is not JSON")))?;
    let entries = value
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::malformed(format!("{what}: the index has no manifests")))?;
    let mut best: Option<(u8, &Value)> = None;
    for entry in entries {
        let media = entry.get("mediaType").and_then(Value::as_str).unwrap_or("");
        if !MediaType::parse(media).is_image_manifest() {
            continue;
        }
        let Some(score) = Platform::from_descriptor(entry).and_then(|p| p.score(platform)) else {
            continue;
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, entry));
        }
    }
    let (_, entry) =
        best.ok_or_else(|| Error::not_found(format!("{what}: no image for platform {platform}")))?;
    let d = Descriptor::from_json(entry, what)?;
    Ok((d.digest, d.size))
}

fn pull_image(
    repo: &Repository,
    reference: &Reference,
    out: &Path,
    parent: &Path,
    options: &PullOptions,
) -> Result<PullReport> {
    let what = reference.to_string();
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let mut fetched = repo.get_manifest(&reference.manifest_reference())?;
    if fetched.media_type.is_index() {
        let (digest, _) = pick_platform(&fetched.bytes, &platform, &what)?;
        fetched = repo.get_manifest(&digest.to_string())?;
    }
    if !fetched.media_type.is_image_manifest() {
        return Err(Error::unsupported(format!(
            "{what}: {} is not an image manifest{}",
            fetched.media_type,
            if fetched.media_type.as_str() == SIF_CONFIG {
                ""
            } else {
                " (an ORAS SIF is pulled with oras://)"
            }
        )));
    }
    let manifest = Manifest::parse(&fetched.bytes, &format!("{what}: manifest"))?;
    if manifest.layers().len() == 1
        && matches!(
            manifest.layers()[0].media_type.as_str(),
            SIF_LAYER | SIF_LAYER_LEGACY
        )
    {
        return Err(Error::unsupported(format!(
            "{what}: an ORAS SIF artifact; pull it with oras://"
        )));
    }

    // A scratch OCI layout beside the output: blobs verified as they arrive.
    let staging = tempfile::Builder::new()
        .prefix(".sifovl-pull-")
        .tempdir_in(parent)
        .with_context(|| parent.display())?;
    let dir = staging.path();
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).with_context(|| blobs_dir.display())?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| path.display())
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write(
        &format!("blobs/sha256/{}", fetched.digest.hex()),
        &fetched.bytes,
    )?;
    let mut wanted: Vec<Descriptor> = manifest.layers().to_vec();
    wanted.push(manifest.config().clone());
    wanted.dedup_by(|a, b| a.digest == b.digest);
    let jobs = match options.jobs {
        0 => 3,
        n => n,
    }
    .min(wanted.len().max(1));
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let total = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(d) = wanted.get(i) else { break };
                    let path = LayoutDir::blob_path(dir, &d.digest);
                    if path.exists() {
                        continue;
                    }
                    let result = File::create(&path)
                        .with_context(|| path.display())
                        .and_then(|mut file| {
                            let label = format!("pull {}", &d.digest.hex()[..12]);
                            repo.pull_blob(&d.digest, Some(d.size), &mut file, &label)
                        });
                    match result {
                        Ok(n) => {
                            total.fetch_add(n as usize, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if let Ok(mut errors) = errors.lock() {
                                errors.push(e);
                            }
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .ok()
        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)))
    {
        return Err(e);
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{}","size":{},"digest":"{}"}}]}}"#,
        fetched.media_type,
        fetched.bytes.len(),
        fetched.digest
    );
    write("index.json", index.as_bytes())?;
    let report = import(
        &ImportSource::Layout {
            dir: dir.to_path_buf(),
            reference: None,
        },
        out,
        &ImportOptions {
            keep_layers: options.keep_layers,
            platform: Some(platform),
            force: options.force,
            created: options.created,
            ..ImportOptions::default()
        },
    )?;
    Ok(PullReport {
        reference: what,
        output: out.display().to_string(),
        mode: "image".into(),
        source_manifest: fetched.digest.to_string(),
        downloaded_bytes: total.load(Ordering::Relaxed) as u64,
        import: Some(report),
    })
}

/// A repository's tags.
#[derive(Debug, Clone, Serialize)]
pub struct TagsReport {
    /// `host/repository`.
    pub repository: String,
    /// The tags, as the registry lists them.
    pub tags: Vec<String>,
}

/// List the tags of `reference`'s repository.
pub fn tags(reference: &Reference, options: &ClientOptions) -> Result<TagsReport> {
    let repo = Repository::connect(reference, false, &[], options)?;
    Ok(TagsReport {
        repository: reference.name(),
        tags: repo.tags()?,
    })
}

/// A registry's repositories.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogReport {
    /// The registry.
    pub registry: String,
    /// Repositories (those containing the filter text, when one was given).
    pub repositories: Vec<String>,
}

/// List the repositories of `registry` whose names contain `filter`.
pub fn catalog(
    registry: &str,
    filter: Option<&str>,
    options: &ClientOptions,
) -> Result<CatalogReport> {
    let registry = canonical_registry(registry);
    let mut repositories = crate::registry::catalog(&registry, options)?;
    if let Some(filter) = filter {
        let filter = filter.to_lowercase();
        repositories.retain(|r| r.to_lowercase().contains(&filter));
    }
    Ok(CatalogReport {
        registry,
        repositories,
    })
}

/// What a delete did.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    /// The reference given.
    pub reference: String,
    /// The manifest digest deleted (every tag pointing at it goes with it).
    pub digest: String,
}

/// Delete the manifest `reference` names (a tag is resolved to its digest first).
pub fn delete(reference: &Reference, options: &ClientOptions) -> Result<DeleteReport> {
    let repo = Repository::connect(reference, true, &[], options)?;
    let digest = repo.resolve(&reference.manifest_reference())?;
    repo.delete_manifest(&digest)?;
    Ok(DeleteReport {
        reference: reference.to_string(),
        digest: digest.to_string(),
    })
}

/// What login or logout did.
#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    /// The registry.
    pub registry: String,
    /// The auth file written.
    pub auth_file: String,
    /// The user (login), or whether an entry was removed (logout).
    pub username: Option<String>,
    /// Logout: whether the file had credentials for the registry.
    pub removed: bool,
}

/// Check `credentials` against `registry`, then store them in `auth_file`.
pub fn login(
    registry: &str,
    credentials: &Credentials,
    auth_file: &Path,
    options: &ClientOptions,
) -> Result<LoginReport> {
    let registry = canonical_registry(registry);
    let mut options = options.clone();
    options.credentials.explicit = Some(credentials.clone());
    let client = crate::registry::Client::connect(&registry, None, Vec::new(), &options)?;
    client.check_login()?;
    store_credentials(auth_file, &registry, credentials)?;
    Ok(LoginReport {
        registry,
        auth_file: auth_file.display().to_string(),
        username: Some(credentials.username.clone()),
        removed: false,
    })
}

/// Remove `registry`'s credentials from `auth_file`.
pub fn logout(registry: &str, auth_file: &Path) -> Result<LoginReport> {
    let registry = canonical_registry(registry);
    let removed = remove_credentials(auth_file, &registry)?;
    if !removed {
        return Err(Error::not_found(format!(
            "{}: no credentials for {registry}",
            auth_file.display()
        )));
    }
    Ok(LoginReport {
        registry,
        auth_file: auth_file.display().to_string(),
        username: None,
        removed,
    })
}
