/**
 * The secure core on its own (no Python): the replay window, tampered and replayed transport
 * packets (dropped and counted, never thrown), stateless resets, key updates started by either
 * side, MTU probes, path challenges, DATA_PART reassembly and its bounds, the handshake's
 * retransmission schedule and its typed timeouts, hints that are not bound to our initiation,
 * and misuse errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  HandshakeNoAnswer,
  HandshakeTimeout,
  ReplayWindow,
  REPLAY_DUPLICATE,
  REPLAY_OK,
  REPLAY_TOO_OLD,
  Reason,
  SecureClient,
  SecureConnection,
  SecureConnectionClosed,
  SecureUsageError,
  clientConfig,
  newSecureCounters,
  publicKeyOf,
  type SecureEvent,
} from "../src/index.js";
import { AESGCM, CHACHAPOLY, mac16, type CipherSuite } from "../src/secure/noise.js";
import { concat } from "../src/secure/bytes.js";
import { streamRng } from "./secure_vectors.test.js";

const A = "10.0.0.1:4000";
const B = "10.0.0.9:5000";

/** A client connection and its mirror (the server's end), from fixed secrets. */
function pair(suite: CipherSuite = AESGCM, opts: { rekeyAfterPackets?: number; replayWindow?: number; features?: number; keyGraceMs?: number } = {}) {
  const cfg = clientConfig({ psk: new Uint8Array(32), ...(opts.rekeyAfterPackets ? { rekeyAfterPackets: opts.rekeyAfterPackets } : {}), ...(opts.replayWindow ? { replayWindow: opts.replayWindow } : {}), ...(opts.keyGraceMs !== undefined ? { keyGraceMs: opts.keyGraceMs } : {}) });
  const params = { version: 1, suite: suite.name, mtu: 1400, sndWnd: 32, rcvWnd: 32, dataShards: 0, parityShards: 0, muxVersion: 2, features: opts.features ?? 1 };
  const s1 = new Uint8Array(32).fill(1);
  const s2 = new Uint8Array(32).fill(2);
  const cc = new Uint8Array(8).fill(0xaa);
  const sc = new Uint8Array(8).fill(0xbb);
  const resetToken = mac16(new Uint8Array(32).fill(9), sc);
  const common = { config: cfg, suite, params, now: 0, peerStatic: null, handshakeHash: new Uint8Array(32) };
  const client = new SecureConnection({ ...common, sendSecret: s1, recvSecret: s2, localCid: cc, remoteCid: sc, peerAddr: A, rng: streamRng("c"), counters: newSecureCounters(), resetToken });
  const server = new SecureConnection({ ...common, sendSecret: s2, recvSecret: s1, localCid: sc, remoteCid: cc, peerAddr: B, rng: streamRng("s"), counters: newSecureCounters(), resetToken: null });
  return { client, server, resetToken };
}

function events(c: SecureConnection): SecureEvent[] {
  const out: SecureEvent[] = [];
  for (let e = c.nextEvent(); e !== null; e = c.nextEvent()) out.push(e);
  return out;
}

test("replay window: duplicates and too-old packets, across a jump larger than the window", () => {
  const w = new ReplayWindow(64);
  assert.equal(w.check(0), REPLAY_OK);
  w.update(0);
  assert.equal(w.check(0), REPLAY_DUPLICATE);
  w.update(5);
  assert.equal(w.check(3), REPLAY_OK);
  w.update(3);
  assert.equal(w.check(3), REPLAY_DUPLICATE);
  assert.equal(w.check(4), REPLAY_OK);
  w.update(68);
  assert.equal(w.check(4), REPLAY_TOO_OLD);
  assert.equal(w.check(5), REPLAY_DUPLICATE); // 68 - 5 = 63 < 64, still remembered
  assert.equal(w.check(6), REPLAY_OK);
  w.update(1000);
  assert.equal(w.check(68), REPLAY_TOO_OLD);
  assert.equal(w.check(999), REPLAY_OK);
  assert.equal(w.check(1000), REPLAY_DUPLICATE);
  assert.throws(() => new ReplayWindow(10), RangeError);
});

test("transport: data both ways with both suites; a replayed packet is dropped and counted", () => {
  for (const suite of [AESGCM, CHACHAPOLY]) {
    const { client, server } = pair(suite);
    const d = client.seal(Uint8Array.of(1, 2, 3), 1);
    assert.deepEqual(server.open(d, B, 1), Uint8Array.of(1, 2, 3));
    assert.equal(server.open(d, B, 2), null);
    assert.equal(server.counters.replayDuplicates, 1);
    const back = server.seal(Uint8Array.of(9), 2);
    assert.deepEqual(client.open(back, A, 2), Uint8Array.of(9));
    assert.equal(d.length, 3 + 34);
  }
});

test("tampering: every changed byte of a transport packet is dropped and counted, never thrown", () => {
  const { client, server } = pair();
  const d = server.seal(new TextEncoder().encode("hello, tamper"), 1);
  let dropped = 0;
  for (let i = 0; i < d.length; i++) {
    const bad = Uint8Array.from(d);
    bad[i] = (bad[i] as number) ^ 0x01;
    assert.equal(client.open(bad, A, 1), null, `byte ${i}`);
    dropped++;
  }
  const c = client.counters;
  assert.equal(c.decryptErrors + c.badType + c.unknownCid, dropped);
  assert.equal(c.packetsOpened, 0);
  // garbage of every length up to 100 bytes
  for (let n = 0; n < 100; n++) assert.equal(client.open(new Uint8Array(n).fill(0xc8), A, 1), null);
  assert.ok(c.shortPackets > 0);
  // the original still opens: forged packets did not move the window
  assert.deepEqual(client.open(d, A, 2), new TextEncoder().encode("hello, tamper"));
});

test("packets older than the replay window are dropped as too old", () => {
  const { client, server } = pair(AESGCM, { replayWindow: 64 });
  const first = server.seal(Uint8Array.of(0), 1);
  for (let i = 0; i < 70; i++) assert.ok(client.open(server.seal(Uint8Array.of(1), 1), A, 1));
  assert.equal(client.open(first, A, 1), null);
  assert.equal(client.counters.replayTooOld, 1);
});

test("key update started by the client, then by the server; the old key still opens reordered packets", () => {
  const { client, server } = pair();
  const late = server.seal(Uint8Array.of(7), 1); // epoch 0, delivered after the update
  assert.ok(client.updateKeys(2));
  assert.equal(client.updateKeys(2), false); // the previous update is not finished
  const d = client.seal(Uint8Array.of(1), 2);
  assert.equal(d[0], 0xc9);
  assert.deepEqual(server.open(d, B, 2), Uint8Array.of(1));
  assert.equal(server.epoch, 1);
  assert.deepEqual(events(server), [{ type: "keyUpdated", epoch: 1, byPeer: true }]);
  assert.deepEqual(client.open(late, A, 3), Uint8Array.of(7));
  assert.equal(client.counters.prevKeyUsed, 1);
  assert.deepEqual(client.open(server.seal(Uint8Array.of(2), 3), A, 3), Uint8Array.of(2));
  // the grace period ends, then the server updates
  client.handleTimer(10_000);
  server.handleTimer(10_000);
  assert.ok(server.updateKeys(10_001));
  assert.deepEqual(client.open(server.seal(Uint8Array.of(3), 10_001), A, 10_001), Uint8Array.of(3));
  assert.equal(client.epoch, 2);
  assert.equal(client.counters.keyUpdatesByPeer, 1);
  assert.equal(client.counters.decryptErrors, 0);
});

test("rekey after a packet count: the epochs advance without a decrypt error", () => {
  const { client, server } = pair(CHACHAPOLY, { rekeyAfterPackets: 5, keyGraceMs: 0 });
  let now = 0;
  for (let i = 0; i < 60; i++) {
    now += 1;
    assert.ok(server.open(client.seal(Uint8Array.of(i), now), B, now));
    assert.ok(client.open(server.seal(Uint8Array.of(i), now), A, now));
  }
  assert.ok(client.epoch >= 5, `epoch ${client.epoch}`);
  assert.equal(client.counters.decryptErrors + server.counters.decryptErrors, 0);
});

test("stateless reset: a packet ending with the server's token closes the connection", () => {
  const { client, resetToken } = pair();
  const reset = concat(Uint8Array.of(0xc9), new Uint8Array(40).fill(3), resetToken);
  assert.equal(client.open(reset, A, 1), null);
  assert.equal(client.isOpen, false);
  assert.equal(client.closeCode, Reason.STATELESS_RESET);
  assert.match(client.closeMessage, /stateless reset: the server no longer knows this connection/);
  assert.throws(() => client.seal(Uint8Array.of(1), 2), SecureConnectionClosed);
});

test("CLOSE and GOAWAY from the peer; our own CLOSE is kept for resending", () => {
  const { client, server } = pair();
  assert.equal(client.open(server.goaway(Reason.GOING_AWAY, "draining", 1), A, 1), null);
  assert.deepEqual(client.goawayReceived, [9, "draining"]);
  assert.ok(client.isOpen);
  assert.equal(client.open(server.close(Reason.APPLICATION, "maintenance window", 2), A, 2), null);
  assert.equal(client.isOpen, false);
  assert.deepEqual(events(client), [
    { type: "goAwayReceived", code: 9, message: "draining" },
    { type: "connectionClosed", code: 7, message: "maintenance window", byPeer: true },
  ]);
  const p2 = pair();
  const closing = p2.client.close(Reason.APPLICATION, "bye", 1);
  assert.equal(p2.client.close(Reason.APPLICATION, "bye", 2), closing);
  p2.server.open(closing, B, 1);
  assert.equal(p2.server.closeMessage, "bye");
});

test("MTU probe: a padded PING with an id is answered by a PING_ACK no larger than the probe", () => {
  const { client, server } = pair();
  const probe = client.ping(1, 1200, 42);
  assert.equal(probe.length, 1200);
  assert.equal(server.open(probe, B, 1), null);
  const [[ack, to]] = server.datagramsToSend(1) as [[Uint8Array, string]];
  assert.equal(to, B);
  assert.equal(ack.length, 42);
  assert.equal(client.open(ack, A, 1), null);
  assert.deepEqual(client.probeAcks, [42]);
  assert.equal(server.open(client.ping(2), B, 2), null); // a 1-byte PING is not answered
  assert.equal(server.datagramsToSend(2).length, 0);
});

test("migration: the server sees a new client address, probes it, the client answers, the path is validated", () => {
  const { client, server } = pair();
  const C1 = B;
  const C2 = "10.0.0.9:6000";
  server.open(client.seal(Uint8Array.of(1), 1), C1, 1);
  assert.deepEqual(server.open(client.ping(2), C2, 2), null);
  assert.equal(server.peerAddr, C2);
  assert.equal(server.pathValidated, false);
  const out = server.datagramsToSend(2);
  assert.equal(out.length, 1);
  const [challenge, to] = out[0] as [Uint8Array, string];
  assert.equal(to, C2);
  client.open(challenge, A, 3);
  const [[response]] = client.datagramsToSend(3) as [[Uint8Array, string]];
  server.open(response, C2, 4);
  assert.equal(server.pathValidated, true);
  assert.deepEqual(
    events(server).map((e) => e.type),
    ["pathChanged", "pathValidated"],
  );
});

test("DATA_PART: pieces reassembled in any order; bad pieces dropped and counted; reassembly bounded", () => {
  const { client, server } = pair();
  const payload = new Uint8Array(1800).map((_, i) => i & 0xff);
  const parts = server.sealParts(payload, 500, 1);
  assert.equal(parts.length, 4);
  let got: Uint8Array | null = null;
  for (const d of [...parts].reverse()) got = client.open(d, A, 1) ?? got;
  assert.deepEqual(got, payload);
  assert.equal(client.counters.partsReassembled, 1);
  // 20 payloads whose last piece never comes: at most 8 are kept
  for (let i = 0; i < 20; i++) client.open((server.sealParts(payload, 500, 2)[0]) as Uint8Array, A, 2);
  assert.equal(client.partsPending[0], 8);
  assert.equal(client.counters.partsDropped, 12);
  // not negotiated: refused to send, and dropped on receipt
  const p2 = pair(AESGCM, { features: 0 });
  assert.throws(() => p2.server.sealParts(payload, 500, 1), SecureUsageError);
  assert.equal(p2.client.open(p2.server.sealFrame(Uint8Array.of(7, 0, 0, 0, 1, 0, 2, 5, 5), 1), A, 1), null);
  assert.equal(p2.client.counters.partErrors, 1);
  // malformed pieces: count 1, index >= count, no piece
  const errors = client.counters.partErrors;
  for (const bad of [Uint8Array.of(7, 0, 0, 0, 9, 0, 1, 5), Uint8Array.of(7, 0, 0, 0, 9, 3, 2, 5), Uint8Array.of(7, 0, 0, 0, 9, 0, 2)]) {
    assert.equal(client.open(server.sealFrame(bad, 3), A, 3), null);
  }
  assert.equal(client.counters.partErrors, errors + 3);
});

test("handshake: retransmissions back off (250, 500, 1000 ms...), then HandshakeNoAnswer at the timeout", () => {
  const c = new SecureClient({ passphrase: "x", handshakeTimeoutMs: 5000 }, { rng: streamRng("t"), peer: "127.0.0.1:9" });
  const first = c.initiate(0);
  assert.equal(first.length, 1200);
  const sentAt: number[] = [];
  for (let guard = 0; guard < 100 && c.getTimer() !== null; guard++) {
    const t = c.getTimer() as number;
    c.handleTimer(t);
    for (const d of c.datagramsToSend(t)) {
      assert.deepEqual(d, first);
      sentAt.push(t);
    }
  }
  assert.deepEqual(sentAt, [250, 750, 1750, 2750, 3750, 4750]);
  assert.ok(c.error instanceof HandshakeNoAnswer);
  assert.equal(
    c.error.message,
    "handshake failed: no answer from the server at 127.0.0.1:9 within 5 s: is the server running and reachable over UDP (address, port, firewall)?",
  );
});

test("handshake: answers that never authenticate end in HandshakeTimeout (not NoAnswer); unbound hints are ignored", () => {
  const c = new SecureClient({ serverPublicKey: publicKeyOf(new Uint8Array(32).fill(5)) }, { rng: streamRng("u") });
  const init = c.initiate(0);
  assert.equal(c.receive(new Uint8Array(0), A, 1), null);
  assert.equal(c.receive(new Uint8Array(300).fill(0xc2), A, 1), null); // a RESPONSE for another CID
  const hint = concat(Uint8Array.of(0xc4, 1, 1, 0), new Uint8Array(16).fill(7)); // echo not ours
  assert.equal(c.receive(hint, A, 2), null);
  assert.equal(c.counters.hintsIgnored, 1);
  assert.equal(c.state, "initiating");
  const bound = concat(Uint8Array.of(0xc4, 1, 5, 0), init.subarray(0, 16)); // SECURE_WIRE is never taken by a secure client
  c.receive(bound, A, 2);
  assert.equal(c.state, "initiating");
  assert.ok(c.abandon(3000) instanceof HandshakeTimeout);
  assert.ok(!(c.error instanceof HandshakeNoAnswer));
  assert.match(c.error?.message ?? "", /no authenticated answer from the server within 3 s \(3 datagrams that did not authenticate\)/);
});

test("misuse: bad options throw SecureUsageError naming the option", () => {
  assert.throws(() => new SecureClient({}), /serverPublicKey \(pinned key\) or psk\/passphrase/);
  assert.throws(() => new SecureClient({ psk: new Uint8Array(31) }), SecureUsageError);
  assert.throws(() => new SecureClient({ psk: new Uint8Array(32), passphrase: "x" }), /not both/);
  assert.throws(() => new SecureClient({ psk: new Uint8Array(32), fec: [200, 100] }), /300 shards/);
  assert.throws(() => new SecureClient({ psk: new Uint8Array(32), cidPrefix: new Uint8Array(2) }), /cidPrefix/);
  assert.throws(() => new SecureClient({ psk: new Uint8Array(32), token: new Uint8Array(600) }), /token/);
  const c = new SecureClient({ psk: new Uint8Array(32), initiationSize: 256, token: new Uint8Array(500) });
  assert.throws(() => c.initiate(0), /the token does not fit/);
  const ok = new SecureClient({ psk: new Uint8Array(32), cidPrefix: Uint8Array.of(5) });
  assert.equal(ok.localCid[0], 5);
  ok.initiate(0);
  assert.throws(() => ok.initiate(0), /initiate\(\) called twice/);
});
