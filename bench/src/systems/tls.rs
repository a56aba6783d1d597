//! TLS for the peers that support it and for the bare relay: certificates made at run
//! time (`tern-bench make-certs DIR`, into the peer's temp dir, never committed) and the
//! client and server configurations, both TLS 1.3 only with rustls's ring provider, as
//! tern's own.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts only the CA in `ca` (PEM), TLS 1.3 only.
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("parsing {}", ca.display()))?)
            .context("adding the CA")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The relay's side: the certificate chain in `cert` and the key in `key` (PEM), TLS 1.3
/// only.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

/// The name the server's certificate is checked against: the peer's IP address.
pub fn server_name(addr: std::net::SocketAddr) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(addr.ip().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_certificates_load_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        tern_server::certs::make_dev_certs(dir.path()).unwrap();
        client_config(&dir.path().join("ca.pem")).unwrap();
        server_config(
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .unwrap();
    }
}
