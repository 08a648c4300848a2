"""The ``kcprpc`` command's transport flags build a :class:`kcprpc.config.Transport`
(``kcprpc.cli.flags.build_transport``): each flag's effect, flags left out keeping the base (the
app's settings under ``serve``), and conflicting or invalid flags failing with a message that names
them."""

from __future__ import annotations

import argparse
import copy
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

import kcprpc
from kcp.config import IOOptions
from kcprpc.cli import build_parser
from kcprpc.cli.flags import MODES, build_transport
from kcprpc.config import CompatWire, SecureWire, SessionConfig, Transport
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig

KEY_HEX = "11" * 32
PUB_HEX = "22" * 32


def flags(*argv: str) -> argparse.Namespace:
    """The flags as a user types them (after ``kcprpc ping HOST:PORT``)."""
    return build_parser().parse_args(["ping", "127.0.0.1:9000", *argv])


def build(*argv: str, base: Transport | None = None) -> Transport:
    return build_transport(flags(*argv), base)


def fails(match: str, *argv: str, base: Transport | None = None) -> str:
    with pytest.raises(UsageError, match=match) as e:
        build(*argv, base=base)
    return str(e.value)


# ---------------------------------------------------------------------------- no flags
def test_no_flags_is_kcprpc_default_transport() -> None:
    t = build()
    assert t == Transport()
    assert t.mode == "secure" and t.wire == SecureWire() and t.session == SessionConfig()
    assert (t.session.nodelay, t.session.interval, t.session.resend, t.session.nc) == MODES["fast3"]


def test_the_transport_is_frozen_and_the_args_untouched() -> None:
    args = flags("--crypt", "aes", "--key", "k", "--ds", "4", "--ps", "2", "--mode", "fast", "--mtu", "1200")
    before = copy.deepcopy(vars(args))
    t = build_transport(args)
    assert vars(args) == before
    assert build_transport(args) == t  # pure: same flags, same transport
    with pytest.raises(FrozenInstanceError):
        t.wire = SecureWire()  # type: ignore[misc]


# ---------------------------------------------------------------------------- the wire
def test_crypt_selects_compat_with_the_key() -> None:
    t = build("--crypt", "salsa20", "--key", "secret")
    assert t.mode == "compat"
    assert t.wire == CompatWire("salsa20", "secret")


def test_crypt_null_needs_no_key() -> None:
    assert build("--crypt", "null").wire == CompatWire("null")


def test_wire_compat_without_a_cipher() -> None:
    assert build("--wire", "compat").wire == CompatWire()
    assert build("--wire", "compat", "--key", "k").wire == CompatWire(None, "k")


def test_key_alone_is_the_secure_passphrase() -> None:
    assert build("--key", "passphrase").wire == SecureWire(key="passphrase")
    assert build("--wire", "secure", "--key", "passphrase").wire == SecureWire(key="passphrase")


def test_secure_identity_flags(tmp_path: Path) -> None:
    wire = build("--static-key", KEY_HEX, "--server-key", PUB_HEX, "--token", "tok").wire
    assert isinstance(wire, SecureWire)
    assert wire.static_private_key == bytes.fromhex(KEY_HEX)
    assert wire.server_public_key == bytes.fromhex(PUB_HEX)
    assert wire.token == b"tok"
    keyfile = tmp_path / "server.key"
    keyfile.write_text(KEY_HEX + "\n")
    wire = build("--static-key", f"@{keyfile}").wire
    assert isinstance(wire, SecureWire) and wire.static_private_key == bytes.fromhex(KEY_HEX)


def test_bad_keys_name_their_flag(tmp_path: Path) -> None:
    fails("^--static-key: expected 64 hex digits", "--static-key", "zz")
    fails("^--server-key: expected 64 hex digits", "--server-key", "ab" * 31)
    fails(r"^--static-key: cannot read .*nokey", "--static-key", f"@{tmp_path / 'nokey'}")
    fails("^--key: the secure passphrase must not be empty", "--key", "")


def test_crypt_with_wire_secure_conflicts() -> None:
    msg = fails("--crypt aes", "--crypt", "aes", "--key", "k", "--wire", "secure")
    assert "--wire secure" in msg


def test_crypt_needs_a_key() -> None:
    assert fails("needs --key", "--crypt", "aes") == "--crypt aes needs --key"


def test_unknown_cipher_names_the_flag_and_the_known_ones() -> None:
    msg = fails("^--crypt rot13: unknown cipher", "--crypt", "rot13", "--key", "k")
    assert "known: " in msg and "salsa20" in msg


@pytest.mark.parametrize(
    ("argv", "named", "selector", "fix"),
    [
        (["--crypt", "aes", "--key", "k", "--static-key", KEY_HEX], "--static-key needs", "--crypt aes",
         "drop it, or drop --crypt (secure mode always encrypts)"),
        (["--wire", "compat", "--server-key", PUB_HEX], "--server-key needs", "--wire compat",
         "drop it, or --wire secure"),
        (["--crypt", "null", "--token", "t", "--server-key", PUB_HEX], "--server-key and --token need",
         "--crypt null", "drop them, or drop --crypt (secure mode always encrypts)"),
    ],
)  # fmt: skip
def test_secure_flags_in_compat_mode_conflict(argv: list[str], named: str, selector: str, fix: str) -> None:
    msg = fails("selects compat mode", *argv)
    assert msg.startswith(named) and f"but {selector} selects compat mode" in msg and msg.endswith(fix)


# ---------------------------------------------------------------------------- FEC
def test_fec_shards() -> None:
    assert build("--datashard", "10", "--parityshard", "3").wire.fec == (10, 3)
    assert build("--ds", "4", "--ps", "2", "--crypt", "aes", "--key", "k").wire.fec == (4, 2)
    assert build("--ds", "0", "--ps", "0").wire.fec == (0, 0)


@pytest.mark.parametrize(
    "argv",
    [["--datashard", "10"], ["--parityshard", "3"], ["--ds", "-1", "--ps", "-1"], ["--ds", "0", "--ps", "2"]],
)
def test_fec_shards_go_together(argv: list[str]) -> None:
    assert (
        fails("--parityshard", *argv)
        == "--datashard and --parityshard must both be positive (FEC on) or both 0"
    )


def test_fec_group_too_large_names_the_flags() -> None:
    msg = fails("^--datashard 200 --parityshard 100: ", "--ds", "200", "--ps", "100")
    assert "at most 256" in msg


# ---------------------------------------------------------------------------- the session
@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_presets(mode: str) -> None:
    s = build("--mode", mode).session
    assert (s.nodelay, s.interval, s.resend, s.nc) == MODES[mode]
    assert (s.mtu, s.snd_wnd, s.rcv_wnd) == (1400, 512, 512)  # the rest stays


def test_mode_manual_takes_each_knob() -> None:
    s = build("--mode", "manual", "--nodelay", "0", "--interval", "40", "--resend", "0", "--nc", "0").session
    assert (s.nodelay, s.interval, s.resend, s.nc) == (0, 40, 0, 0)
    s = build("--mode", "manual", "--interval", "25").session  # the others keep the default (fast3)
    assert (s.nodelay, s.interval, s.resend, s.nc) == (1, 25, 2, 1)
    assert build("--nc", "0").session.nc == 0  # without --mode: a knob over the default profile


@pytest.mark.parametrize("knob", ["--nodelay", "--interval", "--resend", "--nc"])
def test_a_knob_with_a_preset_conflicts(knob: str) -> None:
    msg = fails(f"^{knob} goes with --mode manual", "--mode", "fast2", knob, "20")
    assert "--mode fast2 sets nodelay, interval, resend, nc" in msg


def test_sizes() -> None:
    s = build("--mtu", "1200", "--sndwnd", "256", "--rcvwnd", "512").session
    assert (s.mtu, s.snd_wnd, s.rcv_wnd) == (1200, 256, 512)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mtu", "10"], "--mtu 10: mtu must be in 64..9000"),
        (["--mtu", "9001"], "--mtu 9001: mtu must be in 64..9000"),
        (["--sndwnd", "0"], "--sndwnd 0: windows must be >= 1"),
        (["--rcvwnd", "-5"], "--rcvwnd -5: windows must be >= 1"),
        (["--mode", "manual", "--interval", "5"], "--interval 5: interval must be in 10..5000 ms"),
    ],
)
def test_bad_sizes_name_their_flag(argv: list[str], message: str) -> None:
    assert fails("must be", *argv) == message


def test_loss_and_congestion_flags() -> None:
    s = build("--lead-copies", "auto", "--loss-recovery", "adaptive", "--congestion", "bbr").session
    assert (s.lead_copies, s.loss_recovery, s.congestion) == ("auto", "adaptive", "bbr")
    assert build("--lead-copies", "2").session.lead_copies == 2
    assert build("--loss-recovery", "ikcp").session.loss_recovery == "ikcp"
    assert fails("lead-copies", "--lead-copies", "many") == (
        "--lead-copies many: expected a number of copies or auto"
    )
    assert fails("lead_copies", "--lead-copies", "9").startswith("--lead-copies 9: lead_copies must be")


def test_session_flags_apply_in_both_wire_modes() -> None:
    for wire in (["--key", "k"], ["--crypt", "aes", "--key", "k"]):
        s = build(*wire, "--mode", "normal", "--mtu", "1300").session
        assert (s.mtu, s.interval) == (1300, 40)


# ---------------------------------------------------------------------------- over a base (serve)
APP_COMPAT = Transport(
    CompatWire("aes", "app key", (10, 3)),
    session=SessionConfig(mtu=1300, snd_wnd=64),
    mux=MuxConfig(version=1),
    io=IOOptions(reuse_port=True),
)


def test_flags_left_out_keep_the_base() -> None:
    assert build(base=APP_COMPAT) == APP_COMPAT
    t = build("--key", "other", "--rcvwnd", "512", base=APP_COMPAT)
    assert t.wire == CompatWire("aes", "other", (10, 3))
    assert (t.session.mtu, t.session.snd_wnd, t.session.rcv_wnd) == (1300, 64, 512)
    assert (t.mux, t.io) == (APP_COMPAT.mux, APP_COMPAT.io)  # no flags for them: always the base's
    t = build("--crypt", "salsa20", "--key", "k", "--ds", "0", "--ps", "0", base=APP_COMPAT)
    assert t.wire == CompatWire("salsa20", "k")


def test_wire_secure_over_a_compat_base_keeps_key_and_fec() -> None:
    t = build("--wire", "secure", base=APP_COMPAT)
    assert t.wire == SecureWire(key="app key", fec=(10, 3))
    assert t.session == APP_COMPAT.session


def test_crypt_over_a_secure_base() -> None:
    base = Transport(SecureWire(key="k", fec=(4, 2)))
    assert build("--crypt", "aes", "--key", "k2", base=base).wire == CompatWire("aes", "k2", (4, 2))
    t = build("--static-key", KEY_HEX, base=base)  # secure flags over a secure base: the rest is kept
    assert t.wire == SecureWire(key="k", static_private_key=bytes.fromhex(KEY_HEX), fec=(4, 2))


def accept_all(token: bytes, client_key: bytes | None, address: object) -> str | None:
    return None


@pytest.mark.parametrize(
    ("wire", "kept"),
    [
        (SecureWire(static_private_key=bytes(range(32))), "static_private_key needs"),
        (SecureWire(key="k", authorize=accept_all), "authorize needs"),
    ],
)
def test_compat_over_a_base_with_a_secure_identity_conflicts(wire: SecureWire, kept: str) -> None:
    msg = fails("selects compat mode", "--crypt", "aes", "--key", "k", base=Transport(wire))
    assert msg.startswith("--crypt aes selects compat mode") and f"the app's {kept} secure mode" in msg
    fails("^--wire compat selects compat mode", "--wire", "compat", base=Transport(wire))


def test_secure_flags_over_a_compat_base_conflict() -> None:
    msg = fails("selects compat mode", "--token", "t", base=APP_COMPAT)
    assert msg.startswith("--token needs secure mode, but the app's transport selects compat mode")
    assert msg.endswith("drop it, or --wire secure")


# ---------------------------------------------------------------- what connect/Server get
def test_connect_and_server_take_the_built_transport() -> None:
    for argv in (
        ["--key", "k", "--server-key", PUB_HEX, "--token", "t"],
        ["--crypt", "aes", "--key", "k", "--ds", "4", "--ps", "2"],
    ):
        client = kcprpc.connect("127.0.0.1", 9, transport=build(*argv))
        assert isinstance(
            client, kcprpc.Client
        )  # a transport connect() cannot run would raise UsageError here
    server = kcprpc.Server([], "127.0.0.1", 0, transport=build("--static-key", KEY_HEX, "--key", "k"))
    assert server.transport.wire == SecureWire(key="k", static_private_key=bytes.fromhex(KEY_HEX))
