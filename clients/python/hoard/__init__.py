"""hoard: a local-first artifact cache. This package is the jobs' side: it asks the local
``hoard daemon`` (over its Unix socket) for artifacts, with the shape of W&B's Artifacts
API::

    import hoard

    art = hoard.use_artifact("vision/bike-dataset:latest")
    path = art.download()                       # ./artifacts/bike-dataset:v3
    art.download(root="data/", path_prefix="images/")
    art.get_path("labels.csv").download(root="data/")

    new = hoard.Artifact("reference-model", type="model")
    new.add_file("model.h5")
    art = hoard.use_artifact(new)               # create-and-use, idempotent

Where hoard differs from W&B, the docstring of the name says why. For the Hugging Face
Hub, ``hoard.hf.snapshot_download`` has ``huggingface_hub``'s signature.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Union

from ._errors import BadRequest, DaemonNotRunning, HoardError, NotFound, PermissionDenied
from ._patterns import patterns
from ._transport import Transport, default_socket

__all__ = [
    "Api",
    "Artifact",
    "Entry",
    "use_artifact",
    "HoardError",
    "DaemonNotRunning",
    "NotFound",
    "PermissionDenied",
    "BadRequest",
    "default_socket",
    "progress_line",
]

#: A progress callback gets each event the daemon streams (``resolved``, ``progress``,
#: ``warning``, ``done``) as a dict.
Progress = Callable[[Dict[str, Any]], None]


class Api:
    """Like ``wandb.Api()``: the entry point for existing artifacts.

    ``entity`` and ``project`` default to ``HOARD_ENTITY`` and ``HOARD_PROJECT`` (W&B:
    ``WANDB_ENTITY``/``WANDB_PROJECT``); ``socket`` to ``HOARD_SOCKET`` or the per-user
    default the CLI uses.
    """

    def __init__(
        self,
        socket: Optional[str] = None,
        entity: Optional[str] = None,
        project: Optional[str] = None,
    ) -> None:
        self._transport = Transport(socket)
        self.entity = entity or os.environ.get("HOARD_ENTITY") or None
        self.project = project or os.environ.get("HOARD_PROJECT") or None

    def artifact(self, name: str, type: Optional[str] = None) -> "Artifact":
        """The version ``name`` names: ``[[entity/]project/]name[:alias|:vN]`` or
        ``...name@<digest>``; without a selector, ``:latest``. ``type`` is checked when
        given, like W&B."""
        answer = self._transport.call(
            "POST",
            "/v1/resolve",
            {"reference": name, "entity": self.entity, "project": self.project, "entries": True},
        )
        artifact = Artifact._resolved(self, answer)
        if type is not None and artifact.type != type:
            raise BadRequest(f"`{artifact.qualified_name}` is of type `{artifact.type}`, not `{type}`")
        return artifact

    def artifact_collections(self, project: Optional[str] = None) -> List[Dict[str, Any]]:
        """The artifacts of a project (``entity/project`` or ``project``; default
        ``HOARD_ENTITY``/``HOARD_PROJECT``), as W&B's ``Api.artifact_collections``: each a
        dict with ``name``, ``versions``, ``latest`` and ``aliases``."""
        answer = self._transport.call(
            "POST",
            "/v1/artifacts",
            {"path": project, "entity": self.entity, "project": self.project},
        )
        return list(answer["artifacts"])

    def artifact_versions(self, name: str) -> List[Dict[str, Any]]:
        """Every version of the artifact ``[[entity/]project/]name``, oldest first, as
        dicts with ``version``, ``digest``, ``aliases``, ``files``, ``size``,
        ``created_at`` and ``cached_files`` (``None``: not cached here). Publishes made
        here and not uploaded yet come last, with ``version`` ``"pending"``."""
        answer = self._transport.call(
            "POST",
            "/v1/versions",
            {"name": name, "entity": self.entity, "project": self.project},
        )
        return list(answer["versions"])

    def _materialize(
        self,
        reference: str,
        root: str,
        path_prefix: Optional[str] = None,
        file: Optional[str] = None,
        mode: Optional[str] = None,
        progress: Optional[Progress] = None,
        include: Optional[List[str]] = None,
        exclude: Optional[List[str]] = None,
    ) -> Dict[str, Any]:
        body = {
            "include": include or [],
            "exclude": exclude or [],
            "reference": reference,
            "entity": self.entity,
            "project": self.project,
            "dest": os.path.abspath(root),
            "path_prefix": path_prefix,
            "file": file,
            "mode": mode,
        }
        on_event = progress if progress is not None else _tty_progress()
        try:
            return self._transport.stream("/v1/materialize", body, on_event)
        finally:
            if progress is None and sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()


class Entry:
    """One file of a version (W&B's ``ArtifactManifestEntry``)."""

    def __init__(self, artifact: "Artifact", raw: Dict[str, Any]) -> None:
        self._artifact = artifact
        self.path: str = raw["path"]
        self.size: int = raw["size"]
        #: blake3 of the bytes; for a W&B file not downloaded yet, W&B's ``md5:…``.
        self.digest: str = raw.get("digest") or raw.get("upstream_digest") or ""
        #: The URI of a reference entry (``https://``, ``file://``, ``s3://``), else None.
        self.ref: Optional[str] = raw.get("ref")

    def download(self, root: Optional[str] = None, mode: Optional[str] = None) -> str:
        """Materializes this one file under ``root`` (default: the version's default
        root) and returns the file's path, like W&B's ``entry.download()``."""
        root = root if root is not None else self._artifact._default_root()
        self._artifact._api._materialize(
            self._artifact._pinned_reference(), root, file=self.path, mode=mode
        )
        return os.path.join(root, self.path)

    def __repr__(self) -> str:
        return f"Entry({self.path!r}, size={self.size}, digest={self.digest[:12]}…)"


class Artifact:
    """A version of an artifact, or (built with ``Artifact(name, type)``) a new one to
    publish with :func:`use_artifact`."""

    def __init__(
        self,
        name: str,
        type: str,
        description: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.name = name
        self.type: Optional[str] = type
        self.description = description
        self.metadata: Dict[str, Any] = dict(metadata or {})
        if description is not None:
            self.metadata.setdefault("description", description)
        self.entity: Optional[str] = None
        self.project: Optional[str] = None
        self.version: Optional[str] = None
        self.digest: Optional[str] = None
        self.aliases: List[str] = []
        self._inputs: List[str] = []
        self._entries: List[Entry] = []
        self._api: Optional[Api] = None

    # -- building a new version ------------------------------------------------------

    def add_file(self, local_path: str, name: Optional[str] = None) -> None:
        """Adds a file, at its file name or at ``name`` (a logical path)."""
        self._add(local_path, name, os.path.isfile, "a file")

    def add_dir(self, local_path: str, name: Optional[str] = None) -> None:
        """Adds a directory's tree, at the top or under ``name``."""
        self._add(local_path, name, os.path.isdir, "a directory")

    def _add(self, local_path: str, name: Optional[str], check: Callable[[str], bool], what: str) -> None:
        if self._api is not None:
            raise BadRequest(f"`{self.qualified_name}` is an existing version; files can only be added to a new Artifact")
        path = os.path.abspath(local_path)
        if not check(path):
            raise BadRequest(f"`{local_path}` is not {what}")
        if name is not None and "=" in name:
            raise BadRequest(f"a logical path may not contain `=`: `{name}`")
        self._inputs.append(path if name is None else f"{name.strip('/')}={path}")

    # -- an existing version ---------------------------------------------------------

    @classmethod
    def _resolved(cls, api: Api, answer: Dict[str, Any]) -> "Artifact":
        artifact = cls(answer["name"], answer.get("type"))
        artifact._api = api
        artifact.entity = answer["entity"]
        artifact.project = answer["project"]
        artifact.version = answer["version"]
        artifact.digest = answer["digest"]
        artifact.aliases = list(answer.get("aliases") or [])
        artifact.metadata = dict(answer.get("metadata") or {})
        artifact._entries = [Entry(artifact, e) for e in answer.get("entries") or []]
        return artifact

    @property
    def qualified_name(self) -> str:
        """``entity/project/name:version``, W&B's ``qualified_name``."""
        return f"{self.entity}/{self.project}/{self.name}:{self.version}"

    def _pinned_reference(self) -> str:
        # By digest, so that a download always gets this exact version even if an alias
        # moves (and a version not yet numbered upstream works too).
        return f"{self.entity}/{self.project}/{self.name}@{self.digest}"

    def _default_root(self) -> str:
        # A publish not uploaded yet has no number: it is named by its digest.
        if self.version == "pending":
            return os.path.join("artifacts", f"{self.name}@{self.digest}")
        return os.path.join("artifacts", f"{self.name}:{self.version}")

    def _existing(self) -> Api:
        if self._api is None:
            raise BadRequest(f"`{self.name}` is not published yet; pass it to hoard.use_artifact() first")
        return self._api

    def files(self) -> List[Entry]:
        """Every file of the version."""
        self._existing()
        return list(self._entries)

    def get_entry(self, name: str) -> Entry:
        """The file at logical path ``name``; :class:`NotFound` if there is none."""
        self._existing()
        for entry in self._entries:
            if entry.path == name:
                return entry
        raise NotFound(f"`{self.qualified_name}` has no file `{name}`")

    def get_path(self, name: str) -> Entry:
        """Same as :meth:`get_entry` (W&B's older name)."""
        return self.get_entry(name)

    def download(
        self,
        root: Optional[str] = None,
        path_prefix: Optional[str] = None,
        mode: Optional[str] = None,
        progress: Optional[Progress] = None,
        allow_patterns: Optional[Union[str, List[str]]] = None,
        ignore_patterns: Optional[Union[str, List[str]]] = None,
    ) -> str:
        """Materializes the version (or the files whose path starts with
        ``path_prefix``, W&B's plain string prefix) under ``root`` and returns ``root``.
        ``allow_patterns``/``ignore_patterns`` keep only the files that match one of the
        first and none of the second (``fnmatch`` patterns, as ``huggingface_hub``'s).

        Default root: ``./artifacts/NAME:vN``, like W&B. Cached files are hardlinked from
        the daemon's cache (``mode``: ``auto``, ``hardlink``, ``reflink``, ``copy`` or
        ``symlink``); they are read-only, so a job that must modify files asks for
        ``mode="copy"`` (W&B always copies). ``progress`` gets each streamed event; by
        default a progress line is drawn on a terminal.
        """
        api = self._existing()
        root = root if root is not None else self._default_root()
        api._materialize(
            self._pinned_reference(),
            root,
            path_prefix=path_prefix,
            mode=mode,
            progress=progress,
            include=patterns(allow_patterns),
            exclude=patterns(ignore_patterns),
        )
        return root

    def __repr__(self) -> str:
        if self._api is None:
            return f"Artifact({self.name!r}, type={self.type!r}, new)"
        return f"Artifact({self.qualified_name!r})"


def use_artifact(
    artifact: Union[str, Artifact],
    *,
    type: Optional[str] = None,
    aliases: Optional[List[str]] = None,
    entity: Optional[str] = None,
    project: Optional[str] = None,
    socket: Optional[str] = None,
) -> Artifact:
    """W&B's ``run.use_artifact``: a name gives that version; a new :class:`Artifact`
    is published (created if it does not exist; identical content gives the same version,
    so calling this twice is harmless) and returned, usable at once.

    Unlike W&B, publishing does not need the upstream to be reachable: the version is
    usable on this machine immediately (its ``version`` is ``"pending"`` until the
    upstream has numbered it) and the daemon uploads it in the background.
    """
    api = Api(socket=socket, entity=entity, project=project)
    if isinstance(artifact, str):
        return api.artifact(artifact, type=type)
    if artifact._api is not None:
        return artifact
    if not artifact._inputs:
        raise BadRequest(f"`{artifact.name}` has no files; add some with add_file() or add_dir()")
    body = {
        "artifact": artifact.name,
        "entity": api.entity,
        "project": api.project,
        "inputs": artifact._inputs,
        "type": type or artifact.type,
        "aliases": list(aliases or []),
        "metadata": artifact.metadata,
        # One attempt at the upstream: its version number when it is up, no delay when
        # it is not (the daemon keeps uploading in the background).
        "wait_seconds": 60,
        "wait_one_attempt": True,
    }
    published = api._transport.call("POST", "/v1/publish", body)
    return api.artifact(f"{published['entity']}/{published['project']}/{published['name']}@{published['digest']}")


def _tty_progress() -> Optional[Progress]:
    if not sys.stderr.isatty():
        return None
    started: List[float] = []

    def draw(event: Dict[str, Any]) -> None:
        if event.get("event") == "progress" and event.get("missing_blobs"):
            if not started:
                started.append(time.monotonic())
            sys.stderr.write("\r\033[K" + progress_line(event, time.monotonic() - started[0]))
            sys.stderr.flush()

    return draw


def human_bytes(n: float) -> str:
    """``26 B``, ``1.5 MiB``: as the CLI writes sizes."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    value = float(n)
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{int(n)} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def progress_line(event: Dict[str, Any], elapsed: float) -> str:
    """The CLI's progress words for a ``progress`` event, ``elapsed`` seconds after the
    first: ``fetching 3/10 blobs, 30.0 MiB / 90.0 MiB, 15.0 MiB/s, ETA 4 s``."""
    done, total = event.get("fetched_bytes", 0), event.get("missing_bytes", 0)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "?"
    return (
        f"fetching {event['fetched_blobs']}/{event['missing_blobs']} blobs, "
        f"{human_bytes(done)} / {human_bytes(total)}, {human_bytes(int(rate))}/s, ETA {eta}"
    )
