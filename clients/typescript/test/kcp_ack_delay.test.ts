/**
 * Delayed acks (docs/tuning.md "Delayed acks", the Python `SessionConfig.ack_delay`) against a
 * Python KCP echo server: in a ping-pong the ack of each echo rides with the next message (about
 * one datagram per round trip instead of two); a lone ack with nothing to ride with goes alone
 * once the delay is up, not before; `ackDelayMs: 0` sends an ack datagram per receive batch.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dial, type KcpSession } from "../src/kcp/session.js";
import { KcpUsageError } from "../src/kcp/errors.js";
import { startPython } from "./helpers/python.js";

const ROUNDS = 200;

/** `ROUNDS` round trips of 32 bytes, the next write in a microtask after each echo (as a promise-driven caller). */
async function pingPong(port: number, ackDelayMs: number | undefined): Promise<{ session: KcpSession; perRound: number; lastEcho: number }> {
  const session = await dial("127.0.0.1", port, { session: { idleTimeoutMs: 20000, ...(ackDelayMs === undefined ? {} : { ackDelayMs }) } });
  const msg = new Uint8Array(32).fill(7);
  let got = 0;
  let rounds = 0;
  let lastEcho = 0;
  let before = 0;
  await new Promise<void>((resolve, reject) => {
    const limit = setTimeout(() => reject(new Error(`ping-pong: ${rounds} of ${ROUNDS} rounds in 20 s`)), 20000);
    session.onData((d) => {
      got += d.length;
      if (got < msg.length) return;
      got -= msg.length;
      rounds++;
      if (rounds === 10) before = session.counters.outPkts; // after the warm-up
      if (rounds === ROUNDS) {
        lastEcho = performance.now();
        clearTimeout(limit);
        resolve();
      } else queueMicrotask(() => session.write(msg));
    });
    session.write(msg);
  });
  return { session, perRound: (session.counters.outPkts - before) / (ROUNDS - 10), lastEcho };
}

/** Resolves once `cond()` holds (checked every ms), rejects after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("delayed acks: one datagram per round trip, a lone ack goes alone after the delay; ackDelayMs 0 acks at once", async () => {
  const server = await startPython(["tests/clients/kcp_echo_server.py", "null", "", "0", "0"]);
  try {
    const port = Number(server.firstLine);
    const delayed = await pingPong(port, undefined);
    assert.ok(delayed.perRound < 1.3, `default ackDelayMs: ${delayed.perRound} datagrams per round trip`);
    // the last echo's ack has nothing to ride with: it goes alone, once the delay is up
    const sent = delayed.session.counters.outPkts;
    await until(() => delayed.session.counters.outPkts > sent, 2000, "the lone ack");
    const waited = performance.now() - delayed.lastEcho;
    assert.equal(delayed.session.counters.outPkts, sent + 1);
    assert.ok(waited >= 3, `the lone ack went after ${waited.toFixed(1)} ms, before the 5 ms delay`);
    delayed.session.close();

    const eager = await pingPong(port, 0);
    assert.ok(eager.perRound > 1.8, `ackDelayMs 0: ${eager.perRound} datagrams per round trip`);
    eager.session.close();
  } finally {
    await server.stop();
  }
});

test("ackDelayMs below 0 is a usage error", async () => {
  await assert.rejects(dial("127.0.0.1", 9, { session: { ackDelayMs: -1 } }), KcpUsageError);
});
