"""HTTP/1.1 over the daemon's Unix socket, with the standard library only."""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any, Callable, Dict, Iterator, Optional

from ._errors import DaemonNotRunning, HoardError, error_for

#: How long one read on the socket may wait. Long calls stream progress lines at least
#: every few seconds while they work, so this bounds a stuck daemon, not a slow fetch.
TIMEOUT = 600.0


def default_socket() -> str:
    """``HOARD_SOCKET``, else ``$XDG_RUNTIME_DIR/hoard/hoard.sock``, else
    ``/tmp/hoard-$UID/hoard.sock`` (the same lookup as the ``hoard`` CLI)."""
    explicit = os.environ.get("HOARD_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "hoard", "hoard.sock")
    return f"/tmp/hoard-{os.getuid()}/hoard.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("hoard", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonNotRunning(
                f"no hoard daemon is listening on `{self._path}` ({e.strerror}); "
                "start one on your upstream, e.g. `hoard daemon --upstream http://registry:7700 &` "
                "(or `--upstream wandb`, `--upstream hf`), or set HOARD_SOCKET to its socket"
            ) from None
        self.sock = sock


class Transport:
    """One daemon, by socket path. A connection per call: calls are few and long."""

    def __init__(self, socket_path: Optional[str] = None) -> None:
        self.socket_path = socket_path or default_socket()

    def _send(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> http.client.HTTPResponse:
        conn = _UnixConnection(self.socket_path)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        token = os.environ.get("HOARD_TOKEN")
        if token:
            # The caller's own credential: a shared daemon confirms access with it.
            headers["X-Hoard-Token"] = token
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn.getresponse()
        except DaemonNotRunning:
            raise
        except OSError as e:
            raise HoardError(f"the hoard daemon on `{self.socket_path}` failed: {e}") from None

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        """A call with a JSON answer; errors become exceptions with the daemon's words."""
        response = self._send(method, path, body)
        data = response.read()
        if response.status >= 400:
            raise _problem(response.status, data)
        return json.loads(data)

    def stream(
        self,
        path: str,
        body: Dict[str, Any],
        on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> Dict[str, Any]:
        """A streaming call (NDJSON events): calls ``on_event`` for each, returns the
        summary of the final ``done`` event or raises for an ``error`` one."""
        response = self._send("POST", path, body)
        if response.status >= 400:
            raise _problem(response.status, response.read())
        for event in _lines(response):
            kind = event.get("event")
            if on_event is not None:
                on_event(event)
            if kind == "done":
                return {k: v for k, v in event.items() if k != "event"}
            if kind == "error":
                raise error_for(event.get("kind", ""), 0, event.get("detail", "unknown error"))
        raise HoardError("the hoard daemon ended the answer without a result")


def _lines(response: http.client.HTTPResponse) -> Iterator[Dict[str, Any]]:
    while True:
        line = response.readline()
        if not line:
            return
        line = line.strip()
        if line:
            yield json.loads(line)


def _problem(status: int, data: bytes) -> HoardError:
    try:
        problem = json.loads(data)
        return error_for(problem.get("type", ""), status, problem.get("detail") or str(problem))
    except (ValueError, AttributeError):
        return error_for("", status, data.decode(errors="replace") or f"HTTP {status}")
