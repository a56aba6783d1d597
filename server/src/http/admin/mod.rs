//! The admin HTTP API (`--admin-listen`, docs/ADMIN_API.md): operators see and manage the
//! server without a client. JSON under `/admin/v1/`, errors as RFC 9457 problem details,
//! a bearer token on every request (except the OpenAPI document, which holds no data).
//!
//! - this file: the listener, the token (made on first start into `<data-dir>/admin.token`,
//!   mode 0600, unless the config names a file), the auth check (constant time), the
//!   problem type and the extractors that turn every bad input into one.
//! - [`handlers`]: the endpoints, calling the same domains as the sessions do, and the
//!   OpenAPI document generated from them (utoipa).

mod handlers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tern_proto::pb::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::services::Services;

/// Largest request body, in bytes (a notice's text is the largest thing sent).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The file name of the generated token, in the data dir.
pub(crate) const TOKEN_FILE: &str = "admin.token";

/// Where the token comes from: the named file, or `<data_dir>/admin.token` (made with a
/// new random token when absent). Returns (token, file).
pub(crate) fn load_or_create_token(
    named: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<(String, PathBuf)> {
    let read = |path: &Path| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the admin token file {}", path.display()))?;
        let token = text.trim().to_string();
        anyhow::ensure!(
            token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token in {} must be at least 16 printable characters, without spaces",
            path.display()
        );
        Ok(token)
    };
    if let Some(path) = named {
        return Ok((read(path)?, path.to_path_buf()));
    }
    let path = data_dir.join(TOKEN_FILE);
    if path.exists() {
        return Ok((read(&path)?, path));
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    crate::store::durable_file::write_durably(&path, format!("{token}\n").as_bytes(), true)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    Ok((token, path))
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AdminState {
    services: Arc<Services>,
    /// sha256 of the token: compared in constant time, the token itself is not kept.
    token_digest: [u8; 32],
    started: Instant,
    data_dir: Arc<PathBuf>,
}

/// A bound admin listener, ready to [`serve`].
pub(crate) struct AdminListener {
    pub(crate) listener: TcpListener,
    pub(crate) token: String,
    pub(crate) token_file: PathBuf,
}

/// Serves the admin API on `l` until `stop`.
pub(crate) async fn serve(
    l: AdminListener,
    services: Arc<Services>,
    data_dir: PathBuf,
    stop: CancellationToken,
) {
    let state = AdminState {
        services,
        token_digest: Sha256::digest(l.token.as_bytes()).into(),
        started: Instant::now(),
        data_dir: Arc::new(data_dir),
    };
    let app = handlers::router(state);
    let addr: Option<SocketAddr> = l.listener.local_addr().ok();
    tracing::debug!(?addr, "admin API");
    let _ = axum::serve(l.listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}

/// An RFC 9457 problem: every error of the admin API, as `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// A URI naming the kind of problem; `about:blank` (the title is the HTTP status
    /// phrase) for all of them here.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub(crate) kind: String,
    pub(crate) title: String,
    pub(crate) status: u16,
    /// What went wrong, for a human.
    pub(crate) detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tern-admin\""),
            );
        }
        r
    }
}

/// The one place a domain error becomes an HTTP status.
impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let status = match e.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::UserExists => StatusCode::CONFLICT,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The domain logged the cause; the client learns no internals.
            return Problem::new(status, "internal error; see the server log");
        }
        Problem::new(status, e.message)
    }
}

/// Requests need `Authorization: Bearer <token>`: none gets 401, any other 403.
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer <token> header is required (the token is in the server's admin.token file)",
        )
        .into_response();
    };
    let given = value.as_bytes();
    let token = given
        .strip_prefix(b"Bearer ")
        .or_else(|| given.strip_prefix(b"bearer "))
        .unwrap_or(b"");
    let digest: [u8; 32] = Sha256::digest(token).into();
    if !bool::from(digest.ct_eq(&state.token_digest)) {
        return Problem::new(StatusCode::FORBIDDEN, "wrong admin token").into_response();
    }
    next.run(req).await
}

/// JSON body: malformed, unknown fields, wrong type, too large, not JSON: a problem.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.starts_with("application/problem+json")
            });
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("the body is over the limit of {MAX_BODY_BYTES} bytes")
                } else {
                    "could not read the body".to_string()
                };
                Problem::new(status, detail)
            })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
    }
}

/// Query parameters; a bad one is a problem.
pub(crate) struct Q<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Path parameters; a bad one (not UTF-8 after decoding) is a problem.
pub(crate) struct P<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| P(p.0))
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, p1) = load_or_create_token(None, dir.path()).unwrap();
        assert_eq!(p1, dir.path().join(TOKEN_FILE));
        assert!(t1.len() >= 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p1).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, _) = load_or_create_token(None, dir.path()).unwrap();
        assert_eq!(t1, t2, "the second start reads the same token");

        let named = dir.path().join("mine");
        std::fs::write(&named, "short\n").unwrap();
        assert!(load_or_create_token(Some(&named), dir.path()).is_err());
        std::fs::write(&named, "0123456789abcdef-operator\n").unwrap();
        let (t3, p3) = load_or_create_token(Some(&named), dir.path()).unwrap();
        assert_eq!((t3.as_str(), p3), ("0123456789abcdef-operator", named));
    }

    #[test]
    fn domain_errors_map_to_statuses_without_internals() {
        let p = Problem::from(ServiceError::not_found("no user x"));
        assert_eq!((p.status, p.detail.as_str()), (404, "no user x"));
        let p = Problem::from(ServiceError::new(ErrorCode::UserExists, "taken"));
        assert_eq!(p.status, 409);
        let p = Problem::from(ServiceError::new(ErrorCode::Internal, "disk on fire"));
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("disk"));
        assert_eq!(Problem::from(ServiceError::invalid("x")).status, 400);
    }
}
