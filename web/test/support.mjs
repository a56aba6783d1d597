// The harness of the end-to-end test files (*.test.mjs beside it): a real tern-server on
// free ports with a temporary data directory, serving the page built into its binary
// (no --web-root; started in an empty working directory, so nothing of web/ on disk is
// served: what is tested is what ships); headless Chromium
// (playwright-core driving the system's Chromium); per-test cleanups. Not a test file
// itself (`npm test` runs test/*.test.mjs).
//
// Needs: `cargo build -p tern-server -p tern-cli` (or TERN_SERVER_BIN; rebuild it after
// editing web/src, which it embeds) and Chromium (`apt-get install chromium`, or
// CHROMIUM_BIN).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(WEB, '..');
export const RESULTS = join(WEB, 'test-results');
export const SERVER_BIN = process.env.TERN_SERVER_BIN || join(REPO, 'target', 'debug', 'tern-server');
export const CLI_BIN = process.env.TERN_CLI_BIN || join(REPO, 'target', 'debug', 'tern');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const PASSWORD = 'correct horse battery';
/** Bound on every single wait in these tests. */
export const WAIT_MS = 15_000;
const TEST_TIMEOUT_MS = 120_000;

/** @type {import('playwright-core').Browser} */
let browser;

/** Fails with a message naming `what` when `path` is absent. @param {string} path @param {string} what */
export function requireFile(path, what) {
  if (!existsSync(path)) throw new Error(`${what} not found at ${path}`);
}
/** Cleanups of the running test, run last-in first-out. @type {(() => Promise<void>|void)[]} */
let cleanups = [];

before(async () => {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(
      `tern-server binary not found at ${SERVER_BIN}. Build it first: ` +
        `(cd ${REPO} && cargo build -p tern-server -p tern-cli), or set TERN_SERVER_BIN.`,
    );
  }
  requireFile(CHROMIUM, 'Chromium (install it with `apt-get install -y chromium`, or set CHROMIUM_BIN)');
  mkdirSync(RESULTS, { recursive: true });
  // launch() gives the browser a fresh temporary profile (--user-data-dir) and removes it
  // on close; each test uses its own isolated browser contexts.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

/** Runs a test body with its cleanups, printing server and page logs when it fails. */
export function e2e(name, body) {
  test(name, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    cleanups = [];
    /** @type {string[]} */
    const logs = [];
    try {
      await body(t, logs);
    } catch (e) {
      console.error(`--- logs of "${name}" ---\n${logs.slice(-200).join('\n')}\n--- end of logs ---`);
      throw e;
    } finally {
      for (const c of cleanups.reverse()) {
        try {
          await c();
        } catch (e) {
          console.error('cleanup failed:', e);
        }
      }
      cleanups = [];
    }
  });
}

/** A temp dir removed when the test ends. @param {string} prefix */
export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * Starts tern-server on free ports (or on `ports` from an earlier run), serving its
 * built-in page, in an empty temporary working directory; stopped when the test ends.
 * @param {string[]} logs
 * @param {{dataDir?: string, ports?: {quic: string, tcp: string, ws: string}}} [opts]
 */
export async function startServer(logs, opts = {}) {
  const dataDir = opts.dataDir ?? tempDir('tern-web-e2e-');
  const addrs = opts.ports
    ? ['--listen', opts.ports.tcp, '--quic-listen', opts.ports.quic, '--tcp-listen', opts.ports.tcp, '--ws-listen', opts.ports.ws]
    : ['--listen', '127.0.0.1:0', '--ws-listen', '127.0.0.1:0'];
  const child = spawn(SERVER_BIN, [...addrs, '--data-dir', dataDir], {
    cwd: tempDir('tern-web-cwd-'),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  const server = {
    child,
    dataDir,
    exited: false,
    /** @type {string} */ ca: '',
    /** @type {string} */ tcp: '',
    /** @type {string} */ quic: '',
    /** @type {string} */ ws: '',
    /** @type {string} http://HOST:PORT of the web listener */ base: '',
    async stop() {
      if (server.exited) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 8000);
      await done;
      clearTimeout(t);
    },
  };
  child.on('exit', () => (server.exited = true));
  cleanups.push(() => server.stop());
  createInterface({ input: child.stderr }).on('line', (l) => logs.push(`[server] ${l}`));
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`tern-server did not report its addresses within ${WAIT_MS} ms`)), WAIT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tern-server exited early (code ${code}); see the logs`));
    });
    lines.on('line', (l) => {
      logs.push(`[server] ${l}`);
      const ca = /^tern-server: dev CA (\S+)/.exec(l);
      if (ca) server.ca = ca[1];
      const m = /^tern-server: listening quic=(\S+) tcp=(\S+) alpn=tern\/1 ws=ws:\/\/(\S+)\/ws/.exec(l);
      if (m) {
        clearTimeout(timer);
        [, server.quic, server.tcp, server.ws] = m;
        server.base = `http://${server.ws}`;
        resolvePromise(undefined);
      }
    });
  });
  assert.ok(server.ca && existsSync(server.ca), `dev CA line missing or file absent (${server.ca})`);
  return server;
}

/** A new isolated browser context (own localStorage), closed when the test ends. */
export async function newContext() {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  ctx.setDefaultTimeout(WAIT_MS);
  cleanups.push(() => ctx.close());
  return ctx;
}

/** Opens the page in `ctx`, forwarding console errors to the logs. */
export async function openPage(ctx, base, logs, label) {
  const page = await ctx.newPage();
  page.on('console', (m) => logs.push(`[${label} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[${label} pageerror] ${e.stack || e}`));
  await page.goto(`${base}/`, { timeout: WAIT_MS });
  return page;
}

/** Registers (or logs in) through the form and waits for the connected state. */
export async function signIn(page, user, { register }) {
  await page.fill('#username', user);
  await page.fill('#password', PASSWORD);
  await page.click(register ? '#register' : '#login');
  await page.waitForSelector('#state[data-state="connected"]', { timeout: WAIT_MS });
  await page.waitForSelector('#chat-view:not([hidden])', { timeout: WAIT_MS });
}

/** Opens (or starts) the 1:1 chat with `peer` through the new-chat input. */
export async function startChat(page, me, peer) {
  await page.fill('#new-chat', peer);
  await page.press('#new-chat', 'Enter');
  const conv = me < peer ? `d:${me}:${peer}` : `d:${peer}:${me}`;
  await page.waitForSelector(`#conv-list li[data-conv="${conv}"].active`, { timeout: WAIT_MS });
  return conv;
}

/** Types and sends a message, then waits until it is acked (no longer pending). */
export async function sendAndWaitAcked(page, text) {
  await page.fill('#compose', text);
  await page.click('#send');
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages .msg.own')].some((m) => !m.classList.contains('pending') && m.querySelector('.text')?.textContent === t),
    text,
    { timeout: WAIT_MS },
  );
}

/** Saves a full-page screenshot under web/test-results/ and prints its path. */
export async function screenshot(page, file) {
  const path = join(RESULTS, file);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}
