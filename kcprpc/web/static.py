"""Plain HTTP beside a WebSocket listener: the files of a browser app (``web_root``) and the
discovery document ``GET /kcprpc.json`` (docs/wire-format/web.md, "Discovery"). Sans-I/O: each
function answers a request path with an :class:`HttpReply`; the listener sends it.

Discovery: the document is ``{"websocket": <path>}`` plus what every other listener of the server
announces: a listener added with ``Server.add_listener`` that has a ``discovery()`` method
returning a dict (the WebTransport listener returns ``{"webtransport": {"url": ...,
"certificateHashes": [...]}}``) has it merged in, at each request.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONTENT_TYPES",
    "DISCOVERY_PATH",
    "MAX_FILE_SIZE",
    "HttpReply",
    "discovery_document",
    "serve_file",
]

DISCOVERY_PATH = "/kcprpc.json"

MAX_FILE_SIZE = 32 * 1024 * 1024
"""The largest file served (read whole into memory)."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}
"""Content types by file suffix (others: ``application/octet-stream``)."""


@dataclass(frozen=True)
class HttpReply:
    """An HTTP answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, text: str) -> HttpReply:
        """A plain-text answer (errors)."""
        return cls(status, "text/plain; charset=utf-8", text.encode())


def discovery_document(websocket_path: str, listeners: Iterable[object]) -> dict[str, Any]:
    """The discovery document: ``{"websocket": websocket_path}`` and what each of ``listeners``
    that has a ``discovery()`` method announces."""
    doc: dict[str, Any] = {"websocket": websocket_path}
    for lst in listeners:
        announce = getattr(lst, "discovery", None)
        if callable(announce):
            part = announce()
            if isinstance(part, Mapping):
                doc.update(part)
    return doc


def discovery_reply(doc: Mapping[str, Any]) -> HttpReply:
    """The discovery document as an HTTP answer."""
    return HttpReply(200, "application/json", json.dumps(doc, separators=(",", ":")).encode())


def serve_file(root: Path, request_path: str) -> HttpReply:
    """The file under ``root`` (an absolute, resolved folder) that ``request_path`` (the path of a
    GET, with its query) names; ``/`` and folders give their ``index.html``. Nothing outside
    ``root`` is ever read (``..``, symlinks out, encoded separators: 404); only regular files."""
    path = urllib.parse.unquote(request_path.split("?", 1)[0].split("#", 1)[0])
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return HttpReply.text(400, "bad path\n")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return HttpReply.text(404, "not found\n")
    target = root.joinpath(*parts)
    try:
        resolved = target.resolve()
        if not resolved.is_relative_to(root):
            return HttpReply.text(404, "not found\n")
        if resolved.is_dir():
            resolved = resolved / "index.html"
        if not resolved.is_file():
            return HttpReply.text(404, "not found\n")
        if resolved.stat().st_size > MAX_FILE_SIZE:
            return HttpReply.text(413, "file too large\n")
        body = resolved.read_bytes()
    except (OSError, ValueError):
        return HttpReply.text(404, "not found\n")
    ctype = CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream")
    return HttpReply(200, ctype, body)
