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
import os
import stat
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONTENT_TYPES",
    "DISCOVERY_PATH",
    "MAX_FILE_SIZE",
    "FileCache",
    "HttpReply",
    "discovery_document",
    "find_file",
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


def find_file(root: Path, request_path: str) -> Path | HttpReply:
    """The file under ``root`` (an absolute, resolved folder) that ``request_path`` (the path of a
    GET, with its query) names, or the error reply; ``/`` and folders give their ``index.html``.
    Nothing outside ``root`` is ever named (``..``, symlinks out, encoded separators: 404); only
    regular files."""
    found = _find(root, request_path)
    return found if isinstance(found, HttpReply) else found[0]


def _find(root: Path, request_path: str) -> tuple[Path, os.stat_result] | HttpReply:
    """:func:`find_file`, with the file's ``stat`` (one per GET: the cache compares it, the read
    checks its size)."""
    path = urllib.parse.unquote(request_path.split("?", 1)[0].split("#", 1)[0])
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return HttpReply.text(400, "bad path\n")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return HttpReply.text(404, "not found\n")
    target = root.joinpath(*parts)
    try:
        resolved = Path(os.path.realpath(target))  # (Path.resolve stats it once more; a loop fails the stat)
        if not resolved.is_relative_to(root):
            return HttpReply.text(404, "not found\n")
        st = resolved.stat()
        if stat.S_ISDIR(st.st_mode):
            resolved = resolved / "index.html"
            st = resolved.stat()
        if not stat.S_ISREG(st.st_mode):
            return HttpReply.text(404, "not found\n")
    except (OSError, ValueError):
        return HttpReply.text(404, "not found\n")
    return resolved, st


def _content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def serve_file(root: Path, request_path: str) -> HttpReply:
    """The answer to a GET of ``request_path`` under ``root``: the file read whole (at most
    :data:`MAX_FILE_SIZE`: 413), or the error of :func:`find_file`."""
    found = _find(root, request_path)
    return found if isinstance(found, HttpReply) else _read(*found)


def _read(path: Path, st: os.stat_result) -> HttpReply:
    if st.st_size > MAX_FILE_SIZE:
        return HttpReply.text(413, "file too large\n")
    try:
        body = path.read_bytes()
    except OSError:
        return HttpReply.text(404, "not found\n")
    return HttpReply(200, _content_type(path), body)


class FileCache:
    """:func:`serve_file` answers, the files' bytes kept (at most ``max_bytes`` of them, the least
    recently served going first) and read again only when a file's size or modification time
    changed: a page's files are not read from disk at every GET."""

    def __init__(self, root: Path, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.held = 0
        self._files: OrderedDict[Path, tuple[int, int, HttpReply]] = OrderedDict()

    def get(self, request_path: str) -> HttpReply:
        """The answer to a GET of ``request_path``."""
        got = _find(self.root, request_path)
        if isinstance(got, HttpReply):
            return got
        found, st = got
        files = self._files
        entry = files.get(found)
        if entry is not None:
            if entry[0] == st.st_mtime_ns and entry[1] == st.st_size:
                files.move_to_end(found)
                return entry[2]
            del files[found]
            self.held -= len(entry[2].body)
        reply = _read(found, st)
        n = len(reply.body)
        if reply.status == 200 and n <= self.max_bytes:
            while files and self.held + n > self.max_bytes:
                _, (_, _, old) = files.popitem(last=False)
                self.held -= len(old.body)
            files[found] = (st.st_mtime_ns, st.st_size, reply)
            self.held += n
        return reply
