// tern browser SDK: the same delivery semantics as the Rust `tern-sdk` (client-sdk/src),
// over the server's WebSocket bridge (docs/PROTOCOL.md section 1: one binary WebSocket
// message = one protobuf `Frame`, no length prefix).
//
// - Connects to a ws:// (or wss://) URL, authenticates with Resume (saved token) or
//   Login (password), protocol_version 1.
// - Keeps token, device, cursors (store_epoch, inbox cursor, per-conversation cursors of
//   read-diffusion groups) and the outbox in a Storage (localStorage by default), under
//   the key prefix `tern:<username>:`.
// - Reconnects with exponential backoff and jitter (bounded); a Closing frame decides:
//   REPLACED stops, REVOKED / LOGGED_OUT lose the credentials, anything else reconnects.
// - Outbox: every send gets one client_msg_id (crypto.randomUUID()) for life; sends
//   without a SendAck are sent again, in order, with the same id after every reconnect
//   (and after a page reload). `send()` resolves with the durable SendAck.
// - Receive: each message is delivered once and in order: dedup by inbox_seq (and by
//   per-conversation seq for read-diffusion pushes, inbox_seq 0); a hole is buffered
//   around and repaired with a Sync from the cursor (inbox) or a Pull of exactly the
//   missing range (read diffusion). Each (re)connect Syncs from the saved cursor, pages
//   until complete, then Pulls read-diffusion heads. A Sync answered CURSOR_TRIMMED
//   (server retention, docs/PROTOCOL.md 8.11) is rebuilt from ListConversations and a
//   Pull per conversation from the last seq delivered of it, then syncs on from the first
//   retained inbox seq: nothing delivered twice, nothing retained missed.
// - Acks are cumulative and batched (every 50 messages or 300 ms). A new store_epoch
//   voids all cursors. A Ping (with its own non-zero req_id, like every request) goes out
//   every heartbeat_secs; a server silent for the liveness timeout (3 x heartbeat + 2 s)
//   is dropped and reconnected.
// - The protocol rules shared with the Rust crates (retryable error codes, liveness,
//   name rules) come from protocol-rules.json, which tern-proto's tests keep equal to the
//   Rust constants; it is not edited by hand.
//
// Events (EventTarget; `event.detail` carries the payload; `client.on(type, fn)` passes
// the detail directly and returns an unsubscribe function):
//   'message'     {message, own}        a message, exactly once, in order per conversation
//   'state'       {state, reason?, code?, attempt?, retryInMs?}
//                 state: 'connecting' | 'connected' | 'reconnecting' | 'auth-lost' |
//                        'replaced' | 'closed'
//   'acked'       SendAck               a send is durable on the server
//   'send-failed' {clientMsgId, code, codeName, message}  refused for good, left the outbox
//   'caught-up'   {}                    everything missed has been delivered
//   'read'        {conversation, user, readSeq, own}  a ReadReceipt push (docs/PROTOCOL.md
//                 9.2): own = true: one of this user's devices (this one too) read up to
//                 readSeq, clear the badge; own = false: `user` read up to readSeq (a
//                 read receipt for this user's messages)
//   'settings'    {conversation, muted, pinned}  a settings_changed push (docs/PROTOCOL.md
//                 9.3): this user muted/pinned a conversation on this device or another;
//                 both values as they are now (re-sort: pinned first; muted: out of the total)
//   'typing'      {conversation, user, typing, expiresMs}  a TypingEvent push: `user` is
//                 typing (until expiresMs, server time, unless another event comes) or stopped
//   'hidden'      {conversation, seq}  a MessageHidden push: this user deleted message `seq`
//                 for themselves (on this device or another): stop showing it
//   'presence'    {user, online, serverTimeMs}  a PresenceEvent push: a user who shares a
//                 direct conversation with this one came online or went offline
//   'profile'     {user, displayName, status, avatar, updatedMs}  a ProfileChanged push:
//                 this user's profile (from any device) or that of a direct peer or group
//                 member changed (docs/PROTOCOL.md 9.12)
//
// Image and file messages (docs/PROTOCOL.md 9.14): `uploadBlob` sends the bytes first
// (sha256 named up front, 512 KiB chunks in order, resumed from the server's offset after a
// reconnect, as client-sdk/src/client/blobs.rs does), then `send` carries the blob as
// `options.attachment` ({blobId, name}); a delivered message has `attachment` set (with the
// server-made thumbnail of an image). `download` reads a blob back, checked against its id
// (the sha256); `blobUrl` gives a short-lived signed http(s) URL for <img src> or a link.
//
// Edits and recalls are timeline entries like any message: a 'message' event whose
// message has kind 'edit' (targetSeq now reads `text`) or 'recall' (targetSeq lost its
// content); apply them to the target, do not show them as messages of their own.
//
// Pushes this SDK does not know (from a newer server) are ignored, as docs/PROTOCOL.md
// asks of old clients.

import { proto as pb } from './wire.js';
import rules from './protocol-rules.json' with { type: 'json' };

/**
 * The protocol rules written once in tern-proto (retryable codes, liveness, name rules),
 * as generated into protocol-rules.json.
 */
export const RULES = rules;

export const PROTOCOL_VERSION = rules.protocolVersion;
/** Ack after this many new messages... */
export const ACK_EVERY = 50;
/** ...or this long after the first unacked one. */
export const ACK_DELAY_MS = 300;
/** Retry delay for a send that failed with a transient error on a live connection (the server's `retry_after_ms` when that is longer). */
export const RETRY_DELAY_MS = 1000;
/** Page size of Sync and forward Pull. */
const PAGE = 500;

/** Error codes by name (`ErrorCode.FORBIDDEN === 14`) and by number (`ErrorCode[14]`). */
export const ErrorCode = pb.ErrorCode;
export const CloseReason = pb.CloseReason;
export const MessageKind = pb.MessageKind;
export const GroupEventKind = pb.GroupEventKind;
/** Contact events and states (absent from an older schema: empty). */
export const ContactEventKind = pb.ContactEventKind ?? {};
const CONTACT_STATES = ['', 'friend', 'incoming', 'outgoing', 'blocked'];
export const Role = pb.Role;
/** Who of a group's members reads which part of its history (absent from an older schema: empty). */
export const HistoryVisibility = pb.HistoryVisibility ?? {};
export const ConversationKind = pb.ConversationKind;
/** The protobuf messages and enums of ./wire.js (`proto.Frame.encode(obj).finish()`, `proto.Frame.decode(bytes)`). */
export const proto = pb;

/** Codes after which the same request may succeed later (tern-proto `is_retryable`). */
const TRANSIENT = new Set(rules.errors.retryable.map((name) => ErrorCode[name]));

/**
 * Whether an error code is transient: a send that failed with it is retried with the
 * same client_msg_id instead of failing.
 * @param {number} code
 */
export function isRetryable(code) {
  return TRANSIENT.has(code);
}

/**
 * How long the server may stay silent before the connection counts as dead (and the QUIC
 * idle timeout): heartbeatMisses x heartbeat + graceMs, as tern-proto's `liveness_timeout`.
 * @param {number} heartbeatMs
 */
export function livenessTimeoutMs(heartbeatMs) {
  return heartbeatMs * rules.liveness.heartbeatMisses + rules.liveness.graceMs;
}

const USERNAME_RE = new RegExp(rules.names.username.pattern);
const DEVICE_RE = new RegExp(rules.names.device.pattern);

/** The server's user name rule (1-32 of a-z 0-9 _ . -, first a letter or digit). @param {string} name */
export function isValidUsername(name) {
  return USERNAME_RE.test(name);
}

/** The server's device name rule (1-64 of A-Z a-z 0-9 _ . -). @param {string} name */
export function isValidDevice(name) {
  return DEVICE_RE.test(name);
}

/** The server's password rule: 8-1024 bytes of UTF-8. @param {string} password */
export function isValidPassword(password) {
  const n = new TextEncoder().encode(password).length;
  return n >= rules.names.password.minBytes && n <= rules.names.password.maxBytes;
}

/** A failed request: the server's error code, or a client-side reason. */
export class TernError extends Error {
  /**
   * @param {number|string} code ErrorCode number from the server, or a client-side
   *   string: 'connection-lost' | 'timeout' | 'stopped' | 'protocol'
   * @param {string} message
   */
  constructor(code, message) {
    const codeName = typeof code === 'number' ? (ErrorCode[code] ?? `ERROR_${code}`) : code;
    super(message ? `${message} (${codeName})` : codeName);
    this.name = 'TernError';
    /** @type {number|string} */
    this.code = code;
    /** @type {string} */
    this.codeName = codeName;
    /** @type {string} */
    this.serverMessage = message;
  }
}

/**
 * @typedef {{user: string} | {conversation: string}} Target
 *   Where a message goes: the 1:1 conversation with a user, or an existing conversation.
 *
 * @typedef {object} Outgoing A message in the outbox.
 * @property {string} clientMsgId
 * @property {Target} target
 * @property {Uint8Array} body
 * @property {string} contentType
 * @property {SendOptions} [options]
 *
 * @typedef {object} SendOptions What a message may carry besides its body.
 * @property {number} [replyTo] the seq (same conversation) it answers
 * @property {string[]} [mentions] members mentioned by name
 * @property {boolean} [mentionAll] @all (groups; owners and admins only)
 * @property {number} [ttlSecs] time to live; 0 = never dropped
 * @property {AttachmentRef} [attachment] an image or file message: the uploaded blob
 *   (`uploadBlob`) and the file name to show; the body is then an optional caption
 *
 * @typedef {object} AttachmentRef A blob to attach to a message.
 * @property {string} blobId the id `uploadBlob` returned (lowercase hex sha256)
 * @property {string} name file name to show (at most 255 bytes, no '/' or control characters)
 *
 * @typedef {object} Attachment The file a delivered message carries (the server fills it in).
 * @property {string} blobId
 * @property {string} name
 * @property {number} size bytes
 * @property {string} mime e.g. image/png, application/pdf
 * @property {number} width images: pixels (0 for other files)
 * @property {number} height
 * @property {Uint8Array} thumbnail images: a JPEG made by the server (longest side <= 320)
 * @property {number} thumbnailWidth
 * @property {number} thumbnailHeight
 * @property {boolean} image an image message (the server decoded it: width is set)
 *
 * @typedef {object} BlobInfo What the server stored (`uploadBlob`).
 * @property {string} blobId
 * @property {number} size
 * @property {string} mime the server's type (for images, the one it found in the bytes)
 * @property {number} width images: pixels (0 for other files)
 * @property {number} height
 * @property {Uint8Array} thumbnail images: server-made JPEG
 * @property {number} thumbnailWidth
 * @property {number} thumbnailHeight
 *
 * @typedef {object} Cursors
 * @property {string} storeEpoch random id of the server's data; cursors of another epoch are void
 * @property {number} inbox highest contiguous inbox seq delivered
 * @property {Record<string, number>} conversations read-diffusion groups: highest contiguous seq
 * @property {Record<string, number>} [delivered] every conversation: highest seq delivered to the
 *   app (no (conversation, seq) is delivered twice; a CURSOR_TRIMMED recovery pulls from here)
 *
 * @typedef {object} Message A delivered message (plain object).
 * @property {string} conversation
 * @property {number} seq
 * @property {string} sender
 * @property {string} senderDevice
 * @property {string} clientMsgId
 * @property {number} serverTimeMs
 * @property {Uint8Array} body
 * @property {string} contentType
 * @property {'message'|'system'|'edit'|'recall'} kind 'edit': message targetSeq now reads
 *   this body; 'recall': message targetSeq was recalled (apply both to the target)
 * @property {GroupEventInfo|null} event
 * @property {ContactEventInfo|null} contact a contact change (SYSTEM, 1:1 only; docs/PROTOCOL.md 9.13)
 * @property {string|null} text the body as text when it is text (content type empty or text/*)
 * @property {number} replyTo the seq this message answers (0: none)
 * @property {string[]} mentions members mentioned by name
 * @property {boolean} mentionAll an @all
 * @property {number} targetSeq 'edit' / 'recall': the message they change
 * @property {boolean} edited the body is the latest edit
 * @property {number} editedMs server time of the latest edit
 * @property {number[]} edits seqs of this message's EDIT entries, oldest first
 * @property {boolean} recalled recalled: no content
 * @property {boolean} expired its time to live passed before it reached this device: no content
 * @property {boolean} deleted this user deleted it for themselves: no content
 * @property {number} expiresMs server time after which it is not delivered (0: never)
 * @property {Attachment|null} attachment an image or file message: the blob it carries
 *   (`text` is then its caption, possibly empty)
 *
 * @typedef {object} GroupEventInfo What a SYSTEM message says happened (docs/PROTOCOL.md 9).
 * @property {string} kind CREATED, MEMBERS_ADDED, MEMBERS_REMOVED, MEMBER_LEFT, ROLE_CHANGED,
 *   OWNER_CHANGED, GROUP_UPDATED, DISSOLVED (or the number of a kind this SDK does not know)
 * @property {string} actor who did it
 * @property {string[]} users whom it concerns (ROLE_CHANGED, OWNER_CHANGED: users[0])
 * @property {string} name CREATED, GROUP_UPDATED: the group's name
 * @property {string} role ROLE_CHANGED: the new role ('MEMBER' | 'ADMIN'); '' otherwise
 * @property {string} topic GROUP_UPDATED: the topic after the change
 * @property {boolean} muteAll GROUP_UPDATED: only the owner and admins may send
 * @property {number} maxMembers GROUP_UPDATED: the group's member cap (0 = the server's)
 * @property {string} visibility CREATED, GROUP_UPDATED: 'JOINED' | 'SHARED' |
 *   'HISTORY_VISIBILITY_UNSPECIFIED' (older groups and servers: read as shared)
 *
 * @typedef {object} ContactEventInfo What a contact SYSTEM message says happened.
 * @property {string} kind REQUESTED, ACCEPTED, DECLINED, CANCELED, REMOVED
 * @property {string} actor who did it
 * @property {string} user the other user
 * @property {string} message REQUESTED: the request's message
 *
 * @typedef {object} Contact One of this user's contacts (`contacts()`).
 * @property {string} user
 * @property {string} state 'friend' | 'incoming' | 'outgoing' | 'blocked'
 * @property {string} message incoming/outgoing: the request's message
 * @property {number} sinceMs
 *
 * @typedef {object} SendAck
 * @property {string} conversation
 * @property {number} seq
 * @property {number} serverTimeMs
 * @property {string} clientMsgId
 * @property {boolean} duplicate
 * @property {number} inboxSeq
 */

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

/**
 * The conversation id of the 1:1 chat between two users (`d:<a>:<b>`, names sorted).
 * @param {string} a
 * @param {string} b
 */
export function directConversation(a, b) {
  return a <= b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/**
 * The other user of a 1:1 conversation id, or null.
 * @param {string} conversation
 * @param {string} me
 */
export function directPeer(conversation, me) {
  const m = /^d:([^:]+):([^:]+)$/.exec(conversation);
  if (!m) return null;
  return m[1] === me ? m[2] : m[1];
}

/** @param {any} v HistoryVisibility number @returns {string} */
function visibilityName(v) {
  return HistoryVisibility[v ?? 0] ?? (v ? String(v) : 'HISTORY_VISIBILITY_UNSPECIFIED');
}

/** @param {any} m protobuf Message @returns {Message} */
export function toMessage(m) {
  const body = m.body instanceof Uint8Array ? m.body : new Uint8Array(m.body ?? []);
  const ct = m.contentType || '';
  const isText = ct === '' || ct.startsWith('text/');
  const system = m.kind === MessageKind.SYSTEM;
  const kind =
    m.kind === MessageKind.SYSTEM ? 'system' : m.kind === MessageKind.EDIT ? 'edit' : m.kind === MessageKind.RECALL ? 'recall' : 'message';
  const gone = !!(m.recalled || m.expired || m.deleted);
  return {
    conversation: m.conversation,
    seq: Number(m.seq),
    sender: m.sender,
    senderDevice: m.senderDevice,
    clientMsgId: m.clientMsgId,
    serverTimeMs: Number(m.serverTimeMs),
    body,
    contentType: ct,
    kind: /** @type {Message['kind']} */ (kind),
    event:
      system && m.event
        ? {
            kind: GroupEventKind[m.event.kind] ?? String(m.event.kind),
            actor: m.event.actor,
            users: [...(m.event.users ?? [])],
            name: m.event.name ?? '',
            role: m.event.role ? (Role[m.event.role] ?? String(m.event.role)) : '',
            topic: m.event.topic ?? '',
            muteAll: !!m.event.muteAll,
            maxMembers: Number(m.event.maxMembers ?? 0),
            visibility: visibilityName(m.event.visibility),
          }
        : null,
    contact:
      system && m.contact
        ? {
            kind: ContactEventKind[m.contact.kind] ?? String(m.contact.kind),
            actor: m.contact.actor ?? '',
            user: m.contact.user ?? '',
            message: m.contact.message ?? '',
          }
        : null,
    text: isText && !gone ? utf8d.decode(body) : null,
    replyTo: Number(m.replyTo ?? 0),
    mentions: [...(m.mentions ?? [])],
    mentionAll: !!m.mentionAll,
    targetSeq: Number(m.targetSeq ?? 0),
    edited: !!m.edited,
    editedMs: Number(m.editedMs ?? 0),
    edits: (m.edits ?? []).map(Number),
    recalled: !!m.recalled,
    expired: !!m.expired,
    deleted: !!m.deleted,
    expiresMs: Number(m.expiresMs ?? 0),
    attachment: m.attachment && m.attachment.blobId && !gone ? toAttachment(m.attachment) : null,
  };
}

/** @param {any} b protobuf bytes (Uint8Array, or a Buffer in Node) @returns {Uint8Array} */
function bytesOf(b) {
  if (!b) return new Uint8Array();
  return b instanceof Uint8Array ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : new Uint8Array(b);
}

/** @param {any} a protobuf Attachment @returns {Attachment} */
function toAttachment(a) {
  const width = Number(a.width ?? 0);
  return {
    blobId: a.blobId,
    name: a.name ?? '',
    size: Number(a.size ?? 0),
    mime: a.mime ?? '',
    width,
    height: Number(a.height ?? 0),
    thumbnail: bytesOf(a.thumbnail),
    thumbnailWidth: Number(a.thumbnailWidth ?? 0),
    thumbnailHeight: Number(a.thumbnailHeight ?? 0),
    image: width > 0,
  };
}

/** @param {any} b protobuf BlobInfo @returns {BlobInfo} */
function toBlobInfo(b) {
  return {
    blobId: b.blobId,
    size: Number(b.size ?? 0),
    mime: b.mime ?? '',
    width: Number(b.width ?? 0),
    height: Number(b.height ?? 0),
    thumbnail: bytesOf(b.thumbnail),
    thumbnailWidth: Number(b.thumbnailWidth ?? 0),
    thumbnailHeight: Number(b.thumbnailHeight ?? 0),
  };
}

/**
 * An enum value given by name or number.
 * @param {Record<string, any>} e generated enum @param {string|number} v @param {string} what
 */
function enumValue(e, v, what) {
  if (typeof v === 'number') return v;
  const n = e[v];
  if (typeof n !== 'number') throw new TypeError(`unknown ${what}: ${v}`);
  return n;
}

/** @param {any} a protobuf SendAck @returns {SendAck} */
function toAck(a) {
  return {
    conversation: a.conversation,
    seq: Number(a.seq),
    serverTimeMs: Number(a.serverTimeMs),
    clientMsgId: a.clientMsgId,
    duplicate: !!a.duplicate,
    inboxSeq: Number(a.inboxSeq),
  };
}

/**
 * @typedef {object} ConversationInfo One conversation of the list (docs/PROTOCOL.md 9.1).
 * @property {string} conversation
 * @property {'direct'|'group'} kind
 * @property {string} name group name, or the peer's user name
 * @property {number} lastSeq
 * @property {boolean} readDiffusion
 * @property {number} memberCount
 * @property {string} role
 * @property {number} readSeq this user has read up to here
 * @property {number} unread computed by the server
 * @property {number} lastTimeMs server time of the last message (0: none yet)
 * @property {string} lastSender
 * @property {string} lastPreview start of the last message's text; empty for non-text
 * @property {'message'|'system'} lastKind 'system' for group events
 * @property {boolean} muted this user muted it: its unread is not in totalUnread
 * @property {boolean} pinned this user pinned it: listed before the unpinned ones
 * @property {number} mentions unread messages that mention this user (or @all)
 * @property {string} topic groups: the topic / announcement ('' = none)
 * @property {boolean} muteAll groups: only the owner and admins may send
 * @property {string} visibility groups: 'JOINED' | 'SHARED' | 'PUBLIC' (channels) |
 *   'HISTORY_VISIBILITY_UNSPECIFIED' (a group made before the setting existed: read as shared)
 * @property {boolean} channel a public channel (listed in the directory, docs/PROTOCOL.md 9.10)
 * @property {number} maxMembers groups: the group's own member cap (0 = the server's)
 */

/**
 * @typedef {object} ChannelInfo One entry of the channel directory (docs/PROTOCOL.md 9.10).
 * @property {string} conversation
 * @property {string} name
 * @property {string} topic
 * @property {number} memberCount
 * @property {boolean} broadcastOnly only the owner and admins post
 * @property {string} visibility 'PUBLIC' | 'JOINED' | 'SHARED'
 * @property {boolean} joined this user is a member
 */

/** @param {any} c protobuf ConversationInfo @returns {ConversationInfo} */
export function toConversationInfo(c) {
  return {
    conversation: c.conversation,
    kind: c.kind === ConversationKind.GROUP ? 'group' : 'direct',
    name: c.name,
    lastSeq: Number(c.lastSeq ?? 0),
    readDiffusion: !!c.readDiffusion,
    memberCount: c.memberCount ?? 0,
    role: Role[c.role] ?? String(c.role),
    readSeq: Number(c.readSeq ?? 0),
    unread: Number(c.unread ?? 0),
    lastTimeMs: Number(c.lastTimeMs ?? 0),
    lastSender: c.lastSender ?? '',
    lastPreview: c.lastPreview ?? '',
    lastKind: c.lastKind === MessageKind.SYSTEM ? 'system' : 'message',
    muted: !!c.muted,
    pinned: !!c.pinned,
    mentions: Number(c.mentions ?? 0),
    topic: c.topic ?? '',
    muteAll: !!c.muteAll,
    visibility: visibilityName(c.visibility),
    channel: !!c.channel,
    maxMembers: Number(c.maxMembers ?? 0),
  };
}

/** @param {Uint8Array} bytes */
function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, /** @type {any} */ (bytes.subarray(i, i + 0x8000)));
  }
  return btoa(s);
}

/** @param {string} b64 */
function fromBase64(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// ---------------------------------------------------------------------------------------
// Blobs (docs/PROTOCOL.md 9.14): helpers
// ---------------------------------------------------------------------------------------

/** Largest chunk of an upload or a download (the server's limit): 512 KiB. */
export const BLOB_CHUNK = 512 * 1024;
/** How many times in a row a transfer may lose its connection before it gives up. */
const BLOB_RETRIES = 20;

/** @param {Uint8Array} b */
function hexOf(b) {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * The sha256 of `data`: crypto.subtle where the page has it (https, localhost), else
 * `sha256Js` (a page opened over plain http on another host has no crypto.subtle).
 * @param {Uint8Array} data @returns {Promise<Uint8Array>}
 */
async function sha256(data) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return sha256Js(data);
  return new Uint8Array(await subtle.digest('SHA-256', data));
}

const SHA256_K = Uint32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/**
 * SHA-256 in plain JavaScript (FIPS 180-4), for pages without crypto.subtle.
 * @param {Uint8Array} data @returns {Uint8Array}
 */
export function sha256Js(data) {
  const h = Uint32Array.from([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  // The message, 0x80, zeros, and the bit length (big-endian 64-bit): whole 64-byte blocks.
  const total = Math.ceil((data.length + 9) / 64) * 64;
  const tail = new Uint8Array(total - Math.floor(data.length / 64) * 64);
  const rest = data.length % 64;
  tail.set(data.subarray(data.length - rest));
  tail[rest] = 0x80;
  const bits = data.length * 8;
  const tv = new DataView(tail.buffer);
  tv.setUint32(tail.length - 8, Math.floor(bits / 0x100000000));
  tv.setUint32(tail.length - 4, bits >>> 0);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const full = data.length - rest;
  const rotr = (/** @type {number} */ x, /** @type {number} */ n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < total; off += 64) {
    const [v, at] = off < full ? [dv, off] : [tv, off - full];
    for (let i = 0; i < 16; i++) w[i] = v.getUint32(at + i * 4);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3);
      const s1 = rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) | 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(i * 4, h[i]);
  return out;
}

/**
 * A blob's id: the lowercase hex sha256 of its bytes.
 * @param {Uint8Array} data @returns {Promise<string>}
 */
export async function blobIdOf(data) {
  return hexOf(await sha256(data));
}

/**
 * The image type the first bytes show (PNG, JPEG, GIF, WebP: the types the server decodes
 * and thumbnails), or null.
 * @param {Uint8Array} head at least the first 12 bytes
 * @returns {'image/png'|'image/jpeg'|'image/gif'|'image/webp'|null}
 */
export function sniffImage(head) {
  const at = (/** @type {number} */ i, /** @type {number[]} */ sig) => sig.every((b, k) => head[i + k] === b);
  const ascii = (/** @type {string} */ t) => [...t].map((c) => c.charCodeAt(0));
  if (at(0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'image/png';
  if (at(0, [0xff, 0xd8, 0xff])) return 'image/jpeg';
  if (at(0, ascii('GIF87a')) || at(0, ascii('GIF89a'))) return 'image/gif';
  if (at(0, ascii('RIFF')) && at(8, ascii('WEBP'))) return 'image/webp';
  return null;
}

const MIME_RE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+$/;
const DECODED_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/**
 * The type to announce for these bytes: the image type their content shows; else the
 * declared one (e.g. File.type) when it is a plain type the server takes and not one of
 * the decoded image types (which the bytes would have to be); else application/octet-stream.
 * @param {Uint8Array} data @param {string} [declared]
 */
export function blobMime(data, declared = '') {
  const image = sniffImage(data.subarray(0, 16));
  if (image) return image;
  const d = (declared || '').trim().toLowerCase();
  if (d.length <= 127 && MIME_RE.test(d) && !DECODED_IMAGES.has(d)) return d;
  return 'application/octet-stream';
}

/** @param {File|Blob|Uint8Array|ArrayBuffer|ArrayBufferView} data @returns {Promise<Uint8Array>} */
async function bytesFrom(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data && typeof (/** @type {any} */ (data).arrayBuffer) === 'function') {
    return new Uint8Array(await /** @type {Blob} */ (data).arrayBuffer());
  }
  throw new TypeError('uploadBlob: a File, Blob, Uint8Array or ArrayBuffer');
}

/** A lost connection or an answer that did not come: the transfer asks again. @param {any} e */
function transientTransfer(e) {
  return e instanceof TernError && (e.code === 'connection-lost' || e.code === 'timeout');
}

function newClientMsgId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  // Non-secure contexts (plain http on a non-localhost host) have no randomUUID.
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------------------------------
// Engine: the delivery logic as a sans-IO state machine (mirrors client-sdk/src/engine/).
// The client feeds it frames and the time, and drains `transmit` (frames to send) and
// `events` (what the app should see).
// ---------------------------------------------------------------------------------------

/**
 * @typedef {{kind: 'send', id: string} | {kind: 'sync'} | {kind: 'pull', conv: string} | {kind: 'app'}
 *   | {kind: 'recovery-list'} | {kind: 'recovery-pull', conv: string}} InFlight
 * @typedef {{msg: Outgoing, reqId: number|null}} Pending
 * @typedef {{cursor: number, buffered: Map<number, any>, pulling: boolean}} ConvFollow
 * @typedef {{type: 'message', message: any, own: boolean}
 *   | {type: 'acked', ack: any}
 *   | {type: 'send-failed', clientMsgId: string, code: number, message: string}
 *   | {type: 'response', reqId: number, frame: any}
 *   | {type: 'read', conversation: string, user: string, readSeq: number, own: boolean}
 *   | {type: 'settings', conversation: string, muted: boolean, pinned: boolean}
 *   | {type: 'typing', conversation: string, user: string, typing: boolean, expiresMs: number}
 *   | {type: 'hidden', conversation: string, seq: number}
 *   | {type: 'presence', user: string, online: boolean, serverTimeMs: number}
 *   | {type: 'profile', profile: Profile}
 *   | {type: 'caught-up'}} EngineEvent
 */

/**
 * A user's profile (docs/PROTOCOL.md 9.12); `avatar` is a blob id ('' = none): an image anyone may read.
 * @typedef {{user: string, displayName: string, status: string, avatar: string, updatedMs: number}} Profile
 */

/** @param {any} p @returns {Profile} */
function profileOf(p) {
  return {
    user: p.user,
    displayName: p.displayName ?? '',
    status: p.status ?? '',
    avatar: p.avatar ?? '',
    updatedMs: Number(p.updatedMs ?? 0),
  };
}

export class Engine {
  /**
   * @param {string} user
   * @param {Partial<Cursors>} [cursors]
   * @param {Outgoing[]} [outbox]
   */
  constructor(user, cursors = {}, outbox = []) {
    this.user = user;
    /** Most sends in flight at once (from LoginOk.max_pending). */
    this.window = 128;
    this.nextReq = 1;
    this.connected = false;
    /** @type {Pending[]} */
    this.outbox = outbox.map((msg) => ({ msg, reqId: null }));
    /**
     * After a retryable send refusal: no Send goes out before this time (ms), then the
     * outbox goes again from its oldest entry, in order (docs/PROTOCOL.md 8.2).
     * @type {number|null}
     */
    this.sendPausedUntil = null;
    /** @type {Map<number, InFlight>} */
    this.inFlight = new Map();
    /** @type {object[]} frames (plain objects for proto.Frame.encode) */
    this.transmit = [];
    /** @type {EngineEvent[]} */
    this.events = [];
    /** @type {Cursors} */
    this.cursors = {
      storeEpoch: cursors.storeEpoch ?? '',
      inbox: cursors.inbox ?? 0,
      conversations: { ...(cursors.conversations ?? {}) },
      delivered: { ...(cursors.delivered ?? {}) },
    };
    /**
     * A CURSOR_TRIMMED recovery in progress (docs/PROTOCOL.md 8.11), or null.
     * @type {null | {resumeAfter: number, listed: number, listing: boolean, todo: Map<string, number>,
     *   pulling: Set<string>, restart: Set<string>, restarted: Set<string>}}
     */
    this.recovery = null;
    /** @type {Map<number, any>} inbox seq -> message, above a hole */
    this.buffered = new Map();
    this.syncing = false;
    /** @type {Set<string>} */
    this.readDiffusion = new Set(Object.keys(this.cursors.conversations));
    /** @type {Map<string, ConvFollow>} */
    this.follows = new Map();
    for (const [c, s] of Object.entries(this.cursors.conversations)) {
      this.follows.set(c, { cursor: s, buffered: new Map(), pulling: false });
    }
    this.ackedSent = this.cursors.inbox;
    /** @type {number|null} */
    this.ackDue = null;
    this.cursorsDirty = false;
    this.outboxDirty = false;
  }

  reqId() {
    return this.nextReq++;
  }

  /** @param {number} n */
  setWindow(n) {
    this.window = Math.max(1, n | 0);
  }

  /** @returns {Outgoing[]} */
  outboxMessages() {
    return this.outbox.map((p) => p.msg);
  }

  /** Queues a message; sent now if connected (and the window allows), else on the next connection. @param {Outgoing} msg */
  send(msg) {
    this.outbox.push({ msg, reqId: null });
    this.outboxDirty = true;
    this.fillWindow();
  }

  /**
   * Transmits unsent outbox entries in order while the window has room; nothing while
   * paused after a refusal, and nothing past an entry still in flight behind one it sends
   * again (its answer may be a refusal too, and then it must go first).
   */
  fillWindow() {
    if (!this.connected || this.sendPausedUntil !== null) return;
    let inFlight = this.outbox.filter((p) => p.reqId !== null).length;
    let sent = false;
    for (const p of this.outbox) {
      if (inFlight >= this.window) break;
      if (p.reqId !== null) {
        if (sent) break;
        continue;
      }
      sent = true;
      const id = this.reqId();
      p.reqId = id;
      this.transmit.push(sendFrame(id, p.msg));
      this.inFlight.set(id, { kind: 'send', id: p.msg.clientMsgId });
      inFlight++;
    }
  }

  /**
   * An app request (history, groups, presence…) on the live connection; its response
   * comes back as a 'response' event with the returned req_id. Null when offline.
   * @param {object} body e.g. `{listConversations: {}}`
   */
  request(body) {
    if (!this.connected) return null;
    const id = this.reqId();
    this.inFlight.set(id, { kind: 'app' });
    this.transmit.push({ reqId: id, ...body });
    return id;
  }

  /** A new authenticated connection. @param {string} storeEpoch */
  onConnected(storeEpoch) {
    if (this.cursors.storeEpoch !== storeEpoch) {
      if (this.cursors.storeEpoch !== '') {
        // Another server's data: old cursors mean nothing here.
        this.buffered.clear();
        this.follows.clear();
        this.readDiffusion.clear();
        this.cursors.inbox = 0;
        this.cursors.conversations = {};
        this.cursors.delivered = {};
        this.ackedSent = 0;
      }
      this.cursors.storeEpoch = storeEpoch;
      this.cursorsDirty = true;
    }
    this.connected = true;
    this.inFlight.clear();
    this.syncing = false;
    this.recovery = null; // its requests are gone: the Sync below finds the trim again
    for (const f of this.follows.values()) f.pulling = false;
    this.startSync();
    for (const p of this.outbox) p.reqId = null;
    // A new connection has no send fence: the outbox goes again at once, in order.
    this.sendPausedUntil = null;
    this.fillWindow();
  }

  /** The connection is gone. @returns {number[]} req_ids of app requests that were in flight */
  onDisconnected() {
    this.connected = false;
    this.transmit = [];
    const lost = [];
    for (const [id, w] of this.inFlight) if (w.kind === 'app') lost.push(id);
    this.inFlight.clear();
    this.recovery = null;
    for (const p of this.outbox) p.reqId = null;
    return lost;
  }

  startSync() {
    if (this.syncing || !this.connected || this.recovery) return;
    this.syncing = true;
    const id = this.reqId();
    this.inFlight.set(id, { kind: 'sync' });
    // Always explicit (also 0): absent would mean "from the server-side cursor".
    this.transmit.push({ reqId: id, sync: { afterInboxSeq: this.cursors.inbox, limit: PAGE } });
  }

  /** @param {string} conv @param {number} until */
  startPull(conv, until) {
    if (!this.connected) return;
    const f = this.follow(conv);
    if (f.pulling) return;
    f.pulling = true;
    const id = this.reqId();
    this.inFlight.set(id, { kind: 'pull', conv });
    this.transmit.push({
      reqId: id,
      pull: { conversation: conv, afterSeq: f.cursor, untilSeq: until, limit: PAGE, beforeSeq: 0 },
    });
  }

  /** @param {string} conv */
  follow(conv) {
    let f = this.follows.get(conv);
    if (!f) {
      f = { cursor: 0, buffered: new Map(), pulling: false };
      this.follows.set(conv, f);
    }
    return f;
  }

  /**
   * Emits `message` unless its (conversation, seq) was delivered already (`cursors.delivered`).
   * @param {any} message
   */
  deliver(message) {
    const seq = Number(message.seq ?? 0);
    if (seq > 0 && message.conversation) {
      const d = /** @type {Record<string, number>} */ (this.cursors.delivered);
      if (seq <= (d[message.conversation] ?? 0)) return;
      d[message.conversation] = seq;
      this.cursorsDirty = true;
    }
    this.events.push({ type: 'message', message, own: message.sender === this.user });
  }

  /** An inbox item (from a push or a Sync page). @param {number} inboxSeq @param {any} message @param {number} now */
  inboxItem(inboxSeq, message, now) {
    if (inboxSeq <= this.cursors.inbox) return; // already delivered
    if (inboxSeq > this.cursors.inbox + 1) {
      this.buffered.set(inboxSeq, message);
      this.startSync();
      return;
    }
    this.deliver(message);
    this.cursors.inbox = inboxSeq;
    for (let m; (m = this.buffered.get(this.cursors.inbox + 1)) !== undefined; ) {
      this.buffered.delete(this.cursors.inbox + 1);
      this.deliver(m);
      this.cursors.inbox += 1;
    }
    for (const s of [...this.buffered.keys()]) if (s <= this.cursors.inbox) this.buffered.delete(s);
    this.cursorsDirty = true;
    this.scheduleAck(now);
  }

  /** @param {string} conv */
  followRead(conv) {
    if (!this.readDiffusion.has(conv)) {
      this.readDiffusion.add(conv);
      if (!(conv in this.cursors.conversations)) this.cursors.conversations[conv] = 0;
    }
    return this.follow(conv);
  }

  /**
   * History visibility (docs/PROTOCOL.md 9): a PullResult whose first_seq is above the
   * cursor + 1 says the seqs below first_seq are not this user's to read (they were added
   * later, to a JOINED group). The cursor moves to first_seq - 1 so that they do not count
   * as a gap (which would be pulled for ever), and what was buffered above them follows.
   * @param {string} conv @param {number} firstSeq
   */
  skipBefore(conv, firstSeq) {
    const f = this.followRead(conv);
    if (firstSeq <= f.cursor + 1) return;
    f.cursor = firstSeq - 1;
    const out = [];
    for (let m; (m = f.buffered.get(f.cursor + 1)) !== undefined; ) {
      f.buffered.delete(f.cursor + 1);
      f.cursor += 1;
      out.push(m);
    }
    for (const s of [...f.buffered.keys()]) if (s <= f.cursor) f.buffered.delete(s);
    this.cursors.conversations[conv] = f.cursor;
    this.cursorsDirty = true;
    for (const m of out) this.deliver(m);
  }

  /** A message of a read-diffusion conversation (push with inbox_seq 0, or Pull). @param {any} message */
  convItem(message) {
    const conv = message.conversation;
    const f = this.followRead(conv);
    const seq = Number(message.seq);
    if (seq <= f.cursor) return;
    if (seq > f.cursor + 1) {
      f.buffered.set(seq, message);
      this.startPull(conv, seq - 1);
      return;
    }
    const out = [message];
    f.cursor = seq;
    for (let m; (m = f.buffered.get(f.cursor + 1)) !== undefined; ) {
      f.buffered.delete(f.cursor + 1);
      f.cursor += 1;
      out.push(m);
    }
    for (const s of [...f.buffered.keys()]) if (s <= f.cursor) f.buffered.delete(s);
    this.cursors.conversations[conv] = f.cursor;
    this.cursorsDirty = true;
    for (const m of out) this.deliver(m);
  }

  /** @param {number} now */
  scheduleAck(now) {
    if (this.cursors.inbox >= this.ackedSent + ACK_EVERY) {
      this.sendAck();
    } else if (this.cursors.inbox > this.ackedSent && this.ackDue === null) {
      this.ackDue = now + ACK_DELAY_MS;
    }
  }

  sendAck() {
    this.ackDue = null;
    if (!this.connected || this.cursors.inbox <= this.ackedSent) return;
    this.ackedSent = this.cursors.inbox;
    // The Ok needs no handling; a lost ack only means a re-delivery that dedup removes.
    this.transmit.push({ reqId: this.reqId(), ack: { inboxSeq: this.cursors.inbox } });
  }

  /** Acks everything delivered so far, now (e.g. before closing). */
  flushAck() {
    this.sendAck();
  }

  /** Handles one decoded frame from the server. @param {any} frame @param {number} now */
  handleFrame(frame, now) {
    const kind = frame.body;
    if (!kind) return;
    const reqId = Number(frame.reqId);
    if (reqId === 0) {
      if (kind === 'push') {
        const p = frame.push;
        if (p.message) {
          const inboxSeq = Number(p.inboxSeq);
          if (inboxSeq === 0) this.convItem(p.message);
          else this.inboxItem(inboxSeq, p.message, now);
        }
      } else if (kind === 'readReceipt') {
        const r = frame.readReceipt;
        this.events.push({
          type: 'read',
          conversation: r.conversation,
          user: r.user,
          readSeq: Number(r.readSeq),
          own: r.user === this.user,
        });
      } else if (kind === 'settingsChanged') {
        const c = frame.settingsChanged;
        this.events.push({ type: 'settings', conversation: c.conversation, muted: !!c.muted, pinned: !!c.pinned });
      } else if (kind === 'typingEvent') {
        const t = frame.typingEvent;
        this.events.push({
          type: 'typing',
          conversation: t.conversation,
          user: t.user,
          typing: !!t.typing,
          expiresMs: Number(t.expiresMs ?? 0),
        });
      } else if (kind === 'messageHidden') {
        const h = frame.messageHidden;
        this.events.push({ type: 'hidden', conversation: h.conversation, seq: Number(h.seq) });
      } else if (kind === 'presenceEvent') {
        const p = frame.presenceEvent;
        this.events.push({ type: 'presence', user: p.user, online: !!p.online, serverTimeMs: Number(p.serverTimeMs ?? 0) });
      } else if (kind === 'profileChanged') {
        if (frame.profileChanged.profile) {
          this.events.push({ type: 'profile', profile: profileOf(frame.profileChanged.profile) });
        }
      }
      // Closing is the client's business; connection-level errors: nothing; pushes of a
      // newer protocol (decoded with no body, or a body not listed here): ignored.
      return;
    }
    const what = this.inFlight.get(reqId);
    if (!what) return; // an Ack's Ok, a Pong, or a response from before a reconnect
    this.inFlight.delete(reqId);
    const catchUp = what.kind === 'sync' || what.kind === 'pull' || what.kind === 'recovery-list' || what.kind === 'recovery-pull';
    this.handleResponse(reqId, what, frame, now);
    if (
      catchUp &&
      !this.syncing &&
      !this.recovery &&
      this.buffered.size === 0 &&
      [...this.follows.values()].every((f) => !f.pulling && f.buffered.size === 0)
    ) {
      this.events.push({ type: 'caught-up' });
    }
  }

  /** @param {number} reqId @param {InFlight} what @param {any} frame @param {number} now */
  handleResponse(reqId, what, frame, now) {
    const kind = frame.body;
    switch (what.kind) {
      case 'send': {
        const i = this.outbox.findIndex((p) => p.msg.clientMsgId === what.id);
        if (kind === 'sendAck') {
          if (i >= 0) {
            this.outbox.splice(i, 1);
            this.outboxDirty = true;
          }
          this.events.push({ type: 'acked', ack: frame.sendAck });
        } else {
          const code = kind === 'error' ? frame.error.code : ErrorCode.INTERNAL;
          const message = kind === 'error' ? frame.error.message : `unexpected ${kind}`;
          if (i >= 0) {
            if (TRANSIENT.has(code)) {
              // The server's wait (RATE_LIMITED carries it; 0 = none), at least our own.
              // Nothing more goes out until then; then the outbox goes again from its
              // oldest entry, so this one stays ahead of every later one (the server
              // refuses those pipelined behind it: its send fence, PROTOCOL.md 8.2).
              const after = kind === 'error' ? Number(frame.error.retryAfterMs || 0) : 0;
              this.outbox[i].reqId = null;
              const until = now + Math.max(RETRY_DELAY_MS, after);
              if (this.sendPausedUntil === null || this.sendPausedUntil < until) this.sendPausedUntil = until;
            } else {
              this.outbox.splice(i, 1);
              this.outboxDirty = true;
              this.events.push({ type: 'send-failed', clientMsgId: what.id, code, message });
            }
          }
        }
        this.fillWindow();
        return;
      }
      case 'sync': {
        this.syncing = false;
        if (kind === 'error' && frame.error.code === ErrorCode.CURSOR_TRIMMED) {
          // Retention trimmed the inbox below the cursor: rebuild from the conversations.
          this.startRecovery(frame.error.message ?? '');
          return;
        }
        if (kind !== 'syncResult') return; // retried on the next gap or connection
        const r = frame.syncResult;
        for (const item of r.items) {
          if (item.message) this.inboxItem(Number(item.inboxSeq), item.message, now);
        }
        // Next page; or, if pushes above the head still wait on a hole, one more sync
        // as long as the last one made progress.
        const progressed = Number(r.toInboxSeq) > Number(r.fromInboxSeq);
        if (!r.complete || (this.buffered.size > 0 && progressed)) this.startSync();
        for (const head of r.readDiffusion) {
          const conv = head.conversation;
          if (!this.readDiffusion.has(conv)) {
            this.readDiffusion.add(conv);
            if (!(conv in this.cursors.conversations)) this.cursors.conversations[conv] = 0;
          }
          const cursor = this.follows.get(conv)?.cursor ?? 0;
          if (Number(head.lastSeq) > cursor) this.startPull(conv, Number(head.lastSeq));
        }
        return;
      }
      case 'pull': {
        const conv = what.conv;
        const f0 = this.follows.get(conv);
        if (f0) f0.pulling = false;
        if (kind !== 'pullResult') return;
        const r = frame.pullResult;
        this.skipBefore(conv, Number(r.firstSeq ?? 0));
        for (const m of r.messages) this.convItem(m);
        const f = this.follow(conv);
        if (f.cursor < Number(r.lastSeq) && (!r.complete || f.buffered.size > 0)) {
          this.startPull(conv, 0);
        }
        return;
      }
      case 'recovery-list':
        this.onRecoveryList(frame, now);
        return;
      case 'recovery-pull':
        this.onRecoveryPull(what.conv, frame, now);
        return;
      case 'app':
        this.events.push({ type: 'response', reqId, frame });
        return;
    }
  }

  // ---- Recovery from CURSOR_TRIMMED (docs/PROTOCOL.md 8.11; client-sdk/src/engine/recovery.rs) ----
  // 1. The Sync's error names the first retained inbox seq F.
  // 2. ListConversations (every page): each write-diffusion conversation whose last_seq is
  //    past what this page delivered of it (cursors.delivered) is pulled forward from
  //    there up to that last_seq; on CURSOR_TRIMMED from its first retained seq (after 0).
  // 3. The inbox cursor moves to F - 1 and syncing goes on; deliver() skips what the
  //    pulls delivered already. F was read before the list, so nothing retained is missed.

  /** @param {string} message the CURSOR_TRIMMED text */
  startRecovery(message) {
    const first = firstRetainedInboxSeq(message);
    // Not a message this SDK understands: nothing safe to do until the next connection.
    if (first === null) return;
    this.recovery = {
      resumeAfter: Math.max(first - 1, this.cursors.inbox),
      listed: 0,
      listing: true,
      todo: new Map(),
      pulling: new Set(),
      restart: new Set(),
      restarted: new Set(),
    };
    this.recoveryList(0);
  }

  /** @param {number} offset */
  recoveryList(offset) {
    const id = this.reqId();
    this.inFlight.set(id, { kind: 'recovery-list' });
    this.transmit.push({ reqId: id, listConversations: { limit: RECOVERY_LIST_PAGE, offset } });
  }

  /** @param {any} frame @param {number} now */
  onRecoveryList(frame, now) {
    const r = this.recovery;
    if (!r) return;
    if (frame.body !== 'conversationList') {
      this.recovery = null; // failed: the next connection syncs (and recovers) again
      return;
    }
    const list = frame.conversationList;
    const convs = list.conversations ?? [];
    const delivered = /** @type {Record<string, number>} */ (this.cursors.delivered);
    for (const c of convs) {
      if (c.readDiffusion || this.readDiffusion.has(c.conversation)) continue; // its own cursor
      const last = Number(c.lastSeq ?? 0);
      if (last > (delivered[c.conversation] ?? 0)) r.todo.set(c.conversation, last);
    }
    r.listed += convs.length;
    if (convs.length === RECOVERY_LIST_PAGE && r.listed < Number(list.total ?? 0)) {
      this.recoveryList(r.listed);
    } else {
      r.listing = false;
      this.pumpRecovery(now);
    }
  }

  /** @param {string} conv @param {any} frame @param {number} now */
  onRecoveryPull(conv, frame, now) {
    const r = this.recovery;
    if (!r) return;
    r.pulling.delete(conv);
    if (frame.body === 'pullResult') {
      const p = frame.pullResult;
      const until = r.todo.get(conv) ?? 0;
      const msgs = [...(p.messages ?? [])].sort((a, b) => Number(a.seq) - Number(b.seq));
      for (const m of msgs) this.deliver(m);
      const have = /** @type {Record<string, number>} */ (this.cursors.delivered)[conv] ?? 0;
      // Done when the listed last seq is reached, or nothing more came.
      if (have >= until || Number(p.toSeq ?? 0) === 0 || p.complete) r.todo.delete(conv);
    } else if (frame.body === 'error' && frame.error.code === ErrorCode.CURSOR_TRIMMED && !r.restarted.has(conv)) {
      // The timeline was trimmed too: from its first retained seq.
      r.restarted.add(conv);
      r.restart.add(conv);
    } else {
      r.todo.delete(conv); // FORBIDDEN (left meanwhile) or anything else: nothing to rebuild
    }
    this.pumpRecovery(now);
  }

  /** Sends the next Pulls; once nothing is left, ends the recovery and syncs on. @param {number} now */
  pumpRecovery(now) {
    const r = this.recovery;
    if (!r || r.listing) return;
    for (const [conv, until] of r.todo) {
      if (r.pulling.size >= RECOVERY_PARALLEL_PULLS) return;
      if (r.pulling.has(conv)) continue;
      r.pulling.add(conv);
      const after = r.restart.delete(conv) ? 0 : (/** @type {Record<string, number>} */ (this.cursors.delivered)[conv] ?? 0);
      const id = this.reqId();
      this.inFlight.set(id, { kind: 'recovery-pull', conv });
      this.transmit.push({
        reqId: id,
        pull: { conversation: conv, afterSeq: after, untilSeq: until, limit: PAGE, beforeSeq: 0 },
      });
    }
    if (r.todo.size > 0 || r.pulling.size > 0) return;
    this.recovery = null;
    if (r.resumeAfter > this.cursors.inbox) {
      this.cursors.inbox = r.resumeAfter;
      this.cursorsDirty = true;
      this.scheduleAck(now);
    }
    // Pushes that arrived meanwhile: those at or below the new cursor are covered.
    for (const s of [...this.buffered.keys()]) if (s <= this.cursors.inbox) this.buffered.delete(s);
    for (let m; (m = this.buffered.get(this.cursors.inbox + 1)) !== undefined; ) {
      this.buffered.delete(this.cursors.inbox + 1);
      this.deliver(m);
      this.cursors.inbox += 1;
    }
    this.startSync();
  }

  /** The next time handleTimeout wants to run, or null. */
  pollTimeout() {
    const t = this.ackDue;
    const p = this.sendPausedUntil;
    if (t === null) return p;
    return p === null || t < p ? t : p;
  }

  /** @param {number} now */
  handleTimeout(now) {
    if (this.ackDue !== null && this.ackDue <= now) this.sendAck();
    if (!this.connected) return;
    if (this.sendPausedUntil !== null && this.sendPausedUntil <= now) this.sendPausedUntil = null;
    this.fillWindow();
  }
}

/** Conversations per ListConversations page, and recovery Pulls in flight at once. */
const RECOVERY_LIST_PAGE = 500;
const RECOVERY_PARALLEL_PULLS = 8;

/**
 * The first retained inbox seq named in a Sync's CURSOR_TRIMMED message
 * ("... first retained inbox seq F ...", docs/PROTOCOL.md 8.11), or null.
 * @param {string} message
 * @returns {number|null}
 */
export function firstRetainedInboxSeq(message) {
  const m = /first retained inbox seq (\d+)/.exec(message ?? '');
  const n = m ? Number(m[1]) : 0;
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** @param {number} reqId @param {Outgoing} msg */
function sendFrame(reqId, msg) {
  const t = /** @type {any} */ (msg.target);
  const o = msg.options ?? {};
  return {
    reqId,
    send: {
      clientMsgId: msg.clientMsgId,
      conversation: t.conversation ?? '',
      peer: t.user ?? '',
      body: msg.body,
      contentType: msg.contentType,
      // Only what is set goes on the wire (a plain Send stays as it was).
      ...(o.replyTo ? { replyTo: o.replyTo } : {}),
      ...(o.mentions?.length ? { mentions: o.mentions } : {}),
      ...(o.mentionAll ? { mentionAll: true } : {}),
      ...(o.ttlSecs ? { ttlSecs: o.ttlSecs } : {}),
      ...(o.attachment ? { attachment: { blobId: o.attachment.blobId, name: o.attachment.name } } : {}),
    },
  };
}

/** The options worth keeping (and sending): none that are empty. @param {any} o @returns {SendOptions|undefined} */
function cleanOptions(o) {
  if (!o || typeof o !== 'object') return undefined;
  /** @type {SendOptions} */
  const out = {};
  if (Number.isSafeInteger(o.replyTo) && o.replyTo > 0) out.replyTo = o.replyTo;
  if (Array.isArray(o.mentions) && o.mentions.length > 0) out.mentions = o.mentions.filter((u) => typeof u === 'string');
  if (o.mentionAll === true) out.mentionAll = true;
  if (Number.isSafeInteger(o.ttlSecs) && o.ttlSecs > 0) out.ttlSecs = o.ttlSecs;
  // {blobId, name}; {blob_id, name} (the wire's spelling) is taken too.
  const a = o.attachment;
  const blobId = a && typeof a === 'object' ? (a.blobId ?? a.blob_id) : undefined;
  if (typeof blobId === 'string' && blobId !== '') {
    out.attachment = { blobId, name: typeof a.name === 'string' ? a.name : '' };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

// ---------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------

/**
 * @typedef {object} SavedState
 * @property {string|null} token
 * @property {string} device
 * @property {Cursors} cursors
 * @property {Outgoing[]} outbox
 */

/** @param {string} username */
export function storageKey(username) {
  return `tern:${username}:`;
}

/**
 * Reads what a client of `username` saved in `storage` (token, device, cursors, outbox).
 * @param {string} username
 * @param {Storage} [storage]
 * @returns {SavedState}
 */
export function loadState(username, storage = globalThis.localStorage) {
  const prefix = storageKey(username);
  /** @param {string} k */
  const read = (k) => {
    try {
      const v = storage.getItem(prefix + k);
      return v ? JSON.parse(v) : null;
    } catch {
      return null;
    }
  };
  const s = read('state') ?? {};
  const outbox = (read('outbox') ?? [])
    .map((o) => {
      const target = o.to ? { user: o.to } : o.conversation ? { conversation: o.conversation } : null;
      if (!target || typeof o.id !== 'string') return null;
      const options = cleanOptions(o.options);
      return {
        clientMsgId: o.id,
        target,
        body: fromBase64(o.body ?? ''),
        contentType: o.contentType ?? '',
        ...(options ? { options } : {}),
      };
    })
    .filter(Boolean);
  return {
    token: typeof s.token === 'string' ? s.token : null,
    device: typeof s.device === 'string' ? s.device : '',
    cursors: {
      storeEpoch: typeof s.storeEpoch === 'string' ? s.storeEpoch : '',
      inbox: Number.isSafeInteger(s.inbox) ? s.inbox : 0,
      conversations: s.conversations && typeof s.conversations === 'object' ? s.conversations : {},
      delivered: Object.fromEntries(
        Object.entries(s.delivered && typeof s.delivered === 'object' ? s.delivered : {}).filter(([, v]) => Number.isSafeInteger(v)),
      ),
    },
    outbox: /** @type {Outgoing[]} */ (outbox),
  };
}

/**
 * Forgets everything saved for `username` (token, cursors, outbox).
 * @param {string} username
 * @param {Storage} [storage]
 */
export function clearState(username, storage = globalThis.localStorage) {
  const prefix = storageKey(username);
  storage.removeItem(prefix + 'state');
  storage.removeItem(prefix + 'outbox');
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/** An Event carrying `detail` (works where CustomEvent is missing). */
export class TernEvent extends Event {
  /** @param {string} type @param {any} detail */
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string} url ws:// or wss:// URL of the server's bridge, e.g. ws://127.0.0.1:7480/ws
 * @property {string} username
 * @property {string} [password] used when there is no valid token (kept in memory only)
 * @property {string} [device] device name; default: the saved one, else "web-" + random
 * @property {Storage} [storage] default localStorage
 * @property {number} [initialBackoffMs] first reconnect delay (default 250), doubling...
 * @property {number} [maxBackoffMs] ...up to this (default 5000), with jitter
 * @property {number} [requestTimeoutMs] app requests fail after this (default 30000)
 * @property {number} [loginTimeoutMs] a connection that is not authenticated by then is dropped (default 15000)
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (default the global one)
 */

/** A random device name for a new installation. */
export function randomDeviceName() {
  const b = new Uint8Array(4);
  globalThis.crypto.getRandomValues(b);
  return 'web-' + [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

export class TernClient extends EventTarget {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    super();
    if (!opts?.url || !opts?.username) throw new TypeError('TernClient: url and username are required');
    this.url = opts.url;
    this.username = opts.username;
    this.storage = opts.storage ?? globalThis.localStorage;
    this.initialBackoffMs = opts.initialBackoffMs ?? 250;
    this.maxBackoffMs = opts.maxBackoffMs ?? 5000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30000;
    this.loginTimeoutMs = opts.loginTimeoutMs ?? 15000;
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    /** @type {string|null} */
    this.password = opts.password ?? null;
    const saved = loadState(this.username, this.storage);
    /** @type {string|null} */
    this.token = saved.token;
    // A device name is stable per installation; an explicit one wins (and its token is
    // only good for the device it was issued to).
    this.device = opts.device || saved.device || randomDeviceName();
    if (opts.device && saved.device && opts.device !== saved.device) this.token = null;
    this.engine = new Engine(this.username, saved.cursors, saved.outbox);
    /** @type {'idle'|'connecting'|'connected'|'reconnecting'|'auth-lost'|'replaced'|'closed'} */
    this.state = 'idle';
    /** LoginOk of the current connection. @type {any} */
    this.session = null;
    this.stopped = false;
    this.attempt = 0;
    /** @type {any} the current connection */
    this.conn = null;
    /** @type {Map<string, {resolve: Function, reject: Function}>} */
    this.sendWaiters = new Map();
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any}>} */
    this.requestWaiters = new Map();
    /** @type {{body: object, resolve: Function, reject: Function, timer: any, done: boolean}[]} */
    this.queuedRequests = [];
    this.reconnectTimer = null;
    this.engineTimer = null;
    this.engineTimerAt = null;
    this.lastSave = 0;
    this.savePending = false;
    this.onOnline = () => {
      if (this.reconnectTimer && !this.stopped) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this.connect();
      }
    };
    this.onPageHide = () => this.saveState();
  }

  /**
   * Creates an account (a one-off connection). Register does not log in.
   * @param {string} url
   * @param {string} username
   * @param {string} password
   * @param {{WebSocket?: typeof WebSocket, timeoutMs?: number}} [opts]
   * @returns {Promise<void>}
   */
  static async register(url, username, password, opts = {}) {
    const r = await oneShot(
      url,
      { register: { protocolVersion: PROTOCOL_VERSION, username, password } },
      opts,
    );
    if (r.body !== 'ok') throw new TernError('protocol', `unexpected ${r.body}`);
  }

  /** Subscribes to an event with a function of its detail; returns the unsubscribe function. */
  on(/** @type {string} */ type, /** @type {(detail: any) => void} */ fn) {
    /** @param {Event} e */
    const h = (e) => fn(/** @type {TernEvent} */ (e).detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  /** @param {string} type @param {any} detail */
  emit(type, detail) {
    this.dispatchEvent(new TernEvent(type, detail));
  }

  /** @param {string} state @param {object} [extra] */
  setState(state, extra = {}) {
    this.state = /** @type {any} */ (state);
    this.emit('state', { state, ...extra });
  }

  /** Cursors as saved (a copy). @returns {Cursors} */
  get cursors() {
    const c = this.engine.cursors;
    return { storeEpoch: c.storeEpoch, inbox: c.inbox, conversations: { ...c.conversations }, delivered: { ...c.delivered } };
  }

  /** Sends without a SendAck yet, in order (survive reconnects and page reloads). */
  get pending() {
    return this.engine.outboxMessages().map((m) => ({
      clientMsgId: m.clientMsgId,
      target: m.target,
      options: m.options ?? {},
      text: m.contentType === '' || m.contentType.startsWith('text/') ? utf8d.decode(m.body) : null,
    }));
  }

  /** Starts connecting (in the background); returns this. */
  start() {
    if (this.state !== 'idle') return this;
    this.stopped = false;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this.onOnline);
      globalThis.addEventListener('pagehide', this.onPageHide);
    }
    this.connect();
    return this;
  }

  /** Acks what was received, saves state, closes the connection and stops. Unacked sends stay in the saved outbox. */
  close() {
    if (this.stopped) return;
    if (this.conn?.authed) {
      this.engine.flushAck();
      this.flushTransmit(this.conn);
    }
    this.stop('closed', {});
  }

  /** Logs this device out (its token is revoked), forgets the token and stops. */
  async logout() {
    try {
      if (this.conn?.authed) await this.request({ logout: {} }, 5000);
    } catch {
      // Offline: the token is forgotten here anyway.
    }
    this.token = null;
    this.password = null;
    this.saveState();
    this.stop('closed', { reason: 'logged out' });
  }

  // ---- sending ----

  /**
   * Queues a message; resolves with the durable SendAck (after reconnects if needed),
   * rejects with a TernError if the server refuses it for good or the client stops.
   * @param {Target} target `{user}` for the 1:1 chat with a user, or `{conversation}`
   * @param {string|Uint8Array} body text (UTF-8) or bytes
   * @param {string} [contentType] empty = text/plain; charset=utf-8
   * @param {SendOptions} [options] reply-to, mentions, @all, time to live (kept with
   *   the message in the outbox, so a resend carries them too)
   * @returns {Promise<SendAck> & {clientMsgId: string}}
   */
  send(target, body, contentType = '', options = undefined) {
    const opts = cleanOptions(options);
    /** @type {Outgoing} */
    const msg = {
      clientMsgId: newClientMsgId(),
      target: 'user' in target ? { user: target.user } : { conversation: target.conversation },
      body: typeof body === 'string' ? utf8.encode(body) : body,
      contentType,
      ...(opts ? { options: opts } : {}),
    };
    /** @type {any} */
    const p = new Promise((resolve, reject) => {
      if (this.stopped) {
        reject(new TernError('stopped', 'client stopped'));
        return;
      }
      this.sendWaiters.set(msg.clientMsgId, { resolve, reject });
    });
    p.clientMsgId = msg.clientMsgId;
    if (!this.stopped) {
      this.engine.send(msg);
      this.pump(); // saves the outbox before the frame goes out
    }
    return p;
  }

  /** @param {Target} target @param {string} text @param {SendOptions} [options] */
  sendText(target, text, options = undefined) {
    return this.send(target, text, '', options);
  }

  /**
   * An image or file message: `attachment` is a blob uploaded with `uploadBlob` and the file
   * name to show; `caption` is the (optional) text. Like `send` (outbox, resends).
   * @param {Target} target @param {AttachmentRef} attachment @param {string} [caption]
   * @param {SendOptions} [options]
   */
  sendAttachment(target, attachment, caption = '', options = undefined) {
    return this.send(target, caption, '', { ...(options ?? {}), attachment });
  }

  /**
   * Replaces the text of one of this user's messages (the sender only, within the edit
   * window: WINDOW_EXPIRED after it, FORBIDDEN for someone else's). Resolves with the
   * SendAck of the EDIT entry once durable; every member's devices get that entry as a
   * message of kind 'edit'.
   * @param {string} conversation @param {number} seq @param {string|Uint8Array} body
   * @param {string} [contentType]
   * @returns {Promise<SendAck>}
   */
  async edit(conversation, seq, body, contentType = '') {
    const f = await this.request({
      edit: {
        clientMsgId: newClientMsgId(),
        conversation,
        seq,
        body: typeof body === 'string' ? utf8.encode(body) : body,
        contentType,
      },
    });
    return toAck(f.sendAck);
  }

  /**
   * Recalls a message (its sender within the recall window, or a group owner/admin at
   * any time). Resolves with the SendAck of the RECALL entry; every member's devices get
   * that entry as a message of kind 'recall'.
   * @param {string} conversation @param {number} seq
   * @returns {Promise<SendAck>}
   */
  async recall(conversation, seq) {
    const f = await this.request({ recall: { clientMsgId: newClientMsgId(), conversation, seq } });
    return toAck(f.sendAck);
  }

  /**
   * Hides a message for this user only, on all their devices (each gets a 'hidden'
   * event); history serves it to this user as `deleted`, without content.
   * @param {string} conversation @param {number} seq
   */
  async deleteForMe(conversation, seq) {
    await this.request({ deleteForMe: { conversation, seq } });
  }

  /**
   * Says this user is typing (true) or stopped (false) in `conversation`: the members
   * online now get a 'typing' event. Send true at most every few seconds while the user
   * types, and false when they stop or send.
   * @param {string} conversation @param {boolean} [typing]
   */
  async typing(conversation, typing = true) {
    await this.request({ typing: { conversation, typing } });
  }

  // ---- requests ----

  /**
   * Any request; resolves with the response frame (its `body` names the kind), rejects
   * with TernError on a server error, a lost connection or a timeout. Made while offline,
   * it waits for the next connection.
   * @param {object} body e.g. `{listConversations: {}}`
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  request(body, timeoutMs = this.requestTimeoutMs) {
    return new Promise((resolve, reject) => {
      if (this.stopped) {
        reject(new TernError('stopped', 'client stopped'));
        return;
      }
      const q = { body, resolve, reject, timer: null, done: false };
      const fail = (/** @type {TernError} */ e) => {
        if (q.done) return;
        q.done = true;
        clearTimeout(q.timer);
        reject(e);
      };
      const ok = (/** @type {any} */ f) => {
        if (q.done) return;
        q.done = true;
        clearTimeout(q.timer);
        if (f.body === 'error') reject(new TernError(f.error.code, f.error.message));
        else resolve(f);
      };
      q.resolve = ok;
      q.reject = fail;
      q.timer = setTimeout(() => {
        this.queuedRequests = this.queuedRequests.filter((x) => x !== q);
        for (const [id, w] of this.requestWaiters) if (w === q) this.requestWaiters.delete(id);
        fail(new TernError('timeout', 'no answer in time'));
      }, timeoutMs);
      if (this.conn?.authed && this.engine.connected) this.issue(q);
      else this.queuedRequests.push(q);
    });
  }

  /** @param {any} q */
  issue(q) {
    const id = this.engine.request(q.body);
    if (id === null) {
      this.queuedRequests.push(q);
      return;
    }
    this.requestWaiters.set(id, q);
    this.pump();
  }

  /**
   * The first page of this user's conversations (at most 1000, pinned first, then most
   * recently active first), without the totals; see `listConversations`.
   * @returns {Promise<ConversationInfo[]>}
   */
  async conversations() {
    return (await this.listConversations()).conversations;
  }

  /**
   * One page of this user's conversations, pinned first, then most recently active first
   * (docs/PROTOCOL.md 9.1): `offset` conversations skipped, at most `limit` (0 = all,
   * capped at 1000 by the server). Each carries the user's `readSeq`, the server's
   * `unread` count, the last message and the user's `muted`/`pinned`; `totalUnread`
   * (muted conversations left out) and `total` are over ALL the user's conversations,
   * not only this page.
   * @param {{limit?: number, offset?: number}} [page]
   * @returns {Promise<{conversations: ConversationInfo[], totalUnread: number, total: number}>}
   */
  async listConversations({ limit = 0, offset = 0 } = {}) {
    const f = await this.request({ listConversations: { limit, offset } });
    const l = f.conversationList;
    return {
      conversations: l.conversations.map(toConversationInfo),
      totalUnread: Number(l.totalUnread ?? 0),
      total: Number(l.total ?? 0),
    };
  }

  /**
   * Marks `conversation` read up to `seq` (0 = up to its last message). Read positions
   * only move forward: an older `seq` changes nothing and is not an error. Resolves with
   * the position after the call and what is left unread, once durable on the server.
   * When the position moved, this user's devices (this one too) get a 'read' event with
   * `own` set, the other members one without (docs/PROTOCOL.md 9.2). A `seq` past the
   * last message rejects with INVALID_ARGUMENT, a conversation the user is not in with
   * FORBIDDEN.
   * @param {string} conversation
   * @param {number} [seq]
   * @returns {Promise<{conversation: string, readSeq: number, unread: number}>}
   */
  async markRead(conversation, seq = 0) {
    const f = await this.request({ markRead: { conversation, seq } });
    const r = f.readState;
    return { conversation: r.conversation, readSeq: Number(r.readSeq), unread: Number(r.unread) };
  }

  /**
   * Mutes/unmutes and pins/unpins `conversation` for this user, on all their devices
   * (docs/PROTOCOL.md 9.3); a setting left undefined keeps its value. Resolves with both
   * settings after the call, once durable on the server. When something changed, this
   * user's devices (this one too) get a 'settings' event. A pinned conversation is listed
   * first; a muted one's unread is left out of `totalUnread`. A conversation the user is
   * not in rejects with FORBIDDEN.
   * @param {string} conversation
   * @param {{muted?: boolean, pinned?: boolean}} settings
   * @returns {Promise<{conversation: string, muted: boolean, pinned: boolean}>}
   */
  async setConversationSettings(conversation, { muted, pinned } = {}) {
    /** @type {{conversation: string, muted?: boolean, pinned?: boolean}} */
    const body = { conversation };
    if (muted !== undefined) body.muted = !!muted;
    if (pinned !== undefined) body.pinned = !!pinned;
    const f = await this.request({ setConversationSettings: body });
    const r = f.conversationSettings;
    return { conversation: r.conversation, muted: !!r.muted, pinned: !!r.pinned };
  }

  /**
   * A page of history: the `limit` messages just below `before` (0 = the newest), ascending.
   * `firstSeq` is the first seq this user may read (a group whose history visibility is
   * JOINED hides what came before they were added): paging back ends there (`fromSeq`
   * reaching `firstSeq`, or no messages).
   * @param {string} conversation
   * @param {number} [before]
   * @param {number} [limit]
   */
  async history(conversation, before = 0, limit = 50) {
    const f = await this.request({
      pull: {
        conversation,
        afterSeq: 0,
        beforeSeq: before > 0 ? before : Number.MAX_SAFE_INTEGER,
        limit,
        untilSeq: 0,
      },
    });
    const r = f.pullResult;
    return {
      conversation: r.conversation,
      messages: r.messages.map(toMessage),
      fromSeq: Number(r.fromSeq),
      toSeq: Number(r.toSeq),
      lastSeq: Number(r.lastSeq),
      complete: !!r.complete,
      // The first seq this user may read (history visibility): no page goes below it.
      firstSeq: Number(r.firstSeq ?? 0) || 1,
    };
  }

  /**
   * Creates a group; this user becomes its OWNER.
   * @param {string} name @param {string[]} members users besides the creator
   * @param {{visibility?: 'JOINED'|'SHARED'|number}} [options] history visibility (unset:
   *   the server's default, JOINED: members read from when they were added)
   */
  async createGroup(name, members = [], { visibility } = {}) {
    /** @type {any} */
    const body = { name, members };
    if (visibility !== undefined) body.visibility = enumValue(HistoryVisibility, visibility, 'visibility');
    const f = await this.request({ createGroup: body });
    return { conversation: f.groupCreated.conversation, seq: Number(f.groupCreated.seq) };
  }

  /**
   * Creates a public channel (docs/PROTOCOL.md 9.10): a group listed in the directory
   * that users join and leave themselves; this user becomes its OWNER. Always read
   * diffusion. `broadcastOnly`: only the owner and admins post (mute_all).
   * @param {string} name 1-128 bytes; the directory searches it by prefix
   * @param {{broadcastOnly?: boolean, visibility?: 'PUBLIC'|'JOINED'|'SHARED'|number}} [options]
   *   visibility unset: PUBLIC (anyone may read the whole history, member or not)
   * @returns {Promise<{conversation: string, seq: number}>}
   */
  async createChannel(name, { broadcastOnly = false, visibility } = {}) {
    /** @type {any} */
    const body = { name, broadcastOnly: !!broadcastOnly };
    if (visibility !== undefined) body.visibility = enumValue(HistoryVisibility, visibility, 'visibility');
    const f = await this.request({ createChannel: body });
    return { conversation: f.groupCreated.conversation, seq: Number(f.groupCreated.seq) };
  }

  /**
   * Joins a public channel as a MEMBER (a MEMBERS_ADDED event with this user as actor and
   * member). Joining twice is not an error; a private group or an unknown id rejects with
   * FORBIDDEN. Leave with `leaveGroup`.
   * @param {string} conversation
   */
  async joinChannel(conversation) {
    await this.request({ joinChannel: { conversation } });
  }

  /**
   * The channel directory: channels whose name starts with `prefix` (case-insensitive), in
   * name order, at most `limit` (0 = 50, capped at 100 by the server).
   * @param {string} [prefix] @param {number} [limit]
   * @returns {Promise<ChannelInfo[]>}
   */
  async listChannels(prefix = '', limit = 0) {
    const f = await this.request({ listChannels: { prefix, limit } });
    return (f.channelList.channels ?? []).map((/** @type {any} */ c) => ({
      conversation: c.conversation,
      name: c.name ?? '',
      topic: c.topic ?? '',
      memberCount: Number(c.memberCount ?? 0),
      broadcastOnly: !!c.broadcastOnly,
      visibility: visibilityName(c.visibility),
      joined: !!c.joined,
    }));
  }

  /** @param {string} conversation @param {string[]} users @param {number} [role] */
  async addMembers(conversation, users, role = Role.MEMBER) {
    await this.request({ addMembers: { conversation, users, role } });
  }

  /** @param {string} conversation @param {string[]} users */
  async removeMembers(conversation, users) {
    await this.request({ removeMembers: { conversation, users } });
  }

  /** @param {string} conversation */
  async leaveGroup(conversation) {
    await this.request({ leaveGroup: { conversation } });
  }

  /**
   * Makes a member an admin or a plain member again (the owner only: FORBIDDEN for
   * anyone else; NOT_FOUND for a non-member). Every member gets a ROLE_CHANGED event.
   * @param {string} conversation @param {string} user
   * @param {'ADMIN'|'MEMBER'|number} role
   */
  async setMemberRole(conversation, user, role) {
    await this.request({ setMemberRole: { conversation, user, role: enumValue(Role, role, 'role') } });
  }

  /**
   * Hands the group to another member (the owner only); the caller becomes an admin.
   * Every member gets an OWNER_CHANGED event.
   * @param {string} conversation @param {string} user
   */
  async transferOwnership(conversation, user) {
    await this.request({ transferOwnership: { conversation, user } });
  }

  /**
   * Changes the group's profile (owner or admin); a field left undefined keeps its value.
   * Every member gets a GROUP_UPDATED event carrying the whole profile after the change
   * (none when nothing changed). While `muteAll` is set, plain members' sends are refused
   * with FORBIDDEN.
   * @param {string} conversation
   * @param {{name?: string, topic?: string, muteAll?: boolean, maxMembers?: number,
   *   visibility?: 'JOINED'|'SHARED'|'PUBLIC'|number}} changes topic '' clears it; maxMembers 0 =
   *   the server's cap; visibility PUBLIC: channels only
   */
  async updateGroup(conversation, { name, topic, muteAll, maxMembers, visibility } = {}) {
    /** @type {any} */
    const body = { conversation };
    if (name !== undefined) body.name = name;
    if (topic !== undefined) body.topic = topic;
    if (muteAll !== undefined) body.muteAll = !!muteAll;
    if (maxMembers !== undefined) body.maxMembers = maxMembers;
    if (visibility !== undefined) body.visibility = enumValue(HistoryVisibility, visibility, 'visibility');
    await this.request({ updateGroup: body });
  }

  /**
   * Dissolves the group (the owner only): every member gets a DISSOLVED event, then
   * nobody is a member (requests on it are FORBIDDEN; it leaves every conversation list).
   * @param {string} conversation
   */
  async dissolveGroup(conversation) {
    await this.request({ dissolveGroup: { conversation } });
  }

  /** @param {string} conversation */
  async members(conversation) {
    const f = await this.request({ listMembers: { conversation } });
    return f.memberList.members.map((/** @type {any} */ m) => ({
      username: m.username,
      role: Role[m.role] ?? String(m.role),
    }));
  }

  /**
   * Changes this user's profile: an undefined field keeps its value, '' clears it (display
   * name at most 64 characters, status at most 256, no control characters).
   * @param {{displayName?: string, status?: string, avatar?: string}} change avatar: a blob
   *   id of an image (see `setAvatar`), '' removes it
   * @returns {Promise<Profile>} the profile after the change
   */
  async setProfile(change) {
    /** @type {any} */
    const req = {};
    if (change.displayName !== undefined) req.displayName = change.displayName;
    if (change.status !== undefined) req.status = change.status;
    if (change.avatar !== undefined) req.avatar = change.avatar;
    const f = await this.request({ setProfile: req });
    return profileOf(f.profileList.profiles[0]);
  }

  /**
   * Sets (or with '' removes) this user's avatar: a blob id of an image this user uploaded
   * (`uploadBlob`) or may read; anyone may then read it. @param {string} blobId
   * @returns {Promise<Profile>}
   */
  async setAvatar(blobId) {
    return this.setProfile({ avatar: blobId });
  }

  // ---- blobs: images and files (docs/PROTOCOL.md 9.14) ----

  /**
   * Uploads bytes as a blob and resolves with what the server stored (for images: size and
   * thumbnail). The content is named first (sha256 and size: UploadBegin), so the server
   * checks its limits before any byte goes out; then 512 KiB chunks in order, then
   * UploadFinish. If the connection drops, it asks the server again once reconnected and
   * goes on from the offset the server has stored; content this user already stored is
   * not sent again. Attach the result with `send(target, caption, '', {attachment: {blobId, name}})`.
   * @param {File|Blob|Uint8Array|ArrayBuffer} data
   * @param {string} [mime] the type; default: `blobMime` of the bytes and the File's type
   * @param {(sent: number, total: number) => void} [onProgress] bytes stored on the server
   * @returns {Promise<BlobInfo>}
   */
  async uploadBlob(data, mime = '', onProgress = () => {}) {
    const bytes = await bytesFrom(data);
    const type = mime || blobMime(bytes, /** @type {any} */ (data).type);
    const sha = await sha256(bytes);
    const size = bytes.length;
    let retries = 0;
    /** Runs a request; null when it may be asked again (from UploadBegin). @param {object} body */
    const ask = async (body) => {
      try {
        return await this.request(body);
      } catch (e) {
        if (transientTransfer(e) && retries < BLOB_RETRIES) {
          retries++;
          return null;
        }
        throw e;
      }
    };
    for (;;) {
      const b = await ask({ uploadBegin: { sha256: sha, size, mime: type } });
      if (!b) continue;
      const state = b.uploadState;
      if (state.blob) {
        onProgress(size, size);
        return toBlobInfo(state.blob);
      }
      const id = state.uploadId;
      let offset = Number(state.offset);
      onProgress(offset, size);
      let again = false;
      while (offset < size) {
        const chunk = bytes.subarray(offset, Math.min(size, offset + BLOB_CHUNK));
        let f;
        try {
          f = await this.request({ uploadChunk: { uploadId: id, offset, data: chunk } });
        } catch (e) {
          // Lost: the chunk may or may not have landed; INVALID_ARGUMENT: someone else (another
          // device of this user) moved the upload on. Either way, ask where the server is.
          const moved = e instanceof TernError && e.code === ErrorCode.INVALID_ARGUMENT;
          if ((transientTransfer(e) || moved) && retries < BLOB_RETRIES) {
            retries++;
            again = true;
            break;
          }
          throw e;
        }
        offset = Number(f.uploadState.offset);
        retries = 0;
        onProgress(offset, size);
      }
      if (again) continue;
      // It may have finished before a lost answer: UploadBegin then answers with the blob.
      const fin = await ask({ uploadFinish: { uploadId: id } });
      if (!fin) continue;
      return toBlobInfo(fin.blobInfo);
    }
  }

  /**
   * Downloads a blob this user may read (an upload of theirs, an attachment of a message
   * they can see, anyone's avatar) whole, in 512 KiB chunks, going on from the bytes it
   * has after a reconnect; rejects unless the bytes hash to `blobId`.
   * @param {string} blobId
   * @param {(received: number, total: number) => void} [onProgress]
   * @returns {Promise<{bytes: Uint8Array, mime: string}>}
   */
  async download(blobId, onProgress = () => {}) {
    /** @type {Uint8Array|null} */
    let out = null;
    let mime = '';
    let offset = 0;
    let retries = 0;
    for (;;) {
      let f;
      try {
        f = await this.request({ download: { blobId, offset, length: BLOB_CHUNK } });
      } catch (e) {
        if (transientTransfer(e) && retries < BLOB_RETRIES) {
          retries++;
          continue;
        }
        throw e;
      }
      retries = 0;
      const c = f.blobChunk;
      const size = Number(c.size);
      const data = bytesOf(c.data);
      if (Number(c.offset) !== offset) throw new TernError('protocol', `chunk at ${c.offset}, asked for ${offset}`);
      if (!out) {
        out = new Uint8Array(size);
        mime = c.mime ?? '';
      }
      if (out.length !== size) throw new TernError('protocol', `blob size changed from ${out.length} to ${size}`);
      if (data.length === 0 && offset < size) throw new TernError('protocol', `empty chunk at ${offset} of ${size}`);
      if (offset + data.length > size) throw new TernError('protocol', `chunk past the end (${size} bytes)`);
      out.set(data, offset);
      offset += data.length;
      if (data.length > 0) onProgress(offset, size);
      if (offset >= size) break;
    }
    if ((await blobIdOf(out)) !== blobId) {
      throw new TernError('protocol', `downloaded bytes do not hash to ${blobId}`);
    }
    return { bytes: out, mime };
  }

  /**
   * A short-lived signed URL of a blob this user may read, for a plain HTTP GET (an
   * <img src>, a download link): the server's web listener (the http(s) origin of this
   * client's ws(s) URL) + the path GetBlobUrl answers. Refused after `expiresMs` (server
   * time; compare with `session.serverTimeMs`, not the local clock).
   * @param {string} blobId
   * @returns {Promise<{url: string, path: string, expiresMs: number}>}
   */
  async blobUrl(blobId) {
    const f = await this.request({ getBlobUrl: { blobId } });
    const u = new URL(this.url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    return {
      url: new URL(f.blobUrl.path, u.origin).href,
      path: f.blobUrl.path,
      expiresMs: Number(f.blobUrl.expiresMs ?? 0),
    };
  }

  /**
   * Profiles of up to 100 users, in the order asked; unknown users are left out.
   * @param {string[]} users @returns {Promise<Profile[]>}
   */
  async getProfiles(users) {
    const f = await this.request({ getProfiles: { users } });
    return (f.profileList.profiles ?? []).map(profileOf);
  }

  /**
   * Users whose name or display name starts with `prefix` (at least 2 characters,
   * case-insensitive), at most `limit` (0 = 20, at most 50). Rate-limited by the server.
   * @param {string} prefix @param {number} [limit]
   * @returns {Promise<{user: string, displayName: string}[]>}
   */
  async searchUsers(prefix, limit = 0) {
    const f = await this.request({ searchUsers: { prefix, limit } });
    return (f.userSearchResult.users ?? []).map((/** @type {any} */ u) => ({
      user: u.user,
      displayName: u.displayName ?? '',
    }));
  }

  /**
   * Full-text search over the messages this user can read, newest first
   * (docs/PROTOCOL.md 9.15): every word of `query` must occur (case-insensitive, whole
   * words); Chinese, Japanese and Korean text matches its characters in order ("世界" finds
   * "你好世界"). `conversation` keeps to one conversation, `sender` to one sender's messages;
   * `limit` 0 = 20 (at most 100); `page` is the `nextPage` of the previous answer ("" = the
   * newest hits). The hits are the messages as history serves them now (an edited one with
   * its current text; recalled, expired and deleted ones are never hits). `indexLag`:
   * messages stored but not yet searchable. Errors: INVALID_ARGUMENT for an empty query, one
   * over 256 bytes or with nothing to search for; RATE_LIMITED when searching too fast.
   * @param {string} query
   * @param {{conversation?: string, sender?: string, limit?: number, page?: string}} [opts]
   * @returns {Promise<{messages: Message[], nextPage: string, indexLag: number}>}
   */
  async searchMessages(query, { conversation = '', sender = '', limit = 0, page = '' } = {}) {
    const f = await this.request({ searchMessages: { query, conversation, sender, limit, page } });
    const r = f.searchResult;
    return {
      messages: (r.messages ?? []).map(toMessage),
      nextPage: r.nextPage ?? '',
      indexLag: Number(r.indexLag ?? 0),
    };
  }

  /**
   * Asks `user` to be friends (accepts their request if they asked first). Contact changes
   * reach every device of both users as system messages with `contact` set
   * (docs/PROTOCOL.md 9.13). @param {string} user @param {string} [message]
   */
  async sendFriendRequest(user, message = '') {
    await this.request({ sendFriendRequest: { user, message } });
  }

  /** @param {string} user */
  async acceptFriendRequest(user) {
    await this.request({ acceptFriendRequest: { user } });
  }

  /** @param {string} user */
  async declineFriendRequest(user) {
    await this.request({ declineFriendRequest: { user } });
  }

  /** @param {string} user */
  async cancelFriendRequest(user) {
    await this.request({ cancelFriendRequest: { user } });
  }

  /** @param {string} user */
  async removeFriend(user) {
    await this.request({ removeFriend: { user } });
  }

  /** Blocks `user` (they are not told). @param {string} user */
  async blockUser(user) {
    await this.request({ blockUser: { user } });
  }

  /** @param {string} user */
  async unblockUser(user) {
    await this.request({ unblockUser: { user } });
  }

  /** This user's contacts, in name order. @returns {Promise<Contact[]>} */
  async contacts() {
    const f = await this.request({ listContacts: {} });
    return (f.contactList.contacts ?? []).map((/** @type {any} */ c) => ({
      user: c.user,
      state: CONTACT_STATES[c.state ?? 0] ?? String(c.state),
      message: c.message ?? '',
      sinceMs: Number(c.sinceMs ?? 0),
    }));
  }

  /** Online devices of each user. @param {string[]} users */
  async presence(users) {
    const f = await this.request({ presenceQuery: { users } });
    return f.presenceResult.users.map((/** @type {any} */ u) => ({
      username: u.username,
      onlineDevices: [...u.onlineDevices],
    }));
  }

  /** @param {string} conversation */
  async groupOnline(conversation) {
    const f = await this.request({ groupOnlineQuery: { conversation } });
    const r = f.groupOnlineResult;
    return { conversation: r.conversation, members: r.members, onlineMembers: r.onlineMembers };
  }

  // ---- connection ----

  connect() {
    if (this.stopped) return;
    this.reconnectTimer = null;
    if (this.state === 'idle') this.setState('connecting');
    let ws;
    const conn = {
      ws: /** @type {WebSocket|null} */ (null),
      authed: false,
      dead: false,
      loginReq: 0,
      triedToken: false,
      lastRx: Date.now(),
      retryAfterMs: 0,
      closeReason: '',
      loginTimer: /** @type {any} */ (null),
      pingTimer: /** @type {any} */ (null),
    };
    this.conn = conn;
    try {
      ws = new this.WebSocket(this.url);
    } catch (e) {
      // A malformed URL: no point retrying.
      this.stop('auth-lost', { reason: `cannot open ${this.url}: ${e}`, code: 'bad-url' });
      return;
    }
    conn.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (conn.dead) return;
      this.authenticate(conn);
    };
    ws.onmessage = (ev) => {
      if (conn.dead) return;
      conn.lastRx = Date.now();
      if (!(ev.data instanceof ArrayBuffer)) return; // not a frame
      let frame;
      try {
        frame = pb.Frame.decode(new Uint8Array(ev.data));
      } catch (e) {
        this.drop(conn, `undecodable frame from server: ${e}`);
        return;
      }
      this.onFrame(conn, frame);
    };
    ws.onclose = (ev) => {
      this.drop(conn, conn.closeReason || `connection closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`);
    };
    ws.onerror = () => {
      // A close event follows.
    };
    conn.loginTimer = setTimeout(() => {
      if (!conn.authed) this.drop(conn, 'no answer to login');
    }, this.loginTimeoutMs);
  }

  /** Sends Resume (saved token) or Login (password) on a new connection. @param {any} conn */
  authenticate(conn) {
    let body;
    if (this.token && !conn.triedToken) {
      conn.triedToken = true;
      body = { resume: { protocolVersion: PROTOCOL_VERSION, token: this.token } };
    } else if (this.password) {
      body = {
        login: {
          protocolVersion: PROTOCOL_VERSION,
          username: this.username,
          password: this.password,
          device: this.device,
        },
      };
    } else {
      this.stop('auth-lost', {
        code: 'no-credentials',
        reason: 'no valid token and no password: log in again',
      });
      return;
    }
    conn.loginReq = this.engine.reqId();
    this.write(conn, { reqId: conn.loginReq, ...body });
  }

  /** @param {any} conn @param {any} frame */
  onFrame(conn, frame) {
    if (frame.body === 'closing') {
      this.onClosing(conn, frame.closing);
      return;
    }
    if (!conn.authed) {
      if (Number(frame.reqId) !== conn.loginReq || conn.loginReq === 0) return;
      if (frame.body === 'loginOk') {
        this.onLoggedIn(conn, frame.loginOk);
        return;
      }
      if (frame.body !== 'error') {
        this.drop(conn, `unexpected ${frame.body} to login`);
        return;
      }
      const { code, message } = frame.error;
      const tokenBad =
        code === ErrorCode.INVALID_TOKEN || code === ErrorCode.TOKEN_EXPIRED || code === ErrorCode.TOKEN_REVOKED;
      if (tokenBad) {
        this.token = null;
        this.saveState();
        if (this.password) {
          this.authenticate(conn); // Login with the password on the same connection
          return;
        }
      }
      if (tokenBad || code === ErrorCode.INVALID_CREDENTIALS || code === ErrorCode.INVALID_ARGUMENT || code === ErrorCode.UNSUPPORTED_VERSION) {
        this.stop('auth-lost', { code, codeName: ErrorCode[code], reason: message });
        return;
      }
      this.drop(conn, message || ErrorCode[code] || 'login failed');
      return;
    }
    this.engine.handleFrame(frame, Date.now());
    this.pump();
  }

  /** @param {any} conn @param {any} ok LoginOk */
  onLoggedIn(conn, ok) {
    conn.authed = true;
    clearTimeout(conn.loginTimer);
    this.attempt = 0;
    this.session = ok;
    this.token = ok.token;
    if (ok.device) this.device = ok.device;
    this.engine.setWindow(Math.max(1, Math.floor((ok.maxPending || 256) / 2)));
    this.engine.onConnected(ok.storeEpoch);
    this.saveState(true);
    this.setState('connected', { username: ok.username, device: ok.device });
    const hbMs = Math.max(1, ok.heartbeatSecs || 30) * 1000;
    conn.pingTimer = setInterval(() => {
      if (conn.dead) return;
      if (Date.now() - conn.lastRx > livenessTimeoutMs(hbMs)) {
        this.drop(conn, `server silent for ${rules.liveness.heartbeatMisses} heartbeats`);
        return;
      }
      // A Ping is a request: a non-zero req_id of its own (docs/PROTOCOL.md section 3).
      // Its Pong matches nothing in flight and is dropped; it only refreshes lastRx.
      this.write(conn, { reqId: this.engine.reqId(), ping: { clientTimeMs: Date.now() } });
    }, hbMs);
    // Requests made while offline go out now.
    const queued = this.queuedRequests;
    this.queuedRequests = [];
    for (const q of queued) if (!q.done) this.issue(q);
    this.pump();
  }

  /** @param {any} conn @param {any} c Closing */
  onClosing(conn, c) {
    const reason = c.reason;
    const text = c.message || CloseReason[reason] || 'closing';
    if (reason === CloseReason.REPLACED) {
      this.stop('replaced', { reason: text });
    } else if (reason === CloseReason.REVOKED || reason === CloseReason.LOGGED_OUT) {
      this.token = null;
      this.saveState();
      this.stop('auth-lost', { code: ErrorCode.TOKEN_REVOKED, codeName: CloseReason[reason], reason: text });
    } else {
      conn.retryAfterMs = c.retryAfterMs || 0;
      conn.closeReason = `server closed: ${text}`;
      this.drop(conn, conn.closeReason);
    }
  }

  /** Moves frames out and events to the app; saves state. */
  pump() {
    const conn = this.conn;
    // Events first: an ack resolves its promise; then save (a new outbox entry is
    // stored before it is sent); then send.
    this.drainEvents();
    if (this.engine.outboxDirty) {
      this.saveState(true);
    } else if (this.engine.cursorsDirty) {
      this.saveState();
    }
    if (conn && conn.authed && !conn.dead) this.flushTransmit(conn);
    this.armEngineTimer();
  }

  /** @param {any} conn */
  flushTransmit(conn) {
    while (this.engine.transmit.length > 0) {
      const f = this.engine.transmit.shift();
      this.write(conn, f);
    }
  }

  /** @param {any} conn @param {object} frame */
  write(conn, frame) {
    if (conn.dead || !conn.ws || conn.ws.readyState !== 1) return;
    try {
      conn.ws.send(pb.Frame.encode(/** @type {any} */ (frame)).finish());
    } catch (e) {
      this.drop(conn, `send failed: ${e}`);
    }
  }

  armEngineTimer() {
    const at = this.engine.pollTimeout();
    if (at === this.engineTimerAt) return;
    clearTimeout(this.engineTimer);
    this.engineTimer = null;
    this.engineTimerAt = at;
    if (at === null || this.stopped) return;
    this.engineTimer = setTimeout(() => {
      this.engineTimer = null;
      this.engineTimerAt = null;
      this.engine.handleTimeout(Date.now());
      this.pump();
    }, Math.max(0, at - Date.now()));
  }

  drainEvents() {
    while (this.engine.events.length > 0) {
      const ev = /** @type {EngineEvent} */ (this.engine.events.shift());
      switch (ev.type) {
        case 'message':
          this.emit('message', { message: toMessage(ev.message), own: ev.own });
          break;
        case 'acked': {
          const ack = toAck(ev.ack);
          const w = this.sendWaiters.get(ack.clientMsgId);
          this.sendWaiters.delete(ack.clientMsgId);
          this.emit('acked', ack);
          w?.resolve(ack);
          break;
        }
        case 'send-failed': {
          const w = this.sendWaiters.get(ev.clientMsgId);
          this.sendWaiters.delete(ev.clientMsgId);
          this.emit('send-failed', {
            clientMsgId: ev.clientMsgId,
            code: ev.code,
            codeName: ErrorCode[ev.code] ?? String(ev.code),
            message: ev.message,
          });
          w?.reject(new TernError(ev.code, ev.message));
          break;
        }
        case 'response': {
          const w = this.requestWaiters.get(ev.reqId);
          this.requestWaiters.delete(ev.reqId);
          w?.resolve(ev.frame);
          break;
        }
        case 'caught-up':
          this.emit('caught-up', {});
          break;
        case 'read':
          this.emit('read', { conversation: ev.conversation, user: ev.user, readSeq: ev.readSeq, own: ev.own });
          break;
        case 'settings':
          this.emit('settings', { conversation: ev.conversation, muted: ev.muted, pinned: ev.pinned });
          break;
        case 'typing':
          this.emit('typing', { conversation: ev.conversation, user: ev.user, typing: ev.typing, expiresMs: ev.expiresMs });
          break;
        case 'hidden':
          this.emit('hidden', { conversation: ev.conversation, seq: ev.seq });
          break;
        case 'presence':
          this.emit('presence', { user: ev.user, online: ev.online, serverTimeMs: ev.serverTimeMs });
          break;
        case 'profile':
          this.emit('profile', ev.profile);
          break;
      }
    }
  }

  /**
   * Ends a connection (idempotent) and, unless stopped, schedules a reconnect.
   * @param {any} conn @param {string} reason
   */
  drop(conn, reason) {
    if (conn.dead) return;
    conn.dead = true;
    clearTimeout(conn.loginTimer);
    clearInterval(conn.pingTimer);
    try {
      conn.ws?.close();
    } catch {
      // already closing
    }
    if (this.conn !== conn) return;
    this.conn = null;
    this.disconnected();
    if (this.stopped) return;
    this.attempt += 1;
    const base = this.initialBackoffMs * 2 ** Math.min(this.attempt - 1, 16);
    const capped = Math.min(base, this.maxBackoffMs);
    // Full jitter on half the delay, so a crowd of clients spreads out.
    let delay = capped / 2 + Math.random() * (capped / 2);
    if (conn.retryAfterMs > 0) delay = Math.max(delay, conn.retryAfterMs + Math.random() * 250);
    delay = Math.round(delay);
    this.setState('reconnecting', { reason, attempt: this.attempt, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Engine and waiters after a connection ended. */
  disconnected() {
    for (const id of this.engine.onDisconnected()) {
      const w = this.requestWaiters.get(id);
      this.requestWaiters.delete(id);
      w?.reject(new TernError('connection-lost', 'connection lost before the answer came'));
    }
    this.saveState(true);
  }

  /** Stops for good with a final state. @param {string} state @param {object} extra */
  stop(state, extra) {
    if (this.stopped && this.state === state) return;
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    clearTimeout(this.engineTimer);
    this.engineTimer = null;
    this.engineTimerAt = null;
    // REPLACED: another instance (e.g. another tab) owns this device's state now.
    if (state === 'replaced') this.saveState = () => {};
    const conn = this.conn;
    if (conn) {
      conn.closeReason = state;
      this.drop(conn, state); // stopped: no reconnect
    }
    this.saveState(true);
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this.onOnline);
      globalThis.removeEventListener('pagehide', this.onPageHide);
    }
    for (const [, w] of this.sendWaiters) w.reject(new TernError('stopped', `client stopped (${state})`));
    this.sendWaiters.clear();
    for (const [, w] of this.requestWaiters) w.reject(new TernError('stopped', `client stopped (${state})`));
    this.requestWaiters.clear();
    for (const q of this.queuedRequests) q.reject(new TernError('stopped', `client stopped (${state})`));
    this.queuedRequests = [];
    this.setState(state, extra);
  }

  /** Saves token, device and cursors (and the outbox when `withOutbox`). @param {boolean} [withOutbox] */
  saveState(withOutbox = false) {
    const prefix = storageKey(this.username);
    const c = this.engine.cursors;
    try {
      this.storage.setItem(
        prefix + 'state',
        JSON.stringify({
          v: 1,
          token: this.token,
          device: this.device,
          storeEpoch: c.storeEpoch,
          inbox: c.inbox,
          conversations: c.conversations,
          delivered: c.delivered,
        }),
      );
      this.engine.cursorsDirty = false;
      if (withOutbox || this.engine.outboxDirty) {
        this.storage.setItem(
          prefix + 'outbox',
          JSON.stringify(
            this.engine.outboxMessages().map((m) => {
              const t = /** @type {any} */ (m.target);
              return {
                id: m.clientMsgId,
                ...(t.user ? { to: t.user } : { conversation: t.conversation }),
                body: toBase64(m.body),
                contentType: m.contentType,
                ...(m.options ? { options: m.options } : {}),
              };
            }),
          ),
        );
        this.engine.outboxDirty = false;
      }
    } catch (e) {
      // Storage full or unavailable: the session still works, it just does not persist.
      console.warn('tern: could not save state', e);
    }
  }
}

/**
 * One request on a one-off connection (used for Register).
 * @param {string} url @param {object} body
 * @param {{WebSocket?: typeof WebSocket, timeoutMs?: number}} opts
 * @returns {Promise<any>} the response frame
 */
function oneShot(url, body, opts) {
  const WS = opts.WebSocket ?? globalThis.WebSocket;
  const timeoutMs = opts.timeoutMs ?? 15000;
  return new Promise((resolve, reject) => {
    let done = false;
    const ws = new WS(url);
    ws.binaryType = 'arraybuffer';
    const finish = (/** @type {Error|null} */ err, /** @type {any} */ frame) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        // ignore
      }
      if (err) reject(err);
      else resolve(frame);
    };
    const timer = setTimeout(() => finish(new TernError('timeout', 'no answer in time'), null), timeoutMs);
    ws.onopen = () => ws.send(pb.Frame.encode(/** @type {any} */ ({ reqId: 1, ...body })).finish());
    ws.onmessage = (ev) => {
      if (!(ev.data instanceof ArrayBuffer)) return;
      let f;
      try {
        f = pb.Frame.decode(new Uint8Array(ev.data));
      } catch (e) {
        finish(new TernError('protocol', `undecodable frame: ${e}`), null);
        return;
      }
      if (Number(f.reqId) !== 1) return;
      if (f.body === 'error') finish(new TernError(f.error.code, f.error.message), null);
      else finish(null, f);
    };
    ws.onerror = () => {};
    ws.onclose = () => finish(new TernError('connection-lost', `cannot reach ${url}`), null);
  });
}
