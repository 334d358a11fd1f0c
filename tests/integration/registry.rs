//! Registry tests against real `docker-registry` (distribution 2.8) processes on 127.0.0.1,
//! started and stopped here: anonymous, htpasswd Basic, token (`silly` auth plus a token
//! endpoint in the test), TLS on a self-signed certificate. Faults come from a real TCP
//! proxy in front of the registry. Results are checked with skopeo, umoci and the
//! independent SIF decoder.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ocisif::{sample, simulate_writable_run};
use crate::sifcheck::{self, sha256};
use crate::util::run_ok;
use crate::{require_fixtures, require_tool};

/// How a test registry authenticates.
enum Auth {
    None,
    Htpasswd(&'static str, &'static str),
    /// distribution's `silly` auth: Bearer challenges naming this realm, any token taken.
    Silly(String),
}

/// A `docker-registry serve` process on a free loopback port, killed on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    tls: Option<PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    fn start(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let state = dir.path();
        std::fs::create_dir_all(state.join("data")).unwrap();
        let auth_yml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd(user, pass) => {
                let out = run_ok(Command::new("htpasswd").args(["-Bbn", user, pass]));
                let file = state.join("htpasswd");
                std::fs::write(&file, out).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Silly(realm) => {
                format!("auth:\n  silly:\n    realm: {realm}\n    service: test-registry\n")
            }
        };
        let mut tls_yml = String::new();
        let mut cert = None;
        if tls {
            // A throwaway CA and a leaf for 127.0.0.1 signed by it (rustls, rightly, will
            // not take a CA certificate as the server's own).
            let (ca, ca_key) = (state.join("ca.pem"), state.join("ca.key"));
            let (c, k, csr) = (
                state.join("cert.pem"),
                state.join("key.pem"),
                state.join("leaf.csr"),
            );
            let ext = state.join("leaf.ext");
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            let openssl = |args: &[&std::ffi::OsStr]| {
                run_ok(Command::new("openssl").args(args).stderr(Stdio::null()));
            };
            let os = |s: &str| std::ffi::OsString::from(s);
            openssl(&[
                &os("req"),
                &os("-x509"),
                &os("-newkey"),
                &os("rsa:2048"),
                &os("-nodes"),
                &os("-days"),
                &os("2"),
                &os("-subj"),
                &os("/CN=sifovl test CA"),
                &os("-keyout"),
                ca_key.as_os_str(),
                &os("-out"),
                ca.as_os_str(),
            ]);
            openssl(&[
                &os("req"),
                &os("-newkey"),
                &os("rsa:2048"),
                &os("-nodes"),
                &os("-subj"),
                &os("/CN=127.0.0.1"),
                &os("-keyout"),
                k.as_os_str(),
                &os("-out"),
                csr.as_os_str(),
            ]);
            openssl(&[
                &os("x509"),
                &os("-req"),
                &os("-in"),
                csr.as_os_str(),
                &os("-CA"),
                ca.as_os_str(),
                &os("-CAkey"),
                ca_key.as_os_str(),
                &os("-CAcreateserial"),
                &os("-days"),
                &os("2"),
                &os("-extfile"),
                ext.as_os_str(),
                &os("-out"),
                c.as_os_str(),
            ]);
            tls_yml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            );
            cert = Some(ca);
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yml}{auth_yml}",
            state.join("data").display()
        );
        std::fs::write(state.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(state.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(state.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning docker-registry");
        let registry = Registry {
            dir,
            port,
            child,
            tls: cert,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn anonymous() -> Registry {
        Registry::start(Auth::None, false)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fault proxy does to a matching request.
#[derive(Clone, Debug)]
enum Action {
    /// Forward the head and this many body bytes, then drop both connections.
    DropRequestAfter(usize),
    /// Forward the request, then only this many bytes of the response, then drop.
    DropResponseAfter(usize),
    /// Answer with this status and headers instead of the registry.
    Respond(u16, Vec<(String, String)>),
    /// Answer 413 when the body is larger than this.
    TooLarge(usize),
    /// Forward, then flip the last byte of the response body.
    Tamper,
}

#[derive(Clone, Debug)]
struct Fault {
    method: &'static str,
    path_contains: String,
    action: Action,
    /// Matching requests still to fault (`usize::MAX`: all).
    times: usize,
}

/// A TCP proxy in front of a registry: one request per connection (`Connection: close`
/// is forced), every request logged as `METHOD PATH [range]`, faults applied by rule.
struct Proxy {
    port: u16,
    faults: Arc<Mutex<Vec<Fault>>>,
    log: Arc<Mutex<Vec<String>>>,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some((request_line, headers))
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, l) = (faults.clone(), log.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (f, l) = (f.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = Proxy::serve(client, upstream, &f, &l);
                });
            }
        });
        Proxy { port, faults, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn fault(&self, method: &'static str, path_contains: &str, action: Action, times: usize) {
        self.faults.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.into(),
            action,
            times,
        });
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
        self.faults.lock().unwrap().clear();
    }

    fn serve(
        client: TcpStream,
        upstream: u16,
        faults: &Mutex<Vec<Fault>>,
        log: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut client = client;
        let Some((request_line, headers)) = read_head(&mut reader) else {
            return Ok(());
        };
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let length: usize = header_value(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let range = header_value(&headers, "range").map(|r| format!(" range={r}"));
        log.lock().unwrap().push(format!(
            "{method} {}{} len={length}",
            path.split('?').next().unwrap_or(""),
            range.unwrap_or_default()
        ));
        let action = {
            let mut faults = faults.lock().unwrap();
            let found = faults.iter_mut().find(|f| {
                f.times > 0
                    && f.method == method
                    && path.contains(&f.path_contains)
                    && match f.action {
                        Action::TooLarge(limit) | Action::DropRequestAfter(limit) => length > limit,
                        _ => true,
                    }
            });
            found.map(|f| {
                f.times = f.times.saturating_sub(1);
                f.action.clone()
            })
        };
        let respond = |client: &mut TcpStream,
                       reader: &mut BufReader<TcpStream>,
                       status: u16,
                       extra: &[(String, String)]|
         -> std::io::Result<()> {
            // Take the body first, as a real front end would.
            std::io::copy(
                &mut reader.by_ref().take(length as u64),
                &mut std::io::sink(),
            )?;
            let mut text =
                format!("HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nConnection: close\r\n");
            for (k, v) in extra {
                text.push_str(&format!("{k}: {v}\r\n"));
            }
            text.push_str("\r\n");
            client.write_all(text.as_bytes())?;
            client.flush()
        };
        match &action {
            Some(Action::Respond(status, extra)) => {
                return respond(&mut client, &mut reader, *status, extra);
            }
            Some(Action::TooLarge(_)) => return respond(&mut client, &mut reader, 413, &[]),
            _ => {}
        }
        let mut upstream = TcpStream::connect(("127.0.0.1", upstream))?;
        let mut head = format!("{request_line}\r\n");
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("connection") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        upstream.write_all(head.as_bytes())?;
        let body_limit = match action {
            Some(Action::DropRequestAfter(n)) => n.min(length),
            _ => length,
        };
        std::io::copy(&mut reader.by_ref().take(body_limit as u64), &mut upstream)?;
        if matches!(action, Some(Action::DropRequestAfter(_))) {
            std::thread::sleep(Duration::from_millis(100));
            let _ = upstream.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        match action {
            Some(Action::DropResponseAfter(n)) => {
                std::io::copy(&mut (&upstream).take(n as u64), &mut client)?;
                let _ = client.shutdown(Shutdown::Both);
            }
            Some(Action::Tamper) => {
                let mut response = Vec::new();
                upstream.read_to_end(&mut response)?;
                if let Some(last) = response.last_mut() {
                    *last ^= 0x01;
                }
                client.write_all(&response)?;
            }
            _ => {
                std::io::copy(&mut upstream, &mut client)?;
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        Ok(())
    }
}

/// A token endpoint: answers every GET with a fresh token, recording the query strings.
struct TokenServer {
    port: u16,
    queries: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
}

impl TokenServer {
    fn start() -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let (q, c) = (queries.clone(), count.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some((line, _)) = read_head(&mut reader) else {
                    continue;
                };
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                q.lock().unwrap().push(line);
                let body = format!(r#"{{"token":"t{n}","expires_in":300}}"#);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            port,
            queries,
            count,
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

/// sifovl with no credentials from the machine it runs on: no auth files (HOME points
/// nowhere), no credential variables, so every test sees only what it sets up.
fn sifovl() -> Command {
    let mut cmd = crate::util::sifovl();
    cmd.env("HOME", "/nonexistent/sifovl-registry-tests");
    for var in [
        "DOCKER_CONFIG",
        "XDG_RUNTIME_DIR",
        "SINGULARITY_DOCKER_USERNAME",
        "SINGULARITY_DOCKER_PASSWORD",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run sifovl, expecting success; returns the parsed `--json` report.
fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = run_ok(sifovl().args(args).arg("--json"));
    serde_json::from_slice(&out).unwrap()
}

/// Run sifovl, expecting exit 2 with a one-line error containing `needle`.
fn fails(cmd: &mut Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    err
}

/// A scratch copy of the sample OCI-SIF (one squashfs layer).
fn sample_copy(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(sample("sample.oci.sif"), &path).unwrap();
    path
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    run_ok(Command::new("skopeo").args(args))
}

fn require_registry_tools() -> bool {
    for tool in ["docker-registry", "skopeo"] {
        if !crate::util::have_tool(tool) {
            if crate::util::under_ci() {
                panic!("{tool} is required under CI: run scripts/install-test-deps.sh");
            }
            eprintln!("SKIPPED: {tool} not installed");
            return false;
        }
    }
    true
}

macro_rules! require_registry {
    () => {
        if !require_registry_tools() {
            return;
        }
    };
}

#[test]
fn push_as_stored_is_what_skopeo_sees_and_pulls_back_identical() {
    require_registry!();
    let registry = Registry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "app.oci.sif");
    let bytes = std::fs::read(&image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let oci = sifcheck::oci(&sif, &bytes);
    let reference = format!("docker://{}/team/app:v1", registry.addr());
    let report = ok_json(&["push", image.to_str().unwrap(), &reference]);
    assert_eq!(report["manifest_digest"], sha256(&oci.manifest_bytes));
    assert!(
        report["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["action"] == "uploaded")
    );
    assert_eq!(
        std::fs::read(&image).unwrap(),
        bytes,
        "push changed the file"
    );

    let skopeo_ref = format!("docker://{}/team/app:v1", registry.addr());
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &skopeo_ref]);
    assert_eq!(raw, oci.manifest_bytes, "manifest bytes differ");
    let config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &skopeo_ref,
    ]);
    assert_eq!(config, oci.config_bytes, "config bytes differ");
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &skopeo_ref,
        &format!("oci:{}:v1", layout.display()),
    ]);
    for layer in oci.manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let blob = std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap();
        assert_eq!(sha256(&blob), digest);
        assert_eq!(
            blob,
            sifcheck::blob(&sif, digest).data(&bytes),
            "layer bytes differ"
        );
    }

    // A second push uploads nothing.
    let again = ok_json(&["push", image.to_str().unwrap(), &reference]);
    assert_eq!(again["uploaded_bytes"], 0);
    assert!(
        again["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["action"] == "present")
    );

    // Pull back: an all-squashfs image is stored unmodified, byte for byte.
    let back = dir.path().join("back.oci.sif");
    let pulled = ok_json(&["pull", &reference, back.to_str().unwrap()]);
    assert_eq!(pulled["source_manifest"], sha256(&oci.manifest_bytes));
    assert_eq!(std::fs::read(&back).unwrap(), bytes, "pull back differs");

    // ORAS: the whole SIF as one layer, SingularityCE's types, pulled back identical.
    let oras = format!("oras://{}/team/app:sif", registry.addr());
    ok_json(&["push", image.to_str().unwrap(), &oras]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/team/app:sif", registry.addr()),
    ]);
    let expected = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.sylabs.sif.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}},"layers":[{{"mediaType":"application/vnd.sylabs.sif.layer.v1.sif","size":{},"digest":"{}","annotations":{{"org.opencontainers.image.title":"app.oci.sif"}}}}]}}"#,
        bytes.len(),
        sha256(&bytes)
    );
    assert_eq!(String::from_utf8(raw).unwrap(), expected);
    let sif_back = dir.path().join("back.sif");
    ok_json(&["pull", &oras, sif_back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&sif_back).unwrap(), bytes);

    // A native SIF goes as an ORAS artifact too, and only that way.
    let native = sample("sample.sif");
    let native_ref = format!("oras://{}/team/native:1", registry.addr());
    ok_json(&["push", native.to_str().unwrap(), &native_ref]);
    let native_back = dir.path().join("native.sif");
    ok_json(&["pull", &native_ref, native_back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&native_back).unwrap(),
        std::fs::read(&native).unwrap()
    );
    fails(
        sifovl().arg("push").arg(&native).arg(&reference),
        "ORAS artifact",
    );

    // An ORAS artifact is not an image, and the output exists now: clear refusals.
    fails(
        sifovl()
            .args(["pull", &reference.replace(":v1", ":sif")])
            .arg(dir.path().join("x.sif")),
        "oras://",
    );
    fails(
        sifovl().args(["pull", &oras]).arg(&sif_back),
        "already exists",
    );
}

#[test]
fn tags_catalog_delete_and_clear_errors() {
    require_registry!();
    let registry = Registry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "a.oci.sif");
    let base = format!("docker://{}/proj/app", registry.addr());
    for tag in ["one", "two"] {
        ok_json(&["push", image.to_str().unwrap(), &format!("{base}:{tag}")]);
    }
    ok_json(&[
        "push",
        image.to_str().unwrap(),
        &format!("docker://{}/other/x:1", registry.addr()),
    ]);
    // A cross-repository mount: the blobs are linked, not uploaded.
    let mounted = ok_json(&[
        "push",
        "--mount-from",
        "proj/app",
        image.to_str().unwrap(),
        &format!("docker://{}/proj/copy:1", registry.addr()),
    ]);
    assert!(
        mounted["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["action"] == "mounted"),
        "{mounted}"
    );
    assert_eq!(mounted["uploaded_bytes"], 0);
    let tags = ok_json(&["tags", &base]);
    let mut list: Vec<String> = serde_json::from_value(tags["tags"].clone()).unwrap();
    list.sort();
    assert_eq!(list, ["one", "two"]);
    let text = String::from_utf8(run_ok(sifovl().args(["catalog", &registry.addr()]))).unwrap();
    assert_eq!(text, "other/x\nproj/app\nproj/copy\n");
    let filtered = ok_json(&["catalog", "--filter", "PROJ/A", &registry.addr()]);
    assert_eq!(filtered["repositories"], serde_json::json!(["proj/app"]));

    // Deleting a tag deletes its manifest: both tags (same manifest) go.
    let deleted = ok_json(&["delete", &format!("{base}:one")]);
    assert!(deleted["digest"].as_str().unwrap().starts_with("sha256:"));
    let out = skopeo(&["list-tags", "--tls-verify=false", &base]);
    let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        listed["Tags"].as_array().is_none_or(|t| t.is_empty()),
        "{listed}"
    );

    // One-line errors, nothing written.
    let out_file = dir.path().join("never.oci.sif");
    fails(
        sifovl()
            .args(["pull", &format!("{base}:nope")])
            .arg(&out_file),
        "MANIFEST_UNKNOWN",
    );
    fails(
        sifovl().args(["tags", &format!("docker://{}/no/such", registry.addr())]),
        "NAME_UNKNOWN",
    );
    fails(
        sifovl()
            .args(["push"])
            .arg(&image)
            .arg("docker://127.0.0.1:1/x:1"),
        "127.0.0.1:1",
    );
    fails(
        sifovl().args(["push"]).arg(&image).arg("library://x/y"),
        "library://",
    );
    let pinned = format!("{base}@sha256:{}", "0".repeat(64));
    fails(sifovl().args(["push"]).arg(&image).arg(&pinned), "pins");
    assert!(!out_file.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sifovl"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn second_push_after_an_overlay_change_uploads_only_overlay_config_and_manifest() {
    require_registry!();
    require_tool!("debugfs");
    let registry = Registry::anonymous();
    let proxy = Proxy::start(registry.port);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "ov.oci.sif");
    run_ok(
        sifovl()
            .args(["add", "--size", "64", "--sparse"])
            .arg(&image),
    );
    let reference = format!("docker://{}/ov/app:1", proxy.addr());
    let first = ok_json(&["push", image.to_str().unwrap(), &reference]);
    assert_eq!(first["overlay"], "in-sync");

    simulate_writable_run(&image, &["mkdir /upper/changed"]);
    proxy.clear();
    let second = ok_json(&["push", image.to_str().unwrap(), &reference]);
    assert_eq!(second["overlay"], "reconciled");
    let actions: Vec<&str> = second["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["present", "uploaded", "uploaded"], "{second}");
    let requests = proxy.requests();
    let uploads: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("POST") || r.starts_with("PATCH") || r.starts_with("PUT"))
        .collect();
    let count = |prefix: &str| uploads.iter().filter(|r| r.starts_with(prefix)).count();
    assert_eq!(count("POST"), 2, "{uploads:?}");
    assert_eq!(count("PUT /v2/ov/app/blobs/"), 2, "{uploads:?}");
    assert_eq!(count("PUT /v2/ov/app/manifests/"), 1, "{uploads:?}");
    // The file was reconciled (as SingularityCE's push does) and what was pushed is it.
    let bytes = std::fs::read(&image).unwrap();
    let oci = sifcheck::oci(&sifcheck::parse(&bytes), &bytes);
    assert_eq!(second["manifest_digest"], sha256(&oci.manifest_bytes));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/ov/app:1", registry.addr()),
    ]);
    assert_eq!(raw, oci.manifest_bytes);

    // A read-only file: the reconciled image is computed in memory and pushed, the file
    // is left as it is; the registry gets what reconcile would write.
    simulate_writable_run(&image, &["mkdir /upper/again"]);
    let stale = std::fs::read(&image).unwrap();
    let expected_copy = dir.path().join("expected.oci.sif");
    std::fs::copy(&image, &expected_copy).unwrap();
    let reconciled: serde_json::Value = serde_json::from_slice(&run_ok(
        sifovl().args(["reconcile", "--json"]).arg(&expected_copy),
    ))
    .unwrap();
    std::fs::set_permissions(&image, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let mut cmd = if rustix::process::geteuid().is_root() {
        require_tool!("setpriv");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sifovl"))
            .env("HOME", dir.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR");
        c
    } else {
        sifovl()
    };
    let out = cmd
        .args(["push", "--json"])
        .arg(&image)
        .arg(format!("docker://{}/ov/app:ro", registry.addr()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["overlay"], "reconciled-in-memory");
    assert_eq!(report["manifest_digest"], reconciled["manifest_digest"]);
    assert_eq!(
        std::fs::read(&image).unwrap(),
        stale,
        "the read-only file changed"
    );
    let expected = std::fs::read(&expected_copy).unwrap();
    let expected_oci = sifcheck::oci(&sifcheck::parse(&expected), &expected);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/ov/app:ro", registry.addr()),
    ]);
    assert_eq!(raw, expected_oci.manifest_bytes);
    let config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/ov/app:ro", registry.addr()),
    ]);
    assert_eq!(config, expected_oci.config_bytes);
}

#[test]
fn basic_auth_login_logout_and_wrong_password() {
    require_registry!();
    require_tool!("htpasswd");
    let registry = Registry::start(Auth::Htpasswd("alice", "s3cret-pw"), false);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "a.oci.sif");
    let reference = format!("docker://{}/sec/app:1", registry.addr());
    let authfile = dir.path().join("auth.json");
    let with_password = |password: &str, args: &[&str]| {
        let mut child = sifovl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("SINGULARITY_DOCKER_USERNAME")
            .env("HOME", dir.path())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Anonymous: refused with a hint.
    fails(
        sifovl()
            .env("HOME", dir.path())
            .arg("push")
            .arg(&image)
            .arg(&reference),
        "authentication required",
    );
    // Wrong password: one line, the password nowhere in it.
    let out = with_password(
        "wrong-pw",
        &[
            "push",
            "-u",
            "alice",
            "--password-stdin",
            image.to_str().unwrap(),
            &reference,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("authentication failed") && err.contains("alice"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw"));
    // A stale overlay is not reconciled when the push is refused anyway.
    if crate::util::have_tool("debugfs") {
        let stale = sample_copy(dir.path(), "stale.oci.sif");
        run_ok(
            sifovl()
                .args(["add", "--size", "64", "--sparse"])
                .arg(&stale),
        );
        simulate_writable_run(&stale, &["mkdir /upper/x"]);
        let before = std::fs::read(&stale).unwrap();
        let out = with_password(
            "wrong-pw",
            &[
                "push",
                "-u",
                "alice",
                "--password-stdin",
                stale.to_str().unwrap(),
                &reference,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        fails(
            sifovl()
                .args(["push", "--layer-format", "squashfs"])
                .arg(&stale)
                .arg(&reference),
            "not squashfs",
        );
        assert_eq!(
            std::fs::read(&stale).unwrap(),
            before,
            "a failed push changed the file"
        );
    }
    // Right password.
    let out = with_password(
        "s3cret-pw",
        &[
            "push",
            "-u",
            "alice",
            "--password-stdin",
            image.to_str().unwrap(),
            &reference,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // login checks and stores; push and pull then use the file; logout removes.
    let out = with_password(
        "wrong-pw",
        &[
            "login",
            "-u",
            "alice",
            "--password-stdin",
            "--authfile",
            authfile.to_str().unwrap(),
            &registry.addr(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!authfile.exists(), "a failed login wrote the auth file");
    let out = with_password(
        "s3cret-pw",
        &[
            "login",
            "-u",
            "alice",
            "--password-stdin",
            "--authfile",
            authfile.to_str().unwrap(),
            &registry.addr(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).unwrap()).unwrap();
    assert!(
        stored["auths"][registry.addr()]["auth"].is_string(),
        "{stored}"
    );
    let back = dir.path().join("back.oci.sif");
    run_ok(
        sifovl()
            .env("HOME", dir.path())
            .args(["pull", "--authfile"])
            .arg(&authfile)
            .arg(&reference)
            .arg(&back),
    );
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&image).unwrap()
    );
    // Docker's default location through DOCKER_CONFIG, and SingularityCE's variables.
    let docker_dir = dir.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::copy(&authfile, docker_dir.join("config.json")).unwrap();
    run_ok(
        sifovl()
            .env("HOME", dir.path())
            .env("DOCKER_CONFIG", &docker_dir)
            .args(["tags", &reference]),
    );
    run_ok(
        sifovl()
            .env("HOME", dir.path())
            .env("SINGULARITY_DOCKER_USERNAME", "alice")
            .env("SINGULARITY_DOCKER_PASSWORD", "s3cret-pw")
            .args(["tags", &reference]),
    );
    run_ok(
        sifovl()
            .args(["logout", "--authfile"])
            .arg(&authfile)
            .arg(registry.addr()),
    );
    fails(
        sifovl()
            .args(["logout", "--authfile"])
            .arg(&authfile)
            .arg(registry.addr()),
        "no credentials",
    );
    fails(
        sifovl()
            .env("HOME", dir.path())
            .args(["tags", "--authfile"])
            .arg(&authfile)
            .arg(&reference),
        "authentication required",
    );
}

#[test]
fn bearer_tokens_are_fetched_with_scopes_and_refreshed_on_401() {
    require_registry!();
    let tokens = TokenServer::start();
    let registry = Registry::start(Auth::Silly(tokens.realm()), false);
    let proxy = Proxy::start(registry.port);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "t.oci.sif");
    let reference = format!("docker://{}/tok/app:1", proxy.addr());
    // The token "expires" before the manifest PUT: the registry answers 401 once.
    let challenge = format!(
        r#"Bearer realm="{}",service="test-registry",scope="repository:tok/app:pull,push""#,
        tokens.realm()
    );
    proxy.fault(
        "PUT",
        "/manifests/",
        Action::Respond(401, vec![("WWW-Authenticate".into(), challenge.clone())]),
        1,
    );
    // ... and in the middle of a blob: its PATCH, then its closing PUT.
    for method in ["PATCH", "PUT"] {
        proxy.fault(
            method,
            "/blobs/uploads/",
            Action::Respond(401, vec![("WWW-Authenticate".into(), challenge.clone())]),
            1,
        );
    }
    let report = ok_json(&["push", "--jobs", "1", image.to_str().unwrap(), &reference]);
    assert!(report["manifest_digest"].is_string());
    let queries = tokens.queries.lock().unwrap().clone();
    assert!(
        tokens.count.load(Ordering::SeqCst) >= 4,
        "no token refresh: {queries:?}"
    );
    assert!(
        queries
            .iter()
            .all(|q| q.contains("scope=repository%3Atok%2Fapp%3Apull%2Cpush")
                && q.contains("service=test-registry")),
        "{queries:?}"
    );
    let back = dir.path().join("back.oci.sif");
    run_ok(sifovl().arg("pull").arg(&reference).arg(&back));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&image).unwrap()
    );
}

#[test]
fn tls_with_a_self_signed_certificate_needs_ca_file_or_insecure() {
    require_registry!();
    require_tool!("openssl");
    let registry = Registry::start(Auth::None, true);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "tls.oci.sif");
    let reference = format!("docker://{}/tls/app:1", registry.addr());
    // Loopback, yet the registry speaks TLS: never fall back to clear text.
    fails(
        sifovl().arg("push").arg(&image).arg(&reference),
        "certificate",
    );
    let cert = registry.tls.clone().unwrap();
    run_ok(
        sifovl()
            .arg("push")
            .arg("--ca-file")
            .arg(&cert)
            .arg(&image)
            .arg(&reference),
    );
    run_ok(sifovl().args(["tags", "--insecure", &reference]));
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(
        raw,
        sifcheck::oci(&sifcheck::parse(&bytes), &bytes).manifest_bytes
    );
    let _ = registry.log();
}

#[test]
fn faults_are_survived_or_refused() {
    require_registry!();
    let registry = Registry::anonymous();
    let proxy = Proxy::start(registry.port);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "f.oci.sif");
    let bytes = std::fs::read(&image).unwrap();
    let oras = format!("oras://{}/f/sif:1", proxy.addr());

    // Connection dropped mid-upload: resumed from the registry's reported range.
    proxy.fault(
        "PATCH",
        "/f/sif/blobs/uploads/",
        Action::DropRequestAfter(6000),
        1,
    );
    // 429 with Retry-After on the first HEAD, 500 twice on the manifest PUT.
    proxy.fault(
        "HEAD",
        "/f/sif/blobs/",
        Action::Respond(429, vec![("Retry-After".into(), "1".into())]),
        1,
    );
    proxy.fault("PUT", "/manifests/", Action::Respond(500, vec![]), 2);
    let started = Instant::now();
    ok_json(&["push", image.to_str().unwrap(), &oras]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /v2/f/sif/blobs/uploads/")),
        "no upload status query: {requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("PUT /v2/f/sif/manifests/"))
            .count(),
        3
    );

    // Connection dropped mid-download: resumed with a Range request, file identical.
    proxy.clear();
    proxy.fault(
        "GET",
        &format!("/blobs/{}", sha256(&bytes)),
        Action::DropResponseAfter(9000),
        1,
    );
    let back = dir.path().join("back.sif");
    ok_json(&["pull", &oras, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    assert!(
        proxy.requests().iter().any(|r| r.contains("range=bytes=")),
        "{:?}",
        proxy.requests()
    );

    // A body limit: 413 above 4 KiB, the upload falls back to smaller chunks.
    proxy.clear();
    proxy.fault(
        "PATCH",
        "/blobs/uploads/",
        Action::TooLarge(4096),
        usize::MAX,
    );
    let chunked = format!("oras://{}/f/chunked:1", proxy.addr());
    ok_json(&["push", image.to_str().unwrap(), &chunked]);
    let patches = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert!(patches >= 5, "{:?}", proxy.requests());
    let direct = dir.path().join("direct.sif");
    ok_json(&[
        "pull",
        &format!("oras://{}/f/chunked:1", registry.addr()),
        direct.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&direct).unwrap(), bytes);

    // --chunk-size: every PATCH within it.
    proxy.clear();
    let sized = format!("oras://{}/f/sized:1", proxy.addr());
    run_ok(
        sifovl()
            .args(["push", "--chunk-size", "4K"])
            .arg(&image)
            .arg(&sized),
    );
    let requests = proxy.requests();
    let patches: Vec<&String> = requests.iter().filter(|r| r.starts_with("PATCH")).collect();
    assert!(patches.len() >= 4, "{requests:?}");
    for p in &patches {
        let len: usize = p.rsplit("len=").next().unwrap().parse().unwrap();
        assert!(len <= 4096, "{p}");
    }

    // Tampered blob and manifest: refused, nothing written.
    proxy.clear();
    proxy.fault(
        "GET",
        &format!("/blobs/{}", sha256(&bytes)),
        Action::Tamper,
        1,
    );
    let bad = dir.path().join("bad.sif");
    fails(sifovl().args(["pull", &oras]).arg(&bad), "refused");
    proxy.clear();
    proxy.fault("GET", "/manifests/", Action::Tamper, 1);
    fails(sifovl().args(["pull", &chunked]).arg(&bad), "refused");
    assert!(!bad.exists());
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sifovl"))
        .count();
    assert_eq!(leftovers, 0, "temporary files left behind");
}

#[test]
fn tar_push_runs_with_umoci_and_fixture_images_pushed_by_skopeo_pull_into_oci_sifs() {
    require_registry!();
    require_tool!("umoci");
    let fixtures = require_fixtures!();
    let registry = Registry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "tar.oci.sif");
    let reference = format!("docker://{}/tar/app:1", registry.addr());
    let report = ok_json(&[
        "push",
        "--layer-format",
        "tar",
        image.to_str().unwrap(),
        &reference,
    ]);
    assert_eq!(report["mode"], "tar");
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &reference,
        &format!("oci:{}:1", layout.display()),
    ]);
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle),
    );
    // The sample image's files, as `sifovl ls` lists them (36 and 31 bytes).
    let hello = std::fs::read(bundle.join("rootfs/hello.txt")).unwrap();
    assert_eq!(hello.len(), 36);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/os-release"))
            .unwrap()
            .len(),
        31
    );
    assert!(bundle.join("rootfs/bin/.keep").is_file());

    // With an overlay: its upper/ becomes a tar layer, its whiteout an AUFS one that umoci
    // applies, and the merged tree is what the runtime would show.
    if crate::util::have_tool("debugfs") {
        run_ok(
            sifovl()
                .args(["add", "--size", "64", "--sparse"])
                .arg(&image),
        );
        simulate_writable_run(
            &image,
            &["mknod /upper/hello.txt c 0 0", "mkdir /upper/newdir"],
        );
        let with_overlay = format!("docker://{}/tar/app:2", registry.addr());
        let report = ok_json(&[
            "push",
            "--layer-format",
            "tar",
            image.to_str().unwrap(),
            &with_overlay,
        ]);
        assert_eq!(report["blobs"].as_array().unwrap().len(), 3, "{report}");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &with_overlay,
            &format!("oci:{}:2", layout.display()),
        ]);
        let merged = dir.path().join("merged");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:2", layout.display()))
                .arg(&merged),
        );
        assert!(
            !merged.join("rootfs/hello.txt").exists(),
            "whiteout not applied"
        );
        assert!(merged.join("rootfs/newdir").is_dir());
        assert_eq!(
            std::fs::read(merged.join("rootfs/etc/os-release"))
                .unwrap()
                .len(),
            31
        );
    }

    // A manifest list pushed whole: --platform picks the entry.
    let src = fixtures.join("oci-layouts/hello-world-docker-v2-manifest-list");
    let target = format!("docker://{}/fixtures/list:1", registry.addr());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}", src.display()),
        &target,
    ]);
    let list: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &target,
    ]))
    .unwrap();
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")] {
        let entry = list["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap();
        let out = dir.path().join(format!("list-{arch}.oci.sif"));
        let report = ok_json(&[
            "pull",
            "--platform",
            platform,
            &target,
            out.to_str().unwrap(),
        ]);
        assert_eq!(report["source_manifest"], entry["digest"], "{platform}");
        run_ok(sifovl().arg("verify").arg(&out));
    }
    fails(
        sifovl()
            .args(["pull", "--platform", "freebsd/amd64", &target])
            .arg(dir.path().join("none.sif")),
        "no image for platform",
    );

    for name in ["hello-world-docker-v2-manifest", "many-layers"] {
        let src = fixtures.join("oci-layouts").join(name);
        let target = format!("docker://{}/fixtures/{name}:1", registry.addr());
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}", src.display()),
            &target,
        ]);
        let out = dir.path().join(format!("{name}.oci.sif"));
        let report = ok_json(&["pull", &target, out.to_str().unwrap()]);
        assert_eq!(report["mode"], "image");
        run_ok(sifovl().arg("verify").arg(&out));
        let bytes = std::fs::read(&out).unwrap();
        sifcheck::assert_oci_sif_invariants(&bytes, true);
    }
}

/// The options no other test passes through the binary (issue 15's coverage list):
/// `--username` with the password from SINGULARITY_DOCKER_PASSWORD, `--plain-http` and
/// `push --oras` with a docker:// reference; checked with skopeo, sha256 and the bytes.
#[test]
fn username_plain_http_and_oras_as_options() {
    require_registry!();
    require_tool!("htpasswd");
    let registry = Registry::start(Auth::Htpasswd("bob", "pw-of-bob"), false);
    let dir = tempfile::tempdir().unwrap();
    let image = sample_copy(dir.path(), "b.oci.sif");
    let bytes = std::fs::read(&image).unwrap();
    let host = registry.addr();
    let reference = format!("docker://{host}/opt/sif:1");
    let as_bob = |args: &[&str]| {
        let mut cmd = sifovl();
        cmd.args(args)
            .args(["--username", "bob", "--plain-http", "--json"])
            .env("SINGULARITY_DOCKER_PASSWORD", "pw-of-bob");
        serde_json::from_slice::<serde_json::Value>(&run_ok(&mut cmd)).unwrap()
    };
    // --oras with a docker:// reference: the whole SIF as one ORAS layer.
    as_bob(&["push", "--oras", image.to_str().unwrap(), &reference]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "bob:pw-of-bob",
        &reference,
    ]);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.sylabs.sif.layer.v1.sif"
    );
    assert_eq!(manifest["layers"][0]["digest"], sha256(&bytes));
    let back = dir.path().join("back.sif");
    as_bob(&[
        "pull",
        &format!("oras://{host}/opt/sif:1"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    let tags = as_bob(&["tags", &format!("docker://{host}/opt/sif")]);
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    let catalog = as_bob(&["catalog", &host]);
    assert_eq!(catalog["repositories"], serde_json::json!(["opt/sif"]));
    as_bob(&["delete", &reference]);
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "bob:pw-of-bob",
        ])
        .arg(&reference)
        .output()
        .unwrap();
    assert!(!out.status.success(), "deleted, skopeo finds nothing");
    // login --username --plain-http stores what `base64 -d` reads back as bob's pair.
    let authfile = dir.path().join("auth.json");
    let mut child = sifovl()
        .args([
            "login",
            "--username",
            "bob",
            "--password-stdin",
            "--plain-http",
        ])
        .arg("--authfile")
        .arg(&authfile)
        .arg(&host)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pw-of-bob\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).unwrap()).unwrap();
    let auth = stored["auths"][&host]["auth"].as_str().unwrap();
    let decoded = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{auth}' | base64 -d")),
    );
    assert_eq!(decoded, b"bob:pw-of-bob");
}

#[test]
fn a_full_disk_during_pull_leaves_the_output_whole_or_absent() {
    use crate::reliability::{SmallDisk, image_with_payload};
    require_registry!();
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let registry = Registry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let image = image_with_payload(dir.path(), 8);
    run_ok(sifovl().arg("seal").arg(&image));
    // As stored (squashfs layers, written as they arrive) and as tar layers (converted to
    // squashfs on the way in).
    let stored = format!("docker://{}/full/disk:stored", registry.addr());
    let tar = format!("docker://{}/full/disk:tar", registry.addr());
    ok_json(&["push", image.to_str().unwrap(), &stored]);
    ok_json(&[
        "push",
        "--layer-format",
        "tar",
        image.to_str().unwrap(),
        &tar,
    ]);
    let mut outcomes = std::collections::BTreeMap::new();
    for reference in [&stored, &tar] {
        for free_kib in [0u64, 8, 64, 512, 2048, 6144, 12288, 18432, 24576, 40960] {
            let what = format!("pull {reference} with {free_kib} KiB free");
            let outcome =
                disk.write_new_image(free_kib, sifovl().arg("pull").arg(reference), &what);
            outcomes.insert(what, outcome);
        }
    }
    eprintln!("{outcomes:#?}");
    for reference in [&stored, &tar] {
        for want in ["new", "ENOSPC, nothing left"] {
            assert!(
                outcomes
                    .iter()
                    .any(|(what, o)| what.contains(reference.as_str()) && *o == want),
                "{reference}: never {want}"
            );
        }
    }
}
