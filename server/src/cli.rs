//! The `tern-server` command: flags/config, logging, signals, and the startup banner.

use std::io::Write;

use crate::app::Server;
use crate::config::Args;

/// Runs the server as the `tern-server` binary does. Returns the process exit code.
pub fn main() -> i32 {
    let args = Args::parse_with_defaults();
    return_big_allocations_to_the_os();
    raise_open_file_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern-server: error: {e:#}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern-server: error: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tern-server: error: {e:#}");
                return 1;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "tern-server: data dir {} (store epoch {})",
            server.data_dir().display(),
            server.store_epoch()
        );
        if let Some(ca) = server.dev_ca() {
            let _ = writeln!(
                out,
                "tern-server: dev CA {} (clients trust it with --ca {})",
                ca.display(),
                ca.display()
            );
        }
        let ws = match server.ws_addr() {
            Some(a) if server.ws_tls() => format!(" ws=wss://{a}/ws"),
            Some(a) => format!(" ws=ws://{a}/ws"),
            None => String::new(),
        };
        let metrics = server
            .metrics_addr()
            .map(|a| format!(" metrics=http://{a}/metrics"))
            .unwrap_or_default();
        let admin = server
            .admin_addr()
            .map(|a| format!(" admin=http://{a}/admin/v1/"))
            .unwrap_or_default();
        if let Some(f) = server.admin_token_file() {
            // The path only: the token itself is never printed or logged.
            let _ = writeln!(out, "tern-server: admin API token file {}", f.display());
        }
        let _ = writeln!(
            out,
            "tern-server: listening quic={} tcp={} alpn=tern/1{ws}{metrics}{admin}",
            server.quic_addr(),
            server.tcp_addr()
        );
        let _ = out.flush();
        drop(out);
        match server.run(shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tern-server: error during shutdown: {e:#}");
                1
            }
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// glibc raises its mmap threshold each time a large mmapped block is freed, so after the
/// first few password hashes (~19 MiB each) those blocks come from the heap arenas of the
/// blocking threads and stay resident for good: a server that had 20 logins held 580 MiB.
/// A fixed threshold keeps big blocks mmapped and gives them back when freed.
fn return_big_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Every connection is a file descriptor: use the hard limit, not the (often 1024) soft
/// one, as nginx and Go programs do. `max_connections` stays the real cap.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on a struct on the stack.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
