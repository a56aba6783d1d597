//! The `tern` runner shared by the smaller CLI test files (contacts.rs, people.rs): one
//! profile directory per test, the server's address and CA passed as flags, and the
//! outcome as exit code + stdout + stderr.

// Each test file is its own crate and uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use tern_tests::TestServer;

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");
pub const PASSWORD: &str = "correct horse battery";

pub struct Tern {
    server: String,
    ca: PathBuf,
    dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout {:?} stderr {:?}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

impl Tern {
    pub fn new(server: &TestServer) -> Self {
        Self {
            server: server.tcp.to_string(),
            ca: server.ca.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn run(&self, profile: &str, args: &[&str]) -> Out {
        let mut c = Command::new(TERN);
        for var in ["TERN_SERVER", "TERN_CA", "TERN_PROFILE", "TERN_PASSWORD"] {
            c.env_remove(var);
        }
        let out = c
            .current_dir(self.dir.path())
            .arg("--server")
            .arg(&self.server)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--profile")
            .arg(self.dir.path().join(format!("{profile}.json")))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tern runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The working directory the commands run in (files for `--file` go here).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn account(&self, user: &str) {
        self.run(user, &["register", user, "--password", PASSWORD])
            .ok();
        self.run(user, &["login", user, "--password", PASSWORD])
            .ok();
    }
}

impl Out {
    /// The `code` of the one JSON error line a failed `--json` command prints.
    pub fn code_of_error(&self) -> String {
        let v = self.json();
        assert_eq!(
            v.len(),
            1,
            "stdout {:?} stderr {:?}",
            self.stdout,
            self.stderr
        );
        v[0]["code"].as_str().unwrap_or_default().to_string()
    }
}
