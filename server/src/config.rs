//! One `Config` in sections, each setting declared ONCE in the [`settings!`] table below:
//! its section, name, type, default, doc and environment variable. From that one line come
//! the section struct field and its default, the `tern-server` flag (`--name`, flat across
//! sections), the environment variable, the TOML key (`[section] name = ...`) and the
//! commented sample file `server/tern-server.sample.toml` (generated; a test checks it).
//!
//! Precedence: defaults, then the TOML file (`--config`), then environment variables
//! (`TERN_*`), then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// The type of a setting: `T`, or `Option<T>` for one marked `optional` (unset by
/// default). Its flag is always `Option<T>` (absent = keep what the file said).
macro_rules! setting_type {
    ($ty:ty) => { $ty };
    ($ty:ty, optional) => { Option<$ty> };
}

/// Puts a flag's value into the config when it was given.
macro_rules! apply_flag {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src {
            $dst = v;
        }
    };
    ($dst:expr, $src:expr, optional) => {
        if let Some(v) = $src {
            $dst = Some(v);
        }
    };
}

/// Declares every setting once; see the module doc.
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:literal])*
        [$section:ident : $Section:ident] {
            $(
                $(#[doc = $doc:literal])*
                $name:ident : $ty:ty = $default:expr, $env:literal
                    $(, @arg($($arg:tt)*))? $(, $optional:ident)?;
            )*
        }
    )*) => {
        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
            #[serde(default, deny_unknown_fields)]
            pub struct $Section {
                $( $(#[doc = $doc])* pub $name: setting_type!($ty $(, $optional)?), )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self { $( $name: $default, )* }
                }
            }
        )*

        /// The whole configuration, one field per section (`[section]` in TOML).
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( pub $section: $Section, )*
        }

        /// Command line of `tern-server`. Every flag can also come from the environment
        /// variable named beside it, and from the config file (`[section] name`).
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
            $($(
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, $($arg)*)?)]
                pub $name: Option<$ty>,
            )*)*
        }

        impl Args {
            fn apply(self, c: &mut Config) {
                $($( apply_flag!(c.$section.$name, self.$name $(, $optional)?); )*)*
            }
        }

        /// (section, its doc, [(setting, its doc, env var)]) for the sample file.
        fn catalogue() -> Vec<(&'static str, &'static str, Vec<(&'static str, &'static str, &'static str)>)> {
            vec![$(
                (
                    stringify!($section),
                    concat!($($sdoc, "\n"),*),
                    vec![$( (stringify!($name), concat!($($doc, "\n"),*), $env), )*],
                ),
            )*]
        }
    };
}

settings! {
    /// Where the server listens: QUIC and TLS over TCP (one port number), the WebSocket
    /// bridge with the web page, and the metrics endpoint.
    [network: NetworkSettings] {
        /// Address for QUIC (UDP) and TLS over TCP, unless overridden below
        listen: SocketAddr = "127.0.0.1:7443".parse().expect("valid address"), "TERN_LISTEN";
        /// QUIC (UDP) address, if different from listen
        quic_listen: SocketAddr = None, "TERN_QUIC_LISTEN", optional;
        /// TLS-over-TCP address, if different from listen (same port number as QUIC)
        tcp_listen: SocketAddr = None, "TERN_TCP_LISTEN", optional;
        /// PEM certificate chain (with tls_key); without it a dev CA and a certificate for
        /// localhost are made in the data dir on first start
        tls_cert: PathBuf = None, "TERN_TLS_CERT", optional;
        /// PEM private key for tls_cert
        tls_key: PathBuf = None, "TERN_TLS_KEY", optional;
        /// WebSocket bridge and web page (HTTP) address, or "off"
        ws_listen: String = "127.0.0.1:7480".into(), "TERN_WS_LISTEN";
        /// Serve the WebSocket bridge over TLS (wss://) with the server certificate
        ws_tls: bool = false, "TERN_WS_TLS";
        /// Origins allowed besides same-origin and localhost, e.g. https://chat.example.com
        ws_allowed_origins: Vec<String> = Vec::new(), "TERN_WS_ALLOWED_ORIGINS", @arg(value_delimiter = ',');
        /// Serve the web page at / from this directory (e.g. web/src, to work on the page
        /// without rebuilding the server); unset: the page built into the binary
        web_root: PathBuf = None, "TERN_WEB_ROOT", optional;
        /// Serve Prometheus/OpenMetrics text at http://ADDR/metrics; unset: off
        metrics_listen: SocketAddr = None, "TERN_METRICS_LISTEN", optional;
        /// Serve the admin HTTP API (docs/ADMIN_API.md) at http://ADDR/admin/v1/; unset: off
        admin_listen: SocketAddr = None, "TERN_ADMIN_LISTEN", optional;
        /// File holding the admin API's bearer token; unset: <data_dir>/admin.token, made
        /// (mode 0600) on first start
        admin_token_file: PathBuf = None, "TERN_ADMIN_TOKEN_FILE", optional;
    }

    /// The data directory and the store.
    [store: StoreSettings] {
        /// Where the sled store, the signing key and the dev certificates live
        data_dir: PathBuf = PathBuf::from("./tern-data"), "TERN_DATA_DIR";
        /// sled page cache, in MiB
        store_cache_mb: u64 = 64, "TERN_STORE_CACHE_MB";
        /// Group commit (one flush for many writes); off only to measure what it buys (a
        /// flush per write)
        group_commit: bool = true, "TERN_GROUP_COMMIT";
    }

    /// Connections and sessions.
    [session: SessionSettings] {
        /// Heartbeat interval announced to clients; 3 missed = offline
        heartbeat_secs: u32 = 30, "TERN_HEARTBEAT_SECS";
        /// A new connection must log in (or resume) within this time
        auth_timeout_secs: u32 = 10, "TERN_AUTH_TIMEOUT_SECS";
        /// A TLS or QUIC handshake must complete within this time
        handshake_timeout_secs: u32 = 10, "TERN_HANDSHAKE_TIMEOUT_SECS";
        /// Largest frame payload accepted and sent, in bytes
        max_frame_bytes: u32 = tern_proto::DEFAULT_MAX_FRAME as u32, "TERN_MAX_FRAME_BYTES";
        /// Frames queued to one connection before it counts as a slow consumer
        outbound_queue: usize = 1024, "TERN_OUTBOUND_QUEUE";
        /// Bytes queued to one connection before it counts as a slow consumer (a single
        /// frame always fits)
        outbound_queue_bytes: usize = 8 << 20, "TERN_OUTBOUND_QUEUE_BYTES";
        /// Requests one session may have in flight
        max_pending: u32 = 256, "TERN_MAX_PENDING";
        /// On shutdown, how long in-flight requests get to finish
        shutdown_grace_secs: u32 = 5, "TERN_SHUTDOWN_GRACE_SECS";
    }

    /// Accounts and tokens.
    [accounts: AccountSettings] {
        /// Lifetime of a login token, in seconds (30 days)
        token_ttl_secs: u64 = 30 * 24 * 3600, "TERN_TOKEN_TTL_SECS";
        /// Resume rotates the token; the token a device last resumed with stays accepted
        /// this long after that Resume (its answer may have been lost), in seconds
        token_rotation_grace_secs: u64 = 300, "TERN_TOKEN_ROTATION_GRACE_SECS";
        /// argon2id memory of new password hashes, in KiB (OWASP's 19 MiB); lower it only
        /// where logins are cheap on purpose (load tests that log in 100k devices)
        password_hash_memory_kib: u32 = 19456, "TERN_PASSWORD_HASH_MEMORY_KIB";
        /// argon2id passes of new password hashes
        password_hash_iterations: u32 = 2, "TERN_PASSWORD_HASH_ITERATIONS";
    }

    /// Groups.
    [groups: GroupSettings] {
        /// Groups with more members than this use read diffusion (no inbox copies)
        group_fanout_threshold: u32 = 500, "TERN_GROUP_FANOUT_THRESHOLD";
        /// Largest group
        max_group_members: u32 = 10_000, "TERN_MAX_GROUP_MEMBERS";
    }

    /// Message changes and lifetimes.
    [messages: MessageSettings] {
        /// How long after sending its sender may edit a message, in seconds (48 h)
        edit_window_secs: u64 = 48 * 3600, "TERN_EDIT_WINDOW_SECS";
        /// How long after sending its sender may recall a message, in seconds (group
        /// owners and admins may recall at any time)
        recall_window_secs: u64 = 120, "TERN_RECALL_WINDOW_SECS";
        /// Longest time to live a Send may ask for, in seconds (7 days)
        max_ttl_secs: u64 = 7 * 24 * 3600, "TERN_MAX_TTL_SECS";
        /// A user's online/offline change is announced to their direct peers after it has
        /// held this long, in milliseconds (a flapping connection announces nothing)
        presence_settle_ms: u64 = 2000, "TERN_PRESENCE_SETTLE_MS";
        /// Who may start or continue a 1:1 conversation: "anyone", or "friends" (a direct
        /// message to a user who is not a friend is refused with FORBIDDEN)
        direct_messages: String = "anyone".into(), "TERN_DIRECT_MESSAGES";
    }

    /// Blobs: the files of image and file messages and avatars (docs/PROTOCOL.md 9.14).
    [blobs: BlobSettings] {
        /// Largest blob, in bytes (100 MiB)
        max_blob_bytes: u64 = 100 << 20, "TERN_MAX_BLOB_BYTES";
        /// Bytes of blobs one user may have stored, in bytes (1 GiB); a blob counts for
        /// each user who uploaded it
        blob_quota_bytes: u64 = 1 << 30, "TERN_BLOB_QUOTA_BYTES";
        /// A blob no live message or avatar references is removed once this long has
        /// passed since its upload, in seconds; unfinished uploads too
        blob_grace_secs: u64 = 24 * 3600, "TERN_BLOB_GRACE_SECS";
        /// Lifetime of a signed blob URL (GetBlobUrl), in seconds
        blob_url_ttl_secs: u64 = 300, "TERN_BLOB_URL_TTL_SECS";
    }

    /// History search (docs/PROTOCOL.md 9.15): a full-text index of the messages in
    /// <data_dir>/search/, derived from the timelines (rebuilt when missing or corrupt).
    [search: SearchSettings] {
        /// Keep the index and answer SearchMessages (false: no index is kept, searches get
        /// UNAVAILABLE)
        search_enabled: bool = true, "TERN_SEARCH_ENABLED";
        /// Longest a durable message waits to become searchable, in milliseconds (the index
        /// commits in batches)
        search_commit_ms: u64 = 200, "TERN_SEARCH_COMMIT_MS";
        /// The index commits at once when this many timeline entries wait
        search_commit_entries: u32 = 20_000, "TERN_SEARCH_COMMIT_ENTRIES";
        /// Searches per second one user may make, sustained
        search_rate: u32 = 2, "TERN_SEARCH_RATE";
        /// Searches one user may make at once before search_rate applies
        search_burst: u32 = 10, "TERN_SEARCH_BURST";
    }

    /// Offline push (docs/PUSH.md): notifications for devices without a live session, sent
    /// to the operator's push gateway (Matrix push gateway API).
    [push: PushSettings] {
        /// Push gateway URL (https://host/_matrix/push/v1/notify, or http://); unset: no
        /// push notifications are queued
        push_gateway: String = None, "TERN_PUSH_GATEWAY", optional;
        /// PEM file of a CA to trust for an https push gateway, besides the system's roots
        push_gateway_ca: PathBuf = None, "TERN_PUSH_GATEWAY_CA", optional;
        /// The app_id sent with each device, followed by ".<platform>" (tern.apns, ...)
        push_app_id: String = "tern".into(), "TERN_PUSH_APP_ID";
        /// A notification the gateway has not taken after this long is given up (and
        /// counted as dropped), in seconds
        push_max_age_secs: u64 = 24 * 3600, "TERN_PUSH_MAX_AGE_SECS";
        /// How long one gateway request may take, in milliseconds
        push_timeout_ms: u64 = 10_000, "TERN_PUSH_TIMEOUT_MS";
        /// First retry delay after a failed gateway request, in milliseconds (doubled per
        /// failure, with jitter)
        push_retry_min_ms: u64 = 1000, "TERN_PUSH_RETRY_MIN_MS";
        /// Longest retry delay, in milliseconds
        push_retry_max_ms: u64 = 300_000, "TERN_PUSH_RETRY_MAX_MS";
        /// Least time between two notifications to one device, in milliseconds: messages
        /// in between are coalesced into the next one
        push_interval_ms: u64 = 1000, "TERN_PUSH_INTERVAL_MS";
    }

    /// Retention (docs/PROTOCOL.md 8.11): trims old inbox entries and, optionally, old
    /// timeline entries. 0 = off; everything is off by default (nothing is ever trimmed).
    [retention: RetentionSettings] {
        /// Inbox entries older than this are trimmed, in seconds (the messages stay in
        /// their conversations' timelines); 0: off
        retention_inbox_max_age_secs: u64 = 0, "TERN_RETENTION_INBOX_MAX_AGE_SECS";
        /// Each user keeps at most this many newest inbox entries; 0: off
        retention_inbox_max_entries: u64 = 0, "TERN_RETENTION_INBOX_MAX_ENTRIES";
        /// Timeline entries (the history) older than this are deleted, in seconds; a
        /// conversation's newest message is always kept; 0: off
        retention_timeline_max_age_secs: u64 = 0, "TERN_RETENTION_TIMELINE_MAX_AGE_SECS";
        /// Each conversation keeps at most this many newest timeline entries; 0: off
        retention_timeline_max_entries: u64 = 0, "TERN_RETENTION_TIMELINE_MAX_ENTRIES";
        /// Neither timeline rule trims an entry younger than this, in seconds: within it a
        /// client's retry of a send still gets the original ack (the dedup record goes
        /// with the entry)
        retention_timeline_min_age_secs: u64 = 86_400, "TERN_RETENTION_TIMELINE_MIN_AGE_SECS";
        /// How often the retention sweeper runs (when a rule is on), in milliseconds
        retention_sweep_interval_ms: u64 = 60_000, "TERN_RETENTION_SWEEP_INTERVAL_MS";
    }

    /// Flood protection: request rates, login throttling, caps.
    [limits: RateLimitSettings] {
        /// Requests per second one connection may make (Ping and Ack are free)
        conn_rate_limit: u32 = 2000, "TERN_CONN_RATE_LIMIT";
        /// Burst of one connection's requests
        conn_rate_burst: u32 = 4000, "TERN_CONN_RATE_BURST";
        /// Requests per second one user may make over all their devices
        user_rate_limit: u32 = 5000, "TERN_USER_RATE_LIMIT";
        /// Burst of one user's requests
        user_rate_burst: u32 = 10000, "TERN_USER_RATE_BURST";
        /// Failed logins per user name per login window; past it: RATE_LIMITED
        login_failures_per_user: u32 = 10, "TERN_LOGIN_FAILURES_PER_USER";
        /// Login/register attempts per source address per login window
        logins_per_address: u32 = 300, "TERN_LOGINS_PER_ADDRESS";
        /// The login window, in seconds
        login_window_secs: u32 = 60, "TERN_LOGIN_WINDOW_SECS";
        /// Connections the server holds at once (all transports); more are refused
        max_connections: usize = 200_000, "TERN_MAX_CONNECTIONS";
        /// Live sessions (devices online at once) per user
        max_sessions_per_user: usize = 16, "TERN_MAX_SESSIONS_PER_USER";
    }
}

impl Config {
    pub fn quic_addr(&self) -> SocketAddr {
        self.network.quic_listen.unwrap_or(self.network.listen)
    }
    pub fn tcp_addr(&self) -> SocketAddr {
        self.network.tcp_listen.unwrap_or(self.network.listen)
    }

    /// The WebSocket address, or None when the bridge is off.
    pub fn ws_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.network.ws_listen.trim() {
            "" | "off" => Ok(None),
            a => a
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("ws_listen {a:?}: {e}")),
        }
    }

    /// The push gateway URL, or None when push is off (unset or empty).
    pub fn push_gateway(&self) -> anyhow::Result<Option<hyper::Uri>> {
        match self.push.push_gateway.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(url) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("push_gateway {url:?}: {e}"))?;
                anyhow::ensure!(
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
                    "push_gateway {url:?}: an https:// (or http://) URL with a host"
                );
                Ok(Some(uri))
            }
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
            matches!(self.messages.direct_messages.as_str(), "anyone" | "friends"),
            "direct_messages must be \"anyone\" or \"friends\", not {:?}",
            self.messages.direct_messages
        );
        let s = &self.session;
        anyhow::ensure!(s.heartbeat_secs >= 1, "heartbeat_secs must be at least 1");
        anyhow::ensure!(
            s.auth_timeout_secs >= 1,
            "auth_timeout_secs must be at least 1"
        );
        anyhow::ensure!(
            s.max_frame_bytes >= 1024,
            "max_frame_bytes must be at least 1024"
        );
        anyhow::ensure!(s.outbound_queue >= 16, "outbound_queue must be at least 16");
        anyhow::ensure!(
            s.outbound_queue_bytes >= 64 << 10,
            "outbound_queue_bytes must be at least 65536"
        );
        anyhow::ensure!(s.max_pending >= 1, "max_pending must be at least 1");
        anyhow::ensure!(
            self.groups.max_group_members >= 2,
            "max_group_members must be at least 2"
        );
        anyhow::ensure!(
            self.network.tls_cert.is_some() == self.network.tls_key.is_some(),
            "tls_cert and tls_key go together"
        );
        let a = &self.accounts;
        anyhow::ensure!(
            (8..=4 << 20).contains(&a.password_hash_memory_kib),
            "password_hash_memory_kib must be between 8 and 4194304"
        );
        anyhow::ensure!(
            (1..=64).contains(&a.password_hash_iterations),
            "password_hash_iterations must be between 1 and 64"
        );
        anyhow::ensure!(
            self.retention.retention_sweep_interval_ms >= 10,
            "retention_sweep_interval_ms must be at least 10"
        );
        self.ws_addr()?;
        self.push_gateway()?;
        Ok(())
    }

    /// The commented sample file: every section and setting with its doc, its default
    /// and its environment variable. `server/tern-server.sample.toml` is this text.
    pub fn sample() -> String {
        let defaults = toml::Value::try_from(Config::default()).expect("the config serializes");
        let mut out = String::from(
            "# tern-server sample configuration, generated from server/src/config.rs (do not\n\
             # edit by hand; `TERN_WRITE_SAMPLE=1 cargo test -p tern-server sample` rewrites it).\n\
             # Every value shown is the default: delete what you do not change.\n\
             # Use with: tern-server --config tern-server.toml\n\
             # Each key can also be set by a flag (--heartbeat-secs 10) or an environment\n\
             # variable (TERN_HEARTBEAT_SECS=10); flags win over the environment, which wins\n\
             # over this file.\n",
        );
        for (section, sdoc, settings) in catalogue() {
            out.push('\n');
            for line in sdoc.lines() {
                out.push_str(&format!("#{line}\n"));
            }
            out.push_str(&format!("[{section}]\n"));
            for (name, doc, env) in settings {
                out.push('\n');
                for line in doc.lines() {
                    out.push_str(&format!("#{line}\n"));
                }
                out.push_str(&format!(
                    "# (flag --{}, env {env})\n",
                    name.replace('_', "-")
                ));
                match defaults.get(section).and_then(|s| s.get(name)) {
                    Some(v) => out.push_str(&format!("{name} = {v}\n")),
                    None => out.push_str(&format!("# {name} =   (not set)\n")),
                }
            }
        }
        out
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
    pub edit_window_ms: u64,
    pub recall_window_ms: u64,
    pub max_ttl_secs: u64,
    /// `direct_messages = friends`: 1:1 messages only between friends.
    pub friends_only_dm: bool,
}

/// The retention rules, from the config (0 / `None`: that rule is off).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionPolicy {
    pub inbox_max_age_ms: Option<u64>,
    pub inbox_max_entries: Option<u64>,
    pub timeline_max_age_ms: Option<u64>,
    pub timeline_max_entries: Option<u64>,
    /// No timeline entry younger than this is trimmed (0: no minimum).
    pub timeline_min_age_ms: u64,
    pub sweep_interval: Duration,
}

impl RetentionPolicy {
    /// Any rule on (else the sweeper does not run).
    pub fn any(&self) -> bool {
        self.inbox_max_age_ms.is_some()
            || self.inbox_max_entries.is_some()
            || self.timeline_max_age_ms.is_some()
            || self.timeline_max_entries.is_some()
    }
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
            heartbeat: Duration::from_secs(self.session.heartbeat_secs as u64),
            auth_timeout: Duration::from_secs(self.session.auth_timeout_secs as u64),
            handshake_timeout: Duration::from_secs(self.session.handshake_timeout_secs as u64),
            max_frame_bytes: self.session.max_frame_bytes,
            outbound_queue: self.session.outbound_queue,
            outbound_queue_bytes: self.session.outbound_queue_bytes,
            max_pending: self.session.max_pending,
            shutdown_grace: Duration::from_secs(self.session.shutdown_grace_secs as u64),
        }
    }

    pub fn message_limits(&self) -> MessageLimits {
        MessageLimits {
            fanout_threshold: self.groups.group_fanout_threshold as usize,
            max_group_members: self.groups.max_group_members as usize,
            max_frame_bytes: self.session.max_frame_bytes as usize,
            edit_window_ms: self.messages.edit_window_secs.saturating_mul(1000),
            recall_window_ms: self.messages.recall_window_secs.saturating_mul(1000),
            max_ttl_secs: self.messages.max_ttl_secs,
            friends_only_dm: self.messages.direct_messages == "friends",
        }
    }

    pub fn retention_policy(&self) -> RetentionPolicy {
        let r = &self.retention;
        let on = |v: u64| (v > 0).then_some(v);
        RetentionPolicy {
            inbox_max_age_ms: on(r.retention_inbox_max_age_secs.saturating_mul(1000)),
            inbox_max_entries: on(r.retention_inbox_max_entries),
            timeline_max_age_ms: on(r.retention_timeline_max_age_secs.saturating_mul(1000)),
            timeline_max_entries: on(r.retention_timeline_max_entries),
            timeline_min_age_ms: r.retention_timeline_min_age_secs.saturating_mul(1000),
            sweep_interval: Duration::from_millis(r.retention_sweep_interval_ms),
        }
    }

    pub fn rate_limits(&self) -> crate::ratelimit::LimitSettings {
        crate::ratelimit::LimitSettings {
            conn_rate: self.limits.conn_rate_limit,
            conn_burst: self.limits.conn_rate_burst,
            user_rate: self.limits.user_rate_limit,
            user_burst: self.limits.user_rate_burst,
            login_failures_per_user: self.limits.login_failures_per_user,
            logins_per_address: self.limits.logins_per_address,
            login_window: Duration::from_secs(self.limits.login_window_secs as u64),
            max_connections: self.limits.max_connections,
            max_sessions_per_user: self.limits.max_sessions_per_user,
        }
    }
}

impl Args {
    /// Parses the process's command line; `--help` shows each setting's default.
    pub fn parse_with_defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let defaults = toml::Value::try_from(Config::default()).expect("the config serializes");
        let mut cmd = Args::command();
        for (section, _, settings) in catalogue() {
            for (name, _, _) in settings {
                if let Some(v) = defaults.get(section).and_then(|s| s.get(name)) {
                    let shown = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    cmd = cmd.mut_arg(name, |a| {
                        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                        a.help(format!("{help} [default: {shown}]"))
                    });
                }
            }
        }
        let matches = cmd.get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// Config file (or defaults), then environment and flags on top.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed sample is what the table says (rewrite it with TERN_WRITE_SAMPLE=1).
    #[test]
    fn sample_file_is_generated_from_the_table_and_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tern-server.sample.toml");
        let want = Config::sample();
        if std::env::var_os("TERN_WRITE_SAMPLE").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap();
        assert!(
            have == want,
            "{} is out of date: run TERN_WRITE_SAMPLE=1 cargo test -p tern-server sample",
            path.display()
        );
        let c: Config = toml::from_str(&have).unwrap();
        assert_eq!(c, Config::default(), "the sample documents the defaults");
    }

    #[test]
    fn flags_override_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[session]\nheartbeat_secs = 5\n[store]\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "tern-server",
            "--config",
            path.to_str().unwrap(),
            "--heartbeat-secs",
            "7",
            "--quic-listen",
            "127.0.0.1:9",
            "--ws-allowed-origins",
            "https://a.example,https://b.example",
        ]);
        let c = args.into_config().unwrap();
        assert_eq!(c.session.heartbeat_secs, 7);
        assert_eq!(c.store.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.quic_addr(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(c.tcp_addr(), c.network.listen);
        assert_eq!(
            c.network.ws_allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_rejected() {
        assert!(toml::from_str::<Config>("[session]\nhearbeat_secs = 5").is_err());
        assert!(toml::from_str::<Config>("heartbeat_secs = 5").is_err());
        assert!(toml::from_str::<Config>("[sesion]\nheartbeat_secs = 5").is_err());
    }
}
