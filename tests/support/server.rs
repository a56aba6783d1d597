//! The server under test: in-process on port 0 ([`TestServer`]), or the real binary as a
//! child process ([`ProcessServer`]) so a test can kill it with SIGKILL, stop it with
//! SIGSTOP or measure its memory. Each gets its own data directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tern_sdk::Transport;
use tern_server::{Config, Server};
use tokio::sync::oneshot;

use crate::Client;

/// A server running inside the test process.
pub struct TestServer {
    pub quic: SocketAddr,
    pub tcp: SocketAddr,
    /// The WebSocket/HTTP bridge.
    pub ws: SocketAddr,
    /// The metrics endpoint, when the config set `metrics_listen`.
    pub metrics: Option<SocketAddr>,
    /// The admin API, when the config set `admin_listen` (its token file: `admin_token`).
    pub admin: Option<SocketAddr>,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    c.network.listen = "127.0.0.1:0".parse().unwrap();
    c.network.ws_listen = "127.0.0.1:0".into();
    c.store.data_dir = data_dir.to_path_buf();
    c.store.store_cache_mb = 16;
    c
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
        let admin = server.admin_addr();
        let ca = server.dev_ca().cloned().expect("dev CA");
        let join = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            quic,
            tcp,
            ws,
            metrics,
            admin,
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

    /// The admin API's token (generated into the data dir on first start).
    pub fn admin_token(&self) -> String {
        let path = self.dir.path().join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
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
    pub fn spawn_at(bin: &str, data_dir: &Path, listen: &str) -> Self {
        Self::try_spawn_with(bin, data_dir, listen, &[]).expect("the server started")
    }

    /// Starts the server with extra environment variables; `Err` (with its exit status)
    /// when it exits before listening, e.g. because it refuses a damaged data dir (its
    /// reason goes to the test's stderr).
    #[allow(clippy::zombie_processes)]
    pub fn try_spawn_with(
        bin: &str,
        data_dir: &Path,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(["--store-cache-mb", "16", "--ws-listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("TERN_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut ca = None;
        loop {
            let Some(line) = lines.next() else {
                let status = child.wait().expect("wait for the server");
                return Err(format!("the server exited before listening: {status}"));
            };
            let line = line.expect("stdout readable");
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
                return Ok(Self {
                    child,
                    quic: quic.unwrap(),
                    tcp: tcp.unwrap(),
                    ws: ws.expect("the WebSocket bridge is on"),
                    ca: ca.expect("dev CA line before the listening line"),
                });
            }
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
