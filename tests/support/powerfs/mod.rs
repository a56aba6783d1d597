//! PowerFs: a test-only FUSE filesystem that simulates power loss, like LazyFS.
//!
//! It passes a backing directory through, except that what is written to a file stays
//! in a volatile layer in memory until that file is fsynced (or fdatasynced): only then
//! does it reach the backing file, which is then really synced. [`PowerFs::cut_power`]
//! drops every volatile layer (or, with [`Cut::Torn`], lets a random subset of the
//! unsynced 4 KiB pages through), so a program restarted on the mount sees exactly what
//! a disk would hold after a power cut at that moment. [`PowerFs::inject`] makes writes
//! fail with ENOSPC or fsyncs with EIO.
//!
//! * `volatile`: one file's unsynced pages over its backing file (no FUSE in it);
//! * `fs`: the inode table, the file handles, and the `fuser::Filesystem` callbacks.
//!
//! What is volatile, per file (per inode, so it follows a rename and survives an unlink
//! while the file is open): its content (write, fallocate) and its size (truncate,
//! `set_len`, a write past the end). fsync and fdatasync make all of it durable; close,
//! flush and `sync_file_range` (which the kernel never forwards to FUSE) make nothing
//! durable. The kernel caches nothing that could hide a cut: every open is
//! `FOPEN_DIRECT_IO`, entries and attributes have a zero TTL, no writeback cache.
//!
//! Known limits, kept on purpose:
//! * Metadata is durable at once: create, mkdir, mknod, symlink, unlink, rmdir, rename,
//!   chmod, chown and utimes go straight to the backing dir. A real filesystem can lose
//!   a new directory entry that was not fsynced through its directory; here a file
//!   created and never synced survives a cut with length 0. `fsyncdir` is accepted,
//!   counted ([`Stats::fsyncdirs`]) and syncs the backing dir.
//! * mtime and ctime are the backing file's: writes do not move them until an fsync.
//! * Hard links (`link`), xattrs, locks beyond the kernel's local ones, `lseek`
//!   SEEK_DATA/SEEK_HOLE and `copy_file_range` are not implemented; the kernel falls back
//!   to its generic code for the last two (through reads and writes here), so they stay
//!   correct.
//! * Inode numbers are PowerFs's own (1 is the root), never reused while mounted;
//!   `forget` is ignored, so the inode table only grows (fine for a test's lifetime).
//! * One lock over everything: operations run one at a time, an fsync included.
//! * A cut does not close files: a process that still has one open keeps using it and
//!   sees what survived. Kill the process using the mount first (SIGKILL), then cut.
//!
//! Needs `/dev/fuse` and either root (it mounts with mount(2), as CI runs) or Debian's
//! `fuse3` (`fusermount3`). Drop the `PowerFs` before the mountpoint's `TempDir`.

mod fs;
mod volatile;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionUnmounter};

pub use volatile::PAGE;

/// How [`PowerFs::cut_power`] treats what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// All of it is lost.
    Discard,
    /// Each unsynced 4 KiB page survives or not (a coin flip each, reproducible from
    /// `seed`, files taken in inode order); size changes are lost, except that a
    /// surviving page past the durable end grows the file to that page's data end (a gap
    /// before it reads as zeros).
    Torn { seed: u64 },
}

/// A fault set with [`PowerFs::inject`] that holds until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// write, fallocate, create, mknod, mkdir and symlink fail with ENOSPC; statfs shows
    /// no free blocks.
    Enospc,
    /// fsync and fdatasync fail with EIO and drop the file's unsynced data, as Linux does
    /// after a failed writeback (a retried fsync then succeeds with the data gone).
    Eio,
}

/// Counters since the mount, and the volatile state now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// fsync and fdatasync calls (including the implicit ones of O_SYNC/O_DSYNC writes).
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    /// write requests from the kernel (one `write(2)` may be split into several).
    pub writes: u64,
    pub bytes_written: u64,
    pub fallocates: u64,
    /// Bytes inside the files that only the volatile layer holds now.
    pub unsynced_bytes: u64,
    /// Files with volatile changes now (content or size).
    pub unsynced_files: u64,
    pub cuts: u64,
    /// Operations failed by an injected [`Fault`].
    pub faults: u64,
}

/// What one [`PowerFs::cut_power`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had volatile changes (content or size).
    pub files: u64,
    /// Bytes of the unsynced pages that were lost.
    pub bytes_discarded: u64,
    /// Unsynced pages that survived ([`Cut::Torn`] only).
    pub pages_kept: u64,
    pub pages_discarded: u64,
}

/// A mounted PowerFs; dropping it unmounts it.
pub struct PowerFs {
    shared: Arc<fs::Shared>,
    mountpoint: PathBuf,
    unmounter: SessionUnmounter,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for PowerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl PowerFs {
    /// Mounts a PowerFs at `mountpoint` (an existing empty dir) over `backing` (an
    /// existing dir). Errors with a message naming what is missing (/dev/fuse,
    /// fusermount3) if it cannot mount.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerFs> {
        let context = |what: String| {
            move |e: io::Error| io::Error::new(e.kind(), format!("powerfs: {what}: {e}"))
        };
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "powerfs: /dev/fuse is missing (load the fuse kernel module; a container \
                 needs --device /dev/fuse)",
            ));
        }
        let backing = backing
            .canonicalize()
            .map_err(context(format!("backing dir {}", backing.display())))?;
        if !backing.is_dir() || !mountpoint.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!(
                    "powerfs: backing {} and mountpoint {} must both be directories",
                    backing.display(),
                    mountpoint.display()
                ),
            ));
        }
        let shared = Arc::new(fs::Shared::new(backing.clone()));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerfs".into()),
            MountOption::DefaultPermissions,
        ];
        let filesystem = fs::Fs {
            shared: shared.clone(),
        };
        let mut session = Session::new(filesystem, mountpoint, &config).map_err(|e| {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let hint = if !root && !on_path("fusermount3") {
                "not root and fusermount3 is missing (install Debian's fuse3)"
            } else {
                "needs /dev/fuse and root or fusermount3 (Debian's fuse3)"
            };
            io::Error::new(
                e.kind(),
                format!(
                    "powerfs: cannot mount {} at {} ({hint}): {e}",
                    backing.display(),
                    mountpoint.display()
                ),
            )
        })?;
        let unmounter = session.unmount_callable();
        let thread = std::thread::Builder::new()
            .name("powerfs".into())
            .spawn(move || session.run())?;
        Ok(PowerFs {
            shared,
            mountpoint: mountpoint.to_path_buf(),
            unmounter,
            thread: Some(thread),
        })
    }

    /// Cuts power: everything written since each file's last fsync/fdatasync is
    /// discarded ([`Cut::Torn`]: a random subset of the unsynced pages survives instead).
    /// Meant to be called after the process using the files was killed with SIGKILL;
    /// later reads see only what survived.
    pub fn cut_power(&self, how: Cut) -> CutReport {
        self.shared.cut_power(how)
    }

    /// From now on: `Enospc` -> write/fallocate/create fail with ENOSPC; `Eio` ->
    /// fsync/fdatasync fail with EIO and drop the file's unsynced data. `None` clears it.
    pub fn inject(&self, fault: Option<Fault>) {
        self.shared.inject(fault)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for PowerFs {
    /// Unmounts; if something still has a file open there, detaches the mount instead
    /// (it goes away when the last file is closed) and, after 2 s, leaves the session
    /// thread behind to serve those files rather than hang.
    fn drop(&mut self) {
        if self.unmounter.unmount().is_err() {
            lazy_unmount(&self.mountpoint);
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            eprintln!(
                "powerfs: {} still has open files after unmount; its thread stays to serve them",
                self.mountpoint.display()
            );
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .any(|dir| dir.join(program).is_file())
}
