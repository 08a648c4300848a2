/**
 * The game example's Node bot (examples/game-bot.ts) against the real game server
 * (`python -m examples.game --serve`, secure mode, 127.0.0.1): two bots in one match for a bounded
 * number of ticks; each joins, sees its own player move in the synced state, has its inputs
 * acknowledged through the state's extra, sees the other, greets it and reads its greeting. One
 * bot through `python -m kcp.relay` at 10 % loss each way. Then the bot's command line once.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { runBot } from "../examples/game-bot.js";
import { startPython, type PythonServer } from "./helpers/python.js";

let server: PythonServer;
let port = 0;

before(async () => {
  server = await startPython(["-m", "examples.game", "--serve", "--port", "0"]);
  const m = /kcp:\/\/127\.0\.0\.1:(\d+)/.exec(server.firstLine);
  assert.ok(m, server.firstLine);
  port = Number(m[1]);
});
after(async () => {
  await server.stop();
});

test("two bots play a match: they move in the synced state, their inputs are acknowledged, they see each other and chat", async () => {
  const [a, b] = await Promise.all([
    runBot({ host: "127.0.0.1", port, room: "ts-room", name: "bot-a", ticks: 40, seed: 1, expectChatFrom: ["bot-b"], settleMs: 8000 }),
    runBot({ host: "127.0.0.1", port, room: "ts-room", name: "bot-b", ticks: 40, seed: 2, expectChatFrom: ["bot-a"], settleMs: 8000 }),
  ]);
  for (const [me, other] of [[a, b], [b, a]] as const) {
    assert.ok(me.statesApplied >= 20, `states applied: ${me.statesApplied}`);
    assert.ok(me.stats.snapshots >= 1 && me.stats.malformed === 0 && me.stats.invalid === 0 && me.stats.schema_mismatch === 0);
    assert.equal(me.positionsSent, 40);
    assert.ok(me.positionsAcked >= 30, `inputs acknowledged up to ${me.positionsAcked}`);
    assert.equal(me.moves, 4);
    assert.ok(me.track.length >= 10, "its own player changed in the state");
    const [x0, y0] = me.track[0]!;
    const moved = me.track.some(([x, y]) => Math.hypot(x - x0, y - y0) > 2);
    assert.ok(moved, `moved: ${JSON.stringify(me.track.slice(0, 3))} ... ${JSON.stringify(me.track.slice(-3))}`);
    assert.equal(me.others[String(other.playerId)], other === a ? "bot-a" : "bot-b", "saw the other bot");
    const mine = me === a ? "bot-a" : "bot-b";
    const theirs = me === a ? "bot-b" : "bot-a";
    assert.ok(me.chat.includes(`${mine}: hi from ${mine}`), me.chat.join(" | "));
    assert.ok(me.chat.some((l) => l.startsWith(`${theirs}: `)), `a line from ${theirs}: ${me.chat.join(" | ")}`);
  }
});

test("through python -m kcp.relay at 10 % loss each way: the bot still plays and sees itself move", async () => {
  const relay = await startPython(["-m", "kcp.relay", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${port}`, "--loss", "10", "--seed", "11"]);
  try {
    const m = /^relay 127\.0\.0\.1:(\d+) ->/.exec(relay.firstLine);
    assert.ok(m, relay.firstLine);
    const r = await runBot({ host: "127.0.0.1", port: Number(m[1]), room: "lossy", name: "bot-l", ticks: 40, seed: 3 });
    assert.ok(r.statesApplied >= 15, `states applied: ${r.statesApplied}`);
    assert.ok(r.positionsAcked >= 20, `inputs acknowledged up to ${r.positionsAcked}`);
    assert.equal(r.stats.malformed + r.stats.invalid, 0);
    const [x0, y0] = r.track[0]!;
    assert.ok(r.track.some(([x, y]) => Math.hypot(x - x0, y - y0) > 2), "moved in the state");
  } finally {
    await relay.stop();
  }
});

test("the bot's command line: node dist/examples/game-bot.js --host --port --key", async () => {
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../examples/game-bot.js");
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [script, "--host", "127.0.0.1", "--port", String(port), "--key", "game example passphrase", "--ticks", "20", "--name", "cli"], { timeout: 30000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  assert.match(out, /^player \d+: \d+ states \(match tick \d+\), 20 inputs sent, last acknowledged (1\d|20), 2 moves$/m);
  assert.match(out, /^moved \(\d+\.\d\d, \d+\.\d\d\) -> \(\d+\.\d\d, \d+\.\d\d\) in \d+ state changes$/m);
  assert.match(out, /chat: cli: hi from cli/);
});
