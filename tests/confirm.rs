//! Exactly once to the app, across a crash of the app (issue 17): a real app process
//! (`tern-confirm-app`) receives with a confirm mode and is killed -9 between receive and
//! confirm. Restarted, it gets that message again, once; a message confirmed before the
//! kill does not come again. With `ConfirmMode::Store` the SQLite store's commit is the
//! confirmation: a message printed (so committed) before the kill does not come again and
//! is in the local history.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tern_sdk::{Client, Event, SqliteStore, Target, TransportMode};
use tern_tests::*;
use tokio::sync::mpsc;

const APP: &str = env!("CARGO_BIN_EXE_tern-confirm-app");

/// One run of the app: its stdin and the lines it prints.
struct App {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl App {
    fn start(server: &TestServer, user: &str, store: &Path, mode: &str) -> App {
        let mut child = Command::new(APP)
            .arg(server.tcp.to_string())
            .arg(&server.ca)
            .arg(user)
            .arg(store)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        App { child, lines }
    }

    /// The next line the app prints that starts with `prefix` (others are skipped).
    async fn expect(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.starts_with(prefix) => return l,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the app exited before printing {prefix:?}"),
                Err(_) => panic!("the app did not print {prefix:?} in time"),
            }
        }
    }

    fn tell(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no close, no final save
        self.child.wait().unwrap();
    }

    fn quit(mut self) {
        self.tell("quit");
        assert!(self.child.wait().unwrap().success());
    }
}

async fn sender(server: &TestServer) -> Client {
    let (client, _events) = Client::start(sdk_config(
        server.tcp,
        &server.ca,
        "bob",
        "phone",
        TransportMode::Tcp,
    ));
    client
}

async fn send(bob: &Client, text: &str) -> u64 {
    bob.send_text(Target::User("alice".into()), text)
        .await
        .unwrap()
        .seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_killed_between_receive_and_confirm_gets_the_message_again_once() {
    let server = TestServer::start().await;
    register_all(server.tcp, &server.ca, &["alice", "bob"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("alice.db");
    let bob = sender(&server).await;
    let conv = "d:alice:bob";

    // m1 received and confirmed; m2 received, not confirmed; then kill -9.
    let mut app = App::start(&server, "alice", &store, "app");
    assert_eq!(send(&bob, "m1").await, 1);
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 1 m1")
    );
    app.tell(&format!("confirm {conv} 1"));
    app.expect("confirmed 1").await;
    assert_eq!(send(&bob, "m2").await, 2);
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 2 m2")
    );
    app.kill9();

    // Restarted: m2 again (not m1), then m3 right after it (m2 once, not twice).
    let mut app = App::start(&server, "alice", &store, "app");
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 2 m2")
    );
    assert_eq!(send(&bob, "m3").await, 3);
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 3 m3")
    );
    app.tell(&format!("confirm {conv} 3"));
    app.expect("confirmed 3").await;
    app.kill9();

    // Everything confirmed: a restart delivers only what is new.
    let mut app = App::start(&server, "alice", &store, "app");
    app.expect("connected").await;
    assert_eq!(send(&bob, "m4").await, 4);
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 4 m4")
    );
    app.quit();
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_commit_is_the_confirmation() {
    let server = TestServer::start().await;
    register_all(server.tcp, &server.ca, &["alice", "bob"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("alice.db");
    let bob = sender(&server).await;
    let conv = "d:alice:bob";

    let mut app = App::start(&server, "alice", &store, "store");
    send(&bob, "m1").await;
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 1 m1")
    );
    app.kill9(); // no confirm, no close: the commit before the event is all there is

    let mut app = App::start(&server, "alice", &store, "store");
    app.expect("connected").await;
    send(&bob, "m2").await;
    assert_eq!(
        app.expect("received").await,
        format!("received {conv} 2 m2")
    );
    app.quit();
    bob.close().await;

    // The local copy has both, readable with the server gone.
    server.stop().await;
    let s = SqliteStore::open(&store).unwrap();
    let texts: Vec<String> = s
        .history(conv, 0, 10)
        .unwrap()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(texts, ["m1", "m2"]);
    assert_eq!(s.conversations().unwrap()[0].last_seq, 2);
    let _ = Event::Closed; // (the Event type is what the app matched on)
}
