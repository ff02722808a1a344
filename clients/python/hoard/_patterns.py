"""``allow_patterns``/``ignore_patterns`` as the daemon's ``include``/``exclude``."""

from __future__ import annotations

from typing import List, Optional, Union


def patterns(given: Optional[Union[str, List[str]]]) -> List[str]:
    """One pattern or several, as ``huggingface_hub`` takes them. The daemon matches
    them as ``fnmatch`` does (``*`` also matches ``/``; ``dir/`` is everything below)."""
    if given is None:
        return []
    return [given] if isinstance(given, str) else list(given)
