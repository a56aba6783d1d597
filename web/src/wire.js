// The protobuf wire format of tern's frames, hand-written and driven by ./schema.js (which
// tern-proto generates from proto/tern.proto; see its header). No dependency and no build
// step: the browser loads this module as it is, so the server can embed the page.
//
// The JavaScript shape of a message is the one protobufjs' static code gave the SDK before
// (generated with --force-number), so sdk.js reads frames the same way:
// - field names in camelCase (`reqId`, `afterInboxSeq`);
// - 64-bit integers as Numbers (every seq, id and timestamp of the protocol is below 2^53;
//   larger ones lose precision, as with protobufjs' Long-less numbers); encode also takes
//   a BigInt or a decimal string;
// - bytes as Uint8Array, strings as strings, enums as their numbers (encode also takes an
//   enum value's name);
// - a decoded message has its fields' defaults on its prototype (0, '', false, empty
//   bytes, a frozen [] for repeated fields, null for message fields and proto3 `optional`
//   ones), and only the fields present on the wire as its own properties;
// - a oneof reads as the name of the member that is set (`frame.body === 'loginOk'`);
// - encoding leaves out null/undefined fields and, except `optional` ones and oneof
//   members, fields at their default; repeated numbers and enums are packed (decode
//   takes both forms); message fields are written even when empty;
// - decode skips unknown fields (any wire type) and throws a RangeError on truncated
//   input or nesting deeper than MAX_DEPTH.
//
// API: `proto.Frame.encode(obj).finish()` -> Uint8Array and `proto.Frame.decode(bytes)`
// (the protobufjs calls the SDK used), also `encode('Frame', obj)` and
// `decode('Frame', bytes)`; enums as `proto.ErrorCode.FORBIDDEN === 14` and
// `proto.ErrorCode[14] === 'FORBIDDEN'`. `compile(schema)` makes the same for another
// schema of that shape (the tests use it for the scalar types tern.proto lacks).

import schema from './schema.js';

/** Nesting limit of messages in messages, on encode and decode. */
export const MAX_DEPTH = 100;

const TWO_32 = 4294967296;
const utf8e = new TextEncoder();
const utf8d = new TextDecoder();
const EMPTY_BYTES = new Uint8Array(0);
const EMPTY_LIST = Object.freeze([]);

/** Wire type of each scalar type (numbers and enums are packable). */
const WIRE = {
  double: 1, float: 5, int64: 0, uint64: 0, int32: 0, fixed64: 1, fixed32: 5, bool: 0,
  string: 2, bytes: 2, uint32: 0, sfixed32: 5, sfixed64: 1, sint32: 0, sint64: 0, enum: 0, message: 2,
};

// ---------------------------------------------------------------------------------------
// 64-bit values as two unsigned 32-bit halves [lo, hi].

/** @param {number|bigint|string} v @returns {[number, number]} two's complement halves */
function halves(v) {
  if (typeof v === 'bigint') {
    const u = BigInt.asUintN(64, v);
    return [Number(u & 0xffffffffn), Number(u >> 32n)];
  }
  let n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n)) throw new TypeError(`not a 64-bit integer: ${v}`);
  n = Math.trunc(n);
  const neg = n < 0;
  if (neg) n = -n;
  let lo = n % TWO_32 >>> 0;
  let hi = Math.floor(n / TWO_32) >>> 0;
  if (neg) {
    lo = (~lo + 1) >>> 0;
    hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  }
  return [lo, hi];
}

/** @param {number} lo @param {number} hi */
const unsigned64 = (lo, hi) => hi * TWO_32 + lo;

/** @param {number} lo @param {number} hi */
function signed64(lo, hi) {
  if (hi & 0x80000000) {
    const l = (~lo + 1) >>> 0;
    const h = (~hi + (l === 0 ? 1 : 0)) >>> 0;
    return -(h * TWO_32 + l);
  }
  return hi * TWO_32 + lo;
}

// ---------------------------------------------------------------------------------------
// Writing.

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  /** @param {number} n */
  room(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  /** An unsigned 32-bit varint. @param {number} v */
  varint32(v) {
    this.room(5);
    v >>>= 0;
    while (v > 127) {
      this.buf[this.len++] = (v & 127) | 128;
      v >>>= 7;
    }
    this.buf[this.len++] = v;
  }

  /** A 64-bit varint from its halves. @param {number} lo @param {number} hi */
  varint64(lo, hi) {
    if (hi === 0) return this.varint32(lo);
    this.room(10);
    while (hi !== 0 || lo > 127) {
      this.buf[this.len++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.buf[this.len++] = lo;
  }

  /** @param {number} number @param {number} wire */
  tag(number, wire) {
    this.varint32(((number << 3) | wire) >>> 0);
  }

  /** Length-delimited bytes. @param {Uint8Array} b */
  bytes(b) {
    this.varint32(b.length);
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** @param {number} n @param {(v: DataView) => void} put */
  fixed(n, put) {
    this.room(n);
    put(new DataView(this.buf.buffer, this.buf.byteOffset + this.len, n));
    this.len += n;
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

/** Bytes from a Uint8Array (or Buffer), an array of numbers, or base64 text. */
function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return Uint8Array.from(atob(v), (c) => c.charCodeAt(0));
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return Uint8Array.from(v);
}

/** An enum value's number (a name is looked up). */
function enumNumber(ctx, field, v) {
  if (typeof v === 'string') {
    const n = ctx.enums[field.of]?.[v];
    if (typeof n !== 'number') throw new TypeError(`${field.of} has no value ${v}`);
    return n;
  }
  return Number(v) | 0;
}

/** Writes one non-packed value of `field` (without its tag). */
function writeValue(ctx, w, field, v, depth) {
  switch (field.type) {
    case 'string': return w.bytes(utf8e.encode(String(v)));
    case 'bytes': return w.bytes(toBytes(v));
    case 'message': {
      const inner = new Writer();
      writeMessage(ctx, inner, field.of, v, depth + 1);
      return w.bytes(inner.buf.subarray(0, inner.len));
    }
    case 'bool': return w.varint32(v ? 1 : 0);
    case 'uint32': return w.varint32(Number(v) >>> 0);
    case 'int32':
    case 'enum': {
      const n = field.type === 'enum' ? enumNumber(ctx, field, v) : Number(v) | 0;
      return n < 0 ? w.varint64(n >>> 0, 0xffffffff) : w.varint32(n);
    }
    case 'sint32': {
      const n = Number(v) | 0;
      return w.varint32(((n << 1) ^ (n >> 31)) >>> 0);
    }
    case 'uint64':
    case 'int64': return w.varint64(...halves(v));
    case 'sint64': {
      const [lo, hi] = halves(v);
      // zigzag: (n << 1) ^ (n >> 63) over the halves
      const sign = hi & 0x80000000 ? 0xffffffff : 0;
      const zlo = ((lo << 1) ^ sign) >>> 0;
      const zhi = (((hi << 1) | (lo >>> 31)) ^ sign) >>> 0;
      return w.varint64(zlo, zhi);
    }
    case 'fixed32': return w.fixed(4, (d) => d.setUint32(0, Number(v) >>> 0, true));
    case 'sfixed32': return w.fixed(4, (d) => d.setInt32(0, Number(v) | 0, true));
    case 'float': return w.fixed(4, (d) => d.setFloat32(0, Number(v), true));
    case 'double': return w.fixed(8, (d) => d.setFloat64(0, Number(v), true));
    case 'fixed64':
    case 'sfixed64': {
      const [lo, hi] = halves(v);
      return w.fixed(8, (d) => {
        d.setUint32(0, lo, true);
        d.setUint32(4, hi, true);
      });
    }
    default: throw new TypeError(`unknown field type ${field.type}`);
  }
}

/** Is `v` the proto3 default of a scalar field (left off the wire)? */
function isDefault(ctx, field, v) {
  switch (field.type) {
    case 'string': return v === '';
    case 'bytes': return v.length === 0;
    case 'bool': return !v;
    case 'message': return false;
    case 'enum': return v === 0 || (typeof v === 'string' && enumNumber(ctx, field, v) === 0);
    default: return v === 0 || v === 0n || v === '0';
  }
}

function writeMessage(ctx, w, type, obj, depth) {
  if (depth > MAX_DEPTH) throw new RangeError('max depth exceeded');
  const t = ctx.types[type];
  if (!t) throw new TypeError(`unknown message type ${type}`);
  for (const f of t.fields) {
    const v = obj[f.name];
    if (v === null || v === undefined) continue;
    if (f.repeated) {
      const list = Array.isArray(v) ? v : [...v];
      if (list.length === 0) continue;
      if (f.packed !== false && WIRE[f.type] !== 2) {
        const inner = new Writer();
        for (const x of list) writeValue(ctx, inner, f, x, depth);
        w.tag(f.number, 2);
        w.bytes(inner.buf.subarray(0, inner.len));
      } else {
        for (const x of list) {
          w.tag(f.number, WIRE[f.type]);
          writeValue(ctx, w, f, x, depth);
        }
      }
      continue;
    }
    if (!f.optional && !f.oneof && isDefault(ctx, f, v)) continue;
    w.tag(f.number, WIRE[f.type]);
    writeValue(ctx, w, f, v, depth);
  }
}

// ---------------------------------------------------------------------------------------
// Reading.

class Reader {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** @param {number} n */
  need(n, end) {
    if (this.pos + n > end) throw new RangeError('index out of range');
  }

  /** A varint as [lo, hi] halves. */
  varint(end) {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      this.need(1, end);
      const b = this.buf[this.pos++];
      if (i < 4) lo |= (b & 127) << (7 * i);
      else if (i === 4) {
        lo |= (b & 15) << 28;
        hi |= (b & 127) >> 4;
      } else hi |= (b & 127) << (7 * i - 32);
      if (b < 128) return [lo >>> 0, hi >>> 0];
    }
    throw new RangeError('invalid varint encoding');
  }

  /** The end of a length-delimited value that starts here. */
  delimited(end) {
    const [len, hi] = this.varint(end);
    if (hi !== 0 || this.pos + len > end) throw new RangeError('index out of range');
    return this.pos + len;
  }

  /** Skips a value of wire type `wire`. */
  skip(wire, end, number, depth) {
    switch (wire) {
      case 0: this.varint(end); return;
      case 1: this.need(8, end); this.pos += 8; return;
      case 2: this.pos = this.delimited(end); return;
      case 5: this.need(4, end); this.pos += 4; return;
      case 3: {
        // a group: skip to its end-group tag
        if (depth > MAX_DEPTH) throw new RangeError('max depth exceeded');
        for (;;) {
          const [tag] = this.varint(end);
          if ((tag & 7) === 4) {
            if (tag >>> 3 !== number) throw new RangeError('mismatched end group');
            return;
          }
          this.skip(tag & 7, end, tag >>> 3, depth + 1);
        }
      }
      default: throw new RangeError(`invalid wire type ${wire} at offset ${this.pos}`);
    }
  }
}

/** Reads one value of `field` with its own (non-packed) wire type. */
function readValue(ctx, r, field, end, depth) {
  switch (field.type) {
    case 'string': {
      const e = r.delimited(end);
      const s = utf8d.decode(r.buf.subarray(r.pos, e));
      r.pos = e;
      return s;
    }
    case 'bytes': {
      const e = r.delimited(end);
      const b = r.buf.slice(r.pos, e);
      r.pos = e;
      return b;
    }
    case 'message': {
      const e = r.delimited(end);
      const m = readMessage(ctx, r, field.of, e, depth + 1);
      r.pos = e;
      return m;
    }
    case 'bool': {
      const [lo, hi] = r.varint(end);
      return lo !== 0 || hi !== 0;
    }
    case 'uint32': return r.varint(end)[0];
    case 'int32':
    case 'enum': return r.varint(end)[0] | 0;
    case 'sint32': {
      const n = r.varint(end)[0];
      return (n >>> 1) ^ -(n & 1);
    }
    case 'uint64': return unsigned64(...r.varint(end));
    case 'int64': return signed64(...r.varint(end));
    case 'sint64': {
      const [lo, hi] = r.varint(end);
      const u = unsigned64(lo, hi);
      return lo & 1 ? -(u + 1) / 2 : u / 2;
    }
    case 'fixed32': r.need(4, end); r.pos += 4; return r.view.getUint32(r.pos - 4, true);
    case 'sfixed32': r.need(4, end); r.pos += 4; return r.view.getInt32(r.pos - 4, true);
    case 'float': r.need(4, end); r.pos += 4; return r.view.getFloat32(r.pos - 4, true);
    case 'double': r.need(8, end); r.pos += 8; return r.view.getFloat64(r.pos - 8, true);
    case 'fixed64':
    case 'sfixed64': {
      r.need(8, end);
      const lo = r.view.getUint32(r.pos, true);
      const hi = r.view.getUint32(r.pos + 4, true);
      r.pos += 8;
      return field.type === 'fixed64' ? unsigned64(lo, hi) : signed64(lo, hi);
    }
    default: throw new TypeError(`unknown field type ${field.type}`);
  }
}

function readMessage(ctx, r, type, end, depth) {
  if (depth > MAX_DEPTH) throw new RangeError('max depth exceeded');
  const t = ctx.types[type];
  const m = Object.create(t.prototype);
  while (r.pos < end) {
    const [tag] = r.varint(end);
    const number = tag >>> 3;
    const wire = tag & 7;
    const f = t.byNumber.get(number);
    if (!f) {
      r.skip(wire, end, number, depth);
      continue;
    }
    if (f.repeated) {
      const list = Object.hasOwn(m, f.name) ? m[f.name] : (m[f.name] = []);
      if (wire === 2 && WIRE[f.type] !== 2) {
        const e = r.delimited(end);
        while (r.pos < e) list.push(readValue(ctx, r, f, e, depth));
        continue;
      }
      if (wire === WIRE[f.type]) {
        list.push(readValue(ctx, r, f, end, depth));
        continue;
      }
    } else if (wire === WIRE[f.type]) {
      const v = readValue(ctx, r, f, end, depth);
      if (f.oneof) for (const other of t.oneofs[f.oneof]) delete m[other];
      if (f.optional || f.oneof || f.type === 'message' || !isDefault(ctx, f, v)) m[f.name] = v;
      else delete m[f.name];
      continue;
    }
    // a known field with an unexpected wire type: skipped like an unknown one
    r.skip(wire, end, number, depth);
  }
  return m;
}

// ---------------------------------------------------------------------------------------
// The types of a schema.

/** Default value of a singular scalar field. */
function scalarDefault(f) {
  if (f.type === 'string') return '';
  if (f.type === 'bytes') return EMPTY_BYTES;
  if (f.type === 'bool') return false;
  return 0;
}

/**
 * @typedef {{number: number, name: string, type: string, of?: string, repeated?: boolean,
 *   packed?: boolean, optional?: boolean, oneof?: string}} Field
 * @typedef {{name: string, fields: Field[], byNumber: Map<number, Field>,
 *   oneofs: Record<string, string[]>, prototype: object}} MessageType
 * @typedef {{package: string, messages: Record<string, Field[]>,
 *   enums: Record<string, Record<string, number>>}} Schema
 */

/**
 * The codec of a schema (the shape of ./schema.js): `encode(type, obj)`,
 * `decode(type, bytes)` and `proto` (messages and enums by name). The module's own
 * exports are those of tern.proto's schema; tests compile others.
 * @param {Schema} schema
 */
export function compile(schema) {
  /** Enums by name: name -> number, and number -> name through the prototype. */
  const enums = {};
  for (const [name, values] of Object.entries(schema.enums)) {
    const byId = {};
    for (const [k, v] of Object.entries(values)) if (!(v in byId)) byId[v] = k;
    const e = Object.create(Object.freeze(byId));
    Object.assign(e, values);
    enums[name] = Object.freeze(e);
  }

  /** @type {Record<string, MessageType>} */
  const types = {};
  for (const [name, fields] of Object.entries(schema.messages)) {
    /** @type {Record<string, string[]>} */
    const oneofs = {};
    const prototype = {};
    for (const f of fields) {
      const named = f.type === 'message' ? schema.messages : f.type === 'enum' ? schema.enums : null;
      if (!(f.type in WIRE) || (named && !Object.hasOwn(named, f.of))) {
        throw new TypeError(`${name}.${f.name}: unknown type ${f.of ?? f.type}`);
      }
      if (f.repeated) prototype[f.name] = EMPTY_LIST;
      else if (f.optional || f.type === 'message' || f.oneof) prototype[f.name] = null;
      else prototype[f.name] = scalarDefault(f);
      if (f.oneof) (oneofs[f.oneof] ??= []).push(f.name);
    }
    for (const [oneof, members] of Object.entries(oneofs)) {
      Object.defineProperty(prototype, oneof, {
        /** The member that is set, or undefined. */
        get() {
          for (const k of members) if (Object.hasOwn(this, k) && this[k] != null) return k;
          return undefined;
        },
        /** Keeps only the member named (protobufjs' oneof setter). */
        set(keep) {
          for (const k of members) if (k !== keep) delete this[k];
        },
      });
    }
    Object.defineProperty(prototype, '$type', { value: name });
    types[name] = { name, fields, byNumber: new Map(fields.map((f) => [f.number, f])), oneofs, prototype };
  }
  const ctx = { types, enums };

  /** Encodes a message of type `type` (its name in the proto). @returns {Uint8Array} */
  function encode(type, obj) {
    const w = new Writer();
    writeMessage(ctx, w, type, obj ?? {}, 0);
    return w.finish();
  }

  /**
   * Decodes a message of type `type`.
   * @param {string} type
   * @param {Uint8Array|ArrayBuffer} bytes
   */
  function decode(type, bytes) {
    if (!types[type]) throw new TypeError(`unknown message type ${type}`);
    const buf = bytes instanceof ArrayBuffer
      ? new Uint8Array(bytes)
      : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength); // a Buffer too
    return readMessage(ctx, new Reader(buf), type, buf.length, 0);
  }

  /** @type {Record<string, any>} */
  const proto = { ...enums };
  for (const name of Object.keys(types)) {
    proto[name] = Object.freeze({
      name,
      fields: types[name].fields,
      encode: (obj) => {
        const bytes = encode(name, obj);
        return { finish: () => bytes };
      },
      decode: (bytes) => decode(name, bytes),
    });
  }
  return { encode, decode, proto: Object.freeze(proto), package: schema.package };
}

const tern = compile(schema);

/** Encodes a message of tern.proto: `encode('Frame', obj)` -> Uint8Array. */
export const encode = tern.encode;
/** Decodes a message of tern.proto: `decode('Frame', bytes)`. */
export const decode = tern.decode;
/**
 * tern.proto's messages (`proto.Frame.encode(obj).finish()`, `proto.Frame.decode(bytes)`)
 * and enums (`proto.ErrorCode.FORBIDDEN`, `proto.ErrorCode[14]`).
 */
export const proto = tern.proto;
export const packageName = tern.package;
