//! Operations on one repository: blobs (exists, upload, download), manifests (get, put,
//! delete), tags; and the registry catalog. Blobs stream between a file range and the
//! socket through fixed buffers: memory does not grow with blob size.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

use super::client::{Client, ClientOptions, header, retry_after, retryable_status, urlencode};
use super::reference::Reference;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, ErrorKind, Result};
use crate::oci::MediaType;
use crate::progress;

/// Manifests larger than this are refused (the distribution registry's own limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 16 << 20;

/// Every manifest type we read, for `Accept` (distribution answers 404 without it).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Bytes of a blob to upload, readable from any offset (so an upload can resume).
pub trait BlobSource: Sync {
    /// The blob's length.
    fn len(&self) -> u64;
    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A reader of the blob's bytes from `offset` to `end`.
    fn reader(&self, offset: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>>;
}

/// A byte range of a file (a blob inside a SIF), read with positioned reads so several
/// uploads can share one file handle.
pub struct FileRange<'a> {
    /// The file.
    pub file: &'a File,
    /// Where the blob starts.
    pub offset: u64,
    /// The blob's length.
    pub len: u64,
}

struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than the blob",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl BlobSource for FileRange<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn reader(&self, offset: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(PositionedReader {
            file: self.file,
            pos: self.offset + offset,
            end: self.offset + end.min(self.len),
        }))
    }
}

impl BlobSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn reader(&self, offset: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        let end = (end as usize).min(<[u8]>::len(self));
        Ok(Box::new(&self[(offset as usize).min(end)..end]))
    }
}

impl BlobSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn reader(&self, offset: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        self.as_slice().reader(offset, end)
    }
}

/// What happened to one blob of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// The registry had it already (HEAD answered 200).
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The `Content-Type` the registry gave (or the manifest's own `mediaType`).
    pub media_type: MediaType,
    /// sha256 of the bytes (checked against the reference's digest and the registry's
    /// `Docker-Content-Digest`).
    pub digest: Digest,
}

/// One repository of a registry, authorised for pull (and push if asked).
pub struct Repository {
    client: Client,
    /// The repository path (`library/alpine`).
    pub name: String,
}

impl Repository {
    /// Connect for `reference`'s repository; `push` asks for push rights too, `extra_pull`
    /// adds pull rights on other repositories (cross-repository mounts).
    pub fn connect(
        reference: &Reference,
        push: bool,
        extra_pull: &[String],
        options: &ClientOptions,
    ) -> Result<Repository> {
        let actions = if push { "pull,push" } else { "pull" };
        let mut scopes = vec![format!("repository:{}:{actions}", reference.repository)];
        for other in extra_pull {
            scopes.push(format!("repository:{other}:pull"));
        }
        let client = Client::connect(
            &reference.registry,
            Some(&reference.repository),
            scopes,
            options,
        )?;
        Ok(Repository {
            client,
            name: reference.repository.clone(),
        })
    }

    /// The client (registry name, options).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn what(&self, object: impl std::fmt::Display) -> String {
        format!("{}/{}: {object}", self.client.registry(), self.name)
    }

    /// Whether the registry holds blob `digest` in this repository.
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool> {
        let url = self
            .client
            .url(&format!("/v2/{}/blobs/{digest}", self.name));
        let response = self
            .client
            .send_with_retries("HEAD", &url, &[], None, true)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self
                .client
                .status_error(&self.what(format!("blob {digest}")), response)),
        }
    }

    /// Upload blob `digest` unless the registry has it: HEAD, then (optionally a mount
    /// from `mount_from`) POST, PATCH (whole or in chunks), PUT `?digest=`. A dropped
    /// connection or a retryable status during a PATCH resumes from the offset the
    /// registry reports; 413 switches to smaller chunks. `label` names the blob in
    /// progress bars.
    pub fn push_blob(
        &self,
        digest: &Digest,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        label: &str,
    ) -> Result<BlobAction> {
        if self.blob_exists(digest)? {
            return Ok(BlobAction::Present);
        }
        let what = self.what(format!("blob {digest}"));
        let task = progress::task(label, source.len());
        // A resume after a dropped connection can leave the session holding more or
        // other bytes than we think; the registry then refuses the digest and the whole
        // blob is sent again in a fresh session. Registries that cannot resume a session
        // (distribution refuses its stale state token after a broken PATCH) also get a
        // fresh session.
        let attempts = self.client.options().attempts.max(1);
        let mut restarts = 0;
        loop {
            let mut location = match self.start_upload(digest, mount_from)? {
                Some(location) => location,
                None => return Ok(BlobAction::Mounted),
            };
            let resumed = match self.send_chunks(&mut location, source, &what, &*task)? {
                Some(resumed) => resumed,
                None if restarts + 1 < attempts => {
                    restarts += 1;
                    std::thread::sleep(self.client.backoff(restarts));
                    continue;
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: the upload was interrupted {attempts} times"),
                    ));
                }
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let url = self.client.url(&format!(
                "{location}{sep}digest={}",
                urlencode(&digest.to_string())
            ));
            let response = self
                .client
                .send_with_retries("PUT", &url, &[], None, true)?;
            match response.status().as_u16() {
                201 | 204 => {
                    if let Some(d) = header(&response, "docker-content-digest")
                        && d != digest.to_string()
                    {
                        return Err(Error::malformed(format!(
                            "{what}: the registry stored it as {d}"
                        )));
                    }
                    return Ok(BlobAction::Uploaded);
                }
                400 if resumed && restarts + 1 < attempts => {
                    restarts += 1;
                    continue;
                }
                400 => {
                    return Err(Error::malformed(format!(
                        "{what}: the registry refused the upload: the bytes sent do not hash to the digest (DIGEST_INVALID); was the file changed while pushing?"
                    )));
                }
                _ => return Err(self.client.status_error(&what, response)),
            }
        }
    }

    /// POST an upload session (or a mount). `None` when the mount succeeded.
    fn start_upload(&self, digest: &Digest, mount_from: Option<&str>) -> Result<Option<String>> {
        let mut path = format!("/v2/{}/blobs/uploads/", self.name);
        if let Some(from) = mount_from.filter(|f| *f != self.name) {
            path.push_str(&format!(
                "?mount={}&from={}",
                urlencode(&digest.to_string()),
                urlencode(from)
            ));
        }
        let url = self.client.url(&path);
        let response = self
            .client
            .send_with_retries("POST", &url, &[], None, true)?;
        match response.status().as_u16() {
            201 if mount_from.is_some() => Ok(None),
            202 => match header(&response, "location") {
                Some(location) => Ok(Some(location.to_string())),
                None => Err(Error::malformed(format!(
                    "{}: upload session without a Location",
                    self.what(format!("blob {digest}"))
                ))),
            },
            _ => Err(self.client.status_error(
                &self.what(format!("blob {digest}: starting the upload")),
                response,
            )),
        }
    }

    /// Send the blob's bytes to the upload session, updating `location` as the registry
    /// moves it. Returns whether any resume happened, or `None` when the session was lost
    /// (the registry no longer knows it after an interruption): start a new one.
    fn send_chunks(
        &self,
        location: &mut String,
        source: &dyn BlobSource,
        what: &str,
        task: &dyn progress::Task,
    ) -> Result<Option<bool>> {
        let options = self.client.options();
        let len = source.len();
        let mut chunk = options.chunk_size.filter(|c| *c > 0);
        let mut offset = 0u64;
        let mut failures = 0u32;
        let mut resumed = false;
        while offset < len {
            let end = chunk.map_or(len, |c| (offset + c).min(len));
            let start = offset;
            let make = move || -> io::Result<(Box<dyn Read + Send + '_>, u64)> {
                Ok((source.reader(start, end)?, end - start))
            };
            let mut headers = vec![("Content-Type", "application/octet-stream".to_string())];
            if chunk.is_some() {
                headers.push(("Content-Range", format!("{start}-{}", end - 1)));
            }
            let url = self.client.url(location);
            let outcome = self.client.send_once("PATCH", &url, &headers, Some(&make));
            let delay = match outcome {
                Ok(response) => match response.status().as_u16() {
                    202 | 204 => {
                        if let Some(l) = header(&response, "location") {
                            *location = l.to_string();
                        }
                        task.advance(end - start);
                        offset = end;
                        failures = 0;
                        continue;
                    }
                    413 => {
                        // A body limit (a proxy in front of the registry): smaller chunks.
                        let next = ((end - start) / 2).min(16 << 20);
                        if next < 1 << 10 {
                            return Err(self.client.status_error(what, response));
                        }
                        chunk = Some(next);
                        None
                    }
                    416 => None,
                    s if retryable_status(s) => Some(retry_after(&response)),
                    _ => return Err(self.client.status_error(what, response)),
                },
                // A dropped connection: ask the session where it stands.
                Err(super::client::RequestError::Transport(_, true)) => Some(None),
                Err(e) => return Err(e.into()),
            };
            if let Some(wait) = delay {
                failures += 1;
                if failures >= options.attempts.max(1) {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: upload failed {failures} times at byte {offset}"),
                    ));
                }
                std::thread::sleep(wait.unwrap_or_else(|| self.client.backoff(failures)));
            }
            // Ask the registry how much it has, and go on from there.
            let (new_location, received) = match self.upload_status(location, what) {
                Ok(status) => status,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(l) = new_location {
                *location = l;
            }
            if received > len {
                return Err(Error::malformed(format!(
                    "{what}: the registry reports {received} bytes received of {len}"
                )));
            }
            if received != offset {
                resumed = true;
            }
            task.advance(received.saturating_sub(offset));
            offset = received;
        }
        Ok(Some(resumed))
    }

    /// GET on the upload session: its `Range: 0-N` (N+1 bytes received; `0-0` is read as
    /// none, since distribution reports an empty session that way).
    fn upload_status(&self, location: &str, what: &str) -> Result<(Option<String>, u64)> {
        let url = self.client.url(location);
        let response = self
            .client
            .send_with_retries("GET", &url, &[], None, true)?;
        match response.status().as_u16() {
            204 | 202 | 200 => {
                let received = header(&response, "range").map_or(0, range_received);
                Ok((header(&response, "location").map(str::to_string), received))
            }
            _ => Err(self
                .client
                .status_error(&format!("{what}: upload status"), response)),
        }
    }

    /// Download blob `digest` into `out`, verifying its digest (and `size` when known)
    /// while streaming; a dropped connection resumes with a `Range` request. Nothing is
    /// buffered beyond a fixed block. Returns the byte count.
    pub fn pull_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        out: &mut dyn Write,
        label: &str,
    ) -> Result<u64> {
        let what = self.what(format!("blob {digest}"));
        let url = self
            .client
            .url(&format!("/v2/{}/blobs/{digest}", self.name));
        let task = progress::task(label, size.unwrap_or(0));
        let mut sink = HashingWriter::new(out);
        let mut failures = 0u32;
        let options = self.client.options();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let done = sink.count();
            let mut headers = Vec::new();
            if done > 0 {
                headers.push(("Range", format!("bytes={done}-")));
            }
            let response = self
                .client
                .send_with_retries("GET", &url, &headers, None, true);
            let mut response = match response {
                Ok(r) => r,
                Err(e) if failures + 1 < options.attempts && e.kind() == ErrorKind::Io => {
                    failures += 1;
                    std::thread::sleep(self.client.backoff(failures));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = response.status().as_u16();
            let mut skip = match status {
                200 => done,
                206 => {
                    let start = header(&response, "content-range")
                        .and_then(|r| r.trim().strip_prefix("bytes "))
                        .and_then(|r| r.split('-').next())
                        .and_then(|s| s.parse::<u64>().ok());
                    if start != Some(done) {
                        return Err(Error::malformed(format!(
                            "{what}: the registry resumed at the wrong offset"
                        )));
                    }
                    0
                }
                _ => return Err(self.client.status_error(&what, response)),
            };
            let mut reader = response.body_mut().with_config().reader();
            let interrupted = loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                };
                let mut chunk = &buf[..n];
                if skip > 0 {
                    let k = (skip as usize).min(chunk.len());
                    skip -= k as u64;
                    chunk = &chunk[k..];
                }
                if let Some(size) = size
                    && sink.count() + chunk.len() as u64 > size
                {
                    return Err(Error::malformed(format!(
                        "{what}: the registry sent more than the {size} bytes the manifest says"
                    )));
                }
                sink.write_all(chunk)
                    .map_err(|e| Error::io(format!("{what}: writing"), e))?;
                task.advance(chunk.len() as u64);
            };
            match interrupted {
                None => break,
                Some(e) => {
                    failures += 1;
                    if failures >= options.attempts.max(1) {
                        return Err(Error::io(format!("{what}: download failed"), e));
                    }
                    std::thread::sleep(self.client.backoff(failures));
                }
            }
        }
        let got = sink.digest();
        if got != *digest {
            return Err(Error::malformed(format!(
                "{what}: the downloaded bytes hash to {got}; refused"
            )));
        }
        if let Some(size) = size
            && sink.count() != size
        {
            return Err(Error::malformed(format!(
                "{what}: {} bytes downloaded, the manifest says {size}",
                sink.count()
            )));
        }
        Ok(sink.count())
    }

    /// GET a manifest by tag or digest, with every manifest type accepted. The digest is
    /// checked against the reference's and the registry's `Docker-Content-Digest`.
    pub fn get_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let what = self.what(format!("manifest {reference}"));
        let url = self
            .client
            .url(&format!("/v2/{}/manifests/{reference}", self.name));
        let headers = [("Accept", MANIFEST_ACCEPT.to_string())];
        let mut response = self
            .client
            .send_with_retries("GET", &url, &headers, None, true)?;
        if response.status().as_u16() != 200 {
            return Err(self.client.status_error(&what, response));
        }
        let claimed = header(&response, "docker-content-digest").map(str::to_string);
        let content_type = header(&response, "content-type").map(str::to_string);
        let bytes = read_limited(&mut response, MAX_MANIFEST, &what)?;
        let digest = Digest::of(&bytes);
        if let Ok(pinned) = Digest::parse(reference)
            && pinned != digest
        {
            return Err(Error::malformed(format!(
                "{what}: the registry sent bytes that hash to {digest}; refused"
            )));
        }
        if let Some(claimed) = claimed
            && claimed != digest.to_string()
        {
            return Err(Error::malformed(format!(
                "{what}: the registry says {claimed} but the bytes hash to {digest}; refused"
            )));
        }
        let own_type = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            v.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let media_type = own_type
            .or(content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
            .map(|t| MediaType::parse(&t))
            .unwrap_or(MediaType::OciManifest);
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// PUT manifest `bytes` under `reference` (a tag or its digest) with its media type;
    /// the registry's `Docker-Content-Digest` must be the bytes' digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &MediaType,
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let what = self.what(format!("manifest {reference}"));
        let url = self
            .client
            .url(&format!("/v2/{}/manifests/{reference}", self.name));
        let headers = [("Content-Type", media_type.as_str().to_string())];
        let make = || -> io::Result<(Box<dyn Read + Send + '_>, u64)> {
            Ok((Box::new(bytes), bytes.len() as u64))
        };
        let response = self
            .client
            .send_with_retries("PUT", &url, &headers, Some(&make), true)?;
        match response.status().as_u16() {
            200..=202 => {
                if let Some(d) = header(&response, "docker-content-digest")
                    && d != digest.to_string()
                {
                    return Err(Error::malformed(format!(
                        "{what}: the registry stored it as {d}, not {digest}"
                    )));
                }
                Ok(digest)
            }
            _ => Err(self.client.status_error(&what, response)),
        }
    }

    /// The digest of the manifest `reference` names (HEAD), for deletion by tag.
    pub fn resolve(&self, reference: &str) -> Result<Digest> {
        if let Ok(d) = Digest::parse(reference) {
            return Ok(d);
        }
        let what = self.what(format!("manifest {reference}"));
        let url = self
            .client
            .url(&format!("/v2/{}/manifests/{reference}", self.name));
        let headers = [("Accept", MANIFEST_ACCEPT.to_string())];
        let response = self
            .client
            .send_with_retries("HEAD", &url, &headers, None, true)?;
        if response.status().as_u16() != 200 {
            return Err(self.client.status_error(&what, response));
        }
        match header(&response, "docker-content-digest").map(Digest::parse) {
            Some(Ok(d)) => Ok(d),
            // No digest header: fetch and hash.
            _ => Ok(self.get_manifest(reference)?.digest),
        }
    }

    /// DELETE the manifest `digest`.
    pub fn delete_manifest(&self, digest: &Digest) -> Result<()> {
        let what = self.what(format!("manifest {digest}"));
        let url = self
            .client
            .url(&format!("/v2/{}/manifests/{digest}", self.name));
        let response = self
            .client
            .send_with_retries("DELETE", &url, &[], None, true)?;
        match response.status().as_u16() {
            200 | 202 | 204 => Ok(()),
            405 => Err(Error::unsupported(format!(
                "{what}: the registry does not allow deleting (405; distribution needs storage.delete.enabled)"
            ))),
            _ => Err(self.client.status_error(&what, response)),
        }
    }

    /// Every tag of the repository (following `Link` pagination).
    pub fn tags(&self) -> Result<Vec<String>> {
        let what = self.what("tags");
        paginate(
            &self.client,
            &format!("/v2/{}/tags/list?n=1000", self.name),
            "tags",
            &what,
        )
    }
}

/// The repositories of a registry (`/v2/_catalog`, following `Link` pagination).
pub fn catalog(registry: &str, options: &ClientOptions) -> Result<Vec<String>> {
    let client = Client::connect(registry, None, vec!["registry:catalog:*".into()], options)?;
    let what = format!("{registry}: catalog");
    paginate(&client, "/v2/_catalog?n=1000", "repositories", &what).map_err(|e| {
        if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::Unsupported {
            Error::unsupported(format!(
                "{what}: the registry does not offer a catalog ({e})"
            ))
        } else {
            e
        }
    })
}

/// GET `path` and the pages its `Link: <…>; rel="next"` headers lead to, collecting the
/// string array `field` of each JSON page.
fn paginate(client: &Client, path: &str, field: &str, what: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut next = Some(path.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(Error::malformed(format!("{what}: endless pagination")));
        }
        let url = client.url(&path);
        let mut response = client.send_with_retries("GET", &url, &[], None, true)?;
        if response.status().as_u16() != 200 {
            return Err(client.status_error(what, response));
        }
        next = header(&response, "link").and_then(next_link);
        let bytes = read_limited(&mut response, 64 << 20, what)?;
        out.extend(page_items(&bytes, field, what)?);
    }
    Ok(out)
}

/// The strings of the array `field` of one JSON page (`tags` of a tag list, `repositories`
/// of a catalog); an absent field is an empty page, other values in the array are skipped.
pub fn page_items(bytes: &[u8], field: &str, what: &str) -> Result<Vec<String>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| Error::malformed(format!("{what}: the registry sent invalid JSON")))?;
    Ok(value
        .get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// The bytes an upload session holds by its `Range: 0-N` header (N+1; `0-0` is read as
/// none, since distribution reports an empty session that way; unreadable is none).
pub fn range_received(range: &str) -> u64 {
    range
        .trim()
        .split_once('-')
        .and_then(|(_, end)| end.trim().parse::<u64>().ok())
        .map_or(0, |end| if end == 0 { 0 } else { end.saturating_add(1) })
}

/// The target of `Link: <url>; rel="next"`.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Read a response body of at most `limit` bytes.
fn read_limited(response: &mut Response<Body>, limit: u64, what: &str) -> Result<Vec<u8>> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: reading the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(range_received("0-0"), 0);
        assert_eq!(range_received(" 0-4095 "), 4096);
        assert_eq!(range_received("bytes"), 0);
        // A hostile registry's largest end: no overflow (a panic in debug builds).
        assert_eq!(range_received("0-18446744073709551615"), u64::MAX);
    }

    #[test]
    fn pages_keep_only_strings() {
        let page = br#"{"name":"r","tags":["a",1,null,"b"]}"#;
        assert_eq!(page_items(page, "tags", "tags").unwrap(), ["a", "b"]);
        assert!(page_items(b"{}", "tags", "tags").unwrap().is_empty());
        let err = page_items(b"[", "tags", "tags of r").unwrap_err();
        assert_eq!(err.to_string(), "tags of r: the registry sent invalid JSON");
    }

    #[test]
    fn file_ranges_read_their_window() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let range = FileRange {
            file: &f,
            offset: 2,
            len: 5,
        };
        let mut s = String::new();
        range.reader(1, 4).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "345");
        let bytes: &[u8] = b"abcdef";
        let mut s = String::new();
        bytes
            .reader(2, 100)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "cdef");
    }
}
