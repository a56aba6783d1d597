// End-to-end tests of the web chat page and the browser SDK: a real tern-server (its
// WebSocket bridge serving the page embedded in the binary), real headless Chromium
// (playwright-core driving the system's /usr/bin/chromium), and the real `tern` CLI for
// interop.
//
// Needs: `cargo build -p tern-server -p tern-cli` (binaries in ../target/debug, or set
// TERN_SERVER_BIN / TERN_CLI_BIN) and Chromium (`apt-get install chromium`, or set
// CHROMIUM_BIN). Harness (server, browser, cleanups,
// sign-in): ./support.mjs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import {
  CLI_BIN,
  PASSWORD,
  REPO,
  WAIT_MS,
  e2e,
  newContext,
  openPage,
  requireFile,
  screenshot,
  sendAndWaitAcked,
  signIn,
  startChat,
  startServer,
  tempDir,
} from './support.mjs';

/** Texts of the message bubbles in the open chat, in display order. */
function chatTexts(page) {
  return page.$$eval('#messages .msg:not(.system)', (els) =>
    els.map((e) => ({ text: e.querySelector('.text')?.textContent ?? '', own: e.classList.contains('own'), pending: e.classList.contains('pending'), seq: e.getAttribute('data-seq') })),
  );
}

/** Waits until the open chat shows exactly `texts` (in order). */
async function waitForChat(page, texts) {
  try {
    await page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll('#messages .msg:not(.system) .text')].map((e) => e.textContent);
        return JSON.stringify(got) === JSON.stringify(want);
      },
      texts,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    const got = await chatTexts(page).catch(() => 'unavailable');
    throw new Error(`chat view never showed ${JSON.stringify(texts)}; it shows ${JSON.stringify(got)}`, { cause: e });
  }
}

async function unreadOf(page, conv) {
  const el = await page.$(`#conv-list li[data-conv="${conv}"] .unread`);
  return el ? Number(await el.textContent()) : 0;
}

/** Runs the tern CLI (bounded), returning stdout lines; fails on a non-zero exit. */
async function cli(server, profile, args, { timeoutMs = 30_000 } = {}, logs = []) {
  requireFile(CLI_BIN, `tern CLI (build it: cd ${REPO} && cargo build -p tern-server -p tern-cli; or set TERN_CLI_BIN)`);
  const full = ['--server', server.tcp, '--ca', server.ca, '--profile', profile, '--transport', 'tcp', ...args];
  const child = spawn(CLI_BIN, full, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, XDG_CONFIG_HOME: dirname(profile), HOME: dirname(profile) },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise((res) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      res('timeout');
    }, timeoutMs);
    child.on('exit', (c) => {
      clearTimeout(t);
      res(c);
    });
  });
  logs.push(`[cli] tern ${args.join(' ')} -> ${code}\n${out}${err}`);
  if (code !== 0) throw new Error(`tern ${args.join(' ')} failed (${code}):\n${out}\n${err}`);
  return out.split('\n').filter((l) => l.trim() !== '');
}

// ---------------------------------------------------------------------------------------

e2e('two browser users register, log in and chat both ways, live', async (_t, logs) => {
  const server = await startServer(logs);
  const ctxA = await newContext();
  const ctxB = await newContext();
  const a = await openPage(ctxA, server.base, logs, 'alice');
  const b = await openPage(ctxB, server.base, logs, 'bob');
  await a.waitForSelector('#login-view:not([hidden])');
  assert.match(await a.inputValue('#device'), /^web-[0-9a-f]{8}$/, 'device name defaults to web-<random>');
  await screenshot(a, 'login.png');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  const conv = await startChat(a, 'alice', 'bob');
  assert.equal(conv, 'd:alice:bob');
  await sendAndWaitAcked(a, 'hello bob');

  // Bob sees the new conversation appear live, with an unread mark.
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"] .unread`, { timeout: WAIT_MS });
  assert.equal(await unreadOf(b, conv), 1);
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(b, ['hello bob']);
  // Cleared once the server answers the MarkRead (asserted at once, it raced that answer).
  await waitUnread(b, conv, 0, 'opening the conversation clears its unread mark');
  assert.deepEqual(
    (await chatTexts(b)).map((m) => m.own),
    [false],
  );

  // Bob answers; Alice, with the chat open, sees it live.
  await sendAndWaitAcked(b, 'hi alice');
  await waitForChat(a, ['hello bob', 'hi alice']);
  assert.deepEqual((await chatTexts(a)).map((m) => m.own), [true, false], 'own messages are marked');

  // A burst keeps its order on both sides.
  for (const t of ['one', 'two', 'three']) {
    await a.fill('#compose', t);
    await a.click('#send');
  }
  const all = ['hello bob', 'hi alice', 'one', 'two', 'three'];
  await waitForChat(a, all);
  await waitForChat(b, all);
  const shownA = await chatTexts(a);
  await a.waitForFunction(() => document.querySelectorAll('#messages .msg.pending').length === 0, null, { timeout: WAIT_MS });
  assert.deepEqual(
    (await chatTexts(b)).map((m) => Number(m.seq)),
    [1, 2, 3, 4, 5],
    'seqs are contiguous and in order',
  );
  assert.equal(shownA.length, 5);
  assert.equal(await unreadOf(a, conv), 0, 'messages in the open chat are not unread');

  // Each side's SDK delivered each message once.
  for (const p of [a, b]) {
    const seqs = await p.evaluate(() => window.__tern.delivered.map((m) => m.seq));
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
  }
  await screenshot(a, 'chat.png');
  await screenshot(b, 'chat-bob.png');
});

e2e('a user who was offline gets exactly the missed messages, in order, with an unread mark', async (_t, logs) => {
  const server = await startServer(logs);
  const ctxA = await newContext();
  const ctxB = await newContext();
  const a = await openPage(ctxA, server.base, logs, 'alice');
  let b = await openPage(ctxB, server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');
  await sendAndWaitAcked(a, 'before');
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"]`);
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(b, ['before']);

  // Bob goes away: his page (and its WebSocket) closes.
  await b.close();
  const missed = ['missed 1', 'missed 2', 'missed 3'];
  for (const t of missed) await sendAndWaitAcked(a, t);

  // Bob comes back in the same browser context: the page resumes with the saved token
  // (it never sees the password again) and syncs from its saved cursor.
  b = await openPage(ctxB, server.base, logs, 'bob');
  await b.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  assert.equal(await b.isVisible('#login-view'), false, 'resumed without the login form');
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"] .unread`, { timeout: WAIT_MS });
  await b.waitForFunction(() => window.__tern.caughtUp > 0, null, { timeout: WAIT_MS });
  assert.equal(await unreadOf(b, conv), 3, 'unread mark counts the missed messages');
  await screenshot(b, 'offline-unread.png');
  // Nothing else trickles in afterwards (e.g. a duplicate from a late push).
  await new Promise((r) => setTimeout(r, 700));
  const delivered = await b.evaluate(() => window.__tern.delivered);
  assert.deepEqual(
    delivered.map((m) => [m.seq, m.sender, m.text]),
    [
      [2, 'alice', 'missed 1'],
      [3, 'alice', 'missed 2'],
      [4, 'alice', 'missed 3'],
    ],
    'exactly the missed messages, once each, in order',
  );
  assert.deepEqual(await b.evaluate(() => window.__tern.states), ['connecting', 'connected']);

  await b.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(b, ['before', ...missed]);
  assert.equal(await unreadOf(b, conv), 0);
  await screenshot(b, 'offline.png');
});

e2e('CLI interop: tern CLI -> browser and browser -> tern CLI', async (_t, logs) => {
  const server = await startServer(logs);
  const ctx = await newContext();
  const page = await openPage(ctx, server.base, logs, 'wendy');
  await signIn(page, 'wendy', { register: true });

  const home = tempDir('tern-web-cli-');
  const profile = join(home, 'carl.profile.json');
  await cli(server, profile, ['register', 'carl', '--password', PASSWORD], {}, logs);
  await cli(server, profile, ['login', 'carl', '--password', PASSWORD, '--device', 'cli1'], {}, logs);
  await cli(server, profile, ['send', '--to', 'wendy', 'hello from the cli'], {}, logs);

  const conv = 'd:carl:wendy';
  await page.waitForSelector(`#conv-list li[data-conv="${conv}"] .unread`, { timeout: WAIT_MS });
  assert.equal(await unreadOf(page, conv), 1);
  await page.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(page, ['hello from the cli']);
  const [first] = await chatTexts(page);
  assert.equal(first.own, false);

  await sendAndWaitAcked(page, 'hello from the browser');
  const lines = await cli(server, profile, ['sync', '--idle-exit', '2'], { timeoutMs: 30_000 }, logs);
  const msgs = lines.map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      throw new Error(`tern sync printed a line that is not JSON: ${l}`);
    }
  });
  const fromWeb = msgs.filter((m) => m.text === 'hello from the browser');
  assert.equal(fromWeb.length, 1, `the browser's message is printed once: ${lines.join('\n')}`);
  assert.equal(fromWeb[0].from, 'wendy');
  assert.equal(fromWeb[0].conv, conv);
  assert.equal(fromWeb[0].seq, 2);
  assert.match(String(fromWeb[0].client_msg_id), /^[0-9a-f-]{32,36}$/, 'the browser gave it a UUID client_msg_id');
  // Whatever else sync printed is in seq order within the conversation.
  const seqs = msgs.filter((m) => m.conv === conv).map((m) => m.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
  await screenshot(page, 'cli.png');
});

e2e('server restart: the page reconnects and resends a message typed while offline, once', async (_t, logs) => {
  const dataDir = tempDir('tern-web-e2e-restart-');
  let server = await startServer(logs, { dataDir });
  const ports = { quic: server.quic, tcp: server.tcp, ws: server.ws };
  const ctxA = await newContext();
  const ctxB = await newContext();
  const a = await openPage(ctxA, server.base, logs, 'alice');
  const b = await openPage(ctxB, server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');
  await sendAndWaitAcked(a, 'before restart');
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"]`);
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(b, ['before restart']);

  // The server stops (Closing SHUTDOWN): both pages show they are reconnecting.
  await server.stop();
  await a.waitForSelector('#state[data-state="reconnecting"]', { timeout: WAIT_MS });
  await b.waitForSelector('#state[data-state="reconnecting"]', { timeout: WAIT_MS });

  // Typed while offline: shown as pending, kept in the outbox.
  await a.fill('#compose', 'sent while offline');
  await a.click('#send');
  await a.waitForSelector('#messages .msg.own.pending', { timeout: WAIT_MS });
  const outbox = await a.evaluate(() => window.__tern.client.pending.map((p) => p.text));
  assert.deepEqual(outbox, ['sent while offline']);
  await screenshot(a, 'reconnect-pending.png');

  // Same data, same addresses: the pages reconnect by themselves, resume, resend.
  server = await startServer(logs, { dataDir, ports });
  await a.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await b.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await a.waitForFunction(() => document.querySelectorAll('#messages .msg.pending').length === 0, null, { timeout: WAIT_MS });
  await waitForChat(a, ['before restart', 'sent while offline']);
  await waitForChat(b, ['before restart', 'sent while offline']);
  await new Promise((r) => setTimeout(r, 500));
  for (const p of [a, b]) {
    const seqs = await p.evaluate(() => window.__tern.delivered.map((m) => m.seq));
    assert.deepEqual(seqs, [1, 2], 'each message delivered once');
  }
  const statesA = await a.evaluate(() => window.__tern.states);
  assert.ok(statesA.includes('reconnecting'), `states: ${statesA}`);
  assert.equal(statesA.at(-1), 'connected');
  await screenshot(a, 'reconnect.png');
});

/** Conversation ids of the list, top to bottom. */
function convOrder(page) {
  return page.$$eval('#conv-list li', (els) => els.map((e) => e.getAttribute('data-conv')));
}

/** The total unread shown above the list (0 when hidden). */
async function totalUnreadOf(page) {
  return page.$eval('#total-unread', (e) => (e.hidden ? 0 : Number(e.textContent)));
}

/** Waits until the badge of `conv` shows `n` (0: no badge). */
async function waitUnread(page, conv, n, label) {
  try {
    await page.waitForFunction(
      ([c, want]) => {
        const u = document.querySelector(`#conv-list li[data-conv="${c}"] .unread`);
        const li = document.querySelector(`#conv-list li[data-conv="${c}"]`);
        return li !== null && (u ? Number(u.textContent) : 0) === want;
      },
      [conv, n],
      { timeout: WAIT_MS },
    );
  } catch (e) {
    throw new Error(`${label}: the badge of ${conv} never showed ${n}; it shows ${await unreadOf(page, conv)}`, { cause: e });
  }
}

e2e('read state: badges from the server, cleared in a second tab of the same user, read ticks for the sender', async (_t, logs) => {
  const server = await startServer(logs);
  const ctxA = await newContext();
  const ctxB1 = await newContext();
  const ctxB2 = await newContext();
  const a = await openPage(ctxA, server.base, logs, 'alice');
  const b1 = await openPage(ctxB1, server.base, logs, 'bob-tab1');
  const b2 = await openPage(ctxB2, server.base, logs, 'bob-tab2');
  await signIn(a, 'alice', { register: true });
  await signIn(b1, 'bob', { register: true });
  // The second tab: same user, another device (its own random device name).
  await signIn(b2, 'bob', { register: false });
  const dev1 = await b1.evaluate(() => window.__tern.client.device);
  const dev2 = await b2.evaluate(() => window.__tern.client.device);
  assert.notEqual(dev1, dev2, 'two devices of one user');

  const conv = await startChat(a, 'alice', 'bob');
  const texts = ['one', 'two', 'three'];
  for (const t of texts) await sendAndWaitAcked(a, t);

  // Carol (the tern CLI) writes to bob afterwards: her conversation is the most recent.
  const home = tempDir('tern-web-read-');
  const profile = join(home, 'carol.profile.json');
  await cli(server, profile, ['register', 'carol', '--password', PASSWORD], {}, logs);
  await cli(server, profile, ['login', 'carol', '--password', PASSWORD, '--device', 'cli1'], {}, logs);
  await cli(server, profile, ['send', '--to', 'bob', 'hello from carol'], {}, logs);
  const convCarol = 'd:bob:carol';

  // Both bob tabs: a badge per conversation with the right count, the total, most recent first.
  for (const [p, label] of [[b1, 'tab 1'], [b2, 'tab 2']]) {
    await waitUnread(p, conv, 3, label);
    await waitUnread(p, convCarol, 1, label);
    await p.waitForFunction(() => document.querySelector('#total-unread')?.textContent === '4', null, { timeout: WAIT_MS });
    assert.equal(await totalUnreadOf(p), 4, `${label}: total unread`);
    assert.deepEqual(await convOrder(p), [convCarol, conv], `${label}: most recent first`);
    assert.equal(await p.textContent(`#conv-list li[data-conv="${conv}"] .preview`), 'three', `${label}: last message preview`);
  }
  // The counts are the server's: a reload of tab 2 shows the same, from ListConversations.
  await b2.reload();
  await b2.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await waitUnread(b2, conv, 3, 'tab 2 after reload');
  await waitUnread(b2, convCarol, 1, 'tab 2 after reload');
  const statesB2 = await b2.evaluate(() => window.__tern.states);
  await screenshot(b2, 'read-badges.png');

  // Tab 1 opens the conversation with alice: it is marked read up to the newest shown.
  await b1.click(`#conv-list li[data-conv="${conv}"]`);
  await waitForChat(b1, texts);
  await waitUnread(b1, conv, 0, 'tab 1 after opening');
  // Tab 2 clears that badge at once (a ReadReceipt push, no reload); carol's stays.
  await waitUnread(b2, conv, 0, 'tab 2 after tab 1 read');
  assert.equal(await unreadOf(b2, convCarol), 1, 'the other conversation is still unread');
  assert.equal(await totalUnreadOf(b2), 1, 'tab 2 total unread');
  assert.deepEqual(await b2.evaluate(() => window.__tern.states), statesB2, 'tab 2 did not reconnect or reload');

  // Alice sees bob's read receipt: a read tick on her messages up to the seq he read.
  await a.waitForFunction(() => document.querySelectorAll('#messages .msg.own [data-testid="read-mark"]').length === 3, null, { timeout: WAIT_MS });

  // A message that arrives while tab 1 has the chat open is read there, so tab 2 shows
  // no badge for it, and alice's newest message gets its tick too.
  await sendAndWaitAcked(a, 'four');
  await waitForChat(b1, [...texts, 'four']);
  await a.waitForFunction(() => document.querySelectorAll('#messages .msg.own [data-testid="read-mark"]').length === 4, null, { timeout: WAIT_MS });
  await waitUnread(b2, conv, 0, 'tab 2 after a message read live in tab 1');
  assert.equal(await b2.textContent(`#conv-list li[data-conv="${conv}"] .preview`), 'four');
  assert.deepEqual(await convOrder(b2), [conv, convCarol], 'alice wrote last: her conversation moves up');
  await screenshot(a, 'read-receipt.png');
  await screenshot(b2, 'read-cleared.png');
  await screenshot(b1, 'read-open.png');

  // Paged list (one conversation per page): the total still counts the conversation not
  // loaded yet, and "More conversations" brings it with its badge. (This tab is tab 2's
  // device, so it takes over that session.)
  const b3 = await ctxB2.newPage();
  b3.on('pageerror', (e) => logs.push(`[bob-tab3 pageerror] ${e.stack || e}`));
  await b3.goto(`${server.base}/?convPage=1`, { timeout: WAIT_MS });
  await b3.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await b3.waitForSelector('#more-convs:not([hidden])', { timeout: WAIT_MS });
  assert.deepEqual(await convOrder(b3), [conv], 'first page: the most recent conversation');
  assert.equal(await totalUnreadOf(b3), 1, 'the total covers all conversations, not only the page');
  await b3.click('#more-convs');
  await waitUnread(b3, convCarol, 1, 'second page');
  assert.deepEqual(await convOrder(b3), [conv, convCarol]);
  assert.equal(await b3.isVisible('#more-convs'), false, 'no more pages');
  assert.equal(await totalUnreadOf(b3), 1);
});

/** Waits until the total above the list shows `n` (0: hidden). */
async function waitTotal(page, n, label) {
  try {
    await page.waitForFunction(
      (want) => {
        const t = document.querySelector('#total-unread');
        return t !== null && (t.hidden ? 0 : Number(t.textContent)) === want;
      },
      n,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    throw new Error(`${label}: the total never showed ${n}; it shows ${await totalUnreadOf(page)}`, { cause: e });
  }
}

/** Waits until the list shows `order`, top to bottom. */
async function waitOrder(page, order, label) {
  try {
    await page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll('#conv-list li')].map((e) => e.getAttribute('data-conv'))) === JSON.stringify(want),
      order,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    throw new Error(`${label}: the list never showed ${order}; it shows ${await convOrder(page)}`, { cause: e });
  }
}

/** [pinned, muted] of a row, from its classes and its toggles' aria-pressed (which must agree). */
async function rowSettings(page, conv) {
  return page.$eval(`#conv-list li[data-conv="${conv}"]`, (li) => {
    const pressed = (t) => li.querySelector(`[data-testid="${t}"]`)?.getAttribute('aria-pressed') === 'true';
    const pinned = li.classList.contains('pinned');
    const muted = li.classList.contains('muted');
    if (pinned !== pressed('row-pin') || muted !== pressed('row-mute')) throw new Error('classes and toggles disagree');
    return [pinned, muted];
  });
}

e2e('mute and pin: a pin in tab 1 reorders tab 2, a mute leaves the count out of the total, the header toggles, a reload keeps them', async (_t, logs) => {
  const server = await startServer(logs);
  const ctxB1 = await newContext();
  const ctxB2 = await newContext();
  const b1 = await openPage(ctxB1, server.base, logs, 'bob-tab1');
  const b2 = await openPage(ctxB2, server.base, logs, 'bob-tab2');
  await signIn(b1, 'bob', { register: true });
  await signIn(b2, 'bob', { register: false });

  // alice then carol (tern CLI) write to bob: carol's conversation is the most recent.
  const home = tempDir('tern-web-settings-');
  const alice = join(home, 'alice.profile.json');
  const carol = join(home, 'carol.profile.json');
  for (const [user, profile] of [['alice', alice], ['carol', carol]]) {
    await cli(server, profile, ['register', user, '--password', PASSWORD], {}, logs);
    await cli(server, profile, ['login', user, '--password', PASSWORD, '--device', 'cli1'], {}, logs);
  }
  await cli(server, alice, ['send', '--to', 'bob', 'a1'], {}, logs);
  await cli(server, carol, ['send', '--to', 'bob', 'c1'], {}, logs);
  const convAlice = 'd:alice:bob';
  const convCarol = 'd:bob:carol';
  for (const [p, label] of [[b1, 'tab 1'], [b2, 'tab 2']]) {
    await waitUnread(p, convAlice, 1, label);
    await waitUnread(p, convCarol, 1, label);
    await waitOrder(p, [convCarol, convAlice], `${label}: most recent first`);
    await waitTotal(p, 2, label);
    assert.deepEqual(await rowSettings(p, convAlice), [false, false]);
  }

  // Tab 1 pins alice's (older) conversation from its row: both tabs list it first.
  await b1.click(`#conv-list li[data-conv="${convAlice}"] [data-testid="row-pin"]`);
  await waitOrder(b2, [convAlice, convCarol], 'tab 2 after the pin (a settings push, no reload)');
  await waitOrder(b1, [convAlice, convCarol], 'tab 1 after the pin');
  assert.deepEqual(await rowSettings(b2, convAlice), [true, false]);
  assert.deepEqual(await rowSettings(b2, convCarol), [false, false]);
  assert.equal(await totalUnreadOf(b2), 2, 'pinning changes no count');
  assert.equal(await b1.evaluate(() => window.__tern.app.open), null, 'the row toggle did not open the chat');

  // Tab 1 mutes carol's: her badge stays (1), the total drops to alice's 1, in both tabs.
  await b1.click(`#conv-list li[data-conv="${convCarol}"] [data-testid="row-mute"]`);
  await b2.waitForSelector(`#conv-list li[data-conv="${convCarol}"].muted`, { timeout: WAIT_MS });
  await waitTotal(b2, 1, 'tab 2 after the mute');
  await waitTotal(b1, 1, 'tab 1 after the mute');
  assert.equal(await unreadOf(b2, convCarol), 1, 'a muted conversation keeps its badge');
  assert.deepEqual(await rowSettings(b2, convCarol), [false, true]);
  // A new message in the muted conversation: its badge grows, the total does not.
  await cli(server, carol, ['send', '--to', 'bob', 'c2'], {}, logs);
  await waitUnread(b2, convCarol, 2, 'tab 2: muted conversation, new message');
  assert.equal(await totalUnreadOf(b2), 1, 'still only alice');
  assert.deepEqual(await convOrder(b2), [convAlice, convCarol], 'the pinned one stays first');
  await screenshot(b2, 'settings-list.png');

  // The open chat's header: tab 1 opens alice's conversation (read: total 0), the Pin
  // toggle is pressed; Unpin puts carol's (more recent) first again, Mute mutes alice's.
  await b1.click(`#conv-list li[data-conv="${convAlice}"]`);
  await waitForChat(b1, ['a1']);
  await waitTotal(b2, 0, 'tab 2 after tab 1 read alice');
  assert.equal(await b1.getAttribute('#pin-toggle', 'aria-pressed'), 'true');
  assert.equal(await b1.getAttribute('#mute-toggle', 'aria-pressed'), 'false');
  await b1.click('#pin-toggle');
  await waitOrder(b2, [convCarol, convAlice], 'tab 2 after the unpin');
  await b1.waitForSelector('#pin-toggle[aria-pressed="false"]', { timeout: WAIT_MS });
  await b1.click('#mute-toggle');
  await b2.waitForSelector(`#conv-list li[data-conv="${convAlice}"].muted`, { timeout: WAIT_MS });
  await b1.waitForSelector('#mute-toggle[aria-pressed="true"]', { timeout: WAIT_MS });
  assert.equal(await b1.textContent('#mute-toggle'), 'Unmute');
  assert.equal(await b1.textContent('#pin-toggle'), 'Pin');
  await screenshot(b1, 'settings-header.png');

  // The settings are the server's: a reload of tab 2 lists them the same way.
  await b2.reload();
  await b2.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await waitUnread(b2, convCarol, 2, 'tab 2 after reload');
  await waitOrder(b2, [convCarol, convAlice], 'tab 2 after reload');
  assert.deepEqual(await rowSettings(b2, convCarol), [false, true]);
  assert.deepEqual(await rowSettings(b2, convAlice), [false, true]);
  assert.equal(await totalUnreadOf(b2), 0, 'both muted: nothing in the total');

  // Unmute carol's from tab 2's row: her 2 count in tab 1's total again.
  await b2.click(`#conv-list li[data-conv="${convCarol}"] [data-testid="row-mute"]`);
  await waitTotal(b1, 2, 'tab 1 after tab 2 unmuted carol');
  await waitTotal(b2, 2, 'tab 2 after its unmute');
});

/** The seq of the message of `conv` with `text` as this page holds it. */
async function seqOf(page, conv, text) {
  const seq = await page.evaluate(
    ([c, t]) => {
      const m = [...(window.__tern.app.convs.get(c)?.messages.values() ?? [])].find((x) => x.kind === 'message' && x.text === t);
      return m ? m.seq : 0;
    },
    [conv, text],
  );
  assert.ok(seq > 0, `no message "${text}" in ${conv}`);
  return seq;
}

/** Clicks the hover action `action` (reply, edit, recall, delete) of message `seq`. */
async function messageAction(page, seq, action) {
  const li = `#messages li.msg[data-seq="${seq}"]`;
  await page.hover(li);
  await page.click(`${li} .actions [data-action="${action}"]`);
}

/** Waits until `#typing` shows `text` ('' = nobody typing). */
async function waitTyping(page, text, label) {
  try {
    await page.waitForFunction((t) => document.querySelector('#typing')?.textContent === t, text, { timeout: WAIT_MS });
  } catch (e) {
    throw new Error(`${label}: the typing line never showed "${text}"; it shows "${await page.textContent('#typing')}"`, { cause: e });
  }
}

e2e('groups, replies, mentions, typing, edit, recall, delete for me and presence between two browser users', async (_t, logs) => {
  const server = await startServer(logs);
  const ctxA = await newContext();
  const ctxB = await newContext();
  const a = await openPage(ctxA, server.base, logs, 'alice');
  let b = await openPage(ctxB, server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const home = tempDir('tern-web-group-');
  const carol = join(home, 'carol.profile.json');
  await cli(server, carol, ['register', 'carol', '--password', PASSWORD], {}, logs);

  // Alice creates a group from the sidebar, then adds bob from its member panel.
  await a.click('#new-group-toggle');
  await a.fill('#group-name', 'team');
  await a.click('#create-group');
  await a.waitForSelector('#conv-list li[data-conv^="g:"].active', { timeout: WAIT_MS });
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  assert.equal(await a.textContent('#chat-title'), '# team');
  await a.waitForSelector('#members-panel:not([hidden]) #member-list li[data-user="alice"]', { timeout: WAIT_MS });
  await a.fill('#add-member', 'bob');
  await a.click('#add-member-go');
  await a.waitForSelector('#member-list li[data-user="bob"]', { timeout: WAIT_MS });
  await a.waitForSelector('#messages li.msg.system >> text=alice added bob', { timeout: WAIT_MS });

  // Bob: the group appears live with one unread (the event that added him); he opens it.
  await waitUnread(b, g, 1, 'bob after being added');
  await b.click(`#conv-list li[data-conv="${g}"]`);
  await b.waitForSelector('#messages li.msg.system >> text=alice added bob', { timeout: WAIT_MS });
  await waitUnread(b, g, 0, 'bob after opening the group');
  await b.waitForFunction(() => /2 members/.test(document.querySelector('#chat-sub')?.textContent ?? ''), null, { timeout: WAIT_MS });

  // Group chat both ways.
  await sendAndWaitAcked(a, 'hello team');
  await waitForChat(b, ['hello team']);
  const hello = await seqOf(b, g, 'hello team');

  // Bob types: alice sees "bob is typing…" (in the chat and on the row)…
  await b.click('#compose');
  await b.keyboard.type('@alice hi there', { delay: 20 });
  await waitTyping(a, 'bob is typing…', 'alice while bob types');
  assert.equal(await a.textContent(`#conv-list li[data-conv="${g}"] .preview`), 'bob is typing…');
  await screenshot(a, 'group-typing.png');
  // …replies to alice's message with a mention; sending ends the typing at once.
  await messageAction(b, hello, 'reply');
  await b.waitForSelector('#compose-context:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await b.textContent('#compose-context-text'), 'Replying to alice: hello team');
  await b.click('#send');
  await b.waitForSelector('#compose-context', { state: 'hidden', timeout: WAIT_MS });
  await waitForChat(a, ['hello team', '@alice hi there']);
  await waitTyping(a, '', 'alice after bob sent');
  const reply = await seqOf(a, g, '@alice hi there');
  const replyLi = `#messages li.msg[data-seq="${reply}"]`;
  assert.equal(await a.textContent(`${replyLi} .quote`), 'alicehello team', 'the reply quotes its target');
  assert.equal(await a.textContent(`${replyLi} .mention.me`), '@alice', 'the mention of alice is highlighted');
  const delivered = await a.evaluate((s) => window.__tern.delivered.find((m) => m.seq === s), reply);
  assert.deepEqual([delivered.replyTo, delivered.mentions], [hello, ['alice']], 'reply_to and mentions on the wire');
  await screenshot(a, 'group-reply.png');

  // Alice edits her message: bob sees the new text marked edited, also in his reply's quote.
  await messageAction(a, hello, 'edit');
  assert.equal(await a.inputValue('#compose'), 'hello team', 'the compose box holds the text to edit');
  await a.fill('#compose', 'hello everyone');
  await a.click('#send');
  await waitForChat(b, ['hello everyone', '@alice hi there']);
  await b.waitForSelector(`#messages li.msg[data-seq="${hello}"] [data-testid="edited"]`, { timeout: WAIT_MS });
  assert.equal(await b.textContent(`#messages li.msg[data-seq="${reply}"] .quote-text`), 'hello everyone');
  await waitForChat(a, ['hello everyone', '@alice hi there']);

  // Alice recalls a message of her own, and (as the owner) bob's reply.
  await sendAndWaitAcked(a, 'oops');
  await waitForChat(b, ['hello everyone', '@alice hi there', 'oops']);
  const oops = await seqOf(a, g, 'oops');
  await messageAction(a, oops, 'recall');
  const recalled = 'This message was recalled';
  await waitForChat(b, ['hello everyone', '@alice hi there', recalled]);
  await messageAction(a, reply, 'recall');
  await waitForChat(b, ['hello everyone', recalled, recalled]);
  await waitForChat(a, ['hello everyone', recalled, recalled]);
  assert.equal(await b.$$eval('#messages li.msg.recalled', (e) => e.length), 2);
  // Bob may not edit or recall alice's message, and no longer his recalled one.
  assert.equal(await b.$(`#messages li.msg[data-seq="${hello}"] [data-action="recall"]`), null);
  assert.equal(await b.$(`#messages li.msg[data-seq="${hello}"] [data-action="edit"]`), null);
  assert.equal(await b.$(`#messages li.msg[data-seq="${reply}"] .actions [data-action="edit"]`), null);
  await screenshot(b, 'group-edit-recall.png');

  // Bob deletes alice's message for himself: gone from his view, still in alice's.
  await messageAction(b, hello, 'delete');
  await waitForChat(b, [recalled, recalled]);
  await new Promise((r) => setTimeout(r, 300));
  await waitForChat(a, ['hello everyone', recalled, recalled]);

  // Away from the group, bob gets a mention: a badge with an @ mark; alice's edit of it
  // adds no unread, her recall takes it away.
  await startChat(b, 'bob', 'alice');
  await sendAndWaitAcked(a, '@bob look here');
  const look = await seqOf(a, g, '@bob look here');
  await waitUnread(b, g, 1, 'bob: a new message');
  await b.waitForSelector(`#conv-list li[data-conv="${g}"] [data-testid="mention-mark"]`, { timeout: WAIT_MS });
  await messageAction(a, look, 'edit');
  await a.fill('#compose', '@bob look here, please');
  await a.click('#send');
  await b.waitForFunction(
    (c) => document.querySelector(`#conv-list li[data-conv="${c}"] .preview`)?.textContent === 'alice: @bob look here, please',
    g,
    { timeout: WAIT_MS },
  );
  assert.equal(await unreadOf(b, g), 1, 'an edit is not a new unread message');
  await screenshot(b, 'group-mention-badge.png');
  await messageAction(a, look, 'recall');
  await waitUnread(b, g, 0, 'bob after the recall of his only unread message');
  assert.equal(await b.$(`#conv-list li[data-conv="${g}"] [data-testid="mention-mark"]`), null);

  // Bob's view after a reload is the server's: the deleted message absent, recalls as such.
  await b.reload();
  await b.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await b.click(`#conv-list li[data-conv="${g}"]`);
  await waitForChat(b, [recalled, recalled, recalled]);
  await waitUnread(b, g, 0, 'bob after reload');

  // Members: alice adds and removes carol; bob leaves.
  await a.fill('#add-member', 'carol');
  await a.click('#add-member-go');
  await a.waitForSelector('#member-list li[data-user="carol"]', { timeout: WAIT_MS });
  await a.click('#member-list li[data-user="carol"] [data-testid="remove-member"]');
  await a.waitForSelector('#member-list li[data-user="carol"]', { state: 'detached', timeout: WAIT_MS });
  await a.waitForSelector('#messages li.msg.system >> text=alice removed carol', { timeout: WAIT_MS });
  b.once('dialog', (d) => d.accept());
  await b.click('#members-toggle');
  await b.waitForSelector('#member-list li[data-user="bob"]', { timeout: WAIT_MS });
  assert.equal(await b.$('#member-list [data-testid="remove-member"]'), null, 'a plain member removes nobody');
  assert.equal(await b.isVisible('#add-member-form'), false, 'a plain member adds nobody');
  await b.click('#leave-group');
  await b.waitForSelector(`#conv-list li[data-conv="${g}"]`, { state: 'detached', timeout: WAIT_MS });
  await a.waitForSelector('#messages li.msg.system >> text=bob left', { timeout: WAIT_MS });
  await a.waitForSelector('#member-list li[data-user="bob"]', { state: 'detached', timeout: WAIT_MS });
  await screenshot(a, 'group-members.png');

  // Presence: bob writes to alice directly; alice's row shows him online, then offline
  // when his page closes (a PresenceEvent push).
  await startChat(b, 'bob', 'alice');
  await sendAndWaitAcked(b, 'hi in private');
  const direct = 'd:alice:bob';
  await a.waitForSelector(`#conv-list li[data-conv="${direct}"] [data-testid="presence"][data-online="true"]`, { timeout: WAIT_MS });
  await screenshot(a, 'presence-online.png');
  await b.close();
  await a.waitForSelector(`#conv-list li[data-conv="${direct}"] [data-testid="presence"][data-online="false"]`, { timeout: WAIT_MS });
  await a.click(`#conv-list li[data-conv="${direct}"]`);
  await a.waitForSelector('#chat-presence[data-online="false"]:not([hidden])', { timeout: WAIT_MS });

  // Meanwhile carol (tern CLI) sends bob a message with a 1 s time to live, then a durable one.
  await cli(server, carol, ['login', 'carol', '--password', PASSWORD, '--device', 'cli1'], {}, logs);
  await cli(server, carol, ['send', '--to', 'bob', '--ttl', '1', 'gone soon'], {}, logs);
  await cli(server, carol, ['send', '--to', 'bob', 'still here'], {}, logs);
  await new Promise((r) => setTimeout(r, 2500));

  // Back online: the dot turns green again; the expired message is a tombstone, not unread.
  b = await openPage(ctxB, server.base, logs, 'bob');
  await b.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await a.waitForSelector('#chat-presence[data-online="true"]', { timeout: WAIT_MS });
  await screenshot(a, 'presence.png');
  const convCarol = 'd:bob:carol';
  await waitUnread(b, convCarol, 1, 'bob: only the durable message is unread');
  await b.click(`#conv-list li[data-conv="${convCarol}"]`);
  await waitForChat(b, ['This message expired', 'still here']);
  assert.equal(await b.$$eval('#messages li.msg.expired', (e) => e.length), 1);
  assert.ok(
    !(await b.evaluate(() => window.__tern.delivered.some((m) => m.text === 'gone soon'))),
    'the expired text never reached the page',
  );
  await screenshot(b, 'expired.png');
});

/** Waits for a system line of the open chat with exactly `text`. */
async function waitSystemLine(page, text, label) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#messages li.msg.system')].some((e) => e.textContent === t),
      text,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    const got = await page.$$eval('#messages li.msg.system', (els) => els.map((x) => x.textContent)).catch(() => 'unavailable');
    throw new Error(`${label}: no system line ${JSON.stringify(text)}; it shows ${JSON.stringify(got)}`, { cause: e });
  }
}

e2e('group management: roles, a topic and mute-all, a muted member, rename, hand-over and dissolve between three browser users', async (_t, logs) => {
  const server = await startServer(logs);
  const [a, b, c] = await Promise.all(
    ['alice', 'bob', 'carol'].map(async (u) => openPage(await newContext(), server.base, logs, u)),
  );
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  await signIn(c, 'carol', { register: true });

  // Alice creates "crew" with bob and carol; all three are plain members but her.
  await a.click('#new-group-toggle');
  await a.fill('#group-name', 'crew');
  await a.fill('#group-members', 'bob, carol');
  await a.click('#create-group');
  await a.waitForSelector('#conv-list li[data-conv^="g:"].active', { timeout: WAIT_MS });
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  const row = `#conv-list li[data-conv="${g}"]`;
  await a.waitForSelector('#members-panel:not([hidden]) #member-list li[data-user="bob"]', { timeout: WAIT_MS });
  assert.ok(await a.isVisible('#group-settings'), 'the owner edits the group');
  assert.ok(await a.isVisible('#dissolve-group'), 'the owner may dissolve it');
  for (const p of [b, c]) {
    await p.waitForSelector(row, { timeout: WAIT_MS });
    await p.click(row);
    await p.click('#members-toggle');
    await p.waitForSelector('#member-list li[data-user="alice"]', { timeout: WAIT_MS });
  }
  assert.equal(await c.isVisible('#group-settings'), false, 'a plain member does not edit the group');
  assert.equal(await c.$('#member-list [data-testid="make-admin"]'), null, 'only the owner changes roles');

  // The owner makes bob an admin: everyone sees it, bob gets the settings form.
  await a.click('#member-list li[data-user="bob"] [data-testid="make-admin"]');
  for (const [p, who] of [[a, 'alice'], [b, 'bob'], [c, 'carol']]) await waitSystemLine(p, 'alice made bob an admin', who);
  await a.waitForSelector('#member-list li[data-user="bob"] [data-testid="make-member"]', { timeout: WAIT_MS });
  await b.waitForSelector('#group-settings:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await b.isVisible('#dissolve-group'), false, 'an admin does not dissolve');
  assert.equal(await b.$('#member-list [data-testid="transfer-owner"]'), null, 'an admin hands nothing over');

  // Bob (admin) sets a topic and mute-all in one save.
  await b.fill('#group-edit-topic', 'release on friday');
  await b.check('#group-edit-mute-all');
  await b.click('#group-save');
  const muteLine = 'bob set the topic to "release on friday", muted the group: only the owner and admins may send';
  for (const [p, who] of [[a, 'alice'], [b, 'bob'], [c, 'carol']]) {
    await waitSystemLine(p, muteLine, who);
    await p.waitForFunction(() => document.querySelector('#chat-topic:not([hidden])')?.textContent === 'release on friday', null, {
      timeout: WAIT_MS,
    });
  }
  // Carol (a plain member) cannot write: the composer is disabled, with a note.
  await c.waitForSelector('#compose:disabled', { timeout: WAIT_MS });
  assert.ok(await c.isDisabled('#send'));
  assert.match(await c.textContent('#compose-note'), /muted: only the owner and admins can send/);
  assert.ok(await c.isVisible('#compose-note'));
  assert.ok(!(await b.isDisabled('#compose')), 'an admin still writes');
  await screenshot(c, 'group-muted-member.png');
  // A send that slips through anyway (a page that has not seen the mute yet) is refused by
  // the server, and the page says so.
  await c.evaluate(() => {
    const input = /** @type {HTMLInputElement} */ (document.getElementById('compose'));
    input.disabled = false;
    input.value = 'can I still talk?';
    /** @type {HTMLFormElement} */ (document.getElementById('compose-form')).requestSubmit();
  });
  await c.waitForSelector('#messages li.msg.own.failed', { timeout: WAIT_MS });
  await c.waitForFunction(() => /Not sent: .*muted/.test(document.getElementById('chat-error')?.textContent ?? ''), null, { timeout: WAIT_MS });
  await screenshot(c, 'group-muted-refused.png');
  await sendAndWaitAcked(b, 'admins only for now');
  await c.waitForFunction(
    () => [...document.querySelectorAll('#messages .msg:not(.system) .text')].some((e) => e.textContent === 'admins only for now'),
    null,
    { timeout: WAIT_MS },
  );

  // Alice renames the group and lifts the mute: the titles follow, carol writes again.
  await a.fill('#group-edit-name', 'release crew');
  await a.uncheck('#group-edit-mute-all');
  await a.click('#group-save');
  const renameLine = 'alice renamed the group to "release crew", unmuted the group';
  for (const [p, who] of [[a, 'alice'], [b, 'bob'], [c, 'carol']]) {
    await waitSystemLine(p, renameLine, who);
    await p.waitForFunction(() => document.getElementById('chat-title')?.textContent === '# release crew', null, { timeout: WAIT_MS });
  }
  await c.waitForSelector('#compose:enabled', { timeout: WAIT_MS });
  assert.equal(await c.isVisible('#compose-note'), false);
  await sendAndWaitAcked(c, 'thanks');

  // Alice hands the group over to bob (confirmed): bob is the owner, she an admin.
  a.once('dialog', (d) => d.accept());
  await a.click('#member-list li[data-user="bob"] [data-testid="transfer-owner"]');
  for (const [p, who] of [[a, 'alice'], [b, 'bob'], [c, 'carol']]) await waitSystemLine(p, 'alice handed the group to bob', who);
  await b.waitForSelector('#dissolve-group:not([hidden])', { timeout: WAIT_MS });
  await b.waitForSelector('#member-list li[data-user="carol"] [data-testid="make-admin"]', { timeout: WAIT_MS });
  await a.waitForSelector('#dissolve-group', { state: 'hidden', timeout: WAIT_MS });
  await a.waitForFunction(
    () => document.querySelector('#member-list li[data-user="bob"] .role')?.textContent === 'owner' &&
      document.querySelector('#member-list li[data-user="alice"] .role')?.textContent === 'admin',
    null,
    { timeout: WAIT_MS },
  );
  await screenshot(b, 'group-new-owner.png');

  // Bob dissolves it (confirmed): the group leaves all three lists, the others are told.
  b.once('dialog', (d) => d.accept());
  await b.click('#dissolve-group');
  for (const p of [a, b, c]) await p.waitForSelector(row, { state: 'detached', timeout: WAIT_MS });
  await a.waitForFunction(() => /bob dissolved the group "release crew"/.test(document.getElementById('chat-error')?.textContent ?? ''), null, {
    timeout: WAIT_MS,
  });
  assert.equal(await c.textContent('#chat-title'), 'No conversation open');
  await screenshot(a, 'group-dissolved.png');
  // The server's list agrees after a reload.
  await c.reload();
  await c.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await c.waitForFunction(() => window.__tern.caughtUp > 0, null, { timeout: WAIT_MS });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await c.$(row), null, 'no dissolved group after a reload');
});

e2e('history visibility: a member added later does not see earlier messages (JOINED) until the group shares its history', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  // A new group reads JOINED by default: alice writes before bob is added.
  await a.click('#new-group-toggle');
  await a.fill('#group-name', 'vis');
  await a.click('#create-group');
  await a.waitForSelector('#conv-list li[data-conv^="g:"].active', { timeout: WAIT_MS });
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  await a.waitForSelector('#members-panel:not([hidden]) #group-settings:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await a.inputValue('#group-edit-visibility'), 'JOINED', 'new groups hide earlier history from new members');
  await sendAndWaitAcked(a, 'before bob');
  await a.fill('#add-member', 'bob');
  await a.click('#add-member-go');
  await waitSystemLine(a, 'alice added bob', 'alice');
  await sendAndWaitAcked(a, 'after bob');

  // Bob sees what came from his joining on, and a note that earlier messages are hidden.
  const row = `#conv-list li[data-conv="${g}"]`;
  await b.waitForSelector(row, { timeout: WAIT_MS });
  await b.click(row);
  await waitSystemLine(b, 'alice added bob', 'bob');
  await waitForChat(b, ['after bob']);
  await b.waitForSelector('#messages [data-testid="hidden-history"]', { timeout: WAIT_MS });
  assert.ok(!(await b.evaluate(() => window.__tern.delivered.some((m) => m.text === 'before bob'))), 'never delivered to bob');
  await screenshot(b, 'history-joined.png');

  // Alice shares the history: bob's chat fills in without a reload.
  await a.selectOption('#group-edit-visibility', 'SHARED');
  await a.click('#group-save');
  const line = 'alice made the whole history visible to new members';
  await waitSystemLine(a, line, 'alice');
  await waitSystemLine(b, line, 'bob');
  await waitForChat(b, ['before bob', 'after bob']);
  assert.equal(await b.$('#messages [data-testid="hidden-history"]'), null);
  await a.waitForFunction(() => document.getElementById('group-edit-visibility')?.value === 'SHARED', null, { timeout: WAIT_MS });
  await screenshot(b, 'history-shared.png');
});

e2e('public channels: a broadcast-only channel found by prefix, read before joining, joined, read live, left', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  // Alice creates a broadcast-only channel (and an open one the prefix leaves out), and posts.
  await a.click('#channels-toggle');
  for (const [name, broadcast] of [['random', false], ['Announcements', true]]) {
    await a.click('#new-channel-toggle');
    await a.fill('#channel-name', name);
    if (broadcast) await a.check('#channel-broadcast');
    await a.click('#create-channel');
    await a.waitForFunction((n) => document.getElementById('chat-title')?.textContent === `# ${n}`, name, { timeout: WAIT_MS });
  }
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  const row = `#conv-list li[data-conv="${g}"]`;
  await a.waitForSelector(`${row} [data-testid="channel-mark"]`, { timeout: WAIT_MS });
  assert.ok(!(await a.isDisabled('#compose')), 'the owner posts in a broadcast-only channel');
  await sendAndWaitAcked(a, 'welcome aboard');

  // Bob finds it by a prefix (any case): the directory shows it with its member count and
  // broadcast-only, and a Join button; the other channel does not match.
  await b.click('#channels-toggle');
  await b.fill('#channel-search', 'ANN');
  const entry = `#channel-list li[data-conv="${g}"]`;
  await b.waitForSelector(`${entry} [data-testid="channel-join"]`, { timeout: WAIT_MS });
  await b.waitForFunction(() => document.querySelectorAll('#channel-list li').length === 1, null, { timeout: WAIT_MS });
  assert.equal(await b.textContent(`${entry} [data-testid="channel-title"]`), '# Announcements');
  assert.equal(await b.textContent(`${entry} [data-testid="channel-meta"]`), '1 member · broadcast only');

  // He reads its history before joining: read only, not in his list, with a Join button.
  await b.click(`${entry} [data-testid="channel-title"]`);
  await b.waitForFunction(() => document.getElementById('chat-title')?.textContent === '# Announcements', null, { timeout: WAIT_MS });
  await waitForChat(b, ['welcome aboard']);
  assert.ok(await b.isVisible('#join-channel'));
  assert.ok(await b.isDisabled('#compose'));
  assert.match(await b.textContent('#compose-note'), /without joining/);
  assert.equal(await b.$(row), null, 'not in his list before joining');
  await screenshot(b, 'channel-preview.png');

  // He joins: the channel is in his list, marked; the directory says joined; alice sees it.
  await b.click('#join-channel');
  await b.waitForSelector(`${row} [data-testid="channel-mark"]`, { timeout: WAIT_MS });
  await b.waitForSelector(`${entry} [data-testid="channel-joined"]`, { timeout: WAIT_MS });
  await b.waitForSelector('#join-channel', { state: 'hidden', timeout: WAIT_MS });
  await waitSystemLine(a, 'bob joined', 'alice');
  // Broadcast only: his composer is disabled with the muted-group note.
  await b.waitForSelector('#compose:disabled', { timeout: WAIT_MS });
  assert.ok(await b.isDisabled('#send'));
  await b.waitForFunction(() => /muted: only the owner and admins can send/.test(document.getElementById('compose-note')?.textContent ?? ''), null, {
    timeout: WAIT_MS,
  });

  // Alice's next post reaches him live.
  await sendAndWaitAcked(a, 'second post');
  await waitForChat(b, ['welcome aboard', 'second post']);
  assert.ok(await b.evaluate(() => window.__tern.delivered.some((m) => m.text === 'second post')), 'delivered by the SDK, not only pulled');
  await screenshot(b, 'channel-joined.png');

  // He leaves from the members panel: out of his list, the directory offers Join again.
  await b.click('#members-toggle');
  await b.waitForSelector('#member-list li[data-user="alice"]', { timeout: WAIT_MS });
  assert.equal(await b.textContent('#leave-group'), 'Leave channel');
  b.once('dialog', (d) => d.accept());
  await b.click('#leave-group');
  await b.waitForSelector(row, { state: 'detached', timeout: WAIT_MS });
  await b.waitForSelector(`${entry} [data-testid="channel-join"]`, { timeout: WAIT_MS });
  await waitSystemLine(a, 'bob left', 'alice');
});

/** Waits until the chat error line matches `re`. */
async function waitChatError(page, re, label) {
  try {
    await page.waitForFunction((src) => new RegExp(src).test(document.getElementById('chat-error')?.textContent ?? ''), re.source, {
      timeout: WAIT_MS,
    });
  } catch (e) {
    const got = await page.textContent('#chat-error').catch(() => 'unavailable');
    throw new Error(`${label}: the chat error ${JSON.stringify(got)} does not match ${re}`, { cause: e });
  }
}

e2e('group settings: the owner sets a member limit, the server holds the group to it, a reload shows it, clearing it lifts it', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  await cli(server, join(tempDir('tern-web-carol-'), 'carol.json'), ['register', 'carol', '--password', PASSWORD], {}, logs);

  await a.click('#new-group-toggle');
  await a.fill('#group-name', 'capped');
  await a.fill('#group-members', 'bob');
  await a.click('#create-group');
  await a.waitForSelector('#conv-list li[data-conv^="g:"].active', { timeout: WAIT_MS });
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  await a.waitForSelector('#members-panel:not([hidden]) #group-settings:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await a.inputValue('#group-edit-max-members'), '', "no limit of its own: the server's");
  assert.deepEqual(
    await a.$eval('#group-edit-visibility-public', (o) => [o.hidden, o.disabled]),
    [true, true],
    'PUBLIC history is for channels only',
  );

  // Alice limits the group to its two members: everyone reads the line.
  await a.fill('#group-edit-max-members', '2');
  await a.click('#group-save');
  const row = `#conv-list li[data-conv="${g}"]`;
  await b.waitForSelector(row, { timeout: WAIT_MS });
  await b.click(row);
  for (const [p, who] of [[a, 'alice'], [b, 'bob']]) await waitSystemLine(p, 'alice set the member limit to 2', who);
  await a.waitForFunction(() => document.getElementById('group-edit-max-members')?.value === '2', null, { timeout: WAIT_MS });

  // A third member is refused by the server, and the page says why; so is a limit below
  // the member count.
  await a.fill('#add-member', 'carol');
  await a.click('#add-member-go');
  await waitChatError(a, /^add carol: .*\(RESOURCE_EXHAUSTED\)$/, 'adding past the limit');
  assert.equal(await a.$('#member-list li[data-user="carol"]'), null);
  await a.fill('#group-edit-max-members', '1');
  await a.click('#group-save');
  await waitChatError(a, /^group settings: .*below the 2 members.*\(INVALID_ARGUMENT\)$/, 'a limit below the member count');
  await screenshot(a, 'group-member-limit.png');

  // The server's list carries the limit: a reload shows it in the form.
  await a.reload();
  await a.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await a.click(row);
  await a.waitForSelector(`${row}.active`, { timeout: WAIT_MS });
  await a.click('#members-toggle');
  await a.waitForSelector('#members-panel:not([hidden]) #group-settings:not([hidden])', { timeout: WAIT_MS });
  await a.waitForFunction(() => document.getElementById('group-edit-max-members')?.value === '2', null, { timeout: WAIT_MS });

  // Emptied: back to the server's limit, and carol can be added.
  await a.fill('#group-edit-max-members', '');
  await a.click('#group-save');
  for (const [p, who] of [[a, 'alice'], [b, 'bob']]) await waitSystemLine(p, "alice set the member limit to the server's", who);
  await a.fill('#add-member', 'carol');
  await a.click('#add-member-go');
  await waitSystemLine(b, 'alice added carol', 'bob');
  await a.waitForSelector('#member-list li[data-user="carol"]', { timeout: WAIT_MS });
});

e2e('new channel history: a JOINED channel is read by members only and from their joining, until it is made public', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  // Alice creates a channel whose history new members read from their joining on.
  await a.click('#channels-toggle');
  await a.click('#new-channel-toggle');
  assert.equal(await a.inputValue('#channel-visibility'), 'PUBLIC', 'a new channel is public by default');
  await a.fill('#channel-name', 'insiders');
  await a.selectOption('#channel-visibility', 'JOINED');
  await a.click('#create-channel');
  await a.waitForFunction(() => document.getElementById('chat-title')?.textContent === '# insiders', null, { timeout: WAIT_MS });
  const g = await a.getAttribute('#conv-list li[data-conv^="g:"].active', 'data-conv');
  assert.equal(await a.inputValue('#channel-visibility'), 'PUBLIC', 'the form is reset for the next channel');
  await sendAndWaitAcked(a, 'before bob');
  await a.click('#members-toggle');
  await a.waitForSelector('#group-settings:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await a.inputValue('#group-edit-visibility'), 'JOINED', 'created with the history chosen');
  assert.deepEqual(await a.$eval('#group-edit-visibility-public', (o) => [o.hidden, o.disabled]), [false, false], 'a channel may be made public');

  // Bob finds it: members only, so no preview of its history.
  await b.click('#channels-toggle');
  await b.fill('#channel-search', 'ins');
  const entry = `#channel-list li[data-conv="${g}"]`;
  await b.waitForSelector(`${entry} [data-testid="channel-join"]`, { timeout: WAIT_MS });
  assert.equal(await b.textContent(`${entry} [data-testid="channel-meta"]`), '1 member · members read it');
  await b.click(`${entry} [data-testid="channel-title"]`);
  await waitChatError(b, /Only members read this channel/, 'preview of a members-only channel');
  assert.ok(!(await b.evaluate(() => window.__tern.delivered.some((m) => m.text === 'before bob'))));

  // He joins: he reads from his joining on, with the note that earlier history is hidden.
  await b.click('#join-channel');
  await waitSystemLine(a, 'bob joined', 'alice');
  await sendAndWaitAcked(a, 'after bob');
  await waitForChat(b, ['after bob']);
  await b.waitForSelector('#messages [data-testid="hidden-history"]', { timeout: WAIT_MS });
  assert.ok(!(await b.evaluate(() => window.__tern.delivered.some((m) => m.text === 'before bob'))), 'never delivered to bob');
  await screenshot(b, 'channel-joined-history.png');

  // Alice makes the history public: bob's chat fills in.
  await a.selectOption('#group-edit-visibility', 'PUBLIC');
  await a.click('#group-save');
  await waitSystemLine(a, 'alice made the history public', 'alice');
  await waitSystemLine(b, 'alice made the history public', 'bob');
  await waitForChat(b, ['before bob', 'after bob']);
  assert.equal(await b.$('#messages [data-testid="hidden-history"]'), null);
  await a.waitForFunction(() => document.getElementById('group-edit-visibility')?.value === 'PUBLIC', null, { timeout: WAIT_MS });
});

e2e('profiles: a display name set in the form is found by the people search, shown in the list and on messages, and reaches the peer live', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  // Alice sets her display name and status.
  await a.click('#profile-toggle');
  await a.fill('#profile-name', 'Alice Liddell');
  await a.fill('#profile-status', 'down the rabbit hole');
  await a.click('#profile-save');
  await a.waitForSelector('#profile-form[hidden]', { state: 'attached', timeout: WAIT_MS });

  // Bob finds her by her display name (case-insensitive) and opens the chat from the result.
  await b.fill('#people-search', 'alice l');
  const person = '#people-list li[data-user="alice"]';
  await b.waitForSelector(person, { timeout: WAIT_MS });
  assert.equal(await b.textContent(person), 'Alice Liddell (alice)');
  await b.click(person);
  const conv = 'd:alice:bob';
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"].active`, { timeout: WAIT_MS });
  await b.waitForFunction(
    (c) => document.querySelector(`#conv-list li[data-conv="${c}"] .name`)?.textContent?.startsWith('Alice Liddell'),
    conv,
    { timeout: WAIT_MS },
  );
  await sendAndWaitAcked(b, 'hello alice');

  // Alice answers; bob sees her display name on her message. Then she renames herself and
  // bob's page follows live (a ProfileChanged push to a direct peer).
  await startChat(a, 'alice', 'bob');
  await waitForChat(a, ['hello alice']);
  await sendAndWaitAcked(a, 'hi bob');
  const fromAlice = (name) =>
    b.waitForFunction(
      (n) => [...document.querySelectorAll('#messages .msg:not(.own) .from')].some((e) => e.textContent === n),
      name,
      { timeout: WAIT_MS },
    );
  await fromAlice('Alice Liddell');
  await a.click('#profile-toggle');
  await a.waitForFunction(() => /** @type {HTMLInputElement} */ (document.querySelector('#profile-name')).value === 'Alice Liddell', null, { timeout: WAIT_MS });
  await a.fill('#profile-name', 'Alice L.');
  await a.click('#profile-save');
  await fromAlice('Alice L.');
});

e2e('friends: a request sent from the form reaches the other page live, is accepted there, and block/unblock update both lists', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });

  await a.click('#friends-toggle');
  await a.fill('#friend-user', 'bob');
  await a.fill('#friend-message', 'hi bob');
  await a.click('#friend-request');
  await a.waitForSelector('#friend-list li[data-user="bob"][data-state="outgoing"]', { timeout: WAIT_MS });

  // Bob's page counts the incoming request before he opens the list.
  await b.waitForSelector('#friends-incoming:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await b.textContent('#friends-incoming'), '1');
  await b.click('#friends-toggle');
  const row = '#friend-list li[data-user="alice"][data-state="incoming"]';
  await b.waitForSelector(row, { timeout: WAIT_MS });
  assert.equal(await b.textContent(`${row} [data-testid="friend-message-text"]`), 'hi bob');
  await b.click(`${row} [data-testid="friend-accept"]`);
  await b.waitForSelector('#friend-list li[data-user="alice"][data-state="friend"]', { timeout: WAIT_MS });
  await b.waitForSelector('#friends-incoming[hidden]', { state: 'attached', timeout: WAIT_MS });
  // Alice's open list follows live (the ACCEPTED event).
  await a.waitForSelector('#friend-list li[data-user="bob"][data-state="friend"]', { timeout: WAIT_MS });

  // Alice blocks bob: her list says so, bob's list just loses her.
  await a.click('#friend-list li[data-user="bob"] [data-testid="friend-block"]');
  await a.waitForSelector('#friend-list li[data-user="bob"][data-state="blocked"]', { timeout: WAIT_MS });
  await b.waitForSelector('#friends-empty:not([hidden])', { timeout: WAIT_MS });
  await a.click('#friend-list li[data-user="bob"] [data-testid="friend-unblock"]');
  await a.waitForSelector('#friends-empty:not([hidden])', { timeout: WAIT_MS });
});
