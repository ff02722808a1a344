//! A proxy in front of an upstream that damages answers on demand, as a bad proxy or a
//! flaky NIC would: one flipped byte in the middle of a body, a body cut short but complete
//! (its `Content-Length` cut too), a body that breaks off before its `Content-Length`, or
//! one that pauses halfway (a slow link).
//!
//! [`FaultyProxy::forward`] is the same as a forward proxy (what `HTTP_PROXY` names): it
//! relays each request to the host its absolute URL names, and counts them.
//!
//! It speaks just enough HTTP/1.1 for hoard's clients: one request per connection (it asks
//! the upstream with `Connection: close` and answers the same way), request bodies by
//! `Content-Length`. A chunked answer is passed on with a `Content-Length`, so that faults
//! apply to streamed answers too (the registry's batches). [`Fault::Refuse`] answers
//! `405` without asking the upstream.
//!
//! [`Proxied`] starts the usual three: a registry, the proxy in front of it, and a daemon
//! behind the proxy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Files of an artifact: (path, bytes).
pub type Files = Vec<(String, Vec<u8>)>;

/// A registry serving artifacts from `root`, this proxy in front of it, and a daemon (on
/// `dir/d.sock`, caching in `dir/cache`) that fetches through the proxy.
pub struct Proxied {
    pub registry: crate::RegistryProcess,
    pub proxy: FaultyProxy,
    pub daemon: crate::DaemonProcess,
}

impl Proxied {
    /// Imports each `(name, files)` into `dir/root`, then starts the three; `extra` are
    /// the daemon's flags.
    pub fn start(dir: &std::path::Path, artifacts: &[(String, Files)], extra: &[&str]) -> Self {
        let root = dir.join("root");
        for (i, (name, files)) in artifacts.iter().enumerate() {
            let src = dir.join(format!("src{i}"));
            for (path, bytes) in files {
                let path = src.join(path);
                std::fs::create_dir_all(path.parent().expect("a file has a parent"))
                    .expect("create the source tree");
                std::fs::write(path, bytes).expect("write a source file");
            }
            crate::import(&root, name, &src);
        }
        let registry = crate::RegistryProcess::start(&root, &[]);
        let proxy = FaultyProxy::start(&registry.url);
        let daemon = crate::DaemonProcess::start_with(
            &dir.join("d.sock"),
            &dir.join("cache"),
            &proxy.url,
            extra,
        );
        Self {
            registry,
            proxy,
            daemon,
        }
    }
}

/// What to do to an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Flip one byte in the middle of the body.
    Flip,
    /// Send the first half of the body, with a `Content-Length` that says so.
    Shorten,
    /// Send the first half of the body under the full `Content-Length`, then close.
    BreakOff,
    /// Send the first half of the body, wait this long, then the rest (a slow link).
    Pause(std::time::Duration),
    /// Answer `405 Method Not Allowed` without asking the upstream (a server that lacks
    /// the route).
    Refuse,
}

#[derive(Default)]
struct State {
    /// (path prefix, fault, how many more answers).
    faults: Vec<(String, Fault, u32)>,
    /// (path prefix, how long to hold each answer back).
    delays: Vec<(String, std::time::Duration)>,
    /// Paths asked, in order.
    asked: Vec<String>,
}

/// The proxy, on a loopback port until dropped.
pub struct FaultyProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    /// Proxies to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        Self::serve(
            upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
        )
    }

    /// A forward proxy: each request goes where its absolute URL says (`http://` only),
    /// and [`Self::asked`] sees that URL.
    pub fn forward() -> Self {
        Self::serve(String::new())
    }

    fn serve(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (served, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (state, target) = (served.clone(), target.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &target, &state);
                });
            }
        });
        Self { url, state, stop }
    }

    /// Damages the next `times` answers to paths starting with `prefix` with `fault`.
    pub fn fault(&self, prefix: &str, fault: Fault, times: u32) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults
            .push((prefix.to_owned(), fault, times));
    }

    /// Holds every answer to paths starting with `prefix` back for `delay` (a slow link).
    pub fn delay(&self, prefix: &str, delay: std::time::Duration) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .delays
            .push((prefix.to_owned(), delay));
    }

    /// Stops damaging answers.
    pub fn heal(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults
            .clear();
    }

    /// How many requests to paths starting with `prefix` came through.
    pub fn asked(&self, prefix: &str) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .asked
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Reads an HTTP head (up to the blank line) and returns it with what came after it.
fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// `head` with `Connection: close` (and, if given, another `Content-Length`).
fn rewrite(head: &str, length: Option<usize>) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n\r\n").split("\r\n") {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("connection")
            || (length.is_some()
                && (name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("transfer-encoding")))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if let Some(length) = length {
        out.push_str("Content-Length: ");
        out.push_str(&length.to_string());
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// The body of a `Transfer-Encoding: chunked` answer, decoded; `None` for any other.
fn dechunk(head: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    if !chunked {
        return None;
    }
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&raw[at..at + end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
        at += end + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(raw.get(at..at + size)?);
        at += size + 2;
    }
    Some(body)
}

fn relay(mut client: TcpStream, target: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client)?;
    let want = content_length(&head).unwrap_or(0);
    while body.len() < want {
        let mut chunk = vec![0u8; want - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    // A forward proxy's request names its target: relay it in origin form.
    let (head, target) = match path.strip_prefix("http://") {
        Some(rest) if target.is_empty() => {
            let (host, origin) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let origin = if origin.is_empty() { "/" } else { origin };
            (head.replacen(&path, origin, 1), host.to_owned())
        }
        _ => (head, target.to_owned()),
    };
    let (fault, delay) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.asked.push(path.clone());
        let delay = state
            .delays
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, d)| *d);
        let found = state
            .faults
            .iter_mut()
            .find(|(prefix, _, times)| *times > 0 && path.starts_with(prefix.as_str()));
        let fault = found.map(|(_, fault, times)| {
            *times -= 1;
            *fault
        });
        (fault, delay)
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    if let Some(Fault::Refuse) = fault {
        let problem = br#"{"type":"method-not-allowed","title":"Method Not Allowed","status":405,"detail":"refused by the test proxy"}"#;
        let head = format!(
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            problem.len()
        );
        client.write_all(head.as_bytes())?;
        client.write_all(problem)?;
        return client.flush();
    }
    let mut upstream = TcpStream::connect(&target)?;
    upstream.write_all(rewrite(&head, None).as_bytes())?;
    upstream.write_all(&body)?;
    let (answer, mut rest) = read_head(&mut upstream)?;
    upstream.read_to_end(&mut rest)?;
    // A streamed (chunked) answer is sent on with its length, so that faults can cut it.
    let (answer, rest) = match dechunk(&answer, &rest) {
        Some(body) => (rewrite(&answer, Some(body.len())), body),
        None => (answer, rest),
    };
    let mut rest = rest;
    let length = content_length(&answer);
    match (fault, length) {
        (Some(Fault::Flip), Some(len)) if len > 0 => {
            rest[len / 2] ^= 0x20;
            client.write_all(rewrite(&answer, None).as_bytes())?;
            client.write_all(&rest)?;
        }
        (Some(Fault::Shorten), Some(len)) if len > 1 => {
            client.write_all(rewrite(&answer, Some(len / 2)).as_bytes())?;
            client.write_all(&rest[..len / 2])?;
        }
        (Some(Fault::BreakOff), Some(len)) if len > 1 => {
            client.write_all(rewrite(&answer, None).as_bytes())?;
            client.write_all(&rest[..len / 2])?;
        }
        (Some(Fault::Pause(pause)), Some(len)) if len > 1 => {
            client.write_all(rewrite(&answer, None).as_bytes())?;
            client.write_all(&rest[..len / 2])?;
            client.flush()?;
            std::thread::sleep(pause);
            client.write_all(&rest[len / 2..])?;
        }
        _ => {
            client.write_all(rewrite(&answer, None).as_bytes())?;
            client.write_all(&rest)?;
        }
    }
    client.flush()
}
