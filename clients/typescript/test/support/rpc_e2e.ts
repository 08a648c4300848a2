/**
 * The end-to-end suite, run once per wire mode (rpc_e2e_compat.test.ts, rpc_e2e_secure.test.ts):
 * the client over the real stack (KcpSession over UDP, smux v2, RPC) against a Python kcprpc
 * server (tests/clients/ts_app.py) on 127.0.0.1, killed at the end.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type ConnectOptions } from "../../src/rpc/net.js";
import type { Client, RawEvent } from "../../src/rpc/client.js";
import { RpcError, Status } from "../../src/rpc/status.js";
import { startPythonServer, waitFor, type PyServer } from "./rpc_python.js";
import { spawn } from "node:child_process";
import { PYTHON, REPO } from "../helpers/python.js";

/** What a suite needs: the server's transport flags and the client's wire. */
export interface E2eSetup {
  /** ts_app.py's transport flags. */
  serverArgs: string[];
  /** The client's wire. */
  wire: NonNullable<ConnectOptions["wire"]>;
  /**
   * Clients go through `python -m kcp.relay` with this loss (percent, each direction) and seed;
   * omitted: straight to the server on a clean link. Under loss, what is unreliable by contract
   * (unreliable events, an unreliable notify) is asked for again until it arrived, bounded.
   */
  relay?: { loss: number; seed: number };
}

/** The running server and relay (set by the suite's before hook). */
export const running: {
  server: PyServer | null;
  /** The relay, when the suite runs through one. */
  relay: Relay | null;
  /** The port clients dial: the relay's, else the server's. */
  port: number;
} = { server: null, relay: null, port: 0 };

/** A running `python -m kcp.relay`. */
export interface Relay {
  /** The port it listens on. */
  port: number;
  /**
   * Stop it (SIGINT: it prints its counters and exits; SIGKILL after 5 s) and wait; resolves to
   * its counters (`up_dropped`, `down_delivered` ...; up is client to server), or null when it
   * printed none. Idempotent.
   */
  stop(): Promise<Record<string, number> | null>;
}

/** Start `python -m kcp.relay --listen 127.0.0.1:<listenPort> --target 127.0.0.1:<target> --loss L --seed S`. */
export async function startRelay(target: number, loss: number, seed: number, listenPort = 0): Promise<Relay> {
  const args = ["-m", "kcp.relay", "--listen", `127.0.0.1:${listenPort}`, "--target", `127.0.0.1:${target}`, "--loss", String(loss), "--seed", String(seed)];
  const proc = spawn(PYTHON, args, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  let stopping: Promise<Record<string, number> | null> | null = null;
  const stop = (): Promise<Record<string, number> | null> => {
    stopping ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGINT");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }
      const m = /\{[^{}]*\}\s*$/.exec(out); // the stats dict it prints on the way out
      return m ? (JSON.parse(m[0].replace(/'/g, '"')) as Record<string, number>) : null;
    })();
    return stopping;
  };
  const end = Date.now() + 20000;
  let m: RegExpExecArray | null = null;
  while (!(m = /^relay [\d.]+:(\d+) ->/m.exec(out))) {
    if (proc.exitCode !== null || Date.now() > end) {
      await stop();
      throw new Error(`python ${args.join(" ")} did not start: ${out}${err}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { port: Number(m[1]), stop };
}

/** Register the suite's tests. */
export function e2eSuite(setup: E2eSetup): void {
  const WIRE = setup.wire;
  const lossy = setup.relay !== undefined && setup.relay.loss > 0;
  let server: PyServer;
  const clients: Client[] = [];
  before(async () => {
    server = await startPythonServer("tests/clients/ts_app.py", setup.serverArgs);
    running.server = server;
    running.port = server.port;
    if (setup.relay) {
      try {
        running.relay = await startRelay(server.port, setup.relay.loss, setup.relay.seed);
      } catch (e) {
        await server.kill();
        throw e;
      }
      running.port = running.relay.port;
    }
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await running.relay?.stop();
    await server.kill();
  });
  async function client(opts: Partial<ConnectOptions> = {}): Promise<Client> {
    // under loss, a generous heartbeat: a lost PING waits for KCP's retransmission, whose timeout
    // grows with the RTT samples (with FEC, a segment rebuilt late is acknowledged late)
    const heartbeat = lossy ? { intervalMs: 1000, timeoutMs: 15000 } : undefined;
    const c = await connect("127.0.0.1", running.port, { wire: WIRE, connectTimeoutMs: lossy ? 15000 : 5000, ...(heartbeat ? { heartbeat } : {}), ...opts });
    clients.push(c);
    return c;
  }
  function isStatus(code: Status, message?: RegExp): (e: unknown) => boolean {
    return (e: unknown): boolean => e instanceof RpcError && e.code === code && (message === undefined || message.test(e.statusMessage));
  }

  test("unary calls: the quickstart greeter, a request and metadata echoed, a session id", async () => {
    const c = await client({ metadata: { user: "ts" } });
    assert.equal(typeof c.sessionId, "string");
    assert.deepEqual(await c.call("quickstart.Greeter", "hello", { name: "ann" }), { message: "Hello, ann!" });
    const r = await c.unary("ts.App/echo", { a: [1, 2.5, "x", null, true], b: new Uint8Array([0, 1, 255]) }, { metadata: { k: "v" } });
    assert.deepEqual(r, { got: { a: [1, 2.5, "x", null, true], b: new Uint8Array([0, 1, 255]) }, md: { k: "v" } });
  });

  test("every failure status reaches the client with its message and details", async () => {
    const c = await client();
    for (let code = 1; code <= 16; code++) {
      await assert.rejects(c.unary("ts.App/fail", { code, message: `m${code}` }), (e: unknown) => {
        assert.ok(e instanceof RpcError);
        assert.equal(e.code, code);
        assert.equal(e.statusMessage, `m${code}`);
        assert.deepEqual(e.details, { code });
        return true;
      });
    }
    // validation: INVALID_ARGUMENT with pydantic's error list
    await assert.rejects(c.call("quickstart.Greeter", "hello", { name: "" }), (e: unknown) => {
      assert.ok(e instanceof RpcError && e.code === Status.INVALID_ARGUMENT);
      assert.ok(Array.isArray(e.details) && (e.details[0] as { loc: unknown[] }).loc.includes("name"));
      return true;
    });
    await assert.rejects(c.unary("ts.App/crash", null), isStatus(Status.INTERNAL, /internal error/));
    await assert.rejects(c.unary("ts.App/nope", null), isStatus(Status.UNIMPLEMENTED));
    // the deadline travels: the server cancels the handler; the client fails it at its own deadline
    const t0 = Date.now();
    await assert.rejects(c.unary("ts.App/sleep", 3000, { timeoutMs: 200 }), isStatus(Status.DEADLINE_EXCEEDED));
    assert.ok(Date.now() - t0 < 2500);
    const ac = new AbortController();
    const p = c.unary("ts.App/sleep", 3000, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, isStatus(Status.CANCELLED));
    // the connection is still good
    assert.equal(await c.unary("ts.App/sleep", 1), 1);
  });

  test("a HELLO the server's on_connect refuses: connect fails UNAUTHENTICATED", async () => {
    await assert.rejects(connect("127.0.0.1", running.port, { wire: WIRE, metadata: { token: "refuse" }, connectTimeoutMs: lossy ? 15000 : 5000 }), isStatus(Status.UNAUTHENTICATED, /bad token/));
  });

  test("streaming: server, client and bidi", async () => {
    const c = await client();
    const got: number[] = [];
    for await (const n of c.serverStream<number, number>("ts.App/count", 1000)) got.push(n);
    assert.equal(got.length, 1000);
    assert.equal(got[999], 1000);
    async function* nums(): AsyncGenerator<number> {
      for (let i = 1; i <= 100; i++) yield i;
    }
    assert.equal(await c.clientStream("ts.App/total", nums()), 5050);
    const b = c.bidi<string, string>("ts.App/shout");
    const it = b[Symbol.asyncIterator]();
    for (const w of ["a", "bc", "déf"]) {
      await b.send(w);
      assert.equal((await it.next()).value, w.toUpperCase());
    }
    b.end();
    assert.equal((await it.next()).done, true);
    assert.deepEqual(await b.trailers(), {});
  });

  test("pushes: to the session, a room, a topic; keyed and unreliable events", async () => {
    const c = await client();
    const events: RawEvent[] = [];
    c.onRawEvent((e) => events.push(e));
    await c.unary("ts.App/join", "r1");
    await waitFor(() => c.rooms.has("r1"), "the ROOMS frame");
    const sub = await c.subscribe("news");
    assert.ok(Array.isArray(sub.position));
    await c.unary("ts.App/push", { room: "r1", topic: "news" });
    const arrived = (): boolean => events.some((e) => e.name === "ts.Note" && e.latestKey === "k1") && events.some((e) => e.name === "ts.Blip") && events.some((e) => e.name === "ts.Pos");
    // under loss an unreliable event may be lost (by contract): push again until one came, bounded
    for (let i = 0; lossy && i < 20 && !arrived(); i++) {
      await waitFor(arrived, "the pushed events", 500).catch(() => undefined);
      if (!arrived()) await c.unary("ts.App/push", { room: "r1", topic: "news" });
    }
    await waitFor(arrived, "the pushed events", lossy ? 15000 : 5000);
    const note = events.find((e) => e.name === "ts.Note" && e.latestKey === null);
    assert.deepEqual(note?.payload, { text: "to you" });
    assert.equal(note?.key, null);
    // the room's and the topic's messages: reliable, each once, positions 1, 2, ... in order
    const rooms = events.filter((e) => e.key === "room:r1");
    assert.ok(rooms.length >= 1);
    assert.deepEqual(rooms[0]?.payload, { text: "to the room" });
    assert.deepEqual(rooms.map((e) => e.position?.[1]), rooms.map((_, i) => i + 1));
    assert.deepEqual(c.position(null, "r1"), rooms[rooms.length - 1]?.position);
    const topics = events.filter((e) => e.key === "topic:news");
    assert.equal(topics.length, rooms.length);
    assert.deepEqual(topics[0]?.payload, { text: "to the topic" });
    assert.deepEqual(c.position("news"), topics[topics.length - 1]?.position);
    const pos = events.filter((e) => e.name === "ts.Pos");
    assert.ok(pos.length >= 1 && pos.every((e) => e.unreliable && e.latestKey === "42"));
    if (!lossy) assert.deepEqual(pos[pos.length - 1]?.payload, { entity: 42, x: 2 }); // the newest one wins
    else assert.ok(pos.every((e, i) => i === 0 || (e.position?.[1] ?? 0) > (pos[i - 1]?.position?.[1] ?? 0)), "never an older one after a newer one");
    assert.ok(events.find((e) => e.name === "ts.Blip")?.unreliable);
    const keyed = events.find((e) => e.latestKey === "k1");
    assert.equal(keyed?.unreliable, false);
    assert.ok(keyed?.position !== null);
    assert.equal(c.counters.bad_frames, 0);
    // the room's history holds the message; the server's built-in Push service answers
    const page = await c.history({ room: "r1" });
    const msgs = page.messages as Array<{ name: string; payload: unknown; position: number[] }>;
    assert.ok(msgs.some((m) => m.name === "ts.Chat" && (m.payload as { text: string }).text === "to the room"));
    await assert.rejects(c.history({ room: "not-in-it" }), isStatus(Status.FAILED_PRECONDITION, /not in room/));
  });

  test("an unreliable notify reaches the server as a datagram; heartbeats measure the RTT", async () => {
    const c = await client({ heartbeat: { intervalMs: 50, timeoutMs: lossy ? 15000 : 2000 } });
    const sent = c.transportStats().outPkts ?? 0;
    c.notify("ts.App/note", "over a datagram");
    assert.ok((c.transportStats().outPkts ?? 0) > sent, "the datagram left at once");
    let resent = 0;
    // the server records it; ask until it is there (a bounded poll: each round is a call)
    let notes: string[] = [];
    const poll = async (): Promise<void> => {
      const end = Date.now() + (lossy ? 15000 : 5000);
      while (Date.now() < end) {
        notes = await c.unary<null, string[]>("ts.App/notes_seen", null);
        if (notes.includes("over a datagram")) return;
        if (lossy && resent < 20) {
          resent++; // an unreliable datagram may be lost (by contract): send it again
          c.notify("ts.App/note", "over a datagram");
        }
      }
      throw new Error("the notify did not arrive");
    };
    await poll();
    await waitFor(() => c.rttMs !== null, "an RTT sample", lossy ? 15000 : 5000);
    assert.ok((c.rttMs as number) >= 0 && (c.rttMs as number) < (lossy ? 5000 : 1000));
  });

  if (setup.relay) {
    const { loss } = setup.relay;
    test(`the relay dropped about ${loss} % of the datagrams each way`, async () => {
      const stats = await (running.relay as Relay).stop();
      assert.ok(stats, "the relay printed its counters");
      for (const dir of ["up", "down"]) {
        const dropped = stats[`${dir}_dropped`] ?? 0;
        const total = dropped + (stats[`${dir}_delivered`] ?? 0);
        assert.ok(total > 50, `${dir}: ${total} datagrams`);
        // seeded, but how many datagrams there were depends on timing: a wide band around the rate
        assert.ok(dropped / total > (loss / 100) * 0.3 && dropped / total < (loss / 100) * 2, `${dir}: ${dropped} of ${total} dropped`);
      }
    });
  }
}

/**
 * Register the relay-reconnect test: a client (subscribed to a topic, in a room) goes through its
 * own `kcp.relay` (loss as the setup's); the relay is killed (everything dropped), pushes go on
 * meanwhile from a second client straight to the server, and the relay comes back on the same
 * port. The client reconnects (secure mode: resumes its session; compat: restores rooms and
 * topics with its positions) and gets every push, each once, in order, the missed ones replayed.
 * Uses the suite's server (register after {@link e2eSuite}).
 */
export function relayReconnectTest(setup: E2eSetup): void {
  const loss = setup.relay?.loss ?? 0;
  const lossy = loss > 0;
  test(`the relay drops everything for a while (${loss} % loss otherwise): the client reconnects, no push lost or repeated`, async () => {
    const serverPort = (running.server as PyServer).port;
    let relay: Relay | null = await startRelay(serverPort, loss, (setup.relay?.seed ?? 1) + 100);
    const relayPort = relay.port;
    const timeout = lossy ? 15000 : 5000;
    const disconnects: string[] = [];
    const c = await connect("127.0.0.1", relayPort, {
      wire: setup.wire,
      connectTimeoutMs: timeout,
      heartbeat: { intervalMs: 100, timeoutMs: lossy ? 3000 : 600 },
      reconnect: { initialMs: 50, maximumMs: 500, maxAttempts: 100 },
      onDisconnect: (r) => disconnects.push(r),
    });
    const other = await connect("127.0.0.1", serverPort, { wire: setup.wire, connectTimeoutMs: 5000 });
    try {
      const events: RawEvent[] = [];
      c.onRawEvent((e) => events.push(e));
      await c.unary("ts.App/join", "rz");
      await waitFor(() => c.rooms.has("rz"), "ROOMS", timeout);
      await c.subscribe("tz");
      const push = (): Promise<unknown> => other.unary("ts.App/push", { room: "rz", topic: "tz" });
      const got = (key: string): RawEvent[] => events.filter((e) => e.key === key);
      for (let i = 0; i < 3; i++) await push();
      await waitFor(() => got("room:rz").length >= 3 && got("topic:tz").length >= 3, "3 pushes live", timeout);
      const sid = c.sessionId;
      await relay.stop(); // everything dropped: the heartbeat sees the link dead
      relay = null;
      await waitFor(() => !c.connected, "the client to see its link dead", lossy ? 20000 : 5000);
      for (let i = 0; i < 5; i++) await push(); // while it is away
      relay = await startRelay(serverPort, loss, (setup.relay?.seed ?? 1) + 200, relayPort);
      await c.waitConnected(lossy ? 30000 : 15000);
      assert.ok(disconnects.length >= 1);
      assert.ok(c.reconnects >= 1); // (a loaded machine may lose a heartbeat at another moment too)
      if (setup.wire.mode === "secure") {
        assert.equal(c.resumes, c.reconnects, "the session was resumed");
        assert.equal(c.sessionId, sid);
      }
      for (let i = 0; i < 2; i++) await push(); // live again
      await waitFor(() => got("room:rz").length >= 10 && got("topic:tz").length >= 10, "all 10 pushes", timeout);
      for (const key of ["room:rz", "topic:tz"]) {
        const seen = got(key);
        assert.deepEqual(seen.map((e) => e.payload), seen.map(() => ({ text: key.startsWith("room") ? "to the room" : "to the topic" })));
        const first = seen[0]?.position?.[1] as number;
        assert.deepEqual(seen.map((e) => e.position?.[1]), seen.map((_, i) => first + i), `${key}: each once, in order`);
        assert.equal(seen.length, 10, key);
        assert.ok(seen.slice(3, 8).every((e) => e.replayed), `${key}: the missed ones were replayed`);
        assert.ok(!seen[9]?.replayed);
      }
      assert.equal(c.counters.bad_frames, 0);
    } finally {
      await c.close().catch(() => undefined);
      await other.close().catch(() => undefined);
      await relay?.stop();
    }
  });
}
