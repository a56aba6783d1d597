//! The one place where failures become wire error codes.

use std::time::Duration;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

use crate::store::StoreError;

/// An error a request is answered with: a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// When the client may retry, in ms (0: no hint).
    pub retry_after_ms: u64,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// RATE_LIMITED, with how long to wait (in the text and machine-readable).
    pub fn rate_limited(wait: Duration, what: &str) -> Self {
        let ms = wait.as_millis().max(1) as u64;
        let mut e = Self::new(
            ErrorCode::RateLimited,
            format!("{what}; retry after {ms} ms"),
        );
        e.retry_after_ms = ms;
        e
    }
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal server error; the request may be retried",
        )
    }
}

impl ServiceError {
    /// The Error frame answering request `req_id`.
    pub fn to_frame(&self, req_id: u64) -> Frame {
        Frame {
            req_id,
            body: Some(Body::Error(pb::Error {
                code: self.code as i32,
                message: self.message.clone(),
                retry_after_ms: self.retry_after_ms,
            })),
        }
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

impl std::error::Error for ServiceError {}

/// The retry hint while the store refuses writes (an operator has to act: not soon).
const STORE_FAILED_RETRY_MS: u64 = 5_000;

/// Storage details are logged, never sent: the client learns only that it may retry.
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Failed = e {
            // Logged once, where the flush failed; every later write lands here.
            let mut err = Self::new(
                ErrorCode::Internal,
                "storage failed: the server accepts no writes until it is restarted; retry later",
            );
            err.retry_after_ms = STORE_FAILED_RETRY_MS;
            return err;
        }
        tracing::error!(error = %e, "store error");
        Self::internal()
    }
}

pub(crate) type ServiceResult<T> = Result<T, ServiceError>;
