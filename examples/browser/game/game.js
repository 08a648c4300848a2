// The game example's room view in a browser (examples/game): it joins a match, follows the
// match's synced state (snapshots and deltas, unreliable, acknowledged by the view), draws the
// players on a canvas, and streams its own position as unreliable inputs with a sequence number
// (the state's extra says which one the match applied last).
//
// ?room=room0 ?name=web     the match and the player's name
// ?x=..&y=..                where to go (default: stay); a click on the canvas sets it too
// ?transport=websocket|webtransport   force a transport
import { connectView, kcprpc, params, publishView, run, setState, show } from "../common.js";

/** The world is 100 x 100 (examples/game/service.py WORLD); the canvas draws it 4 px per unit. */
export const WORLD = 100;
export const SCALE = 4;
/** Player colours: PALETTE[player_id % PALETTE.length] (the tests look for these pixels). */
export const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
export const BACKGROUND = "#101820";
export const RADIUS = 8;

const { S } = kcprpc;
/** examples/game/service.py's Player and MatchState (fields in declaration order). */
const Player = S.model({ name: S.str(), x: S.quantized(0.01), y: S.quantized(0.01), away: S.bool() });
const MatchState = S.model({ tick: S.int(), server_time: S.float(), players: S.map("str", Player) });

const room = params.get("room") || "room0";
const name = params.get("name") || "web";

const view = {
  state: "loading",
  /** The transport of the current connection: "websocket" or "webtransport". */
  transport: null,
  /** The connection (link.drop() cuts it: the client reconnects and resumes). */
  link: null,
  /** The join reply: {player_id, x, y, tick_hz, state}. */
  joined: null,
  tick: 0,
  statesApplied: 0,
  inputsSent: 0,
  /** The last input the match applied (the state's extra), -1: none yet. */
  acked: -1,
  /** The players as the synced state has them: key -> {name, x, y, away}. */
  players: {},
  /** Where the player goes; null: stays. */
  target: null,
  moves: 0,
  error: null,
  client: null,
  disconnects: 0,
  reconnects: 0,
};
publishView("gameView", view);

const canvas = document.getElementById("room");
const ctx = canvas.getContext("2d");

/** The colour of player `key` (its id as a string). */
export function colour(key) {
  return PALETTE[Number(key) % PALETTE.length];
}

function draw() {
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#1f2d3a";
  ctx.lineWidth = 1;
  for (let i = 10; i < WORLD; i += 10) {
    ctx.beginPath();
    ctx.moveTo(i * SCALE + 0.5, 0);
    ctx.lineTo(i * SCALE + 0.5, canvas.height);
    ctx.moveTo(0, i * SCALE + 0.5);
    ctx.lineTo(canvas.width, i * SCALE + 0.5);
    ctx.stroke();
  }
  const mine = view.joined ? String(view.joined.player_id) : null;
  for (const [key, p] of Object.entries(view.players)) {
    const cx = p.x * SCALE;
    const cy = p.y * SCALE;
    ctx.globalAlpha = p.away ? 0.4 : 1;
    ctx.fillStyle = colour(key);
    ctx.beginPath();
    ctx.arc(cx, cy, RADIUS, 0, 2 * Math.PI);
    ctx.fill();
    if (key === mine) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(cx, cy, RADIUS + 3, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#d0d8e0";
    ctx.font = "10px monospace";
    ctx.textAlign = "center";
    ctx.fillText(p.name, cx, cy + RADIUS + 14);
  }
}

function sync(state) {
  view.players = {};
  for (const [k, p] of state.players) view.players[k] = { name: p.name, x: p.x, y: p.y, away: p.away };
  view.tick = state.tick;
  show("tick", state.tick);
  show("players", state.players.size);
  draw();
}

async function play() {
  const client = await connectView(view);
  // attached before the join: the first snapshot may come before the reply
  const states = kcprpc.clientState(client, MatchState, `state:${room}`);
  states.onState((s) => {
    view.statesApplied++;
    if (typeof states.extra === "number") view.acked = Math.max(view.acked, states.extra);
    show("states", view.statesApplied);
    show("acked", view.acked);
    sync(s);
  });
  const me = await client.unary("game.v1.Game/join", { room, name });
  view.joined = me;
  show("player", `${me.player_id} (${name}) at ${me.x.toFixed(2)}, ${me.y.toFixed(2)}`);
  const x = params.get("x");
  const y = params.get("y");
  if (x !== null && y !== null) view.target = { x: Number(x), y: Number(y) };
  setState(view, "connected");
  if (states.state) sync(states.state);
  // the input: the position, once per tick (unreliable, newest wins), while there is a target
  let seq = 0;
  setInterval(() => {
    if (!view.target || !client.connected) return;
    seq++;
    client.notify("game.v1.Game/position", { seq, x: view.target.x, y: view.target.y });
    view.inputsSent = seq;
    show("sent", seq);
  }, 1000 / me.tick_hz);
}

canvas.addEventListener("click", (ev) => {
  const r = canvas.getBoundingClientRect();
  view.target = { x: ((ev.clientX - r.left) / r.width) * WORLD, y: ((ev.clientY - r.top) / r.height) * WORLD };
});

/** A reliable step (the `move` call), for a keyboard player and for the tests. */
async function step(dx, dy) {
  const r = await view.client.unary("game.v1.Game/move", { dx, dy });
  view.moves++;
  view.target = { x: r.x, y: r.y };
  show("move", `${r.x.toFixed(2)}, ${r.y.toFixed(2)}`);
  return r;
}
view.step = step;
addEventListener("keydown", (ev) => {
  const d = { ArrowLeft: [-2, 0], ArrowRight: [2, 0], ArrowUp: [0, -2], ArrowDown: [0, 2] }[ev.key];
  if (d && view.joined) step(d[0], d[1]).catch(() => undefined);
});

show("room-name", room);
draw();
await run(view, play);
