//! `tern-bench relay`: the physical ceiling of `bench/compare.sh`. A bare TLS-over-TCP
//! relay (TLS 1.3, rustls with ring, as tern) that keeps nothing: a client names itself
//! (and the groups it joins) in its first frame; every later frame names a recipient, and
//! the relay writes its payload to every connection registered under that name (none:
//! dropped) and a one-byte ack to the sender. No store, no fsync, no accounts, no
//! sessions: what a chat server on this box could move if everything but the network
//! and TLS were free. [`crate::systems::relay`] is its client side.
//!
//! Frames, both ways: a u32 big-endian length, then the body; the body's first byte is
//! its kind.
//! - client -> relay: `H` + names separated by `\n` (hello: the first frame; acked), `S` +
//!   one byte name length + name + payload (send; acked).
//! - relay -> client: `A` (ack of the hello or of a send, in order), `M` + payload (a
//!   message for one of the connection's names).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::systems::tls;

pub const HELLO: u8 = b'H';
pub const SEND: u8 = b'S';
pub const ACK: u8 = b'A';
pub const MSG: u8 = b'M';
/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// The ack frame.
pub fn ack() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 1, ACK])
}

/// A frame of `kind` whose body continues with `parts`.
pub fn frame(kind: u8, parts: &[&[u8]]) -> Bytes {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut v = Vec::with_capacity(4 + len);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.push(kind);
    for p in parts {
        v.extend_from_slice(p);
    }
    Bytes::from(v)
}

/// Reads one frame body into `buf`; false at a clean end of stream before a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Writes what arrives on `rx`, as many queued frames per write as are there (up to
/// 64 KiB), until `rx` closes or the stream fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(b) = rx.recv().await {
        buf.extend_from_slice(&b);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        buf.clear();
    }
    Ok(())
}

/// Registered connections by name.
type Routes = Mutex<HashMap<Box<[u8]>, Vec<(u64, mpsc::UnboundedSender<Bytes>)>>>;

/// Serves until the process is killed.
pub async fn serve(listen: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(cert, key)?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("tern-bench relay: listening on {}", listener.local_addr()?);
    serve_on(listener, acceptor).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> anyhow::Result<()> {
    let routes: Arc<Routes> = Arc::default();
    let mut next = 0u64;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of files, for one: wait for connections to close.
                eprintln!("tern-bench relay: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        next += 1;
        let (id, acceptor, routes) = (next, acceptor.clone(), routes.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let (r, w) = tokio::io::split(stream);
            let (tx, rx) = mpsc::unbounded_channel();
            let writer = tokio::spawn(write_loop(w, rx));
            let mut names = Vec::new();
            let _ = read_loop(id, r, &tx, &routes, &mut names).await;
            let mut map = routes.lock().unwrap();
            for n in names {
                if let Some(v) = map.get_mut(&n) {
                    v.retain(|(c, _)| *c != id);
                    if v.is_empty() {
                        map.remove(&n);
                    }
                }
            }
            drop(map);
            writer.abort();
        });
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    id: u64,
    mut r: R,
    tx: &mpsc::UnboundedSender<Bytes>,
    routes: &Routes,
    names: &mut Vec<Box<[u8]>>,
) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut buf = Vec::new();
    while read_frame(&mut r, &mut buf).await? {
        match buf[0] {
            HELLO if names.is_empty() => {
                let mut map = routes.lock().unwrap();
                for n in buf[1..].split(|&b| b == b'\n').filter(|n| !n.is_empty()) {
                    let n: Box<[u8]> = n.into();
                    map.entry(n.clone()).or_default().push((id, tx.clone()));
                    names.push(n);
                }
                drop(map);
                if names.is_empty() {
                    return Err(bad("hello without a name"));
                }
            }
            SEND if !names.is_empty() && buf.len() >= 2 => {
                let n = buf[1] as usize;
                let Some(dest) = buf.get(2..2 + n) else {
                    return Err(bad("short send frame"));
                };
                let m = frame(MSG, &[&buf[2 + n..]]);
                if let Some(v) = routes.lock().unwrap().get(dest) {
                    for (_, to) in v {
                        let _ = to.send(m.clone());
                    }
                }
            }
            _ => return Err(bad("unexpected frame")),
        }
        if tx.send(ack()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn client(addr: SocketAddr, ca: &Path, hello: &[u8]) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = tokio_rustls::TlsConnector::from(tls::client_config(ca).unwrap())
            .connect(tls::server_name(addr), tcp)
            .await
            .unwrap();
        s.write_all(&frame(HELLO, &[hello])).await.unwrap();
        s.flush().await.unwrap();
        let mut buf = Vec::new();
        assert!(read_frame(&mut s, &mut buf).await.unwrap());
        assert_eq!(buf, [ACK]);
        s
    }

    #[tokio::test]
    async fn relays_to_users_and_groups_and_acks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        tern_server::certs::make_dev_certs(dir.path()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(
            tls::server_config(
                &dir.path().join("server.pem"),
                &dir.path().join("server.key"),
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener, acceptor));
        let ca = dir.path().join("ca.pem");
        let mut a = client(addr, &ca, b"u/a\ng/team").await;
        let mut b = client(addr, &ca, b"u/b\ng/team").await;
        let mut buf = Vec::new();
        // To a user: the recipient gets the payload, the sender the ack.
        a.write_all(&frame(SEND, &[&[3], b"u/b", b"hello"]))
            .await
            .unwrap();
        a.flush().await.unwrap();
        assert!(read_frame(&mut b, &mut buf).await.unwrap());
        assert_eq!(buf, b"Mhello");
        assert!(read_frame(&mut a, &mut buf).await.unwrap());
        assert_eq!(buf, [ACK]);
        // To a group: every member, the sender too; to nobody: only the ack.
        b.write_all(&frame(SEND, &[&[6], b"g/team", b"all"]))
            .await
            .unwrap();
        b.write_all(&frame(SEND, &[&[5], b"u/zed", b"lost"]))
            .await
            .unwrap();
        b.flush().await.unwrap();
        assert!(read_frame(&mut a, &mut buf).await.unwrap());
        assert_eq!(buf, b"Mall");
        let mut got = Vec::new();
        for _ in 0..3 {
            assert!(read_frame(&mut b, &mut buf).await.unwrap());
            got.push(buf.clone());
        }
        assert_eq!(got, [b"Mall".to_vec(), vec![ACK], vec![ACK]]);
        server.abort();
    }
}
