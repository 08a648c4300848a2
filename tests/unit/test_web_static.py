"""kcprpc.web.static: files under web_root only (no traversal, no symlink out, folders give their
index.html), content types, the cache of their bytes, and the discovery document with what other
listeners announce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kcprpc.web.static import FileCache, discovery_document, discovery_reply, serve_file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "game").mkdir(parents=True)
    (site / "index.html").write_text("home")
    (site / "game" / "index.html").write_text("game")
    (site / "a.js").write_text("js")
    (site / "a.js.map").write_text("{}")
    (site / "s.css").write_text("css")
    (site / "i.png").write_bytes(b"png")
    (site / "d.json").write_text("[]")
    (site / "blob.bin").write_bytes(b"\x00")
    (tmp_path / "secret").write_text("TOP-SECRET")
    (site / "out").symlink_to(tmp_path / "secret")
    (site / "outdir").symlink_to(tmp_path)
    return site.resolve()


@pytest.mark.parametrize(
    ("path", "ctype", "body"),
    [
        ("/", "text/html; charset=utf-8", b"home"),
        ("/game", "text/html; charset=utf-8", b"game"),
        ("/game/", "text/html; charset=utf-8", b"game"),
        ("/a.js?v=2#x", "text/javascript; charset=utf-8", b"js"),
        ("/a.js.map", "application/json", b"{}"),
        ("/s.css", "text/css; charset=utf-8", b"css"),
        ("/i.png", "image/png", b"png"),
        ("/d.json", "application/json", b"[]"),
        ("/blob.bin", "application/octet-stream", b"\x00"),
        ("/./a.js", "text/javascript; charset=utf-8", b"js"),
        ("/%61.js", "text/javascript; charset=utf-8", b"js"),
    ],
)
def test_files(root: Path, path: str, ctype: str, body: bytes) -> None:
    r = serve_file(root, path)
    assert (r.status, r.content_type, r.body) == (200, ctype, body)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../secret", 404),
        ("/game/../../secret", 404),
        ("/%2e%2e/secret", 404),
        ("/..%2fsecret", 404),
        ("/out", 404),  # a symlink out of the root
        ("/outdir/secret", 404),
        ("/missing", 404),
        ("/a.js%00.png", 400),
        ("/a\\b", 400),
        ("relative", 400),
    ],
)
def test_nothing_outside_the_root(root: Path, path: str, status: int) -> None:
    r = serve_file(root, path)
    assert r.status == status and b"TOP-SECRET" not in r.body


def test_discovery_merges_what_other_listeners_announce() -> None:
    class WT:
        def discovery(self) -> dict[str, Any]:
            return {"webtransport": {"url": "https://h:1/kcprpc", "certificateHashes": ["x"]}}

    class Quiet:
        pass

    doc = discovery_document("/kcprpc", [Quiet(), WT()])
    assert doc == {
        "websocket": "/kcprpc",
        "webtransport": {"url": "https://h:1/kcprpc", "certificateHashes": ["x"]},
    }
    r = discovery_reply(doc)
    assert r.status == 200 and r.content_type == "application/json" and json.loads(r.body) == doc


def test_the_cache_reads_a_file_once_until_it_changes_and_stays_under_its_bound(root: Path) -> None:
    cache = FileCache(root, max_bytes=10)
    first = cache.get("/a.js")
    assert first.body == b"js" and cache.get("/a.js?v=3") is first  # not read again
    (root / "a.js").write_text("new js")  # another size: read again
    assert cache.get("/a.js").body == b"new js"
    assert cache.get("/s.css").body == b"css" and cache.held == 9
    assert cache.get("/index.html").body == b"home" and cache.held <= 10  # the least recent went
    assert cache.get("/out").status == 404 and cache.get("/../secret").status == 404
    big = root / "big.txt"
    big.write_text("x" * 11)  # larger than the whole cache: served, not kept
    assert cache.get("/big.txt").body == b"x" * 11 and cache.held <= 10


@pytest.mark.parametrize("path", ["/a.js", "/game/"])
def test_a_get_stats_the_file_once(root: Path, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET looks at the file once (a folder's index twice): the cache compares that stat, the
    read checks its size (it was stat'ed three or four times: is_dir, is_file, the cache, the
    read)."""
    import os

    cache = FileCache(root)
    calls: list[str] = []
    real = os.stat

    def counting(p: Any, *a: Any, **kw: Any) -> os.stat_result:
        if kw.get("follow_symlinks", True):
            calls.append(str(p))
        return real(p, *a, **kw)

    monkeypatch.setattr(os, "stat", counting)
    body = b"js" if path == "/a.js" else b"game"
    for _ in range(2):  # a miss, then a hit
        calls.clear()
        assert cache.get(path).body == body
        assert len(calls) == (1 if path == "/a.js" else 2), calls
