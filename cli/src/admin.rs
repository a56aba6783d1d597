//! `tern admin`: the operator's commands over the server's admin HTTP API
//! (docs/ADMIN_API.md): who is online, disable/enable/revoke a user, broadcast a notice,
//! the server's figures. One HTTP/1.1 request per command (hyper), the bearer token read
//! from a file (the server's `admin.token`), never printed.
//!
//! Output: the API's JSON answer as one line with `--json`, a short human form otherwise.
//! Errors (RFC 9457 problems) exit like the chat commands: 2 bad input, 3 no or wrong
//! token, 4 unreachable, 5 not found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::body::Body as _;
use serde_json::Value;

use crate::error::{Failure, Kind};
use crate::output;

/// One admin call: where, with which token.
pub struct Admin {
    /// host:port
    authority: String,
    /// The URL's path before `/admin/v1` (usually empty).
    base: String,
    token: String,
    json: bool,
}

/// What the operator asks for.
pub enum AdminOp {
    Online,
    Disable(String),
    Enable(String),
    Revoke(String),
    Show(String),
    Broadcast(String),
    Stats,
}

/// `http://host:port[/base]` -> (host:port, base).
fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Failure::usage(format!(
            "--url {url:?}: the admin API speaks plain http://HOST:PORT (put it behind a \
             TLS proxy to reach it from elsewhere)"
        ))
    })?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(Failure::usage(format!("--url {url:?} names no host")));
    }
    // A URL copied from the server's startup line ends in /admin/v1/.
    let base = base.strip_suffix("/admin/v1").unwrap_or(base);
    Ok((authority.to_string(), base.to_string()))
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::error(
            Kind::Auth,
            "NO_TOKEN",
            format!("cannot read the admin token file {}: {e}", path.display()),
        )
    })?;
    Ok(text.trim().to_string())
}

impl Admin {
    pub fn new(url: &str, token_file: &Path, json: bool) -> Result<Self> {
        let (authority, base) = parse_url(url)?;
        Ok(Self {
            authority,
            base,
            token: read_token(token_file)?,
            json,
        })
    }

    /// Sends one request; the JSON answer, or the problem as a failure.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let fut = self.call_inner(method, path, body);
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .map_err(|_| {
                Failure::unreachable(format!("{} did not answer in 60 s", self.authority))
            })?
    }

    async fn call_inner(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Failure::unreachable(format!("cannot reach {}: {e}", self.authority)))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Failure::unreachable(format!("{}: {e}", self.authority)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}/admin/v1{path}", self.base))
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if method == "POST" {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(text).context("building the request")?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::unreachable(format!("{}: {e}", self.authority)))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame =
                frame.map_err(|e| Failure::unreachable(format!("reading the answer: {e}")))?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                Failure::generic(
                    "BAD_ANSWER",
                    format!("the answer is not JSON ({status}): {e}"),
                )
            })?
        };
        if status.is_success() {
            return Ok(value);
        }
        let detail = value["detail"].as_str().unwrap_or("").to_string();
        let (kind, code) = match status.as_u16() {
            401 => (Kind::Auth, "UNAUTHENTICATED"),
            403 => (Kind::Auth, "FORBIDDEN"),
            404 => (Kind::Forbidden, "NOT_FOUND"),
            400 | 409 | 413 | 415 => (Kind::Usage, "INVALID_ARGUMENT"),
            _ => (Kind::Generic, "ERROR"),
        };
        Err(Failure::error(kind, code, format!("{status}: {detail}")))
    }

    pub async fn run(&self, op: AdminOp) -> Result<()> {
        let user_path = |u: &str, what: &str| -> Result<String> {
            tern_proto::names::username(u).map_err(|e| Failure::usage(e.message()))?;
            Ok(format!("/users/{u}{what}"))
        };
        let (value, human) = match op {
            AdminOp::Online => {
                // Every page.
                let mut users = Vec::new();
                let mut after = String::new();
                let mut count;
                loop {
                    let mut path = "/online?limit=1000".to_string();
                    if !after.is_empty() {
                        path.push_str(&format!("&after={after}"));
                    }
                    let page = self.call("GET", &path, None).await?;
                    count = page["count"].as_u64().unwrap_or(0);
                    users.extend(page["users"].as_array().cloned().unwrap_or_default());
                    match page["next"].as_str() {
                        Some(n) => after = n.to_string(),
                        None => break,
                    }
                }
                let mut human = format!("{count} online");
                for u in &users {
                    let devices: Vec<&str> = u["devices"]
                        .as_array()
                        .map(|d| d.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    human.push_str(&format!(
                        "\n{}: {}",
                        u["user"].as_str().unwrap_or(""),
                        devices.join(", ")
                    ));
                }
                (serde_json::json!({"count": count, "users": users}), human)
            }
            AdminOp::Disable(u) => {
                let v = self.call("POST", &user_path(&u, "/disable")?, None).await?;
                let h = format!(
                    "{u}: disabled ({} live session(s) closed)",
                    v["sessions_closed"]
                );
                (v, h)
            }
            AdminOp::Enable(u) => {
                let v = self.call("POST", &user_path(&u, "/enable")?, None).await?;
                (v, format!("{u}: enabled"))
            }
            AdminOp::Revoke(u) => {
                let v = self.call("POST", &user_path(&u, "/revoke")?, None).await?;
                let h = format!(
                    "{u}: every token revoked ({} live session(s) closed)",
                    v["sessions_closed"]
                );
                (v, h)
            }
            AdminOp::Show(u) => {
                let v = self.call("GET", &user_path(&u, "")?, None).await?;
                let h = serde_json::to_string_pretty(&v).unwrap_or_default();
                (v, h)
            }
            AdminOp::Broadcast(text) => {
                let body = serde_json::json!({"broadcast": true, "text": text});
                let v = self.call("POST", "/messages", Some(body)).await?;
                let h = format!("notice sent to {} user(s)", v["sent"]);
                (v, h)
            }
            AdminOp::Stats => {
                let v = self.call("GET", "/stats", None).await?;
                let h = serde_json::to_string_pretty(&v).unwrap_or_default();
                (v, h)
            }
        };
        if self.json {
            output::json_line(&value)
        } else {
            output::line(&human)
        }
    }
}

/// The token file when none is given: the server's default place.
pub fn default_token_file() -> PathBuf {
    PathBuf::from("tern-data/admin.token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:7490").unwrap(),
            ("127.0.0.1:7490".to_string(), String::new())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:7490/admin/v1/").unwrap(),
            ("127.0.0.1:7490".to_string(), String::new())
        );
        assert_eq!(
            parse_url("http://h:1/ops/").unwrap(),
            ("h:1".to_string(), "/ops".to_string())
        );
        assert!(parse_url("https://h:1").is_err());
        assert!(parse_url("http:///x").is_err());
    }
}
