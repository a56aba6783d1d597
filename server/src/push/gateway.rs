//! The push gateway protocol: Matrix's push gateway API (`POST /_matrix/push/v1/notify`),
//! JSON over HTTP/1 or HTTPS (hyper-util's client, rustls through hyper-rustls, TLS 1.3,
//! the system's trust roots plus `push_gateway_ca`). docs/PUSH.md shows the exact JSON.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::store::PushTargetRecord;

/// Largest gateway answer read.
const MAX_RESPONSE: usize = 64 << 10;
/// Characters of message text in a preview.
const PREVIEW_CHARS: usize = 200;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The client for `http://` and `https://` gateways. An `https` gateway's certificate
/// must chain to the system's roots or to a certificate in `extra_ca` (a PEM file).
pub(crate) fn client(extra_ca: Option<&Path>) -> anyhow::Result<HttpClient> {
    let tls = tls_config(extra_ca)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // https URLs reach the connector; hyper-rustls wraps them in TLS.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// TLS 1.3 (as everywhere in tern) with the system's roots plus `extra_ca`.
pub(crate) fn tls_config(extra_ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading push_gateway_ca {}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "push_gateway_ca {}: no certificate in it",
            path.display()
        );
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("push_gateway_ca {}", path.display()))?;
        }
    } else if added == 0 {
        tracing::warn!("no system trust roots found: an https push gateway needs push_gateway_ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One notification: the latest pending message of one device.
pub(crate) struct Notification<'a> {
    pub conversation: &'a str,
    pub seq: u64,
    pub sender: &'a str,
    pub high_priority: bool,
    pub unread: u64,
    /// How many messages this notification stands for (coalesced).
    pub messages: usize,
    pub app_id: &'a str,
    pub target: &'a PushTargetRecord,
    /// The message text, only for a target that asked for previews.
    pub preview: Option<String>,
}

/// The request body.
pub(crate) fn body(n: &Notification<'_>) -> Value {
    let mut notification = json!({
        "event_id": format!("{}/{}", n.conversation, n.seq),
        "room_id": n.conversation,
        "type": "m.room.message",
        "sender": n.sender,
        "prio": if n.high_priority { "high" } else { "low" },
        "counts": { "unread": n.unread },
        "devices": [{
            "app_id": format!("{}.{}", n.app_id, n.target.platform),
            "pushkey": n.target.token,
            "pushkey_ts": n.target.registered_ms / 1000,
            "data": { "platform": n.target.platform, "messages": n.messages },
        }],
    });
    if let Some(text) = &n.preview {
        notification["content"] = json!({ "msgtype": "m.text", "body": text });
    }
    json!({ "notification": notification })
}

/// The start of a text message, for a preview (None for anything that is not text).
pub(crate) fn preview_text(msg: &tern_proto::pb::Message, now_ms: u64) -> Option<String> {
    let gone = msg.recalled || (msg.expires_ms > 0 && msg.expires_ms <= now_ms);
    let texty = msg.content_type.is_empty() || msg.content_type.starts_with("text/");
    if gone || !texty || msg.event.is_some() {
        return None;
    }
    let text = std::str::from_utf8(&msg.body).ok()?;
    let full = match &msg.attachment {
        Some(a) => tern_proto::attachment_label(a, text),
        None => text.to_string(),
    };
    Some(full.chars().take(PREVIEW_CHARS).collect())
}

/// Why a request did not go through.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying: no connection, a timeout, 5xx, 429, an answer that is not JSON.
    Retry(String),
    /// The gateway refused the request itself (4xx): retrying would not help.
    Permanent(String),
}

/// Posts one notification; `Ok` carries the pushkeys the gateway rejected. Bounded by
/// `timeout` as a whole (connect, request, answer).
pub(crate) async fn send(
    client: &HttpClient,
    uri: &hyper::Uri,
    body: &Value,
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let req = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| Failure::Permanent(format!("request: {e}")))?;
    let started = Instant::now();
    let res = tokio::time::timeout(timeout, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| Failure::Retry(format!("gateway unreachable: {e}")))?;
        let status = resp.status();
        let bytes: Bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_RESPONSE)
            .await
            .map_err(|e| Failure::Retry(format!("reading the answer: {e}")))?;
        Ok::<_, Failure>((status, bytes))
    })
    .await;
    crate::metrics::get()
        .push_gateway_seconds
        .observe(started.elapsed().as_secs_f64());
    let (status, bytes) = match res {
        Err(_) => return Err(Failure::Retry(format!("no answer within {timeout:?}"))),
        Ok(r) => r?,
    };
    if status.is_server_error() || status == hyper::StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::Retry(format!("gateway answered {status}")));
    }
    if !status.is_success() {
        return Err(Failure::Permanent(format!("gateway answered {status}")));
    }
    rejected(&bytes).ok_or_else(|| {
        Failure::Retry("gateway answered with something that is not the expected JSON".into())
    })
}

/// The `rejected` pushkeys of a gateway answer; None if it is not a JSON object.
pub(crate) fn rejected(bytes: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object()?;
    Some(match obj.get("rejected") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(preview: bool) -> PushTargetRecord {
        PushTargetRecord {
            platform: "fcm".into(),
            token: "tok-1".into(),
            include_preview: preview,
            registered_ms: 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_body_has_the_matrix_shape_and_text_only_with_a_preview() {
        let t = target(false);
        let n = Notification {
            conversation: "d:a:b",
            seq: 7,
            sender: "a",
            high_priority: true,
            unread: 3,
            messages: 2,
            app_id: "tern",
            target: &t,
            preview: None,
        };
        let v = body(&n);
        let n0 = &v["notification"];
        assert_eq!(n0["event_id"], "d:a:b/7");
        assert_eq!(n0["room_id"], "d:a:b");
        assert_eq!(n0["sender"], "a");
        assert_eq!(n0["prio"], "high");
        assert_eq!(n0["counts"]["unread"], 3);
        assert_eq!(n0["devices"][0]["pushkey"], "tok-1");
        assert_eq!(n0["devices"][0]["app_id"], "tern.fcm");
        assert_eq!(n0["devices"][0]["pushkey_ts"], 5);
        assert!(n0.get("content").is_none());
        let n = Notification {
            preview: Some("hello".into()),
            ..n
        };
        assert_eq!(body(&n)["notification"]["content"]["body"], "hello");
    }

    #[test]
    fn answers_are_parsed_leniently_but_garbage_is_not_an_answer() {
        assert_eq!(
            rejected(br#"{"rejected":["k1",2,"k2"]}"#).unwrap(),
            ["k1", "k2"]
        );
        assert_eq!(rejected(b"{}").unwrap(), Vec::<String>::new());
        assert!(rejected(b"<html>").is_none());
        assert!(rejected(b"[1]").is_none());
        assert!(rejected(b"").is_none());
    }

    #[test]
    fn previews_are_text_only_and_never_of_recalled_or_expired_messages() {
        let mut m = tern_proto::pb::Message {
            body: "x".repeat(300).into_bytes().into(),
            ..Default::default()
        };
        assert_eq!(preview_text(&m, 0).unwrap().len(), PREVIEW_CHARS);
        m.expires_ms = 10;
        assert!(preview_text(&m, 10).is_none());
        m.expires_ms = 0;
        m.content_type = "image/png".into();
        assert!(preview_text(&m, 0).is_none());
        m.content_type = String::new();
        m.recalled = true;
        assert!(preview_text(&m, 0).is_none());
    }
}
