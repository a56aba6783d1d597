//! One function per command. Each gets the global [`Ctx`] and its own arguments, talks to
//! the server only through tern-sdk, prints through [`crate::output`], and returns an
//! `anyhow::Result` that `main` turns into an exit code.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;
use tern_proto::names;
use tern_sdk::proto::{direct_conversation, pb};
use tern_sdk::{ClientError, Credentials, Event, SendOptions, SendTicket, Target};
use tokio::time::Instant;

use crate::error::Failure;
use crate::output::{
    self, AckLine, ChangeLine, ConversationLine, MessageLine, PresenceEventLine, ReadEventLine,
    ReceiptsLine, SettingsLine, TypingLine,
};
use crate::profile::Profile;
use crate::session::{
    self, check_device, check_username, resolve, shutdown_signal, stdin_lines, Ctx, Cursors,
    Session,
};

/// Where `send` writes: a user (1:1) or a conversation id.
#[derive(Debug, Clone)]
pub enum Dest {
    User(String),
    Group(String),
}

impl Dest {
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Dest::User(u) => check_username(u),
            Dest::Group(g) if g.is_empty() => Err(Failure::usage("--group needs a group id")),
            Dest::Group(_) => Ok(()),
        }
    }

    pub(crate) fn target(&self) -> Target {
        match self {
            Dest::User(u) => Target::User(u.clone()),
            Dest::Group(g) => Target::Conversation(g.clone()),
        }
    }

    /// The conversation id, as seen by `me`.
    fn conversation(&self, me: &str) -> String {
        match self {
            Dest::User(u) => direct_conversation(me, u),
            Dest::Group(g) => g.clone(),
        }
    }
}

pub async fn register(ctx: &Ctx, user: &str, password: &str) -> Result<()> {
    check_username(user)?;
    check_password(password)?;
    let (_, profile) = session::read_profile(ctx).unwrap_or_default();
    let endpoint = resolve(&ctx.server_for(profile.as_ref())).await?;
    let opts = ctx.connect_options(&endpoint)?;
    tern_sdk::register(endpoint.addr, &opts, ctx.transport, user, password)
        .await
        .map_err(|e| one_shot_error(e, &endpoint.given))
        .with_context(|| format!("cannot register {user}"))?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "registered": user }))
    } else {
        output::line(&format!("registered {user}; now run: tern login {user}"))
    }
}

pub async fn login(ctx: &Ctx, user: &str, password: &str, device: Option<String>) -> Result<()> {
    check_username(user)?;
    let device = device.unwrap_or_else(session::default_device);
    check_device(&device)?;
    let path = ctx.profile_path()?;
    let old = match Profile::load(&path) {
        Ok(p) => p,
        Err(e) => {
            output::status(&format!(
                "tern: replacing an unreadable profile ({})",
                crate::error::one_line(&e)
            ));
            None
        }
    };
    let server = ctx.server_for(old.as_ref());
    let endpoint = resolve(&server).await?;
    let opts = ctx.connect_options(&endpoint)?;
    let creds = Credentials {
        username: user.to_string(),
        password: Some(password.to_string()),
        device: device.clone(),
    };
    let ok = tern_sdk::login(endpoint.addr, &opts, ctx.transport, &creds)
        .await
        .map_err(|e| one_shot_error(e, &endpoint.given))
        .with_context(|| format!("cannot log in as {user}"))?;
    crate::profile::save_login(&path, old, &ok.username, &ok.device, &server, &ok.token)?;
    if ctx.json {
        output::json_line(&serde_json::json!({
            "user": ok.username,
            "device": ok.device,
            "server": server,
            "profile": path.display().to_string(),
        }))
    } else {
        output::line(&format!(
            "logged in as {} (device {}) on {server}; profile {}",
            ok.username,
            ok.device,
            path.display()
        ))
    }
}

/// Shows who the profile is logged in as (no network).
pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let (path, profile) = session::read_profile(ctx)?;
    let mut p = profile
        .filter(|p| !p.username.is_empty())
        .ok_or_else(Failure::not_logged_in)?;
    let state = crate::profile::load_state(&path, &mut p)?;
    if state.token.is_none() {
        return Err(Failure::not_logged_in());
    }
    let server = ctx.server_for(Some(&p));
    if ctx.json {
        output::json_line(&serde_json::json!({
            "user": p.username,
            "device": p.device,
            "server": server,
            "profile": path.display().to_string(),
            "queued": state.outbox.len(),
        }))
    } else {
        output::line(&format!(
            "{} (device {}) on {server}; profile {}",
            p.username,
            p.device,
            path.display()
        ))
    }
}

fn check_password(p: &str) -> Result<()> {
    names::password(p).map_err(|e| Failure::usage(format!("the password must be {}", e.rule())))
}

/// Register and login open their own connection: a failure to connect there means the
/// server cannot be reached.
fn one_shot_error(e: ClientError, server: &str) -> anyhow::Error {
    match e {
        ClientError::Connect(reason) => {
            Failure::unreachable(format!("cannot reach server at {server}: {reason}"))
        }
        other => anyhow::Error::new(other),
    }
}

/// The sends of one command, in order, each awaited for its ack.
struct Sends {
    queue: VecDeque<(usize, SendTicket)>,
    /// Every client_msg_id this command queued.
    ours: HashSet<String>,
    /// Those not acknowledged yet.
    unconfirmed: HashSet<String>,
    count: usize,
    /// What every message of this command carries (reply, mentions).
    options: SendOptions,
}

impl Sends {
    fn new() -> Self {
        Self::with_options(SendOptions::default())
    }

    fn with_options(options: SendOptions) -> Self {
        Self {
            queue: VecDeque::new(),
            ours: HashSet::new(),
            unconfirmed: HashSet::new(),
            count: 0,
            options,
        }
    }

    async fn push(
        &mut self,
        client: &tern_sdk::Client,
        target: Target,
        body: Vec<u8>,
    ) -> Result<()> {
        let ticket = client
            .send_with_options(target, Bytes::from(body), self.options.clone())
            .await
            .context("cannot queue the message")?;
        self.count += 1;
        self.ours.insert(ticket.client_msg_id.clone());
        self.unconfirmed.insert(ticket.client_msg_id.clone());
        self.queue.push_back((self.count, ticket));
        Ok(())
    }

    /// Resolves with the oldest send's outcome (pending forever when there is none; guard
    /// the `select!` branch with `!is_empty()`).
    async fn next(&mut self) -> (usize, String, Result<pb::SendAck, ClientError>) {
        match self.queue.front_mut() {
            Some((n, ticket)) => {
                let id = ticket.client_msg_id.clone();
                let r = ticket.await;
                let n = *n;
                self.queue.pop_front();
                if r.is_ok() {
                    self.unconfirmed.remove(&id);
                }
                (n, id, r)
            }
            None => std::future::pending().await,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The mention argument `U1,U2` of `tern send`: user names, `@all` for an @all.
pub fn mention_options(reply_to: Option<u64>, mention: &[String]) -> Result<SendOptions> {
    let mut options = SendOptions {
        reply_to: reply_to.unwrap_or(0),
        ..Default::default()
    };
    for m in mention {
        if m == "@all" {
            options.mention_all = true;
        } else {
            check_username(m)?;
            options.mentions.push(m.clone());
        }
    }
    Ok(options)
}

/// `tern send`: queues the message(s), prints one ack line each, in input order. Each
/// carries `options` (a reply, mentions).
pub async fn send(
    ctx: &Ctx,
    dest: Dest,
    text: Option<String>,
    from_stdin: bool,
    options: SendOptions,
) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let mut sends = Sends::with_options(options);
    let result = send_loop(
        &client,
        &mut sess,
        &mut sends,
        dest.target(),
        text,
        from_stdin,
    )
    .await;
    let (_, dropped) = sess.close(&sends.unconfirmed).await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if dropped > 0 => {
            // Same exit code; the message says what happened to the rest.
            let (kind, code) = crate::error::classify(&e);
            Err(Failure::error(
                kind,
                &code,
                format!(
                    "{} ({dropped} of {} message(s) not confirmed; they will not be retried)",
                    crate::error::one_line(&e),
                    sends.count
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

async fn send_loop(
    client: &tern_sdk::Client,
    sess: &mut Session,
    sends: &mut Sends,
    target: Target,
    text: Option<String>,
    from_stdin: bool,
) -> Result<()> {
    if let Some(t) = text {
        sends.push(client, target.clone(), t.into_bytes()).await?;
    }
    let mut input = from_stdin.then(stdin_lines);
    let mut stop = std::pin::pin!(shutdown_signal());
    while input.is_some() || !sends.is_empty() {
        tokio::select! {
            biased;
            ev = sess.next_event() => {
                if let Event::Acked(ack) = ev? {
                    if !sends.ours.contains(&ack.client_msg_id) {
                        output::status(&format!(
                            "tern: delivered a message queued by an earlier run ({} seq {})",
                            ack.conversation, ack.seq
                        ));
                    }
                }
            }
            (n, id, r) = sends.next(), if !sends.is_empty() => match r {
                Ok(ack) => output::json_line(&AckLine::new(&ack))?,
                Err(ClientError::Stopped(_)) => return Err(sess.stopped_error().await),
                Err(e @ ClientError::Expired { .. }) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("message {n} ({id}) was not sent within its --ttl")))
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("message {n} ({id}) was refused")))
                }
            },
            line = recv(&mut input), if input.is_some() => match line {
                Some(Ok(bytes)) => sends.push(client, target.clone(), bytes).await?,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("cannot read stdin")),
                None => input = None,
            },
            _ = &mut stop => return Err(Failure::generic("INTERRUPTED", "interrupted")),
        }
    }
    Ok(())
}

async fn recv<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `tern sync`: prints every message event as a JSON line; the cursor is saved.
pub async fn sync(ctx: &Ctx, follow: bool, idle_exit: Option<u64>) -> Result<()> {
    let (_client, mut sess) = Session::start(ctx, Cursors::Save, false).await?;
    let result = sync_loop(&mut sess, follow, idle_exit.map(Duration::from_secs)).await;
    // Messages delivered while stopping are in the saved cursor: print them as well.
    let (rest, _) = sess.close(&HashSet::new()).await;
    let printed = rest
        .iter()
        .try_for_each(|ev| sync_line(ev, follow).map(|_| ()));
    result.and(printed)
}

/// What `tern sync` prints for an event: a message line, or an event line
/// (`{"event":"read"|"receipt"|"settings"|"typing"|"presence"|"edit"|"recall"|"expired"|
/// "hidden"|"profile",...}`); true if it printed one. An EDIT or RECALL entry, and a tombstone
/// (expired, deleted), is printed as the event line the SDK's event after it gives,
/// not as a message line. "typing" and "presence" are live state, not something missed:
/// they are printed only with `--follow` (`live`), and so is "profile" (a profile change).
fn sync_line(ev: &Event, live: bool) -> Result<bool> {
    match ev {
        Event::Presence { .. } | Event::Typing { .. } | Event::ProfileChanged(_) if !live => {
            return Ok(false)
        }
        Event::ProfileChanged(p) => crate::people::event_line(p)?,
        Event::Message { message, .. } => {
            if output::is_change(message) || message.expired || message.deleted {
                return Ok(false);
            }
            output::json_line(&MessageLine::new(message))?
        }
        Event::Edited {
            conversation,
            seq,
            entry_seq,
            sender,
            body,
            edited_ms,
            ..
        } => output::json_line(&ChangeLine::edit(
            conversation,
            *seq,
            sender,
            body,
            *entry_seq,
            *edited_ms,
        ))?,
        Event::Recalled {
            conversation,
            seq,
            entry_seq,
            by,
        } => output::json_line(&ChangeLine::recall(conversation, *seq, by, *entry_seq))?,
        Event::Expired { conversation, seq } => {
            output::json_line(&ChangeLine::expired(conversation, *seq))?
        }
        Event::Hidden { conversation, seq } => {
            output::json_line(&ChangeLine::hidden(conversation, *seq))?
        }
        Event::Presence {
            user,
            online,
            server_time_ms,
        } => output::json_line(&PresenceEventLine::new(user, *online, *server_time_ms))?,
        Event::Read {
            conversation,
            user,
            read_seq,
            own,
        } => output::json_line(&ReadEventLine::new(conversation, user, *read_seq, *own))?,
        Event::SettingsChanged {
            conversation,
            muted,
            pinned,
        } => output::json_line(&SettingsLine::event(conversation, *muted, *pinned))?,
        Event::Typing {
            conversation,
            user,
            typing,
            ..
        } => output::json_line(&TypingLine::new(conversation, user, *typing))?,
        _ => return Ok(false),
    }
    Ok(true)
}

async fn sync_loop(sess: &mut Session, follow: bool, idle: Option<Duration>) -> Result<()> {
    let mut stop = std::pin::pin!(shutdown_signal());
    // Set once caught up (with --idle-exit): when to stop if nothing else comes.
    let mut idle_until: Option<Instant> = None;
    loop {
        let idle_at = idle_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            biased;
            ev = sess.next_event() => match ev? {
                Event::CaughtUp => match idle {
                    Some(d) => idle_until = Some(Instant::now() + d),
                    None if !follow => return Ok(()),
                    None => {}
                },
                ev => {
                    if sync_line(&ev, follow)? {
                        if let (Some(d), Some(_)) = (idle, idle_until) {
                            idle_until = Some(Instant::now() + d);
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(idle_at), if idle_until.is_some() => return Ok(()),
            _ = &mut stop => return Ok(()),
        }
    }
}

/// `tern history`: one page of a conversation, ascending: from the local copy `tern sync`
/// keeps (no server needed), or with `remote` from the server.
pub async fn history(
    ctx: &Ctx,
    dest: Dest,
    limit: u32,
    before: Option<u64>,
    remote: bool,
) -> Result<()> {
    dest.check()?;
    if !remote {
        return local_history(ctx, &dest, limit, before);
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    let what = format!("cannot read the history of {conv}");
    let result = sess
        .request(&what, true, || {
            client.history(&conv, before.unwrap_or(0), limit)
        })
        .await;
    sess.close(&HashSet::new()).await;
    let page = no_conversation(result, &dest)?;
    print_history(ctx, &page.messages)
}

/// `tern history` without `--remote`: the page from the local copy of the messages
/// (`profile::local_copy_path`), which `tern sync` and `tern chat` keep.
fn local_history(ctx: &Ctx, dest: &Dest, limit: u32, before: Option<u64>) -> Result<()> {
    let (path, profile) = session::read_profile(ctx)?;
    let profile = profile
        .filter(|p| !p.username.is_empty())
        .ok_or_else(Failure::not_logged_in)?;
    let conv = dest.conversation(&profile.username);
    let db = crate::profile::local_copy_path(&path);
    let page = if db.exists() {
        let store = tern_sdk::SqliteStore::open(&db)
            .with_context(|| "cannot read the local copy of the messages".to_string())?;
        store
            .history(&conv, before.unwrap_or(0), limit as usize)
            .with_context(|| format!("cannot read the local history of {conv}"))?
    } else {
        Vec::new()
    };
    if page.is_empty() && before.is_none() {
        output::status(&format!(
            "nothing of {conv} in the local copy: `tern sync` keeps what it receives; \
             `tern history --remote` asks the server"
        ));
    }
    print_history(ctx, &page)
}

fn print_history(ctx: &Ctx, messages: &[pb::Message]) -> Result<()> {
    // Edit and recall entries show in the message they change; deleted ones not at all.
    for m in messages
        .iter()
        .filter(|m| !output::is_change(m) && !m.deleted)
    {
        if ctx.json {
            output::json_line(&MessageLine::new(m))?;
        } else {
            output::line(&output::history_line(m))?;
        }
    }
    Ok(())
}

/// A FORBIDDEN answer about a 1:1 conversation as the user sees it: there is no
/// conversation with that user. (The server does not tell "no message yet" from "no such
/// user", 7.1.)
fn no_conversation<T>(result: Result<T>, dest: &Dest) -> Result<T> {
    match (result, dest) {
        (Err(e), Dest::User(u)) if forbidden(&e) => Err(Failure::error(
            crate::error::Kind::Forbidden,
            "NOT_FOUND",
            format!("no conversation with {u} (nothing was sent yet, or no such user)"),
        )),
        (r, _) => r,
    }
}

/// Conversations asked for per page (the server's largest page).
const CONVERSATION_PAGE: u32 = 1000;

/// `tern conversations`: every conversation, pinned first, then most recently active
/// first, with its unread count; or, with `total`, only the total unread (muted
/// conversations left out, as the server counts it).
pub async fn conversations(ctx: &Ctx, total: bool) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = conversation_pages(&client, &mut sess, total).await;
    sess.close(&HashSet::new()).await;
    let (list, total_unread) = result?;
    if total {
        return if ctx.json {
            output::json_line(&serde_json::json!({ "total_unread": total_unread }))
        } else {
            output::line(&format!("{total_unread} unread"))
        };
    }
    for c in &list {
        if ctx.json {
            output::json_line(&ConversationLine::new(c))?;
        } else {
            output::line(&output::conversation_human(c))?;
        }
    }
    if !ctx.json {
        let muted = list.iter().filter(|c| c.muted).count();
        let muted = if muted > 0 {
            format!(" ({muted} muted, not counted)")
        } else {
            String::new()
        };
        output::line(&format!(
            "{} conversation(s), {total_unread} unread{muted}",
            list.len()
        ))?;
    }
    Ok(())
}

/// The whole list, page by page (or one short page when only the total is wanted), and
/// the total unread. A conversation that moves up between two pages (a new message) is
/// listed once.
async fn conversation_pages(
    client: &tern_sdk::Client,
    sess: &mut Session,
    only_total: bool,
) -> Result<(Vec<pb::ConversationInfo>, u64)> {
    let limit = if only_total { 1 } else { CONVERSATION_PAGE };
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    let mut offset = 0u32;
    loop {
        let page = sess
            .request("cannot list the conversations", true, || {
                client.conversation_list(limit, offset)
            })
            .await?;
        let n = page.conversations.len() as u32;
        all.extend(
            page.conversations
                .into_iter()
                .filter(|c| seen.insert(c.conversation.clone())),
        );
        offset += n;
        if only_total || n == 0 || offset >= page.total {
            return Ok((all, page.total_unread));
        }
    }
}

/// `tern read`: moves the read position in one conversation to `seq` (None: the latest).
pub async fn read(ctx: &Ctx, dest: Dest, seq: Option<u64>) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    // Idempotent (positions only move forward): safe to make again after a lost connection.
    let result = sess
        .request(&format!("cannot mark {conv} read"), true, || {
            client.mark_read(&conv, seq.unwrap_or(0))
        })
        .await;
    sess.close(&HashSet::new()).await;
    let state = no_conversation(result, &dest)?;
    if ctx.json {
        output::json_line(&serde_json::json!({
            "conv": state.conversation,
            "read_seq": state.read_seq,
        }))
    } else {
        output::line(&format!(
            "{}: read up to seq {}, {} unread",
            state.conversation, state.read_seq, state.unread
        ))
    }
}

/// `tern receipts`: who of the other members has read message `seq` of one conversation.
pub async fn receipts(ctx: &Ctx, dest: Dest, seq: u64) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    let result = sess
        .request(
            &format!("cannot ask who read {conv} seq {seq}"),
            true,
            || client.receipts(&conv, seq),
        )
        .await;
    sess.close(&HashSet::new()).await;
    let r = no_conversation(result, &dest)?;
    if ctx.json {
        output::json_line(&ReceiptsLine::new(&r))
    } else {
        output::line(&output::receipts_human(&r))
    }
}

/// `tern typing`: one "typing" signal in one conversation (the members online now see it).
pub async fn typing(ctx: &Ctx, dest: Dest) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    // Transient and throttled by the server: a repeat after a lost connection is harmless.
    let result = sess
        .request(&format!("cannot send typing to {conv}"), true, || {
            client.typing(&conv, true)
        })
        .await;
    sess.close(&HashSet::new()).await;
    no_conversation(result, &dest)?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "conv": conv, "typing": true }))
    } else {
        output::line(&format!("{conv}: typing"))
    }
}

/// `tern mute|unmute|pin|unpin`: sets what is `Some` of the user's settings of one
/// conversation and prints both as they are now.
pub async fn settings(
    ctx: &Ctx,
    dest: Dest,
    muted: Option<bool>,
    pinned: Option<bool>,
) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    let what = match (muted, pinned) {
        (Some(true), _) => "mute",
        (Some(false), _) => "unmute",
        (_, Some(true)) => "pin",
        _ => "unpin",
    };
    // Idempotent (it sets values, it does not toggle): safe to make again after a lost
    // connection.
    let result = sess
        .request(&format!("cannot {what} {conv}"), true, || {
            client.set_conversation_settings(&conv, muted, pinned)
        })
        .await;
    sess.close(&HashSet::new()).await;
    let s = no_conversation(result, &dest)?;
    if ctx.json {
        output::json_line(&SettingsLine::answer(&s.conversation, s.muted, s.pinned))
    } else {
        output::line(&output::settings_human(&s.conversation, s.muted, s.pinned))
    }
}

/// What `tern edit|recall|delete` does to a message.
#[derive(Debug, Clone)]
pub enum Change {
    Edit(String),
    Recall,
    Delete,
}

/// `tern edit|recall|delete`: changes message `seq` of one conversation; prints
/// `{"conv":..,"seq":N,"ok":true}` (`seq` the message changed). Edit and recall carry one
/// client_msg_id for every attempt, so a retry after a lost connection never edits or
/// recalls twice (the server answers it with the first ack); delete is idempotent.
pub async fn change(ctx: &Ctx, dest: Dest, seq: u64, change: Change) -> Result<()> {
    dest.check()?;
    if matches!(&change, Change::Edit(t) if t.trim().is_empty()) {
        return Err(Failure::usage(
            "the new text is empty (recall the message instead)",
        ));
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conv = dest.conversation(client.username());
    let id = tern_sdk::new_client_msg_id();
    let result = match &change {
        Change::Edit(text) => sess
            .request(&format!("cannot edit {conv} seq {seq}"), true, || {
                client.edit_with_id(&id, &conv, seq, Bytes::from(text.clone()), "")
            })
            .await
            .map(|_| "edited"),
        Change::Recall => sess
            .request(&format!("cannot recall {conv} seq {seq}"), true, || {
                client.recall_with_id(&id, &conv, seq)
            })
            .await
            .map(|_| "recalled"),
        Change::Delete => sess
            .request(&format!("cannot delete {conv} seq {seq}"), true, || {
                client.delete_for_me(&conv, seq)
            })
            .await
            .map(|_| "deleted for you"),
    };
    let profile_path = sess.profile_path.clone();
    sess.close(&HashSet::new()).await;
    let done = result?;
    if matches!(change, Change::Delete) {
        // The local copy forgets it too (`tern sync` does not hear of it again: the
        // message was delivered already).
        let db = crate::profile::local_copy_path(&profile_path);
        if db.exists() {
            if let Err(e) = tern_sdk::SqliteStore::open(&db)
                .and_then(|mut local| tern_sdk::StateStore::record_hidden(&mut local, &conv, seq))
            {
                output::status(&format!("warning: the local copy still shows it: {e}"));
            }
        }
    }
    if ctx.json {
        output::json_line(&serde_json::json!({ "conv": conv, "seq": seq, "ok": true }))
    } else {
        output::line(&format!("{conv}: #{seq} {done}"))
    }
}

/// `tern settings`: sets what is `Some` of the user's account settings (none: only reads
/// them) and prints them as they are now.
pub async fn user_settings(ctx: &Ctx, send_receipts: Option<bool>) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    // Sets a value (no toggle): safe to make again after a lost connection.
    let result = sess
        .request("cannot change the settings", true, || {
            client.set_user_settings(send_receipts)
        })
        .await;
    sess.close(&HashSet::new()).await;
    let s = result?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "send_receipts": s.send_receipts }))
    } else {
        let onoff = if s.send_receipts { "on" } else { "off" };
        output::line(&format!("send_receipts: {onoff}"))
    }
}

/// `tern push register`: this device's push target (replaces an earlier one).
pub async fn push_register(ctx: &Ctx, platform: &str, token: &str, preview: bool) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    // Sets the target (no toggle): safe to make again after a lost connection.
    let result = sess
        .request("cannot register the push target", true, || {
            client.register_push_target(platform, token, preview)
        })
        .await;
    sess.close(&HashSet::new()).await;
    result?;
    if ctx.json {
        output::json_line(&serde_json::json!({
            "push": "registered",
            "platform": platform,
            "preview": preview,
        }))
    } else {
        output::line(&format!("push notifications on ({platform})"))
    }
}

/// `tern push unregister`: no more push notifications to this device.
pub async fn push_unregister(ctx: &Ctx) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot remove the push target", true, || {
            client.unregister_push_target()
        })
        .await;
    sess.close(&HashSet::new()).await;
    result?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "push": "unregistered" }))
    } else {
        output::line("push notifications off")
    }
}

fn forbidden(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Server {
                code: pb::ErrorCode::Forbidden,
                ..
            })
        )
    })
}

/// What `tern group` does.
#[derive(Debug, Clone)]
pub enum GroupOp {
    Create {
        name: String,
        members: Vec<String>,
    },
    Add {
        group: String,
        users: Vec<String>,
    },
    Remove {
        group: String,
        users: Vec<String>,
    },
    Leave {
        group: String,
    },
    Members {
        group: String,
    },
    Role {
        group: String,
        user: String,
        admin: bool,
    },
    Transfer {
        group: String,
        user: String,
    },
    Set {
        update: pb::UpdateGroup,
    },
    Dissolve {
        group: String,
    },
}

pub async fn group(ctx: &Ctx, op: GroupOp) -> Result<()> {
    match &op {
        GroupOp::Create { members: users, .. }
        | GroupOp::Add { users, .. }
        | GroupOp::Remove { users, .. } => users.iter().try_for_each(|u| check_username(u))?,
        GroupOp::Role { user, .. } | GroupOp::Transfer { user, .. } => check_username(user)?,
        _ => {}
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = group_op(ctx, &client, &mut sess, op).await;
    sess.close(&HashSet::new()).await;
    result
}

#[derive(Serialize)]
struct MemberLine<'a> {
    user: &'a str,
    role: &'static str,
}

async fn group_op(
    ctx: &Ctx,
    client: &tern_sdk::Client,
    sess: &mut Session,
    op: GroupOp,
) -> Result<()> {
    let done = |text: String| -> Result<()> {
        if ctx.json {
            output::json_line(&serde_json::json!({ "ok": true }))
        } else {
            output::line(&text)
        }
    };
    match op {
        GroupOp::Create { name, members } => {
            let g = sess
                .request("cannot create the group", false, || {
                    client.create_group(&name, &members)
                })
                .await?;
            output::json_line(&serde_json::json!({ "group": g.conversation }))
        }
        GroupOp::Add { group, users } => {
            sess.request(&format!("cannot add to {group}"), true, || {
                client.add_members(&group, &users, pb::Role::Member)
            })
            .await?;
            done(format!("added {} to {group}", users.join(", ")))
        }
        GroupOp::Remove { group, users } => {
            sess.request(&format!("cannot remove from {group}"), false, || {
                client.remove_members(&group, &users)
            })
            .await?;
            done(format!("removed {} from {group}", users.join(", ")))
        }
        GroupOp::Leave { group } => {
            sess.request(&format!("cannot leave {group}"), false, || {
                client.leave_group(&group)
            })
            .await?;
            done(format!("left {group}"))
        }
        GroupOp::Role { group, user, admin } => {
            let role = if admin {
                pb::Role::Admin
            } else {
                pb::Role::Member
            };
            sess.request(
                &format!("cannot change {user}'s role in {group}"),
                true,
                || client.set_member_role(&group, &user, role),
            )
            .await?;
            done(format!(
                "{user} is now {} of {group}",
                if admin { "an admin" } else { "a member" }
            ))
        }
        GroupOp::Transfer { group, user } => {
            sess.request(&format!("cannot hand {group} to {user}"), false, || {
                client.transfer_ownership(&group, &user)
            })
            .await?;
            done(format!("{user} now owns {group}"))
        }
        GroupOp::Set { update } => {
            let group = update.conversation.clone();
            sess.request(&format!("cannot change {group}"), true, || {
                client.update_group(update.clone())
            })
            .await?;
            done(format!("updated {group}"))
        }
        GroupOp::Dissolve { group } => {
            sess.request(&format!("cannot dissolve {group}"), false, || {
                client.dissolve_group(&group)
            })
            .await?;
            done(format!("dissolved {group}"))
        }
        GroupOp::Members { group } => {
            let members = sess
                .request(&format!("cannot list the members of {group}"), true, || {
                    client.members(&group)
                })
                .await?;
            for m in &members {
                let line = MemberLine {
                    user: &m.username,
                    role: output::role_name(m.role),
                };
                if ctx.json {
                    output::json_line(&line)?;
                } else {
                    output::line(&format!("{}\t{}", line.user, line.role))?;
                }
            }
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct PresenceLine<'a> {
    user: &'a str,
    online: bool,
    devices: &'a [String],
}

/// `tern presence`: the online devices of each user.
pub async fn presence(ctx: &Ctx, users: Vec<String>) -> Result<()> {
    users.iter().try_for_each(|u| check_username(u))?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot query presence", true, || client.presence(&users))
        .await;
    sess.close(&HashSet::new()).await;
    for p in &result? {
        let line = PresenceLine {
            user: &p.username,
            online: !p.online_devices.is_empty(),
            devices: &p.online_devices,
        };
        if ctx.json {
            output::json_line(&line)?;
        } else if line.online {
            output::line(&format!(
                "{}: online ({})",
                p.username,
                p.online_devices.join(", ")
            ))?;
        } else {
            output::line(&format!("{}: offline", p.username))?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ChannelLine<'a> {
    conv: &'a str,
    name: &'a str,
    topic: &'a str,
    members: u32,
    broadcast_only: bool,
    joined: bool,
}

/// `tern channel create`.
pub async fn channel_create(ctx: &Ctx, name: String, broadcast_only: bool) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot create the channel", false, || {
            client.create_channel(&name, broadcast_only)
        })
        .await;
    sess.close(&HashSet::new()).await;
    output::json_line(&serde_json::json!({ "group": result?.conversation }))
}

/// `tern channel join`.
pub async fn channel_join(ctx: &Ctx, group: String) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request(&format!("cannot join {group}"), true, || {
            client.join_channel(&group)
        })
        .await;
    sess.close(&HashSet::new()).await;
    result?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "ok": true }))
    } else {
        output::line(&format!("joined {group}"))
    }
}

/// `tern channel list`: the directory.
pub async fn channel_list(ctx: &Ctx, prefix: String) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot list channels", true, || {
            client.list_channels(&prefix, 0)
        })
        .await;
    sess.close(&HashSet::new()).await;
    for c in &result? {
        let line = ChannelLine {
            conv: &c.conversation,
            name: &c.name,
            topic: &c.topic,
            members: c.member_count,
            broadcast_only: c.broadcast_only,
            joined: c.joined,
        };
        if ctx.json {
            output::json_line(&line)?;
        } else {
            output::line(&format!(
                "{}\t{}\t{} member(s){}{}",
                line.conv,
                line.name,
                line.members,
                if line.broadcast_only {
                    ", broadcast only"
                } else {
                    ""
                },
                if line.joined { ", joined" } else { "" }
            ))?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct GroupPresenceLine<'a> {
    conv: &'a str,
    members: u32,
    online: u32,
}

/// `tern presence --group`: how many members are online; --watch/--unwatch start or stop
/// the presence pushes of its members.
pub async fn group_presence(ctx: &Ctx, group: String, watch: bool, unwatch: bool) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request(
            &format!("cannot query the presence of {group}"),
            true,
            || async {
                if watch {
                    client.watch_group(&group).await
                } else if unwatch {
                    client.unwatch_group(&group).await
                } else {
                    client.group_online(&group).await
                }
            },
        )
        .await;
    sess.close(&HashSet::new()).await;
    let r = result?;
    let line = GroupPresenceLine {
        conv: &r.conversation,
        members: r.members,
        online: r.online_members,
    };
    if ctx.json {
        output::json_line(&line)?;
    } else {
        output::line(&format!(
            "{}: {} of {} members online{}",
            line.conv,
            line.online,
            line.members,
            if watch {
                " (watching for 10 minutes)"
            } else {
                ""
            }
        ))?;
    }
    Ok(())
}

/// How many messages `tern chat` opens with.
const CHAT_BACKLOG: usize = 20;
/// History pages `tern chat` reads at most to find them (edit and recall entries and
/// deleted messages are not shown, so a page may hold fewer).
const CHAT_BACKLOG_PAGES: usize = 5;

/// `tern chat`: opens with the last messages of one conversation, then sends stdin lines
/// to it and shows it live; what is shown is marked read.
pub async fn chat(ctx: &Ctx, dest: Dest) -> Result<()> {
    dest.check()?;
    let (client, mut sess) = Session::start(ctx, Cursors::Save, true).await?;
    let conv = dest.conversation(client.username());
    output::status(&format!(
        "-- chat in {conv} as {}: type a line to send it; Ctrl-D or Ctrl-C to quit --",
        client.username()
    ));
    let mut sends = Sends::new();
    let mut marker = ReadMarker::new(&client, &conv);
    let peer = match &dest {
        Dest::User(u) => Some(u.clone()),
        Dest::Group(_) => None,
    };
    let mut view = ChatView::new(&conv, peer);
    let result = async {
        let early = open_with_history(&client, &mut sess, &dest, &mut view, &mut marker).await?;
        for ev in early {
            view.event(&ev, &sends, &mut marker)?;
        }
        chat_loop(
            &client,
            &mut sess,
            &mut sends,
            &mut marker,
            &mut view,
            &dest,
        )
        .await
    }
    .await;
    // What was shown is marked read before the client stops (bounded: a slow server
    // only delays the exit by MARK_FLUSH).
    let _ = tokio::time::timeout(MARK_FLUSH, marker.flush()).await;
    let (rest, dropped) = sess.close(&sends.unconfirmed).await;
    for ev in rest {
        if let Event::Message { message, .. } = ev {
            view.message(&message, &sends, &mut marker)?;
        }
    }
    if dropped > 0 {
        output::status(&format!(
            "-- {dropped} message(s) were not confirmed by the server and were not kept --"
        ));
    }
    result
}

/// Reads the conversation's last [`CHAT_BACKLOG`] messages and shows them (marking read
/// up to its newest entry). Events that come meanwhile are kept and returned, to be shown
/// after (the view skips what the history already showed).
async fn open_with_history(
    client: &tern_sdk::Client,
    sess: &mut Session,
    dest: &Dest,
    view: &mut ChatView,
    marker: &mut ReadMarker,
) -> Result<Vec<Event>> {
    let conv = view.conv.clone();
    let mut early = Vec::new();
    let mut shown: VecDeque<pb::Message> = VecDeque::new();
    let mut head = 0u64;
    let mut before = 0u64;
    for _ in 0..CHAT_BACKLOG_PAGES {
        let page = match history_page(client, sess, &conv, before, &mut early).await? {
            Ok(p) => p,
            // A 1:1 conversation with nothing in it yet.
            Err(ClientError::Server {
                code: pb::ErrorCode::Forbidden,
                ..
            }) if matches!(dest, Dest::User(_)) => break,
            Err(e) => {
                output::status(&format!("-- cannot read the history: {e} --"));
                break;
            }
        };
        let Some(first) = page.messages.first().map(|m| m.seq) else {
            break;
        };
        head = head.max(page.messages.last().map_or(0, |m| m.seq));
        for m in page.messages.into_iter().rev() {
            if !output::is_change(&m) && !m.deleted && !m.expired {
                shown.push_front(m);
            }
        }
        if shown.len() >= CHAT_BACKLOG || first <= 1 {
            break;
        }
        before = first;
    }
    let skip = shown.len().saturating_sub(CHAT_BACKLOG);
    for m in shown.iter().skip(skip) {
        output::line(&output::chat_line(m))?;
    }
    view.head = head;
    if head > 0 {
        marker.shown(head);
    }
    Ok(early)
}

/// One page of history (50 entries before `before`; 0 = the newest), keeping the events
/// that come while waiting. A page cut by a lost connection is asked again.
async fn history_page(
    client: &tern_sdk::Client,
    sess: &mut Session,
    conv: &str,
    before: u64,
    early: &mut Vec<Event>,
) -> Result<Result<pb::PullResult, ClientError>> {
    let deadline = Instant::now() + session::REQUEST_TIMEOUT;
    let mut fut = Box::pin(client.history(conv, before, 50));
    loop {
        tokio::select! {
            biased;
            ev = sess.next_event() => early.push(ev?),
            r = &mut fut => match r {
                Err(ClientError::ConnectionLost) => fut = Box::pin(client.history(conv, before, 50)),
                Err(ClientError::Stopped(_)) => return Err(sess.stopped_error().await),
                r => return Ok(r),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Err(ClientError::Protocol("no answer in time".into())));
            }
        }
    }
}

/// What `tern chat` has shown of its conversation, and how it shows what comes.
struct ChatView {
    conv: String,
    /// The peer of a 1:1 chat (whose presence is shown).
    peer: Option<String>,
    /// The newest seq of the conversation shown (or skipped as already accounted for):
    /// anything at or below it is not shown again.
    head: u64,
    /// Who was last seen typing, until when (server time, ms).
    typing: std::collections::HashMap<String, u64>,
}

impl ChatView {
    fn new(conv: &str, peer: Option<String>) -> Self {
        Self {
            conv: conv.to_string(),
            peer,
            head: 0,
            typing: Default::default(),
        }
    }

    /// A message: this conversation's on stdout (edits and recalls as lines of their
    /// own, tombstones not at all), others' as a notice on stderr (chat saves the cursor,
    /// so they would not be shown again), and this chat's own lines not at all (their ack
    /// is shown instead).
    fn message(&mut self, m: &pb::Message, sends: &Sends, marker: &mut ReadMarker) -> Result<()> {
        if m.conversation != self.conv {
            if !output::is_change(m) && !output::content_gone(m) {
                output::status(&format!(
                    "-- {} in {}: {} --",
                    output::from_of(m),
                    m.conversation,
                    output::human_text(m)
                ));
            }
            return Ok(());
        }
        if m.seq <= self.head {
            return Ok(()); // shown with the history
        }
        self.head = m.seq;
        marker.shown(m.seq);
        self.typing.remove(&m.sender);
        if sends.ours.contains(&m.client_msg_id) || m.deleted || m.expired {
            return Ok(());
        }
        output::line(&output::chat_line(m))
    }

    /// Any event; receipts, typing, presence and deletes as notices on stderr.
    fn event(&mut self, ev: &Event, sends: &Sends, marker: &mut ReadMarker) -> Result<()> {
        match ev {
            Event::Message { message, .. } => self.message(message, sends, marker)?,
            // A receipt from the other side(s); this user's own reads need no notice.
            Event::Read {
                conversation,
                user,
                read_seq,
                own: false,
            } if *conversation == self.conv => {
                output::status(&format!("  -- {user} read up to seq {read_seq} --"));
            }
            Event::Typing {
                conversation,
                user,
                typing,
                expires_ms,
            } if *conversation == self.conv => {
                if !typing {
                    self.typing.remove(user);
                } else {
                    // Once per bout of typing, not for every repeat of the signal.
                    let now = tern_now_ms();
                    let fresh = !matches!(self.typing.get(user), Some(until) if *until >= now);
                    self.typing.insert(user.clone(), *expires_ms);
                    if fresh {
                        output::status(&format!("  -- {user} is typing... --"));
                    }
                }
            }
            Event::Presence { user, online, .. } if self.peer.as_ref() == Some(user) => {
                let state = if *online { "online" } else { "offline" };
                output::status(&format!("  -- {user} is {state} --"));
            }
            Event::Hidden { conversation, seq } if *conversation == self.conv => {
                output::status(&format!("  -- #{seq} deleted for you --"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The wall-clock time, Unix ms.
fn tern_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long `tern chat` waits at exit for its last MarkRead.
const MARK_FLUSH: Duration = Duration::from_secs(2);

type MarkFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<pb::ReadState, ClientError>> + Send>>;

/// Marks read what `tern chat` shows: at most one MarkRead in flight, always up to the
/// newest seq shown so far, so a burst of messages costs one or two requests. (The SDK
/// queues a request made while disconnected until the next connection.)
struct ReadMarker {
    client: tern_sdk::Client,
    conv: String,
    /// The newest seq of this conversation shown.
    shown: u64,
    /// Asked for: in flight, answered, or refused (not asked again).
    asked: u64,
    /// Answered by the server.
    done: u64,
    in_flight: Option<MarkFuture>,
}

impl ReadMarker {
    fn new(client: &tern_sdk::Client, conv: &str) -> Self {
        Self {
            client: client.clone(),
            conv: conv.to_string(),
            shown: 0,
            asked: 0,
            done: 0,
            in_flight: None,
        }
    }

    /// `seq` of this conversation is on the screen.
    fn shown(&mut self, seq: u64) {
        self.shown = self.shown.max(seq);
        self.start();
    }

    fn start(&mut self) {
        if self.in_flight.is_none() && self.shown > self.asked {
            self.asked = self.shown;
            let (client, conv, seq) = (self.client.clone(), self.conv.clone(), self.shown);
            self.in_flight = Some(Box::pin(async move { client.mark_read(&conv, seq).await }));
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the MarkRead in flight (pending forever when there is none: guard the
    /// `select!` branch with `busy()`), then starts the next one if more was shown.
    /// Cancel-safe: the request stays in `self` when a `select!` drops this future. One
    /// cut by a lost connection is asked again (the SDK holds it until it reconnects); a
    /// refused one is reported once and not retried.
    async fn next(&mut self) {
        let Some(fut) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let r = fut.await;
        self.in_flight = None;
        match r {
            Ok(state) => self.done = self.done.max(state.read_seq),
            Err(ClientError::ConnectionLost) => self.asked = self.done,
            Err(ClientError::Stopped(_)) => return,
            Err(e) => output::status(&format!("-- cannot mark read: {e} --")),
        }
        self.start();
    }

    /// Until everything shown is asked for and answered (or refused).
    async fn flush(&mut self) {
        self.start();
        while self.busy() {
            self.next().await;
        }
    }
}

async fn chat_loop(
    client: &tern_sdk::Client,
    sess: &mut Session,
    sends: &mut Sends,
    marker: &mut ReadMarker,
    view: &mut ChatView,
    dest: &Dest,
) -> Result<()> {
    let target = dest.target();
    let mut input = Some(stdin_lines());
    let mut stop = std::pin::pin!(shutdown_signal());
    let mut first_failure: Option<anyhow::Error> = None;
    let mut failures = 0usize;
    while input.is_some() || !sends.is_empty() {
        tokio::select! {
            biased;
            ev = sess.next_event() => view.event(&ev?, sends, marker)?,
            _ = marker.next(), if marker.busy() => {}
            (_, _, r) = sends.next(), if !sends.is_empty() => match r {
                Ok(ack) => output::status(&format!("  ✓ seq {}", ack.seq)),
                Err(ClientError::Stopped(_)) => return Err(sess.stopped_error().await),
                Err(e) => {
                    output::status(&format!("-- not sent: {e} --"));
                    failures += 1;
                    first_failure.get_or_insert_with(|| anyhow::Error::new(e));
                }
            },
            line = recv(&mut input), if input.is_some() => match line {
                Some(Ok(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => {}
                Some(Ok(bytes)) => sends.push(client, target.clone(), bytes).await?,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("cannot read stdin")),
                None => input = None,
            },
            _ = &mut stop => return Ok(()),
        }
    }
    match first_failure {
        Some(e) => Err(e.context(format!("{failures} message(s) not sent"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_lengths_are_checked_in_bytes() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password("éééé").is_ok(), "4 characters, 8 bytes");
        assert_eq!(
            check_password("short").unwrap_err().to_string(),
            "the password must be 8-1024 bytes"
        );
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
