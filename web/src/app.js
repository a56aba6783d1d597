// The tern web chat page: log in / register, a conversation list with the server's unread
// counts (docs/PROTOCOL.md 9.1), a chat view with live messages and read ticks, a message
// input, and a connection state indicator. Everything goes through the browser SDK
// (sdk.js); no framework.
//
// Read state: the server's ListConversations gives each conversation's last seq and this
// user's read seq and unread count; the badge is kept
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
//
// Messenger features (issue 13): replies (a quote of the target above the text), mentions
// (@name of a group member, @all for owners/admins; highlighted, and an @ mark on a row with
// unread mentions), a typing indicator (Typing sent at most every 3 s while the user types,
// false on send; "X is typing…" until expires_ms or a stop), edit and recall of one's own
// messages (recall of anyone's by a group owner/admin), delete for me, edited / recalled /
// expired messages shown as such (deleted ones not at all), presence dots for direct peers,
// and groups (create, add/remove members, leave, the member list).
//
// Unread counts: EDIT and RECALL entries take seqs but are not messages a person reads, and
// a recalled or expired message no longer counts, so a badge is no longer lastSeq - readSeq:
// it is the server's `unread` from the list, plus the countable live messages after it,
// minus live recalls of unread ones; a read position that moves to the end clears it, one
// that moves part way is recounted from the messages held here, or asked of the server.

import {
  HistoryVisibility,
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
  chatPresence: $('chat-presence'),
  chatSub: $('chat-sub'),
  membersToggle: /** @type {HTMLButtonElement} */ ($('members-toggle')),
  membersPanel: $('members-panel'),
  memberList: $('member-list'),
  addMemberForm: /** @type {HTMLFormElement} */ ($('add-member-form')),
  addMember: /** @type {HTMLInputElement} */ ($('add-member')),
  leaveGroup: /** @type {HTMLButtonElement} */ ($('leave-group')),
  newGroupToggle: /** @type {HTMLButtonElement} */ ($('new-group-toggle')),
  newGroupForm: /** @type {HTMLFormElement} */ ($('new-group-form')),
  groupName: /** @type {HTMLInputElement} */ ($('group-name')),
  groupMembers: /** @type {HTMLInputElement} */ ($('group-members')),
  typing: $('typing'),
  composeContext: $('compose-context'),
  composeContextText: $('compose-context-text'),
  composeCancel: /** @type {HTMLButtonElement} */ ($('compose-cancel')),
  chatTopic: $('chat-topic'),
  groupShared: /** @type {HTMLInputElement} */ ($('group-shared')),
  groupSharedLabel: $('group-shared-label'),
  composeNote: $('compose-note'),
  groupSettings: /** @type {HTMLFormElement} */ ($('group-settings')),
  groupEditName: /** @type {HTMLInputElement} */ ($('group-edit-name')),
  groupEditTopic: /** @type {HTMLInputElement} */ ($('group-edit-topic')),
  groupEditMuteAll: /** @type {HTMLInputElement} */ ($('group-edit-mute-all')),
  groupEditVisibility: /** @type {HTMLSelectElement} */ ($('group-edit-visibility')),
  groupEditVisibilityLabel: $('group-edit-visibility-label'),
  groupEditVisibilityPublic: /** @type {HTMLOptionElement} */ ($('group-edit-visibility-public')),
  groupEditMaxMembers: /** @type {HTMLInputElement} */ ($('group-edit-max-members')),
  dissolveGroup: /** @type {HTMLButtonElement} */ ($('dissolve-group')),
  channelsToggle: /** @type {HTMLButtonElement} */ ($('channels-toggle')),
  channelDir: $('channel-dir'),
  channelSearch: /** @type {HTMLInputElement} */ ($('channel-search')),
  channelList: $('channel-list'),
  channelEmpty: $('channel-empty'),
  newChannelToggle: /** @type {HTMLButtonElement} */ ($('new-channel-toggle')),
  newChannelForm: /** @type {HTMLFormElement} */ ($('new-channel-form')),
  channelName: /** @type {HTMLInputElement} */ ($('channel-name')),
  channelBroadcast: /** @type {HTMLInputElement} */ ($('channel-broadcast')),
  channelVisibility: /** @type {HTMLSelectElement} */ ($('channel-visibility')),
  channelVisibilityLabel: $('channel-visibility-label'),
  joinChannel: /** @type {HTMLButtonElement} */ ($('join-channel')),
  peopleSearch: /** @type {HTMLInputElement} */ ($('people-search')),
  peopleList: $('people-list'),
  messageSearch: /** @type {HTMLInputElement} */ ($('message-search')),
  messageHits: $('message-hits'),
  profileToggle: /** @type {HTMLButtonElement} */ ($('profile-toggle')),
  profileForm: /** @type {HTMLFormElement} */ ($('profile-form')),
  profileName: /** @type {HTMLInputElement} */ ($('profile-name')),
  profileStatus: /** @type {HTMLInputElement} */ ($('profile-status')),
};

/** Profiles known to this page (docs/PROTOCOL.md 9.12), by user; kept current by 'profile' events. */
const profiles = {
  /** @type {Map<string, {user: string, displayName: string, status: string}>} */
  known: new Map(),
  /** Users asked for (or queued), so each is fetched once per login. */
  asked: new Set(),
  /** @type {string[]} */
  queue: [],
  timer: /** @type {any} */ (null),
};

/** A user as shown: their display name when they set one, else the user name. @param {string} user */
function shownName(user) {
  const p = profiles.known.get(user);
  if (!p && user && !profiles.asked.has(user)) {
    profiles.asked.add(user);
    profiles.queue.push(user);
    if (!profiles.timer) profiles.timer = setTimeout(fetchProfiles, 30);
  }
  return p && p.displayName ? p.displayName : user;
}

/** Fetches the queued profiles (GetProfiles takes up to 100 users at once). */
async function fetchProfiles() {
  profiles.timer = null;
  const client = app.client;
  const users = profiles.queue.splice(0, 100);
  if (profiles.queue.length) profiles.timer = setTimeout(fetchProfiles, 30);
  if (!client || !users.length) return;
  try {
    for (const p of await client.getProfiles(users)) profiles.known.set(p.user, p);
    if (client === app.client) scheduleRender();
  } catch {
    // Asked again after the next login; names show as user names meanwhile.
    for (const u of users) profiles.asked.delete(u);
  }
}

/** Users found by the search box (the newest answer wins). */
let peopleAsked = 0;
async function searchPeople() {
  const client = app.client;
  const prefix = el.peopleSearch.value.trim();
  const asked = ++peopleAsked;
  if (!client || [...prefix].length < 2) {
    el.peopleList.replaceChildren();
    return;
  }
  try {
    const found = await client.searchUsers(prefix, 20);
    if (client !== app.client || asked !== peopleAsked) return;
    const frag = document.createDocumentFragment();
    for (const u of found) {
      const li = document.createElement('li');
      li.dataset.testid = 'person';
      li.dataset.user = u.user;
      li.tabIndex = 0;
      li.textContent = u.displayName ? `${u.displayName} (${u.user})` : u.user;
      li.title = `Chat with ${u.user}`;
      li.addEventListener('click', () => {
        if (u.user === app.me) return;
        const id = directConversation(app.me, u.user);
        ensureConv(id, u.user);
        el.peopleSearch.value = '';
        el.peopleList.replaceChildren();
        saveApp();
        openConv(id);
      });
      frag.append(li);
    }
    el.peopleList.replaceChildren(frag);
  } catch (e) {
    if (asked === peopleAsked) el.chatError.textContent = `search: ${errorText(e)}`;
  }
}

/** Messages found by the message search box (the newest answer wins). */
let hitsAsked = 0;
async function searchHistory() {
  const client = app.client;
  const query = el.messageSearch.value.trim();
  const asked = ++hitsAsked;
  if (!client || !query) {
    el.messageHits.replaceChildren();
    return;
  }
  /** @param {string} text @param {string} testid */
  const note = (text, testid) => {
    const li = document.createElement('li');
    li.className = 'hint';
    li.dataset.testid = testid;
    li.textContent = text;
    return li;
  };
  try {
    const found = await client.searchMessages(query, { limit: 20 });
    if (client !== app.client || asked !== hitsAsked) return;
    const frag = document.createDocumentFragment();
    for (const m of found.messages) {
      const c = app.convs.get(m.conversation);
      const where = c ? c.name : directPeer(m.conversation, app.me) || m.conversation;
      const li = document.createElement('li');
      li.dataset.testid = 'message-hit';
      li.dataset.conv = m.conversation;
      li.dataset.seq = String(m.seq);
      li.tabIndex = 0;
      const who = document.createElement('b');
      who.textContent = m.sender === app.me ? 'you' : m.sender;
      const when = new Date(m.serverTimeMs).toLocaleString();
      li.append(who, ` in ${where}: `, m.text ?? (m.attachment ? m.attachment.name : ''));
      li.title = `${when}: open the chat`;
      li.addEventListener('click', () => {
        ensureConv(m.conversation, c?.name);
        el.messageSearch.value = '';
        el.messageHits.replaceChildren();
        openConv(m.conversation);
      });
      frag.append(li);
    }
    if (found.messages.length === 0) frag.append(note('No messages found', 'message-hits-none'));
    if (found.indexLag > 0) frag.append(note(`${found.indexLag} newest not searchable yet`, 'message-hits-lag'));
    el.messageHits.replaceChildren(frag);
  } catch (e) {
    if (asked === hitsAsked) el.messageHits.replaceChildren(note(`search: ${errorText(e)}`, 'message-hits-error'));
  }
}

/** Whether this page's schema knows history visibility (JOINED / SHARED). */
const HAS_VISIBILITY = typeof HistoryVisibility.JOINED === 'number';
el.groupSharedLabel.hidden = !HAS_VISIBILITY;
el.channelVisibilityLabel.hidden = !HAS_VISIBILITY;

/** Conversations asked for per ListConversations page (`?convPage=N` sets it, 1-1000). */
const CONV_PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get('convPage')) || 100));
/** Characters of a last-message preview made on this page (the server's are 80). */
const PREVIEW_CHARS = 80;
/** Typing: sent again at most this often while the user types (docs/PROTOCOL.md 10). */
const TYPING_EVERY_MS = 3000;
/** The server's windows (defaults): edit 48 h, recall 2 minutes for the sender. */
const EDIT_WINDOW_MS = 48 * 3600 * 1000;
const RECALL_WINDOW_MS = 2 * 60 * 1000;
/** A user name after an @ (the server's name rule, without the length bound). */
const MENTION_RE = /@([a-z0-9][a-z0-9_.-]*)/g;

/**
 * @typedef {import('./sdk.js').Message} Message
 * @typedef {{id: string, name: string, kind: 'direct'|'group', peer: string|null,
 *   lastSeq: number, readSeq: number, unread: number, mentions: number, listed: boolean, lastTs: number,
 *   lastSender: string, preview: string, readBy: Record<string, number>, markingTo: number,
 *   muted: boolean, pinned: boolean, role: string, members: {username: string, role: string}[]|null,
 *   gone: boolean, messages: Map<number, Message & {editSeq?: number}>, historyLoaded: boolean,
 *   topic: string, muteAll: boolean, visibility: string, maxMembers: number, profileSeq: number,
 *   firstSeq: number, channel: boolean, peek: boolean}} Conv
 *   lastSeq / readSeq: the conversation's last seq and this user's read position (only
 *   ever move forward); unread / mentions: the server's counts, kept current from events
 *   (see the top of this file); listed: the server's list had it;
 *   readBy: other members' read positions from receipts; markingTo: a MarkRead in flight;
 *   muted / pinned: this user's settings (9.3), from the list and 'settings' events;
 *   role / members: this user's role and the member list (groups); gone: this user left
 *   or was removed (the chat stays readable, nothing can be sent);
 *   topic / muteAll / visibility / maxMembers: the group's profile (maxMembers 0: the
 *   server's cap), from the list and GROUP_UPDATED events, as of seq profileSeq (an older event does not undo a newer state);
 *   firstSeq: the first seq this user may read (history visibility), from history;
 *   channel: a public channel (docs/PROTOCOL.md 9.10); peek: a channel opened from the
 *   directory without joining it (read-only history by Pull, not in the list, no pushes)
 * @typedef {{clientMsgId: string, conv: string, text: string, failed: string|null, ts: number,
 *   options: import('./sdk.js').SendOptions, attachment?: import('./sdk.js').Attachment}} PendingSend
 *   attachment: an image or file message's attachment as uploaded (shown until the message comes back)
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
  /** conversation -> user -> local time their "typing" ends. @type {Map<string, Map<string, number>>} */
  typing: new Map(),
  /** Direct peers online (true) or not, from PresenceQuery and PresenceEvent. @type {Map<string, boolean>} */
  presence: new Map(),
  /** Server time minus local time, from LoginOk. */
  skewMs: 0,
  /** What the compose box does: a plain message, a reply to `seq`, or an edit of `seq`. @type {{mode: 'reply'|'edit', conv: string, seq: number}|null} */
  compose: null,
  /** The last Typing{true} sent: conversation and when. @type {{conv: string, at: number}|null} */
  typingSent: null,
  membersOpen: false,
  /** The channel directory (ListChannels): open, the prefix shown, its entries. */
  dir: { open: false, prefix: '', asked: 0, /** @type {import('./sdk.js').ChannelInfo[]} */ channels: [] },
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
    if (c.peek) continue;
    convs[c.id] = {
      name: c.name, kind: c.kind, lastTs: c.lastTs, lastSeq: c.lastSeq, readSeq: c.readSeq,
      lastSender: c.lastSender, preview: c.preview, readBy: c.readBy, muted: c.muted, pinned: c.pinned,
      unread: c.unread, mentions: c.mentions, role: c.role,
      topic: c.topic, muteAll: c.muteAll, visibility: c.visibility, maxMembers: c.maxMembers,
      profileSeq: c.profileSeq, channel: c.channel,
    };
  }
  try {
    localStorage.setItem(appKey(), JSON.stringify({ v: 3, convs }));
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
      conv.unread = Number.isSafeInteger(c.unread) ? c.unread : Math.max(0, conv.lastSeq - conv.readSeq);
      conv.mentions = Number.isSafeInteger(c.mentions) ? c.mentions : 0;
      conv.role = typeof c.role === 'string' ? c.role : '';
      conv.topic = typeof c.topic === 'string' ? c.topic : '';
      conv.muteAll = c.muteAll === true;
      conv.visibility = typeof c.visibility === 'string' ? c.visibility : '';
      conv.maxMembers = Number.isSafeInteger(c.maxMembers) && c.maxMembers > 0 ? c.maxMembers : 0;
      conv.profileSeq = Number.isSafeInteger(c.profileSeq) ? c.profileSeq : 0;
      conv.channel = c.channel === true;
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
      unread: 0,
      mentions: 0,
      listed: false,
      lastTs: 0,
      lastSender: '',
      preview: '',
      readBy: {},
      markingTo: 0,
      muted: false,
      pinned: false,
      role: '',
      members: null,
      gone: false,
      messages: new Map(),
      historyLoaded: false,
      topic: '',
      muteAll: false,
      visibility: '',
      maxMembers: 0,
      profileSeq: 0,
      firstSeq: 1,
      channel: false,
      peek: false,
    };
    app.convs.set(id, c);
  } else if (name && c.name !== name) {
    c.name = name;
  }
  return c;
}

/** Unread messages of a conversation, as the server counts them (see the top of this file). @param {Conv} c */
function unreadOf(c) {
  return c.readSeq >= c.lastSeq ? 0 : Math.max(0, c.unread);
}

/** Whether a message counts as unread for this user when after the read position. @param {Message} m */
function countable(m) {
  if (m.kind === 'system') return (m.event?.actor ?? m.contact?.actor) !== app.me;
  return m.kind === 'message' && m.sender !== app.me && !m.recalled && !m.expired && !m.deleted;
}

/** Whether a message mentions this user (by name, or an @all by someone else). @param {Message} m */
function mentionsMe(m) {
  return m.kind === 'message' && m.sender !== app.me && !m.recalled && (m.mentions.includes(app.me) || m.mentionAll);
}

/**
 * Moves this user's read position of `c` forward and the counts with it: to the end, none
 * are left; part way, they are recounted from the messages held here when all of them
 * are, else asked of the server.
 * @param {Conv} c @param {number} seq
 */
function setRead(c, seq) {
  if (seq <= c.readSeq) return;
  c.readSeq = seq;
  if (c.readSeq >= c.lastSeq) {
    c.unread = 0;
    c.mentions = 0;
    return;
  }
  let unread = 0;
  let mentions = 0;
  for (let s = c.readSeq + 1; s <= c.lastSeq; s++) {
    const m = c.messages.get(s);
    if (!m) {
      scheduleListRefresh();
      c.unread = Math.min(c.unread, c.lastSeq - c.readSeq);
      return;
    }
    if (countable(m)) unread++;
    if (mentionsMe(m)) mentions++;
  }
  c.unread = unread;
  c.mentions = mentions;
}

/** @param {Message} m */
function previewOf(m) {
  if (m.kind === 'system') return systemText(m);
  if (m.recalled) return 'Message recalled';
  if (m.expired) return 'Message expired';
  if (m.deleted) return 'Message deleted';
  if (m.kind === 'recall') return 'Message recalled';
  if (m.attachment) return [...(attachmentPreview(m) ?? '')].slice(0, PREVIEW_CHARS).join('');
  if (m.text === null) return '';
  return [...m.text].slice(0, PREVIEW_CHARS).join('');
}

/** The preview of the newest message shown, when this page holds the conversation's last entry. @param {Conv} c */
function localPreview(c) {
  if (!c.messages.has(c.lastSeq)) return null;
  for (let s = c.lastSeq; s > 0; s--) {
    const m = c.messages.get(s);
    if (!m) return null;
    if (m.kind === 'edit' || m.kind === 'recall' || m.deleted) continue;
    return { preview: previewOf(m), sender: m.kind === 'system' ? '' : m.sender };
  }
  return null;
}

/** @param {Conv} c */
function updatePreview(c) {
  const p = localPreview(c);
  if (p) {
    c.preview = p.preview;
    c.lastSender = p.sender;
  }
}

/**
 * An EDIT or RECALL entry: applied to its target (if this page holds it), never shown
 * as a message of its own. Older edits than the one shown are skipped (history serves
 * the target with its latest text and the seqs of its edits).
 * @param {Conv} c @param {Message} m @param {boolean} live
 */
function applyChange(c, m, live) {
  const t = c.messages.get(m.targetSeq);
  if (m.kind === 'edit') {
    if (!t || t.recalled || m.recalled || m.text === null) return;
    const shown = Math.max(t.editSeq ?? 0, ...t.edits);
    if (m.seq <= shown) return;
    t.text = m.text;
    t.body = m.body;
    t.contentType = m.contentType;
    t.edited = true;
    t.editedMs = m.serverTimeMs;
    t.editSeq = m.seq;
    return;
  }
  // RECALL
  if (live && m.targetSeq > c.readSeq) {
    if (!t) scheduleListRefresh();
    else if (countable(t)) {
      c.unread = Math.max(0, c.unread - 1);
      if (mentionsMe(t)) c.mentions = Math.max(0, c.mentions - 1);
    }
  }
  if (!t) return;
  t.recalled = true;
  t.text = null;
  t.body = new Uint8Array();
  t.mentions = [];
  t.mentionAll = false;
}

/** @param {Message} m @param {boolean} own @param {boolean} live */
function addMessage(m, own, live) {
  // A CREATED event names a group this page did not know yet (a later rename wins).
  const before = app.convs.get(m.conversation);
  const created = m.kind === 'system' && m.event?.kind === 'CREATED' && (!before || before.profileSeq === 0 || before.name === before.id);
  const c = ensureConv(m.conversation, created ? m.event?.name : undefined);
  if (m.kind === 'system' && m.event?.kind === 'GROUP_UPDATED') applyProfile(c, m);
  // A conversation the server's list has not shown this page (yet): the list, refreshed
  // shortly, brings its real counts.
  if (live && !c.listed) scheduleListRefresh();
  const isNew = m.seq > c.lastSeq;
  const known = c.messages.get(m.seq);
  c.messages.set(m.seq, m);
  if (m.kind === 'edit' || m.kind === 'recall') applyChange(c, m, live && !known);
  if (m.kind === 'message' && known?.editSeq && !m.edits.length && m.kind === known.kind) m.editSeq = known.editSeq;
  if (isNew) {
    c.lastSeq = m.seq;
    if (live && m.seq > c.readSeq) {
      if (countable(m)) c.unread += 1;
      if (mentionsMe(m)) c.mentions += 1;
    }
  }
  if (m.seq >= c.lastSeq) {
    // A group event's text names its actor already.
    c.lastSender = m.kind === 'system' ? '' : m.sender;
    c.preview = previewOf(m);
    updatePreview(c);
  } else if (m.kind === 'edit' || m.kind === 'recall') {
    updatePreview(c);
  }
  c.lastTs = Math.max(c.lastTs, m.serverTimeMs);
  // The server moves a sender's read position to their own message (9.1).
  if (own) setRead(c, m.seq);
  if (own && m.clientMsgId) app.pending.delete(m.clientMsgId);
  // Whoever wrote has stopped typing.
  if (live) stopTyper(c.id, m.sender);
  if (live && m.kind === 'system') groupEvent(c, m);
  if (live && app.open === c.id) scheduleMarkRead(c);
}

/**
 * A GROUP_UPDATED event (live or from history): the group's profile after it, unless this
 * page already holds a newer one. @param {Conv} c @param {Message} m
 */
function applyProfile(c, m) {
  const e = m.event;
  if (!e || m.seq <= c.profileSeq) return;
  c.profileSeq = m.seq;
  if (e.name) c.name = e.name;
  c.topic = e.topic;
  c.muteAll = e.muteAll;
  c.maxMembers = e.maxMembers;
  if (e.visibility !== 'HISTORY_VISIBILITY_UNSPECIFIED') c.visibility = e.visibility;
}

/**
 * The group is gone for this user (dissolved): out of the list, closed if open.
 * @param {Conv} c @param {string} why shown when it was the open chat
 */
function dropGroup(c, why) {
  if (app.convs.get(c.id) !== c) return;
  app.convs.delete(c.id);
  if (app.open === c.id) {
    app.open = null;
    app.membersOpen = false;
    setCompose(null);
    el.chatError.textContent = why;
  }
  stopTypingIn(c.id);
  saveApp();
  scheduleRender();
}

/**
 * A group event seen live: the member list (and this user's place in it) changed.
 * @param {Conv} c @param {Message} m
 */
function groupEvent(c, m) {
  const e = m.event;
  if (!e) return;
  if (e.kind === 'DISSOLVED') {
    dropGroup(c, `${e.actor === app.me ? 'You' : e.actor} dissolved the group "${c.name}".`);
    return;
  }
  if (e.kind === 'ROLE_CHANGED' && e.users[0] === app.me && e.role) c.role = e.role;
  // History opened to members (SHARED): what was hidden from this user is theirs now.
  if (e.kind === 'GROUP_UPDATED' && (e.visibility === 'SHARED' || e.visibility === 'PUBLIC') && c.firstSeq > 1) {
    c.firstSeq = 1;
    c.historyLoaded = false;
    if (app.open === c.id) loadHistory(c);
  }
  if (e.kind === 'OWNER_CHANGED') {
    if (e.users[0] === app.me) c.role = 'OWNER';
    else if (e.actor === app.me) c.role = 'ADMIN';
  }
  if ((e.kind === 'MEMBERS_REMOVED' && e.users.includes(app.me)) || (e.kind === 'MEMBER_LEFT' && e.actor === app.me)) {
    c.gone = true;
    c.members = null;
  } else if (e.kind === 'MEMBERS_ADDED' && e.users.includes(app.me)) {
    c.gone = false;
  }
  if (!c.gone && (app.open === c.id || c.members)) loadMembers(c);
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
      c.gone = false;
      c.peek = false;
      c.channel = !!info.channel;
      if (info.kind === 'group') {
        c.role = info.role;
        // The list's profile is as of its lastSeq; a newer GROUP_UPDATED seen here wins.
        if (info.lastSeq >= c.profileSeq) {
          c.profileSeq = info.lastSeq;
          c.topic = info.topic;
          c.muteAll = info.muteAll;
          c.visibility = info.visibility;
          c.maxMembers = info.maxMembers;
        }
      }
      // Both only move forward; a message or a read that raced the list is kept.
      if (info.lastSeq >= c.lastSeq) {
        c.lastSeq = info.lastSeq;
        if (info.lastTimeMs) c.lastTs = Math.max(c.lastTs, info.lastTimeMs);
        c.lastSender = info.lastSender;
        c.preview = info.lastKind === 'system' ? `${info.lastSender}: group event` : info.lastPreview;
        if (info.lastKind === 'system') c.lastSender = '';
        const shown = c.messages.get(info.lastSeq);
        if (shown) c.preview = previewOf(shown);
        updatePreview(c);
        c.unread = info.unread;
        c.mentions = info.mentions;
      } else {
        // Live messages came after the list was read: its counts plus theirs.
        c.unread = info.unread;
        c.mentions = info.mentions;
        for (let s = info.lastSeq + 1; s <= c.lastSeq; s++) {
          const m = c.messages.get(s);
          if (!m || s <= Math.max(c.readSeq, info.readSeq)) continue;
          if (countable(m)) c.unread++;
          if (mentionsMe(m)) c.mentions++;
        }
      }
      c.readSeq = Math.max(c.readSeq, info.readSeq);
      if (c.readSeq >= c.lastSeq) {
        c.unread = 0;
        c.mentions = 0;
      }
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
    queryPresence();
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
  if (!client || app.open !== c.id || c.peek || document.visibilityState === 'hidden') return;
  let newest = 0;
  for (const s of c.messages.keys()) if (s > newest) newest = s;
  if (newest <= c.readSeq || newest <= c.markingTo) return;
  c.markingTo = newest;
  try {
    const r = await client.markRead(c.id, newest);
    setRead(c, r.readSeq);
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
  if (app.open !== id) {
    stopTyping();
    setCompose(null);
    app.membersOpen = false;
  }
  app.open = id;
  scheduleMarkRead(c);
  saveApp();
  el.chatError.textContent = '';
  render();
  el.compose.focus();
  if (!c.historyLoaded) loadHistory(c);
  if (c.kind === 'group' && !c.gone && !c.peek) loadMembers(c);
}

/** The member list of a group (and this user's role in it). @param {Conv} c */
async function loadMembers(c) {
  const client = app.client;
  if (!client) return;
  try {
    const members = await client.members(c.id);
    c.members = members;
    c.role = members.find((m) => m.username === app.me)?.role ?? c.role;
    c.gone = !members.some((m) => m.username === app.me);
    scheduleRender();
  } catch (e) {
    if (e instanceof TernError && e.codeName === 'FORBIDDEN') {
      c.gone = true;
      c.members = null;
      scheduleRender();
    } else {
      console.warn('tern: members', e);
    }
  }
}

/** Asks who of the direct peers is online (those not known yet; PresenceEvents keep it current). */
async function queryPresence() {
  const client = app.client;
  if (!client) return;
  const peers = [...new Set([...app.convs.values()].map((c) => c.peer).filter((p) => p && !app.presence.has(p)))].slice(0, 100);
  if (peers.length === 0) return;
  try {
    for (const u of await client.presence(/** @type {string[]} */ (peers))) {
      // A PresenceEvent that came meanwhile is newer than this answer.
      if (!app.presence.has(u.username)) app.presence.set(u.username, u.onlineDevices.length > 0);
    }
    scheduleRender();
  } catch (e) {
    console.warn('tern: presence', e);
  }
}

// ---- typing ----

/** @type {Map<string, any>} conversation + user -> timer */
const typerTimers = new Map();

/** `user` types in `conv` until `until` (local time). @param {string} conv @param {string} user @param {number} until */
function startTyper(conv, user, until) {
  let m = app.typing.get(conv);
  if (!m) app.typing.set(conv, (m = new Map()));
  m.set(user, until);
  const key = `${conv}\n${user}`;
  clearTimeout(typerTimers.get(key));
  typerTimers.set(key, setTimeout(() => stopTyper(conv, user), Math.max(0, until - Date.now())));
  scheduleRender();
}

/** @param {string} conv @param {string} user */
function stopTyper(conv, user) {
  const key = `${conv}\n${user}`;
  clearTimeout(typerTimers.get(key));
  typerTimers.delete(key);
  const m = app.typing.get(conv);
  if (!m || !m.delete(user)) return;
  if (m.size === 0) app.typing.delete(conv);
  scheduleRender();
}

/** "bob is typing…", "bob and carol are typing…", or '' @param {string} conv */
function typingText(conv) {
  const now = Date.now();
  const users = [...(app.typing.get(conv) ?? new Map()).entries()].filter(([, t]) => t > now).map(([u]) => u).sort();
  if (users.length === 0) return '';
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length <= 3) return `${users.slice(0, -1).join(', ')} and ${users.at(-1)} are typing…`;
  return `${users.length} people are typing…`;
}

/** The user typed in the compose box: Typing{true} at most every TYPING_EVERY_MS. */
function onComposeInput() {
  const client = app.client;
  const c = app.open ? app.convs.get(app.open) : null;
  if (!client || !c || c.gone) return;
  if (el.compose.value.trim() === '' || app.compose?.mode === 'edit') {
    stopTyping();
    return;
  }
  // A 1:1 chat that has no message yet does not exist on the server.
  if (c.kind === 'direct' && c.lastSeq === 0) return;
  const now = Date.now();
  if (app.typingSent && app.typingSent.conv === c.id && now - app.typingSent.at < TYPING_EVERY_MS) return;
  if (app.typingSent && app.typingSent.conv !== c.id) stopTyping();
  app.typingSent = { conv: c.id, at: now };
  client.typing(c.id, true).catch((e) => console.warn('tern: typing', e));
}

/** Forgets who types in `conv` (and this user's own typing there, unsent). @param {string} conv */
function stopTypingIn(conv) {
  for (const u of [...(app.typing.get(conv)?.keys() ?? [])]) stopTyper(conv, u);
  if (app.typingSent?.conv === conv) app.typingSent = null;
}

/** Typing{false} for the conversation a Typing{true} went to, if one did. */
function stopTyping() {
  const t = app.typingSent;
  app.typingSent = null;
  if (t && app.client) app.client.typing(t.conv, false).catch((e) => console.warn('tern: typing', e));
}

// ---- reply, edit, recall, delete ----

/** Sets what the compose box does (null: a plain message). @param {{mode: 'reply'|'edit', conv: string, seq: number}|null} mode */
function setCompose(mode) {
  const was = app.compose;
  app.compose = mode;
  if (was?.mode === 'edit' && mode?.mode !== 'edit') el.compose.value = '';
  if (mode?.mode === 'edit') {
    const m = app.convs.get(mode.conv)?.messages.get(mode.seq);
    el.compose.value = m?.text ?? '';
    stopTyping();
  }
  renderComposeContext();
  el.compose.focus();
}

function renderComposeContext() {
  const k = app.compose;
  const c = k ? app.convs.get(k.conv) : null;
  if (!k || !c || k.conv !== app.open) {
    el.composeContext.hidden = true;
    el.send.textContent = 'Send';
    return;
  }
  const m = c.messages.get(k.seq);
  el.composeContext.hidden = false;
  el.composeContext.dataset.mode = k.mode;
  el.composeContextText.textContent =
    k.mode === 'edit' ? `Editing: ${m?.text ?? ''}` : `Replying to ${m?.sender ?? ''}: ${m ? quoteText(m) : `message ${k.seq}`}`;
  el.send.textContent = k.mode === 'edit' ? 'Save' : 'Send';
}

/** @param {Message} m */
function quoteText(m) {
  if (m.kind === 'system') return systemText(m);
  if (m.recalled) return 'Message recalled';
  if (m.expired) return 'Message expired';
  if (m.deleted) return 'Message deleted';
  if (m.attachment) return [...(attachmentPreview(m) ?? '')].slice(0, PREVIEW_CHARS).join('');
  if (m.text === null) return `(${m.contentType || 'attachment'})`;
  return [...m.text].slice(0, PREVIEW_CHARS).join('');
}

/** @param {Conv} c @param {Message} m */
async function recallMessage(c, m) {
  const client = app.client;
  if (!client) return;
  try {
    await client.recall(c.id, m.seq);
    // The RECALL entry comes back as a message too; apply it now.
    applyChange(c, /** @type {any} */ ({ kind: 'recall', targetSeq: m.seq, seq: 0 }), false);
    if (app.compose?.seq === m.seq && app.compose.conv === c.id) setCompose(null);
    updatePreview(c);
    el.chatError.textContent = '';
  } catch (e) {
    el.chatError.textContent =
      e instanceof TernError && e.codeName === 'WINDOW_EXPIRED' ? 'Too late to recall this message.' : `recall: ${errorText(e)}`;
  }
  scheduleRender();
}

/** @param {Conv} c @param {Message} m */
async function deleteMessage(c, m) {
  const client = app.client;
  if (!client) return;
  try {
    await client.deleteForMe(c.id, m.seq);
    m.deleted = true;
    m.text = null;
    updatePreview(c);
    el.chatError.textContent = '';
  } catch (e) {
    el.chatError.textContent = `delete: ${errorText(e)}`;
  }
  scheduleRender();
}

/** What this user may do to `m`, now. @param {Conv} c @param {Message} m */
function actionsFor(c, m) {
  const own = m.sender === app.me;
  const now = Date.now() + app.skewMs;
  const alive = !m.recalled && !m.expired && !m.deleted;
  const admin = c.kind === 'group' && (c.role === 'OWNER' || c.role === 'ADMIN');
  return {
    reply: alive && !c.gone,
    edit: alive && own && !c.gone && m.text !== null && now - m.serverTimeMs < EDIT_WINDOW_MS,
    recall: alive && !c.gone && ((own && now - m.serverTimeMs < RECALL_WINDOW_MS) || admin),
    delete: !m.deleted,
  };
}

/** @param {Conv} c */
async function loadHistory(c) {
  const client = app.client;
  if (!client) return;
  try {
    const h = await client.history(c.id, 0, 50);
    c.historyLoaded = true;
    c.firstSeq = h.firstSeq;
    for (const m of h.messages) addMessage(m, m.sender === app.me, false);
    if (app.open === c.id) scheduleMarkRead(c);
    render();
  } catch (e) {
    // A 1:1 chat that has no message yet does not exist on the server (FORBIDDEN).
    if (e instanceof TernError && e.codeName === 'FORBIDDEN' && c.kind === 'direct') {
      c.historyLoaded = true;
      return;
    }
    // A channel whose history is not PUBLIC reads for members only.
    if (e instanceof TernError && e.codeName === 'FORBIDDEN' && c.peek) {
      c.historyLoaded = true;
      if (app.open === c.id) el.chatError.textContent = 'Only members read this channel: join it to read along.';
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
  app.typing.clear();
  app.presence.clear();
  profiles.known.clear();
  profiles.asked.clear();
  profiles.queue.length = 0;
  resetBlobs();
  app.compose = null;
  app.typingSent = null;
  loadApp();
  const client = new TernClient({ url: wsUrl(), username, password: password ?? undefined, device });
  app.client = client;
  /** @type {any} */ (window).__tern.client = client;
  const sub = (/** @type {string} */ t, /** @type {(d: any) => void} */ f) => app.unsubscribe.push(client.on(t, f));

  sub('state', (s) => {
    /** @type {any} */ (window).__tern.states.push(s.state);
    showState(s);
    if (s.state === 'connected') {
      if (client.session?.serverTimeMs) app.skewMs = Number(client.session.serverTimeMs) - Date.now();
      // Presence changes while disconnected were missed: asked again after the list.
      app.presence.clear();
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
      kind: message.kind,
      replyTo: message.replyTo,
      mentions: message.mentions,
      mentionAll: message.mentionAll,
      targetSeq: message.targetSeq,
    });
    addMessage(message, own, true);
    saveApp();
    scheduleRender();
    if (message.contact) refreshFriends();
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
        replyTo: p.options.replyTo ?? 0,
        mentions: p.options.mentions ?? [],
        mentionAll: !!p.options.mentionAll,
        targetSeq: 0,
        edited: false,
        editedMs: 0,
        edits: [],
        recalled: false,
        expired: false,
        deleted: false,
        expiresMs: 0,
        attachment: p.attachment ?? null,
      });
    }
    c.lastTs = Math.max(c.lastTs, ack.serverTimeMs);
    if (ack.seq >= c.lastSeq) {
      c.lastSeq = ack.seq;
      c.lastSender = app.me;
      c.preview = [...p.text].slice(0, PREVIEW_CHARS).join('');
      if (p.options.attachment) c.preview = `File: ${p.options.attachment.name}`;
    }
    setRead(c, ack.seq);
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
      c.lastSeq = Math.max(c.lastSeq, r.readSeq);
      setRead(c, r.readSeq);
    } else {
      // A receipt: r.user read up to r.readSeq.
      c.readBy[r.user] = Math.max(c.readBy[r.user] ?? 0, r.readSeq);
    }
    saveApp();
    scheduleRender();
  });
  sub('settings', (s) => applySettings(s));
  sub('typing', (t) => {
    if (t.user === app.me) return;
    if (!t.typing) {
      stopTyper(t.conversation, t.user);
      return;
    }
    // Until expires_ms (server time), on this clock; within sane bounds of a wrong clock.
    const now = Date.now();
    const until = t.expiresMs ? t.expiresMs - app.skewMs : now + 6000;
    startTyper(t.conversation, t.user, Math.min(now + 10_000, Math.max(now + 1000, until)));
  });
  sub('hidden', (h) => {
    const c = app.convs.get(h.conversation);
    const m = c?.messages.get(h.seq);
    if (c && m) {
      m.deleted = true;
      m.text = null;
      m.body = new Uint8Array();
      updatePreview(c);
    }
    // The server's counts may have changed (a hidden unread message).
    if (!c || h.seq > c.readSeq) scheduleListRefresh();
    scheduleRender();
  });
  sub('presence', (p) => {
    app.presence.set(p.user, p.online);
    scheduleRender();
  });
  sub('profile', (p) => {
    profiles.known.set(p.user, p);
    scheduleRender();
  });
  sub('caught-up', () => {
    /** @type {any} */ (window).__tern.caughtUp += 1;
  });
  sub('send-failed', (f) => {
    const p = app.pending.get(f.clientMsgId);
    if (p) p.failed = `${f.codeName}: ${f.message}`;
    // Refused for good (e.g. a muted group, FORBIDDEN): said in the open chat too.
    if (p && p.conv === app.open) el.chatError.textContent = `Not sent: ${f.message || f.codeName}`;
    scheduleRender();
  });

  // Sends left over from an earlier page (not acked yet): shown as pending, resent by the SDK.
  for (const p of client.pending) {
    const conv = 'user' in p.target ? directConversation(username, p.target.user) : p.target.conversation;
    ensureConv(conv);
    app.pending.set(p.clientMsgId, {
      clientMsgId: p.clientMsgId, conv, text: p.text ?? '(binary)', failed: null, ts: Date.now(), options: p.options ?? {},
    });
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
    // A channel read from the directory without joining is not one of this user's.
    if (c.peek) continue;
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
    li.classList.toggle('channel', c.channel);
    const info = document.createElement('div');
    info.className = 'info';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = c.kind === 'group' ? `# ${c.name}` : shownName(c.name);
    if (c.channel) name.append(channelMark());
    if (c.kind === 'direct') rowAvatar(name, c.name);
    const preview = document.createElement('span');
    preview.className = 'preview';
    preview.dataset.testid = 'preview';
    const who = c.lastSender === app.me ? 'You' : c.kind === 'group' ? c.lastSender : '';
    preview.textContent = c.preview ? (who ? `${who}: ${c.preview}` : c.preview) : c.lastSeq > 0 ? '(attachment)' : 'No messages yet';
    const typing = typingText(c.id);
    if (typing) {
      preview.textContent = typing;
      preview.classList.add('typing');
    }
    info.append(name, preview);
    if (c.kind === 'direct' && c.peer) {
      // The peer's presence: a dot, from PresenceQuery and PresenceEvent pushes.
      const online = app.presence.get(c.peer);
      const dot = document.createElement('span');
      dot.className = 'presence';
      dot.dataset.testid = 'presence';
      dot.dataset.online = String(online === true);
      dot.title = online === true ? 'online' : online === false ? 'offline' : '';
      li.append(dot);
    }
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
      if (c.mentions > 0) {
        const at = document.createElement('span');
        at.className = 'mention-mark';
        at.dataset.testid = 'mention-mark';
        at.textContent = '@';
        at.title = `${c.mentions} unread mention${c.mentions > 1 ? 's' : ''}`;
        li.append(at);
      }
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
  el.pinToggle.hidden = !c || c.peek;
  el.muteToggle.hidden = !c || c.peek;
  el.membersToggle.hidden = !c || c.kind !== 'group' || c.peek;
  el.joinChannel.hidden = !c || !c.peek;
  el.chatPresence.hidden = !c || c.kind !== 'direct';
  // Mute-all (docs/PROTOCOL.md 9): only the owner and admins may send; the server refuses
  // a plain member's send, the page does not offer it.
  const peek = !!c && c.peek;
  const mutedForMe = !!c && c.kind === 'group' && !c.gone && !peek && c.muteAll && c.role !== 'OWNER' && c.role !== 'ADMIN';
  el.compose.disabled = !c || c.gone || peek || mutedForMe;
  el.send.disabled = !c || c.gone || peek || mutedForMe;
  renderBlobControls(c);
  el.compose.placeholder = peek
    ? 'Join the channel to post'
    : c?.gone
      ? 'You are no longer a member of this group'
      : mutedForMe
        ? 'The group is muted'
        : 'Message';
  const mutedNote = !!c && c.kind === 'group' && !c.gone && !peek && c.muteAll;
  el.composeNote.hidden = !mutedNote && !peek;
  el.composeNote.textContent = peek
    ? 'You are reading this channel without joining it: join to post and to get new messages as they come.'
    : mutedForMe
      ? 'The group is muted: only the owner and admins can send messages.'
      : mutedNote
        ? 'The group is muted: only the owner and admins (you too) can send messages.'
        : '';
  el.chatTopic.hidden = !c || c.kind !== 'group' || !c.topic;
  el.chatTopic.textContent = c?.kind === 'group' ? c.topic : '';
  el.chatTopic.title = el.chatTopic.textContent;
  renderComposeContext();
  renderMembers(c);
  if (!c) {
    el.chatTitle.textContent = 'No conversation open';
    el.chatSub.textContent = '';
    el.messages.replaceChildren();
    el.typing.textContent = '';
    return;
  }
  el.chatTitle.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
  if (c.kind === 'direct' && c.peer) {
    const online = app.presence.get(c.peer);
    el.chatPresence.dataset.online = String(online === true);
    el.chatPresence.title = online === true ? `${c.peer} is online` : online === false ? `${c.peer} is offline` : '';
    el.chatSub.textContent = online === true ? 'online' : online === false ? 'offline' : '';
  } else {
    const n = c.members?.length ?? 0;
    el.chatSub.textContent = c.peek
      ? 'channel · not joined (read only)'
      : c.gone
        ? 'not a member'
        : c.members
          ? `${c.channel ? 'channel · ' : ''}${n} member${n === 1 ? '' : 's'}`
          : c.channel ? 'channel' : '';
  }
  el.typing.textContent = typingText(c.id);
  headerToggle(el.pinToggle, 'pinned', c.pinned ? 'Unpin' : 'Pin', c.pinned);
  headerToggle(el.muteToggle, 'muted', c.muted ? 'Unmute' : 'Mute', c.muted);
  const frag = document.createDocumentFragment();
  if (c.kind === 'group' && c.firstSeq > 1 && c.messages.has(c.firstSeq)) {
    // History visibility JOINED: what came before this user was added is not theirs.
    const li = document.createElement('li');
    li.className = 'msg system hidden-history';
    li.dataset.testid = 'hidden-history';
    li.textContent = 'Messages from before you joined are not shown.';
    frag.append(li);
  }
  const seen = new Set();
  for (const m of [...c.messages.values()].sort((a, b) => a.seq - b.seq)) {
    if (m.clientMsgId) seen.add(m.clientMsgId);
    // Edits and recalls change their target; a message deleted for this user is not shown.
    if (m.kind === 'edit' || m.kind === 'recall' || m.deleted) continue;
    frag.append(messageItem(c, m));
  }
  for (const p of app.pending.values()) {
    if (p.conv !== c.id || seen.has(p.clientMsgId)) continue;
    const li = bubble(app.me, p.text, p.failed ? 'failed' : 'sending…', true);
    if (p.options.replyTo) li.insertBefore(quoteOf(c, p.options.replyTo), li.querySelector('.text'));
    decoratePending(li, p);
    li.classList.add(p.failed ? 'failed' : 'pending');
    li.dataset.cmid = p.clientMsgId;
    if (p.failed) li.title = p.failed;
    frag.append(li);
  }
  uploadBubbles(c, frag);
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

/** @param {Conv} c @param {Message} m */
function messageItem(c, m) {
  if (m.kind === 'system') {
    const li = document.createElement('li');
    li.className = 'msg system';
    li.dataset.seq = String(m.seq);
    li.textContent = systemText(m);
    return li;
  }
  const own = m.sender === app.me;
  const text = m.recalled
    ? 'This message was recalled'
    : m.expired
      ? 'This message expired'
      : m.text ?? `(${m.contentType}, ${m.body.length} bytes)`;
  const li = bubble(shownName(m.sender), text, timeFmt.format(new Date(m.serverTimeMs)), own);
  li.dataset.seq = String(m.seq);
  if (m.clientMsgId) li.dataset.cmid = m.clientMsgId;
  const body = /** @type {HTMLElement} */ (li.querySelector('.text'));
  if (m.recalled || m.expired) {
    li.classList.add(m.recalled ? 'recalled' : 'expired');
    body.classList.add('placeholder');
  } else if (m.text !== null && (m.mentions.length > 0 || m.mentionAll)) {
    body.replaceChildren(...withMentions(m.text, m));
    if (mentionsMe(m)) li.classList.add('mentions-me');
  }
  if (m.replyTo) li.insertBefore(quoteOf(c, m.replyTo), body);
  decorateMessage(li, m);
  if (m.edited && !m.recalled) {
    const e = document.createElement('span');
    e.className = 'edited';
    e.dataset.testid = 'edited';
    e.textContent = 'edited';
    if (m.editedMs) e.title = `edited ${timeFmt.format(new Date(m.editedMs))}`;
    /** @type {HTMLElement} */ (li.querySelector('.meta')).append(e);
  }
  const can = actionsFor(c, m);
  const bar = document.createElement('div');
  bar.className = 'actions';
  for (const [action, label] of /** @type {const} */ ([['reply', 'Reply'], ['edit', 'Edit'], ['recall', 'Recall'], ['delete', 'Delete']])) {
    if (!can[action]) continue;
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.action = action;
    b.textContent = label;
    b.title =
      action === 'delete' ? 'Delete for me (on all my devices)' : action === 'recall' ? 'Recall for everyone' : label;
    b.addEventListener('click', () => {
      if (action === 'reply') setCompose({ mode: 'reply', conv: c.id, seq: m.seq });
      else if (action === 'edit') setCompose({ mode: 'edit', conv: c.id, seq: m.seq });
      else if (action === 'recall') recallMessage(c, m);
      else deleteMessage(c, m);
    });
    bar.append(b);
  }
  if (bar.childElementCount > 0) li.append(bar);
  if (own && !m.recalled) {
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

/**
 * The text with each @name it mentions (and @all) as a highlighted span.
 * @param {string} text @param {Message} m
 */
function withMentions(text, m) {
  /** @type {(string|HTMLElement)[]} */
  const out = [];
  let at = 0;
  for (const x of text.matchAll(MENTION_RE)) {
    const name = x[1];
    const hit = name === 'all' ? m.mentionAll : m.mentions.includes(name);
    if (!hit) continue;
    const i = /** @type {number} */ (x.index);
    if (i > at) out.push(text.slice(at, i));
    const span = document.createElement('span');
    span.className = name === app.me || name === 'all' ? 'mention me' : 'mention';
    span.dataset.testid = 'mention';
    span.textContent = x[0];
    out.push(span);
    at = i + x[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/** The quote of the message a reply answers. @param {Conv} c @param {number} seq */
function quoteOf(c, seq) {
  const q = document.createElement('div');
  q.className = 'quote';
  q.dataset.testid = 'quote';
  q.dataset.replyTo = String(seq);
  const t = c.messages.get(seq);
  const who = document.createElement('span');
  who.className = 'quote-from';
  who.textContent = t ? (t.kind === 'system' ? 'group' : t.sender) : `message ${seq}`;
  const what = document.createElement('span');
  what.className = 'quote-text';
  what.textContent = t ? quoteText(t) : 'not loaded';
  q.append(who, what);
  q.addEventListener('click', () => {
    el.messages.querySelector(`li[data-seq="${seq}"]`)?.scrollIntoView({ block: 'center' });
  });
  return q;
}

/** The member panel of an open group. @param {Conv|null} c */
function renderMembers(c) {
  const show = !!c && c.kind === 'group' && app.membersOpen;
  el.membersPanel.hidden = !show;
  el.membersToggle.setAttribute('aria-pressed', String(show));
  if (!show || !c) return;
  const admin = !c.gone && (c.role === 'OWNER' || c.role === 'ADMIN');
  el.addMemberForm.hidden = !admin;
  el.leaveGroup.hidden = c.gone;
  el.leaveGroup.textContent = c.channel ? 'Leave channel' : 'Leave group';
  const frag = document.createDocumentFragment();
  const order = { OWNER: 0, ADMIN: 1 };
  const members = [...(c.members ?? [])].sort(
    (a, b) => (order[a.role] ?? 2) - (order[b.role] ?? 2) || (a.username < b.username ? -1 : 1),
  );
  for (const m of members) {
    const li = document.createElement('li');
    li.dataset.user = m.username;
    li.dataset.testid = 'member';
    const name = document.createElement('span');
    name.className = 'member-name';
    name.textContent = m.username === app.me ? `${m.username} (you)` : m.username;
    li.append(name);
    if (m.role === 'OWNER' || m.role === 'ADMIN') {
      const r = document.createElement('span');
      r.className = 'role';
      r.textContent = m.role.toLowerCase();
      li.append(r);
    }
    const actions = document.createElement('div');
    actions.className = 'member-actions';
    const owner = !c.gone && c.role === 'OWNER';
    // The owner makes members admins and back, and may hand the group over (9).
    if (owner && m.username !== app.me && m.role !== 'OWNER') {
      const toAdmin = m.role !== 'ADMIN';
      actions.append(
        memberButton(toAdmin ? 'make-admin' : 'make-member', toAdmin ? 'Make admin' : 'Make member', async () => {
          await app.client?.setMemberRole(c.id, m.username, toAdmin ? 'ADMIN' : 'MEMBER');
          await loadMembers(c);
        }, `${toAdmin ? 'make' : 'unmake'} admin ${m.username}`),
        memberButton('transfer-owner', 'Make owner', async () => {
          if (!confirm(`Hand "${c.name}" over to ${m.username}? You will be an admin.`)) return;
          await app.client?.transferOwnership(c.id, m.username);
          c.role = 'ADMIN';
          await loadMembers(c);
        }, `hand over to ${m.username}`),
      );
    }
    // An owner removes anyone else; an admin removes plain members (docs/PROTOCOL.md 9).
    const removable = admin && m.username !== app.me && (c.role === 'OWNER' || m.role === 'MEMBER');
    if (removable) {
      const b = memberButton('remove-member', 'Remove', async () => {
        await app.client?.removeMembers(c.id, [m.username]);
        await loadMembers(c);
      }, `remove ${m.username}`);
      b.classList.add('danger');
      actions.append(b);
    }
    if (actions.childElementCount > 0) li.append(actions);
    frag.append(li);
  }
  el.memberList.replaceChildren(frag);
  renderGroupSettings(c, admin);
}

/**
 * A small button of a member row; a failure shows in the chat's error line.
 * @param {string} testid @param {string} label @param {() => Promise<void>} action @param {string} what
 */
function memberButton(testid, label, action, what) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'secondary';
  b.dataset.testid = testid;
  b.textContent = label;
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      await action();
      el.chatError.textContent = '';
    } catch (e) {
      el.chatError.textContent = `${what}: ${errorText(e)}`;
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/**
 * The group's profile form (owner and admins) and the Dissolve button (owner). The inputs
 * are filled from the group when it (or its profile) changes, not while being edited.
 * @param {Conv} c @param {boolean} admin
 */
function renderGroupSettings(c, admin) {
  const f = el.groupSettings;
  f.hidden = !admin;
  el.dissolveGroup.hidden = c.gone || c.role !== 'OWNER';
  el.groupEditVisibilityLabel.hidden = !HAS_VISIBILITY;
  // PUBLIC (anyone reads, members or not) is for channels only (docs/PROTOCOL.md 9.10).
  el.groupEditVisibilityPublic.hidden = !c.channel;
  el.groupEditVisibilityPublic.disabled = !c.channel;
  if (!admin) return;
  const key = JSON.stringify([c.id, c.profileSeq, c.name, c.topic, c.muteAll, c.visibility, c.maxMembers, c.channel]);
  if (f.dataset.key === key || f.contains(document.activeElement)) return;
  f.dataset.key = key;
  el.groupEditName.value = c.name;
  el.groupEditTopic.value = c.topic;
  el.groupEditMuteAll.checked = c.muteAll;
  el.groupEditVisibility.value = shownVisibility(c);
  el.groupEditMaxMembers.value = c.maxMembers > 0 ? String(c.maxMembers) : '';
}

/**
 * The settings form's value for the group's history visibility (a group made before the
 * setting existed reads as SHARED). @param {Conv} c
 */
function shownVisibility(c) {
  if (c.visibility === 'JOINED') return 'JOINED';
  if (c.visibility === 'PUBLIC' && c.channel) return 'PUBLIC';
  return 'SHARED';
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
  if (!e && m.contact) return contactText(m.contact);
  // No event: an operator's notice (docs/ADMIN_API.md); its body is the text.
  if (!e) return m.text ? `notice: ${m.text}` : 'system message';
  const users = e.users.join(', ');
  switch (e.kind) {
    case 'CREATED':
      return `${e.actor} created "${e.name}"${users ? ` with ${users}` : ''}`;
    case 'MEMBERS_ADDED':
      // JoinChannel: the joiner is actor and member.
      if (e.users.length === 1 && e.users[0] === e.actor) return `${e.actor} joined`;
      return `${e.actor} added ${users}`;
    case 'MEMBERS_REMOVED':
      return `${e.actor} removed ${users}`;
    case 'MEMBER_LEFT':
      return `${e.actor} left`;
    case 'ROLE_CHANGED':
      return e.role === 'ADMIN' ? `${e.actor} made ${users} an admin` : `${e.actor} made ${users} a member`;
    case 'OWNER_CHANGED':
      return `${e.actor} handed the group to ${users}`;
    case 'GROUP_UPDATED':
      return `${e.actor} ${profileChange(m)}`;
    case 'DISSOLVED':
      return `${e.actor} dissolved the group`;
    default:
      return `${e.kind} by ${e.actor}`;
  }
}

/**
 * What a GROUP_UPDATED event changed: it carries the whole profile after the change, so
 * it is compared with the profile before it (the nearest earlier CREATED or GROUP_UPDATED
 * this page holds); without one, the profile is described as it now is.
 * @param {Message} m
 */
function profileChange(m) {
  const e = /** @type {import('./sdk.js').GroupEventInfo} */ (m.event);
  const c = app.convs.get(m.conversation);
  let prev = null;
  for (const x of c?.messages.values() ?? []) {
    if (x.seq >= m.seq || x.kind !== 'system' || (x.event?.kind !== 'CREATED' && x.event?.kind !== 'GROUP_UPDATED')) continue;
    if (!prev || x.seq > prev.seq) prev = x;
  }
  const vis = (/** @type {string} */ v) =>
    v === 'JOINED'
      ? 'made history before joining hidden from new members'
      : v === 'PUBLIC'
        ? 'made the history public'
        : 'made the whole history visible to new members';
  if (!prev?.event) {
    const parts = [`updated the group "${e.name}"`];
    if (e.topic) parts.push(`topic "${e.topic}"`);
    if (e.muteAll) parts.push('muted: only the owner and admins may send');
    return parts.join(', ');
  }
  const p = prev.event;
  const isCreated = p.kind === 'CREATED';
  const before = {
    name: p.name,
    topic: isCreated ? '' : p.topic,
    muteAll: isCreated ? false : p.muteAll,
    maxMembers: isCreated ? 0 : p.maxMembers,
    visibility: p.visibility,
  };
  const parts = [];
  if (e.name && e.name !== before.name) parts.push(`renamed the group to "${e.name}"`);
  if (e.topic !== before.topic) parts.push(e.topic ? `set the topic to "${e.topic}"` : 'cleared the topic');
  if (e.muteAll !== before.muteAll) parts.push(e.muteAll ? 'muted the group: only the owner and admins may send' : 'unmuted the group');
  if (e.maxMembers !== before.maxMembers) {
    parts.push(e.maxMembers ? `set the member limit to ${e.maxMembers}` : "set the member limit to the server's");
  }
  const known = (/** @type {string} */ v) => v === 'JOINED' || v === 'SHARED' || v === 'PUBLIC';
  if (known(e.visibility) && known(before.visibility) && e.visibility !== before.visibility) parts.push(vis(e.visibility));
  return parts.length > 0 ? parts.join(', ') : 'updated the group';
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

let hitsTimer = /** @type {any} */ (null);
el.messageSearch.addEventListener('input', () => {
  clearTimeout(hitsTimer);
  hitsTimer = setTimeout(searchHistory, 300);
});

let peopleTimer = /** @type {any} */ (null);
el.peopleSearch.addEventListener('input', () => {
  clearTimeout(peopleTimer);
  peopleTimer = setTimeout(searchPeople, 300);
});

el.profileToggle.addEventListener('click', async () => {
  el.profileForm.hidden = !el.profileForm.hidden;
  el.profileToggle.setAttribute('aria-expanded', String(!el.profileForm.hidden));
  if (el.profileForm.hidden || !app.client) return;
  let mine = profiles.known.get(app.me);
  if (!mine) {
    try {
      [mine] = await app.client.getProfiles([app.me]);
      if (mine) profiles.known.set(mine.user, mine);
    } catch (err) {
      el.chatError.textContent = `profile: ${errorText(err)}`;
    }
  }
  el.profileName.value = mine?.displayName ?? '';
  el.profileStatus.value = mine?.status ?? '';
  showOwnAvatar();
  el.profileName.focus();
});

el.profileForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const client = app.client;
  if (!client) return;
  try {
    const p = await client.setProfile({ displayName: el.profileName.value, status: el.profileStatus.value });
    profiles.known.set(p.user, p);
    el.profileForm.hidden = true;
    el.profileToggle.setAttribute('aria-expanded', 'false');
    el.chatError.textContent = '';
    scheduleRender();
  } catch (err) {
    el.chatError.textContent = `profile: ${errorText(err)}`;
  }
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

/**
 * The mentions of a message typed in a group: each @name of a member (not this user), and
 * @all when this user is an owner or admin (for anyone else it is plain text).
 * @param {Conv} c @param {string} text
 */
function mentionsIn(c, text) {
  if (c.kind !== 'group') return {};
  const members = new Set((c.members ?? []).map((m) => m.username));
  const mentions = new Set();
  let all = false;
  for (const x of text.matchAll(MENTION_RE)) {
    if (x[1] === 'all') all = c.role === 'OWNER' || c.role === 'ADMIN';
    else if (x[1] !== app.me && members.has(x[1])) mentions.add(x[1]);
  }
  return { ...(mentions.size ? { mentions: [...mentions].slice(0, 100) } : {}), ...(all ? { mentionAll: true } : {}) };
}

/** @param {Conv} c @param {number} seq @param {string} text */
async function saveEdit(c, seq, text) {
  const client = app.client;
  if (!client) return;
  const m = c.messages.get(seq);
  try {
    const ack = await client.edit(c.id, seq, text);
    // The EDIT entry comes back as a message too; show the new text now.
    if (m && !m.recalled && (m.editSeq ?? 0) < ack.seq) {
      m.text = text;
      m.body = new TextEncoder().encode(text);
      m.edited = true;
      m.editedMs = ack.serverTimeMs;
      m.editSeq = ack.seq;
    }
    updatePreview(c);
    el.chatError.textContent = '';
  } catch (err) {
    el.chatError.textContent =
      err instanceof TernError && err.codeName === 'WINDOW_EXPIRED' ? 'Too late to edit this message.' : `edit: ${errorText(err)}`;
  }
  scheduleRender();
}

el.composeForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const client = app.client;
  const c = app.open ? app.convs.get(app.open) : null;
  const text = el.compose.value;
  if (!client || !c || c.gone || text.trim() === '') return;
  const k = app.compose?.conv === c.id ? app.compose : null;
  if (k?.mode === 'edit') {
    setCompose(null);
    el.compose.value = '';
    saveEdit(c, k.seq, text);
    return;
  }
  const target = c.kind === 'direct' && c.peer ? { user: c.peer } : { conversation: c.id };
  const options = { ...mentionsIn(c, text), ...(k?.mode === 'reply' ? { replyTo: k.seq } : {}) };
  stopTyping();
  if (k) setCompose(null);
  const p = client.sendText(target, text, options);
  app.pending.set(p.clientMsgId, { clientMsgId: p.clientMsgId, conv: c.id, text, failed: null, ts: Date.now(), options });
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
  app.dir = { open: false, prefix: '', asked: app.dir.asked + 1, channels: [] };
  renderDirectory();
  showState({ state: 'closed' });
  render();
  el.password.value = '';
  showLogin();
});

el.moreConvs.addEventListener('click', () => refreshConversations(true));

// ---- public channels (docs/PROTOCOL.md 9.10) ----

/** The small "channel" mark after a channel's name. */
function channelMark() {
  const m = document.createElement('span');
  m.className = 'channel-mark';
  m.dataset.testid = 'channel-mark';
  m.textContent = 'channel';
  m.title = 'A public channel: listed in the directory';
  return m;
}

let dirTimer = /** @type {any} */ (null);

/** Asks the directory again for the prefix in the search box (the newest answer wins). */
async function refreshDirectory() {
  const client = app.client;
  if (!client || !app.dir.open) return;
  const prefix = el.channelSearch.value.trim();
  const asked = ++app.dir.asked;
  try {
    const channels = await client.listChannels(prefix, 50);
    if (client !== app.client || asked !== app.dir.asked) return;
    app.dir.prefix = prefix;
    app.dir.channels = channels;
    renderDirectory();
  } catch (e) {
    if (asked === app.dir.asked) el.chatError.textContent = `channels: ${errorText(e)}`;
  }
}

function renderDirectory() {
  el.channelDir.hidden = !app.dir.open;
  el.channelsToggle.setAttribute('aria-expanded', String(app.dir.open));
  if (!app.dir.open) return;
  const frag = document.createDocumentFragment();
  for (const ch of app.dir.channels) {
    // This page may know better than the answer (joined or left since).
    const known = app.convs.get(ch.conversation);
    const joined = known && !known.peek && !known.gone ? true : ch.joined && !(known?.gone);
    const li = document.createElement('li');
    li.dataset.testid = 'channel';
    li.dataset.conv = ch.conversation;
    li.dataset.name = ch.name;
    li.tabIndex = 0;
    li.title = `Open # ${ch.name}`;
    const info = document.createElement('div');
    info.className = 'ch-info';
    const name = document.createElement('span');
    name.className = 'ch-name';
    name.dataset.testid = 'channel-title';
    name.textContent = `# ${ch.name}`;
    info.append(name);
    if (ch.topic) {
      const topic = document.createElement('span');
      topic.className = 'ch-topic';
      topic.dataset.testid = 'channel-topic';
      topic.textContent = ch.topic;
      topic.title = ch.topic;
      info.append(topic);
    }
    const meta = document.createElement('span');
    meta.className = 'ch-meta';
    meta.dataset.testid = 'channel-meta';
    // A channel whose history is not PUBLIC is read by its members only (9.10).
    const membersOnly = ch.visibility === 'JOINED' || ch.visibility === 'SHARED';
    meta.textContent = `${ch.memberCount} member${ch.memberCount === 1 ? '' : 's'}${ch.broadcastOnly ? ' · broadcast only' : ''}${
      membersOnly ? ' · members read it' : ''
    }`;
    info.append(meta);
    li.append(info);
    if (joined) {
      const j = document.createElement('span');
      j.className = 'ch-joined';
      j.dataset.testid = 'channel-joined';
      j.textContent = 'joined';
      li.append(j);
    } else {
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.testid = 'channel-join';
      b.textContent = 'Join';
      b.addEventListener('click', (e) => {
        e.stopPropagation();
        joinChannel(ch);
      });
      b.addEventListener('keydown', (e) => e.stopPropagation());
      li.append(b);
    }
    li.addEventListener('click', () => openChannel(ch));
    li.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') openChannel(ch);
    });
    frag.append(li);
  }
  el.channelList.replaceChildren(frag);
  el.channelEmpty.hidden = app.dir.channels.length > 0;
  el.channelEmpty.textContent = app.dir.prefix ? `No channel starts with "${app.dir.prefix}"` : 'No channels yet';
}

/**
 * Opens a channel of the directory: a joined one as usual, else read-only (its history by
 * Pull, which PUBLIC history allows without joining) with a Join button.
 * @param {import('./sdk.js').ChannelInfo} ch
 */
function openChannel(ch) {
  let c = app.convs.get(ch.conversation);
  if (!c || c.gone) {
    if (c) app.convs.delete(c.id);
    c = ensureConv(ch.conversation, ch.name);
    c.kind = 'group';
    c.peek = true;
  }
  c.channel = true;
  if (c.peek) {
    c.topic = ch.topic;
    c.muteAll = ch.broadcastOnly;
    c.visibility = ch.visibility;
  }
  openConv(c.id);
}

/** @param {{conversation: string, name: string, topic?: string, broadcastOnly?: boolean, visibility?: string}} ch */
async function joinChannel(ch) {
  const client = app.client;
  if (!client) return;
  try {
    await client.joinChannel(ch.conversation);
    let c = app.convs.get(ch.conversation);
    if (c?.gone) {
      app.convs.delete(c.id);
      c = undefined;
    }
    if (!c) {
      c = ensureConv(ch.conversation, ch.name);
      c.kind = 'group';
      c.topic = ch.topic ?? '';
      c.muteAll = !!ch.broadcastOnly;
      c.visibility = ch.visibility ?? '';
    }
    c.peek = false;
    c.channel = true;
    c.gone = false;
    if (!c.role || c.role === 'ROLE_UNSPECIFIED') c.role = 'MEMBER';
    c.lastTs = Math.max(c.lastTs, Date.now() + app.skewMs);
    el.chatError.textContent = '';
    saveApp();
    // A member reads what the channel's visibility gives members (a preview may have
    // been refused, or shown more than a JOINED member gets): load it again.
    c.historyLoaded = false;
    if (app.open === c.id) {
      loadMembers(c);
      loadHistory(c);
    }
    render();
    renderDirectory();
    scheduleListRefresh();
    refreshDirectory();
  } catch (e) {
    el.chatError.textContent = `join "${ch.name}": ${errorText(e)}`;
  }
}

// ---- friends (docs/PROTOCOL.md 9.13): the list, incoming requests, the request form ----

/** @type {{open: boolean, contacts: import('./sdk.js').Contact[], asked: number}} */
const friends = { open: false, contacts: [], asked: 0 };
const friendsEl = {
  toggle: /** @type {HTMLButtonElement} */ ($('friends-toggle')),
  incoming: $('friends-incoming'),
  section: $('friends'),
  form: /** @type {HTMLFormElement} */ ($('friend-request-form')),
  user: /** @type {HTMLInputElement} */ ($('friend-user')),
  message: /** @type {HTMLInputElement} */ ($('friend-message')),
  list: $('friend-list'),
  empty: $('friends-empty'),
};

/** What a contact event says, as a line in the chat. @param {import('./sdk.js').ContactEventInfo} c */
function contactText(c) {
  const who = c.actor === app.me ? 'You' : c.actor;
  const whom = c.user === app.me ? 'you' : c.user;
  switch (c.kind) {
    case 'REQUESTED':
      return `${who} asked ${whom} to be friends${c.message ? `: "${c.message}"` : ''}`;
    case 'ACCEPTED':
      return `${who} accepted: ${c.actor === app.me ? `you and ${c.user}` : `you and ${c.actor}`} are friends`;
    case 'DECLINED':
      return `${who} declined the friend request`;
    case 'CANCELED':
      return `${who} withdrew the friend request`;
    case 'REMOVED':
      return `${who} ended the friendship`;
    default:
      return `${c.kind} by ${c.actor}`;
  }
}

/** Asks the server for the contact list (the newest answer wins). */
async function refreshFriends() {
  const client = app.client;
  if (!client) return;
  const asked = ++friends.asked;
  try {
    const contacts = await client.contacts();
    if (client !== app.client || asked !== friends.asked) return;
    friends.contacts = contacts;
    renderFriends();
  } catch (e) {
    if (asked === friends.asked) el.chatError.textContent = `friends: ${errorText(e)}`;
  }
}

/** Runs one contact change, then shows the list as it is now. @param {() => Promise<void>} call @param {string} what */
async function friendAction(call, what) {
  try {
    await call();
    el.chatError.textContent = '';
  } catch (e) {
    el.chatError.textContent = `${what}: ${errorText(e)}`;
  }
  refreshFriends();
}

const STATE_LABEL = { friend: 'friend', incoming: 'wants to be friends', outgoing: 'request sent', blocked: 'blocked' };

function renderFriends() {
  const incoming = friends.contacts.filter((c) => c.state === 'incoming').length;
  friendsEl.incoming.textContent = String(incoming);
  friendsEl.incoming.hidden = incoming === 0;
  friendsEl.section.hidden = !friends.open;
  friendsEl.toggle.setAttribute('aria-expanded', String(friends.open));
  if (!friends.open) return;
  const client = app.client;
  const frag = document.createDocumentFragment();
  for (const c of friends.contacts) {
    const li = document.createElement('li');
    li.dataset.testid = 'friend';
    li.dataset.user = c.user;
    li.dataset.state = c.state;
    const name = document.createElement('span');
    name.className = 'friend-name';
    name.textContent = c.user;
    const state = document.createElement('span');
    state.className = 'friend-state';
    state.dataset.testid = 'friend-state';
    state.textContent = /** @type {any} */ (STATE_LABEL)[c.state] ?? c.state;
    li.append(name, ' ', state);
    if (c.message) {
      const msg = document.createElement('q');
      msg.dataset.testid = 'friend-message-text';
      msg.textContent = c.message;
      li.append(' ', msg);
    }
    /** @param {string} label @param {string} testid @param {() => Promise<void>} call */
    const button = (label, testid, call) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary';
      b.textContent = label;
      b.dataset.testid = testid;
      b.addEventListener('click', () => friendAction(call, `${label.toLowerCase()} ${c.user}`));
      li.append(' ', b);
    };
    if (!client) continue;
    if (c.state === 'incoming') {
      button('Accept', 'friend-accept', () => client.acceptFriendRequest(c.user));
      button('Decline', 'friend-decline', () => client.declineFriendRequest(c.user));
    } else if (c.state === 'outgoing') {
      button('Cancel', 'friend-cancel', () => client.cancelFriendRequest(c.user));
    } else if (c.state === 'friend') {
      button('Remove', 'friend-remove', () => client.removeFriend(c.user));
    }
    if (c.state === 'blocked') {
      button('Unblock', 'friend-unblock', () => client.unblockUser(c.user));
    } else {
      button('Block', 'friend-block', () => client.blockUser(c.user));
    }
    frag.append(li);
  }
  friendsEl.list.replaceChildren(frag);
  friendsEl.empty.hidden = friends.contacts.length > 0;
}

friendsEl.toggle.addEventListener('click', () => {
  friends.open = !friends.open;
  renderFriends();
  if (friends.open) {
    refreshFriends();
    friendsEl.user.focus();
  }
});

friendsEl.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const client = app.client;
  const user = friendsEl.user.value.trim().toLowerCase();
  if (!client) return;
  if (!isValidUsername(user)) {
    el.chatError.textContent = 'Enter a user name to send a friend request.';
    return;
  }
  const message = friendsEl.message.value;
  friendsEl.user.value = '';
  friendsEl.message.value = '';
  friendAction(() => client.sendFriendRequest(user, message), `friend request to ${user}`);
});

el.channelsToggle.addEventListener('click', () => {
  app.dir.open = !app.dir.open;
  renderDirectory();
  if (app.dir.open) {
    refreshDirectory();
    el.channelSearch.focus();
  }
});

el.channelSearch.addEventListener('input', () => {
  clearTimeout(dirTimer);
  dirTimer = setTimeout(refreshDirectory, 200);
});

el.newChannelToggle.addEventListener('click', () => {
  el.newChannelForm.hidden = !el.newChannelForm.hidden;
  el.newChannelToggle.setAttribute('aria-expanded', String(!el.newChannelForm.hidden));
  if (!el.newChannelForm.hidden) el.channelName.focus();
});

el.newChannelForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const client = app.client;
  if (!client) return;
  const name = el.channelName.value.trim();
  if (!name) {
    el.chatError.textContent = 'Give the channel a name.';
    return;
  }
  const broadcastOnly = el.channelBroadcast.checked;
  const visibility = HAS_VISIBILITY ? el.channelVisibility.value : 'PUBLIC';
  try {
    const g = await client.createChannel(name, HAS_VISIBILITY ? { broadcastOnly, visibility } : { broadcastOnly });
    const c = ensureConv(g.conversation, name);
    c.kind = 'group';
    c.role = 'OWNER';
    c.channel = true;
    c.peek = false;
    c.muteAll = broadcastOnly;
    c.visibility = visibility;
    c.lastSeq = Math.max(c.lastSeq, g.seq);
    c.readSeq = Math.max(c.readSeq, g.seq);
    c.lastTs = Math.max(c.lastTs, Date.now() + app.skewMs);
    el.channelName.value = '';
    el.channelBroadcast.checked = false;
    el.channelVisibility.value = 'PUBLIC';
    el.newChannelForm.hidden = true;
    el.newChannelToggle.setAttribute('aria-expanded', 'false');
    el.chatError.textContent = '';
    saveApp();
    openConv(c.id);
    refreshDirectory();
  } catch (err) {
    el.chatError.textContent = `create channel: ${errorText(err)}`;
  }
});

el.joinChannel.addEventListener('click', () => {
  const c = app.open ? app.convs.get(app.open) : null;
  if (c?.peek) joinChannel({ conversation: c.id, name: c.name, topic: c.topic, broadcastOnly: c.muteAll, visibility: c.visibility });
});

el.compose.addEventListener('input', onComposeInput);
el.compose.addEventListener('blur', () => {
  if (el.compose.value.trim() === '') stopTyping();
});
el.compose.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && app.compose) setCompose(null);
});
el.composeCancel.addEventListener('click', () => setCompose(null));

el.newGroupToggle.addEventListener('click', () => {
  el.newGroupForm.hidden = !el.newGroupForm.hidden;
  el.newGroupToggle.setAttribute('aria-expanded', String(!el.newGroupForm.hidden));
  if (!el.newGroupForm.hidden) el.groupName.focus();
});

/** User names from a comma/space separated list. @param {string} s */
function userList(s) {
  return [...new Set(s.split(/[\s,]+/).map((u) => u.trim().toLowerCase()).filter(Boolean))];
}

el.newGroupForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const client = app.client;
  if (!client) return;
  const name = el.groupName.value.trim();
  const members = userList(el.groupMembers.value).filter((u) => u !== app.me);
  const bad = members.find((u) => !isValidUsername(u));
  if (!name || bad) {
    el.chatError.textContent = bad ? `"${bad}" is not a user name.` : 'Give the group a name.';
    return;
  }
  try {
    const shared = HAS_VISIBILITY && el.groupShared.checked;
    const g = await client.createGroup(name, members, shared ? { visibility: 'SHARED' } : {});
    const c = ensureConv(g.conversation, name);
    c.kind = 'group';
    c.role = 'OWNER';
    // The server's default for a new group is JOINED (docs/PROTOCOL.md 9.9).
    if (HAS_VISIBILITY) c.visibility = shared ? 'SHARED' : 'JOINED';
    c.lastSeq = Math.max(c.lastSeq, g.seq);
    c.readSeq = Math.max(c.readSeq, g.seq);
    c.lastTs = Math.max(c.lastTs, Date.now() + app.skewMs);
    el.groupName.value = '';
    el.groupMembers.value = '';
    el.groupShared.checked = false;
    el.newGroupForm.hidden = true;
    el.chatError.textContent = '';
    saveApp();
    openConv(c.id);
    app.membersOpen = true;
    render();
  } catch (err) {
    el.chatError.textContent = `create group: ${errorText(err)}`;
  }
});

el.membersToggle.addEventListener('click', () => {
  const c = app.open ? app.convs.get(app.open) : null;
  app.membersOpen = !app.membersOpen;
  if (app.membersOpen && c && !c.gone) loadMembers(c);
  render();
});

el.addMemberForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const c = app.open ? app.convs.get(app.open) : null;
  const client = app.client;
  if (!client || !c) return;
  const users = userList(el.addMember.value).filter((u) => u !== app.me);
  const bad = users.find((u) => !isValidUsername(u));
  if (users.length === 0 || bad) {
    el.chatError.textContent = bad ? `"${bad}" is not a user name.` : 'Enter a user name to add.';
    return;
  }
  try {
    await client.addMembers(c.id, users);
    el.addMember.value = '';
    el.chatError.textContent = '';
    await loadMembers(c);
  } catch (err) {
    el.chatError.textContent = `add ${users.join(', ')}: ${errorText(err)}`;
  }
});

el.leaveGroup.addEventListener('click', async () => {
  const c = app.open ? app.convs.get(app.open) : null;
  const client = app.client;
  if (!client || !c || c.kind !== 'group') return;
  if (!confirm(`Leave ${c.channel ? 'the channel ' : ''}"${c.name}"?`)) return;
  try {
    stopTyping();
    await client.leaveGroup(c.id);
    if (c.channel) refreshDirectory();
    // Gone from the server's list: gone from this one.
    app.convs.delete(c.id);
    app.open = null;
    app.membersOpen = false;
    setCompose(null);
    el.chatError.textContent = '';
    saveApp();
    render();
    scheduleListRefresh();
  } catch (err) {
    el.chatError.textContent = `leave: ${errorText(err)}`;
  }
});

el.groupSettings.addEventListener('submit', async (e) => {
  e.preventDefault();
  const c = app.open ? app.convs.get(app.open) : null;
  const client = app.client;
  if (!client || !c || c.kind !== 'group') return;
  // Only what changed goes to the server (an absent field keeps its value).
  /** @type {{name?: string, topic?: string, muteAll?: boolean, maxMembers?: number, visibility?: string}} */
  const changes = {};
  const name = el.groupEditName.value.trim();
  if (!name) {
    el.chatError.textContent = 'A group needs a name.';
    return;
  }
  if (name !== c.name) changes.name = name;
  const topic = el.groupEditTopic.value.trim();
  if (topic !== c.topic) changes.topic = topic;
  if (el.groupEditMuteAll.checked !== c.muteAll) changes.muteAll = el.groupEditMuteAll.checked;
  const vis = el.groupEditVisibility.value;
  if (HAS_VISIBILITY && vis !== shownVisibility(c)) changes.visibility = vis;
  // The member limit: empty (or 0) is the server's cap.
  const limitText = el.groupEditMaxMembers.value.trim();
  if (!/^\d*$/.test(limitText) || !Number.isSafeInteger(Number(limitText)) || Number(limitText) > 0xffffffff) {
    el.chatError.textContent = "The member limit is a whole number (empty: the server's limit).";
    return;
  }
  const limit = Number(limitText);
  if (limit !== c.maxMembers) changes.maxMembers = limit;
  if (Object.keys(changes).length === 0) {
    el.chatError.textContent = 'Nothing to change.';
    return;
  }
  try {
    await client.updateGroup(c.id, /** @type {any} */ (changes));
    el.chatError.textContent = '';
    // The GROUP_UPDATED event (to every member, this page too) brings the new profile;
    // the form shows it then.
    if (document.activeElement instanceof HTMLElement && el.groupSettings.contains(document.activeElement)) {
      document.activeElement.blur();
    }
  } catch (err) {
    el.chatError.textContent = `group settings: ${errorText(err)}`;
  }
});

el.dissolveGroup.addEventListener('click', async () => {
  const c = app.open ? app.convs.get(app.open) : null;
  const client = app.client;
  if (!client || !c || c.kind !== 'group') return;
  if (!confirm(`Dissolve "${c.name}"? Every member loses the group and its history.`)) return;
  try {
    stopTypingIn(c.id);
    await client.dissolveGroup(c.id);
    dropGroup(c, `You dissolved the group "${c.name}".`);
    scheduleListRefresh();
  } catch (err) {
    el.chatError.textContent = `dissolve: ${errorText(err)}`;
  }
});

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

// ---- images and files (docs/PROTOCOL.md 9.14) ----
//
// The composer's attach button uploads the chosen file with the SDK (uploadBlob: its type
// from its content, so a PNG/JPEG/GIF/WebP is an image message whatever its name, anything
// else a file message), shown meanwhile as an own bubble with a progress bar, then sends
// the message with the attachment. An image message shows the thumbnail the server made
// (in the message: JPEG bytes -> a blob: URL) at once; a click opens the full image by a
// signed URL (GetBlobUrl) in an overlay. A file message shows its name, size and a download
// link (a signed URL, fetched again when it is about to expire). Files dropped on the chat or
// pasted into the composer go the same way. Avatars: set from an image
// in "My profile"; shown next to other users' messages, in the header of a direct chat and on
// its row in the list.

const blobs = {
  /** blob id -> blob: URL of its thumbnail (made once per page). @type {Map<string, string>} */
  thumbs: new Map(),
  /** blob id -> signed URL, its expiry (server time), or the request in flight. @type {Map<string, {url: string, expiresMs: number, failedAt: number, asking: Promise<string|null>|null}>} */
  urls: new Map(),
  /** Uploads in progress on this page. @type {Map<number, {id: number, conv: string, name: string, sent: number, total: number}>} */
  uploads: new Map(),
  nextUpload: 1,
};
/** Test hook: every progress report of this page's uploads. */
/** @type {any} */ (window).__tern.uploads = [];

const blobEl = {
  attach: $('attach'),
  attachInput: /** @type {HTMLInputElement} */ ($('attach-input')),
  lightbox: $('lightbox'),
  lightboxImg: /** @type {HTMLImageElement} */ ($('lightbox-img')),
  lightboxName: $('lightbox-name'),
  lightboxDownload: /** @type {HTMLAnchorElement} */ ($('lightbox-download')),
  lightboxClose: /** @type {HTMLButtonElement} */ ($('lightbox-close')),
  avatarInput: /** @type {HTMLInputElement} */ ($('profile-avatar')),
  avatarImg: /** @type {HTMLImageElement} */ ($('profile-avatar-img')),
  avatarRemove: /** @type {HTMLButtonElement} */ ($('profile-avatar-remove')),
};

/** A document icon (the page ships no emoji font). */
const FILE_ICON =
  '<svg viewBox="0 0 24 24" width="1.2em" height="1.2em" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' +
  '<path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z"/><path d="M14 2v6h6"/></svg>';

/** A signed URL is asked again when it has less than this left. */
const URL_MARGIN_MS = 60_000;

/** Forgets the blob state of the previous user (startClient). */
function resetBlobs() {
  for (const u of blobs.thumbs.values()) URL.revokeObjectURL(u);
  blobs.thumbs.clear();
  blobs.urls.clear();
  blobs.uploads.clear();
  closeLightbox();
}

/** A file name the server takes: no '/' or control characters, at most 255 bytes. @param {string} name */
function attachmentName(name) {
  // eslint-disable-next-line no-control-regex
  let n = (name || 'file').replace(/[\u0000-\u001f\u007f-\u009f/]/g, '_');
  const enc = new TextEncoder();
  while (enc.encode(n).length > 255) n = [...n].slice(0, -1).join('');
  return n || 'file';
}

/** @param {number} n bytes */
function sizeText(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** The blob: URL of an image attachment's thumbnail, or null. @param {import('./sdk.js').Attachment} a */
function thumbUrl(a) {
  if (!a.thumbnail || a.thumbnail.length === 0) return null;
  let u = blobs.thumbs.get(a.blobId);
  if (!u) {
    u = URL.createObjectURL(new Blob([a.thumbnail], { type: 'image/jpeg' }));
    blobs.thumbs.set(a.blobId, u);
  }
  return u;
}

/**
 * A signed URL of the blob that is good for a while yet: the one held, or a new one
 * (GetBlobUrl). Null when the server refuses (the blob is gone, or not this user's to read).
 * @param {string} blobId
 * @returns {Promise<string|null>}
 */
function signedUrl(blobId) {
  const now = Date.now() + app.skewMs;
  const held = blobs.urls.get(blobId);
  if (held?.asking) return held.asking;
  if (held?.url && held.expiresMs - now > URL_MARGIN_MS) return Promise.resolve(held.url);
  const client = app.client;
  if (!client) return Promise.resolve(null);
  const entry = held ?? { url: '', expiresMs: 0, failedAt: 0, asking: null };
  blobs.urls.set(blobId, entry);
  entry.asking = client.blobUrl(blobId).then(
    (u) => {
      entry.url = u.url;
      entry.expiresMs = u.expiresMs;
      entry.asking = null;
      return u.url;
    },
    () => {
      entry.asking = null;
      entry.failedAt = Date.now();
      return null;
    },
  );
  return entry.asking;
}

/**
 * The signed URL held for the blob if it is still good; else null, and one is asked for
 * (the page renders again when it comes). A refusal is not asked again for a minute.
 * @param {string} blobId
 */
function heldUrl(blobId) {
  const now = Date.now() + app.skewMs;
  const held = blobs.urls.get(blobId);
  if (held?.url && held.expiresMs - now > URL_MARGIN_MS) return held.url;
  if (held?.asking || (held?.failedAt && Date.now() - held.failedAt < 60_000)) return null;
  signedUrl(blobId).then((u) => {
    if (u) scheduleRender();
  });
  return null;
}

/**
 * What an image or file message shows above its caption.
 * @param {import('./sdk.js').Attachment} a
 */
function attachmentView(a) {
  if (a.image) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'thumb';
    b.dataset.testid = 'thumb';
    b.dataset.blob = a.blobId;
    b.title = `${a.name} (${a.width}×${a.height}, ${sizeText(a.size)}): open`;
    const src = thumbUrl(a);
    if (src) {
      const img = document.createElement('img');
      img.src = src;
      img.alt = a.name;
      if (a.thumbnailWidth && a.thumbnailHeight) {
        img.width = a.thumbnailWidth;
        img.height = a.thumbnailHeight;
      }
      b.append(img);
    } else {
      b.textContent = `Photo: ${a.name}`;
    }
    b.addEventListener('click', () => openImage(a));
    return b;
  }
  const box = document.createElement('div');
  box.className = 'file';
  box.dataset.testid = 'file';
  box.dataset.blob = a.blobId;
  const name = document.createElement('span');
  name.className = 'file-name';
  name.dataset.testid = 'file-name';
  name.textContent = a.name || 'file';
  const icon = document.createElement('span');
  icon.className = 'file-icon';
  icon.innerHTML = FILE_ICON;
  const size = document.createElement('span');
  size.className = 'file-size';
  size.dataset.testid = 'file-size';
  size.textContent = sizeText(a.size);
  size.title = `${a.size} bytes, ${a.mime}`;
  box.append(icon, name, size, downloadLink(a.blobId, a.name, 'file-link'));
  return box;
}

/**
 * A download link of a blob by its signed URL; a click on one that is about to expire
 * asks for a new URL first. @param {string} blobId @param {string} name @param {string} testid
 */
function downloadLink(blobId, name, testid) {
  const link = document.createElement('a');
  link.dataset.testid = testid;
  link.textContent = 'Download';
  link.download = name || 'file';
  const url = heldUrl(blobId);
  if (url) link.href = url;
  link.addEventListener('click', async (e) => {
    if (heldUrl(blobId) === link.href) return;
    e.preventDefault();
    const fresh = await signedUrl(blobId);
    if (!fresh) {
      el.chatError.textContent = `${name}: the file is no longer available`;
      return;
    }
    link.href = fresh;
    link.click();
  });
  return link;
}

/** Opens the full image in the overlay. @param {import('./sdk.js').Attachment} a */
async function openImage(a) {
  blobEl.lightboxName.textContent = `${a.name} · ${a.width}×${a.height} · ${sizeText(a.size)}`;
  blobEl.lightboxImg.removeAttribute('src');
  blobEl.lightboxImg.alt = a.name;
  blobEl.lightboxImg.dataset.blob = a.blobId;
  blobEl.lightboxDownload.removeAttribute('href');
  blobEl.lightboxDownload.download = a.name || 'image';
  blobEl.lightbox.hidden = false;
  const url = await signedUrl(a.blobId);
  if (blobEl.lightboxImg.dataset.blob !== a.blobId || blobEl.lightbox.hidden) return;
  if (!url) {
    blobEl.lightboxName.textContent = `${a.name}: the image is no longer available`;
    return;
  }
  blobEl.lightboxImg.src = url;
  blobEl.lightboxDownload.href = url;
}

function closeLightbox() {
  blobEl.lightbox.hidden = true;
  blobEl.lightboxImg.removeAttribute('src');
  delete blobEl.lightboxImg.dataset.blob;
}

/** A user's avatar as a small image, when they have one and its URL is at hand. @param {string} user */
function avatarOf(user, big = false) {
  const p = /** @type {any} */ (profiles.known.get(user));
  if (!p?.avatar) return null;
  const url = heldUrl(p.avatar);
  if (!url) return null;
  const img = document.createElement('img');
  img.className = big ? 'avatar big' : 'avatar';
  img.dataset.testid = 'avatar';
  img.dataset.user = user;
  img.alt = '';
  img.src = url;
  return img;
}

/** Hook of renderConvList: a direct peer's avatar before their name. @param {HTMLElement} name @param {string} peer */
function rowAvatar(name, peer) {
  const av = avatarOf(peer);
  if (av) name.prepend(av);
}

/**
 * Hook of messageItem: the attachment above the caption, and the sender's avatar.
 * @param {HTMLElement} li @param {Message} m
 */
function decorateMessage(li, m) {
  const body = /** @type {HTMLElement} */ (li.querySelector('.text'));
  if (m.attachment && !m.recalled && !m.expired && !m.deleted) {
    li.classList.add(m.attachment.image ? 'has-image' : 'has-file');
    li.insertBefore(attachmentView(m.attachment), body);
    if (!m.text) body.hidden = true;
  }
  if (m.sender !== app.me) {
    const av = avatarOf(m.sender);
    if (av) li.querySelector('.meta')?.prepend(av);
  }
}

/**
 * Hook of renderChat's pending sends: an attachment still being sent shows its name
 * (and the thumbnail it will have). @param {HTMLElement} li @param {PendingSend} p
 */
function decoratePending(li, p) {
  const ref = p.options.attachment;
  if (!ref) return;
  const body = /** @type {HTMLElement} */ (li.querySelector('.text'));
  // After a reload only the reference is left (the outbox keeps no thumbnail).
  if (p.attachment) li.insertBefore(attachmentView(p.attachment), body);
  else li.insertBefore(document.createTextNode(`File: ${ref.name}`), body);
  if (!p.text) body.hidden = true;
}

/**
 * Hook of renderChat: the attach button goes with the send button; the direct peer's
 * avatar in the header. @param {Conv|null} c
 */
function renderBlobControls(c) {
  const off = el.send.disabled || !c;
  blobEl.attachInput.disabled = off;
  blobEl.attach.classList.toggle('disabled', off);
  document.querySelector('#chat-head > .avatar')?.remove();
  if (c?.kind === 'direct' && c.peer) {
    const av = avatarOf(c.peer, true);
    if (av) el.chatPresence.after(av);
  }
}

/** Hook of renderChat: the uploads into the open conversation, each with its progress. @param {Conv} c @param {DocumentFragment} frag */
function uploadBubbles(c, frag) {
  for (const u of blobs.uploads.values()) {
    if (u.conv !== c.id) continue;
    const pct = u.total ? Math.floor((u.sent / u.total) * 100) : 0;
    const li = bubble(app.me, '', `uploading… ${pct}%`, true);
    li.classList.add('pending', 'uploading');
    li.dataset.testid = 'upload';
    const body = /** @type {HTMLElement} */ (li.querySelector('.text'));
    body.textContent = `${u.name} · ${sizeText(u.total)}`;
    const bar = document.createElement('progress');
    bar.dataset.testid = 'upload-progress';
    bar.max = Math.max(1, u.total);
    bar.value = u.sent;
    bar.dataset.percent = String(pct);
    li.append(bar);
    frag.append(li);
  }
}

/**
 * Uploads `file` and sends it to the open conversation `c` as an image or file message.
 * @param {Conv} c @param {File} file
 */
async function sendFile(c, file) {
  const client = app.client;
  if (!client || c.gone || c.peek) return;
  if (file.size === 0) {
    el.chatError.textContent = `${file.name}: the file is empty`;
    return;
  }
  const name = attachmentName(file.name);
  const target = c.kind === 'direct' && c.peer ? { user: c.peer } : { conversation: c.id };
  const u = { id: blobs.nextUpload++, conv: c.id, name, sent: 0, total: file.size };
  blobs.uploads.set(u.id, u);
  el.chatError.textContent = '';
  scheduleRender();
  let info;
  try {
    info = await client.uploadBlob(file, '', (sent, total) => {
      u.sent = sent;
      u.total = total;
      /** @type {any} */ (window).__tern.uploads.push({ name, sent, total });
      scheduleRender();
    });
  } catch (err) {
    if (client === app.client) el.chatError.textContent = `upload ${name}: ${errorText(err)}`;
    return;
  } finally {
    blobs.uploads.delete(u.id);
    scheduleRender();
  }
  if (client !== app.client) return;
  const attachment = { blobId: info.blobId, name };
  const p = client.sendAttachment(target, attachment);
  app.pending.set(p.clientMsgId, {
    clientMsgId: p.clientMsgId, conv: c.id, text: '', failed: null, ts: Date.now(), options: { attachment },
    attachment: { ...info, name, image: info.width > 0 },
  });
  p.catch((err) => {
    const q = app.pending.get(p.clientMsgId);
    if (q && !q.failed) q.failed = errorText(err);
    scheduleRender();
  });
  scheduleRender();
}

/** What a message with an attachment says in a preview or a quote. @param {Message} m */
function attachmentPreview(m) {
  const a = m.attachment;
  if (!a) return null;
  const label = a.image ? `Photo: ${a.name}` : `File: ${a.name}`;
  return m.text ? `${label} ${m.text}` : label;
}

blobEl.attachInput.addEventListener('change', () => {
  const c = app.open ? app.convs.get(app.open) : null;
  const files = [...(blobEl.attachInput.files ?? [])];
  blobEl.attachInput.value = '';
  if (!c) return;
  for (const f of files) sendFile(c, f);
});

/** Files dropped on the chat or pasted into the composer are sent like attached ones. @param {File[]} files */
function sendFiles(files) {
  const c = app.open ? app.convs.get(app.open) : null;
  if (!c || blobEl.attachInput.disabled) return;
  for (const f of files) sendFile(c, f);
}
$('chat').addEventListener('dragover', (e) => {
  if (e.dataTransfer?.types.includes('Files') && !blobEl.attachInput.disabled) e.preventDefault();
});
$('chat').addEventListener('drop', (e) => {
  const files = [...(e.dataTransfer?.files ?? [])];
  if (files.length === 0) return;
  e.preventDefault();
  sendFiles(files);
});
el.compose.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData?.files ?? [])];
  if (files.length === 0) return;
  e.preventDefault();
  sendFiles(files);
});

blobEl.lightboxClose.addEventListener('click', closeLightbox);
blobEl.lightbox.addEventListener('click', (e) => {
  if (e.target === blobEl.lightbox) closeLightbox();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !blobEl.lightbox.hidden) closeLightbox();
});

/** The avatar preview in the profile form. */
function showOwnAvatar() {
  const p = /** @type {any} */ (profiles.known.get(app.me));
  const url = p?.avatar ? heldUrl(p.avatar) : null;
  blobEl.avatarImg.hidden = !url;
  if (url) blobEl.avatarImg.src = url;
  blobEl.avatarRemove.hidden = !p?.avatar;
  if (p?.avatar && !url) signedUrl(p.avatar).then((u) => u && showOwnAvatar());
}

blobEl.avatarInput.addEventListener('change', async () => {
  const client = app.client;
  const file = blobEl.avatarInput.files?.[0];
  blobEl.avatarInput.value = '';
  if (!client || !file) return;
  try {
    const info = await client.uploadBlob(file);
    if (!info.width) {
      el.chatError.textContent = `avatar: ${file.name} is not a PNG, JPEG, GIF or WebP image`;
      return;
    }
    const p = await client.setAvatar(info.blobId);
    profiles.known.set(p.user, p);
    el.chatError.textContent = '';
    showOwnAvatar();
    scheduleRender();
  } catch (err) {
    el.chatError.textContent = `avatar: ${errorText(err)}`;
  }
});

blobEl.avatarRemove.addEventListener('click', async () => {
  const client = app.client;
  if (!client) return;
  try {
    const p = await client.setAvatar('');
    profiles.known.set(p.user, p);
    showOwnAvatar();
    scheduleRender();
  } catch (err) {
    el.chatError.textContent = `avatar: ${errorText(err)}`;
  }
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
