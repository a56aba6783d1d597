//! `tern friend request|accept|decline|cancel|remove|list`, `tern block` and `tern
//! unblock`: contacts (docs/PROTOCOL.md 9.13).

use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;
use tern_sdk::proto::pb;

use crate::output;
use crate::session::{check_username, Ctx, Cursors, Session};

/// A contact change the user asks for.
#[derive(Clone, Debug)]
pub enum Change {
    Request(Option<String>),
    Accept,
    Decline,
    Cancel,
    Remove,
    Block,
    Unblock,
}

impl Change {
    fn verb(&self) -> &'static str {
        match self {
            Change::Request(_) => "requested",
            Change::Accept => "accepted",
            Change::Decline => "declined",
            Change::Cancel => "canceled",
            Change::Remove => "removed",
            Change::Block => "blocked",
            Change::Unblock => "unblocked",
        }
    }
}

/// `tern friend request|accept|decline|cancel|remove USER`, `tern block|unblock USER`:
/// prints `{"user":..,"done":"requested"|...}`.
pub async fn change(ctx: &Ctx, user: String, change: Change) -> Result<()> {
    check_username(&user)?;
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    // Not retried after a lost connection: a repeat that already took effect would be
    // answered with the error of the new state.
    let result = sess
        .request(&format!("cannot change contact {user}"), false, || {
            let (client, user, change) = (&client, user.clone(), change.clone());
            async move {
                match change {
                    Change::Request(m) => {
                        client
                            .send_friend_request(&user, m.as_deref().unwrap_or(""))
                            .await
                    }
                    Change::Accept => client.accept_friend_request(&user).await,
                    Change::Decline => client.decline_friend_request(&user).await,
                    Change::Cancel => client.cancel_friend_request(&user).await,
                    Change::Remove => client.remove_friend(&user).await,
                    Change::Block => client.block_user(&user).await,
                    Change::Unblock => client.unblock_user(&user).await,
                }
            }
        })
        .await;
    sess.close(&HashSet::new()).await;
    result?;
    if ctx.json {
        output::json_line(&serde_json::json!({ "user": user, "done": change.verb() }))
    } else {
        output::line(&format!("{user}: {}", change.verb()))
    }
}

/// One contact: `{"user":..,"state":"friend"|"incoming"|"outgoing"|"blocked"}`, with the
/// request's `"message"` when there is one.
#[derive(Serialize)]
struct ContactLine<'a> {
    user: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

fn state_name(state: i32) -> &'static str {
    match pb::ContactState::try_from(state) {
        Ok(pb::ContactState::Friend) => "friend",
        Ok(pb::ContactState::Incoming) => "incoming",
        Ok(pb::ContactState::Outgoing) => "outgoing",
        Ok(pb::ContactState::BlockedUser) => "blocked",
        _ => "unknown",
    }
}

/// `tern friend list`: one line per contact, in name order.
pub async fn list(ctx: &Ctx) -> Result<()> {
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot list contacts", true, || client.contacts())
        .await;
    sess.close(&HashSet::new()).await;
    for c in &result? {
        let line = ContactLine {
            user: &c.user,
            state: state_name(c.state),
            message: (!c.message.is_empty()).then_some(c.message.as_str()),
        };
        if ctx.json {
            output::json_line(&line)?;
        } else if let Some(m) = line.message {
            output::line(&format!("{} {}: {m}", line.user, line.state))?;
        } else {
            output::line(&format!("{} {}", line.user, line.state))?;
        }
    }
    Ok(())
}
