//! `tern-bench`: the tern load generator.
//!
//! Open-loop scenarios against a real `tern-server` (started here, or an external one):
//! messages are scheduled at a fixed rate before the run starts and latency counts from
//! each message's intended send time, recorded in HDR histograms. Senders and receivers
//! live in this one process, so send and receive times are on one clock. Every report
//! gives the parameters, offered and achieved rates, p50/p99/p99.9/max latencies, and the
//! server's CPU (from `/proc/PID/stat`) and memory (from `/proc/PID/status`).
//!
//! Layout: [`scenarios`] (one-to-one, fanout, idle, storm, durability, conversations), each written
//! once against [`systems::Adapter`], which [`systems::tern`] and the peers users would
//! pick instead implement ([`systems::mqtt`]: mosquitto, [`systems::nats`]: NATS
//! JetStream, [`systems::xmpp`]: ejabberd, [`systems::relay`]: the bare TLS relay of
//! [`relay`], for `bench/compare.sh`); [`engine`] (the
//! clock, the open-loop schedule, the pacer and trackers); [`probe`] (the server's CPU
//! and memory from `/proc`, starting and stopping a tern server); [`report`] (percentiles,
//! tables, JSON, and [`report::compare`]'s table of tern/peer ratios).

mod engine;
mod probe;
mod relay;
mod report;
mod scenarios;
mod systems;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "tern-bench",
    version,
    about = "Open-loop load generator for tern-server (latency from intended send times, HDR histograms)",
    after_help = "Examples (release builds; the bench starts target/release/tern-server itself):\n  \
        tern-bench --pin-cpu 1 --server-cpu 0 one-to-one --pairs 10 --sweep 1000,2000,4000 --duration 10\n  \
        tern-bench fanout --members 500 --senders 1 --rate 20 --duration 10\n  \
        tern-bench idle --connections 2000 --transport quic --heartbeat-secs 30\n  \
        tern-bench idle --connections 5000 --reconnect resume\n  \
        tern-bench storm --devices 200 --missed 50\n  \
        tern-bench durability --rate 2000 --duration 10\n  \
        tern-bench conversations --conversations 10000 --direct 1000 --calls 100\n  \
        tern-bench soak --pairs 10 --rate 500 --duration 240 --inbox-entries 1000 --timeline-entries 1000\n  \
        tern-bench --peer mosquitto --peer-addr 127.0.0.1:1883 --server-pid PID one-to-one --pairs 10 --rate 2000\n\
        Against a running server: --server 127.0.0.1:7443 --ca tern-data/certs/ca.pem --server-pid PID"
)]
struct Cli {
    #[command(flatten)]
    g: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Tcp,
    Quic,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Reconnect {
    /// Login with the password (argon2id on the server for every device)
    Login,
    /// Resume with the token from an earlier login (an HMAC check)
    Resume,
}

/// Options of every scenario.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Transport of the clients
    #[arg(long, global = true, value_enum, default_value = "tcp")]
    transport: TransportArg,
    /// Use a running server at this address (QUIC and TCP on the same port) instead of
    /// starting one
    #[arg(long, global = true, requires = "ca")]
    server: Option<SocketAddr>,
    /// CA certificate of the running server (with --server)
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Pid of the running server, for CPU and memory readings (with --server)
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Server binary to start (a `tern-server` beside tern-bench is used if this path
    /// does not exist)
    #[arg(long, global = true, default_value = "target/release/tern-server")]
    server_bin: PathBuf,
    /// Extra flag for the started server (repeatable), e.g. --server-arg=--store-cache-mb=16
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Pin the server process to this CPU
    #[arg(long, global = true)]
    server_cpu: Option<usize>,
    /// Pin the generator to this CPU
    #[arg(long, global = true)]
    pin_cpu: Option<usize>,
    /// Generator runtime threads [default: CPUs available to it]
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// One JSON object per report instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Keep the started server's flood limits (per-address login throttling and
    /// per-connection/per-user request rates). By default they are lifted, because every
    /// simulated user here shares one machine and a handful of loopback addresses
    #[arg(long, global = true)]
    keep_limits: bool,
    /// Bind client sockets to this many source addresses 127.0.0.1.. (default: the SDK's
    /// connect; idle uses ceil(connections / 20000))
    #[arg(long, global = true)]
    sources: Option<usize>,
    /// Logins (and registrations) in flight during setup; each costs an argon2id hash on
    /// the server
    #[arg(long, global = true, default_value_t = 4)]
    login_concurrency: usize,
    /// After the schedule ends, wait at most this long for outstanding acks and pushes
    #[arg(long, global = true, default_value_t = 10.0)]
    drain_secs: f64,
    /// Message body size in bytes
    #[arg(long, global = true, default_value_t = 100)]
    size: usize,
    /// Heartbeat for the started server (--heartbeat-secs); clients ping at the interval
    /// their LoginOk announces
    #[arg(long, global = true)]
    heartbeat_secs: Option<u32>,
    /// Receivers send a cumulative Ack every this many inbox pushes
    #[arg(long, global = true, default_value_t = 100)]
    ack_every: u64,
    /// tern: receivers send `MarkRead` up to the message every this many messages they
    /// receive from others (read receipts: the sender's devices get a ReadReceipt push);
    /// 0 = never
    #[arg(long, global = true, default_value_t = 0)]
    mark_read_every: u64,
    /// Run the scenario against this peer system instead of tern (bench/compare.sh
    /// starts it with a config from bench/peers/); give its pid with --server-pid
    #[arg(long, global = true, value_enum, requires = "peer_addr")]
    peer: Option<systems::PeerKind>,
    /// Address of the peer (MQTT, NATS or XMPP client port, or the relay's)
    #[arg(long, global = true)]
    peer_addr: Option<SocketAddr>,
    /// Connect to the peer over TLS 1.3, trusting this CA certificate (PEM): mosquitto
    /// and NATS with a TLS listener, and the relay (TLS only)
    #[arg(long, global = true)]
    peer_ca: Option<PathBuf>,
    /// Name of the system under test in reports (default: tern, or the peer's kind)
    #[arg(long, global = true)]
    system: Option<String>,
    /// Appended to the scenario name in reports (e.g. "overload"), so runs of one
    /// scenario with other parameters get their own rows in compare-table
    #[arg(long, global = true)]
    tag: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// P sender/receiver pairs, durable 1:1 sends at a fixed total rate
    OneToOne {
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Total messages per second over all pairs
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Run these rates in turn (one table row each) instead of --rate
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<f64>,
        /// "Peak sustained" is the highest rate with p99 below this (and nothing missing)
        #[arg(long, default_value_t = 10.0)]
        p99_bound_ms: f64,
    },
    /// One group of G online members; S of them send at a fixed total rate
    Fanout {
        #[arg(long, default_value_t = 500)]
        members: usize,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Messages per second into the group (each goes to members - 1 devices)
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Ramp to N logged-in idle connections, hold, and report memory per connection and
    /// idle CPU
    Idle {
        /// Connections (every one logs in: an argon2id check on the server, roughly
        /// 40-50 per second on 2 cores)
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold the connections while measuring idle CPU
        #[arg(long, default_value_t = 10.0)]
        hold_secs: f64,
        /// Devices (connections) per user (at most the server's sessions-per-user cap);
        /// fewer users means fewer argon2id registrations during setup
        #[arg(long, default_value_t = 10)]
        devices_per_user: usize,
        /// How the timed connections authenticate: login (the password each time), or
        /// resume (tern: all N log in untimed and are dropped, then all reconnect with
        /// their TLS session ticket and a Resume with their token; that ramp is timed)
        #[arg(long, value_enum, default_value = "login")]
        reconnect: Reconnect,
    },
    /// N devices offline while M messages arrive for each, then all reconnect at once and
    /// sync
    Storm {
        #[arg(long, default_value_t = 200)]
        devices: usize,
        #[arg(long, default_value_t = 50)]
        missed: usize,
        /// Users sending the missed messages (pipelined, as fast as acks allow)
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Sends in flight per sender
        #[arg(long, default_value_t = 128)]
        window: usize,
        /// How devices authenticate when they come back
        #[arg(long, value_enum, default_value = "login")]
        reconnect: Reconnect,
        /// Sync page size (limit)
        #[arg(long, default_value_t = 200)]
        page: u32,
        /// Give up on the storm after this many seconds
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
    },
    /// tern only: ListConversations latency for one user in many conversations (direct
    /// and groups, some unread, mentioned, pinned, muted)
    Conversations {
        /// Conversations the user is in
        #[arg(long, default_value_t = 10_000)]
        conversations: usize,
        /// How many of them are direct (one peer account each); the rest are groups
        #[arg(long, default_value_t = 1000)]
        direct: usize,
        /// Every this many groups gets 1-3 unread messages (the first mentions the user)
        #[arg(long, default_value_t = 10)]
        unread_every: usize,
        /// Every this many groups with unread is muted (0: none)
        #[arg(long, default_value_t = 5)]
        mute_every: usize,
        /// Calls of each list request (first page, last page, whole list)
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// Page size of the first and last page
        #[arg(long, default_value_t = 50)]
        page: u32,
    },
    /// tern only: SearchMessages latency over an index of --messages messages (sent by
    /// --writers users to one user, who then searches); waits until all are searchable
    Search {
        /// Messages to send (and index) first
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// Users sending them, each over its own pipelined connection
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Searches of each kind
        #[arg(long, default_value_t = 200)]
        calls: usize,
    },
    /// tern only: upload and download throughput of a --mib MiB file over the
    /// --transport under test (pipelined 512 KiB chunks; the download checked by sha256)
    Blobs {
        /// File size in MiB
        #[arg(long, default_value_t = 50)]
        mib: usize,
        /// Files uploaded and downloaded, one after the other
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Print one comparison table (tern's ratio to each peer) from JSON reports, one per
    /// line as --json writes them (bench/compare.sh)
    CompareTable {
        /// Files of JSON reports ("-" = stdin)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// tern only: a steady-state 1:1 soak with retention on, reading the data dir's size
    /// on disk after every sample (it should level off)
    Soak {
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds in all
        #[arg(long, default_value_t = 240.0)]
        duration: f64,
        /// Seconds per sample (the data dir is measured after each)
        #[arg(long, default_value_t = 20.0)]
        sample_secs: f64,
        /// --retention-inbox-max-entries of the server
        #[arg(long, default_value_t = 1000)]
        inbox_entries: u64,
        /// --retention-timeline-max-entries of the server
        #[arg(long, default_value_t = 1000)]
        timeline_entries: u64,
        /// --retention-sweep-interval-ms of the server
        #[arg(long, default_value_t = 2000)]
        sweep_ms: u64,
        /// The same soak with retention off (for contrast)
        #[arg(long)]
        retention_off: bool,
    },
    /// Serve as the bare TLS relay (the ceiling row of bench/compare.sh): frames from
    /// one connection to the ones registered under the name they carry, an ack to the
    /// sender; no store, no fsync
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        /// Certificate chain (PEM), e.g. server.pem from make-certs
        #[arg(long)]
        cert: PathBuf,
        /// Private key (PEM), e.g. server.key from make-certs
        #[arg(long)]
        key: PathBuf,
    },
    /// Write a CA (ca.pem) and a server certificate and key for localhost, 127.0.0.1
    /// and ::1 (server.pem, server.key) into DIR, for the TLS peers and the relay
    MakeCerts { dir: PathBuf },
    /// The same 1:1 load with group commit on, then with --group-commit false
    Durability {
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
}

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn check(cli: &Cli) -> anyhow::Result<()> {
    let bounded = |what: &str, v: f64, max: f64| {
        anyhow::ensure!(v > 0.0 && v <= max, "{what} must be in (0, {max}]");
        Ok(())
    };
    bounded("--drain-secs", cli.g.drain_secs, 600.0)?;
    anyhow::ensure!(
        cli.g.login_concurrency >= 1,
        "--login-concurrency must be >= 1"
    );
    anyhow::ensure!(cli.g.size <= 512 * 1024, "--size must be at most 512 KiB");
    match &cli.cmd {
        Cmd::OneToOne {
            pairs,
            rate,
            duration,
            sweep,
            ..
        } => {
            anyhow::ensure!(*pairs >= 1, "--pairs must be >= 1");
            bounded("--duration", *duration, 3600.0)?;
            for r in sweep.iter().chain(std::iter::once(rate)) {
                bounded("rate", *r, 1e7)?;
                anyhow::ensure!(r * duration <= 5e7, "rate x duration above 50M messages");
            }
        }
        Cmd::Fanout {
            members,
            senders,
            rate,
            duration,
        } => {
            anyhow::ensure!(*members >= 2, "--members must be >= 2");
            anyhow::ensure!(
                *senders >= 1 && senders <= members,
                "--senders must be 1..=members"
            );
            bounded("--duration", *duration, 3600.0)?;
            bounded("--rate", *rate, 1e6)?;
            anyhow::ensure!(rate * duration <= 5e6, "rate x duration above 5M messages");
        }
        Cmd::Idle {
            connections,
            hold_secs,
            devices_per_user,
            ..
        } => {
            anyhow::ensure!(*connections >= 2, "--connections must be >= 2");
            anyhow::ensure!(*devices_per_user >= 1, "--devices-per-user must be >= 1");
            bounded("--hold-secs", *hold_secs, 3600.0)?;
        }
        Cmd::Storm {
            devices,
            missed,
            senders,
            window,
            page,
            timeout_secs,
            ..
        } => {
            anyhow::ensure!(
                *devices >= 1 && *missed >= 1,
                "--devices and --missed must be >= 1"
            );
            anyhow::ensure!(
                *senders >= 1 && *window >= 1,
                "--senders and --window must be >= 1"
            );
            anyhow::ensure!(*page >= 1, "--page must be >= 1");
            anyhow::ensure!(devices * missed <= 50_000_000, "devices x missed above 50M");
            bounded("--timeout-secs", *timeout_secs, 3600.0)?;
        }
        Cmd::Durability {
            pairs,
            rate,
            duration,
        } => {
            anyhow::ensure!(*pairs >= 1, "--pairs must be >= 1");
            bounded("--duration", *duration, 3600.0)?;
            bounded("--rate", *rate, 1e7)?;
            anyhow::ensure!(rate * duration <= 5e7, "rate x duration above 50M messages");
        }
        Cmd::Conversations {
            conversations,
            direct,
            calls,
            page,
            ..
        } => {
            anyhow::ensure!(
                (1..=200_000).contains(conversations),
                "--conversations must be 1..=200000"
            );
            anyhow::ensure!(
                direct <= conversations,
                "--direct must be <= --conversations"
            );
            anyhow::ensure!((1..=100_000).contains(calls), "--calls must be 1..=100000");
            anyhow::ensure!((1..=1000).contains(page), "--page must be 1..=1000");
        }
        Cmd::Soak {
            pairs,
            rate,
            duration,
            sample_secs,
            inbox_entries,
            timeline_entries,
            sweep_ms,
            ..
        } => {
            anyhow::ensure!(*pairs >= 1, "--pairs must be >= 1");
            bounded("--duration", *duration, 24.0 * 3600.0)?;
            bounded("--sample-secs", *sample_secs, *duration)?;
            bounded("--rate", *rate, 1e6)?;
            anyhow::ensure!(
                *inbox_entries >= 1 && *timeline_entries >= 1 && *sweep_ms >= 10,
                "--inbox-entries and --timeline-entries must be >= 1, --sweep-ms >= 10"
            );
        }
        Cmd::Search {
            messages,
            writers,
            calls,
        } => {
            anyhow::ensure!(
                (1..=20_000_000).contains(messages),
                "--messages must be 1..=20000000"
            );
            anyhow::ensure!((1..=256).contains(writers), "--writers must be 1..=256");
            anyhow::ensure!((1..=100_000).contains(calls), "--calls must be 1..=100000");
        }
        Cmd::Blobs { mib, rounds } => {
            anyhow::ensure!((1..=4096).contains(mib), "--mib must be 1..=4096");
            anyhow::ensure!((1..=100).contains(rounds), "--rounds must be 1..=100");
        }
        Cmd::CompareTable { .. } | Cmd::Relay { .. } | Cmd::MakeCerts { .. } => {}
    }
    Ok(())
}

fn compare_table(files: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::Read;
    let mut text = String::new();
    for f in files {
        if f.as_os_str() == "-" {
            std::io::stdin().read_to_string(&mut text)?;
        } else {
            text.push_str(
                &std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
            );
        }
        text.push('\n');
    }
    let rows = report::compare::rows_from(&text);
    anyhow::ensure!(!rows.is_empty(), "no JSON reports in the input");
    print!("{}", report::compare::table(&rows));
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::CompareTable { files } => return compare_table(files),
        Cmd::Relay { listen, cert, key } => return relay::serve(*listen, cert, key).await,
        Cmd::MakeCerts { dir } => return tern_server::certs::make_dev_certs(dir),
        _ => {}
    }
    scenarios::run(&scenarios::Ctx::new(cli.g), cli.cmd).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check(&cli) {
        eprintln!("tern-bench: {e}");
        return ExitCode::from(2);
    }
    raise_nofile();
    if let Some(ca) = &cli.g.peer_ca {
        // async-nats loads the platform's root certificates on every TLS connect even
        // when given a client config (which it then uses instead); pointing
        // rustls-native-certs at the one CA (and at no directory) keeps that wasted work
        // off the generator. Set before the runtime starts any thread.
        std::env::set_var("SSL_CERT_FILE", ca);
        std::env::remove_var("SSL_CERT_DIR");
    }
    if let Some(cpu) = cli.g.pin_cpu {
        // Before the runtime exists, so every thread it makes inherits the mask.
        if let Err(e) = probe::server::pin_to_cpu(0, cpu) {
            eprintln!("tern-bench: cannot pin to CPU {cpu}: {e}");
            return ExitCode::from(2);
        }
    }
    let threads = cli.g.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(run(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
