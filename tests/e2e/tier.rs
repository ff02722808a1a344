#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! The fleet tier on a real Garage cluster (three nodes, replication 3), and on moto's S3
//! server (one that honours `If-None-Match: *`, which Garage 2.5 does not): boxes
//! (daemons with caches of their own) share one bucket in front of one registry.

use std::path::{Path, PathBuf};

use hoard_tests::garage::Garage;
use hoard_tests::s3::{Bucket, Moto};
use hoard_tests::{DaemonProcess, RegistryProcess, hoard_json, hoard_on, import};

/// Small files (claimed fleet-wide as one batch), and files above 1 MiB (streamed, and
/// leased one by one).
const SMALL: usize = 40;
const LARGE: usize = 3;
const LARGE_SIZE: usize = 3 << 20;

/// The object store under test.
enum Store {
    Garage(Garage),
    Moto(Moto),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Garage,
    Moto,
}

impl Store {
    /// The bucket through node `node` (moto has one).
    fn bucket(&self, node: usize) -> Bucket {
        match self {
            Self::Garage(garage) => garage.bucket(node),
            Self::Moto(moto) => moto.bucket(),
        }
    }

    fn garage(&mut self) -> &mut Garage {
        match self {
            Self::Garage(garage) => garage,
            Self::Moto(_) => panic!("a Garage test on moto"),
        }
    }
}

struct Fleet {
    tmp: tempfile::TempDir,
    store: Store,
    registry: RegistryProcess,
}

fn bytes_of(i: usize, size: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A daemon in `dir` (its socket and cache) on `upstream`, with the tier on `bucket`;
/// `env` adds to the bucket's credentials.
fn tier_box(dir: &Path, bucket: &Bucket, upstream: &str, env: &[(&str, String)]) -> DaemonProcess {
    let mut all = bucket.env();
    all.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    DaemonProcess::start_env(
        &dir.join("hoard.sock"),
        &dir.join("cache"),
        upstream,
        &[
            "--tier",
            "s3://tier/fleet",
            "--tier-endpoint-url",
            &bucket.endpoint,
        ],
        &all,
    )
}

/// `files` as the fakes take them.
fn borrowed(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect()
}

/// `out` holds each of `files` with its bytes.
fn has_files(out: &Path, files: &[(String, Vec<u8>)]) {
    for (path, data) in files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), data, "{path}");
    }
}

const WANDB_KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fake W&B and a Garage cluster, for fleets whose upstream is W&B.
struct WandbFleet {
    tmp: tempfile::TempDir,
    fake: hoard_tests::fake_wandb::FakeWandb,
    garage: Garage,
}

impl WandbFleet {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let fake = hoard_tests::fake_wandb::FakeWandb::start(WANDB_KEY);
        let garage = Garage::start(&tmp.path().join("garage"));
        Self { tmp, fake, garage }
    }

    /// A box in `tmp/name` on the tier through node `node`, with the W&B key.
    fn tier_box(&self, name: &str, node: usize) -> DaemonProcess {
        let key = [("WANDB_API_KEY", WANDB_KEY.to_owned())];
        let upstream = format!("wandb+{}", self.fake.url);
        let dir = self.tmp.path().join(name);
        tier_box(&dir, &self.garage.bucket(node), &upstream, &key)
    }
}

impl Fleet {
    fn new() -> Self {
        Self::on(Kind::Garage)
    }

    fn on(kind: Kind) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("images")).unwrap();
        for i in 0..SMALL {
            std::fs::write(src.join(format!("images/{i}.bin")), bytes_of(i, 1000 + i)).unwrap();
        }
        for i in 0..LARGE {
            std::fs::write(
                src.join(format!("shard{i}.bin")),
                bytes_of(100 + i, LARGE_SIZE),
            )
            .unwrap();
        }
        let root = tmp.path().join("registry");
        import(&root, "acme/vision/bike", &src);
        let store = match kind {
            Kind::Garage => Store::Garage(Garage::start(&tmp.path().join("garage"))),
            Kind::Moto => Store::Moto(Moto::start()),
        };
        let registry = RegistryProcess::start(&root, &[]);
        Self {
            tmp,
            store,
            registry,
        }
    }

    fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    /// Box `name`: a daemon with its own cache, on the tier at Garage node `node`.
    fn start_box(&self, name: &str, node: usize) -> DaemonProcess {
        let dir = self.tmp.path().join(name);
        tier_box(&dir, &self.store.bucket(node), &self.registry.url, &[])
    }

    /// Upstream figures: (blob GETs, blob bytes served, version GETs).
    fn upstream(&self) -> (u64, u64, u64) {
        (
            self.registry.blob_gets(),
            self.registry
                .metric("hoard_registry_blob_bytes_served_total"),
            self.registry
                .metric("hoard_registry_requests_total{route=\"version_get\",status=\"200\"}"),
        )
    }
}

fn unique_bytes() -> u64 {
    (0..SMALL).map(|i| 1000 + i as u64).sum::<u64>() + (LARGE * LARGE_SIZE) as u64
}

fn get(daemon: &DaemonProcess, reference: &str, root: &Path) {
    let out = hoard_on(
        &daemon.socket,
        Path::new("/"),
        &["get", reference, "--root", root.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "get {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tier_status(daemon: &DaemonProcess) -> serde_json::Value {
    hoard_json(&daemon.socket, Path::new("/"), &["status"])["tier"].clone()
}

/// Waits until no box holds a lease in `bucket` (a box lets its batch lease go once its
/// uploads end).
fn no_leases(bucket: &Bucket) {
    for _ in 0..300 {
        if bucket.keys("fleet/leases-v1/").is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "leases were never let go: {:?}",
        bucket.keys("fleet/leases-v1/")
    );
}

/// Waits until the box has no uploads queued, and returns its tier status.
fn settled(daemon: &DaemonProcess) -> serde_json::Value {
    for _ in 0..300 {
        let tier = tier_status(daemon);
        if tier["queued"] == 0 {
            return tier;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("uploads never finished: {}", tier_status(daemon));
}

fn same_tree(a: &Path, b: &Path) {
    for entry in walk(a) {
        let rel = entry.strip_prefix(a).unwrap();
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
    assert_eq!(walk(a).len(), walk(b).len());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The second box gets `v0`, which the first fetched, with no upstream call at all: its
/// manifest and every blob come from the tier, checked.
#[test]
fn a_second_box_needs_no_upstream_call() {
    second_box(Kind::Garage);
}

#[test]
fn a_second_box_needs_no_upstream_call_on_a_store_that_honours_conditions() {
    second_box(Kind::Moto);
}

fn second_box(kind: Kind) {
    let fleet = Fleet::on(kind);
    let first = fleet.start_box("first", 0);
    get(
        &first,
        "acme/vision/bike:latest",
        &fleet.tmp.path().join("out1"),
    );
    let tier = settled(&first);
    assert_eq!(tier["uploads"], SMALL + LARGE, "{tier}");
    assert_eq!(tier["state"], "on", "{tier}");
    let conditional = tier["conditional_create"].as_str().unwrap();
    match kind {
        Kind::Garage => assert!(conditional.starts_with("ignored"), "{tier}"),
        Kind::Moto => assert_eq!(conditional, "honoured", "{tier}"),
    }
    let before = fleet.upstream();
    assert_eq!(before.0, (SMALL + LARGE) as u64);

    // Another box, on another node of the cluster.
    let second = fleet.start_box("second", 1);
    let out = fleet.tmp.path().join("out2");
    get(&second, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    assert_eq!(fleet.upstream(), before, "no upstream blob or version call");
    let tier = tier_status(&second);
    assert_eq!(tier["hits"], SMALL + LARGE, "{tier}");
    assert_eq!(tier["misses"], 0, "{tier}");
    assert_eq!(tier["metadata_hits"], 1, "{tier}");
    assert_eq!(tier["bytes_read"], unique_bytes(), "{tier}");
    let metrics = second.get("/metrics").unwrap();
    assert!(metrics.contains("\nhoard_tier_up 1\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("\nhoard_tier_hits_total {}\n", SMALL + LARGE)),
        "{metrics}"
    );

    // The bucket holds the documented layout.
    let blobs = fleet.store.bucket(0).keys("fleet/blobs-v1/");
    assert_eq!(blobs.len(), SMALL + LARGE, "{blobs:?}");
    assert!(blobs.iter().all(|k| {
        let parts: Vec<&str> = k.split('/').collect();
        parts.len() == 4 && parts[3].len() == 64 && parts[3].starts_with(parts[2])
    }));
    let versions = fleet.store.bucket(0).keys("fleet/meta-v1/");
    assert_eq!(versions.len(), 2, "by number and by digest: {versions:?}");
    assert!(
        versions
            .iter()
            .any(|k| k.ends_with("/acme/vision/bike/v0.json"))
    );
    no_leases(&fleet.store.bucket(0));
}

/// A tier object overwritten with wrong bytes (same size) through the S3 API: the box
/// refuses it, fetches that blob from the upstream, and its upload puts the right bytes
/// back.
#[test]
fn wrong_bytes_in_the_tier_are_refused_and_replaced() {
    wrong_bytes(Kind::Garage);
}

#[test]
fn wrong_bytes_in_a_store_that_honours_conditions_are_replaced_too() {
    wrong_bytes(Kind::Moto);
}

fn wrong_bytes(kind: Kind) {
    let fleet = Fleet::on(kind);
    let first = fleet.start_box("first", 0);
    get(
        &first,
        "acme/vision/bike:v0",
        &fleet.tmp.path().join("out1"),
    );
    settled(&first);
    let victim = fleet.src().join("shard1.bin");
    let right = std::fs::read(&victim).unwrap();
    let digest = blake3::hash(&right).to_hex().to_string();
    let key = format!("fleet/blobs-v1/{}/{digest}", &digest[..2]);
    let mut wrong = right.clone();
    wrong[LARGE_SIZE / 2] ^= 1;
    assert_eq!(
        fleet.store.bucket(0).request("PUT", &key, Some(wrong)).0,
        200
    );
    let small = fleet.src().join("images/3.bin");
    let small_right = std::fs::read(&small).unwrap();
    let small_digest = blake3::hash(&small_right).to_hex().to_string();
    let small_key = format!("fleet/blobs-v1/{}/{small_digest}", &small_digest[..2]);
    assert_eq!(
        fleet
            .store
            .bucket(0)
            .request("PUT", &small_key, Some(b"short".to_vec()))
            .0,
        200
    );
    let before = fleet.upstream();

    let second = fleet.start_box("second", 0);
    let out = fleet.tmp.path().join("out2");
    get(&second, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    let after = fleet.upstream();
    assert_eq!(
        after.0 - before.0,
        2,
        "only the two bad blobs from the upstream"
    );
    assert_eq!(after.1 - before.1, (LARGE_SIZE + small_right.len()) as u64);
    let tier = settled(&second);
    assert_eq!(tier["bad"], 2, "{tier}");
    assert_eq!(tier["hits"], SMALL + LARGE - 2, "{tier}");
    assert_eq!(
        fleet.store.bucket(0).request("GET", &key, None).1,
        right,
        "replaced"
    );
    assert_eq!(
        fleet.store.bucket(0).request("GET", &small_key, None).1,
        small_right
    );
}

/// A tier that refuses the credential, or is not there at all: gets succeed from the
/// upstream, and `status` says why the tier is off.
#[test]
fn a_tier_down_or_refusing_never_fails_a_get() {
    let fleet = Fleet::new();
    let dir = fleet.tmp.path().join("refused");
    let endpoint = fleet.store.bucket(0).endpoint;
    let refused = DaemonProcess::start_env(
        &dir.join("hoard.sock"),
        &dir.join("cache"),
        &fleet.registry.url,
        &[
            "--tier",
            "s3://tier/fleet",
            "--tier-endpoint-url",
            &endpoint,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", &fleet.store.bucket(0).key_id),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ("AWS_REGION", hoard_tests::garage::REGION),
        ],
    );
    let out = fleet.tmp.path().join("out1");
    get(&refused, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    let tier = tier_status(&refused);
    let state = tier["state"].as_str().unwrap();
    assert!(state.starts_with("off"), "{tier}");
    assert!(state.contains("credentials"), "{tier}");

    // Nothing listens where the tier should be.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = fleet.tmp.path().join("gone");
    let env = fleet.store.bucket(0).env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let down = DaemonProcess::start_env(
        &dir.join("hoard.sock"),
        &dir.join("cache"),
        &fleet.registry.url,
        &["--tier", "s3://tier/fleet", "--tier-endpoint-url", &gone],
        &env,
    );
    let started = std::time::Instant::now();
    let out = fleet.tmp.path().join("out2");
    get(&down, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "a tier that is not there costs no long timeouts"
    );
    let tier = tier_status(&down);
    assert!(tier["state"].as_str().unwrap().starts_with("off"), "{tier}");
    assert!(
        tier["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{tier}"
    );
}

/// Eight boxes cold-start the same artifact at the same instant: the blobs above 1 MiB
/// are downloaded from the upstream once across the fleet (the others wait on the
/// downloader's lease and read them from the tier), and the whole costs at most 1.1× the
/// artifact's unique bytes.
#[test]
fn eight_boxes_starting_together_download_it_about_once() {
    eight_boxes(Kind::Garage);
}

#[test]
fn eight_boxes_on_a_store_that_honours_conditions_download_it_about_once() {
    eight_boxes(Kind::Moto);
}

fn eight_boxes(kind: Kind) {
    let fleet = Fleet::on(kind);
    let boxes: Vec<DaemonProcess> = (0..8)
        .map(|i| fleet.start_box(&format!("box{i}"), i % 3))
        .collect();
    std::thread::scope(|scope| {
        for (i, daemon) in boxes.iter().enumerate() {
            let out = fleet.tmp.path().join(format!("out{i}"));
            scope.spawn(move || get(daemon, "acme/vision/bike:v0", &out));
        }
    });
    for i in 0..8 {
        same_tree(&fleet.src(), &fleet.tmp.path().join(format!("out{i}")));
    }
    let (_, served, _) = fleet.upstream();
    let unique = unique_bytes();
    #[expect(clippy::cast_precision_loss, reason = "a ratio for the message")]
    let ratio = served as f64 / unique as f64;
    let statuses: Vec<serde_json::Value> = boxes.iter().map(settled).collect();
    assert!(
        served * 10 <= unique * 11,
        "the upstream served {served} bytes for {unique} unique ones ({ratio:.2}×): {statuses:#?}"
    );
    let sum = |field: &str| -> u64 { statuses.iter().map(|t| t[field].as_u64().unwrap()).sum() };
    assert_eq!(
        sum("leases_won"),
        LARGE as u64 + 1,
        "one download per large blob, and one box for the small ones"
    );
    assert!(
        sum("leases_waited") > 0,
        "some box waited on another's lease"
    );
}

/// A Garage node killed while boxes get: every get succeeds (the store keeps quorum, and
/// where the box's own node is the one gone, the upstream serves).
#[test]
fn a_node_killed_in_the_middle_of_gets_fails_none() {
    let mut fleet = Fleet::new();
    let first = fleet.start_box("first", 0);
    get(
        &first,
        "acme/vision/bike:v0",
        &fleet.tmp.path().join("out0"),
    );
    settled(&first);
    let on_survivor = fleet.start_box("survivor", 1);
    let on_victim = fleet.start_box("victim", 2);
    std::thread::scope(|scope| {
        let (a, b) = (&on_survivor, &on_victim);
        let tmp = fleet.tmp.path().to_owned();
        let one = scope.spawn({
            let tmp = tmp.clone();
            move || get(a, "acme/vision/bike:v0", &tmp.join("out1"))
        });
        let two = scope.spawn(move || get(b, "acme/vision/bike:v0", &tmp.join("out2")));
        fleet.store.garage().kill(2);
        one.join().unwrap();
        two.join().unwrap();
    });
    same_tree(&fleet.src(), &fleet.tmp.path().join("out1"));
    same_tree(&fleet.src(), &fleet.tmp.path().join("out2"));
    // The survivor's node still has quorum: more gets are served from the tier.
    let third = fleet.start_box("third", 1);
    let before = fleet.upstream();
    get(
        &third,
        "acme/vision/bike:v0",
        &fleet.tmp.path().join("out3"),
    );
    same_tree(&fleet.src(), &fleet.tmp.path().join("out3"));
    assert_eq!(
        fleet.upstream(),
        before,
        "two of three nodes serve the tier"
    );
}

/// A publish's blobs go to the tier at once: another box gets the version, once the
/// upstream has it, without downloading a blob from the upstream.
#[test]
fn a_publish_fills_the_tier() {
    let fleet = Fleet::new();
    let publisher = fleet.start_box("publisher", 0);
    let mine = fleet.tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("weights.bin"), bytes_of(7, 2 << 20)).unwrap();
    std::fs::write(mine.join("config.json"), b"{\"layers\": 3}").unwrap();
    let out = hoard_on(
        &publisher.socket,
        Path::new("/"),
        &[
            "publish",
            "acme/vision/model",
            mine.to_str().unwrap(),
            "--alias",
            "prod",
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tier = settled(&publisher);
    assert_eq!(tier["uploads"], 2, "{tier}");
    let gets = fleet.registry.blob_gets();
    let other = fleet.start_box("other", 2);
    let dest = fleet.tmp.path().join("theirs");
    get(&other, "acme/vision/model:prod", &dest);
    same_tree(&mine, &dest);
    assert_eq!(fleet.registry.blob_gets(), gets, "every blob from the tier");
}

/// W&B as the upstream: the second box gets `v0` (its manifest, and each file through its
/// MD5's binding in the tier) with no call to W&B at all.
#[test]
fn a_second_box_of_a_wandb_fleet_needs_no_wandb_call() {
    let fleet = WandbFleet::new();
    let (tmp, fake, garage) = (&fleet.tmp, &fleet.fake, &fleet.garage);
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("images/{i}.png"), bytes_of(i, 3000 + i)))
        .chain([("weights.bin".to_owned(), bytes_of(99, 2 << 20))])
        .collect();
    let borrowed = borrowed(&files);
    fake.add_version("acme/vision/pets", &borrowed, &["latest"]);
    let first = fleet.tier_box("first", 0);
    get(&first, "acme/vision/pets:v0", &tmp.path().join("out1"));
    let tier = settled(&first);
    assert_eq!(tier["uploads"], files.len(), "{tier}");
    let (ops, downloads) = (fake.all_ops(), fake.downloads());
    assert_eq!(downloads, files.len() as u64);

    let second = fleet.tier_box("second", 0);
    let out = tmp.path().join("out2");
    get(&second, "acme/vision/pets:v0", &out);
    has_files(&out, &files);
    assert_eq!(fake.all_ops(), ops, "no W&B call");
    assert_eq!(fake.downloads(), downloads, "no W&B download");
    let tier = tier_status(&second);
    assert_eq!(tier["hits"], files.len(), "{tier}");
    assert_eq!(
        tier["metadata_hits"],
        files.len() + 1,
        "the version and each file's binding: {tier}"
    );
    // Bindings are kept per project: another project's members do not get them.
    let bindings = garage.bucket(0).keys("fleet/meta-v1/");
    assert!(
        bindings
            .iter()
            .filter(|k| k.contains("/foreign/"))
            .all(|k| k.contains("/foreign/acme/vision/md5/")),
        "{bindings:?}"
    );
}

/// `HTTP_PROXY` is honoured for the upstream and the tier alike (so a Dragonfly dfdaemon
/// can sit in front of both), and `NO_PROXY` takes a host out of it.
#[test]
fn the_upstream_and_the_tier_go_through_the_configured_proxy() {
    let fleet = Fleet::new();
    let proxy = hoard_tests::proxy::FaultyProxy::forward();
    let bucket = fleet.store.bucket(0);
    let start = |name: &str, endpoint: &str, no_proxy: &str| {
        let dir = fleet.tmp.path().join(name);
        let mut env = bucket.env();
        env.push(("HTTP_PROXY", proxy.url.clone()));
        env.push(("NO_PROXY", no_proxy.to_owned()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        DaemonProcess::start_env(
            &dir.join("hoard.sock"),
            &dir.join("cache"),
            &fleet.registry.url,
            &["--tier", "s3://tier/fleet", "--tier-endpoint-url", endpoint],
            &env,
        )
    };
    let first = start("first", &bucket.endpoint, "");
    get(
        &first,
        "acme/vision/bike:v0",
        &fleet.tmp.path().join("out1"),
    );
    settled(&first);
    no_leases(&bucket);
    let through_registry = proxy.asked(&format!("{}/", fleet.registry.url));
    let through_tier = proxy.asked(&format!("{}/tier/", bucket.endpoint));
    assert!(through_registry > SMALL + LARGE, "{through_registry}");
    assert!(through_tier > SMALL + LARGE, "{through_tier}");

    // The tier's host in `NO_PROXY` (named `localhost` here, the registry `127.0.0.1`):
    // the second box reads the tier directly.
    let by_name = bucket.endpoint.replace("127.0.0.1", "localhost");
    let second = start("second", &by_name, "localhost");
    let out = fleet.tmp.path().join("out2");
    get(&second, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    assert_eq!(tier_status(&second)["hits"], SMALL + LARGE);
    assert_eq!(
        proxy.asked(&format!("{}/tier/", bucket.endpoint))
            + proxy.asked(&format!("{by_name}/tier/")),
        through_tier,
        "nothing of the tier through the proxy"
    );
}

/// Garbage in the bucket: a version object that does not parse, one that is another
/// version, leases that do not parse or come from the future. None of it is trusted, and
/// none of it holds a get up.
#[test]
fn garbage_in_the_bucket_is_not_trusted_and_blocks_nothing() {
    let fleet = Fleet::on(Kind::Moto);
    let bucket = fleet.store.bucket(0);
    let upstream = &blake3::hash(fleet.registry.url.as_bytes()).to_hex()[..16];
    let versions = format!("fleet/meta-v1/{upstream}/versions/acme/vision/bike");
    assert_eq!(
        bucket
            .request(
                "PUT",
                &format!("{versions}/v0.json"),
                Some(b"{not json".to_vec())
            )
            .0,
        200
    );
    for i in 0..LARGE {
        let data = std::fs::read(fleet.src().join(format!("shard{i}.bin"))).unwrap();
        let hex = blake3::hash(&data).to_hex().to_string();
        for lease in ["9999999999999-zz", "garbage", "0000000000001-../x"] {
            let key = format!("fleet/leases-v1/{hex}/{lease}");
            assert_eq!(bucket.request("PUT", &key, Some(Vec::new())).0, 200);
        }
    }
    let first = fleet.start_box("first", 0);
    let started = std::time::Instant::now();
    let out = fleet.tmp.path().join("out1");
    get(&first, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "no wait on leases that do not count"
    );
    let tier = settled(&first);
    assert_eq!(tier["leases_waited"], 0, "{tier}");
    assert_eq!(tier["leases_won"], LARGE + 1, "and the batch: {tier}");
    assert_eq!(
        fleet
            .registry
            .metric("hoard_registry_requests_total{route=\"version_get\",status=\"200\"}"),
        1,
        "the garbage version was not used: the upstream was asked"
    );
    // Under `v0`, a version of another artifact, empty: the next box asks the upstream.
    let other = serde_json::json!({
        "entity": "acme", "project": "vision", "name": "car", "version": "v0",
        "digest": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        "manifest": {"version": 1, "entries": {}}
    });
    let key = format!("{versions}/v0.json");
    assert_eq!(
        bucket
            .request("PUT", &key, Some(other.to_string().into_bytes()))
            .0,
        200
    );
    let second = fleet.start_box("second", 0);
    let out = fleet.tmp.path().join("out2");
    get(&second, "acme/vision/bike:v0", &out);
    same_tree(&fleet.src(), &out);
    assert_eq!(
        fleet
            .registry
            .metric("hoard_registry_requests_total{route=\"version_get\",status=\"200\"}"),
        2
    );
}

/// The Hub as the upstream: a commit one box resolved (its files and their bindings) is
/// read by the next box from the tier, with no call to the Hub.
#[test]
fn a_second_box_of_a_hub_fleet_needs_no_hub_call() {
    const TOKEN: &str = "hf_fleet_token";
    let tmp = tempfile::tempdir().unwrap();
    let hub = hoard_tests::fake_hub::FakeHub::start(TOKEN);
    let files: Vec<(String, Vec<u8>)> = vec![
        ("config.json".into(), br#"{"model_type": "toy"}"#.to_vec()),
        ("model.safetensors".into(), bytes_of(5, 2 << 20)),
        ("tokenizer/vocab.json".into(), bytes_of(6, 40_000)),
    ];
    let borrowed = borrowed(&files);
    let sha = hub.commit("models/acme/toy", "main", &borrowed);
    let garage = Garage::start(&tmp.path().join("garage"));
    let upstream = format!("hf+{}", hub.url);
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        let env = [
            ("HF_TOKEN", TOKEN.to_owned()),
            ("HF_HOME", dir.join("hf-home").to_str().unwrap().to_owned()),
        ];
        tier_box(&dir, &garage.bucket(1), &upstream, &env)
    };
    let reference = format!("models/acme/toy:{sha}");
    let first = start("first");
    get(&first, &reference, &tmp.path().join("out1"));
    let tier = settled(&first);
    assert_eq!(tier["uploads"], files.len(), "{tier}");
    let (calls, downloads) = (hub.api_calls(), hub.downloads());

    let second = start("second");
    let out = tmp.path().join("out2");
    get(&second, &reference, &out);
    has_files(&out, &files);
    assert_eq!(hub.api_calls(), calls, "no call to the Hub's API");
    assert_eq!(hub.downloads(), downloads, "no download from the Hub");
    let tier = tier_status(&second);
    assert_eq!(tier["hits"], files.len(), "{tier}");
    let versions = garage.bucket(0).keys("fleet/meta-v1/");
    assert!(
        versions
            .iter()
            .any(|k| k.ends_with(&format!("/foreign-versions/models/acme/toy/{sha}.json"))),
        "{versions:?}"
    );
}

/// Four boxes of a W&B fleet cold-start one version together: each file is downloaded
/// from W&B once (small files claimed as one batch, the large one leased), the others
/// read from the tier.
#[test]
fn four_boxes_of_a_wandb_fleet_download_each_file_once() {
    let fleet = WandbFleet::new();
    let (tmp, fake) = (&fleet.tmp, &fleet.fake);
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("images/{i}.png"), bytes_of(200 + i, 2000 + i)))
        .chain([("weights.bin".to_owned(), bytes_of(299, 3 << 20))])
        .collect();
    let borrowed = borrowed(&files);
    fake.add_version("acme/vision/pets", &borrowed, &["latest"]);
    let boxes: Vec<DaemonProcess> = (0..4)
        .map(|i| fleet.tier_box(&format!("box{i}"), i % 3))
        .collect();
    std::thread::scope(|scope| {
        for (i, daemon) in boxes.iter().enumerate() {
            let out = tmp.path().join(format!("out{i}"));
            scope.spawn(move || get(daemon, "acme/vision/pets:v0", &out));
        }
    });
    for i in 0..4 {
        has_files(&tmp.path().join(format!("out{i}")), &files);
    }
    let statuses: Vec<serde_json::Value> = boxes.iter().map(settled).collect();
    assert_eq!(
        fake.downloads(),
        files.len() as u64,
        "each file once from W&B: {statuses:#?}"
    );
}

/// A file's binding in the tier counts only within the project it was downloaded in: a
/// version of another project that names the same MD5 (anyone can log a manifest naming
/// any MD5) is not served those bytes from the tier; its box downloads the file within
/// its own project, as a box without a tier would.
#[test]
fn a_binding_from_one_project_is_not_used_for_another() {
    let fleet = WandbFleet::new();
    let (tmp, fake) = (&fleet.tmp, &fleet.fake);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("secret/{i}.bin"), bytes_of(400 + i, 5000 + i)))
        .collect();
    let borrowed = borrowed(&files);
    fake.add_version("acme/vision/pets", &borrowed, &["latest"]);
    fake.add_version("acme/other/copy", &borrowed, &["latest"]);
    let first = fleet.tier_box("first", 0);
    get(&first, "acme/vision/pets:v0", &tmp.path().join("out1"));
    settled(&first);
    let downloads = fake.downloads();

    let second = fleet.tier_box("second", 0);
    let out = tmp.path().join("out2");
    get(&second, "acme/other/copy:v0", &out);
    has_files(&out, &files);
    assert_eq!(
        fake.downloads(),
        downloads + files.len() as u64,
        "every file downloaded again, within `acme/other`"
    );
    assert_eq!(tier_status(&second)["hits"], 0);
}
