// End-to-end test of the browser SDK's recovery from CURSOR_TRIMMED (docs/PROTOCOL.md
// 8.11): a real tern-server with small retention settings (each inbox keeps its 5 newest
// entries, a sweep every 200 ms), the SDK (src/sdk.js, as the server serves it) in headless Chromium.
// Bob's page delivered two messages and went away; Alice sent more (1:1 and in a new
// group) than his inbox keeps. When Bob's page comes back its Sync is trimmed: the SDK
// rebuilds from the conversations and delivers each message he had not seen once, in
// order, then goes on live. Harness: ./support.mjs.

import assert from 'node:assert/strict';
import { WAIT_MS, e2e, newContext, openPage, startServer } from './support.mjs';

// The server reads these (support.mjs passes the environment on).
Object.assign(process.env, {
  TERN_RETENTION_INBOX_MAX_ENTRIES: '5',
  TERN_RETENTION_TIMELINE_MIN_AGE_SECS: '0',
  TERN_RETENTION_SWEEP_INTERVAL_MS: '200',
});

e2e('a trimmed inbox: the page gets every message it had not seen once, in order, then live ones', async (_t, logs) => {
  const server = await startServer(logs);
  const ctx = await newContext();
  const page = await openPage(ctx, server.base, logs, 'page');
  // The SDK module the page itself loads, as window.Tern.
  await page.evaluate(async () => {
    /** @type {any} */ (window).Tern = await import('/sdk.js');
  });
  const ws = `ws://${server.ws}/ws`;

  // Bob delivers d1, d2 and goes away (his cursors stay in localStorage).
  const before = await page.evaluate(async ({ ws, WAIT_MS }) => {
    const T = /** @type {any} */ (window).Tern;
    const wait = (cond, what) =>
      new Promise((ok, fail) => {
        const end = Date.now() + WAIT_MS;
        const t = setInterval(() => {
          if (cond()) ok(clearInterval(t));
          else if (Date.now() > end) fail(new Error(`timed out: ${what}`), clearInterval(t));
        }, 20);
      });
    await T.TernClient.register(ws, 'alice', 'password-a1');
    await T.TernClient.register(ws, 'bob', 'password-b1');
    const w = /** @type {any} */ (window);
    w.alice = new T.TernClient({ url: ws, username: 'alice', password: 'password-a1', device: 'a' }).start();
    const bob = new T.TernClient({ url: ws, username: 'bob', password: 'password-b1', device: 'b' }).start();
    const got = [];
    bob.on('message', (d) => got.push(d.message.text));
    await w.alice.send({ user: 'bob' }, 'd1');
    await w.alice.send({ user: 'bob' }, 'd2');
    await wait(() => got.length === 2, 'bob got d1, d2');
    const inbox = bob.cursors.inbox;
    bob.close();
    return { got, inbox };
  }, { ws, WAIT_MS });
  assert.deepEqual(before.got, ['d1', 'd2']);

  // While Bob is away: 10 more 1:1 messages, a group with 3 more: 14 inbox entries, 5 kept.
  const group = await page.evaluate(async () => {
    const alice = /** @type {any} */ (window).alice;
    for (let i = 3; i <= 12; i++) await alice.send({ user: 'bob' }, `d${i}`);
    const g = await alice.createGroup('trimmed', ['bob']);
    for (let i = 1; i <= 3; i++) await alice.send({ conversation: g.conversation }, `g${i}`);
    return g.conversation;
  });
  await new Promise((r) => setTimeout(r, 1500)); // a few sweeps

  // Bob's page comes back.
  const after = await page.evaluate(async ({ ws, WAIT_MS, group }) => {
    const T = /** @type {any} */ (window).Tern;
    const wait = (cond, what) =>
      new Promise((ok, fail) => {
        const end = Date.now() + WAIT_MS;
        const t = setInterval(() => {
          if (cond()) ok(clearInterval(t));
          else if (Date.now() > end) fail(new Error(`timed out: ${what}`), clearInterval(t));
        }, 20);
      });
    /** Requests the SDK sent, and CURSOR_TRIMMED answers it got. */
    const sent = [];
    let trimmed = '';
    class Spy extends WebSocket {
      constructor(url) {
        super(url);
        this.addEventListener('message', (e) => {
          if (!(e.data instanceof ArrayBuffer)) return;
          const f = T.proto.Frame.decode(new Uint8Array(e.data));
          if (f.body === 'error' && f.error.code === T.ErrorCode.CURSOR_TRIMMED) trimmed = f.error.message;
        });
      }
      send(bytes) {
        const f = T.proto.Frame.decode(bytes);
        sent.push(f.body === 'sync' ? `sync after ${Number(f.sync.afterInboxSeq)}` : f.body);
        super.send(bytes);
      }
    }
    const bob = new T.TernClient({ url: ws, username: 'bob', password: 'password-b1', device: 'b', WebSocket: Spy });
    const got = [];
    let caughtUp = 0;
    bob.on('message', (d) => {
      const m = d.message;
      got.push(m.conversation === group ? `${m.text || `[${m.kind}]`}@group` : m.text);
    });
    bob.on('caught-up', () => caughtUp++);
    bob.start();
    await wait(() => caughtUp > 0 && got.filter((x) => /^g3/.test(x)).length > 0, 'bob caught up');
    const alice = /** @type {any} */ (window).alice;
    await alice.send({ user: 'bob' }, 'd13');
    await wait(() => got.includes('d13'), 'the live d13');
    await new Promise((r) => setTimeout(r, 300)); // anything delivered twice would show now
    const out = { got, sent, trimmed, inbox: bob.cursors.inbox };
    bob.close();
    alice.close();
    return out;
  }, { ws, WAIT_MS, group });
  logs.push(`[test] after: ${JSON.stringify(after)}`);

  assert.match(after.trimmed, /first retained inbox seq \d+/, 'the Sync was trimmed');
  const f = Number(/first retained inbox seq (\d+)/.exec(after.trimmed)[1]);
  assert.ok(f - 1 > before.inbox, `entries past Bob's cursor ${before.inbox} were trimmed (F = ${f})`);
  assert.ok(after.sent.includes('listConversations'), `rebuilt from the list: ${after.sent}`);
  assert.ok(after.sent.includes(`sync after ${f - 1}`), `the inbox went on from F - 1: ${after.sent}`);
  const dms = after.got.filter((x) => !x.endsWith('@group'));
  assert.deepEqual(dms, ['d3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9', 'd10', 'd11', 'd12', 'd13'], 'no d1/d2 again, every later one once, in order');
  const inGroup = after.got.filter((x) => x.endsWith('@group')).filter((x) => /^g\d@/.test(x));
  assert.deepEqual(inGroup, ['g1@group', 'g2@group', 'g3@group'], 'the group messages once, in order');
  assert.equal(new Set(after.got).size, after.got.length, `nothing twice: ${after.got}`);
  assert.ok(after.inbox > f - 1, 'the inbox cursor moved past F - 1');
});
