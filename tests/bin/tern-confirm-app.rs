//! A minimal app on tern-sdk for the exactly-once tests (`tests/confirm.rs`): it receives
//! with a confirm mode and an [`SqliteStore`], prints `received CONV SEQ TEXT` for each
//! message from others, and confirms only when told on stdin (`confirm CONV SEQ`, answered
//! `confirmed SEQ`), so the test can kill it -9 between receive and confirm. `quit` closes
//! the client cleanly.
//!
//! Usage: `tern-confirm-app SERVER CA USER STORE app|store`

use std::io::Write;

use tern_sdk::{
    Client, ClientConfig, ConfirmMode, Credentials, Event, SqliteStore, TransportMode, Trust,
};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, server, ca, user, store, mode] = &a[..] else {
        eprintln!("usage: tern-confirm-app SERVER CA USER STORE app|store");
        std::process::exit(2);
    };
    let store = match SqliteStore::open(store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut config = ClientConfig::new(
        server.parse().unwrap(),
        Trust::from_pem_file(ca.as_ref()).unwrap(),
        Credentials {
            username: user.clone(),
            password: Some(tern_tests::PASSWORD.into()),
            device: "app".into(),
        },
        Box::new(store),
    );
    config.transport = TransportMode::Tcp;
    config.initial_backoff = std::time::Duration::from_millis(50);
    config.confirm = if mode == "store" {
        ConfirmMode::Store
    } else {
        ConfirmMode::App
    };
    let (client, mut events) = Client::start(config);
    // Commands from stdin, read on a thread (tokio's stdin is not enabled here).
    let (cmd_tx, mut stdin) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = cmd_tx.send(None);
    });
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Event::Message { message, own: false }) => out(format!(
                    "received {} {} {}",
                    message.conversation,
                    message.seq,
                    String::from_utf8_lossy(&message.body)
                )),
                Some(Event::Connected { .. }) => out("connected".into()),
                Some(Event::AuthLost { message, .. }) => {
                    out(format!("auth lost: {message}"));
                    std::process::exit(1);
                }
                Some(_) => {}
                None => break,
            },
            line = stdin.recv() => match line.flatten().as_deref().map(str::split_whitespace).map(|w| w.collect::<Vec<_>>()).as_deref() {
                Some(["confirm", conv, seq]) => {
                    let seq: u64 = seq.parse().unwrap();
                    client.confirm(conv, seq).await.unwrap();
                    out(format!("confirmed {seq}"));
                }
                Some(["quit"]) | None => {
                    client.close().await;
                    out("closed".into());
                    break;
                }
                Some(other) => out(format!("unknown command {other:?}")),
            }
        }
    }
}
