// Why the issuer refused a request: a gRPC status, a stable reason (a metrics label and the prefix of the message) and
// a message that says which rule failed. Messages name rules and public values only: never a token or key material.
import * as grpc from "@grpc/grpc-js";

export type RefusalCode =
  "UNAUTHENTICATED" | "PERMISSION_DENIED" | "INVALID_ARGUMENT" | "RESOURCE_EXHAUSTED" | "UNAVAILABLE";

export class IssuerRefusal extends Error {
  override readonly name = "IssuerRefusal";
  constructor(
    readonly code: RefusalCode,
    readonly reason: string,
    message: string,
  ) {
    super(`${reason}: ${message}`);
  }

  get grpcStatus(): grpc.status {
    return grpc.status[this.code];
  }
}

export const unauthenticated = (reason: string, message: string) =>
  new IssuerRefusal("UNAUTHENTICATED", reason, message);
export const denied = (reason: string, message: string) => new IssuerRefusal("PERMISSION_DENIED", reason, message);
export const invalid = (reason: string, message: string) => new IssuerRefusal("INVALID_ARGUMENT", reason, message);

/** Attacker-supplied text for a message: bounded, printable ASCII, one line. */
export function printable(text: string, max = 100): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
