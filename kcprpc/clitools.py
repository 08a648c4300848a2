"""The grpcurl-like client commands of ``kcprpc`` and the ``kcprpc idl`` tools.

::

    kcprpc list HOST:PORT [SERVICE]
    kcprpc describe HOST:PORT SERVICE[.METHOD|.MESSAGE] [--json]
    kcprpc call HOST:PORT SERVICE.METHOD ['{"json": "request"}'] [-d @file] [-H key=value] [--timeout S]
    kcprpc watch HOST:PORT TOPIC [-n COUNT] [--duration S]   (stderr: "subscribed to TOPIC" once live)
    kcprpc ping HOST:PORT [-c COUNT]      kcprpc stats HOST:PORT      kcprpc keygen [-o FILE]
    kcprpc idl export module:Class ... [-o FILE]  |  --all [-o idl/] [--check]
    kcprpc idl check OLD NEW [--json]     kcprpc idl gen-python DOC -o models.py     kcprpc idl validate DOC...

The client commands learn the service from the server's reflection service (or from ``--idl
DOC`` files), so they never import the service's code. Requests are validated against the
document's JSON Schema before they are sent. ``--wire secure|compat`` picks the wire mode (secure
by default, compat implied by ``--crypt``; kcptun's ``--mode`` is the KCP profile, as there).
Transport flags carry kcptun's names (``--crypt``,
``--key``, ``--datashard``, ``--parityshard``, ``--mode``, ``--mtu``, ``--sndwnd``, ``--rcvwnd``,
``--nodelay``, ``--interval``, ``--resend``, ``--nc``); in compat mode they must match the server's,
in secure mode FEC, MTU and windows are negotiated (docs/idl.md); ``kcprpc serve``
(in :mod:`kcprpc.cli`, the entry point) takes the same flags. ``--timeout`` bounds each call and
the connect (which waits at most ``min(--connect-timeout, --timeout)``).

Errors go to stderr as one line, ``STATUS_NAME: message``; the exit code is ``64 + status code``
(as grpcurl does), ``2`` for a usage error (bad arguments, a malformed document; ``kcprpc: message``),
``1`` when ``idl check`` finds a breaking change, and ``70`` for an unexpected error (a bug; one
line too, ``KCPRPC_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from pydantic_core import to_jsonable_python

from kcp.errors import KCPUsageError
from kcprpc.client import Client, ClientConfig, RawEvent, connect
from kcprpc.config import CompatWire, SecureWire, Transport
from kcprpc.errors import RpcError, UsageError
from kcprpc.service import MethodKind, MethodSpec, raw_method
from kcprpc.status import Status

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE: an unexpected error (a bug), reported in one line
EXIT_BREAKING = 1
STATUS_EXIT_BASE = 64
DEFAULT_CONNECT_TIMEOUT = 5.0

# kcptun's --mode presets: (nodelay, interval, resend, nc)
MODES: dict[str, tuple[int, int, int, int]] = {
    "normal": (0, 40, 2, 1),
    "fast": (0, 30, 2, 1),
    "fast2": (1, 20, 2, 1),
    "fast3": (1, 10, 2, 1),
}


def exit_code(status: Status) -> int:
    """The process exit code for a call that ended with ``status``."""
    return 0 if status is Status.OK else STATUS_EXIT_BASE + int(status)


class CliError(Exception):
    """A failure the command reports as ``STATUS: message`` and exits with."""

    def __init__(self, status: Status, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


# ---------------------------------------------------------------------------- argument parsing
class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``PROG: error: MESSAGE (PROG --help: the usage)`` and
    exit code 2, instead of the usage text followed by the error (the examples use it too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` shows the usage)\n")


def _number(kind: Callable[[str], Any], text: str, ok: Callable[[Any], bool], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or not ok(value):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not {what}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a number of seconds (or a rate) above 0."""
    return float(_number(float, text, lambda v: 0 < v < float("inf"), "a number above 0"))


def nonnegative_float(text: str) -> float:
    """``argparse`` type: a number of seconds, 0 or more."""
    return float(_number(float, text, lambda v: 0 <= v < float("inf"), "a number of 0 or more"))


def positive_int(text: str) -> int:
    """``argparse`` type: a count of 1 or more."""
    return int(_number(int, text, lambda v: v >= 1, "a whole number of 1 or more"))


def port_number(text: str) -> int:
    """``argparse`` type: a UDP port, 0 (any free port) to 65535."""
    return int(_number(int, text, lambda v: 0 <= v <= 65535, "a port (0..65535; 0: any free port)"))


def host_port(text: str) -> tuple[str, int]:
    """``argparse`` type: ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    try:
        return parse_address(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------------------- transport flags
def add_transport_args(p: argparse.ArgumentParser) -> None:
    """The transport flags, with kcptun's names; shared by the client commands and ``serve``."""
    g = p.add_argument_group(
        "transport (named as kcptun names them; compat mode: client and server must agree; "
        "secure mode: FEC, MTU and windows are negotiated)"
    )
    g.add_argument(
        "--wire",
        default=None,
        choices=["secure", "compat"],
        help="wire mode: secure (the default; --key is the handshake's passphrase) or compat "
        "(kcp-go/kcptun's packet format; implied by --crypt)",
    )
    g.add_argument(
        "--crypt",
        default=None,
        help="compat mode's kcp-go cipher: aes, aes-128, salsa20, none, null ... (implies --wire compat)",
    )
    g.add_argument("--key", default=None, help="pre-shared secret (passphrase)")
    g.add_argument(
        "--static-key",
        default=None,
        metavar="HEX|@FILE",
        help="secure mode: this side's X25519 private key (serve: the identity clients pin; "
        "`kcprpc keygen` makes one)",
    )
    g.add_argument(
        "--server-key", default=None, metavar="HEX", help="secure mode, clients: pin the server's public key"
    )
    g.add_argument(
        "--token", default=None, help="secure mode, clients: token for the server's authorize hook"
    )
    g.add_argument(
        "--datashard", "--ds", type=int, default=None, help="FEC data shards (0: no FEC, the default)"
    )
    g.add_argument("--parityshard", "--ps", type=int, default=None, help="FEC parity shards")
    g.add_argument("--mode", default=None, choices=[*MODES, "manual"], help="KCP profile (default: fast3)")
    g.add_argument("--mtu", type=int, default=None, help="UDP payload size (default 1400)")
    g.add_argument("--sndwnd", type=int, default=None, help="send window, in segments")
    g.add_argument("--rcvwnd", type=int, default=None, help="receive window, in segments")
    g.add_argument("--nodelay", type=int, default=None, help="manual mode: ikcp nodelay")
    g.add_argument("--interval", type=int, default=None, help="manual mode: ikcp interval (ms)")
    g.add_argument("--resend", type=int, default=None, help="manual mode: ikcp fast resend")
    g.add_argument("--nc", type=int, default=None, help="manual mode: 1 turns congestion control off")


def transport_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The transport flags that were given, as keyword arguments of ``connect()`` / ``Server()``:
    ``mode`` (``--wire``), ``crypt``, ``key``, ``fec`` and ``transport_options`` (session options),
    each only when set, so that ``kcprpc serve`` keeps the app's own settings for the flags left out."""
    opts: dict[str, Any] = {}
    mode = getattr(args, "mode", None)
    if mode in MODES:
        opts["nodelay"], opts["interval"], opts["resend"], opts["nc"] = MODES[mode]
    for flag in ("nodelay", "interval", "resend", "nc"):
        v = getattr(args, flag, None)
        if v is not None:
            if mode not in (None, "manual"):
                raise UsageError(f"--{flag} goes with --mode manual")
            opts[flag] = v
    for flag, name in (("mtu", "mtu"), ("sndwnd", "snd_wnd"), ("rcvwnd", "rcv_wnd")):
        v = getattr(args, flag, None)
        if v is not None:
            opts[name] = v
    out: dict[str, Any] = {}
    ds, ps = getattr(args, "datashard", None), getattr(args, "parityshard", None)
    if ds is not None or ps is not None:
        ds, ps = ds or 0, ps or 0
        if ds < 0 or ps < 0 or (ds > 0) != (ps > 0):
            raise UsageError("--datashard and --parityshard must both be positive (FEC on) or both 0")
        out["fec"] = (ds, ps) if ds > 0 else None
    crypt = getattr(args, "crypt", None)
    key = getattr(args, "key", None)
    wire = getattr(args, "wire", None)
    if crypt is not None and wire == "secure":
        raise UsageError(f"--crypt {crypt} is a kcp-go cipher (compat mode); --wire secure always encrypts")
    if crypt not in (None, "null") and key is None:
        raise UsageError(f"--crypt {crypt} needs --key")
    if wire is not None:
        out["mode"] = wire
    for flag, name in (("static_key", "static_private_key"), ("server_key", "server_public_key")):
        v = getattr(args, flag, None)
        if v is not None:
            out[name] = parse_key(v, "--" + flag.replace("_", "-"))
    token = getattr(args, "token", None)
    if token is not None:
        out["token"] = token
    if crypt is not None:
        out["crypt"] = crypt
    if key is not None:
        out["key"] = key
    if opts:
        out["transport_options"] = opts
    return out


def flags_transport(given: dict[str, Any], base: Transport | None = None) -> Transport:
    """``base`` (default: ``Transport()``) with the flags of :func:`transport_kwargs` applied: the
    wire mode (``--wire``, or compat when ``--crypt`` is given), the wire's fields and the session
    options given; the rest of ``base`` stays. (A bridge to the new transport description: the CLI
    package replaces it with its own flag parser.)"""
    base = base or Transport()
    old = base.wire
    mode = given.get("mode") or ("compat" if "crypt" in given else old.mode)
    fec = (given["fec"] or (0, 0)) if "fec" in given else old.fec
    key = given.get("key", old.key)
    wire: CompatWire | SecureWire
    try:
        session = base.session.with_options(**given.get("transport_options", {}))
        if mode == "compat":
            secure_only = [k for k in ("static_private_key", "server_public_key", "token") if k in given]
            if secure_only:
                how = f"--crypt {given['crypt']} selects compat mode" if "crypt" in given else "--wire compat"
                raise UsageError(
                    f"{how} (kcp-go's packet format), which has no handshake: "
                    f"{', '.join(secure_only)} need secure mode"
                )
            crypt = given.get("crypt", old.crypt if isinstance(old, CompatWire) else None)
            wire = CompatWire(crypt=crypt, key=key, fec=fec)
        else:
            sw = old if isinstance(old, SecureWire) else SecureWire()
            wire = SecureWire(
                key=key,
                static_private_key=given.get("static_private_key", sw.static_private_key),
                server_public_key=given.get("server_public_key", sw.server_public_key),
                token=given.get("token", sw.token),
                authorize=sw.authorize,
                fec=fec,
                config=sw.config,
            )
    except KCPUsageError as e:
        raise UsageError(str(e)) from None
    return replace(base, wire=wire, session=session)


def parse_key(text: str, flag: str) -> bytes:
    """A 32-byte X25519 key given as 64 hex digits, or ``@FILE`` holding them."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"{flag}: cannot read {text[1:]}: {e}") from None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"{flag}: expected 64 hex digits (a 32-byte X25519 key) or @FILE")
    return key


def cmd_keygen(args: argparse.Namespace) -> int:
    """``kcprpc keygen``: a new X25519 key pair for secure mode, as hex."""
    from kcp.secure import generate_keypair

    priv, pub = generate_keypair()
    if args.output:
        out = Path(args.output)
        write_file(out, priv.hex() + "\n", mode=0o600)
        print(f"private key written to {out} (serve --static-key @{out})", file=sys.stderr)
    else:
        print(f"private {priv.hex()}")
    print(f"public {pub.hex()}")
    return 0


def write_file(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write a file the user named; failures are a one-line :class:`UsageError`. With ``mode``
    the file is created with those permissions (no window in which others could read it)."""
    try:
        if mode is None:
            path.write_text(text, encoding="utf-8")
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def make_dir(path: Path) -> None:
    """Create a folder the user named (and its parents); failures are a one-line :class:`UsageError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder {path}: {e.strerror or e}") from None


def parse_address(text: str, after: Sequence[str] = ()) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6). ``after`` are the positional arguments that followed
    it: when the first is a port number, the message says to join them (the older ``HOST PORT`` form)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        if ":" not in text and after and after[0].isdigit():
            raise UsageError(
                f"'{text} {after[0]}': use HOST:PORT ({text}:{after[0]}); the address is one argument"
            )
        raise UsageError(f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:9000)")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------- connections
def _positionals_after_address(args: argparse.Namespace) -> list[str]:
    """The positional arguments given after HOST:PORT, in order (for :func:`parse_address`'s hint)."""
    out = []
    for name in ("service", "target", "method", "request", "topic"):
        v = getattr(args, name, None)
        if isinstance(v, str):
            out.append(v)
    return [*out, *(getattr(args, "extra", None) or ())]


def connect_timeout(args: argparse.Namespace) -> float:
    """How long the command waits to connect: ``--connect-timeout`` (default 5 s), but never longer
    than ``--timeout``, which bounds every wait of a command."""
    ct = DEFAULT_CONNECT_TIMEOUT if args.connect_timeout is None else args.connect_timeout
    return min(float(ct), float(args.timeout))


def _client(args: argparse.Namespace) -> Client:
    after = _positionals_after_address(args)
    host, port = parse_address(args.address, after)
    extra = getattr(args, "extra", None)
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    cfg = ClientConfig(
        connect_timeout=connect_timeout(args), metadata=_metadata(getattr(args, "header", None))
    )
    return connect(host, port, config=cfg, transport=flags_transport(transport_kwargs(args)))


async def _connected(client: Client, address: str) -> None:
    try:
        await client.connect()
    except (asyncio.TimeoutError, TimeoutError):
        raise CliError(
            Status.UNAVAILABLE, f"no answer from {address} (wrong address, or transport flags?)"
        ) from None
    except (ConnectionError, OSError) as e:
        raise CliError(Status.UNAVAILABLE, f"cannot connect to {address}: {e}") from None


def _metadata(headers: Sequence[str] | None) -> dict[str, Any]:
    md: dict[str, Any] = {}
    for h in headers or ():
        k, sep, v = h.partition("=")
        if not sep or not k:
            raise UsageError(f"-H {h!r}: expected key=value")
        md[k.strip()] = v
    return md


# ---------------------------------------------------------------------------- documents
class _Catalog:
    """Interface documents by service name, from reflection and/or ``--idl`` files."""

    def __init__(self, client: Client | None, files: Sequence[str], timeout: float | None) -> None:
        from kcprpc.idl.schema import load_document

        self.client = client
        self.timeout = timeout
        self.docs: dict[str, dict[str, Any]] = {}
        for f in files:
            d = load_document(f)
            self.docs[d["name"]] = d
        self._listed: list[str] | None = None

    def _reflection(self) -> Any:
        from kcprpc.reflection import ReflectionService

        assert self.client is not None
        return self.client.stub(ReflectionService, timeout=self.timeout)

    async def services(self) -> list[str]:
        if self._listed is None:
            names = set(self.docs)
            if self.client is not None:
                try:
                    r = await self._reflection().ListServices()
                    names.update(s.name for s in r.services)
                except RpcError as e:
                    if e.status is not Status.UNIMPLEMENTED or not self.docs:
                        raise _no_reflection(e) from None
            self._listed = sorted(names)
        return self._listed

    async def document(self, service: str) -> dict[str, Any]:
        doc = self.docs.get(service)
        if doc is None:
            if self.client is None:
                raise CliError(Status.NOT_FOUND, f"no document for {service!r}")
            from kcprpc.idl.schema import loads_document

            try:
                r = await self._reflection().GetDocument({"service": service})
            except RpcError as e:
                raise _no_reflection(e) from None
            doc = loads_document(r.document, f"{service} (from the server)")
            self.docs[service] = doc
        return doc

    async def resolve(self, target: str) -> tuple[dict[str, Any], str | None]:
        """``Service``, ``Service.member`` or ``Service/member`` -> (document, member or None)."""
        if "/" in target:
            svc, _, member = target.partition("/")
            return await self.document(svc), member or None
        names = await self.services()
        if target in names:
            return await self.document(target), None
        for svc in sorted(names, key=len, reverse=True):  # the longest service name that prefixes it
            if target.startswith(svc + "."):
                return await self.document(svc), target[len(svc) + 1 :]
        raise CliError(Status.NOT_FOUND, f"no service matches {target!r} (services: {', '.join(names)})")


def _no_reflection(e: RpcError) -> CliError:
    if e.status is Status.UNIMPLEMENTED:
        return CliError(
            Status.UNIMPLEMENTED, "the server has reflection off; pass its document with --idl FILE"
        )
    return CliError(e.status, e.message, e.details)


def dynamic_spec(doc: dict[str, Any], method: str) -> MethodSpec:
    """A :class:`MethodSpec` for a method known only from its document (payloads stay plain JSON values)."""
    m = doc["methods"].get(method)
    if m is None:
        raise CliError(
            Status.NOT_FOUND,
            f"{doc['name']} has no method {method!r} (methods: {', '.join(sorted(doc['methods']))})",
        )
    spec = raw_method(m["wire_name"], m["kind"], m["delivery"])
    spec.has_request = m["request"] != {"type": "null"}
    return spec


def request_validator(doc: dict[str, Any], schema: dict[str, Any], what: str) -> Callable[[Any], None]:
    """A function that raises :class:`CliError` (INVALID_ARGUMENT) when a value does not match ``schema``."""
    import jsonschema  # type: ignore[import-untyped]

    full = {**schema, "$defs": doc.get("$defs", {})}
    validator = jsonschema.Draft202012Validator(full)

    def check(value: Any) -> None:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            lines = []
            for err in errors[:10]:
                where = "/".join(str(p) for p in err.absolute_path) or "(request)"
                lines.append(f"{where}: {err.message}")
            raise CliError(
                Status.INVALID_ARGUMENT, f"request does not match {what}:\n  " + "\n  ".join(lines)
            )

    return check


def _accept_any(value: Any) -> None:
    """The validator of ``--no-validate``."""


def _jsonable(value: Any) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception:
        return to_jsonable_python(value, bytes_mode="base64")


def _dump(value: Any, pretty: bool) -> str:
    return json.dumps(_jsonable(value), indent=2 if pretty else None, ensure_ascii=False)


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CliError(Status.INVALID_ARGUMENT, f"{what} is not valid JSON: {e}") from None


def _read_data(data: str) -> str:
    if data.startswith("@"):
        name = data[1:]
        if name == "-":
            return sys.stdin.read()
        try:
            return Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"-d {data}: cannot read: {e}") from None
    return data


# ---------------------------------------------------------------------------- text rendering
def type_name(schema: Any) -> str:
    """A short human name for a schema (``JoinRequest``, ``list[int]``, ``str | None`` ...)."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_name(s) for s in schema[key])
    if "enum" in schema:
        return "enum(" + ", ".join(json.dumps(v) for v in schema["enum"]) + ")"
    if "const" in schema:
        return f"const({json.dumps(schema['const'])})"
    t = schema.get("type")
    if t == "array":
        return f"list[{type_name(schema.get('items', {}))}]"
    if t == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"dict[str, {type_name(schema['additionalProperties'])}]"
    names = {
        "string": "str",
        "integer": "int",
        "number": "float",
        "boolean": "bool",
        "null": "None",
        "object": "object",
    }
    if t == "string" and schema.get("format") == "binary":
        return "bytes"
    return names.get(str(t), str(t))


def _arg(schema: Any, stream: bool) -> str:
    if schema == {"type": "null"}:
        return "stream" if stream else ""
    return ("stream " if stream else "") + type_name(schema)


def describe_text(doc: dict[str, Any]) -> str:
    """A readable summary of a service document."""
    out = [f"service {doc['name']}  (package {doc['package'] or '-'}, protocol {doc['protocol_version']})"]
    if doc.get("description"):
        out.extend("  # " + line for line in doc["description"].splitlines())
    for name, m in sorted(doc["methods"].items()):
        out.append("  " + _method_line(name, m))
    for name, e in sorted(doc.get("events", {}).items()):
        out.append(f"  event {name}: {type_name(e['schema'])}  [{e['delivery']}]")
    for name, t in sorted(doc.get("topics", {}).items()):
        out.append(f"  topic {name}: {', '.join(t['events'])}")
    return "\n".join(out) + "\n"


def _method_line(name: str, m: dict[str, Any]) -> str:
    kind = m["kind"]
    req = _arg(m["request"], kind in ("client_stream", "bidi"))
    resp = _arg(m["response"], kind in ("server_stream", "bidi"))
    ret = "" if kind == "notify" else f" returns ({resp or 'None'})"
    return f"rpc {name}({req}){ret}  [{kind}, {m['delivery']}]"


def _referenced_defs(doc: dict[str, Any], roots: Sequence[Any]) -> dict[str, Any]:
    defs = doc.get("$defs", {})
    found: dict[str, Any] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name in defs and name not in found:
                    found[name] = defs[name]
                    stack.append(defs[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return dict(sorted(found.items()))


# ---------------------------------------------------------------------------- commands
async def _with_client(args: argparse.Namespace, body: Callable[[Client, _Catalog], Any]) -> int:
    client = _client(args)
    catalog = _Catalog(client, getattr(args, "idl", None) or (), args.timeout)  # bad --idl files fail first
    await _connected(client, args.address)
    try:
        return int(await body(client, catalog))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2.0)


async def cmd_list(args: argparse.Namespace) -> int:
    """``kcprpc list HOST:PORT [SERVICE]``: services, or one service's methods."""

    async def body(client: Client, cat: _Catalog) -> int:
        if args.service:
            doc, _ = await cat.resolve(args.service)
            for name in sorted(doc["methods"]):
                print(f"{doc['name']}.{name}")
        else:
            for name in await cat.services():
                print(name)
        return 0

    return await _with_client(args, body)


async def cmd_describe(args: argparse.Namespace) -> int:
    """``kcprpc describe HOST:PORT SERVICE[.METHOD|.MESSAGE]``."""

    async def body(client: Client, cat: _Catalog) -> int:
        targets = [args.target] if args.target else await cat.services()
        for target in targets:
            doc, member = await cat.resolve(target)
            if member is None:
                if args.json:
                    from kcprpc.idl.schema import dumps

                    sys.stdout.write(dumps(doc))
                else:
                    sys.stdout.write(describe_text(doc))
                continue
            m = doc["methods"].get(member)
            if m is not None:
                info = {
                    "method": m,
                    "$defs": _referenced_defs(doc, [m["request"], m["response"]]),
                }
                if not args.json:
                    print(f"{doc['name']}.{member}:  {_method_line(member, m)}")
                print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
                continue
            for section in ("$defs", "events"):
                if member in doc.get(section, {}):
                    node = doc[section][member]
                    info = {"schema": node, "$defs": _referenced_defs(doc, [node])}
                    if not args.json:
                        print(f"{doc['name']}.{member}:  {'message' if section == '$defs' else 'event'}")
                    print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
                    break
            else:
                raise CliError(Status.NOT_FOUND, f"{doc['name']} has no method, message or event {member!r}")
        return 0

    return await _with_client(args, body)


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            yield line


async def cmd_call(args: argparse.Namespace) -> int:
    """``kcprpc call HOST:PORT SERVICE.METHOD [JSON]``."""

    async def body(client: Client, cat: _Catalog) -> int:
        doc, member = await cat.resolve(args.method)
        if member is None:
            raise CliError(Status.INVALID_ARGUMENT, f"{args.method!r} names a service; call SERVICE.METHOD")
        spec = dynamic_spec(doc, member)
        m = doc["methods"][member]
        check = _accept_any if args.no_validate else request_validator(doc, m["request"], spec.wire_name)
        if args.request is not None and args.data is not None:
            raise UsageError("give the request either as an argument or with -d, not both")
        text = (
            args.request
            if args.request is not None
            else (_read_data(args.data) if args.data is not None else None)
        )
        md = _metadata(args.header)

        def fn(request: Any) -> Any:
            return client.invoke(spec, request, timeout=args.timeout, metadata=md or None)

        stream_in = spec.kind in (MethodKind.CLIENT_STREAM, MethodKind.BIDI)
        if stream_in:
            bad: list[CliError] = []

            async def requests() -> AsyncIterator[Any]:
                lines: AsyncIterator[str]
                if text is not None:

                    async def given() -> AsyncIterator[str]:
                        for ln in text.splitlines():
                            if ln.strip():
                                yield ln

                    lines = given()
                else:
                    lines = _stdin_lines()
                n = 0
                async for ln in lines:
                    n += 1
                    try:
                        value = _parse_json(ln, f"request line {n}")
                        check(value)
                    except CliError as e:
                        bad.append(e)
                        raise
                    yield value

            try:
                if spec.kind is MethodKind.CLIENT_STREAM:
                    print(_dump(await fn(requests()), True))
                else:
                    async with fn(requests()) as call:
                        async for item in call:
                            print(_dump(item, False), flush=True)
            except RpcError:
                if bad:
                    raise bad[0] from None
                raise
            return 0
        if text is None:
            value: Any = None if not spec.has_request else {}
        else:
            value = _parse_json(text, "the request")
        if spec.has_request or value is not None:
            check(value)
        if spec.kind is MethodKind.NOTIFY:
            fn(value)
            await asyncio.sleep(0)  # let the datagram leave
            return 0
        if spec.kind is MethodKind.SERVER_STREAM:
            async with fn(value) as call:
                async for item in call:
                    print(_dump(item, False), flush=True)
            return 0
        print(_dump(await fn(value), True))
        return 0

    return await _with_client(args, body)


async def cmd_watch(args: argparse.Namespace) -> int:
    """``kcprpc watch HOST:PORT TOPIC``: pushed events as JSON lines."""

    async def body(client: Client, cat: _Catalog) -> int:
        q: asyncio.Queue[RawEvent] = asyncio.Queue()
        client.on_raw_event(q.put_nowait)
        await asyncio.wait_for(client.subscribe(args.topic), args.timeout)
        # on stderr, so stdout stays one JSON event per line; scripts may wait for this line
        print(f"subscribed to {args.topic}", file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        end = None if args.duration is None else loop.time() + args.duration
        n = 0
        while args.count is None or n < args.count:
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                break
            try:
                ev = await asyncio.wait_for(q.get(), left)
            except asyncio.TimeoutError:
                break
            if ev.topic != args.topic:
                continue
            line = {"event": ev.name, "topic": ev.topic, "seq": ev.seq, "epoch": ev.epoch, "data": ev.payload}
            print(_dump(line, False), flush=True)
            n += 1
        return 0

    return await _with_client(args, body)


async def cmd_ping(args: argparse.Namespace) -> int:
    """``kcprpc ping HOST:PORT``: health-check round trips and the heartbeat RTT."""

    async def body(client: Client, cat: _Catalog) -> int:
        status = "?"
        for i in range(args.count):
            t0 = time.perf_counter()
            status = await asyncio.wait_for(client.health(), args.timeout)
            ms = (time.perf_counter() - t0) * 1000
            hb = client.rtt_ms
            hb_text = f" heartbeat_rtt={hb:.3f} ms" if hb is not None else ""
            print(f"{args.address} seq={i} {status} time={ms:.3f} ms{hb_text}", flush=True)
            if i + 1 < args.count:
                await asyncio.sleep(args.every)
        if status != "SERVING":
            raise CliError(Status.UNAVAILABLE, f"server is {status}")
        return 0

    return await _with_client(args, body)


async def cmd_stats(args: argparse.Namespace) -> int:
    """``kcprpc stats HOST:PORT``: the connection's transport counters and the server's counters."""

    async def body(client: Client, cat: _Catalog) -> int:
        st = await asyncio.wait_for(client.stats(), args.timeout)
        print(json.dumps(_jsonable(st), indent=2, sort_keys=True))
        return 0

    return await _with_client(args, body)


# ---------------------------------------------------------------------------- idl commands
def cmd_idl_export(args: argparse.Namespace) -> int:
    """``kcprpc idl export``."""
    from kcprpc.idl.export import export_service
    from kcprpc.idl.registry import examples_importable, import_attr, render_all
    from kcprpc.idl.schema import DocumentError, dumps

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
    texts = []
    for target in args.classes:
        for cls in export_targets(target, import_attr(target)):
            try:
                texts.append(dumps(export_service(cls)))
            except (UsageError, DocumentError):
                raise
            except Exception as e:  # pydantic cannot describe a type of the class
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UsageError(f"cannot export {cls.__module__}.{cls.__qualname__} ({target}): {first}") from None
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


def export_targets(target: str, obj: Any) -> list[type]:
    """The service classes ``idl export TARGET`` names: a class; a service instance; or what
    ``kcprpc serve`` takes (a :class:`~kcprpc.Server` — its own services, not the built-in ones
    every server adds —, a list of services, or a factory of either)."""
    from kcprpc.server import Server

    if callable(obj) and not isinstance(obj, (type, Server)):
        try:
            obj = obj()
        except TypeError as e:
            raise UsageError(f"{target} is a function that needs arguments ({e}); name a service class") from None
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


# ---------------------------------------------------------------------------- parser
def _client_parser(sub: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext, description=helptext)
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds per call, and at most this long to connect (default 10)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=None,
        help=f"seconds to connect (default {DEFAULT_CONNECT_TIMEOUT:g}; capped by --timeout)",
    )
    p.add_argument(
        "--idl", action="append", metavar="DOC", help="use this document instead of reflection (repeatable)"
    )
    add_transport_args(p)
    return p


ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "list": cmd_list,
    "describe": cmd_describe,
    "call": cmd_call,
    "watch": cmd_watch,
    "ping": cmd_ping,
    "stats": cmd_stats,
}


def add_commands(sub: Any) -> None:
    """Register ``list``, ``describe``, ``call``, ``watch``, ``ping``, ``stats`` and ``idl`` on an
    ``argparse`` sub-parsers object. Each sets ``func`` (see :func:`run_command`)."""
    p = _client_parser(sub, "list", "list a server's services, or one service's methods")
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p = _client_parser(sub, "describe", "describe a service, method, message or event")
    p.add_argument("target", nargs="?", metavar="SERVICE[.METHOD|.MESSAGE]")
    p.add_argument("--json", action="store_true", help="print the document (or schema) as JSON only")
    p = _client_parser(sub, "call", "call a method with a JSON request; print the response as JSON")
    p.add_argument("method", metavar="SERVICE.METHOD")
    p.add_argument(
        "request", nargs="?", metavar="JSON", help="the request (streaming methods: JSON lines on stdin)"
    )
    p.add_argument("-d", "--data", help="the request; @FILE reads a file, @- stdin (streams: JSON lines)")
    p.add_argument("-H", "--header", action="append", metavar="KEY=VALUE", help="call metadata (repeatable)")
    p.add_argument("--no-validate", action="store_true", help="send without checking the JSON Schema")
    p = _client_parser(sub, "watch", "print events pushed on a topic as JSON lines")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("-n", "--count", type=positive_int, default=None, help="exit after COUNT events")
    p.add_argument("--duration", type=positive_float, default=None, help="exit after this many seconds")
    p = _client_parser(sub, "ping", "health-check a server; print round trips and the heartbeat RTT")
    p.add_argument("-c", "--count", type=positive_int, default=3)
    p.add_argument(
        "-i", "--every", dest="every", type=nonnegative_float, default=0.2, help="seconds between pings"
    )
    _client_parser(sub, "stats", "print the transport counters of a connection and the server's counters")
    for name, fn in ASYNC_COMMANDS.items():
        # surplus positionals (e.g. the older `ping HOST PORT`) land here and get a clear message
        sub.choices[name].add_argument("extra", nargs="*", help=argparse.SUPPRESS)
        sub.choices[name].set_defaults(func=fn, is_async=True)

    k = sub.add_parser(
        "keygen", help="a new X25519 key pair for secure mode (serve --static-key, --server-key)"
    )
    k.add_argument("-o", "--output", default=None, help="write the private key to this file (mode 600)")
    k.set_defaults(func=cmd_keygen, is_async=False)

    idl = sub.add_parser("idl", help="interface documents: export, check, gen-python, validate")
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
    v = isub.add_parser("validate", help="check documents against the format")
    v.add_argument("docs", nargs="+")
    v.set_defaults(func=cmd_idl_validate, is_async=False)


def _report(status: Status, message: str, details: Any = None) -> int:
    print(f"{status.name}: {message}", file=sys.stderr)
    if details is not None:
        with contextlib.suppress(Exception):
            print(json.dumps(_jsonable(details), indent=2, ensure_ascii=False), file=sys.stderr)
    return exit_code(status)


def run_command(args: argparse.Namespace) -> int:
    """Run a command registered by :func:`add_commands`; never lets a traceback out for expected failures."""
    from kcprpc.idl.schema import DocumentError

    try:
        if not getattr(args, "is_async", False):
            return int(args.func(args))
        return _run_async(args.func(args))
    except CliError as e:
        return _report(e.status, e.message, e.details)
    except RpcError as e:
        return _report(e.status, e.message or e.status.name, e.details)
    except DocumentError as e:
        print(f"kcprpc: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"kcprpc: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (asyncio.TimeoutError, TimeoutError):
        return _report(Status.DEADLINE_EXCEEDED, "timed out")
    except (ConnectionError, OSError) as e:
        return _report(Status.UNAVAILABLE, str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still one line, and the way to see the traceback
        if os.environ.get("KCPRPC_TRACEBACK"):
            raise
        print(
            f"kcprpc: internal error: {type(e).__name__}: {e} "
            "(a bug: KCPRPC_TRACEBACK=1 shows the traceback for a report)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def run_loop(coro: Any) -> int:
    """Run ``coro`` to completion on uvloop (asyncio's loop when uvloop is missing); its int result."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


def _run_async(coro: Any) -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return int(await task)
        except asyncio.CancelledError:
            return 130

    return run_loop(main())
