/**
 * The client against a small in-memory server written here (smux over an in-memory pipe, so
 * the whole stack below the client runs): every call kind, failures, deadlines, cancellation,
 * events, heartbeats and reconnect with resume.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MuxSession, type MuxStream } from "../src/mux/session.js";
import { RPC_MUX_CONFIG } from "../src/mux/core.js";
import { MuxConnection, memoryTransportPair, type MemoryTransport } from "../src/rpc/connection.js";
import { FrameDecoder, FrameType as T, decodeDatagram, encodeFrame, type Frame } from "../src/rpc/frames.js";
import { Client, resumeProof, type ClientOptions } from "../src/rpc/client.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { closeStatus } from "../src/rpc/net.js";
import { waitFor } from "./support/rpc_python.js";

const TOKEN = new Uint8Array(32).fill(9);

/** A fake kcprpc server over one in-memory connection. */
class FakeServer {
  readonly mux: MuxSession;
  readonly log: Frame[] = [];
  readonly datagrams: Frame[] = [];
  control: MuxStream | null = null;
  hello: Record<string, unknown> | null = null;
  private accepted = 0;
  /**
   * @param opts.callStreams call streams it serves at most (as a server at `max_streams_total`): those past it are closed at once, unread
   * @param opts.holdWelcome WELCOME goes out once this resolves
   */
  constructor(readonly transport: MemoryTransport, readonly opts: { refuse?: [number, string]; sid?: string; resumed?: boolean; callStreams?: number; holdWelcome?: Promise<void> } = {}) {
    this.mux = new MuxSession(transport, { client: false, config: { ...RPC_MUX_CONFIG, keepaliveDisabled: true } });
    transport.onDatagram((d) => {
      const f = decodeDatagram(d);
      if (f) this.datagrams.push(f);
    });
    void this.acceptLoop();
  }
  private async acceptLoop(): Promise<void> {
    for (;;) {
      let s: MuxStream;
      try {
        s = await this.mux.acceptStream();
      } catch {
        return;
      }
      if (this.opts.callStreams !== undefined && ++this.accepted > this.opts.callStreams + 1) {
        s.abort();
        continue;
      }
      void this.serve(s);
    }
  }
  send(s: MuxStream, type: number, cid: number, body: unknown): void {
    try {
      s.write(encodeFrame(type, cid, body));
    } catch {
      // closed
    }
  }
  datagram(type: number, cid: number, body: unknown): void {
    this.transport.sendDatagram(encodeFrame(type, cid, body));
  }
  private async serve(s: MuxStream): Promise<void> {
    const dec = new FrameDecoder(1 << 22);
    const inbox = new Map<number, unknown[]>();
    try {
      for (;;) {
        const d = await s.read();
        if (!d.length) break;
        for (const f of dec.feed(d)) {
          this.log.push(f);
          this.handle(s, f, inbox);
        }
      }
    } catch {
      // session gone
    }
  }
  private handle(s: MuxStream, f: Frame, inbox: Map<number, unknown[]>): void {
    const b = f.body as unknown[];
    switch (f.type) {
      case T.HELLO: {
        this.control = s;
        this.hello = f.body as Record<string, unknown>;
        if (this.opts.refuse) {
          this.send(s, T.GOAWAY, 0, this.opts.refuse);
          return;
        }
        const welcome: Record<string, unknown> = { v: 1, sid: this.opts.sid ?? "s1", hb: 1000, epoch: 1, max_msg: 1 << 22, resume: { token: TOKEN, window_ms: 10000 } };
        if (this.hello.resume) {
          welcome.resumed = this.opts.resumed ?? false;
          if (!welcome.resumed) welcome.resume_error = "session expired";
          welcome.restored = { rooms: ["r1"], topics: [], recovery: { "room:r1": [true, 1, 0, [1, 6]] } };
          this.send(s, T.EVENT, 0, ["Chat", { text: "replayed" }, "room:r1", 6, 1, 1]);
          // the session's own event, before the WELCOME: number 1 of a new session if the resume failed
          if (!welcome.resumed) {
            this.send(s, T.EVENT, 0, ["Hi", "joined", "room:r1", null, null]); // unnumbered (a presence event)
            this.send(s, T.EVENT, 1, ["Hi", "fresh", null, null, null]);
          }
        }
        if (this.opts.holdWelcome) void this.opts.holdWelcome.then(() => this.send(s, T.WELCOME, 0, welcome));
        else this.send(s, T.WELCOME, 0, welcome);
        return;
      }
      case T.PING:
        this.send(s, T.PONG, 0, [b[0]]);
        return;
      case T.CALL: {
        const [method, md, , flags, payload] = b as [string, Record<string, unknown> | null, number | null, number, unknown];
        const id = f.callId;
        switch (method) {
          case "t.S/echo":
            this.send(s, T.REPLY, id, [{ got: payload, md }, null, { tmd: "yes" }]);
            return;
          case "t.S/fail":
            this.send(s, T.TRAILER, id, [5, "no such thing", [{ loc: ["x"] }], { why: "test" }]);
            return;
          case "t.S/badtrailer":
            this.send(s, T.TRAILER, id, "garbage");
            return;
          case "t.S/count": {
            const n = (payload as { n: number }).n;
            this.send(s, T.HEADERS, id, { h: 1 });
            for (let i = 0; i < n; i++) this.send(s, T.MSG, id, i);
            this.send(s, T.TRAILER, id, [0, "", null, { done: n }]);
            if (s !== this.control) s.close(); // a call's own stream is half-closed after its TRAILER
            return;
          }
          case "t.S/push":
            this.send(s, T.ROOMS, 0, [true, "r1"]);
            this.send(s, T.EVENT, 0, ["Chat", { text: "a" }, "room:r1", 1, 1]);
            this.send(s, T.EVENT, 0, ["Chat", { text: "a-dup" }, "room:r1", 1, 1]); // replay duplicate
            this.send(s, T.EVENT, 0, ["Chat", { text: "b" }, "room:r1", 2, 1]);
            this.send(s, T.EVENT, 0, ["Hi", "you", null, null, null]);
            this.send(s, T.EVENT, 0, ["Bad"]); // malformed: counted
            this.send(s, T.EVENT, 5, ["Hi", "x", null, null, null]); // numbered: a direct event, acknowledged
            this.datagram(T.EVENT, 0, ["Pos", { x: 2 }, "room:r1", 5, 1, 0, "e1"]);
            this.send(s, T.REPLY, id, [null, null, null]);
            return;
          case "t.S/pushdgram":
            // keyed datagrams: e1 seq 4 is stale after 5; e2 seq 3 is delivered (its own key)
            this.datagram(T.EVENT, 0, ["Pos", { x: 1 }, "room:r1", 4, 1, 0, "e1"]);
            this.datagram(T.EVENT, 0, ["Pos", { x: 3 }, "room:r1", 3, 1, 0, "e2"]);
            this.datagram(T.EVENT, 0, ["Note", "n1", "room:r1", 7, 1]);
            this.datagram(T.EVENT, 0, ["Note", "n0", "room:r1", 6, 1]); // older unkeyed datagram: stale
            this.send(s, T.REPLY, id, [null, null, null]);
            return;
          case "t.S/slow":
            return; // never answers
          case "t.S/slowconsumer":
            // what a server does to a client that stopped reading: GOAWAY as a datagram, then close
            this.datagram(T.GOAWAY, 0, [8, "slow consumer: send lane over its limit"]);
            setTimeout(() => this.transport.close(), 20);
            return;
          case "t.S/drop":
            this.transport.close(); // the server's side goes away
            return;
          case "t.S/shutdown":
            // what a server that shuts down does: GOAWAY on the control stream, then it closes
            this.send(this.control!, T.GOAWAY, 0, [14, "server shutting down"]);
            setTimeout(() => this.transport.close(), 20);
            return;
        }
        if (!(flags & 1)) inbox.set(id, []);
        else this.send(s, T.TRAILER, id, [12, `unknown method ${method}`, null, null]);
        return;
      }
      case T.MSG: {
        const q = inbox.get(f.callId);
        if (!q) return;
        q.push(f.body);
        // bidi echoes each message at once; client streaming answers at END
        this.send(s, T.MSG, f.callId, { echo: f.body });
        return;
      }
      case T.END: {
        const q = inbox.get(f.callId) ?? [];
        this.send(s, T.REPLY, f.callId, [{ sum: (q as number[]).reduce((a, x) => a + (typeof x === "number" ? x : 0), 0), n: q.length }, null, null]);
        return;
      }
    }
  }
}

interface Setup {
  client: Client;
  servers: FakeServer[];
}

async function setup(opts: ClientOptions = {}, serverOpts: Array<ConstructorParameters<typeof FakeServer>[1]> = [{}], binding = true): Promise<Setup> {
  const servers: FakeServer[] = [];
  let n = 0;
  const connector = async (): Promise<MuxConnection> => {
    const [a, b] = memoryTransportPair(binding ? new Uint8Array(32).fill(++n) : null);
    servers.push(new FakeServer(b, serverOpts[Math.min(servers.length, serverOpts.length - 1)]));
    return new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
  };
  const client = await Client.connect(connector, { heartbeat: null, ...opts });
  return { client, servers };
}

test("unary: request, metadata, reply and trailing metadata; failures carry status, details and metadata", async () => {
  const { client, servers } = await setup({ metadata: { token: "abc" } });
  assert.deepEqual(servers[0]?.hello?.md, { token: "abc" });
  assert.equal(client.sessionId, "s1");
  const r = await client.call<{ a: number }, { got: unknown; md: unknown }>("t.S", "echo", { a: 1 }, { metadata: { k: "v" } });
  assert.deepEqual(r, { got: { a: 1 }, md: { k: "v" } });
  const err = await client.unary("t.S/fail", null).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof RpcError);
  assert.equal(err.code, Status.NOT_FOUND);
  assert.equal(err.statusMessage, "no such thing");
  assert.deepEqual(err.details, [{ loc: ["x"] }]);
  assert.deepEqual(err.trailingMetadata, { why: "test" });
  await assert.rejects(client.unary("t.S/badtrailer", null), (e: unknown) => e instanceof RpcError && e.code === Status.INTERNAL && /malformed trailer/.test(e.message));
  await assert.rejects(client.unary("t.S/nope", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNIMPLEMENTED);
  await assert.rejects(client.unary("no-slash", null), /wire name/);
  await client.close();
  await assert.rejects(client.unary("t.S/echo", 1), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  // the server was told: GOAWAY [0, "client closed"]
  await waitFor(() => servers[0]?.log.some((f) => f.type === T.GOAWAY) ?? false, "the client's GOAWAY");
});

test("server streaming on its own stream: headers, messages, trailers", async () => {
  const { client, servers } = await setup();
  const call = client.serverStream<{ n: number }, number>("t.S/count", { n: 300 });
  const got: number[] = [];
  for await (const m of call) got.push(m);
  assert.deepEqual(got, [...Array(300).keys()]);
  assert.deepEqual(await call.headers(), { h: 1 });
  assert.deepEqual(await call.trailers(), { done: 300 });
  // it went on a stream of its own (id 5: the control stream is 3)
  assert.ok(servers[0]?.mux.counters.streams_accepted === 2);
  await client.close();
});

test("client streaming and bidi", async () => {
  const { client } = await setup();
  async function* gen(): AsyncGenerator<number> {
    for (let i = 1; i <= 10; i++) yield i;
  }
  assert.deepEqual(await client.clientStream("t.S/sum", gen()), { sum: 55, n: 10 });
  assert.deepEqual(await client.clientStream("t.S/sum", [1, 2]), { sum: 3, n: 2 });
  const bidi = client.bidi<string, { echo: string }>("t.S/bidi");
  const it = bidi[Symbol.asyncIterator]();
  await bidi.send("x");
  assert.deepEqual((await it.next()).value, { echo: "x" });
  await bidi.send("y");
  assert.deepEqual((await it.next()).value, { echo: "y" });
  bidi.cancel();
  await assert.rejects(it.next(), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  await client.close();
});

test("deadlines and AbortSignal fail the call locally and send CANCEL", async () => {
  const { client, servers } = await setup();
  const t0 = Date.now();
  await assert.rejects(client.unary("t.S/slow", null, { timeoutMs: 50 }), (e: unknown) => e instanceof RpcError && e.code === Status.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - t0 < 2000);
  const call = servers[0]?.log.find((f) => f.type === T.CALL && (f.body as unknown[])[0] === "t.S/slow");
  assert.deepEqual((call?.body as unknown[])[2], 50); // the timeout travels, in ms
  await waitFor(() => servers[0]?.log.some((f) => f.type === T.CANCEL && f.callId === call?.callId) ?? false, "CANCEL");
  const ac = new AbortController();
  const p = client.unary("t.S/slow", null, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  await assert.rejects(client.unary("t.S/slow", null, { signal: ac.signal }), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  // a late answer for an ended call is counted, not delivered
  const s = servers[0] as FakeServer;
  s.send(s.control as MuxStream, T.REPLY, call?.callId ?? 0, [1, null, null]);
  await waitFor(() => client.counters.stale_frames === 1, "the stale frame to be counted");
  await client.close();
});

test("events: positions, replay duplicates dropped, keyed and unkeyed datagrams latest-wins, bad frames counted", async () => {
  const { client, servers } = await setup();
  const chats: Array<[unknown, unknown]> = [];
  const pos: unknown[] = [];
  client.on("Chat", (p, info) => chats.push([p, info.position]));
  client.on("Hi", (p, info) => chats.push([p, info.key]));
  client.on("Pos", (p, info) => pos.push([p, info.latestKey, info.unreliable]));
  const notes: unknown[] = [];
  client.on("Note", (p) => notes.push(p));
  await client.unary("t.S/push", null);
  await waitFor(() => pos.length === 1, "the datagram event");
  assert.deepEqual(chats, [[{ text: "a" }, [1, 1]], [{ text: "b" }, [1, 2]], ["you", null], ["x", null]]);
  assert.deepEqual([...client.rooms], ["r1"]);
  assert.deepEqual(client.position(null, "r1"), [1, 2]);
  assert.equal(client.counters.bad_frames, 1);
  await client.unary("t.S/pushdgram", null);
  await waitFor(() => notes.length === 1 && pos.length === 2, "the datagrams");
  assert.deepEqual(pos, [[{ x: 2 }, "e1", true], [{ x: 3 }, "e2", true]]);
  assert.deepEqual(notes, ["n1"]);
  assert.equal(client.counters.events_stale_keyed, 1);
  assert.equal(client.counters.events_stale, 2);
  assert.deepEqual(client.position(null, "r1"), [1, 2]); // datagrams never move the resume offset
  const s = servers[0] as FakeServer; // the numbered event is acknowledged (after ACK_DELAY_MS)
  await waitFor(() => s.log.some((f) => f.type === T.EVENT_ACK && f.body === 5), "its EVENT_ACK", 3000);
  await client.close();
});

test("notify goes as a datagram when it fits, else on the control stream", async () => {
  const { client, servers } = await setup();
  client.notify("t.S/note", { a: 1 });
  client.notify("t.S/note", "x".repeat(5000));
  client.notify("t.S/note", 2, { reliable: true, metadata: { m: 1 } });
  const s = servers[0] as FakeServer;
  await waitFor(() => s.datagrams.length === 1 && s.log.filter((f) => f.type === T.NOTIFY).length === 2, "the notifies");
  assert.deepEqual(s.datagrams[0]?.body, ["t.S/note", { a: 1 }, null]);
  assert.deepEqual(s.log.filter((f) => f.type === T.NOTIFY).map((f) => (f.body as unknown[])[2]), [null, { m: 1 }]);
  await client.close();
  // fire-and-forget: not connected (here after close; likewise during a reconnect) it is dropped
  // and counted, as the Python client does; it threw UNAVAILABLE, which crashed a bot's input loop
  client.notify("t.S/note", { a: 2 });
  assert.equal(client.counters.notifications_dropped, 1);
  assert.equal(s.datagrams.length, 1);
});

test("heartbeats measure the RTT; a server that stops answering is declared dead", async () => {
  const { client, servers } = await setup({ heartbeat: { intervalMs: 20, timeoutMs: 300 } });
  await waitFor(() => client.rttMs !== null, "an RTT sample", 3000);
  assert.ok((client.rttMs as number) >= 0 && (client.rttMs as number) < 1000);
  const pings = (servers[0] as FakeServer).log.filter((f) => f.type === T.PING);
  assert.ok(pings.length >= 1);
  // from the second PING on, the client reports its smoothed RTT (µs)
  await waitFor(() => (servers[0] as FakeServer).log.some((f) => f.type === T.PING && typeof (f.body as unknown[])[1] === "number"), "a PING with an RTT", 3000);
  // the server's side stops reading: no PONG, no frames
  (servers[0] as FakeServer).transport.pause();
  await waitFor(() => !client.connected, "the heartbeat timeout", 3000);
  await assert.rejects(client.unary("t.S/echo", 1), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  await client.close();
});

test("a connection lost mid-call fails it UNAVAILABLE; reconnect resumes with a proof and restores rooms", async () => {
  const lost: string[] = [];
  const events: Array<[string, unknown]> = [];
  const { client, servers } = await setup(
    { reconnect: { initialMs: 5, maximumMs: 20, maxAttempts: 5 }, onDisconnect: (r) => lost.push(r) },
    [{}, { resumed: true }],
  );
  client.onRawEvent((ev) => events.push([ev.name, ev.payload]));
  await client.unary("t.S/push", null); // joins r1, position [1, 2]
  assert.ok(client.resumable);
  await assert.rejects(client.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  await client.waitConnected(3000);
  assert.equal(lost.length, 1);
  assert.equal(client.reconnects, 1);
  assert.equal(client.resumes, 1);
  const hello = servers[1]?.hello as Record<string, unknown>;
  const resume = hello.resume as { sid: string; proof: Uint8Array };
  assert.equal(resume.sid, "s1");
  assert.deepEqual(resume.proof, resumeProof(TOKEN, "s1", new Uint8Array(32).fill(2)));
  assert.deepEqual(hello.restore, { rooms: ["r1"], topics: [], offsets: { "room:r1": [1, 2] } });
  // the replayed event came before WELCOME; the recovery moved the offset
  assert.ok(events.some(([n, p]) => n === "Chat" && (p as { text: string }).text === "replayed"));
  const rec = events.find(([n]) => n === "kcprpc.Recovered");
  assert.deepEqual(rec?.[1], { key: "room:r1", recovered: true, replayed: 1, missed: 0, position: [1, 6] });
  assert.deepEqual(client.position(null, "r1"), [1, 6]);
  assert.deepEqual(await client.unary("t.S/echo", 5), { got: 5, md: null });
  await client.close();
});

test("a refused HELLO fails connect with the server's status; a server that never answers: UNAVAILABLE", async () => {
  await assert.rejects(setup({}, [{ refuse: [16, "bad token"] }]), (e: unknown) => e instanceof RpcError && e.code === Status.UNAUTHENTICATED && e.statusMessage === "bad token");
  const silent = async (): Promise<MuxConnection> => {
    const [a] = memoryTransportPair();
    return new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
  };
  await assert.rejects(Client.connect(silent, { connectTimeoutMs: 100, heartbeat: null }), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE && /no answer/.test(e.message));
});

test("a resume the server refuses raises kcprpc.SessionExpired; the session goes on under its new id", async () => {
  const { client } = await setup({ reconnect: { initialMs: 5, maxAttempts: 5, restore: false } }, [{}, { resumed: false, sid: "s2" }]);
  const events: Array<[string, unknown]> = [];
  client.onRawEvent((ev) => events.push([ev.name, ev.payload]));
  await client.unary("t.S/push", null);
  await assert.rejects(client.unary("t.S/drop", null));
  await client.waitConnected(3000);
  assert.equal(client.sessionId, "s2");
  assert.deepEqual(events.find(([n]) => n === "kcprpc.SessionExpired")?.[1], { session_id: "s1", reason: "session expired" });
  // what came before the WELCOME follows the news that the old session is gone
  const at = (name: string, payload?: unknown): number => events.findIndex(([n, p]) => n === name && (payload === undefined || p === payload));
  const expired = at("kcprpc.SessionExpired");
  assert.ok(expired >= 0 && expired < at("Hi", "joined") && at("Hi", "joined") < at("Hi", "fresh"), events.map(([n]) => n).join(","));
  await client.close();
});

test("framings: streaming calls on the shared control stream, unary calls on a stream each", async () => {
  const { client, servers } = await setup({ streamFraming: "shared", unaryFraming: "stream" });
  const got: number[] = [];
  for await (const m of client.serverStream<{ n: number }, number>("t.S/count", { n: 5 })) got.push(m);
  assert.deepEqual(got, [0, 1, 2, 3, 4]);
  assert.equal(servers[0]?.mux.counters.streams_accepted, 1); // only the control stream so far
  assert.deepEqual(await client.unary("t.S/echo", 1), { got: 1, md: null });
  assert.equal(servers[0]?.mux.counters.streams_accepted, 2);
  await client.close();
});

test("waitForReady: a call made while reconnecting waits for the new link", async () => {
  const { client } = await setup({ waitForReady: true, reconnect: { initialMs: 30, maxAttempts: 5 } });
  await assert.rejects(client.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  assert.ok(!client.connected);
  assert.deepEqual(await client.unary("t.S/echo", 7, { timeoutMs: 3000 }), { got: 7, md: null });
  assert.equal(client.reconnects, 1);
  await client.close();
});

test("a call whose own stream the server ends before its status (refused at max_streams_total) is cancelled instead of waiting for good; the connection goes on", async () => {
  const { client } = await setup({}, [{ callStreams: 1 }]);
  const first = client.bidi<string, { echo: string }>("t.S/bidi");
  const it = first[Symbol.asyncIterator]();
  await first.send("x");
  assert.deepEqual((await it.next()).value, { echo: "x" });
  // no deadline: before, a call ended UNAVAILABLE "the call's stream ended early", not as the wire format's EOF says
  const second = client.serverStream<{ n: number }, number>("t.S/count", { n: 3 });
  await assert.rejects(second[Symbol.asyncIterator]().next(), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED && e.statusMessage === "the server ended the call's stream before its status");
  await assert.rejects(second.trailers(), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  assert.ok(client.connected);
  await first.send("y"); // the first call and the connection go on
  assert.deepEqual((await it.next()).value, { echo: "y" });
  assert.deepEqual(await client.unary("t.S/echo", 1), { got: 1, md: null });
  first.cancel();
  await client.close();
});

test("waiting for a connection fails once nothing will connect again: lost without a reconnect policy (UNAVAILABLE), or the client closed (CANCELLED)", async () => {
  const { client } = await setup({ waitForReady: true });
  await assert.rejects(client.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  const t0 = Date.now();
  // before, waitConnected waited for its whole timeout (a minute here), then said only "not connected"
  const noPolicy = (e: unknown): boolean => e instanceof RpcError && e.code === Status.UNAVAILABLE && e.statusMessage === "connection lost, and no reconnect policy";
  await assert.rejects(client.waitConnected(60000), noPolicy);
  await assert.rejects(client.unary("t.S/echo", 1), noPolicy);
  assert.ok(Date.now() - t0 < 2000, `failed after ${Date.now() - t0} ms`);
  await client.close();
  await assert.rejects(client.waitConnected(60000), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED && e.statusMessage === "client closed");
  // a call waiting for a reconnect that will not come (every dial fails) ends at close()
  let dials = 0;
  const c = await Client.connect(async () => {
    if (dials++) throw new RpcError(Status.UNAVAILABLE, "no server any more");
    const [a, b] = memoryTransportPair(new Uint8Array(32).fill(1));
    new FakeServer(b);
    return new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
  }, { heartbeat: null, waitForReady: true, reconnect: { initialMs: 5, maximumMs: 20 } });
  await assert.rejects(c.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  const waiting = c.unary("t.S/echo", 2);
  const waited = c.waitConnected(60000);
  await waitFor(() => dials > 2, "failed reconnects");
  await c.close();
  for (const p of [waiting, waited]) await assert.rejects(p, (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED && e.statusMessage === "client closed");
});

test("close() while a reconnect attempt dials or waits for WELCOME abandons it: a connection that comes up anyway is closed at once, never the client's link", async () => {
  for (const phase of ["dial", "welcome"] as const) {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const conns: MuxConnection[] = [];
    const servers: FakeServer[] = [];
    let dials = 0;
    const connector = async (): Promise<MuxConnection> => {
      const n = ++dials;
      if (n === 2 && phase === "dial") await held; // the dial of the reconnect hangs until released
      const [a, b] = memoryTransportPair(new Uint8Array(32).fill(n));
      servers.push(new FakeServer(b, n === 2 && phase === "welcome" ? { holdWelcome: held } : {}));
      const conn = new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
      conns.push(conn);
      return conn;
    };
    const client = await Client.connect(connector, { heartbeat: null, reconnect: { initialMs: 5, maximumMs: 20 } });
    await assert.rejects(client.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
    if (phase === "dial") await waitFor(() => dials === 2, "the reconnect's dial");
    else await waitFor(() => servers[1]?.hello != null, "the reconnect's HELLO");
    await client.close();
    // the attempt ends with close(), not at its timeouts (their timers held the process for 5 s and more)
    await waitFor(() => (client as unknown as { reconnecting: unknown }).reconnecting === null, `the reconnect loop to end (${phase})`, 1000);
    release();
    // the connection comes up all the same (the dial resolves, the server WELCOMEs): it is closed, the client stays closed
    await waitFor(() => conns.length === 2 && (conns[1] as MuxConnection).closed && (servers[1] as FakeServer).mux.closed, `the late connection to be closed (${phase})`, 2000);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(client.connected, false, phase);
    assert.notEqual((client as unknown as { link: { conn: unknown } | null }).link?.conn, conns[1], phase);
    assert.equal(client.reconnects, 0, phase);
    assert.equal(dials, 2, phase);
    await assert.rejects(client.unary("t.S/echo", 1), (e: unknown) => e instanceof RpcError && e.code === Status.CANCELLED);
  }
});

test("a server that floods a call on the shared stream fails it RESOURCE_EXHAUSTED; the connection goes on", async () => {
  const { client } = await setup({ streamFraming: "shared" });
  const call = client.serverStream<{ n: number }, number>("t.S/count", { n: 5000 });
  await call.headers();
  await assert.rejects(call.trailers(), (e: unknown) => e instanceof RpcError && e.code === Status.RESOURCE_EXHAUSTED);
  assert.deepEqual(await client.unary("t.S/echo", 1), { got: 1, md: null });
  await client.close();
});

test("a GOAWAY datagram (a slow consumer dropped) fails calls in flight with its status", async () => {
  const reasons: string[] = [];
  const { client } = await setup({ onDisconnect: (r) => reasons.push(r) });
  const pending = client.unary("t.S/slow", null);
  await assert.rejects(client.unary("t.S/slowconsumer", null), (e: unknown) => e instanceof RpcError && e.code === Status.RESOURCE_EXHAUSTED && /slow consumer/.test(e.statusMessage));
  await assert.rejects(pending, (e: unknown) => e instanceof RpcError && e.code === Status.RESOURCE_EXHAUSTED);
  assert.match(reasons[0] ?? "", /closed by the server: RESOURCE_EXHAUSTED/);
  await client.close();
});

test("transport close codes 0x4B00 + status carry an RPC status", () => {
  assert.equal(closeStatus(0x4b00 + 14), Status.UNAVAILABLE);
  assert.equal(closeStatus(0x4b00 + 8), Status.RESOURCE_EXHAUSTED);
  assert.equal(closeStatus(0x4b00), undefined); // OK is no failure
  assert.equal(closeStatus(0x4b00 + 17), undefined);
  assert.equal(closeStatus(0), undefined);
  assert.equal(closeStatus(null), undefined);
});

test("a server naming ever new keys cannot grow the client's tables past their bound", async () => {
  const { client } = await setup();
  for (let i = 0; i < 70000; i++) {
    client.handleEvent(["E", null, `room:k${i}`, 1, 1], false);
    client.handleEvent(["E", null, null, 1, 1, 0, `lw${i}`], true);
  }
  assert.equal(client.counters.keys_evicted, 2 * (70000 - 65536));
  assert.equal(client.position(null, "k0"), null); // the oldest went
  assert.deepEqual(client.position(null, "k69999"), [1, 1]);
  await client.close();
});

test("events(): an async iterable of one event name, bounded, unregistered when the loop stops", async () => {
  const { client } = await setup();
  const got: unknown[] = [];
  const iter = client.events<{ text: string }>("Chat", { maxQueued: 2 })[Symbol.asyncIterator]();
  for (let i = 1; i <= 4; i++) client.handleEvent(["Chat", { text: `m${i}` }, null, null, null], false);
  got.push((await iter.next()).value?.[0], (await iter.next()).value?.[0]);
  assert.deepEqual(got, [{ text: "m3" }, { text: "m4" }]);
  assert.equal(client.counters.events_dropped, 2);
  await iter.return?.();
  client.handleEvent(["Chat", { text: "m5" }, null, null, null], false);
  assert.equal((await iter.next()).done, true);
  await client.close();
});

test("call ids after the wrap at 2^32 skip a call still in flight: a subscription opened first keeps its id and its frames", async () => {
  const { client, servers } = await setup();
  const bidi = client.bidi<string, { echo: string }>("t.S/bidi");
  const it = bidi[Symbol.asyncIterator]();
  await bidi.send("x");
  assert.deepEqual((await it.next()).value, { echo: "x" });
  const first = servers[0]!.log.find((f) => f.type === T.CALL)!.callId;
  assert.equal(first, 1);
  (client as unknown as { nextCallId: number }).nextCallId = 0xfffffffe; // 2^32 - 2 calls later
  for (let i = 0; i < 2; i++) assert.deepEqual(await client.call("t.S", "echo", i), { got: i, md: null });
  const ids = servers[0]!.log.filter((f) => f.type === T.CALL).map((f) => f.callId);
  assert.deepEqual(ids, [1, 0xffffffff, 2]); // not 0, not 1
  await bidi.send("y"); // the subscription's frames still reach it
  assert.deepEqual((await it.next()).value, { echo: "y" });
  bidi.cancel();
  await client.close();
});

test("a server that shuts down: onDisconnect says it drained, not just that the connection closed", async () => {
  const reasons: string[] = [];
  const { client } = await setup({ onDisconnect: (r) => reasons.push(r) });
  void client.unary("t.S/shutdown", null).catch(() => undefined);
  await waitFor(() => reasons.length === 1, "the disconnect");
  assert.deepEqual(reasons, ["the server is draining: UNAVAILABLE: server shutting down"]);
  await client.close();
});

/** Run `f` with console.error captured: resolves to what was logged, one array of arguments per call. */
async function consoleErrors(f: () => Promise<void>): Promise<unknown[][]> {
  const logged: unknown[][] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => void logged.push(a);
  try {
    await f();
  } finally {
    console.error = orig;
  }
  return logged;
}

test("a connection's close callback that throws is reported; the ones after it run (the client's among them)", async () => {
  const logged = await consoleErrors(async () => {
    const [a, b] = memoryTransportPair();
    const conn = new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
    const seen: string[] = [];
    conn.onClose(() => {
      throw new Error("a bad close callback");
    });
    conn.onClose((i) => seen.push(i.reason));
    b.close();
    await waitFor(() => seen.length === 1, "the second close callback");
    await new Promise((r) => setImmediate(r));
  });
  assert.equal(logged.length, 1);
  assert.match(String(logged[0]?.[0]), /a connection's close callback threw/);
  assert.match(String(logged[0]?.[1]), /a bad close callback/);
});

test("a reconnect loop that fails (here: the injected randomness throws) is reported and gives up: waiting for the link fails instead of hanging", async () => {
  const errors: Array<[string, unknown]> = [];
  const { client } = await setup({
    reconnect: { initialMs: 5, maximumMs: 20, maxAttempts: 5 },
    random: () => {
      throw new Error("a bad random");
    },
    onCallbackError: (e, where) => errors.push([where, e]),
  });
  await assert.rejects(client.unary("t.S/drop", null), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
  await assert.rejects(client.waitConnected(3000), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE && /reconnecting failed: a bad random/.test(e.statusMessage));
  assert.deepEqual(errors.map(([w]) => w), ["the reconnect loop"]);
  await client.close();
});
