"""The ``kcprpc idl`` tools (docs/idl.md).

::

    kcprpc idl export module:Class ... [-o FILE]  |  --all [-o idl/] [--check]
    kcprpc idl check OLD NEW [--json]     kcprpc idl gen-python DOC -o models.py     kcprpc idl validate DOC...
    kcprpc idl gen-ts [DOC|DIR|git:REF:PATH ...] [--from-app module:app] --out DIR

OLD and NEW are documents, folders of them, or ``git:REF:PATH`` (read with git, as committed at REF).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kcprpc.cli.files import make_dir, write_file
from kcprpc.cli.runner import EXIT_BREAKING
from kcprpc.errors import UsageError


def cmd_idl_export(args: argparse.Namespace) -> int:
    """``kcprpc idl export``."""
    from kcprpc.idl.registry import examples_importable, render_all
    from kcprpc.idl.schema import dumps

    sys.path.insert(0, "")
    if args.all:
        if args.classes:
            raise UsageError("--all exports the built-in and example services; name no targets with it")
        out_dir = Path(args.output or "idl")
        files = render_all()
        if not examples_importable():
            print(
                "note: the example services are not part of the installed package (they live in a "
                "kcprpc checkout): only the built-in services' documents",
                file=sys.stderr,
            )
        if args.check:
            if not out_dir.is_dir():
                raise UsageError(f"--check compares with the documents in {out_dir}/, which is not a folder")
            stale = []
            for name, text in files.items():
                p = out_dir / name
                if not p.exists() or p.read_text(encoding="utf-8") != text:
                    stale.append(str(p))
            if stale:
                print("out of date (run `kcprpc idl export --all`): " + ", ".join(stale), file=sys.stderr)
                return 1
            print(f"{len(files)} documents in {out_dir} match the code")
            return 0
        make_dir(out_dir)
        for name, text in files.items():
            write_file(out_dir / name, text)
        print(f"wrote {len(files)} documents to {out_dir}")
        return 0
    if not args.classes:
        raise UsageError("name module:Class targets (or module:app, as serve takes), or use --all")
    texts = [dumps(doc) for target in args.classes for doc in export_documents(target)]
    if args.output:
        out = Path(args.output)
        if len(texts) > 1 or out.is_dir():
            make_dir(out)
            for t in texts:
                name = json.loads(t)["name"]
                write_file(out / f"{name}.json", t)
        else:
            write_file(out, texts[0])
    else:
        sys.stdout.write("".join(texts))
    return 0


BUILTIN_SERVICES = ("kcprpc.Health", "kcprpc.Push", "kcprpc.Reflection")


def export_documents(target: str) -> list[dict[str, Any]]:
    """The documents of the service classes ``target`` names (:func:`export_targets`); a class
    pydantic cannot describe is a :class:`UsageError` naming it."""
    from kcprpc.idl.export import export_service
    from kcprpc.idl.registry import import_attr
    from kcprpc.idl.schema import DocumentError

    docs: list[dict[str, Any]] = []
    for cls in export_targets(target, import_attr(target)):
        try:
            docs.append(export_service(cls))
        except (UsageError, DocumentError):
            raise
        except Exception as e:  # pydantic cannot describe a type of the class
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(
                f"cannot export {cls.__module__}.{cls.__qualname__} ({target}): {first}"
            ) from None
    return docs


def export_targets(target: str, obj: Any) -> list[type]:
    """The service classes ``idl export TARGET`` names: a class; a service instance; or what
    ``kcprpc serve`` takes (a :class:`~kcprpc.Server` — its own services, not the built-in ones
    every server adds —, a list of services, or a factory of either)."""
    from kcprpc.server import Server

    if callable(obj) and not isinstance(obj, (type, Server)):
        try:
            obj = obj()
        except TypeError as e:
            raise UsageError(
                f"{target} is a function that needs arguments ({e}); name a service class"
            ) from None
    if isinstance(obj, Server):
        out = [type(s) for s in obj.services]
        return [c for c in out if _service_name(c) not in BUILTIN_SERVICES]
    if isinstance(obj, (list, tuple)):
        return [_service_class(target, o) for o in obj]
    return [_service_class(target, obj)]


def _service_class(target: str, obj: Any) -> type:
    from kcprpc.server import Server
    from kcprpc.service import Service

    cls = obj if isinstance(obj, type) else type(obj)
    if issubclass(cls, Service) or (
        not issubclass(cls, Server) and cls.__module__ != "builtins" and _has_rpc_methods(cls)
    ):
        return cls
    what = f"the class {cls.__qualname__}" if isinstance(obj, type) else f"a {cls.__qualname__}"
    raise UsageError(
        f"{target} is (or holds) {what}, not a service: name a service class (module:Class), "
        "or a kcprpc.Server / list of services (module:app, as `kcprpc serve` takes)"
    )


def _service_name(cls: type) -> str:
    from kcprpc.service import service_spec

    try:
        return service_spec(cls).name
    except Exception:
        return cls.__qualname__


def _has_rpc_methods(cls: type) -> bool:
    import inspect

    return any(
        inspect.iscoroutinefunction(v) or inspect.isasyncgenfunction(v)
        for k, v in vars(cls).items()
        if not k.startswith("_")
    )


def _git(*argv: str) -> str:
    import subprocess

    try:
        r = subprocess.run(["git", *argv], capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        raise UsageError(f"cannot run git: {e}") from None
    if r.returncode != 0:
        raise UsageError(f"git {' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


def load_documents(spec: str) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Documents from a file, a folder (every ``*.json`` but ``schema.json``) or ``git:REF:PATH``
    (either, as committed at REF). Returns (is a set, {service name: document})."""
    from kcprpc.idl.schema import load_document, loads_document

    docs: dict[str, dict[str, Any]] = {}
    if spec.startswith("git:"):
        ref, sep, path = spec[4:].partition(":")
        if not sep or not ref:
            raise UsageError(f"{spec!r}: expected git:REF:PATH")
        path = path.rstrip("/") or "."
        kind = _git("cat-file", "-t", f"{ref}:{path}").strip()
        if kind == "blob":
            d = loads_document(_git("show", f"{ref}:{path}"), spec)
            return False, {d["name"]: d}
        for name in _git("ls-tree", "--name-only", ref, path + "/").split():
            if name.endswith(".json") and not name.endswith("schema.json"):
                d = loads_document(_git("show", f"{ref}:{name}"), f"git:{ref}:{name}")
                docs[d["name"]] = d
        return True, docs
    p = Path(spec)
    if p.is_dir():
        for f in sorted(p.glob("*.json")):
            if f.name != "schema.json":
                d = load_document(f)
                docs[d["name"]] = d
        return True, docs
    d = load_document(p)
    return False, {d["name"]: d}


def cmd_idl_check(args: argparse.Namespace) -> int:
    """``kcprpc idl check OLD NEW``: exit 1 if anything breaks."""
    from kcprpc.idl.breaking import check, check_sets

    old_set, old = load_documents(args.old)
    new_set, new = load_documents(args.new)
    if not old_set and not new_set:
        changes = check(next(iter(old.values())), next(iter(new.values())))
    else:
        changes = check_sets(old, new)
    bad = [c for c in changes if c.breaking]
    if args.json:
        print(json.dumps([c.as_dict() for c in changes], indent=2))
    else:
        for c in changes:
            print(c)
        print(f"{len(bad)} breaking change(s), {len(changes) - len(bad)} safe change(s)")
    return EXIT_BREAKING if bad else 0


def cmd_idl_validate(args: argparse.Namespace) -> int:
    """``kcprpc idl validate DOC...``."""
    from kcprpc.idl.schema import load_document

    for f in args.docs:
        d = load_document(f)
        print(f"{f}: ok ({d['name']}, {len(d['methods'])} methods)")
    return 0


def cmd_idl_gen_python(args: argparse.Namespace) -> int:
    """``kcprpc idl gen-python DOC -o models.py``."""
    from kcprpc.idl.gen import generate_python
    from kcprpc.idl.schema import load_document

    code = generate_python(load_document(args.doc))
    if args.output and args.output != "-":
        write_file(Path(args.output), code)
    else:
        sys.stdout.write(code)
    return 0


def gen_ts_documents(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The documents ``idl gen-ts`` was given: files, folders or ``git:REF:PATH`` (as ``idl check``
    reads them), and ``--from-app`` targets (as ``idl export`` exports them), by service name."""
    docs: dict[str, dict[str, Any]] = {}

    def add(doc: dict[str, Any], where: str) -> None:
        if doc["name"] in docs:
            raise UsageError(f"{where}: a second document for {doc['name']}")
        docs[doc["name"]] = doc

    for spec in args.docs:
        for d in load_documents(spec)[1].values():
            add(d, spec)
    if args.from_app:
        sys.path.insert(0, "")
    for target in args.from_app:
        for doc in export_documents(target):
            add(doc, target)
    if not docs:
        raise UsageError(
            "name documents (files, folders such as idl/, git:REF:PATH) or --from-app module:app"
        )
    return docs


def cmd_idl_gen_ts(args: argparse.Namespace) -> int:
    """``kcprpc idl gen-ts``: one TypeScript module per service, written by the Node generator."""
    from kcprpc.idl.gen_ts import find_generator, run_generator

    docs = gen_ts_documents(args)
    generator = find_generator(args.generator)
    out = Path(args.out)
    if not args.check:
        make_dir(out)
    status, text = run_generator(docs, out, runtime=args.runtime, check=args.check, generator=generator)
    if status != 0:
        print(text, file=sys.stderr)
        return 1
    if text.strip():
        print(text.strip())
    return 0


def add_idl_commands(sub: Any) -> None:
    """Register ``idl export``, ``idl check``, ``idl gen-python``, ``idl gen-ts`` and ``idl validate`` on an
    ``argparse`` sub-parsers object."""
    idl = sub.add_parser("idl", help="interface documents: export, check, gen-python, gen-ts, validate")
    isub = idl.add_subparsers(dest="idl_cmd", required=True)
    e = isub.add_parser("export", help="export documents from service classes")
    e.add_argument("classes", nargs="*", metavar="module:Class")
    e.add_argument("-o", "--output", help="file (one class) or directory")
    e.add_argument("--all", action="store_true", help="the built-in and example services (into idl/)")
    e.add_argument("--check", action="store_true", help="with --all: fail if the files differ from the code")
    e.set_defaults(func=cmd_idl_export, is_async=False)
    c = isub.add_parser(
        "check",
        help="list the changes from OLD to NEW; exit 1 if one breaks peers",
        description="OLD and NEW are document files, folders of them, or git:REF:PATH (as committed at REF), "
        "e.g. `kcprpc idl check git:origin/main:idl idl`.",
    )
    c.add_argument("old", metavar="OLD")
    c.add_argument("new", metavar="NEW")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_idl_check, is_async=False)
    g = isub.add_parser("gen-python", help="pydantic models and a typed stub from a document")
    g.add_argument("doc")
    g.add_argument("-o", "--output", default=None)
    g.set_defaults(func=cmd_idl_gen_python, is_async=False)
    t = isub.add_parser(
        "gen-ts",
        help="typed TypeScript stubs from documents (runs the Node generator kcprpc-gen-ts)",
        description="Writes one TypeScript module per service into --out: message types, a typed client "
        "class, event and topic types. Needs Node.js and the generator: clients/typescript of a checkout "
        "(npm ci && npm run build there), the kcprpc npm package, or --generator PATH.",
    )
    t.add_argument("docs", nargs="*", metavar="DOC", help="documents, folders of them (idl/) or git:REF:PATH")
    t.add_argument(
        "--from-app",
        action="append",
        default=[],
        metavar="TARGET",
        help="module:app or module:Class, as `idl export` takes (repeatable)",
    )
    t.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder to write the modules into")
    t.add_argument(
        "--runtime", default=None, help="where the modules import the runtime types from (default: kcprpc)"
    )
    t.add_argument(
        "--generator",
        default=None,
        metavar="PATH",
        help="the generator's bin/kcprpc-gen-ts.js or package folder",
    )
    t.add_argument("--check", action="store_true", help="write nothing; exit 1 if the modules in DIR differ")
    t.set_defaults(func=cmd_idl_gen_ts, is_async=False)
    v = isub.add_parser("validate", help="check documents against the format")
    v.add_argument("docs", nargs="+")
    v.set_defaults(func=cmd_idl_validate, is_async=False)
