/** Numbered direct events (docs/wire-format/rpc.md): the client's count after a resume that reported missed events. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MuxSession, type MuxStream } from "../src/mux/session.js";
import { RPC_MUX_CONFIG } from "../src/mux/core.js";
import { MuxConnection, memoryTransportPair, type MemoryTransport } from "../src/rpc/connection.js";
import { FrameDecoder, FrameType as T, encodeFrame } from "../src/rpc/frames.js";
import { Client } from "../src/rpc/client.js";
import { waitFor } from "./support/rpc_python.js";

const TOKEN = new Uint8Array(32).fill(9);

/** A server that answers every resume with `direct` = what a kcprpc server computes: numbers 1..forgotten were forgotten. */
class Srv {
  hellos: Array<Record<string, unknown>> = [];
  constructor(readonly transport: MemoryTransport, readonly forgotten: number) {
    const mux = new MuxSession(transport, { client: false, config: { ...RPC_MUX_CONFIG, keepaliveDisabled: true } });
    void (async () => {
      const s: MuxStream = await mux.acceptStream();
      const dec = new FrameDecoder(1 << 22);
      for (;;) {
        const d = await s.read().catch(() => new Uint8Array());
        if (!d.length) return;
        for (const f of dec.feed(d)) {
          if (f.type !== T.HELLO) continue;
          const hello = f.body as Record<string, unknown>;
          this.hellos.push(hello);
          const w: Record<string, unknown> = { v: 1, sid: "s1", hb: 1000, epoch: 1, max_msg: 1 << 22, resume: { token: TOKEN, window_ms: 10000 } };
          const resume = hello.resume as { last: number } | undefined;
          if (resume) {
            w.resumed = true;
            // DirectRing.resume: missed = distance(forgotten, last) when forgotten is after last
            w.direct = [0, this.forgotten > resume.last ? this.forgotten - resume.last : 0];
          }
          s.write(encodeFrame(T.WELCOME, 0, w));
        }
      }
    })();
  }
}

test("a resume that reported N missed events does not report them again at the next resume", async () => {
  const servers: Srv[] = [];
  let n = 0;
  const connector = async (): Promise<MuxConnection> => {
    const [a, b] = memoryTransportPair(new Uint8Array(32).fill(++n));
    servers.push(new Srv(b, 1));
    return new MuxConnection(a, { ...RPC_MUX_CONFIG, keepaliveDisabled: true });
  };
  const client = await Client.connect(connector, { heartbeat: null, reconnect: { initialMs: 5, maximumMs: 20, maxAttempts: 5 } });
  const reports: unknown[] = [];
  client.on("kcprpc.Recovered", (p) => reports.push(p));
  servers[0]!.transport.close(); // lost; number 1 is forgotten while detached
  await waitFor(() => client.resumes === 1, "the first resume");
  await waitFor(() => reports.length === 1, "its report");
  servers[1]!.transport.close(); // lost again, nothing sent meanwhile
  await waitFor(() => client.resumes === 2, "the second resume");
  await new Promise((r) => setTimeout(r, 50));
  // the client was told of its one missed event; its next claim must not make the server tell it again
  assert.equal((servers[2]!.hellos[0]!.resume as { last: number }).last, 1);
  assert.equal(reports.length, 1);
  await client.close();
});
