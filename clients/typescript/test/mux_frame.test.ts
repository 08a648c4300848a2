import { test } from "node:test";
import assert from "node:assert/strict";
import { CMD_NOP, CMD_PSH, CMD_UPD, SmuxFrameDecoder, encodeFrame, packUpd, MuxProtocolError, MuxUsageError } from "../src/mux/frame.js";
import { hex, pythonJson, unhex } from "./support/rpc_python.js";

interface Vectors {
  mux: Array<{ version: number; cmd?: number; sid: number; data?: string; upd?: [number, number]; hex: string }>;
}

test("smux frames encode exactly as kcprpc.mux.frame does, and decode back", () => {
  const v = pythonJson<Vectors>("tests/clients/ts_vectors.py");
  assert.ok(v.mux.length >= 7);
  for (const f of v.mux) {
    const mine = f.upd ? packUpd(f.version, f.sid, f.upd[0], f.upd[1]) : encodeFrame(f.version, f.cmd as number, f.sid, unhex(f.data ?? ""));
    assert.equal(hex(mine), f.hex, JSON.stringify(f).slice(0, 200));
    const dec = new SmuxFrameDecoder(f.version);
    // fed one byte at a time: framing must not depend on chunking
    const bytes = unhex(f.hex);
    let got = null;
    for (let i = 0; i < bytes.length; i++) {
      dec.feed(bytes.subarray(i, i + 1));
      const fr = dec.nextFrame();
      if (fr) got = fr;
      if (i < bytes.length - 1) assert.equal(fr, null);
    }
    assert.ok(got);
    assert.equal(got.streamId, f.sid);
    assert.equal(got.cmd, f.upd ? CMD_UPD : f.cmd);
  }
});

test("the decoder refuses what smux never sends, naming the counter", () => {
  const cases: Array<[number, Uint8Array, string]> = [
    [1, unhex("0200000003000000"), "bad_version"],
    [1, unhex("0104080003000000" + "00".repeat(8)), "bad_cmd"], // UPD in v1
    [2, unhex("0209000003000000"), "bad_cmd"],
    [2, unhex("0200010003000000ff"), "bad_length"], // SYN with payload
    [2, unhex("0204040003000000" + "00".repeat(4)), "bad_length"], // UPD of 4 bytes
    [1, unhex("0103010000000000aa"), "bad_length"], // NOP with payload
  ];
  for (const [ver, bytes, kind] of cases) {
    const d = new SmuxFrameDecoder(ver);
    d.feed(bytes);
    assert.throws(() => d.nextFrame(), (e: unknown) => e instanceof MuxProtocolError && e.kind === kind);
    // poisoned: it stays failed
    assert.throws(() => d.nextFrame(), MuxProtocolError);
  }
});

test("encodeFrame refuses values smux cannot carry", () => {
  assert.throws(() => encodeFrame(3, CMD_PSH, 1), MuxUsageError);
  assert.throws(() => encodeFrame(1, CMD_UPD, 1, new Uint8Array(8)), MuxUsageError);
  assert.throws(() => encodeFrame(1, CMD_NOP, 0, new Uint8Array(1)), MuxUsageError);
  assert.throws(() => encodeFrame(1, CMD_PSH, 2 ** 32), MuxUsageError);
  assert.throws(() => encodeFrame(1, CMD_PSH, 1, new Uint8Array(65536)), MuxUsageError);
});
