/** The heartbeat policy (sans-I/O, as the Python client's kcprpc.heartbeat): a quiet connection stretches its interval, and a lost PING is followed by the next one an interval after it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Heartbeat } from "../src/rpc/heartbeat.js";

/** Drive a quiet connection for 20 s (a 40 ms round trip); the PINGs sent from 8 s on, up to `lost` of them, go unanswered. */
function run(lost: number): { pings: number[]; dead: boolean } {
  const hb = new Heartbeat({ intervalMs: 1000, timeoutMs: 5000 }, 0);
  let now = 0;
  let dropped = 0;
  const pings: number[] = [];
  while (now < 20000) {
    now += hb.nextWakeup(now);
    const [action, nonce] = hb.poll(now);
    if (action === "dead") return { pings, dead: true };
    if (action === "ping") {
      pings.push(now);
      if (now >= 8000 && dropped < lost) dropped++;
      else hb.onPong(nonce, now + 40);
    }
  }
  return { pings, dead: false };
}

test("one or two lost PINGs on a quiet, stretched connection are not a dead peer; three are", () => {
  const one = run(1);
  assert.equal(one.dead, false);
  const at = one.pings.findIndex((t) => t >= 8000);
  assert.equal((one.pings[at + 1] as number) - (one.pings[at] as number), 1000); // not the stretched 2,500
  assert.equal(run(2).dead, false);
  assert.equal(run(3).dead, true);
});
