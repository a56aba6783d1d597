// Unit tests of the hand-written protobuf codec (src/wire.js) in Node: round trips of
// tern frames, the byte layout of each wire type against hand-computed encodings, 64-bit
// values above 2^32, packed and unpacked repeated fields, negative enum values, unknown
// fields skipped, truncated input refused. The frames the page exchanges with a real
// server are checked in embedded.test.mjs (and the PROTOCOL.md byte examples in
// sdk.test.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compile, decode, encode, proto } from '../src/wire.js';
import schema from '../src/schema.js';

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (h) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

test('a push frame round-trips: nested messages, repeated fields, bytes, uint64 above 2^32', () => {
  const body = Uint8Array.from([0, 1, 2, 250, 255]);
  const frame = {
    reqId: 0,
    push: {
      inboxSeq: 2 ** 40 + 5,
      message: {
        conversation: 'g:7',
        seq: 2 ** 53 - 1,
        sender: 'alice',
        clientMsgId: 'c-1',
        serverTimeMs: 1_700_000_000_123,
        body,
        contentType: 'text/plain',
        kind: proto.MessageKind.SYSTEM,
        event: { kind: proto.GroupEventKind.ROLE_CHANGED, actor: 'alice', users: ['bob', 'carol', ''], role: proto.Role.ADMIN },
        mentions: ['bob', 'ünïcødé ✓'],
        edits: [1, 300, 2 ** 32, 2 ** 40 + 1],
        attachment: { blobId: 'ab'.repeat(32), name: 'x.png' },
      },
    },
  };
  const bytes = encode('Frame', frame);
  const f = decode('Frame', bytes);
  assert.equal(f.body, 'push');
  assert.equal(f.push.inboxSeq, 2 ** 40 + 5);
  const m = f.push.message;
  assert.equal(m.seq, 2 ** 53 - 1);
  assert.equal(m.serverTimeMs, 1_700_000_000_123);
  assert.ok(m.body instanceof Uint8Array);
  assert.deepEqual([...m.body], [...body]);
  assert.deepEqual([...m.mentions], ['bob', 'ünïcødé ✓']);
  assert.deepEqual([...m.edits], [1, 300, 2 ** 32, 2 ** 40 + 1]);
  assert.deepEqual([...m.event.users], ['bob', 'carol', ''], 'an empty string in a repeated field is kept');
  assert.equal(m.event.role, proto.Role.ADMIN);
  assert.equal(m.attachment.blobId, 'ab'.repeat(32));
  // Encoding the decoded frame gives the same bytes.
  assert.equal(hex(encode('Frame', f)), hex(bytes));
  // The protobufjs-style calls the SDK uses give the same.
  assert.equal(hex(proto.Frame.encode(frame).finish()), hex(bytes));
  assert.equal(proto.Frame.decode(bytes).push.message.sender, 'alice');
});

test('absent fields read as their defaults; only fields on the wire are own properties', () => {
  const f = decode('Frame', encode('Frame', { reqId: 3, pong: {} }));
  assert.equal(f.body, 'pong');
  assert.deepEqual(Object.keys(f), ['reqId', 'pong']);
  assert.equal(f.pong.serverTimeMs, 0);
  assert.equal(f.login, null, 'another oneof member');
  const m = decode('Message', new Uint8Array(0));
  assert.deepEqual(Object.keys(m), []);
  assert.equal(m.conversation, '');
  assert.equal(m.seq, 0);
  assert.equal(m.mentionAll, false);
  assert.equal(m.kind, 0);
  assert.equal(m.event, null);
  assert.deepEqual([...m.edits], []);
  assert.ok(Object.isFrozen(m.edits), 'the shared default list cannot be changed');
  assert.equal(m.body.length, 0);
  // A field sent at its default (by another encoder) reads the same, and is not own.
  assert.deepEqual(Object.keys(decode('Message', unhex('1000'))), []);
  // proto3 `optional`: present even at its default, null when absent.
  const u = decode('UpdateGroup', encode('UpdateGroup', { conversation: 'g:1', muteAll: false, maxMembers: 0 }));
  assert.equal(u.muteAll, false);
  assert.equal(u.maxMembers, 0);
  assert.ok(Object.hasOwn(u, 'muteAll') && Object.hasOwn(u, 'maxMembers'));
  assert.equal(u.name, null);
  assert.equal(u.visibility, null);
  // Decoded messages carry no protobufjs-only helpers, but an empty frame has no body.
  assert.equal(decode('Frame', new Uint8Array(0)).body, undefined);
});

test('byte layout: varints, 64-bit values, strings, defaults left out, optional 0 kept', () => {
  assert.equal(hex(encode('MessagePush', { inboxSeq: 1 })), '1001');
  assert.equal(hex(encode('MessagePush', { inboxSeq: 300 })), '10ac02');
  assert.equal(hex(encode('MessagePush', { inboxSeq: 2 ** 32 })), '108080808010');
  assert.equal(hex(encode('MessagePush', { inboxSeq: 2 ** 53 - 1 })), '10ffffffffffffff0f');
  assert.equal(hex(encode('MessagePush', { inboxSeq: 2n ** 64n - 1n })), '10ffffffffffffffffff01', 'a BigInt');
  assert.equal(hex(encode('MessagePush', { inboxSeq: '4294967296' })), '108080808010', 'a decimal string');
  assert.equal(decode('MessagePush', unhex('10ffffffffffffffffff01')).inboxSeq, 2 ** 64, 'above 2^53: nearest number');
  assert.equal(hex(encode('MessagePush', { inboxSeq: 0, message: {} })), '0a00', 'empty message kept, 0 left out');
  assert.equal(hex(encode('Sync', { afterInboxSeq: 0 })), '0800', 'optional 0 kept');
  assert.equal(hex(encode('Sync', { afterInboxSeq: null })), '', 'null is absent');
  assert.equal(hex(encode('Message', { conversation: 'é', mentionAll: true })), '0a02c3a96801');
  assert.equal(hex(encode('Message', { conversation: '', mentionAll: false, body: new Uint8Array(0) })), '');
  assert.equal(hex(encode('Message', { body: [1, 2] })), '32020102', 'bytes from an array');
  assert.equal(hex(encode('Message', { body: 'AQI=' })), '32020102', 'bytes from base64 (as protobufjs)');
  assert.equal(hex(encode('Message', { kind: 'SYSTEM' })), hex(encode('Message', { kind: proto.MessageKind.SYSTEM })), 'an enum by name');
  assert.throws(() => encode('Message', { kind: 'NO_SUCH' }), TypeError);
  assert.throws(() => encode('NoSuchType', {}), TypeError);
});

test('repeated numbers: written packed, read packed or unpacked', () => {
  assert.equal(hex(encode('Message', { edits: [1, 2, 300] })), '8a010401' + '02ac02');
  const unpacked = unhex('8801 01 8801 02 8801 ac02');
  assert.deepEqual([...decode('Message', unpacked).edits], [1, 2, 300]);
  // Both forms in one message append in order.
  const mixed = unhex('8801 07 8a01 02 0809');
  assert.deepEqual([...decode('Message', mixed).edits], [7, 8, 9]);
  assert.equal(hex(encode('Message', { mentions: ['a', 'b'] })), '620161620162', 'strings are never packed');
});

test('enums: names both ways; negative values take ten bytes and come back', () => {
  assert.equal(proto.ErrorCode.FORBIDDEN, 14);
  assert.equal(proto.ErrorCode[14], 'FORBIDDEN');
  assert.deepEqual(Object.keys(proto.Role), ['ROLE_UNSPECIFIED', 'MEMBER', 'ADMIN', 'OWNER'], 'keys are the names only');
  const b = encode('SetMemberRole', { role: -1 });
  assert.equal(hex(b), '18ffffffffffffffffff01');
  assert.equal(decode('SetMemberRole', b).role, -1);
  assert.equal(decode('SetMemberRole', unhex('1863')).role, 99, 'a value this schema does not name stays a number');
});

test('unknown fields of every wire type are skipped', () => {
  const known = encode('ReadReceipt', { conversation: 'd:a:b', user: 'b', readSeq: 2 ** 33 });
  const unknown = unhex(
    [
      'b806 96ac01', // field 103, varint
      'c106 0102030405060708', // field 104, fixed64
      'ca06 03 616263', // field 105, length-delimited
      'd506 01020304', // field 106, fixed32
      'db06 0801 e306 e406 dc06', // field 107, a group holding a varint and an empty group 108
    ].join(''),
  );
  const r = decode('ReadReceipt', Uint8Array.from([...unknown, ...known, ...unknown]));
  assert.deepEqual([r.conversation, r.user, r.readSeq], ['d:a:b', 'b', 2 ** 33]);
  assert.deepEqual(Object.keys(r), ['conversation', 'user', 'readSeq']);
  // A known field with an unexpected wire type is skipped too.
  assert.equal(decode('ReadReceipt', unhex('0d01020304')).conversation, '');
});

test('truncated, malformed and too deeply nested input is refused with a RangeError', () => {
  const good = encode('Frame', { reqId: 9, login: { username: 'alice', password: 'password1' } });
  // (cut after 2 bytes it is a whole frame: req_id 9 alone)
  assert.throws(() => decode('Frame', good.subarray(0, 1)), RangeError, 'cut at 1');
  for (let n = 3; n < good.length; n++) {
    assert.throws(() => decode('Frame', good.subarray(0, n)), RangeError, `cut at ${n}`);
  }
  assert.throws(() => decode('Frame', unhex('08ffffffffffffffffffff01')), RangeError, 'an 11-byte varint');
  assert.throws(() => decode('Frame', unhex('0f')), RangeError, 'wire type 7');
  assert.throws(() => decode('Frame', unhex('0c')), RangeError, 'an end group without its start');
  const len = encode('Frame', { reqId: 1, ping: {} });
  assert.throws(() => decode('Frame', Uint8Array.from([...len.subarray(0, 3), 0x7f])), RangeError, 'a length past the end');
  // A group nested 200 deep in an unknown field.
  const deep = unhex('bb06'.repeat(200) + 'bc06'.repeat(200));
  assert.throws(() => decode('Frame', deep), RangeError);
});

test('a Buffer slice of a bigger buffer decodes (offset views), and bytes come out as copies', () => {
  const bytes = encode('Message', { conversation: 'c', body: Uint8Array.from([9, 8, 7]) });
  const pool = Buffer.alloc(64, 0xee);
  Buffer.from(bytes).copy(pool, 10);
  const view = pool.subarray(10, 10 + bytes.length);
  const m = decode('Message', view);
  assert.equal(m.conversation, 'c');
  assert.deepEqual([...m.body], [9, 8, 7]);
  pool.fill(0);
  assert.deepEqual([...m.body], [9, 8, 7], 'not a view of the input');
  assert.equal(decode('Message', bytes.buffer.slice(0)).conversation, 'c', 'an ArrayBuffer');
});

test('the other scalar types of proto3 (none in tern.proto yet) encode as protoc does', () => {
  const t = compile({
    package: 't',
    messages: {
      All: [
        { number: 1, name: 'i32', type: 'int32' },
        { number: 2, name: 's32', type: 'sint32' },
        { number: 3, name: 's64', type: 'sint64' },
        { number: 4, name: 'i64', type: 'int64' },
        { number: 5, name: 'f32', type: 'fixed32' },
        { number: 6, name: 'sf32', type: 'sfixed32' },
        { number: 7, name: 'f64', type: 'fixed64' },
        { number: 8, name: 'sf64', type: 'sfixed64' },
        { number: 9, name: 'fl', type: 'float' },
        { number: 10, name: 'db', type: 'double' },
        { number: 11, name: 'list', type: 'sint32', repeated: true, packed: false },
        { number: 12, name: 'child', type: 'message', of: 'All' },
      ],
    },
    enums: {},
  });
  const v = { i32: -2, s32: -2, s64: -(2 ** 40), i64: -(2 ** 40) - 1, f32: 4000000000, sf32: -5, f64: 2 ** 40 + 3, sf64: -7, fl: 1.5, db: -0.25, list: [-1, 1] };
  const b = t.encode('All', { ...v, child: { i32: 1 } });
  assert.equal(
    hex(b),
    [
      '08feffffffffffffffff01', // int32 -2: ten bytes
      '1003', // sint32 -2 -> 3
      '18ffffffffff3f', // sint64 -(2^40) -> 2^41 - 1
      '20ffffffffffdfffffff01', // int64 -(2^40) - 1
      '2d00286bee', // fixed32 4000000000
      '35fbffffff', // sfixed32 -5
      '390300000000010000', // fixed64 2^40 + 3
      '41f9ffffffffffffff', // sfixed64 -7
      '4d0000c03f', // float 1.5
      '51000000000000d0bf', // double -0.25
      '5801', '5802', // unpacked sint32 -1, 1
      '62020801', // child
    ].join(''),
  );
  const d = t.decode('All', b);
  for (const [k, want] of Object.entries(v)) assert.deepEqual(k === 'list' ? [...d[k]] : d[k], want, k);
  assert.equal(d.child.i32, 1);
  assert.throws(() => compile({ package: 'x', messages: { A: [{ number: 1, name: 'b', type: 'message', of: 'B' }] }, enums: {} }), TypeError);
  // A message nested deeper than MAX_DEPTH is refused on encode and decode.
  let deep = {};
  for (let i = 0; i < 150; i++) deep = { child: deep };
  assert.throws(() => t.encode('All', deep), RangeError);
  const varint = (n) => {
    const out = [];
    for (; n > 127; n >>>= 7) out.push((n & 127) | 128);
    return [...out, n];
  };
  let bytes = new Uint8Array(0);
  for (let i = 0; i < 150; i++) bytes = Uint8Array.from([0x62, ...varint(bytes.length), ...bytes]);
  assert.throws(() => t.decode('All', bytes), RangeError);
});

test('schema.js is the shape wire.js reads: every message and enum of tern.proto', () => {
  assert.equal(schema.package, 'tern.v1');
  assert.ok(Object.keys(schema.messages).length >= 90);
  const frame = schema.messages.Frame;
  assert.ok(frame.filter((f) => f.oneof === 'body').length >= 80);
  assert.deepEqual(frame[0], { number: 1, name: 'reqId', type: 'uint64' });
  for (const [name, fields] of Object.entries(schema.messages)) {
    const numbers = new Set(fields.map((f) => f.number));
    assert.equal(numbers.size, fields.length, `${name}: field numbers unique`);
    assert.ok(proto[name], name);
  }
});
