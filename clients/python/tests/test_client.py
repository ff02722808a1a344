"""The Python client against the real daemon and registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hoard
from conftest import Setup, files_under, write


def test_download_to_the_default_root_gives_the_bytes_as_hardlinks(setup: Setup) -> None:
    art = hoard.use_artifact("acme/vision/bike:best")
    assert (art.name, art.version, art.entity, art.project) == ("bike", "v0", "acme", "vision")
    assert art.qualified_name == "acme/vision/bike:v0"
    assert len(art.files()) == 14
    root = art.download()
    assert root == os.path.join("artifacts", "bike:v0")
    assert (Path(root) / "labels.csv").read_bytes() == b"bike,1\n"
    assert (Path(root) / "images/03.png").read_bytes() == (setup.src / "images/03.png").read_bytes()
    # A second job gets the same inode: a hardlink of the cache blob, nothing fetched.
    gets = setup.metric('hoard_registry_requests_total{route="blob_get",status="200"}')
    again = Path(art.download(root="job-2"))
    assert os.stat(again / "labels.csv").st_ino == os.stat(Path(root) / "labels.csv").st_ino
    assert setup.metric('hoard_registry_requests_total{route="blob_get",status="200"}') == gets


def test_path_prefix_and_one_file(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOARD_ENTITY", "acme")
    monkeypatch.setenv("HOARD_PROJECT", "vision")
    api = hoard.Api()
    art = api.artifact("bike")
    art.download(root="prefix", path_prefix="images/")
    assert files_under(Path("prefix")) == [f"images/{i:02}.png" for i in range(12)]
    # W&B's plain string prefix: `images` also selects `imagesX.txt`.
    art.download(root="string", path_prefix="images")
    assert len(files_under(Path("string"))) == 13

    entry = art.get_path("labels.csv")
    assert (entry.path, entry.size, entry.ref) == ("labels.csv", 7, None)
    path = entry.download(root="one")
    assert path == os.path.join("one", "labels.csv")
    assert files_under(Path("one")) == ["labels.csv"]
    with pytest.raises(hoard.NotFound, match="no file `nope`"):
        art.get_entry("nope")


def test_allow_and_ignore_patterns_as_huggingface_hub_reads_them(setup: Setup) -> None:
    art = hoard.use_artifact("acme/vision/bike:best")
    root = art.download(root="pat", allow_patterns="images/*", ignore_patterns=["images/0*"])
    assert files_under(Path(root)) == ["images/10.png", "images/11.png"]
    with pytest.raises(hoard.NotFound, match="matches the patterns"):
        art.download(root="none", allow_patterns=["*.parquet"])


def test_the_progress_line_is_the_clis() -> None:
    # The same words as `crates/cli/src/progress.rs` (its test has these figures).
    event = {"fetched_blobs": 3, "missing_blobs": 10, "fetched_bytes": 30 << 20, "missing_bytes": 90 << 20}
    assert hoard.progress_line(event, 2.0) == "fetching 3/10 blobs, 30.0 MiB / 90.0 MiB, 15.0 MiB/s, ETA 4 s"
    start = {"fetched_blobs": 0, "missing_blobs": 1, "fetched_bytes": 0, "missing_bytes": 5}
    assert hoard.progress_line(start, 0.0) == "fetching 0/1 blobs, 0 B / 5 B, 0 B/s, ETA ?"


def test_a_reference_entry_shows_its_uri(setup: Setup) -> None:
    setup.commit(
        "acme/vision/refs",
        {
            "version": 1,
            "entries": {
                "raw/a.bin": {"digest": "ab" * 32, "size": 99, "ref": "https://example.com/a.bin"},
            },
        },
    )
    art = hoard.use_artifact("acme/vision/refs:latest")
    assert art.get_entry("raw/a.bin").ref == "https://example.com/a.bin"


def test_create_and_use_twice_is_one_version(setup: Setup) -> None:
    write(Path("model.h5"), b"weights" * 1000)
    write(Path("tokenizer/vocab.txt"), b"a\nb\n")

    def make() -> hoard.Artifact:
        new = hoard.Artifact("reference-model", type="model", metadata={"lr": 0.1})
        new.add_file("model.h5")
        new.add_dir("tokenizer/", name="tokenizer")
        return new

    first = hoard.use_artifact(make(), entity="acme", project="vision")
    assert first.version == "v0"
    assert first.type == "model"
    assert first.metadata == {"lr": 0.1}
    assert sorted(e.path for e in first.files()) == ["model.h5", "tokenizer/vocab.txt"]
    second = hoard.use_artifact(make(), entity="acme", project="vision")
    assert (second.version, second.digest) == ("v0", first.digest)
    assert setup.metric('hoard_registry_requests_total{route="commit",status="201"}') == 1
    root = Path(second.download(root="use"))
    assert (root / "tokenizer/vocab.txt").read_bytes() == b"a\nb\n"
    # Later edits of the source do not reach the version.
    write(Path("model.h5"), b"edited")
    assert (Path(first.download(root="again")) / "model.h5").read_bytes() == b"weights" * 1000


def test_a_project_lists_its_artifacts_and_an_artifact_its_versions(setup: Setup) -> None:
    api = hoard.Api(entity="acme")
    assert [(a["name"], a["versions"], a["latest"]) for a in api.artifact_collections("vision")] == [
        ("bike", 1, "v0")
    ]
    versions = api.artifact_versions("vision/bike")
    assert [(v["version"], v["aliases"], v["files"], v["cached_files"]) for v in versions] == [
        ("v0", ["best", "latest"], 14, None)
    ]
    hoard.use_artifact("acme/vision/bike:v0").download(root="got")
    assert api.artifact_versions("vision/bike")[0]["cached_files"] == 14
    with pytest.raises(hoard.NotFound, match="no artifact `nope` in project `acme/vision`.*bike"):
        api.artifact_versions("vision/nope")


def test_errors_carry_the_daemons_words(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises(hoard.NotFound, match="no artifact `nope` in project `acme/vision`"):
        hoard.use_artifact("acme/vision/nope:latest")
    with pytest.raises(hoard.BadRequest, match="no project"):
        hoard.use_artifact("bike")
    # The name as given, not the `m2:latest` it stands for.
    new = hoard.Artifact("m2", type="model")
    write(Path("m2.bin"), b"m2")
    new.add_file("m2.bin")
    with pytest.raises(hoard.BadRequest, match="reference `m2`: no project given"):
        hoard.use_artifact(new)
    with pytest.raises(hoard.BadRequest, match="not a file"):
        hoard.Artifact("x", type="model").add_file("missing.bin")
    with pytest.raises(hoard.DaemonNotRunning, match="hoard daemon"):
        hoard.Api(socket=str(tmp_path / "nobody.sock")).artifact("acme/vision/bike")


def test_create_and_use_works_at_once_with_the_upstream_down(setup: Setup) -> None:
    import time

    setup.registry.terminate()
    setup.registry.wait(timeout=30)
    write(Path("offline/model.h5"), b"made offline")
    new = hoard.Artifact("offline-model", type="model")
    new.add_dir("offline")
    started = time.monotonic()
    art = hoard.use_artifact(new, entity="acme", project="vision")
    assert time.monotonic() - started < 10, "one failed attempt, not a long wait"
    assert art.version == "pending"
    root = Path(art.download(root="here"))
    assert (root / "model.h5").read_bytes() == b"made offline"
