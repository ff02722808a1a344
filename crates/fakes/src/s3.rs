//! A hand in an object store's bucket, for the fleet tier's tests: S3 requests signed as
//! any S3 client signs them (with `hoard-cloud`'s `SigV4`, which its own tests check against
//! botocore), and the stores the tests run on: [`crate::garage::Garage`], and
//! [`Moto`], moto's S3 server (which, unlike Garage 2.5, honours `If-None-Match: *`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One bucket of a store, and the keys that may use it.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
    pub name: String,
}

impl Bucket {
    /// The environment a daemon needs to use the bucket as its tier.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", self.region.clone()),
        ]
    }

    /// One request (`key` may end in `?query`; empty for the bucket itself): the status
    /// and the body; status 0 when the store could not be reached.
    pub fn request(&self, method: &str, key: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        use hoard_cloud::sigv4::{EMPTY_SHA256, Request, SigV4, Target, sha256_hex};
        let keys = SigV4::new(
            self.key_id.clone(),
            self.secret.clone(),
            None,
            self.region.clone(),
            None,
        );
        let target = Target {
            endpoint: Some(self.endpoint.clone()),
            region: self.region.clone(),
            path_style: true,
        };
        let payload = body.as_deref().map_or(EMPTY_SHA256.to_owned(), sha256_hex);
        let (path, query) = key.split_once('?').unwrap_or((key, ""));
        let query: Vec<(&str, &str)> = query
            .split('&')
            .filter(|q| !q.is_empty())
            .map(|q| q.split_once('=').unwrap_or((q, "")))
            .collect();
        let request = Request {
            method,
            bucket: &self.name,
            key: path,
            query: &query,
            headers: &[],
            payload: &payload,
        };
        let signed = keys
            .sign(&target, &request, std::time::SystemTime::now())
            .expect("a request signs");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let mut request = reqwest::Client::new().request(method, &signed.url);
            for (name, value) in signed.headers {
                request = request.header(name, value);
            }
            if let Some(body) = body {
                request = request.body(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.bytes().await.unwrap_or_default().to_vec())
                }
                Err(e) => (0, e.to_string().into_bytes()),
            }
        })
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("?list-type=2&prefix={prefix}"), None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8_lossy(&body)
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next().map(str::to_owned))
            .collect()
    }
}

/// moto's S3 server (`HOARD_MOTO`: its `moto_server`, which `scripts/moto` installs),
/// with the bucket `tier`; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Self {
        let binary = std::env::var_os("HOARD_MOTO").map(PathBuf::from).expect(
            "HOARD_MOTO names moto's `moto_server`: run scripts/test, or export HOARD_MOTO=$(scripts/moto)",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.bucket().request("PUT", "", None).0 != 200 {
            assert!(Instant::now() < deadline, "moto_server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn bucket(&self) -> Bucket {
        Bucket {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            key_id: "moto".to_owned(),
            secret: "moto-secret".to_owned(),
            region: "us-east-1".to_owned(),
            name: "tier".to_owned(),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
