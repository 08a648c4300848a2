"""Converted at merge: the CLI's :class:`~kcprpc.config.Transport` in the keywords that
``kcprpc.connect(...)`` and ``kcprpc.Server(...)`` take today (``mode``, ``crypt``, ``key``, ``fec``,
``static_private_key`` ... and ``transport_options``).

The CLI builds a Transport from its flags (:func:`kcprpc.cli.flags.build_transport`). Until
``connect()`` and ``Server()`` take ``transport=`` themselves, it is converted here, and only here.
When they do, this module goes: :func:`old_keywords`' callers pass ``transport=`` directly, and
``serve`` reads and sets the app server's transport instead of :func:`app_transport` and
:func:`set_app_transport`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kcp.errors import KCPUsageError
from kcp.secure import SecureConfig
from kcprpc.config import RPC_MUX_CONFIG, CompatWire, IOOptions, SecureWire, SessionConfig, Transport
from kcprpc.errors import UsageError
from kcprpc.server import Server

SESSION_FIELDS = frozenset(f.name for f in dataclasses.fields(SessionConfig))


def _changed(value: Any, default: Any) -> dict[str, Any]:
    return {
        f.name: getattr(value, f.name)
        for f in dataclasses.fields(value)
        if getattr(value, f.name) != getattr(default, f.name)
    }


# converted at merge: pass transport= directly
def old_keywords(transport: Transport, *, server: bool) -> dict[str, Any]:
    """The keyword arguments of ``kcprpc.connect()`` (``server=False``) or ``kcprpc.Server()``
    (``server=True``) that describe ``transport``; ``transport_options`` holds the session fields
    that differ from :class:`SessionConfig`'s defaults (and the mux, socket and secure options
    when not the defaults)."""
    wire = transport.wire
    kw: dict[str, Any] = {"mode": wire.mode, "key": wire.key, "fec": wire.fec if wire.fec != (0, 0) else None}
    if isinstance(wire, CompatWire):
        if wire.crypt is not None and not isinstance(wire.crypt, str):
            raise UsageError("the command line names ciphers (--crypt NAME), not cipher objects")
        kw["crypt"] = wire.crypt
    else:
        kw["static_private_key"] = wire.static_private_key
        if server:
            kw["authorize"] = wire.authorize
        else:
            kw["server_public_key"] = wire.server_public_key
            kw["token"] = wire.token
    options = _changed(transport.session, SessionConfig())
    if isinstance(wire, SecureWire) and wire.config is not None:
        options["secure_options"] = _changed(wire.config, SecureConfig())
    if transport.mux != RPC_MUX_CONFIG:
        options["mux_config"] = transport.mux
    io = transport.io
    if server and io.reuse_port:
        options["reuse_port"] = True
    if not server and io.local_address is not None:
        options["local_addr"] = io.local_address
    options.update({k: v for k, v in (("mmsg", io.mmsg), ("gso", io.gso)) if v is not None})
    kw["transport_options"] = options
    return kw


# converted at merge: read server.transport
def app_transport(server: Server) -> Transport:
    """The transport an app's :class:`~kcprpc.Server` was given (conflicting settings raise
    :class:`~kcprpc.UsageError`). The options a Transport does not describe stay on the server."""
    mode = server.wire_mode  # conflicting settings fail here, with the reason
    opts = server.transport_options
    key = server.key if server.key is not None else opts.get("psk")
    fec = server.fec or (0, 0)
    try:
        session = SessionConfig(**{k: v for k, v in opts.items() if k in SESSION_FIELDS})
        wire: CompatWire | SecureWire
        if mode == "compat":
            wire = CompatWire(server.crypt, key, fec)
        else:
            wire = SecureWire(
                key=key, static_private_key=server.static_private_key, authorize=server.authorize, fec=fec
            )
        io = IOOptions(
            reuse_port=bool(opts.get("reuse_port", False)), mmsg=opts.get("mmsg"), gso=opts.get("gso")
        )
    except KCPUsageError as e:
        raise UsageError(f"the app's transport settings: {e}") from None
    return Transport(wire, session=session, mux=opts.get("mux_config") or RPC_MUX_CONFIG, io=io)


# converted at merge: set server.transport
def set_app_transport(server: Server, transport: Transport) -> None:
    """Give an app's :class:`~kcprpc.Server` ``transport`` (before it starts)."""
    kw = old_keywords(transport, server=True)
    options = kw.pop("transport_options")
    server.mode = kw["mode"]
    server.crypt = kw.get("crypt")
    server.key = kw["key"]
    server.fec = kw["fec"]
    server.static_private_key = kw.get("static_private_key")
    server.authorize = kw.get("authorize")
    kept = {k: v for k, v in server.transport_options.items() if k not in SESSION_FIELDS and k != "psk"}
    server.transport_options = {**kept, **options}
