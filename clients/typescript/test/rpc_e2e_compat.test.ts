/**
 * End to end in compat mode (kcp-go's format, aes) on a clean link: the suite of
 * support/rpc_e2e.ts, a reconnect through `python -m kcp.relay` (killed, back on the same port)
 * that restores rooms and topics from the client's positions with no push lost, and the server's
 * drain and restart.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { e2eSuite, relayReconnectTest, type E2eSetup } from "./support/rpc_e2e.js";
import { connect } from "../src/rpc/net.js";
import type { Client, RawEvent } from "../src/rpc/client.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { startPythonServer, waitFor } from "./support/rpc_python.js";

const KEY = "ts e2e secret";
const SETUP: E2eSetup = { serverArgs: ["--wire", "compat", "--crypt", "aes", "--key", KEY], wire: { mode: "compat", crypt: "aes", key: KEY } };
e2eSuite(SETUP);
relayReconnectTest(SETUP);

test("a server shutting down drains: GOAWAY, calls in flight finish, new calls fail UNAVAILABLE", async () => {
  const server = await startPythonServer("tests/clients/ts_app.py", ["--wire", "compat", "--crypt", "aes", "--key", KEY]);
  try {
    const c = await connect("127.0.0.1", server.port, { wire: { mode: "compat", crypt: "aes", key: KEY } });
    const inFlight = c.unary("ts.App/sleep", 300);
    // the server's KCP acknowledged the CALL (nothing of ours waits): it is in the server's hands
    await waitFor(() => c.transportStats().waitSnd === 0 && (c.transportStats().inSegs ?? 0) > 0, "the CALL's ack", 5000);
    server.closeStdin(); // ts_app.py: server.shutdown(grace=0.5)
    await waitFor(() => !c.connected, "the GOAWAY", 5000);
    await assert.rejects(c.unary("ts.App/sleep", 1), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
    assert.equal(await inFlight, 300);
    await c.close();
    await server.exited;
  } finally {
    await server.kill();
  }
});

test("a server that dies and comes back: the client reconnects and restores its rooms and topics", async () => {
  const args = ["--wire", "compat", "--crypt", "aes", "--key", KEY];
  let server = await startPythonServer("tests/clients/ts_app.py", args);
  const port = server.port;
  const events: RawEvent[] = [];
  const lost: string[] = [];
  let c: Client | null = null;
  try {
    c = await connect("127.0.0.1", port, {
      wire: { mode: "compat", crypt: "aes", key: KEY },
      heartbeat: { intervalMs: 100, timeoutMs: 800 },
      connectTimeoutMs: 800,
      reconnect: { initialMs: 50, maximumMs: 300, maxAttempts: 60 },
      onDisconnect: (r) => lost.push(r),
    });
    const client = c;
    client.onRawEvent((e) => events.push(e));
    assert.ok(!client.resumable, "compat mode has no channel binding: no resume token");
    await client.unary("ts.App/join", "r1");
    await client.subscribe("t1");
    await client.unary("ts.App/push", { room: "r1", topic: "t1" });
    await waitFor(() => client.position(null, "r1") !== null && client.position("t1") !== null, "the room and topic messages");
    await server.kill(); // gone without a word
    const before = lost.length;
    await waitFor(() => lost.length > before, "the heartbeat timeout", 5000);
    server = await startPythonServer("tests/clients/ts_app.py", ["--port", String(port), ...args]);
    await client.waitConnected(15000);
    assert.ok(client.reconnects >= 1); // (a loaded machine may lose a heartbeat earlier too)
    assert.match(lost[lost.length - 1] ?? "", /heartbeats/);
    // rooms come back through the app's on_restore, topics through kcprpc.Push/Subscribe
    assert.deepEqual([...client.rooms], ["r1"]);
    assert.deepEqual([...client.topics], ["t1"]);
    const recovered = events.filter((e) => e.name === "kcprpc.Recovered").map((e) => (e.payload as { key: string }).key).sort();
    assert.deepEqual(recovered, ["room:r1", "topic:t1"]);
    // the new server's broker has another epoch: its messages are new, not duplicates
    await client.unary("ts.App/push", { room: "r1", topic: "t1" });
    await waitFor(() => events.filter((e) => e.key === "room:r1" && !e.replayed).length === 2, "the new room message");
  } finally {
    await c?.close();
    await server.kill();
  }
});
