// The tern web chat page: log in / register, a conversation list with the server's unread
// counts (docs/PROTOCOL.md 9.1), a chat view with live messages and read ticks, a message
// input, and a connection state indicator. Everything goes through the browser SDK
// (sdk.js); no framework.
//
// Read state: the server's ListConversations gives each conversation's last seq and this
// user's read seq; the badge is lastSeq - readSeq (the server's own definition), kept
// current from events: a delivered message raises lastSeq (and readSeq when it is this
// user's own, as the server moves the sender's read position), a 'read' event with own
// set (another tab or device of this user, or this one, read) raises readSeq, opening a
// conversation sends MarkRead up to the newest message shown. Receipts from other members
// ('read' without own) put a tick on this user's messages up to their read seq.
//
// Mute and pin (docs/PROTOCOL.md 9.3): each conversation carries this user's muted and
// pinned from the list, kept current by 'settings' events (a change made in this tab,
// another tab or another device). The list shows pinned conversations first (the server's
// order: pinned, then most recent, then id), marks pinned and muted ones, and leaves a
// muted conversation's unread out of the total (its own badge stays, greyed). The open
// chat's header has a Pin and a Mute toggle; each row has the same two as small buttons.

import {
  RULES,
  TernClient,
  TernError,
  directConversation,
  directPeer,
  isValidDevice,
  isValidPassword,
  isValidUsername,
  loadState,
  randomDeviceName,
} from './sdk.js';

// The name rules are the server's (tern-proto, via protocol-rules.json).
const { username: USERNAME, device: DEVICE, password: PASSWORD } = RULES.names;
const LAST_USER_KEY = 'tern:last-user';

/** ws(s)://<this host>/ws, or the `?ws=` query parameter. */
function wsUrl() {
  const q = new URLSearchParams(location.search).get('ws');
  if (q) return q;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws`;
}

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  state: $('state'),
  me: $('me'),
  logout: /** @type {HTMLButtonElement} */ ($('logout')),
  loginView: $('login-view'),
  loginForm: /** @type {HTMLFormElement} */ ($('login-form')),
  username: /** @type {HTMLInputElement} */ ($('username')),
  password: /** @type {HTMLInputElement} */ ($('password')),
  device: /** @type {HTMLInputElement} */ ($('device')),
  login: /** @type {HTMLButtonElement} */ ($('login')),
  register: /** @type {HTMLButtonElement} */ ($('register')),
  authError: $('auth-error'),
  chatView: $('chat-view'),
  newChatForm: /** @type {HTMLFormElement} */ ($('new-chat-form')),
  newChat: /** @type {HTMLInputElement} */ ($('new-chat')),
  convList: $('conv-list'),
  chatTitle: $('chat-title'),
  messages: $('messages'),
  composeForm: /** @type {HTMLFormElement} */ ($('compose-form')),
  compose: /** @type {HTMLInputElement} */ ($('compose')),
  send: /** @type {HTMLButtonElement} */ ($('send')),
  chatError: $('chat-error'),
  totalUnread: $('total-unread'),
  moreConvs: /** @type {HTMLButtonElement} */ ($('more-convs')),
  pinToggle: /** @type {HTMLButtonElement} */ ($('pin-toggle')),
  muteToggle: /** @type {HTMLButtonElement} */ ($('mute-toggle')),
};

/** Conversations asked for per ListConversations page (`?convPage=N` sets it, 1-1000). */
const CONV_PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get('convPage')) || 100));
/** Characters of a last-message preview made on this page (the server's are 80). */
const PREVIEW_CHARS = 80;

/**
 * @typedef {import('./sdk.js').Message} Message
 * @typedef {{id: string, name: string, kind: 'direct'|'group', peer: string|null,
 *   lastSeq: number, readSeq: number, guessRead: number, listed: boolean, lastTs: number, lastSender: string,
 *   preview: string, readBy: Record<string, number>, markingTo: number,
 *   muted: boolean, pinned: boolean,
 *   messages: Map<number, Message>, historyLoaded: boolean}} Conv
 *   lastSeq / readSeq: the conversation's last seq and this user's read position (only
 *   ever move forward; unread = lastSeq - readSeq); listed: the server's list had it;
 *   guessRead: until it is listed, a live message's seq - 1 (what came before counts read);
 *   readBy: other members' read positions from receipts; markingTo: a MarkRead in flight;
 *   muted / pinned: this user's settings (9.3), from the list and 'settings' events
 * @typedef {{clientMsgId: string, conv: string, text: string, failed: string|null, ts: number}} PendingSend
 */

const app = {
  /** @type {TernClient|null} */
  client: null,
  me: '',
  /** @type {Map<string, Conv>} */
  convs: new Map(),
  /** @type {Map<string, PendingSend>} by client_msg_id */
  pending: new Map(),
  /** @type {string|null} */
  open: null,
  /** @type {(() => void)[]} */
  unsubscribe: [],
  /** The server's list: how many conversations, pages loaded, and the unread of those not loaded. */
  list: { total: 0, loaded: 0, unlistedUnread: 0 },
};

// Test and debugging hook: what the SDK delivered on this page, and state changes.
/** @type {any} */ (window).__tern = {
  app,
  /** @type {{conversation: string, seq: number, sender: string, text: string|null, own: boolean}[]} */
  delivered: [],
  /** @type {string[]} */
  states: [],
  caughtUp: 0,
};

// ---- app-level persistence (a cache of the conversation list, per user) ----

function appKey() {
  return `tern:${app.me}:app`;
}

function saveApp() {
  if (!app.me) return;
  // A cache for the first paint after a reload; the server's list replaces it on connect.
  /** @type {Record<string, object>} */
  const convs = {};
  for (const c of app.convs.values()) {
    convs[c.id] = {
      name: c.name, kind: c.kind, lastTs: c.lastTs, lastSeq: c.lastSeq, readSeq: c.readSeq,
      lastSender: c.lastSender, preview: c.preview, readBy: c.readBy, muted: c.muted, pinned: c.pinned,
    };
  }
  try {
    localStorage.setItem(appKey(), JSON.stringify({ v: 2, convs }));
  } catch {
    // storage full: the cache just does not survive a reload
  }
}

function loadApp() {
  app.convs.clear();
  try {
    const s = JSON.parse(localStorage.getItem(appKey()) || '{}');
    for (const [id, c] of Object.entries(s.convs ?? {})) {
      const conv = ensureConv(id, c.name);
      conv.lastTs = Number(c.lastTs) || 0;
      conv.lastSeq = Number(c.lastSeq) || 0;
      conv.readSeq = Math.min(Number(c.readSeq) || 0, conv.lastSeq);
      conv.lastSender = typeof c.lastSender === 'string' ? c.lastSender : '';
      conv.preview = typeof c.preview === 'string' ? c.preview : '';
      conv.muted = c.muted === true;
      conv.pinned = c.pinned === true;
      if (c.readBy && typeof c.readBy === 'object') {
        for (const [u, n] of Object.entries(c.readBy)) if (Number.isSafeInteger(n)) conv.readBy[u] = n;
      }
    }
  } catch {
    // ignore a corrupt entry
  }
}

// ---- conversations ----

/** @param {string} id @param {string} [name] */
function ensureConv(id, name) {
  let c = app.convs.get(id);
  if (!c) {
    const peer = directPeer(id, app.me);
    c = {
      id,
      name: name || peer || id,
      kind: id.startsWith('g:') ? 'group' : 'direct',
      peer,
      lastSeq: 0,
      readSeq: 0,
      guessRead: 0,
      listed: false,
      lastTs: 0,
      lastSender: '',
      preview: '',
      readBy: {},
      markingTo: 0,
      muted: false,
      pinned: false,
      messages: new Map(),
      historyLoaded: false,
    };
    app.convs.set(id, c);
  } else if (name && c.name !== name) {
    c.name = name;
  }
  return c;
}

/** Unread messages of a conversation: the server's definition (9.1), lastSeq - readSeq. @param {Conv} c */
function unreadOf(c) {
  const read = c.listed ? c.readSeq : Math.max(c.readSeq, c.guessRead);
  return Math.max(0, c.lastSeq - read);
}

/** @param {Message} m */
function previewOf(m) {
  if (m.kind === 'system') return systemText(m);
  if (m.text === null) return '';
  return [...m.text].slice(0, PREVIEW_CHARS).join('');
}

/** @param {Message} m @param {boolean} own @param {boolean} live */
function addMessage(m, own, live) {
  const c = ensureConv(m.conversation, m.kind === 'system' && m.event?.kind === 'CREATED' ? m.event.name : undefined);
  if (live && !c.listed) {
    // A conversation the server's list has not shown this page (yet): count what came
    // before as read until the list (refreshed below) gives the real read position.
    if (c.lastSeq === 0) c.guessRead = m.seq - 1;
    scheduleListRefresh();
  }
  c.messages.set(m.seq, m);
  if (m.seq >= c.lastSeq) {
    c.lastSeq = m.seq;
    c.lastSender = m.sender;
    c.preview = previewOf(m);
  }
  c.lastTs = Math.max(c.lastTs, m.serverTimeMs);
  // The server moves a sender's read position to their own message (9.1).
  if (own) c.readSeq = Math.max(c.readSeq, m.seq);
  if (own && m.clientMsgId) app.pending.delete(m.clientMsgId);
  if (live && app.open === c.id) scheduleMarkRead(c);
}

/** The server's list (first page, or a page more), merged in. @param {boolean} [more] */
async function refreshConversations(more = false) {
  const client = app.client;
  if (!client) return;
  try {
    const offset = more ? app.list.loaded : 0;
    const limit = more ? CONV_PAGE : Math.max(CONV_PAGE, app.list.loaded);
    const page = await client.listConversations({ limit, offset });
    if (client !== app.client) return;
    let listedUnread = 0;
    if (!more) {
      // The pages loaded are asked again as one: what they no longer hold (a cache entry
      // from an earlier visit, a conversation left) goes, except chats started here that
      // have no message yet, the open one, and ones with sends on the way.
      const keep = new Set(page.conversations.map((i) => i.conversation));
      for (const p of app.pending.values()) keep.add(p.conv);
      for (const c of [...app.convs.values()]) {
        if (!keep.has(c.id) && c.id !== app.open && c.lastSeq > 0) app.convs.delete(c.id);
      }
    }
    for (const info of page.conversations) {
      const c = ensureConv(info.conversation, info.name);
      c.kind = info.kind;
      c.listed = true;
      // Both only move forward; a message or a read that raced the list is kept.
      if (info.lastSeq >= c.lastSeq) {
        c.lastSeq = info.lastSeq;
        if (info.lastTimeMs) c.lastTs = Math.max(c.lastTs, info.lastTimeMs);
        c.lastSender = info.lastSender;
        c.preview = info.lastKind === 'system' ? 'group event' : info.lastPreview;
        const shown = c.messages.get(info.lastSeq);
        if (shown) c.preview = previewOf(shown);
      }
      c.readSeq = Math.max(c.readSeq, info.readSeq);
      c.muted = info.muted;
      c.pinned = info.pinned;
      // The server's total leaves muted conversations out, so does this sum.
      if (!info.muted) listedUnread += info.unread;
    }
    app.list.total = page.total;
    app.list.loaded = Math.max(app.list.loaded, offset + page.conversations.length);
    // The unread of conversations beyond the pages loaded (the server's total covers all).
    // The first page is re-asked as large as all pages loaded, so the rest is unlisted.
    if (more) app.list.unlistedUnread = Math.max(0, app.list.unlistedUnread - listedUnread);
    else app.list.unlistedUnread = Math.max(0, page.totalUnread - listedUnread);
    const open = app.open ? app.convs.get(app.open) : null;
    if (open) scheduleMarkRead(open);
    saveApp();
    render();
  } catch (e) {
    console.warn('tern: list conversations', e);
  }
}

let listTimer = /** @type {any} */ (null);
/** One list refresh shortly, for however many reasons came up meanwhile. */
function scheduleListRefresh() {
  if (listTimer) return;
  listTimer = setTimeout(() => {
    listTimer = null;
    refreshConversations();
  }, 200);
}

/**
 * Marks the open conversation read up to the newest message shown, once per new
 * message (coalesced); only while the page is visible.
 * @param {Conv} c
 */
function scheduleMarkRead(c) {
  queueMicrotask(() => markShownRead(c));
}

/** @param {Conv} c */
async function markShownRead(c) {
  const client = app.client;
  if (!client || app.open !== c.id || document.visibilityState === 'hidden') return;
  let newest = 0;
  for (const s of c.messages.keys()) if (s > newest) newest = s;
  if (newest <= c.readSeq || newest <= c.markingTo) return;
  c.markingTo = newest;
  try {
    const r = await client.markRead(c.id, newest);
    c.readSeq = Math.max(c.readSeq, r.readSeq);
    saveApp();
    scheduleRender();
  } catch (e) {
    console.warn('tern: mark read', e);
  } finally {
    if (c.markingTo === newest) c.markingTo = 0;
  }
}

/** @param {string} id */
function openConv(id) {
  const c = app.convs.get(id);
  if (!c) return;
  app.open = id;
  scheduleMarkRead(c);
  saveApp();
  el.compose.disabled = false;
  el.send.disabled = false;
  el.chatError.textContent = '';
  render();
  el.compose.focus();
  if (!c.historyLoaded) loadHistory(c);
}

/** @param {Conv} c */
async function loadHistory(c) {
  const client = app.client;
  if (!client) return;
  try {
    const h = await client.history(c.id, 0, 50);
    c.historyLoaded = true;
    for (const m of h.messages) addMessage(m, m.sender === app.me, false);
    if (app.open === c.id) scheduleMarkRead(c);
    render();
  } catch (e) {
    // A 1:1 chat that has no message yet does not exist on the server (FORBIDDEN).
    if (e instanceof TernError && e.codeName === 'FORBIDDEN' && c.kind === 'direct') {
      c.historyLoaded = true;
      return;
    }
    if (app.open === c.id) el.chatError.textContent = `history: ${errorText(e)}`;
  }
}

/**
 * Sets one of this user's settings of `c` (on all their devices); the answer (and the
 * 'settings' push every tab gets) brings both values as they are now.
 * @param {Conv} c @param {'muted'|'pinned'} which
 */
async function toggleSetting(c, which) {
  const client = app.client;
  if (!client) return;
  try {
    const s = await client.setConversationSettings(c.id, { [which]: !c[which] });
    applySettings(s);
  } catch (e) {
    // A 1:1 chat with no message yet does not exist on the server (FORBIDDEN).
    const what = which === 'pinned' ? 'pin' : 'mute';
    el.chatError.textContent =
      e instanceof TernError && e.codeName === 'FORBIDDEN' && c.kind === 'direct' && c.lastSeq === 0
        ? `Send a message first: a chat with no message cannot be ${what === 'pin' ? 'pinned' : 'muted'} yet.`
        : `${what}: ${errorText(e)}`;
  }
}

/** @param {{conversation: string, muted: boolean, pinned: boolean}} s */
function applySettings(s) {
  const c = app.convs.get(s.conversation);
  if (!c) {
    // Not on this page's list yet: the server's list has it, with its settings.
    scheduleListRefresh();
    return;
  }
  c.muted = s.muted;
  c.pinned = s.pinned;
  saveApp();
  scheduleRender();
}

// ---- client lifecycle ----

/**
 * @param {string} username
 * @param {string|null} password
 * @param {string} [device]
 */
function startClient(username, password, device) {
  stopClient();
  app.me = username;
  app.open = null;
  app.pending.clear();
  app.list = { total: 0, loaded: 0, unlistedUnread: 0 };
  loadApp();
  const client = new TernClient({ url: wsUrl(), username, password: password ?? undefined, device });
  app.client = client;
  /** @type {any} */ (window).__tern.client = client;
  const sub = (/** @type {string} */ t, /** @type {(d: any) => void} */ f) => app.unsubscribe.push(client.on(t, f));

  sub('state', (s) => {
    /** @type {any} */ (window).__tern.states.push(s.state);
    showState(s);
    if (s.state === 'connected') {
      localStorage.setItem(LAST_USER_KEY, username);
      el.authError.textContent = '';
      showChat();
      refreshConversations();
      for (const c of app.convs.values()) if (c.id === app.open && !c.historyLoaded) loadHistory(c);
    } else if (s.state === 'auth-lost') {
      if (localStorage.getItem(LAST_USER_KEY) === username) localStorage.removeItem(LAST_USER_KEY);
      showLogin(s.codeName === 'INVALID_CREDENTIALS' ? 'Wrong user name or password.' : `Please log in again (${s.reason || s.codeName || 'session ended'}).`);
      el.username.value = username;
    } else if (s.state === 'replaced') {
      el.chatError.textContent = 'This device signed in somewhere else (another tab?). Reload to take over.';
    }
  });
  sub('message', ({ message, own }) => {
    /** @type {any} */ (window).__tern.delivered.push({
      conversation: message.conversation,
      seq: message.seq,
      sender: message.sender,
      text: message.text,
      own,
    });
    addMessage(message, own, true);
    saveApp();
    scheduleRender();
  });
  sub('acked', (ack) => {
    const p = app.pending.get(ack.clientMsgId);
    if (!p) return;
    app.pending.delete(ack.clientMsgId);
    const c = ensureConv(ack.conversation);
    if (!c.messages.has(ack.seq)) {
      c.messages.set(ack.seq, {
        conversation: ack.conversation,
        seq: ack.seq,
        sender: app.me,
        senderDevice: client.device,
        clientMsgId: ack.clientMsgId,
        serverTimeMs: ack.serverTimeMs,
        body: new TextEncoder().encode(p.text),
        contentType: '',
        kind: 'message',
        event: null,
        text: p.text,
      });
    }
    c.lastTs = Math.max(c.lastTs, ack.serverTimeMs);
    if (ack.seq >= c.lastSeq) {
      c.lastSeq = ack.seq;
      c.lastSender = app.me;
      c.preview = [...p.text].slice(0, PREVIEW_CHARS).join('');
    }
    c.readSeq = Math.max(c.readSeq, ack.seq);
    saveApp();
    scheduleRender();
  });
  sub('read', (r) => {
    const c = app.convs.get(r.conversation);
    if (!c) {
      // Not on this page's list yet: the server's list has its state.
      scheduleListRefresh();
      return;
    }
    if (r.own) {
      // This tab, another tab or another device of this user read: the badge follows.
      c.readSeq = Math.max(c.readSeq, r.readSeq);
      c.lastSeq = Math.max(c.lastSeq, r.readSeq);
    } else {
      // A receipt: r.user read up to r.readSeq.
      c.readBy[r.user] = Math.max(c.readBy[r.user] ?? 0, r.readSeq);
    }
    saveApp();
    scheduleRender();
  });
  sub('settings', (s) => applySettings(s));
  sub('caught-up', () => {
    /** @type {any} */ (window).__tern.caughtUp += 1;
  });
  sub('send-failed', (f) => {
    const p = app.pending.get(f.clientMsgId);
    if (p) p.failed = `${f.codeName}: ${f.message}`;
    scheduleRender();
  });

  // Sends left over from an earlier page (not acked yet): shown as pending, resent by the SDK.
  for (const p of client.pending) {
    const conv = 'user' in p.target ? directConversation(username, p.target.user) : p.target.conversation;
    ensureConv(conv);
    app.pending.set(p.clientMsgId, { clientMsgId: p.clientMsgId, conv, text: p.text ?? '(binary)', failed: null, ts: Date.now() });
  }
  el.me.textContent = `${username} · ${client.device}`;
  client.start();
  render();
}

function stopClient() {
  for (const u of app.unsubscribe) u();
  app.unsubscribe = [];
  app.client?.close();
  app.client = null;
}

// ---- views ----

/** @param {string} [error] */
function showLogin(error) {
  el.loginView.hidden = false;
  el.chatView.hidden = true;
  el.logout.hidden = true;
  el.login.disabled = false;
  el.register.disabled = false;
  el.authError.textContent = error ?? '';
  if (!el.device.value) el.device.value = randomDeviceName();
}

function showChat() {
  el.loginView.hidden = true;
  el.chatView.hidden = false;
  el.logout.hidden = false;
  el.login.disabled = false;
  el.register.disabled = false;
}

/** @param {any} s */
function showState(s) {
  el.state.dataset.state = s.state;
  const labels = {
    connecting: 'connecting…',
    connected: 'connected',
    reconnecting: 'reconnecting…',
    'auth-lost': 'signed out',
    replaced: 'replaced by another session',
    closed: 'offline',
  };
  el.state.textContent = /** @type {any} */ (labels)[s.state] ?? s.state;
  el.state.title = s.reason ? `${s.state}: ${s.reason}` : s.state;
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  renderConvList();
  renderChat();
}

function renderConvList() {
  // The server's order (9.1): pinned first, then most recent, then by id.
  const convs = [...app.convs.values()].sort(
    (a, b) => Number(b.pinned) - Number(a.pinned) || b.lastTs - a.lastTs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  const frag = document.createDocumentFragment();
  let total = app.list.unlistedUnread;
  for (const c of convs) {
    const unread = unreadOf(c);
    // A muted conversation keeps its badge but is left out of the total (9.1).
    if (!c.muted) total += unread;
    const li = document.createElement('li');
    li.dataset.conv = c.id;
    li.dataset.testid = 'conv';
    li.tabIndex = 0;
    if (c.id === app.open) li.classList.add('active');
    li.classList.toggle('pinned', c.pinned);
    li.classList.toggle('muted', c.muted);
    const info = document.createElement('div');
    info.className = 'info';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
    const preview = document.createElement('span');
    preview.className = 'preview';
    preview.dataset.testid = 'preview';
    const who = c.lastSender === app.me ? 'You' : c.kind === 'group' ? c.lastSender : '';
    preview.textContent = c.preview ? (who ? `${who}: ${c.preview}` : c.preview) : c.lastSeq > 0 ? '(attachment)' : 'No messages yet';
    info.append(name, preview);
    li.append(info);
    if (c.lastTs > 0) {
      const when = document.createElement('span');
      when.className = 'when';
      when.textContent = dayOrTime(c.lastTs);
      li.append(when);
    }
    if (unread > 0) {
      const u = document.createElement('span');
      u.className = 'unread';
      u.dataset.testid = 'unread';
      u.textContent = String(unread);
      u.title = c.muted ? `${unread} unread (muted: not in the total)` : `${unread} unread`;
      li.append(u);
    }
    li.append(rowToggle(c, 'pinned'), rowToggle(c, 'muted'));
    li.addEventListener('click', () => openConv(c.id));
    li.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') openConv(c.id);
    });
    frag.append(li);
  }
  el.convList.replaceChildren(frag);
  el.totalUnread.textContent = String(total);
  el.totalUnread.hidden = total === 0;
  el.totalUnread.title = `${total} unread in all conversations`;
  el.moreConvs.hidden = app.list.loaded >= app.list.total;
  document.title = total > 0 ? `(${total}) tern` : 'tern';
}

/** Inline icons (no emoji font needed): a pin, and a bell struck through. */
const ICONS = {
  pinned:
    '<svg viewBox="0 0 24 24" width="1em" height="1em" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' +
    '<path d="M12 17v5"/><path d="M5 17h14v-1.8a2 2 0 0 0-1.1-1.8l-1.8-.9A2 2 0 0 1 15 10.8V6h1a2 2 0 0 0 0-4H8a2 2 0 0 0 0 4h1v4.8a2 2 0 0 1-1.1 1.8l-1.8.9A2 2 0 0 0 5 15.2Z"/></svg>',
  muted:
    '<svg viewBox="0 0 24 24" width="1em" height="1em" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' +
    '<path d="M8.7 3A6 6 0 0 1 18 8c0 2.2.3 3.8.7 5"/><path d="M17 17H3s3-2 3-9c0-.6.1-1.2.3-1.7"/><path d="M10.3 21a1.9 1.9 0 0 0 3.4 0"/><path d="m2 2 20 20"/></svg>',
};

/**
 * A row's small pin or mute button: shown (and pressed) when set, else on hover/focus.
 * @param {Conv} c @param {'muted'|'pinned'} which
 */
function rowToggle(c, which) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = `toggle ${which === 'pinned' ? 'pin' : 'mute'}`;
  b.dataset.testid = which === 'pinned' ? 'row-pin' : 'row-mute';
  b.innerHTML = ICONS[which];
  const on = c[which];
  b.setAttribute('aria-pressed', String(on));
  b.title = which === 'pinned' ? (on ? 'Pinned: click to unpin' : 'Pin') : on ? 'Muted: click to unmute' : 'Mute';
  b.setAttribute('aria-label', `${b.title} ${c.name}`);
  b.addEventListener('click', (e) => {
    e.stopPropagation();
    toggleSetting(c, which);
  });
  b.addEventListener('keydown', (e) => e.stopPropagation());
  return b;
}

/** A time today, else a date. @param {number} ms */
function dayOrTime(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateFmt.format(d);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

function renderChat() {
  const c = app.open ? app.convs.get(app.open) : null;
  el.pinToggle.hidden = !c;
  el.muteToggle.hidden = !c;
  if (!c) {
    el.chatTitle.textContent = 'No conversation open';
    el.messages.replaceChildren();
    return;
  }
  el.chatTitle.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
  headerToggle(el.pinToggle, 'pinned', c.pinned ? 'Unpin' : 'Pin', c.pinned);
  headerToggle(el.muteToggle, 'muted', c.muted ? 'Unmute' : 'Mute', c.muted);
  const frag = document.createDocumentFragment();
  const seen = new Set();
  for (const m of [...c.messages.values()].sort((a, b) => a.seq - b.seq)) {
    if (m.clientMsgId) seen.add(m.clientMsgId);
    frag.append(messageItem(m));
  }
  for (const p of app.pending.values()) {
    if (p.conv !== c.id || seen.has(p.clientMsgId)) continue;
    const li = bubble(app.me, p.text, p.failed ? 'failed' : 'sending…', true);
    li.classList.add(p.failed ? 'failed' : 'pending');
    li.dataset.cmid = p.clientMsgId;
    if (p.failed) li.title = p.failed;
    frag.append(li);
  }
  el.messages.replaceChildren(frag);
  el.messages.scrollTop = el.messages.scrollHeight;
}

/**
 * @param {HTMLButtonElement} b @param {'muted'|'pinned'} which @param {string} label
 * @param {boolean} on
 */
function headerToggle(b, which, label, on) {
  b.innerHTML = ICONS[which];
  const text = document.createElement('span');
  text.textContent = label;
  b.append(text);
  b.setAttribute('aria-pressed', String(on));
}

/** @param {Message} m */
function messageItem(m) {
  if (m.kind === 'system') {
    const li = document.createElement('li');
    li.className = 'msg system';
    li.dataset.seq = String(m.seq);
    li.textContent = systemText(m);
    return li;
  }
  const own = m.sender === app.me;
  const li = bubble(m.sender, m.text ?? `(${m.contentType}, ${m.body.length} bytes)`, timeFmt.format(new Date(m.serverTimeMs)), own);
  li.dataset.seq = String(m.seq);
  if (m.clientMsgId) li.dataset.cmid = m.clientMsgId;
  if (own) {
    const c = app.convs.get(m.conversation);
    const readers = c ? Object.entries(c.readBy).filter(([u, s]) => u !== app.me && s >= m.seq).map(([u]) => u) : [];
    if (readers.length > 0) {
      const tick = document.createElement('span');
      tick.className = 'read';
      tick.dataset.testid = 'read-mark';
      tick.textContent = c?.kind === 'group' ? `✓ read by ${readers.length}` : '✓ read';
      tick.title = `read by ${readers.sort().join(', ')}`;
      /** @type {HTMLElement} */ (li.querySelector('.meta')).append(tick);
      li.classList.add('seen');
    }
  }
  return li;
}

/** @param {string} from @param {string} text @param {string} meta @param {boolean} own */
function bubble(from, text, meta, own) {
  const li = document.createElement('li');
  li.className = own ? 'msg own' : 'msg';
  li.dataset.testid = 'msg';
  const head = document.createElement('div');
  head.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  const when = document.createElement('span');
  when.className = 'time';
  when.textContent = meta;
  head.append(who, when);
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  li.append(head, body);
  return li;
}

/** @param {Message} m */
function systemText(m) {
  const e = m.event;
  if (!e) return 'system message';
  const users = e.users.join(', ');
  switch (e.kind) {
    case 'CREATED':
      return `${e.actor} created "${e.name}"${users ? ` with ${users}` : ''}`;
    case 'MEMBERS_ADDED':
      return `${e.actor} added ${users}`;
    case 'MEMBERS_REMOVED':
      return `${e.actor} removed ${users}`;
    case 'MEMBER_LEFT':
      return `${e.actor} left`;
    default:
      return `${e.kind} by ${e.actor}`;
  }
}

/** @param {unknown} e */
function errorText(e) {
  if (e instanceof TernError) return e.serverMessage ? `${e.serverMessage} (${e.codeName})` : e.codeName;
  return String(e);
}

// ---- forms ----

function readCredentials() {
  const username = el.username.value.trim();
  const password = el.password.value;
  const device = el.device.value.trim() || randomDeviceName();
  if (!isValidUsername(username)) {
    return {
      error: `User names are ${USERNAME.min}-${USERNAME.max} characters of a-z, 0-9, _ . - (starting with a letter or digit).`,
    };
  }
  if (!isValidPassword(password)) {
    return { error: `Passwords have at least ${PASSWORD.minBytes} characters (at most ${PASSWORD.maxBytes} bytes).` };
  }
  if (!isValidDevice(device)) {
    return { error: `Device names are ${DEVICE.min}-${DEVICE.max} characters of A-Z, a-z, 0-9, _ . -` };
  }
  return { username, password, device };
}

el.loginForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const cred = readCredentials();
  if ('error' in cred) {
    el.authError.textContent = cred.error ?? '';
    return;
  }
  el.authError.textContent = '';
  el.login.disabled = true;
  startClient(cred.username, cred.password, cred.device);
});

el.register.addEventListener('click', async () => {
  const cred = readCredentials();
  if ('error' in cred) {
    el.authError.textContent = cred.error ?? '';
    return;
  }
  el.authError.textContent = '';
  el.register.disabled = true;
  el.login.disabled = true;
  try {
    await TernClient.register(wsUrl(), cred.username, cred.password);
  } catch (err) {
    el.register.disabled = false;
    el.login.disabled = false;
    el.authError.textContent =
      err instanceof TernError && err.codeName === 'USER_EXISTS' ? 'That user name is taken.' : `Register failed: ${errorText(err)}`;
    return;
  }
  startClient(cred.username, cred.password, cred.device);
});

el.newChatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const peer = el.newChat.value.trim().toLowerCase();
  if (!app.client) return;
  if (!isValidUsername(peer)) {
    el.chatError.textContent = 'Enter a user name to start a chat.';
    return;
  }
  const id = directConversation(app.me, peer);
  ensureConv(id, peer);
  el.newChat.value = '';
  saveApp();
  openConv(id);
});

el.composeForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const client = app.client;
  const c = app.open ? app.convs.get(app.open) : null;
  const text = el.compose.value;
  if (!client || !c || text.trim() === '') return;
  const target = c.kind === 'direct' && c.peer ? { user: c.peer } : { conversation: c.id };
  const p = client.sendText(target, text);
  app.pending.set(p.clientMsgId, { clientMsgId: p.clientMsgId, conv: c.id, text, failed: null, ts: Date.now() });
  p.catch((err) => {
    const q = app.pending.get(p.clientMsgId);
    if (q && !q.failed) q.failed = errorText(err);
    scheduleRender();
  });
  el.compose.value = '';
  el.chatError.textContent = '';
  render();
});

el.logout.addEventListener('click', async () => {
  const client = app.client;
  if (!client) return;
  for (const u of app.unsubscribe) u();
  app.unsubscribe = [];
  await client.logout();
  app.client = null;
  localStorage.removeItem(LAST_USER_KEY);
  app.convs.clear();
  app.list = { total: 0, loaded: 0, unlistedUnread: 0 };
  app.open = null;
  showState({ state: 'closed' });
  render();
  el.password.value = '';
  showLogin();
});

el.moreConvs.addEventListener('click', () => refreshConversations(true));

for (const [button, which] of /** @type {const} */ ([[el.pinToggle, 'pinned'], [el.muteToggle, 'muted']])) {
  button.addEventListener('click', () => {
    const c = app.open ? app.convs.get(app.open) : null;
    if (c) toggleSetting(c, which);
  });
}

// Back to a tab left open on a conversation: what arrived meanwhile is read now.
document.addEventListener('visibilitychange', () => {
  const c = app.open ? app.convs.get(app.open) : null;
  if (c && document.visibilityState === 'visible') scheduleMarkRead(c);
});

// ---- boot: resume the last user's session if its token is saved ----

(function boot() {
  const last = localStorage.getItem(LAST_USER_KEY);
  if (last && isValidUsername(last)) {
    const saved = loadState(last);
    if (saved.token) {
      el.username.value = last;
      el.device.value = saved.device;
      showChat();
      startClient(last, null);
      return;
    }
  }
  showLogin();
})();
