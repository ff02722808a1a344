//! Helpers of the end-to-end tests, which run the real binaries of the profile under test.

use std::path::PathBuf;

pub use hoard_fakes::{garage, s3};
pub use hoard_fakes::{hub as fake_hub, server as fake_server, wandb as fake_wandb};
pub mod proxy;
pub mod users;

/// The path of a workspace binary built by `cargo build --workspace` in the same profile
/// as this test (the test executable lives in `<target>/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from <target>/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "`{}` is missing: run `cargo build --workspace --all-targets` first (scripts/test does)",
        path.display()
    );
    path
}

/// A file of this checkout, found at run time: `CARGO_MANIFEST_DIR` is read from the
/// environment that cargo and nextest give a test, not baked in by `env!`. A target
/// directory shared by clones at different paths (as CI's is) keeps test binaries built
/// in another clone, and a path baked in would point there.
pub fn repo(relative: &str) -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo or nextest");
    PathBuf::from(manifest).join("..").join(relative)
}

/// A `hoard registry serve` process on a free loopback port; killed on drop.
pub struct RegistryProcess {
    pub url: String,
    child: std::process::Child,
}

impl RegistryProcess {
    /// Starts the registry on `root` with extra arguments, and waits until it answers
    /// `/v1/health` (the address is the first line of its stdout).
    pub fn start(root: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_on(root, "127.0.0.1:0", extra)
    }

    /// [`Self::start`] on a given address.
    pub fn start_on(root: &std::path::Path, listen: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary("hoard"))
            .args(["registry", "serve", "--listen", listen, "--root"])
            .arg(root)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("hoard starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the registry prints its address");
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://"), "unexpected first line `{url}`");
        let this = Self { url, child };
        this.wait_healthy();
        this
    }

    fn wait_healthy(&self) {
        let addr = self.url.trim_start_matches("http://");
        for _ in 0..500 {
            if let Some(answer) = get_tcp(addr, "/v1/health")
                && (answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 401"))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the registry at {} never answered /v1/health", self.url);
    }

    /// The value of one sample of the registry's `/metrics` (0 if absent), e.g.
    /// `hoard_registry_requests_total{route="blob_get",status="200"}`.
    pub fn metric(&self, sample: &str) -> u64 {
        let answer = get_tcp(self.url.trim_start_matches("http://"), "/metrics")
            .expect("the registry answers /metrics");
        answer
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Blob downloads the registry answered (full and ranged).
    pub fn blob_gets(&self) -> u64 {
        self.metric("hoard_registry_requests_total{route=\"blob_get\",status=\"200\"}")
            + self.metric("hoard_registry_requests_total{route=\"blob_get\",status=\"206\"}")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid =
            rustix::process::Pid::from_raw(self.child.id().cast_signed()).expect("a live pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal sent");
        self.child.wait().expect("the registry exits")
    }
}

/// One HTTP/1.1 GET over a fresh connection: the whole answer, or `None`.
fn get_tcp(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// A `hoard daemon` process on a socket in a temp dir; killed on drop.
pub struct DaemonProcess {
    pub socket: PathBuf,
    child: std::process::Child,
}

impl DaemonProcess {
    /// Starts `hoard daemon` and waits until its socket answers `/v1/health`.
    pub fn start(socket: &std::path::Path, cache: &std::path::Path, upstream: &str) -> Self {
        Self::start_with(socket, cache, upstream, &[])
    }

    /// [`Self::start`] with more `hoard daemon` arguments.
    pub fn start_with(
        socket: &std::path::Path,
        cache: &std::path::Path,
        upstream: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_env(socket, cache, upstream, extra, &[])
    }

    /// [`Self::start_with`] with environment variables (e.g. `HOARD_TOKEN`).
    pub fn start_env(
        socket: &std::path::Path,
        cache: &std::path::Path,
        upstream: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let child = std::process::Command::new(binary("hoard"))
            .arg("daemon")
            .arg("--socket")
            .arg(socket)
            .arg("--cache-dir")
            .arg(cache)
            .arg("--upstream")
            .arg(upstream)
            .args(extra)
            // The background scrub would race the tests that damage a blob and then ask
            // for it; the tests of the scrub turn it on.
            .args(if extra.contains(&"--scrub-rate") {
                &[][..]
            } else {
                &["--scrub-rate", "off"][..]
            })
            .env("HOARD_LOG", "warn")
            .envs(env.iter().copied())
            .spawn()
            .expect("hoard starts");
        let mut this = Self {
            socket: socket.to_owned(),
            child,
        };
        for _ in 0..1000 {
            if let Some(answer) = this.get("/v1/health")
                && answer.starts_with("HTTP/1.1 200")
            {
                return this;
            }
            if let Ok(Some(status)) = this.child.try_wait() {
                panic!("the daemon exited at start: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "the daemon on {} never answered /v1/health",
            socket.display()
        );
    }

    /// One GET on the socket: the whole answer, or `None`.
    pub fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: hoard\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid =
            rustix::process::Pid::from_raw(self.child.id().cast_signed()).expect("a live pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal sent");
        self.child.wait().expect("the daemon exits")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hoard registry import --root ROOT NAME SRC`, which must succeed.
pub fn import(root: &std::path::Path, name: &str, src: &std::path::Path) {
    let out = std::process::Command::new(binary("hoard"))
        .args(["registry", "import", "--root"])
        .arg(root)
        .arg(name)
        .arg(src)
        .output()
        .expect("hoard starts");
    assert!(
        out.status.success(),
        "import {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hoard ARGS` against the daemon on `socket`, run in `cwd`.
pub fn hoard_on(
    socket: &std::path::Path,
    cwd: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(binary("hoard"))
        .args(args)
        .env("HOARD_SOCKET", socket)
        .env("HOARD_LOG", "warn")
        .current_dir(cwd)
        .output()
        .expect("hoard starts")
}

/// `hoard ARGS --json` against the daemon on `socket`, which must succeed: its answer.
pub fn hoard_json(
    socket: &std::path::Path,
    cwd: &std::path::Path,
    args: &[&str],
) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = hoard_on(socket, cwd, &args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Writes a registry tokens file: each token as (name, secret, one project pattern, role).
pub fn tokens_file(path: &std::path::Path, tokens: &[(&str, &str, &str, &str)]) {
    use std::fmt::Write as _;
    let mut text = String::new();
    for (name, secret, project, role) in tokens {
        let _ = write!(
            text,
            "[[token]]\nname = \"{name}\"\nsecret_sha256 = \"{}\"\ngrants = {{ \"{project}\" = \"{role}\" }}\n",
            sha256_hex(secret)
        );
    }
    std::fs::write(path, text).expect("the tokens file is written");
}

/// The names in an answer of `hoard artifacts --json`, in its order.
pub fn artifact_names(listed: &serde_json::Value) -> Vec<String> {
    listed["artifacts"]
        .as_array()
        .expect("`artifacts` is a list")
        .iter()
        .map(|a| a["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The SHA-256 of `secret` in hex, as a registry tokens file holds it.
pub fn sha256_hex(secret: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{secret}' | sha256sum")])
        .output()
        .expect("sh starts");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints the hash")
        .to_owned()
}

/// Commits a version of `name` (`entity/project/name`) made of reference entries (path,
/// digest, size, URI) to the registry at `url`, with `token` if given.
pub fn commit_refs(
    url: &str,
    token: Option<&str>,
    name: &str,
    entries: &[(&str, hoard_types::Digest, u64, &str)],
) {
    use hoard_upstream::Publisher;
    let mut manifest = hoard_types::Manifest::new();
    for (path, digest, size, uri) in entries {
        manifest.entries.insert(
            hoard_types::RelPath::new(*path).expect("a valid path"),
            hoard_types::Entry {
                digest: *digest,
                exec: false,
                reference: Some((*uri).to_owned()),
                size: *size,
            },
        );
    }
    let request = hoard_types::registry::CommitRequest {
        manifest,
        aliases: vec![],
        kind: None,
        metadata: serde_json::json!({}),
    };
    let options = hoard_upstream::ClientOptions {
        token: token.map(str::to_owned),
        ..hoard_upstream::ClientOptions::default()
    };
    let client = hoard_upstream::RegistryClient::new(url, options).expect("a registry URL");
    let mut parts = name.splitn(3, '/');
    let (entity, project, artifact) = (
        parts.next().expect("entity/project/name"),
        parts.next().expect("entity/project/name"),
        parts.next().expect("entity/project/name"),
    );
    let name = hoard_types::ArtifactName::new(entity, project, artifact).expect("a valid name");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(client.commit(&name, &request))
        .expect("the commit succeeds");
}
