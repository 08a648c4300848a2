/**
 * The client's partial-frame limits (docs/rpc.md, "Receive limits"), against an in-memory server
 * written here that sends frames in pieces: a frame that stalls past `partialFrameTimeoutMs` fails
 * its call RESOURCE_EXHAUSTED (the connection goes on); frames in part on several streams share
 * `maxPartialFrameBytes` (a stream whose frame does not fit waits, FIFO); bad limits are UsageErrors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MuxSession, type MuxStream } from "../src/mux/session.js";
import { RPC_MUX_CONFIG } from "../src/mux/core.js";
import { MuxConnection, memoryTransportPair } from "../src/rpc/connection.js";
import { FrameDecoder, FrameType as T, encodeFrame } from "../src/rpc/frames.js";
import { Client, type ClientOptions } from "../src/rpc/client.js";
import { RpcError, Status, UsageError } from "../src/rpc/status.js";
import { FrameBudget } from "../src/rpc/receive.js";
import { waitFor } from "./support/rpc_python.js";

type Handler = (s: MuxStream, id: number, payload: unknown) => void;

/** A server that answers HELLO and hands each CALL to `handlers[method]`. */
function fakeServer(handlers: Record<string, Handler>): () => Promise<MuxConnection> {
  return async () => {
    const [a, b] = memoryTransportPair();
    const mux = new MuxSession(b, { client: false, config: { ...RPC_MUX_CONFIG, keepaliveDisabled: true } });
    void (async () => {
      for (;;) {
        let s: MuxStream;
        try {
          s = await mux.acceptStream();
        } catch {
          return;
        }
        void (async () => {
          const dec = new FrameDecoder(1 << 22);
          try {
            for (;;) {
              const d = await s.read();
              if (!d.length) return;
              for (const f of dec.feed(d)) {
                if (f.type === T.HELLO) s.write(encodeFrame(T.WELCOME, 0, { v: 1, sid: "s", hb: 1000, epoch: 1, max_msg: 1 << 22 }));
                else if (f.type === T.PING) s.write(encodeFrame(T.PONG, 0, [(f.body as unknown[])[0]]));
                else if (f.type === T.CALL) {
                  const [method, , , , payload] = f.body as [string, unknown, unknown, number, unknown];
                  handlers[method]?.(s, f.callId, payload);
                }
              }
            }
          } catch {
            // closed
          }
        })();
      }
    })();
    return new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
  };
}

/** The first `n` bytes of a MSG frame of `body` bytes (a string of that many 'x'), and the rest. */
function splitMsg(id: number, body: number, n: number): [Uint8Array, Uint8Array] {
  const f = encodeFrame(T.MSG, id, "x".repeat(body));
  return [f.subarray(0, n), f.subarray(n)];
}

const OPTS: ClientOptions = { heartbeat: null, streamFraming: "stream" };

test("a frame that stalls past partialFrameTimeoutMs fails its call RESOURCE_EXHAUSTED; the connection goes on", async () => {
  const c = await Client.connect(fakeServer({
    "t.S/stall": (s, id) => s.write(splitMsg(id, 100000, 5000)[0]), // the header and 5 KB of a 100 KB frame, then nothing
    "t.S/echo": (s, id, p) => s.write(encodeFrame(T.REPLY, id, [p, null, null])),
  }), { ...OPTS, partialFrameTimeoutMs: 200 });
  try {
    const t0 = Date.now();
    await assert.rejects(async () => {
      for await (const _ of c.serverStream("t.S/stall", null)) assert.fail("no message is complete");
    }, (e: unknown) => e instanceof RpcError && e.code === Status.RESOURCE_EXHAUSTED && /partialFrameTimeoutMs/.test(e.message));
    const took = Date.now() - t0;
    assert.ok(took >= 200 && took < 2000, `dropped after ${took} ms`);
    assert.equal(c.counters.recv_frame_timeouts, 1);
    assert.equal(await c.unary("t.S/echo", "still here"), "still here");
  } finally {
    await c.close();
  }
});

test("frames in part on several streams share maxPartialFrameBytes: the stream whose frame does not fit waits until it does", async () => {
  let first: { s: MuxStream; rest: Uint8Array } | null = null;
  let second: { s: MuxStream; rest: Uint8Array } | null = null;
  const c = await Client.connect(fakeServer({
    "t.S/a": (s, id) => {
      const [head, rest] = splitMsg(id, 60000, 1000);
      s.write(head);
      first = { s, rest };
    },
    "t.S/b": (s, id) => {
      const [head, rest] = splitMsg(id, 60000, 1000);
      s.write(head);
      second = { s, rest: Buffer.concat([rest, encodeFrame(T.TRAILER, id, [0, "", null, {}])]) };
    },
  }), { ...OPTS, maxMessageSize: 65536, maxPartialFrameBytes: 65536 + 9, partialFrameTimeoutMs: null });
  try {
    const got: string[] = [] as string[];
    const a = c.serverStream<null, string>("t.S/a", null);
    const ia = a[Symbol.asyncIterator]();
    const na = ia.next();
    await waitFor(() => first !== null, "call a's first bytes");
    const b = (async () => {
      for await (const m of c.serverStream<null, string>("t.S/b", null)) got.push(`b${m.length}`);
    })();
    await waitFor(() => c.counters.recv_frame_waits === 1, "call b's reader to wait for the budget");
    const g = second as unknown as { s: MuxStream; rest: Uint8Array };
    g.s.write(g.rest); // b's frame is all there now, but its reader waits for a's to complete
    await new Promise<void>((r) => setImmediate(r));
    assert.equal(got.length, 0, "b's frame is not read while a's holds the budget");
    const f = first as unknown as { s: MuxStream; rest: Uint8Array };
    f.s.write(f.rest);
    const m = await na;
    got.push(`a${(m.value as string).length}`);
    await b;
    a.cancel();
    assert.deepEqual(got.sort(), ["a60000", "b60000"]);
    assert.equal(c.counters.recv_frame_waits, 1);
  } finally {
    await c.close();
  }
});

test("the budget grants in FIFO order and the control stream forces; bad limits are UsageErrors", async () => {
  const budget = new FrameBudget(100);
  assert.ok(budget.tryReserve(60));
  const order: string[] = [];
  const w1 = budget.reserve(50).then(() => order.push("w1"));
  const w2 = budget.reserve(10).then(() => order.push("w2"));
  assert.equal(budget.tryReserve(10), false, "nobody jumps the queue");
  budget.force(200);
  assert.equal(budget.used, 260);
  budget.release(200);
  budget.release(60);
  await Promise.all([w1, w2]);
  assert.deepEqual(order, ["w1", "w2"]);
  assert.equal(budget.used, 60);
  const never = fakeServer({});
  await assert.rejects(Client.connect(never, { maxMessageSize: 1000, maxPartialFrameBytes: 1008 }), UsageError);
  await assert.rejects(Client.connect(never, { partialFrameTimeoutMs: 0 }), UsageError);
});
