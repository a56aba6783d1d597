//! Store damage: the data files of a stopped server are truncated or corrupted. The
//! server must then either serve every message it acknowledged, or refuse to start with
//! a clear error. It must never serve holes silently, and never panic.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");
const N: usize = 300;

enum Start {
    Serving(std::process::Child, SocketAddr, PathBuf),
    Refused(String),
}

/// Starts the binary on `dir`; reports whether it serves or exits (with its stderr).
fn start(dir: &Path) -> Start {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ws-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ca = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("tern-server: dev CA ") {
            ca = Some(PathBuf::from(rest.split(' ').next().unwrap()));
        }
        if let Some(rest) = line.strip_prefix("tern-server: listening quic=") {
            let addr = rest.split(' ').next().unwrap().parse().unwrap();
            return Start::Serving(child, addr, ca.unwrap());
        }
    }
    // stdout closed without a listening line: the process is exiting.
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success(),
        "a server that does not serve must exit non-zero"
    );
    assert!(
        !err.contains("panicked"),
        "the server panicked on a damaged store:\n{err}"
    );
    assert!(
        err.contains("tern-server: error:"),
        "a clear error line:\n{err}"
    );
    Start::Refused(err)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

async fn received(addr: SocketAddr, ca: &Path) -> Vec<u64> {
    let mut c = Client::connect(Tcp, addr, ca).await;
    c.login("dmg-b", "d").await;
    c.sync_all(0, 1000)
        .await
        .into_iter()
        .map(|i| i.message.unwrap().seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_store_files_are_served_whole_or_refused() {
    let pristine = tempfile::tempdir().unwrap();
    {
        let mut server = ProcessServer::spawn(BIN, pristine.path());
        let mut a = server.client(Tcp).await;
        a.register("dmg-a").await;
        a.register("dmg-b").await;
        a.login("dmg-a", "d").await;
        let mut ids = Vec::new();
        for i in 0..N {
            ids.push(
                a.send_text_nowait("dmg-b", &format!("m{i}"), &"payload ".repeat(20))
                    .await,
            );
        }
        for id in ids {
            ack_of(&a.response(id).await);
        }
        drop(a);
        assert!(server.terminate().success());
    }
    let want: Vec<u64> = (1..=N as u64).collect();

    // Undamaged: everything is there.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), dir.path());
    match start(dir.path()) {
        Start::Serving(mut child, addr, ca) => {
            assert_eq!(received(addr, &ca).await, want);
            let _ = child.kill();
            let _ = child.wait();
        }
        Start::Refused(err) => panic!("an undamaged store was refused:\n{err}"),
    }

    type Damage = fn(&Path);
    let damages: Vec<(&str, Damage)> = vec![
        ("truncated to half", |d| {
            let db = d.join("store/db");
            let n = std::fs::metadata(&db).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(n / 2)
                .unwrap();
        }),
        ("4 KiB zeroed in the middle", |d| {
            let db = d.join("store/db");
            let mut b = std::fs::read(&db).unwrap();
            let m = b.len() / 2;
            b[m..m + 4096].fill(0);
            std::fs::write(&db, b).unwrap();
        }),
        ("header bytes flipped", |d| {
            let db = d.join("store/db");
            let mut b = std::fs::read(&db).unwrap();
            for x in &mut b[..64] {
                *x ^= 0xa5;
            }
            std::fs::write(&db, b).unwrap();
        }),
        ("garbage config", |d| {
            std::fs::write(d.join("store/conf"), "garbage").unwrap()
        }),
        ("truncated to 7 bytes", |d| {
            let db = d.join("store/db");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(7)
                .unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        damage(dir.path());
        match start(dir.path()) {
            Start::Serving(mut child, addr, ca) => {
                let got = tokio::time::timeout(Duration::from_secs(20), received(addr, &ca)).await;
                let _ = child.kill();
                let _ = child.wait();
                assert_eq!(got.expect("answers"), want, "{what}: served with holes");
                eprintln!("damage '{what}': served all {N} acked messages");
            }
            Start::Refused(err) => {
                eprintln!(
                    "damage '{what}': refused: {}",
                    err.lines().find(|l| l.contains("error")).unwrap_or("")
                );
            }
        }
    }
}
