//! TLS over TCP: binding (with a deep accept backlog) and the per-connection handshake
//! and session.

use std::net::SocketAddr;
use std::sync::Arc;

use tern_proto::FrameCodec;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::codec::FramedRead;

use super::{Handler, READ_BUFFER_START};
use crate::services::Services;
use crate::session::{run_session, StreamWriter};

/// Pending connections the kernel may queue before accept. The std default (128) drops
/// SYNs when thousands of devices reconnect at once, and each dropped SYN costs its client
/// a 1 s, then 3 s, retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted server can bind while old connections linger.
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// TLS, then a session over the TLS stream.
#[derive(Clone)]
pub(crate) struct TlsTcp {
    pub tls: tokio_rustls::TlsAcceptor,
    pub services: Arc<Services>,
}

impl Handler for TlsTcp {
    type Conn = TcpStream;
    /// Boxed: a TLS stream is a few KiB inline (rustls's connection state), and every
    /// future that takes it by value (this `serve`, the connection's task around it) would
    /// be sized for it for the connection's whole life, although `serve` moves it into
    /// the heap-allocated split halves at once (docs/BENCHMARKS.md, idle memory).
    type Ready = Box<TlsStream<TcpStream>>;
    const NAME: &'static str = "TCP";

    async fn handshake(&self, conn: TcpStream) -> Result<Self::Ready, String> {
        super::tls::accept(&self.tls, conn)
            .await
            .map(Box::new)
            .map_err(|e| e.to_string())
    }

    async fn serve(&self, stream: Self::Ready, peer: SocketAddr) {
        if stream.get_ref().1.alpn_protocol() != Some(tern_proto::ALPN) {
            refuse_without_alpn(stream).await;
            return;
        }
        let (r, w) = tokio::io::split(*stream);
        let frames = FramedRead::with_capacity(
            r,
            FrameCodec::new(self.services.limits.max_frame_bytes as usize),
            READ_BUFFER_START,
        );
        run_session(
            self.services.clone(),
            frames,
            StreamWriter::new(w),
            "tcp",
            Some(peer.ip()),
        )
        .await;
    }
}

/// A TLS client that did not offer ALPN `tern/1` (one that offers only other protocols
/// is refused by rustls during the handshake with the `no_application_protocol` alert):
/// it gets `Closing{PROTOCOL_ERROR}` saying why, and the connection ends.
async fn refuse_without_alpn(mut stream: Box<TlsStream<TcpStream>>) {
    use tokio::io::AsyncWriteExt;
    let frame = tern_proto::encode_frame(&tern_proto::closing_frame(
        tern_proto::pb::CloseReason::ProtocolError,
        "the TLS client offered no ALPN: offer tern/1",
        0,
    ));
    crate::metrics::get().frames_out.inc();
    let _ = stream.write_all(&frame).await;
    let _ = stream.shutdown().await;
}
