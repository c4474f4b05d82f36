// grpc-js answers a request it cannot decode with INTERNAL, which blames the server for the caller's bad input (for
// example an int64 beyond 2^53, which the generated decoder refuses). Wrapping a service's deserializers turns any
// decode failure into a marked request, so handlers can answer INVALID_ARGUMENT with the reason.
import type { ServiceDefinition } from "@grpc/grpc-js";

const DECODE_ERROR = Symbol("decodeError");

export function withDecodeErrors<T extends ServiceDefinition>(service: T): T {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return { [DECODE_ERROR]: (err as Error).message };
        }
      },
    };
  }
  return wrapped as T;
}

/** The decode failure of a request from a wrapped service, if there was one. */
export function decodeError(request: unknown): string | undefined {
  const r = request as { [DECODE_ERROR]?: string } | null;
  return r?.[DECODE_ERROR] === undefined ? undefined : `the request could not be decoded: ${r[DECODE_ERROR]}`;
}
