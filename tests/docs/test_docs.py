"""The docs cannot drift from behaviour: every shell and Python block of README.md and docs/**/*.md
is run, or says why not, and what runs must succeed.

* ``test_every_code_block_is_run_or_says_why_not``: a ``sh``/``python`` block either runs (no
  marker, or ``<!-- docs-test: with FIXTURE -->``) or carries ``<!-- docs-test: skip: REASON -->``;
  a fence has a language. A new block without either fails here, with what to do.
* ``test_page[...]``: each page's runnable blocks, in order, through tests/docs/docs_runner.py in a
  subprocess of its own: inside a fresh network namespace (``unshare --net``, root) so that the
  documented ports are free, else on the machine's loopback under a lock. Bounded: 60 s a block,
  180 s a page.
* ``test_readme_install_and_demo_in_a_fresh_copy``: the README's ``fresh-copy`` block (venv, pip
  install, the demo) as written, in a copy of the checkout.
* ``test_logging_page_lists_every_logger``: docs/logging.md names every logger the code creates.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from docblocks import ROOT, Block, all_blocks, parse, shell_commands  # noqa: E402
from docs_fixtures import FIXTURES  # noqa: E402

RUNNER = HERE / "docs_runner.py"
PAGE_TIMEOUT = 180
HOW = """\
Each ```sh / ```python block in README.md and docs/**/*.md is run by tests/docs/test_docs.py, or says
why it is not. Put one of these on the line right above the opening fence:

  (nothing)                               run the block as written (Python blocks of a page share one
                                          namespace; shell blocks run line by line, `kcprpc serve`
                                          in the background)
  <!-- docs-test: with NAME[, NAME] -->   run it with fixtures from tests/docs/docs_fixtures.py
                                          (servers on 127.0.0.1, files, names the block assumes): {fixtures}
  <!-- docs-test: skip: REASON -->        do not run it; REASON says why (a placeholder host, a
                                          fragment that only runs inside a handler, needs root ...)

Blocks that are not code get a language that says so (```text, ```json): a fence needs a language.
"""


@cache
def blocks() -> list[Block]:
    return all_blocks()


def pages() -> list[str]:
    return sorted({str(b.path) for b in blocks() if b.mode == "run"})


def test_every_code_block_is_run_or_says_why_not() -> None:
    bad = [f"{b.where}: {b.reason}" for b in blocks() if b.mode == "error"]
    assert not bad, "\n".join(bad) + "\n\n" + HOW.format(fixtures=", ".join(sorted(FIXTURES)))
    unknown = [f"{b.where}: no fixture {f!r}" for b in blocks() for f in b.fixtures if f not in FIXTURES]
    assert not unknown, "\n".join(unknown) + "\n\n" + HOW.format(fixtures=", ".join(sorted(FIXTURES)))
    code = [b for b in blocks() if b.kind != "data"]
    assert sum(b.mode == "run" for b in code) >= 10  # most of the docs' code runs
    assert all(len(b.reason) >= 10 for b in code if b.mode == "skip"), "a skip reason says why"


def test_the_markers() -> None:
    page = "\n".join([
        "```sh", "kcprpc ping 127.0.0.1:9000", "```",                       # 1: runs
        "<!-- docs-test: skip: a placeholder host -->", "```python", "x", "```",  # 5: skipped
        "<!-- demo-command -->", "<!-- docs-test: with a, b -->", "```sh", "y", "```",  # 10: fixtures
        "<!-- docs-test: skip -->", "```sh", "z", "```",                    # 14: no reason
        "```", "$ kcprpc ping", "```",                                      # 17: no language
        "```json", "{}", "```",                                             # 20: data
        "<!-- docs-test: skip: why -->", "```text", "t", "```",             # 24: a marker on data
    ])  # fmt: skip
    got = [(b.line, b.kind, b.mode, b.reason, b.fixtures) for b in parse(Path("x.md"), page)]
    assert got == [
        (1, "shell", "run", "", []),
        (5, "python", "skip", "a placeholder host", []),
        (10, "shell", "run", "", ["a", "b"]),
        (14, "shell", "error", "a skip marker needs a reason", []),
        (17, "data", "error", "the fence has no language", []),
        (20, "data", "data", "", []),
        (24, "data", "error", "a docs-test marker on a 'text' block (data)", []),
    ]
    assert shell_commands("a \\\n  b\n\n# c\nd # e\n") == ["a    b", "d # e"]


@cache
def namespace_prefix() -> list[str]:
    """``unshare --net`` when this machine lets the test make a network namespace, else nothing."""
    if shutil.which("unshare") is None:
        return []
    try:
        r = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["unshare", "--net", "--"] if r.returncode == 0 else []


@pytest.fixture
def netns_or_lock() -> Iterator[list[str]]:
    prefix = namespace_prefix()
    if prefix:
        yield prefix
        return
    # no namespace: the documented ports are the machine's; one docs test at a time
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "kcprpc-docs-test.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield []


@pytest.mark.timeout(PAGE_TIMEOUT + 30)
@pytest.mark.parametrize("page", pages())
def test_page(page: str, netns_or_lock: list[str]) -> None:
    extra = ["--bring-loopback-up"] if netns_or_lock else []
    cmd = [*netns_or_lock, sys.executable, str(RUNNER), page, *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=PAGE_TIMEOUT, check=False)
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    want = [b.where for b in blocks() if str(b.path) == page and b.mode == "run"]
    failures = [
        f"{x['where']}: {x['error']}\n--- its output ---\n{x['output']}" for x in results if not x["ok"]
    ]
    assert not failures, (
        "\n\n".join(failures)
        + "\n\nFix the doc or the code; if the block cannot run here, mark it:\n"
        + HOW.format(fixtures=", ".join(sorted(FIXTURES)))
    )
    assert [x["where"] for x in results] == want, r.stderr
    assert r.returncode == 0, r.stderr


@pytest.mark.timeout(660)
def test_readme_install_and_demo_in_a_fresh_copy(tmp_path: Path) -> None:
    fresh = [b for b in blocks() if b.mode == "fresh-copy"]
    assert [str(b.path) for b in fresh] == ["README.md"]
    copy = tmp_path / "kcprpc"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:  # the checkout as it is now, without its venv, caches and build output
        src = ROOT / f
        if src.is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / f)
    for b in fresh:
        cmd = b.text.strip()
        r = subprocess.run(
            ["bash", "-c", cmd], cwd=copy, capture_output=True, text=True, timeout=600, check=False
        )
        assert r.returncode == 0 and "Traceback" not in r.stderr, (
            f"{b.where}: `{cmd}`\n{r.stdout}\n{r.stderr}"
        )
        assert "Hello, kcprpc!" in r.stdout, r.stdout


def test_logging_page_lists_every_logger() -> None:
    page = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    found = set()
    for pkg in ("kcp", "kcprpc"):
        for f in (ROOT / pkg).rglob("*.py"):
            found.update(re.findall(r"""getLogger\(\s*["']([\w.]+)["']""", f.read_text(encoding="utf-8")))
            if re.search(r"getLogger\(\s*__name__", f.read_text(encoding="utf-8")):
                found.add(".".join(f.relative_to(ROOT).with_suffix("").parts))
    assert found >= {"kcprpc.server", "kcprpc.client"}
    missing = sorted(n for n in found if f"`{n}`" not in page)
    assert not missing, f"docs/logging.md does not describe the logger(s) {missing}: add a row for each"
