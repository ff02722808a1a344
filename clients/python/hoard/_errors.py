"""Exceptions: each carries the daemon's own message."""

from __future__ import annotations


class HoardError(Exception):
    """Anything the daemon refused or failed at; ``str(e)`` is its explanation."""


class DaemonNotRunning(HoardError):
    """No daemon listens on the socket; the message says how to start one."""


class NotFound(HoardError):
    """The artifact, version, alias or file does not exist (or the credential may not see
    it: upstreams answer both the same way)."""


class PermissionDenied(HoardError):
    """The upstream refused: a view-only member downloading, or a wrong token."""


class BadRequest(HoardError):
    """The request was malformed: a bad reference, path or option."""


def error_for(kind: str, status: int, detail: str) -> HoardError:
    """The exception for a problem's ``type`` (or, failing that, its HTTP status)."""
    if kind in ("not-found",) or status == 404:
        return NotFound(detail)
    if kind in ("forbidden", "unauthorized", "publish-refused") or status in (401, 403):
        return PermissionDenied(detail)
    if kind in ("bad-request", "bad-input", "too-large") or status in (400, 413, 422):
        return BadRequest(detail)
    return HoardError(detail)
