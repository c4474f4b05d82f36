// The one PEM reader and writer (RFC 7468 textual encoding). Every module that splits a bundle into blocks, reads one
// strict block from untrusted input, or writes DER as PEM comes here. Errors name the source and the block number,
// never any content: a block may be a private key.

/** Input that is not well-formed PEM. `code` lets callers that print errno-style codes say what went wrong. */
export class PemFormatError extends Error {
  override readonly name = "PemFormatError";
  readonly code = "malformed PEM";
}

export interface PemBlock {
  /** The label between BEGIN and END, e.g. "CERTIFICATE". */
  readonly label: string;
  readonly der: Buffer;
  /** Canonical base64 of the DER: equal for equal blocks whatever the line wrapping. */
  readonly derKey: string;
  /** The block re-encoded canonically: 64-column base64, `\n` line ends, trailing newline. */
  readonly normalized: string;
  /** Offsets of the block (BEGIN line to END line, without a trailing newline) in the input. */
  readonly start: number;
  readonly end: number;
  /** The text between the BEGIN and END lines, exactly as in the input. */
  readonly rawBody: string;
}

const PEM_BLOCK = /-----BEGIN ([^-\r\n]+)-----([\s\S]*?)-----END ([^-\r\n]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;

/** Every PEM block of `text`, in order; text between blocks is ignored. Throws PemFormatError for a malformed block. */
export function parsePemBlocks(text: string, source = "PEM input"): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    const [whole, label = "", rawBody = "", endLabel] = match;
    const compact = rawBody.replace(/\s+/g, "");
    if (label !== endLabel || compact.length % 4 !== 0 || !BASE64_BODY.test(compact)) {
      throw new PemFormatError(`${source}: PEM block ${blocks.length + 1} is malformed`);
    }
    const der = Buffer.from(compact, "base64");
    const derKey = der.toString("base64");
    blocks.push({
      label,
      der,
      derKey,
      normalized: toPem(der, label),
      start: match.index,
      end: match.index + whole.length,
      rawBody,
    });
  }
  if (blocks.length !== (text.match(/-----BEGIN /g) ?? []).length) {
    throw new PemFormatError(`${source}: a PEM block has no matching END line`);
  }
  return blocks;
}

/** The CERTIFICATE blocks of `text`, each re-encoded canonically; other blocks are skipped. */
export function splitPemCertificates(text: string, source?: string): string[] {
  return parsePemBlocks(text, source)
    .filter((b) => b.label === "CERTIFICATE")
    .map((b) => b.normalized);
}

const STRICT_BODY = /^\r?\n[A-Za-z0-9+/=\r\n]+$/;

/**
 * The DER of untrusted input that must be exactly one block with one of `labels`: nothing but whitespace around it,
 * the base64 on lines of its own (no spaces or tabs inside), and nothing after the padding. Throws PemFormatError.
 */
export function decodeSinglePem(text: string, labels: readonly string[]): Buffer {
  const what = `not one PEM block of type ${labels[0] ?? "?"}`;
  let blocks: PemBlock[];
  try {
    blocks = parsePemBlocks(text, "input");
  } catch {
    throw new PemFormatError(what);
  }
  const [block] = blocks;
  if (
    blocks.length !== 1 ||
    block === undefined ||
    !labels.includes(block.label) ||
    text.slice(0, block.start).trim() !== "" ||
    text.slice(block.end).trim() !== "" ||
    !STRICT_BODY.test(block.rawBody) ||
    block.der.length === 0
  ) {
    throw new PemFormatError(what);
  }
  return block.der;
}

/** PEM of `der` with 64-character lines and a trailing newline. */
export function toPem(der: Uint8Array | ArrayBuffer, label: string): string {
  const bytes = der instanceof ArrayBuffer ? new Uint8Array(der) : der;
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  let body = "";
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/**
 * The CERTIFICATE blocks of `text`, or none when any block is malformed: for callers that treat unusable input as
 * absent (a Secret to overwrite, a root to report missing).
 */
export function splitPemCertificatesOrNone(text: string): string[] {
  try {
    return splitPemCertificates(text);
  } catch (err) {
    if (err instanceof PemFormatError) return [];
    throw err;
  }
}

/** PEM certificates with repeats (same DER, whatever the formatting) removed, each canonically re-encoded. */
export function uniquePemCertificates(pems: readonly string[]): string[] {
  const seen = new Set<string>();
  return pems
    .flatMap((p) => splitPemCertificatesOrNone(p))
    .filter((p) => {
      if (seen.has(p)) return false;
      seen.add(p);
      return true;
    });
}
