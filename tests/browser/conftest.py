"""The browser tests' fixtures: the TypeScript client's browser bundle (built from the lockfile,
once per run) and a headless Chromium (tests/browser/chromium.py) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.chromium import Chromium
from tests.clients.npm import PACKAGE, ensure_built

BUNDLE = PACKAGE / "dist" / "browser" / "kcprpc.js"


@pytest.fixture(scope="session")
def bundle() -> Path:
    """clients/typescript/dist/browser/kcprpc.js, built from the lockfile (`npm ci`, then
    `npm run build:browser`): what the example pages import (as /kcprpc.js)."""
    ensure_built(tsc=False)
    return BUNDLE


@pytest.fixture
async def browser(bundle: Path) -> AsyncIterator[Chromium]:
    """A fresh headless Chromium (its own profile), killed at the end of the test."""
    async with Chromium.launch() as b:
        yield b
