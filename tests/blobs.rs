//! Image and file messages over real sockets (issue 14): uploads cut in the middle and
//! resumed over another transport, kill -9 during an upload, the blob authorization
//! matrix, limits and quota, bad input, thumbnails, signed HTTP URLs with ranges, and the
//! collector removing what nothing references.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};
use tern_sdk::Transport;
use tern_tests::rng::XorShift;
use tern_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 512 * 1024;
const WAIT: Duration = Duration::from_secs(5);

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A real PNG of `w` x `h` pixels.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn begin(data: &[u8], mime: &str) -> Body {
    Body::UploadBegin(pb::UploadBegin {
        sha256: sha(data).into(),
        size: data.len() as u64,
        mime: mime.into(),
    })
}

fn chunk(id: &str, offset: usize, data: &[u8]) -> Body {
    Body::UploadChunk(pb::UploadChunk {
        upload_id: id.into(),
        offset: offset as u64,
        data: data.to_vec().into(),
    })
}

fn finish(id: &str) -> Body {
    Body::UploadFinish(pb::UploadFinish {
        upload_id: id.into(),
    })
}

fn download(id: &str, offset: u64) -> Body {
    Body::Download(pb::Download {
        blob_id: id.into(),
        offset,
        length: 0,
    })
}

/// Uploads `data` whole over `c` (chunks from the offset the server reports).
async fn upload(c: &mut Client, data: &[u8], mime: &str) -> pb::BlobInfo {
    let st = expect_body!(c.request(begin(data, mime)).await, UploadState);
    if let Some(b) = st.blob {
        return b;
    }
    let mut off = st.offset as usize;
    while off < data.len() {
        let end = (off + CHUNK).min(data.len());
        let s = expect_body!(
            c.request(chunk(&st.upload_id, off, &data[off..end])).await,
            UploadState
        );
        off = s.offset as usize;
    }
    expect_body!(c.request(finish(&st.upload_id)).await, BlobInfo)
}

/// Downloads a blob whole over `c`.
async fn fetch(c: &mut Client, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let ch = expect_body!(c.request(download(id, out.len() as u64)).await, BlobChunk);
        assert_eq!(ch.offset, out.len() as u64);
        out.extend_from_slice(&ch.data);
        if out.len() as u64 >= ch.size || ch.data.is_empty() {
            return out;
        }
    }
}

fn attach_body(to: &str, cmid: &str, blob: &str, name: &str) -> Body {
    Body::Send(pb::Send {
        client_msg_id: cmid.into(),
        peer: to.into(),
        attachment: Some(pb::Attachment {
            blob_id: blob.into(),
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn an_upload_cut_in_the_middle_resumes_over_another_transport_with_identical_bytes() {
    let server = TestServer::start().await;
    let ann = "bl_resume";
    let data = random_bytes(3 * CHUNK + 1234, 7);
    let mut q = server.user(Transport::Quic, ann, "phone").await;
    let st = expect_body!(
        q.request(begin(&data, "application/pdf")).await,
        UploadState
    );
    assert_eq!((st.offset, st.size, st.blob), (0, data.len() as u64, None));
    for i in 0..2 {
        let s = expect_body!(
            q.request(chunk(
                &st.upload_id,
                i * CHUNK,
                &data[i * CHUNK..(i + 1) * CHUNK]
            ))
            .await,
            UploadState
        );
        assert_eq!(s.offset, ((i + 1) * CHUNK) as u64);
    }
    // The connection is cut; the same device comes back over TLS-TCP.
    drop(q);
    let mut t = server.client(Transport::Tcp).await;
    t.login(ann, "phone").await;
    let again = expect_body!(
        t.request(begin(&data, "application/pdf")).await,
        UploadState
    );
    assert_eq!(again.upload_id, st.upload_id);
    assert_eq!(
        again.offset,
        (2 * CHUNK) as u64,
        "resumes from the stored offset"
    );
    // Not finished yet: the blob is not visible to its uploader either.
    expect_error(
        &t.request(download(&st.upload_id, 0)).await,
        ErrorCode::NotFound,
    );
    let info = upload(&mut t, &data, "application/pdf").await;
    assert_eq!(info.blob_id, hex(&sha(&data)));
    assert_eq!(
        (info.size, info.mime.as_str()),
        (data.len() as u64, "application/pdf")
    );
    assert_eq!(info.width, 0, "a file, not an image");

    // Identical bytes back, over both transports and through the SDK (sha256 checked).
    assert_eq!(fetch(&mut t, &info.blob_id).await, data);
    let mut q2 = server.client(Transport::Quic).await;
    q2.login(ann, "laptop").await;
    assert_eq!(fetch(&mut q2, &info.blob_id).await, data);
    let (sdk, _events) = tern_sdk::Client::start(sdk_config(
        server.quic,
        &server.ca,
        ann,
        "tablet",
        tern_sdk::TransportMode::Quic,
    ));
    let mut seen = Vec::new();
    let (bytes, mime) = sdk
        .download(&info.blob_id, |got, total| seen.push((got, total)))
        .await
        .unwrap();
    assert_eq!(
        (bytes.as_ref(), mime.as_str()),
        (&data[..], "application/pdf")
    );
    assert_eq!(seen.last(), Some(&(data.len() as u64, data.len() as u64)));
    assert!(seen.len() >= 4, "progress per chunk: {seen:?}");
    sdk.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_sdk_uploads_and_sends_a_photo_that_arrives_with_its_thumbnail() {
    let server = TestServer::start().await;
    let (ann, bob) = ("bl_sdk_a", "bl_sdk_b");
    register_all(server.tcp, &server.ca, &[ann, bob]).await;
    let (a, _ae) = tern_sdk::Client::start(sdk_config(
        server.tcp,
        &server.ca,
        ann,
        "phone",
        tern_sdk::TransportMode::Tcp,
    ));
    let mut b = server.client(Transport::Quic).await;
    b.login(bob, "phone").await;
    let photo = png(1000, 500);
    let mut progress = Vec::new();
    let info = a
        .upload_bytes(photo.clone().into(), "image/png", |d, t| {
            progress.push((d, t))
        })
        .await
        .unwrap();
    assert_eq!((info.width, info.height), (1000, 500));
    assert_eq!(info.mime, "image/png");
    assert_eq!((info.thumbnail_width, info.thumbnail_height), (320, 160));
    assert!(
        info.thumbnail.starts_with(&[0xff, 0xd8]),
        "a JPEG thumbnail"
    );
    assert_eq!(
        progress.last(),
        Some(&(photo.len() as u64, photo.len() as u64))
    );
    // A second upload of the same content sends nothing.
    let mut again = Vec::new();
    let same = a
        .upload_bytes(photo.clone().into(), "image/png", |d, t| again.push((d, t)))
        .await
        .unwrap();
    assert_eq!(same.blob_id, info.blob_id);
    assert_eq!(again, vec![(photo.len() as u64, photo.len() as u64)]);

    let ack = a
        .send_with_options(
            tern_sdk::Target::User(bob.into()),
            "look".into(),
            tern_sdk::SendOptions {
                attachment: Some(tern_sdk::AttachmentRef {
                    blob_id: info.blob_id.clone(),
                    name: "sea.png".into(),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let m = b.next_message(WAIT).await;
    assert_eq!(m.seq, ack.seq);
    assert_eq!(text(&m), "look");
    let att = m.attachment.expect("the message carries the attachment");
    assert_eq!(att.blob_id, info.blob_id);
    assert_eq!(att.name, "sea.png");
    assert_eq!(
        (att.width, att.height, att.size),
        (1000, 500, photo.len() as u64)
    );
    assert_eq!(
        att.thumbnail, info.thumbnail,
        "the thumbnail rides in the message"
    );
    assert_eq!(fetch(&mut b, &info.blob_id).await, photo);
    // The conversation list says what it is.
    let list = expect_body!(
        b.request(Body::ListConversations(pb::ListConversations::default()))
            .await,
        ConversationList
    );
    assert_eq!(list.conversations[0].last_preview, "[photo] look");
    a.close().await;
    server.stop().await;
}

#[tokio::test]
async fn kill_9_during_an_upload_leaves_no_partial_blob_and_a_retried_upload_works() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tern-test-server");
    let mut server = ProcessServer::spawn(bin, dir.path());
    let ann = "bl_kill";
    let data = random_bytes(4 * CHUNK, 11);
    let id = hex(&sha(&data));
    let mut c = server.client(Transport::Tcp).await;
    c.register(ann).await;
    c.login(ann, "phone").await;
    let st = expect_body!(
        c.request(begin(&data, "application/zip")).await,
        UploadState
    );
    for i in 0..2 {
        expect_body!(
            c.request(chunk(
                &st.upload_id,
                i * CHUNK,
                &data[i * CHUNK..(i + 1) * CHUNK]
            ))
            .await,
            UploadState
        );
    }
    server.kill9();
    let listen = format!("127.0.0.1:{}", server.tcp.port());
    drop(server);
    let server = ProcessServer::spawn_at(bin, dir.path(), &listen);
    let mut c = server.client(Transport::Quic).await;
    c.login(ann, "phone").await;
    // Nothing of the unfinished upload is a blob: not readable, not sendable.
    expect_error(&c.request(download(&id, 0)).await, ErrorCode::NotFound);
    expect_error(
        &c.request(attach_body(ann, "k1", &id, "x.zip")).await,
        ErrorCode::NotFound,
    );
    assert!(
        !dir.path().join("blobs").join(&id[..2]).join(&id).exists(),
        "no blob file before the upload finished"
    );
    // The retried upload resumes where the stored bytes end, and works.
    let again = expect_body!(
        c.request(begin(&data, "application/zip")).await,
        UploadState
    );
    assert_eq!(again.offset, (2 * CHUNK) as u64);
    let info = upload(&mut c, &data, "application/zip").await;
    assert_eq!(info.blob_id, id);
    assert_eq!(fetch(&mut c, &id).await, data);
}

#[tokio::test]
async fn who_may_read_a_blob() {
    let server = TestServer::start_with(|c| c.messages.recall_window_secs = 3600).await;
    let t = Transport::Tcp;
    let (ann, bob, cat, dan) = ("bl_az_a", "bl_az_b", "bl_az_c", "bl_az_d");
    let mut a = server.user(t, ann, "d").await;
    let mut b = server.user(t, bob, "d").await;
    let mut c = server.user(t, cat, "d").await;
    let mut d = server.user(t, dan, "d").await;
    let data = random_bytes(1000, 3);
    let info = upload(&mut a, &data, "application/octet-stream").await;
    let id = info.blob_id.clone();
    // The uploader may; nobody else, not even with the exact sha256.
    assert_eq!(fetch(&mut a, &id).await, data);
    for x in [&mut b, &mut c, &mut d] {
        let e = expect_error(&x.request(download(&id, 0)).await, ErrorCode::NotFound);
        assert!(e.contains("no blob"), "{e}");
    }
    // Someone who cannot read it cannot send it either.
    expect_error(
        &c.request(attach_body(bob, "c1", &id, "f")).await,
        ErrorCode::NotFound,
    );
    // A direct message to bob lets bob read it (and forward it), not cat.
    let ack = ack_of(&a.request(attach_body(bob, "a1", &id, "f.bin")).await);
    assert_eq!(fetch(&mut b, &id).await, data);
    expect_error(&c.request(download(&id, 0)).await, ErrorCode::NotFound);
    // In a group: its members may.
    let g = a.create_group("bl-g", &[dan]).await;
    let send_g = Body::Send(pb::Send {
        client_msg_id: "a2".into(),
        conversation: g.conversation.clone(),
        attachment: Some(pb::Attachment {
            blob_id: id.clone(),
            name: "f.bin".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    ack_of(&a.request(send_g).await);
    assert_eq!(fetch(&mut d, &id).await, data);
    // Recalling the direct message takes bob's access away (the group's stays).
    let recall = Body::Recall(pb::Recall {
        client_msg_id: "a3".into(),
        conversation: ack.conversation.clone(),
        seq: ack.seq,
    });
    ack_of(&a.request(recall).await);
    expect_error(&b.request(download(&id, 0)).await, ErrorCode::NotFound);
    assert_eq!(fetch(&mut d, &id).await, data);
    // A signed URL is for those who may read.
    expect_error(
        &c.request(Body::GetBlobUrl(pb::GetBlobUrl {
            blob_id: id.clone(),
        }))
        .await,
        ErrorCode::NotFound,
    );
    expect_error(
        &c.request(download("not-hex", 0)).await,
        ErrorCode::InvalidArgument,
    );
    server.stop().await;
}

/// One HTTP/1.1 GET on the web listener: (status, headers lowercased, body).
async fn http_get(addr: SocketAddr, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

#[tokio::test]
async fn a_signed_url_serves_the_blob_with_its_type_and_ranges_and_nothing_else() {
    let server = TestServer::start().await;
    let mut a = server.user(Transport::Tcp, "bl_url", "d").await;
    let photo = png(40, 30);
    let img = upload(&mut a, &photo, "image/png").await;
    let html = b"<script>alert(1)</script>".to_vec();
    let page = upload(&mut a, &html, "text/html").await;
    let url = |f: &Frame| expect_body!(f, BlobUrl).path;
    let p = url(&a
        .request(Body::GetBlobUrl(pb::GetBlobUrl {
            blob_id: img.blob_id.clone(),
        }))
        .await);
    let (status, head, body) = http_get(server.ws, &p, None).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        !head.contains("content-disposition"),
        "an image is shown inline"
    );
    assert_eq!(body, photo);
    let (status, head, body) = http_get(server.ws, &p, Some("bytes=10-19")).await;
    assert_eq!(status, 206, "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 10-19/{}", photo.len())),
        "{head}"
    );
    assert_eq!(body, photo[10..20]);
    // Anything but the four image types is a download, never a page.
    let hp = url(&a
        .request(Body::GetBlobUrl(pb::GetBlobUrl {
            blob_id: page.blob_id.clone(),
        }))
        .await);
    let (status, head, _) = http_get(server.ws, &hp, None).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-disposition: attachment"), "{head}");
    assert!(head.contains("sandbox"), "{head}");
    // A tampered signature, another blob's id, or no signature: 403.
    let tampered = p.replace("&s=", "&s=00");
    let other = p.replace(&img.blob_id, &page.blob_id);
    for bad in [tampered, other, format!("/blob/{}", img.blob_id)] {
        let (status, head, _) = http_get(server.ws, &bad, None).await;
        assert!(status == 403 || status == 400, "{bad}: {head}");
    }
    server.stop().await;
}

#[tokio::test]
async fn limits_quota_and_bad_input_get_their_errors_and_leave_nothing_behind() {
    let server = TestServer::start_with(|c| {
        c.blobs.max_blob_bytes = 1 << 20;
        c.blobs.blob_quota_bytes = 3 << 19; // 1.5 MiB
    })
    .await;
    let mut a = server.user(Transport::Tcp, "bl_lim", "d").await;
    // Too big: refused before a byte is sent.
    let big = Body::UploadBegin(pb::UploadBegin {
        sha256: vec![1; 32].into(),
        size: (1 << 20) + 1,
        mime: "video/mp4".into(),
    });
    let e = expect_error(&a.request(big).await, ErrorCode::InvalidArgument);
    assert!(e.contains("max_blob_bytes"), "{e}");
    // Malformed announcements.
    for (sha, size, mime) in [
        (vec![1u8; 31], 10, "a/b"),
        (vec![1u8; 32], 0, "a/b"),
        (vec![1u8; 32], 10, "not a type"),
        (vec![1u8; 32], 10, ""),
    ] {
        let f = a
            .request(Body::UploadBegin(pb::UploadBegin {
                sha256: sha.into(),
                size,
                mime: mime.into(),
            }))
            .await;
        expect_error(&f, ErrorCode::InvalidArgument);
    }
    // Quota: 1 MiB stored, then another 1 MiB does not fit in 1.5 MiB.
    let one = random_bytes(1 << 20, 5);
    upload(&mut a, &one, "application/octet-stream").await;
    let two = random_bytes(1 << 20, 6);
    let e = expect_error(
        &a.request(begin(&two, "application/octet-stream")).await,
        ErrorCode::ResourceExhausted,
    );
    assert!(e.contains("quota"), "{e}");
    // A chunk out of order, too big, past the end, for an unknown upload.
    let small = random_bytes(1000, 8);
    let st = expect_body!(a.request(begin(&small, "text/plain")).await, UploadState);
    let e = expect_error(
        &a.request(chunk(&st.upload_id, 10, &small[10..20])).await,
        ErrorCode::InvalidArgument,
    );
    assert!(e.contains("send from 0"), "{e}");
    expect_error(
        &a.request(chunk(&st.upload_id, 0, &random_bytes(1001, 1)))
            .await,
        ErrorCode::InvalidArgument,
    );
    expect_error(
        &a.request(chunk(&hex(&[9; 32]), 0, &small)).await,
        ErrorCode::NotFound,
    );
    // Finishing early names what is missing.
    let e = expect_error(
        &a.request(finish(&st.upload_id)).await,
        ErrorCode::InvalidArgument,
    );
    assert!(e.contains("0 of 1000"), "{e}");
    // A wrong sha256 at the end: refused, and the upload is gone.
    let liar = Body::UploadBegin(pb::UploadBegin {
        sha256: sha(b"something else").into(),
        size: small.len() as u64,
        mime: "text/plain".into(),
    });
    let lst = expect_body!(a.request(liar).await, UploadState);
    expect_body!(
        a.request(chunk(&lst.upload_id, 0, &small)).await,
        UploadState
    );
    let e = expect_error(
        &a.request(finish(&lst.upload_id)).await,
        ErrorCode::InvalidArgument,
    );
    assert!(e.contains("sha256 mismatch"), "{e}");
    expect_error(
        &a.request(finish(&lst.upload_id)).await,
        ErrorCode::NotFound,
    );
    // A corrupt image announced as one: refused, nothing stored.
    let mut broken = png(64, 64);
    broken.truncate(broken.len() / 2);
    let bst = expect_body!(a.request(begin(&broken, "image/png")).await, UploadState);
    expect_body!(
        a.request(chunk(&bst.upload_id, 0, &broken)).await,
        UploadState
    );
    let e = expect_error(
        &a.request(finish(&bst.upload_id)).await,
        ErrorCode::InvalidArgument,
    );
    assert!(e.contains("image"), "{e}");
    expect_error(
        &a.request(download(&bst.upload_id, 0)).await,
        ErrorCode::NotFound,
    );
    // A hostile header: a PNG claiming 100000 x 100000 pixels.
    let mut bomb = png(1, 1);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let zst = expect_body!(a.request(begin(&bomb, "image/png")).await, UploadState);
    expect_body!(
        a.request(chunk(&zst.upload_id, 0, &bomb)).await,
        UploadState
    );
    expect_error(
        &a.request(finish(&zst.upload_id)).await,
        ErrorCode::InvalidArgument,
    );
    // Attachment names are checked.
    let info = upload(&mut a, &small, "text/plain").await;
    expect_error(
        &a.request(attach_body("bl_lim", "n1", &info.blob_id, "../etc/passwd"))
            .await,
        ErrorCode::InvalidArgument,
    );
    // The refused uploads left nothing half-written behind (the text upload begun above
    // was finished by `upload`, which resumed it).
    let parts: Vec<_> = std::fs::read_dir(server.dir.path().join("uploads"))
        .unwrap()
        .flatten()
        .collect();
    assert!(parts.is_empty(), "part files left: {parts:?}");
    server.stop().await;
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[tokio::test]
async fn the_collector_removes_unreferenced_and_recalled_blobs_and_keeps_the_rest() {
    let server = TestServer::start_with(|c| {
        c.blobs.blob_grace_secs = 1;
        c.messages.recall_window_secs = 3600;
    })
    .await;
    let t = Transport::Tcp;
    let (ann, bob) = ("bl_gc_a", "bl_gc_b");
    let mut a = server.user(t, ann, "d").await;
    let mut b = server.user(t, bob, "d").await;
    let loose = random_bytes(2000, 21);
    let kept = random_bytes(3000, 22);
    let recalled = random_bytes(4000, 23);
    let loose_id = upload(&mut a, &loose, "application/octet-stream")
        .await
        .blob_id;
    let kept_id = upload(&mut a, &kept, "application/octet-stream")
        .await
        .blob_id;
    let rec_id = upload(&mut a, &recalled, "application/octet-stream")
        .await
        .blob_id;
    ack_of(&a.request(attach_body(bob, "g1", &kept_id, "k")).await);
    let r = ack_of(&a.request(attach_body(bob, "g2", &rec_id, "r")).await);
    ack_of(
        &a.request(Body::Recall(pb::Recall {
            client_msg_id: "g3".into(),
            conversation: r.conversation.clone(),
            seq: r.seq,
        }))
        .await,
    );
    let path = |id: &str| server.dir.path().join("blobs").join(&id[..2]).join(id);
    assert!(path(&loose_id).exists());
    // The collector runs every half grace period; give it a few rounds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (path(&loose_id).exists() || path(&rec_id).exists())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!path(&loose_id).exists(), "an unreferenced blob is removed");
    assert!(
        !path(&rec_id).exists(),
        "a recalled message's blob is removed"
    );
    expect_error(
        &a.request(download(&loose_id, 0)).await,
        ErrorCode::NotFound,
    );
    expect_error(&a.request(download(&rec_id, 0)).await, ErrorCode::NotFound);
    assert_eq!(
        fetch(&mut b, &kept_id).await,
        kept,
        "a referenced blob stays"
    );
    assert!(path(&kept_id).exists());
    // The removed blobs no longer count against the quota: uploading them again starts
    // from zero bytes.
    let st = expect_body!(
        a.request(begin(&loose, "application/octet-stream")).await,
        UploadState
    );
    assert!(st.blob.is_none() && st.offset == 0);
    server.stop().await;
}
