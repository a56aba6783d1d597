//! One `Config`: defaults that work on a laptop, overridden by a TOML file (`--config`),
//! then by environment variables (`TERN_*`), then by flags. `server/tern-server.sample.toml`
//! is the commented sample.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address for both QUIC (UDP) and TLS over TCP, unless overridden below.
    pub listen: SocketAddr,
    /// QUIC (UDP) address; defaults to `listen`.
    pub quic_listen: Option<SocketAddr>,
    /// TLS-over-TCP address; defaults to `listen` (same port number as QUIC).
    pub tcp_listen: Option<SocketAddr>,
    /// Where the sled store, the signing key and the dev certificates live.
    pub data_dir: PathBuf,
    /// PEM certificate chain; with `tls_key`. Unset: a dev CA and certificate are made in
    /// the data dir on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Clients send a ping at least this often; 3 missed heartbeats = offline.
    pub heartbeat_secs: u32,
    /// A connection must log in (or resume) within this time.
    pub auth_timeout_secs: u32,
    /// TLS or QUIC handshake must complete within this time.
    pub handshake_timeout_secs: u32,
    /// Lifetime of a login token.
    pub token_ttl_secs: u64,
    /// Largest frame payload accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Frames queued to one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued to one connection before it counts as a slow consumer (a single
    /// frame always fits).
    pub outbound_queue_bytes: usize,
    /// Requests one session may have in flight.
    pub max_pending: u32,
    /// Groups with more members than this use read diffusion (no inbox copies).
    pub group_fanout_threshold: u32,
    /// Largest group.
    pub max_group_members: u32,
    /// sled page cache, in MiB.
    pub store_cache_mb: u64,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace_secs: u32,
    /// WebSocket bridge and web page (HTTP); "off" disables it.
    pub ws_listen: String,
    /// Serve the bridge as wss:// with the server's certificate.
    pub ws_tls: bool,
    /// Origins allowed besides same-origin and localhost, e.g. "https://chat.example.com".
    pub ws_allowed_origins: Vec<String>,
    /// Prebuilt web assets served at `/`.
    pub web_root: PathBuf,
    /// Group commit (one flush for many writes). Off only to measure what it buys: each
    /// write then waits for its own flush.
    pub group_commit: bool,
    /// Requests per second one connection may make (burst below); Ping and Ack are free.
    pub conn_rate_limit: u32,
    pub conn_rate_burst: u32,
    /// Requests per second one user may make over all their devices (burst below).
    pub user_rate_limit: u32,
    pub user_rate_burst: u32,
    /// Failed logins per user name, and login/register attempts per source address, per
    /// `login_window_secs`; past them: RATE_LIMITED until the window ends.
    pub login_failures_per_user: u32,
    pub logins_per_address: u32,
    pub login_window_secs: u32,
    /// Connections the server holds at once (all transports); more are refused.
    pub max_connections: usize,
    /// Live sessions (devices online at once) per user.
    pub max_sessions_per_user: usize,
    /// argon2id cost of new password hashes: memory (KiB) and passes. Lower them only
    /// where logins are cheap on purpose (load tests that log in 100k devices).
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
    /// Prometheus/OpenMetrics text at http://ADDR/metrics; unset: off.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7443".parse().unwrap(),
            quic_listen: None,
            tcp_listen: None,
            data_dir: PathBuf::from("./tern-data"),
            tls_cert: None,
            tls_key: None,
            heartbeat_secs: 30,
            auth_timeout_secs: 10,
            handshake_timeout_secs: 10,
            token_ttl_secs: 30 * 24 * 3600,
            max_frame_bytes: tern_proto::DEFAULT_MAX_FRAME as u32,
            outbound_queue: 1024,
            outbound_queue_bytes: 8 << 20,
            max_pending: 256,
            group_fanout_threshold: 500,
            max_group_members: 10_000,
            store_cache_mb: 64,
            shutdown_grace_secs: 5,
            ws_listen: "127.0.0.1:7480".into(),
            ws_tls: false,
            ws_allowed_origins: Vec::new(),
            web_root: PathBuf::from("web/dist"),
            group_commit: true,
            conn_rate_limit: 2000,
            conn_rate_burst: 4000,
            user_rate_limit: 5000,
            user_rate_burst: 10000,
            login_failures_per_user: 10,
            logins_per_address: 300,
            login_window_secs: 60,
            max_connections: 200_000,
            max_sessions_per_user: 16,
            password_hash_memory_kib: 19456,
            password_hash_iterations: 2,
            metrics_listen: None,
        }
    }
}

impl Config {
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_listen.unwrap_or(self.listen)
    }
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_listen.unwrap_or(self.listen)
    }

    /// The WebSocket address, or None when the bridge is off.
    pub fn ws_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.ws_listen.trim() {
            "" | "off" => Ok(None),
            a => a
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("ws_listen {a:?}: {e}")),
        }
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.heartbeat_secs >= 1,
            "heartbeat_secs must be at least 1"
        );
        anyhow::ensure!(
            self.auth_timeout_secs >= 1,
            "auth_timeout_secs must be at least 1"
        );
        anyhow::ensure!(
            self.max_frame_bytes >= 1024,
            "max_frame_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.outbound_queue >= 16,
            "outbound_queue must be at least 16"
        );
        anyhow::ensure!(
            self.outbound_queue_bytes >= 64 << 10,
            "outbound_queue_bytes must be at least 65536"
        );
        anyhow::ensure!(self.max_pending >= 1, "max_pending must be at least 1");
        anyhow::ensure!(
            self.max_group_members >= 2,
            "max_group_members must be at least 2"
        );
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert and tls_key go together"
        );
        anyhow::ensure!(
            (8..=4 << 20).contains(&self.password_hash_memory_kib),
            "password_hash_memory_kib must be between 8 and 4194304"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.password_hash_iterations),
            "password_hash_iterations must be between 1 and 64"
        );
        self.ws_addr()?;
        Ok(())
    }
}

/// What the session layer and the transports need, from the config.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub heartbeat: Duration,
    pub auth_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: u32,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub max_pending: u32,
    pub shutdown_grace: Duration,
}

/// What the message and group domains need, from the config.
#[derive(Debug, Clone)]
pub struct MessageLimits {
    pub fanout_threshold: usize,
    pub max_group_members: usize,
    /// Every frame the server sends fits in this (the clients' limit too).
    pub max_frame_bytes: usize,
}

/// Room kept in a frame for the envelope around a message body (ids, names, push
/// fields): 4096 bytes, or a quarter of a (test-sized) small frame.
fn envelope(max_frame: usize) -> usize {
    4096.min(max_frame / 4)
}

impl MessageLimits {
    /// Largest body a Send may carry, so the pushed message fits in one frame.
    pub fn max_body(&self) -> usize {
        self.max_frame_bytes - envelope(self.max_frame_bytes)
    }
    /// Byte budget for the messages of one Sync or Pull page.
    pub fn page_budget(&self) -> usize {
        self.max_frame_bytes - envelope(self.max_frame_bytes)
    }
}

impl Config {
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            heartbeat: Duration::from_secs(self.heartbeat_secs as u64),
            auth_timeout: Duration::from_secs(self.auth_timeout_secs as u64),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs as u64),
            max_frame_bytes: self.max_frame_bytes,
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.outbound_queue_bytes,
            max_pending: self.max_pending,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs as u64),
        }
    }

    pub fn message_limits(&self) -> MessageLimits {
        MessageLimits {
            fanout_threshold: self.group_fanout_threshold as usize,
            max_group_members: self.max_group_members as usize,
            max_frame_bytes: self.max_frame_bytes as usize,
        }
    }

    pub fn rate_limits(&self) -> crate::ratelimit::LimitSettings {
        crate::ratelimit::LimitSettings {
            conn_rate: self.conn_rate_limit,
            conn_burst: self.conn_rate_burst,
            user_rate: self.user_rate_limit,
            user_burst: self.user_rate_burst,
            login_failures_per_user: self.login_failures_per_user,
            logins_per_address: self.logins_per_address,
            login_window: Duration::from_secs(self.login_window_secs as u64),
            max_connections: self.max_connections,
            max_sessions_per_user: self.max_sessions_per_user,
        }
    }
}

/// Command line of `tern-server`. Every flag can also come from the environment variable
/// named beside it, and from the config file (same name, snake_case).
#[derive(Debug, Parser)]
#[command(
    name = "tern-server",
    version,
    about = "tern instant-messaging server (QUIC + TLS over TCP)"
)]
pub struct Args {
    /// TOML config file (see server/tern-server.sample.toml). Flags override it.
    #[arg(long, env = "TERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for QUIC (UDP) and TLS over TCP [default: 127.0.0.1:7443]
    #[arg(long, env = "TERN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// QUIC (UDP) address, if different from --listen
    #[arg(long, env = "TERN_QUIC_LISTEN")]
    pub quic_listen: Option<SocketAddr>,
    /// TLS-over-TCP address, if different from --listen
    #[arg(long, env = "TERN_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// Data directory [default: ./tern-data]
    #[arg(long, env = "TERN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain (with --tls-key); without it a dev CA is made in the data dir
    #[arg(long, env = "TERN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "TERN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Heartbeat interval announced to clients; 3 missed = offline [default: 30]
    #[arg(long, env = "TERN_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u32>,
    /// Time a new connection has to log in [default: 10]
    #[arg(long, env = "TERN_AUTH_TIMEOUT_SECS")]
    pub auth_timeout_secs: Option<u32>,
    /// Time a TLS or QUIC handshake may take [default: 10]
    #[arg(long, env = "TERN_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u32>,
    /// Login token lifetime in seconds [default: 2592000 = 30 days]
    #[arg(long, env = "TERN_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Largest frame payload in bytes [default: 1048576]
    #[arg(long, env = "TERN_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Frames queued per connection before it is dropped as a slow consumer [default: 1024]
    #[arg(long, env = "TERN_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Bytes queued per connection before it is dropped as a slow consumer [default: 8388608]
    #[arg(long, env = "TERN_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Requests one session may have in flight [default: 256]
    #[arg(long, env = "TERN_MAX_PENDING")]
    pub max_pending: Option<u32>,
    /// Groups larger than this use read diffusion [default: 500]
    #[arg(long, env = "TERN_GROUP_FANOUT_THRESHOLD")]
    pub group_fanout_threshold: Option<u32>,
    /// Largest group [default: 10000]
    #[arg(long, env = "TERN_MAX_GROUP_MEMBERS")]
    pub max_group_members: Option<u32>,
    /// sled page cache in MiB [default: 64]
    #[arg(long, env = "TERN_STORE_CACHE_MB")]
    pub store_cache_mb: Option<u64>,
    /// Seconds in-flight requests get on shutdown [default: 5]
    #[arg(long, env = "TERN_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u32>,
    /// WebSocket bridge + web page address, or "off" [default: 127.0.0.1:7480]
    #[arg(long, env = "TERN_WS_LISTEN")]
    pub ws_listen: Option<String>,
    /// Serve the WebSocket bridge over TLS (wss://) with the server certificate
    #[arg(long, env = "TERN_WS_TLS")]
    pub ws_tls: Option<bool>,
    /// Extra allowed browser origin for the WebSocket bridge (repeatable)
    #[arg(
        long = "ws-allowed-origin",
        env = "TERN_WS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub ws_allowed_origins: Option<Vec<String>>,
    /// Directory of the prebuilt web page [default: web/dist]
    #[arg(long, env = "TERN_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Group commit on (default) or off (a flush per write; for benchmarks only)
    #[arg(long, env = "TERN_GROUP_COMMIT")]
    pub group_commit: Option<bool>,
    /// Requests per second per connection [default: 2000]
    #[arg(long, env = "TERN_CONN_RATE_LIMIT")]
    pub conn_rate_limit: Option<u32>,
    /// Burst per connection [default: 4000]
    #[arg(long, env = "TERN_CONN_RATE_BURST")]
    pub conn_rate_burst: Option<u32>,
    /// Requests per second per user, all devices together [default: 5000]
    #[arg(long, env = "TERN_USER_RATE_LIMIT")]
    pub user_rate_limit: Option<u32>,
    /// Burst per user [default: 10000]
    #[arg(long, env = "TERN_USER_RATE_BURST")]
    pub user_rate_burst: Option<u32>,
    /// Failed logins per user name per window [default: 10]
    #[arg(long, env = "TERN_LOGIN_FAILURES_PER_USER")]
    pub login_failures_per_user: Option<u32>,
    /// Login/register attempts per source address per window [default: 300]
    #[arg(long, env = "TERN_LOGINS_PER_ADDRESS")]
    pub logins_per_address: Option<u32>,
    /// Login throttling window in seconds [default: 60]
    #[arg(long, env = "TERN_LOGIN_WINDOW_SECS")]
    pub login_window_secs: Option<u32>,
    /// Connections held at once, all transports [default: 200000]
    #[arg(long, env = "TERN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Devices online at once per user [default: 16]
    #[arg(long, env = "TERN_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<usize>,
    /// argon2id memory of new password hashes, KiB [default: 19456]
    #[arg(long, env = "TERN_PASSWORD_HASH_MEMORY_KIB")]
    pub password_hash_memory_kib: Option<u32>,
    /// argon2id passes of new password hashes [default: 2]
    #[arg(long, env = "TERN_PASSWORD_HASH_ITERATIONS")]
    pub password_hash_iterations: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off]
    #[arg(long, env = "TERN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Args {
    /// Config file (or defaults), then environment and flags on top.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        macro_rules! over_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f; } )* };
        }
        over!(
            listen,
            data_dir,
            heartbeat_secs,
            auth_timeout_secs,
            handshake_timeout_secs,
            token_ttl_secs,
            max_frame_bytes,
            outbound_queue,
            outbound_queue_bytes,
            max_pending,
            group_fanout_threshold,
            max_group_members,
            store_cache_mb,
            shutdown_grace_secs,
            ws_listen,
            ws_tls,
            ws_allowed_origins,
            web_root,
            group_commit,
            conn_rate_limit,
            conn_rate_burst,
            user_rate_limit,
            user_rate_burst,
            login_failures_per_user,
            logins_per_address,
            login_window_secs,
            max_connections,
            max_sessions_per_user,
            password_hash_memory_kib,
            password_hash_iterations
        );
        over_opt!(quic_listen, tcp_listen, tls_cert, tls_key, metrics_listen);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses_and_matches_defaults() {
        let sample = include_str!("../tern-server.sample.toml");
        let c: Config = toml::from_str(sample).unwrap();
        assert_eq!(
            c,
            Config::default(),
            "the sample file documents the defaults"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "heartbeat_secs = 5\ndata_dir = \"/tmp/x\"\n").unwrap();
        let args = Args::parse_from([
            "tern-server",
            "--config",
            path.to_str().unwrap(),
            "--heartbeat-secs",
            "7",
        ]);
        let c = args.into_config().unwrap();
        assert_eq!(c.heartbeat_secs, 7);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("hearbeat_secs = 5").is_err());
    }
}
