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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::pb;
use tern_sdk::{Client, ClientConfig, Event, Target, TransportMode};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

fn cfg(addr: SocketAddr, ca: &Path, user: &str, device: &str, mode: TransportMode) -> ClientConfig {
    let mut c = sdk_config(addr, ca, user, device, mode);
    c.max_backoff = Duration::from_millis(400);
    c
}

type Log = Arc<Mutex<Vec<pb::Message>>>;
/// (device name, [(seq, client_msg_id)]) of one conversation.
type DeviceLog = (String, Vec<(u64, String)>);

/// A receiving device: logs every message event.
fn device(
    addr: SocketAddr,
    ca: &Path,
    user: &str,
    dev: &str,
    mode: TransportMode,
) -> (Client, Log) {
    let (client, mut events) = Client::start(cfg(addr, ca, user, dev, mode));
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Event::Message { message, .. } = e {
                l.lock().unwrap().push(message);
            }
        }
    });
    (client, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_pause_and_restart_keep_every_promise() {
    let cycles: usize = std::env::var("TERN_TORTURE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("TERN_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("torture: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);

    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    let addr = server.tcp;
    let listen = addr.to_string();
    let ca = server.ca.clone();
    let producers = ["tp0", "tp1", "tp2"];
    let receivers = ["tr0", "tr1"];
    register_all(addr, &ca, &[&producers[..], &receivers[..]].concat()).await;
    // The group, created by a producer over a plain client.
    let group = {
        let mut c = tern_tests::Client::connect(Tcp, addr, &ca).await;
        c.login("tp0", "setup").await;
        let members: Vec<&str> = producers[1..]
            .iter()
            .chain(receivers.iter())
            .copied()
            .collect();
        c.create_group("torture", &members).await.conversation
    };

    // Receiving devices: tr0 on two devices (QUIC and TCP), tr1 on one, and each producer
    // also receives on its sending client (group messages from the others).
    let mut devices: Vec<(String, String, Client, Log)> = Vec::new();
    for (u, d, m) in [
        ("tr0", "phone", TransportMode::Quic),
        ("tr0", "laptop", TransportMode::Tcp),
        ("tr1", "phone", TransportMode::Auto),
    ] {
        let (c, l) = device(addr, &ca, u, d, m);
        devices.push((u.into(), d.into(), c, l));
    }

    // Producers: a steady stream, alternating 1:1 (to tr0 or tr1) and the group.
    let acked: Arc<Mutex<Vec<pb::SendAck>>> = Arc::default();
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = tokio_util_stop();
    let mut producer_tasks = Vec::new();
    for (pi, p) in producers.iter().enumerate() {
        let mode = [TransportMode::Quic, TransportMode::Tcp, TransportMode::Auto][pi];
        let (client, log) = device(addr, &ca, p, "main", mode);
        devices.push((p.to_string(), "main".into(), client.clone(), log));
        let (acked, sent, stop, group) = (acked.clone(), sent.clone(), stop.clone(), group.clone());
        producer_tasks.push(tokio::spawn(async move {
            let mut tickets = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let target = match i % 3 {
                    0 => Target::User("tr0".into()),
                    1 => Target::User("tr1".into()),
                    _ => Target::Conversation(group.clone()),
                };
                let t = client
                    .send_with(target, format!("{pi}-{i}").into_bytes().into(), "")
                    .await
                    .unwrap();
                sent.lock().unwrap().insert(t.client_msg_id.clone());
                tickets.push(t);
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            for t in tickets {
                let ack = tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("ack in time")
                    .expect("acked");
                acked.lock().unwrap().push(ack);
            }
        }));
    }

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
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in producer_tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();

    // Expected per conversation: every acked message, by seq.
    let mut expected: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    for a in &acked {
        let prev = expected
            .entry(a.conversation.clone())
            .or_default()
            .insert(a.seq, a.client_msg_id.clone());
        assert!(
            prev.is_none() || prev.as_deref() == Some(a.client_msg_id.as_str()),
            "two messages acked with seq {} in {}",
            a.seq,
            a.conversation
        );
    }
    let members: HashMap<String, Vec<&str>> = expected
        .keys()
        .map(|c| {
            let who: Vec<&str> = if *c == group {
                producers.iter().chain(receivers.iter()).copied().collect()
            } else {
                producers
                    .iter()
                    .chain(receivers.iter())
                    .copied()
                    .filter(|u| c.split(':').any(|p| p == *u))
                    .collect()
            };
            (c.clone(), who)
        })
        .collect();

    // Wait until every device has every acked message of its conversations.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = devices.iter().all(|(u, _, _, log)| {
            let log = log.lock().unwrap();
            expected
                .iter()
                .filter(|(c, _)| members[*c].contains(&u.as_str()))
                .all(|(c, want)| {
                    let have: HashSet<u64> = log
                        .iter()
                        .filter(|m| &m.conversation == c)
                        .map(|m| m.seq)
                        .collect();
                    want.keys().all(|s| have.contains(s))
                })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "devices did not catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // late duplicates would show now

    // Check every device.
    let mut logs: HashMap<String, Vec<DeviceLog>> = HashMap::new();
    let mut delivered = 0;
    for (u, d, _, log) in &devices {
        let log = log.lock().unwrap();
        delivered += log.len();
        let mut per_conv: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for m in log.iter() {
            per_conv
                .entry(m.conversation.clone())
                .or_default()
                .push((m.seq, m.client_msg_id.clone()));
        }
        for (c, msgs) in &per_conv {
            let seqs: Vec<u64> = msgs.iter().map(|m| m.0).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{u}/{d} in {c}: not contiguous and in order (or a duplicate)"
            );
            for (seq, cmid) in msgs {
                if !cmid.is_empty() {
                    assert!(
                        sent.contains(cmid),
                        "{u}/{d} got a message nobody sent: {cmid}"
                    );
                }
                if let Some(want) = expected.get(c).and_then(|e| e.get(seq)) {
                    assert_eq!(want, cmid, "{u}/{d} in {c} seq {seq}: not what was acked");
                }
            }
        }
        for (c, want) in &expected {
            if members[c].contains(&u.as_str()) {
                let have: HashSet<u64> = per_conv
                    .get(c)
                    .map(|v| v.iter().map(|m| m.0).collect())
                    .unwrap_or_default();
                let lost: Vec<&u64> = want.keys().filter(|s| !have.contains(s)).collect();
                assert!(
                    lost.is_empty(),
                    "{u}/{d} lost acked messages in {c}: {lost:?}"
                );
            }
        }
        for (c, msgs) in per_conv {
            logs.entry(c).or_default().push((format!("{u}/{d}"), msgs));
        }
    }
    // Every device of every member ends with the identical log (up to the shortest one,
    // since unacked tail messages may still be arriving; the acked part is checked above).
    for (c, per_device) in &logs {
        let shortest = per_device.iter().map(|(_, m)| m.len()).min().unwrap();
        let reference = &per_device[0].1[..shortest];
        for (who, msgs) in per_device {
            assert_eq!(&msgs[..shortest], reference, "{who} differs in {c}");
        }
    }
    eprintln!(
        "torture: seed {seed}, {cycles} cycles ({kills} kill -9, {startup_kills} during startup, {pauses} SIGSTOP pauses) in {:?}; \
         {} sends acked, {delivered} deliveries to {} devices; 0 lost, 0 duplicated, 0 unknown",
        started.elapsed(),
        acked.len(),
        devices.len()
    );
    for (_, _, c, _) in devices {
        c.close().await;
    }
}

fn tokio_util_stop() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}
