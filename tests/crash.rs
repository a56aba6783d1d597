//! D2 and D4 with the real binary: kill -9 the server in the middle of a stream of
//! pipelined sends, restart it on the same data dir, and check that every acked message
//! is there exactly once with contiguous seqs, and that resending the unacked ones with
//! their original client_msg_ids never makes a second copy.

use std::collections::{BTreeMap, HashMap};

use tern_proto::pb;
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

/// Sends `cmids` pipelined (up to `window` in flight) until `kill_after` acks arrived,
/// then returns the acks seen so far (cmid -> seq). The caller kills the server.
async fn send_until(
    c: &mut Client,
    to: &str,
    cmids: &[String],
    window: usize,
    kill_after: usize,
) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let mut in_flight: BTreeMap<u64, String> = BTreeMap::new();
    let mut next = 0;
    while acked.len() < kill_after {
        while in_flight.len() < window && next < cmids.len() {
            let id = c.send_text_nowait(to, &cmids[next], &cmids[next]).await;
            in_flight.insert(id, cmids[next].clone());
            next += 1;
        }
        let (&id, _) = in_flight.iter().next().expect("something in flight");
        let f = c.response(id).await;
        let cmid = in_flight.remove(&id).unwrap();
        let ack = ack_of(&f);
        assert_eq!(ack.client_msg_id, cmid);
        acked.insert(cmid, ack.seq);
    }
    // Keep more in flight at the moment of the kill.
    while in_flight.len() < window && next < cmids.len() {
        let id = c.send_text_nowait(to, &cmids[next], &cmids[next]).await;
        in_flight.insert(id, cmids[next].clone());
        next += 1;
    }
    // Collect whatever else is acked before the kill lands.
    for (id, cmid) in in_flight {
        if let Some(f) = c.try_response(id) {
            acked.insert(cmid, ack_of(&f).seq);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acked_message_and_dedups_resends() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    {
        let mut reg = server.client(Tcp).await;
        reg.register("sender").await;
        reg.register("receiver").await;
    }
    let per_cycle = 150;
    let mut all_acked: HashMap<String, u64> = HashMap::new();
    let mut sent_cmids: Vec<String> = Vec::new();
    let cycles = [Tcp, Quic, Tcp];
    for (cycle, t) in cycles.into_iter().enumerate() {
        let cmids: Vec<String> = (0..per_cycle).map(|i| format!("c{cycle}-{i}")).collect();
        sent_cmids.extend(cmids.iter().cloned());
        let mut c = server.client(t).await;
        c.login("sender", "phone").await;
        // Kill at a different point each cycle.
        let kill_after = 40 + cycle * 30;
        let acked = send_until(&mut c, "receiver", &cmids, 64, kill_after).await;
        server.kill9();
        assert!(acked.len() >= kill_after);
        for (k, v) in acked {
            assert!(
                all_acked.insert(k, v).is_none(),
                "a message was acked twice"
            );
        }
        server = ProcessServer::spawn(BIN, data.path());
        drop(c);
    }

    // Every acked message is there, once, with its acked seq; seqs are contiguous.
    let mut r = server.client(Quic).await;
    r.login("receiver", "laptop").await;
    let items = r.sync_all(0, 500).await;
    let msgs: Vec<pb::Message> = items.into_iter().map(|i| i.message.unwrap()).collect();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=msgs.len() as u64).collect::<Vec<_>>(),
        "contiguous seqs from 1"
    );
    let mut stored: HashMap<String, u64> = HashMap::new();
    for m in &msgs {
        assert!(
            stored.insert(m.client_msg_id.clone(), m.seq).is_none(),
            "stored twice: {}",
            m.client_msg_id
        );
        assert!(
            sent_cmids.contains(&m.client_msg_id),
            "a message nobody sent: {}",
            m.client_msg_id
        );
    }
    for (cmid, seq) in &all_acked {
        assert_eq!(
            stored.get(cmid),
            Some(seq),
            "acked message {cmid} lost or moved"
        );
    }

    // The sender resends everything it has no ack for, with the same ids: the ones the
    // server had stored come back as duplicates with their original seq, the rest are new.
    let mut s = server.client(Tcp).await;
    s.login("sender", "phone").await;
    for cmid in &sent_cmids {
        if all_acked.contains_key(cmid) {
            continue;
        }
        let ack = ack_of(&s.send_text("receiver", cmid, cmid).await);
        match stored.get(cmid) {
            Some(seq) => assert!(ack.duplicate && ack.seq == *seq, "{cmid}: {ack:?}"),
            None => assert!(!ack.duplicate),
        }
    }
    eprintln!(
        "crash test: {} cycles, {} acked before the kills, {} stored, {} stored but never acked",
        cycles.len(),
        all_acked.len(),
        stored.len(),
        stored.len() - all_acked.len()
    );
    let items = r.sync_all(0, 1000).await;
    assert_eq!(
        items.len(),
        sent_cmids.len(),
        "each message exactly once in the end"
    );
    let seqs: Vec<u64> = items
        .iter()
        .map(|i| i.message.as_ref().unwrap().seq)
        .collect();
    assert_eq!(seqs, (1..=sent_cmids.len() as u64).collect::<Vec<_>>());

    // A graceful stop (SIGTERM) exits cleanly.
    drop(r);
    drop(s);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}
