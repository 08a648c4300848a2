"""The TypeScript client's own tests (clients/typescript/test/*.test.ts), run from pytest.

The package is installed from its lockfile (`npm ci`), compiled with `tsc` and its browser bundle
built (`npm run build:browser`) when they are older than their sources (tests/clients/npm.py,
under a lock: other test processes may want them too); each test file then runs under Node's test runner as
its own pytest case, so a failure names the file and shows Node's report. The TypeScript tests start real Python servers with the interpreter and
the tree given in KCPRPC_PYTHON and KCPRPC_REPO. `.ci/run` installs Node and npm from Debian's
packages; without them these cases fail rather than skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.clients.npm import PACKAGE, ROOT, ensure_built, run_npm

TEST_FILES = sorted(p.name for p in (PACKAGE / "test").glob("*.test.ts"))
FILE_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def ts_build() -> Path:
    """The package installed from its lockfile and compiled; fails if Node or npm is missing."""
    ensure_built(tsc=True)
    return PACKAGE / "dist" / "test"


@pytest.mark.timeout(FILE_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", TEST_FILES)
def test_typescript(ts_build: Path, name: str) -> None:
    compiled = ts_build / name.replace(".ts", ".js")
    env = dict(os.environ, KCPRPC_PYTHON=sys.executable, KCPRPC_REPO=str(ROOT))
    # Node 20 has its global WebSocket (the web transport's tests) behind a flag
    run_npm(
        ["node", "--experimental-websocket", "--test", "--test-reporter=tap", str(compiled)],
        FILE_TIMEOUT_S,
        env,
    )
