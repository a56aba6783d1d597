//! The server under test: started by the bench (a temp data dir, port 0, no WebSocket
//! listener, optionally pinned to a CPU) and killed at the end, or an external one given
//! by address, CA file and pid.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// Where the server is and how to see it.
pub struct Server {
    pub tcp: SocketAddr,
    pub quic: SocketAddr,
    pub ca: PathBuf,
    /// For CPU and memory readings; None: not measured.
    pub pid: Option<u32>,
    /// The arguments it was started with (None: external).
    pub args: Option<Vec<String>>,
    child: Option<Child>,
    log: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// How to start one.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub cpu: Option<usize>,
}

/// What the server's banner says: `tern-server: dev CA PATH ...` and
/// `tern-server: listening quic=ADDR tcp=ADDR ...`.
#[derive(Debug, Default, PartialEq)]
pub struct Banner {
    pub ca: Option<PathBuf>,
    pub quic: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Banner {
    /// Takes one stdout line; returns true once the listening line has been read.
    pub fn line(&mut self, line: &str) -> bool {
        if let Some(rest) = line.strip_prefix("tern-server: dev CA ") {
            self.ca = rest.split(' ').next().map(PathBuf::from);
        }
        if let Some(rest) = line.strip_prefix("tern-server: listening ") {
            for part in rest.split(' ') {
                if let Some(a) = part.strip_prefix("quic=") {
                    self.quic = a.parse().ok();
                }
                if let Some(a) = part.strip_prefix("tcp=") {
                    self.tcp = a.parse().ok();
                }
                if let Some(a) = part
                    .strip_prefix("metrics=http://")
                    .and_then(|a| a.strip_suffix("/metrics"))
                {
                    self.metrics = a.parse().ok();
                }
            }
            return true;
        }
        false
    }
}

/// The metrics endpoint of the tern server started last (None: not started by the bench,
/// or a build without `--metrics-listen`). [`crate::probe::Probe`] reads it.
static METRICS: std::sync::Mutex<Option<SocketAddr>> = std::sync::Mutex::new(None);

fn set_metrics_addr(a: Option<SocketAddr>) {
    *METRICS.lock().unwrap() = a;
}

/// The server's own counters now (`tern_*` samples by name, labels included), if it
/// serves them.
pub fn scrape_metrics() -> Option<std::collections::HashMap<String, f64>> {
    use std::io::{Read, Write};
    let addr = (*METRICS.lock().unwrap())?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(parse_metrics(&text))
}

/// `name{labels} value` lines of Prometheus/OpenMetrics text.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("tern_"))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The server binary to use: the path given, else `tern-server` beside this binary.
pub fn resolve_bin(given: &Path) -> PathBuf {
    if given.exists() {
        return given.to_path_buf();
    }
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let p = dir.join("tern-server");
            if p.exists() {
                return p;
            }
        }
    }
    given.to_path_buf()
}

/// The flags `--help` of the binary lists (to pass only flags this build knows).
pub fn known_flags(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {} --help", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pins the calling thread (and the threads and processes it creates later) to `cpu`.
pub fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for
    // cpu < CPU_SETSIZE, which is checked.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins every thread of a running process (for an external `--server-pid`).
pub fn pin_process(pid: u32, cpu: usize) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            pin_to_cpu(tid, cpu)?;
            n += 1;
        }
    }
    Ok(n)
}

impl Server {
    pub fn external(addr: SocketAddr, ca: PathBuf, pid: Option<u32>) -> Self {
        Self {
            tcp: addr,
            quic: addr,
            ca,
            pid,
            args: None,
            child: None,
            log: None,
            _dir: None,
        }
    }

    /// Starts the server and waits (at most 30 s) for its listening line.
    pub fn start(spawn: &Spawn) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("tern-bench-").tempdir()?;
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--ws-listen".into(),
            "off".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        args.extend(spawn.args.iter().cloned());
        let mut cmd = Command::new(&spawn.bin);
        cmd.args(&args)
            .env(
                "RUST_LOG",
                std::env::var("TERN_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        if let Some(cpu) = spawn.cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: sched_setaffinity is async-signal-safe; the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || pin_to_cpu(0, cpu));
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", spawn.bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = Banner::default();
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent && banner.line(&line) {
                    let _ = tx.send(std::mem::take(&mut banner));
                    sent = true;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
        });
        let mut server = Self {
            tcp: "0.0.0.0:0".parse().unwrap(),
            quic: "0.0.0.0:0".parse().unwrap(),
            ca: PathBuf::new(),
            pid: Some(pid),
            args: Some(args),
            child: Some(child),
            log: Some(log),
            _dir: Some(dir),
        };
        let banner = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let log = server.log_tail(20);
                server.stop();
                bail!("server printed no listening line within 30 s; its log:\n{log}");
            }
        };
        server.tcp = banner
            .tcp
            .ok_or_else(|| anyhow!("no tcp= in listening line"))?;
        server.quic = banner
            .quic
            .ok_or_else(|| anyhow!("no quic= in listening line"))?;
        server.ca = banner.ca.ok_or_else(|| {
            anyhow!("no dev CA line (a server with --tls-cert needs --server/--ca)")
        })?;
        set_metrics_addr(banner.metrics);
        Ok(server)
    }

    pub fn addr(&self, t: tern_sdk::Transport) -> SocketAddr {
        match t {
            tern_sdk::Transport::Tcp => self.tcp,
            tern_sdk::Transport::Quic => self.quic,
        }
    }

    /// Whether the server we started is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The data dir of a server this process started (None: an external one).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("data"))
    }

    /// The last lines of the server's stderr log.
    pub fn log_tail(&self, n: usize) -> String {
        let Some(p) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Warning and error lines in the server's log: (count, first few).
    pub fn log_problems(&self, keep: usize) -> (usize, Vec<String>) {
        let Some(p) = &self.log else {
            return (0, Vec::new());
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .collect();
        (
            bad.len(),
            bad.iter().take(keep).map(|l| strip_ansi(l)).collect(),
        )
    }

    /// SIGTERM, up to 10 s for a graceful stop, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if std::time::Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_lines_give_ca_and_addresses() {
        let mut b = Banner::default();
        assert!(!b.line("tern-server: data dir /tmp/x/data (store epoch 5c0e)"));
        assert!(!b.line(
            "tern-server: dev CA /tmp/x/data/certs/ca.pem (clients trust it with --ca /tmp/x/data/certs/ca.pem)"
        ));
        assert!(
            b.line("tern-server: listening quic=127.0.0.1:40001 tcp=127.0.0.1:40002 alpn=tern/1 metrics=http://127.0.0.1:40003/metrics")
        );
        assert_eq!(
            b,
            Banner {
                ca: Some(PathBuf::from("/tmp/x/data/certs/ca.pem")),
                quic: Some("127.0.0.1:40001".parse().unwrap()),
                tcp: Some("127.0.0.1:40002".parse().unwrap()),
                metrics: Some("127.0.0.1:40003".parse().unwrap()),
            }
        );
    }

    #[test]
    fn metrics_text_parses_by_sample_name() {
        let m = parse_metrics(
            "# HELP tern_sends Messages stored\n# TYPE tern_sends counter\ntern_sends_total 12\n\
             tern_connections{transport=\"tcp\"} 3\ntern_store_flush_seconds_sum 0.25\n# EOF\n",
        );
        assert_eq!(m.get("tern_sends_total"), Some(&12.0));
        assert_eq!(m.get("tern_connections{transport=\"tcp\"}"), Some(&3.0));
        assert_eq!(m.get("tern_store_flush_seconds_sum"), Some(&0.25));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn ansi_colours_are_stripped_from_log_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[33m WARN\u{1b}[0m tern_server: slow"),
            " WARN tern_server: slow"
        );
    }
}
