//! tern only: blob upload and download throughput (image and file messages).
//!
//! One user uploads a `--mib` MiB file of random bytes (a new one each round, so nothing
//! is deduplicated) over one connection of the `--transport` under test: `UploadBegin`,
//! 512 KiB `UploadChunk`s with `WINDOW` in flight, `UploadFinish` (the server hashes the
//! file, fsyncs it and renames it into place before it answers). Then it downloads the
//! blob back with `WINDOW` `Download`s in flight and checks the sha256. Reported per
//! direction: MiB/s over the whole transfer (the finish included for uploads), and the
//! time of the finish step alone.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tern_sdk::raw::RawConnection;

use super::{run_id, Ctx};
use crate::probe::Probe;
use crate::report::{histogram, record_ns, Report};
use crate::systems::tern::Tern;
use crate::systems::Adapter;

/// Chunks in flight.
const WINDOW: usize = 8;
const CHUNK: usize = 512 * 1024;

pub struct BlobArgs {
    pub mib: usize,
    pub rounds: usize,
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Sends `bodies` pipelined, `WINDOW` in flight; returns the answers in order.
async fn pipelined(
    raw: &mut RawConnection,
    mut bodies: impl Iterator<Item = Body>,
    mut on_answer: impl FnMut(Body) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut inflight = VecDeque::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        while inflight.len() < WINDOW {
            let Some(body) = bodies.next() else { break };
            let req_id = raw.next_req_id();
            buf.extend_from_slice(&encode_frame(&Frame {
                req_id,
                body: Some(body),
            }));
            inflight.push_back(req_id);
        }
        if !buf.is_empty() {
            raw.send_raw(&buf).await?;
        }
        let Some(id) = inflight.pop_front() else {
            return Ok(());
        };
        match raw.response(id).await?.body {
            Some(Body::Error(e)) => bail!("refused: {} {}", e.code, e.message),
            Some(b) => on_answer(b)?,
            None => bail!("an empty answer"),
        }
        raw.pushes().clear();
    }
}

pub async fn run(ctx: &Ctx, s: BlobArgs) -> anyhow::Result<()> {
    if ctx.g.peer.is_some() {
        bail!("blobs is tern only");
    }
    let size = s.mib << 20;
    let quota = (size as u64 * (s.rounds as u64 + 1)).to_string();
    let max = (size as u64).to_string();
    let a = Tern::start(
        ctx,
        &["--max-blob-bytes", &max, "--blob-quota-bytes", &quota],
        None,
    )?;
    let user = format!("{}-blobs", run_id());
    a.prepare(std::slice::from_ref(&user)).await?;
    let mut raw = a.session(0, &user, "bench").await?;
    raw.set_timeout(std::time::Duration::from_secs(300));
    let mut r = Report::new("blobs", "MiB/s");
    r.param("file_mib", s.mib).param("rounds", s.rounds);
    ctx.common(&a, &mut r);
    let (mut up, mut down, mut fin) = (histogram(), histogram(), histogram());
    let (mut up_secs, mut down_secs) = (0.0, 0.0);
    let all = Probe::start(a.pid(), false);
    for round in 0..s.rounds {
        let data = random(size, round as u64 + 1);
        let sha = Sha256::digest(&data).to_vec();
        let t = Instant::now();
        let st = match raw
            .call(Body::UploadBegin(pb::UploadBegin {
                sha256: sha.clone().into(),
                size: size as u64,
                mime: "application/octet-stream".into(),
            }))
            .await?
        {
            Body::UploadState(st) => st,
            other => bail!("UploadBegin answered {}", tern_proto::body_name(&other)),
        };
        let id = st.upload_id.clone();
        let chunks = (0..size).step_by(CHUNK).map(|off| {
            Body::UploadChunk(pb::UploadChunk {
                upload_id: id.clone(),
                offset: off as u64,
                data: bytes::Bytes::copy_from_slice(&data[off..(off + CHUNK).min(size)]),
            })
        });
        pipelined(&mut raw, chunks, |b| match b {
            Body::UploadState(_) => Ok(()),
            other => bail!("UploadChunk answered {}", tern_proto::body_name(&other)),
        })
        .await
        .context("upload")?;
        let tf = Instant::now();
        match raw
            .call(Body::UploadFinish(pb::UploadFinish { upload_id: id }))
            .await?
        {
            Body::BlobInfo(_) => {}
            other => bail!("UploadFinish answered {}", tern_proto::body_name(&other)),
        }
        record_ns(&mut fin, tf.elapsed().as_nanos() as u64);
        let up_e = t.elapsed();
        up_secs += up_e.as_secs_f64();
        record_ns(&mut up, up_e.as_nanos() as u64);

        let t = Instant::now();
        let blob = st.upload_id.clone();
        let reads = (0..size).step_by(CHUNK).map(|off| {
            Body::Download(pb::Download {
                blob_id: blob.clone(),
                offset: off as u64,
                length: CHUNK as u32,
            })
        });
        let mut hasher = Sha256::new();
        let mut got = 0usize;
        pipelined(&mut raw, reads, |b| match b {
            Body::BlobChunk(c) => {
                got += c.data.len();
                hasher.update(&c.data);
                Ok(())
            }
            other => bail!("Download answered {}", tern_proto::body_name(&other)),
        })
        .await
        .context("download")?;
        let e = t.elapsed();
        down_secs += e.as_secs_f64();
        record_ns(&mut down, e.as_nanos() as u64);
        if got != size || hasher.finalize().as_slice() != sha.as_slice() {
            r.errors
                .push((format!("round {round}: downloaded bytes differ"), 1));
        }
        eprintln!(
            "tern-bench: round {round}: up {:.1} MiB/s, down {:.1} MiB/s",
            s.mib as f64 / up_e.as_secs_f64(),
            s.mib as f64 / e.as_secs_f64()
        );
    }
    let (usage, gen) = all.finish();
    let total = (s.mib * s.rounds) as f64;
    r.achieved = Some(total * 2.0 / (up_secs + down_secs));
    r.server = usage;
    r.generator_cpu_pct = gen;
    r.figure("upload (begin, chunks, finish)", total / up_secs, "MiB/s")
        .figure("download", total / down_secs, "MiB/s")
        .latency("a whole upload", &up)
        .latency("UploadFinish alone (sha256, fsync, rename)", &fin)
        .latency("a whole download", &down);
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
