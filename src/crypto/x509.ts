// One place that loads @peculiar/x509: it needs reflect-metadata imported before it, and its crypto provider set to
// Node's WebCrypto. Every other module imports x509 from here.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
export const subtle = webcrypto.subtle;
