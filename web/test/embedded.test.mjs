// The page as it ships: tern-server started in an empty temporary working directory with
// no --web-root (support.mjs), so what Chromium loads is the copy built into the binary
// (server/src/http/assets.rs) and nothing Node made: no bundle, no generated code. Checks
// each file's Content-Type and headers, that the binary's copy is today's web/src, two
// users chatting through the page, and the browser's wire codec (src/wire.js) against the
// real server's prost encoding over the WebSocket. Harness: ./support.mjs.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PASSWORD, WAIT_MS, WEB, e2e, newContext, openPage, sendAndWaitAcked, signIn, startChat, startServer } from './support.mjs';

/** The files the server embeds, with the Content-Type it must send. */
const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/sdk.js': ['sdk.js', 'text/javascript; charset=utf-8'],
  '/wire.js': ['wire.js', 'text/javascript; charset=utf-8'],
  '/schema.js': ['schema.js', 'text/javascript; charset=utf-8'],
  '/protocol-rules.json': ['protocol-rules.json', 'application/json'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

e2e('the embedded page: right Content-Types, the files of web/src, 404 for the rest', async (_t, logs) => {
  const server = await startServer(logs);
  for (const [path, [file, type]] of Object.entries(FILES)) {
    const r = await fetch(`${server.base}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get('content-type'), type, path);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff', path);
    assert.equal(r.headers.get('cache-control'), 'no-cache', path);
    const body = Buffer.from(await r.arrayBuffer());
    assert.ok(
      body.equals(readFileSync(join(WEB, 'src', file))),
      `${path} differs from web/src/${file}: rebuild the server (cargo build -p tern-server), which embeds web/src`,
    );
  }
  for (const path of ['/dist/app.js', '/gen/tern.js', '/missing.js']) {
    assert.equal((await fetch(`${server.base}${path}`)).status, 404, path);
  }
});

e2e('the embedded page: two users register and chat through it', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');
  await sendAndWaitAcked(a, 'from the built-in page ✓');
  await b.click(`#conv-list li[data-conv="${conv}"]`, { timeout: WAIT_MS });
  await b.waitForFunction(
    (t) => [...document.querySelectorAll('#messages .msg:not(.own) .text')].some((e) => e.textContent === t),
    'from the built-in page ✓',
    { timeout: WAIT_MS },
  );
  await sendAndWaitAcked(b, 'and back');
  await a.waitForFunction(
    () => [...document.querySelectorAll('#messages .msg:not(.own) .text')].some((e) => e.textContent === 'and back'),
    null,
    { timeout: WAIT_MS },
  );
});

e2e('wire.js in Chromium against the server: frames the server (prost) decodes and answers', async (_t, logs) => {
  const server = await startServer(logs);
  const page = await openPage(await newContext(), server.base, logs, 'wire');
  const out = await page.evaluate(async ({ url, PASSWORD, WAIT_MS }) => {
    const { proto } = await import('/wire.js');
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    /** @type {any[]} */
    const inbox = [];
    /** @type {((f: any) => void) | null} */
    let waiting = null;
    ws.onmessage = (e) => {
      const f = proto.Frame.decode(new Uint8Array(e.data));
      if (waiting) waiting(f);
      else inbox.push(f);
    };
    await new Promise((ok, fail) => ((ws.onopen = ok), (ws.onerror = fail)));
    /** Sends a frame and resolves with the next frame that is not a push. */
    const call = (frame) =>
      new Promise((ok, fail) => {
        const t = setTimeout(() => fail(new Error(`no answer to ${JSON.stringify(Object.keys(frame))}`)), WAIT_MS);
        const take = (f) => {
          if (f.reqId === 0) return; // a push
          clearTimeout(t);
          waiting = null;
          ok(f);
        };
        waiting = take;
        while (inbox.length && waiting) take(inbox.shift());
        ws.send(proto.Frame.encode(frame).finish());
      });
    const big = 2 ** 33 + 7; // a req_id above 2^32
    const reg = await call({ reqId: big, register: { protocolVersion: 1, username: 'wirepeer', password: PASSWORD } });
    const again = await call({ reqId: 3, register: { protocolVersion: 1, username: 'wirepeer', password: PASSWORD } });
    await call({ reqId: 4, register: { protocolVersion: 1, username: 'wiretest', password: PASSWORD } });
    const login = await call({ reqId: 5, login: { protocolVersion: 1, username: 'wiretest', password: PASSWORD, device: 'wire' } });
    const now = Date.now();
    const pong = await call({ reqId: 6, ping: { clientTimeMs: now } });
    const text = 'wire ✓ ünïcødé';
    const ack = await call({
      reqId: 7,
      send: { clientMsgId: 'w-1', peer: 'wirepeer', body: new TextEncoder().encode(text), contentType: 'text/plain', mentions: ['wirepeer'] },
    });
    const pull = await call({ reqId: 8, pull: { conversation: ack.sendAck.conversation, afterSeq: 0, limit: 10 } });
    ws.close();
    const m = pull.pullResult.messages[0];
    return {
      reg: [reg.reqId, reg.body],
      again: [again.body, proto.ErrorCode[again.error.code]],
      login: [login.body, login.loginOk.username, login.loginOk.device, login.loginOk.token.length > 0, login.loginOk.heartbeatSecs > 0, login.loginOk.tokenExpiresMs > now],
      pong: [pong.body, pong.pong.clientTimeMs === now, Math.abs(pong.pong.serverTimeMs - now) < 60_000],
      ack: [ack.body, ack.sendAck.conversation, ack.sendAck.seq, ack.sendAck.clientMsgId, ack.sendAck.serverTimeMs > 2 ** 32],
      pulled: [pull.body, pull.pullResult.messages.length, m.sender, m.seq, new TextDecoder().decode(m.body), m.body instanceof Uint8Array, [...m.mentions], m.contentType],
    };
  }, { url: `ws://${server.ws}/ws`, PASSWORD, WAIT_MS });
  assert.deepEqual(out.reg, [2 ** 33 + 7, 'ok'], 'a uint64 req_id above 2^32 comes back whole');
  assert.deepEqual(out.again, ['error', 'USER_EXISTS']);
  assert.deepEqual(out.login, ['loginOk', 'wiretest', 'wire', true, true, true]);
  assert.deepEqual(out.pong, ['pong', true, true]);
  assert.deepEqual(out.ack, ['sendAck', 'd:wirepeer:wiretest', 1, 'w-1', true]);
  assert.deepEqual(out.pulled, ['pullResult', 1, 'wiretest', 1, 'wire ✓ ünïcødé', true, ['wirepeer'], 'text/plain']);
});
