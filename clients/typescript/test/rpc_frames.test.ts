import { test } from "node:test";
import assert from "node:assert/strict";
import { FLAG_END, FrameDecoder, FrameType as T, OVERSIZED, REFUSED, UNDECODABLE, decodeDatagram, encodeFrame, estimateDecoded, packBody } from "../src/rpc/frames.js";
import { resumeProof } from "../src/rpc/client.js";
import { UsageError } from "../src/rpc/status.js";
import { hex, pythonJson, unhex } from "./support/rpc_python.js";

interface Vectors {
  rpc: Array<{ name: string; type: number; cid: number; hex: string }>;
  resume: { token: string; sid: string; binding: string; proof: string };
}

const range32 = new Uint8Array(32).map((_, i) => i);

/** The same frames tests/clients/ts_vectors.py builds, made with our encoder. */
const MINE: Record<string, Uint8Array> = {
  hello: encodeFrame(T.HELLO, 0, { v: 1, md: { token: "t", n: 7 } }),
  hello_restore: encodeFrame(T.HELLO, 0, { v: 1, md: {}, restore: { rooms: ["r1"], topics: ["t1"], offsets: { "topic:t1": [5, 9] } }, resume: { sid: "abc", proof: range32 } }),
  call_unary: encodeFrame(T.CALL, 7, ["game.Lobby/join", { token: "x" }, 5000, FLAG_END, { room: "r1" }]),
  call_stream: encodeFrame(T.CALL, 8, ["svc/bidi", null, null, 0, null]),
  msg: encodeFrame(T.MSG, 8, { a: [1, -2, 3.5, true, null, "é"], b: new Uint8Array([0, 255]) }),
  end: encodeFrame(T.END, 8, null),
  cancel: encodeFrame(T.CANCEL, 9, null),
  headers: encodeFrame(T.HEADERS, 8, { x: 1 }),
  trailer: encodeFrame(T.TRAILER, 7, [5, "no room r1", null, null]),
  reply: encodeFrame(T.REPLY, 7, [{ ok: true }, null, { t: "m" }]),
  event5: encodeFrame(T.EVENT, 0, ["Chat", { text: "hi" }, "room:r1", 3, 42]),
  event6: encodeFrame(T.EVENT, 0, ["Chat", { text: "hi" }, "topic:t", 3, 42, 1]),
  event7: encodeFrame(T.EVENT, 0, ["Pos", { x: 1 }, null, 4, 123456, 0, "entity:42"]),
  notify: encodeFrame(T.NOTIFY, 0, ["svc/note", [1, 2], null]),
  ping: encodeFrame(T.PING, 0, [3, 1500]),
  pong: encodeFrame(T.PONG, 0, [3]),
  goaway: encodeFrame(T.GOAWAY, 0, [0, "client closed"]),
  rooms: encodeFrame(T.ROOMS, 0, [true, "r1"]),
  big_ints: encodeFrame(T.MSG, 1, [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -129, -(2 ** 31), 2 ** 53 - 1]),
};

test("every RPC frame type encodes byte for byte as kcprpc.protocol.frames does", () => {
  const v = pythonJson<Vectors>("tests/clients/ts_vectors.py");
  assert.equal(v.rpc.length, Object.keys(MINE).length);
  for (const f of v.rpc) {
    const mine = MINE[f.name];
    assert.ok(mine, f.name);
    assert.equal(hex(mine), f.hex, f.name);
    // and the stream decoder reads Python's bytes back, fed in 3-byte pieces
    const dec = new FrameDecoder(1 << 20);
    const bytes = unhex(f.hex);
    const got = [];
    for (let i = 0; i < bytes.length; i += 3) got.push(...dec.feed(bytes.subarray(i, i + 3)));
    assert.equal(got.length, 1, f.name);
    assert.equal(got[0]?.type, f.type);
    assert.equal(got[0]?.callId, f.cid);
    assert.deepEqual(encodeFrame(f.type, f.cid, got[0]?.body), bytes, f.name);
  }
});

test("the resume proof matches kcprpc.resume.resume_proof", () => {
  const v = pythonJson<Vectors>("tests/clients/ts_vectors.py");
  assert.equal(hex(resumeProof(unhex(v.resume.token), v.resume.sid, unhex(v.resume.binding))), v.resume.proof);
});

test("bad bodies: undecodable and ext types are marked, oversized ones skipped unread", () => {
  const dec = new FrameDecoder(16);
  const ext = new Uint8Array([0, 0, 0, 6, T.MSG, 0, 0, 0, 1, 0xd6, 0xff, 0, 0, 0, 0]); // a timestamp ext
  const junk = new Uint8Array([0, 0, 0, 1, T.MSG, 0, 0, 0, 2, 0xc1]); // 0xc1: never used
  const big = encodeFrame(T.MSG, 3, "x".repeat(40));
  const ok = encodeFrame(T.MSG, 4, 1);
  const frames = [...dec.feed(ext), ...dec.feed(junk), ...dec.feed(big.subarray(0, 20)), ...dec.feed(big.subarray(20)), ...dec.feed(ok)];
  assert.deepEqual(frames.map((f) => f.body), [UNDECODABLE, UNDECODABLE, OVERSIZED, 1]);
  assert.equal(dec.buffered, 0);
  assert.equal(decodeDatagram(ok)?.body, 1);
  assert.equal(decodeDatagram(ok.subarray(0, ok.length - 1)), null); // length does not match the datagram
  assert.throws(() => encodeFrame(T.MSG, 1, new Date()), UsageError);
});

test("a body that would decode into too much is refused without being decoded", () => {
  // 300 KB of empty maps in one array: 300 KB on the wire, ~19 MB of objects by the estimate
  const n = 300000;
  const bomb = new Uint8Array(5 + n);
  bomb.set([0xdd, 0, 0, 0, 0]);
  new DataView(bomb.buffer).setUint32(1, n);
  bomb.fill(0x80, 5);
  assert.equal(estimateDecoded(bomb, 8 << 20), -1);
  const dec = new FrameDecoder(4 << 20, 8 << 20);
  const frame = new Uint8Array(9 + bomb.length);
  new DataView(frame.buffer).setUint32(0, bomb.length);
  frame[4] = T.MSG;
  frame[8] = 1;
  frame.set(bomb, 9);
  const [f] = dec.feed(frame);
  assert.equal(f?.body, REFUSED);
  assert.equal(dec.refused, 1);
  // an ordinary large body is walked and decoded
  const ok = encodeFrame(T.MSG, 2, { blob: new Uint8Array(1 << 20), list: [...Array(1000).keys()] });
  const [g] = dec.feed(ok);
  assert.equal((g?.body as { list: number[] }).list.length, 1000);
  assert.equal(dec.scanned, 2);
  // estimates: exact walks of every header kind, and malformed bodies
  assert.ok(estimateDecoded(packBody({ a: [1, -1, 300, -300, 70000, 2 ** 40, 1.5, "é", null, true] }), 1e9) > 0);
  assert.equal(estimateDecoded(new Uint8Array([0x92, 0x01]), 1e9), -2); // truncated
  assert.equal(estimateDecoded(new Uint8Array([0x01, 0x02]), 1e9), -2); // trailing bytes
  assert.equal(estimateDecoded(new Uint8Array([0xd6, 0xff, 0, 0, 0, 0]), 1e9), -2); // ext
});
