"""kcp.compiled and ``kcprpc --version`` name the build that is really running."""

from __future__ import annotations

import ast
import os
from importlib import import_module
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import kcp
from kcp import buildinfo
from kcprpc import buildinfo as rpc_buildinfo
from kcprpc.cli import build_parser

EXPECT_COMPILED = os.environ.get("KCPRPC_EXPECT_COMPILED", "") == "1"
ALL = (*buildinfo.MODULES, *rpc_buildinfo.MODULES)


def is_extension(name: str) -> bool:
    return str(import_module(name).__file__).endswith(tuple(EXTENSION_SUFFIXES))


def test_compiled_flag_reflects_the_loaded_modules() -> None:
    loaded = [is_extension(name) for name in ALL]
    assert kcp.compiled is all(is_extension(name) for name in buildinfo.MODULES)
    assert kcp.compiled is EXPECT_COMPILED  # the compiled CI run sets KCPRPC_EXPECT_COMPILED=1
    assert all(loaded) if EXPECT_COMPILED else not any(loaded)
    assert buildinfo.compiled_modules(ALL) == [n for n, ext in zip(ALL, loaded, strict=True) if ext]


def test_compiled_build_runs_the_installed_package_not_the_source_tree() -> None:
    source_tree = Path(__file__).resolve().parents[2]
    from_source = Path(str(kcp.__file__)).resolve().parent == source_tree / "kcp"
    assert from_source is not EXPECT_COMPILED


def test_version_names_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("kcprpc ")
    assert out.endswith("(compiled)" if EXPECT_COMPILED else "(pure)")
    assert rpc_buildinfo.build_name() == ("compiled" if EXPECT_COMPILED else "pure")


def test_compiled_modules_of_an_unknown_name_is_empty() -> None:
    assert buildinfo.compiled_modules(("kcp.no_such_module",)) == []
    assert buildinfo.is_compiled(("kcp.no_such_module",)) is False


def test_no_compiled_module_defines_a_generic_class() -> None:
    """mypy/mypyc 2.4 compiles a class deriving from ``typing.Generic`` into one that crashes the
    garbage collector once it holds a reference (docs/BENCHMARKS.md, "Session 14: the state sync
    compiled, and half of it taken out again"), so the modules a compiled build compiles define
    none: this reads their source."""
    source_tree = Path(__file__).resolve().parents[2]
    generic = []
    for name in ALL:
        tree = ast.parse((source_tree / (name.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    target = base.value if isinstance(base, ast.Subscript) else base
                    if isinstance(target, ast.Name | ast.Attribute) and ast.unparse(target).endswith("Generic"):
                        generic.append(f"{name}.{node.name}")
    assert ALL and not generic, generic
