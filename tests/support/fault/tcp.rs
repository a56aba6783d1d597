//! [`TcpFaultProxy`]: forwards TCP connections (for TLS-TCP) and cuts, refuses and
//! delays them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

use super::{bump_epoch, cancelled, store_f64, Ctl, Knobs, ERROR_PAUSE};

/// Size of one TCP read (and so the largest chunk a fault applies to).
const TCP_CHUNK: usize = 64 * 1024;
/// Chunks queued per TCP direction (waiting for their delay to pass).
const TCP_QUEUE: usize = 16;

#[derive(Debug)]
struct TcpShared {
    knobs: Knobs,
    cut_p: AtomicU64,
    accepted: AtomicUsize,
}

/// A TCP proxy on `127.0.0.1:0` that forwards every accepted connection to one upstream
/// address and can cut, refuse and delay them. See the module docs.
#[derive(Debug)]
pub struct TcpFaultProxy {
    addr: SocketAddr,
    shared: Arc<TcpShared>,
    ctl: watch::Sender<Ctl>,
}

impl TcpFaultProxy {
    /// Binds `127.0.0.1:0` and starts forwarding connections to `upstream`. Panics only
    /// if the loopback listener cannot be bound (a broken test environment).
    pub async fn start(upstream: SocketAddr) -> TcpFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TCP fault proxy on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("TCP fault proxy local address");
        let shared = Arc::new(TcpShared {
            knobs: Knobs::new(),
            cut_p: AtomicU64::new(0f64.to_bits()),
            accepted: AtomicUsize::new(0),
        });
        let (ctl, rx) = watch::channel(Ctl::default());
        tokio::spawn(tcp_accept_loop(listener, upstream, shared.clone(), rx));
        TcpFaultProxy { addr, shared, ctl }
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Aborts every live proxied connection on both sides (`RST`); connections accepted
    /// afterwards are forwarded as usual.
    pub fn cut_all(&self) {
        bump_epoch(&self.ctl);
    }

    /// While blocked, new connections are accepted and immediately reset; turning it on
    /// also cuts every live connection.
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.knobs.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            bump_epoch(&self.ctl);
        }
    }

    /// Every chunk read from then on (either direction) is written `d` after it was read,
    /// in order. `Duration::ZERO` turns the delay off.
    pub fn set_delay(&self, d: Duration) {
        self.shared.knobs.set_delay(d);
    }

    /// For each chunk read from then on, with probability `p` the whole connection is
    /// cut instead of forwarding the chunk. 0 (the default) turns it off.
    pub fn set_cut_probability(&self, p: f64) {
        store_f64(&self.shared.cut_p, p);
    }

    /// Restarts the random generator from `seed` (a fixed seed is used by default).
    pub fn set_seed(&self, seed: u64) {
        self.shared.knobs.set_seed(seed);
    }

    /// How many connections were accepted in total, including those reset because the
    /// proxy was blocked.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes the listener and aborts every live connection. Dropping
    /// the proxy does the same.
    pub fn stop(&self) {
        self.ctl.send_modify(|c| c.stopped = true);
    }
}

impl Drop for TcpFaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<TcpShared>,
    mut ctl: watch::Receiver<Ctl>,
) {
    loop {
        let now = *ctl.borrow_and_update();
        if now.stopped {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    if shared.knobs.blocked() {
                        let _ = client.set_zero_linger();
                        drop(client);
                        continue;
                    }
                    tokio::spawn(tcp_conn(
                        shared.clone(),
                        client,
                        upstream,
                        ctl.clone(),
                        now.epoch,
                    ));
                }
                // E.g. out of file descriptors: wait a little instead of spinning.
                Err(_) => tokio::select! {
                    _ = sleep(ERROR_PAUSE) => {}
                    changed = ctl.changed() => if changed.is_err() { return },
                },
            },
            changed = ctl.changed() => if changed.is_err() { return },
        }
    }
}

/// Marker for "this connection must be aborted" (a cut, or an I/O error on either side).
#[derive(Debug)]
struct Abort;

async fn tcp_conn(
    shared: Arc<TcpShared>,
    mut client: TcpStream,
    upstream: SocketAddr,
    mut ctl: watch::Receiver<Ctl>,
    epoch: u64,
) {
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => s.ok(),
        _ = cancelled(&mut ctl, epoch) => None,
    };
    let Some(mut server) = server else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let outcome = {
        let (client_r, client_w) = client.split();
        let (server_r, server_w) = server.split();
        let pump = async {
            tokio::try_join!(
                tcp_pipe(&shared, client_r, server_w),
                tcp_pipe(&shared, server_r, client_w),
            )
        };
        tokio::select! {
            done = pump => done.map(|_| ()),
            _ = cancelled(&mut ctl, epoch) => Err(Abort),
        }
    };
    if outcome.is_err() {
        // Abortive close: both peers see the connection fail now, not a clean EOF.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // Both sockets are closed here.
}

/// Copies one direction: a reader that stamps each chunk with the time it is due, and
/// a writer that writes chunks in order once due. EOF is passed on as a write shutdown.
async fn tcp_pipe<R, W>(shared: &TcpShared, mut from: R, mut to: W) -> Result<(), Abort>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(TCP_QUEUE);
    let read = async move {
        let mut buf = vec![0u8; TCP_CHUNK];
        loop {
            let n = from.read(&mut buf).await.map_err(|_| Abort)?;
            if n == 0 {
                break;
            }
            if shared.knobs.chance(&shared.cut_p) {
                return Err(Abort);
            }
            let due = Instant::now() + shared.knobs.delay();
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            tx.send((due, chunk)).await.map_err(|_| Abort)?;
        }
        drop(tx); // lets the writer finish once the queue is drained
        Ok::<(), Abort>(())
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            to.write_all(&chunk).await.map_err(|_| Abort)?;
        }
        let _ = to.shutdown().await;
        Ok::<(), Abort>(())
    };
    tokio::try_join!(read, write).map(|_| ())
}
