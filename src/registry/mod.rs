//! A small synchronous OCI distribution client: enough of the registry API to push and
//! pull OCI-SIF images and ORAS artifacts, list tags and repositories, and delete
//! manifests, streaming every blob between a file and the socket in bounded memory.
//!
//! * [`reference`](mod@reference): `docker://host[:port]/repo[:tag|@digest]`, Docker Hub's defaults.
//! * [`auth`]: credentials (explicit, auth files, credential helpers), login/logout.
//! * [`client`]: the HTTP client: scheme choice, TLS, challenges, tokens, retries.
//! * [`repo`]: blobs, manifests, tags, catalog.
//!
//! Memory: each blob transfer holds one fixed buffer (256 KiB down; ureq's
//! send buffers up), whatever the blob's size; manifests are read whole up to 16 MiB.
//! docs/registry.md explains the choices.

pub mod auth;
pub mod client;
pub mod reference;
pub mod repo;

pub use auth::{CredentialSources, Credentials};
pub use client::{Client, ClientOptions};
pub use reference::{Reference, Transport};
pub use repo::{BlobAction, BlobSource, FetchedManifest, FileRange, Repository, catalog};
