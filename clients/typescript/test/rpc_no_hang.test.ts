/**
 * Calls that must end rather than wait for good (the TypeScript side of the Python client's
 * tests in tests/unit/test_rpc_receive_total.py and test_rpc_heartbeat.py), against the Python
 * server (tests/clients/ts_app.py, secure mode, over UDP on 127.0.0.1): a call whose own stream
 * the server refuses at `max_streams_total` is cancelled; waiting for a connection fails once the
 * connection is lost and there is no reconnect policy.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../src/rpc/client.js";
import { kcpConnector } from "../src/rpc/net.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { startPythonServer, waitFor, type PyServer } from "./support/rpc_python.js";

const KEY = "ts no hang passphrase";
const WIRE = { mode: "secure" as const, passphrase: KEY };
let server: PyServer;

before(async () => {
  server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY, "--max-streams-total", "1"]);
});
after(async () => {
  await server.kill();
});

test("a call whose stream the server refuses at max_streams_total fails CANCELLED (no deadline); the connection and the other call go on", async () => {
  const c = await Client.connect(kcpConnector("127.0.0.1", server.port, { wire: WIRE }), { heartbeat: null });
  try {
    const first = c.bidi<string, string>("ts.App/shout"); // its stream stays open: the server's one
    const it = first[Symbol.asyncIterator]();
    await first.send("a");
    assert.equal((await it.next()).value, "A");
    const second = c.serverStream<number, number>("ts.App/count", 3);
    await assert.rejects(
      second[Symbol.asyncIterator]().next(),
      (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED && e.statusMessage === "the server ended the call's stream before its status",
    );
    assert.ok(c.connected);
    await first.send("b");
    assert.equal((await it.next()).value, "B");
    assert.deepEqual(await c.unary("ts.App/echo", 1), { got: 1, md: {} }); // unary calls share the control stream
    first.end();
    assert.equal((await it.next()).done, true);
  } finally {
    await c.close();
  }
});

test("without a reconnect policy, waiting for a connection fails once the connection is lost, not at its timeout", async () => {
  const c = await Client.connect(kcpConnector("127.0.0.1", server.port, { wire: WIRE }), { heartbeat: null, waitForReady: true });
  try {
    c.notify("ts.App/drop", null, { reliable: true }); // the server drops the connection, as a lost network would
    await waitFor(() => !c.connected, "the loss", 10000);
    const t0 = Date.now();
    const noPolicy = (e: unknown): boolean => e instanceof RpcError && e.code === Status.UNAVAILABLE && e.statusMessage === "connection lost, and no reconnect policy";
    await assert.rejects(c.waitConnected(60000), noPolicy);
    await assert.rejects(c.unary("ts.App/echo", 1), noPolicy);
    assert.ok(Date.now() - t0 < 2000, `failed after ${Date.now() - t0} ms`);
  } finally {
    await c.close();
  }
  await assert.rejects(c.waitConnected(60000), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
});
