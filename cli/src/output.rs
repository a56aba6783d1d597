//! Everything the CLI prints: JSON lines for scripts (one object per line, fields in a
//! fixed order) and short human lines, plus UTC time formatting without a date crate.

use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;
use tern_sdk::proto::pb;

/// Prints one JSON object as one line on stdout.
pub fn json_line<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string(value).context("cannot encode output")?;
    line(&text)
}

/// Prints one line on stdout (flushed, so pipes see it at once).
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|_| out.flush())
        .context("cannot write to stdout")
}

/// A status line on stderr (`-- connected over quic --`); never fails.
pub fn status(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `tern send`: one per acknowledged line.
#[derive(Debug, Serialize)]
pub struct AckLine<'a> {
    pub conv: &'a str,
    pub seq: u64,
    pub client_msg_id: &'a str,
    pub duplicate: bool,
}

impl<'a> AckLine<'a> {
    pub fn new(ack: &'a pb::SendAck) -> Self {
        Self {
            conv: &ack.conversation,
            seq: ack.seq,
            client_msg_id: &ack.client_msg_id,
            duplicate: ack.duplicate,
        }
    }
}

/// `tern sync` and `tern history --json`: one per message. `text` is absent when the
/// content is gone (`recalled`, `expired`); `edited` when the text is an edit's.
#[derive(Debug, Serialize)]
pub struct MessageLine<'a> {
    pub conv: &'a str,
    pub seq: u64,
    pub from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub client_msg_id: &'a str,
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventJson<'a>>,
    /// A contact change (SYSTEM, 1:1): `{"kind":"REQUESTED"|..,"actor":..,"user":..}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactJson<'a>>,
    /// The seq this message answers (absent: not a reply).
    #[serde(skip_serializing_if = "is_zero")]
    pub reply_to: u64,
    /// Members mentioned by name (absent: none).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub mentions: &'a [String],
    /// An @all (absent: not one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mention_all: bool,
    /// The text is the latest edit (absent: never edited).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// Taken back by its sender or a group admin: no text (absent: not recalled).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recalled: bool,
    /// Its time-to-live passed before it reached this device: no text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
    /// An image or file message: the blob id (`tern download`), the file name, its size
    /// and type; `text` is then the caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime: Option<&'a str>,
}

/// The content of a message is gone (recalled, expired, deleted for this user).
pub fn content_gone(m: &pb::Message) -> bool {
    m.recalled || m.expired || m.deleted
}

/// An EDIT or RECALL entry: it changes another message and is not shown as one.
pub fn is_change(m: &pb::Message) -> bool {
    m.kind == pb::MessageKind::Edit as i32 || m.kind == pb::MessageKind::Recall as i32
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The group event of a SYSTEM message.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub kind: &'static str,
    pub actor: &'a str,
    pub users: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
}

/// The contact event of a SYSTEM message (docs/PROTOCOL.md 9.13).
#[derive(Debug, Serialize)]
pub struct ContactJson<'a> {
    pub kind: &'static str,
    pub actor: &'a str,
    pub user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub message: &'a str,
}

/// The contact event of a message, when it is a SYSTEM message that carries one.
fn contact_event(m: &pb::Message) -> Option<&pb::ContactEvent> {
    if m.kind == pb::MessageKind::System as i32 {
        m.contact.as_ref()
    } else {
        None
    }
}

fn contact_kind(e: &pb::ContactEvent) -> &'static str {
    pb::ContactEventKind::try_from(e.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// The group event of a message, when it is a SYSTEM message that carries one.
fn system_event(m: &pb::Message) -> Option<&pb::GroupEvent> {
    if m.kind == pb::MessageKind::System as i32 {
        m.event.as_ref()
    } else {
        None
    }
}

fn event_kind(e: &pb::GroupEvent) -> &'static str {
    pb::GroupEventKind::try_from(e.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// Who a message is from: the sender, or the actor of a SYSTEM message.
pub fn from_of(m: &pb::Message) -> &str {
    match system_event(m) {
        Some(e) if m.sender.is_empty() => &e.actor,
        _ => &m.sender,
    }
}

impl<'a> MessageLine<'a> {
    pub fn new(m: &'a pb::Message) -> Self {
        Self {
            conv: &m.conversation,
            seq: m.seq,
            from: from_of(m),
            text: (!content_gone(m)).then(|| String::from_utf8_lossy(&m.body).into_owned()),
            client_msg_id: &m.client_msg_id,
            ts: m.server_time_ms,
            event: system_event(m).map(|e| EventJson {
                kind: event_kind(e),
                actor: &e.actor,
                users: &e.users,
                name: &e.name,
            }),
            contact: contact_event(m).map(|e| ContactJson {
                kind: contact_kind(e),
                actor: &e.actor,
                user: &e.user,
                message: &e.message,
            }),
            reply_to: m.reply_to,
            mentions: &m.mentions,
            mention_all: m.mention_all,
            edited: m.edited && !content_gone(m),
            recalled: m.recalled,
            expired: m.expired,
            blob: m.attachment.as_ref().map(|a| a.blob_id.as_str()),
            name: m.attachment.as_ref().map(|a| a.name.as_str()),
            size: m.attachment.as_ref().map(|a| a.size),
            mime: m.attachment.as_ref().map(|a| a.mime.as_str()),
        }
    }
}

/// `tern sync`: an event line about one message of a conversation: `edit` (message `seq`
/// now reads `text`, by `from`, written as entry `entry_seq`), `recall` (message `seq`
/// taken back by `from`), `expired` (message `seq` reached this device after its TTL:
/// nothing to show) or `hidden` (this user deleted message `seq` for themselves).
#[derive(Debug, Serialize)]
pub struct ChangeLine<'a> {
    pub event: &'static str,
    pub conv: &'a str,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub entry_seq: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub ts: u64,
}

impl<'a> ChangeLine<'a> {
    fn bare(event: &'static str, conv: &'a str, seq: u64) -> Self {
        Self {
            event,
            conv,
            seq,
            from: None,
            text: None,
            entry_seq: 0,
            ts: 0,
        }
    }

    pub fn edit(
        conv: &'a str,
        seq: u64,
        from: &'a str,
        body: &[u8],
        entry_seq: u64,
        ts: u64,
    ) -> Self {
        Self {
            from: Some(from),
            text: Some(String::from_utf8_lossy(body).into_owned()),
            entry_seq,
            ts,
            ..Self::bare("edit", conv, seq)
        }
    }

    pub fn recall(conv: &'a str, seq: u64, by: &'a str, entry_seq: u64) -> Self {
        Self {
            from: Some(by),
            entry_seq,
            ..Self::bare("recall", conv, seq)
        }
    }

    pub fn expired(conv: &'a str, seq: u64) -> Self {
        Self::bare("expired", conv, seq)
    }

    pub fn hidden(conv: &'a str, seq: u64) -> Self {
        Self::bare("hidden", conv, seq)
    }
}

/// `tern sync`: someone who shares a direct conversation with the user came online or
/// went offline.
#[derive(Debug, Serialize)]
pub struct PresenceEventLine<'a> {
    pub event: &'static str,
    pub user: &'a str,
    pub online: bool,
    pub ts: u64,
}

impl<'a> PresenceEventLine<'a> {
    pub fn new(user: &'a str, online: bool, ts: u64) -> Self {
        Self {
            event: "presence",
            user,
            online,
            ts,
        }
    }
}

/// `tern conversations --json`: one per conversation. `mentions`: unread messages that
/// mention the user or are an @all by someone else.
#[derive(Debug, Serialize)]
pub struct ConversationLine<'a> {
    pub conv: &'a str,
    pub kind: &'static str,
    pub title: &'a str,
    pub last_seq: u64,
    pub last_text: &'a str,
    pub unread: u64,
    pub mentions: u64,
    pub read_seq: u64,
    pub muted: bool,
    pub pinned: bool,
}

impl<'a> ConversationLine<'a> {
    pub fn new(c: &'a pb::ConversationInfo) -> Self {
        Self {
            conv: &c.conversation,
            kind: conversation_kind(c.kind),
            title: &c.name,
            last_seq: c.last_seq,
            last_text: &c.last_preview,
            unread: c.unread,
            mentions: c.mentions,
            read_seq: c.read_seq,
            muted: c.muted,
            pinned: c.pinned,
        }
    }
}

/// `direct` or `group` (`unknown` for a kind this version does not know).
pub fn conversation_kind(kind: i32) -> &'static str {
    match pb::ConversationKind::try_from(kind) {
        Ok(pb::ConversationKind::Direct) => "direct",
        Ok(pb::ConversationKind::Group) => "group",
        _ => "unknown",
    }
}

/// `tern conversations` for people: unread badge, title, id, when and the last message,
/// and `[pinned]`/`[muted]` at the end when set.
/// `  (3) alice       d:alice:bob         2026-11-29 06:30:00  alice: hello  [pinned]`
pub fn conversation_human(c: &pb::ConversationInfo) -> String {
    let badge = if c.unread > 0 && c.mentions > 0 {
        format!("@({})", c.unread)
    } else if c.unread > 0 {
        format!("({})", c.unread)
    } else {
        String::new()
    };
    let last = if c.last_seq == 0 {
        "(no messages yet)".to_string()
    } else {
        let text = if !c.last_preview.is_empty() {
            c.last_preview.clone()
        } else if c.last_kind == pb::MessageKind::System as i32 {
            "* group event".to_string()
        } else {
            "(not text)".to_string()
        };
        format!("{}  {}: {text}", date_time(c.last_time_ms), c.last_sender)
    };
    let marks = settings_marks(c.muted, c.pinned);
    format!(
        "{badge:>6} {:<16} {:<20} {last}{marks}",
        c.name, c.conversation
    )
}

/// `  [pinned] [muted]` for what is set, empty when nothing is.
fn settings_marks(muted: bool, pinned: bool) -> String {
    let mut s = String::new();
    if pinned {
        s.push_str(if s.is_empty() { "  " } else { " " });
        s.push_str("[pinned]");
    }
    if muted {
        s.push_str(if s.is_empty() { "  " } else { " " });
        s.push_str("[muted]");
    }
    s
}

/// `tern mute|unmute|pin|unpin` with --json, and `tern sync`'s `settings` event line (with
/// `event`): the user's settings of one conversation.
#[derive(Debug, Serialize)]
pub struct SettingsLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    pub conv: &'a str,
    pub muted: bool,
    pub pinned: bool,
}

impl<'a> SettingsLine<'a> {
    /// The answer to a command.
    pub fn answer(conv: &'a str, muted: bool, pinned: bool) -> Self {
        Self {
            event: None,
            conv,
            muted,
            pinned,
        }
    }

    /// `tern sync`: the settings changed (on this device or another).
    pub fn event(conv: &'a str, muted: bool, pinned: bool) -> Self {
        Self {
            event: Some("settings"),
            ..Self::answer(conv, muted, pinned)
        }
    }
}

/// `tern mute|unmute|pin|unpin` for people: `d:alice:bob: pinned, not muted`.
pub fn settings_human(conv: &str, muted: bool, pinned: bool) -> String {
    let pinned = if pinned { "pinned" } else { "not pinned" };
    let muted = if muted { "muted" } else { "not muted" };
    format!("{conv}: {pinned}, {muted}")
}

/// `tern sync`: a read position moved (`ReadReceipt`). `read` when it is the user's own
/// (another device read), `receipt` (with `user`) when another member read.
#[derive(Debug, Serialize)]
pub struct ReadEventLine<'a> {
    pub event: &'static str,
    pub conv: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub read_seq: u64,
}

impl<'a> ReadEventLine<'a> {
    pub fn new(conv: &'a str, user: &'a str, read_seq: u64, own: bool) -> Self {
        Self {
            event: if own { "read" } else { "receipt" },
            conv,
            user: (!own).then_some(user),
            read_seq,
        }
    }
}

/// `tern sync`: someone is typing (or stopped) in a conversation.
#[derive(Debug, Serialize)]
pub struct TypingLine<'a> {
    pub event: &'static str,
    pub conv: &'a str,
    pub user: &'a str,
    pub typing: bool,
}

impl<'a> TypingLine<'a> {
    pub fn new(conv: &'a str, user: &'a str, typing: bool) -> Self {
        Self {
            event: "typing",
            conv,
            user,
            typing,
        }
    }
}

/// `tern receipts --json`: who of the other members has read message `seq`, in the
/// documented field order.
#[derive(Debug, Serialize)]
pub struct ReceiptsLine<'a> {
    pub conv: &'a str,
    pub seq: u64,
    pub read_by: &'a [String],
    pub read_count: u32,
}

impl<'a> ReceiptsLine<'a> {
    pub fn new(r: &'a pb::ReceiptsResult) -> Self {
        Self {
            conv: &r.conversation,
            seq: r.seq,
            read_by: &r.read_by,
            read_count: r.read_count,
        }
    }
}

/// `tern receipts` for people: `g:..: seq 2 read by 1 of 2 (bob)`.
pub fn receipts_human(r: &pb::ReceiptsResult) -> String {
    let names = if r.read_by.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.read_by.join(", "))
    };
    format!(
        "{}: seq {} read by {} of {}{names}",
        r.conversation, r.seq, r.read_count, r.members
    )
}

/// The text of a message for people: the body, or a sentence for a group event.
pub fn human_text(m: &pb::Message) -> String {
    if m.recalled {
        return "(recalled)".to_string();
    }
    if m.expired {
        return "(expired)".to_string();
    }
    if m.deleted {
        return "(deleted)".to_string();
    }
    if let Some(c) = contact_event(m) {
        return match pb::ContactEventKind::try_from(c.kind) {
            Ok(pb::ContactEventKind::Requested) if c.message.is_empty() => {
                format!("* asked {} to be friends", c.user)
            }
            Ok(pb::ContactEventKind::Requested) => {
                format!("* asked {} to be friends: {}", c.user, c.message)
            }
            Ok(pb::ContactEventKind::Accepted) => format!("* accepted {}'s friend request", c.user),
            Ok(pb::ContactEventKind::Declined) => format!("* declined {}'s friend request", c.user),
            Ok(pb::ContactEventKind::Canceled) => "* withdrew the friend request".to_string(),
            Ok(pb::ContactEventKind::Removed) => format!("* ended the friendship with {}", c.user),
            _ => format!("* contact change {}", contact_kind(c)),
        };
    }
    let Some(e) = system_event(m) else {
        let mut text = String::from_utf8_lossy(&m.body).into_owned();
        if let Some(a) = &m.attachment {
            let kind = if a.width > 0 { "image" } else { "file" };
            let what = format!(
                "[{kind} {} {} KiB{}, blob {}]",
                a.name,
                a.size.div_ceil(1024),
                if a.width > 0 {
                    format!(" {}x{}", a.width, a.height)
                } else {
                    String::new()
                },
                a.blob_id
            );
            text = if text.is_empty() {
                what
            } else {
                format!("{what} {text}")
            };
        }
        return if m.edited {
            format!("{text} (edited)")
        } else {
            text
        };
    };
    let users = e.users.join(", ");
    match pb::GroupEventKind::try_from(e.kind) {
        Ok(pb::GroupEventKind::Created) if users.is_empty() => {
            format!("* created the group {:?}", e.name)
        }
        Ok(pb::GroupEventKind::Created) => {
            format!("* created the group {:?} with {users}", e.name)
        }
        Ok(pb::GroupEventKind::MembersAdded) => format!("* added {users}"),
        Ok(pb::GroupEventKind::MembersRemoved) => format!("* removed {users}"),
        Ok(pb::GroupEventKind::MemberLeft) => "* left the group".to_string(),
        Ok(pb::GroupEventKind::RoleChanged) => format!(
            "* made {users} {}",
            pb::Role::try_from(e.role)
                .map(|r| r.as_str_name().to_lowercase())
                .unwrap_or_default()
        ),
        Ok(pb::GroupEventKind::OwnerChanged) => format!("* handed the group to {users}"),
        Ok(pb::GroupEventKind::GroupUpdated) => {
            let mut parts = vec![format!("name {:?}", e.name)];
            if !e.topic.is_empty() {
                parts.push(format!("topic {:?}", e.topic));
            }
            if e.mute_all {
                parts.push("only admins may post".into());
            }
            if e.visibility == pb::HistoryVisibility::Shared as i32 {
                parts.push("history shared with members".into());
            }
            format!("* updated the group: {}", parts.join(", "))
        }
        Ok(pb::GroupEventKind::Dissolved) => "* dissolved the group".to_string(),
        _ => format!("* {}", event_kind(e)),
    }
}

/// `#seq [YYYY-MM-DD HH:MM:SS] from: text` (times in UTC), then ` (reply to #N)` and
/// ` (mentions a, b)` / ` (mentions @all)` where they apply.
pub fn history_line(m: &pb::Message) -> String {
    let mut line = format!(
        "#{} [{}] {}: {}",
        m.seq,
        date_time(m.server_time_ms),
        from_of(m),
        human_text(m)
    );
    if m.reply_to > 0 {
        line.push_str(&format!(" (reply to #{})", m.reply_to));
    }
    let mut mentioned: Vec<&str> = m.mentions.iter().map(String::as_str).collect();
    if m.mention_all {
        mentioned.insert(0, "@all");
    }
    if !mentioned.is_empty() {
        line.push_str(&format!(" (mentions {})", mentioned.join(", ")));
    }
    line
}

/// `[HH:MM:SS #seq] from: text` (UTC), as `tern chat` shows a message (the seq is what
/// `tern edit`, `recall` and `delete` take); an EDIT entry as `... from edited #N: text`,
/// a RECALL entry as `... from recalled #N`.
pub fn chat_line(m: &pb::Message) -> String {
    let head = format!("[{} #{}] {}", clock(m.server_time_ms), m.seq, from_of(m));
    match pb::MessageKind::try_from(m.kind) {
        Ok(pb::MessageKind::Edit) => format!(
            "{head} edited #{}: {}",
            m.target_seq,
            String::from_utf8_lossy(&m.body)
        ),
        Ok(pb::MessageKind::Recall) => format!("{head} recalled #{}", m.target_seq),
        _ => format!("{head}: {}", human_text(m)),
    }
}

/// `HH:MM:SS` of a Unix time in milliseconds, UTC.
pub fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in milliseconds, UTC.
pub fn date_time(ms: u64) -> String {
    let days = (ms / 1000 / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {}", clock(ms))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The name of a member role.
pub fn role_name(role: i32) -> &'static str {
    pb::Role::try_from(role)
        .map(|r| r.as_str_name())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        // 2024-02-29 23:59:59.999 UTC (a leap day).
        assert_eq!(date_time(1_709_251_199_999), "2024-02-29 23:59:59");
        assert_eq!(date_time(1_709_251_200_000), "2024-03-01 00:00:00");
        assert_eq!(date_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(clock(1_700_000_000_000), "22:13:20");
    }

    #[test]
    fn message_lines_have_the_scripted_shape() {
        let m = pb::Message {
            conversation: "d:alice:bob".into(),
            seq: 3,
            sender: "alice".into(),
            client_msg_id: "c1".into(),
            server_time_ms: 1_700_000_000_000,
            body: b"caf\xc3\xa9 \xff".to_vec().into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&MessageLine::new(&m)).unwrap();
        assert_eq!(
            text,
            r#"{"conv":"d:alice:bob","seq":3,"from":"alice","text":"café �","client_msg_id":"c1","ts":1700000000000}"#
        );
        assert_eq!(chat_line(&m), "[22:13:20 #3] alice: café �");
        assert_eq!(history_line(&m), "#3 [2023-11-14 22:13:20] alice: café �");
    }

    #[test]
    fn system_messages_carry_their_event() {
        let m = pb::Message {
            conversation: "g:00000000000000aa".into(),
            seq: 2,
            kind: pb::MessageKind::System as i32,
            event: Some(pb::GroupEvent {
                kind: pb::GroupEventKind::MembersAdded as i32,
                actor: "alice".into(),
                users: vec!["carol".into(), "dave".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(MessageLine::new(&m)).unwrap();
        assert_eq!(v["from"], "alice");
        assert_eq!(v["event"]["kind"], "MEMBERS_ADDED");
        assert_eq!(v["event"]["users"], serde_json::json!(["carol", "dave"]));
        assert!(v["event"].get("name").is_none());
        assert_eq!(human_text(&m), "* added carol, dave");
    }

    #[test]
    fn conversation_lines_have_the_scripted_shape() {
        let c = pb::ConversationInfo {
            conversation: "d:alice:bob".into(),
            kind: pb::ConversationKind::Direct as i32,
            name: "alice".into(),
            last_seq: 3,
            read_seq: 2,
            unread: 1,
            last_time_ms: 1_700_000_000_000,
            last_sender: "alice".into(),
            last_preview: "third".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&ConversationLine::new(&c)).unwrap(),
            r#"{"conv":"d:alice:bob","kind":"direct","title":"alice","last_seq":3,"last_text":"third","unread":1,"mentions":0,"read_seq":2,"muted":false,"pinned":false}"#
        );
        assert_eq!(
            conversation_human(&c),
            "   (1) alice            d:alice:bob          2023-11-14 22:13:20  alice: third"
        );
        let g = pb::ConversationInfo {
            conversation: "g:00000000000000aa".into(),
            kind: pb::ConversationKind::Group as i32,
            name: "team".into(),
            last_seq: 1,
            read_seq: 1,
            last_time_ms: 1_700_000_000_000,
            last_sender: "alice".into(),
            last_kind: pb::MessageKind::System as i32,
            ..Default::default()
        };
        assert_eq!(ConversationLine::new(&g).kind, "group");
        assert_eq!(
            conversation_human(&g),
            "       team             g:00000000000000aa   2023-11-14 22:13:20  alice: * group event"
        );
        // Pinned and muted: true in the line, marked at the end for people.
        let p = pb::ConversationInfo {
            muted: true,
            pinned: true,
            ..c.clone()
        };
        let line = serde_json::to_string(&ConversationLine::new(&p)).unwrap();
        assert!(
            line.ends_with(r#""read_seq":2,"muted":true,"pinned":true}"#),
            "{line}"
        );
        assert_eq!(
            conversation_human(&p),
            "   (1) alice            d:alice:bob          2023-11-14 22:13:20  alice: third  [pinned] [muted]"
        );
        let m = pb::ConversationInfo {
            muted: true,
            ..g.clone()
        };
        assert!(conversation_human(&m).ends_with("alice: * group event  [muted]"));
    }

    #[test]
    fn settings_lines_answer_and_event() {
        assert_eq!(
            serde_json::to_string(&SettingsLine::answer("d:alice:bob", true, false)).unwrap(),
            r#"{"conv":"d:alice:bob","muted":true,"pinned":false}"#
        );
        assert_eq!(
            serde_json::to_string(&SettingsLine::event("g:1", false, true)).unwrap(),
            r#"{"event":"settings","conv":"g:1","muted":false,"pinned":true}"#
        );
        assert_eq!(
            settings_human("d:alice:bob", true, false),
            "d:alice:bob: not pinned, muted"
        );
        assert_eq!(settings_human("g:1", false, true), "g:1: pinned, not muted");
    }

    #[test]
    fn read_event_lines_tell_own_reads_from_receipts() {
        assert_eq!(
            serde_json::to_string(&ReadEventLine::new("d:alice:bob", "bob", 2, true)).unwrap(),
            r#"{"event":"read","conv":"d:alice:bob","read_seq":2}"#
        );
        assert_eq!(
            serde_json::to_string(&ReadEventLine::new("d:alice:bob", "bob", 2, false)).unwrap(),
            r#"{"event":"receipt","conv":"d:alice:bob","user":"bob","read_seq":2}"#
        );
    }

    #[test]
    fn replies_and_mentions_only_where_they_apply() {
        let m = pb::Message {
            conversation: "g:1".into(),
            seq: 3,
            sender: "alice".into(),
            body: b"see above".to_vec().into(),
            server_time_ms: 1_700_000_000_000,
            reply_to: 2,
            mentions: vec!["bob".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&MessageLine::new(&m)).unwrap(),
            r#"{"conv":"g:1","seq":3,"from":"alice","text":"see above","client_msg_id":"","ts":1700000000000,"reply_to":2,"mentions":["bob"]}"#
        );
        assert_eq!(
            history_line(&m),
            "#3 [2023-11-14 22:13:20] alice: see above (reply to #2) (mentions bob)"
        );
        let all = pb::Message {
            reply_to: 0,
            mentions: vec![],
            mention_all: true,
            ..m.clone()
        };
        let line = serde_json::to_string(&MessageLine::new(&all)).unwrap();
        assert!(
            line.ends_with(r#""ts":1700000000000,"mention_all":true}"#),
            "{line}"
        );
        assert!(history_line(&all).ends_with("see above (mentions @all)"));
        let plain = pb::Message {
            mention_all: false,
            ..all
        };
        let line = serde_json::to_string(&MessageLine::new(&plain)).unwrap();
        assert!(line.ends_with(r#""ts":1700000000000}"#), "{line}");
    }

    #[test]
    fn typing_and_receipts_lines() {
        assert_eq!(
            serde_json::to_string(&TypingLine::new("g:1", "bob", true)).unwrap(),
            r#"{"event":"typing","conv":"g:1","user":"bob","typing":true}"#
        );
        let r = pb::ReceiptsResult {
            conversation: "g:1".into(),
            seq: 2,
            read_by: vec!["bob".into()],
            read_count: 1,
            members: 2,
        };
        assert_eq!(
            serde_json::to_string(&ReceiptsLine::new(&r)).unwrap(),
            r#"{"conv":"g:1","seq":2,"read_by":["bob"],"read_count":1}"#
        );
        assert_eq!(receipts_human(&r), "g:1: seq 2 read by 1 of 2 (bob)");
    }

    #[test]
    fn edited_recalled_and_expired_messages() {
        let m = pb::Message {
            conversation: "d:alice:bob".into(),
            seq: 3,
            sender: "alice".into(),
            body: b"fixed".to_vec().into(),
            server_time_ms: 1_700_000_000_000,
            edited: true,
            edits: vec![4],
            ..Default::default()
        };
        let line = serde_json::to_string(&MessageLine::new(&m)).unwrap();
        assert!(
            line.ends_with(
                r#""text":"fixed","client_msg_id":"","ts":1700000000000,"edited":true}"#
            ),
            "{line}"
        );
        assert_eq!(
            history_line(&m),
            "#3 [2023-11-14 22:13:20] alice: fixed (edited)"
        );
        let r = pb::Message {
            body: Default::default(),
            recalled: true,
            ..m.clone()
        };
        assert_eq!(
            serde_json::to_string(&MessageLine::new(&r)).unwrap(),
            r#"{"conv":"d:alice:bob","seq":3,"from":"alice","client_msg_id":"","ts":1700000000000,"recalled":true}"#
        );
        assert_eq!(chat_line(&r), "[22:13:20 #3] alice: (recalled)");
        let x = pb::Message {
            body: Default::default(),
            edited: false,
            expired: true,
            ..m.clone()
        };
        let v: serde_json::Value = serde_json::to_value(MessageLine::new(&x)).unwrap();
        assert_eq!((v.get("text"), &v["expired"]), (None, &true.into()));
        let edit = pb::Message {
            seq: 4,
            kind: pb::MessageKind::Edit as i32,
            target_seq: 3,
            edited: false,
            ..m.clone()
        };
        assert_eq!(chat_line(&edit), "[22:13:20 #4] alice edited #3: fixed");
        let recall = pb::Message {
            seq: 5,
            kind: pb::MessageKind::Recall as i32,
            target_seq: 3,
            ..m
        };
        assert_eq!(chat_line(&recall), "[22:13:20 #5] alice recalled #3");
    }

    #[test]
    fn change_and_presence_event_lines() {
        let e = ChangeLine::edit("g:1", 3, "bob", b"new", 7, 1_700_000_000_000);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"edit","conv":"g:1","seq":3,"from":"bob","text":"new","entry_seq":7,"ts":1700000000000}"#
        );
        assert_eq!(
            serde_json::to_string(&ChangeLine::recall("g:1", 3, "bob", 8)).unwrap(),
            r#"{"event":"recall","conv":"g:1","seq":3,"from":"bob","entry_seq":8}"#
        );
        assert_eq!(
            serde_json::to_string(&ChangeLine::expired("g:1", 2)).unwrap(),
            r#"{"event":"expired","conv":"g:1","seq":2}"#
        );
        assert_eq!(
            serde_json::to_string(&ChangeLine::hidden("g:1", 2)).unwrap(),
            r#"{"event":"hidden","conv":"g:1","seq":2}"#
        );
        assert_eq!(
            serde_json::to_string(&PresenceEventLine::new("bob", true, 5)).unwrap(),
            r#"{"event":"presence","user":"bob","online":true,"ts":5}"#
        );
    }

    #[test]
    fn ack_lines_keep_the_documented_field_order() {
        let ack = pb::SendAck {
            conversation: "g:1".into(),
            seq: 9,
            client_msg_id: "x".into(),
            duplicate: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&AckLine::new(&ack)).unwrap(),
            r#"{"conv":"g:1","seq":9,"client_msg_id":"x","duplicate":true}"#
        );
    }
}
