//! Registry commands: push, pull, tags, catalog, delete, login, logout. Argument parsing
//! and the environment (credentials, auth file locations) here; the work in ops::transfer.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use sifovl::Result;
use sifovl::error::Error;
use sifovl::oci::Platform;
use sifovl::ops::export::LayerFormat;
use sifovl::ops::transfer;
use sifovl::registry::auth::default_auth_files;
use sifovl::registry::{ClientOptions, CredentialSources, Credentials, Reference, Transport};

use super::Outcome;
use super::output::{emit, outln};

/// How to reach a registry: shared by every registry command.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Registry user name (the password is read from standard input with --password-stdin,
    /// or taken from SINGULARITY_DOCKER_PASSWORD).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password (or token) from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Docker-format auth file to use instead of the default ones.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Speak plain HTTP (automatic for localhost, 127.0.0.1 and ::1).
    #[arg(long)]
    pub plain_http: bool,
    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file too.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn read_password_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Error::io("reading the password from standard input", e))?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Error::refused("--password-stdin: standard input is empty"));
    }
    Ok(password)
}

impl ConnectArgs {
    /// Client options: explicit credentials (flags, then SINGULARITY_DOCKER_USERNAME and
    /// _PASSWORD), the auth files (--authfile alone, else the default list), TLS choices.
    fn options(&self) -> Result<ClientOptions> {
        let explicit = match (&self.username, self.password_stdin) {
            (Some(user), true) => Some(Credentials {
                username: user.clone(),
                secret: read_password_stdin()?,
            }),
            (Some(user), false) => match std::env::var("SINGULARITY_DOCKER_PASSWORD") {
                Ok(secret) if !secret.is_empty() => Some(Credentials {
                    username: user.clone(),
                    secret,
                }),
                _ => {
                    return Err(Error::refused(
                        "--username needs --password-stdin (or SINGULARITY_DOCKER_PASSWORD)",
                    ));
                }
            },
            (None, true) => {
                return Err(Error::refused("--password-stdin needs --username"));
            }
            (None, false) => match (
                std::env::var("SINGULARITY_DOCKER_USERNAME"),
                std::env::var("SINGULARITY_DOCKER_PASSWORD"),
            ) {
                (Ok(u), Ok(p)) if !u.is_empty() && !p.is_empty() => Some(Credentials {
                    username: u,
                    secret: p,
                }),
                _ => None,
            },
        };
        let auth_files = match &self.authfile {
            Some(file) => vec![file.clone()],
            None => default_auth_files(
                env_path("HOME").as_deref(),
                env_path("DOCKER_CONFIG").as_deref(),
                env_path("XDG_RUNTIME_DIR").as_deref(),
            ),
        };
        Ok(ClientOptions {
            credentials: CredentialSources {
                explicit,
                auth_files,
            },
            plain_http: self.plain_http,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            ..ClientOptions::default()
        })
    }

    /// The auth file login/logout write: --authfile, else $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json.
    fn login_file(&self) -> Result<PathBuf> {
        if let Some(file) = &self.authfile {
            return Ok(file.clone());
        }
        if let Some(dir) = env_path("DOCKER_CONFIG") {
            return Ok(dir.join("config.json"));
        }
        env_path("HOME")
            .map(|home| home.join(".docker/config.json"))
            .ok_or_else(|| Error::refused("HOME is not set; give --authfile"))
    }
}

#[derive(Args)]
#[command(
    after_help = "REFERENCE is docker://HOST[:PORT]/REPO[:TAG] (the OCI image) or
oras://HOST[:PORT]/REPO[:TAG] (the whole SIF file as an ORAS artifact, as SingularityCE's
`push IMAGE oras://…`). By default the image goes as it is stored: squashfs layers, an ext3
overlay as an ext3 layer, manifest bytes (and digest) as in the SIF. A changed overlay is
reconciled first; on a read-only file the reconciled image is pushed from memory. Only blobs
the registry lacks are uploaded.

Examples:
  sifovl push app.oci.sif docker://registry.example.org/team/app:v1
  sifovl push --layer-format tar app.oci.sif docker://registry.example.org/team/app:v1-docker
  sifovl push app.sif oras://registry.example.org/team/app:sif
  echo \"$TOKEN\" | sifovl push -u me --password-stdin app.oci.sif docker://ghcr.io/me/app:v1"
)]
pub struct PushArgs {
    /// The SIF or OCI-SIF file to push.
    pub image: PathBuf,
    /// Where to push it.
    pub reference: String,
    /// Push the whole SIF file as an ORAS artifact (implied by oras://).
    #[arg(long)]
    pub oras: bool,
    /// Layer format: `squashfs` checks the layers are all squashfs and pushes them as
    /// stored; `tar` pushes the Docker/Podman-runnable `export --layer-format tar` image.
    #[arg(long, value_name = "FORMAT", value_parser = ["squashfs", "tar"])]
    pub layer_format: Option<String>,
    /// Try mounting blobs from this repository of the same registry first.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
    /// Upload in PATCH requests of at most this size (for registries or proxies with body
    /// limits): MiB, or with a K, M or G suffix. Without it a blob goes in one request,
    /// and a 413 answer switches to chunks by itself.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `N` (MiB) or `N[KMG]` as bytes.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (number, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 20),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && n.leading_zeros() > shift => Ok(n << shift),
        _ => Err(format!(
            "{text:?}: expected a size such as 64 (MiB), 512K or 1G"
        )),
    }
}

fn parse_reference(text: &str) -> Result<(Transport, Reference)> {
    Reference::parse_with_transport(text)
}

pub fn push(args: PushArgs) -> Result<Outcome> {
    let (transport, reference) = parse_reference(&args.reference)?;
    let mut client = args.connect.options()?;
    client.chunk_size = args.chunk_size;
    let layer_format = match args.layer_format.as_deref() {
        Some("tar") => Some(LayerFormat::Tar),
        Some(_) => Some(LayerFormat::Squashfs),
        None => None,
    };
    let oras = args.oras || transport == Transport::Oras;
    if oras && layer_format.is_some() {
        return Err(Error::refused(
            "--layer-format does not apply to an ORAS push (the SIF goes as it is)",
        ));
    }
    let options = transfer::PushOptions {
        client,
        layer_format,
        oras,
        mount_from: args.mount_from,
        jobs: args.jobs,
    };
    let report = transfer::push(&args.image, &reference, &options)?;
    emit(args.json, &report, |r| {
        let uploaded = r
            .blobs
            .iter()
            .filter(|b| b.action == sifovl::registry::BlobAction::Uploaded)
            .count();
        let mut text = format!(
            "{}: pushed to {} ({}), manifest {}: {uploaded} of {} blobs uploaded ({} bytes)",
            r.image,
            r.reference,
            r.mode,
            r.manifest_digest,
            r.blobs.len(),
            r.uploaded_bytes
        );
        match r.overlay.as_str() {
            "reconciled" => text.push_str("; overlay reconciled first"),
            "reconciled-in-memory" => text
                .push_str("; overlay reconciled in memory (the file is read-only, left as it was)"),
            _ => {}
        }
        text
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "docker://REF imports the image (as `sifovl import` does: an
all-squashfs image is stored unmodified, other images are squashed into one squashfs layer
unless --keep-layers). oras://REF downloads a SIF pushed as an ORAS artifact. Every blob's
digest is verified while it downloads; OUT appears only when everything checked out.

Examples:
  sifovl pull docker://registry.example.org/team/app:v1 app.oci.sif
  sifovl pull --platform linux/arm64 docker://alpine:3 alpine-arm64.oci.sif
  sifovl pull oras://registry.example.org/team/app:sif app.sif"
)]
pub struct PullArgs {
    /// What to pull: docker://REF or oras://REF.
    pub reference: String,
    /// The SIF to write.
    pub output: PathBuf,
    /// Platform to pick from a multi-platform image (os/arch[/variant]; default: this
    /// machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// One squashfs layer per image layer instead of one squashed layer.
    #[arg(long)]
    pub keep_layers: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn pull(args: PullArgs) -> Result<Outcome> {
    let (transport, reference) = parse_reference(&args.reference)?;
    let options = transfer::PullOptions {
        client: args.connect.options()?,
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        keep_layers: args.keep_layers,
        force: args.force,
        created: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok()),
        jobs: 0,
    };
    let report = transfer::pull(transport, &reference, &args.output, &options)?;
    if let Some(import) = &report.import {
        for warning in &import.warnings {
            eprintln!("sifovl: warning: {warning}");
        }
    }
    emit(args.json, &report, |r| {
        format!(
            "{}: pulled from {} ({}), {} bytes downloaded, source manifest {}",
            r.output, r.reference, r.mode, r.downloaded_bytes, r.source_manifest
        )
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl tags docker://registry.example.org/team/app
  sifovl tags --json docker://127.0.0.1:5000/app")]
pub struct TagsArgs {
    /// The repository: docker://HOST[:PORT]/REPO.
    pub repository: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn tags(args: TagsArgs) -> Result<Outcome> {
    let (_, reference) = parse_reference(&args.repository)?;
    let report = transfer::tags(&reference, &args.connect.options()?)?;
    if args.json {
        emit(true, &report, |_| String::new())?;
    } else {
        for tag in &report.tags {
            outln!("{tag}")?;
        }
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Lists the repositories of a registry (its /v2/_catalog; many
public registries do not offer it).

Examples:
  sifovl catalog registry.example.org
  sifovl catalog --filter team/ 127.0.0.1:5000"
)]
pub struct CatalogArgs {
    /// The registry: HOST[:PORT].
    pub registry: String,
    /// Only repositories whose name contains this text (case-insensitive).
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn catalog(args: CatalogArgs) -> Result<Outcome> {
    let report = transfer::catalog(
        &args.registry,
        args.filter.as_deref(),
        &args.connect.options()?,
    )?;
    if args.json {
        emit(true, &report, |_| String::new())?;
    } else {
        for repository in &report.repositories {
            outln!("{repository}")?;
        }
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Deletes the manifest a tag or digest names (every tag pointing at
it goes with it). Registries must allow it (distribution: storage.delete.enabled).

Examples:
  sifovl delete docker://registry.example.org/team/app:old
  sifovl delete docker://127.0.0.1:5000/app@sha256:…"
)]
pub struct DeleteArgs {
    /// The manifest: docker://HOST[:PORT]/REPO[:TAG|@DIGEST].
    pub reference: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn delete(args: DeleteArgs) -> Result<Outcome> {
    let (_, reference) = parse_reference(&args.reference)?;
    let report = transfer::delete(&reference, &args.connect.options()?)?;
    emit(args.json, &report, |r| {
        format!("{}: deleted manifest {}", r.reference, r.digest)
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Checks the credentials against the registry, then stores them in a
Docker-format auth file (--authfile, else $DOCKER_CONFIG/config.json, else
~/.docker/config.json), which push and pull read.

Examples:
  echo \"$PASSWORD\" | sifovl login --username me --password-stdin registry.example.org
  sifovl logout registry.example.org"
)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT].
    pub registry: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn login(args: LoginArgs) -> Result<Outcome> {
    let (Some(username), true) = (&args.connect.username, args.connect.password_stdin) else {
        return Err(Error::refused(
            "login needs --username and --password-stdin",
        ));
    };
    let credentials = Credentials {
        username: username.clone(),
        secret: read_password_stdin()?,
    };
    let file = args.connect.login_file()?;
    let mut options = args.connect.clone();
    options.username = None;
    options.password_stdin = false;
    let report = transfer::login(&args.registry, &credentials, &file, &options.options()?)?;
    emit(args.json, &report, |r| {
        format!(
            "{}: logged in, credentials stored in {}",
            r.registry, r.auth_file
        )
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(after_help = "Example:
  sifovl logout registry.example.org")]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT].
    pub registry: String,
    /// The auth file (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn logout(args: LogoutArgs) -> Result<Outcome> {
    let connect = ConnectArgs {
        username: None,
        password_stdin: false,
        authfile: args.authfile.clone(),
        plain_http: false,
        insecure: false,
        ca_file: None,
    };
    let file = connect.login_file()?;
    let report = transfer::logout(&args.registry, Path::new(&file))?;
    emit(args.json, &report, |r| {
        format!("{}: credentials removed from {}", r.registry, r.auth_file)
    })?;
    Ok(Outcome::Success)
}
