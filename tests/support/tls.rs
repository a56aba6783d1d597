//! rustls configurations as a tern client and server use them (TLS 1.3 only, ALPN
//! `tern/1`), built from the PEM files of a server's certificate directory.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts only the CA certificate(s) in the PEM file `ca`.
pub fn client_config(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA parses")).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tern_proto::ALPN.to_vec()];
    cfg
}

/// A server configuration with the server's own certificate and key from `certs`
/// (`<data dir>/certs`: `server.pem`, `server.key`).
pub fn server_config(certs: &Path) -> rustls::ServerConfig {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server.pem parses");
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).expect("server.key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key match");
    cfg.alpn_protocols = vec![tern_proto::ALPN.to_vec()];
    cfg
}

/// The TLS server side and the TLS client side of a server's certificate directory
/// `certs` (`ca.pem`, `server.pem`, `server.key`): what a man in the middle that holds
/// the server's own key needs.
pub fn acceptor_and_connector(
    certs: &Path,
) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(certs))),
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&certs.join("ca.pem")))),
    )
}

/// A bare TLS-TCP connection to a tern server (trusting `ca`), for tests that need to
/// read and write at the same time.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(client_config(ca)))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}
