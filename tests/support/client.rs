//! The tests' raw-frame [`Client`] over real QUIC or TLS-TCP: the SDK's
//! [`RawConnection`] (requests matched to responses by req_id, pushes kept in arrival
//! order, no engine), with the steps tests repeat (register, login, send, sync, pull) and
//! a panic instead of an error wherever a test could not go on.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern_proto::pb;
use tern_proto::{Body, Frame, PROTOCOL_VERSION};
use tern_sdk::raw::{RawConnection, RawError};
use tern_sdk::{ConnectOptions, Transport, Trust};

use crate::PASSWORD;

/// How long [`Client::response`] waits for an answer.
const WAIT: Duration = Duration::from_secs(10);

/// A raw-frame client: sends requests, matches responses by req_id, and keeps pushes
/// (and any other req_id-0 frames) in arrival order, in `conn`.
pub struct Client {
    pub conn: RawConnection,
    /// What the last successful [`Client::login`] returned.
    pub login: Option<pb::LoginOk>,
}

/// A read that failed because the server sent bytes that are not a frame is a server bug:
/// the test fails on it wherever it waits.
fn undecodable(e: &RawError) {
    if let RawError::Undecodable(e) = e {
        panic!("server sent an undecodable frame: {e}");
    }
}

impl Client {
    pub async fn connect(t: Transport, addr: SocketAddr, ca: &Path) -> Client {
        let opts = ConnectOptions::new(Trust::from_pem_file(ca).unwrap());
        let mut conn = RawConnection::connect(t, addr, &opts)
            .await
            .expect("connects");
        conn.set_timeout(WAIT);
        Client { conn, login: None }
    }

    pub fn transport(&self) -> Transport {
        self.conn.transport()
    }

    /// The req_id-0 frames received and not taken yet, oldest first.
    pub fn pushes(&mut self) -> &mut std::collections::VecDeque<Frame> {
        self.conn.pushes()
    }

    /// The `Closing` frame, once the server has sent one.
    pub fn closing(&self) -> Option<&pb::Closing> {
        self.conn.closing()
    }

    /// True once the server's stream has ended (or failed).
    pub fn eof(&self) -> bool {
        self.conn.is_closed()
    }

    /// Sends a request without waiting; returns its req_id.
    pub async fn send_req(&mut self, body: Body) -> u64 {
        self.conn.send_request(body).await.expect("write")
    }

    /// Waits for the response to `req_id`.
    pub async fn response(&mut self, req_id: u64) -> Frame {
        match self.conn.response(req_id).await {
            Ok(f) => f,
            Err(e) => {
                undecodable(&e);
                panic!(
                    "no response to req {req_id} (eof={}, closing={:?})",
                    self.eof(),
                    self.closing()
                )
            }
        }
    }

    /// A response that has already arrived, if any.
    pub fn try_response(&mut self, req_id: u64) -> Option<Frame> {
        self.conn.try_response(req_id)
    }

    pub async fn request(&mut self, body: Body) -> Frame {
        let id = self.send_req(body).await;
        self.response(id).await
    }

    /// The next req_id-0 frame, if one comes within `timeout`.
    pub async fn next_unsolicited(&mut self, timeout: Duration) -> Option<Frame> {
        match self.conn.next_push(timeout).await {
            Ok(f) => Some(f),
            Err(e) => {
                undecodable(&e);
                None
            }
        }
    }

    /// The next unsolicited frame whose body `pick` accepts (others are skipped); panics
    /// if none comes within `timeout`.
    pub async fn next_where<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(Body) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_unsolicited(left).await {
                Some(Frame { body: Some(b), .. }) => {
                    if let Some(t) = pick(b) {
                        return t;
                    }
                }
                Some(_) => continue,
                None => panic!("the awaited frame did not come within {timeout:?}"),
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

    /// The message of the next MessagePush; panics if none comes within `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> pb::Message {
        let push = self.next_push(timeout).await.expect("a push");
        push.message.expect("the push carries a message")
    }

    /// Reads until the server closes the connection; returns its Closing frame.
    pub async fn until_closed(&mut self, timeout: Duration) -> Option<pb::Closing> {
        match self.conn.until_closed(timeout).await {
            Ok(closing) => closing,
            Err(e) => {
                undecodable(&e);
                panic!("server did not close the connection in {timeout:?}")
            }
        }
    }

    /// Reads until the server closes the connection and asserts its Closing frame gave
    /// `reason`.
    pub async fn expect_closed(&mut self, timeout: Duration, reason: pb::CloseReason) {
        let closing = self.until_closed(timeout).await.expect("a Closing frame");
        assert_eq!(closing.reason, reason as i32, "closed with {closing:?}");
    }

    pub async fn register(&mut self, user: &str) {
        let f = self.request(register_body(user)).await;
        assert!(
            matches!(f.body, Some(Body::Ok(_))),
            "register {user}: {f:?}"
        );
    }

    pub async fn login(&mut self, user: &str, device: &str) -> pb::LoginOk {
        let f = self.request(login_body(user, device)).await;
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

    pub async fn list_members(&mut self, conv: &str) -> Frame {
        self.request(Body::ListMembers(pb::ListMembers {
            conversation: conv.into(),
        }))
        .await
    }

    pub async fn presence(&mut self, users: &[&str]) -> Frame {
        self.request(Body::PresenceQuery(pb::PresenceQuery {
            users: users.iter().map(|s| s.to_string()).collect(),
        }))
        .await
    }

    pub async fn group_online(&mut self, conv: &str) -> Frame {
        self.request(Body::GroupOnlineQuery(pb::GroupOnlineQuery {
            conversation: conv.into(),
            ..Default::default()
        }))
        .await
    }

    pub async fn create_group(&mut self, name: &str, members: &[&str]) -> pb::GroupCreated {
        let f = self
            .request(Body::CreateGroup(pb::CreateGroup {
                name: name.into(),
                members: members.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
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

/// A `Register` of `user` with the tests' [`PASSWORD`].
pub fn register_body(user: &str) -> Body {
    Body::Register(pb::Register {
        protocol_version: PROTOCOL_VERSION,
        username: user.into(),
        password: PASSWORD.into(),
    })
}

/// A `Login` of `user` on `device` with the tests' [`PASSWORD`].
pub fn login_body(user: &str, device: &str) -> Body {
    Body::Login(pb::Login {
        protocol_version: PROTOCOL_VERSION,
        username: user.into(),
        password: PASSWORD.into(),
        device: device.into(),
    })
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
        ..Default::default()
    }
}
