//! The endpoints of the admin API and the OpenAPI document generated from them. Each
//! handler validates its input, calls a domain through `Services`, and answers JSON or a
//! [`Problem`].

use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tern_proto::pb::{self, CloseReason, MessageKind};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{require_token, AdminState, Body, Problem, MAX_BODY_BYTES, P, Q};
use crate::metrics::TransportLabel;

type ApiResult<T> = Result<T, Problem>;

/// Default page size.
const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
const MAX_LIMIT: u32 = 1000;
/// The actor named in events an operator causes (a dissolved group's DISSOLVED event).
const OPERATOR: &str = "admin";

pub(super) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/admin/v1/online", get(online))
        .route("/admin/v1/users", get(list_users).post(create_user))
        .route("/admin/v1/users/{user}", get(get_user))
        .route("/admin/v1/users/{user}/disable", post(disable_user))
        .route("/admin/v1/users/{user}/enable", post(enable_user))
        .route("/admin/v1/users/{user}/revoke", post(revoke_user))
        .route("/admin/v1/users/{user}/password", post(set_password))
        .route("/admin/v1/users/{user}/unread", get(unread))
        .route("/admin/v1/conversations/{conv}/messages", get(history))
        .route("/admin/v1/groups", get(list_groups))
        .route(
            "/admin/v1/groups/{gid}",
            get(get_group).delete(delete_group),
        )
        .route("/admin/v1/messages", post(send_notice))
        .route("/admin/v1/stats", get(stats))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi_json))
        .merge(api)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this method is not allowed here",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

// ---------------------------------------------------------------- the document

/// The errors every endpoint may answer, as problem details.
struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        let problem = |desc: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(desc)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        [
            (
                "400",
                "bad input: a malformed value, JSON, or an unknown field",
            ),
            ("401", "no Authorization header"),
            ("403", "a wrong token"),
            ("404", "no such user, group, conversation or endpoint"),
            ("405", "a method this path does not have"),
            ("409", "the user exists already"),
            ("413", "the body is over the limit"),
            ("415", "the body is not JSON"),
            ("429", "too many"),
        ]
        .into_iter()
        .map(|(code, desc)| (code.to_string(), problem(desc)))
        .collect()
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tern admin API",
        version = "1",
        description = "Operate a tern server: users, sessions, groups, history, notices, \
                       figures. Every path but this document needs `Authorization: Bearer \
                       <token>` (the token is in the server's admin.token file). Errors are \
                       RFC 9457 problem details. See docs/ADMIN_API.md."
    ),
    paths(
        online, list_users, create_user, get_user, disable_user, enable_user, revoke_user,
        set_password, unread, history, list_groups, get_group, delete_group, send_notice,
        stats
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of this API (no token needed: it holds no data).
async fn openapi_json() -> Response {
    let mut doc = ApiDoc::openapi();
    doc.servers = None;
    match doc.to_json() {
        Ok(text) => ([("content-type", "application/json")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize the OpenAPI document");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "no document").into_response()
        }
    }
}

// ---------------------------------------------------------------- shared types

/// A page: `limit` entries (1-1000, default 100) after the cursor `after` (the `next`
/// of the previous page).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Entries per page, 1-1000 (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Start after this entry (the previous page's `next`)
    after: Option<String>,
}

/// A page of a listing filtered by a name prefix.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PrefixQuery {
    /// Only names that start with this (users: the user name; groups: the group name,
    /// case-insensitive)
    prefix: Option<String>,
    /// Entries per page, 1-1000 (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Start after this entry (the previous page's `next`)
    after: Option<String>,
}

fn page_limit(limit: Option<u32>) -> ApiResult<usize> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("limit {n} is not in 1..={MAX_LIMIT}"),
        )),
    }
}

fn validate_user(user: &str) -> ApiResult<()> {
    crate::validate::username(user).map_err(Problem::from)
}

/// Closes every live session of `user` (reason REVOKED); how many there were.
fn close_sessions(state: &AdminState, user: &str, why: &str) -> u32 {
    let sessions = state.services.hub.sessions(user);
    for s in &sessions {
        s.close(CloseReason::Revoked, why);
    }
    sessions.len() as u32
}

// ---------------------------------------------------------------- online

#[derive(Serialize, ToSchema)]
pub(crate) struct OnlineUser {
    user: String,
    /// The user's devices with a live session
    devices: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OnlineList {
    /// Users online now (all of them, not only this page)
    count: u64,
    users: Vec<OnlineUser>,
    /// The `after` of the next page; absent on the last page
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Users online now, with their devices (paged by user name).
#[utoipa::path(get, path = "/admin/v1/online", params(PageQuery),
    responses((status = 200, description = "online users", body = OnlineList), Errors))]
async fn online(
    State(state): State<AdminState>,
    Q(q): Q<PageQuery>,
) -> ApiResult<Json<OnlineList>> {
    let limit = page_limit(q.limit)?;
    let all = state.services.hub.online_users();
    let after = q.after.unwrap_or_default();
    let rest: Vec<&String> = all.iter().filter(|u| u.as_str() > after.as_str()).collect();
    let users: Vec<OnlineUser> = rest
        .iter()
        .take(limit)
        .map(|u| OnlineUser {
            devices: state.services.hub.online_devices(u),
            user: (*u).clone(),
        })
        .collect();
    let next = (rest.len() > limit)
        .then(|| users.last().map(|u| u.user.clone()))
        .flatten();
    Ok(Json(OnlineList {
        count: all.len() as u64,
        users,
        next,
    }))
}

// ---------------------------------------------------------------- users

#[derive(Serialize, ToSchema)]
pub(crate) struct UserSummary {
    user: String,
    /// Unix ms
    created_ms: u64,
    disabled: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserList {
    users: Vec<UserSummary>,
    /// The `after` of the next page; absent on the last page
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Users by name prefix, in name order (paged).
#[utoipa::path(get, path = "/admin/v1/users", params(PrefixQuery),
    responses((status = 200, description = "users", body = UserList), Errors))]
async fn list_users(
    State(state): State<AdminState>,
    Q(q): Q<PrefixQuery>,
) -> ApiResult<Json<UserList>> {
    let limit = page_limit(q.limit)?;
    let prefix = q.prefix.unwrap_or_default();
    let after = q.after.unwrap_or_default();
    let mut page = state
        .services
        .accounts
        .users_page(&prefix, &after, limit + 1)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let users: Vec<UserSummary> = page
        .into_iter()
        .map(|(user, r)| UserSummary {
            user,
            created_ms: r.created_ms,
            disabled: r.disabled,
        })
        .collect();
    let next = more.then(|| users.last().map(|u| u.user.clone())).flatten();
    Ok(Json(UserList { users, next }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    /// 1-32 of a-z 0-9 _ . - starting with a letter or digit
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")]
    user: String,
    /// 8-1024 bytes
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeviceInfo {
    device: String,
    /// Has a live session now
    online: bool,
    /// Unix ms of the last Login or Resume
    last_login_ms: u64,
    /// The device's acknowledged inbox position
    acked_inbox_seq: u64,
}

/// A user as an operator sees it (never any password data).
#[derive(Serialize, ToSchema)]
pub(crate) struct UserInfo {
    user: String,
    /// Unix ms
    created_ms: u64,
    disabled: bool,
    /// The user turned read receipts off
    receipts_off: bool,
    online: bool,
    devices: Vec<DeviceInfo>,
}

fn user_info(state: &AdminState, user: &str) -> ApiResult<UserInfo> {
    let rec = state.services.accounts.user_record(user)?;
    let online = state.services.hub.online_devices(user);
    let devices = state
        .services
        .accounts
        .user_devices(user)?
        .into_iter()
        .map(|(device, d)| DeviceInfo {
            online: online.contains(&device),
            device,
            last_login_ms: d.last_login_ms,
            acked_inbox_seq: d.acked_inbox_seq,
        })
        .collect();
    Ok(UserInfo {
        user: user.to_string(),
        created_ms: rec.created_ms,
        disabled: rec.disabled,
        receipts_off: rec.receipts_off,
        online: !online.is_empty(),
        devices,
    })
}

/// Creates a user (as Register does).
#[utoipa::path(post, path = "/admin/v1/users", request_body = NewUser,
    responses((status = 201, description = "created", body = UserInfo), Errors))]
async fn create_user(
    State(state): State<AdminState>,
    Body(b): Body<NewUser>,
) -> ApiResult<Response> {
    state
        .services
        .accounts
        .register(&b.user, &b.password)
        .await?;
    tracing::info!(user = %b.user, "admin: user created");
    Ok((StatusCode::CREATED, Json(user_info(&state, &b.user)?)).into_response())
}

/// A user: profile, devices, created, disabled.
#[utoipa::path(get, path = "/admin/v1/users/{user}",
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 200, description = "the user", body = UserInfo), Errors))]
async fn get_user(
    State(state): State<AdminState>,
    P(user): P<String>,
) -> ApiResult<Json<UserInfo>> {
    validate_user(&user)?;
    Ok(Json(user_info(&state, &user)?))
}

/// What a change to an account did.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountChange {
    user: String,
    disabled: bool,
    /// Live sessions closed by this change (they got Closing with reason REVOKED)
    sessions_closed: u32,
}

/// Disables the account: no Login, no Resume (every token is revoked), live sessions
/// closed at once.
#[utoipa::path(post, path = "/admin/v1/users/{user}/disable",
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 200, description = "disabled", body = AccountChange), Errors))]
async fn disable_user(
    State(state): State<AdminState>,
    P(user): P<String>,
) -> ApiResult<Json<AccountChange>> {
    validate_user(&user)?;
    state.services.accounts.set_disabled(&user, true).await?;
    let n = close_sessions(&state, &user, "account disabled by the operator");
    tracing::info!(%user, sessions_closed = n, "admin: user disabled");
    Ok(Json(AccountChange {
        user,
        disabled: true,
        sessions_closed: n,
    }))
}

/// Enables a disabled account (it logs in again; old tokens stay revoked).
#[utoipa::path(post, path = "/admin/v1/users/{user}/enable",
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 200, description = "enabled", body = AccountChange), Errors))]
async fn enable_user(
    State(state): State<AdminState>,
    P(user): P<String>,
) -> ApiResult<Json<AccountChange>> {
    validate_user(&user)?;
    state.services.accounts.set_disabled(&user, false).await?;
    tracing::info!(%user, "admin: user enabled");
    Ok(Json(AccountChange {
        user,
        disabled: false,
        sessions_closed: 0,
    }))
}

/// Revokes every token of every device of the user and closes their live sessions.
#[utoipa::path(post, path = "/admin/v1/users/{user}/revoke",
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 200, description = "revoked", body = AccountChange), Errors))]
async fn revoke_user(
    State(state): State<AdminState>,
    P(user): P<String>,
) -> ApiResult<Json<AccountChange>> {
    validate_user(&user)?;
    let disabled = state.services.accounts.user_record(&user)?.disabled;
    state.services.accounts.revoke(&user, None).await?;
    let n = close_sessions(&state, &user, "token revoked by the operator");
    tracing::info!(%user, sessions_closed = n, "admin: tokens revoked");
    Ok(Json(AccountChange {
        user,
        disabled,
        sessions_closed: n,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPassword {
    /// 8-1024 bytes
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// Sets a new password (tokens stay valid: revoke them too to sign the user out).
#[utoipa::path(post, path = "/admin/v1/users/{user}/password", request_body = NewPassword,
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 204, description = "set"), Errors))]
async fn set_password(
    State(state): State<AdminState>,
    P(user): P<String>,
    Body(b): Body<NewPassword>,
) -> ApiResult<StatusCode> {
    validate_user(&user)?;
    state
        .services
        .accounts
        .set_password(&user, &b.password)
        .await?;
    tracing::info!(%user, "admin: password set");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- unread

#[derive(Serialize, ToSchema)]
pub(crate) struct ConvUnread {
    conv: String,
    unread: u64,
    muted: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UnreadList {
    /// Unread messages over every conversation that is not muted (the "red dot")
    total: u64,
    /// Every conversation of the user, as the user's own list orders them
    conversations: Vec<ConvUnread>,
}

/// The user's unread counts, computed by the server from read positions.
#[utoipa::path(get, path = "/admin/v1/users/{user}/unread",
    params(("user" = String, Path, description = "user name", pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")),
    responses((status = 200, description = "unread counts", body = UnreadList), Errors))]
async fn unread(
    State(state): State<AdminState>,
    P(user): P<String>,
) -> ApiResult<Json<UnreadList>> {
    validate_user(&user)?;
    state.services.accounts.user_record(&user)?;
    let list = state.services.conversations.list(&user, 0, 0).await?;
    Ok(Json(UnreadList {
        total: list.total_unread,
        conversations: list
            .conversations
            .into_iter()
            .map(|c| ConvUnread {
                conv: c.conversation,
                unread: c.unread,
                muted: c.muted,
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------- history

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Entries before this seq (absent or 0: up to the newest)
    before: Option<u64>,
    /// Entries per page, 1-1000 (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One timeline entry.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminMessage {
    seq: u64,
    sender: String,
    sender_device: String,
    /// Unix ms
    server_time_ms: u64,
    /// message, system, edit or recall
    kind: String,
    /// Empty: text/plain; charset=utf-8
    content_type: String,
    /// The body, when it is text
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The body in base64, when it is not text
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    /// SYSTEM entries of groups: the event (CREATED, MEMBERS_ADDED, ...)
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    reply_to: u64,
    edited: bool,
    recalled: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct History {
    /// Oldest first
    messages: Vec<AdminMessage>,
    /// The `before` of the next (older) page; absent when this page reaches seq 1
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

fn admin_message(m: pb::Message) -> AdminMessage {
    let kind = MessageKind::try_from(m.kind).unwrap_or(MessageKind::Unspecified);
    let texty = m.content_type.is_empty() || m.content_type.starts_with("text/");
    let (text, body_base64) = match (texty, String::from_utf8(m.body.to_vec())) {
        (true, Ok(t)) => (Some(t), None),
        (_, Ok(t)) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(t)),
        ),
        (_, Err(e)) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        ),
    };
    AdminMessage {
        seq: m.seq,
        sender: m.sender,
        sender_device: m.sender_device,
        server_time_ms: m.server_time_ms,
        kind: match kind {
            MessageKind::Unspecified => "message",
            MessageKind::System => "system",
            MessageKind::Edit => "edit",
            MessageKind::Recall => "recall",
        }
        .to_string(),
        content_type: m.content_type,
        text,
        body_base64,
        event: m.event.map(|e| {
            pb::GroupEventKind::try_from(e.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_default()
        }),
        reply_to: m.reply_to,
        edited: m.edited,
        recalled: m.recalled,
    }
}

/// A conversation's history, newest page first (`before` pages back).
#[utoipa::path(get, path = "/admin/v1/conversations/{conv}/messages",
    params(("conv" = String, Path, description = "conversation id: d:<user>:<user> (names sorted) or g:<16 hex>", pattern = "^(d:[a-z0-9][a-z0-9_.-]{0,31}:[a-z0-9][a-z0-9_.-]{0,31}|g:[0-9a-f]{16})$"),
           HistoryQuery),
    responses((status = 200, description = "a page of history", body = History), Errors))]
async fn history(
    State(state): State<AdminState>,
    P(conv): P<String>,
    Q(q): Q<HistoryQuery>,
) -> ApiResult<Json<History>> {
    let limit = page_limit(q.limit)?;
    crate::conversations::id::parse_conversation(&conv)?;
    let messages = state
        .services
        .messages
        .history(&conv, q.before.unwrap_or(0), limit as u64)
        .await?;
    let next_before = messages.first().map(|m| m.seq).filter(|s| *s > 1);
    Ok(Json(History {
        messages: messages.into_iter().map(admin_message).collect(),
        next_before,
    }))
}

// ---------------------------------------------------------------- groups

#[derive(Serialize, ToSchema)]
pub(crate) struct GroupSummary {
    id: String,
    name: String,
    /// Unix ms
    created_ms: u64,
    /// A public channel
    channel: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GroupList {
    groups: Vec<GroupSummary>,
    /// The `after` of the next page; absent on the last page (a page may hold fewer
    /// than `limit` groups when a prefix filters them)
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Groups scanned per request at most while a prefix filters them out.
const MAX_GROUP_SCAN: usize = 10_000;

/// Every group (channels too) whose name starts with `prefix` (case-insensitive), in id
/// order (paged).
#[utoipa::path(get, path = "/admin/v1/groups", params(PrefixQuery),
    responses((status = 200, description = "groups", body = GroupList), Errors))]
async fn list_groups(
    State(state): State<AdminState>,
    Q(q): Q<PrefixQuery>,
) -> ApiResult<Json<GroupList>> {
    let limit = page_limit(q.limit)?;
    let prefix = q.prefix.unwrap_or_default().to_lowercase();
    let mut after = q.after.unwrap_or_default();
    let mut groups = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    'scan: loop {
        let page = state.services.groups.groups_page(&after, 256)?;
        if page.is_empty() {
            break;
        }
        for (id, rec) in page {
            scanned += 1;
            after = id.clone();
            if rec.name.to_lowercase().starts_with(&prefix) {
                if groups.len() == limit {
                    // One more exists: the page ends before it.
                    next = groups.last().map(|g: &GroupSummary| g.id.clone());
                    break 'scan;
                }
                groups.push(GroupSummary {
                    id,
                    name: rec.name,
                    created_ms: rec.created_ms,
                    channel: rec.channel,
                });
            }
            if scanned >= MAX_GROUP_SCAN {
                next = Some(after.clone());
                break 'scan;
            }
        }
    }
    Ok(Json(GroupList { groups, next }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MemberInfo {
    user: String,
    /// OWNER, ADMIN or MEMBER
    role: String,
    /// Unix ms
    joined_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GroupInfo {
    id: String,
    name: String,
    topic: String,
    /// Unix ms
    created_ms: u64,
    channel: bool,
    /// Only the owner and admins may send
    mute_all: bool,
    /// Read diffusion (no inbox copies): above the fan-out threshold
    read_diffusion: bool,
    /// Seq of the newest entry
    last_seq: u64,
    /// Dissolved: no members any more
    dissolved: bool,
    members: Vec<MemberInfo>,
}

/// A group: profile and members with their roles.
#[utoipa::path(get, path = "/admin/v1/groups/{gid}",
    params(("gid" = String, Path, description = "group id: g:<16 hex>", pattern = "^g:[0-9a-f]{16}$")),
    responses((status = 200, description = "the group", body = GroupInfo), Errors))]
async fn get_group(
    State(state): State<AdminState>,
    P(gid): P<String>,
) -> ApiResult<Json<GroupInfo>> {
    check_group_id(&gid)?;
    let view = state.services.groups.operator_view(&gid)?;
    let (rec, members, last_seq) = (view.record, view.members, view.last_seq);
    Ok(Json(GroupInfo {
        id: gid,
        name: rec.name,
        topic: rec.topic,
        created_ms: rec.created_ms,
        channel: rec.channel,
        mute_all: rec.mute_all,
        read_diffusion: rec.read_diffusion,
        last_seq,
        dissolved: members.is_empty(),
        members: members
            .into_iter()
            .map(|(user, m)| MemberInfo {
                user,
                role: pb::Role::try_from(m.role)
                    .map(|r| r.as_str_name().to_string())
                    .unwrap_or_default(),
                joined_ms: m.joined_ms,
            })
            .collect(),
    }))
}

fn check_group_id(gid: &str) -> ApiResult<()> {
    match crate::conversations::id::parse_conversation(gid)? {
        crate::conversations::id::ConvId::Group => Ok(()),
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "a group id is g:<16 hex>",
        )),
    }
}

/// Dissolves the group as its owner's DissolveGroup does (the event names the actor
/// "admin"): every member gets the DISSOLVED event, then nobody is a member.
#[utoipa::path(delete, path = "/admin/v1/groups/{gid}",
    params(("gid" = String, Path, description = "group id: g:<16 hex>", pattern = "^g:[0-9a-f]{16}$")),
    responses((status = 204, description = "dissolved"), Errors))]
async fn delete_group(State(state): State<AdminState>, P(gid): P<String>) -> ApiResult<StatusCode> {
    check_group_id(&gid)?;
    if state
        .services
        .groups
        .operator_view(&gid)?
        .members
        .is_empty()
    {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("group {gid} is dissolved"),
        ));
    }
    state
        .services
        .groups
        .dissolve_as_operator(&gid, OPERATOR)
        .await?;
    tracing::info!(group = %gid, "admin: group dissolved");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- notices

/// A SYSTEM notice: exactly one of `to_user`, `to_group`, `broadcast` (true).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notice {
    /// To one user (into the conversation between the user and `system`)
    #[serde(default)]
    to_user: Option<String>,
    /// To every member of a group (into the group's timeline)
    #[serde(default)]
    to_group: Option<String>,
    /// To every user (each into their conversation with `system`)
    #[serde(default)]
    broadcast: Option<bool>,
    /// The notice, UTF-8, not empty
    #[schema(min_length = 1)]
    text: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct NoticeSent {
    /// How many notices were stored (durable) and pushed to online devices
    sent: u64,
    /// The conversation of a notice to one user or group
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<String>,
}

/// Waits for appended notices to be durable.
async fn settle(pending: Vec<crate::messages::admin::PendingNotice>) -> ApiResult<Vec<String>> {
    let mut convs = Vec::with_capacity(pending.len());
    for rx in pending {
        let ack = rx
            .await
            .map_err(|_| Problem::from(crate::error::ServiceError::internal()))??;
        convs.push(ack.conversation);
    }
    Ok(convs)
}

/// Sends a SYSTEM notice to a user, a group, or everyone, durably like any message.
#[utoipa::path(post, path = "/admin/v1/messages", request_body = Notice,
    responses((status = 200, description = "stored and pushed", body = NoticeSent), Errors))]
async fn send_notice(
    State(state): State<AdminState>,
    Body(n): Body<Notice>,
) -> ApiResult<Json<NoticeSent>> {
    if n.text.trim().is_empty() {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "text is empty"));
    }
    let messages = &state.services.messages;
    let broadcast = n.broadcast.unwrap_or(false);
    match (n.to_user, n.to_group, broadcast) {
        (Some(user), None, false) => {
            let conv = settle(vec![messages.notice_to_user(&user, &n.text)?]).await?;
            tracing::info!(%user, "admin: notice to a user");
            Ok(Json(NoticeSent {
                sent: 1,
                conversation: conv.into_iter().next(),
            }))
        }
        (None, Some(group), false) => {
            check_group_id(&group)?;
            let conv = settle(vec![messages.notice_to_group(&group, &n.text)?]).await?;
            tracing::info!(%group, "admin: notice to a group");
            Ok(Json(NoticeSent {
                sent: 1,
                conversation: conv.into_iter().next(),
            }))
        }
        (None, None, true) => {
            // Page by page: each page's notices are appended, then awaited together
            // (one group commit makes many durable).
            let mut after = String::new();
            let mut sent = 0u64;
            loop {
                let page = state.services.accounts.users_page("", &after, 500)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = last.clone();
                let mut pending = Vec::with_capacity(page.len());
                for (user, _) in &page {
                    pending.push(messages.notice_to_user(user, &n.text)?);
                }
                sent += settle(pending).await?.len() as u64;
            }
            tracing::info!(sent, "admin: broadcast notice");
            Ok(Json(NoticeSent {
                sent,
                conversation: None,
            }))
        }
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "give exactly one of to_user, to_group and broadcast (true)",
        )),
    }
}

// ---------------------------------------------------------------- stats

#[derive(Serialize, ToSchema)]
pub(crate) struct Connections {
    quic: i64,
    tcp: i64,
    ws: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Stats {
    /// Open connections by transport
    connections: Connections,
    /// Users online now
    online_users: u64,
    /// Registered users
    users: u64,
    /// Groups (channels and dissolved ones included)
    groups: u64,
    /// Conversations (1:1 and groups)
    conversations: u64,
    /// Timeline entries stored (messages and events)
    messages: u64,
    /// Bytes of the store on disk
    store_bytes: u64,
    /// Seconds since the admin API started (with the server)
    uptime_secs: u64,
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Figures: connections by transport, users, groups, messages stored, store size, uptime.
#[utoipa::path(get, path = "/admin/v1/stats",
    responses((status = 200, description = "figures", body = Stats), Errors))]
async fn stats(State(state): State<AdminState>) -> ApiResult<Json<Stats>> {
    let open = |t: &str| {
        crate::metrics::get()
            .connections
            .get_or_create(&TransportLabel {
                transport: t.to_string(),
            })
            .get()
    };
    let services = state.services.clone();
    let dir = state.data_dir.join("store");
    // Scans: off the async threads.
    let (users, (conversations, groups, messages), store_bytes) =
        tokio::task::spawn_blocking(move || -> Result<_, Problem> {
            let mut users = 0u64;
            let mut after = String::new();
            loop {
                let page = services.accounts.users_page("", &after, 1000)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = last.clone();
                users += page.len() as u64;
            }
            Ok((users, services.messages.stored_counts()?, dir_bytes(&dir)))
        })
        .await
        .map_err(|_| Problem::from(crate::error::ServiceError::internal()))??;
    Ok(Json(Stats {
        connections: Connections {
            quic: open("quic"),
            tcp: open("tcp"),
            ws: open("ws"),
        },
        online_users: state.services.hub.online_users().len() as u64,
        users,
        groups,
        conversations,
        messages,
        store_bytes,
        uptime_secs: state.started.elapsed().as_secs(),
    }))
}
