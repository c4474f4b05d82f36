// Resource limits for the agent's Unix socket. Anyone who can open the socket (istiod, or any process sharing the
// socket volume) could otherwise hold unbounded Watch streams that never read, pile up leaf signings, or make the
// agent ask Vault for a new intermediate in a tight loop. Each limit refuses with RESOURCE_EXHAUSTED and a message
// naming the limit and its flag, and counts in istiod_vault_agent_limit_hits_total{reason}.
import { constants as http2Constants, type Http2Stream } from "node:http2";

export interface SocketLimits {
  /** WatchSigningBundle streams one connection may hold open at once. */
  maxWatchPerConnection: number;
  /** WatchSigningBundle streams all connections together may hold open at once. */
  maxWatchTotal: number;
  /** Bytes written to one Watch stream and not yet taken by the transport; past this the stream is dropped. */
  maxWatchBufferedBytes: number;
  /** SignCertificate calls one connection may have in flight at once. */
  maxSignInFlightPerConnection: number;
  /** Shortest time between two Vault signings caused by the Rotate RPC. */
  rotateMinIntervalMs: number;
}

export const DEFAULT_SOCKET_LIMITS: SocketLimits = {
  maxWatchPerConnection: 16,
  maxWatchTotal: 256,
  maxWatchBufferedBytes: 64 * 1024,
  maxSignInFlightPerConnection: 32,
  rotateMinIntervalMs: 30_000,
};

/** Streams besides Watch and SignCertificate a connection may have open (GetSigningBundle, Rotate). */
const OTHER_STREAMS_PER_CONNECTION = 8;

/** The HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS that fits these limits. */
export function http2StreamsPerConnection(limits: SocketLimits): number {
  return limits.maxWatchPerConnection + limits.maxSignInFlightPerConnection + OTHER_STREAMS_PER_CONNECTION;
}

/** Stand-in key for calls whose connection cannot be identified: they then share one budget (safe, not lenient). */
const UNKNOWN_CONNECTION = Object.freeze({ unknown: true });

/**
 * The HTTP/2 stream under a grpc-js server call. grpc-js exposes neither the stream nor its connection on server
 * calls (and on a Unix socket getPeer() is the same for every client), so this follows grpc-js's internal
 * call → (nextCall …) → stream fields. Callers must cope with undefined: a grpc-js update may move them.
 */
function http2StreamOf(call: object): Http2Stream | undefined {
  let inner: unknown = (call as { call?: unknown }).call;
  // Server interceptors wrap the base call; each wrapper keeps the next one in `nextCall`.
  for (let depth = 0; depth < 8 && inner !== null && typeof inner === "object"; depth++) {
    const stream = (inner as { stream?: Partial<Http2Stream> }).stream;
    if (stream && typeof stream.close === "function" && "session" in stream) return stream as Http2Stream;
    inner = (inner as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/**
 * The connection (HTTP/2 session) a call arrived on, used only as an identity key. When it cannot be found every
 * call maps to one shared key: per-connection limits then act as global ones instead of disappearing.
 */
export function connectionOf(call: object): object {
  return http2StreamOf(call)?.session ?? UNKNOWN_CONNECTION;
}

/**
 * Drops a server-streaming call at once: resets its HTTP/2 stream (freeing what HTTP/2 holds for it) and destroys the
 * grpc-js stream (freeing its queued messages). Ending it with a status would not do: the status is sent after the
 * queued messages, which a client that does not read never takes.
 */
export function dropStream(call: { destroy(): unknown }): void {
  const stream = http2StreamOf(call);
  if (stream && !stream.closed) stream.close(http2Constants.NGHTTP2_CANCEL);
  call.destroy();
}

/** Counts open items per connection and overall; acquire() says which cap, if any, refuses one more. */
export class ConnectionCounter {
  private readonly perConnection = new Map<object, number>();
  private total = 0;

  constructor(
    private readonly maxPerConnection: number,
    private readonly maxTotal: number = Number.POSITIVE_INFINITY,
  ) {}

  /** Takes one slot for `conn`; returns a release function (idempotent), or the cap that refused. */
  acquire(conn: object): (() => void) | "per_connection" | "total" {
    const held = this.perConnection.get(conn) ?? 0;
    if (held >= this.maxPerConnection) return "per_connection";
    if (this.total >= this.maxTotal) return "total";
    this.perConnection.set(conn, held + 1);
    this.total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const left = (this.perConnection.get(conn) ?? 1) - 1;
      if (left <= 0) this.perConnection.delete(conn);
      else this.perConnection.set(conn, left);
    };
  }

  get open(): number {
    return this.total;
  }
}

/**
 * Byte accounting for one Watch stream: bytes handed to write() whose completion callback has not run yet (they sit
 * in the stream's queue or HTTP/2 buffers because the client does not read). A client that reads keeps this near
 * zero; one that stops reading makes it grow by one bundle per rotation until the bound drops the stream.
 */
export class WatchBuffer {
  private pending = 0;

  constructor(private readonly maxBytes: number) {}

  /**
   * Writes through `write` (a Writable.write with a completion callback) unless that would pass the bound; returns
   * false, writing nothing, when the stream should be dropped instead.
   */
  offer(bytes: number, write: (done: () => void) => void): boolean {
    // One message always goes out when nothing is waiting, even a bundle larger than the bound.
    if (this.pending > 0 && this.pending + bytes > this.maxBytes) return false;
    this.pending += bytes;
    let settled = false;
    write(() => {
      if (settled) return;
      settled = true;
      this.pending -= bytes;
    });
    return true;
  }

  get bufferedBytes(): number {
    return this.pending;
  }
}
