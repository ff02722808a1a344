use std::fs;
use std::os::unix::fs::PermissionsExt;

use hoard_store::{BLOB_MTIME, BlobKey, LinkMode};
use hoard_types::Digest;

use crate::common::Cache;

#[test]
fn verify_finds_bytes_changed_with_metadata_restored() {
    let cache = Cache::new();
    cache.manifest(&[("a", b"aaaa", false), ("b", b"bbbb", false)]);
    let key = BlobKey::new(Digest::of(b"aaaa"), false);
    let path = cache.store.blob_path(&key);
    // Same size, mode and mtime as before: only re-hashing can tell.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, b"AAAA").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(BLOB_MTIME as u64);
    fs::File::open(&path).unwrap().set_modified(t).unwrap();

    let report = cache.store.verify().unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.bad.len(), 1);
    assert_eq!(report.bad[0].key, key);
    assert!(
        report.bad[0].why.contains("hash to"),
        "{}",
        report.bad[0].why
    );
    assert!(!path.exists());
    assert!(cache.store.record(&key).unwrap().is_none());
    assert!(cache.store.verify().unwrap().bad.is_empty());
}

#[test]
fn eviction_frees_unlinked_blobs_first_and_spares_pins_and_leases() {
    let cache = Cache::new();
    let manifest = cache.manifest(&[("linked", &[1; 1000], false)]);
    let dest = cache.path("job");
    cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    let free = cache
        .store
        .ingest_reader(&[2u8; 1000][..], false, None)
        .unwrap()
        .key;
    let pinned = cache
        .store
        .ingest_reader(&[3u8; 1000][..], false, None)
        .unwrap()
        .key;
    let leased = cache
        .store
        .ingest_reader(&[4u8; 1000][..], false, None)
        .unwrap()
        .key;
    cache.store.pin(&[pinned]).unwrap();
    let lease = cache.store.lease([leased]);

    let report = cache.store.evict_to(0).unwrap();
    let linked = BlobKey::new(Digest::of(&[1; 1000]), false);
    assert_eq!(report.evicted, 2, "{report:?}");
    assert_eq!((report.freed_bytes, report.released_bytes), (1000, 1000));
    assert_eq!(report.remaining_bytes, 2000);
    assert!(cache.store.record(&free).unwrap().is_none());
    assert!(cache.store.record(&linked).unwrap().is_none());
    assert!(cache.store.record(&pinned).unwrap().is_some());
    assert!(cache.store.record(&leased).unwrap().is_some());
    // The materialized file outlives its blob's cache name.
    assert_eq!(fs::read(dest.join("linked")).unwrap(), vec![1; 1000]);

    drop(lease);
    cache.store.unpin(&[pinned]).unwrap();
    let report = cache.store.evict_to(1000).unwrap();
    assert_eq!((report.evicted, report.remaining_bytes), (1, 1000));
}

#[test]
fn eviction_prefers_blobs_no_workdir_links_even_if_used_later() {
    let cache = Cache::new();
    let manifest = cache.manifest(&[("old", &[1; 500], false)]);
    cache
        .materialize(&manifest, &cache.path("job"), LinkMode::Hardlink)
        .unwrap();
    let newer = cache
        .store
        .ingest_reader(&[2u8; 500][..], false, None)
        .unwrap()
        .key;
    let report = cache.store.evict_to(500).unwrap();
    assert_eq!(
        (
            report.evicted,
            report.freed_bytes,
            report.held_by_workdirs_bytes
        ),
        (1, 500, 500)
    );
    assert!(cache.store.record(&newer).unwrap().is_none());
}
