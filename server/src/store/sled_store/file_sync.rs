//! The fsync step that makes a sled flush survive power loss (issue 18, docs/RELIABILITY.md
//! "Power loss").
//!
//! sled 0.34 keeps its data in `<dir>/db` (the log), `<dir>/conf`, `<dir>/snap.*`
//! (snapshots, written to a temp name, fsynced, renamed) and `<dir>/blobs/<lsn>` (values too
//! big for a log segment, written without any sync). Its `flush` persists log writes
//! with `sync_file_range`, which on Linux neither commits the metadata of a growing file
//! nor flushes the device's volatile cache. [`FileSync::sync`], called right after
//! sled's flush returned, persists what that flush wrote:
//! - `fdatasync` of the log file: its data and the size needed to read it back (an fsync
//!   through any descriptor of a file covers the writes made through another one);
//! - `fsync` of each blob file that appeared since the last call (blobs are never
//!   rewritten: the name is the log position), then of the `blobs` directory;
//! - `fsync` of the store directory, which makes a snapshot rename or a new file durable.
//!
//! `TERN_UNSAFE_SKIP_FSYNC=1` turns the step off, leaving only sled's own syncing. It
//! exists so the power-cut test can show that it detects lost acks when this step is
//! missing (tests/powercut.rs); never set it on a server whose data matters.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment switch that disables the step (test use only).
pub(crate) const SKIP_ENV: &str = "TERN_UNSAFE_SKIP_FSYNC";

pub(crate) struct FileSync {
    dir: File,
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already synced (pruned of names sled has since removed).
    synced_blobs: Mutex<HashSet<OsString>>,
    enabled: bool,
}

impl FileSync {
    /// Opens the handles the step needs; `dir` is the sled directory, already opened by
    /// sled (so its log file exists).
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let enabled = std::env::var_os(SKIP_ENV).is_none_or(|v| v != "1");
        if !enabled {
            tracing::warn!(
                "{SKIP_ENV}=1: acknowledged writes are NOT fsynced and can be lost when the power fails \
                 (a test switch; never use it for real data)"
            );
        }
        // The store directory's own entry (a new data dir) is made durable once.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::store::durable_file::sync_dir(parent)?;
        }
        Ok(Self {
            dir: File::open(dir)?,
            log: File::open(dir.join("db"))?,
            blobs_dir: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
            enabled,
        })
    }

    /// Persists everything sled's last flush wrote. An error means durability is unknown:
    /// the caller must not acknowledge, and must not trust a later success either (after a
    /// failed fsync the kernel may have dropped the dirty pages and marked them clean).
    pub(crate) fn sync(&self) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut calls = 1;
        self.log.sync_data()?;
        calls += self.sync_new_blobs()?;
        self.dir.sync_all()?;
        calls += 1;
        crate::metrics::get().store_fsyncs.inc_by(calls);
        Ok(())
    }

    /// fsyncs blob files not synced before, then their directory; returns the fsync count.
    fn sync_new_blobs(&self) -> io::Result<u64> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut calls = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled removed it between the listing and the open: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                calls += 1;
            }
            present.insert(name);
        }
        let changed = present.len() != synced.len() || calls > 0;
        *synced = present;
        if changed {
            File::open(&self.blobs_dir)?.sync_all()?;
            calls += 1;
        }
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_files_are_synced_once_and_removed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let s = FileSync::open(dir.path()).unwrap();
        assert_eq!(s.sync_new_blobs().unwrap(), 0, "no blobs dir yet");
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/17"), b"a").unwrap();
        std::fs::write(dir.path().join("blobs/42"), b"b").unwrap();
        assert_eq!(
            s.sync_new_blobs().unwrap(),
            3,
            "two files and the directory"
        );
        assert_eq!(s.sync_new_blobs().unwrap(), 0, "nothing new");
        std::fs::remove_file(dir.path().join("blobs/17")).unwrap();
        assert_eq!(
            s.sync_new_blobs().unwrap(),
            1,
            "a removal syncs the directory"
        );
        std::fs::write(dir.path().join("blobs/99"), b"c").unwrap();
        assert_eq!(s.sync_new_blobs().unwrap(), 2);
        s.sync().unwrap();
    }
}
