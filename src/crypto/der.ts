// A tiny DER toolkit for the leaf path: a writer for the fixed certificate shape the leaf signer emits, and a
// minimal reader for the untrusted CSRs it parses. The reader never recurses on its own (callers walk the one shape
// they expect, element by element), checks every length against the enclosing element before using it, accepts
// only definite, minimally encoded lengths (DER), and reports every problem as a DerError: indexing a Uint8Array out
// of range yields undefined rather than throwing, and every index is checked before it is used.

/** Malformed DER. Messages are fixed texts from this module and never carry the input's bytes. */
export class DerError extends Error {
  override readonly name = "DerError";
}

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

const CONSTRUCTED = 0x20;
const CONTEXT = 0x80;

// ---------------------------------------------------------------------------------------------------------- writer

/** One TLV: `tag`, the definite length of all `contents`, then the contents in order. */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  let length = 0;
  for (const c of contents) length += c.length;
  const lengthBytes = length < 0x80 ? 0 : length < 0x100 ? 1 : length < 0x10000 ? 2 : length < 0x1000000 ? 3 : 4;
  const header = 2 + lengthBytes;
  const out = Buffer.allocUnsafe(header + length);
  out[0] = tag;
  if (lengthBytes === 0) {
    out[1] = length;
  } else {
    out[1] = 0x80 | lengthBytes;
    for (let i = header - 1, v = length; i >= 2; i--, v = Math.floor(v / 256)) out[i] = v & 0xff;
  }
  let at = header;
  for (const c of contents) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export const sequence = (...contents: Uint8Array[]): Buffer => tlv(Tag.SEQUENCE, ...contents);
export const set = (...contents: Uint8Array[]): Buffer => tlv(Tag.SET, ...contents);
export const octetString = (bytes: Uint8Array): Buffer => tlv(Tag.OCTET_STRING, bytes);
export const boolean = (value: boolean): Buffer => tlv(Tag.BOOLEAN, Uint8Array.of(value ? 0xff : 0x00));
export const nullValue = (): Buffer => tlv(Tag.NULL);

/** BIT STRING of whole bytes (`unusedBits` = 0) or of a bit field whose last `unusedBits` bits are padding. */
export function bitString(bytes: Uint8Array, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw new DerError("invalid BIT STRING padding");
  }
  return tlv(Tag.BIT_STRING, Uint8Array.of(unusedBits), bytes);
}

/** INTEGER holding the non-negative big-endian magnitude `bytes` (leading zeros dropped, a 0x00 pad added as needed). */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const magnitude = bytes.length === 0 ? Uint8Array.of(0) : bytes.subarray(start);
  return magnitude[0]! & 0x80 ? tlv(Tag.INTEGER, Uint8Array.of(0), magnitude) : tlv(Tag.INTEGER, magnitude);
}

export function smallInteger(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw new DerError("smallInteger takes a non-negative safe integer");
  const bytes: number[] = [];
  for (let v = value; ; v = Math.floor(v / 256)) {
    bytes.unshift(v & 0xff);
    if (v < 256) break;
  }
  return unsignedInteger(Uint8Array.from(bytes));
}

/** IA5String (7-bit ASCII) of `text`. */
export function ia5String(text: string): Buffer {
  return tlv(Tag.IA5_STRING, ascii(text));
}

export function ascii(text: string): Buffer {
  // eslint-disable-next-line no-control-regex
  if (!/^[\x00-\x7f]*$/.test(text)) throw new DerError("IA5String takes 7-bit ASCII only");
  return Buffer.from(text, "latin1");
}

const oidCache = new Map<string, Buffer>();

/** OBJECT IDENTIFIER from its dotted form, e.g. "2.5.29.17" (encodings are cached: the set used here is small). */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split(".").map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : Number.NaN));
  const [first, second, ...rest] = arcs;
  if (
    first === undefined ||
    second === undefined ||
    !arcs.every(Number.isSafeInteger) ||
    first > 2 ||
    (first < 2 && second > 39)
  ) {
    throw new DerError(`invalid OBJECT IDENTIFIER ${dotted}`);
  }
  const bytes: number[] = [];
  for (const arc of [first * 40 + second, ...rest]) {
    const base128: number[] = [arc % 128];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) base128.unshift((v % 128) | 0x80);
    bytes.push(...base128);
  }
  const encoded = tlv(Tag.OID, Uint8Array.from(bytes));
  oidCache.set(dotted, encoded);
  return encoded;
}

/** RFC 5280 4.1.2.5: UTCTime for years 1950 through 2049, GeneralizedTime otherwise; whole seconds, always "Z". */
export function time(date: Date): Buffer {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new DerError("invalid date");
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new DerError("year outside 0000-9999");
  const two = (n: number): string => (n < 10 ? `0${n}` : String(n));
  const rest =
    two(date.getUTCMonth() + 1) +
    two(date.getUTCDate()) +
    two(date.getUTCHours()) +
    two(date.getUTCMinutes()) +
    two(date.getUTCSeconds()) +
    "Z";
  if (year >= 1950 && year <= 2049) return tlv(Tag.UTC_TIME, Buffer.from(two(year % 100) + rest, "latin1"));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(String(year).padStart(4, "0") + rest, "latin1"));
}

/** [n] EXPLICIT: a constructed context-specific tag around complete TLVs. */
export const explicit = (n: number, ...contents: Uint8Array[]): Buffer => tlv(CONTEXT | CONSTRUCTED | n, ...contents);
/** [n] IMPLICIT on a primitive type: the context-specific tag replaces the type's own. */
export const contextPrimitive = (n: number, content: Uint8Array): Buffer => tlv(CONTEXT | n, content);
/** [n] IMPLICIT on a constructed type (SEQUENCE, SET). */
export const contextConstructed = (n: number, ...contents: Uint8Array[]): Buffer =>
  tlv(CONTEXT | CONSTRUCTED | n, ...contents);

// ---------------------------------------------------------------------------------------------------------- reader

/** One element found by a DerReader: offsets into the reader's bytes. */
export interface DerElement {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly headerStart: number;
  /** Offset of the first content byte. */
  readonly start: number;
  /** Offset just past the last content byte. */
  readonly end: number;
}

/** Content lengths above this are refused whatever the input size (a CSR or certificate is a few KiB). */
export const MAX_ELEMENT_LENGTH = 1 << 20;
/** Longest OBJECT IDENTIFIER content accepted (real ones are under 30 bytes). */
export const MAX_OID_BYTES = 64;

/** Reads consecutive elements from bytes[start, end). Children are read with a new reader over one element. */
export class DerReader {
  private pos: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    readonly end = bytes.length,
  ) {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > bytes.length || start > end) {
      throw new DerError("reader bounds outside the input");
    }
    this.pos = start;
  }

  get atEnd(): boolean {
    return this.pos >= this.end;
  }

  /** The next element's tag byte, or -1 at the end. */
  peekTag(): number {
    return this.pos < this.end ? this.bytes[this.pos]! : -1;
  }

  /** The next element (any tag); advances past it. */
  next(what = "element"): DerElement {
    const bytes = this.bytes;
    const headerStart = this.pos;
    if (headerStart + 2 > this.end) throw new DerError(`${what}: truncated header`);
    const tag = bytes[headerStart]!;
    // Multi-byte (high-number) tags never occur in the structures read here.
    if ((tag & 0x1f) === 0x1f) throw new DerError(`${what}: high tag numbers are not supported`);
    const first = bytes[headerStart + 1]!;
    let start = headerStart + 2;
    let length: number;
    if (first < 0x80) {
      length = first;
    } else {
      const count = first & 0x7f;
      if (count === 0) throw new DerError(`${what}: indefinite length is not DER`);
      if (count > 3) throw new DerError(`${what}: length too large`);
      if (start + count > this.end) throw new DerError(`${what}: truncated length`);
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + bytes[start + i]!;
      start += count;
      if (bytes[headerStart + 2] === 0 || length < 0x80) throw new DerError(`${what}: length is not minimally encoded`);
    }
    if (length > MAX_ELEMENT_LENGTH) throw new DerError(`${what}: length too large`);
    const end = start + length;
    if (end > this.end) throw new DerError(`${what}: length exceeds the enclosing element`);
    this.pos = end;
    return { tag, headerStart, start, end };
  }

  /** The next element, which must have tag `tag`. */
  expect(tag: number, what: string): DerElement {
    if (this.peekTag() !== tag) {
      throw new DerError(this.atEnd ? `${what}: missing` : `${what}: unexpected tag 0x${hex2(this.peekTag())}`);
    }
    return this.next(what);
  }

  /** The next element if it has tag `tag`, else undefined (nothing consumed). */
  optional(tag: number, what: string): DerElement | undefined {
    return this.peekTag() === tag ? this.next(what) : undefined;
  }

  /** A reader over a constructed element's contents. */
  children(el: DerElement, what: string): DerReader {
    if ((el.tag & CONSTRUCTED) === 0) throw new DerError(`${what}: expected a constructed element`);
    return new DerReader(this.bytes, el.start, el.end);
  }

  /** Requires that every byte has been read. */
  finish(what: string): void {
    if (this.pos !== this.end) throw new DerError(`${what}: unexpected trailing data`);
  }

  /** The element's contents (a view, not a copy). */
  content(el: DerElement): Uint8Array {
    return this.bytes.subarray(el.start, el.end);
  }

  /** The whole element, header included (a view, not a copy). */
  raw(el: DerElement): Uint8Array {
    return this.bytes.subarray(el.headerStart, el.end);
  }

  /** The next element as an OBJECT IDENTIFIER, in dotted form. */
  readOid(what: string): string {
    return decodeOid(this.content(this.expect(Tag.OID, what)), what);
  }

  /** The next element as a BOOLEAN (BER's any non-zero byte is true). */
  readBoolean(what: string): boolean {
    const el = this.expect(Tag.BOOLEAN, what);
    if (el.end - el.start !== 1) throw new DerError(`${what}: BOOLEAN must be one byte`);
    return this.bytes[el.start] !== 0;
  }

  /** The next element as an INTEGER that fits a safe non-negative number. */
  readSmallInteger(what: string): number {
    const bytes = integerContent(this.content(this.expect(Tag.INTEGER, what)), what);
    if (bytes[0]! & 0x80) throw new DerError(`${what}: negative INTEGER`);
    if (bytes.length > 6) throw new DerError(`${what}: INTEGER too large`);
    let value = 0;
    for (const b of bytes) value = value * 256 + b;
    return value;
  }

  /** The next element as an INTEGER's content octets (two's complement, minimally encoded). */
  readIntegerBytes(what: string): Uint8Array {
    return integerContent(this.content(this.expect(Tag.INTEGER, what)), what);
  }

  /** The next element as a BIT STRING: its unused-bit count and data bytes. */
  readBitString(what: string): { unusedBits: number; bytes: Uint8Array } {
    const content = this.content(this.expect(Tag.BIT_STRING, what));
    const unusedBits = content[0];
    if (unusedBits === undefined || unusedBits > 7 || (content.length === 1 && unusedBits !== 0)) {
      throw new DerError(`${what}: invalid BIT STRING`);
    }
    return { unusedBits, bytes: content.subarray(1) };
  }

  /** The next element as a NULL. */
  readNull(what: string): void {
    const el = this.expect(Tag.NULL, what);
    if (el.end !== el.start) throw new DerError(`${what}: NULL must be empty`);
  }
}

function integerContent(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.length === 0) throw new DerError(`${what}: empty INTEGER`);
  if (bytes.length > 1) {
    const [b0, b1] = [bytes[0]!, bytes[1]!];
    if ((b0 === 0x00 && b1 < 0x80) || (b0 === 0xff && b1 >= 0x80)) {
      throw new DerError(`${what}: INTEGER is not minimally encoded`);
    }
  }
  return bytes;
}

/** Dotted form of an OBJECT IDENTIFIER's content octets; bounded in length and arc size. */
export function decodeOid(content: Uint8Array, what = "OBJECT IDENTIFIER"): string {
  if (content.length === 0 || content.length > MAX_OID_BYTES) throw new DerError(`${what}: invalid OID length`);
  let out = "";
  let arc = 0;
  let arcStart = true;
  for (let i = 0; i < content.length; i++) {
    const b = content[i]!;
    if (arcStart && b === 0x80) throw new DerError(`${what}: OID arc is not minimally encoded`);
    // 2^46 * 128 stays below 2^53: larger arcs do not exist in practice and would lose precision.
    if (arc >= 2 ** 46) throw new DerError(`${what}: OID arc too large`);
    arc = arc * 128 + (b & 0x7f);
    arcStart = (b & 0x80) === 0;
    if (!arcStart) continue;
    if (out === "") out = arc < 40 ? `0.${arc}` : arc < 80 ? `1.${arc - 40}` : `2.${arc - 80}`;
    else out += `.${arc}`;
    arc = 0;
  }
  if (!arcStart) throw new DerError(`${what}: truncated OID`);
  return out;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}
