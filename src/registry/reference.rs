//! Image references as users write them: `docker://host[:port]/repo[:tag][@digest]`, with
//! Docker's defaults (no host means Docker Hub, a one-part Hub repository gets `library/`,
//! no tag means `latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry Docker Hub's API lives on; `docker.io` and `index.docker.io` map to it.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// The key Docker writes Hub credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A parsed `docker://` or `oras://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` of the registry, after the Docker Hub mapping.
    pub registry: String,
    /// The repository path inside the registry (`library/alpine`).
    pub repository: String,
    /// The tag, when the reference names one (`latest` when it names neither tag nor digest).
    pub tag: Option<String>,
    /// The manifest digest, when the reference pins one.
    pub digest: Option<Digest>,
}

/// The transports a reference may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `docker://`: an OCI/Docker image.
    Docker,
    /// `oras://`: the whole SIF as an ORAS artifact.
    Oras,
}

impl Reference {
    /// Parse `[docker://|oras://]host[:port]/repo[:tag][@sha256:…]`. Returns the transport
    /// the prefix named (`Docker` when there is none).
    pub fn parse_with_transport(text: &str) -> Result<(Transport, Reference)> {
        let (transport, rest) = if let Some(rest) = text.strip_prefix("docker://") {
            (Transport::Docker, rest)
        } else if let Some(rest) = text.strip_prefix("oras://") {
            (Transport::Oras, rest)
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(Error::unsupported(format!(
                "reference {text:?}: transport {scheme}:// is not supported (use docker:// or oras://)"
            )));
        } else {
            (Transport::Docker, text)
        };
        Ok((transport, Reference::parse_plain(rest, text)?))
    }

    /// Parse a reference, with or without a `docker://`/`oras://` prefix.
    pub fn parse(text: &str) -> Result<Reference> {
        Ok(Reference::parse_with_transport(text)?.1)
    }

    fn parse_plain(rest: &str, text: &str) -> Result<Reference> {
        let bad = |why: &str| Error::malformed(format!("reference {text:?}: {why}"));
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(Digest::parse(digest).map_err(|e| e.context(format!("reference {text:?}")))?),
            ),
            None => (rest, None),
        };
        // A tag is after the last ':' that follows the last '/', so a port is not a tag.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|why| bad(&why))?;
        }
        let (registry, repository) = split_registry(name);
        let registry = canonical_registry(&registry);
        let mut repository = repository.to_string();
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        check_repository(&repository).map_err(|why| bad(&why))?;
        let tag = match (tag, digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What goes after `/manifests/` in a URL: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `host/repository`, for messages and scopes.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Split `host[:port]/path` the way Docker does: the first component is a registry host
/// only if it has a `.` or `:` or is `localhost`.
fn split_registry(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest)
        }
        _ => ("docker.io".to_string(), name),
    }
}

/// The host that serves a registry name: Docker Hub's aliases map to its API host.
pub fn canonical_registry(registry: &str) -> String {
    let registry = registry
        .trim_start_matches("docker://")
        .trim_start_matches("oras://")
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        other => other.to_string(),
    }
}

/// Whether `registry` (`host[:port]`) is this machine, where plain HTTP is allowed.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

fn check_repository(repository: &str) -> std::result::Result<(), String> {
    let ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid repository {repository:?} (lowercase letters, digits, '.', '_', '-', '/')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_apply() {
        let r = Reference::parse("docker://alpine").unwrap();
        assert_eq!(r.registry, DOCKER_HUB);
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("docker.io/user/img:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            (DOCKER_HUB, "user/img")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn ports_digests_and_errors() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let (t, _) = Reference::parse_with_transport("oras://h.example/x:1").unwrap();
        assert_eq!(t, Transport::Oras);
        assert!(Reference::parse("h.example/Upper").is_err());
        assert!(Reference::parse("library://x").is_err());
        assert!(Reference::parse("h.example/x:bad/tag").is_err());
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80")
        );
        assert!(!is_loopback("10.0.0.1:5000"));
    }
}
