//! Test harness for tern's black-box integration tests: a real server (in-process on port
//! 0, or the real binary as a child process so it can be killed with SIGKILL), each with
//! its own temp data dir, and a small raw-frame client over real QUIC or TLS-TCP.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame, PROTOCOL_VERSION};
pub use tern_sdk::Transport;
use tern_sdk::{connect, ConnectOptions, Connection, Trust};
use tern_server::{Config, Server};
use tokio::sync::oneshot;

pub use tern_proto;
pub use tern_sdk::Transport::{Quic, Tcp};

pub mod fault;

/// Logs of the test process to stderr, filtered by RUST_LOG (off by default).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

pub const BOTH: [Transport; 2] = [Transport::Quic, Transport::Tcp];
pub const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

/// A server running inside the test process.
pub struct TestServer {
    pub quic: SocketAddr,
    pub tcp: SocketAddr,
    /// The WebSocket/HTTP bridge.
    pub ws: SocketAddr,
    /// The metrics endpoint, when the config set `metrics_listen`.
    pub metrics: Option<SocketAddr>,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        store_cache_mb: 16,
        ws_listen: "127.0.0.1:0".into(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let server = Server::bind(config).await.expect("server binds");
        let (stop, stopped) = oneshot::channel::<()>();
        let quic = server.quic_addr();
        let tcp = server.tcp_addr();
        let ws = server.ws_addr().expect("WebSocket bridge on");
        let metrics = server.metrics_addr();
        let ca = server.dev_ca().cloned().expect("dev CA");
        let join = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            quic,
            tcp,
            ws,
            metrics,
            ca,
            dir,
            stop: Some(stop),
            join: Some(join),
        }
    }

    pub fn addr(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Quic => self.quic,
            Transport::Tcp => self.tcp,
        }
    }

    pub async fn client(&self, t: Transport) -> Client {
        Client::connect(t, self.addr(t), &self.ca).await
    }

    /// Registers `user` and returns a logged-in client for `device`.
    pub async fn user(&self, t: Transport, user: &str, device: &str) -> Client {
        let mut c = self.client(t).await;
        c.register(user).await;
        c.login(user, device).await;
        c
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            j.await.unwrap().unwrap();
        }
    }
}

/// The real server binary as a child process (start it with the path from
/// `env!("CARGO_BIN_EXE_tern-test-server")`).
pub struct ProcessServer {
    pub child: Child,
    pub quic: SocketAddr,
    pub tcp: SocketAddr,
    /// The WebSocket bridge (`/ws` on this address).
    pub ws: SocketAddr,
    pub ca: PathBuf,
}

impl ProcessServer {
    // The child is owned by the returned value, whose Drop kills and waits for it; only a
    // panic before that (which fails the test) can leave it unreaped.
    pub fn spawn(bin: &str, data_dir: &Path) -> Self {
        Self::spawn_at(bin, data_dir, "127.0.0.1:0")
    }

    /// Starts the server on a given address (to restart it where clients expect it).
    #[allow(clippy::zombie_processes)]
    pub fn spawn_at(bin: &str, data_dir: &Path, listen: &str) -> Self {
        let mut child = Command::new(bin)
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(["--store-cache-mb", "16", "--ws-listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("TERN_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut ca = None;
        loop {
            let line = lines
                .next()
                .expect("server printed its addresses")
                .expect("stdout readable");
            if let Some(rest) = line.strip_prefix("tern-server: dev CA ") {
                ca = Some(PathBuf::from(rest.split(' ').next().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("tern-server: listening ") {
                let mut quic = None;
                let mut tcp = None;
                let mut ws = None;
                for part in rest.split(' ') {
                    if let Some(a) = part.strip_prefix("ws=ws://") {
                        ws = Some(a.trim_end_matches("/ws").parse().unwrap());
                    }
                    if let Some(a) = part.strip_prefix("quic=") {
                        quic = Some(a.parse().unwrap());
                    }
                    if let Some(a) = part.strip_prefix("tcp=") {
                        tcp = Some(a.parse().unwrap());
                    }
                }
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Self {
                    child,
                    quic: quic.unwrap(),
                    tcp: tcp.unwrap(),
                    ws: ws.expect("the WebSocket bridge is on"),
                    ca: ca.expect("dev CA line before the listening line"),
                };
            }
        }
    }

    pub fn addr(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Quic => self.quic,
            Transport::Tcp => self.tcp,
        }
    }

    /// The server's memory now: (VmRSS, VmHWM) in KiB, from /proc/PID/status.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.child.id())
    }

    /// Resets the server's VmHWM to its current VmRSS (writes 5 to /proc/PID/clear_refs),
    /// so a later VmHWM is the peak since now; returns (VmRSS, VmHWM) after the reset.
    pub fn reset_peak_memory(&self) -> (u64, u64) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset VmHWM through /proc/PID/clear_refs");
        self.memory_kib()
    }

    pub fn kill9(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for ProcessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare TLS-TCP connection to a tern server (TLS 1.3, ALPN `tern/1`, trusting `ca`),
/// for tests that need to read and write at the same time.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA parses")).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tern_proto::ALPN.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// (VmRSS, VmHWM) of process `pid` in KiB, from /proc/PID/status (Linux).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

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

/// The SendAck in a response, or a panic naming what came instead.
pub fn ack_of(f: &Frame) -> pb::SendAck {
    match &f.body {
        Some(Body::SendAck(a)) => a.clone(),
        other => panic!("expected SendAck, got {other:?}"),
    }
}

/// Asserts the frame is an Error with `code`; returns its message.
pub fn expect_error(f: &Frame, code: ErrorCode) -> String {
    match &f.body {
        Some(Body::Error(e)) => {
            assert_eq!(
                e.code,
                code as i32,
                "expected {code:?}, got {:?}: {}",
                ErrorCode::try_from(e.code),
                e.message
            );
            assert!(!e.message.is_empty(), "errors carry a message");
            e.message.clone()
        }
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
}

pub fn text(m: &pb::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Unique-enough names so tests sharing nothing never collide.
pub fn name(prefix: &str, t: Transport) -> String {
    format!("{prefix}-{t}")
}
