//! The bindings used for real: the Python module generated from this build's
//! `libtern_ffi.so` chats between two clients through a real tern server that is killed
//! with SIGKILL in the middle (ffi/python/test_chat.py says what it checks); and the
//! Kotlin and Swift sources are generated from the same library (no compiler for them
//! here: only their generation is checked).
//!
//! No libtest harness (`harness = false`): this executable is also the server. Started
//! with `TERN_FFI_TEST_SERVER=1` it runs `tern_server::cli::main`, so the test kills and
//! restarts a real server process built from this workspace, whatever else is built.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tern_tests::server::ProcessServer;
use uniffi::{GenerateOptions, TargetLanguage};

const SERVER_MODE: &str = "TERN_FFI_TEST_SERVER";

fn main() {
    if std::env::var_os(SERVER_MODE).is_some() {
        std::process::exit(tern_server::cli::main());
    }
    // What libtest would do with `--list` and name filters (other flags are ignored).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tests: [(&str, fn()); 2] = [
        ("python_chat_survives_kill_9", python_chat_survives_kill_9),
        (
            "kotlin_and_swift_are_generated",
            kotlin_and_swift_are_generated,
        ),
    ];
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut passed = 0;
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        test();
        println!("test {name} ... ok ({:.1?})", started.elapsed());
        passed += 1;
    }
    println!("\ntest result: ok. {passed} passed; 0 failed");
}

/// `libtern_ffi.so` as cargo built it for this test (beside the test executable).
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the deps directory");
    let name = format!(
        "{}tern_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let candidates = [deps.join(&name), deps.parent().unwrap().join(&name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found in {candidates:?}: crate-type cdylib not built?")
        })
        .clone()
}

fn generate(languages: Vec<TargetLanguage>, out: &Path) {
    uniffi::generate(GenerateOptions {
        languages,
        source: cdylib().to_str().expect("UTF-8 path").to_string().into(),
        out_dir: out.to_str().expect("UTF-8 path").to_string().into(),
        ..Default::default()
    })
    .expect("uniffi generates the bindings");
}

fn start_server(data: &Path, listen: &str) -> ProcessServer {
    let exe = std::env::current_exe().unwrap();
    ProcessServer::try_spawn_with(exe.to_str().unwrap(), data, listen, &[(SERVER_MODE, "1")])
        .expect("the server starts")
}

fn python_chat_survives_kill_9() {
    let module = tempfile::tempdir().unwrap();
    generate(vec![TargetLanguage::Python], module.path());
    // The package ffi/generate.sh makes: tern_ffi/__init__.py (the module with the
    // atexit hook appended) and the library beside it.
    let package = module.path().join("tern_ffi");
    std::fs::create_dir(&package).unwrap();
    let generated = module.path().join("tern_ffi.py");
    let source = std::fs::read_to_string(&generated).expect("the generated module");
    let hook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("python/atexit_hook.py"),
    )
    .unwrap();
    std::fs::write(package.join("__init__.py"), source + &hook).unwrap();
    std::fs::remove_file(&generated).unwrap();
    let lib = cdylib();
    std::os::unix::fs::symlink(&lib, package.join(lib.file_name().unwrap()))
        .expect("link the library into the package");

    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut server = start_server(data.path(), "127.0.0.1:0");
    let listen = server.tcp.to_string();
    assert_eq!(
        server.quic.port(),
        server.tcp.port(),
        "QUIC and TCP share the port"
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_chat.py");
    let python = std::env::var("TERN_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg(&script)
        .env("TERN_FFI_MODULE_DIR", module.path())
        .env("TERN_SERVER", &listen)
        .env("TERN_CA", &server.ca)
        .env("TERN_STATE_DIR", state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {python:?} ({e}): the Python binding test needs Python 3.8 or later \
                 as `python3` on PATH (or TERN_PYTHON=/path/to/python)"
            )
        });
    let mut to_script = child.stdin.take().unwrap();
    let from_script = BufReader::new(child.stdout.take().unwrap());
    // The script asks for the faults on its stdout ("CTRL kill", "CTRL restart") and
    // waits for "<what> done" on its stdin; anything else it prints is passed on.
    let mut kills = 0;
    for line in from_script.lines() {
        let line = line.expect("the script's stdout");
        match line.as_str() {
            "CTRL kill" => {
                server.kill9();
                kills += 1;
                writeln!(to_script, "kill done").unwrap();
            }
            "CTRL restart" => {
                server = start_server(data.path(), &listen);
                writeln!(to_script, "restart done").unwrap();
            }
            other => println!("{other}"),
        }
        to_script.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python script closed its stdout but did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "ffi/python/test_chat.py failed: {status}");
    assert_eq!(kills, 1, "the script asked for exactly one kill -9");
    drop(server);
}

fn kotlin_and_swift_are_generated() {
    let out = tempfile::tempdir().unwrap();
    generate(
        vec![TargetLanguage::Kotlin, TargetLanguage::Swift],
        out.path(),
    );
    let kotlin = std::fs::read_to_string(out.path().join("uniffi/tern_ffi/tern_ffi.kt"))
        .expect("the Kotlin source");
    let swift =
        std::fs::read_to_string(out.path().join("tern_ffi.swift")).expect("the Swift source");
    let header = std::fs::read_to_string(out.path().join("tern_ffiFFI.h")).expect("the C header");
    assert!(
        out.path().join("tern_ffiFFI.modulemap").exists(),
        "the modulemap"
    );
    for (what, src, needle) in [
        ("Kotlin", &kotlin, "class TernClient"),
        ("Kotlin", &kotlin, "interface EventListener"),
        ("Kotlin", &kotlin, "suspend fun `sendText`"),
        ("Swift", &swift, "class TernClient"),
        ("Swift", &swift, "protocol EventListener"),
        ("Swift", &swift, "func sendText("),
        ("Kotlin", &kotlin, "suspend fun `uploadFile`"),
        ("Kotlin", &kotlin, "interface TransferProgress"),
        ("Swift", &swift, "func uploadFile("),
        ("Swift", &swift, "protocol TransferProgress"),
        (
            "C header",
            &header,
            "uniffi_tern_ffi_fn_constructor_ternclient_new",
        ),
    ] {
        assert!(src.contains(needle), "{what} source lacks {needle:?}");
    }
}
