//! siftool-compatible commands: list, info, header, dump.

use std::path::PathBuf;

use clap::Args;

use sifovl::Result;
use sifovl::error::Error;
use sifovl::ops::objects::{self, open_container};
use sifovl::sif::siftool;

use super::Outcome;
use super::output::{print_json, write_out};

#[derive(Args)]
#[command(
    after_help = "Output is byte-identical to `siftool list`.\n\nExample:\n  sifovl list image.sif"
)]
pub struct ListArgs {
    /// The SIF image.
    pub image: PathBuf,
    /// Print the objects as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn list(args: ListArgs) -> Result<Outcome> {
    let (_file, container) = open_container(&args.image)?;
    if args.json {
        let objects: Vec<_> = container.objects().map(siftool::ObjectJson::new).collect();
        print_json(&objects)?;
    } else {
        write_out(&siftool::list(&container))?;
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
    /// The SIF image.
    pub image: PathBuf,
    /// Print the object as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn info(args: InfoArgs) -> Result<Outcome> {
    let (_file, container) = open_container(&args.image)?;
    let ctx = |e: Error| e.context(args.image.display());
    if container.objects().next().is_none() {
        return Err(ctx(Error::not_found("no objects in image")));
    }
    if args.json {
        let d = container.object(args.id).map_err(ctx)?;
        print_json(&siftool::ObjectJson::new(d))?;
    } else {
        write_out(&siftool::info(&container, args.id).map_err(ctx)?)?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Output is byte-identical to `siftool header`.\n\nExample:\n  sifovl header image.sif"
)]
pub struct HeaderArgs {
    /// The SIF image.
    pub image: PathBuf,
    /// Print the header as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn header(args: HeaderArgs) -> Result<Outcome> {
    let (_file, container) = open_container(&args.image)?;
    if args.json {
        print_json(&siftool::HeaderJson::new(&container))?;
    } else {
        write_out(&siftool::header(&container))?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Writes the object's raw bytes to standard output, as `siftool dump`.\n\nExample:\n  sifovl dump 3 image.oci.sif | jq ."
)]
pub struct DumpArgs {
    /// Object ID (see `sifovl list`).
    pub id: u32,
    /// The SIF image.
    pub image: PathBuf,
}

pub fn dump(args: DumpArgs) -> Result<Outcome> {
    objects::dump(&args.image, args.id, &mut std::io::stdout().lock())?;
    Ok(Outcome::Success)
}
