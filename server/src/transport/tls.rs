//! TLS material: a configured certificate chain and key, or a dev CA and a server
//! certificate for localhost made in the data dir on first start (never committed).
//! The same rustls config (TLS 1.3 only, ALPN `tern/1`, no 0-RTT) serves TLS-TCP and QUIC.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::store::durable_file::{sync_dir, write_durably};

/// Where the dev CA's certificate is written (clients trust it with `--ca`).
pub fn dev_ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("certs").join("ca.pem")
}

pub(crate) struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Set when a dev CA is in use.
    pub dev_ca: Option<PathBuf>,
}

pub(crate) fn load_or_create(config: &Config) -> anyhow::Result<TlsMaterial> {
    if let (Some(cert), Some(key)) = (&config.network.tls_cert, &config.network.tls_key) {
        return Ok(TlsMaterial {
            chain: read_chain(cert)?,
            key: PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading private key {}", key.display()))?,
            dev_ca: None,
        });
    }
    let dir = config.store.data_dir.join("certs");
    let ca = dev_ca_path(&config.store.data_dir);
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    if !(ca.exists() && cert.exists() && key.exists()) {
        make_dev_certs(&dir)?;
    }
    Ok(TlsMaterial {
        chain: read_chain(&cert)?,
        key: PrivateKeyDer::from_pem_file(&key)
            .with_context(|| format!("reading private key {}", key.display()))?,
        dev_ca: Some(ca),
    })
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", path.display());
    Ok(chain)
}

/// Makes `ca.pem`/`ca.key` and a `server.pem`/`server.key` for localhost, 127.0.0.1, ::1.
pub fn make_dev_certs(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tern development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;

    // Each file is whole or absent after a crash or power cut; `ca.pem` last, so a
    // present CA means the rest is there too (load_or_create checks all of them anyway).
    let write = |name: &str, text: &str, private: bool| {
        let path = dir.join(name);
        write_durably(&path, text.as_bytes(), private)
            .with_context(|| format!("writing {}", path.display()))
    };
    write("ca.key", &ca_key.serialize_pem(), true)?;
    write("server.key", &server_key.serialize_pem(), true)?;
    write("server.pem", &server_cert.pem(), false)?;
    write("ca.pem", &ca_cert.pem(), false)?;
    // The certs dir's own entry in its parent.
    if let Some(parent) = dir.parent() {
        sync_dir(parent).with_context(|| format!("syncing {}", parent.display()))?;
    }
    Ok(())
}

/// TLS 1.3 only, ALPN `tern/1`, 0-RTT off (max_early_data_size stays 0).
///
/// Session tickets are stateless (encrypted with a key that lives in memory and
/// rotates): any number of devices can resume on reconnect without the certificate and
/// its verification, and the server keeps no per-session state for it (rustls's default
/// is a stateful cache of 256 sessions). After a restart tickets are refused and devices
/// do a full handshake.
pub(crate) fn server_tls_config(m: &TlsMaterial) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![tern_proto::ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session ticketer")?;
    cfg.send_tls13_tickets = 1;
    Ok(cfg)
}

/// The server side of a TLS handshake on any stream, counted in the handshake metric
/// (full or resumed) whichever listener it serves.
pub(crate) async fn accept<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: IO,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let stream = acceptor.accept(stream).await?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    crate::metrics::get().tls_handshake(resumed);
    Ok(stream)
}
