#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Progress moves while a large blob arrives, streamed or in ranges: the bytes a request
//! reports grow before the blob is done, never past what is missing, never backwards.

use std::path::Path;
use std::time::Duration;

use hoard_tests::proxy::{Fault, FaultyProxy};
use hoard_tests::{DaemonProcess, RegistryProcess, import};
use hoard_types::api::{Event, MaterializeRequest};

const SIZE: usize = 6 << 20;

/// Every progress event of one materialize call: (blobs done, bytes).
fn progress_of(socket: &Path, dest: &Path) -> (Vec<(u64, u64)>, u64) {
    let client = hoard_client::Client::new(socket);
    let request = MaterializeRequest {
        reference: "acme/models/big:v0".to_owned(),
        dest: Some(dest.display().to_string()),
        ..MaterializeRequest::default()
    };
    let mut seen = Vec::new();
    let mut missing = 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(client.materialize(&request, |event| {
            if let Event::Progress {
                fetched_blobs,
                fetched_bytes,
                missing_bytes,
                ..
            } = event
            {
                seen.push((*fetched_blobs, *fetched_bytes));
                missing = *missing_bytes;
            }
        }))
        .unwrap();
    (seen, missing)
}

#[test]
fn the_bytes_move_while_a_large_blob_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::create_dir_all(t.join("src")).unwrap();
    std::fs::write(t.join("src/weights.bin"), &big).unwrap();
    import(&t.join("registry"), "acme/models/big", &t.join("src"));
    let registry = RegistryProcess::start(&t.join("registry"), &[]);
    // Every blob answer stops halfway for a while, as on a slow link.
    let proxy = FaultyProxy::start(&registry.url);
    proxy.fault("/v1/blobs/", Fault::Pause(Duration::from_millis(700)), 1000);
    for (i, extra) in [&[][..], &["--large-blob-mib", "2", "--range-mib", "2"]]
        .into_iter()
        .enumerate()
    {
        let daemon = DaemonProcess::start_with(
            &t.join(format!("{i}.sock")),
            &t.join(format!("cache-{i}")),
            &proxy.url,
            extra,
        );
        let dest = t.join(format!("out-{i}"));
        let (seen, missing) = progress_of(&daemon.socket, &dest);
        assert_eq!(missing, SIZE as u64);
        assert_eq!(std::fs::read(dest.join("weights.bin")).unwrap(), big);
        assert!(
            seen.iter()
                .any(|&(blobs, bytes)| blobs == 0 && bytes > 0 && bytes < SIZE as u64),
            "{extra:?}: no progress within the blob: {seen:?}"
        );
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
        assert_eq!(seen.last(), Some(&(1, SIZE as u64)), "{seen:?}");
    }
}
