"""Files and folders the user named on the command line: failures are one line, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from kcprpc.errors import UsageError


def write_file(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write a file the user named; failures are a one-line :class:`UsageError`. With ``mode``
    the file is created with those permissions (no window in which others could read it)."""
    try:
        if mode is None:
            path.write_text(text, encoding="utf-8")
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def make_dir(path: Path) -> None:
    """Create a folder the user named (and its parents); failures are a one-line :class:`UsageError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder {path}: {e.strerror or e}") from None
