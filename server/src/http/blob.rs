//! `GET /blob/<id>?e=<expires_ms>&s=<signature>` on the web listener: a blob by a signed,
//! short-lived URL (from `GetBlobUrl`), so a browser can put it in `<img src>` or follow a
//! download link. No session and no cookie: the URL is the permission.
//!
//! Served with the blob's type, `Accept-Ranges` and single `Range` requests (206, 416),
//! by tower-http's file service. What the browser may do with the bytes is held down: the
//! four image types the server decoded are shown inline; everything else is a download
//! (`Content-Disposition: attachment`), and every answer carries `nosniff` and a sandbox
//! policy, so an uploaded HTML or SVG file never runs on the page's origin.

use std::sync::Arc;

use axum::extract::{Path, Query, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::services::Services;

#[derive(serde::Deserialize)]
pub(crate) struct Signed {
    e: u64,
    s: String,
}

pub(crate) async fn get_blob(
    services: Arc<Services>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
    req: Request,
) -> Response {
    let Some(blob) = services.blobs.open_signed(&id, q.e, &q.s) else {
        // Wrong, expired, or for a blob that is gone: one answer for all.
        return (StatusCode::FORBIDDEN, "invalid or expired blob URL\n").into_response();
    };
    let inline = matches!(
        blob.mime.as_str(),
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    );
    let mime = HeaderValue::from_str(&blob.mime)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let served = tower_http::services::ServeFile::new(&blob.path)
        .oneshot(req)
        .await;
    let mut r = match served {
        Ok(r) => r.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serving a blob failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let ok = r.status().is_success();
    let h = r.headers_mut();
    if ok {
        // The file has no extension to guess from: its type is the blob's.
        h.insert(header::CONTENT_TYPE, mime);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if !inline {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    r
}
