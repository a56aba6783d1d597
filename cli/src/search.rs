//! `tern search QUERY [--with USER | --group GID] [--from USER] [--limit N]`: full-text
//! history search (docs/PROTOCOL.md 9.15). Hits are printed newest first, each as the line
//! `tern history` prints for that message (`--json`: the same JSON object).

use std::collections::HashSet;

use anyhow::Result;
use tern_sdk::proto::direct_conversation;
use tern_sdk::SearchOptions;

use crate::error::Failure;
use crate::output::{self, MessageLine};
use crate::session::{check_username, Ctx, Cursors, Session};

/// Most pages one command reads (a page may hold fewer hits than asked while more follow).
const MAX_PAGES: usize = 20;

pub async fn search(
    ctx: &Ctx,
    query: String,
    with: Option<String>,
    group: Option<String>,
    from: Option<String>,
    limit: u32,
) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Failure::usage("the search query is empty"));
    }
    for u in with.iter().chain(from.iter()) {
        check_username(u)?;
    }
    if group.as_deref() == Some("") {
        return Err(Failure::usage("--group needs a group id"));
    }
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let conversation = match (&with, &group) {
        (Some(u), _) => direct_conversation(client.username(), u),
        (None, Some(g)) => g.clone(),
        (None, None) => String::new(),
    };
    let mut options = SearchOptions {
        conversation,
        sender: from.unwrap_or_default(),
        limit,
        page: String::new(),
    };
    let mut hits = Vec::new();
    let mut result = Ok(());
    for _ in 0..MAX_PAGES {
        let page = sess
            .request("cannot search", true, || {
                client.search(&query, options.clone())
            })
            .await;
        match page {
            Ok(r) => {
                hits.extend(r.messages);
                if r.next_page.is_empty() || hits.len() >= limit as usize {
                    break;
                }
                options.page = r.next_page;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    sess.close(&HashSet::new()).await;
    result?;
    hits.truncate(limit as usize);
    for m in &hits {
        if ctx.json {
            output::json_line(&MessageLine::new(m))?;
        } else {
            output::line(&output::history_line(m))?;
        }
    }
    Ok(())
}
