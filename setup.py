"""Build script: the mypyc-compiled protocol cores, with a pure-Python fallback.

``pip install .`` builds a wheel; this script compiles the modules listed in kcp/buildinfo.py and
kcprpc/buildinfo.py with mypyc when mypyc and a C compiler are available (pyproject's in-tree backend,
_build/backend.py, asks for mypy for wheel builds only). Without them, or when the compile fails, the
wheel is pure Python and still installs. The build stays pure when:

- ``KCPRPC_PURE_BUILD=1`` is set;
- the install is editable (``pip install -e .``, the README's commands): editing a .py file must
  take effect, so no extension module is built, and none is ever written into the source tree.

The compiled build also has three hand-written extensions (NATIVE), on Linux only; when one does not
compile or link, the build goes on without it and the code that uses it falls back:

- kcp.secure._aead (kcp/secure/_aead.c): secure mode's AEADs on OpenSSL's EVP interface with kept
  contexts (kcp/secure/aead.py picks it, or ``cryptography``'s classes without it). It needs no
  OpenSSL headers, only the libcrypto that Python's ssl module loads: it links ``-lcrypto``
  (libcrypto.so, from an OpenSSL development package) or else the runtime library by name
  (``-l:libcrypto.so.3``).
- kcp._mmsg (kcp/_mmsg.c): sendmmsg/recvmmsg for kcp.batch, which calls them through ctypes without it.
- kcprpc._msgsize (kcprpc/_msgsize.c): the decoded-size walk of kcprpc.msgpack_size, which walks
  in Python without it.

Everything mypyc generates goes under build/ (git-ignored), and so do the objects of both. mypyc
writes a C file per module (``multi_file``) and they compile in parallel, one job per CPU: one
file for all of them took three times as long to build, for the same speed (docs/BENCHMARKS.md,
"Session 17").
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

ROOT = Path(__file__).resolve().parent
PURE_ENV = "KCPRPC_PURE_BUILD"
# the commands that build a wheel or install from this tree (metadata-only commands skip mypyc)
BUILDING = {"bdist_wheel", "build", "build_ext", "install"}
EDITABLE = {"editable_wheel", "develop"}
TARGET = Path("build") / "mypyc"  # mypyc's C sources (relative: pip builds in the source tree)
# the hand-written C modules: name -> (source, the ways to link it, tried in order, what runs without it)
NATIVE: dict[str, tuple[str, tuple[list[str], ...], str]] = {
    # libcrypto: the development symlink, else the runtime library Python's ssl module loads
    "kcp.secure._aead": (
        "kcp/secure/_aead.c",
        (["-lcrypto"], ["-l:libcrypto.so.3"]),
        "secure mode uses cryptography's AEADs",
    ),
    "kcp._mmsg": ("kcp/_mmsg.c", ([],), "kcp.batch calls sendmmsg/recvmmsg through ctypes"),
    "kcprpc._msgsize": ("kcprpc/_msgsize.c", ([],), "kcprpc.msgpack_size walks bodies in Python"),
}


def say(msg: str) -> None:
    print(f"kcprpc setup: {msg}", file=sys.stderr, flush=True)


def module_paths() -> list[str]:
    names: list[str] = []
    for info in ("kcp/buildinfo.py", "kcprpc/buildinfo.py"):
        # only the MODULES tuple: kcprpc/buildinfo.py imports kcp, which is not importable here
        text = (ROOT / info).read_text()
        start = text.index("MODULES: tuple[str, ...] = (")
        block = text[start : text.index(")", start) + 1].split("=", 1)[1]
        names.extend(ast.literal_eval(block.strip()))
    return [name.replace(".", "/") + ".py" for name in names]


def mypy_config(modules: list[str]) -> str:
    """mypy's configuration for the compile, not pyproject's strict one: the build environment has
    mypy but not the runtime dependencies (cryptography, msgpack, pydantic), whose types are Any here,
    so only the compiled modules' own errors count. CI's `mypy` run is the project's strict check."""
    names = ",".join(m.removesuffix(".py").replace("/", ".") for m in modules)
    path = TARGET / "mypyc.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[mypy]\nignore_missing_imports = True\nignore_errors = True\n\n[mypy-{names}]\nignore_errors = False\n"
    )
    return str(path)


def compiled_extensions() -> list:  # type: ignore[type-arg]
    args = set(sys.argv[1:])
    if args & EDITABLE or "--inplace" in args or not args & BUILDING:
        return []  # editable or metadata only: pure, nothing compiled into the source tree
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        say(f"{PURE_ENV} is set: pure-Python build")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not installed: pure-Python build")
        return []
    try:
        modules = module_paths()
        flags = ["--config-file", mypy_config(modules)]
        # one C file per module (multi_file), compiled in parallel by OptionalBuildExt
        compiled = list(mypycify([*flags, *modules], opt_level="3", target_dir=str(TARGET), multi_file=True))
    except (Exception, SystemExit) as e:  # mypyc reports its errors with SystemExit
        say(f"mypyc failed ({e!r}): pure-Python build")
        return []
    return [*compiled, *native_extensions()]


def native_extensions() -> list[Extension]:
    """The NATIVE modules, next to mypyc's; OptionalBuildExt builds each if it can."""
    if not sys.platform.startswith("linux"):
        for name, (_, _, without) in NATIVE.items():
            say(f"{name} is built on Linux only: {without}")
        return []
    return [Extension(name, [source]) for name, (source, _, _) in NATIVE.items()]


def parallel_compile(compiler: Any) -> None:
    """Compile an extension's C files in parallel, one job per CPU (mypyc's group of modules is a
    C file per module): distutils compiles them one after the other. Falls back to that when the
    compiler object lacks the steps this uses."""
    if getattr(compiler, "_kcprpc_parallel", False):
        return
    jobs = min(8, os.cpu_count() or 1)
    steps = ("_setup_compile", "_get_cc_args", "_compile")
    if (
        jobs < 2
        or getattr(compiler, "compiler_type", "") != "unix"  # (MSVC's compile() is its own)
        or not all(callable(getattr(compiler, step, None)) for step in steps)
    ):
        return
    from concurrent.futures import ThreadPoolExecutor

    def compile(  # the signature of distutils' CCompiler.compile
        sources: list[str],
        output_dir: str | None = None,
        macros: Any = None,
        include_dirs: Any = None,
        debug: bool = False,
        extra_preargs: Any = None,
        extra_postargs: Any = None,
        depends: Any = None,
    ) -> list[str]:
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs
        )
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj: str) -> None:
            if obj in build:
                src, ext = build[obj]
                compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(jobs) as pool:
            for _ in pool.map(one, objects):  # re-raises a compile error
                pass
        return list(objects)

    compiler.compile = compile
    compiler._kcprpc_parallel = True


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python modules when compiling fails, and builds the
    NATIVE modules if it can (the build goes on without them)."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self.skipped: list[str] = []  # the optional modules that did not build

    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            say("in-place/editable build: the compiled modules are not built")
            self.extensions = []
            return
        try:
            super().run()
        except Exception as e:  # no C compiler, missing headers, a compiler error...
            say(f"compiling the extension modules failed ({e!r}): pure-Python build")
            for out in self.get_outputs():
                Path(out).unlink(missing_ok=True)
            self.extensions = []
            self.distribution.ext_modules = []
            return
        if self.skipped:  # not in the wheel's list of outputs either
            self.extensions = [ext for ext in self.extensions if ext.name not in self.skipped]
            self.distribution.ext_modules = [
                ext for ext in self.distribution.ext_modules or [] if ext.name not in self.skipped
            ]

    def build_extension(self, ext: Extension) -> None:
        if ext.name not in NATIVE:
            if len(ext.sources) > 1:
                parallel_compile(self.compiler)
            super().build_extension(ext)
            return
        _, links, without = NATIVE[ext.name]
        failed = ""
        for link in links:
            ext.extra_link_args = list(link)
            try:
                super().build_extension(ext)
            except LinkError:  # no such library: the next way of linking it
                failed = f"linking it with {' '.join(link)} failed"
                continue
            except CompileError:
                failed = "it did not compile: the compiler's errors are above"
                break
            except Exception as e:
                failed = repr(e)[:300]
                break
            linked = f", linked with {' '.join(link)}" if link else ""
            say(f"{ext.name} built{linked}" + (f" ({failed})" if failed else ""))
            return
        Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
        self.skipped.append(ext.name)
        say(f"{ext.name} did not build ({failed}): {without}")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
