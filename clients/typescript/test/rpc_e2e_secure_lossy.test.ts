/**
 * End to end in secure mode through `python -m kcp.relay` at 10 % loss (seeded) each way: the
 * suite of support/rpc_e2e.ts, and a reconnect through the relay (killed, back on the same port)
 * that resumes the session with no push lost.
 */
import { e2eSuite, relayReconnectTest, type E2eSetup } from "./support/rpc_e2e.js";

const KEY = "ts e2e secure passphrase";
const SETUP: E2eSetup = { serverArgs: ["--key", KEY], wire: { mode: "secure", passphrase: KEY }, relay: { loss: 10, seed: Number(process.env["KCPRPC_RELAY_SEED"] ?? 7) } };
e2eSuite(SETUP);
relayReconnectTest(SETUP);
