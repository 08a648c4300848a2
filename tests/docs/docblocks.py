"""The code blocks of README.md and docs/**/*.md, and the marker that says how the docs test
treats each (see tests/docs/test_docs.py).

A fenced block's language says what it is. ``sh`` (``bash``, ``shell``, ``console``) and ``python``
(``py``) blocks are code: the docs test runs them, unless the comment line right above the fence
says otherwise. Any other language (``json``, ``text`` ...) is data and is not run. A fence without a
language is an error: give it one.

The marker, an HTML comment alone on a line right above the fence (other comments may sit between)::

    <!-- docs-test: skip: REASON -->         not run; REASON says why (a placeholder host, a fragment ...)
    <!-- docs-test: with NAME, NAME -->      run, with these fixtures (tests/docs/docs_fixtures.py)
    <!-- docs-test: fresh-copy -->           run as written in a fresh copy of the checkout (installs)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = frozenset({"sh", "bash", "shell", "console"})
PYTHON = frozenset({"python", "py"})
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_COMMENT = re.compile(r"^\s*<!--(.*)-->\s*$")
_MARKER = re.compile(r"^\s*docs-test:\s*(?P<what>skip|with|fresh-copy)\b:?\s*(?P<arg>.*?)\s*$")


@dataclass
class Block:
    path: Path  # relative to the checkout
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    mode: str = "run"  # run | skip | fresh-copy | error
    reason: str = ""  # skip: why; error: what is wrong
    fixtures: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        return "shell" if self.lang in SHELL else "python" if self.lang in PYTHON else "data"


def doc_files() -> list[Path]:
    """README.md and every Markdown page under docs/, relative to the checkout."""
    return [Path("README.md"), *sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("*.md"))]


def parse(path: Path, text: str) -> list[Block]:
    """The fenced blocks of one page, with their markers."""
    lines = text.split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        indent = len(m.group("indent"))
        body = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1 : j])
        block = Block(path, i + 1, info.split()[0].lower() if info else "", body)
        markers = []
        k = i - 1
        while k >= 0 and _COMMENT.match(lines[k]):
            mm = _MARKER.match(_COMMENT.match(lines[k]).group(1))  # type: ignore[union-attr]
            if mm:
                markers.append(mm)
            k -= 1
        if not block.lang:
            block.mode, block.reason = "error", "the fence has no language"
        elif len(markers) > 1:
            block.mode, block.reason = "error", "more than one docs-test marker"
        elif markers:
            what, arg = markers[0].group("what"), markers[0].group("arg")
            if what == "skip":
                block.mode, block.reason = "skip", arg
                if not arg:
                    block.mode, block.reason = "error", "a skip marker needs a reason"
            elif what == "with":
                block.fixtures = [f.strip() for f in arg.split(",") if f.strip()]
                if not block.fixtures:
                    block.mode, block.reason = "error", "`with` names no fixture"
            else:
                block.mode = "fresh-copy"
            if block.kind == "data" and block.mode != "error":
                block.mode, block.reason = "error", f"a docs-test marker on a {block.lang!r} block (data)"
        elif block.kind == "data":
            block.mode = "data"
        out.append(block)
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in parse(p, (ROOT / p).read_text(encoding="utf-8"))]


def shell_commands(text: str) -> list[str]:
    """A shell block's commands: one per line (``\\`` continues a line); blank and comment lines skipped."""
    cmds: list[str] = []
    cur = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip() and not cur.lstrip().startswith("#"):
            cmds.append(cur.strip())
        cur = ""
    return cmds
