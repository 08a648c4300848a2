"""The transport flags, named as kcptun names them, and the :class:`~kcprpc.config.Transport` they
describe (:func:`build_transport`).

``--wire secure|compat`` picks the wire mode (secure by default, compat implied by ``--crypt``;
kcptun's ``--mode`` is the KCP profile, as there). ``--crypt``, ``--key``, ``--datashard``,
``--parityshard``, ``--mode``, ``--mtu``, ``--sndwnd``, ``--rcvwnd``, ``--nodelay``, ``--interval``,
``--resend``, ``--nc``: in compat mode they must match the server's; in secure mode FEC, MTU and
windows are negotiated (docs/idl.md). ``--static-key``, ``--server-key`` and ``--token`` are secure
mode's. Every client command and ``kcprpc serve`` take them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from kcp.config import CompatWire, SecureWire, SessionConfig, Wire, check_fec
from kcp.errors import KCPUsageError
from kcprpc.config import Transport
from kcprpc.errors import UsageError

# kcptun's --mode presets: (nodelay, interval, resend, nc)
MODES: dict[str, tuple[int, int, int, int]] = {
    "normal": (0, 40, 2, 1),
    "fast": (0, 30, 2, 1),
    "fast2": (1, 20, 2, 1),
    "fast3": (1, 10, 2, 1),
}


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
    g.add_argument(
        "--loss-recovery",
        default=None,
        choices=["adaptive", "ikcp"],
        help="small flights' retransmission (default adaptive: spaced copies; docs/tuning.md)",
    )
    g.add_argument(
        "--lead-copies",
        default=None,
        metavar="N|auto",
        help="spaced copies sent ahead of any loss (default 0; auto: picked from the loss seen)",
    )
    g.add_argument(
        "--congestion", default=None, choices=["ikcp", "bbr"], help="the sender's congestion control"
    )


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


PROFILE_FLAGS = ("nodelay", "interval", "resend", "nc")
"""The ikcp ``nodelay()`` knobs: set together by ``--mode``, one by one with ``--mode manual``."""
SIZE_FLAGS = (("mtu", "mtu"), ("sndwnd", "snd_wnd"), ("rcvwnd", "rcv_wnd"))
"""(flag, :class:`~kcp.config.SessionConfig` field) of the sizes."""
CHOICE_FLAGS = (("loss_recovery", "loss_recovery"), ("congestion", "congestion"))
"""(argument, :class:`~kcp.config.SessionConfig` field) of the modes (``--loss-recovery``, ``--congestion``)."""
SECURE_FLAGS = (("static_key", "--static-key"), ("server_key", "--server-key"), ("token", "--token"))
"""(argument, flag) of the secure-mode-only flags."""


def build_transport(args: argparse.Namespace, base: Transport | None = None) -> Transport:
    """The :class:`~kcprpc.config.Transport` the transport flags in ``args`` describe.

    Flags left out keep ``base``'s settings (default: ``Transport()``, kcprpc's defaults: a secure
    wire, kcptun's ``fast3`` profile); ``kcprpc serve`` passes the app's transport, so the command
    line overrides only what it names. Pure: reads ``args`` (and a ``--static-key @FILE``), returns a
    new frozen Transport. Conflicting or invalid flags raise :class:`~kcprpc.UsageError` naming them.
    """
    base = base or Transport()
    return Transport(
        _wire(args, base.wire),
        session=_session(args, base.session),
        mux=base.mux,
        io=base.io,
    )


def _session(args: argparse.Namespace, cfg: SessionConfig) -> SessionConfig:
    """``--mode`` (kcptun's profile), its manual knobs, ``--mtu``, ``--sndwnd``, ``--rcvwnd``,
    ``--loss-recovery``, ``--congestion`` and ``--lead-copies`` over ``cfg``."""
    mode = getattr(args, "mode", None)
    if mode in MODES:
        profile: dict[str, Any] = dict(zip(PROFILE_FLAGS, MODES[mode], strict=True))
        cfg = dataclasses.replace(cfg, **profile)
    for flag in PROFILE_FLAGS:
        v = getattr(args, flag, None)
        if v is not None:
            if mode not in (None, "manual"):
                raise UsageError(
                    f"--{flag} goes with --mode manual (--mode {mode} sets {', '.join(PROFILE_FLAGS)})"
                )
            cfg = _session_field(cfg, f"--{flag}", flag, v)
    for flag, name in (*SIZE_FLAGS, *CHOICE_FLAGS):
        v = getattr(args, flag, None)
        if v is not None:
            cfg = _session_field(cfg, f"--{flag.replace('_', '-')}", name, v)
    lead = getattr(args, "lead_copies", None)
    if lead is not None:
        if lead != "auto" and not lead.isdigit():
            raise UsageError(f"--lead-copies {lead}: expected a number of copies or auto")
        cfg = _session_field(cfg, "--lead-copies", "lead_copies", lead if lead == "auto" else int(lead))
    return cfg


def _session_field(cfg: SessionConfig, flag: str, name: str, value: int | str) -> SessionConfig:
    try:
        fields: dict[str, Any] = {name: value}
        return dataclasses.replace(cfg, **fields)
    except KCPUsageError as e:
        raise UsageError(f"{flag} {value}: {e}") from None


def _fec(args: argparse.Namespace, base: tuple[int, int]) -> tuple[int, int]:
    """``--datashard``/``--parityshard``: both positive (FEC on) or both 0; neither: ``base``."""
    ds, ps = getattr(args, "datashard", None), getattr(args, "parityshard", None)
    if ds is None and ps is None:
        return base
    ds, ps = ds or 0, ps or 0
    if ds < 0 or ps < 0 or (ds > 0) != (ps > 0):
        raise UsageError("--datashard and --parityshard must both be positive (FEC on) or both 0")
    try:
        return check_fec((ds, ps))
    except KCPUsageError as e:
        raise UsageError(f"--datashard {ds} --parityshard {ps}: {e}") from None


def _wire(args: argparse.Namespace, base: Wire) -> Wire:
    """``--wire``, ``--crypt``, ``--key``, FEC and the secure-mode flags over ``base``: the wire mode
    is ``--wire``'s, else compat when ``--crypt`` is given, else ``base``'s."""
    choice = getattr(args, "wire", None)
    crypt = getattr(args, "crypt", None)
    key = getattr(args, "key", None)
    if crypt is not None and choice == "secure":
        raise UsageError(f"--crypt {crypt} is a kcp-go cipher (compat mode); --wire secure always encrypts")
    if crypt not in (None, "null") and key is None:
        raise UsageError(f"--crypt {crypt} needs --key")
    fec = _fec(args, base.fec)
    if key is None:
        key = base.key
    mode = choice or ("compat" if crypt is not None else base.mode)
    if mode == "compat":
        if choice:
            why, fix = f"--wire {choice}", "--wire secure"
        elif crypt is not None:
            why, fix = f"--crypt {crypt}", "drop --crypt (secure mode always encrypts)"
        else:
            why, fix = "the app's transport", "--wire secure"
        given = [flag for name, flag in SECURE_FLAGS if getattr(args, name, None) is not None]
        if given:
            one = len(given) == 1
            raise UsageError(
                f"{' and '.join(given)} {'needs' if one else 'need'} secure mode, but {why} selects compat "
                f"mode (kcp-go's packet format, which has no handshake): drop {'it' if one else 'them'}, "
                f"or {fix}"
            )
        if isinstance(base, SecureWire):
            kept = [n for n in ("static_private_key", "authorize") if getattr(base, n) is not None]
            if kept:
                raise UsageError(
                    f"{why} selects compat mode (kcp-go's packet format, which has no handshake), but the "
                    f"app's {' and '.join(kept)} {'needs' if len(kept) == 1 else 'need'} secure mode"
                )
        if crypt is None and isinstance(base, CompatWire):
            crypt = base.crypt
        try:
            return CompatWire(crypt, key, fec)
        except KCPUsageError as e:
            raise UsageError(f"--crypt {crypt}: {e}") from None
    if isinstance(key, str) and not key:
        raise UsageError("--key: the secure passphrase must not be empty")
    old = base if isinstance(base, SecureWire) else SecureWire()
    static, server_key, token = (getattr(args, name, None) for name, _ in SECURE_FLAGS)
    try:
        return SecureWire(
            key=key,
            static_private_key=old.static_private_key
            if static is None
            else parse_key(static, "--static-key"),
            server_public_key=old.server_public_key
            if server_key is None
            else parse_key(server_key, "--server-key"),
            token=old.token if token is None else token,
            authorize=old.authorize,
            fec=fec,
            config=old.config,
        )
    except KCPUsageError as e:
        raise UsageError(str(e)) from None
