// End-to-end test of history search on the web page (docs/PROTOCOL.md 9.15): a real
// tern-server, two users in headless Chromium. Alice sends English and Chinese messages;
// Bob's search box finds them by a word and by "世界" (inside "你好世界"), newest first,
// says so when nothing matches, and a click on a hit opens its chat. The index commits in
// batches, so the box is typed into again until the hits settle (bounded). Harness:
// ./support.mjs.

import assert from 'node:assert/strict';
import { WAIT_MS, e2e, newContext, openPage, screenshot, signIn, startChat, startServer } from './support.mjs';

/** Types and sends a message, then waits until it is acked (no longer pending). */
async function sendAndWaitAcked(page, text) {
  await page.fill('#compose', text);
  await page.click('#send');
  await page.waitForFunction(
    (t) =>
      [...document.querySelectorAll('#messages .msg.own')].some(
        (m) => !m.classList.contains('pending') && m.querySelector('.text')?.textContent === t,
      ),
    text,
    { timeout: WAIT_MS },
  );
}

/** Searches `query` in the box until `n` hits show (or "none" when n is 0); their texts. */
async function searchUntil(page, query, n) {
  const until = Date.now() + WAIT_MS;
  for (;;) {
    // Clear first and wait until the old hits are gone: the box searches 300 ms after the
    // last keystroke, so checking at once would read the previous query's hits (and typing
    // again at once would keep postponing the search).
    await page.fill('#message-search', '');
    await page.waitForFunction(() => document.querySelectorAll('#message-hits li').length === 0, null, {
      timeout: WAIT_MS,
    });
    await page.fill('#message-search', query);
    const want = n === 0 ? '[data-testid="message-hits-none"]' : `[data-testid="message-hit"]:nth-child(${n})`;
    try {
      await page.waitForSelector(`#message-hits ${want}`, { timeout: 1500 });
      const hits = await page.$$eval('#message-hits [data-testid="message-hit"]', (els) => els.map((e) => e.textContent));
      const lag = await page.$$('#message-hits [data-testid="message-hits-lag"]');
      if (hits.length === n && lag.length === 0) return hits;
    } catch {
      // not yet indexed: ask again
    }
    assert.ok(Date.now() < until, `search "${query}" never showed ${n} hits`);
  }
}

e2e('history search: English and Chinese hits newest first, none, and a hit opens its chat', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');
  await sendAndWaitAcked(a, 'the quarterly report is ready');
  await sendAndWaitAcked(a, '你好世界, report attached');
  await sendAndWaitAcked(a, 'lunch?');

  const hits = await searchUntil(b, 'REPORT', 2);
  assert.match(hits[0], /alice in alice: 你好世界, report attached/);
  assert.match(hits[1], /alice in alice: the quarterly report is ready/);
  const zh = await searchUntil(b, '世界', 1);
  assert.match(zh[0], /你好世界/);
  await searchUntil(b, 'dinner', 0);
  await searchUntil(b, '你好世界', 1);
  await screenshot(b, 'search-hits.png');

  // A click on a hit opens the chat it is in.
  await b.click('#message-hits [data-testid="message-hit"]');
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"].active`);
  assert.equal(await b.$$eval('#message-hits li', (els) => els.length), 0, 'the hits are cleared');
  // Only punctuation: the server's INVALID_ARGUMENT is shown, not a crash.
  await b.fill('#message-search', '*&&');
  await b.waitForSelector('#message-hits [data-testid="message-hits-error"]');
});
