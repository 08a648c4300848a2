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

/** What a suite needs: the server's transport flags and the client's wire. */
export interface E2eSetup {
  /** ts_app.py's transport flags. */
  serverArgs: string[];
  /** The client's wire. */
  wire: ConnectOptions["wire"];
}

/** The running server (set by the suite's before hook). */
export const running: { server: PyServer | null } = { server: null };

/** Register the suite's tests. */
export function e2eSuite(setup: E2eSetup): void {
  const WIRE = setup.wire;
  let server: PyServer;
  const clients: Client[] = [];
  before(async () => {
    server = await startPythonServer("tests/clients/ts_app.py", setup.serverArgs);
    running.server = server;
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await server.kill();
  });
  async function client(opts: Partial<ConnectOptions> = {}): Promise<Client> {
    const c = await connect("127.0.0.1", server.port, { wire: WIRE, connectTimeoutMs: 5000, ...opts });
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
    await assert.rejects(connect("127.0.0.1", server.port, { wire: WIRE, metadata: { token: "refuse" } }), isStatus(Status.UNAUTHENTICATED, /bad token/));
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
    await waitFor(() => events.some((e) => e.name === "ts.Note" && e.latestKey === "k1") && events.some((e) => e.name === "ts.Blip"), "the pushed events");
    const note = events.find((e) => e.name === "ts.Note" && e.latestKey === null);
    assert.deepEqual(note?.payload, { text: "to you" });
    assert.equal(note?.key, null);
    const room = events.find((e) => e.key === "room:r1");
    assert.deepEqual(room?.payload, { text: "to the room" });
    assert.equal(room?.position?.[1], 1);
    assert.deepEqual(c.position(null, "r1"), room?.position);
    const topic = events.find((e) => e.key === "topic:news");
    assert.deepEqual(topic?.payload, { text: "to the topic" });
    assert.deepEqual(c.position("news"), topic?.position);
    const pos = events.filter((e) => e.name === "ts.Pos");
    assert.ok(pos.length >= 1 && pos.every((e) => e.unreliable && e.latestKey === "42"));
    assert.deepEqual(pos[pos.length - 1]?.payload, { entity: 42, x: 2 }); // the newest one wins
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
    const c = await client({ heartbeat: { intervalMs: 50, timeoutMs: 2000 } });
    const sent = c.transportStats().outPkts ?? 0;
    c.notify("ts.App/note", "over a datagram");
    assert.ok((c.transportStats().outPkts ?? 0) > sent, "the datagram left at once");
    // the server records it; ask until it is there (a bounded poll: each round is a call)
    let notes: string[] = [];
    const poll = async (): Promise<void> => {
      const end = Date.now() + 5000;
      while (Date.now() < end) {
        notes = await c.unary<null, string[]>("ts.App/notes_seen", null);
        if (notes.includes("over a datagram")) return;
      }
      throw new Error("the notify did not arrive");
    };
    await poll();
    await waitFor(() => c.rttMs !== null, "an RTT sample", 5000);
    assert.ok((c.rttMs as number) >= 0 && (c.rttMs as number) < 1000);
  });
}
