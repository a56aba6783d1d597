//! Detecting lost writes. sled recovers a damaged log by keeping its longest valid
//! prefix, so a damaged data file can come back up silently missing acknowledged
//! messages. To refuse that, the server keeps, next to the store, a small watermark file
//! with the store's commit count as of a recent flush (rewritten atomically at most once
//! a second, and at shutdown). At startup a store that counts fewer commits than its
//! watermark has lost acknowledged writes: the server refuses to start and says so,
//! rather than serve holes.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub(crate) struct Watermark {
    path: PathBuf,
    epoch: String,
}

impl Watermark {
    pub(crate) fn new(store_dir: &Path, epoch: &str) -> Self {
        Self {
            path: store_dir.join("tern.watermark"),
            epoch: epoch.to_string(),
        }
    }

    /// Checks the store against its watermark (none yet: nothing to check).
    pub(crate) fn check(&self, commit_count: u64) -> anyhow::Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let mut parts = text.split_whitespace();
        let (Some("tern-watermark-v1"), Some(epoch), Some(count)) =
            (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("{} is not a tern watermark file", self.path.display());
        };
        let count: u64 = count
            .parse()
            .with_context(|| format!("bad count in {}", self.path.display()))?;
        anyhow::ensure!(
            epoch == self.epoch,
            "{} belongs to another store (epoch {epoch}, this store is {}): the store files were damaged or replaced. \
             Restore the data dir from a backup, or delete the watermark file to accept this store as it is.",
            self.path.display(),
            self.epoch
        );
        anyhow::ensure!(
            commit_count >= count,
            "the store holds {commit_count} commits but {count} were durable before: {} acknowledged writes are \
             missing (damaged or truncated data files?). Refusing to serve holes. Restore the data dir from a \
             backup, or delete {} to accept the loss.",
            count - commit_count,
            self.path.display()
        );
        Ok(())
    }

    /// Atomically and durably records `count`.
    pub(crate) fn write(&self, count: u64) -> std::io::Result<()> {
        let text = format!("tern-watermark-v1 {} {count}\n", self.epoch);
        crate::store::durable_file::write_durably(&self.path, text.as_bytes(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_commits_and_foreign_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watermark::new(dir.path(), "ep1");
        assert!(w.check(0).is_ok(), "no watermark yet");
        w.write(10).unwrap();
        assert!(w.check(10).is_ok());
        assert!(w.check(12).is_ok(), "more than the watermark is normal");
        let err = w.check(7).unwrap_err().to_string();
        assert!(err.contains("3 acknowledged writes are missing"), "{err}");
        let other = Watermark::new(dir.path(), "ep2");
        assert!(other
            .check(100)
            .unwrap_err()
            .to_string()
            .contains("another store"));
        std::fs::write(dir.path().join("tern.watermark"), "junk").unwrap();
        assert!(w.check(100).is_err());
    }
}
