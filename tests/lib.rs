//! Helpers of the end-to-end tests, which run the real binaries of the profile under test.

use std::path::PathBuf;

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

/// A `hoard registry serve` process on a free loopback port; killed on drop.
pub struct RegistryProcess {
    pub url: String,
    child: std::process::Child,
}

impl RegistryProcess {
    /// Starts the registry on `root` with extra arguments, and waits until it answers
    /// `/v1/health` (the address is the first line of its stdout).
    pub fn start(root: &std::path::Path, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary("hoard"))
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--root"])
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
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let request =
                    format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && (answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 401"))
                {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the registry at {} never answered /v1/health", self.url);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid =
            rustix::process::Pid::from_raw(self.child.id().cast_signed()).expect("a live pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal sent");
        self.child.wait().expect("the registry exits")
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
