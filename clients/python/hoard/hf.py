"""The Hugging Face Hub through the local hoard daemon (whose upstream is ``hf``), with
``huggingface_hub``'s own signature::

    from hoard import hf

    folder = hf.snapshot_download("openai-community/gpt2", revision="main")
    model = AutoModel.from_pretrained(folder)            # or from the repo id, as usual

The files land in the Hugging Face cache (``cache_dir``, default ``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) in ``huggingface_hub``'s layout, as
hardlinks of the daemon's blobs: ``huggingface_hub`` and ``transformers`` then find them,
also offline, and the jobs and users of one machine share one copy of each file.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

from ._errors import BadRequest
from ._patterns import patterns
from ._transport import Transport

__all__ = ["snapshot_download", "default_cache_dir"]


def default_cache_dir() -> str:
    """Where ``huggingface_hub`` keeps its cache: ``$HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    cache = os.environ.get("HF_HUB_CACHE")
    if cache:
        return cache
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def snapshot_download(
    repo_id: str,
    *,
    repo_type: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[str] = None,
    allow_patterns: Optional[Union[str, List[str]]] = None,
    ignore_patterns: Optional[Union[str, List[str]]] = None,
    socket: Optional[str] = None,
    progress: Any = None,
) -> str:
    """Like ``huggingface_hub.snapshot_download``: the repo at ``revision`` (a branch, a
    tag or a commit; default ``main``) in the HF cache; returns the snapshot folder.

    ``repo_type`` is ``"model"`` (default) or ``"dataset"``. With ``allow_patterns`` or
    ``ignore_patterns`` (``fnmatch`` patterns, as in ``huggingface_hub``), only the
    matching files are filled in. ``progress`` gets each event the
    daemon streams, as a dict.
    """
    if repo_type not in (None, "model", "dataset"):
        raise BadRequest(f"repo_type {repo_type!r}: hoard serves models and datasets")
    entity = "datasets" if repo_type == "dataset" else "models"
    transport = Transport(socket)
    cache = os.path.abspath(cache_dir or default_cache_dir())
    reference = f"{entity}/{repo_id}:{revision or 'main'}"
    body = {
        "reference": reference,
        "hf_cache": cache,
        # `fnmatch` patterns, matched by the daemon as huggingface_hub matches them.
        "include": patterns(allow_patterns),
        "exclude": patterns(ignore_patterns),
    }
    return transport.stream("/v1/materialize", body, progress)["dest"]
