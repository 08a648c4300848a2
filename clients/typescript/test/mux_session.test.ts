import { test } from "node:test";
import assert from "node:assert/strict";
import { MuxCore, MuxClosedError, MuxStreamClosedError, StreamState } from "../src/mux/core.js";
import { MuxSession } from "../src/mux/session.js";
import { encodeFrame, packUpd, CMD_PSH, CMD_SYN, CMD_FIN } from "../src/mux/frame.js";
import { memoryTransportPair } from "../src/rpc/connection.js";
import { waitFor } from "./support/rpc_python.js";

const NO_KA = { keepaliveDisabled: true };

function pair(config: Record<string, unknown> = {}): [MuxSession, MuxSession] {
  const [a, b] = memoryTransportPair();
  return [new MuxSession(a, { client: true, config: { ...NO_KA, ...config } }), new MuxSession(b, { client: false, config: { ...NO_KA, ...config } })];
}

async function readAll(s: { read(): Promise<Uint8Array> }): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const d = await s.read();
    if (!d.length) break;
    parts.push(d);
  }
  return new Uint8Array(Buffer.concat(parts));
}

for (const version of [1, 2]) {
  test(`v${version}: streams open both ways, carry data in order, half-close to EOF`, async () => {
    const [c, s] = pair({ version });
    const a = c.openStream();
    assert.equal(a.id, 3);
    const big = new Uint8Array(300000).map((_, i) => (i * 7) & 0xff);
    a.write(big);
    a.close();
    const b = await s.acceptStream();
    assert.equal(b.id, 3);
    assert.deepEqual(await readAll(b), big);
    // half-close: b can still write back after reading EOF
    b.write(new TextEncoder().encode("pong"));
    b.close();
    assert.equal(new TextDecoder().decode(await readAll(a)), "pong");
    // server-opened stream gets an even id
    const sb = s.openStream();
    assert.equal(sb.id, 2);
    sb.write(new Uint8Array([1]));
    const ca = await c.acceptStream();
    assert.equal(ca.id, 2);
    assert.deepEqual(await ca.read(), new Uint8Array([1]));
    await waitFor(() => c.counters.streams_released === 1, "stream 3 released (FIN both ways)");
    assert.throws(() => a.write(new Uint8Array([1])), MuxStreamClosedError);
    c.close();
    await s.waitClosed();
    await assert.rejects(s.acceptStream(), MuxClosedError);
  });
}

test("v2: a reader that stops holds its sender to one window; reading resumes it", async () => {
  const window = 65536;
  const [c, s] = pair({ version: 2, maxStreamBuffer: window });
  const a = c.openStream();
  a.write(new Uint8Array(1)); // the first read sends the first UPD (shrinks the 256 KiB guess)
  const b = await s.acceptStream();
  assert.equal((await b.read()).length, 1);
  await waitFor(() => c.counters.upd_in >= 1, "the first UPD");
  a.write(new Uint8Array(400000));
  await waitFor(() => c.core.pendingSend > 0 && s.counters.bytes_in >= window, "the window to fill");
  // nothing more flows while b does not read
  await new Promise((r) => setImmediate(r));
  const inflight = s.counters.bytes_in - 1;
  assert.ok(inflight <= window, `in flight ${inflight} > window ${window}`);
  assert.ok(c.core.pendingSend >= 400000 - window);
  let got = 0;
  while (got < 400000) got += (await b.read()).length;
  assert.equal(got, 400000);
  assert.equal(c.core.pendingSend, 0);
  c.close();
});

test("v1: the session bucket stops parsing; reading gives tokens back", async () => {
  const [c, s] = pair({ version: 1, maxReceiveBuffer: 100000, maxStreamBuffer: 65536 });
  const a = c.openStream();
  a.write(new Uint8Array(250000));
  const b = await s.acceptStream();
  await waitFor(() => s.counters.recv_paused >= 1, "the bucket to run dry");
  assert.ok(s.counters.bytes_in <= 100000 + 32768);
  let got = 0;
  while (got < 250000) got += (await b.read()).length;
  assert.equal(got, 250000);
  c.close();
});

test("hostile frames: data for unknown streams is dropped and counted; a bad version ends the session", async () => {
  const core = new MuxCore({ version: 2, keepaliveDisabled: true }, false, 0);
  core.receiveData(encodeFrame(2, CMD_PSH, 9, new Uint8Array([1, 2, 3])));
  assert.equal(core.counters.dropped_unknown_stream, 1);
  core.receiveData(encodeFrame(2, CMD_SYN, 3));
  core.receiveData(encodeFrame(2, CMD_SYN, 3));
  assert.equal(core.counters.duplicate_syn, 1);
  core.receiveData(encodeFrame(2, CMD_FIN, 3));
  core.receiveData(encodeFrame(2, CMD_FIN, 3));
  assert.equal(core.counters.duplicate_fin, 1);
  core.receiveData(encodeFrame(2, CMD_PSH, 3, new Uint8Array([1])));
  assert.equal(core.counters.dropped_after_fin, 1);
  // a UPD acknowledging bytes never sent
  core.receiveData(encodeFrame(2, CMD_SYN, 5));
  core.receiveData(packUpd(2, 5, 10, 65536));
  assert.equal(core.counters.bad_upd, 1);
  assert.equal(core.counters.protocol_errors, 1);
  assert.ok(core.closed);
  assert.match(core.error?.message ?? "", /consumed more than was sent/);
  const c2 = new MuxCore({ version: 1, keepaliveDisabled: true }, false, 0);
  const st = (c2.receiveData(encodeFrame(1, CMD_SYN, 3)), c2.getStream(3));
  assert.ok(st);
  c2.receiveData(new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(c2.counters.bad_version, 1);
  assert.ok(c2.closed);
  assert.equal(st.state, StreamState.DEAD);
  assert.throws(() => c2.read(st), MuxClosedError);
});

test("a SYN beyond maxStreams is answered with FIN and counted", () => {
  const core = new MuxCore({ version: 1, keepaliveDisabled: true, maxStreams: 2 }, false, 0);
  core.receiveData(encodeFrame(1, CMD_SYN, 3));
  core.receiveData(encodeFrame(1, CMD_SYN, 5));
  core.receiveData(encodeFrame(1, CMD_SYN, 7));
  assert.equal(core.counters.streams_refused, 1);
  assert.equal(core.numStreams, 2);
  const out = core.dataToSend();
  assert.deepEqual([...out], [...encodeFrame(1, CMD_FIN, 7)]);
});

test("keepalive: NOP each interval when idle; silence past the timeout ends the session", () => {
  const core = new MuxCore({ version: 1, keepaliveInterval: 1, keepaliveTimeout: 3 }, true, 0);
  assert.equal(core.nextTimer(), 1000);
  core.handleTimer(1000);
  assert.equal(core.counters.nop_out, 1);
  assert.deepEqual([...core.dataToSend()], [1, 3, 0, 0, 0, 0, 0, 0]);
  core.receiveData(encodeFrame(1, 3, 0)); // a NOP from the peer
  core.handleTimer(3000); // something arrived since the start: alive
  assert.ok(!core.closed);
  core.handleTimer(6000); // nothing since 3000
  assert.ok(core.closed);
  assert.equal(core.counters.keepalive_timeouts, 1);
  assert.match(core.error?.message ?? "", /keepalive timeout/);
});

test("the transport's EOF fails streams not finished by the peer; finished ones read EOF", async () => {
  const [ta, tb] = memoryTransportPair();
  const c = new MuxSession(ta, { client: true, config: NO_KA });
  const s = new MuxSession(tb, { client: false, config: NO_KA });
  const a1 = c.openStream();
  const a2 = c.openStream();
  a1.write(new Uint8Array([1]));
  a2.write(new Uint8Array([2]));
  const b1 = await s.acceptStream();
  const b2 = await s.acceptStream();
  b2.close();
  assert.deepEqual(await b1.read(), new Uint8Array([1]));
  await waitFor(() => c.counters.fin_in === 1, "b2's FIN");
  tb.close(); // the server's transport goes away
  await c.waitClosed();
  await assert.rejects(a1.read(), MuxClosedError);
  assert.equal((await a2.read()).length, 0); // FIN came first: EOF
  assert.throws(() => c.openStream(), MuxClosedError);
});

test("a transport above its high-water mark gets nothing more until it drains", async () => {
  const written: Uint8Array[] = [];
  let release: (() => void) | null = null;
  const transport = {
    write(d: Uint8Array): boolean {
      written.push(d);
      return false; // always full after one write
    },
    drained(): Promise<void> {
      return new Promise<void>((r) => (release = r));
    },
    onData(): void {},
    onClose(): void {},
    close(): void {},
  };
  const m = new MuxSession(transport, { client: true, config: { version: 1, keepaliveDisabled: true, maxFrameSize: 1000 } });
  const s = m.openStream();
  s.write(new Uint8Array(3_000_000)); // dataToSend() hands over about 1 MiB at a time
  await waitFor(() => written.length === 1 && release !== null, "the first write");
  await new Promise((r) => setImmediate(r));
  assert.equal(written.length, 1); // blocked
  assert.ok(m.core.pendingSend > 0);
  (release as unknown as () => void)();
  await waitFor(() => written.length === 2, "the next write after drained()");
});

test("a transport that ends with its reason has it in the session's error (a KCP session closed by its peer)", () => {
  let closeCb: ((err?: Error) => void) | null = null;
  const transport = {
    closeReason: "",
    write: () => true,
    close: () => undefined,
    onData: () => undefined,
    onClose: (cb: (err?: Error) => void) => {
      closeCb = cb;
    },
  };
  const s = new MuxSession(transport, { client: true, config: NO_KA });
  transport.closeReason = "closed by peer: server busy: too many sessions from one address";
  closeCb!();
  assert.equal(s.core.error?.message, "session closed: closed by peer: server busy: too many sessions from one address");
  const core = new MuxCore({ ...NO_KA }, true, 0);
  core.connectionLost();
  assert.equal(core.error?.message, "session closed: the transport reached EOF");
});
