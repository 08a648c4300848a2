"""Small things a newcomer meets first: status names, declared topics, notify while disconnected,
and what ``kcprpc idl`` says outside a checkout or without the code generator."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import kcprpc
from kcprpc import RpcError, Status
from kcprpc.cli import main
from kcprpc.idl import gen, registry
from kcprpc.push_service import check_topic, topic_matches, topic_pattern
from kcprpc.testing import pair

ROOT = Path(__file__).resolve().parents[2]


def test_status_prints_its_name() -> None:
    e = RpcError(Status.INVALID_ARGUMENT, "bad")
    assert str(e.status) == "INVALID_ARGUMENT" and f"{e.status}" == "INVALID_ARGUMENT"
    assert f"{e.status:d}" == "3" and int(e.status) == 3 and f"{e.status:>18}" == "  INVALID_ARGUMENT"
    assert str(e) == "INVALID_ARGUMENT: bad"


@kcprpc.event("t.msg")
class Msg(BaseModel):
    text: str


class Chan(kcprpc.Service, name="t.Chan", topics={"channel:{channel}": [Msg], "news": [Msg]}):
    async def ping(self) -> None:
        return None


class Plain(kcprpc.Service, name="t.Plain"):
    @kcprpc.rpc.notify
    async def note(self, m: Msg) -> None:
        return None


async def test_only_declared_topics_can_be_subscribed() -> None:
    async with pair([Chan()]) as p:
        await p.client.subscribe("channel:demo")
        await p.client.subscribe("news")
        with pytest.raises(RpcError) as e:
            await p.client.subscribe("channel:{channel}")
        assert e.value.status is Status.INVALID_ARGUMENT and "'channel:demo'" in e.value.message
        for bad in ("chanel:demo", "channel:", "newsroom"):
            with pytest.raises(RpcError) as e:
                await p.client.subscribe(bad)
            assert e.value.status is Status.NOT_FOUND
            assert e.value.message.endswith("(its topics: channel:{channel}, news)")
        assert p.client.topics == {"channel:demo", "news"}


async def test_services_without_declared_topics_take_any_topic() -> None:
    async with pair([Plain()]) as p:
        await p.client.subscribe("anything:at:all")
        assert p.client.topics == {"anything:at:all"}


def test_topic_templates() -> None:
    check_topic("room:7:chat", ["room:{id}:chat"])
    with pytest.raises(RpcError):
        check_topic("room::chat", ["room:{id}:chat"])
    with pytest.raises(RpcError):
        check_topic("room:{id}:chat", ["room:{id}:chat"])
    with pytest.raises(RpcError):
        check_topic("xay", ["x.y"])  # regex characters in a template are literal
    check_topic("x*y", ["x*y"])


@settings(max_examples=400, deadline=None)
@given(
    template=st.lists(st.sampled_from(["a", ":", "ab", "{p}", "{q}", "x.y"]), max_size=6).map("".join),
    topic=st.text(alphabet="a:bx.y{}", max_size=12),
)
def test_a_topic_matches_a_template_as_its_pattern_says_in_linear_time(template: str, topic: str) -> None:
    """The template's regular expression backtracked: ``m:{a}:{b}:{c}`` against 700 colons took a
    second of the server's CPU, in a Subscribe, a History or each topic of a HELLO's restore (an
    audit). The linear matcher answers as the pattern does."""
    assert topic_matches(topic, template) == (topic_pattern(template).fullmatch(topic) is not None)


def test_a_long_topic_is_refused_by_its_length_before_any_matching() -> None:
    templates = ["m:{a}:{b}:{c}"]
    assert not topic_matches("m:" + ":" * 5000 + "{", templates[0])  # (the pattern: minutes)
    with pytest.raises(RpcError) as e:
        check_topic("m:" + ":" * 300, templates, max_length=256)
    assert e.value.status is Status.INVALID_ARGUMENT and "1 to 256 characters" in e.value.message
    with pytest.raises(RpcError) as e:
        check_topic("n:" + "x" * 250, templates, max_length=256)
    assert e.value.status is Status.NOT_FOUND and len(e.value.message) < 200  # the name is cut


async def test_notify_while_disconnected_is_counted_not_raised() -> None:
    async with pair([Plain()]) as p:
        p.client.notify(Plain.note, Msg(text="sent"))
        assert p.client.notifications_dropped == 0
    p.client.notify(Plain.note, Msg(text="after close"))  # the pair closed the client
    assert p.client.notifications_dropped == 1
    with pytest.raises(kcprpc.UsageError, match="not a notify method"):
        p.client.notify(Chan.ping, None)  # type: ignore[arg-type]


def test_gen_python_names_the_requirement_pyproject_has(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'"(datamodel-code-generator[^"]*)"', text)
    assert m is not None
    assert m.group(1) == gen.GENERATOR_REQUIREMENT
    assert gen.generator_requirement() == m.group(1)  # from the installed metadata
    monkeypatch.setitem(sys.modules, "datamodel_code_generator", None)  # not installed
    with pytest.raises(kcprpc.UsageError) as e:
        gen.generate_python({"name": "x", "$defs": {"A": {"type": "object"}}, "methods": {}})
    assert f"pip install '{m.group(1)}'" in str(e.value)


def test_idl_export_all_without_the_examples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # kcprpc installed from a wheel: no checkout next to it, `examples` not importable
    monkeypatch.setattr(registry, "examples_importable", lambda: False)
    assert main(["idl", "export", "--all", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "only the built-in services' documents" in out.err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "kcprpc.Health.json",
        "kcprpc.Push.json",
        "kcprpc.Reflection.json",
        "kcprpc.Rooms.json",
        "schema.json",
    ]
    for name in names:  # the same text as the checked-in documents
        assert (tmp_path / "out" / name).read_text() == (ROOT / "idl" / name).read_text()


def test_idl_export_takes_what_serve_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["idl", "export", "examples.quickstart.service:app", "-o", str(tmp_path / "a.json")]) == 0
    assert (tmp_path / "a.json").read_text() == (ROOT / "idl" / "quickstart.Greeter.json").read_text()
    assert main(["idl", "export", "examples.live.service:make_server", "-o", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "b.json").read_text() == (ROOT / "idl" / "live.v1.Live.json").read_text()
    assert main(["idl", "export", "examples.quickstart.service:app", "examples.game.service:GameService",
                 "-o", str(tmp_path / "dir")]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [
        "game.v1.Game.json",
        "quickstart.Greeter.json",
    ]
