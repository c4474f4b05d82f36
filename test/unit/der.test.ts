// The DER writer and reader of src/crypto/der.ts on their own: minimal encodings, read-back, and malformed or hostile
// input (the reader may only ever throw DerError). describe/it return promises that node:test itself tracks, hence
// `void` for no-floating-promises.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  DerError,
  DerReader,
  MAX_OID_BYTES,
  Tag,
  bitString,
  decodeOid,
  explicit,
  octetString,
  oid,
  sequence,
  smallInteger,
  time,
  tlv,
  unsignedInteger,
} from "../../src/crypto/der.js";
import { mulberry32, randomBytes } from "../env/hostile.js";

/** Deterministic PRNG (the hostile-input harness's mulberry32) so a failing fuzz case can be replayed. */
const prng = mulberry32;

void describe("DER writer", () => {
  const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

  void it("encodes times per RFC 5280: UTCTime through 2049, GeneralizedTime from 2050", () => {
    assert.equal(hex(time(new Date("2049-12-31T23:59:59.999Z"))), hex(Buffer.from("\x17\x0d491231235959Z", "latin1")));
    assert.equal(hex(time(new Date("2050-01-01T00:00:00Z"))), hex(Buffer.from("\x18\x0f20500101000000Z", "latin1")));
    assert.equal(hex(time(new Date("1950-01-01T00:00:00Z"))), hex(Buffer.from("\x17\x0d500101000000Z", "latin1")));
    assert.equal(hex(time(new Date("1949-12-31T23:59:59Z"))), hex(Buffer.from("\x18\x0f19491231235959Z", "latin1")));
    assert.equal(hex(time(new Date("2030-03-04T05:06:07Z"))), hex(Buffer.from("\x17\x0d300304050607Z", "latin1")));
    assert.throws(() => time(new Date(Number.NaN)), DerError);
  });

  void it("encodes lengths, integers and OIDs minimally", () => {
    assert.equal(hex(tlv(0x04, Buffer.alloc(0x7f))).slice(0, 4), "047f");
    assert.equal(hex(tlv(0x04, Buffer.alloc(0x80))).slice(0, 6), "048180");
    assert.equal(hex(tlv(0x04, Buffer.alloc(0x100))).slice(0, 8), "04820100");
    assert.equal(hex(tlv(0x04, Buffer.alloc(70000))).slice(0, 10), "0483011170");
    assert.equal(hex(unsignedInteger(Uint8Array.of(0x80))), "02020080");
    assert.equal(hex(unsignedInteger(Uint8Array.of(0, 0, 0x7f))), "02017f");
    assert.equal(hex(smallInteger(0)), "020100");
    assert.equal(hex(smallInteger(65536)), "0203010000");
    assert.equal(hex(oid("1.2.840.10045.4.3.2")), "06082a8648ce3d040302");
    assert.equal(hex(oid("2.5.29.17")), "0603551d11");
    assert.equal(hex(oid("2.999.3")), "0603883703");
    assert.throws(() => oid("1.40"), DerError);
    assert.throws(() => oid("3.1"), DerError);
    assert.throws(() => oid("1.2.x"), DerError);
    assert.equal(hex(bitString(Uint8Array.of(0xa0), 5)), "030205a0");
    assert.throws(() => bitString(Uint8Array.of(), 1), DerError);
  });

  void it("reads back what it writes", () => {
    const der = sequence(
      smallInteger(300),
      oid("1.2.840.113549.1.1.11"),
      bitString(Uint8Array.of(1, 2, 3)),
      explicit(3, octetString(Uint8Array.of(9))),
    );
    const top = new DerReader(der);
    const r = top.children(top.expect(Tag.SEQUENCE, "seq"), "seq");
    top.finish("top");
    assert.equal(r.readSmallInteger("int"), 300);
    assert.equal(r.readOid("oid"), "1.2.840.113549.1.1.11");
    assert.deepEqual([...r.readBitString("bits").bytes], [1, 2, 3]);
    const ctx = r.children(r.expect(0xa3, "ctx"), "ctx");
    assert.deepEqual([...ctx.content(ctx.expect(Tag.OCTET_STRING, "os"))], [9]);
    r.finish("seq");
    assert.equal(decodeOid(oid("2.999.3").subarray(2)), "2.999.3");
  });
});

/** Walks every element the way a generic parser would (depth-limited); the reader must only ever throw DerError. */
function walk(reader: DerReader, depth: number): void {
  while (!reader.atEnd) {
    const el = reader.next();
    if (el.tag === Tag.OID) decodeOid(reader.content(el));
    if (el.tag & 0x20 && depth < 64) walk(reader.children(el, "walk"), depth + 1);
  }
}

function onlyDerErrors(input: Uint8Array): void {
  try {
    walk(new DerReader(input), 0);
  } catch (err) {
    if (!(err instanceof DerError)) throw err;
  }
}

void describe("DER reader on malformed input", () => {
  const readOne = (bytes: number[]): unknown => new DerReader(Uint8Array.from(bytes)).next();

  void it("refuses truncated, indefinite, non-minimal and oversized lengths with DerError", () => {
    const bad: number[][] = [
      [],
      [0x30],
      [0x30, 0x01],
      [0x30, 0x80, 0x00, 0x00],
      [0x04, 0x81, 0x05, 1, 2, 3, 4, 5],
      [0x04, 0x82, 0x00, 0x80, ...new Array<number>(0x80).fill(0)],
      [0x04, 0x84, 0xff, 0xff, 0xff, 0xff],
      [0x04, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
      [0x04, 0x83, 0x7f, 0xff, 0xff],
      [0x04, 0x05, 1, 2],
      [0x1f, 0x81, 0x00, 0x00],
    ];
    for (const bytes of bad) assert.throws(() => readOne(bytes), DerError, Buffer.from(bytes).toString("hex"));
  });

  void it("refuses long and malformed OIDs and non-minimal INTEGERs", () => {
    assert.throws(() => decodeOid(Buffer.alloc(MAX_OID_BYTES + 1, 0x01)), DerError);
    assert.throws(() => decodeOid(Uint8Array.of(0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), DerError);
    assert.throws(() => decodeOid(Uint8Array.of(0x2a, 0x86)), DerError);
    assert.throws(() => decodeOid(Uint8Array.of(0x2a, 0x80, 0x01)), DerError);
    assert.throws(() => decodeOid(Uint8Array.of()), DerError);
    const int = (bytes: number[]): number => new DerReader(Uint8Array.from(bytes)).readSmallInteger("int");
    assert.throws(() => int([0x02, 0x02, 0x00, 0x01]), DerError);
    assert.throws(() => int([0x02, 0x02, 0xff, 0x80]), DerError);
    assert.throws(() => int([0x02, 0x00]), DerError);
    assert.throws(() => int([0x02, 0x01, 0x80]), DerError);
  });

  void it("handles deep nesting without recursion trouble", () => {
    let nested: Buffer = Buffer.from([0x05, 0x00]);
    for (let i = 0; i < 5000; i++) nested = sequence(nested);
    onlyDerErrors(nested);
    const unbalanced = Buffer.alloc(20000);
    for (let i = 0; i < unbalanced.length; i += 2) [unbalanced[i], unbalanced[i + 1]] = [0x30, 0x80];
    onlyDerErrors(unbalanced);
  });

  void it("throws only DerError on 5,000 random inputs (seeded)", () => {
    const next = prng(0x5eed);
    for (let i = 0; i < 5000; i++) {
      const bytes = randomBytes(next, Math.floor(next() * 600));
      // Half of them start like a SEQUENCE with a plausible length so the walk gets past the first header.
      if (i % 2 === 0 && bytes.length > 4) [bytes[0], bytes[1], bytes[2], bytes[3]] = [0x30, 0x82, 0x00, 0x00];
      if (i % 2 === 0 && bytes.length > 4) bytes.writeUInt16BE(bytes.length - 4, 2);
      onlyDerErrors(bytes);
    }
  });
});
