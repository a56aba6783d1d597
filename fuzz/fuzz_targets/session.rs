//! A whole server session (auth state machine, dispatch, chat logic, real sled store) fed
//! arbitrary client bytes, then EOF. The server must never panic, and everything it sends
//! back must be well-formed frames. One store and flusher serve all runs, so state built
//! up by earlier inputs (users, conversations) is there for later ones.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_proto::{decode_frame, FrameCodec};
use tern_server::Services;
use tern_server::{run_session, StreamWriter};
use tern_server::{SledStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::FramedRead;

struct World {
    rt: tokio::runtime::Runtime,
    services: Arc<Services>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tern_server::Config::default();
        config.session.max_frame_bytes = 64 * 1024;
        config.limits.login_failures_per_user = u32::MAX;
        config.limits.logins_per_address = u32::MAX;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 16 << 20).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (services, durability) = Services::new(&config, store);
        rt.spawn(durability.run(tokio_util::sync::CancellationToken::new()));
        World { rt, services, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let services = w.services.clone();
    let input = data.to_vec();
    w.rt.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(server);
        let max = services.limits.max_frame_bytes as usize;
        let session = tokio::spawn(run_session(
            services,
            FramedRead::new(sr, FrameCodec::new(max)),
            StreamWriter::new(sw),
            "fuzz",
            None,
        ));
        let (mut cr, mut cw) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = cr.read_to_end(&mut out).await;
            out
        });
        let _ = cw.write_all(&input).await;
        let _ = cw.shutdown().await;
        tokio::time::timeout(Duration::from_secs(20), session)
            .await
            .expect("a session fed EOF ends")
            .expect("the session task did not panic");
        drop(cw);
        let out = reader.await.unwrap();
        // Everything the server wrote is a sequence of whole, decodable frames.
        let mut buf = BytesMut::from(&out[..]);
        while !buf.is_empty() {
            match decode_frame(&mut buf, usize::MAX) {
                Ok(Some(Ok(_))) => {}
                other => panic!("server sent a malformed frame: {other:?}"),
            }
        }
    });
});
