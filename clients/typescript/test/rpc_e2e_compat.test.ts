/** End to end in compat mode (kcp-go's format, aes): the suite of support/rpc_e2e.ts. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { e2eSuite } from "./support/rpc_e2e.js";
import { connect } from "../src/rpc/net.js";
import { RpcError, Status } from "../src/rpc/status.js";
import { startPythonServer, waitFor } from "./support/rpc_python.js";

const KEY = "ts e2e secret";
e2eSuite({ serverArgs: ["--wire", "compat", "--crypt", "aes", "--key", KEY], wire: { mode: "compat", crypt: "aes", key: KEY } });

test("a server shutting down drains: GOAWAY, calls in flight finish, new calls fail UNAVAILABLE", async () => {
  const server = await startPythonServer("tests/clients/ts_app.py", ["--wire", "compat", "--crypt", "aes", "--key", KEY]);
  try {
    const c = await connect("127.0.0.1", server.port, { wire: { mode: "compat", crypt: "aes", key: KEY } });
    const inFlight = c.unary("ts.App/sleep", 300);
    // the server's KCP acknowledged the CALL (nothing of ours waits): it is in the server's hands
    await waitFor(() => c.transportStats().waitSnd === 0 && (c.transportStats().inSegs ?? 0) > 0, "the CALL's ack", 5000);
    server.closeStdin(); // ts_app.py: server.shutdown(grace=0.5)
    await waitFor(() => !c.connected, "the GOAWAY", 5000);
    await assert.rejects(c.unary("ts.App/sleep", 1), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
    assert.equal(await inFlight, 300);
    await c.close();
    await server.exited;
  } finally {
    await server.kill();
  }
});
