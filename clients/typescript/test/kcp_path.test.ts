import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { CompatPath, compatConv, type DatagramLink } from "../src/kcp/path.js";
import { KcpSession } from "../src/kcp/session.js";
import { DeadLinkError, KcpUsageError } from "../src/kcp/errors.js";
import { deriveKey, newCrypt } from "../src/kcp/crypt.js";
import { within } from "./helpers/session.js";

/** Two in-memory links joined back to back; `drop(datagram)` may lose a datagram on the way. */
function linkPair(drop: (d: Uint8Array) => boolean = () => false): [MemoryLink, MemoryLink] {
  const a = new MemoryLink(drop);
  const b = new MemoryLink(drop);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

class MemoryLink implements DatagramLink {
  peer: MemoryLink | null = null;
  closed = false;
  sent = 0;
  private receiver: ((d: Uint8Array) => void) | null = null;
  constructor(private readonly drop: (d: Uint8Array) => boolean) {}
  send(d: Uint8Array): void {
    if (this.closed) return;
    this.sent++;
    const peer = this.peer;
    if (peer === null || this.drop(d)) return;
    const copy = d.slice();
    setImmediate(() => {
      if (!peer.closed) peer.receiver?.(copy);
    });
  }
  setReceiver(r: (d: Uint8Array) => void): void {
    this.receiver = r;
  }
  close(): void {
    this.closed = true;
  }
}

test("path: two sessions over any DatagramLink (in memory, 20 % loss, message mode, aes + FEC 3/2)", async () => {
  let seed = 12345;
  const [la, lb] = linkPair(() => {
    seed = (seed * 1103515245 + 12345) % 2147483648; // a seeded LCG: 20 % loss
    return seed % 100 < 20;
  });
  const crypt = newCrypt("aes", deriveKey("memory"));
  const opts = { crypt, fec: [3, 2] as [number, number], stream: false, idleTimeoutMs: 10000 };
  const a = new KcpSession(new CompatPath(la), 5, opts);
  const b = new KcpSession(new CompatPath(lb), 5, opts);
  const messages = Array.from({ length: 60 }, (_, i) => randomBytes(1 + ((i * 977) % 9000)));
  const got: Buffer[] = [];
  const done = new Promise<void>((resolve) =>
    b.onData((d) => {
      got.push(Buffer.from(d));
      if (got.length === messages.length) resolve();
    }),
  );
  for (const m of messages) if (!a.write(m)) await within(a.drained(), 10000, "drain");
  await within(done, 20000, "all messages");
  assert.deepEqual(got, messages); // message mode: one onData per message, in order
  assert.ok(a.counters.retransSegs > 0 && b.counters.fecRecovered > 0, JSON.stringify([a.counters, b.counters]));
  assert.equal(a.mode, "compat");
  // close lingers until everything is acknowledged, then ends; the link is closed by the path
  a.close();
  await within(a.whenClosed(), 6000, "close");
  assert.equal(a.closeReason, "closed");
  assert.ok(la.closed);
  b.abort();
  assert.ok(lb.closed && b.closed);
});

test("path: a peer that never answers ends the session with DeadLinkError after dead_link sends", async () => {
  const [la] = linkPair(() => true);
  const s = new KcpSession(new CompatPath(la), 9, { deadLink: 3, nodelay: [1, 10, 0, 1], idleTimeoutMs: 0 });
  const ended = new Promise<Error | undefined>((r) => s.onClose(r));
  s.write(new Uint8Array(10));
  const err = await within(ended, 5000, "dead link");
  assert.ok(err instanceof DeadLinkError, String(err));
  assert.equal(s.closeReason, "dead link");
  await assert.rejects(Promise.resolve().then(() => s.drained()), DeadLinkError);
});

test("path: pause() holds data in the engine (the window closes), resume() delivers it", async () => {
  const [la, lb] = linkPair();
  const a = new KcpSession(new CompatPath(la), 1, { idleTimeoutMs: 0 });
  const b = new KcpSession(new CompatPath(lb), 1, { idleTimeoutMs: 0, rcvWnd: 128 });
  let received = 0;
  b.onData((d) => {
    received += d.length;
  });
  b.pause();
  const total = 200 * 1024;
  a.write(randomBytes(total));
  // without reading, b takes at most its receive window (128 segments) and the rest waits at a
  await within(
    (async () => {
      while (a.engine.rmtWnd !== 0) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    "window closed",
  );
  assert.equal(received, 0);
  assert.ok(b.engine.nrcvQue <= 128 && a.pendingSegments > 0);
  b.resume();
  await within(
    (async () => {
      while (received < total) await new Promise((r) => setTimeout(r, 5));
    })(),
    10000,
    "resumed",
  );
  assert.equal(received, total);
  a.abort();
  b.abort();
});

test("path: a compat dial's default conv never starts like a secure transport packet (0xC8, 0xC9)", () => {
  const firsts = new Set<number>();
  for (let b = 0; b < 256; b++) firsts.add(compatConv(Uint8Array.from([b, 1, 2, 3])) & 0xff);
  assert.equal(firsts.size, 254);
  assert.ok(!firsts.has(0xc8) && !firsts.has(0xc9));
  assert.equal(compatConv(Uint8Array.from([0xc8, 1, 2, 3])), 0x030201d8); // the Python compat_conv's value
  assert.equal(compatConv(Uint8Array.from([0x11, 0x22, 0x33, 0xf4])), 0xf4332211); // little-endian, unsigned
  assert.throws(() => compatConv(Uint8Array.from([1, 2, 3])), KcpUsageError);
});
