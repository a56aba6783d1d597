//! Opening a framed connection to a tern server over QUIC or TLS-over-TCP.
//!
//! Both give the same thing: a stream of decoded frames in and a byte sink for encoded
//! frames out, so everything above this module is transport-agnostic.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tern_proto::codec::Decoded;
use tern_proto::{encode_frame, CodecError, Frame, FrameCodec, ALPN, DEFAULT_MAX_FRAME};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read CA certificate {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot reach {addr} over {transport}: {reason}")]
    Unreachable {
        addr: SocketAddr,
        transport: Transport,
        reason: String,
    },
    #[error("connecting to {addr} over {transport} timed out")]
    Timeout {
        addr: SocketAddr,
        transport: Transport,
    },
}

/// The certificates a client trusts, and the TLS client configuration built from them.
///
/// The configuration is built once and shared by every connection made with this `Trust`
/// (and its clones), so its TLS session cache carries over: a reconnect resumes the TLS
/// session with the ticket the server gave on the previous connection, which skips the
/// certificate, its verification and the server's signature.
#[derive(Clone)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
}

impl Trust {
    /// Trusts the CA certificates in a PEM file (such as the server's dev CA).
    pub fn from_pem_file(path: &Path) -> Result<Self, ConnectError> {
        let err = |reason: String| ConnectError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
            let cert = cert.map_err(|e| err(e.to_string()))?;
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(err("no certificate in file".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            config: Arc::new(cfg),
        })
    }

    /// The shared client configuration (with its session cache).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// An open connection: frames in, encoded frames out.
pub struct Connection {
    pub transport: Transport,
    frames: FramedRead<BoxRead, FrameCodec>,
    writer: BoxWrite,
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
}

/// Options for [`connect`].
#[derive(Clone)]
pub struct ConnectOptions {
    pub trust: Trust,
    /// Name the server's certificate must carry.
    pub server_name: String,
    pub timeout: Duration,
    /// QUIC keep-alive; keeps NAT bindings and the server's idle timer fresh.
    pub keep_alive: Duration,
    pub max_frame: usize,
}

impl ConnectOptions {
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            server_name: "localhost".into(),
            timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Connects over one transport.
pub async fn connect(
    transport: Transport,
    addr: SocketAddr,
    opts: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        addr,
        transport,
        reason,
    };
    let work = async {
        match transport {
            Transport::Tcp => {
                let cfg = opts.trust.client_config();
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from(opts.server_name.clone())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                let (r, w) = tokio::io::split(tls);
                Ok(Connection {
                    transport,
                    frames: FramedRead::new(
                        Box::pin(r) as BoxRead,
                        FrameCodec::new(opts.max_frame),
                    ),
                    writer: Box::pin(w),
                    quic: None,
                })
            }
            Transport::Quic => {
                let cfg = opts.trust.client_config();
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                let mut t = quinn::TransportConfig::default();
                t.keep_alive_interval(Some(opts.keep_alive));
                client.transport_config(Arc::new(t));
                let bind: SocketAddr = if addr.is_ipv6() {
                    "[::]:0".parse().unwrap()
                } else {
                    "0.0.0.0:0".parse().unwrap()
                };
                let mut endpoint =
                    quinn::Endpoint::client(bind).map_err(|e| unreachable(e.to_string()))?;
                endpoint.set_default_client_config(client);
                let conn = endpoint
                    .connect(addr, &opts.server_name)
                    .map_err(|e| unreachable(e.to_string()))?
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                Ok(Connection {
                    transport,
                    frames: FramedRead::new(
                        Box::pin(recv) as BoxRead,
                        FrameCodec::new(opts.max_frame),
                    ),
                    writer: Box::pin(send),
                    quic: Some((endpoint, conn)),
                })
            }
        }
    };
    match tokio::time::timeout(opts.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout { addr, transport }),
    }
}

/// The receiving half of a split [`Connection`].
pub type FrameReader = FramedRead<BoxRead, FrameCodec>;

/// Keeps a QUIC endpoint and connection alive while the halves are in use; closes the
/// connection when told to or dropped.
pub struct ConnectionGuard {
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
}

impl ConnectionGuard {
    pub fn close(&mut self) {
        if let Some((_endpoint, conn)) = &self.quic {
            conn.close(0u32.into(), b"client closed");
        }
    }

    /// Closes QUIC and waits (up to 1 s) for the close to reach the server, as
    /// [`Connection::close`] does.
    pub async fn close_and_wait(&mut self) {
        if let Some((endpoint, conn)) = self.quic.take() {
            conn.close(0u32.into(), b"client closed");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.close();
    }
}

impl Connection {
    /// Splits into a frame reader, a byte writer and a guard that owns the connection.
    pub fn into_split(self) -> (FrameReader, BoxWrite, ConnectionGuard) {
        (
            self.frames,
            self.writer,
            ConnectionGuard { quic: self.quic },
        )
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.send_raw(&encode_frame(frame)).await
    }

    /// Writes bytes as they are (already length-prefixed frames, or anything at all).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Writes many encoded frames with one flush.
    pub async fn send_many(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        for f in frames {
            self.writer.write_all(f).await?;
        }
        self.writer.flush().await
    }

    /// The next frame; `None` when the server closed the stream.
    pub async fn recv(&mut self) -> Option<Result<Decoded, CodecError>> {
        self.frames.next().await
    }

    /// Closes the write side and, for QUIC, the connection.
    pub async fn close(mut self) {
        let _ = self.writer.shutdown().await;
        if let Some((endpoint, conn)) = self.quic.take() {
            conn.close(0u32.into(), b"client closed");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}
