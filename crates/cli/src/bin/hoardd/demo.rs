//! `hoard demo`: everything in a temp dir — a sample dataset imported into a registry, the
//! registry and a daemon on loopback and a private socket — then a cold and a warm `get`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hoard_client::Client;
use hoard_layout::DirRoot;
use hoard_types::api::{MaterializeRequest, PublishRequest};
use hoard_upstream::{ClientOptions, RegistryClient};

use hoard_cli::get::{bytes, summary_line};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Small files in the sample dataset (1–16 KiB each).
    #[arg(long, default_value_t = 2000)]
    files: usize,
    /// Large files in the sample dataset.
    #[arg(long, default_value_t = 2)]
    large: usize,
    /// Size of each large file, MiB.
    #[arg(long, default_value_t = 64)]
    large_mib: usize,
}

/// Writes the sample dataset: pseudo-random bytes, so nothing deduplicates by accident.
fn make_dataset(dir: &Path, args: &DemoArgs) -> anyhow::Result<u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut fill = |len: usize| -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&next().to_le_bytes());
        }
        data.truncate(len);
        data
    };
    let mut total = 0;
    for i in 0..args.files {
        let path = dir.join(format!("images/{:02}/{i:05}.bin", i % 20));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let len = 1024 + (i * 7919) % (15 * 1024);
        std::fs::write(&path, fill(len))?;
        total += len as u64;
    }
    for i in 0..args.large {
        let path = dir.join(format!("weights/shard-{i}.bin"));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let len = args.large_mib << 20;
        std::fs::write(&path, fill(len))?;
        total += len as u64;
    }
    Ok(total)
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("hoard-demo-").tempdir()?;
    let dir = tmp.path();
    hoard_cli::process::out(&format!("hoard demo in {}", dir.display()))?;
    let total = make_dataset(&dir.join("src"), args)?;
    let root = DirRoot::create(dir.join("registry"))?;
    let name = hoard_types::ArtifactName::new("acme", "demo", "sample")?;
    let committed = hoard_registry::import_dir(
        &root,
        &name,
        &dir.join("src"),
        vec!["best".to_owned()],
        Some("dataset".to_owned()),
        serde_json::json!({}),
    )?;
    hoard_cli::process::out(&format!(
        "imported {}+{} files ({}) into a registry as {name}:{}",
        args.files,
        args.large,
        bytes(total),
        committed.version.version
    ))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = hoard_registry::State::open(root.root().to_owned(), None, hoard_registry::Limits::default())?;
        let registry = tokio::spawn(hoard_registry::run(listener, Arc::new(state), stopped(stop_rx.clone())));

        let store = hoard_store::Store::open(dir.join("cache"))?;
        let upstream = hoard_upstream::Upstream::publishing(Arc::new(RegistryClient::new(&url, ClientOptions::default())?));
        let socket = dir.join("hoard.sock");
        let daemon = Arc::new(hoard_daemon::Daemon::new(store, upstream, hoard_daemon::Options::default()));
        let server = tokio::spawn(hoard_daemon::run(crate::daemon::bind(&socket)?, daemon, stopped(stop_rx)));
        hoard_cli::process::out(&format!("registry on {url}, daemon on {}", socket.display()))?;

        let client = Client::new(&socket);
        let reference = "acme/demo/sample:best";
        for (run, target) in [("cold", "job-1"), ("warm", "job-2")] {
            let request = MaterializeRequest {
                reference: reference.to_owned(),
                dest: Some(dir.join(target).display().to_string()),
                ..MaterializeRequest::default()
            };
            let summary = client.materialize(&request, |_| {}).await?;
            hoard_cli::process::out(&format!("{run}: {}", summary_line(reference, &summary)))?;
        }
        let sample = dir.join("job-2/weights/shard-0.bin");
        if let Ok(meta) = std::fs::metadata(&sample) {
            hoard_cli::process::out(&format!(
                "job-2/weights/shard-0.bin: inode {} with {} links (one cache blob, shared by both jobs)",
                meta.ino(),
                meta.nlink()
            ))?;
        }
        // Create-and-use: a job's output becomes a version, usable at once, uploaded by
        // the daemon; publishing the same bytes again uploads nothing.
        let output = dir.join("job-2-output");
        std::fs::create_dir_all(&output)?;
        std::fs::write(output.join("model.bin"), b"weights trained on acme/demo/sample")?;
        for run in ["publish", "publish again"] {
            let published = client
                .publish(&PublishRequest {
                    artifact: "acme/demo/model".to_owned(),
                    inputs: vec![output.display().to_string()],
                    kind: Some("model".to_owned()),
                    wait_seconds: Some(30),
                    ..PublishRequest::default()
                })
                .await?;
            hoard_cli::process::out(&format!(
                "{run}: acme/demo/model:{} ({}), {} blobs uploaded",
                published.version.as_deref().unwrap_or("pending"),
                published.state,
                published.uploaded_blobs
            ))?;
        }
        let _ = stop_tx.send(true);
        server.await.context("daemon task")??;
        registry.await.context("registry task")??;
        Ok::<_, anyhow::Error>(())
    })
}
