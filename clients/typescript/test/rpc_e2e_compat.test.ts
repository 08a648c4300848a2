/** End to end in compat mode (kcp-go's format, aes): the suite of support/rpc_e2e.ts. */
import { e2eSuite } from "./support/rpc_e2e.js";

const KEY = "ts e2e secret";
e2eSuite({ serverArgs: ["--wire", "compat", "--crypt", "aes", "--key", KEY], wire: { mode: "compat", crypt: "aes", key: KEY } });
