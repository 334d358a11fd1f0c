//! siftool-compatible commands: list, info, header, dump.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use clap::Args;

use sifovl::error::{Error, ResultExt};
use sifovl::ops::open_for_read;
use sifovl::sif::siftool;
use sifovl::{ErrorKind, Result};

use super::{Outcome, print_json};

#[derive(Args)]
#[command(
    after_help = "Output is byte-identical to `siftool list`.\n\nExample:\n  sifovl list image.sif"
)]
pub struct ListArgs {
    pub image: PathBuf,
    /// Print the objects as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn list(args: ListArgs) -> Result<Outcome> {
    let (_file, container) = open_for_read(&args.image)?;
    if args.json {
        let objects: Vec<_> = container.objects().map(siftool::ObjectJson::new).collect();
        print_json(&objects);
    } else {
        print!("{}", siftool::list(&container));
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Output is byte-identical to `siftool info`.\n\nExample:\n  sifovl info 1 image.sif"
)]
pub struct InfoArgs {
    /// Object ID (see `sifovl list`).
    pub id: u32,
    pub image: PathBuf,
    /// Print the object as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn info(args: InfoArgs) -> Result<Outcome> {
    let (_file, container) = open_for_read(&args.image)?;
    let ctx = |e: Error| e.context(args.image.display());
    if container.objects().next().is_none() {
        return Err(ctx(Error::not_found("no objects in image")));
    }
    if args.json {
        let d = container.object(args.id).map_err(ctx)?;
        print_json(&siftool::ObjectJson::new(d));
    } else {
        print!("{}", siftool::info(&container, args.id).map_err(ctx)?);
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Output is byte-identical to `siftool header`.\n\nExample:\n  sifovl header image.sif"
)]
pub struct HeaderArgs {
    pub image: PathBuf,
    /// Print the header as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn header(args: HeaderArgs) -> Result<Outcome> {
    let (_file, container) = open_for_read(&args.image)?;
    if args.json {
        print_json(&siftool::HeaderJson::new(&container));
    } else {
        print!("{}", siftool::header(&container));
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Writes the object's raw bytes to standard output, as `siftool dump`.\n\nExample:\n  sifovl dump 3 image.oci.sif | jq ."
)]
pub struct DumpArgs {
    pub id: u32,
    pub image: PathBuf,
}

pub fn dump(args: DumpArgs) -> Result<Outcome> {
    let (file, container) = open_for_read(&args.image)?;
    let d = container
        .object(args.id)
        .map_err(|e| e.context(args.image.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < d.size {
        let n = (d.size - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], d.offset + done)
            .with_context(|| format!("{}: object {}", args.image.display(), args.id))?;
        match out.write_all(&buf[..n]) {
            Ok(()) => {}
            // A closed pipe (`| head`) is the reader's choice, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Outcome::Success),
            Err(e) => return Err(Error::io("writing to standard output", e)),
        }
        done += n as u64;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::new(ErrorKind::Io, e.to_string()))
        }
        _ => Ok(Outcome::Success),
    }
}
