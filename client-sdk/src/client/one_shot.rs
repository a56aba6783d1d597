//! One-off calls on a connection of their own ([`RawConnection`]), outside any
//! [`Client`](super::Client): create an account, or log in once to get a token.

use std::net::SocketAddr;
use std::time::Duration;

use tern_proto::pb;
use tern_proto::{Body, PROTOCOL_VERSION};

use super::{body_result, connect_mode, unexpected, ClientError, Credentials, TransportMode};
use crate::connect::ConnectOptions;
use crate::raw::{RawConnection, RawError};

/// Registers an account (a one-off connection).
pub async fn register(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    username: &str,
    password: &str,
) -> Result<(), ClientError> {
    let body = Body::Register(pb::Register {
        protocol_version: PROTOCOL_VERSION,
        username: username.into(),
        password: password.into(),
    });
    match one_shot(server, opts, mode, body).await? {
        Body::Ok(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Logs in once and returns the LoginOk (its token can seed a
/// [`StateStore`](crate::StateStore)).
pub async fn login(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    creds: &Credentials,
) -> Result<pb::LoginOk, ClientError> {
    let body = Body::Login(pb::Login {
        protocol_version: PROTOCOL_VERSION,
        username: creds.username.clone(),
        password: creds.password.clone().unwrap_or_default(),
        device: creds.device.clone(),
    });
    match one_shot(server, opts, mode, body).await? {
        Body::LoginOk(ok) => Ok(ok),
        other => Err(unexpected(&other)),
    }
}

/// Connects, sends one request, waits (up to 30 s) for its answer, closes.
async fn one_shot(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    body: Body,
) -> Result<Body, ClientError> {
    let conn = connect_mode(server, None, opts, mode, Duration::from_millis(1500))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let mut conn = RawConnection::from(conn);
    let res = match conn.request(body).await {
        Ok(f) => body_result(f),
        Err(RawError::Io(e)) => Err(ClientError::Connect(e.to_string())),
        Err(_) => Err(ClientError::ConnectionLost),
    };
    conn.close().await;
    res
}
