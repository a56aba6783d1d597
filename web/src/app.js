// The tern web chat page: log in / register, a conversation list with unread marks, a
// chat view with live messages, a message input, and a connection state indicator.
// Everything goes through the browser SDK (sdk.js); no framework.

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
};

/**
 * @typedef {import('./sdk.js').Message} Message
 * @typedef {{id: string, name: string, kind: 'direct'|'group', peer: string|null,
 *   unread: number, lastTs: number, messages: Map<number, Message>, historyLoaded: boolean}} Conv
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

// ---- app-level persistence (unread counts and conversation names, per user) ----

function appKey() {
  return `tern:${app.me}:app`;
}

function saveApp() {
  if (!app.me) return;
  /** @type {Record<string, {name: string, kind: string, unread: number, lastTs: number}>} */
  const convs = {};
  for (const c of app.convs.values()) convs[c.id] = { name: c.name, kind: c.kind, unread: c.unread, lastTs: c.lastTs };
  try {
    localStorage.setItem(appKey(), JSON.stringify({ convs }));
  } catch {
    // storage full: unread marks just do not survive a reload
  }
}

function loadApp() {
  app.convs.clear();
  try {
    const s = JSON.parse(localStorage.getItem(appKey()) || '{}');
    for (const [id, c] of Object.entries(s.convs ?? {})) {
      const conv = ensureConv(id, c.name);
      conv.unread = Number(c.unread) || 0;
      conv.lastTs = Number(c.lastTs) || 0;
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
      unread: 0,
      lastTs: 0,
      messages: new Map(),
      historyLoaded: false,
    };
    app.convs.set(id, c);
  } else if (name && c.name !== name) {
    c.name = name;
  }
  return c;
}

/** @param {Message} m @param {boolean} own @param {boolean} live */
function addMessage(m, own, live) {
  const c = ensureConv(m.conversation, m.kind === 'system' && m.event?.kind === 'CREATED' ? m.event.name : undefined);
  const known = c.messages.has(m.seq);
  c.messages.set(m.seq, m);
  c.lastTs = Math.max(c.lastTs, m.serverTimeMs);
  if (own && m.clientMsgId) app.pending.delete(m.clientMsgId);
  if (live && !known && !own && app.open !== c.id) c.unread += 1;
}

/** @param {string} id */
function openConv(id) {
  const c = app.convs.get(id);
  if (!c) return;
  app.open = id;
  c.unread = 0;
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

async function refreshConversations() {
  const client = app.client;
  if (!client) return;
  try {
    for (const info of await client.conversations()) {
      const c = ensureConv(info.conversation, info.name);
      c.kind = info.kind;
    }
    saveApp();
    render();
  } catch (e) {
    console.warn('tern: list conversations', e);
  }
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
    scheduleRender();
  });
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
  const convs = [...app.convs.values()].sort((a, b) => b.lastTs - a.lastTs || a.name.localeCompare(b.name));
  const frag = document.createDocumentFragment();
  for (const c of convs) {
    const li = document.createElement('li');
    li.dataset.conv = c.id;
    li.dataset.testid = 'conv';
    li.tabIndex = 0;
    if (c.id === app.open) li.classList.add('active');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
    li.append(name);
    if (c.unread > 0) {
      const u = document.createElement('span');
      u.className = 'unread';
      u.dataset.testid = 'unread';
      u.textContent = String(c.unread);
      u.title = `${c.unread} unread`;
      li.append(u);
    }
    li.addEventListener('click', () => openConv(c.id));
    li.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') openConv(c.id);
    });
    frag.append(li);
  }
  el.convList.replaceChildren(frag);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function renderChat() {
  const c = app.open ? app.convs.get(app.open) : null;
  if (!c) {
    el.chatTitle.textContent = 'No conversation open';
    el.messages.replaceChildren();
    return;
  }
  el.chatTitle.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
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
  app.open = null;
  showState({ state: 'closed' });
  render();
  el.password.value = '';
  showLogin();
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
