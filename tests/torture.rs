//! Torture: SDK producers send at a steady rate into 1:1 and group conversations while the
//! server binary is killed with SIGKILL at random moments (also during startup), paused
//! with SIGSTOP/SIGCONT, and restarted. A checker then compares what the senders got acked
//! with what every receiver device got.
//!
//! Pass: 0 acked messages lost, 0 duplicates delivered, 0 messages delivered that were
//! never sent, per conversation strictly increasing contiguous seqs on every device, and
//! every device of every member ends with the identical log.
//!
//! Short version (CI): `cargo test -p tern-tests --test torture`.
//! Long version: `TERN_TORTURE_CYCLES=20 cargo test -p tern-tests --test torture -- --nocapture`
//! (`TERN_TORTURE_SEED=N` replays a run).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_tests::chat_load::ChatLoad;
use tern_tests::rng::{env_or, seed_from_env, XorShift};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_pause_and_restart_keep_every_promise() {
    let cycles: usize = env_or("TERN_TORTURE_CYCLES", 4);
    let seed = seed_from_env("TERN_TORTURE_SEED");
    eprintln!("torture: {cycles} cycles, seed {seed}");
    let mut rng = XorShift::new(seed);

    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    let addr = server.tcp;
    let listen = addr.to_string();
    let ws_addr = Arc::new(Mutex::new(server.ws));
    let mut load = ChatLoad::start(addr, &server.ca, Duration::from_millis(15)).await;
    load.ws_producer(ws_addr.clone(), Duration::from_millis(15));

    // Chaos.
    let started = Instant::now();
    let mut kills = 0;
    let mut startup_kills = 0;
    let mut pauses = 0;
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.range(200, 900))).await;
        if cycle % 3 == 1 {
            // Freeze the server for a while: clients keep sending into the void.
            unsafe { libc::kill(server.child.id() as i32, libc::SIGSTOP) };
            tokio::time::sleep(Duration::from_millis(rng.range(500, 2000))).await;
            unsafe { libc::kill(server.child.id() as i32, libc::SIGCONT) };
            pauses += 1;
            continue;
        }
        server.kill9();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        if cycle % 2 == 0 {
            // Killed again while starting up.
            let mut child = Command::new(BIN)
                .args(["--listen", &listen, "--ws-listen", "off", "--data-dir"])
                .arg(data.path())
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(rng.range(5, 120))).await;
            let _ = child.kill();
            let _ = child.wait();
            startup_kills += 1;
        }
        server = ProcessServer::spawn_at(BIN, data.path(), &listen);
        *ws_addr.lock().unwrap() = server.ws;
    }
    let verdict = load.finish(Duration::from_secs(60)).await;
    verdict.assert_clean("torture");
    eprintln!(
        "torture: seed {seed}, {cycles} cycles ({kills} kill -9, {startup_kills} during startup, {pauses} SIGSTOP pauses) in {:?}; \
         {} sends acked (QUIC, TLS-TCP, auto and WebSocket producers), {} deliveries to {} devices; \
         0 lost, 0 duplicated, 0 unknown",
        started.elapsed(),
        verdict.acked,
        verdict.delivered,
        verdict.devices
    );
}
