/**
 * Repeated acks (docs/tuning.md "Repeated acks", docs/wire-format/kcp.md "Repeated acks") against a
 * Python kcprpc server through `python -m kcp.relay` at 10 % loss (seeded) each way: the client
 * offers the feature in the secure handshake, both ends agree, and large echoes in both directions
 * cross intact while each end repeats the ACKs of segments that came above a hole and the other
 * takes them. With `ackRepeat: false` the session does without, and the echoes still cross.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connectKcp } from "./support/kcp_client.js";
import { startPythonServer } from "./support/rpc_python.js";
import { startRelay } from "./support/rpc_e2e.js";

const KEY = "ts reack passphrase";

async function echoes(port: number, ackRepeat: boolean): Promise<{ agreed: boolean; sent: number; useful: number }> {
  const { client: c, transport } = await connectKcp(port, { mode: "secure", passphrase: KEY, ackRepeat });
  try {
    // 8 echoes of about 175 segments each way: enough lost ACKs above holes, whatever the batching
    for (let i = 0; i < 8; i++) {
      const text = String(i).repeat(240_000);
      const got = (await c.unary("ts.App/echo", text)) as { got: string };
      assert.ok(got.got === text, `echo ${i} came back whole`);
    }
    const st = transport.session.counters;
    return { agreed: transport.session.engine.ackRepeat, sent: st.reacksSent, useful: st.reacksUseful };
  } finally {
    await c.close();
  }
}

test("repeated acks: a TS client and a Python server agree, and REACKs go both ways across loss", async () => {
  const server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY]);
  const relay = await startRelay(server.port, 10, 5);
  try {
    const on = await echoes(relay.port, true);
    assert.ok(on.agreed, "both ends agreed to repeated acks in the handshake");
    assert.ok(on.sent > 0, `the client repeated ACKs: ${on.sent}`);
    assert.ok(on.useful > 0, `the server's REACKs spared the client resends: ${on.useful}`);
    const off = await echoes(relay.port, false);
    assert.ok(!off.agreed);
    assert.equal(off.sent + off.useful, 0);
  } finally {
    await relay.stop();
    server.closeStdin();
    await server.exited;
  }
});
