/**
 * End to end in secure mode (kcprpc servers' default: Noise handshake, AEAD packets): the suite
 * of support/rpc_e2e.ts, plus resume: a lost connection's session is taken back on a new one
 * with a proof bound to the new handshake hash, rooms and positions intact; and the same through
 * `python -m kcp.relay` killed and back on the same port, with no push lost.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { e2eSuite, relayReconnectTest, running } from "./support/rpc_e2e.js";
import { Client, type RawEvent } from "../src/rpc/client.js";
import { KcpTransport, kcpConnector } from "../src/rpc/net.js";
import type { MuxConnection } from "../src/rpc/connection.js";
import { RpcError, Status } from "../src/rpc/status.js";
import type { Heartbeat } from "../src/rpc/heartbeat.js";
import { startPythonServer, waitFor } from "./support/rpc_python.js";

const KEY = "ts e2e secure passphrase";
const WIRE = { mode: "secure" as const, passphrase: KEY };
e2eSuite({ serverArgs: ["--key", KEY], wire: WIRE });
relayReconnectTest({ serverArgs: ["--key", KEY], wire: WIRE });

test("a lost connection resumes its session: same id, rooms kept, missed room messages replayed", async () => {
  const port = running.server?.port as number;
  const conns: MuxConnection[] = [];
  const dial = kcpConnector("127.0.0.1", port, { wire: WIRE });
  const reconnected: string[] = [];
  const c = await Client.connect(
    async () => {
      const m = await dial();
      conns.push(m);
      return m;
    },
    { reconnect: { initialMs: 20, maximumMs: 200, maxAttempts: 20 }, onDisconnect: (r) => reconnected.push(r) },
  );
  try {
    const events: RawEvent[] = [];
    c.onRawEvent((e) => events.push(e));
    assert.ok(c.resumable, "a secure WELCOME carries a resume token");
    const sid = c.sessionId;
    await c.unary("ts.App/join", "r9");
    await waitFor(() => c.rooms.has("r9"), "ROOMS");
    // a second client pushes to the room while the first one is away
    const other = await Client.connect(dial, {});
    await other.unary("ts.App/push", { room: "r9", topic: "t9" });
    await waitFor(() => events.some((e) => e.key === "room:r9"), "the first room message");
    const before = c.position(null, "r9");
    assert.ok(before);
    // the first client's connection is lost (no goodbye): its session is kept for a resume
    const first = conns[0]?.transport as KcpTransport;
    first.session.abort("test: connection lost");
    await waitFor(() => !c.connected, "the loss to be seen", 5000);
    await other.unary("ts.App/push", { room: "r9", topic: "t9" });
    await c.waitConnected(10000);
    assert.equal(c.sessionId, sid);
    assert.equal(c.resumes, 1);
    assert.equal(reconnected.length, 1);
    assert.ok(c.rooms.has("r9"));
    // the message published while away was replayed, flagged, and the position moved past it
    await waitFor(() => events.some((e) => e.key === "room:r9" && e.replayed), "the replayed message", 5000);
    const after = c.position(null, "r9");
    assert.ok(after && before && after[1] > before[1]);
    assert.equal(await c.unary("ts.App/sleep", 1), 1);
    await other.close();
  } finally {
    await c.close();
  }
  await assert.rejects(c.unary("ts.App/sleep", 1), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
});

test("events sent to the session and lost with its connection arrive once each after the resume", async () => {
  const port = running.server?.port as number;
  const c = await Client.connect(kcpConnector("127.0.0.1", port, { wire: WIRE }), {
    reconnect: { initialMs: 20, maximumMs: 200, maxAttempts: 20 },
  });
  try {
    const notes: string[] = [];
    const recovered: unknown[] = [];
    c.onRawEvent((e) => {
      if (e.name === "ts.Note") notes.push((e.payload as { text: string }).text);
      if (e.name === "kcprpc.Recovered") recovered.push(e.payload);
    });
    const sid = c.sessionId;
    await c.unary("ts.App/sleep", 1);
    // 30 notes queued, then the connection dropped before the transport sent them
    c.notify("ts.App/notes_then_drop", 30, { reliable: true });
    await waitFor(() => c.resumes === 1 && notes.length >= 30, "the resume and the notes", 10000);
    assert.equal(c.sessionId, sid);
    assert.deepEqual(notes, Array.from({ length: 30 }, (_, i) => String(i)));
    assert.deepEqual(recovered, [{ key: "session", recovered: true, replayed: 30, missed: 0, position: [0, 30] }]);
    assert.equal(await c.unary("ts.App/sleep", 1), 1);
    assert.deepEqual(notes.length, 30); // none twice
  } finally {
    await c.close();
  }
});

test("rebind: the connection moves to a new local socket and its calls carry on", async () => {
  const port = running.server?.port as number;
  const c = await Client.connect(kcpConnector("127.0.0.1", port, { wire: WIRE }), {});
  try {
    const sid = c.sessionId;
    const call = c.serverStream<number, number>("ts.App/count", 2000);
    const it = call[Symbol.asyncIterator]();
    assert.equal((await it.next()).value, 1);
    await c.rebind();
    let last = 1;
    for (let r = await it.next(); !r.done; r = await it.next()) last = r.value;
    assert.equal(last, 2000);
    assert.equal(await c.unary("ts.App/sleep", 1), 1);
    assert.equal(c.sessionId, sid);
    assert.equal(c.reconnects, 0);
  } finally {
    await c.close();
  }
  await assert.rejects(c.rebind(), /rebind\(\) needs an open secure-mode KCP connection/);
});

test("a subscriber that only receives sends no PING but the RTT one: its transport's acks prove it to the server", async () => {
  const port = running.server?.port as number;
  const c = await Client.connect(kcpConnector("127.0.0.1", port, { wire: WIRE }), {
    heartbeat: { intervalMs: 50, timeoutMs: 2000, maxIntervalMs: 50 },
  });
  try {
    const notes: RawEvent[] = [];
    c.onRawEvent((e) => notes.push(e));
    await waitFor(() => c.rttMs !== null, "a first answered keepalive", 5000);
    const hb = (c as unknown as { link: { hb: Heartbeat } }).link.hb;
    const pings = (hb as unknown as { nonce: number }).nonce;
    const skipped = hb.skipped;
    // about 600 ms of pushes, 12 heartbeat intervals: one call sent, then only the acks of the pushes
    assert.equal(await c.unary("ts.App/notes_to_me", { count: 30, every_ms: 20 }), 30);
    await waitFor(() => notes.filter((e) => e.name === "ts.Note").length >= 30, "the 30 notes", 5000);
    const sentPings = (hb as unknown as { nonce: number }).nonce - pings;
    assert.ok(hb.skipped - skipped >= 4, `skipped ${hb.skipped - skipped}, pinged ${sentPings}`);
    assert.ok(sentPings <= 5, `one PING per 4 intervals (the RTT), not one per interval: ${sentPings}`);
    assert.ok(c.connected);
  } finally {
    await c.close();
  }
});

test("heartbeats go as transport keepalives the server's secure layer answers (WELCOME tping)", async () => {
  const port = running.server?.port as number;
  const conns: MuxConnection[] = [];
  // a mux keepalive that would show within the test: NOPs every 0.1 s, closed after 0.3 s of silence
  const mux = { version: 2, maxStreamBuffer: 512 * 1024, keepaliveInterval: 0.1, keepaliveTimeout: 0.3 };
  const dial = kcpConnector("127.0.0.1", port, { wire: WIRE, mux });
  const c = await Client.connect(
    async () => {
      const m = await dial();
      conns.push(m);
      return m;
    },
    { heartbeat: { intervalMs: 50, timeoutMs: 2000 } },
  );
  try {
    const transport = conns[0]?.transport as KcpTransport;
    const st = (): Record<string, number> => transport.stats();
    await waitFor(() => c.rttMs !== null, "a first answered keepalive", 5000);
    // quiet from here on: the heartbeats must not go through KCP (no PING frame, no segment)
    const segs = st()["outSegs"];
    const acks = st()["secure_mtu_probe_acks"] as number;
    await waitFor(() => (st()["secure_mtu_probe_acks"] as number) >= acks + 8, "eight more answered keepalives", 10000);
    assert.equal(st()["outSegs"], segs);
    // both muxes went quiet (HELLO and WELCOME said tping): this side sent no NOP and did not close
    // on the server mux's silence, over several of its 0.1 s intervals and 0.3 s timeouts
    assert.equal(conns[0]?.mux.core.counters.nop_out, 0);
    assert.equal(conns[0]?.mux.core.counters.keepalive_timeouts, 0);
    assert.ok(c.connected);
    assert.equal(await c.unary("ts.App/sleep", 1), 1);
  } finally {
    await c.close();
  }
});

test("a connection past the server's cap per address is refused with the reason", async () => {
  // ts_app.py --per-address 1 exempts no address, so a second client from 127.0.0.1 is one too many
  const server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY, "--per-address", "1"]);
  const dial = kcpConnector("127.0.0.1", server.port, { wire: WIRE });
  let first: Client | null = null;
  try {
    first = await Client.connect(dial, {});
    await assert.rejects(Client.connect(dial, {}), (e: unknown) => {
      assert.ok(e instanceof RpcError, String(e));
      assert.equal(e.code, Status.UNAVAILABLE);
      assert.match(e.message, /too many sessions from one address/);
      return true;
    });
    assert.ok(first.connected, "the first client is not disturbed");
  } finally {
    await first?.close();
    await server.kill();
  }
});

test("20 lost connections in a row, each resumed: the client holds no more sockets or timers than after the first", async () => {
  const port = running.server?.port as number;
  const conns: MuxConnection[] = [];
  const dial = kcpConnector("127.0.0.1", port, { wire: WIRE });
  const c = await Client.connect(
    async () => {
      const m = await dial();
      conns.push(m);
      return m;
    },
    { reconnect: { initialMs: 10, maximumMs: 50, maxAttempts: 20 } },
  );
  const resources = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
    return out;
  };
  try {
    await c.unary("ts.App/join", "churn");
    const sid = c.sessionId;
    let first: Record<string, number> = {};
    for (let k = 0; k < 20; k++) {
      (conns[conns.length - 1]?.transport as KcpTransport).session.abort("test: connection lost");
      await waitFor(() => c.resumes === k + 1 && c.connected, "the session resumed", 10000);
      assert.equal(await c.unary("ts.App/sleep", 1), 1);
      if (k === 0) first = resources();
    }
    assert.equal(c.sessionId, sid);
    assert.equal(c.resumes, 20);
    assert.equal(conns.length, 21);
    for (const m of conns.slice(0, -1)) assert.ok((m.transport as KcpTransport).session.closed, "an old connection's session ended");
    const last = resources();
    assert.ok((first.UDPWrap ?? 0) >= 1, `the client's socket is counted: ${JSON.stringify(first)}`);
    for (const kind of ["UDPWrap", "Timeout"]) assert.ok((last[kind] ?? 0) <= (first[kind] ?? 0) + 1, `${kind}: ${JSON.stringify(first)} then ${JSON.stringify(last)}`);
  } finally {
    await c.close();
  }
});
