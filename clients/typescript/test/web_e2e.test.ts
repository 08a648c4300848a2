/**
 * The client over a real WebSocket (Node's global WebSocket: run with --experimental-websocket on
 * Node 20, as npm test and tests/clients do) against the real Python server's WebSocket listener
 * (tests/clients/ts_app.py --ws: `kcprpc.web.listen_websocket`), on 127.0.0.1, killed at the end:
 * connectWeb with discovery, unary and server-stream calls, pushes to the session, a room and a
 * topic, keyed and unreliable events (DATAGRAM messages), a notify, a refused token, and a link
 * dropped under the client (a TCP proxy in this test) that the client resumes.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { connectWeb, discover } from "../src/web/connect.js";
import type { Client, RawEvent } from "../src/rpc/client.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { waitFor } from "./support/rpc_python.js";
import { spawnPython, type Spawned } from "./helpers/python.js";

const state: { server: Spawned<number> | null; ws: number } = { server: null, ws: 0 };
const clients: Client[] = [];

before(async () => {
  assert.equal(typeof globalThis.WebSocket, "function", "a global WebSocket: run node with --experimental-websocket (Node 20)");
  const wsPort = (out: string): number | null => {
    const m = /^WS (\d+)$/m.exec(out);
    return m ? Number(m[1]) : null;
  };
  state.server = await spawnPython(["tests/clients/ts_app.py", "--ws", "127.0.0.1:0"], wsPort, 30000, "WebSocket port");
  state.ws = state.server.value;
});

after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await state.server?.stop();
});

async function open(url: string, opts: Parameters<typeof connectWeb>[1] = {}): Promise<Client> {
  const c = await connectWeb(url, { connectTimeoutMs: 5000, ...opts });
  clients.push(c);
  return c;
}

const wsUrl = (): string => `ws://127.0.0.1:${state.ws}/kcprpc`;

test("discovery: /kcprpc.json names the WebSocket endpoint; connectWeb(http base) connects over it", async () => {
  const ends = await discover(`http://127.0.0.1:${state.ws}/`);
  assert.equal(ends.websocket, wsUrl());
  assert.ok(!ends.webtransport, "no WebTransport listener here");
  const c = await open(`http://127.0.0.1:${state.ws}/`);
  assert.equal(c.remoteAddress, wsUrl());
  const r = await c.unary<unknown, { got: unknown }>("ts.App/echo", "hi");
  assert.equal(r.got, "hi");
});

test("unary and server-stream calls, metadata, an error status, a notify", async () => {
  const c = await open(wsUrl(), { metadata: { who: "ws" } });
  assert.ok(c.sessionId, "the server's session id");
  const r = await c.unary<unknown, { got: unknown; md: Record<string, unknown> }>("ts.App/echo", { a: [1, 2, "x"], b: new Uint8Array([1, 2, 3]) }, { metadata: { k: "v" } });
  assert.deepEqual(r.got, { a: [1, 2, "x"], b: new Uint8Array([1, 2, 3]) });
  assert.equal(r.md.k, "v");
  const hello = await c.call<{ name: string }, { message: string }>("quickstart.Greeter", "hello", { name: "ann" });
  assert.equal(hello.message, "Hello, ann!");
  // a stream long enough for many STREAM messages (64 KiB each at most)
  const got: number[] = [];
  for await (const n of c.serverStream<number, number>("ts.App/count", 3000)) got.push(n);
  assert.equal(got.length, 3000);
  assert.equal(got[2999], 3000);
  // a large request: the smux bytes span several STREAM messages
  const big = "x".repeat(300_000);
  assert.equal((await c.unary<string, { got: string }>("ts.App/echo", big)).got.length, big.length);
  await assert.rejects(c.unary("ts.App/fail", { code: Status.NOT_FOUND, message: "nope" }), (e: unknown) => e instanceof RpcError && e.code === Status.NOT_FOUND && e.statusMessage === "nope");
  // notify over a DATAGRAM message: ask until it was seen (unreliable by contract)
  for (let i = 0; i < 20; i++) {
    c.notify("ts.App/note", `n${i}`);
    const seen = await c.unary<null, string[]>("ts.App/notes_seen", null);
    if (seen.some((s) => s.startsWith("n"))) return;
  }
  assert.fail("no notify arrived in 20 tries");
});

test("pushes: to the session, a room, a topic; keyed and unreliable (DATAGRAM) events", async () => {
  const c = await open(wsUrl());
  const events: RawEvent[] = [];
  c.onRawEvent((e) => events.push(e));
  await c.unary("ts.App/join", "r1");
  await waitFor(() => c.rooms.has("r1"), "the ROOMS frame");
  await c.subscribe("news");
  await c.unary("ts.App/push", { room: "r1", topic: "news" });
  const arrived = (): boolean =>
    ["ts.Pos", "ts.Blip"].every((n) => events.some((e) => e.name === n)) &&
    events.filter((e) => e.name === "ts.Chat").length === 2 &&
    events.some((e) => e.name === "ts.Note" && e.latestKey === null) &&
    events.some((e) => e.name === "ts.Note" && e.latestKey === "k1");
  await waitFor(arrived, "every pushed event");
  const chats = events.filter((e) => e.name === "ts.Chat");
  assert.deepEqual(chats.map((e) => e.key).sort(), ["room:r1", "topic:news"]);
  assert.ok(chats.every((e) => Array.isArray(e.position)), "room and topic messages carry positions");
  const blip = events.find((e) => e.name === "ts.Blip");
  assert.ok(blip?.unreliable, "an unreliable event came as a datagram");
  const pos = events.filter((e) => e.name === "ts.Pos");
  assert.ok(pos.every((e) => e.unreliable && e.latestKey === "42"), JSON.stringify(pos.map((e) => [e.unreliable, e.latestKey])));
  assert.equal(events.find((e) => e.name === "ts.Note" && e.latestKey === "k1")?.unreliable, false);
  const stats = c.transportStats();
  assert.ok((stats.datagrams_received ?? 0) >= 1, `datagrams counted: ${JSON.stringify(stats)}`);
});

test("a refused token is an RpcError UNAUTHENTICATED with the hook's message", async () => {
  await assert.rejects(connectWeb(wsUrl(), { token: "refuse", connectTimeoutMs: 5000 }), (e: unknown) => {
    assert.ok(e instanceof RpcError, String(e));
    assert.equal(Status[e.code], "UNAUTHENTICATED");
    assert.match(e.statusMessage, /bad web token/);
    return true;
  });
  // a good token is let in
  const c = await open(wsUrl(), { token: "good" });
  assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "ok")).got, "ok");
});

/** A TCP proxy to the server's WebSocket port whose connections can all be cut at once. */
async function tcpProxy(target: number): Promise<{ port: number; drop(): void; close(): Promise<void> }> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    const u = net.connect(target, "127.0.0.1");
    socks.add(c);
    socks.add(u);
    c.pipe(u);
    u.pipe(c);
    const end = (): void => {
      c.destroy();
      u.destroy();
      socks.delete(c);
      socks.delete(u);
    };
    c.on("error", end).on("close", end);
    u.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    port,
    drop: () => {
      for (const s of socks) s.destroy();
    },
    close: () => new Promise<void>((r) => {
      for (const s of socks) s.destroy();
      srv.close(() => r());
    }),
  };
}

/** A client through the test's TCP proxy that reconnects (after `initialMs`, at most 5 times that) and records its disconnects. */
function throughProxy(port: number, initialMs: number, disconnects: string[]): Promise<Client> {
  return open(`ws://127.0.0.1:${port}/kcprpc`, {
    reconnect: { initialMs, maximumMs: initialMs * 5 },
    heartbeat: { intervalMs: 200, timeoutMs: 2000 },
    onDisconnect: (r) => disconnects.push(r),
  });
}

test("the link dropped under the client: it reconnects and resumes its session (same id, room and topic kept, missed pushes replayed)", async () => {
  const proxy = await tcpProxy(state.ws);
  try {
    const disconnects: string[] = [];
    const c = await throughProxy(proxy.port, 50, disconnects);
    const other = await open(wsUrl());
    const events: RawEvent[] = [];
    c.onRawEvent((e) => events.push(e));
    await c.unary("ts.App/join", "rz");
    await c.subscribe("tz");
    await waitFor(() => c.rooms.has("rz"), "in the room");
    const sid = c.sessionId;
    assert.ok(c.resumable, "the server gave a resume ticket");
    const got = (key: string): RawEvent[] => events.filter((e) => e.name === "ts.Chat" && e.key === key);
    const push = (): Promise<unknown> => other.unary("ts.App/push", { room: "rz", topic: "tz" });
    for (let i = 0; i < 2; i++) await push();
    await waitFor(() => got("room:rz").length === 2 && got("topic:tz").length === 2, "2 pushes live");

    proxy.drop();
    await waitFor(() => disconnects.length === 1, "the client saw the link go");
    for (let i = 0; i < 3; i++) await push(); // while it may be away
    await waitFor(() => c.resumes === 1 && c.connected, "the session resumed", 10000);
    assert.equal(c.sessionId, sid, "the same session");
    await push();
    await waitFor(() => got("room:rz").length === 6 && got("topic:tz").length === 6, "all 6 pushes", 10000);
    for (const key of ["room:rz", "topic:tz"]) {
      const seqs = got(key).map((e) => (e.position as [number, number])[1]);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `${key} in order`);
      assert.equal(new Set(seqs).size, 6, `${key} each once`);
    }
    assert.ok(c.rooms.has("rz") && c.topics.has("tz"), "room and topic kept");
    assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "after")).got, "after");
  } finally {
    await proxy.close();
  }
});

test("20 drops in a row, each resumed: the client holds no more sockets or timers than after the first", async () => {
  const proxy = await tcpProxy(state.ws);
  const resources = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
    return out;
  };
  try {
    const disconnects: string[] = [];
    const c = await throughProxy(proxy.port, 10, disconnects);
    try {
      await c.unary("ts.App/join", "churn");
      const sid = c.sessionId;
      let first: Record<string, number> = {};
      for (let k = 0; k < 20; k++) {
        proxy.drop();
        await waitFor(() => disconnects.length === k + 1, "the client saw the link go");
        await waitFor(() => c.resumes === k + 1 && c.connected, "the session resumed", 10000);
        assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "x")).got, "x");
        if (k === 0) first = resources();
      }
      assert.equal(c.sessionId, sid);
      const last = resources();
      assert.ok((first.TCPSocketWrap ?? 0) >= 1, `the client's socket is counted: ${JSON.stringify(first)}`);
      for (const kind of ["TCPSocketWrap", "Timeout"]) assert.ok((last[kind] ?? 0) <= (first[kind] ?? 0) + 1, `${kind}: ${JSON.stringify(first)} then ${JSON.stringify(last)}`);
    } finally {
      await c.close();
    }
  } finally {
    await proxy.close();
  }
});
