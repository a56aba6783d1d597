//! Failures and exit codes: the one place where an error becomes an exit status, a
//! one-line message on stderr and, with `--json`, an `{"error","code"}` object on stdout.
//!
//! Commands return `anyhow::Error`s. The first [`Failure`] or [`ClientError`] found in the
//! error's chain decides the exit code; the whole chain makes the message.

use std::fmt;
use std::io::Write;

use tern_sdk::proto::pb::ErrorCode;
use tern_sdk::ClientError;

/// What kind of failure, which fixes the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: anything else.
    Generic,
    /// 2: bad usage or invalid input (clap's own errors exit 2 as well).
    Usage,
    /// 3: bad credentials, not logged in, authentication lost.
    Auth,
    /// 4: the server cannot be reached.
    Unreachable,
    /// 5: forbidden or not found.
    Forbidden,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Generic => 1,
            Kind::Usage => 2,
            Kind::Auth => 3,
            Kind::Unreachable => 4,
            Kind::Forbidden => 5,
        }
    }
}

/// A failure the CLI itself detects (as opposed to one the server reports).
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    /// Stable machine code for `--json` (`"NOT_LOGGED_IN"`, `"UNREACHABLE"`, …).
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn error(kind: Kind, code: &str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure {
            kind,
            code: code.to_string(),
            message: message.into(),
        })
    }

    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Self::error(Kind::Usage, "INVALID_ARGUMENT", message)
    }

    pub fn not_logged_in() -> anyhow::Error {
        Self::error(Kind::Auth, "NOT_LOGGED_IN", "not logged in: run tern login")
    }

    pub fn unreachable(message: impl Into<String>) -> anyhow::Error {
        Self::error(Kind::Unreachable, "UNREACHABLE", message)
    }

    pub fn generic(code: &str, message: impl Into<String>) -> anyhow::Error {
        Self::error(Kind::Generic, code, message)
    }

    /// The SDK stopped because its credentials no longer work.
    pub fn auth_lost(code: ErrorCode, message: &str) -> anyhow::Error {
        Self::error(
            Kind::Auth,
            code.as_str_name(),
            format!("authentication lost: {message}: run tern login (or set TERN_PASSWORD)"),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit kind of a server error code.
pub fn kind_of_code(code: ErrorCode) -> Kind {
    match code {
        ErrorCode::InvalidCredentials
        | ErrorCode::InvalidToken
        | ErrorCode::TokenExpired
        | ErrorCode::TokenRevoked
        | ErrorCode::Unauthenticated => Kind::Auth,
        ErrorCode::InvalidArgument | ErrorCode::UserExists => Kind::Usage,
        // Editing or recalling too late is refused like editing someone else's message.
        ErrorCode::Forbidden
        | ErrorCode::NotFound
        | ErrorCode::WindowExpired
        | ErrorCode::Blocked => Kind::Forbidden,
        ErrorCode::Unavailable => Kind::Unreachable,
        _ => Kind::Generic,
    }
}

/// Exit kind and machine code of an error.
pub fn classify(err: &anyhow::Error) -> (Kind, String) {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.kind, f.code.clone());
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Server { code, .. } => {
                    (kind_of_code(*code), code.as_str_name().to_string())
                }
                ClientError::Connect(_) | ClientError::ConnectionLost => {
                    (Kind::Unreachable, "UNREACHABLE".into())
                }
                ClientError::Stopped(_) => (Kind::Generic, "STOPPED".into()),
                ClientError::Protocol(_) => (Kind::Generic, "PROTOCOL".into()),
                ClientError::Expired { .. } => (Kind::Generic, "EXPIRED".into()),
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return (Kind::Generic, "BROKEN_PIPE".into());
            }
        }
    }
    (Kind::Generic, "ERROR".into())
}

/// The message of an error on one line: the context chain joined with ": ".
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reports an error (stderr, and stdout as JSON with `--json`); returns the exit code.
pub fn report(err: &anyhow::Error, json: bool) -> i32 {
    let (kind, code) = classify(err);
    report_parts(kind, &code, &one_line(err), json)
}

/// Reports a failure given as parts (used for clap's usage errors too).
pub fn report_parts(kind: Kind, code: &str, message: &str, json: bool) -> i32 {
    let _ = writeln!(std::io::stderr(), "tern: {message}");
    if json {
        #[derive(serde::Serialize)]
        struct ErrorLine<'a> {
            error: &'a str,
            code: &'a str,
        }
        let obj = serde_json::to_string(&ErrorLine {
            error: message,
            code,
        })
        .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{obj}");
        let _ = out.flush();
    }
    kind.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn server_codes_map_to_exit_codes() {
        let e: anyhow::Result<()> = Err(ClientError::Server {
            code: ErrorCode::Forbidden,
            message: "not a member".into(),
        })
        .context("sending line 1");
        let e = e.unwrap_err();
        assert_eq!(classify(&e), (Kind::Forbidden, "FORBIDDEN".into()));
        assert_eq!(classify(&e).0.exit_code(), 5);
        assert_eq!(one_line(&e), "sending line 1: not a member (FORBIDDEN)");
        assert_eq!(kind_of_code(ErrorCode::InvalidCredentials).exit_code(), 3);
        assert_eq!(kind_of_code(ErrorCode::InvalidArgument).exit_code(), 2);
        assert_eq!(kind_of_code(ErrorCode::Internal).exit_code(), 1);
    }

    #[test]
    fn failures_keep_their_kind_under_context() {
        let e = Failure::not_logged_in().context("history");
        assert_eq!(classify(&e), (Kind::Auth, "NOT_LOGGED_IN".into()));
        let e = Failure::unreachable("cannot reach server at x:1: refused\nreally");
        assert_eq!(classify(&e).0.exit_code(), 4);
        assert!(!one_line(&e).contains('\n'));
        assert_eq!(classify(&anyhow::anyhow!("other")).0.exit_code(), 1);
    }
}
