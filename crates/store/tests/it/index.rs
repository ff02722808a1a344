use hoard_store::{AliasRecord, Error};
use hoard_types::{ArtifactName, Digest, ForeignDigest, Version};

use crate::common::Cache;

fn version(number: u32, files: &[(&str, &[u8], bool)], cache: &Cache) -> Version {
    let manifest = cache.manifest(files);
    Version {
        entity: "acme".into(),
        project: "vision".into(),
        name: "bikes".into(),
        version: format!("v{number}"),
        digest: manifest.digest(),
        aliases: vec!["latest".into()],
        kind: Some("dataset".into()),
        metadata: serde_json::json!({"rows": 2}),
        created_at: Some("2026-11-26T16:00:00Z".into()),
        manifest,
    }
}

#[test]
fn versions_aliases_and_foreign_digests_survive_a_restart() {
    let cache = Cache::new();
    let name = ArtifactName::new("acme", "vision", "bikes").unwrap();
    let v0 = version(0, &[("a.txt", b"a", false)], &cache);
    let v1 = version(1, &[("a.txt", b"a", false), ("b.sh", b"b", true)], &cache);
    cache.store.put_version(&v0).unwrap();
    cache.store.put_version(&v1).unwrap();
    let alias = AliasRecord {
        version: 1,
        digest: v1.digest,
        resolved_ms: 1_764_172_800_000,
    };
    cache.store.put_alias(&name, "latest", &alias).unwrap();
    let md5: ForeignDigest = "md5:0cc175b9c0f1b6a831c399e269772661".parse().unwrap();
    cache.store.put_foreign(&md5, &Digest::of(b"a")).unwrap();

    let cache = cache.reopen();
    assert_eq!(cache.store.version(&name, 0).unwrap().as_ref(), Some(&v0));
    assert_eq!(cache.store.version(&name, 1).unwrap().as_ref(), Some(&v1));
    assert_eq!(cache.store.version(&name, 2).unwrap(), None);
    assert_eq!(
        cache.store.version_by_digest(&v1.digest).unwrap().as_ref(),
        Some(&v1)
    );
    assert_eq!(
        cache
            .store
            .version_by_digest(&Digest::of(b"no such manifest"))
            .unwrap(),
        None
    );
    assert_eq!(cache.store.alias(&name, "latest").unwrap(), Some(alias));
    assert_eq!(cache.store.alias(&name, "best").unwrap(), None);
    let other = ArtifactName::new("acme", "vision", "bikes2").unwrap();
    assert_eq!(
        cache.store.alias(&other, "latest").unwrap(),
        None,
        "keys of one artifact must not match another's"
    );
    assert_eq!(cache.store.foreign(&md5).unwrap(), Some(Digest::of(b"a")));
}

#[test]
fn a_version_whose_digest_is_not_its_manifests_is_refused() {
    let cache = Cache::new();
    let mut v = version(0, &[("a.txt", b"a", false)], &cache);
    v.digest = Digest::of(b"lies");
    let err = cache.store.put_version(&v).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("claims digest"), "{err}");
    let name = ArtifactName::new("acme", "vision", "bikes").unwrap();
    assert_eq!(cache.store.version(&name, 0).unwrap(), None);
    assert_eq!(cache.store.version_by_digest(&v.digest).unwrap(), None);
}

/// The cache remembers which upstream its versions came from. The same upstream again, or
/// a first one, changes nothing; another forgets versions, aliases and pins (pin counts
/// back to 0) but keeps blobs and the MD5 map (facts about bytes); a pending publish
/// refuses the switch.
#[test]
fn another_upstream_forgets_versions_and_pins_but_not_blobs() {
    let cache = Cache::new();
    let name = ArtifactName::new("acme", "vision", "bikes").unwrap();
    let v0 = version(0, &[("a.txt", b"a", false)], &cache);
    let blob = v0.manifest.entries.values().next().unwrap().clone();
    let key = hoard_store::BlobKey::new(blob.digest, false);
    let md5: ForeignDigest = "md5:0cc175b9c0f1b6a831c399e269772661".parse().unwrap();
    cache.store.put_foreign(&md5, &blob.digest).unwrap();
    assert_eq!(cache.store.bind_upstream("dir:///a").unwrap(), (0, 0));
    cache.store.put_version(&v0).unwrap();
    let alias = AliasRecord {
        version: 0,
        digest: v0.digest,
        resolved_ms: 1,
    };
    cache.store.put_alias(&name, "latest", &alias).unwrap();
    cache.store.pin(&[key]).unwrap();
    cache
        .store
        .put_record(hoard_store::Table::Pins, "acme/vision/bikes@x", b"{}")
        .unwrap();

    let cache = cache.reopen();
    assert_eq!(cache.store.bind_upstream("dir:///a").unwrap(), (0, 0));
    assert_eq!(cache.store.version(&name, 0).unwrap().as_ref(), Some(&v0));

    assert_eq!(cache.store.bind_upstream("http://b").unwrap(), (1, 1));
    assert_eq!(cache.store.version(&name, 0).unwrap(), None);
    assert_eq!(cache.store.version_by_digest(&v0.digest).unwrap(), None);
    assert_eq!(cache.store.alias(&name, "latest").unwrap(), None);
    assert!(
        cache
            .store
            .records(hoard_store::Table::Pins)
            .unwrap()
            .is_empty()
    );
    let record = cache.store.record(&key).unwrap().expect("the blob stays");
    assert_eq!(record.pins, 0);
    assert_eq!(cache.store.foreign(&md5).unwrap(), Some(blob.digest));

    cache
        .store
        .put_record(hoard_store::Table::Outbox, "pending", b"{}")
        .unwrap();
    let err = cache.store.bind_upstream("dir:///a").unwrap_err();
    assert!(
        matches!(err, Error::PendingForAnotherUpstream { pending: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("not yet uploaded to `http://b`"),
        "{err}"
    );
}

/// The index takes disk in proportion to what it holds: RocksDB used to preallocate its
/// log (`fallocate`) from the write buffers, 75 MiB for a cache of 160 small blobs, which
/// a user with a 25 MiB budget saw as 100 MiB.
#[test]
fn a_small_index_takes_little_disk() {
    use std::os::unix::fs::MetadataExt;
    let cache = Cache::new();
    let files: Vec<(String, Vec<u8>)> = (0..160)
        .map(|i| (format!("f{i}"), format!("blob {i}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8], bool)> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice(), false))
        .collect();
    let v0 = version(0, &refs, &cache);
    cache.store.put_version(&v0).unwrap();
    let allocated: u64 = std::fs::read_dir(cache.root().join("index-v1"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum();
    assert!(
        allocated < 4 << 20,
        "the index of 160 blobs takes {allocated} bytes of disk"
    );
}
