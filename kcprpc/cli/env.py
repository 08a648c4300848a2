"""``KCPRPC_*`` environment variables: every ``kcprpc serve`` option, read from the environment
when the command line does not give it (docs/deploy.md, "Environment variables").

The table is the argument parser itself: option ``--log-level`` (destination ``log_level``) is
``KCPRPC_LOG_LEVEL``, the ``module:app`` argument is ``KCPRPC_APP``, and so on for every option
``serve`` has, the transport flags included; there is no second list. :func:`defer_defaults`
marks a parser's defaults (:class:`NotGiven`) and writes each option's variable into its help;
:func:`apply_env` then fills what the command line left out: from the environment if the
variable is set, else the option's default. So the command line beats the environment, and
both beat the app's own settings (``make_server`` applies only what is not ``None``).

An environment value goes through the option's own parsing (its type and choices): a bad one
raises :class:`~kcprpc.UsageError` naming the variable. A flag without a value
(``store_true``) takes ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``; a
repeatable option (``action=AppendList``, e.g. ``--web-origin``) takes a comma-separated list.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kcprpc.errors import UsageError

__all__ = [
    "ENV_PREFIX",
    "NOT_FROM_ENV",
    "AppendList",
    "NotGiven",
    "apply_env",
    "defer_defaults",
    "env_markdown",
    "env_table",
    "env_var",
]

ENV_PREFIX = "KCPRPC_"
NOT_FROM_ENV = frozenset({"help", "server_key", "token"})
"""Destinations that have no variable: ``--help``, and the client flags ``serve`` refuses
(``--server-key``, ``--token``: a client's environment may set them for its own use)."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class NotGiven:
    """An option the command line did not give: its ``default`` and its parser ``action``."""

    default: Any
    action: argparse.Action


class AppendList(argparse.Action):
    """A repeatable option (``--web-origin A --web-origin B``: ``["A", "B"]``) that works with
    :func:`defer_defaults` (argparse's ``append`` would append to the :class:`NotGiven` default);
    its ``KCPRPC_*`` variable is a comma-separated list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = list(current) if isinstance(current, list) else []
        items.append(values)
        setattr(namespace, self.dest, items)


def env_var(action: argparse.Action) -> str:
    """The variable of an option: ``KCPRPC_`` and its destination in capitals."""
    return ENV_PREFIX + action.dest.upper()


def env_actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The options of ``parser`` that the environment can give (every one but :data:`NOT_FROM_ENV`)."""
    for action in parser._actions:  # argparse has no public list of a parser's actions
        if action.dest not in NOT_FROM_ENV and action.dest != argparse.SUPPRESS:
            yield action


def defer_defaults(parser: argparse.ArgumentParser) -> None:
    """Mark every option of ``parser`` the environment can give: its default becomes a
    :class:`NotGiven` (resolved by :func:`apply_env`), and its help names its variable. Call it
    once every option is added."""
    for action in env_actions(parser):
        if not isinstance(action.default, NotGiven):
            action.default = NotGiven(action.default, action)
            if action.help is not argparse.SUPPRESS:
                action.help = f"{action.help or ''} [env {env_var(action)}]".lstrip()


def _from_env(action: argparse.Action, var: str, raw: str) -> Any:
    """The value of ``raw`` (the variable ``var``) as the option ``action`` parses it."""
    flag = action.option_strings[-1] if action.option_strings else action.dest
    if action.nargs == 0:  # a flag without a value
        word = raw.strip().lower()
        if word not in (*_TRUE, *_FALSE):
            raise UsageError(
                f"{var}={raw!r}: expected one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)} ({flag})"
            )
        return action.const if word in _TRUE else action.default.default
    convert = action.type if callable(action.type) else str
    if isinstance(action, AppendList):
        items = [part.strip() for part in raw.split(",") if part.strip()]
        return [_from_env_one(action, var, raw, convert, item) for item in items]
    return _from_env_one(action, var, raw, convert, raw)


def _from_env_one(action: argparse.Action, var: str, raw: str, convert: Any, text: str) -> Any:
    """One value of the variable ``var`` (``raw``): ``text`` as the option ``action`` parses it."""
    flag = action.option_strings[-1] if action.option_strings else action.dest
    try:
        value = convert(text)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
        reason = str(e) if isinstance(e, argparse.ArgumentTypeError) else f"not a valid {flag} value"
        raise UsageError(f"{var}={raw!r}: {reason} ({flag})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{var}={raw!r}: expected one of {choices} ({flag})")
    return value


def apply_env(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Resolve every :class:`NotGiven` in ``args``: the variable's value if ``environ`` (default:
    ``os.environ``) sets it to something not empty, else the option's default. Idempotent;
    returns ``args``. A bad value raises :class:`~kcprpc.UsageError` naming the variable."""
    env = os.environ if environ is None else environ
    for dest, value in vars(args).items():
        if isinstance(value, NotGiven):
            var = env_var(value.action)
            raw = env.get(var, "")
            setattr(args, dest, _from_env(value.action, var, raw) if raw.strip() else value.default)
    return args


def env_table(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(variable, option, help without the ``[env ...]`` note) of every option of ``parser`` the
    environment can give, in the parser's order: docs/deploy.md's table (a test checks it)."""
    rows = []
    for action in env_actions(parser):
        var = env_var(action)
        flag = action.option_strings[0] if action.option_strings else action.dest
        help = (action.help or "").replace(f" [env {var}]", "").replace(f"[env {var}]", "")
        rows.append((var, flag, help.replace("%%", "%")))
    return rows


def env_markdown(parser: argparse.ArgumentParser) -> str:
    """:func:`env_table` as the Markdown table docs/deploy.md holds (tests/unit/test_ops_config.py
    checks the page against it, and prints it when they differ)."""
    lines = ["| variable | option | what it sets |", "| --- | --- | --- |"]
    for var, flag, help in env_table(parser):
        text = " ".join(help.split()).replace("|", "\\|")
        lines.append(f"| `{var}` | `{flag}` | {text} |")
    return "\n".join(lines) + "\n"
