"""Python code from an interface document: pydantic models and a typed stub service class.

``kcprpc idl gen-python DOC -o models.py`` writes one module. The JSON Schema -> pydantic part is
datamodel-code-generator's (a well-kept generator; its output is deterministic with timestamps
off). Then this module appends:

* the event registrations (``kcprpc.event("game.snapshot")(WorldSnapshot)``), so
  ``client.on(WorldSnapshot, ...)`` works;
* a stub class with the service's wire name, one typed ``async def`` per method, its kind and
  wire name stated with ``@rpc.*(name=...)`` decorators, and its events and topics (``events=``, ``topics=``).

A client uses it without the server's package::

    from models import Game, JoinRequest
    game = client.stub(Game)                 # typed: mypy checks every call
    reply = await game.join(JoinRequest(room="r1", name="ann"))
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import warnings
from typing import Any

from kcprpc.errors import UsageError

_PRIMITIVES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "None"}
_DECORATOR = {
    "unary": "unary",
    "server_stream": "server_stream",
    "client_stream": "client_stream",
    "bidi": "bidi",
    "notify": "notify",
}


def _identifier(name: str) -> str:
    out = re.sub(r"\W", "_", name)
    if not out or out[0].isdigit() or out.startswith("_"):
        out = "m_" + out.lstrip("_")
    if keyword.iskeyword(out):
        out += "_"
    return out


def _class_name(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts) or "Service"
    return "S" + out if out[0].isdigit() else out


GENERATOR_REQUIREMENT = "datamodel-code-generator>=0.89"
"""What gen-python needs, as pyproject.toml's ``dev`` extra states it (a test keeps the two equal)."""


def generator_requirement() -> str:
    """The datamodel-code-generator requirement of the installed kcprpc's metadata (its ``dev``
    extra), or :data:`GENERATOR_REQUIREMENT` when kcprpc runs from a checkout without metadata."""
    from importlib import metadata

    try:
        reqs = metadata.requires("kcprpc") or []
    except metadata.PackageNotFoundError:
        return GENERATOR_REQUIREMENT
    for r in reqs:
        spec = r.split(";", 1)[0].strip()
        if spec.replace("_", "-").lower().startswith("datamodel-code-generator"):
            return spec.replace(" ", "")
    return GENERATOR_REQUIREMENT


def _models(doc: dict[str, Any]) -> str:
    """datamodel-code-generator's pydantic v2 models for the document's ``$defs``."""
    try:
        from datamodel_code_generator import Formatter, InputFileType, LiteralType, PythonVersion, generate
        from datamodel_code_generator.enums import DataModelType
    except ImportError:
        raise UsageError(
            f"gen-python needs datamodel-code-generator: pip install '{generator_requirement()}'"
        ) from None
    if not doc.get("$defs"):
        return "from __future__ import annotations\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = generate(
                json.dumps({"$defs": doc["$defs"]}, sort_keys=True),
                input_file_type=InputFileType.JsonSchema,
                output_model_type=DataModelType.PydanticV2BaseModel,
                target_python_version=PythonVersion.PY_310,
                disable_timestamp=True,
                skip_root_model=True,
                field_constraints=True,
                use_annotated=True,
                use_schema_description=True,
                use_field_description=True,
                use_standard_collections=True,
                use_union_operator=True,
                strict_nullable=True,
                enum_field_as_literal=LiteralType.All,
                use_double_quotes=True,
                formatters=[Formatter.BUILTIN],
                custom_file_header="",
            )
        except Exception as e:  # the generator rejects the schema: say so without a traceback
            raise UsageError(f"datamodel-code-generator could not translate {doc['name']}: {e}") from None
    if not isinstance(out, str):
        raise UsageError("datamodel-code-generator returned several modules; expected one")
    return _bytes_defaults(out)


def _bytes_defaults(code: str) -> str:
    """JSON Schema writes a ``bytes`` default as a string; make it a bytes literal again."""
    tree = ast.parse(code)
    edits: list[tuple[int, int, int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and "bytes" in ast.unparse(node.annotation)
            and node.value.end_col_offset is not None
            and node.value.lineno == node.value.end_lineno
        ):
            v = node.value
            edits.append((v.lineno, v.col_offset, v.end_col_offset or 0, repr(str(v.value).encode())))
    lines = code.split("\n")
    for lineno, start, end, text in sorted(edits, reverse=True):
        line = lines[lineno - 1].encode()
        lines[lineno - 1] = (line[:start] + text.encode() + line[end:]).decode()
    return "\n".join(lines)


class _Types:
    """JSON Schema of a method or event -> a Python type expression, using the generated classes."""

    def __init__(self, classes: set[str]) -> None:
        self.classes = classes
        self.uses_any = False
        self.uses_literal = False

    def ref(self, name: str) -> str:
        for cand in (name, _class_name(name)):
            if cand in self.classes:
                return cand
        self.uses_any = True
        return "Any"

    def of(self, schema: Any) -> str:
        if not isinstance(schema, dict) or not schema:
            self.uses_any = True
            return "Any"
        if "$ref" in schema:
            return self.ref(str(schema["$ref"]).rsplit("/", 1)[-1])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return " | ".join(dict.fromkeys(self.of(s) for s in schema[key]))
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            if all(isinstance(v, (str, int, bool)) or v is None for v in values):
                self.uses_literal = True
                return "Literal[" + ", ".join(repr(v) for v in values) + "]"
        t = schema.get("type")
        if t == "string" and schema.get("format") == "binary":
            return "bytes"
        if isinstance(t, str) and t in _PRIMITIVES:
            return _PRIMITIVES[t]
        if t == "array":
            return f"list[{self.of(schema.get('items', {}))}]"
        if t == "object" and "properties" not in schema:
            add = schema.get("additionalProperties")
            return f"dict[str, {self.of(add if isinstance(add, dict) else {})}]"
        self.uses_any = True
        return "Any"


def generate_python(doc: dict[str, Any]) -> str:
    """The module text for ``doc`` (a validated document). Deterministic."""
    models = _models(doc)
    try:
        tree = ast.parse(models)
    except SyntaxError as e:  # pragma: no cover - the generator's output always parses
        raise UsageError(f"generated models do not parse: {e}") from None
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    types = _Types(classes)
    stub = _class_name(doc["service"])
    while stub in classes:
        stub += "Service"

    lines: list[str] = []
    events: list[tuple[str, str]] = []
    for name, ev in sorted(doc.get("events", {}).items()):
        tp = types.of(ev["schema"])
        if tp in classes:
            extra = "".join(f", {k}={ev[k]!r}" for k in ("key", "lane") if ev.get(k) is not None)
            lines.append(f"kcprpc.event({name!r}, delivery={ev['delivery']!r}{extra})({tp})")
            events.append((name, tp))
        else:
            lines.append(f"# event {name!r} carries {tp}: register a handler on a model to receive it")
    if lines:
        lines.append("")
        lines.append("")

    ev_class = dict(events)
    topics = {
        t: [ev_class[e] for e in sorted(spec["events"]) if e in ev_class]
        for t, spec in doc.get("topics", {}).items()
    }
    header = ["kcprpc.Service", f"name={doc['name']!r}"]
    if events:
        header.append("events=[" + ", ".join(tp for _, tp in events) + "]")
    if topics:
        header.append(
            "topics={" + ", ".join(f"{t!r}: [{', '.join(cs)}]" for t, cs in sorted(topics.items())) + "}"
        )
    body: list[str] = ["class " + stub + "(" + ", ".join(header) + "):"]
    if len(body[0]) > 100:
        body = [f"class {stub}(", *(f"    {h}," for h in header), "):"]
    body.append(
        f'    """Typed stub of {doc["name"]}: use ``client.stub({stub})``; the methods run on the server."""'
    )
    body.append("")
    used_attrs: set[str] = set()
    for mname, m in sorted(doc["methods"].items()):
        attr = _identifier(mname)
        while attr in used_attrs:
            attr += "_"
        used_attrs.add(attr)
        kind = m["kind"]
        req = types.of(m["request"])
        resp = types.of(m["response"])
        deco_args = [f"name={mname!r}"]
        if kind == "notify" and m["delivery"] != "unreliable":
            deco_args.append(f"delivery={m['delivery']!r}")
        body.append(f"    @_rpc(rpc.{_DECORATOR[kind]}({', '.join(deco_args)}))")
        stream_in = kind in ("client_stream", "bidi")
        stream_out = kind in ("server_stream", "bidi")
        if stream_in:
            param = f", requests: AsyncIterator[{req}]"
        elif m["request"] == {"type": "null"}:
            param = ""
        else:
            param = f", request: {req}"
        ret = f"AsyncIterator[{resp}]" if stream_out else ("None" if kind == "notify" else resp)
        body.append(f"    async def {attr}(self{param}) -> {ret}:")
        desc = m.get("description")
        if desc:
            body.append('        """' + desc.replace('"""', "'''").replace("\\", "\\\\") + '"""')
        body.append(
            f"        raise NotImplementedError({doc['name'] + '/' + mname + ' runs on the server'!r})"
        )
        if stream_out:
            body.append("        yield  # an async generator: a streaming response")
        body.append("")

    typing_names = ["Any", "TypeVar", "cast"]
    if types.uses_literal:
        typing_names.append("Literal")
    header = [
        f"# Generated by `kcprpc idl gen-python` from {doc['name']} (protocol {doc['protocol_version']}).",
        "# Do not edit: regenerate from the interface document.",
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import AsyncIterator, Callable",
    ]
    if typing_names:
        header.append(f"from typing import {', '.join(sorted(typing_names))}")
    header += ["", "import kcprpc", "from kcprpc import rpc"]
    model_lines = [ln for ln in models.split("\n") if ln.strip() != "from __future__ import annotations"]
    while model_lines and (not model_lines[0].strip() or model_lines[0].startswith("#")):
        model_lines.pop(0)
    names = sorted(classes | {stub})
    helper = [
        '_F = TypeVar("_F", bound=Callable[..., Any])',
        "",
        "",
        "def _rpc(decorator: Any) -> Callable[[_F], _F]:",
        '    """A kcprpc.rpc decorator, typed so that the stub keeps its signatures."""',
        '    return cast("Callable[[_F], _F]", decorator)',
        "",
        "",
    ]
    footer = ["", "", "__all__ = [" + ", ".join(repr(n) for n in names) + "]"]
    parts = [*header, *model_lines]
    while parts and not parts[-1].strip():
        parts.pop()
    parts += ["", ""]
    if lines:
        parts += lines
    while body and not body[-1].strip():
        body.pop()
    return "\n".join([*parts, *helper, *body, *footer]) + "\n"
