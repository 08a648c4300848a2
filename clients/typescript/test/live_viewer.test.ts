/**
 * examples/live-viewer.ts (the live example's Node viewer) against the real live server
 * (`python -m examples.live.viewer --serve 0`, secure mode), through `python -m kcp.relay`:
 *
 * 1. the relay is killed (the viewer's link goes dead), messages are published meanwhile, and the
 *    relay comes back on the same port: the viewer reconnects in the same process and resumes;
 * 2. the viewer itself is SIGKILLed mid-stream and started again with its log: it subscribes with
 *    `since` = the saved position and the server replays what it missed.
 *
 * Every message is logged (and printed) exactly once, in order, with offsets 1..N. The Python
 * equivalent is tests/integration/test_live_viewer_restart.py.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startPython, type PythonServer } from "./helpers/python.js";
import { waitFor } from "./support/rpc_python.js";
import { connect } from "../src/rpc/net.js";
import type { Client } from "../src/rpc/client.js";
import { LiveClient } from "../src/generated/live.v1.Live.js";

const KEY = "live example passphrase"; // examples/live/service.py KEY
const TOKEN = "publisher-secret";
const VIEWER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../examples/live-viewer.js");
const TIMEOUT = 20000;

interface Viewer {
  proc: ChildProcess;
  /** stdout lines so far. */
  lines: string[];
  exited: Promise<void>;
}

function startViewer(port: number, log: string): Viewer {
  const proc = spawn(process.execPath, [VIEWER, "--host", "127.0.0.1", "--port", String(port), "--log", log, "--json", "--heartbeat-ms", "100"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let buf = "";
  proc.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  let err = "";
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.once("exit", (code, sig) => {
    if (code !== null && code !== 0) lines.push(JSON.stringify({ exit: code, stderr: err }));
    void sig;
  });
  return { proc, lines, exited };
}

async function kill(v: Viewer): Promise<void> {
  if (v.proc.exitCode === null && v.proc.signalCode === null) v.proc.kill("SIGKILL");
  await v.exited;
}

type Rec = Record<string, unknown>;
const parsed = (v: Viewer): Rec[] => v.lines.map((l) => JSON.parse(l) as Rec);
const subscribed = (v: Viewer): Rec | undefined => parsed(v).find((e) => "since" in e);
const printedChats = (v: Viewer): string[] => parsed(v).filter((e) => e.kind === "chat").map((e) => e.text as string);

function logChats(log: string): Rec[] {
  if (!existsSync(log)) return [];
  const lines = readFileSync(log, "utf8").split("\n").slice(0, -1); // whole lines only
  return lines.map((l) => JSON.parse(l) as Rec).filter((e) => e.kind === "chat");
}

async function startRelay(listen: string, target: number): Promise<{ relay: PythonServer; port: number }> {
  const relay = await startPython(["-m", "kcp.relay", "--listen", listen, "--target", `127.0.0.1:${target}`]);
  const m = /^relay [\d.]+:(\d+) ->/.exec(relay.firstLine);
  assert.ok(m, relay.firstLine);
  return { relay, port: Number(m[1]) };
}

test("the Node live viewer: a dead link and a restart of the viewer lose and repeat nothing", { timeout: 90000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "kcprpc-live-viewer-"));
  const log = path.join(dir, "viewer.jsonl");
  const viewers: Viewer[] = [];
  let server: PythonServer | null = null;
  let relay: PythonServer | null = null;
  let pub: Client | null = null;
  try {
    server = await startPython(["-m", "examples.live.viewer", "--serve", "0"]);
    const m = /kcp:\/\/[\d.]+:(\d+)/.exec(server.firstLine);
    assert.ok(m, server.firstLine);
    const serverPort = Number(m[1]);
    const r = await startRelay("127.0.0.1:0", serverPort);
    relay = r.relay;
    const relayPort = r.port;

    // the publisher: the generated stub, straight to the server, with the publisher's token
    pub = await connect("127.0.0.1", serverPort, { wire: { mode: "secure", passphrase: KEY } });
    const live = new LiveClient(pub);
    let n = 0;
    const chat = async (): Promise<void> => {
      const ack = await live.chat({ channel: "main", user: "host", text: String(n) }, { metadata: { token: TOKEN }, timeoutMs: 5000 });
      n++;
      assert.equal(ack.seq, n);
    };
    // a viewer may not publish: the server's interceptor refuses a call without the token
    await assert.rejects(live.chat({ channel: "main", user: "troll", text: "hi" }), (e: unknown) => (e as { code?: number }).code === 7);

    let v = startViewer(relayPort, log);
    viewers.push(v);
    await waitFor(() => subscribed(v) !== undefined, "the viewer's subscribe line", TIMEOUT);
    const first = subscribed(v) as Rec;
    assert.equal(first.since, null);
    assert.equal(first.recovered, null);

    // live
    for (let i = 0; i < 10; i++) await chat();
    await waitFor(() => printedChats(v).length >= 10, "10 live chats", TIMEOUT);

    // 1. the link dies (the relay is killed); messages go on meanwhile; the relay comes back
    await relay.stop();
    relay = null;
    await waitFor(() => parsed(v).some((e) => "disconnected" in e), "the viewer to see its link dead", TIMEOUT);
    for (let i = 0; i < 10; i++) await chat();
    relay = (await startRelay(`127.0.0.1:${relayPort}`, serverPort)).relay;
    await waitFor(() => parsed(v).some((e) => e.reconnected === true), "the viewer's reconnect", TIMEOUT);
    for (let i = 0; i < 5; i++) await chat();
    await waitFor(() => printedChats(v).length >= 25, "25 chats after the reconnect", TIMEOUT);
    const back = parsed(v).find((e) => e.reconnected === true) as Rec;
    assert.equal(back.resumes, 1, "the secure session was resumed");
    assert.deepEqual(printedChats(v), Array.from({ length: 25 }, (_, i) => String(i)));
    assert.ok(parsed(v).filter((e) => e.kind === "chat").slice(10, 20).every((e) => e.replayed === true), "the missed ones came replayed");

    // 2. the viewer is killed mid-stream; the publisher goes on; it starts again from its log
    let killed = false;
    let restarted = false;
    let resolveRestarted!: () => void;
    const restartedP = new Promise<void>((res) => (resolveRestarted = res));
    const stream = (async (): Promise<void> => {
      for (let i = 0; !killed && i < 400; i++) await chat(); // the viewer is killed in the middle of this
      for (let i = 0; i < 10; i++) await chat(); // while no viewer runs
      await restartedP;
      for (let i = 0; i < 10; i++) await chat(); // live again
    })();
    await waitFor(() => logChats(log).length >= 35, "35 logged chats", TIMEOUT);
    await kill(v);
    killed = true;
    const loggedBeforeKill = logChats(log).length;
    const printedBeforeKill = printedChats(v);
    v = startViewer(relayPort, log);
    viewers.push(v);
    await waitFor(() => subscribed(v) !== undefined, "the restarted viewer's subscribe line", TIMEOUT);
    restarted = true;
    resolveRestarted();
    await stream;
    const again = subscribed(v) as Rec; // printed after the replayed events (they come before the reply)
    assert.ok(Array.isArray(again.since), "it resumed from its saved position");
    assert.equal(again.recovered, true);
    assert.equal(again.missed, 0);
    assert.ok((again.replayed as number) >= 10);
    await waitFor(() => logChats(log).length >= n, `all ${n} chats logged`, TIMEOUT);
    assert.ok(restarted);

    const seen = logChats(log);
    assert.deepEqual(seen.map((e) => e.text), Array.from({ length: n }, (_, i) => String(i)), "each message once, in order");
    assert.deepEqual(seen.map((e) => e.offset), Array.from({ length: n }, (_, i) => i + 1));
    assert.ok(seen.some((e) => e.replayed) && seen[seen.length - 1]?.replayed === false);
    // printed: the first viewer what it logged (but for a line the kill may have cut between the
    // log's write and stdout's), the second one the rest
    const all = Array.from({ length: n }, (_, i) => String(i));
    assert.ok(
      [loggedBeforeKill, loggedBeforeKill - 1].includes(printedBeforeKill.length),
      `printed ${printedBeforeKill.length}, logged ${loggedBeforeKill}`,
    );
    assert.deepEqual(printedBeforeKill, all.slice(0, printedBeforeKill.length));
    await waitFor(() => printedChats(v).length >= n - loggedBeforeKill, "the rest printed", TIMEOUT);
    assert.deepEqual(printedChats(v), all.slice(loggedBeforeKill));
  } finally {
    for (const v of viewers) await kill(v);
    await pub?.close().catch(() => undefined);
    await relay?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
