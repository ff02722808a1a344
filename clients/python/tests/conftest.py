"""Fixtures: a real registry and daemon, from the built `hoard` binary (``HOARD_BIN``,
which ``scripts/test`` sets)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List

import pytest


def hoard_bin() -> str:
    path = os.environ.get("HOARD_BIN") or shutil.which("hoard")
    if not path or not os.path.exists(path):
        pytest.fail("set HOARD_BIN to the built `hoard` binary (scripts/test does)")
    return path


class Setup:
    """A registry with `acme/vision/bike` (v0, alias `best`) and a daemon in front of it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = hoard_bin()
        self.src = tmp / "src"
        for i in range(12):
            write(self.src / "images" / f"{i:02}.png", f"image {i}\n".encode() * 40)
        write(self.src / "labels.csv", b"bike,1\n")
        write(self.src / "imagesX.txt", b"shares the string prefix")
        self.root = tmp / "registry"
        self.run("registry", "import", "--root", str(self.root), "acme/vision/bike", str(self.src), "--alias", "best")
        self.registry = subprocess.Popen(
            [self.bin, "registry", "serve", "--listen", "127.0.0.1:0", "--root", str(self.root)],
            stdout=subprocess.PIPE,
            env={**os.environ, "HOARD_LOG": "warn"},
        )
        assert self.registry.stdout is not None
        self.url = self.registry.stdout.readline().decode().strip()
        assert self.url.startswith("http://"), self.url
        self.socket = str(tmp / "hoard.sock")
        self.daemon = subprocess.Popen(
            [self.bin, "daemon", "--socket", self.socket, "--cache-dir", str(tmp / "cache"), "--upstream", self.url],
            env={**os.environ, "HOARD_LOG": "warn"},
        )
        deadline = time.time() + 20
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                break
            except OSError:
                assert self.daemon.poll() is None, "the daemon exited at start"
                assert time.time() < deadline, "the daemon never listened"
                time.sleep(0.02)

    def run(self, *args: str) -> str:
        out = subprocess.run([self.bin, *args], capture_output=True, check=True)
        return out.stdout.decode()

    def metric(self, sample: str) -> int:
        with urllib.request.urlopen(f"{self.url}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return int(float(line.split()[-1]))
        return 0

    def commit(self, artifact: str, manifest: dict) -> dict:
        request = urllib.request.Request(
            f"{self.url}/v1/artifacts/{artifact}/versions",
            data=json.dumps({"manifest": manifest}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        for process in (self.daemon, self.registry):
            process.terminate()
            process.wait(timeout=30)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def files_under(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    s = Setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOARD_SOCKET", s.socket)
    monkeypatch.delenv("HOARD_ENTITY", raising=False)
    monkeypatch.delenv("HOARD_PROJECT", raising=False)
    yield s
    s.stop()
