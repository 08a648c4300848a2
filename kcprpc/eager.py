"""Eager start of a server handler's task: its first step runs at once, inside the task, so that a
handler that never suspends has its reply queued in the loop turn that read its request (no turn
spent waiting for the task's first step).

Python 3.12 has this as ``asyncio.Task(eager_start=True)``; 3.11 does not, so :func:`start_eager`
builds it from asyncio's own pieces (``create_task(context=)``, and the current-task swap a task
makes around each of its steps): the task wraps an :class:`_Eager` coroutine whose first step is the
one already taken. During that first step ``asyncio.current_task()`` is the new task (as in a
normal first step), so ``asyncio.timeout()``, ``current_task().cancel()`` and the like act on the
handler's own task, and the step runs in the task's own copy of the context variables.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eager"]

# the loop's current-task swap: the same calls asyncio's Task makes around each step
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task

_NOTHING: Any = object()


class _Eager(Coroutine[Any, Any, None]):
    """A started coroutine, shaped as a fresh one for ``asyncio.Task``: the task's first ``send``
    gets back what the coroutine yielded in its eager first step (the future it waits on); every
    later ``send`` and ``throw`` goes to the coroutine. A coroutine that already finished ends at
    the task's first step."""

    __slots__ = ("coro", "finished", "first")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.first: Any = _NOTHING  # what the eager step yielded, until the task takes it
        self.finished = False  # the coroutine ended in the eager step

    def step(self) -> bool:
        """The eager first step; True when the coroutine finished in it (an exception it raised
        goes to the task, at the task's first step)."""
        try:
            self.first = self.coro.send(None)
        except StopIteration:
            self.finished = True
            return True
        except BaseException as e:
            self.finished = True
            self.first = _Raise(e)
            return False
        return False

    def send(self, value: Any) -> Any:
        first = self.first
        if first is _NOTHING:
            if self.finished:
                raise StopIteration
            return self.coro.send(value)
        self.first = _NOTHING
        if type(first) is _Raise:
            raise first.exc
        return first

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        first = self.first
        self.first = _NOTHING
        if first is not _NOTHING and isinstance(first, asyncio.Future):
            first.cancel()  # the future the coroutine waited on, which the task never saw
        if self.finished:
            raise typ if val is None else val
        if val is None:
            return self.coro.throw(typ)
        return self.coro.throw(val)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("an eager task's coroutine is not awaited directly")


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def start_eager(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> tuple[asyncio.Task[None], bool]:
    """Make ``coro`` a task and run its first step now; returns the task and whether the coroutine
    already finished (the task then ends at its first scheduled step, with nothing left to run)."""
    eager = _Eager(coro)
    context = contextvars.copy_context()
    task: asyncio.Task[None] = loop.create_task(eager, context=context)
    current = asyncio.current_task(loop)
    if current is not None:
        _leave_task(loop, current)
    _enter_task(loop, task)
    try:
        done = context.run(eager.step)
    finally:
        _leave_task(loop, task)
        if current is not None:
            _enter_task(loop, current)
    return task, done
