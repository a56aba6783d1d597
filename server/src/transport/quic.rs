//! QUIC: the endpoint (keys derived from the data dir's secret) and the per-connection
//! handshake and session, one bidirectional stream per session (a further stream is
//! answered with `Closing{PROTOCOL_ERROR}` and finished).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tern_proto::FrameCodec;
use tokio_util::codec::FramedRead;

use super::{Handler, Listener, READ_BUFFER_START};
use crate::services::Services;
use crate::session::{run_session, StreamWriter};

pub(crate) fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The QUIC endpoint on `udp`. `secret` (the store's signing key) seeds the
/// stateless-reset and connection-id keys.
pub(crate) fn endpoint(
    udp: std::net::UdpSocket,
    tls: Arc<rustls::ServerConfig>,
    heartbeat: Duration,
    secret: [u8; 32],
) -> anyhow::Result<quinn::Endpoint> {
    let quic_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).context("QUIC needs TLS 1.3")?;
    let mut quic_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    let mut transport = quinn::TransportConfig::default();
    // The idle timeout is the liveness rule of PROTOCOL.md, as the session's own check.
    let idle = tern_proto::liveness_timeout(heartbeat);
    transport.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle)?));
    // The session's stream, and room for one more that is answered and closed at once
    // (see `refuse_extra_streams`) instead of leaving its opener waiting for credit.
    transport.max_concurrent_bidi_streams(2u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    quic_config.transport_config(Arc::new(transport));
    // The stateless-reset key and the connection-id key come from the data dir's secret,
    // so a restarted server (even after kill -9) recognises the connection ids it handed
    // out before and answers them with a valid stateless reset: clients learn at once
    // that their connection is gone instead of waiting for the idle timeout.
    let derive = |label: &[u8]| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret)
            .expect("HMAC accepts any key length");
        mac.update(label);
        mac.finalize().into_bytes()
    };
    let reset_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &derive(b"tern quic stateless reset v1"),
    );
    let cid_key = u64::from_be_bytes(
        derive(b"tern quic connection id v1")[..8]
            .try_into()
            .expect("a SHA-256 MAC has 8 bytes"),
    );
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(quinn::Endpoint::new(
        endpoint_config,
        Some(quic_config),
        udp,
        Arc::new(quinn::TokioRuntime),
    )?)
}

impl Listener for quinn::Endpoint {
    type Conn = quinn::Incoming;
    async fn next(&mut self) -> Option<std::io::Result<(Self::Conn, SocketAddr)>> {
        let incoming = self.accept().await?;
        let peer = incoming.remote_address();
        Some(Ok((incoming, peer)))
    }
}

/// The QUIC handshake and the session's stream, then a session over it.
#[derive(Clone)]
pub(crate) struct Quic {
    pub services: Arc<Services>,
}

impl Handler for Quic {
    type Conn = quinn::Incoming;
    type Ready = (quinn::Connection, quinn::SendStream, quinn::RecvStream);
    const NAME: &'static str = "QUIC";

    fn refuse(conn: quinn::Incoming) {
        conn.refuse();
    }

    async fn handshake(&self, incoming: quinn::Incoming) -> Result<Self::Ready, String> {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        Ok((conn, send, recv))
    }

    async fn serve(&self, (conn, send, recv): Self::Ready, peer: SocketAddr) {
        let extra = tokio::spawn(refuse_extra_streams(conn.clone()));
        let frames = FramedRead::with_capacity(
            recv,
            FrameCodec::new(self.services.limits.max_frame_bytes as usize),
            READ_BUFFER_START,
        );
        run_session(
            self.services.clone(),
            frames,
            StreamWriter::new(send),
            "quic",
            Some(peer.ip()),
        )
        .await;
        extra.abort();
        // The stream is finished; give the client a moment to read the last frames and
        // close, then close ourselves.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
        conn.close(0u32.into(), b"session ended");
    }
}

/// A session runs on the connection's first bidirectional stream only. Every further one
/// gets `Closing{PROTOCOL_ERROR}` saying so and is finished; the session goes on.
async fn refuse_extra_streams(conn: quinn::Connection) {
    let frame = tern_proto::encode_frame(&tern_proto::closing_frame(
        tern_proto::pb::CloseReason::ProtocolError,
        "one stream per connection: the session runs on the first one",
        0,
    ));
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let _ = recv.stop(0u32.into());
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
    }
}
