"""Shared test configuration: bounded hypothesis runs so CI stays fast and deterministic, and the
``redis`` fixture (a real redis-server per test module)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The compiled build (.ci/run's second run: the installed wheel, KCPRPC_EXPECT_COMPILED=1) must really
# be running the compiled modules, imported from the installed package rather than this source tree.
EXPECT_COMPILED = os.environ.get("KCPRPC_EXPECT_COMPILED", "") == "1"

# KCPRPC_GC_EACH_TEST=1: a full collection after each test. With PYTHONMALLOC=debug, against the
# compiled build, a reference that compiled code dropped once too often then crashes the test that
# did it (freed memory is overwritten at once), not a collection thousands of tests later.
GC_EACH_TEST = os.environ.get("KCPRPC_GC_EACH_TEST", "") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pure_only(reason): the test cannot apply to the compiled build (skipped when kcp.compiled)",
    )
    if EXPECT_COMPILED:
        import kcp
        from kcprpc.buildinfo import build_name

        if not kcp.compiled or build_name() != "compiled":
            raise pytest.UsageError(
                f"KCPRPC_EXPECT_COMPILED=1 but the build running is {build_name()!r} ({kcp.__file__})"
            )


_TESTS = Path(__file__).resolve().parent
_NODE = ("clients/", "browser/")
"""The tests that use the TypeScript package's one folder (clients/typescript: its build, its
dist/ that `npm pack` rewrites, the browser bundle the pages load)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import kcp

    # with pytest-xdist (-n N --dist loadgroup): the tests that use the TypeScript package's folder
    # run on one worker, so none reads dist/ while another's `npm pack` rewrites it (its install
    # and build take a lock of their own, tests/clients/npm.py); the broker tests share one
    # worker's servers
    for item in items:
        rel = Path(str(item.path)).resolve().relative_to(_TESTS).as_posix()
        if rel.startswith(_NODE):
            item.add_marker(pytest.mark.xdist_group("node"))
        elif rel.startswith("brokers/"):
            item.add_marker(pytest.mark.xdist_group("brokers"))
    if not kcp.compiled:
        return
    for item in items:
        marker = item.get_closest_marker("pure_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=str(marker.kwargs.get("reason", "pure build only"))))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if GC_EACH_TEST:
        gc.collect()


_BROKERS = str(Path(__file__).resolve().parent / "brokers")


@pytest.fixture(scope="module")
def redis() -> Iterator[Any]:
    """A real ``redis-server`` for one test module (:class:`tests/brokers/redis_server.RedisServer`):
    a free port on 127.0.0.1, its own temp dir, started before the module's first test that asks
    for it and stopped after its last. A module of its own, so a test that stops or restarts it
    touches no other module's."""
    if _BROKERS not in sys.path:
        sys.path.insert(0, _BROKERS)
    from redis_server import RedisServer

    s = RedisServer().start()
    try:
        yield s
    finally:
        s.close()
