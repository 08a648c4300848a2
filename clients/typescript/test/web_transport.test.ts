/**
 * The web transports against IN-PROCESS FAKE peers (test/support/web_fakes.ts: a fake WebSocket
 * and a fake WebTransport whose server end the test plays byte for byte; the real Python server
 * is in web_e2e.test.ts): the codec, OPEN → ACCEPT / REFUSE / close codes as RpcErrors, STREAM
 * and DATAGRAM delivery, protocol errors counted and closed, bounded receive and send queues, a
 * mux session running over them, and connectWeb's discovery and transport choice, with its
 * reconnect policies (the WebTransport back-off on an injected clock, discovery re-read).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MuxSession, type ByteTransport } from "../src/mux/session.js";
import { RPC_MUX_CONFIG } from "../src/mux/core.js";
import { MuxConnection, type CloseInfo } from "../src/rpc/connection.js";
import { RpcError, Status, UsageError } from "../src/rpc/status.js";
import { WebSocketTransport } from "../src/web/websocket.js";
import { WebTransportTransport } from "../src/web/webtransport.js";
import { discover, webConnector, type FetchLike } from "../src/web/connect.js";
import { WebTransportBackoff } from "../src/web/fallback.js";
import { ACCEPT_SIZE, WebKind, decodeAnswer, decodeMessage, encodeMessage, encodeOpen, fromBase64, parseDiscovery } from "../src/web/framing.js";
import { FakeWebSocket, FakeWebTransport } from "./support/web_fakes.js";
import { waitFor } from "./support/rpc_python.js";

const BINDING = Uint8Array.from({ length: 16 }, (_, i) => i + 100);

function accept(muxVersion = 2, maxDatagram = 1200, binding = BINDING): Uint8Array {
  return Uint8Array.from([WebKind.ACCEPT, 1, muxVersion, maxDatagram >> 8, maxDatagram & 0xff, ...binding]);
}
function refuse(status: number, message: string): Uint8Array {
  const m = new TextEncoder().encode(message);
  return Uint8Array.from([WebKind.REFUSE, status, m.length >> 8, m.length & 0xff, ...m]);
}
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

async function rejects(p: Promise<unknown>, code: Status, message?: RegExp): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcError, `an RpcError, not ${String(e)}`);
    assert.equal(Status[e.code], Status[code], e.message);
    if (message) assert.match(e.statusMessage, message);
    return e;
  }
  assert.fail("expected a rejection");
}

/** A WebSocketTransport over a fake socket the test has accepted. */
async function openWs(opts: Parameters<typeof WebSocketTransport.open>[1] = {}, answer = accept()): Promise<{ t: WebSocketTransport; ws: FakeWebSocket }> {
  const p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, ...opts });
  const ws = FakeWebSocket.last();
  ws.accept();
  ws.message(answer);
  return { t: await p, ws };
}

// ------------------------------------------------------------------ codec

test("codec: OPEN, ACCEPT, REFUSE, STREAM, DATAGRAM as docs/wire-format/web.md lays them out", () => {
  assert.deepEqual([...encodeOpen(bytes("tk"), 2)], [1, 1, 2, 0, 2, 0x74, 0x6b]);
  assert.deepEqual([...encodeOpen(new Uint8Array(0), 1)], [1, 1, 1, 0, 0]);
  assert.throws(() => encodeOpen(new Uint8Array(1025), 2), RangeError);
  assert.throws(() => encodeOpen(new Uint8Array(0), 3), RangeError);
  const a = decodeAnswer(accept(1, 0x1234), 2);
  assert.equal(a.kind, "accept");
  if (a.kind === "accept") {
    assert.equal(a.muxVersion, 1);
    assert.equal(a.maxDatagram, 0x1234);
    assert.deepEqual(a.binding, BINDING);
    assert.equal(a.used, ACCEPT_SIZE);
  }
  const r = decodeAnswer(refuse(16, "bad token é"), 2);
  assert.ok(r.kind === "refuse" && r.status === 16 && r.message === "bad token é");
  // errors are values, never throws
  const bad: Array<[Uint8Array, string]> = [
    [new Uint8Array(0), "short"],
    [Uint8Array.from([9, 1, 2]), "bad_kind"],
    [accept().subarray(0, 10), "short"],
    [Uint8Array.from([...accept(), 0]), "too_long"],
    [Uint8Array.from([2, 2, 2, 0, 0, ...BINDING]), "bad_version"],
    [accept(2), "bad_mux_version"], // offered 1 below
    [accept(0), "bad_mux_version"],
    [Uint8Array.from([5, 16, 1, 1, ...new Uint8Array(257)]), "too_long"],
    [Uint8Array.from([5, 16, 0, 2, 0xff, 0xfe]), "bad_utf8"],
    [Uint8Array.from([5, 16, 0, 5, 0x61]), "short"],
  ];
  for (const [i, [data, error]] of bad.entries()) {
    const d = decodeAnswer(data, i === 5 ? 1 : 2);
    assert.ok(d.kind === "error" && d.error === error, `case ${i}: ${JSON.stringify(d)}`);
  }
  // a stream gives the answer in parts: incomplete until whole, then the rest is smux data
  assert.equal(decodeAnswer(accept().subarray(0, 7), 2, true).kind, "incomplete");
  const withData = Uint8Array.from([...accept(), 7, 7]);
  const s = decodeAnswer(withData, 2, true);
  assert.ok(s.kind === "accept" && s.used === ACCEPT_SIZE);
  assert.deepEqual([...encodeMessage(WebKind.STREAM, bytes("ab"))], [3, 0x61, 0x62]);
  assert.deepEqual(decodeMessage(Uint8Array.from([4])), { kind: "datagram", data: new Uint8Array(0) });
  assert.equal((decodeMessage(Uint8Array.from([3])) as { error: string }).error, "short");
  assert.equal((decodeMessage(Uint8Array.from([1, 1, 2, 0, 0])) as { error: string }).error, "bad_kind");
});

test("codec: discovery documents and base64 certificate hashes", () => {
  assert.deepEqual(parseDiscovery({ websocket: "/kcprpc" }), { websocket: "/kcprpc", webtransport: null });
  assert.deepEqual(parseDiscovery({ websocket: "/ws", webtransport: { url: "https://h:4433/kcprpc", certificateHashes: ["AAAA"] } }), {
    websocket: "/ws", webtransport: { url: "https://h:4433/kcprpc", certificateHashes: ["AAAA"] },
  });
  for (const bad of [null, [], "x", { websocket: 1 }, { webtransport: { url: 1 } }, { webtransport: { url: "u", certificateHashes: [1] } }]) {
    assert.ok("error" in parseDiscovery(bad), JSON.stringify(bad));
  }
  const h = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
  const b64 = Buffer.from(h).toString("base64");
  assert.deepEqual(fromBase64(b64), h);
  assert.deepEqual(fromBase64(b64.replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_")), h);
  assert.equal(fromBase64("not base64!"), null);
});

// ------------------------------------------------------------------ WebSocket (fake peer)

test("WebSocket (fake peer): OPEN with token and mux version, ACCEPT gives binding, mux version and datagram size", async () => {
  const p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, token: "tök", muxVersion: 2 });
  const ws = FakeWebSocket.last();
  assert.deepEqual(ws.protocols, ["kcprpc.v1"]);
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(ws.sent.length, 0, "nothing before the handshake");
  ws.accept();
  assert.deepEqual([...(ws.sent[0] as Uint8Array)], [...encodeOpen(bytes("tök"), 2)]);
  ws.message(accept(1, 900));
  const t = await p;
  assert.deepEqual(t.channelBinding, BINDING);
  assert.equal(t.muxVersion, 1);
  assert.equal(t.maxDatagramSize, 900);
  assert.equal(t.remoteAddress, "ws://fake/kcprpc");
  assert.equal(t.wireMode, null);
});

test("WebSocket (fake peer): a REFUSE or a close code 4000+status is an RpcError with that status and message", async () => {
  let p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  let ws = FakeWebSocket.last();
  ws.accept();
  ws.message(refuse(Status.UNAUTHENTICATED, "token refused"));
  await rejects(p, Status.UNAUTHENTICATED, /^token refused$/);
  assert.equal(ws.closedWith?.code, 1000, "the client closes after a refusal");

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  ws = FakeWebSocket.last();
  ws.accept();
  ws.serverClose(4000 + Status.RESOURCE_EXHAUSTED, "too many connections");
  await rejects(p, Status.RESOURCE_EXHAUSTED, /too many connections/);

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  FakeWebSocket.last().serverClose(1006);
  await rejects(p, Status.UNAVAILABLE, /closed before the server answered \(code 1006/);

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  FakeWebSocket.last().accept("");
  await rejects(p, Status.FAILED_PRECONDITION, /did not select the subprotocol kcprpc\.v1/);

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  ws = FakeWebSocket.last();
  ws.accept();
  ws.message(accept(3));
  await rejects(p, Status.UNAVAILABLE, /smux version 3/);

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket });
  ws = FakeWebSocket.last();
  ws.accept();
  ws.message("hello");
  await rejects(p, Status.UNAVAILABLE, /text message/);

  p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, openTimeoutMs: 30 });
  FakeWebSocket.last().accept();
  await rejects(p, Status.UNAVAILABLE, /no answer from ws:\/\/fake\/kcprpc within/);
  assert.equal(FakeWebSocket.last().closedWith?.code, 1000);

  assert.throws(() => WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, token: new Uint8Array(1025) }), UsageError);
  assert.throws(() => WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, sendHighWater: 0 }), UsageError);
  assert.throws(() => WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, token: 7 as unknown as string }), /the token is a string or a Uint8Array/);
  assert.throws(() => WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, muxVersion: 3 as 2 }), /smux version is 1 or 2/);
});

test("WebSocket (fake peer): STREAM bytes go to the mux, DATAGRAMs to their receiver; writes are split into STREAM messages", async () => {
  const { t, ws } = await openWs({ maxMessageSize: 64 });
  const got: Uint8Array[] = [];
  const dgrams: Uint8Array[] = [];
  // bytes that came before a receiver was registered are held for it
  ws.message(encodeMessage(WebKind.STREAM, bytes("early")));
  t.onData((d) => got.push(d.slice()));
  t.onDatagram((d) => dgrams.push(d.slice()));
  ws.message(encodeMessage(WebKind.STREAM, bytes("abc")));
  ws.message(encodeMessage(WebKind.DATAGRAM, bytes("dg")));
  assert.deepEqual(got.map((d) => new TextDecoder().decode(d)), ["early", "abc"]);
  assert.deepEqual(dgrams.map((d) => new TextDecoder().decode(d)), ["dg"]);
  assert.equal(t.maxDatagramSize, 63, "a datagram fits one message");

  const data = Uint8Array.from({ length: 200 }, (_, i) => i);
  ws.sent.length = 0;
  assert.equal(t.write(data), true);
  assert.ok(ws.sent.every((m) => m[0] === WebKind.STREAM && m.length <= 64 && m.length > 1));
  assert.deepEqual(Uint8Array.from(ws.sent.flatMap((m) => [...m.subarray(1)])), data);
  t.sendDatagram(bytes("ping"));
  assert.deepEqual([...(ws.sent[ws.sent.length - 1] as Uint8Array)], [WebKind.DATAGRAM, ...bytes("ping")]);
  t.sendDatagram(new Uint8Array(64));
  assert.equal(t.counters.datagrams_oversized, 1);
  assert.equal(t.counters.datagrams_sent, 1);
  assert.equal(t.counters.bytes_sent, 200);
  assert.equal(t.counters.bytes_received, 8);
});

test("WebSocket (fake peer): a text message, an unknown kind or an empty STREAM after ACCEPT is a protocol error: counted, closed (1000, saying why)", async () => {
  for (const bad of ["text", Uint8Array.from([9, 1]), Uint8Array.from([WebKind.STREAM]), accept()]) {
    const { t, ws } = await openWs();
    const infos: CloseInfo[] = [];
    const ended: { err?: Error | undefined; called: boolean } = { called: false };
    t.onCloseInfo((i) => infos.push(i));
    t.onClose((e) => Object.assign(ended, { err: e, called: true }));
    ws.message(bad);
    assert.equal(t.counters.protocol_errors, 1);
    assert.equal(ws.closedWith?.code, 1000, "a browser may not close with 1002");
    assert.match(ws.closedWith?.reason ?? "", /^the server sent /);
    assert.ok(new TextEncoder().encode(ws.closedWith?.reason ?? "").length <= 123);
    assert.ok(t.ended && ended.called);
    assert.ok(ended.err instanceof Error, "the mux sees a failure, not EOF");
    assert.match(infos[0]?.reason ?? "", /the server sent/);
    assert.throws(() => t.write(bytes("x")), /closed/);
  }
});

test("WebSocket (fake peer): a close code 4000+status after ACCEPT is the connection's close status; 1000 is EOF", async () => {
  let { t, ws } = await openWs();
  const infos: CloseInfo[] = [];
  let err: Error | undefined | null = null;
  t.onCloseInfo((i) => infos.push(i));
  t.onClose((e) => (err = e));
  ws.serverClose(4000 + Status.UNAUTHENTICATED, "token revoked");
  assert.deepEqual(infos, [{ reason: "token revoked", status: Status.UNAUTHENTICATED }]);
  assert.equal(err, undefined);

  ({ t, ws } = await openWs());
  const got: string[] = [];
  t.onData((d) => got.push(new TextDecoder().decode(d)));
  t.pause();
  ws.message(encodeMessage(WebKind.STREAM, bytes("last words")));
  let eof = false;
  t.onClose((e) => (eof = e === undefined));
  ws.serverClose(1000, "bye");
  assert.deepEqual(got, ["last words"], "what was held is delivered before EOF");
  assert.ok(eof);
});

test("WebSocket (fake peer): bytes held while the mux is paused are bounded (maxReceiveBuffer): past it the connection is closed and counted", async () => {
  const { t, ws } = await openWs({ maxReceiveBuffer: 1000 });
  const got: number[] = [];
  t.onData((d) => got.push(d.length));
  t.pause();
  for (let i = 0; i < 3; i++) ws.message(encodeMessage(WebKind.STREAM, new Uint8Array(300)));
  assert.deepEqual(got, []);
  assert.equal(t.heldBytes, 900);
  t.resume();
  assert.deepEqual(got, [300, 300, 300], "resume hands on what was held, in order");
  t.pause();
  for (let i = 0; i < 4; i++) ws.message(encodeMessage(WebKind.STREAM, new Uint8Array(300)));
  assert.equal(t.counters.receive_overflows, 1);
  assert.equal(ws.closedWith?.code, 1000);
  assert.match(ws.closedWith?.reason ?? "", /more than 1000 bytes while the client was not reading/);
  assert.ok(t.ended);
  assert.equal(t.heldBytes, 0, "nothing kept after the overflow");
});

test("WebSocket (fake peer): a full send queue (bufferedAmount) blocks writes until drained and drops datagrams", async () => {
  const { t, ws } = await openWs({ sendHighWater: 1000, drainPollMs: 1 });
  ws.holdSends = true;
  assert.equal(t.write(new Uint8Array(600)), true);
  assert.equal(t.write(new Uint8Array(600)), false, "over the high-water mark");
  assert.equal(t.counters.send_blocked, 1);
  t.sendDatagram(bytes("lost"));
  assert.equal(t.counters.datagrams_dropped, 1);
  let drained = false;
  const d = t.drained().then(() => (drained = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(drained, false);
  ws.bufferedAmount = 0; // the network took it
  await d;
  t.sendDatagram(bytes("sent"));
  assert.equal(t.counters.datagrams_sent, 1);
});

test("WebSocket (fake peer): a smux session runs over it (MuxConnection unchanged), datagrams alongside", async () => {
  // the test's server: a MuxSession over the fake socket's server end
  let serverData: ((d: Uint8Array) => void) | null = null;
  const serverDgrams: string[] = [];
  const p = WebSocketTransport.open("ws://fake/kcprpc", { WebSocket: FakeWebSocket, maxMessageSize: 1024 });
  const ws = FakeWebSocket.last();
  ws.accept();
  ws.message(accept(2, 1000));
  const t = await p;
  ws.onSend = (m) => {
    if (m[0] === WebKind.STREAM) serverData?.(m.subarray(1));
    else if (m[0] === WebKind.DATAGRAM) serverDgrams.push(new TextDecoder().decode(m.subarray(1)));
  };
  const serverEnd: ByteTransport = {
    write: (d: Uint8Array) => {
      for (let at = 0; at < d.length; at += 1000) queueMicrotask(((c: Uint8Array) => () => ws.message(encodeMessage(WebKind.STREAM, c)))(d.slice(at, at + 1000)));
    },
    onData: (cb) => (serverData = cb),
    onClose: () => undefined,
    close: () => undefined,
  };
  const server = new MuxSession(serverEnd, { client: false, config: RPC_MUX_CONFIG });
  const conn = new MuxConnection(t, { ...RPC_MUX_CONFIG, version: t.muxVersion });
  assert.deepEqual(conn.channelBinding, BINDING);
  const s = await conn.openStream();
  const big = Uint8Array.from({ length: 50000 }, (_, i) => i % 251);
  s.write(big);
  const ss = await server.acceptStream();
  const got: number[] = [];
  while (got.length < big.length) got.push(...(await ss.read()));
  assert.deepEqual(Uint8Array.from(got), big);
  ss.write(bytes("echo"));
  assert.equal(new TextDecoder().decode(await s.read()), "echo");
  conn.sendDatagram(bytes("dg"));
  assert.deepEqual(serverDgrams, ["dg"]);
  conn.onDatagram((d) => serverDgrams.push(`back:${new TextDecoder().decode(d)}`));
  ws.message(encodeMessage(WebKind.DATAGRAM, bytes("x")));
  assert.deepEqual(serverDgrams, ["dg", "back:x"]);
  const closed = new Promise<CloseInfo>((r) => conn.onClose(r));
  await conn.close();
  assert.equal(ws.closedWith?.code, 1000);
  assert.equal((await closed).reason, "connection closed");
  server.close();
});

// ------------------------------------------------------------------ WebTransport (fake peer)

test("WebTransport (fake peer): OPEN on the one stream, an ACCEPT in parts, the smux bytes after it, raw datagrams", async () => {
  const hash = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
  const p = WebTransportTransport.open("https://fake:4433/kcprpc", { WebTransport: FakeWebTransport, token: "t", serverCertificateHashes: [Buffer.from(hash).toString("base64")] });
  const wt = FakeWebTransport.last();
  assert.deepEqual(wt.options?.serverCertificateHashes, [{ algorithm: "sha-256", value: hash }]);
  assert.deepEqual([...(await wt.readStream(6))], [...encodeOpen(bytes("t"), 2)]);
  const a = accept(2, 1400);
  await wt.streamOut.write(a.slice(0, 4));
  const rest = Uint8Array.from([...a.slice(4), ...bytes("smux!")]);
  await wt.streamOut.write(rest);
  const t = await p;
  assert.equal(wt.streams, 1, "one bidirectional stream");
  assert.deepEqual(t.channelBinding, BINDING);
  assert.equal(t.maxDatagramSize, 1100, "the session's datagram size bounds the ACCEPT's");
  const got: string[] = [];
  t.onData((d) => got.push(new TextDecoder().decode(d)));
  assert.deepEqual(got, ["smux!"], "the bytes after ACCEPT are the smux stream's");
  await wt.streamOut.write(bytes("more"));
  await waitFor(() => got.length === 2, "the next chunk");
  assert.equal(got[1], "more");
  // datagrams carry RPC datagrams as they are, both ways
  const dgrams: string[] = [];
  t.onDatagram((d) => dgrams.push(new TextDecoder().decode(d)));
  await wt.dgramOut.write(bytes("push"));
  await waitFor(() => dgrams.length === 1, "a datagram");
  assert.equal(dgrams[0], "push");
  t.sendDatagram(bytes("notify"));
  assert.equal(new TextDecoder().decode((await wt.dgramIn.read()).value), "notify");
  t.sendDatagram(new Uint8Array(1101));
  assert.equal(t.counters.datagrams_oversized, 1);
  assert.ok(t.write(bytes("up")));
  assert.equal(new TextDecoder().decode(await wt.readStream(2)), "up");
});

test("WebTransport (fake peer): a REFUSE, a failed session, a close code 4000+status, a stream ended before the answer", async () => {
  let p = WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport });
  let wt = FakeWebTransport.last();
  await wt.readStream(5);
  await wt.streamOut.write(refuse(Status.PERMISSION_DENIED, "not you"));
  await rejects(p, Status.PERMISSION_DENIED, /^not you$/);
  assert.ok(wt.closedWith, "the client ends the session");

  FakeWebTransport.failNext = "QUIC handshake failed";
  await rejects(WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport }), Status.UNAVAILABLE, /QUIC handshake failed/);

  p = WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport });
  wt = FakeWebTransport.last();
  await wt.readStream(5);
  wt.serverClose(4000 + Status.UNAUTHENTICATED, "bad token");
  await rejects(p, Status.UNAUTHENTICATED, /bad token/);

  p = WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport });
  wt = FakeWebTransport.last();
  await wt.readStream(5);
  await wt.streamOut.close();
  await rejects(p, Status.UNAVAILABLE, /ended the stream before answering/);

  p = WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport, openTimeoutMs: 30 });
  await rejects(p, Status.UNAVAILABLE, /no answer from/);
  assert.ok(FakeWebTransport.last().closedWith);

  assert.throws(() => WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport, serverCertificateHashes: ["AAAA"] }), UsageError);
});

async function openWt(opts: Parameters<typeof WebTransportTransport.open>[1] = {}): Promise<{ t: WebTransportTransport; wt: FakeWebTransport }> {
  const p = WebTransportTransport.open("https://fake/kcprpc", { WebTransport: FakeWebTransport, ...opts });
  const wt = FakeWebTransport.last();
  await wt.readStream(5);
  await wt.streamOut.write(accept());
  return { t: await p, wt };
}

test("WebTransport (fake peer): a paused mux stops reading the stream (QUIC flow control holds the rest); resume goes on", async () => {
  const { t, wt } = await openWt();
  const got: number[] = [];
  t.onData((d) => got.push(d.length));
  t.pause();
  const writes = [100, 200, 300].map((n) => wt.streamOut.write(new Uint8Array(n)));
  // a read already waiting takes the first chunk: it is held, and no further read is made
  await waitFor(() => t.heldBytes === 100, "the first chunk held");
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(t.heldBytes, 100, "nothing more read while paused");
  assert.deepEqual(got, []);
  assert.ok((wt.streamOut.desiredSize ?? 0) <= 0, "the server's writes wait");
  t.resume();
  await Promise.all(writes);
  await waitFor(() => got.length === 3, "all three chunks");
  assert.deepEqual(got, [100, 200, 300]);
});

test("WebTransport (fake peer): writes past sendHighWater report a full queue until the stream takes them; close sends EOF then ends the session", async () => {
  const { t, wt } = await openWt({ sendHighWater: 64 });
  assert.equal(t.write(new Uint8Array(100)), false);
  assert.equal(t.counters.send_blocked, 1);
  let drained = false;
  const d = t.drained().then(() => (drained = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(drained, false, "nothing read by the server yet");
  assert.equal((await wt.readStream(100)).length, 100);
  await d;
  const infos: CloseInfo[] = [];
  t.onCloseInfo((i) => infos.push(i));
  t.close();
  const r = await wt.streamIn.read();
  assert.equal(r.done, true, "the server sees the stream end");
  await t.waitClosed();
  assert.ok(wt.closedWith, "then the session is closed");
  assert.equal(infos[0]?.reason, "connection closed");
});

test("WebTransport (fake peer): the session ending with 4000+status is the close status", async () => {
  const { t, wt } = await openWt();
  const infos: CloseInfo[] = [];
  t.onCloseInfo((i) => infos.push(i));
  wt.serverClose(4000 + Status.UNAVAILABLE, "server shutting down");
  await waitFor(() => infos.length === 1, "the close info");
  assert.deepEqual(infos[0], { reason: "server shutting down", status: Status.UNAVAILABLE });
});

test("WebTransport (fake peer): a datagram receiver that throws is reported; the datagrams after it are still read and delivered", async () => {
  const { t, wt } = await openWt();
  const logged: unknown[][] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => void logged.push(a);
  try {
    const got: string[] = [];
    t.onDatagram((d) => {
      const s = new TextDecoder().decode(d);
      if (s === "bad") throw new Error("a bad datagram receiver");
      got.push(s);
    });
    await wt.dgramOut.write(bytes("bad"));
    await wt.dgramOut.write(bytes("good"));
    await waitFor(() => got.length === 1, "the datagram after the bad one");
    assert.deepEqual(got, ["good"]);
    assert.equal(t.counters.datagrams_received, 2);
  } finally {
    console.error = orig;
  }
  assert.equal(logged.length, 1);
  assert.match(String(logged[0]?.[0]), /a datagram receiver threw/);
  assert.match(String(logged[0]?.[1]), /a bad datagram receiver/);
});

// ------------------------------------------------------------------ discovery and connectWeb's choice

function fakeFetch(docs: Record<string, unknown>): FetchLike & { asked: string[] } {
  const asked: string[] = [];
  const f = async (url: string): Promise<{ ok: boolean; status: number; json(): Promise<unknown> }> => {
    asked.push(url);
    if (url in docs) return { ok: true, status: 200, json: async () => docs[url] };
    return { ok: false, status: 404, json: async () => null };
  };
  return Object.assign(f, { asked });
}

test("discovery: /kcprpc.json's paths resolve against the base (ws scheme for WebSocket); no document means WebSocket at /kcprpc", async () => {
  const hash = Buffer.from(new Uint8Array(32).fill(1)).toString("base64");
  let f = fakeFetch({ "https://app.example/kcprpc.json": { websocket: "/kcprpc", webtransport: { url: "https://app.example:4433/kcprpc", certificateHashes: [hash] } } });
  assert.deepEqual(await discover("https://app.example", f), {
    websocket: "wss://app.example/kcprpc",
    webtransport: { url: "https://app.example:4433/kcprpc", certificateHashes: [hash] },
  });
  f = fakeFetch({ "http://127.0.0.1:8080/game/kcprpc.json": { websocket: "ws" } });
  assert.deepEqual(await discover("http://127.0.0.1:8080/game/", f), { websocket: "ws://127.0.0.1:8080/game/ws", webtransport: null });
  f = fakeFetch({});
  assert.deepEqual(await discover("http://127.0.0.1:8080/", f), { websocket: "ws://127.0.0.1:8080/kcprpc" });
  const down: FetchLike = async () => {
    throw new TypeError("fetch failed");
  };
  await rejects(discover("http://127.0.0.1:1/", down), Status.UNAVAILABLE, /cannot read http:\/\/127\.0\.0\.1:1\/kcprpc\.json/);
  await assert.rejects(discover("ftp://x/", f), UsageError);
});

test("webConnector: WebTransport first when offered and present, WebSocket when it is UNAVAILABLE; a refusal is final; forcing either", async () => {
  const endpoints = { websocket: "ws://fake/kcprpc", webtransport: { url: "https://fake:4433/kcprpc", certificateHashes: [Buffer.from(new Uint8Array(32)).toString("base64")] } };
  const opts = { webSocket: { WebSocket: FakeWebSocket }, webTransport: { WebTransport: FakeWebTransport }, token: "tk" };
  // WebTransport answers: used
  let dial = webConnector(endpoints, opts)();
  let wt = FakeWebTransport.last();
  assert.deepEqual([...(await wt.readStream(7))], [...encodeOpen(bytes("tk"), 2)]);
  await wt.streamOut.write(accept(1));
  let conn = await dial;
  assert.equal(conn.remoteAddress, "https://fake:4433/kcprpc");
  assert.equal(conn.mux.core.config.version, 1, "the mux speaks the version ACCEPT settled on");
  void conn.abort();
  // WebTransport fails: WebSocket
  const wsBefore = FakeWebSocket.made.length;
  FakeWebTransport.failNext = "no HTTP/3 here";
  dial = webConnector(endpoints, opts)();
  await waitFor(() => FakeWebSocket.made.length === wsBefore + 1, "the WebSocket fallback");
  const ws = FakeWebSocket.last();
  ws.accept();
  ws.message(accept());
  conn = await dial;
  assert.equal(conn.remoteAddress, "ws://fake/kcprpc");
  void conn.abort();
  // WebTransport refuses the token: no fallback
  dial = webConnector(endpoints, opts)();
  wt = FakeWebTransport.last();
  await wt.readStream(7);
  await wt.streamOut.write(refuse(Status.UNAUTHENTICATED, "no"));
  await rejects(dial, Status.UNAUTHENTICATED);
  assert.equal(FakeWebSocket.made.length, wsBefore + 1, "no WebSocket tried after a refusal");
  // forced WebSocket never builds a WebTransport; no WebTransport in the runtime means WebSocket
  const wtBefore = FakeWebTransport.made.length;
  dial = webConnector(endpoints, { ...opts, transport: "websocket" })();
  FakeWebSocket.last().accept();
  FakeWebSocket.last().message(accept());
  void (await dial).abort();
  dial = webConnector(endpoints, { webSocket: { WebSocket: FakeWebSocket } })();
  FakeWebSocket.last().accept();
  FakeWebSocket.last().message(accept());
  void (await dial).abort();
  assert.equal(FakeWebTransport.made.length, wtBefore);
  assert.throws(() => webConnector(endpoints, { transport: "webtransport" }), /no WebTransport/);
  assert.throws(() => webConnector({ websocket: "ws://x/" }, { ...opts, transport: "webtransport" }), /no WebTransport endpoint/);
  assert.throws(() => webConnector({}, opts), UsageError);
});

// ------------------------------------------------------------------ reconnect policies (fake peers, injected clock)

/** Answer the next WebSocket the connector makes (after `before` were made) with ACCEPT. */
async function answerWs(before: number): Promise<void> {
  await waitFor(() => FakeWebSocket.made.length > before, "a WebSocket dial");
  const ws = FakeWebSocket.last();
  ws.accept();
  ws.message(accept());
}
/** Answer the next WebTransport the connector makes (after `before` were made) with ACCEPT. */
async function answerWt(before: number): Promise<FakeWebTransport> {
  await waitFor(() => FakeWebTransport.made.length > before, "a WebTransport dial");
  const wt = FakeWebTransport.last();
  await wt.readStream(5);
  await wt.streamOut.write(accept());
  return wt;
}

test("WebTransportBackoff: skips for initialMs after a fallback, doubling to maximumMs; a WebTransport connection or a reset ends it", () => {
  let t = 1000;
  const b = new WebTransportBackoff({ initialMs: 100, maximumMs: 300 }, () => t);
  assert.equal(b.skip(), false);
  b.fellBack();
  assert.equal(b.skippedUntil, 1100);
  t = 1099;
  assert.equal(b.skip(), true);
  t = 1100;
  assert.equal(b.skip(), false, "tried again after the period");
  b.fellBack();
  assert.equal(b.skippedUntil, 1300, "doubled");
  b.fellBack();
  b.fellBack();
  assert.equal(b.skippedUntil, 1400, "at most maximumMs");
  b.connected();
  assert.equal(b.skip(), false);
  b.fellBack();
  assert.equal(b.skippedUntil, 1200, "the first period again after WebTransport connected");
  b.reset();
  assert.equal(b.skippedUntil, null);
  assert.throws(() => new WebTransportBackoff({ initialMs: -1 }), /initialMs must be a number >= 0/);
  assert.throws(() => new WebTransportBackoff({ initialMs: 10, maximumMs: 5 }), /maximumMs \(5\) is below initialMs/);
});

test("webConnector \"auto\" (fake peers, injected clock): after WebTransport failed where WebSocket connected, dials go straight to WebSocket for the back-off period", async () => {
  let t = 0;
  const endpoints = { websocket: "ws://fake/kcprpc", webtransport: "https://fake:4433/kcprpc" };
  const dial = webConnector(endpoints, {
    webSocket: { WebSocket: FakeWebSocket }, webTransport: { WebTransport: FakeWebTransport }, now: () => t, webTransportBackoff: { initialMs: 1000, maximumMs: 1500 },
  });
  const made = (): [number, number] => [FakeWebTransport.made.length, FakeWebSocket.made.length];
  /** One dial in which WebTransport is unreachable: returns over which transport it connected. */
  const blocked = async (): Promise<string> => {
    const [wt0, ws0] = made();
    FakeWebTransport.failNext = "UDP blocked";
    const p = dial();
    await answerWs(ws0);
    const c = await p;
    void c.abort();
    FakeWebTransport.failNext = null;
    return `${FakeWebTransport.made.length - wt0} WebTransport tried, then ${c.remoteAddress}`;
  };
  assert.equal(await blocked(), "1 WebTransport tried, then ws://fake/kcprpc");
  t = 999;
  assert.equal(await blocked(), "0 WebTransport tried, then ws://fake/kcprpc", "within the back-off: WebSocket at once");
  t = 1000;
  assert.equal(await blocked(), "1 WebTransport tried, then ws://fake/kcprpc", "after it: WebTransport again");
  t = 2499;
  assert.equal(await blocked(), "0 WebTransport tried, then ws://fake/kcprpc", "the period doubled (to maximumMs)");
  // UDP works again: WebTransport connects, and the back-off is over
  t = 2500;
  let [wt0] = made();
  let p = dial();
  await answerWt(wt0);
  let c = await p;
  assert.equal(c.remoteAddress, "https://fake:4433/kcprpc");
  void c.abort();
  // a WebTransport connection that was up and is lost: the reconnect tries WebTransport first again
  t = 2501;
  [wt0] = made();
  p = dial();
  await answerWt(wt0);
  c = await p;
  assert.equal(c.remoteAddress, "https://fake:4433/kcprpc");
  void c.abort();
  // and a fallback after it starts from initialMs again
  assert.equal(await blocked(), "1 WebTransport tried, then ws://fake/kcprpc");
  t = 2501 + 999;
  assert.equal(await blocked(), "0 WebTransport tried, then ws://fake/kcprpc");
  t = 2501 + 1000;
  // both transports failing (the server is down) starts no back-off
  let ws0: number;
  [wt0, ws0] = made();
  FakeWebTransport.failNext = "down";
  p = dial();
  await waitFor(() => FakeWebSocket.made.length > ws0, "the WebSocket fallback");
  FakeWebSocket.last().serverClose(1006);
  await rejects(p, Status.UNAVAILABLE);
  [wt0] = made();
  p = dial();
  await answerWt(wt0);
  void (await p).abort();
  // a refusal over WebTransport is final: no WebSocket, no back-off
  [wt0, ws0] = made();
  p = dial();
  await waitFor(() => FakeWebTransport.made.length > wt0, "a WebTransport dial");
  await FakeWebTransport.last().readStream(5);
  await FakeWebTransport.last().streamOut.write(refuse(Status.UNAUTHENTICATED, "no"));
  await rejects(p, Status.UNAUTHENTICATED);
  assert.equal(FakeWebSocket.made.length, ws0);
  [wt0] = made();
  p = dial();
  await answerWt(wt0);
  void (await p).abort();
  // a forced transport has no back-off: "webtransport" keeps dialling it
  const only = webConnector(endpoints, { webTransport: { WebTransport: FakeWebTransport }, transport: "webtransport", now: () => t });
  for (let i = 0; i < 2; i++) {
    [wt0] = made();
    FakeWebTransport.failNext = "UDP blocked";
    await rejects(only(), Status.UNAVAILABLE, /UDP blocked/);
    assert.equal(FakeWebTransport.made.length, wt0 + 1);
  }
});

/** A discovery server whose document the test changes (a restarted server's), counting its reads. */
function liveFetch(doc: { value: unknown }, mode: { value: "ok" | "down" | "hang" }): FetchLike & { reads: Array<{ url: string; cache: string | undefined }> } {
  const reads: Array<{ url: string; cache: string | undefined }> = [];
  const f = async (url: string, init?: { cache?: "no-store" }): Promise<{ ok: boolean; status: number; json(): Promise<unknown> }> => {
    reads.push({ url, cache: init?.cache });
    if (mode.value === "down") throw new TypeError("fetch failed");
    if (mode.value === "hang") return new Promise(() => undefined);
    const body = doc.value;
    return { ok: true, status: 200, json: async () => body };
  };
  return Object.assign(f, { reads });
}

test("webConnector with rediscover (fake peers): a WebTransport dial failing with the old document re-reads it and dials the new certificate and port; a failed dial re-reads before the next", async () => {
  const h1 = Buffer.from(new Uint8Array(32).fill(1)).toString("base64");
  const h2 = Buffer.from(new Uint8Array(32).fill(2)).toString("base64");
  const h3 = Buffer.from(new Uint8Array(32).fill(3)).toString("base64");
  const base = "https://app.example/";
  const wtDoc = (port: number, hash: string): unknown => ({ websocket: "/kcprpc", webtransport: { url: `https://app.example:${port}/kcprpc`, certificateHashes: [hash] } });
  const doc = { value: wtDoc(4433, h1) };
  const mode: { value: "ok" | "down" | "hang" } = { value: "ok" };
  const f = liveFetch(doc, mode);
  const rediscoverTimeouts: number[] = [];
  const dial = webConnector(await discover(base, f), {
    webSocket: { WebSocket: FakeWebSocket }, webTransport: { WebTransport: FakeWebTransport }, connectTimeoutMs: 400,
    rediscover: (ms) => {
      rediscoverTimeouts.push(ms);
      return discover(base, f, ms);
    },
  });
  assert.equal(f.reads.length, 1);
  let wt0 = FakeWebTransport.made.length;
  let p = dial();
  let wt = await answerWt(wt0);
  assert.equal((await p).remoteAddress, "https://app.example:4433/kcprpc");
  assert.equal(f.reads.length, 1, "a dial that works reads nothing");
  // the server restarts with a new certificate on a new port: the old one fails, the document is re-read, the new one dialled
  doc.value = wtDoc(4434, h2);
  const ws0 = FakeWebSocket.made.length;
  wt0 = FakeWebTransport.made.length;
  FakeWebTransport.failNext = "certificate hash mismatch";
  p = dial();
  wt = await answerWt(wt0 + 1);
  const c = await p;
  assert.equal(c.remoteAddress, "https://app.example:4434/kcprpc");
  assert.deepEqual(wt.options?.serverCertificateHashes?.map((x) => Buffer.from(x.value).toString("base64")), [h2]);
  assert.equal(FakeWebSocket.made.length, ws0, "WebTransport again, not the WebSocket fallback");
  assert.deepEqual(f.reads.slice(1), [{ url: "https://app.example/kcprpc.json", cache: "no-store" }], "one re-read, never from the HTTP cache");
  assert.ok(rediscoverTimeouts.every((ms) => ms >= 1 && ms <= 200), `a re-read has at most half the connect timeout: ${rediscoverTimeouts}`);
  void c.abort();
  // the server is down: the dial fails (one re-read, which fails too and keeps the document)
  mode.value = "down";
  wt0 = FakeWebTransport.made.length;
  let before = FakeWebSocket.made.length;
  FakeWebTransport.failNext = "unreachable";
  p = dial();
  await waitFor(() => FakeWebSocket.made.length > before, "the WebSocket fallback");
  assert.equal(f.reads.length, 3, "one re-read in the dial");
  assert.equal(FakeWebTransport.made.length, wt0 + 1, "the same endpoint is not dialled twice");
  FakeWebSocket.last().serverClose(1006);
  await rejects(p, Status.UNAVAILABLE);
  // back up with yet another certificate: the next dial re-reads first, then dials it (once)
  mode.value = "ok";
  doc.value = wtDoc(4435, h3);
  wt0 = FakeWebTransport.made.length;
  let readsAtDial = -1;
  p = dial();
  await waitFor(() => FakeWebTransport.made.length > wt0, "a WebTransport dial");
  readsAtDial = f.reads.length;
  wt = await answerWt(wt0);
  assert.equal((await p).remoteAddress, "https://app.example:4435/kcprpc");
  assert.equal(readsAtDial, 4, "read before dialling");
  assert.equal(FakeWebTransport.made.length, wt0 + 1);
  // a discovery that never answers is bounded: the dial goes on with the document in hand
  mode.value = "hang";
  before = FakeWebSocket.made.length;
  FakeWebTransport.failNext = "unreachable";
  p = dial();
  await waitFor(() => FakeWebSocket.made.length > before, "the WebSocket fallback after the re-read timed out", 2000);
  FakeWebSocket.last().accept();
  FakeWebSocket.last().message(accept());
  assert.equal((await p).remoteAddress, "wss://app.example/kcprpc");
  assert.equal(f.reads.length, 5);
  // that WebTransport failure, with a document that could not be re-read, starts no back-off
  mode.value = "ok";
  wt0 = FakeWebTransport.made.length;
  p = dial();
  await answerWt(wt0);
  assert.equal((await p).remoteAddress, "https://app.example:4435/kcprpc");
  // one with the document re-read (unchanged) does: UDP is blocked, the next dial is WebSocket at once
  FakeWebTransport.failNext = "UDP blocked";
  before = FakeWebSocket.made.length;
  p = dial();
  await answerWs(before);
  assert.equal((await p).remoteAddress, "wss://app.example/kcprpc");
  assert.equal(f.reads.length, 6);
  wt0 = FakeWebTransport.made.length;
  before = FakeWebSocket.made.length;
  p = dial();
  await answerWs(before);
  assert.equal((await p).remoteAddress, "wss://app.example/kcprpc");
  assert.equal(FakeWebTransport.made.length, wt0, "backed off from WebTransport");
  assert.equal(f.reads.length, 6);
});
