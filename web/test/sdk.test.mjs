// Unit tests of the browser SDK (src/sdk.js) in Node, against a scripted fake WebSocket:
// the cases a real server cannot be made to produce on demand (holes in the inbox, read
// diffusion gaps, Closing reasons, token errors, epoch changes), with real protobuf
// encoding on the wire (src/wire.js; its own tests are in wire.test.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';

const {
  TernClient,
  proto,
  ErrorCode,
  CloseReason,
  loadState,
  storageKey,
  RULES,
  isRetryable,
  isValidUsername,
  isValidDevice,
  isValidPassword,
  livenessTimeoutMs,
  sniffImage,
  blobMime,
  blobIdOf,
  sha256Js,
  BLOB_CHUNK,
} = await import('../src/sdk.js');
const { createHash } = await import('node:crypto');

class MemStorage {
  constructor() {
    this.m = new Map();
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.m.set(k, String(v));
  }
  removeItem(k) {
    this.m.delete(k);
  }
}

/** A WebSocket the test plays the server of. */
class FakeWS {
  /** @type {FakeWS[]} */
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** decoded frames the client sent */
    this.sent = [];
    this.binaryType = 'blob';
    FakeWS.all.push(this);
  }
  static last() {
    return FakeWS.all[FakeWS.all.length - 1];
  }
  send(bytes) {
    assert.equal(this.readyState, 1, 'send on an open socket only');
    this.sent.push(proto.Frame.decode(bytes));
  }
  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: 1000, reason: '' }), 0);
  }
  // ---- test side ----
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  /** Delivers a frame from the "server". */
  recv(frame) {
    const u = proto.Frame.encode(frame).finish();
    const ab = u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength);
    this.onmessage?.({ data: ab });
  }
  serverClose() {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: '' });
  }
  /** Sent frames of one kind (and takes them off the list). */
  take(kind) {
    const out = this.sent.filter((f) => f.body === kind);
    this.sent = this.sent.filter((f) => f.body !== kind);
    return out;
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

function msg(conv, seq, sender, extra = {}) {
  return {
    conversation: conv,
    seq,
    sender,
    clientMsgId: `${sender}-${seq}`,
    serverTimeMs: 1_700_000_000_000 + seq,
    body: new TextEncoder().encode(`m${seq}`),
    ...extra,
  };
}

const LOGIN_OK = {
  username: 'alice',
  device: 'web-test',
  token: 'tok-1',
  heartbeatSecs: 30,
  storeEpoch: 'E1',
  inboxHead: 0,
  maxFrameBytes: 1 << 20,
  maxPending: 256,
};

/** A started client, its events, and its first (open) socket. */
function makeClient(opts = {}) {
  FakeWS.all = [];
  const storage = opts.storage ?? new MemStorage();
  const client = new TernClient({
    url: 'ws://test/ws',
    username: 'alice',
    password: 'password1',
    device: 'web-test',
    storage,
    WebSocket: /** @type {any} */ (FakeWS),
    initialBackoffMs: 10,
    maxBackoffMs: 40,
    ...opts,
  });
  const ev = { messages: [], states: [], acked: [], caughtUp: 0, failed: [] };
  client.on('message', (d) => ev.messages.push(d));
  client.on('state', (d) => ev.states.push(d));
  client.on('acked', (d) => ev.acked.push(d));
  client.on('send-failed', (d) => ev.failed.push(d));
  client.on('caught-up', () => ev.caughtUp++);
  client.start();
  const ws = FakeWS.last();
  ws.open();
  return { client, ev, ws, storage };
}

/** Answers the login on `ws` and the first Sync (empty, complete). */
function loginAndSync(ws, loginOk = LOGIN_OK, head = 0) {
  const auth = ws.sent.find((f) => f.body === 'login' || f.body === 'resume');
  assert.ok(auth, 'a Login or Resume was sent');
  ws.sent = ws.sent.filter((f) => f !== auth);
  ws.recv({ reqId: auth.reqId, loginOk: { ...loginOk, inboxHead: head } });
  const [sync] = ws.take('sync');
  assert.ok(sync, 'a Sync after LoginOk');
  return sync;
}

function emptySyncResult(sync, after = 0) {
  return { reqId: sync.reqId, syncResult: { fromInboxSeq: after, toInboxSeq: after, inboxHead: after, complete: true } };
}

test('frames on the wire match docs/PROTOCOL.md section 12', () => {
  const hex = (f) => Buffer.from(proto.Frame.encode(f).finish()).toString('hex');
  assert.equal(hex({ reqId: 1, ping: {} }), '08017a00');
  assert.equal(hex({ reqId: 4, sync: { afterInboxSeq: 0 } }), '0804b201020800', 'optional 0 is encoded');
  assert.equal(hex({ reqId: 4, sync: {} }), '0804b20100');
  assert.equal(
    hex({ reqId: 2, login: { protocolVersion: 1, username: 'alice', password: 'password1', device: 'phone' } }),
    '08025a1b08011205616c6963651a0970617373776f726431220570686f6e65',
  );
  const pong = proto.Frame.decode(Buffer.from('0801ba06071080d095ffbc31', 'hex'));
  assert.equal(pong.body, 'pong');
  assert.equal(pong.pong.serverTimeMs, 1700000000000, 'uint64 decodes to a number');
});

test('login with protocol_version 1, token saved, first Sync explicit from cursor 0', () => {
  const { client, ev, ws, storage } = makeClient();
  const [login] = ws.sent.filter((f) => f.body === 'login');
  assert.equal(login.login.protocolVersion, 1);
  assert.equal(login.login.username, 'alice');
  assert.equal(login.login.device, 'web-test');
  assert.notEqual(Number(login.reqId), 0);
  const sync = loginAndSync(ws);
  assert.equal(sync.sync.afterInboxSeq, 0);
  assert.ok(Object.hasOwn(sync.sync, 'afterInboxSeq'), 'after_inbox_seq is set explicitly');
  assert.deepEqual(
    ev.states.map((s) => s.state),
    ['connecting', 'connected'],
  );
  const saved = loadState('alice', storage);
  assert.equal(saved.token, 'tok-1');
  assert.equal(saved.cursors.storeEpoch, 'E1');
  assert.equal(saved.device, 'web-test');
  client.close();
});

test('pushes: dedup by inbox_seq, a hole is buffered and synced from the cursor, acks are cumulative', async () => {
  const { client, ev, ws, storage } = makeClient();
  const sync = loginAndSync(ws);
  ws.recv(emptySyncResult(sync));
  assert.equal(ev.caughtUp, 1);
  const conv = 'd:alice:bob';
  ws.recv({ push: { inboxSeq: 1, message: msg(conv, 1, 'bob') } });
  ws.recv({ push: { inboxSeq: 1, message: msg(conv, 1, 'bob') } }); // duplicate
  ws.recv({ push: { inboxSeq: 3, message: msg(conv, 3, 'bob') } }); // hole at 2
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1], '3 waits for the hole');
  const [gapSync] = ws.take('sync');
  assert.equal(gapSync.sync.afterInboxSeq, 1, 'sync from the last contiguous seq');
  ws.recv({ push: { inboxSeq: 4, message: msg(conv, 4, 'bob') } });
  assert.equal(ws.take('sync').length, 0, 'one Sync in flight at a time');
  ws.recv({
    reqId: gapSync.reqId,
    syncResult: {
      items: [2, 3, 4].map((s) => ({ inboxSeq: s, message: msg(conv, s, 'bob') })),
      fromInboxSeq: 1,
      toInboxSeq: 4,
      inboxHead: 4,
      complete: true,
    },
  });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1, 2, 3, 4], 'each once, in order');
  assert.equal(ev.messages[0].message.text, 'm1');
  assert.equal(ev.messages[0].own, false);
  assert.equal(loadState('alice', storage).cursors.inbox, 4, 'cursor saved');
  // Batched ack: none yet, one after ~300 ms with the highest contiguous seq.
  assert.equal(ws.take('ack').length, 0);
  await until(() => ws.sent.some((f) => f.body === 'ack'), 'the batched Ack', 2000);
  assert.deepEqual(ws.take('ack').map((f) => f.ack.inboxSeq), [4]);
  client.close();
});

test('50 messages are acked at once', () => {
  const { client, ws } = makeClient();
  const sync = loginAndSync(ws);
  ws.recv(emptySyncResult(sync));
  for (let s = 1; s <= 50; s++) ws.recv({ push: { inboxSeq: s, message: msg('d:alice:bob', s, 'bob') } });
  assert.deepEqual(ws.take('ack').map((f) => f.ack.inboxSeq), [50]);
  client.close();
});

test('sync pages until complete, then pulls read-diffusion heads above the cursor', () => {
  const storage = new MemStorage();
  storage.setItem(
    storageKey('alice') + 'state',
    JSON.stringify({ token: 'tok-0', device: 'web-test', storeEpoch: 'E1', inbox: 10, conversations: { 'g:00000000000000aa': 5 } }),
  );
  const { client, ev, ws } = makeClient({ storage });
  const [resume] = ws.take('resume');
  assert.equal(resume.resume.token, 'tok-0', 'resumes with the saved token');
  assert.equal(resume.resume.protocolVersion, 1);
  ws.recv({ reqId: resume.reqId, loginOk: { ...LOGIN_OK, token: 'tok-2', inboxHead: 12 } });
  assert.equal(loadState('alice', storage).token, 'tok-2', 'the fresh token replaces the old one');
  const [s1] = ws.take('sync');
  assert.equal(s1.sync.afterInboxSeq, 10, 'from the saved cursor');
  ws.recv({
    reqId: s1.reqId,
    syncResult: { items: [{ inboxSeq: 11, message: msg('d:alice:bob', 7, 'bob') }], fromInboxSeq: 10, toInboxSeq: 11, inboxHead: 12, complete: false },
  });
  const [s2] = ws.take('sync');
  assert.equal(s2.sync.afterInboxSeq, 11, 'next page');
  assert.equal(ws.take('pull').length, 0);
  ws.recv({
    reqId: s2.reqId,
    syncResult: {
      items: [{ inboxSeq: 12, message: msg('d:alice:bob', 8, 'alice') }],
      fromInboxSeq: 11,
      toInboxSeq: 12,
      inboxHead: 12,
      complete: true,
      readDiffusion: [
        { conversation: 'g:00000000000000aa', lastSeq: 7 },
        { conversation: 'g:00000000000000bb', lastSeq: 0 },
      ],
    },
  });
  const pulls = ws.take('pull');
  assert.equal(pulls.length, 1, 'only the group with something new');
  assert.equal(pulls[0].pull.conversation, 'g:00000000000000aa');
  assert.equal(pulls[0].pull.afterSeq, 5);
  assert.equal(pulls[0].pull.untilSeq, 7);
  assert.equal(ev.caughtUp, 0, 'not caught up while a pull runs');
  const g = 'g:00000000000000aa';
  ws.recv({ reqId: pulls[0].reqId, pullResult: { conversation: g, messages: [msg(g, 6, 'carol'), msg(g, 7, 'carol')], fromSeq: 6, toSeq: 7, lastSeq: 7, complete: true } });
  assert.deepEqual(
    ev.messages.map((m) => [m.message.conversation, m.message.seq, m.own]),
    [
      ['d:alice:bob', 7, false],
      ['d:alice:bob', 8, true],
      [g, 6, false],
      [g, 7, false],
    ],
  );
  assert.equal(ev.caughtUp, 1);
  assert.equal(loadState('alice', storage).cursors.conversations[g], 7);
  client.close();
});

test('read diffusion: pushes with inbox_seq 0 dedup by seq and a gap pulls exactly the missing range', () => {
  const { client, ev, ws, storage } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const g = 'g:00000000000000cc';
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 1, 'bob') } });
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 1, 'bob') } });
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 4, 'bob') } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1]);
  const [pull] = ws.take('pull');
  assert.deepEqual([pull.pull.conversation, pull.pull.afterSeq, pull.pull.untilSeq], [g, 1, 3]);
  ws.recv({ reqId: pull.reqId, pullResult: { conversation: g, messages: [msg(g, 2, 'bob'), msg(g, 3, 'bob')], fromSeq: 2, toSeq: 3, lastSeq: 4, complete: true } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1, 2, 3, 4]);
  assert.equal(loadState('alice', storage).cursors.conversations[g], 4);
  assert.equal(ws.take('ack').length, 0, 'read-diffusion groups are not acked');
  client.close();
});

test('a new store_epoch voids saved cursors', () => {
  const storage = new MemStorage();
  storage.setItem(
    storageKey('alice') + 'state',
    JSON.stringify({ token: 'tok-0', device: 'web-test', storeEpoch: 'OLD', inbox: 42, conversations: { 'g:1': 9 } }),
  );
  const { client, ws } = makeClient({ storage });
  const sync = loginAndSync(ws, { ...LOGIN_OK, storeEpoch: 'NEW' });
  assert.equal(sync.sync.afterInboxSeq, 0, 'full resync');
  const saved = loadState('alice', storage);
  assert.equal(saved.cursors.storeEpoch, 'NEW');
  assert.equal(saved.cursors.inbox, 0);
  assert.deepEqual(saved.cursors.conversations, {});
  client.close();
});

test('outbox: one client_msg_id per send, unacked sends resent in order after reconnect and after a restart', async () => {
  const { client, ev, ws, storage } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p1 = client.sendText({ user: 'bob' }, 'one');
  const p2 = client.sendText({ user: 'bob' }, 'two');
  const p3 = client.sendText({ conversation: 'g:00000000000000aa' }, 'three');
  const p2Outcome = p2.then(
    () => 'acked',
    (e) => e.codeName,
  );
  const p3Outcome = p3.then(
    () => 'acked',
    (e) => e.codeName,
  );
  const sends = ws.take('send');
  assert.deepEqual(sends.map((f) => f.send.clientMsgId), [p1.clientMsgId, p2.clientMsgId, p3.clientMsgId]);
  assert.match(p1.clientMsgId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a UUID');
  assert.equal(sends[0].send.peer, 'bob');
  assert.equal(sends[0].send.conversation, '');
  assert.equal(sends[2].send.conversation, 'g:00000000000000aa');
  assert.equal(new TextDecoder().decode(sends[1].send.body), 'two');
  assert.equal(loadState('alice', storage).outbox.length, 3, 'the outbox is saved before sending');
  ws.recv({ reqId: sends[0].reqId, sendAck: { conversation: 'd:alice:bob', seq: 1, clientMsgId: p1.clientMsgId, inboxSeq: 1 } });
  const ack1 = await p1;
  assert.equal(ack1.seq, 1);
  assert.equal(ev.acked.length, 1);
  assert.equal(loadState('alice', storage).outbox.length, 2);

  // The connection drops: reconnect (backoff), Resume with the token, resend 2 and 3.
  ws.serverClose();
  assert.equal(ev.states.at(-1).state, 'reconnecting');
  assert.ok(ev.states.at(-1).retryInMs >= 5 && ev.states.at(-1).retryInMs <= 10, 'backoff with jitter within bounds');
  await until(() => FakeWS.all.length === 2, 'a reconnect');
  const ws2 = FakeWS.last();
  ws2.open();
  const [resume] = ws2.take('resume');
  assert.equal(resume.resume.token, 'tok-1');
  ws2.recv({ reqId: resume.reqId, loginOk: { ...LOGIN_OK, token: 'tok-2' } });
  const resent = ws2.take('send');
  assert.deepEqual(resent.map((f) => f.send.clientMsgId), [p2.clientMsgId, p3.clientMsgId], 'same ids, same order');
  assert.ok(ws2.take('sync').length === 1, 'and a Sync');

  // The page goes away before the acks: a new client on the same storage resends them.
  client.close();
  await tick(5);
  const again = makeClient({ storage });
  assert.deepEqual(again.client.pending.map((p) => p.text), ['two', 'three']);
  const [resume3] = again.ws.take('resume');
  again.ws.recv({ reqId: resume3.reqId, loginOk: { ...LOGIN_OK, token: 'tok-3' } });
  const resent3 = again.ws.take('send');
  assert.deepEqual(resent3.map((f) => f.send.clientMsgId), [p2.clientMsgId, p3.clientMsgId]);
  again.ws.recv({ reqId: resent3[0].reqId, sendAck: { conversation: 'd:alice:bob', seq: 2, clientMsgId: p2.clientMsgId, duplicate: true, inboxSeq: 2 } });
  assert.equal(again.ev.acked[0].duplicate, true);
  assert.deepEqual(again.client.pending.map((p) => p.text), ['three']);
  again.client.close();
  assert.equal(await p2Outcome, 'stopped', 'a closed client fails its waiters (the new one acked it)');
  assert.equal(await p3Outcome, 'stopped');
});

test('send errors: permanent ones fail the send, transient ones retry with the same id', async () => {
  const { client, ev, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const bad = client.sendText({ user: 'nobody' }, 'x');
  const busy = client.sendText({ user: 'bob' }, 'y');
  const [f1, f2] = ws.take('send');
  ws.recv({ reqId: f1.reqId, error: { code: ErrorCode.NOT_FOUND, message: 'no such user' } });
  ws.recv({ reqId: f2.reqId, error: { code: ErrorCode.INTERNAL, message: 'flush failed' } });
  await assert.rejects(bad, (e) => e.codeName === 'NOT_FOUND');
  assert.equal(ev.failed.length, 1);
  assert.equal(ws.take('send').length, 0, 'no immediate retry');
  await until(() => ws.sent.some((f) => f.body === 'send'), 'the retry', 3000);
  const [retry] = ws.take('send');
  assert.equal(retry.send.clientMsgId, busy.clientMsgId);
  ws.recv({ reqId: retry.reqId, sendAck: { conversation: 'd:alice:bob', seq: 1, clientMsgId: busy.clientMsgId } });
  assert.equal((await busy).seq, 1);
  client.close();
});

test('Closing: REPLACED stops, REVOKED loses the token, SHUTDOWN reconnects after retry_after_ms', async () => {
  {
    const { client, ev, ws } = makeClient();
    ws.recv(emptySyncResult(loginAndSync(ws)));
    ws.recv({ closing: { reason: CloseReason.REPLACED, message: 'replaced' } });
    assert.equal(ev.states.at(-1).state, 'replaced');
    await tick(80);
    assert.equal(FakeWS.all.length, 1, 'no reconnect after REPLACED');
    assert.equal(client.state, 'replaced');
  }
  {
    const { ev, ws, storage } = makeClient();
    ws.recv(emptySyncResult(loginAndSync(ws)));
    ws.recv({ closing: { reason: CloseReason.REVOKED, message: 'revoked' } });
    assert.equal(ev.states.at(-1).state, 'auth-lost');
    assert.equal(loadState('alice', storage).token, null, 'token forgotten');
    await tick(80);
    assert.equal(FakeWS.all.length, 1);
  }
  {
    const { client, ev, ws } = makeClient();
    ws.recv(emptySyncResult(loginAndSync(ws)));
    ws.recv({ closing: { reason: CloseReason.SHUTDOWN, message: 'bye', retryAfterMs: 150 } });
    assert.equal(ev.states.at(-1).state, 'reconnecting');
    assert.ok(ev.states.at(-1).retryInMs >= 150, 'waits at least retry_after_ms');
    await tick(60);
    assert.equal(FakeWS.all.length, 1, 'not before retry_after_ms');
    await until(() => FakeWS.all.length === 2, 'the reconnect', 2000);
    client.close();
  }
});

test('token errors: log in with the password on the same connection, or report auth-lost', () => {
  const storage = new MemStorage();
  storage.setItem(storageKey('alice') + 'state', JSON.stringify({ token: 'old', device: 'web-test', storeEpoch: 'E1', inbox: 0 }));
  {
    const { client, ws } = makeClient({ storage });
    const [resume] = ws.take('resume');
    ws.recv({ reqId: resume.reqId, error: { code: ErrorCode.TOKEN_EXPIRED, message: 'expired' } });
    const [login] = ws.take('login');
    assert.ok(login, 'falls back to Login');
    ws.recv({ reqId: login.reqId, loginOk: LOGIN_OK });
    assert.equal(client.state, 'connected');
    client.close();
  }
  storage.setItem(storageKey('alice') + 'state', JSON.stringify({ token: 'old', device: 'web-test', storeEpoch: 'E1', inbox: 0 }));
  {
    const { client, ev, ws } = makeClient({ storage, password: undefined });
    const [resume] = ws.take('resume');
    ws.recv({ reqId: resume.reqId, error: { code: ErrorCode.TOKEN_REVOKED, message: 'revoked' } });
    assert.equal(ev.states.at(-1).state, 'auth-lost');
    assert.equal(client.state, 'auth-lost');
    assert.equal(loadState('alice', storage).token, null);
  }
  {
    const { ev, ws } = makeClient({ storage: new MemStorage(), password: 'wrong-password' });
    const [login] = ws.take('login');
    ws.recv({ reqId: login.reqId, error: { code: ErrorCode.INVALID_CREDENTIALS, message: 'no' } });
    assert.equal(ev.states.at(-1).state, 'auth-lost');
    assert.equal(ev.states.at(-1).codeName, 'INVALID_CREDENTIALS');
  }
});

test('requests: correlated by req_id, queued while offline, failed when the connection drops', async () => {
  const { client, ws } = makeClient();
  const early = client.conversations(); // before LoginOk: waits for the connection
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const [list] = ws.take('listConversations');
  assert.ok(list, 'sent once connected');
  const pres = client.presence(['bob']);
  const [pq] = ws.take('presenceQuery');
  // Answers out of order.
  ws.recv({ reqId: pq.reqId, presenceResult: { users: [{ username: 'bob', onlineDevices: ['phone'] }] } });
  ws.recv({ reqId: list.reqId, conversationList: { conversations: [{ conversation: 'd:alice:bob', kind: 1, name: 'bob', lastSeq: 3 }] } });
  assert.deepEqual(await pres, [{ username: 'bob', onlineDevices: ['phone'] }]);
  assert.deepEqual((await early).map((c) => [c.conversation, c.kind, c.name, c.lastSeq]), [['d:alice:bob', 'direct', 'bob', 3]]);
  const hist = client.history('d:alice:bob');
  const [pull] = ws.take('pull');
  assert.equal(pull.pull.afterSeq, 0);
  assert.ok(pull.pull.beforeSeq > 1e15, 'newest page');
  ws.recv({ reqId: pull.reqId, error: { code: ErrorCode.FORBIDDEN, message: 'not a member' } });
  await assert.rejects(hist, (e) => e.codeName === 'FORBIDDEN');
  const lost = client.createGroup('g', ['bob']);
  ws.serverClose();
  await assert.rejects(lost, (e) => e.code === 'connection-lost');
  client.close();
});

test('protocol-rules.json (from tern-proto): name patterns accept and refuse what the Rust rules do', () => {
  const u = RULES.names.username;
  const d = RULES.names.device;
  assert.ok(u.valid.length > 0 && u.invalid.length > 0 && d.valid.length > 0 && d.invalid.length > 0);
  for (const name of u.valid) assert.ok(isValidUsername(name), JSON.stringify(name));
  for (const name of u.invalid) assert.ok(!isValidUsername(name), JSON.stringify(name));
  for (const name of d.valid) assert.ok(isValidDevice(name), JSON.stringify(name));
  for (const name of d.invalid) assert.ok(!isValidDevice(name), JSON.stringify(name));
  assert.ok(isValidPassword('12345678'));
  assert.ok(isValidPassword('\u00e9\u00e9\u00e9\u00e9'), '4 characters, 8 bytes: the rule counts bytes');
  assert.ok(!isValidPassword('1234567'));
  assert.ok(!isValidPassword('x'.repeat(RULES.names.password.maxBytes + 1)));
});

test('protocol-rules.json (from tern-proto): retryable codes and the liveness timeout', () => {
  for (const name of [...RULES.errors.retryable, ...RULES.errors.closesConnection]) {
    assert.equal(typeof ErrorCode[name], 'number', `${name} is an ErrorCode`);
  }
  for (const c of ['INTERNAL', 'RATE_LIMITED', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE']) assert.ok(isRetryable(ErrorCode[c]), c);
  for (const c of ['NOT_FOUND', 'FORBIDDEN', 'INVALID_ARGUMENT', 'TOKEN_EXPIRED']) assert.ok(!isRetryable(ErrorCode[c]), c);
  assert.equal(livenessTimeoutMs(30_000), 92_000, '3 x heartbeat + 2 s (docs/PROTOCOL.md section 6)');
});

test('RATE_LIMITED with retry_after_ms: the send is retried, same id, no sooner than that', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.sendText({ user: 'bob' }, 'y');
  const [f] = ws.take('send');
  const t0 = Date.now();
  ws.recv({ reqId: f.reqId, error: { code: ErrorCode.RATE_LIMITED, message: 'slow down; retry after 1500 ms', retryAfterMs: 1500 } });
  await until(() => ws.sent.some((x) => x.body === 'send'), 'the retry', 4000);
  assert.ok(Date.now() - t0 >= 1400, `retried after ${Date.now() - t0} ms`);
  const [retry] = ws.take('send');
  assert.equal(retry.send.clientMsgId, f.send.clientMsgId);
  ws.recv({ reqId: retry.reqId, sendAck: { conversation: 'd:alice:bob', seq: 1, clientMsgId: f.send.clientMsgId } });
  assert.equal((await p).seq, 1);
  client.close();
});

test('a Ping carries its own non-zero req_id (docs/PROTOCOL.md section 3) and its Pong is harmless', async () => {
  const { client, ws, ev } = makeClient();
  const sync = loginAndSync(ws, { ...LOGIN_OK, heartbeatSecs: 1 });
  ws.recv(emptySyncResult(sync));
  await until(() => ws.sent.some((f) => f.body === 'ping'), 'a ping', 3000);
  const [ping] = ws.take('ping');
  assert.notEqual(Number(ping.reqId), 0);
  assert.notEqual(Number(ping.reqId), Number(sync.reqId));
  ws.recv({ reqId: ping.reqId, pong: { clientTimeMs: ping.ping.clientTimeMs, serverTimeMs: Date.now() } });
  assert.equal(ev.states.at(-1).state, 'connected');
  client.close();
});

test('markRead sends MarkRead{conversation, seq} and resolves with the ReadState; errors reject', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.markRead('d:alice:bob', 7);
  const [f] = ws.take('markRead');
  assert.ok(f, 'a MarkRead went out');
  assert.notEqual(Number(f.reqId), 0);
  assert.equal(f.markRead.conversation, 'd:alice:bob');
  assert.equal(f.markRead.seq, 7);
  ws.recv({ reqId: f.reqId, readState: { conversation: 'd:alice:bob', readSeq: 9, unread: 2 } });
  assert.deepEqual(await p, { conversation: 'd:alice:bob', readSeq: 9, unread: 2 }, 'the position may be higher than asked');
  const up = client.markRead('d:alice:bob'); // default: up to the last message
  const [g] = ws.take('markRead');
  assert.equal(g.markRead.seq, 0);
  ws.recv({ reqId: g.reqId, error: { code: ErrorCode.INVALID_ARGUMENT, message: 'seq past the head' } });
  await assert.rejects(up, (e) => e.codeName === 'INVALID_ARGUMENT');
  client.close();
});

test('listConversations pages with limit/offset and returns read state, last message and totals', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.listConversations({ limit: 2, offset: 4 });
  const [f] = ws.take('listConversations');
  assert.equal(f.listConversations.limit, 2);
  assert.equal(f.listConversations.offset, 4);
  ws.recv({
    reqId: f.reqId,
    conversationList: {
      conversations: [
        {
          conversation: 'd:alice:bob', kind: 1, name: 'bob', lastSeq: 5, readSeq: 2, unread: 3,
          lastTimeMs: 1_700_000_000_123, lastSender: 'bob', lastPreview: 'see you', lastKind: 0,
        },
        {
          conversation: 'g:7', kind: 2, name: 'team', lastSeq: 1, memberCount: 3, role: 3, readSeq: 1,
          unread: 0, lastTimeMs: 1_700_000_000_000, lastSender: 'alice', lastKind: 1,
        },
      ],
      totalUnread: 11,
      total: 9,
    },
  });
  const list = await p;
  assert.equal(list.totalUnread, 11, 'over all conversations, not only the page');
  assert.equal(list.total, 9);
  assert.deepEqual(list.conversations[0], {
    conversation: 'd:alice:bob', kind: 'direct', name: 'bob', lastSeq: 5, readDiffusion: false, memberCount: 0,
    role: 'ROLE_UNSPECIFIED', readSeq: 2, unread: 3, lastTimeMs: 1_700_000_000_123, lastSender: 'bob',
    lastPreview: 'see you', lastKind: 'message', muted: false, pinned: false, mentions: 0,
    topic: '', muteAll: false, visibility: 'HISTORY_VISIBILITY_UNSPECIFIED', channel: false, maxMembers: 0,
  });
  const g = list.conversations[1];
  assert.deepEqual([g.kind, g.role, g.memberCount, g.lastKind, g.lastPreview], ['group', 'OWNER', 3, 'system', '']);
  // The default asks for everything (limit 0) and conversations() is its first page.
  const all = client.conversations();
  const [h] = ws.take('listConversations');
  assert.equal(h.listConversations.limit ?? 0, 0);
  assert.equal(h.listConversations.offset ?? 0, 0);
  ws.recv({ reqId: h.reqId, conversationList: { conversations: [], totalUnread: 0, total: 0 } });
  assert.deepEqual(await all, []);
  client.close();
});

test("ReadReceipt pushes become 'read' events: own for this user's devices, a receipt for another member", () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const reads = [];
  client.on('read', (d) => reads.push(d));
  ws.recv({ readReceipt: { conversation: 'd:alice:bob', user: 'alice', readSeq: 4 } });
  ws.recv({ readReceipt: { conversation: 'd:alice:bob', user: 'bob', readSeq: 6 } });
  assert.deepEqual(reads, [
    { conversation: 'd:alice:bob', user: 'alice', readSeq: 4, own: true },
    { conversation: 'd:alice:bob', user: 'bob', readSeq: 6, own: false },
  ]);
  client.close();
});

test('unknown pushes (a newer protocol) are ignored: no event, no error, the connection stays', async () => {
  const { client, ws, ev } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const reads = [];
  client.on('read', (d) => reads.push(d));
  /** Frame{req_id 0, field 299 (a body this version lacks) = "\x0a\x03abc"}, raw bytes. */
  const key = (299 << 3) | 2; // 2394: varint 0xda 0x12
  const unknown = Uint8Array.from([key & 0x7f | 0x80, key >> 7, 5, 0x0a, 0x03, 0x61, 0x62, 0x63]);
  assert.equal(proto.Frame.decode(unknown).body, undefined, 'decodes as a frame with no known body');
  ws.onmessage({ data: unknown.buffer.slice(0) });
  // A known push (ReadReceipt, field 202) carrying a field this version lacks (9 = 1):
  // the known part still counts.
  const inner = proto.ReadReceipt.encode({ conversation: 'd:alice:bob', user: 'bob', readSeq: 2 }).finish();
  const innerPlus = Uint8Array.from([...inner, 9 << 3, 1]);
  const bytes = Uint8Array.from([0xd2, 0x0c, innerPlus.length, ...innerPlus]); // key (202 << 3) | 2
  assert.equal(proto.Frame.decode(bytes).body, 'readReceipt');
  ws.onmessage({ data: bytes.buffer.slice(0) });
  assert.deepEqual(reads, [{ conversation: 'd:alice:bob', user: 'bob', readSeq: 2, own: false }]);
  assert.equal(ev.states.at(-1).state, 'connected', 'still connected');
  assert.equal(ws.readyState, 1);
  assert.deepEqual(ws.sent.filter((f) => f.body !== 'ack'), [], 'nothing sent in answer to an unknown push');
  // Messages keep flowing.
  ws.recv({ push: { inboxSeq: 1, message: msg('d:alice:bob', 1, 'bob') } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1]);
  client.close();
});

test('listConversations carries muted and pinned (docs/PROTOCOL.md 9.1 fields 14, 15)', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.listConversations();
  const [f] = ws.take('listConversations');
  ws.recv({
    reqId: f.reqId,
    conversationList: {
      conversations: [
        { conversation: 'd:alice:bob', kind: 1, name: 'bob', lastSeq: 2, unread: 2, pinned: true },
        { conversation: 'g:7', kind: 2, name: 'team', lastSeq: 4, unread: 4, muted: true },
      ],
      totalUnread: 2,
      total: 2,
    },
  });
  const list = await p;
  assert.deepEqual(
    list.conversations.map((c) => [c.conversation, c.muted, c.pinned]),
    [['d:alice:bob', false, true], ['g:7', true, false]],
  );
  assert.equal(list.totalUnread, 2, "the server's total, the muted one left out");
  client.close();
});

test('setConversationSettings sends only the settings given and resolves with both; errors reject', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.setConversationSettings('d:alice:bob', { pinned: true });
  const [f] = ws.take('setConversationSettings');
  assert.ok(f, 'a SetConversationSettings went out');
  assert.notEqual(Number(f.reqId), 0);
  const s = f.setConversationSettings;
  assert.equal(s.conversation, 'd:alice:bob');
  assert.equal(s.pinned, true);
  assert.equal(s.muted, null, 'muted absent on the wire: the server keeps it');
  ws.recv({ reqId: f.reqId, conversationSettings: { conversation: 'd:alice:bob', muted: true, pinned: true } });
  assert.deepEqual(await p, { conversation: 'd:alice:bob', muted: true, pinned: true }, 'both, as they are now');
  // false is sent as false (present), not left out.
  const q = client.setConversationSettings('g:7', { muted: false });
  const [g] = ws.take('setConversationSettings');
  assert.equal(g.setConversationSettings.muted, false);
  assert.ok(Object.hasOwn(g.setConversationSettings, 'muted'), 'present on the wire');
  assert.equal(g.setConversationSettings.pinned, null);
  ws.recv({ reqId: g.reqId, error: { code: ErrorCode.FORBIDDEN, message: 'not a member' } });
  await assert.rejects(q, (e) => e.codeName === 'FORBIDDEN');
  client.close();
});

test("settings_changed pushes become 'settings' events, in order; the response body is not one", () => {
  const { client, ws, ev } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const settings = [];
  client.on('settings', (d) => settings.push(d));
  ws.recv({ settingsChanged: { conversation: 'd:alice:bob', pinned: true } });
  ws.recv({ settingsChanged: { conversation: 'd:alice:bob', muted: true, pinned: true } });
  ws.recv({ settingsChanged: { conversation: 'g:7' } });
  // The same message as a response body (field 113) with req_id 0 is no push.
  ws.recv({ conversationSettings: { conversation: 'g:8', muted: true } });
  assert.deepEqual(settings, [
    { conversation: 'd:alice:bob', muted: false, pinned: true },
    { conversation: 'd:alice:bob', muted: true, pinned: true },
    { conversation: 'g:7', muted: false, pinned: false },
  ]);
  assert.deepEqual(ws.sent.filter((f) => f.body !== 'ack'), [], 'nothing sent in answer');
  // Messages keep flowing.
  ws.recv({ push: { inboxSeq: 1, message: msg('d:alice:bob', 1, 'alice') } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [1]);
  client.close();
});

test('messages carry reply_to, mentions, edit/recall kinds and the edited/recalled/expired/deleted marks', () => {
  const { client, ws, ev } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const enc = (t) => new TextEncoder().encode(t);
  ws.recv({ push: { inboxSeq: 1, message: msg('g:7', 1, 'bob', { replyTo: 0, mentions: ['alice'], mentionAll: false }) } });
  ws.recv({ push: { inboxSeq: 2, message: msg('g:7', 2, 'bob', { replyTo: 1, mentionAll: true }) } });
  ws.recv({ push: { inboxSeq: 3, message: msg('g:7', 3, 'bob', { kind: 2, targetSeq: 1, body: enc('fixed') }) } });
  ws.recv({ push: { inboxSeq: 4, message: msg('g:7', 4, 'bob', { kind: 3, targetSeq: 2, body: new Uint8Array() }) } });
  // As history serves them: the target rewritten, a recalled one and a deleted one without content.
  ws.recv({ push: { inboxSeq: 5, message: msg('g:7', 5, 'bob', { edited: true, editedMs: 9, edits: [6, 7], body: enc('v3') }) } });
  ws.recv({ push: { inboxSeq: 6, message: msg('g:7', 6, 'bob', { recalled: true, body: new Uint8Array() }) } });
  ws.recv({ push: { inboxSeq: 7, message: msg('g:7', 7, 'bob', { deleted: true, body: new Uint8Array() }) } });
  ws.recv({ push: { inboxSeq: 8, message: msg('g:7', 8, 'bob', { expired: true, expiresMs: 5, body: new Uint8Array() }) } });
  const m = ev.messages.map((e) => e.message);
  assert.deepEqual(m.map((x) => x.kind), ['message', 'message', 'edit', 'recall', 'message', 'message', 'message', 'message']);
  assert.deepEqual([m[0].mentions, m[0].mentionAll, m[0].replyTo], [['alice'], false, 0]);
  assert.deepEqual([m[1].mentions, m[1].mentionAll, m[1].replyTo], [[], true, 1]);
  assert.deepEqual([m[2].targetSeq, m[2].text], [1, 'fixed']);
  assert.equal(m[3].targetSeq, 2);
  assert.deepEqual([m[4].edited, m[4].editedMs, m[4].edits, m[4].text], [true, 9, [6, 7], 'v3']);
  assert.deepEqual([m[5].recalled, m[5].text], [true, null], 'no text for a recalled message');
  assert.deepEqual([m[6].deleted, m[6].text], [true, null]);
  assert.deepEqual([m[7].expired, m[7].expiresMs, m[7].text], [true, 5, null]);
  client.close();
});

test('send options go on the wire, survive in the saved outbox and are resent; a plain Send carries none', async () => {
  const storage = new MemStorage();
  const { client, ws } = makeClient({ storage });
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const ps = [
    client.sendText({ conversation: 'g:7' }, 'plain'),
    client.sendText({ conversation: 'g:7' }, '@bob see 3', { replyTo: 3, mentions: ['bob'], ttlSecs: 60 }),
    client.sendText({ conversation: 'g:7' }, '@all', { mentionAll: true, replyTo: 0, mentions: [] }),
  ];
  for (const p of ps) p.catch(() => {}); // closed before the acks: rejected, kept in the outbox
  const sends = ws.take('send').map((f) => f.send);
  assert.deepEqual(sends.map((s) => [Number(s.replyTo), s.mentions, s.mentionAll, s.ttlSecs]), [
    [0, [], false, 0],
    [3, ['bob'], false, 60],
    [0, [], true, 0],
  ]);
  assert.equal(Object.hasOwn(sends[0], 'replyTo'), false, 'nothing extra on a plain Send');
  assert.deepEqual(client.pending.map((p) => p.options), [{}, { replyTo: 3, mentions: ['bob'], ttlSecs: 60 }, { mentionAll: true }]);
  client.close();
  // A new client (a page reload) resends them with their options.
  const again = makeClient({ storage });
  loginAndSync(again.ws);
  const resent = again.ws.take('send').map((f) => f.send);
  assert.deepEqual(resent.map((s) => [Number(s.replyTo), s.mentions, s.mentionAll, s.ttlSecs]), [
    [0, [], false, 0],
    [3, ['bob'], false, 60],
    [0, [], true, 0],
  ]);
  again.client.close();
});

test('edit, recall, deleteForMe and typing send their requests and resolve with the answers', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const e = client.edit('g:7', 4, 'new text');
  const [ef] = ws.take('edit');
  assert.deepEqual([ef.edit.conversation, Number(ef.edit.seq), new TextDecoder().decode(ef.edit.body)], ['g:7', 4, 'new text']);
  assert.ok(ef.edit.clientMsgId.length > 0, 'an edit has a client_msg_id');
  ws.recv({ reqId: ef.reqId, sendAck: { conversation: 'g:7', seq: 9, serverTimeMs: 5, clientMsgId: ef.edit.clientMsgId } });
  assert.equal((await e).seq, 9);
  const r = client.recall('g:7', 4);
  const [rf] = ws.take('recall');
  assert.deepEqual([rf.recall.conversation, Number(rf.recall.seq)], ['g:7', 4]);
  ws.recv({ reqId: rf.reqId, error: { code: ErrorCode.WINDOW_EXPIRED, message: 'too late' } });
  await assert.rejects(r, (x) => x.codeName === 'WINDOW_EXPIRED');
  const d = client.deleteForMe('g:7', 2);
  const [df] = ws.take('deleteForMe');
  assert.deepEqual([df.deleteForMe.conversation, Number(df.deleteForMe.seq)], ['g:7', 2]);
  ws.recv({ reqId: df.reqId, ok: {} });
  await d;
  const t = client.typing('g:7', false);
  const [tf] = ws.take('typing');
  assert.deepEqual([tf.typing.conversation, tf.typing.typing], ['g:7', false]);
  ws.recv({ reqId: tf.reqId, ok: {} });
  await t;
  client.close();
});

test("TypingEvent, MessageHidden and PresenceEvent pushes become 'typing', 'hidden' and 'presence' events", () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const got = [];
  for (const t of ['typing', 'hidden', 'presence']) client.on(t, (d) => got.push([t, d]));
  ws.recv({ typingEvent: { conversation: 'g:7', user: 'bob', typing: true, expiresMs: 1234 } });
  ws.recv({ typingEvent: { conversation: 'g:7', user: 'bob', typing: false } });
  ws.recv({ messageHidden: { conversation: 'g:7', seq: 3 } });
  ws.recv({ presenceEvent: { user: 'bob', online: true, serverTimeMs: 77 } });
  assert.deepEqual(got, [
    ['typing', { conversation: 'g:7', user: 'bob', typing: true, expiresMs: 1234 }],
    ['typing', { conversation: 'g:7', user: 'bob', typing: false, expiresMs: 0 }],
    ['hidden', { conversation: 'g:7', seq: 3 }],
    ['presence', { user: 'bob', online: true, serverTimeMs: 77 }],
  ]);
  assert.deepEqual(ws.sent.filter((f) => f.body !== 'ack'), [], 'nothing sent in answer');
  client.close();
});

test('history visibility: a PullResult whose first_seq is above the cursor moves the cursor, no gap is pulled for ever', () => {
  const { client, ev, ws, storage } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const g = 'g:00000000000000dd';
  // Added to a JOINED read-diffusion group at seq 95: the first push is seq 95, cursor 0.
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 95, 'bob') } });
  assert.deepEqual(ev.messages.length, 0, 'held above the gap');
  const [p1] = ws.take('pull');
  assert.deepEqual([p1.pull.conversation, p1.pull.afterSeq, p1.pull.untilSeq], [g, 0, 94]);
  // Nothing before 95 is this user's: served from first_seq, i.e. nothing.
  ws.recv({ reqId: p1.reqId, pullResult: { conversation: g, messages: [], fromSeq: 0, toSeq: 0, lastSeq: 95, complete: true, firstSeq: 95 } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [95]);
  assert.equal(ws.take('pull').length, 0, 'no second pull of the hidden range');
  assert.equal(loadState('alice', storage).cursors.conversations[g], 95);
  assert.equal(ev.caughtUp, 2, 'caught up again once the pull is done');
  // Later pushes follow on as usual.
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 96, 'bob') } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [95, 96]);
  assert.equal(ws.take('pull').length, 0);
  client.close();
});

test('history visibility: a Sync head pulls from the cursor and the result starts at first_seq', () => {
  const { client, ev, ws, storage } = makeClient();
  const sync = loginAndSync(ws);
  const g = 'g:00000000000000ee';
  ws.recv({ ...emptySyncResult(sync), syncResult: { ...emptySyncResult(sync).syncResult, readDiffusion: [{ conversation: g, lastSeq: 12 }] } });
  const [p1] = ws.take('pull');
  assert.deepEqual([p1.pull.afterSeq, p1.pull.untilSeq], [0, 12]);
  // Served from first_seq 10 (this user was added at 10), in a page that is not complete.
  ws.recv({ reqId: p1.reqId, pullResult: { conversation: g, messages: [msg(g, 10, 'bob'), msg(g, 11, 'bob')], fromSeq: 10, toSeq: 11, lastSeq: 12, complete: false, firstSeq: 10 } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [10, 11]);
  const [p2] = ws.take('pull');
  assert.equal(p2.pull.afterSeq, 11, 'the next page goes on from the last seq delivered');
  ws.recv({ reqId: p2.reqId, pullResult: { conversation: g, messages: [msg(g, 12, 'bob')], fromSeq: 12, toSeq: 12, lastSeq: 12, complete: true, firstSeq: 10 } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [10, 11, 12]);
  assert.equal(ws.take('pull').length, 0);
  assert.equal(loadState('alice', storage).cursors.conversations[g], 12);
  // A first_seq at or below the cursor changes nothing (an ordinary gap is still pulled).
  ws.recv({ push: { inboxSeq: 0, message: msg(g, 15, 'bob') } });
  const [p3] = ws.take('pull');
  assert.deepEqual([p3.pull.afterSeq, p3.pull.untilSeq], [12, 14]);
  ws.recv({ reqId: p3.reqId, pullResult: { conversation: g, messages: [msg(g, 13, 'bob'), msg(g, 14, 'bob')], fromSeq: 13, toSeq: 14, lastSeq: 15, complete: true, firstSeq: 10 } });
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [10, 11, 12, 13, 14, 15]);
  client.close();
});

test('history() returns first_seq (1 when the server does not say)', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const g = 'g:7';
  const h = client.history(g, 0, 50);
  const [pf] = ws.take('pull');
  ws.recv({ reqId: pf.reqId, pullResult: { conversation: g, messages: [msg(g, 40, 'bob')], fromSeq: 40, toSeq: 40, lastSeq: 40, complete: true, firstSeq: 40 } });
  const r = await h;
  assert.deepEqual([r.firstSeq, r.fromSeq, r.messages.length], [40, 40, 1]);
  const h2 = client.history(g, 0, 50);
  const [pf2] = ws.take('pull');
  ws.recv({ reqId: pf2.reqId, pullResult: { conversation: g, messages: [], lastSeq: 0, complete: true } });
  assert.equal((await h2).firstSeq, 1);
  client.close();
});

test('group management: setMemberRole, transferOwnership, updateGroup (only the fields given), dissolveGroup', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const g = 'g:7';
  const r = client.setMemberRole(g, 'bob', 'ADMIN');
  const [rf] = ws.take('setMemberRole');
  assert.deepEqual([rf.setMemberRole.conversation, rf.setMemberRole.user, rf.setMemberRole.role], [g, 'bob', proto.Role.ADMIN]);
  ws.recv({ reqId: rf.reqId, ok: {} });
  await r;
  const t = client.transferOwnership(g, 'carol');
  const [tf] = ws.take('transferOwnership');
  assert.deepEqual([tf.transferOwnership.conversation, tf.transferOwnership.user], [g, 'carol']);
  ws.recv({ reqId: tf.reqId, error: { code: ErrorCode.FORBIDDEN, message: 'only the owner' } });
  await assert.rejects(t, (x) => x.codeName === 'FORBIDDEN');
  const u = client.updateGroup(g, { topic: '', muteAll: true, visibility: 'SHARED' });
  const [uf] = ws.take('updateGroup');
  const ub = uf.updateGroup;
  assert.equal(ub.conversation, g);
  assert.ok(!Object.hasOwn(ub, 'name') || ub.name == null, 'a name not given is not sent');
  assert.ok(Object.hasOwn(ub, 'topic') && ub.topic === '', 'an empty topic is sent (it clears the topic)');
  assert.equal(ub.muteAll, true);
  assert.equal(ub.visibility, proto.HistoryVisibility.SHARED);
  assert.ok(!Object.hasOwn(ub, 'maxMembers') || ub.maxMembers == null, 'a member limit not given is not sent');
  ws.recv({ reqId: uf.reqId, ok: {} });
  await u;
  // A member limit, and back to the server's (0 is sent: it is a value, not an absence).
  for (const limit of [25, 0]) {
    const m = client.updateGroup(g, { maxMembers: limit });
    const [mf] = ws.take('updateGroup');
    assert.ok(Object.hasOwn(mf.updateGroup, 'maxMembers') && mf.updateGroup.maxMembers === limit, `maxMembers ${limit} is sent`);
    assert.ok(!Object.hasOwn(mf.updateGroup, 'muteAll') || mf.updateGroup.muteAll == null);
    ws.recv({ reqId: mf.reqId, ok: {} });
    await m;
  }
  const d = client.dissolveGroup(g);
  const [df] = ws.take('dissolveGroup');
  assert.equal(df.dissolveGroup.conversation, g);
  ws.recv({ reqId: df.reqId, ok: {} });
  await d;
  await assert.rejects(client.setMemberRole(g, 'bob', 'OWNERISH'), TypeError);
  client.close();
});

test('group events carry role, topic, mute_all and visibility; the list carries topic, mute_all, visibility and max_members', async () => {
  const { client, ev, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const g = 'g:7';
  const ev1 = { kind: proto.GroupEventKind.ROLE_CHANGED, actor: 'alice', users: ['bob'], role: proto.Role.ADMIN };
  const ev2 = { kind: proto.GroupEventKind.GROUP_UPDATED, actor: 'bob', name: 'team', topic: 'ship it', muteAll: true, maxMembers: 50, visibility: proto.HistoryVisibility.JOINED };
  ws.recv({ push: { inboxSeq: 1, message: msg(g, 2, 'alice', { kind: proto.MessageKind.SYSTEM, event: ev1, clientMsgId: '' }) } });
  ws.recv({ push: { inboxSeq: 2, message: msg(g, 3, 'bob', { kind: proto.MessageKind.SYSTEM, event: ev2, clientMsgId: '' }) } });
  assert.deepEqual(ev.messages[0].message.event, {
    kind: 'ROLE_CHANGED', actor: 'alice', users: ['bob'], name: '', role: 'ADMIN', topic: '', muteAll: false, maxMembers: 0, visibility: 'HISTORY_VISIBILITY_UNSPECIFIED',
  });
  assert.deepEqual(ev.messages[1].message.event, {
    kind: 'GROUP_UPDATED', actor: 'bob', users: [], name: 'team', role: '', topic: 'ship it', muteAll: true, maxMembers: 50, visibility: 'JOINED',
  });
  const l = client.listConversations();
  const [lf] = ws.take('listConversations');
  ws.recv({
    reqId: lf.reqId,
    conversationList: {
      conversations: [
        { conversation: g, kind: proto.ConversationKind.GROUP, name: 'team', role: proto.Role.ADMIN, topic: 'ship it', muteAll: true, visibility: proto.HistoryVisibility.SHARED, maxMembers: 50 },
      ],
      total: 1,
    },
  });
  const [c] = (await l).conversations;
  assert.deepEqual([c.topic, c.muteAll, c.visibility, c.role, c.maxMembers], ['ship it', true, 'SHARED', 'ADMIN', 50]);
  client.close();
});

test('public channels: createChannel, joinChannel, listChannels go on the wire; the list marks channels', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const c = client.createChannel('news', { broadcastOnly: true });
  const [cf] = ws.take('createChannel');
  assert.deepEqual([cf.createChannel.name, cf.createChannel.broadcastOnly], ['news', true]);
  assert.ok(!cf.createChannel.visibility, 'visibility not given: unset on the wire (the server reads PUBLIC)');
  ws.recv({ reqId: cf.reqId, groupCreated: { conversation: 'g:9', seq: 1 } });
  assert.deepEqual(await c, { conversation: 'g:9', seq: 1 });
  const c2 = client.createChannel('talk', { visibility: 'JOINED' });
  const [cf2] = ws.take('createChannel');
  assert.deepEqual([cf2.createChannel.name, cf2.createChannel.broadcastOnly, cf2.createChannel.visibility], ['talk', false, proto.HistoryVisibility.JOINED]);
  ws.recv({ reqId: cf2.reqId, error: { code: ErrorCode.INVALID_ARGUMENT, message: 'name' } });
  await assert.rejects(c2, (x) => x.codeName === 'INVALID_ARGUMENT');
  const j = client.joinChannel('g:9');
  const [jf] = ws.take('joinChannel');
  assert.equal(jf.joinChannel.conversation, 'g:9');
  ws.recv({ reqId: jf.reqId, ok: {} });
  await j;
  const j2 = client.joinChannel('g:1');
  const [jf2] = ws.take('joinChannel');
  ws.recv({ reqId: jf2.reqId, error: { code: ErrorCode.FORBIDDEN, message: 'not a channel' } });
  await assert.rejects(j2, (x) => x.codeName === 'FORBIDDEN');
  const l = client.listChannels('ne', 10);
  const [lf] = ws.take('listChannels');
  assert.deepEqual([lf.listChannels.prefix, lf.listChannels.limit], ['ne', 10]);
  ws.recv({
    reqId: lf.reqId,
    channelList: {
      channels: [
        { conversation: 'g:9', name: 'news', topic: 'daily', memberCount: 3, broadcastOnly: true, visibility: proto.HistoryVisibility.PUBLIC, joined: true },
        { conversation: 'g:12', name: 'Nerds', memberCount: 1, visibility: proto.HistoryVisibility.SHARED },
      ],
    },
  });
  assert.deepEqual(await l, [
    { conversation: 'g:9', name: 'news', topic: 'daily', memberCount: 3, broadcastOnly: true, visibility: 'PUBLIC', joined: true },
    { conversation: 'g:12', name: 'Nerds', topic: '', memberCount: 1, broadcastOnly: false, visibility: 'SHARED', joined: false },
  ]);
  const l2 = client.listChannels();
  const [lf2] = ws.take('listChannels');
  assert.deepEqual([lf2.listChannels.prefix, lf2.listChannels.limit], ['', 0], 'defaults: every channel, the server limit');
  ws.recv({ reqId: lf2.reqId, channelList: {} });
  assert.deepEqual(await l2, []);
  const lc = client.listConversations();
  const [lcf] = ws.take('listConversations');
  ws.recv({
    reqId: lcf.reqId,
    conversationList: {
      conversations: [
        { conversation: 'g:9', kind: proto.ConversationKind.GROUP, name: 'news', channel: true, visibility: proto.HistoryVisibility.PUBLIC },
        { conversation: 'g:7', kind: proto.ConversationKind.GROUP, name: 'team' },
      ],
      total: 2,
    },
  });
  const [ch, gr] = (await lc).conversations;
  assert.deepEqual([ch.channel, ch.visibility, gr.channel], [true, 'PUBLIC', false]);
  client.close();
});

test('profiles: SetProfile sends only the fields given, GetProfiles/SearchUsers map answers, ProfileChanged is an event', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  /** @type {any[]} */
  const seen = [];
  client.on('profile', (p) => seen.push(p));
  const set = client.setProfile({ status: 'away' });
  const [sp] = ws.take('setProfile');
  assert.equal(sp.setProfile.status, 'away');
  assert.ok(sp.setProfile.displayName == null, 'an absent field keeps its value');
  const mine = { user: 'alice', displayName: 'Alice', status: 'away', avatar: '', updatedMs: 5 };
  ws.recv({ reqId: sp.reqId, profileList: { profiles: [mine] } });
  assert.deepEqual(await set, mine);
  const get = client.getProfiles(['bob']);
  const [gp] = ws.take('getProfiles');
  assert.deepEqual(gp.getProfiles.users, ['bob']);
  ws.recv({ reqId: gp.reqId, profileList: { profiles: [{ user: 'bob' }] } });
  assert.deepEqual(await get, [{ user: 'bob', displayName: '', status: '', avatar: '', updatedMs: 0 }]);
  const found = client.searchUsers('bo', 5);
  const [su] = ws.take('searchUsers');
  assert.deepEqual([su.searchUsers.prefix, su.searchUsers.limit], ['bo', 5]);
  ws.recv({ reqId: su.reqId, userSearchResult: { users: [{ user: 'bob', displayName: 'Bob B' }] } });
  assert.deepEqual(await found, [{ user: 'bob', displayName: 'Bob B' }]);
  ws.recv({ reqId: 0, profileChanged: { profile: { user: 'bob', displayName: 'Bobby', updatedMs: 9 } } });
  await until(() => seen.length === 1, 'the profile event');
  assert.deepEqual(seen[0], { user: 'bob', displayName: 'Bobby', status: '', avatar: '', updatedMs: 9 });
  client.close();
});

test('contacts: requests go on the wire, contacts() maps states, contact system messages carry `contact`', async () => {
  const { client, ws, ev } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const p = client.sendFriendRequest('bob', 'hi bob');
  const [f] = ws.take('sendFriendRequest');
  assert.deepEqual([f.sendFriendRequest.user, f.sendFriendRequest.message], ['bob', 'hi bob']);
  ws.recv({ reqId: f.reqId, ok: {} });
  await p;
  for (const [call, kind] of [
    ['acceptFriendRequest', 'acceptFriendRequest'],
    ['declineFriendRequest', 'declineFriendRequest'],
    ['cancelFriendRequest', 'cancelFriendRequest'],
    ['removeFriend', 'removeFriend'],
    ['blockUser', 'blockUser'],
    ['unblockUser', 'unblockUser'],
  ]) {
    const q = client[call]('carl');
    const [g] = ws.take(kind);
    assert.ok(g, `${kind} went out`);
    assert.equal(g[kind].user, 'carl');
    ws.recv({ reqId: g.reqId, error: { code: ErrorCode.NOT_FOUND, message: 'no user carl' } });
    await assert.rejects(q, (e) => e.codeName === 'NOT_FOUND');
  }
  const l = client.contacts();
  const [h] = ws.take('listContacts');
  ws.recv({
    reqId: h.reqId,
    contactList: {
      contacts: [
        { user: 'bob', state: 3, message: 'hi bob', sinceMs: 5 },
        { user: 'dan', state: 1 },
        { user: 'eve', state: 2, message: 'me?' },
        { user: 'zed', state: 4 },
      ],
    },
  });
  assert.deepEqual(
    (await l).map((c) => [c.user, c.state, c.message]),
    [['bob', 'outgoing', 'hi bob'], ['dan', 'friend', ''], ['eve', 'incoming', 'me?'], ['zed', 'blocked', '']],
  );
  ws.recv({
    push: {
      inboxSeq: 1,
      message: msg('d:alice:bob', 1, 'bob', {
        kind: 1,
        body: new Uint8Array(),
        contact: { kind: 2, actor: 'bob', user: 'alice' },
      }),
    },
  });
  const m = ev.messages.map((e) => e.message);
  assert.equal(m.length, 1);
  assert.equal(m[0].kind, 'system');
  assert.deepEqual(m[0].contact, { kind: 'ACCEPTED', actor: 'bob', user: 'alice', message: '' });
  assert.equal(m[0].event, null);
  client.close();
});

// ---- blobs: images and files (docs/PROTOCOL.md 9.14) ----

/** Waits for the client's next request of `kind` on `ws` and takes it. */
async function nextRequest(ws, kind) {
  await until(() => ws.sent.some((f) => f.body === kind), `a ${kind} request`);
  const f = ws.sent.find((x) => x.body === kind);
  ws.sent = ws.sent.filter((x) => x !== f);
  return f;
}

/** Seeded bytes. */
function noise(n, seed = 7) {
  const b = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

const hexSha = (b) => createHash('sha256').update(b).digest('hex');

test('blob helpers: images are sniffed from their bytes, the announced type follows, ids are sha256', async () => {
  const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]);
  const riff = new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 ');
  assert.equal(sniffImage(png), 'image/png');
  assert.equal(sniffImage(Uint8Array.from([0xff, 0xd8, 0xff, 0xe0])), 'image/jpeg');
  assert.equal(sniffImage(new TextEncoder().encode('GIF89a....')), 'image/gif');
  assert.equal(sniffImage(riff), 'image/webp');
  assert.equal(sniffImage(new TextEncoder().encode('%PDF-1.4')), null);
  assert.equal(blobMime(png, 'application/octet-stream'), 'image/png', 'the content decides for images');
  assert.equal(blobMime(new TextEncoder().encode('%PDF-1.4'), 'application/pdf'), 'application/pdf');
  assert.equal(blobMime(new TextEncoder().encode('not a png'), 'image/png'), 'application/octet-stream', 'no image type for non-image bytes');
  assert.equal(blobMime(new TextEncoder().encode('x'), 'text/plain; charset=utf-8'), 'application/octet-stream', 'only plain types');
  assert.equal(blobMime(new TextEncoder().encode('x'), ''), 'application/octet-stream');
  assert.equal(await blobIdOf(new TextEncoder().encode('abc')), hexSha('abc'));
});

test('sha256Js (pages without crypto.subtle) agrees with sha256 at every padding boundary', () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 65_537]) {
    const d = noise(n, n + 1);
    assert.equal(Buffer.from(sha256Js(d)).toString('hex'), hexSha(d), `${n} bytes`);
    // A view into a larger buffer hashes its own bytes only.
    const big = noise(n + 7, n + 1);
    assert.equal(Buffer.from(sha256Js(big.subarray(3, 3 + n))).toString('hex'), hexSha(big.subarray(3, 3 + n)), `view of ${n}`);
  }
  assert.equal(Buffer.from(sha256Js(new TextEncoder().encode('abc'))).toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('uploadBlob: named by sha256 first, 512 KiB chunks in order, resumed from the server offset after a reconnect', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const data = noise(BLOB_CHUNK * 2 + 1000);
  const id = hexSha(data);
  /** @type {[number, number][]} */
  const progress = [];
  const done = client.uploadBlob(data, 'application/pdf', (sent, total) => progress.push([sent, total]));
  const begin = await nextRequest(ws, 'uploadBegin');
  assert.equal(Buffer.from(begin.uploadBegin.sha256).toString('hex'), id);
  assert.deepEqual([begin.uploadBegin.size, begin.uploadBegin.mime], [data.length, 'application/pdf']);
  ws.recv({ reqId: begin.reqId, uploadState: { uploadId: id, offset: 0, size: data.length } });
  const c1 = await nextRequest(ws, 'uploadChunk');
  assert.deepEqual([c1.uploadChunk.uploadId, c1.uploadChunk.offset, c1.uploadChunk.data.length], [id, 0, BLOB_CHUNK]);
  assert.ok(Buffer.from(c1.uploadChunk.data).equals(Buffer.from(data.subarray(0, BLOB_CHUNK))));
  ws.recv({ reqId: c1.reqId, uploadState: { uploadId: id, offset: BLOB_CHUNK, size: data.length } });
  const c2 = await nextRequest(ws, 'uploadChunk');
  assert.equal(c2.uploadChunk.offset, BLOB_CHUNK);
  // The connection drops before the answer (the chunk did land): after the reconnect the
  // client asks where the server is and goes on from there.
  ws.serverClose();
  await until(() => FakeWS.all.length === 2, 'a reconnect');
  const ws2 = FakeWS.last();
  ws2.open();
  ws2.recv(emptySyncResult(loginAndSync(ws2)));
  const again = await nextRequest(ws2, 'uploadBegin');
  assert.equal(Buffer.from(again.uploadBegin.sha256).toString('hex'), id);
  ws2.recv({ reqId: again.reqId, uploadState: { uploadId: id, offset: BLOB_CHUNK * 2, size: data.length } });
  const c3 = await nextRequest(ws2, 'uploadChunk');
  assert.deepEqual([c3.uploadChunk.offset, c3.uploadChunk.data.length], [BLOB_CHUNK * 2, 1000]);
  assert.ok(Buffer.from(c3.uploadChunk.data).equals(Buffer.from(data.subarray(BLOB_CHUNK * 2))));
  ws2.recv({ reqId: c3.reqId, uploadState: { uploadId: id, offset: data.length, size: data.length } });
  const fin = await nextRequest(ws2, 'uploadFinish');
  assert.equal(fin.uploadFinish.uploadId, id);
  ws2.recv({ reqId: fin.reqId, blobInfo: { blobId: id, size: data.length, mime: 'application/pdf' } });
  const info = await done;
  assert.equal(info.blobId, id);
  assert.equal(info.size, data.length);
  assert.equal(info.width, 0);
  assert.deepEqual(progress, [
    [0, data.length],
    [BLOB_CHUNK, data.length],
    [BLOB_CHUNK * 2, data.length],
    [data.length, data.length],
  ]);
  assert.equal(ws.sent.filter((f) => f.body === 'uploadChunk').length + ws2.sent.filter((f) => f.body === 'uploadChunk').length, 0);
  client.close();
});

test('uploadBlob: content already stored sends no chunk; a refusal rejects; an image comes back with its thumbnail', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const data = noise(10);
  const progress = [];
  const p = client.uploadBlob(data, '', (s, t) => progress.push([s, t]));
  const b = await nextRequest(ws, 'uploadBegin');
  assert.equal(b.uploadBegin.mime, 'application/octet-stream', 'no type given: from the content');
  const thumb = Uint8Array.from([0xff, 0xd8, 0xff, 1, 2, 3]);
  ws.recv({
    reqId: b.reqId,
    uploadState: {
      uploadId: 'x', offset: 10, size: 10,
      blob: { blobId: hexSha(data), size: 10, mime: 'image/png', width: 64, height: 48, thumbnail: thumb, thumbnailWidth: 64, thumbnailHeight: 48 },
    },
  });
  const info = await p;
  assert.deepEqual([info.width, info.height, info.thumbnailWidth, [...info.thumbnail]], [64, 48, 64, [...thumb]]);
  assert.ok(info.thumbnail instanceof Uint8Array);
  assert.deepEqual(progress, [[10, 10]]);
  assert.equal(ws.sent.filter((f) => f.body === 'uploadChunk').length, 0);
  const q = client.uploadBlob(data, 'application/pdf');
  const b2 = await nextRequest(ws, 'uploadBegin');
  ws.recv({ reqId: b2.reqId, error: { code: ErrorCode.RESOURCE_EXHAUSTED, message: 'quota exceeded' } });
  await assert.rejects(q, (e) => e.codeName === 'RESOURCE_EXHAUSTED');
  client.close();
});

test('download: chunks in order, checked against the blob id; bytes that do not hash to it reject', async () => {
  const { client, ws } = makeClient();
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const data = noise(BLOB_CHUNK + 5, 3);
  const id = hexSha(data);
  /** Serves the next Download request from `bytes`. */
  const serve = async (bytes) => {
    const d = await nextRequest(ws, 'download');
    assert.equal(d.download.blobId, id);
    const off = Number(d.download.offset);
    const chunk = bytes.subarray(off, off + Math.min(d.download.length || BLOB_CHUNK, BLOB_CHUNK));
    ws.recv({ reqId: d.reqId, blobChunk: { blobId: id, offset: off, data: chunk, size: bytes.length, mime: 'application/pdf' } });
    return off;
  };
  const progress = [];
  const p = client.download(id, (got, total) => progress.push([got, total]));
  assert.deepEqual([await serve(data), await serve(data)], [0, BLOB_CHUNK]);
  const got = await p;
  assert.equal(got.mime, 'application/pdf');
  assert.ok(Buffer.from(got.bytes).equals(Buffer.from(data)));
  assert.deepEqual(progress, [[BLOB_CHUNK, data.length], [data.length, data.length]]);
  const bad = Uint8Array.from(data);
  bad[7] ^= 1;
  const q = client.download(id);
  await serve(bad);
  await serve(bad);
  await assert.rejects(q, /do not hash/);
  client.close();
});

test('attachments: Send carries {blobId, name}, kept in the saved outbox; messages carry the attachment; blobUrl and setAvatar', async () => {
  const storage = new MemStorage();
  const { client, ws } = makeClient({ storage });
  ws.recv(emptySyncResult(loginAndSync(ws)));
  const id = 'ab'.repeat(32);
  const sent = client.sendAttachment({ user: 'bob' }, { blobId: id, name: 'report.pdf' });
  sent.catch(() => {});
  const viaWire = client.send({ user: 'bob' }, 'caption', '', { attachment: { blob_id: id, name: 'x.png' } });
  viaWire.catch(() => {});
  const [s1, s2] = ws.take('send').map((f) => f.send);
  assert.deepEqual([s1.attachment.blobId, s1.attachment.name, s1.peer], [id, 'report.pdf', 'bob']);
  assert.deepEqual([s2.attachment.blobId, s2.attachment.name], [id, 'x.png'], 'blob_id is taken too');
  assert.deepEqual(loadState('alice', storage).outbox.map((m) => m.options), [
    { attachment: { blobId: id, name: 'report.pdf' } },
    { attachment: { blobId: id, name: 'x.png' } },
  ]);
  // A delivered image message.
  const got = [];
  client.on('message', (d) => got.push(d.message));
  const thumb = Uint8Array.from([0xff, 0xd8, 0xff, 9]);
  ws.recv({
    reqId: 0,
    push: {
      inboxSeq: 1,
      message: msg('d:alice:bob', 1, 'bob', {
        body: new Uint8Array(),
        attachment: { blobId: id, name: 'cat.png', size: 900, mime: 'image/png', width: 640, height: 480, thumbnail: thumb, thumbnailWidth: 320, thumbnailHeight: 240 },
      }),
    },
  });
  ws.recv({ reqId: 0, push: { inboxSeq: 2, message: msg('d:alice:bob', 2, 'bob') } });
  await until(() => got.length === 2, 'two messages');
  const a = got[0].attachment;
  assert.deepEqual(
    [a.blobId, a.name, a.size, a.mime, a.width, a.height, a.thumbnailWidth, a.thumbnailHeight, a.image, got[0].text],
    [id, 'cat.png', 900, 'image/png', 640, 480, 320, 240, true, ''],
  );
  assert.deepEqual([...a.thumbnail], [...thumb]);
  assert.equal(got[1].attachment, null, 'a text message has none');
  // A signed URL on the ws URL's host, as http.
  const u = client.blobUrl(id);
  const [g] = ws.take('getBlobUrl');
  assert.equal(g.getBlobUrl.blobId, id);
  ws.recv({ reqId: g.reqId, blobUrl: { path: `/blob/${id}?e=5&s=ff`, expiresMs: 5 } });
  assert.deepEqual(await u, { url: `http://test/blob/${id}?e=5&s=ff`, path: `/blob/${id}?e=5&s=ff`, expiresMs: 5 });
  const av = client.setAvatar(id);
  const [sp] = ws.take('setProfile');
  assert.equal(sp.setProfile.avatar, id);
  assert.ok(sp.setProfile.displayName == null && sp.setProfile.status == null, 'only the avatar changes');
  ws.recv({ reqId: sp.reqId, profileList: { profiles: [{ user: 'alice', avatar: id }] } });
  assert.equal((await av).avatar, id);
  const rm = client.setAvatar('');
  const [sp2] = ws.take('setProfile');
  assert.ok(Object.hasOwn(sp2.setProfile, 'avatar') && sp2.setProfile.avatar === '', "'' removes the avatar");
  ws.recv({ reqId: sp2.reqId, profileList: { profiles: [{ user: 'alice' }] } });
  assert.equal((await rm).avatar, '');
  client.close();
});

test('CURSOR_TRIMMED (retention, docs/PROTOCOL.md 8.11): rebuilt from the conversations, each retained message once and in order, then the inbox goes on from F', async () => {
  const storage = new MemStorage();
  const dm = 'd:alice:bob';
  const g = 'g:00000000000000aa';
  // Delivered before: dm 1..2, g 1 (inbox cursor 3).
  storage.setItem(
    storageKey('alice') + 'state',
    JSON.stringify({ token: 'tok-0', device: 'web-test', storeEpoch: 'E1', inbox: 3, conversations: {}, delivered: { [dm]: 2, [g]: 1 } }),
  );
  const { client, ev, ws } = makeClient({ storage });
  const sync = loginAndSync(ws);
  assert.equal(sync.sync.afterInboxSeq, 3);
  ws.recv({
    reqId: sync.reqId,
    error: {
      code: ErrorCode.CURSOR_TRIMMED,
      message: 'inbox trimmed by retention: after_inbox_seq 3 is below the first retained inbox seq 10 (inbox head 12); rebuild',
    },
  });
  const [list] = ws.take('listConversations');
  assert.ok(list, 'a ListConversations after CURSOR_TRIMMED');
  assert.deepEqual([list.listConversations.limit, list.listConversations.offset], [500, 0]);
  assert.equal(ws.take('sync').length, 0, 'no Sync while rebuilding');
  // A push arriving meanwhile waits (no Sync, no delivery).
  ws.recv({ push: { inboxSeq: 13, message: msg(dm, 7, 'bob') } });
  assert.equal(ws.take('sync').length, 0);
  assert.equal(ev.messages.length, 0);
  ws.recv({
    reqId: list.reqId,
    conversationList: {
      conversations: [
        { conversation: dm, lastSeq: 5 },
        { conversation: g, lastSeq: 4 },
        { conversation: 'd:alice:carol', lastSeq: 0 }, // nothing in it
        { conversation: 'g:00000000000000bb', lastSeq: 9, readDiffusion: true }, // its own cursor
      ],
      total: 4,
    },
  });
  const pulls = ws.take('pull');
  assert.deepEqual(
    pulls.map((f) => [f.pull.conversation, f.pull.afterSeq, f.pull.untilSeq]),
    [
      [dm, 2, 5],
      [g, 1, 4],
    ],
    'each conversation pulled from what was delivered of it, up to its listed last_seq',
  );
  ws.recv({
    reqId: pulls[0].reqId,
    pullResult: { conversation: dm, messages: [3, 4, 5].map((s) => msg(dm, s, 'bob')), fromSeq: 3, toSeq: 5, lastSeq: 5, complete: true, firstSeq: 1 },
  });
  // The group's timeline was trimmed too: from its first retained seq (after 0).
  ws.recv({ reqId: pulls[1].reqId, error: { code: ErrorCode.CURSOR_TRIMMED, message: 'the first retained seq is 3' } });
  const [again] = ws.take('pull');
  assert.deepEqual([again.pull.conversation, again.pull.afterSeq], [g, 0]);
  assert.equal(ws.take('sync').length, 0, 'no Sync until every conversation is pulled');
  assert.equal(ev.caughtUp, 0, 'not caught up while rebuilding');
  ws.recv({
    reqId: again.reqId,
    pullResult: { conversation: g, messages: [3, 4].map((s) => msg(g, s, 'carol')), fromSeq: 3, toSeq: 4, lastSeq: 4, complete: true, firstSeq: 3 },
  });
  // Done: the inbox cursor continues from F - 1.
  const [next] = ws.take('sync');
  assert.ok(next, 'a Sync after the rebuild');
  assert.equal(next.sync.afterInboxSeq, 9);
  ws.recv({
    reqId: next.reqId,
    syncResult: {
      items: [
        { inboxSeq: 10, message: msg(dm, 5, 'bob') }, // pulled already
        { inboxSeq: 11, message: msg(g, 4, 'carol') }, // pulled already
        { inboxSeq: 12, message: msg(dm, 6, 'bob') },
        { inboxSeq: 13, message: msg(dm, 7, 'bob') }, // also pushed meanwhile
      ],
      fromInboxSeq: 9,
      toInboxSeq: 13,
      inboxHead: 13,
      complete: true,
    },
  });
  assert.deepEqual(
    ev.messages.map((m) => `${m.message.conversation}#${m.message.seq}`),
    [`${dm}#3`, `${dm}#4`, `${dm}#5`, `${g}#3`, `${g}#4`, `${dm}#6`, `${dm}#7`],
    'every retained message once, in order per conversation, none delivered before',
  );
  assert.equal(ev.caughtUp, 1);
  const saved = loadState('alice', storage);
  assert.equal(saved.cursors.inbox, 13, 'the inbox cursor went on after the rebuild');
  assert.deepEqual(saved.cursors.delivered, { [dm]: 7, [g]: 4 });
  await until(() => ws.sent.some((f) => f.body === 'ack'), 'the Ack');
  assert.deepEqual(ws.take('ack').map((f) => f.ack.inboxSeq), [13]);
  client.close();
});

test('CURSOR_TRIMMED: a rebuild cut by a reconnect starts again; a message without F leaves the cursor alone', async () => {
  const storage = new MemStorage();
  const dm = 'd:alice:bob';
  storage.setItem(
    storageKey('alice') + 'state',
    JSON.stringify({ token: 'tok-0', device: 'web-test', storeEpoch: 'E1', inbox: 2, conversations: {}, delivered: { [dm]: 2 } }),
  );
  const { client, ev, ws } = makeClient({ storage });
  const sync = loginAndSync(ws);
  const trimmed = { code: ErrorCode.CURSOR_TRIMMED, message: 'after_inbox_seq 2 is below the first retained inbox seq 6 (inbox head 8)' };
  ws.recv({ reqId: sync.reqId, error: trimmed });
  const [list] = ws.take('listConversations');
  ws.recv({ reqId: list.reqId, conversationList: { conversations: [{ conversation: dm, lastSeq: 6 }], total: 1 } });
  const [pull] = ws.take('pull');
  assert.equal(pull.pull.afterSeq, 2);
  ws.serverClose(); // the Pull's answer never comes
  await until(() => FakeWS.all.length === 2, 'a reconnect', 2000);
  const ws2 = FakeWS.last();
  ws2.open();
  const sync2 = loginAndSync(ws2);
  assert.equal(sync2.sync.afterInboxSeq, 2, 'the cursor did not move: the rebuild did not finish');
  ws2.recv({ reqId: sync2.reqId, error: trimmed });
  const [list2] = ws2.take('listConversations');
  ws2.recv({ reqId: list2.reqId, conversationList: { conversations: [{ conversation: dm, lastSeq: 6 }], total: 1 } });
  const [pull2] = ws2.take('pull');
  assert.equal(pull2.pull.afterSeq, 2);
  ws2.recv({
    reqId: pull2.reqId,
    pullResult: { conversation: dm, messages: [3, 4, 5, 6].map((s) => msg(dm, s, 'bob')), fromSeq: 3, toSeq: 6, lastSeq: 6, complete: true, firstSeq: 1 },
  });
  const [sync3] = ws2.take('sync');
  assert.equal(sync3.sync.afterInboxSeq, 5);
  ws2.recv(emptySyncResult(sync3, 5));
  assert.deepEqual(ev.messages.map((m) => m.message.seq), [3, 4, 5, 6]);
  // A CURSOR_TRIMMED this SDK cannot read (no F): no rebuild, no moved cursor.
  ws2.recv({ push: { inboxSeq: 9, message: msg(dm, 8, 'bob') } });
  const [gap] = ws2.take('sync');
  ws2.recv({ reqId: gap.reqId, error: { code: ErrorCode.CURSOR_TRIMMED, message: 'cursor trimmed' } });
  assert.equal(ws2.take('listConversations').length, 0);
  assert.equal(client.cursors.inbox, 5);
  client.close();
});

test('send order: after a retryable refusal nothing overtakes the refused send (docs/PROTOCOL.md 8.2)', async () => {
  const { Engine, RETRY_DELAY_MS } = await import('../src/sdk.js');
  const e = new Engine('alice');
  e.onConnected('ep');
  const out = (id) => ({ clientMsgId: id, target: { user: 'bob' }, body: new Uint8Array([1]), contentType: '' });
  const sent = () => {
    const s = e.transmit.filter((f) => f.send).map((f) => [f.reqId, f.send.clientMsgId]);
    e.transmit = [];
    return s;
  };
  const refuse = (reqId, code, now) =>
    e.handleFrame({ reqId, body: 'error', error: { code, message: 'no', retryAfterMs: 0 } }, now);
  const now = 1_000_000;
  for (const id of ['m1', 'm2', 'm3']) e.send(out(id));
  const first = sent();
  assert.deepEqual(first.map(([, id]) => id), ['m1', 'm2', 'm3']);
  refuse(first[0][0], ErrorCode.RATE_LIMITED, now);
  e.send(out('m4'));
  assert.deepEqual(sent(), [], 'paused: m4 waits behind m1');
  // The server's fence refused m2; m3's answer is late.
  refuse(first[1][0], ErrorCode.RATE_LIMITED, now);
  assert.equal(e.pollTimeout(), now + RETRY_DELAY_MS);
  e.handleTimeout(now + RETRY_DELAY_MS - 1);
  assert.deepEqual(sent(), [], 'not before the pause ends');
  e.handleTimeout(now + RETRY_DELAY_MS);
  assert.deepEqual(sent().map(([, id]) => id), ['m1', 'm2'], 'from the oldest, stopping at m3 still in flight');
  const later = now + RETRY_DELAY_MS;
  refuse(first[2][0], ErrorCode.RATE_LIMITED, later);
  e.handleTimeout(later + RETRY_DELAY_MS);
  assert.deepEqual(sent().map(([, id]) => id), ['m3', 'm4']);
});
