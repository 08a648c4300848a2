/**
 * An application's bug must not hang the client or silently lose its data (the TypeScript side
 * of tests/integration/test_app_bugs.py), against the Python server (tests/clients/ts_app.py,
 * secure mode, over UDP on 127.0.0.1): event handlers that throw or reject, on reliable and
 * unreliable events; hooks (onDisconnect, onReconnect, onGiveUp) that throw or reject; and an
 * error in the client's own handling of what came, on the control stream (the link is lost and
 * reconnects) and on a datagram (that datagram is dropped). Each is reported to
 * `onCallbackError` and the client goes on.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, type ClientOptions } from "../src/rpc/client.js";
import { kcpConnector } from "../src/rpc/net.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { startPythonServer, waitFor, type PyServer } from "./support/rpc_python.js";

const KEY = "ts app bugs passphrase";
const WIRE = { mode: "secure" as const, passphrase: KEY };
let server: PyServer;

before(async () => {
  server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY]);
});
after(async () => {
  await server.kill();
});

/** A client of the server whose reported errors land in `errors` as `[where, error]`. */
async function client(opts: ClientOptions = {}, dial = kcpConnector("127.0.0.1", server.port, { wire: WIRE })): Promise<{ c: Client; errors: Array<[string, unknown]> }> {
  const errors: Array<[string, unknown]> = [];
  const c = await Client.connect(dial, { ...opts, onCallbackError: (e, where) => errors.push([where, e]) });
  return { c, errors };
}

const wheres = (errors: Array<[string, unknown]>): string[] => [...new Set(errors.map(([w]) => w))].sort();

test("event handlers that throw or reject, on reliable and unreliable events, are reported and counted; the events after them and the calls go on", async () => {
  const { c, errors } = await client();
  try {
    c.on("ts.Pos", () => {
      throw new TypeError("a bad datagram handler"); // unreliable: the datagrams
    });
    c.on("ts.Note", async () => {
      throw new Error("a bad async handler"); // reliable: the control stream
    });
    c.onRawEvent(() => {
      throw new Error("a bad raw handler");
    });
    const notes: string[] = [];
    const blips: number[] = [];
    const pos: number[] = [];
    c.on<{ text: string }>("ts.Note", (n) => notes.push(n.text));
    c.on<{ n: number }>("ts.Blip", (b) => blips.push(b.n));
    c.on<{ x: number }>("ts.Pos", (p) => pos.push(p.x));
    await c.unary("ts.App/join", "bugs");
    for (let round = 1; round <= 2; round++) {
      await c.unary("ts.App/push", { room: "bugs", topic: "bugs" });
      // (the server may coalesce a key's unreliable events: the newest, x 2, is sent)
      await waitFor(() => notes.length === 2 * round && blips.length === round && pos.filter((x) => x === 2).length === round, `the events of round ${round}`);
    }
    assert.deepEqual(await c.unary("ts.App/echo", 1), { got: 1, md: {} });
    await waitFor(() => errors.some(([w]) => w === "event handler for ts.Note"), "the async handler's rejection");
    assert.deepEqual(wheres(errors), ["event handler for ts.Note", "event handler for ts.Pos", "raw event handler"]);
    assert.ok(errors.every(([, e]) => e instanceof Error && /^a bad/.test(e.message)));
    assert.equal(c.counters.callback_errors, errors.length);
    assert.ok(c.connected);
  } finally {
    await c.close();
  }
});

test("an onDisconnect that throws and an onReconnect that rejects are reported: the reconnect happens all the same", async () => {
  const { c, errors } = await client({
    reconnect: { initialMs: 20, maximumMs: 200, maxAttempts: 20 },
    onDisconnect: () => {
      throw new Error("a bad onDisconnect");
    },
    onReconnect: async () => {
      throw new Error("a bad onReconnect");
    },
  });
  try {
    c.notify("ts.App/drop", null, { reliable: true }); // the server drops the connection, as a lost network would
    await waitFor(() => c.reconnects === 1, "the reconnect", 10000);
    await c.waitConnected(5000);
    assert.deepEqual(await c.unary("ts.App/echo", 2), { got: 2, md: {} });
    await waitFor(() => errors.length === 2, "both hooks' errors");
    assert.deepEqual(wheres(errors), ["onDisconnect", "onReconnect"]);
    assert.equal(c.counters.callback_errors, 2);
  } finally {
    await c.close();
  }
});

test("an onGiveUp that throws is reported; waiting for the link fails with the give-up", async () => {
  const dial = kcpConnector("127.0.0.1", server.port, { wire: WIRE });
  let dials = 0;
  const { c, errors } = await client(
    {
      reconnect: { initialMs: 5, maximumMs: 10, maxAttempts: 2 },
      onGiveUp: () => {
        throw new Error("a bad onGiveUp");
      },
    },
    async () => {
      if (dials++) throw new RpcError(Status.UNAVAILABLE, "no server any more");
      return dial();
    },
  );
  try {
    c.notify("ts.App/drop", null, { reliable: true });
    await waitFor(() => !c.connected, "the loss", 10000);
    await assert.rejects(c.waitConnected(10000), (e: unknown) => e instanceof RpcError && /gave up reconnecting after 2 attempts/.test(e.statusMessage));
    await waitFor(() => errors.length === 1, "the hook's error");
    assert.deepEqual(wheres(errors), ["onGiveUp"]);
  } finally {
    await c.close();
  }
});

test("an error in the client's own handling of the control stream is reported and ends the link as lost (it reconnects), not silently", async () => {
  const reasons: string[] = [];
  const { c, errors } = await client({ reconnect: { initialMs: 20, maximumMs: 200, maxAttempts: 20 }, onDisconnect: (r) => reasons.push(r) });
  try {
    const handle = c.handleEvent.bind(c);
    let bugs = 1;
    // a bug in handling an event (not the application's: its handlers are guarded)
    c.handleEvent = (body, unreliable) => {
      if (!unreliable && bugs-- > 0) throw new RangeError("injected bug");
      handle(body, unreliable);
    };
    await c.unary("ts.App/push", { room: "r", topic: "t" }).catch(() => undefined);
    await waitFor(() => c.reconnects === 1, "the reconnect", 10000);
    await c.waitConnected(5000);
    assert.deepEqual(reasons, ["internal error reading the control stream: RangeError: injected bug"]);
    assert.deepEqual(wheres(errors), ["reading the control stream"]);
    assert.equal(c.counters.callback_errors, 0, "not the application's");
    assert.deepEqual(await c.unary("ts.App/echo", 3), { got: 3, md: {} });
  } finally {
    await c.close();
  }
});

test("an error in the client's own handling of a datagram drops that datagram (reported); the next ones are delivered", async () => {
  const { c, errors } = await client();
  try {
    const handle = c.handleEvent.bind(c);
    let bugs = 1;
    c.handleEvent = (body, unreliable) => {
      if (unreliable && bugs-- > 0) throw new RangeError("injected datagram bug");
      handle(body, unreliable);
    };
    const blips: number[] = [];
    c.on<{ n: number }>("ts.Blip", (b) => blips.push(b.n));
    await c.unary("ts.App/push", { room: "r", topic: "t" });
    await waitFor(() => errors.length === 1, "the report");
    await c.unary("ts.App/push", { room: "r", topic: "t" });
    await waitFor(() => blips.length >= 1, "a datagram after the bad one");
    assert.deepEqual(wheres(errors), ["handling a datagram"]);
    assert.ok(c.connected);
    assert.deepEqual(await c.unary("ts.App/echo", 4), { got: 4, md: {} });
  } finally {
    await c.close();
  }
});
