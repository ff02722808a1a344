//! A real Garage cluster for the fleet tier's tests: three nodes on loopback, replication
//! factor 3, with a bucket and a key made through Garage's own CLI. The binary is
//! `HOARD_GARAGE` (the test command sets it from `scripts/garage`, which builds it once
//! per machine). Nodes are killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node of the cluster.
struct Node {
    config: PathBuf,
    s3: u16,
    child: Option<Child>,
}

/// See the module docs.
pub struct Garage {
    binary: PathBuf,
    nodes: Vec<Node>,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

/// The region the cluster's S3 API answers for.
pub const REGION: &str = "garage";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The Garage binary the test command names.
pub fn binary() -> PathBuf {
    std::env::var_os("HOARD_GARAGE").map(PathBuf::from).expect(
        "HOARD_GARAGE names a Garage binary: run scripts/test, or export HOARD_GARAGE=$(scripts/garage)",
    )
}

impl Garage {
    /// Starts three nodes under `dir`, joins them into one layout (a zone each), and
    /// makes the bucket `tier` and a key that may read and write it.
    pub fn start(dir: &Path) -> Self {
        Self::start_binary(binary(), dir)
    }

    /// [`Self::start`] with the Garage binary `binary`.
    pub fn start_binary(binary: PathBuf, dir: &Path) -> Self {
        let secret = format!("{:064x}", u128::from(std::process::id()) << 64 | 0x5eed);
        let mut nodes = Vec::new();
        for i in 0..3 {
            let root = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&root).expect("a node directory");
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\n\
                     data_dir = \"{root}/data\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n",
                    root = root.display()
                ),
            )
            .expect("a node's config");
            nodes.push(Node {
                config,
                s3,
                child: None,
            });
        }
        let mut garage = Self {
            binary,
            nodes,
            key_id: String::new(),
            secret: String::new(),
            bucket: "tier".to_owned(),
        };
        for i in 0..3 {
            garage.start_node(i);
        }
        let ids: Vec<String> = (0..3)
            .map(|i| garage.wait_for(i, &["node", "id", "-q"]))
            .collect();
        for id in &ids[1..] {
            garage.cli(0, &["node", "connect", id.trim()]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = &id.trim()[..16];
            garage.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("dc{i}"),
                    "-c",
                    "1G",
                    short,
                ],
            );
        }
        garage.cli(0, &["layout", "apply", "--version", "1"]);
        garage.cli(0, &["bucket", "create", "tier"]);
        let key = garage.cli(0, &["key", "create", "hoard"]);
        let field = |name: &str| {
            key.lines().find_map(|l| l.strip_prefix(name)).map_or_else(
                || panic!("`garage key create` printed no `{name}`:\n{key}"),
                |v| v.trim().to_owned(),
            )
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        garage.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", "tier", "--key", "hoard",
            ],
        );
        garage.wait_until_writable();
        garage
    }

    /// Waits until a PUT through every node succeeds: the nodes are connected, and the
    /// layout reached all of them (until then writes miss their quorum).
    fn wait_until_writable(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in 0..self.nodes.len() {
            loop {
                let (status, body) =
                    self.bucket(node)
                        .request("PUT", "ready", Some(b"ready".to_vec()));
                if status == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node} never took a write: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(self.bucket(0).request("DELETE", "ready", None).0, 204);
    }

    fn start_node(&mut self, i: usize) {
        let log =
            std::fs::File::create(self.nodes[i].config.with_file_name("log")).expect("a log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("garage starts");
        self.nodes[i].child = Some(child);
    }

    /// Runs `garage -c <node i> ARGS` until it succeeds (the node is starting), at most
    /// 30 s: its stdout.
    fn wait_for(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_cli(i, args) {
                Ok(out) => return out,
                Err(e) if Instant::now() > deadline => panic!("garage {args:?}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs the CLI on node `i`, retrying for a while (the layout settles).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        self.wait_for(i, args)
    }

    /// Node `i`'s S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3)
    }

    /// The bucket through node `i`, signed with the cluster's key.
    pub fn bucket(&self, i: usize) -> crate::s3::Bucket {
        crate::s3::Bucket {
            endpoint: self.endpoint(i),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
            region: REGION.to_owned(),
            name: self.bucket.clone(),
        }
    }

    /// Kills node `i` (SIGKILL), as a crashed machine would stop.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
