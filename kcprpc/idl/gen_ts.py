"""``kcprpc idl gen-ts``: typed TypeScript stubs, written by the Node package's generator.

The generator is a Node program (``kcprpc-gen-ts``, in ``clients/typescript`` of a checkout and
in the ``kcprpc`` npm package): the JSON Schema part is json-schema-to-typescript's, which runs on
Node. This module finds it and runs it on documents; the CLI gathers the documents the same way
``idl export`` and ``idl check`` do (files, folders, ``git:REF:PATH``, ``module:app``).

Where the generator comes from, first found wins:

1. ``--generator PATH``: the ``bin/kcprpc-gen-ts.js`` script, the package folder holding it, or
   an executable;
2. ``clients/typescript`` of a kcprpc checkout, built with ``npm ci && npm run build``: the one
   next to the ``kcprpc`` Python package (an editable install), else the one of the checkout
   holding the current folder (a ``kcprpc`` installed from a wheel, run inside a checkout);
3. ``node_modules/.bin/kcprpc-gen-ts`` under the current folder (``npm install kcprpc`` there);
4. ``kcprpc-gen-ts`` on ``PATH``.

Each failure is a :class:`~kcprpc.errors.UsageError` that names the fix.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kcprpc.errors import UsageError

GENERATOR = "kcprpc-gen-ts"
"""The generator's command name (the npm package's ``bin``)."""

GENERATOR_SCRIPT = Path("bin") / "kcprpc-gen-ts.js"
"""The generator's script inside the npm package."""

RUN_TIMEOUT_S = 300.0

_NO_NODE = (
    "kcprpc idl gen-ts runs the TypeScript generator on Node.js, and `node` is not on PATH: "
    "install Node 18 or newer (Debian: apt install nodejs npm)"
)


def checkout_package(cwd: Path | None = None) -> Path | None:
    """``clients/typescript`` of the checkout this ``kcprpc`` runs from, else of the checkout
    holding ``cwd`` (default: the current folder) or one of its parents; None outside any."""
    import kcprpc

    here = (cwd or Path.cwd()).resolve()
    for root in (Path(kcprpc.__file__).resolve().parents[1], here, *here.parents):
        pkg = root / "clients" / "typescript"
        if (pkg / "package.json").is_file() and (pkg / GENERATOR_SCRIPT).is_file():
            return pkg
    return None


def _script(package: Path, node: str) -> list[str]:
    """The command running the generator of a package folder; the folder must be built."""
    missing = [
        str(p)
        for p in (
            package / "node_modules" / "json-schema-to-typescript",
            package / "dist" / "src" / "idl" / "cli.js",
        )
        if not p.exists()
    ]
    if missing:
        raise UsageError(
            f"the TypeScript generator in {package} is not built ({', '.join(missing)} missing): "
            f"run `npm ci && npm run build` in {package}"
        )
    built = package / "dist" / "src" / "idl" / "generate.js"
    sources = list((package / "src" / "idl").glob("*.ts"))
    if sources and (not built.exists() or max(p.stat().st_mtime for p in sources) > built.stat().st_mtime):
        raise UsageError(
            f"the TypeScript generator in {package} is older than its sources: run `npm run build` in {package}"
        )
    return [node, str(package / GENERATOR_SCRIPT)]


def find_generator(explicit: str | None = None, cwd: Path | None = None) -> list[str]:
    """The command (argv prefix) that runs ``kcprpc-gen-ts``; see the module's doc for the order."""
    node = shutil.which("node")
    if node is None:
        raise UsageError(_NO_NODE)
    if explicit:
        p = Path(explicit)
        if p.is_dir():
            if not (p / GENERATOR_SCRIPT).is_file():
                raise UsageError(f"--generator {explicit}: a folder without {GENERATOR_SCRIPT}")
            return _script(p, node)
        if not p.is_file():
            raise UsageError(f"--generator {explicit}: no such file")
        if p.suffix in (".js", ".mjs"):
            return [node, str(p)]
        return [str(p)]
    pkg = checkout_package(cwd)
    if pkg is not None:
        return _script(pkg, node)
    local = (cwd or Path.cwd()) / "node_modules" / ".bin" / GENERATOR
    if local.exists():
        return [str(local)]
    on_path = shutil.which(GENERATOR)
    if on_path is not None:
        return [on_path]
    raise UsageError(
        f"cannot find the TypeScript generator {GENERATOR}: install the kcprpc npm package in this project "
        "(`npm pack` in clients/typescript of a kcprpc checkout, then `npm install kcprpc-<version>.tgz`) "
        "and run this from it, or pass --generator PATH (its bin/kcprpc-gen-ts.js)"
    )


def run_generator(
    docs: Mapping[str, Mapping[str, Any]],
    out: Path,
    *,
    runtime: str | None = None,
    check: bool = False,
    generator: Sequence[str] | None = None,
) -> tuple[int, str]:
    """Write the documents (by service name) to a temporary folder and run the generator on it,
    output into ``out``. Returns (exit status, the generator's stdout); a generator failure
    (exit 2: a document it rejects) is a :class:`UsageError` carrying its message. With
    ``check``, status 1 means the modules in ``out`` differ (stale)."""
    from kcprpc.idl.schema import dumps

    cmd = list(generator) if generator is not None else find_generator()
    with tempfile.TemporaryDirectory(prefix="kcprpc-gen-ts-") as tmp:
        for name, doc in sorted(docs.items()):
            (Path(tmp) / f"{name}.json").write_text(dumps(dict(doc)), encoding="utf-8")
        argv = [*cmd, "--out", str(out)]
        if runtime is not None:
            argv += ["--runtime", runtime]
        if check:
            argv.append("--check")
        argv.append(tmp)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise UsageError(_NO_NODE) from None
        except OSError as e:
            raise UsageError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        except subprocess.TimeoutExpired:
            raise UsageError(f"{GENERATOR} did not finish in {RUN_TIMEOUT_S:.0f} s") from None
    message = (r.stderr.strip() or r.stdout.strip()).replace(tmp + "/", "")
    if r.returncode == 1 and check:
        return 1, message
    if r.returncode != 0:
        first = message.splitlines()[0] if message else f"exit status {r.returncode}"
        raise UsageError(first.removeprefix(f"{GENERATOR}: ").strip() or first)
    return 0, r.stdout
