/**
 * End to end in compat mode (kcp-go's format, aes-128-gcm with FEC 10,3) through
 * `python -m kcp.relay` at 10 % loss (seeded) each way: the suite of support/rpc_e2e.ts, and a
 * reconnect through the relay (killed, back on the same port) that restores the rooms and topics
 * from the client's positions with no push lost.
 */
import { e2eSuite, relayReconnectTest, type E2eSetup } from "./support/rpc_e2e.js";

const KEY = "ts e2e secret";
const SETUP: E2eSetup = {
  serverArgs: ["--wire", "compat", "--crypt", "aes-128-gcm", "--key", KEY, "--datashard", "10", "--parityshard", "3"],
  wire: { mode: "compat", crypt: "aes-128-gcm", key: KEY, fec: [10, 3] },
  relay: { loss: 10, seed: Number(process.env["KCPRPC_RELAY_SEED"] ?? 11) },
};
e2eSuite(SETUP);
relayReconnectTest(SETUP);
