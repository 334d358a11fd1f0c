//! One integration-test binary; each module covers one part of sifovl.

mod util;

mod cli;
mod coverage;
mod crash;
mod ext;
mod ext_journal;
mod ext_write;
mod fuse_stack;
mod grow;
mod import;
mod layering;
mod ocisif;
mod recover_overlay;
mod registry;
mod reliability;
mod seal;
mod shrink;
mod sif;
mod sifcheck;
mod signatures;
mod soak;
mod squashfs;
mod tar;
mod tree;
mod view;
mod whiteout;
