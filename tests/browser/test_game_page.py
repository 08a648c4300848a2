"""The game example's browser room view (examples/browser/game) in a real headless Chromium
against a real server (``python -m examples.game --serve --web ... [--wt ...]``), over WebSocket
and over WebTransport: the page joins a match (a unary call), streams its position as unreliable
inputs that the match acknowledges through the synced state (unreliable deltas), takes a reliable
step, survives a cut connection with its seat kept, and draws the players where the server has
them: a Python player in the same match, over KCP, reads the match's state, and the page's canvas
pixels at those positions must have the players' colours."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kcprpc
from examples.game.service import KEY, GameService, JoinRequest, MatchState, PositionUpdate
from kcprpc.state import StateView, client_state
from tests.browser import png
from tests.browser.chromium import Chromium, Page
from tests.browser.example_server import TRANSPORTS, example_page

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
"""The page's player colours (examples/browser/game/game.js): PALETTE[player_id % 8]."""
BACKGROUND = "#101820"
SCALE = 4  # canvas pixels per world unit
ROOM = "arena"


class StateWatch:
    """Waits on a Python player's view of the match: each state it applies wakes the waiters."""

    def __init__(self, states: StateView[MatchState]) -> None:
        self.states = states
        self._changed = asyncio.Event()
        states.on_state(lambda _: self._changed.set())

    async def until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait (bounded) until ``check()`` is true, looking again at each state applied."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not check():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, end - loop.time()))
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None


async def canvas_image(page: Page, path: Path) -> tuple[png.Image, tuple[int, int]]:
    """A screenshot (also written to ``path``) and the canvas's top-left corner in it."""
    x, y = await page.evaluate(
        "(() => { const r = document.getElementById('room').getBoundingClientRect();"
        " return [Math.round(r.left) + 1, Math.round(r.top) + 1]; })()"  # inside its 1 px border
    )
    return png.decode(await page.screenshot(path)), (x, y)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_game_page_joins_inputs_draws_the_server_state_and_keeps_its_seat(
    browser: Chromium, transport: str, tmp_path: Path
) -> None:
    async with (
        example_page(browser, "examples.game", transport, (1000, 700)) as (server, page),
        kcprpc.connect(*server.kcp, key=KEY) as bot,
    ):
        # a second player, over KCP, whose view of the match is the server's state
        game = bot.stub(GameService, timeout=5.0)
        states = client_state(bot, MatchState, f"state:{ROOM}")
        until = StateWatch(states).until
        me = await game.join(JoinRequest(room=ROOM, name="bot"))
        bot_key = str(me.player_id)
        seq = 0

        async def hold_position(x: float, y: float) -> None:
            nonlocal seq
            while True:  # an input per tick, as a client sends it
                seq += 1
                await game.position(PositionUpdate(seq=seq, x=x, y=y))
                await asyncio.sleep(0.05)

        holder = asyncio.ensure_future(hold_position(55.0, 55.0))
        try:
            await page.goto(f"{server.http}/game/?transport={transport}&room={ROOM}&name=web&x=30&y=40")
            await page.wait_for("gameView.joined !== null || gameView.error", timeout=20)
            joined: dict[str, Any] = await page.evaluate(
                "({error: gameView.error, joined: gameView.joined, transport: gameView.transport})"
            )
            assert joined["error"] is None, joined
            assert joined["transport"] == transport
            web_key = str(joined["joined"]["player_id"])  # the join call's reply
            assert web_key != bot_key

            def at(key: str, x: float, y: float) -> bool:
                s = states.state
                p = s.players.get(key) if s is not None else None
                return p is not None and math.isclose(p.x, x) and math.isclose(p.y, y)

            # the page's inputs (unreliable notifies) reached the match: the server state has
            # it where it wants to be, and the state's extra acknowledged one of its inputs
            await until(
                lambda: at(web_key, 30.0, 40.0) and at(bot_key, 55.0, 55.0), 20, "both players placed"
            )
            await page.wait_for(
                f"gameView.acked >= 1 && gameView.players[{web_key!r}]?.x === 30"
                f" && gameView.players[{bot_key!r}]?.x === 55",
                timeout=10,
            )
            counters = await page.evaluate(
                "({sent: gameView.inputsSent, acked: gameView.acked, applied: gameView.statesApplied,"
                " tick: gameView.tick, shown: document.getElementById('acked').textContent})"
            )  # one look: the counters move on at every state
            assert 1 <= counters["acked"] <= counters["sent"]
            assert counters["applied"] >= 1 and counters["tick"] >= 1
            assert counters["shown"] == str(counters["acked"])

            # the canvas: each player of the server's state drawn at its position in its colour
            assert states.state is not None
            truth = {k: (p.x, p.y) for k, p in states.state.players.items()}
            assert set(truth) == {web_key, bot_key}
            await page.wait_for(f"gameView.tick >= {states.state.tick}", timeout=5)
            shot, (left, top) = await canvas_image(page, tmp_path / f"game-{transport}.png")
            for key, (x, y) in truth.items():
                px = shot.pixel(left + round(x * SCALE), top + round(y * SCALE))
                assert png.close(px, png.parse_colour(PALETTE[int(key) % len(PALETTE)])), (key, px)
            # and nothing where no player is (the background between them)
            assert png.close(shot.pixel(left + 4 * 80 + 5, top + 4 * 15 + 5), png.parse_colour(BACKGROUND))

            # a reliable step (game.v1.Game/move): the reply and the state both show it
            step = await page.evaluate("gameView.step(2, 0)")
            assert math.isclose(step["x"], 32.0) and math.isclose(step["y"], 40.0)
            await until(lambda: at(web_key, 32.0, 40.0), 10, "the step in the server's state")

            # a cut connection: the client reconnects and resumes the session, the seat is kept
            # (the same player, never left the match) and new inputs are acknowledged again
            acked = await page.evaluate("gameView.acked")
            await page.evaluate("gameView.drop()")
            await page.wait_for(f"gameView.reconnects >= 1 && gameView.acked > {acked} + 5", timeout=20)
            assert await page.evaluate("gameView.transport") == transport
            assert await page.evaluate("gameView.joined.player_id") == int(web_key)
            await page.evaluate("gameView.target = {x: 40, y: 30}")  # within the bot's view radius (40)
            await until(lambda: at(web_key, 40.0, 30.0), 10, "an input after the reconnect")
            assert states.state is not None and not states.state.players[web_key].away
        finally:
            holder.cancel()
