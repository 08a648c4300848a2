/** A session's counters (names as the Python `kcp.stats.Counters`, in camelCase). */
import { newEngineCounters, type EngineCounters } from "./engine.js";
import type { FecCounters } from "./fec.js";

/** Everything a session counts: I/O, engine, packet layer. Garbage from the network lands here. */
export interface Counters extends EngineCounters, FecCounters {
  /** UDP payload bytes sent. */
  bytesSent: number;
  /** UDP payload bytes received. */
  bytesReceived: number;
  /** UDP payloads sent. */
  outPkts: number;
  /** UDP payloads received. */
  inPkts: number;
  /** Every dropped datagram (the specific counters below say why). */
  inErrs: number;
  /** Block cipher: the crc32 did not match (corrupt or wrong key). */
  inCsumErrors: number;
  /** AEAD: the tag did not verify (corrupt or wrong key). */
  decryptErrors: number;
  /** KCP packets a session with FEC sent plain: its peer sends plain (compat mode: pipeline.ts). */
  fecPlainOut: number;
  /** Out-of-band datagrams received. */
  oobIn: number;
  /** Out-of-band datagrams sent. */
  oobOut: number;
  /** OOB datagrams dropped because the receive queue was full. */
  oobDropped: number;
  /** Send errors reported by the socket. */
  sendErrors: number;
  /** Lone acks held for a second segment (held acks, secure mode). */
  acksHeld: number;
}

/** A fresh set of zero counters. */
export function newCounters(): Counters {
  return {
    ...newEngineCounters(),
    fecRecovered: 0,
    fecErrs: 0,
    fecParityShards: 0,
    fecShortShards: 0,
    shortPackets: 0,
    bytesSent: 0,
    bytesReceived: 0,
    outPkts: 0,
    inPkts: 0,
    inErrs: 0,
    inCsumErrors: 0,
    decryptErrors: 0,
    fecPlainOut: 0,
    oobIn: 0,
    oobOut: 0,
    oobDropped: 0,
    sendErrors: 0,
    acksHeld: 0,
  };
}
