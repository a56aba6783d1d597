//! A raw-frame client over real QUIC or TLS-TCP (the SDK's connection, none of its
//! engine): it sends requests as the test writes them, matches responses by req_id and
//! keeps pushes in arrival order, so a test sees exactly what the server sent.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern_proto::pb;
use tern_proto::{Body, Frame, PROTOCOL_VERSION};
use tern_sdk::{connect, ConnectOptions, Connection, Transport, Trust};

use crate::PASSWORD;

/// How long [`Client::response`] waits for an answer.
const WAIT: Duration = Duration::from_secs(10);

/// A raw-frame client: sends requests, matches responses by req_id, and keeps pushes
/// (and any other req_id-0 frames) in arrival order.
pub struct Client {
    pub conn: Connection,
    next_req: u64,
    pub pushes: VecDeque<Frame>,
    responses: HashMap<u64, Frame>,
    pub closing: Option<pb::Closing>,
    pub eof: bool,
    pub login: Option<pb::LoginOk>,
}

impl Client {
    pub async fn connect(t: Transport, addr: SocketAddr, ca: &Path) -> Client {
        let opts = ConnectOptions::new(Trust::from_pem_file(ca).unwrap());
        let conn = connect(t, addr, &opts).await.expect("connects");
        Client {
            conn,
            next_req: 1,
            pushes: VecDeque::new(),
            responses: HashMap::new(),
            closing: None,
            eof: false,
            login: None,
        }
    }

    pub fn transport(&self) -> Transport {
        self.conn.transport
    }

    /// Reads one frame into the right place; false on EOF or timeout.
    async fn pump(&mut self, timeout: Duration) -> bool {
        if self.eof {
            return false;
        }
        match tokio::time::timeout(timeout, self.conn.recv()).await {
            Err(_) => false,
            Ok(None) | Ok(Some(Err(_))) => {
                self.eof = true;
                false
            }
            Ok(Some(Ok(Err(e)))) => panic!("server sent an undecodable frame: {e}"),
            Ok(Some(Ok(Ok(f)))) => {
                if let Some(Body::Closing(c)) = &f.body {
                    self.closing = Some(c.clone());
                }
                if f.req_id != 0 {
                    self.responses.insert(f.req_id, f);
                } else {
                    self.pushes.push_back(f);
                }
                true
            }
        }
    }

    /// Sends a request without waiting; returns its req_id.
    pub async fn send_req(&mut self, body: Body) -> u64 {
        let req_id = self.next_req;
        self.next_req += 1;
        self.conn
            .send(&Frame {
                req_id,
                body: Some(body),
            })
            .await
            .expect("write");
        req_id
    }

    /// Waits for the response to `req_id`.
    pub async fn response(&mut self, req_id: u64) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(f) = self.responses.remove(&req_id) {
                return f;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || (!self.pump(left).await && self.eof) {
                panic!(
                    "no response to req {req_id} (eof={}, closing={:?})",
                    self.eof, self.closing
                );
            }
        }
    }

    /// A response that has already arrived, if any.
    pub fn try_response(&mut self, req_id: u64) -> Option<Frame> {
        self.responses.remove(&req_id)
    }

    pub async fn request(&mut self, body: Body) -> Frame {
        let id = self.send_req(body).await;
        self.response(id).await
    }

    /// The next req_id-0 frame, if one comes within `timeout`.
    pub async fn next_unsolicited(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.pushes.pop_front() {
                return Some(f);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.pump(left).await {
                return None;
            }
        }
    }

    /// The next MessagePush (other unsolicited frames are skipped).
    pub async fn next_push(&mut self, timeout: Duration) -> Option<pb::MessagePush> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_unsolicited(left).await? {
                Frame {
                    body: Some(Body::Push(p)),
                    ..
                } => return Some(p),
                _ => continue,
            }
        }
    }

    /// Reads until the server closes the connection; returns its Closing frame.
    pub async fn until_closed(&mut self, timeout: Duration) -> Option<pb::Closing> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.eof {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("server did not close the connection in {timeout:?}");
            }
            self.pump(left).await;
        }
        self.closing.clone()
    }

    pub async fn register(&mut self, user: &str) {
        let f = self
            .request(Body::Register(pb::Register {
                protocol_version: PROTOCOL_VERSION,
                username: user.into(),
                password: PASSWORD.into(),
            }))
            .await;
        assert!(
            matches!(f.body, Some(Body::Ok(_))),
            "register {user}: {f:?}"
        );
    }

    pub async fn login(&mut self, user: &str, device: &str) -> pb::LoginOk {
        let f = self
            .request(Body::Login(pb::Login {
                protocol_version: PROTOCOL_VERSION,
                username: user.into(),
                password: PASSWORD.into(),
                device: device.into(),
            }))
            .await;
        match f.body {
            Some(Body::LoginOk(ok)) => {
                self.login = Some(ok.clone());
                ok
            }
            other => panic!("login {user}/{device}: {other:?}"),
        }
    }

    pub async fn resume(&mut self, token: &str) -> Frame {
        self.request(Body::Resume(pb::Resume {
            protocol_version: PROTOCOL_VERSION,
            token: token.into(),
        }))
        .await
    }

    /// Sends a text message (to a peer when `to` has no ':', else to a conversation id).
    pub async fn send_text(&mut self, to: &str, cmid: &str, text: &str) -> Frame {
        let id = self.send_text_nowait(to, cmid, text).await;
        self.response(id).await
    }

    pub async fn send_text_nowait(&mut self, to: &str, cmid: &str, text: &str) -> u64 {
        self.send_req(Body::Send(send_body(to, cmid, text))).await
    }

    pub async fn ack(&mut self, inbox_seq: u64) -> Frame {
        self.request(Body::Ack(pb::Ack { inbox_seq })).await
    }

    pub async fn sync_page(&mut self, after: Option<u64>, limit: u32) -> pb::SyncResult {
        let f = self
            .request(Body::Sync(pb::Sync {
                after_inbox_seq: after,
                limit,
            }))
            .await;
        match f.body {
            Some(Body::SyncResult(r)) => r,
            other => panic!("sync: {other:?}"),
        }
    }

    /// Pages through the whole inbox after `after`; checks pages are contiguous.
    pub async fn sync_all(&mut self, after: u64, limit: u32) -> Vec<pb::InboxItem> {
        let mut items = Vec::new();
        let mut cursor = after;
        loop {
            let page = self.sync_page(Some(cursor), limit).await;
            assert_eq!(page.from_inbox_seq, cursor);
            for it in &page.items {
                cursor += 1;
                assert_eq!(it.inbox_seq, cursor, "sync pages must be contiguous");
            }
            assert_eq!(page.to_inbox_seq, cursor);
            items.extend(page.items);
            if page.complete {
                return items;
            }
        }
    }

    pub async fn pull(&mut self, conv: &str, after: u64, limit: u32) -> Frame {
        self.request(Body::Pull(pb::Pull {
            conversation: conv.into(),
            after_seq: after,
            limit,
            ..Default::default()
        }))
        .await
    }

    pub async fn create_group(&mut self, name: &str, members: &[&str]) -> pb::GroupCreated {
        let f = self
            .request(Body::CreateGroup(pb::CreateGroup {
                name: name.into(),
                members: members.iter().map(|s| s.to_string()).collect(),
            }))
            .await;
        match f.body {
            Some(Body::GroupCreated(g)) => g,
            other => panic!("create group: {other:?}"),
        }
    }

    pub async fn close(self) {
        self.conn.close().await
    }
}

/// The `Send` body of a text message (to a peer when `to` has no ':', else to a
/// conversation id).
pub fn send_body(to: &str, cmid: &str, text: &str) -> pb::Send {
    let (conversation, peer) = if to.contains(':') {
        (to.to_string(), String::new())
    } else {
        (String::new(), to.to_string())
    };
    pb::Send {
        client_msg_id: cmid.into(),
        conversation,
        peer,
        body: text.as_bytes().to_vec().into(),
        content_type: String::new(),
    }
}
