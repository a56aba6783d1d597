//! The real `tern` binary against a real server (in-process, port 0, temp data dir, real
//! QUIC and TLS-TCP). Each test has its own server and its own profile files, and checks
//! what a user or a script sees: JSON lines on stdout, one-line errors, exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_sdk::{SavedState, SqliteStore, StateStore};
use tern_tests::TestServer;

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const PASSWORD: &str = "correct horse battery";
/// No single command of these tests should take longer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run of `tern` gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "tern failed: {self:?}");
        self
    }

    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// A failure with `code`, reported on exactly one stderr line.
    fn failed(self, code: i32) -> Self {
        assert_eq!(self.code, code, "exit code: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one stderr line: {self:?}");
        assert!(lines[0].starts_with("tern: "), "{self:?}");
        self
    }

    /// With `--json`, the error object on stdout.
    fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v.len(), 1, "{self:?}");
        assert!(
            v[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{self:?}"
        );
        v[0]["code"].as_str().unwrap().to_string()
    }
}

/// `tern` pointed at one test server, with profiles in a temp dir.
struct Tern {
    server: String,
    ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Tern {
    fn new(server: &TestServer) -> Self {
        Self {
            server: server.tcp.to_string(),
            ca: server.ca.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn profile(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.json"))
    }

    /// The state (token, cursors, outbox) of a profile: in `NAME.db` beside `NAME.json`.
    fn state(&self, name: &str) -> SavedState {
        SqliteStore::open(self.dir.path().join(format!("{name}.db")))
            .unwrap()
            .load()
            .unwrap()
    }

    fn set_state(&self, name: &str, state: &SavedState) {
        SqliteStore::open(self.dir.path().join(format!("{name}.db")))
            .unwrap()
            .save(state)
            .unwrap()
    }

    /// `tern --server S --ca CA --profile P ARGS`, with no TERN_* from the environment.
    fn cmd(&self, profile: &str, args: &[&str]) -> Command {
        self.cmd_at(&self.server, profile, args)
    }

    /// The same against another server address.
    fn cmd_at(&self, server: &str, profile: &str, args: &[&str]) -> Command {
        let mut c = Command::new(TERN);
        for var in [
            "TERN_SERVER",
            "TERN_CA",
            "TERN_PROFILE",
            "TERN_PASSWORD",
            "XDG_CONFIG_HOME",
        ] {
            c.env_remove(var);
        }
        c.current_dir(self.dir.path())
            .arg("--server")
            .arg(server)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--profile")
            .arg(self.profile(profile))
            .args(args);
        c
    }

    fn run(&self, profile: &str, args: &[&str]) -> Out {
        run(self.cmd(profile, args), None)
    }

    fn run_stdin(&self, profile: &str, args: &[&str], input: &str) -> Out {
        run(self.cmd(profile, args), Some(input.as_bytes().to_vec()))
    }

    /// Registers `user` and logs it in on profile `user`, device `<user>-dev`.
    fn account(&self, user: &str) {
        self.run(user, &["register", user, "--password", PASSWORD])
            .ok();
        let device = format!("{user}-dev");
        let out = self
            .run(
                user,
                &[
                    "--json",
                    "login",
                    user,
                    "--password",
                    PASSWORD,
                    "--device",
                    &device,
                ],
            )
            .ok();
        let v = &out.json()[0];
        assert_eq!(
            (v["user"].as_str(), v["device"].as_str()),
            (Some(user), Some(device.as_str()))
        );
    }
}

/// Runs a command to completion (killed after COMMAND_TIMEOUT), feeding it `input`.
fn run(mut cmd: Command, input: Option<Vec<u8>>) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tern starts");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern {cmd:?} did not finish in {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A `tern` left running (e.g. `sync --follow`, `chat`), killed when dropped.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern starts");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Self {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next `n` stdout lines.
    fn next_lines(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        (0..n)
            .map(|i| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("line {} of {n} not printed: {e}", i + 1))
            })
            .collect()
    }

    /// The next `n` stdout lines, as JSON.
    fn next_json(&self, n: usize, within: Duration) -> Vec<Value> {
        self.next_lines(n, within)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Writes to its stdin.
    fn input(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits for the exit: (code, stderr).
    fn finish(mut self, within: Duration) -> (i32, String) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tern did not exit in {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seqs(v: &[Value]) -> Vec<u64> {
    v.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

fn texts(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

/// The issue's scenario: 200 lines piped into `tern send --stdin` while the receiver is
/// offline; the receiver's `tern sync` then prints exactly those 200, in order, once.
#[tokio::test(flavor = "multi_thread")]
async fn offline_receiver_gets_200_piped_messages_in_order_exactly_once() {
    // Presence is not what this test is about: when alice's send outlasts the settle time,
    // her going offline is announced to bob and is a line of his sync output, so the
    // announcements wait longer than the test runs.
    let server = TestServer::start_with(|c| c.messages.presence_settle_ms = 600_000).await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");

    let input: String = (1..=200)
        .map(|i| format!("line {i} from alice\n"))
        .collect();
    let sent = t
        .run_stdin("alice", &["send", "--to", "bob", "--stdin"], &input)
        .ok();
    let acks = sent.json();
    assert_eq!(acks.len(), 200, "one ack line per input line");
    assert_eq!(
        seqs(&acks),
        (1..=200).collect::<Vec<_>>(),
        "acks in input order"
    );
    for a in &acks {
        assert_eq!(a["conv"], "d:alice:bob");
        assert_eq!(a["duplicate"], false);
    }
    let ids: Vec<&str> = acks
        .iter()
        .map(|a| a["client_msg_id"].as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 200, "every line is its own message");

    // Over TLS-TCP this time (the send went over QUIC, auto's first choice).
    let synced = t
        .run("bob", &["--transport", "tcp", "sync", "--idle-exit", "2"])
        .ok();
    let msgs = synced.json();
    assert_eq!(msgs.len(), 200, "{}", synced.stderr);
    assert_eq!(seqs(&msgs), (1..=200).collect::<Vec<_>>());
    assert_eq!(
        texts(&msgs),
        (1..=200)
            .map(|i| format!("line {i} from alice"))
            .collect::<Vec<_>>()
    );
    for (m, id) in msgs.iter().zip(&ids) {
        assert_eq!(m["conv"], "d:alice:bob");
        assert_eq!(m["from"], "alice");
        assert_eq!(m["client_msg_id"], *id);
        assert!(m["ts"].as_u64().unwrap() > 0);
    }

    // The cursor was saved: nothing is printed twice.
    let again = t.run("bob", &["sync", "--idle-exit", "1"]).ok();
    assert_eq!(again.stdout, "", "already synced");
    let profile: Value =
        serde_json::from_str(&std::fs::read_to_string(t.profile("bob")).unwrap()).unwrap();
    assert_eq!(profile["username"], "bob");
    assert_eq!(profile["device"], "bob-dev");
    assert_eq!(profile.get("token"), None, "the state is in bob.db");
    let state = t.state("bob");
    assert_eq!(state.cursors.inbox, 200);
    assert!(state.token.is_some());

    // Without --idle-exit, sync stops as soon as it is caught up.
    t.run("alice", &["send", "--to", "bob", "one", "more"]).ok();
    let last = t.run("bob", &["sync"]).ok().json();
    assert_eq!(
        (seqs(&last), texts(&last)),
        (vec![201], vec!["one more".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_have_exit_codes_and_one_line_messages() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");

    // Bad credentials: 3.
    let out = t
        .run("x", &["login", "alice", "--password", "not the password"])
        .failed(3);
    assert!(out.stdout.is_empty());
    let out = t
        .run(
            "x",
            &["--json", "login", "alice", "--password", "not the password"],
        )
        .failed(3);
    assert_eq!(out.error_code(), "INVALID_CREDENTIALS");
    assert!(!t.profile("x").exists(), "no profile written on failure");

    // Not logged in: 3.
    let out = t.run("x", &["sync"]).failed(3);
    assert!(out.stderr.contains("tern login"), "{out:?}");
    let out = t
        .run("x", &["--json", "history", "--remote", "--with", "bob"])
        .failed(3);
    assert_eq!(out.error_code(), "NOT_LOGGED_IN");

    // Unreachable server: 4, for a one-off request and for a client that never connects.
    let cmd = t.cmd_at(
        "127.0.0.1:1",
        "alice",
        &[
            "--transport",
            "tcp",
            "login",
            "alice",
            "--password",
            PASSWORD,
        ],
    );
    let out = run(cmd, None).failed(4);
    assert!(
        out.stderr.contains("cannot reach server at 127.0.0.1:1"),
        "{out:?}"
    );
    let cmd = t.cmd_at(
        "127.0.0.1:1",
        "alice",
        &[
            "--json",
            "--connect-timeout",
            "1",
            "send",
            "--to",
            "bob",
            "hi",
        ],
    );
    let out = run(cmd, None).failed(4);
    assert_eq!(out.error_code(), "UNREACHABLE");
    assert!(
        out.stderr.contains("cannot reach server at 127.0.0.1:1"),
        "{out:?}"
    );
    assert_eq!(
        t.state("alice").outbox,
        Vec::new(),
        "nothing left to send later"
    );

    // A token the server no longer takes: 3 without a password, a fresh login with one.
    let mut state = t.state("bob");
    state.token = Some("not-a-token".into());
    t.set_state("bob", &state);
    let out = t.run("bob", &["--json", "presence", "alice"]).failed(3);
    assert_eq!(out.error_code(), "INVALID_TOKEN");
    t.run("bob", &["presence", "alice"]).failed(3);
    let mut cmd = t.cmd("bob", &["presence", "alice"]);
    cmd.env("TERN_PASSWORD", PASSWORD);
    run(cmd, None).ok();
    assert_ne!(
        t.state("bob").token.as_deref(),
        Some("not-a-token"),
        "the new token is saved"
    );
    t.run("bob", &["presence", "alice"]).ok();

    // Invalid input: 2.
    let out = t
        .run(
            "x",
            &["--json", "register", "Not Valid", "--password", PASSWORD],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    t.run("x", &["register", "shorty", "--password", "short"])
        .failed(2);
    t.run("alice", &["send", "--to", "bob"]).failed(2);
    t.run("alice", &["send", "--to", "bob", "--group", "g:1", "x"])
        .failed(2);
    // The name is taken.
    let out = t
        .run(
            "x",
            &["--json", "register", "alice", "--password", PASSWORD],
        )
        .failed(2);
    assert_eq!(out.error_code(), "USER_EXISTS");

    // Forbidden: a group bob is not in; 5.
    let created = t.run("alice", &["group", "create", "private"]).ok().json();
    let gid = created[0]["group"].as_str().unwrap().to_string();
    let out = t
        .run("bob", &["--json", "send", "--group", &gid, "let me in"])
        .failed(5);
    assert_eq!(out.error_code(), "FORBIDDEN");
    t.run("bob", &["history", "--remote", "--group", &gid])
        .failed(5);
    let out = t
        .run("bob", &["--json", "history", "--remote", "--with", "carol"])
        .failed(5);
    assert_eq!(out.error_code(), "NOT_FOUND");
    assert!(out.stderr.contains("no conversation with carol"), "{out:?}");
    t.run("bob", &["group", "members", &gid]).failed(5);
    // And a user that does not exist is not found: 5 as well.
    let out = t
        .run("alice", &["--json", "send", "--to", "nobody", "hello?"])
        .failed(5);
    assert_eq!(out.error_code(), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_history_and_presence() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["alice", "bob", "carol"] {
        t.account(u);
    }

    let out = t
        .run(
            "alice",
            &["group", "create", "team", "--members", "bob,carol"],
        )
        .ok();
    let gid = out.json()[0]["group"].as_str().unwrap().to_string();
    assert!(
        gid.len() == 18 && gid.starts_with("g:") && gid[2..].bytes().all(|c| c.is_ascii_hexdigit()),
        "{gid}"
    );

    let members = t
        .run("alice", &["--json", "group", "members", &gid])
        .ok()
        .json();
    let members: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        members,
        vec![("alice", "OWNER"), ("bob", "MEMBER"), ("carol", "MEMBER")]
    );
    let human = t.run("bob", &["group", "members", &gid]).ok();
    assert_eq!(human.stdout, "alice\tOWNER\nbob\tMEMBER\ncarol\tMEMBER\n");

    // Bob follows live; his backlog is the CREATED event.
    let follow = Background::spawn(t.cmd("bob", &["sync", "--follow"]));
    let created = follow.next_json(1, Duration::from_secs(15));
    assert_eq!(created[0]["conv"], gid.as_str());
    assert_eq!(created[0]["seq"], 1);
    assert_eq!(created[0]["event"]["kind"], "CREATED");
    assert_eq!(created[0]["event"]["name"], "team");
    assert_eq!(created[0]["from"], "alice");

    let acks = t
        .run_stdin(
            "alice",
            &["send", "--group", &gid, "--stdin"],
            "first\nsecond, with a comma\nthird ✓\n",
        )
        .ok()
        .json();
    assert_eq!(seqs(&acks), vec![2, 3, 4]);
    assert!(acks.iter().all(|a| a["conv"] == gid.as_str()));
    let live = follow.next_json(3, Duration::from_secs(10));
    assert_eq!(seqs(&live), vec![2, 3, 4]);
    assert_eq!(
        texts(&live),
        vec!["first", "second, with a comma", "third ✓"]
    );

    // Presence: bob's device is online while his sync runs; carol's is not.
    let p = t
        .run("alice", &["--json", "presence", "bob", "carol"])
        .ok()
        .json();
    assert_eq!(p[0]["user"], "bob");
    assert_eq!(p[0]["online"], true);
    assert_eq!(p[0]["devices"], serde_json::json!(["bob-dev"]));
    assert_eq!(p[1]["user"], "carol");
    assert_eq!(p[1]["online"], false);
    let human = t.run("alice", &["presence", "bob"]).ok();
    assert_eq!(human.stdout, "bob: online (bob-dev)\n");
    // The group's online count (alice's own command is online too), and a watch.
    for flags in [&[][..], &["--watch"][..], &["--unwatch"][..]] {
        let mut args = vec!["--json", "presence", "--group", &gid];
        args.extend_from_slice(flags);
        let g = t.run("alice", &args).ok().json();
        assert_eq!(
            (&g[0]["conv"], &g[0]["members"], &g[0]["online"]),
            (
                &serde_json::json!(gid),
                &serde_json::json!(3),
                &serde_json::json!(2)
            ),
            "{flags:?}"
        );
    }
    t.run(
        "alice",
        &["presence", "--group", &gid, "--watch", "--unwatch"],
    )
    .failed(2);
    drop(follow);

    // History, ascending, as JSON lines and for people.
    let h = t
        .run("carol", &["--json", "history", "--remote", "--group", &gid])
        .ok()
        .json();
    assert_eq!(seqs(&h), vec![1, 2, 3, 4]);
    assert_eq!(h[0]["event"]["kind"], "CREATED");
    assert_eq!(h[0]["event"]["users"], serde_json::json!(["bob", "carol"]));
    assert_eq!(
        texts(&h[1..]),
        vec!["first", "second, with a comma", "third ✓"]
    );
    assert!(h[1..].iter().all(|m| m["from"] == "alice"));
    let newest = t
        .run(
            "carol",
            &[
                "--json", "history", "--remote", "--group", &gid, "--limit", "2",
            ],
        )
        .ok()
        .json();
    assert_eq!(seqs(&newest), vec![3, 4]);
    let older = t
        .run(
            "carol",
            &[
                "--json", "history", "--remote", "--group", &gid, "--before", "3",
            ],
        )
        .ok()
        .json();
    assert_eq!(seqs(&older), vec![1, 2]);
    let human = t
        .run("carol", &["history", "--remote", "--group", &gid])
        .ok();
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0].starts_with("#1 [")
            && lines[0].ends_with("] alice: * created the group \"team\" with bob, carol"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("#4 [") && lines[3].ends_with("] alice: third ✓"),
        "{lines:?}"
    );

    // Membership changes: carol is removed and can no longer write; bob leaves.
    t.run("alice", &["group", "remove", &gid, "carol"]).ok();
    t.run("carol", &["send", "--group", &gid, "still here?"])
        .failed(5);
    t.run("bob", &["group", "leave", &gid]).ok();
    let left = t
        .run("alice", &["--json", "group", "members", &gid])
        .ok()
        .json();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["user"], "alice");
    let h = t
        .run("alice", &["--json", "history", "--remote", "--group", &gid])
        .ok()
        .json();
    let kinds: Vec<&str> = h[4..]
        .iter()
        .map(|m| m["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["MEMBERS_REMOVED", "MEMBER_LEFT"]);

    // A direct history uses the d:<a>:<b> id from either side.
    t.run("bob", &["send", "--to", "alice", "hi alice"]).ok();
    let d = t
        .run("alice", &["--json", "history", "--remote", "--with", "bob"])
        .ok()
        .json();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0]["conv"].as_str(), d[0]["text"].as_str()),
        (Some("d:alice:bob"), Some("hi alice"))
    );
}

/// `tern chat`: shows the conversation (backlog, then live) and sends each stdin line,
/// exiting at end of input once every line is acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn chat_shows_the_conversation_and_sends_lines() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    t.run("alice", &["send", "--to", "bob", "are you there?"])
        .ok();

    let mut chat = Background::spawn(t.cmd("bob", &["chat", "--with", "alice"]));
    let backlog = chat.next_lines(1, Duration::from_secs(15));
    assert!(
        backlog[0].starts_with('[') && backlog[0].ends_with("] alice: are you there?"),
        "{backlog:?}"
    );
    chat.input("yes, here\n");
    // Once bob's line is stored, alice answers; her message arrives live in bob's chat.
    let stored = (0..100).any(|_| {
        let n = t
            .run("alice", &["--json", "history", "--remote", "--with", "bob"])
            .ok()
            .json()
            .len();
        if n < 2 {
            std::thread::sleep(Duration::from_millis(50));
        }
        n == 2
    });
    assert!(stored, "bob's chat line was stored");
    let seq = |out: Out| out.ok().json()[0]["seq"].as_u64().unwrap();
    assert_eq!(seq(t.run("alice", &["send", "--to", "bob", "good"])), 3);
    let live = chat.next_lines(1, Duration::from_secs(10));
    assert!(live[0].ends_with("] alice: good"), "{live:?}");
    // Bob answers; once alice has read it, bob's chat shows her receipt (it comes before
    // her next message, which the test waits for, so it is in before the chat ends).
    chat.input("see you\n");
    let stored = (0..100).any(|_| {
        let n = t
            .run("alice", &["--json", "history", "--remote", "--with", "bob"])
            .ok()
            .json()
            .len();
        if n < 4 {
            std::thread::sleep(Duration::from_millis(50));
        }
        n == 4
    });
    assert!(stored, "bob's second line was stored");
    let read = t.run("alice", &["--json", "read", "--with", "bob"]).ok();
    assert_eq!(read.json()[0]["read_seq"], 4);
    t.run("alice", &["send", "--to", "bob", "bye"]).ok();
    let live = chat.next_lines(1, Duration::from_secs(10));
    assert!(live[0].ends_with("] alice: bye"), "{live:?}");

    let (code, stderr) = chat.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("-- connected over"), "{stderr}");
    assert!(stderr.contains("✓ seq 2"), "{stderr}");
    assert!(stderr.contains("-- alice read up to seq 4 --"), "{stderr}");
    let h = t
        .run("alice", &["--json", "history", "--remote", "--with", "bob"])
        .ok()
        .json();
    assert_eq!(
        texts(&h),
        vec!["are you there?", "yes, here", "good", "see you", "bye"],
        "each line stored once"
    );
    assert_eq!(h[1]["from"], "bob");
    // What the chat showed is read: no unread left for bob.
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        (&list[0]["conv"], &list[0]["read_seq"], &list[0]["unread"]),
        (&"d:alice:bob".into(), &5.into(), &0.into())
    );
}

/// `tern send --stdin` keeps going while the server restarts: lines typed while it is down
/// are queued, everything is acked once, in input order, and the receiver gets each line
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn send_keeps_going_through_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let dir = data_dir.clone();
    let server = TestServer::start_with(move |c| c.store.data_dir = dir).await;
    let addr = server.tcp;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");

    let mut send = Background::spawn(t.cmd("alice", &["send", "--to", "bob", "--stdin"]));
    let batch = |from: usize| -> String {
        (from..from + 50)
            .map(|i| format!("message {i}\n"))
            .collect()
    };
    send.input(&batch(1));
    let first = send.next_json(50, Duration::from_secs(15));
    assert_eq!(seqs(&first), (1..=50).collect::<Vec<_>>());

    server.stop().await;
    send.input(&batch(51));
    let dir = data_dir.clone();
    let server = TestServer::start_with(move |c| {
        c.store.data_dir = dir;
        c.network.listen = addr;
    })
    .await;
    send.input(&batch(101));
    let rest = send.next_json(100, Duration::from_secs(20));
    assert_eq!(seqs(&rest), (51..=150).collect::<Vec<_>>());
    let (code, stderr) = send.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");

    let got = t.run("bob", &["sync"]).ok().json();
    assert_eq!(
        texts(&got),
        (1..=150)
            .map(|i| format!("message {i}"))
            .collect::<Vec<_>>()
    );
    drop(server);
}

/// Read state from the command line (issue 13): the conversation list with unread counts
/// and previews, `tern read`, the total, and the read events `tern sync` prints on bob's
/// other device (`read`) and on alice's (`receipt`).
#[tokio::test(flavor = "multi_thread")]
async fn conversations_unread_read_and_receipts() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    // A second device each, on profiles of their own (a device that logs in again
    // elsewhere is replaced, so the followers below must not share one with the commands).
    for (profile, user, device) in [
        ("bob2", "bob", "bob-phone"),
        ("alice2", "alice", "alice-phone"),
    ] {
        t.run(
            profile,
            &["login", user, "--password", PASSWORD, "--device", device],
        )
        .ok();
    }

    let acks = t
        .run_stdin(
            "alice",
            &["send", "--to", "bob", "--stdin"],
            "one\ntwo\nthree, the last\n",
        )
        .ok()
        .json();
    assert_eq!(seqs(&acks), vec![1, 2, 3]);

    let list = t.run("bob", &["--json", "conversations"]).ok();
    assert_eq!(
        list.stdout,
        r#"{"conv":"d:alice:bob","kind":"direct","title":"alice","last_seq":3,"last_text":"three, the last","unread":3,"mentions":0,"read_seq":0,"muted":false,"pinned":false}"#
            .to_string()
            + "\n"
    );
    // Alice's own messages are never unread for her.
    let list = t.run("alice", &["--json", "conversations"]).ok().json();
    assert_eq!(
        (&list[0]["title"], &list[0]["unread"], &list[0]["read_seq"]),
        (&"bob".into(), &0.into(), &3.into())
    );

    // Both other devices follow live; each first prints its 3 messages.
    let bob2 = Background::spawn(t.cmd("bob2", &["sync", "--follow"]));
    assert_eq!(
        seqs(&bob2.next_json(3, Duration::from_secs(15))),
        vec![1, 2, 3]
    );
    let alice = Background::spawn(t.cmd("alice2", &["sync", "--follow"]));
    assert_eq!(
        seqs(&alice.next_json(3, Duration::from_secs(15))),
        vec![1, 2, 3]
    );

    let read = t
        .run("bob", &["--json", "read", "--with", "alice", "--seq", "2"])
        .ok();
    assert_eq!(read.stdout, "{\"conv\":\"d:alice:bob\",\"read_seq\":2}\n");
    assert_eq!(
        bob2.next_lines(1, Duration::from_secs(10)),
        vec![r#"{"event":"read","conv":"d:alice:bob","read_seq":2}"#]
    );
    assert_eq!(
        alice.next_lines(1, Duration::from_secs(10)),
        vec![r#"{"event":"receipt","conv":"d:alice:bob","user":"bob","read_seq":2}"#]
    );

    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        (list.len(), &list[0]["unread"], &list[0]["read_seq"]),
        (1, &1.into(), &2.into())
    );
    let total = t.run("bob", &["--json", "conversations", "--total"]).ok();
    assert_eq!(total.stdout, "{\"total_unread\":1}\n");

    // Backwards is a no-op, not an error, and tells nobody.
    let read = t
        .run("bob", &["--json", "read", "--with", "alice", "--seq", "1"])
        .ok();
    assert_eq!(read.json()[0]["read_seq"], 2);
    // For people: the position and what is left.
    let read = t
        .run("bob", &["read", "--with", "alice", "--seq", "1"])
        .ok();
    assert_eq!(read.stdout, "d:alice:bob: read up to seq 2, 1 unread\n");

    // A group: listed first (most recent), its CREATED event unread for bob.
    let gid = t
        .run("alice", &["group", "create", "team", "--members", "bob"])
        .ok()
        .json()[0]["group"]
        .as_str()
        .unwrap()
        .to_string();
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    let convs: Vec<(&str, &str, &str, u64)> = list
        .iter()
        .map(|c| {
            (
                c["conv"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["title"].as_str().unwrap(),
                c["unread"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        convs,
        vec![
            (gid.as_str(), "group", "team", 1),
            ("d:alice:bob", "direct", "alice", 1)
        ]
    );
    let human = t.run("bob", &["conversations"]).ok();
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("   (1) team ") && lines[0].ends_with("alice: * group event"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("   (1) alice ") && lines[1].ends_with("alice: three, the last"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "2 conversation(s), 2 unread");
    let human = t.run("bob", &["conversations", "--total"]).ok();
    assert_eq!(human.stdout, "2 unread\n");

    // The followers printed the group's CREATED message; no read event came meanwhile
    // (the no-op read above told nobody).
    let created = bob2.next_json(1, Duration::from_secs(10));
    assert_eq!(
        (created[0]["conv"].as_str(), created[0]["seq"].as_u64()),
        (Some(gid.as_str()), Some(1))
    );
    let created = alice.next_json(1, Duration::from_secs(10));
    assert_eq!(
        (created[0]["conv"].as_str(), created[0]["seq"].as_u64()),
        (Some(gid.as_str()), Some(1))
    );

    // No --seq: up to the latest. The receipt reaches the group's other member.
    let read = t
        .run("bob", &["--json", "read", "--group", &gid])
        .ok()
        .json();
    assert_eq!(read, vec![serde_json::json!({"conv": gid, "read_seq": 1})]);
    assert_eq!(
        bob2.next_json(1, Duration::from_secs(10)),
        vec![serde_json::json!({"event": "read", "conv": gid, "read_seq": 1})]
    );
    assert_eq!(
        alice.next_json(1, Duration::from_secs(10)),
        vec![serde_json::json!({"event": "receipt", "conv": gid, "user": "bob", "read_seq": 1})]
    );
    let total = t.run("bob", &["--json", "conversations", "--total"]).ok();
    assert_eq!(total.stdout, "{\"total_unread\":1}\n");

    // Errors: past the last message is invalid (2); no such conversation (5).
    let out = t
        .run("bob", &["--json", "read", "--with", "alice", "--seq", "9"])
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    let out = t
        .run("bob", &["--json", "read", "--with", "carol"])
        .failed(5);
    assert_eq!(out.error_code(), "NOT_FOUND");
    t.run("bob", &["read", "--group", "g:00000000000000aa"])
        .failed(5);
    t.run("bob", &["read", "--with", "alice", "--seq", "0"])
        .failed(2);
}

/// `(conv, unread, muted, pinned)` of each line of `tern --json conversations`, in order.
fn list_settings(list: &[Value]) -> Vec<(String, u64, bool, bool)> {
    list.iter()
        .map(|c| {
            (
                c["conv"].as_str().unwrap().to_string(),
                c["unread"].as_u64().unwrap(),
                c["muted"].as_bool().unwrap(),
                c["pinned"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mute_and_pin_order_the_list_leave_the_total_and_reach_the_other_device() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for user in ["alice", "bob", "carol"] {
        t.account(user);
    }
    t.run(
        "bob2",
        &[
            "login",
            "bob",
            "--password",
            PASSWORD,
            "--device",
            "bob-phone",
        ],
    )
    .ok();

    // Three conversations for bob, the group the most recent, alice's the oldest.
    t.run_stdin("alice", &["send", "--to", "bob", "--stdin"], "a1\na2\n")
        .ok();
    t.run("carol", &["send", "--to", "bob", "c1"]).ok();
    let gid = t
        .run("alice", &["group", "create", "team", "--members", "bob"])
        .ok()
        .json()[0]["group"]
        .as_str()
        .unwrap()
        .to_string();
    let (alice, carol) = ("d:alice:bob".to_string(), "d:bob:carol".to_string());

    // Bob's other device follows live; first its 4 messages.
    let bob2 = Background::spawn(t.cmd("bob2", &["sync", "--follow"]));
    let backlog = bob2.next_json(4, Duration::from_secs(15));
    assert_eq!(
        backlog
            .iter()
            .map(|m| m["conv"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![alice.as_str(), alice.as_str(), carol.as_str(), gid.as_str()]
    );

    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        list_settings(&list),
        vec![
            (gid.clone(), 1, false, false),
            (carol.clone(), 1, false, false),
            (alice.clone(), 2, false, false),
        ]
    );

    // Pin the oldest: listed first; the other device hears of it.
    let pin = t.run("bob", &["--json", "pin", "--with", "alice"]).ok();
    assert_eq!(
        pin.stdout,
        "{\"conv\":\"d:alice:bob\",\"muted\":false,\"pinned\":true}\n"
    );
    assert_eq!(
        bob2.next_lines(1, Duration::from_secs(10)),
        vec![r#"{"event":"settings","conv":"d:alice:bob","muted":false,"pinned":true}"#]
    );
    let list = t.run("bob", &["--json", "conversations"]).ok();
    assert_eq!(
        list.stdout.lines().next().unwrap(),
        r#"{"conv":"d:alice:bob","kind":"direct","title":"alice","last_seq":2,"last_text":"a2","unread":2,"mentions":0,"read_seq":0,"muted":false,"pinned":true}"#
    );
    assert_eq!(
        list_settings(&list.json()),
        vec![
            (alice.clone(), 2, false, true),
            (gid.clone(), 1, false, false),
            (carol.clone(), 1, false, false),
        ]
    );

    // Mute the group: still listed (not pinned, most recent of the rest), its 1 unread
    // still shown, but left out of the total.
    let mute = t
        .run("bob", &["--json", "mute", "--group", &gid])
        .ok()
        .json();
    assert_eq!(
        mute,
        vec![serde_json::json!({"conv": gid, "muted": true, "pinned": false})]
    );
    assert_eq!(
        bob2.next_json(1, Duration::from_secs(10)),
        vec![serde_json::json!({"event": "settings", "conv": gid, "muted": true, "pinned": false})]
    );
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        list_settings(&list),
        vec![
            (alice.clone(), 2, false, true),
            (gid.clone(), 1, true, false),
            (carol.clone(), 1, false, false),
        ]
    );
    let total = t.run("bob", &["--json", "conversations", "--total"]).ok();
    assert_eq!(total.stdout, "{\"total_unread\":3}\n");
    let total = t.run("bob", &["conversations", "--total"]).ok();
    assert_eq!(total.stdout, "3 unread\n");

    // For people: the marks and the summary.
    let human = t.run("bob", &["conversations"]).ok();
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("   (2) alice ") && lines[0].ends_with("alice: a2  [pinned]"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("   (1) team ") && lines[1].ends_with("alice: * group event  [muted]"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("   (1) carol ") && lines[2].ends_with("carol: c1"),
        "{lines:?}"
    );
    assert_eq!(
        lines[3],
        "3 conversation(s), 3 unread (1 muted, not counted)"
    );

    // Pin the muted group too: both pinned, most recent first; the answer has both.
    let pin = t.run("bob", &["pin", "--group", &gid]).ok();
    assert_eq!(pin.stdout, format!("{gid}: pinned, muted\n"));
    assert_eq!(
        bob2.next_json(1, Duration::from_secs(10)),
        vec![serde_json::json!({"event": "settings", "conv": gid, "muted": true, "pinned": true})]
    );
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        list_settings(&list),
        vec![
            (gid.clone(), 1, true, true),
            (alice.clone(), 2, false, true),
            (carol.clone(), 1, false, false),
        ]
    );
    // Setting what is already set answers the same and tells no device.
    let again = t
        .run("bob", &["--json", "pin", "--group", &gid])
        .ok()
        .json();
    assert_eq!(
        again,
        vec![serde_json::json!({"conv": gid, "muted": true, "pinned": true})]
    );

    // Unpin and unmute: back to recency, the group counted again.
    let unpin = t.run("bob", &["unpin", "--with", "alice"]).ok();
    assert_eq!(unpin.stdout, "d:alice:bob: not pinned, not muted\n");
    // The next push is this one: the repeated pin above sent none.
    assert_eq!(
        bob2.next_lines(1, Duration::from_secs(10)),
        vec![r#"{"event":"settings","conv":"d:alice:bob","muted":false,"pinned":false}"#]
    );
    let unmute = t
        .run("bob", &["--json", "unmute", "--group", &gid])
        .ok()
        .json();
    assert_eq!(
        unmute,
        vec![serde_json::json!({"conv": gid, "muted": false, "pinned": true})]
    );
    assert_eq!(
        bob2.next_json(1, Duration::from_secs(10)),
        vec![serde_json::json!({"event": "settings", "conv": gid, "muted": false, "pinned": true})]
    );
    let total = t.run("bob", &["--json", "conversations", "--total"]).ok();
    assert_eq!(total.stdout, "{\"total_unread\":4}\n");
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        list_settings(&list),
        vec![
            (gid.clone(), 1, false, true),
            (carol.clone(), 1, false, false),
            (alice.clone(), 2, false, false),
        ]
    );

    // Settings are bob's alone: alice's list is as it was.
    let list = t.run("alice", &["--json", "conversations"]).ok().json();
    assert_eq!(
        list_settings(&list),
        vec![
            (gid.clone(), 0, false, false),
            (alice.clone(), 0, false, false)
        ]
    );

    // Errors: no conversation with dave (5, NOT_FOUND), a group bob is not in (5), no
    // conversation named (2).
    let out = t
        .run("bob", &["--json", "mute", "--with", "dave"])
        .failed(5);
    assert_eq!(out.error_code(), "NOT_FOUND");
    let out = t
        .run("bob", &["--json", "pin", "--group", "g:00000000000000aa"])
        .failed(5);
    assert_eq!(out.error_code(), "FORBIDDEN");
    t.run("bob", &["unmute"]).failed(2);
    t.run("bob", &["pin", "--with", "alice", "--group", &gid])
        .failed(2);
}

/// The fields of a `tern --json history` line this test is about: seq, from, text and
/// the reply/mention fields exactly as printed (absent when they do not apply).
fn reply_fields(v: &Value) -> Value {
    let mut o = serde_json::Map::new();
    for k in ["seq", "from", "text", "reply_to", "mentions", "mention_all"] {
        if let Some(x) = v.get(k) {
            o.insert(k.to_string(), x.clone());
        }
    }
    Value::Object(o)
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_mentions_receipts_and_typing() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["alice", "bob", "carol"] {
        t.account(u);
    }
    t.run(
        "carol2",
        &[
            "login",
            "carol",
            "--password",
            PASSWORD,
            "--device",
            "carol-phone",
        ],
    )
    .ok();
    let gid = t
        .run(
            "alice",
            &["group", "create", "team", "--members", "bob,carol"],
        )
        .ok()
        .json()[0]["group"]
        .as_str()
        .unwrap()
        .to_string();
    let hello = t
        .run("alice", &["send", "--group", &gid, "hello team"])
        .ok()
        .json();
    assert_eq!(seqs(&hello), vec![2]);

    // Bob answers seq 2 and mentions carol.
    let reply = t
        .run(
            "bob",
            &[
                "send",
                "--group",
                &gid,
                "--reply-to",
                "2",
                "--mention",
                "carol",
                "carol, can you?",
            ],
        )
        .ok()
        .json();
    assert_eq!(seqs(&reply), vec![3]);

    // A plain member may not @all (FORBIDDEN, exit 5), nor mention a non-member or
    // answer a message that does not exist (INVALID_ARGUMENT, exit 2): nothing is stored.
    let out = t
        .run(
            "bob",
            &[
                "--json",
                "send",
                "--group",
                &gid,
                "--mention",
                "@all",
                "all of you",
            ],
        )
        .failed(5);
    assert_eq!(out.error_code(), "FORBIDDEN");
    let out = t
        .run(
            "bob",
            &["--json", "send", "--group", &gid, "--mention", "dave", "x"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    let out = t
        .run(
            "bob",
            &["--json", "send", "--group", &gid, "--reply-to", "9", "x"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");

    // The owner may: an @all.
    let all = t
        .run(
            "alice",
            &["send", "--group", &gid, "--mention", "@all", "meeting at 3"],
        )
        .ok()
        .json();
    assert_eq!(seqs(&all), vec![4]);

    let history = t
        .run("carol", &["--json", "history", "--remote", "--group", &gid])
        .ok()
        .json();
    let got: Vec<Value> = history.iter().skip(1).map(reply_fields).collect();
    assert_eq!(
        got,
        vec![
            serde_json::json!({"seq": 2, "from": "alice", "text": "hello team"}),
            serde_json::json!({"seq": 3, "from": "bob", "text": "carol, can you?",
                "reply_to": 2, "mentions": ["carol"]}),
            serde_json::json!({"seq": 4, "from": "alice", "text": "meeting at 3",
                "mention_all": true}),
        ]
    );
    let human = t
        .run("carol", &["history", "--remote", "--group", &gid])
        .ok();
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert!(
        lines[2].ends_with("bob: carol, can you? (reply to #2) (mentions carol)"),
        "{lines:?}"
    );
    assert!(
        lines[3].ends_with("alice: meeting at 3 (mentions @all)"),
        "{lines:?}"
    );

    // Carol: 4 unread, 2 of them mention her (by name, and the @all). Bob: the @all only
    // (his own message mentions nobody for him). Alice: nothing.
    let mentions = |user: &str| {
        let list = t.run(user, &["--json", "conversations"]).ok().json();
        assert_eq!(list.len(), 1, "{list:?}");
        (
            list[0]["unread"].as_u64().unwrap(),
            list[0]["mentions"].as_u64().unwrap(),
        )
    };
    assert_eq!(mentions("carol"), (4, 2));
    assert_eq!(mentions("bob"), (1, 1));
    assert_eq!(mentions("alice"), (0, 0));

    // Who read bob's reply (seq 3): of alice and carol, alice (her @all at seq 4 moved
    // her read position past it).
    let receipts = t
        .run(
            "bob",
            &["--json", "receipts", "--group", &gid, "--seq", "3"],
        )
        .ok();
    assert_eq!(
        receipts.stdout,
        format!("{{\"conv\":\"{gid}\",\"seq\":3,\"read_by\":[\"alice\"],\"read_count\":1}}\n")
    );

    // Carol reads everything: no mention left.
    let read = t
        .run("carol", &["--json", "read", "--group", &gid])
        .ok()
        .json();
    assert_eq!(read, vec![serde_json::json!({"conv": gid, "read_seq": 4})]);
    assert_eq!(mentions("carol"), (0, 0));

    let receipts = t
        .run(
            "bob",
            &["--json", "receipts", "--group", &gid, "--seq", "3"],
        )
        .ok();
    assert_eq!(
        receipts.stdout,
        format!(
            "{{\"conv\":\"{gid}\",\"seq\":3,\"read_by\":[\"alice\",\"carol\"],\"read_count\":2}}\n"
        )
    );
    let human = t
        .run("bob", &["receipts", "--group", &gid, "--seq", "3"])
        .ok();
    assert_eq!(
        human.stdout,
        format!("{gid}: seq 3 read by 2 of 2 (alice, carol)\n")
    );
    let out = t
        .run(
            "bob",
            &["--json", "receipts", "--group", &gid, "--seq", "9"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    t.run(
        "bob",
        &["receipts", "--group", "g:00000000000000aa", "--seq", "1"],
    )
    .failed(5);

    // Typing: carol's other device follows (after its 4 messages), bob types once.
    let carol2 = Background::spawn(t.cmd("carol2", &["sync", "--follow"]));
    assert_eq!(
        seqs(&carol2.next_json(4, Duration::from_secs(15))),
        vec![1, 2, 3, 4]
    );
    let typing = t.run("bob", &["--json", "typing", "--group", &gid]).ok();
    assert_eq!(
        typing.stdout,
        format!("{{\"conv\":\"{gid}\",\"typing\":true}}\n")
    );
    assert_eq!(
        carol2.next_lines(1, Duration::from_secs(10)),
        vec![format!(
            "{{\"event\":\"typing\",\"conv\":\"{gid}\",\"user\":\"bob\",\"typing\":true}}"
        )]
    );
    // Not a member: refused.
    t.run("bob", &["typing", "--group", "g:00000000000000aa"])
        .failed(5);
}

/// `{"conv":..,"seq":N,"ok":true}`, the answer of edit, recall and delete.
fn change_ok(out: Out, conv: &str, seq: u64) {
    let v = out.ok().json();
    assert_eq!(
        v,
        vec![serde_json::json!({ "conv": conv, "seq": seq, "ok": true })]
    );
}

/// Edit, recall and delete for me, as the issue's CLI surface has them: each prints
/// `{"conv","seq","ok"}`; history shows the latest text marked edited, a recalled message
/// without text, and leaves out what the reader deleted (only for them); sync prints the
/// messages as they are now plus `edit`, `recall` and `hidden` event lines; the refusals
/// have their codes and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn edit_recall_and_delete_for_me() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    t.run_stdin(
        "alice",
        &["send", "--to", "bob", "--stdin"],
        "helo\nsecret\nthird\n",
    )
    .ok();
    let conv = "d:alice:bob";

    change_ok(
        t.run(
            "alice",
            &[
                "--json", "edit", "--with", "bob", "--seq", "1", "hello", "bob",
            ],
        ),
        conv,
        1,
    );
    change_ok(
        t.run(
            "alice",
            &["--json", "recall", "--with", "bob", "--seq", "2"],
        ),
        conv,
        2,
    );
    change_ok(
        t.run(
            "bob",
            &["--json", "delete", "--with", "alice", "--seq", "3"],
        ),
        conv,
        3,
    );

    // Refusals: bob edits alice's message, a seq that does not exist, a second recall,
    // an edit of a recalled message.
    let out = t
        .run(
            "bob",
            &["--json", "edit", "--with", "alice", "--seq", "1", "mine"],
        )
        .failed(5);
    assert_eq!(out.error_code(), "FORBIDDEN");
    let out = t
        .run(
            "alice",
            &["--json", "edit", "--with", "bob", "--seq", "99", "x"],
        )
        .failed(5);
    assert_eq!(out.error_code(), "NOT_FOUND");
    let out = t
        .run(
            "alice",
            &["--json", "recall", "--with", "bob", "--seq", "2"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    let out = t
        .run(
            "alice",
            &["--json", "edit", "--with", "bob", "--seq", "2", "back"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");

    let bob = t
        .run("bob", &["--json", "history", "--remote", "--with", "alice"])
        .ok()
        .json();
    assert_eq!(
        seqs(&bob),
        vec![1, 2],
        "3 deleted for bob; edit/recall entries left out"
    );
    assert_eq!(
        (&bob[0]["text"], &bob[0]["edited"]),
        (&"hello bob".into(), &true.into())
    );
    assert_eq!(bob[1]["recalled"], true);
    assert!(bob[1].get("text").is_none(), "{bob:?}");
    let alice = t
        .run("alice", &["--json", "history", "--remote", "--with", "bob"])
        .ok()
        .json();
    assert_eq!(seqs(&alice), vec![1, 2, 3], "alice still has 3");
    assert_eq!(alice[2]["text"], "third");
    let human = t
        .run("bob", &["history", "--remote", "--with", "alice"])
        .ok()
        .stdout;
    assert!(human.contains("alice: hello bob (edited)"), "{human}");
    assert!(human.contains("alice: (recalled)"), "{human}");
    assert!(
        !human.contains("secret") && !human.contains("third"),
        "{human}"
    );

    // Bob's first sync: the messages as they are now, then what changed them.
    let lines = t.run("bob", &["--json", "sync"]).ok().json();
    let events: Vec<(Option<&str>, u64)> = lines
        .iter()
        .map(|l| (l["event"].as_str(), l["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        events,
        vec![
            (None, 1),
            (None, 2),
            (Some("hidden"), 3),
            (Some("edit"), 1),
            (Some("recall"), 2),
        ],
        "{lines:?}"
    );
    assert_eq!(lines[0]["text"], "hello bob");
    assert_eq!(lines[3]["text"], "hello bob");
    assert_eq!(
        (&lines[3]["from"], &lines[3]["entry_seq"]),
        (&"alice".into(), &4.into())
    );
    assert_eq!(
        (&lines[4]["from"], &lines[4]["entry_seq"]),
        (&"alice".into(), &5.into())
    );
    assert!(lines[1].get("text").is_none());
}

/// Past the recall window the sender gets WINDOW_EXPIRED (exit 5) and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn recall_after_the_window_is_refused() {
    let server = TestServer::start_with(|c| c.messages.recall_window_secs = 1).await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    t.run("alice", &["send", "--to", "bob", "too late"]).ok();
    std::thread::sleep(Duration::from_millis(2100));
    let out = t
        .run(
            "alice",
            &["--json", "recall", "--with", "bob", "--seq", "1"],
        )
        .failed(5);
    assert_eq!(out.error_code(), "WINDOW_EXPIRED");
    let h = t
        .run("bob", &["--json", "history", "--remote", "--with", "alice"])
        .ok()
        .json();
    assert_eq!(texts(&h), vec!["too late"]);
}

/// `tern send --ttl`: a message bob gets only after its TTL is an `expired` event line in
/// sync and `"expired":true` without text in history; a long TTL arrives as usual; a TTL
/// past the server's maximum is INVALID_ARGUMENT; a send that cannot go out before its
/// TTL (no server) gives up with EXPIRED and leaves nothing queued.
#[tokio::test(flavor = "multi_thread")]
async fn send_with_a_ttl() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    let acks = t
        .run(
            "alice",
            &[
                "--json",
                "send",
                "--to",
                "bob",
                "--ttl",
                "1",
                "now or never",
            ],
        )
        .ok();
    assert_eq!(seqs(&acks.json()), vec![1]);
    t.run(
        "alice",
        &["send", "--to", "bob", "--ttl", "3600", "within the hour"],
    )
    .ok();
    std::thread::sleep(Duration::from_millis(1500));
    let lines = t.run("bob", &["--json", "sync"]).ok().json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        serde_json::json!({ "event": "expired", "conv": "d:alice:bob", "seq": 1 })
    );
    assert_eq!(lines[1]["text"], "within the hour");
    let h = t
        .run("bob", &["--json", "history", "--remote", "--with", "alice"])
        .ok()
        .json();
    assert_eq!(seqs(&h), vec![1, 2], "the seq stays, as a tombstone");
    assert_eq!(h[0]["expired"], true);
    assert!(h[0].get("text").is_none(), "{h:?}");

    let out = t
        .run(
            "alice",
            &["--json", "send", "--to", "bob", "--ttl", "700000", "x"],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");

    // No server at this address: the SDK drops the message when its TTL passes.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let started = Instant::now();
    let out = run(
        t.cmd_at(
            &dead,
            "alice",
            &[
                "--json",
                "--transport",
                "tcp",
                "send",
                "--to",
                "bob",
                "--ttl",
                "1",
                "lost",
            ],
        ),
        None,
    )
    .failed(1);
    assert_eq!(out.error_code(), "EXPIRED");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "not the connect timeout"
    );
    let who = t.run("alice", &["--json", "whoami"]).ok().json();
    assert_eq!(who[0]["queued"], 0, "not sent later either");
    let h = t
        .run("bob", &["--json", "history", "--remote", "--with", "alice"])
        .ok()
        .json();
    assert_eq!(h.len(), 2);
}

/// `tern settings`: reads and sets send_receipts; with it off, bob's reads are not shown
/// to alice, and on again they are.
#[tokio::test(flavor = "multi_thread")]
async fn settings_turn_read_receipts_off() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    let get = |args: &[&str]| t.run("bob", args).ok().json();
    assert_eq!(
        get(&["--json", "settings"]),
        vec![serde_json::json!({ "send_receipts": true })]
    );
    assert_eq!(
        get(&["--json", "settings", "--send-receipts", "off"]),
        vec![serde_json::json!({ "send_receipts": false })]
    );
    assert_eq!(get(&["--json", "settings"])[0]["send_receipts"], false);
    assert_eq!(
        t.run("bob", &["settings"]).ok().stdout,
        "send_receipts: off\n"
    );
    t.run("alice", &["send", "--to", "bob", "one"]).ok();
    let read = get(&["--json", "read", "--with", "alice"]);
    assert_eq!(read[0]["read_seq"], 1, "bob's own read state still moves");
    let r = t
        .run(
            "alice",
            &["--json", "receipts", "--with", "bob", "--seq", "1"],
        )
        .ok()
        .json();
    assert_eq!(
        (&r[0]["read_by"], &r[0]["read_count"]),
        (&serde_json::json!([]), &0.into())
    );
    get(&["--json", "settings", "--send-receipts", "on"]);
    t.run("alice", &["send", "--to", "bob", "two"]).ok();
    get(&["--json", "read", "--with", "alice"]);
    let r = t
        .run(
            "alice",
            &["--json", "receipts", "--with", "bob", "--seq", "2"],
        )
        .ok()
        .json();
    assert_eq!(r[0]["read_by"], serde_json::json!(["bob"]));
    let out = t
        .run("bob", &["settings", "--send-receipts", "maybe"])
        .failed(2);
    assert!(out.stderr.contains("maybe"), "{out:?}");
}

/// `tern chat` opens with the last 20 messages (#6..#25 of 25), marks them read, and
/// shows live edits, recalls and typing; `tern sync --follow` prints alice's presence.
#[tokio::test(flavor = "multi_thread")]
async fn chat_opens_with_the_last_20_and_shows_changes_live() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    // Bob's second device looks at his list while his chat runs (the chat's own device
    // logging in again elsewhere would replace it).
    t.run(
        "bob2",
        &[
            "login",
            "bob",
            "--password",
            PASSWORD,
            "--device",
            "bob-phone",
        ],
    )
    .ok();
    let input: String = (1..=25).map(|i| format!("line {i}\n")).collect();
    t.run_stdin("alice", &["send", "--to", "bob", "--stdin"], &input)
        .ok();
    // Alice's sync (she has nothing new) so her later sync --follow shows only what comes.
    t.run("alice", &["sync"]).ok();

    let follow = Background::spawn(t.cmd("alice", &["--json", "sync", "--follow"]));
    let chat = Background::spawn(t.cmd("bob", &["chat", "--with", "alice"]));
    let backlog = chat.next_lines(20, Duration::from_secs(15));
    for (i, line) in backlog.iter().enumerate() {
        let n = i + 6;
        assert!(line.starts_with('['), "{line}");
        assert!(
            line.ends_with(&format!(" #{n}] alice: line {n}")),
            "{backlog:?}"
        );
    }
    // Marked read at once (not only at exit).
    let read = (0..100).any(|_| {
        let list = t.run("bob2", &["--json", "conversations"]).ok().json();
        let done = list[0]["read_seq"] == 25 && list[0]["unread"] == 0;
        if !done {
            std::thread::sleep(Duration::from_millis(50));
        }
        done
    });
    assert!(read, "what the chat showed is read");
    // Bob is online in a chat for more than the settle time: alice's sync hears of it.
    // (Bob's receipt comes first: the chat marked what it showed read.)
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let presence = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = follow.lines.recv_timeout(left) else {
            panic!("no presence line; alice's sync printed {seen:?}");
        };
        let line: Value = serde_json::from_str(&line).unwrap();
        if line["event"] == "presence" {
            break line;
        }
        seen.push(line);
    };
    assert_eq!(
        (&presence["user"], &presence["online"]),
        (&"bob".into(), &true.into())
    );
    assert!(
        seen.iter()
            .any(|l| l["event"] == "receipt" && l["read_seq"] == 25),
        "{seen:?}"
    );

    t.run(
        "alice",
        &["edit", "--with", "bob", "--seq", "25", "line 25, fixed"],
    )
    .ok();
    let live = chat.next_lines(1, Duration::from_secs(10));
    assert!(
        live[0].ends_with(" #26] alice edited #25: line 25, fixed"),
        "{live:?}"
    );
    t.run("alice", &["recall", "--with", "bob", "--seq", "24"])
        .ok();
    let live = chat.next_lines(1, Duration::from_secs(10));
    assert!(live[0].ends_with(" #27] alice recalled #24"), "{live:?}");
    t.run("alice", &["typing", "--with", "bob"]).ok();
    t.run("alice", &["send", "--to", "bob", "done"]).ok();
    let live = chat.next_lines(1, Duration::from_secs(10));
    assert!(live[0].ends_with(" #28] alice: done"), "{live:?}");
    let (code, stderr) = chat.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("-- alice is typing... --"), "{stderr}");
    let list = t.run("bob", &["--json", "conversations"]).ok().json();
    assert_eq!(
        (&list[0]["read_seq"], &list[0]["unread"]),
        (&28.into(), &0.into())
    );

    // A new chat shows the result: #25 edited, #24 recalled, the entries themselves not.
    let mut again = Background::spawn(t.cmd("bob", &["chat", "--with", "alice"]));
    let shown = again.next_lines(20, Duration::from_secs(15));
    assert!(shown[19].ends_with(" #28] alice: done"), "{shown:?}");
    assert!(
        shown[18].ends_with(" #25] alice: line 25, fixed (edited)"),
        "{shown:?}"
    );
    assert!(shown[17].ends_with(" #24] alice: (recalled)"), "{shown:?}");
    assert!(shown[0].ends_with(" #7] alice: line 7"), "{shown:?}");
    again.input("");
    let (code, stderr) = again.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    drop(follow);
}

/// Groups II: roles, handing the group over, the profile with mute-all, dissolving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_roles_profile_mute_all_and_dissolve() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["gra", "grb", "grc"] {
        t.account(u);
    }
    let gid = t
        .run("gra", &["group", "create", "crew", "--members", "grb,grc"])
        .ok()
        .json()[0]["group"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = |who: &str| -> Vec<(String, String)> {
        t.run(who, &["--json", "group", "members", &gid])
            .ok()
            .json()
            .iter()
            .map(|m| {
                (
                    m["user"].as_str().unwrap().to_string(),
                    m["role"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let ok = serde_json::json!([{ "ok": true }]);
    let j = |out: Out| serde_json::Value::Array(out.json());
    assert_eq!(
        j(
            t.run("gra", &["--json", "group", "role", &gid, "grb", "admin"])
                .ok()
        ),
        ok
    );
    // Only the owner changes roles (FORBIDDEN: exit 5).
    t.run("grb", &["group", "role", &gid, "grc", "admin"])
        .failed(5);
    assert_eq!(
        j(t.run("gra", &["--json", "group", "transfer", &gid, "grc"])
            .ok()),
        ok
    );
    assert_eq!(
        roles("grb"),
        [
            ("gra".to_string(), "ADMIN".to_string()),
            ("grb".to_string(), "ADMIN".to_string()),
            ("grc".to_string(), "OWNER".to_string())
        ]
    );
    // The new owner makes gra a plain member again; an admin sets the topic and mutes the
    // group: gra may no longer send (FORBIDDEN), admins still may.
    t.run("grc", &["group", "role", &gid, "gra", "member"]).ok();
    t.run(
        "grb",
        &[
            "group",
            "set",
            &gid,
            "--topic",
            "launch on friday",
            "--mute-all",
            "on",
        ],
    )
    .ok();
    let out = t.run("gra", &["--json", "send", "--group", &gid, "may I?"]);
    assert_eq!(out.code, 5, "{out:?}");
    t.run("grb", &["send", "--group", &gid, "admins may"]).ok();
    let list = t.run("gra", &["--json", "conversations"]).ok().json();
    assert_eq!(list[0]["title"], "crew");
    let h = t
        .run("gra", &["history", "--remote", "--group", &gid])
        .ok()
        .stdout;
    assert!(h.contains("* made grb admin"), "{h}");
    assert!(h.contains("* handed the group to grc"), "{h}");
    assert!(
        h.contains("topic \"launch on friday\", only admins may post"),
        "{h}"
    );
    t.run("grb", &["group", "set", &gid, "--visibility", "shared"])
        .ok();
    let h = t
        .run("gra", &["history", "--remote", "--group", &gid])
        .ok()
        .stdout;
    assert!(h.contains("history shared with members"), "{h}");
    // Only the owner dissolves; afterwards nobody is a member.
    t.run("grb", &["group", "dissolve", &gid]).failed(5);
    t.run("grc", &["group", "dissolve", &gid]).ok();
    t.run("grb", &["group", "members", &gid]).failed(5);
    assert!(t
        .run("gra", &["--json", "conversations"])
        .ok()
        .json()
        .is_empty());
    server.stop().await;
}

/// Public channels: create, the directory, join, broadcast-only, leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_create_list_join_and_leave() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["cha", "chb"] {
        t.account(u);
    }
    let gid = t
        .run(
            "cha",
            &["channel", "create", "Rust Jobs", "--broadcast-only"],
        )
        .ok()
        .json()[0]["group"]
        .as_str()
        .unwrap()
        .to_string();
    t.run("cha", &["send", "--group", &gid, "hiring"]).ok();
    let list = t
        .run("chb", &["--json", "channel", "list", "rust"])
        .ok()
        .json();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (
            &list[0]["conv"],
            &list[0]["name"],
            &list[0]["members"],
            &list[0]["broadcast_only"],
            &list[0]["joined"]
        ),
        (
            &serde_json::json!(gid),
            &serde_json::json!("Rust Jobs"),
            &serde_json::json!(1),
            &serde_json::json!(true),
            &serde_json::json!(false)
        )
    );
    assert!(t
        .run("chb", &["--json", "channel", "list", "go"])
        .ok()
        .json()
        .is_empty());
    // Anyone reads a public channel's history; joining puts it in the list.
    let h = t
        .run("chb", &["--json", "history", "--remote", "--group", &gid])
        .ok()
        .json();
    assert_eq!(seqs(&h), [1, 2], "the CREATED event and the post");
    assert_eq!(h[1]["text"], "hiring");
    t.run("chb", &["channel", "join", &gid]).ok();
    let list = t.run("chb", &["--json", "channel", "list"]).ok().json();
    assert_eq!(list[0]["joined"], true);
    assert_eq!(
        t.run("chb", &["--json", "conversations"]).ok().json().len(),
        1
    );
    // Broadcast-only: members read, do not post (FORBIDDEN: exit 5).
    t.run("chb", &["send", "--group", &gid, "me?"]).failed(5);
    t.run("chb", &["channel", "leave", &gid]).ok();
    assert!(t
        .run("chb", &["--json", "conversations"])
        .ok()
        .json()
        .is_empty());
    server.stop().await;
}

/// Each command resumes with the profile's token and saves the new one (PROTOCOL.md 5.3).
/// The server here takes each token once (no grace) and no password is given: a command
/// that resumed with an older token would fail. A copy of an old profile is a replaced
/// token: it revokes the device, and the password brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_token_rotates_with_every_command() {
    let server = TestServer::start_with(|c| c.accounts.token_rotation_grace_secs = 0).await;
    let t = Tern::new(&server);
    t.account("alice");
    t.account("bob");
    let token = |name: &str| -> String { t.state(name).token.expect("a token") };
    let mut seen = vec![token("alice")];
    std::fs::copy(t.profile("alice"), t.profile("alice-old")).unwrap();
    t.set_state("alice-old", &t.state("alice"));
    let commands: [&[&str]; 6] = [
        &["send", "--to", "bob", "one"],
        &["presence", "bob"],
        &["conversations"],
        &["send", "--to", "bob", "two"],
        &["history", "--remote", "--with", "bob"],
        &["sync"],
    ];
    for args in commands {
        t.run("alice", args).ok();
        let now = token("alice");
        assert!(!seen.contains(&now), "{args:?} saved a new token");
        seen.push(now);
    }
    let out = t.run("bob", &["--json", "sync"]).ok();
    assert_eq!(texts(&out.json()), vec!["one", "two"]);

    // The old copy holds a replaced token: refused, and the device is revoked.
    let out = t.run("alice-old", &["--json", "presence", "bob"]).failed(3);
    assert_eq!(out.error_code(), "TOKEN_REVOKED");
    let out = t.run("alice", &["--json", "presence", "bob"]).failed(3);
    assert_eq!(out.error_code(), "TOKEN_REVOKED");
    let mut cmd = t.cmd("alice", &["send", "--to", "bob", "three"]);
    cmd.env("TERN_PASSWORD", PASSWORD);
    run(cmd, None).ok();
    t.run("alice", &["send", "--to", "bob", "four"]).ok();
    server.stop().await;
}

/// `tern push register/unregister` (docs/PUSH.md): a JSON line each; a platform the server
/// does not know is INVALID_ARGUMENT (exit 2).
#[tokio::test(flavor = "multi_thread")]
async fn push_register_and_unregister() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("bob");
    let out = t
        .run(
            "bob",
            &[
                "--json",
                "push",
                "register",
                "--platform",
                "fcm",
                "--token",
                "tok-1",
                "--preview",
            ],
        )
        .ok()
        .json();
    assert_eq!(
        out,
        vec![serde_json::json!({ "push": "registered", "platform": "fcm", "preview": true })]
    );
    let out = t
        .run(
            "bob",
            &[
                "--json",
                "push",
                "register",
                "--platform",
                "sms",
                "--token",
                "tok",
            ],
        )
        .failed(2);
    assert_eq!(out.error_code(), "INVALID_ARGUMENT");
    let out = t.run("bob", &["--json", "push", "unregister"]).ok().json();
    assert_eq!(out, vec![serde_json::json!({ "push": "unregistered" })]);
    assert_eq!(
        t.run("bob", &["push", "unregister"]).ok().stdout,
        "push notifications off\n"
    );
}
