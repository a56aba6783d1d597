// End-to-end tests of image and file messages on the web page (docs/PROTOCOL.md 9.14): a
// real tern-server, two users in headless Chromium. Alice attaches a PNG (made here) and a
// PDF-like file; Bob's page shows the server-made thumbnail inline at once, opens the full
// image by its signed URL, and downloads the file by its link, both compared byte for byte
// with what Alice sent; Alice's upload progress reaches 100%; an avatar set from an image
// shows next to Alice's messages on Bob's page. An upload cut by a kill -9 of the server
// goes on after the restart from the offset the server had stored. Harness: ./support.mjs.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import { WAIT_MS, e2e, newContext, openPage, screenshot, signIn, startChat, startServer, tempDir } from './support.mjs';

/** @param {Buffer} b */
function crc32(b) {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A w x h RGB PNG with a gradient and a diagonal (so its thumbnail is not blank). */
function png(w, h) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    const row = y * (w * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < w; x++) {
      const p = row + 1 + x * 3;
      const diag = Math.abs(x - y) < 3;
      raw[p] = diag ? 255 : Math.floor((x * 255) / w);
      raw[p + 1] = diag ? 255 : Math.floor((y * 255) / h);
      raw[p + 2] = diag ? 0 : 160;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A PDF-like file of `n` bytes (a PDF header, then seeded noise): three upload chunks for 1.3 MB. */
function pdfLike(n) {
  const b = Buffer.alloc(n);
  let s = 0x2545;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1').copy(b);
  return b;
}

const sha = (b) => createHash('sha256').update(b).digest('hex');

/** GETs `url` from inside the page: status, content type, size and sha256 of the body. */
function fetchInPage(page, url) {
  return page.evaluate(async (u) => {
    const r = await fetch(u);
    const body = new Uint8Array(await r.arrayBuffer());
    const d = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
    return {
      status: r.status,
      type: r.headers.get('content-type'),
      size: body.length,
      sha: [...d].map((x) => x.toString(16).padStart(2, '0')).join(''),
    };
  }, url);
}

/** Waits until an <img> matching `sel` has loaded; returns its natural size and src. */
async function loadedImage(page, sel, label) {
  try {
    await page.waitForFunction(
      (s) => {
        const i = /** @type {HTMLImageElement|null} */ (document.querySelector(s));
        return !!i && i.complete && i.naturalWidth > 0;
      },
      sel,
      { timeout: WAIT_MS },
    );
  } catch (e) {
    throw new Error(`${label}: ${sel} never loaded`, { cause: e });
  }
  return page.$eval(sel, (i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.getAttribute('src') ?? '' }));
}

e2e('images and files: thumbnail inline at once, full image and download by signed URL, progress, avatar', async (_t, logs) => {
  const server = await startServer(logs);
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');

  // Alice attaches a PNG named like a document: the content makes it an image message.
  const image = png(64, 48);
  await a.setInputFiles('#attach-input', { name: 'holiday.dat', mimeType: 'application/octet-stream', buffer: image });
  await a.waitForSelector('#messages .msg.own.has-image[data-seq] [data-testid="thumb"] img');
  await loadedImage(a, '#messages .msg.own[data-seq] [data-testid="thumb"] img', "alice's own image message");

  // Bob: the thumbnail is in the message itself (a blob: URL of its bytes), no extra request.
  await b.waitForSelector(`#conv-list li[data-conv="${conv}"]`);
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  const thumb = await loadedImage(b, '#messages .msg:not(.own) [data-testid="thumb"] img', "bob's thumbnail");
  assert.ok(thumb.src.startsWith('blob:'), `the thumbnail comes from the message: ${thumb.src}`);
  assert.deepEqual([thumb.w, thumb.h], [64, 48], 'the server keeps a small image its size in the thumbnail');

  // A click opens the full image by a signed URL of the web listener; it serves image/png,
  // the very bytes Alice sent.
  await b.click('#messages .msg:not(.own) [data-testid="thumb"]');
  const full = await loadedImage(b, '#lightbox:not([hidden]) #lightbox-img', 'the full image');
  assert.deepEqual([full.w, full.h], [64, 48]);
  assert.match(full.src, new RegExp(`^${server.base}/blob/${sha(image)}\\?`), 'a signed /blob/<id>?... URL');
  const got = await fetchInPage(b, full.src);
  assert.deepEqual(got, { status: 200, type: 'image/png', size: image.length, sha: sha(image) });
  await screenshot(b, 'blob-lightbox.png');
  await b.click('#lightbox-close');
  await b.waitForSelector('#lightbox', { state: 'hidden' });

  // Alice sends a 1.3 MB PDF-like file: three 512 KiB chunks, progress up to 100%.
  const doc = pdfLike(1_300_000);
  await a.setInputFiles('#attach-input', { name: 'report.pdf', mimeType: 'application/pdf', buffer: doc });
  await a.waitForSelector('#messages .msg.own.has-file[data-seq] [data-testid="file"]');
  const progress = await a.evaluate(() => window.__tern.uploads.filter((u) => u.name === 'report.pdf'));
  const sent = progress.map((p) => p.sent);
  assert.ok(progress.every((p) => p.total === doc.length), `progress totals: ${JSON.stringify(progress)}`);
  assert.deepEqual(sent, [...sent].sort((x, y) => x - y), 'progress only goes up');
  assert.equal(sent[sent.length - 1], doc.length, 'the upload progress reaches 100%');
  assert.ok(sent.length >= 4 && sent.includes(512 * 1024), `a report per chunk: ${sent}`);

  // Bob sees name, size and a working download link.
  const file = '#messages .msg:not(.own) [data-testid="file"]';
  await b.waitForSelector(`${file} [data-testid="file-link"][href]`);
  assert.equal(await b.textContent(`${file} [data-testid="file-name"]`), 'report.pdf');
  assert.equal(await b.textContent(`${file} [data-testid="file-size"]`), '1.2 MB');
  const link = await b.$eval(`${file} [data-testid="file-link"]`, (l) => ({ href: l.href, download: l.download }));
  assert.equal(link.download, 'report.pdf');
  assert.match(link.href, new RegExp(`^${server.base}/blob/${sha(doc)}\\?`));
  assert.deepEqual(await fetchInPage(b, link.href), { status: 200, type: 'application/pdf', size: doc.length, sha: sha(doc) });
  // The list's preview says what came.
  assert.equal(await b.textContent(`#conv-list li[data-conv="${conv}"] .preview`), 'File: report.pdf');

  // Alice sets an avatar from an image file; Bob sees it next to her messages.
  await a.click('#profile-toggle');
  const face = png(40, 40);
  await a.setInputFiles('#profile-avatar', { name: 'me.png', mimeType: 'image/png', buffer: face });
  await loadedImage(a, '#profile-avatar-img:not([hidden])', "alice's avatar in her profile form");
  const av = await loadedImage(b, '#messages .msg:not(.own) [data-testid="avatar"]', "alice's avatar on bob's page");
  assert.deepEqual([av.w, av.h], [40, 40]);
  assert.ok(av.src.includes(`/blob/${sha(face)}?`), av.src);
  await loadedImage(b, `#conv-list li[data-conv="${conv}"] .name [data-testid="avatar"]`, "alice's avatar on bob's list row");
  assert.equal((await b.textContent(`#conv-list li[data-conv="${conv}"] .name`)).trim(), 'alice');
  await screenshot(b, 'blob-messages.png');
  await screenshot(a, 'blob-sender.png');

  // A file dropped on Bob's chat is sent like an attached one.
  await b.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File([new TextEncoder().encode('dropped notes')], 'notes.txt', { type: 'text/plain' }));
    document.getElementById('chat').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await a.waitForFunction(
    () => [...document.querySelectorAll('#messages .msg:not(.own) [data-testid="file-name"]')].some((n) => n.textContent === 'notes.txt'),
    null,
    { timeout: WAIT_MS },
  );

  // After a reload Bob's history brings both messages back the same way.
  await b.reload();
  await b.waitForSelector('#state[data-state="connected"]');
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  const again = await loadedImage(b, '#messages .msg:not(.own) [data-testid="thumb"] img', 'the thumbnail from history');
  assert.ok(again.src.startsWith('blob:'));
  await b.waitForSelector(`${file} [data-testid="file-link"][href]`);
  const link2 = await b.$eval(`${file} [data-testid="file-link"]`, (l) => l.href);
  assert.equal((await fetchInPage(b, link2)).sha, sha(doc));
});

e2e('an upload cut by kill -9 of the server resumes from the stored offset after the restart, and arrives whole', async (_t, logs) => {
  const dataDir = tempDir('tern-web-blob-restart-');
  let server = await startServer(logs, { dataDir });
  const ports = { quic: server.quic, tcp: server.tcp, ws: server.ws };
  const a = await openPage(await newContext(), server.base, logs, 'alice');
  const b = await openPage(await newContext(), server.base, logs, 'bob');
  await signIn(a, 'alice', { register: true });
  await signIn(b, 'bob', { register: true });
  const conv = await startChat(a, 'alice', 'bob');

  // The server is frozen (SIGSTOP) as soon as the page reports 1 MiB stored, then killed:
  // 16 MB is 32 chunks, so the upload is cut in the middle.
  const doc = pdfLike(16_000_000);
  let frozen = false;
  await a.exposeFunction('__freezeServer', () => {
    if (frozen) return;
    frozen = true;
    process.kill(server.child.pid, 'SIGSTOP');
  });
  await a.evaluate(() => {
    const list = window.__tern.uploads;
    const push = list.push.bind(list);
    list.push = (p) => {
      const n = push(p);
      if (p.sent >= 1 << 20) window.__freezeServer();
      return n;
    };
  });
  await a.setInputFiles('#attach-input', { name: 'big.pdf', mimeType: 'application/pdf', buffer: doc });
  await a.waitForFunction(() => window.__tern.uploads.some((p) => p.sent >= 1 << 20), null, { timeout: WAIT_MS });
  await a.waitForSelector('#messages [data-testid="upload"] [data-testid="upload-progress"]');
  await screenshot(a, 'blob-upload-progress.png');
  const before = await a.evaluate(() => window.__tern.uploads.map((p) => p.sent));
  const stopped = Math.max(...before);
  assert.ok(stopped < doc.length, `the upload was cut in the middle (${stopped} of ${doc.length})`);
  const exited = new Promise((r) => server.child.once('exit', r));
  server.child.kill('SIGKILL');
  await exited;
  await a.waitForSelector('#state[data-state="reconnecting"]');

  // Same data, same addresses: the page reconnects and asks where the upload stands.
  server = await startServer(logs, { dataDir, ports });
  await a.waitForSelector('#messages .msg.own.has-file[data-seq] [data-testid="file"]', { timeout: 60_000 });
  const all = await a.evaluate(() => window.__tern.uploads.map((p) => p.sent));
  const after = all.slice(before.length);
  assert.ok(after.length > 0, 'progress went on after the restart');
  assert.ok(after[0] >= stopped && after[0] > 0, `resumed from the stored offset, not from 0: ${after[0]} after ${stopped}`);
  assert.equal(all[all.length - 1], doc.length, 'the upload reached 100%');
  assert.ok(all.length <= 33 + 2, `no chunk sent twice over (${all.length} reports for 32 chunks)`);
  console.log(`upload cut at ${stopped} of ${doc.length} bytes, resumed at ${after[0]}; ${all.length} progress reports`);

  // Bob gets exactly those bytes.
  await b.waitForSelector('#state[data-state="connected"]');
  await b.click(`#conv-list li[data-conv="${conv}"]`);
  const file = '#messages .msg:not(.own) [data-testid="file"]';
  await b.waitForSelector(`${file} [data-testid="file-link"][href]`);
  const href = await b.$eval(`${file} [data-testid="file-link"]`, (l) => l.href);
  assert.deepEqual(await fetchInPage(b, href), { status: 200, type: 'application/pdf', size: doc.length, sha: sha(doc) });
});
