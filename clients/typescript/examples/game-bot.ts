/**
 * A Node bot that plays the game example (examples/game, docs/game.md): it joins a match with the
 * generated stub (src/generated/game.v1.Game.ts), follows the match's state with the state client
 * (snapshots and deltas against what it acknowledged), streams its position as unreliable inputs
 * with sequence numbers (the state's extra says which one the match applied last), steps now and
 * then, says hello on the chat lane and greets each player it meets in the state, reads the chat,
 * and watches its own player move in the synced state.
 *
 *     python -m examples.game --serve --port 9100
 *     node dist/examples/game-bot.js --host 127.0.0.1 --port 9100 [--key ...] [--room room0] [--name tsbot] [--ticks 100]
 */
import { pathToFileURL } from "node:url";
import { connect } from "../src/rpc/net.js";
import { GameClient, type ChatLine } from "../src/generated/game.v1.Game.js";
import { S, type Infer } from "../src/state/schema.js";
import { clientState } from "../src/state/view.js";
import type { StateViewStats } from "../src/state/view.js";

/** examples/game/service.py's Player (field order as declared there; x and y Quantized(0.01)). */
export const Player = S.model({ name: S.str(), x: S.quantized(0.01), y: S.quantized(0.01), away: S.bool() });
/** examples/game/service.py's MatchState: players keyed by str(player_id). */
export const MatchState = S.model({ tick: S.int(), server_time: S.float(), players: S.map("str", Player) });
/** The match's state as the bot sees it. */
export type MatchState = Infer<typeof MatchState>;

/** The example's passphrase (examples/game/service.py KEY). */
export const GAME_KEY = "game example passphrase";

/** What {@link runBot} needs. */
export interface BotOptions {
  /** The server's host. */
  host: string;
  /** The server's UDP port. */
  port: number;
  /** The secure mode passphrase (default the example's). */
  key?: string;
  /** The match to join (default "room0"). */
  room?: string;
  /** The player's name (default "tsbot"). */
  name?: string;
  /** How many inputs to send, one per tick (default 100). */
  ticks?: number;
  /** Inputs per second (default the match's tick rate). */
  hz?: number;
  /** Seed of the bot's walk. */
  seed?: number;
  /** After the inputs, wait (bounded by `settleMs`) for a chat line from each of these players (names). */
  expectChatFrom?: string[];
  /** How long to wait at the end for the last input to show in the state (ms, default 3000). */
  settleMs?: number;
}

/** What the bot saw. */
export interface BotReport {
  /** Its player id. */
  playerId: number;
  /** States applied (snapshots and deltas). */
  statesApplied: number;
  /** The match's last tick seen. */
  lastTick: number;
  /** Position inputs sent. */
  positionsSent: number;
  /** The last input the match acknowledged (the state's extra; -1: none yet). */
  positionsAcked: number;
  /** Reliable steps taken (`move`). */
  moves: number;
  /** Its own player's positions as the synced state showed them (each change). */
  track: Array<[number, number]>;
  /** The other players it saw (key → name). */
  others: Record<string, string>;
  /** Chat lines read ("name: text"). */
  chat: string[];
  /** The state view's counters. */
  stats: StateViewStats;
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

const clamp = (v: number): number => Math.min(100, Math.max(0, v));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Play one match for `ticks` inputs, then leave; resolves with what the bot saw. */
export async function runBot(opts: BotOptions): Promise<BotReport> {
  const { host, port, key = GAME_KEY, room = "room0", name = "tsbot", ticks = 100, seed = 1, settleMs = 3000 } = opts;
  const client = await connect(host, port, { wire: { mode: "secure", passphrase: key }, defaultTimeoutMs: 5000 });
  const game = new GameClient(client);
  const rand = rng(seed);
  const report: BotReport = { playerId: 0, statesApplied: 0, lastTick: 0, positionsSent: 0, positionsAcked: -1, moves: 0, track: [], others: {}, chat: [], stats: {} as StateViewStats };
  try {
    // attached before the join: the first snapshot may come before the reply
    const view = clientState(client, MatchState, `state:${room}`);
    let mine = "";
    view.onState((s) => {
      report.statesApplied++;
      report.lastTick = s.tick;
      if (typeof view.extra === "number") report.positionsAcked = Math.max(report.positionsAcked, view.extra);
    });
    const greeted = new Set<string>();
    const watch = (k: string, p: Infer<typeof Player>): void => {
      if (k === mine) report.track.push([p.x, p.y]);
      else if (mine) meet(k, p.name);
    };
    // a player met for the first time is greeted on the chat lane (it reads it: it is in the room)
    const meet = (k: string, who: string): void => {
      report.others[k] = who;
      if (greeted.has(k)) return;
      greeted.add(k);
      game.say({ text: `hi ${who}` }).catch(() => undefined);
    };
    view.onAdd("players", watch);
    view.onChange("players", watch);
    game.on("game.chat", (line: ChatLine) => report.chat.push(`${line.name}: ${line.text}`));

    const me = await game.join({ room, name });
    report.playerId = me.player_id;
    mine = String(me.player_id);
    const seen = view.state?.players.get(mine);
    if (seen) report.track.push([seen.x, seen.y]);
    for (const [k, p] of view.state?.players ?? []) if (k !== mine) meet(k, p.name);
    await game.say({ text: `hi from ${name}` });

    const period = 1000 / (opts.hz ?? me.tick_hz);
    let x = me.x;
    let y = me.y;
    let angle = rand() * 2 * Math.PI;
    for (let seq = 1; seq <= ticks; seq++) {
      angle += (rand() - 0.5) * 0.6;
      x = clamp(x + Math.cos(angle));
      y = clamp(y + Math.sin(angle));
      game.position({ seq, x, y }); // unreliable, newest wins
      report.positionsSent = seq;
      if (seq % 10 === 0) {
        const r = await game.move({ dx: (rand() - 0.5) * 2, dy: (rand() - 0.5) * 2 });
        x = r.x;
        y = r.y;
        report.moves++;
      }
      await sleep(period); // the bot's pace: one input per tick
    }
    // the last inputs: wait (bounded) until the match acknowledged one of the last ticks' and others' chat is in
    const want = opts.expectChatFrom ?? [];
    const end = Date.now() + settleMs;
    while (Date.now() < end) {
      const chatIn = want.every((n) => report.chat.some((l) => l.startsWith(`${n}: `)));
      if (report.positionsAcked >= ticks - 5 && chatIn) break;
      await sleep(20);
    }
    await game.say({ text: `bye from ${name}` });
    await game.leave();
    report.stats = { ...view.stats };
    return report;
  } finally {
    await client.close().catch(() => undefined);
  }
}

function args(argv: string[]): BotOptions {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--") || i + 1 >= argv.length) throw new Error(`usage: game-bot --host H --port N [--key K] [--room R] [--name N] [--ticks T] (at ${a})`);
    o[a.slice(2)] = argv[++i]!;
  }
  const port = Number(o["port"]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error("--port N: the game server's UDP port");
  return {
    host: o["host"] ?? "127.0.0.1",
    port,
    ...(o["key"] ? { key: o["key"] } : {}),
    ...(o["room"] ? { room: o["room"] } : {}),
    ...(o["name"] ? { name: o["name"] } : {}),
    ...(o["ticks"] ? { ticks: Number(o["ticks"]) } : {}),
    ...(o["seed"] ? { seed: Number(o["seed"]) } : {}),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const r = await runBot(args(process.argv.slice(2)));
    const first = r.track[0];
    const last = r.track[r.track.length - 1];
    console.log(`player ${r.playerId}: ${r.statesApplied} states (match tick ${r.lastTick}), ${r.positionsSent} inputs sent, last acknowledged ${r.positionsAcked}, ${r.moves} moves`);
    console.log(`moved ${first ? `(${first[0].toFixed(2)}, ${first[1].toFixed(2)})` : "?"} -> ${last ? `(${last[0].toFixed(2)}, ${last[1].toFixed(2)})` : "?"} in ${r.track.length} state changes`);
    console.log(`saw ${Object.keys(r.others).length} other players; chat: ${r.chat.join(" | ") || "-"}`);
    console.log(`state view: ${JSON.stringify(r.stats)}`);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  }
}
