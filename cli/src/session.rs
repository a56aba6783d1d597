//! From global flags to a running SDK client: resolving `--server`, loading the CA, reading
//! the profile, starting [`Client`], and watching its [`Event`]s for what every command
//! cares about (first connection within the deadline, reconnects, lost authentication).

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tern_proto::names;
use tern_sdk::{
    Client, ClientConfig, ClientError, ConfirmMode, ConnectOptions, Credentials, Event, Events,
    StateStore, TransportMode, Trust,
};
use tokio::time::Instant;

use crate::error::{Failure, Kind};
use crate::output;
use crate::profile::{self, Profile, ProfileStore};

pub const DEFAULT_SERVER: &str = "127.0.0.1:7443";
/// The CA a server started in the current directory makes for itself.
pub const LOCAL_CA: &str = "tern-data/certs/ca.pem";
/// How long a request-style command waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `close()` may take before the CLI exits anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The global flags, as every command sees them.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub server: Option<String>,
    pub ca: Option<PathBuf>,
    pub transport: TransportMode,
    pub profile: Option<PathBuf>,
    pub json: bool,
    pub verbose: bool,
    pub connect_timeout: Duration,
}

impl Ctx {
    pub fn profile_path(&self) -> Result<PathBuf> {
        self.profile
            .clone()
            .or_else(profile::default_path)
            .ok_or_else(|| {
                Failure::usage(
                    "no place for the profile: pass --profile FILE (or set TERN_PROFILE)",
                )
            })
    }

    /// `--server`, else the profile's server, else the default.
    pub fn server_for(&self, profile: Option<&Profile>) -> String {
        self.server
            .clone()
            .or_else(|| profile.map(|p| p.server.clone()).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
    }

    /// The CA to trust: `--ca`/TERN_CA, else ./tern-data/certs/ca.pem if it exists.
    pub fn trust(&self) -> Result<Trust> {
        let path = match &self.ca {
            Some(p) => p.clone(),
            None if Path::new(LOCAL_CA).exists() => PathBuf::from(LOCAL_CA),
            None => {
                return Err(Failure::usage(format!(
                    "no CA certificate to trust: pass --ca FILE (or set TERN_CA); \
                     ./{LOCAL_CA} does not exist"
                )))
            }
        };
        Trust::from_pem_file(&path).map_err(|e| Failure::usage(e.to_string()))
    }

    /// Connection options for one-off requests (register, login).
    pub fn connect_options(&self, endpoint: &Endpoint) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new(self.trust()?);
        opts.server_name = endpoint.host.clone();
        Ok(opts)
    }
}

/// A resolved `HOST:PORT`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given, for messages.
    pub given: String,
    /// The TLS server name.
    pub host: String,
    pub addr: SocketAddr,
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
pub fn split_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || Failure::usage(format!("--server must be HOST:PORT, not {s:?}"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(Failure::usage(format!(
                "write IPv6 addresses as [ADDR]:PORT, not {s:?}"
            )));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

pub async fn resolve(server: &str) -> Result<Endpoint> {
    let (host, port) = split_host_port(server)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Failure::unreachable(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| Failure::unreachable(format!("{host} has no address")))?;
    Ok(Endpoint {
        given: server.to_string(),
        host,
        addr,
    })
}

/// What the CLI remembers of the SDK's events.
pub struct Session {
    pub events: Events,
    client: Client,
    pub endpoint: Endpoint,
    pub profile_path: PathBuf,
    store: ProfileStore,
    started: Instant,
    connect_timeout: Duration,
    pub ever_connected: bool,
    last_reason: Option<String>,
    /// Print connection changes on stderr.
    status: bool,
}

/// Whether the SDK's cursor moves are written to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursors {
    /// `tern sync`, `tern chat`: what they printed is done.
    Save,
    /// Everything else: leave the messages for `tern sync`.
    Keep,
}

impl Session {
    /// Loads the profile and starts the SDK client. The profile needs a token, or
    /// TERN_PASSWORD must be set (the SDK logs in with it when the token is gone or no
    /// longer accepted).
    pub async fn start(ctx: &Ctx, cursors: Cursors, status: bool) -> Result<(Client, Session)> {
        let profile_path = ctx.profile_path()?;
        let password = std::env::var("TERN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        let mut profile = Profile::load(&profile_path)?
            .filter(|p| !p.username.is_empty() && !p.device.is_empty())
            .ok_or_else(Failure::not_logged_in)?;
        let state = profile::open_state(&profile_path, &mut profile)?;
        let store = ProfileStore::new(profile_path.clone(), state, cursors == Cursors::Save);
        if store.clone().load()?.token.is_none() && password.is_none() {
            return Err(Failure::not_logged_in());
        }
        let endpoint = resolve(&ctx.server_for(Some(&profile))).await?;
        let credentials = Credentials {
            username: profile.username.clone(),
            password,
            device: profile.device.clone(),
        };
        let mut config = ClientConfig::new(
            endpoint.addr,
            ctx.trust()?,
            credentials,
            Box::new(store.clone()),
        );
        config.server_name = endpoint.host.clone();
        config.transport = ctx.transport;
        // Only the commands that show messages (sync, chat) receive; the others neither
        // download the backlog nor move the cursors.
        config.receive = cursors == Cursors::Save;
        // What they receive is kept in profile.db with the cursors that cover it, in one
        // transaction, before it is printed: after a crash either both are there (it is
        // not printed again; `tern history` shows it) or neither (it comes again).
        if cursors == Cursors::Save {
            config.confirm = ConfirmMode::Store;
        }
        let (client, events) = Client::start(config);
        let session = Session {
            events,
            client: client.clone(),
            endpoint,
            profile_path,
            store,
            started: Instant::now(),
            connect_timeout: ctx.connect_timeout,
            ever_connected: false,
            last_reason: None,
            status: status || ctx.verbose,
        };
        Ok((client, session))
    }

    /// The error for "never connected".
    pub fn unreachable(&self) -> anyhow::Error {
        Failure::unreachable(format!(
            "cannot reach server at {}: {}",
            self.endpoint.given,
            self.last_reason
                .as_deref()
                .unwrap_or("no connection within the time limit")
        ))
    }

    /// Notes an event; an error for the events that end the command.
    fn observe(&mut self, ev: &Event) -> Result<()> {
        match ev {
            Event::Connected {
                transport,
                username,
                device,
            } => {
                self.ever_connected = true;
                if self.status {
                    output::status(&format!(
                        "-- connected over {transport} as {username} ({device}) --"
                    ));
                }
            }
            Event::Reconnecting {
                reason, retry_in, ..
            } => {
                if self.status {
                    output::status(&format!(
                        "-- reconnecting ({reason}), retry in {:.1}s --",
                        retry_in.as_secs_f64()
                    ));
                }
                self.last_reason = Some(reason.clone());
            }
            Event::AuthLost { code, message } => return Err(Failure::auth_lost(*code, message)),
            Event::Replaced => {
                return Err(Failure::generic(
                    "REPLACED",
                    format!(
                        "stopped: device {:?} of {} logged in elsewhere (give each tern its own --device)",
                        self.client.device(),
                        self.client.username()
                    ),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The next event. Fails when the first connection does not come within the
    /// connect timeout, when authentication is lost, or when the client stopped.
    /// Cancel-safe: usable as a `select!` branch.
    pub async fn next_event(&mut self) -> Result<Event> {
        let ev = if self.ever_connected {
            self.events.next().await
        } else {
            let deadline = self.started + self.connect_timeout;
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(ev) => ev,
                Err(_) => return Err(self.unreachable()),
            }
        };
        match ev {
            Some(ev) => {
                self.observe(&ev)?;
                Ok(ev)
            }
            None => Err(Failure::generic("STOPPED", "the client stopped")),
        }
    }

    /// Why the client stopped, read from its remaining events (AuthLost, Replaced…).
    pub async fn stopped_error(&mut self) -> anyhow::Error {
        loop {
            match tokio::time::timeout(Duration::from_secs(2), self.events.next()).await {
                Ok(Some(ev)) => {
                    if let Err(e) = self.observe(&ev) {
                        return e;
                    }
                }
                Ok(None) | Err(_) => {
                    return Failure::generic("STOPPED", "the client stopped unexpectedly")
                }
            }
        }
    }

    /// Runs one request while watching events: waits for the first connection (at most
    /// the connect timeout), then at most [`REQUEST_TIMEOUT`] in all. With `retry`, a
    /// request cut by a lost connection is made again (for reads and idempotent writes).
    pub async fn request<T, F, Fut>(&mut self, what: &str, retry: bool, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut fut = Box::pin(call());
        loop {
            tokio::select! {
                biased;
                ev = self.next_event() => { ev?; }
                r = &mut fut => match r {
                    Ok(v) => return Ok(v),
                    Err(ClientError::ConnectionLost) if retry => fut = Box::pin(call()),
                    Err(ClientError::Stopped(_)) => return Err(self.stopped_error().await),
                    Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(if self.ever_connected {
                        Failure::error(
                            Kind::Unreachable,
                            "TIMEOUT",
                            format!("{what}: no answer from {} within {}s", self.endpoint.given, REQUEST_TIMEOUT.as_secs()),
                        )
                    } else {
                        self.unreachable()
                    });
                }
            }
        }
    }

    /// Stops the client: acks what was delivered and saves the profile. Returns the
    /// events that came after the command stopped reading: messages among them are
    /// already counted in the saved cursor, so a command that prints messages must print
    /// them too. Then, if some of the sends this command queued were never acknowledged,
    /// removes them from the profile's outbox (the command reports them as not sent, so a
    /// later command must not send them behind the user's back); returns how many.
    pub async fn close(mut self, unconfirmed: &HashSet<String>) -> (Vec<Event>, usize) {
        let mut rest = Vec::new();
        if tokio::time::timeout(CLOSE_TIMEOUT, self.client.close())
            .await
            .is_ok()
        {
            // The loop delivers what it still had, saves last, then ends the stream.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(ev) = self.events.next().await {
                    rest.push(ev);
                }
            })
            .await;
        }
        if unconfirmed.is_empty() {
            return (rest, 0);
        }
        match self.store.forget(unconfirmed) {
            Ok(n) => (rest, n),
            Err(e) => {
                output::status(&format!(
                    "tern: warning: cannot update {}: {e}",
                    self.profile_path.display()
                ));
                (rest, 0)
            }
        }
    }
}

/// Completes when the user asks the command to stop (Ctrl-C, or SIGTERM on Unix).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reads stdin on its own thread, one message per line (raw bytes, without the line
/// end). A thread rather than `tokio::io::stdin`, whose blocking read can keep the
/// runtime from shutting down; the bounded channel applies backpressure to the reader.
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut buf = Vec::new();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                    }
                    if tx.blocking_send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// Checks a user name with the server's rule (`tern_proto::names::username`).
pub fn check_username(name: &str) -> Result<()> {
    names::username(name)
        .map_err(|e| Failure::usage(format!("invalid user name {name:?}: use {}", e.rule())))
}

/// Checks a device name with the server's rule (`tern_proto::names::device`).
pub fn check_device(name: &str) -> Result<()> {
    names::device(name)
        .map_err(|e| Failure::usage(format!("invalid device name {name:?}: use {}", e.rule())))
}

/// The default device name: `cli-` and the host name, made a valid device name.
pub fn default_device() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match host {
        None => "cli".to_string(),
        Some(h) => {
            let clean: String = h
                .chars()
                .map(|c| {
                    if c.is_ascii() && names::is_device_byte(c as u8) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(60)
                .collect();
            format!("cli-{clean}")
        }
    }
}

/// Reads the profile for commands that only need to know it exists (context added).
pub fn read_profile(ctx: &Ctx) -> Result<(PathBuf, Option<Profile>)> {
    let path = ctx.profile_path()?;
    let p = Profile::load(&path).context("reading the profile")?;
    Ok((path, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:7443").unwrap(),
            ("127.0.0.1".into(), 7443)
        );
        assert_eq!(
            split_host_port("chat.example.org:1").unwrap(),
            ("chat.example.org".into(), 1)
        );
        assert_eq!(split_host_port("[::1]:7443").unwrap(), ("::1".into(), 7443));
        for bad in [
            "localhost",
            "::1:7443",
            ":7443",
            "host:99999",
            "host:x",
            "[::1]",
        ] {
            let e = split_host_port(bad).unwrap_err();
            assert_eq!(crate::error::classify(&e).0, Kind::Usage, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(check_username("bob.smith-2").is_ok());
        for bad in ["", "Bob", "-bob", "bob smith", &"x".repeat(33)] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_device("Laptop_1.x").is_ok());
        assert!(check_device("my laptop").is_err());
        assert!(check_device(&default_device()).is_ok());
        // The rules are tern-proto's; the wording around them is the CLI's own.
        assert_eq!(
            check_username("Bob").unwrap_err().to_string(),
            "invalid user name \"Bob\": use 1-32 of a-z 0-9 _ . - starting with a letter or digit"
        );
        assert_eq!(
            check_device("my laptop").unwrap_err().to_string(),
            "invalid device name \"my laptop\": use 1-64 of A-Z a-z 0-9 _ . -"
        );
    }
}
