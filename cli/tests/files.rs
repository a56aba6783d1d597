//! `tern send --file`, `tern download` and `tern profile set --avatar` (the real binary
//! against a real server on port 0): the kind comes from the content, the ack and the
//! sync/history lines carry the blob, the download is byte-identical, and bad input gets
//! exit code 2 with nothing written.

mod common;

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tern_tests::TestServer;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_and_a_pdf_are_sent_listed_and_downloaded() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("fa");
    t.account("fb");
    let photo = png(800, 600);
    let pdf: Vec<u8> = b"%PDF-1.7\n"
        .iter()
        .copied()
        .chain((0..700_000u32).map(|i| (i * 7) as u8))
        .collect();
    std::fs::write(t.dir().join("beach.png"), &photo).unwrap();
    // The name says nothing: the kind comes from the content.
    std::fs::write(t.dir().join("report.bin"), &pdf).unwrap();

    let ack = t
        .run(
            "fa",
            &[
                "--json",
                "send",
                "--to",
                "fb",
                "--file",
                "beach.png",
                "at",
                "the",
                "sea",
            ],
        )
        .ok()
        .json();
    assert_eq!(ack.len(), 1, "{ack:?}");
    let photo_id = hex(&Sha256::digest(&photo));
    assert_eq!(ack[0]["blob"], json!(photo_id));
    assert_eq!(ack[0]["sha256"], json!(photo_id));
    assert_eq!(ack[0]["size"], json!(photo.len()));
    assert_eq!(ack[0]["seq"], json!(1));
    let ack = t
        .run(
            "fa",
            &["--json", "send", "--to", "fb", "--file", "report.bin"],
        )
        .ok()
        .json();
    let pdf_id = hex(&Sha256::digest(&pdf));
    assert_eq!(ack[0]["blob"], json!(pdf_id));

    let lines = t
        .run("fb", &["--json", "sync", "--idle-exit", "1"])
        .ok()
        .json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["text"], &lines[0]["name"], &lines[0]["mime"]),
        (
            &json!("at the sea"),
            &json!("beach.png"),
            &json!("image/png")
        )
    );
    assert_eq!(lines[0]["blob"], json!(photo_id));
    assert_eq!(
        (&lines[1]["name"], &lines[1]["mime"], &lines[1]["size"]),
        (
            &json!("report.bin"),
            &json!("application/pdf"),
            &json!(pdf.len())
        )
    );
    let history = t
        .run("fa", &["--json", "history", "--remote", "--with", "fb"])
        .ok()
        .json();
    assert_eq!(history[1]["blob"], json!(pdf_id));

    let got = t
        .run(
            "fb",
            &["--json", "download", &pdf_id, "--output", "got.pdf"],
        )
        .ok()
        .json();
    assert_eq!(
        got[0],
        json!({"blob": pdf_id, "size": pdf.len(), "sha256": pdf_id, "mime": "application/pdf"})
    );
    assert_eq!(std::fs::read(t.dir().join("got.pdf")).unwrap(), pdf);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn avatars_and_refusals() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("fc");
    t.account("fd");
    let photo = png(64, 64);
    std::fs::write(t.dir().join("me.png"), &photo).unwrap();
    std::fs::write(t.dir().join("notes.txt"), b"hello").unwrap();
    std::fs::write(t.dir().join("empty"), b"").unwrap();
    let id = hex(&Sha256::digest(&photo));
    let set = t
        .run("fc", &["--json", "profile", "set", "--avatar", "me.png"])
        .ok()
        .json();
    assert_eq!(set[0]["avatar"], json!(id));
    // Anyone may fetch an avatar.
    let got = t
        .run("fd", &["--json", "download", &id, "-o", "avatar.png"])
        .ok()
        .json();
    assert_eq!(got[0]["mime"], json!("image/png"));
    assert_eq!(std::fs::read(t.dir().join("avatar.png")).unwrap(), photo);

    // Not an image, an empty file, a missing file: usage errors, exit code 2.
    for args in [
        &["profile", "set", "--avatar", "notes.txt"][..],
        &["send", "--to", "fd", "--file", "empty"][..],
        &["send", "--to", "fd", "--file", "nosuch"][..],
        &["download", "abc", "-o", "x"][..],
    ] {
        let out = t.run("fc", args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    // A blob fd may not read: NOT_FOUND, and no file is left behind.
    let stranger = hex(&[7u8; 32]);
    let out = t.run("fd", &["--json", "download", &stranger, "-o", "y.bin"]);
    assert_ne!(out.code, 0);
    assert_eq!(out.code_of_error(), "NOT_FOUND");
    assert!(!t.dir().join("y.bin").exists());
    assert!(!t.dir().join("y.bin.part").exists());
    server.stop().await;
}
