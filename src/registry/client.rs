//! The HTTP side: one [`Client`] per registry and set of scopes, on a `ureq` agent. It
//! pings `/v2/` once (choosing HTTPS or, for loopback, plain HTTP, and learning the auth
//! challenge), then sends every request with the current `Authorization`, answers a 401 by
//! authenticating again (a fresh Bearer token, or Basic) and replaying the request once,
//! and retries 408/429/5xx and dropped connections with backoff, honouring `Retry-After`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use ureq::http::{self, Response};
use ureq::{Body, SendBody};

use super::auth::{Challenge, CredentialSources, Credentials, parse_challenge};
use super::reference::is_loopback;
use crate::error::{Error, ErrorKind, Result};

/// How to reach and authenticate to registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where credentials come from.
    pub credentials: CredentialSources,
    /// Use plain HTTP even for a non-loopback registry.
    pub plain_http: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// PEM file of extra CA certificates to trust (e.g. a site CA or a self-signed cert).
    pub ca_file: Option<PathBuf>,
    /// Attempts per request for retryable failures (408, 429, 5xx, dropped connections).
    pub attempts: u32,
    /// First retry delay; doubled at each retry, at most 10 s (`Retry-After` overrides it).
    pub backoff: Duration,
    /// Upload blobs in PATCH requests of at most this many bytes (`None`: one PATCH).
    pub chunk_size: Option<u64>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            credentials: CredentialSources::default(),
            plain_http: false,
            insecure: false,
            ca_file: None,
            attempts: 5,
            backoff: Duration::from_millis(250),
            chunk_size: None,
            user_agent: format!("sifovl/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A body to send that can be produced again from any offset, so a request can be
/// replayed after a 401 and an upload resumed after a dropped connection.
pub(crate) type BodyFactory<'a> =
    &'a (dyn Fn() -> std::io::Result<(Box<dyn Read + Send + 'a>, u64)> + Sync);

/// What the client currently sends as `Authorization`.
#[derive(Default)]
struct AuthState {
    header: Option<String>,
    challenge: Option<Challenge>,
    /// Credentials looked up (once) when a challenge first asked for them.
    credentials: Option<Option<Credentials>>,
}

/// A connection to one registry, authorised for a set of scopes
/// (`repository:NAME:pull,push`, `registry:catalog:*`).
pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://…`.
    base: String,
    /// `host[:port]`, for messages and credential lookup.
    registry: String,
    /// The repository the scopes are about (for per-repository credentials).
    repository: Option<String>,
    scopes: Vec<String>,
    options: ClientOptions,
    auth: Mutex<AuthState>,
}

/// Whether a ureq error is worth retrying (a dropped or refused connection, a timeout).
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// Whether an HTTP status is worth retrying.
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After: SECONDS`, capped so a hostile value cannot stall us for hours.
pub(crate) fn retry_after(response: &Response<Body>) -> Option<Duration> {
    header(response, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
}

/// A response header as text.
pub(crate) fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The `scheme://authority` of a URL (for "same host" checks).
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

impl Client {
    /// Connect to `registry` (`host[:port]`) for `scopes` and ping it. `repository` names
    /// the repository the work is about (credential lookup and messages).
    pub fn connect(
        registry: &str,
        repository: Option<&str>,
        scopes: Vec<String>,
        options: &ClientOptions,
    ) -> Result<Client> {
        let agent = make_agent(options)?;
        let mut client = Client {
            agent,
            base: String::new(),
            registry: registry.to_string(),
            repository: repository.map(str::to_string),
            scopes,
            options: options.clone(),
            auth: Mutex::new(AuthState::default()),
        };
        client.ping()?;
        Ok(client)
    }

    /// The registry's `host[:port]`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `GET /v2/`: choose the scheme and learn the challenge. Loopback registries are
    /// tried over HTTPS first and fall back to plain HTTP only when that answers as a
    /// registry, so a loopback registry with TLS is never spoken to in clear.
    fn ping(&mut self) -> Result<()> {
        let https = format!("https://{}", self.registry);
        let http = format!("http://{}", self.registry);
        if self.options.plain_http {
            self.base = http;
            return self.ping_base();
        }
        self.base = https.clone();
        // On loopback the HTTPS probe is tried once: a plain-HTTP registry answers it with
        // garbage at once, and retrying would only delay the fallback.
        let loopback = is_loopback(&self.registry);
        let probe = if loopback {
            self.ping_once()
        } else {
            self.ping_base()
        };
        let tls_error = match probe {
            Ok(()) => return Ok(()),
            Err(e) if loopback && e.kind() == ErrorKind::Io => e,
            Err(e) => return Err(e),
        };
        self.base = http;
        match self.ping_base() {
            Ok(()) => Ok(()),
            Err(_) => {
                self.base = https;
                Err(tls_error)
            }
        }
    }

    fn ping_once(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let response = self.raw("GET", &url, &[], None, None)?;
        self.check_ping(response)
    }

    /// The ping with retries on dropped connections; its 401 is not answered here (the
    /// challenge is kept for the first real request).
    fn ping_base(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.raw("GET", &url, &[], None, None) {
                Ok(response) => return self.check_ping(response),
                Err(RequestError::Transport(_, true)) if attempt < self.options.attempts => {
                    std::thread::sleep(self.backoff(attempt));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn check_ping(&self, response: Response<Body>) -> Result<()> {
        let status = response.status().as_u16();
        let is_registry = header(&response, "docker-distribution-api-version").is_some();
        match status {
            200 => Ok(()),
            401 => {
                // The challenge is remembered; the first real request authenticates.
                if let Some(c) = header(&response, "www-authenticate").and_then(parse_challenge) {
                    self.lock_auth().challenge = Some(c);
                }
                Ok(())
            }
            404 if is_registry => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}: not an OCI registry ({} answered {status} to GET /v2/)",
                    self.registry, self.base
                ),
            )),
        }
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock cannot leave the state half-written.
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The absolute URL for `path` (`/v2/…`) or for a `Location` header value.
    pub(crate) fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.base)
        } else {
            format!("{}/{path_or_url}", self.base)
        }
    }

    /// One request, with the current authorisation; a 401 is answered by authenticating
    /// again and replaying once. Transport errors and statuses are returned as they are.
    pub(crate) fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<BodyFactory<'_>>,
    ) -> std::result::Result<Response<Body>, RequestError> {
        let mut replayed = false;
        // A challenge seen at the ping is answered before the first request, so a large
        // body is not sent once only to be refused.
        let unanswered = {
            let state = self.lock_auth();
            state.header.is_none() && state.challenge.is_some()
        };
        if unanswered && origin(url) == self.base {
            self.authenticate(None, false)
                .map_err(RequestError::Fatal)?;
        }
        loop {
            let auth_header = self.lock_auth().header.clone();
            // Credentials go only to the registry itself, never to another host a
            // Location header points at.
            let auth_header = auth_header.filter(|_| origin(url) == self.base);
            let response = self.raw(method, url, headers, auth_header.as_deref(), body)?;
            if response.status().as_u16() != 401 || replayed || origin(url) != self.base {
                return Ok(response);
            }
            let challenge = header(&response, "www-authenticate").and_then(parse_challenge);
            self.authenticate(challenge, auth_header.is_some())
                .map_err(RequestError::Fatal)?;
            replayed = true;
        }
    }

    fn raw(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
        body: Option<BodyFactory<'_>>,
    ) -> std::result::Result<Response<Body>, RequestError> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(a) = authorization {
            builder = builder.header("Authorization", a);
        }
        let result = match body {
            Some(make) => {
                let (mut reader, len) = make().map_err(|e| {
                    RequestError::Fatal(Error::io(
                        format!("{method} {}: reading the body", path_of(url)),
                        e,
                    ))
                })?;
                let request = builder
                    .header("Content-Length", len.to_string())
                    .body(SendBody::from_reader(&mut reader))
                    .map_err(|e| RequestError::Fatal(Error::malformed(format!("{url}: {e}"))))?;
                self.agent.run(request)
            }
            None => {
                let mut builder = builder;
                if matches!(method, "PUT" | "POST" | "PATCH") {
                    builder = builder.header("Content-Length", "0");
                }
                let request = builder
                    .body(SendBody::none())
                    .map_err(|e| RequestError::Fatal(Error::malformed(format!("{url}: {e}"))))?;
                self.agent.run(request)
            }
        };
        result.map_err(|e| RequestError::Transport(self.describe(method, url, &e), transient(&e)))
    }

    /// A transport failure as a one-line error.
    fn describe(&self, method: &str, url: &str, e: &ureq::Error) -> Error {
        Error::new(
            ErrorKind::Io,
            format!("{}: {method} {}: {e}", self.registry, path_of(url)),
        )
    }

    /// Send with retries on dropped connections and 408/429/5xx (backoff, `Retry-After`).
    /// A body is replayed from its factory on every attempt. Returns the final response
    /// whatever its status.
    pub(crate) fn send_with_retries(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<BodyFactory<'_>>,
        retry_status: bool,
    ) -> Result<Response<Body>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.options.attempts.max(1);
            match self.send_once(method, url, headers, body) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if retry_status && retryable_status(status) && !last {
                        std::thread::sleep(
                            retry_after(&response).unwrap_or_else(|| self.backoff(attempt)),
                        );
                        continue;
                    }
                    return Ok(response);
                }
                Err(RequestError::Transport(_, true)) if !last => {
                    std::thread::sleep(self.backoff(attempt));
                }
                Err(RequestError::Transport(e, _)) | Err(RequestError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// The delay before retry `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(6);
        (self.options.backoff * factor).min(Duration::from_secs(10))
    }

    /// Answer a challenge: a Bearer token for our scopes, or Basic credentials.
    /// `had_auth` says the refused request carried authorisation already.
    fn authenticate(&self, challenge: Option<Challenge>, had_auth: bool) -> Result<()> {
        let challenge = match challenge.or_else(|| self.lock_auth().challenge.clone()) {
            Some(c) => c,
            None => {
                return Err(Error::refused(format!(
                    "{}: authentication required but the registry sent no challenge",
                    self.registry
                )));
            }
        };
        let credentials = self.credentials()?;
        let header = match challenge.scheme.as_str() {
            "basic" => {
                let Some(c) = &credentials else {
                    return Err(Error::refused(format!(
                        "{}: authentication required (no credentials: use sifovl login or --username)",
                        self.registry
                    )));
                };
                if had_auth {
                    return Err(Error::refused(format!(
                        "{}: authentication failed for user {:?} (wrong username or password?)",
                        self.registry, c.username
                    )));
                }
                c.basic_header()
            }
            "bearer" => {
                // A Bearer 401 on a request that had a token is an expired or too narrow
                // token: fetch another (with the challenge's scope) and replay.
                let token = self.fetch_token(&challenge, credentials.as_ref())?;
                format!("Bearer {token}")
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{}: authentication scheme {other:?} is not supported",
                    self.registry
                )));
            }
        };
        let mut state = self.lock_auth();
        state.header = Some(header);
        state.challenge = Some(challenge);
        Ok(())
    }

    fn credentials(&self) -> Result<Option<Credentials>> {
        if let Some(c) = &self.lock_auth().credentials {
            return Ok(c.clone());
        }
        let found = self
            .options
            .credentials
            .lookup(&self.registry, self.repository.as_deref())?;
        self.lock_auth().credentials = Some(found.clone());
        Ok(found)
    }

    /// Fetch a Bearer token from the challenge's realm for our scopes plus the one the
    /// challenge names.
    fn fetch_token(
        &self,
        challenge: &Challenge,
        credentials: Option<&Credentials>,
    ) -> Result<String> {
        let realm = challenge.params.get("realm").ok_or_else(|| {
            Error::malformed(format!(
                "{}: Bearer challenge without a realm",
                self.registry
            ))
        })?;
        let mut scopes = self.scopes.clone();
        if let Some(s) = challenge.params.get("scope")
            && !scopes.contains(s)
        {
            scopes.push(s.clone());
        }
        // Secrets go to the realm only over TLS, or to a loopback realm.
        let realm_host = origin(realm)
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let secure = realm.starts_with("https://") || is_loopback(realm_host);
        let credentials = credentials.filter(|_| secure);
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(service) = challenge.params.get("service") {
            query.push(("service".into(), service.clone()));
        }
        for scope in &scopes {
            query.push(("scope".into(), scope.clone()));
        }
        let response = match credentials.filter(|c| c.is_identity_token()) {
            Some(c) => {
                // OAuth2 refresh-token grant (Docker's identity tokens).
                let mut form = format!(
                    "grant_type=refresh_token&client_id=sifovl&refresh_token={}",
                    urlencode(&c.secret)
                );
                for (k, v) in &query {
                    form.push_str(&format!("&{k}={}", urlencode(v)));
                }
                let request = http::Request::builder()
                    .method("POST")
                    .uri(realm.as_str())
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form)
                    .map_err(|e| {
                        Error::malformed(format!("{}: token realm: {e}", self.registry))
                    })?;
                self.agent.run(request)
            }
            None => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let qs: Vec<String> = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect();
                let url = format!("{realm}{sep}{}", qs.join("&"));
                let mut builder = http::Request::builder().method("GET").uri(url);
                if let Some(c) = credentials {
                    builder = builder.header("Authorization", c.basic_header());
                }
                let request = builder.body(()).map_err(|e| {
                    Error::malformed(format!("{}: token realm: {e}", self.registry))
                })?;
                self.agent.run(request)
            }
        };
        let mut response = response.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("{}: token service {}: {e}", self.registry, origin(realm)),
            )
        })?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::refused(match credentials {
                Some(c) => format!(
                    "{}: authentication failed for user {:?} (wrong username or password?)",
                    self.registry, c.username
                ),
                None => format!(
                    "{}: the token service refused anonymous access (use sifovl login or --username)",
                    self.registry
                ),
            }));
        }
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}: token service {} answered {status}",
                    self.registry,
                    origin(realm)
                ),
            ));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("{}: token service: {e}", self.registry),
                )
            })?;
        token_from_json(&self.registry, &body)
    }

    /// Check credentials: authenticate against `/v2/` now (for `login`).
    pub fn check_login(&self) -> Result<()> {
        let challenge = self.lock_auth().challenge.clone();
        let Some(challenge) = challenge else {
            // The registry needs no authentication at all.
            return Ok(());
        };
        self.authenticate(Some(challenge), false)?;
        let url = self.url("/v2/");
        let response = self.send_with_retries("GET", &url, &[], None, true)?;
        match response.status().as_u16() {
            200 => Ok(()),
            401 | 403 => Err(Error::refused(format!(
                "{}: authentication failed (wrong username or password?)",
                self.registry
            ))),
            s => Err(Error::new(
                ErrorKind::Io,
                format!("{}: GET /v2/ answered {s}", self.registry),
            )),
        }
    }

    /// A one-line error for an unexpected response: status, the registry's error code and
    /// message when it sent the standard `{"errors":[…]}` body.
    pub(crate) fn status_error(&self, what: &str, mut response: Response<Body>) -> Error {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let detail = error_detail(&body).unwrap_or_else(|| {
            response
                .status()
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_string()
        });
        let kind = match status {
            401 | 403 => ErrorKind::Refused,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        Error::new(
            kind,
            format!("{what}: {} answered {status} ({detail})", self.registry),
        )
    }
}

/// The token of a token service's JSON answer (`token`, or OAuth2's `access_token`).
pub fn token_from_json(registry: &str, body: &[u8]) -> Result<String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Error::malformed(format!(
            "{registry}: token service answered with invalid JSON"
        ))
    })?;
    value
        .get("token")
        .or_else(|| value.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::malformed(format!("{registry}: token service sent no token")))
}

/// `CODE: MESSAGE` of the first error of a standard `{"errors":[…]}` error body.
pub fn error_detail(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    let e = v.get("errors")?.as_array()?.first()?;
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    Some(format!("{code}: {message}"))
}

/// The path of a URL, for messages (no host, no query with upload state).
fn path_of(url: &str) -> &str {
    let origin_len = origin(url).len();
    let path = &url[origin_len..];
    path.split('?').next().unwrap_or(path)
}

/// Errors of one request attempt.
pub(crate) enum RequestError {
    /// The connection failed; `true` if retrying may help.
    Transport(Error, bool),
    /// Something retrying cannot fix (bad credentials, unreadable body).
    Fatal(Error),
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Error {
        match e {
            RequestError::Transport(e, _) | RequestError::Fatal(e) => e,
        }
    }
}

/// Percent-encode a query value.
pub(crate) fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn make_agent(options: &ClientOptions) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder().disable_verification(options.insecure);
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::io(format!("{}: reading CA file", path.display()), e))?;
        let mut certs: Vec<Certificate<'static>> = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(Error::malformed(format!(
                "{}: no PEM certificate in the CA file",
                path.display()
            )));
        }
        // The CA file adds to the system's trust store where there is one.
        for system in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ] {
            if let Ok(pem) = std::fs::read(system) {
                for item in ureq::tls::parse_pem(&pem) {
                    if let Ok(PemItem::Certificate(c)) = item {
                        certs.push(c);
                    }
                }
                break;
            }
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls.build())
        .user_agent(options.user_agent.as_str())
        // Blob downloads are often redirected to storage on another host: follow, but
        // keep the Authorization header only on the registry's own host.
        .max_redirects(5)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(Duration::from_secs(30)))
        // The registry may hash a large blob before it answers the closing PUT.
        .timeout_recv_response(Some(Duration::from_secs(600)))
        // A dead connection in the middle of a blob is noticed (then resumed), without a
        // total limit that a large blob on a slow link would hit.
        .timeout_per_read(Some(Duration::from_secs(120)))
        .timeout_per_write(Some(Duration::from_secs(120)))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        assert_eq!(token_from_json("r", br#"{"token":"t"}"#).unwrap(), "t");
        assert_eq!(
            token_from_json("r", br#"{"access_token":"a"}"#).unwrap(),
            "a"
        );
        let err = token_from_json("r", br#"{"token":""}"#).unwrap_err();
        assert_eq!(err.to_string(), "r: token service sent no token");
        let err = token_from_json("r", b"<html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "r: token service answered with invalid JSON"
        );
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"code":"DENIED","message":"no"},{"code":"X"}]}"#;
        assert_eq!(error_detail(body).as_deref(), Some("DENIED: no"));
        assert_eq!(error_detail(br#"{"errors":[]}"#), None);
        assert_eq!(error_detail(b"not json"), None);
    }

    #[test]
    fn urls_are_split_and_encoded() {
        assert_eq!(
            origin("https://h.example:5000/v2/x?y"),
            "https://h.example:5000"
        );
        assert_eq!(origin("http://h"), "http://h");
        assert_eq!(
            path_of("http://h:1/v2/a/blobs/uploads/u?_state=secret"),
            "/v2/a/blobs/uploads/u"
        );
        assert_eq!(
            urlencode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert!(retryable_status(429) && retryable_status(503) && !retryable_status(404));
    }
}
