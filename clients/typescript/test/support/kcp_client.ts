/** A kcprpc client on one KCP connection, with that connection's transport at hand (its session's engine and counters). */
import { Client } from "../../src/rpc/client.js";
import { KcpTransport, kcpConnector, type ConnectOptions } from "../../src/rpc/net.js";
import type { MuxConnection } from "../../src/rpc/connection.js";

/** Connect to 127.0.0.1:`port` with `wire`; the client and its first connection's KCP transport. */
export async function connectKcp(port: number, wire: ConnectOptions["wire"]): Promise<{ client: Client; transport: KcpTransport }> {
  const conns: MuxConnection[] = [];
  const dial = kcpConnector("127.0.0.1", port, { wire });
  const client = await Client.connect(async () => {
    const m = await dial();
    conns.push(m);
    return m;
  }, {});
  return { client, transport: conns[0]!.transport as KcpTransport };
}
