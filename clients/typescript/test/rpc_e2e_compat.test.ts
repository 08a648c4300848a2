/**
 * End to end in compat mode (kcp-go's format, aes) on a clean link: the suite of
 * support/rpc_e2e.ts, and a reconnect through `python -m kcp.relay` (killed, back on the same
 * port) that restores rooms and topics from the client's positions with no push lost.
 */
import { e2eSuite, relayReconnectTest, type E2eSetup } from "./support/rpc_e2e.js";

const KEY = "ts e2e secret";
const SETUP: E2eSetup = { serverArgs: ["--wire", "compat", "--crypt", "aes", "--key", KEY], wire: { mode: "compat", crypt: "aes", key: KEY } };
e2eSuite(SETUP);
relayReconnectTest(SETUP);
