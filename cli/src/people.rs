//! `tern profile set|get` and `tern users search`: display names, status texts, avatars
//! (an uploaded image, see [`crate::files`]) and user search (docs/PROTOCOL.md 9.12).

use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;
use tern_sdk::proto::pb;

use crate::error::Failure;
use crate::output;
use crate::session::{check_username, Ctx, Cursors, Session};

/// One profile: `{"user":..,"name":..,"status":..,"avatar":null}` (empty fields are null).
#[derive(Serialize)]
struct ProfileLine<'a> {
    user: &'a str,
    name: Option<&'a str>,
    status: Option<&'a str>,
    avatar: Option<&'a str>,
}

impl<'a> ProfileLine<'a> {
    fn new(p: &'a pb::Profile) -> Self {
        let some = |s: &'a str| (!s.is_empty()).then_some(s);
        Self {
            user: &p.user,
            name: some(&p.display_name),
            status: some(&p.status),
            avatar: some(&p.avatar),
        }
    }
}

fn print_profile(ctx: &Ctx, p: &pb::Profile) -> Result<()> {
    if ctx.json {
        return output::json_line(&ProfileLine::new(p));
    }
    let mut text = p.user.clone();
    if !p.display_name.is_empty() {
        text.push_str(&format!(" ({})", p.display_name));
    }
    if !p.status.is_empty() {
        text.push_str(&format!(": {}", p.status));
    }
    output::line(&text)
}

/// `tern profile set [--name NAME] [--status TEXT]`: an empty value clears the field.
pub async fn set(
    ctx: &Ctx,
    name: Option<String>,
    status: Option<String>,
    avatar: Option<String>,
) -> Result<()> {
    if name.is_none() && status.is_none() && avatar.is_none() {
        return Err(Failure::usage(
            "nothing to set: give --name, --status and/or --avatar",
        ));
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let mut result = Ok(None);
    if name.is_some() || status.is_some() {
        result = sess
            .request("cannot set the profile", true, || {
                client.set_profile(name.as_deref(), status.as_deref())
            })
            .await
            .map(Some);
    }
    if let (Ok(_), Some(file)) = (&result, &avatar) {
        result = crate::files::set_avatar(&mut sess, &client, file)
            .await
            .map(Some);
    }
    sess.close(&HashSet::new()).await;
    let profile = result?.expect("something was set");
    print_profile(ctx, &profile)
}

/// `tern profile get USER...`: one line per user that exists, in the order given.
pub async fn get(ctx: &Ctx, users: Vec<String>) -> Result<()> {
    users.iter().try_for_each(|u| check_username(u))?;
    if users.len() > 100 {
        return Err(Failure::usage("at most 100 users at once"));
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot read profiles", true, || client.get_profiles(&users))
        .await;
    sess.close(&HashSet::new()).await;
    for p in &result? {
        print_profile(ctx, p)?;
    }
    Ok(())
}

/// One search answer: `{"user":..,"name":..}` (name null when none is set).
#[derive(Serialize)]
struct MatchLine<'a> {
    user: &'a str,
    name: Option<&'a str>,
}

/// `tern users search PREFIX [--limit N]`.
pub async fn search(ctx: &Ctx, prefix: String, limit: u32) -> Result<()> {
    if prefix.trim().chars().count() < 2 {
        return Err(Failure::usage(
            "the search prefix needs at least 2 characters",
        ));
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let result = sess
        .request("cannot search users", true, || {
            client.search_users(&prefix, limit)
        })
        .await;
    sess.close(&HashSet::new()).await;
    for m in &result? {
        let name = (!m.display_name.is_empty()).then_some(m.display_name.as_str());
        if ctx.json {
            output::json_line(&MatchLine {
                user: &m.user,
                name,
            })?;
        } else if let Some(name) = name {
            output::line(&format!("{} ({name})", m.user))?;
        } else {
            output::line(&m.user)?;
        }
    }
    Ok(())
}

/// A profile change as `tern sync --follow` prints it:
/// `{"event":"profile","user":..,"name":..,"status":..,"avatar":null}`.
pub fn event_line(p: &pb::Profile) -> Result<()> {
    #[derive(Serialize)]
    struct EventLine<'a> {
        event: &'static str,
        #[serde(flatten)]
        profile: ProfileLine<'a>,
    }
    output::json_line(&EventLine {
        event: "profile",
        profile: ProfileLine::new(p),
    })
}
