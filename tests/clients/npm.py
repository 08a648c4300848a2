"""The TypeScript package (clients/typescript) for the tests that need it built: its npm commands
run in it, a failure fails the test with their output, and its dependencies installed from the
lockfile when they are missing or older than it. Node and npm come from Debian's packages
(`.ci/run` installs them); without them the tests fail rather than skip.

Several test processes may want it at once (pytest-xdist's workers; .ci/run's pure and compiled
suites side by side): :func:`ensure_built` installs and builds under a lock on the package's folder,
and only what is older than its sources, so one process builds and the others find it built."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
BUILD_TIMEOUT_S = 300.0


def run_npm(cmd: list[str], timeout: float = BUILD_TIMEOUT_S, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` in the package; a non-zero exit fails the test with its stdout and stderr."""
    proc = subprocess.run(
        cmd, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-20000:]}"
            f"\n--- stderr\n{proc.stderr[-8000:]}",
            pytrace=False,
        )


@contextmanager
def _package_lock() -> Iterator[None]:
    """Held while this process installs or builds the package (an flock on a file in its folder)."""
    with open(PACKAGE / "node_modules.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stale(out: Path, *sources: Path) -> bool:
    """Is ``out`` missing, or older than a file of ``sources`` (files, or folders of files)?"""
    if not out.exists():
        return True
    built = out.stat().st_mtime
    for src in sources:
        files = src.rglob("*") if src.is_dir() else [src]
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


def _npm_ci() -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: .ci/run installs Debian's nodejs and npm", pytrace=False)
    if _stale(PACKAGE / "node_modules" / ".package-lock.json", PACKAGE / "package-lock.json"):
        run_npm(["npm", "ci", "--no-audit", "--no-fund"])


def ensure_built(tsc: bool) -> None:
    """Node and npm must be installed; ``npm ci`` when node_modules is missing or older than the
    lockfile, the browser bundle (``npm run build:browser``) when it is older than ``src/``, and
    with ``tsc`` the compiled package and its tests (``dist/``) when older than their sources."""
    sources = (PACKAGE / "src", PACKAGE / "package-lock.json")
    with _package_lock():
        _npm_ci()
        stamp = PACKAGE / "dist" / ".tsc-built"
        compiled = (PACKAGE / "test", PACKAGE / "examples", PACKAGE / "bench", PACKAGE / "tsconfig.json")
        if tsc and _stale(stamp, *sources, *compiled):  # a folder the package lacks has no file newer
            run_npm(["npx", "tsc", "-p", "tsconfig.json"], BUILD_TIMEOUT_S)
            stamp.touch()
        if _stale(PACKAGE / "dist" / "browser" / "kcprpc.js", *sources):
            run_npm(["npm", "run", "--silent", "build:browser"], BUILD_TIMEOUT_S)
