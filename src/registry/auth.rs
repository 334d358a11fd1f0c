//! Credentials: where they come from (explicit, auth files, credential helpers), the
//! `WWW-Authenticate` challenge, and `login`/`logout` edits of a Docker-format auth file.
//!
//! Secrets never reach a message: [`Credentials`] prints as `user:***`, and errors name the
//! registry and the file, never the password or token.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::reference::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY};
use crate::error::{Error, Result, ResultExt};

/// A username and a secret (password or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` means the secret is an identity token).
    pub username: String,
    /// The password or token. Never printed.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:secret)`.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.secret))
        )
    }

    /// Whether the secret is an OAuth2 identity (refresh) token rather than a password.
    pub(crate) fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }
}

/// Where credentials for a registry may come from, tried in this order: `explicit`
/// (command line or `SINGULARITY_DOCKER_USERNAME/PASSWORD`, the CLI fills it), then each
/// auth file in `auth_files` (Docker `config.json` format: `auths`, `credHelpers`,
/// `credsStore`; Podman's `auth.json` is the same format), then anonymous.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// Credentials given for this command.
    pub explicit: Option<Credentials>,
    /// Auth files, first match wins. Missing files are skipped.
    pub auth_files: Vec<PathBuf>,
}

/// The default auth files, in the order they are searched: SingularityCE's
/// `~/.singularity/docker-config.json`, Docker's `config.json` (`$DOCKER_CONFIG` or
/// `~/.docker`), Podman's `$XDG_RUNTIME_DIR/containers/auth.json`. The caller passes the
/// environment's values (the library reads no environment).
pub fn default_auth_files(
    home: Option<&Path>,
    docker_config: Option<&Path>,
    xdg_runtime_dir: Option<&Path>,
) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = home {
        files.push(home.join(".singularity/docker-config.json"));
    }
    match (docker_config, home) {
        (Some(dir), _) => files.push(dir.join("config.json")),
        (None, Some(home)) => files.push(home.join(".docker/config.json")),
        (None, None) => {}
    }
    if let Some(dir) = xdg_runtime_dir {
        files.push(dir.join("containers/auth.json"));
    }
    files
}

/// The key an auth file stores `registry`'s credentials under.
pub fn auth_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Normalise an `auths` key (`https://host/v1/`, `host`, `host/repo`) to `host[/path]`.
fn normalise_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or(key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", super::reference::canonical_registry(host)),
        None => super::reference::canonical_registry(key),
    }
}

impl CredentialSources {
    /// The credentials for `registry` (and `repository`, for Podman's per-repository
    /// keys), or `None` for anonymous access.
    pub fn lookup(&self, registry: &str, repository: Option<&str>) -> Result<Option<Credentials>> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        for file in &self.auth_files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                // Absent, or not ours to read (another user's runtime directory under sudo).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io(format!("{}: reading", file.display()), e)),
            };
            if text.trim().is_empty() {
                continue;
            }
            let config: Value = serde_json::from_str(&text).map_err(|e| {
                Error::malformed(format!("{}: not a JSON auth file: {e}", file.display()))
            })?;
            if let Some(found) =
                lookup_in(&config, registry, repository).map_err(|e| e.context(file.display()))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// Find `registry`'s credentials in one parsed auth file.
fn lookup_in(
    config: &Value,
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credentials>> {
    let server = auth_key(registry);
    if let Some(helper) = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalise_key(k) == registry)
                .map(|(_, v)| v)
        })
        .and_then(Value::as_str)
    {
        return run_helper(helper, &server);
    }
    if let Some(auths) = config.get("auths").and_then(Value::as_object) {
        // The most specific key wins: `host/repo/sub` over `host/repo` over `host`.
        let full = repository.map(|r| format!("{registry}/{r}"));
        let mut best: Option<(usize, &Value)> = None;
        for (key, entry) in auths {
            let key = normalise_key(key);
            let matches = key == registry
                || full
                    .as_deref()
                    .is_some_and(|f| f == key || f.starts_with(&format!("{key}/")));
            if matches && best.is_none_or(|(len, _)| key.len() > len) {
                best = Some((key.len(), entry));
            }
        }
        if let Some((_, entry)) = best
            && let Some(creds) = entry_credentials(entry)?
        {
            return Ok(Some(creds));
        }
    }
    if let Some(store) = config.get("credsStore").and_then(Value::as_str) {
        return run_helper(store, &server);
    }
    Ok(None)
}

/// Credentials of one `auths` entry: `auth` (base64 `user:pass`), `username`/`password`,
/// or `identitytoken`.
fn entry_credentials(entry: &Value) -> Result<Option<Credentials>> {
    let get = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = get("identitytoken") {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            secret: token.into(),
        }));
    }
    if let Some(auth) = get("auth") {
        let decoded = BASE64
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::malformed("an \"auth\" entry is not base64 of user:password"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| Error::malformed("an \"auth\" entry is not base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: user.into(),
            secret: pass.into(),
        }));
    }
    if let (Some(user), Some(pass)) = (get("username"), get("password")) {
        return Ok(Some(Credentials {
            username: user.into(),
            secret: pass.into(),
        }));
    }
    Ok(None)
}

/// `docker-credential-NAME get`, the credential helper protocol: the server URL on
/// standard input, `{"Username":…,"Secret":…}` on standard output. "Not found" is no
/// credentials, not an error.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("credential helper {program}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading closes the pipe; its exit status tells.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("credential helper {program}"), e))?;
    if !out.status.success() {
        // Helpers exit 1 with "credentials not found" for an unknown server.
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        Error::malformed(format!("credential helper {program}: output is not JSON"))
    })?;
    let user = value.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = value.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: user.into(),
        secret: secret.into(),
    }))
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercased).
    pub scheme: String,
    /// The parameters (`realm`, `service`, `scope`), keys lowercased.
    pub params: BTreeMap<String, String>,
}

/// Parse `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            // Quoted string: up to the next unescaped quote.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Read a Docker-format auth file as a JSON object (an absent or empty file is `{}`).
fn read_auth_file(path: &Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(Error::io(format!("{}: reading", path.display()), e)),
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::malformed(format!(
            "{}: not a JSON object (a Docker config.json)",
            path.display()
        ))),
    }
}

/// Write `config` to `path` through a temporary file and a rename, mode 0600 (it holds
/// secrets), creating the directory (0700) if needed.
fn write_auth_file(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| dir.display())?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| dir.display())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| path.display())?;
    let text = serde_json::to_string_pretty(&Value::Object(config.clone()))
        .map_err(|e| Error::io("encoding the auth file", e.into()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| path.display())?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("{}: replacing", path.display()), e.error))?;
    Ok(())
}

/// Store `credentials` for `registry` in the auth file `path` (`auths.KEY.auth`), keeping
/// everything else in the file.
pub fn store_credentials(path: &Path, registry: &str, credentials: &Credentials) -> Result<()> {
    let mut config = read_auth_file(path)?;
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(Error::malformed(format!(
            "{}: \"auths\" is not an object",
            path.display()
        )));
    };
    let token = BASE64.encode(format!("{}:{}", credentials.username, credentials.secret));
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::String(token));
    auths.insert(auth_key(registry), Value::Object(entry));
    write_auth_file(path, &config)
}

/// Remove `registry`'s entry from the auth file `path`. Returns whether there was one.
pub fn remove_credentials(path: &Path, registry: &str) -> Result<bool> {
    let mut config = read_auth_file(path)?;
    let Some(Value::Object(auths)) = config.get_mut("auths") else {
        return Ok(false);
    };
    let keys: Vec<String> = auths
        .keys()
        .filter(|k| normalise_key(k) == registry)
        .cloned()
        .collect();
    if keys.is_empty() {
        return Ok(false);
    }
    for key in keys {
        auths.remove(&key);
    }
    write_auth_file(path, &config)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="test-registry""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "test-registry");
    }

    #[test]
    fn auth_files_are_searched_by_registry_and_repository() {
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": BASE64.encode("hub:pw")},
            "reg.example:5000": {"auth": BASE64.encode("a:b")},
            "reg.example:5000/team": {"username": "t", "password": "p"},
        }});
        let hub = lookup_in(&config, DOCKER_HUB, Some("library/x"))
            .unwrap()
            .unwrap();
        assert_eq!(hub.username, "hub");
        let any = lookup_in(&config, "reg.example:5000", Some("other/x"))
            .unwrap()
            .unwrap();
        assert_eq!(any.username, "a");
        let team = lookup_in(&config, "reg.example:5000", Some("team/x"))
            .unwrap()
            .unwrap();
        assert_eq!(team.username, "t");
        assert!(lookup_in(&config, "other.example", None).unwrap().is_none());
        assert_eq!(format!("{team:?}"), "t:***");
    }

    #[test]
    fn login_and_logout_keep_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"credsStore":"none","auths":{"x.example":{}}}"#).unwrap();
        let c = Credentials {
            username: "u".into(),
            secret: "s".into(),
        };
        store_credentials(&path, "reg.example", &c).unwrap();
        let sources = CredentialSources {
            explicit: None,
            auth_files: vec![path.clone()],
        };
        assert_eq!(sources.lookup("reg.example", None).unwrap(), Some(c));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("credsStore") && text.contains("x.example"));
        assert!(remove_credentials(&path, "reg.example").unwrap());
        assert!(!remove_credentials(&path, "reg.example").unwrap());
    }
}
