//! tern as an [`Adapter`]: the server started here ([`crate::probe::server`]: a temp
//! data dir, port 0, the flood limits lifted unless `--keep-limits`) or an external one,
//! and clients that speak raw frames over TLS-TCP or QUIC ([`net`]).
//!
//! Beyond the common part, tern brings its server's log and `/metrics`, warm-up logins
//! before the idle baseline (argon2id leaves its buffers in the allocator), and its own
//! storm ([`storm`]): devices come back by password login or token resume and pull what
//! they missed with `Sync` pages, then `Ack`; the missed messages are sent by pipelined
//! senders that honour RATE_LIMITED.

pub mod net;
mod storm;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tern_sdk::Transport;
use tokio::sync::mpsc;

use super::{Adapter, Dest, Device, Group, Hooks};
use crate::engine::clock;
use crate::engine::run::{Outbox, SenderRef, Stats};
use crate::engine::schedule::{msg_id, parse_msg_id, Nanos};
use crate::probe::server::{self, Server, Spawn};
use crate::report::Report;
use crate::scenarios::{Ctx, StormArgs};
use crate::{Global, Reconnect, TransportArg};
use net::{Connector, Fail, Live, LiveOpts};
use tern_sdk::raw::RawConnection;

/// Server flags the bench lifts by default (only those the binary's --help lists).
const LIFTED_LIMITS: &[(&str, &str)] = &[
    ("--logins-per-address", "1000000000"),
    ("--conn-rate-limit", "1000000000"),
    ("--conn-rate-burst", "1000000000"),
    ("--user-rate-limit", "1000000000"),
    ("--user-rate-burst", "1000000000"),
];

/// The `--help` text of the server binary the bench would start.
pub fn server_help(g: &Global) -> anyhow::Result<String> {
    let bin = server::resolve_bin(&g.server_bin);
    server::known_flags(&bin).with_context(|| {
        format!(
            "server binary {} (build it: cargo build --release -p tern-server)",
            bin.display()
        )
    })
}

/// Whether a `--help` text lists `flag`.
pub fn knows(help: &str, flag: &str) -> bool {
    help.contains(&format!("{flag} "))
}

pub struct Tern {
    g: Global,
    stats: Arc<Stats>,
    transport: Transport,
    srv: Mutex<Server>,
    pid: Option<u32>,
    connector: Arc<Connector>,
}

impl Tern {
    /// Starts the server with `extra` flags (or finds the external one) and a connector
    /// that binds to `sources` loopback addresses (unless `--sources` says otherwise).
    pub fn start(ctx: &Ctx, extra: &[&str], sources: Option<usize>) -> anyhow::Result<Self> {
        let g = ctx.g.clone();
        let transport = match g.transport {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Quic => Transport::Quic,
        };
        let srv = if let Some(addr) = g.server {
            let ca = g.ca.clone().context("--server needs --ca")?;
            if let (Some(pid), Some(cpu)) = (g.server_pid, g.server_cpu) {
                server::pin_process(pid, cpu)
                    .with_context(|| format!("pinning server pid {pid} to CPU {cpu}"))?;
            }
            if !extra.is_empty() {
                eprintln!(
                    "tern-bench: note: external server; it should run with {}",
                    extra.join(" ")
                );
            }
            Server::external(addr, ca, g.server_pid)
        } else {
            let help = server_help(&g)?;
            let mut args: Vec<String> = Vec::new();
            if !g.keep_limits {
                for (flag, v) in LIFTED_LIMITS {
                    if knows(&help, flag) {
                        args.extend([flag.to_string(), v.to_string()]);
                    }
                }
            }
            if let Some(h) = g.heartbeat_secs {
                args.extend(["--heartbeat-secs".into(), h.to_string()]);
            }
            if knows(&help, "--metrics-listen") {
                // The server's own counters go into each report beside the generator's.
                args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend(g.server_args.iter().cloned());
            let spawn = Spawn {
                bin: server::resolve_bin(&g.server_bin),
                args,
                cpu: g.server_cpu,
            };
            let s = Server::start(&spawn)?;
            eprintln!(
                "tern-bench: started {} (pid {}) tcp={} quic={}",
                spawn.bin.display(),
                s.pid.unwrap_or(0),
                s.tcp,
                s.quic
            );
            s
        };
        let n = g.sources.or(sources).unwrap_or(0);
        let connector = Connector::new(
            transport,
            srv.addr(transport),
            &srv.ca,
            net::loopback_sources(n),
            Duration::from_secs(10),
        )?;
        Ok(Self {
            stats: ctx.stats.clone(),
            transport,
            pid: srv.pid,
            srv: Mutex::new(srv),
            connector: Arc::new(connector),
            g,
        })
    }

    /// The started server's data dir (None: an external server).
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        self.srv.lock().unwrap().data_dir()
    }

    fn live_opts(&self, ok: &pb::LoginOk) -> LiveOpts {
        LiveOpts {
            ping_every: (ok.heartbeat_secs > 0)
                .then(|| Duration::from_secs(ok.heartbeat_secs as u64)),
            ack_every: self.g.ack_every.max(1),
            mark_read_every: self.g.mark_read_every,
        }
    }

    /// Connects as connection `i` and logs in; retried on RATE_LIMITED and failures.
    async fn login(
        &self,
        i: usize,
        user: &str,
        device: &str,
    ) -> Result<(RawConnection, pb::LoginOk), Fail> {
        net::with_retries(20, &self.stats, || async {
            let mut raw = self.connector.connect(i).await?;
            let ok = net::login(&mut raw, user, device).await?;
            Ok((raw, ok))
        })
        .await
    }

    /// A logged-in raw connection (connection number `i`), for scenarios that drive
    /// requests themselves.
    pub async fn session(
        &self,
        i: usize,
        user: &str,
        device: &str,
    ) -> anyhow::Result<RawConnection> {
        let (raw, _) = self
            .login(i, user, device)
            .await
            .map_err(|e| anyhow::anyhow!("login of {user}/{device}: {e}"))?;
        Ok(raw)
    }

    /// Registers `users`, `--login-concurrency` at a time.
    async fn register(&self, users: impl Iterator<Item = (usize, String)>) -> anyhow::Result<()> {
        let out: Vec<Result<(), Fail>> = futures_util::stream::iter(users)
            .map(|(i, u)| async move {
                net::with_retries(20, &self.stats, || async {
                    net::register(&mut self.connector.connect(i).await?, &u).await
                })
                .await
            })
            .buffer_unordered(self.g.login_concurrency)
            .collect()
            .await;
        for r in out {
            r.map_err(|e| anyhow::anyhow!("register: {e}"))?;
        }
        Ok(())
    }
}

/// Pushes and `SendAck`s of a live connection, handed to its [`Hooks`].
struct HookHandler(Hooks);

impl net::Handler for HookHandler {
    fn push(&self, me: &str, p: &pb::MessagePush, now: Nanos) {
        let (Some(m), Some(f)) = (&p.message, &self.0.on_msg) else {
            return;
        };
        // The sending device gets its own message pushed too; it is not a delivery.
        if m.sender != me {
            f(m.client_msg_id.as_bytes(), now);
        }
    }

    fn send_ack(&self, a: &pb::SendAck, now: Nanos) {
        if let (Some(t), Some((step, _, intended))) = (&self.0.acks, parse_msg_id(&a.client_msg_id))
        {
            t.ack(step, intended, now);
        }
    }
}

/// A tern connection: `Send` frames into its writer task.
struct TernSender {
    tx: mpsc::UnboundedSender<Bytes>,
    req: Arc<AtomicU64>,
    conversation: String,
    peer: String,
}

impl Outbox for TernSender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        let frame = encode_frame(&Frame {
            req_id: self.req.fetch_add(1, Ordering::Relaxed),
            body: Some(Body::Send(pb::Send {
                client_msg_id: msg_id(step, g, intended),
                conversation: self.conversation.clone(),
                peer: self.peer.clone(),
                body: body.clone(),
                content_type: String::new(),
                ..Default::default()
            })),
        });
        self.tx.send(frame).is_ok()
    }
}

impl Adapter for Tern {
    type Conn = Live;

    fn params(&self, r: &mut Report) {
        r.param("system", self.g.system.as_deref().unwrap_or("tern"));
        r.param("transport", self.transport);
        if self.g.mark_read_every > 0 {
            r.param("mark_read_every", self.g.mark_read_every);
        }
        let srv = self.srv.lock().unwrap();
        let Some(a) = &srv.args else {
            r.param("server", format!("external {}", srv.tcp));
            return;
        };
        r.param("server", format!("started {}", self.g.server_bin.display()));
        // The fixed flags (listen, ws-listen, data-dir) and the lifted limits are not
        // repeated.
        let (mut flags, mut lifted) = (Vec::new(), Vec::new());
        let mut it = a[6..].iter();
        while let Some(f) = it.next() {
            let v = it.next().cloned().unwrap_or_default();
            if LIFTED_LIMITS.iter().any(|(l, lv)| l == f && *lv == v) {
                lifted.push(f.trim_start_matches("--").to_string());
            } else {
                flags.push(format!("{f} {v}"));
            }
        }
        r.param(
            "server_flags",
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join(" ")
            },
        );
        r.param(
            "flood_limits",
            if lifted.is_empty() {
                "server defaults".into()
            } else {
                format!("lifted ({} = 1e9)", lifted.join(", "))
            },
        );
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn concurrency(&self) -> usize {
        self.g.login_concurrency
    }

    fn ack_label(&self) -> &'static str {
        "ack (intended send -> durable SendAck)"
    }

    fn connect_label(&self) -> &'static str {
        "connect + TLS/QUIC handshake + Login (argon2id) per connection"
    }

    fn supports(&self, _scenario: &str) -> bool {
        true
    }

    async fn prepare(&self, users: &[String]) -> anyhow::Result<()> {
        let t0 = std::time::Instant::now();
        self.register(users.iter().cloned().enumerate()).await?;
        eprintln!(
            "tern-bench: {} users registered in {:.1} s",
            users.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn group(&self, name: &str, members: &[String]) -> anyhow::Result<Group> {
        // The first member creates the group with everyone in it.
        let (mut creator, _) = self
            .login(0, &members[0], "bench")
            .await
            .map_err(|e| anyhow::anyhow!("login of {}: {e}", members[0]))?;
        let create = Body::CreateGroup(pb::CreateGroup {
            name: name.into(),
            members: members[1..].to_vec(),
            ..Default::default()
        });
        let conv = match net::request(&mut creator, create)
            .await
            .map_err(|e| anyhow::anyhow!("CreateGroup: {e}"))?
        {
            Body::GroupCreated(g) => g.conversation,
            other => bail!("CreateGroup answered {}", tern_proto::body_name(&other)),
        };
        let list = Body::ListConversations(pb::ListConversations::default());
        let info = match net::request(&mut creator, list)
            .await
            .map_err(|e| anyhow::anyhow!("ListConversations: {e}"))?
        {
            Body::ConversationList(l) => {
                l.conversations.into_iter().find(|c| c.conversation == conv)
            }
            _ => None,
        }
        .context("the new group is not in the creator's conversation list")?;
        let mode = if info.read_diffusion {
            "read diffusion (no inbox copies; pushes to online members)"
        } else {
            "write diffusion (an inbox entry per member)"
        };
        eprintln!(
            "tern-bench: group {conv} with {} members: {mode}",
            info.member_count
        );
        Ok(Group {
            name: conv,
            mode: Some(if info.read_diffusion {
                "read-diffusion"
            } else {
                "write-diffusion"
            }),
            note: format!(
                "group mode: {mode}; the server's fan-out threshold decides (default 500 members: larger groups use read diffusion)"
            ),
        })
    }

    async fn connect(
        &self,
        i: usize,
        user: &str,
        device: &str,
        _groups: &[String],
        hooks: Hooks,
    ) -> anyhow::Result<Live> {
        let (raw, ok) = self
            .login(i, user, device)
            .await
            .map_err(|e| anyhow::anyhow!("{user}/{device}: {e}"))?;
        Ok(Live::start(
            raw,
            ok.username.clone(),
            self.live_opts(&ok),
            Arc::new(HookHandler(hooks)),
            self.stats.clone(),
        ))
    }

    fn outbox(&self, conn: &Live, dest: Dest) -> SenderRef {
        let (tx, req) = conn.sender();
        let (conversation, peer) = match dest {
            Dest::User(u) => (String::new(), u),
            Dest::Group(c) => (c, String::new()),
        };
        Arc::new(TernSender {
            tx,
            req,
            conversation,
            peer,
        })
    }

    fn alive(&self, conn: &Live) -> bool {
        conn.alive.load(Ordering::Relaxed)
    }

    fn notes(&self, r: &mut Report) {
        let (n, first) = self.srv.lock().unwrap().log_problems(3);
        if n > 0 {
            r.notes.push(format!(
                "server log has {n} warning/error lines; first: {}",
                first.join(" | ")
            ));
        }
    }

    fn server_exited(&self) -> bool {
        !self.srv.lock().unwrap().alive()
    }

    fn devices_per_user(&self, asked: usize) -> usize {
        asked
    }

    fn default_heartbeat(&self) -> &'static str {
        "server default"
    }

    fn idle_params(&self, r: &mut Report, dpu: usize, users: usize) {
        r.param("devices_per_user", dpu)
            .param("users", users)
            .param("source_addresses", self.connector.sources.len())
            .param("login_concurrency", self.g.login_concurrency);
    }

    /// Warm-up logins at the same concurrency as the ramp, on one extra user whose
    /// connections are closed again: the server's blocking threads and their allocator
    /// arenas grow to what the ramp will use before the baseline is read.
    async fn warm_up(&self, run: &str) -> anyhow::Result<Option<String>> {
        let warm_user = format!("{run}-warm");
        let warm = (4 * self.g.login_concurrency).max(100);
        self.register(std::iter::once((0, warm_user.clone())))
            .await?;
        let warmed: Vec<Result<(), Fail>> = futures_util::stream::iter(0..warm)
            .map(|i| {
                let warm_user = &warm_user;
                async move {
                    net::with_retries(20, &self.stats, || async {
                        let mut raw = self.connector.connect(i).await?;
                        net::login(&mut raw, warm_user, &format!("w{}", i % 8)).await?;
                        Ok(())
                    })
                    .await
                }
            })
            .buffer_unordered(self.g.login_concurrency.min(8))
            .collect()
            .await;
        for r in warmed {
            r.map_err(|e| anyhow::anyhow!("warm-up login: {e}"))?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Some(format!(
            "rss_before is read after the accounts were registered and {warm} warm-up logins (argon2id's 19 MiB \
             buffers stay in the server's allocator arenas), before any of the N connections; \
             ramp time excludes the 1 s pause at N/2"
        )))
    }

    fn storm_params(&self, a: &StormArgs, r: &mut Report) {
        r.param("reconnect", format!("{:?}", a.reconnect).to_lowercase())
            .param("sync_page", a.page);
    }

    fn storm_labels(&self, a: &StormArgs) -> (String, String) {
        (
            "device complete (storm start -> device has synced all it missed)".into(),
            format!("connect + {:?} (first successful attempt)", a.reconnect).to_lowercase(),
        )
    }

    async fn enroll(&self, i: usize, user: &str, a: &StormArgs) -> anyhow::Result<Option<String>> {
        // Registered by `prepare`; resume needs one login for its token.
        if a.reconnect != Reconnect::Resume {
            return Ok(None);
        }
        let (_, ok) = self
            .login(i, user, "phone")
            .await
            .map_err(|e| anyhow::anyhow!("device setup: {e}"))?;
        Ok(Some(ok.token))
    }

    async fn fill(
        &self,
        writers: &[String],
        devices: &[String],
        a: &StormArgs,
    ) -> anyhow::Result<(u64, f64)> {
        let mut opened = Vec::new();
        for (j, w) in writers.iter().enumerate() {
            let (raw, _) = self
                .login(j, w, "bench")
                .await
                .map_err(|e| anyhow::anyhow!("storm sender {w}: {e}"))?;
            opened.push(raw);
        }
        let send_start = clock::now();
        let mut tasks = Vec::new();
        for (j, raw) in opened.into_iter().enumerate() {
            let plan: Vec<String> = devices
                .iter()
                .enumerate()
                .filter(|(i, _)| i % writers.len() == j)
                .map(|(_, n)| n.clone())
                .collect();
            tasks.push(tokio::spawn(storm::storm_send(
                raw,
                j,
                plan,
                a.missed,
                a.window,
                self.stats.clone(),
            )));
        }
        let mut sent = 0u64;
        for t in tasks {
            sent += t.await?.map_err(|e| anyhow::anyhow!("storm sender: {e}"))?;
        }
        Ok((sent, clock::secs(clock::now() - send_start)))
    }

    async fn catch_up(
        &self,
        i: usize,
        user: String,
        token: Option<String>,
        a: &StormArgs,
        deadline: tokio::time::Instant,
        stats: Arc<Stats>,
    ) -> Device {
        storm::storm_device(
            &self.connector,
            i,
            user,
            token,
            a.missed as u64,
            a.page,
            deadline,
            stats,
        )
        .await
    }
}

/// The idle scenario's `--reconnect resume`: a device's first login (held, its token
/// kept), then its reconnect as the SDK makes it after a network change: connection `i`
/// again (its own TLS config, so the session ticket of the first connection is offered)
/// and a `Resume` with the token.
impl crate::scenarios::idle::Resumable for Tern {
    async fn login_for_token(
        &self,
        i: usize,
        user: &str,
        device: &str,
    ) -> anyhow::Result<(Live, String)> {
        let (raw, ok) = self
            .login(i, user, device)
            .await
            .map_err(|e| anyhow::anyhow!("{user}/{device}: {e}"))?;
        let token = ok.token.clone();
        let live = Live::start(
            raw,
            ok.username.clone(),
            self.live_opts(&ok),
            Arc::new(HookHandler(Hooks::default())),
            self.stats.clone(),
        );
        Ok((live, token))
    }

    async fn resume(&self, i: usize, token: &str) -> anyhow::Result<Live> {
        // Retried (RATE_LIMITED, connect failures) with the same token: it rotates only
        // when a Resume succeeds, and then there is no retry.
        let (raw, ok) = net::with_retries(20, &self.stats, || async {
            let mut raw = self.connector.connect(i).await?;
            let ok = net::resume(&mut raw, token).await?;
            Ok((raw, ok))
        })
        .await
        .map_err(|e| anyhow::anyhow!("resume of connection {i}: {e}"))?;
        Ok(Live::start(
            raw,
            ok.username.clone(),
            self.live_opts(&ok),
            Arc::new(HookHandler(Hooks::default())),
            self.stats.clone(),
        ))
    }
}
