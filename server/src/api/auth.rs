//! Register, Login, Resume (before login), Logout and Revoke (after), and what a
//! successful login does: the session cap, LoginOk, registering for pushes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{Body, PROTOCOL_VERSION};

use super::{Close, Reply};
use crate::accounts::Authed;
use crate::error::{ServiceError, ServiceResult};
use crate::services::Services;

/// The outcome of an auth request: the session closes, logs in, or stays as it was.
pub(crate) enum AuthOutcome {
    Close(CloseReason, String),
    LoggedIn(Authed),
    Unchanged,
}

fn check_version(reply: &Reply, v: u32) -> Option<AuthOutcome> {
    if v == PROTOCOL_VERSION {
        return None;
    }
    reply.err(ServiceError::new(
        ErrorCode::UnsupportedVersion,
        format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
    ));
    Some(AuthOutcome::Close(
        CloseReason::ProtocolError,
        "unsupported protocol version".into(),
    ))
}

/// Login throttling by user name and source address.
fn throttled(svc: &Services, reply: &Reply, user: &str, peer: Option<IpAddr>, what: &str) -> bool {
    match svc.limiter.login_allowed(user, peer, Instant::now()) {
        Ok(()) => false,
        Err(wait) => {
            reply.err(ServiceError::rate_limited(wait, what));
            true
        }
    }
}

pub(crate) async fn register(
    svc: &Arc<Services>,
    reply: Reply,
    r: pb::Register,
    peer: Option<IpAddr>,
) -> AuthOutcome {
    if let Some(c) = check_version(&reply, r.protocol_version) {
        return c;
    }
    if throttled(svc, &reply, &r.username, peer, "too many attempts") {
        return AuthOutcome::Unchanged;
    }
    match Box::pin(svc.accounts.register(&r.username, &r.password)).await {
        Ok(()) => reply.ok(),
        Err(e) => reply.err(e),
    }
    AuthOutcome::Unchanged
}

pub(crate) async fn login(
    svc: &Arc<Services>,
    reply: Reply,
    l: pb::Login,
    peer: Option<IpAddr>,
) -> AuthOutcome {
    if let Some(c) = check_version(&reply, l.protocol_version) {
        return c;
    }
    if throttled(svc, &reply, &l.username, peer, "too many login attempts") {
        return AuthOutcome::Unchanged;
    }
    let res = Box::pin(svc.accounts.login(&l.username, &l.password, &l.device)).await;
    match &res {
        Err(e) if e.code == ErrorCode::InvalidCredentials => {
            svc.limiter.login_failed(&l.username, Instant::now())
        }
        Ok(_) => svc.limiter.login_succeeded(&l.username),
        Err(_) => {}
    }
    crate::metrics::get().login("login", res.is_ok());
    let res = res.and_then(|a| session_cap(svc, &a.user, &a.device).map(|()| a));
    logged_in(svc, reply, res)
}

pub(crate) async fn resume(svc: &Arc<Services>, reply: Reply, r: pb::Resume) -> AuthOutcome {
    if let Some(c) = check_version(&reply, r.protocol_version) {
        return c;
    }
    // The session cap is checked before the token rotates: a refused device must be
    // able to come back later with the token it holds.
    let admit = |user: &str, device: &str| session_cap(svc, user, device);
    let res = match Box::pin(svc.accounts.resume(&r.token, admit)).await {
        Ok(a) => Ok(a),
        Err(refused) => {
            if let Some((user, device)) = &refused.reused {
                close_device(svc, user, Some(device), None);
            }
            Err(refused.error)
        }
    };
    crate::metrics::get().login("resume", res.is_ok());
    logged_in(svc, reply, res)
}

/// RESOURCE_EXHAUSTED when `user` has the most sessions allowed online on other devices.
fn session_cap(svc: &Services, user: &str, device: &str) -> ServiceResult<()> {
    let others = svc
        .hub
        .sessions(user)
        .iter()
        .filter(|s| s.device() != device)
        .count();
    let cap = svc.limiter.settings.max_sessions_per_user;
    if others >= cap {
        return Err(ServiceError::new(
            ErrorCode::ResourceExhausted,
            format!("{others} devices of this user are online; at most {cap} at once"),
        ));
    }
    Ok(())
}

/// Closes the live sessions of `user`'s `device` (every device when None) as revoked,
/// except session `except`; true when `except` was among them.
fn close_device(svc: &Services, user: &str, device: Option<&str>, except: Option<u64>) -> bool {
    let mut own = false;
    for s in svc.hub.sessions(user) {
        if device.is_none_or(|d| d == s.device()) {
            if Some(s.id) == except {
                own = true;
            } else {
                s.close(CloseReason::Revoked, "token revoked");
            }
        }
    }
    own
}

/// Completes a login or resume (the session cap already checked): answers LoginOk, then
/// registers the session for pushes.
fn logged_in(svc: &Arc<Services>, reply: Reply, res: ServiceResult<Authed>) -> AuthOutcome {
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            reply.err(e);
            return AuthOutcome::Unchanged;
        }
    };
    let head = match svc.messages.current_inbox_head(&a.user) {
        Ok(h) => h,
        Err(e) => {
            reply.err(e);
            return AuthOutcome::Unchanged;
        }
    };
    reply.handle.set_identity(&a.user, &a.device);
    // LoginOk first, then register for pushes: anything committed from here on is
    // pushed, and anything before it is found by the Sync the client sends next.
    reply.body(Body::LoginOk(pb::LoginOk {
        username: a.user.clone(),
        device: a.device.clone(),
        token: a.token.clone(),
        token_expires_ms: a.expires_ms,
        heartbeat_secs: svc.limits.heartbeat.as_secs() as u32,
        store_epoch: svc.store_epoch.clone(),
        inbox_head: head,
        acked_inbox_seq: a.acked_inbox_seq,
        max_frame_bytes: svc.limits.max_frame_bytes,
        server_time_ms: crate::clock::system_now_ms(),
        max_pending: svc.limits.max_pending,
    }));
    if let Some(old) = svc.hub.register(reply.handle.clone()) {
        old.close(
            CloseReason::Replaced,
            "this device logged in on another connection",
        );
    }
    tracing::debug!(user = %a.user, device = %a.device, "logged in");
    AuthOutcome::LoggedIn(a)
}

pub(crate) async fn logout(svc: &Arc<Services>, reply: Reply, a: &Authed) -> Close {
    // The push target goes first, made durable by the revoke's own wait. (A revoke from
    // elsewhere, e.g. the admin API, leaves it to the push worker, which drops targets
    // whose token epochs moved.)
    if let Err(e) = svc.push.forget(&a.user, Some(&a.device)) {
        reply.err(e);
        return None;
    }
    match Box::pin(svc.accounts.revoke(&a.user, Some(&a.device))).await {
        Ok(()) => {
            reply.ok();
            Some((CloseReason::LoggedOut, "logged out".into()))
        }
        Err(e) => {
            reply.err(e);
            None
        }
    }
}

/// Revokes a device's tokens (or all of the user's) and closes the sessions they
/// opened, this one last.
pub(crate) async fn revoke(svc: &Arc<Services>, reply: Reply, r: pb::Revoke, a: &Authed) -> Close {
    let device = (!r.device.is_empty()).then_some(r.device.as_str());
    if let Err(e) = svc.push.forget(&a.user, device) {
        reply.err(e);
        return None;
    }
    if let Err(e) = Box::pin(svc.accounts.revoke(&a.user, device)).await {
        reply.err(e);
        return None;
    }
    reply.ok();
    let own = close_device(svc, &a.user, device, Some(reply.handle.id));
    own.then(|| (CloseReason::Revoked, "token revoked".into()))
}

/// SetUserSettings -> UserSettings (the account's settings; an empty request reads them).
pub(crate) async fn user_settings(
    svc: &Arc<Services>,
    reply: Reply,
    s: pb::SetUserSettings,
    a: &Authed,
) {
    let r = Box::pin(svc.accounts.user_settings(&a.user, s.send_receipts)).await;
    reply.result(r.map(Body::UserSettings));
}
