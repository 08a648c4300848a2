"""Fixtures of the interop tests."""

from __future__ import annotations

import os

import pytest
from kcptun_peer import CLIENT, SERVER, KcptunMissingError, binary


@pytest.fixture(scope="module")
def kcptun() -> None:
    """Skip (or, under CI, fail) when the kcptun binaries are not installed."""
    try:
        binary(SERVER)
        binary(CLIENT)
    except KcptunMissingError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the live kcptun interop tests: {exc}", pytrace=False)
        pytest.skip(f"live kcptun interop: {exc}")
