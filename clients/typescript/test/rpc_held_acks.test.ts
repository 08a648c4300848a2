/**
 * Held acks (docs/tuning.md "Delayed acks", docs/wire-format/kcp.md "Held acks") against a Python
 * kcprpc server: the client offers the feature in the secure handshake, a server with
 * `ServerConfig(ack_hold=200)` asks for it in its WELCOME, and a client that only receives pushes
 * then acks two of them per datagram. Without the feature (`heldAcks: false`) nothing is held.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { RawEvent } from "../src/rpc/client.js";
import { connectKcp } from "./support/kcp_client.js";
import { startPythonServer, waitFor } from "./support/rpc_python.js";

const KEY = "ts held acks passphrase";

/** 60 reliable notes to the client, one every 30 ms; the client's datagrams out meanwhile and its counters. */
async function receiveNotes(port: number, heldAcks: boolean): Promise<{ sent: number; held: number; asked: boolean }> {
  const { client: c, transport } = await connectKcp(port, { mode: "secure", passphrase: KEY, heldAcks });
  try {
    const notes: string[] = [];
    c.onRawEvent((e: RawEvent) => {
      if (e.name === "ts.Note") notes.push((e.payload as { text: string }).text);
    });
    const st = transport.session.counters;
    const out0 = st.outPkts;
    assert.equal(await c.unary("ts.App/notes_to_me", { count: 60, every_ms: 30 }), 60);
    await waitFor(() => notes.length >= 60, "the 60 notes", 5000);
    assert.deepEqual(notes, Array.from({ length: 60 }, (_, i) => String(i))); // every note, in order
    return { sent: st.outPkts - out0, held: st.acksHeld, asked: transport.session.engine.holdAware };
  } finally {
    await c.close();
  }
}

test("held acks: a server that asks (WELCOME ackhold) gets one ack datagram per two pushes from a receive-only client", async () => {
  const server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY, "--ack-hold", "200"]);
  try {
    const on = await receiveNotes(server.port, true);
    assert.ok(on.asked, "both ends agreed to held acks in the handshake");
    // after 8 lone acks the client announces the hold, then pairs the rest: about 8 + 52 / 2
    assert.ok(on.held >= 15, `acks held: ${on.held}`);
    assert.ok(on.sent <= 45, `datagrams out for 60 pushes: ${on.sent}`);
    const off = await receiveNotes(server.port, false);
    assert.ok(!off.asked);
    assert.equal(off.held, 0);
    assert.ok(off.sent >= 55, `without held acks, an ack per push: ${off.sent}`);
  } finally {
    server.closeStdin();
    await server.exited;
  }
});
