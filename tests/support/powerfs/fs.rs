//! The FUSE side of [`PowerFs`](super::PowerFs): the inode table, the file handles, and
//! one `fuser::Filesystem` callback per operation. Every callback takes the one lock over
//! the whole state and answers with an errno on any failure (never a panic).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::volatile::{read_full_at, Volatile};
use super::{Cut, CutReport, Fault, Stats};

/// Entries and attributes are never cached by the kernel, so a cut is seen at once.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

type Res<T> = Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// State shared by the FUSE callbacks and the [`PowerFs`](super::PowerFs) handle.
#[derive(Debug)]
pub(super) struct Shared {
    backing: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// By inode number (ordered, so a torn cut draws for the files in a fixed order).
    nodes: BTreeMap<u64, Node>,
    /// Backing path (relative to the backing dir, "" for the root) -> inode number, for
    /// every node that still has a name.
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    dirs: HashMap<u64, Vec<DirEntry>>,
    next_fh: u64,
    fault: Option<Fault>,
    stats: Stats,
}

#[derive(Debug)]
struct Node {
    /// None once unlinked (or replaced by a rename).
    path: Option<PathBuf>,
    kind: FileType,
    /// The backing file, opened read-write while the node has open handles or volatile
    /// state; fsync and a torn cut write through it (so an unlinked file still works).
    file: Option<File>,
    open: u32,
    vol: Option<Volatile>,
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    /// Opened with O_SYNC / O_DSYNC: every write is synced at once.
    sync: Option<bool>,
}

#[derive(Debug)]
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

fn kind_of(ft: fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    u64::try_from(secs)
        .ok()
        .and_then(|secs| {
            UNIX_EPOCH.checked_add(Duration::new(secs, nsecs.clamp(0, 999_999_999) as u32))
        })
        .unwrap_or(UNIX_EPOCH)
}

fn cpath(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as _,
            }
        }
    }
}

fn last_os_error<T>() -> Res<T> {
    Err(errno(io::Error::last_os_error()))
}

impl Shared {
    pub(super) fn new(backing: PathBuf) -> Shared {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: Some(PathBuf::new()),
                kind: FileType::Directory,
                file: None,
                open: 0,
                vol: None,
            },
        );
        Shared {
            backing,
            state: Mutex::new(State {
                nodes,
                by_path: HashMap::from([(PathBuf::new(), ROOT)]),
                next_ino: ROOT + 1,
                handles: HashMap::new(),
                dirs: HashMap::new(),
                next_fh: 1,
                fault: None,
                stats: Stats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    pub(super) fn inject(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    pub(super) fn stats(&self) -> Stats {
        let st = self.lock();
        let mut stats = st.stats.clone();
        for vol in st.nodes.values().filter_map(|n| n.vol.as_ref()) {
            stats.unsynced_files += 1;
            stats.unsynced_bytes += vol.unsynced_bytes();
        }
        stats
    }

    pub(super) fn cut_power(&self, how: Cut) -> CutReport {
        let mut st = self.lock();
        st.stats.cuts += 1;
        let mut rng = crate::rng::XorShift::new(match how {
            Cut::Discard => 0,
            Cut::Torn { seed } => seed,
        });
        let mut report = CutReport::default();
        for node in st.nodes.values_mut() {
            let Some(vol) = node.vol.take() else { continue };
            report.files += 1;
            if let (Cut::Torn { .. }, None, Some(rel)) = (how, &node.file, &node.path) {
                // truncated by path, never opened: the torn pages go in by name
                node.file = OpenOptions::new()
                    .write(true)
                    .open(self.backing.join(rel))
                    .ok();
            }
            let torn = match (how, &node.file) {
                (Cut::Torn { .. }, Some(file)) => vol.apply_torn(file, || rng.next_u64() & 1 == 1),
                _ => Err(io::Error::other("discard")),
            };
            match torn {
                Ok(torn) => {
                    report.pages_kept += torn.kept;
                    report.pages_discarded += torn.discarded;
                    report.bytes_discarded += torn.bytes_discarded;
                }
                Err(_) => {
                    report.pages_discarded += vol.pages();
                    report.bytes_discarded += vol.unsynced_bytes();
                }
            }
            if node.open == 0 {
                node.file = None;
            }
        }
        report
    }
}

impl State {
    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// The backing path of a node that still has a name.
    fn path(&self, ino: u64) -> Res<PathBuf> {
        self.node(ino)?.path.clone().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Res<PathBuf> {
        let node = self.node(parent)?;
        if node.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(node.path.as_ref().ok_or(Errno::ENOENT)?.join(name))
    }

    /// The inode of a backing path, given one on first sight.
    fn ino_for(&mut self, rel: &Path, kind: FileType) -> u64 {
        if let Some(&ino) = self.by_path.get(rel) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.kind = kind;
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                path: Some(rel.to_path_buf()),
                kind,
                file: None,
                open: 0,
                vol: None,
            },
        );
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    /// Drops the name of the node at `rel` (unlinked, or replaced by a rename).
    fn forget_name(&mut self, rel: &Path) {
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for p in gone {
            if let Some(ino) = self.by_path.remove(&p) {
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.path = None;
                    if node.open == 0 {
                        // Nobody can reach its data any more.
                        node.file = None;
                        node.vol = None;
                    }
                }
            }
        }
    }

    /// Renames every name at or under `from` to the same place under `to`.
    fn move_names(&mut self, from: &Path, to: &Path) -> Vec<(PathBuf, u64)> {
        let moved: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for p in moved {
            if let Some(ino) = self.by_path.remove(&p) {
                let rest = p.strip_prefix(from).unwrap_or(Path::new(""));
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                out.push((new, ino));
            }
        }
        out
    }

    fn insert_names(&mut self, names: Vec<(PathBuf, u64)>) {
        for (p, ino) in names {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(p.clone());
            }
            self.by_path.insert(p, ino);
        }
    }

    fn metadata(&self, backing: &Path, ino: u64) -> Res<fs::Metadata> {
        let node = self.node(ino)?;
        if let Some(file) = &node.file {
            return file.metadata().map_err(errno);
        }
        let rel = node.path.as_ref().ok_or(Errno::ENOENT)?;
        fs::symlink_metadata(backing.join(rel)).map_err(errno)
    }

    fn attr(&self, ino: u64, meta: &fs::Metadata) -> FileAttr {
        let vol_size = self
            .nodes
            .get(&ino)
            .and_then(|n| n.vol.as_ref())
            .map(Volatile::size);
        let size = vol_size.unwrap_or(meta.size());
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: if vol_size.is_some() {
                size.div_ceil(512)
            } else {
                meta.blocks()
            },
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(meta.file_type()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn getattr(&self, backing: &Path, ino: u64) -> Res<FileAttr> {
        let meta = self.metadata(backing, ino)?;
        Ok(self.attr(ino, &meta))
    }

    /// Looks `rel` up in the backing dir: its inode and attributes.
    fn entry(&mut self, backing: &Path, rel: &Path) -> Res<FileAttr> {
        let meta = fs::symlink_metadata(backing.join(rel)).map_err(errno)?;
        let ino = self.ino_for(rel, kind_of(meta.file_type()));
        Ok(self.attr(ino, &meta))
    }

    fn open_backing(&mut self, backing: &Path, ino: u64) -> Res<()> {
        let node = self.node_mut(ino)?;
        if node.file.is_some() {
            return Ok(());
        }
        let full = backing.join(node.path.as_ref().ok_or(Errno::ENOENT)?);
        let file = match OpenOptions::new().read(true).write(true).open(&full) {
            Ok(f) => f,
            // A read-only file for a non-root user: reads still work.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                File::open(&full).map_err(errno)?
            }
            Err(e) => return Err(errno(e)),
        };
        node.file = Some(file);
        Ok(())
    }

    fn new_handle(&mut self, ino: u64, flags: i32) -> u64 {
        let sync = if flags & libc::O_SYNC == libc::O_SYNC {
            Some(false)
        } else if flags & libc::O_DSYNC != 0 {
            Some(true)
        } else {
            None
        };
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, sync });
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open += 1;
        }
        fh
    }

    /// The node's backing file and its volatile layer (created on first change).
    fn vol(&mut self, ino: u64) -> Res<(&File, &mut Volatile)> {
        let node = self.node_mut(ino)?;
        let file = node.file.as_ref().ok_or(Errno::EBADF)?;
        if node.vol.is_none() {
            node.vol = Some(Volatile::new(file.metadata().map_err(errno)?.len()));
        }
        Ok((file, node.vol.as_mut().expect("set above")))
    }

    /// fsync / fdatasync: the volatile layer goes to the backing file, which is synced.
    fn sync(&mut self, backing: &Path, ino: u64, datasync: bool) -> Res<()> {
        if self.fault == Some(Fault::Eio) {
            self.stats.faults += 1;
            // Like Linux after a failed writeback: the dirty data is gone, the next fsync
            // has nothing to report.
            self.node_mut(ino)?.vol = None;
            return Err(Errno::EIO);
        }
        if self.node(ino)?.kind != FileType::RegularFile {
            return Ok(());
        }
        self.open_backing(backing, ino)?;
        let node = self.node_mut(ino)?;
        let file = node.file.as_ref().ok_or(Errno::EBADF)?;
        if let Some(vol) = &node.vol {
            vol.apply(file).map_err(errno)?;
        }
        node.vol = None;
        if datasync {
            file.sync_data().map_err(errno)?;
        } else {
            file.sync_all().map_err(errno)?;
        }
        if node.open == 0 {
            node.file = None;
        }
        Ok(())
    }

    fn no_space(&mut self) -> Res<()> {
        if self.fault == Some(Fault::Enospc) {
            self.stats.faults += 1;
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }
}

/// The `fuser::Filesystem` the session runs.
pub(super) struct Fs {
    pub(super) shared: std::sync::Arc<Shared>,
}

impl Fs {
    fn backing(&self) -> &Path {
        &self.shared.backing
    }

    fn lookup_res(&self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let mut st = self.shared.lock();
        let rel = st.child(parent, name)?;
        st.entry(self.backing(), &rel)
    }

    fn setattr_res(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        [atime, mtime]: [Option<TimeOrNow>; 2],
    ) -> Res<FileAttr> {
        let backing = self.backing();
        let mut st = self.shared.lock();
        let node = st.node(ino)?;
        let full = node.path.as_ref().map(|p| backing.join(p));
        if let Some(mode) = mode {
            let perm = fs::Permissions::from_mode(mode & 0o7777);
            match (&node.file, &full) {
                (Some(file), _) => file.set_permissions(perm).map_err(errno)?,
                (None, Some(full)) => fs::set_permissions(full, perm).map_err(errno)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if uid.is_some() || gid.is_some() {
            match (&node.file, &full) {
                (Some(file), _) => std::os::unix::fs::fchown(file, uid, gid).map_err(errno)?,
                (None, Some(full)) => std::os::unix::fs::lchown(full, uid, gid).map_err(errno)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            let rc = match (&node.file, &full) {
                (Some(file), _) => {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid fd and a two-element timespec array.
                    unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) }
                }
                (None, Some(full)) => {
                    let c = cpath(full)?;
                    // SAFETY: a NUL-terminated path and a two-element timespec array.
                    unsafe {
                        libc::utimensat(
                            libc::AT_FDCWD,
                            c.as_ptr(),
                            times.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    }
                }
                (None, None) => return Err(Errno::ENOENT),
            };
            if rc != 0 {
                return last_os_error();
            }
        }
        if let Some(size) = size {
            if node.kind != FileType::RegularFile {
                return Err(Errno::EISDIR);
            }
            let node = st.node_mut(ino)?;
            if node.vol.is_none() {
                let durable = match (&node.file, &full) {
                    (Some(file), _) => file.metadata(),
                    (None, Some(full)) => fs::metadata(full),
                    (None, None) => return Err(Errno::ENOENT),
                }
                .map_err(errno)?
                .len();
                node.vol = Some(Volatile::new(durable));
            }
            if let Some(vol) = node.vol.as_mut() {
                vol.set_size(size);
            }
        }
        st.getattr(backing, ino)
    }

    fn create_res(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let backing = self.backing();
        let mut st = self.shared.lock();
        st.no_space()?;
        let rel = st.child(parent, name)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let file = opts.open(backing.join(&rel)).map_err(errno)?;
        let meta = file.metadata().map_err(errno)?;
        let ino = st.ino_for(&rel, kind_of(meta.file_type()));
        let node = st.node_mut(ino)?;
        if node.file.is_none() {
            node.file = Some(file);
        }
        let fh = st.new_handle(ino, flags);
        Ok((st.getattr(backing, ino)?, fh))
    }

    fn read_res(&self, ino: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let st = self.shared.lock();
        let node = st.node(ino)?;
        let file = node.file.as_ref().ok_or(Errno::EBADF)?;
        match &node.vol {
            Some(vol) => vol.read(offset, u64::from(size), file).map_err(errno),
            None => {
                let mut buf = vec![0u8; size as usize];
                let n = read_full_at(file, &mut buf, offset).map_err(errno)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    fn write_res(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let mut st = self.shared.lock();
        st.no_space()?;
        let (file, vol) = st.vol(ino)?;
        vol.write(offset, data, file).map_err(errno)?;
        st.stats.writes += 1;
        st.stats.bytes_written += data.len() as u64;
        if let Some(datasync) = st.handles.get(&fh).and_then(|h| h.sync) {
            st.stats.fsyncs += 1;
            st.sync(self.backing(), ino, datasync)?;
        }
        Ok(data.len() as u32)
    }

    fn fallocate_res(&self, ino: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        let mut st = self.shared.lock();
        st.stats.fallocates += 1;
        st.no_space()?;
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        match mode {
            0 => {
                let (_, vol) = st.vol(ino)?;
                if end > vol.size() {
                    vol.set_size(end);
                }
            }
            KEEP => {}
            m if m == PUNCH | KEEP || m == ZERO | KEEP => {
                let (file, vol) = st.vol(ino)?;
                vol.zero(offset, length, file).map_err(errno)?;
            }
            ZERO => {
                let (file, vol) = st.vol(ino)?;
                vol.zero(offset, length, file).map_err(errno)?;
                if end > vol.size() {
                    vol.set_size(end);
                }
            }
            _ => return Err(Errno::EOPNOTSUPP),
        }
        Ok(())
    }

    fn release_res(&self, fh: u64) {
        let mut st = self.shared.lock();
        let Some(handle) = st.handles.remove(&fh) else {
            return;
        };
        if let Some(node) = st.nodes.get_mut(&handle.ino) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 && (node.vol.is_none() || node.path.is_none()) {
                node.file = None;
                node.vol = None;
            }
        }
    }

    fn opendir_res(&self, ino: u64) -> Res<u64> {
        let backing = self.backing();
        let mut st = self.shared.lock();
        let rel = st.path(ino)?;
        let parent = rel
            .parent()
            .and_then(|p| st.by_path.get(p).copied())
            .unwrap_or(ROOT);
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: parent,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for e in fs::read_dir(backing.join(&rel)).map_err(errno)? {
            let e = e.map_err(errno)?;
            let kind = kind_of(e.file_type().map_err(errno)?);
            let name = e.file_name();
            let ino = st.ino_for(&rel.join(&name), kind);
            entries.push(DirEntry { ino, kind, name });
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.dirs.insert(fh, entries);
        Ok(fh)
    }

    fn mkdir_res(&self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Res<FileAttr> {
        let mut st = self.shared.lock();
        st.no_space()?;
        let rel = st.child(parent, name)?;
        fs::DirBuilder::new()
            .mode(mode & !umask & 0o7777)
            .create(self.backing().join(&rel))
            .map_err(errno)?;
        st.entry(self.backing(), &rel)
    }

    fn mknod_res(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Res<FileAttr> {
        let mut st = self.shared.lock();
        st.no_space()?;
        let rel = st.child(parent, name)?;
        let c = cpath(&self.backing().join(&rel))?;
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::mknod(c.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) };
        if rc != 0 {
            return last_os_error();
        }
        st.entry(self.backing(), &rel)
    }

    fn symlink_res(&self, parent: u64, name: &OsStr, target: &Path) -> Res<FileAttr> {
        let mut st = self.shared.lock();
        st.no_space()?;
        let rel = st.child(parent, name)?;
        std::os::unix::fs::symlink(target, self.backing().join(&rel)).map_err(errno)?;
        st.entry(self.backing(), &rel)
    }

    fn remove_res(&self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let mut st = self.shared.lock();
        let rel = st.child(parent, name)?;
        let full = self.backing().join(&rel);
        if dir {
            fs::remove_dir(full).map_err(errno)?;
        } else {
            fs::remove_file(full).map_err(errno)?;
        }
        st.forget_name(&rel);
        Ok(())
    }

    fn rename_res(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        let mut st = self.shared.lock();
        let from = st.child(parent, name)?;
        let to = st.child(newparent, newname)?;
        let (cfrom, cto) = (
            cpath(&self.shared.full(&from))?,
            cpath(&self.shared.full(&to))?,
        );
        // SAFETY: NUL-terminated paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cfrom.as_ptr(),
                libc::AT_FDCWD,
                cto.as_ptr(),
                flags.bits(),
            )
        };
        if rc != 0 {
            return last_os_error();
        }
        if from == to {
            return Ok(());
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let a = st.move_names(&from, &to);
            let b = st.move_names(&to, &from);
            st.insert_names(a);
            st.insert_names(b);
        } else {
            let moved = st.move_names(&from, &to);
            st.forget_name(&to);
            st.insert_names(moved);
        }
        Ok(())
    }

    fn statfs_res(&self) -> Res<libc::statvfs> {
        let full = cpath(self.backing())?;
        // SAFETY: statvfs is plain data; all zeros is a valid value.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out pointer.
        if unsafe { libc::statvfs(full.as_ptr(), &mut s) } != 0 {
            return last_os_error();
        }
        if self.shared.lock().fault == Some(Fault::Enospc) {
            s.f_bfree = 0;
            s.f_bavail = 0;
        }
        Ok(s)
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_res(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.shared.lock();
        match st.getattr(self.backing(), ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_res(ino.0, mode, uid, gid, size, [atime, mtime]) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let rel = self.shared.lock().path(ino.0);
        match rel.and_then(|rel| fs::read_link(self.shared.full(&rel)).map_err(errno)) {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.mknod_res(parent.0, name, mode, umask, rdev) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.mkdir_res(parent.0, name, mode, umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_res(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_res(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.symlink_res(parent.0, link_name, target) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_res(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.shared.lock();
        let opened = match st.node(ino.0).map(|node| node.kind) {
            Ok(FileType::Directory) => Err(Errno::EISDIR),
            Ok(_) => st.open_backing(self.backing(), ino.0),
            Err(e) => Err(e),
        };
        match opened {
            Ok(()) => {
                let fh = st.new_handle(ino.0, flags.0);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_res(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_res(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// close(2): not durable.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// The last close of an open file: not durable either.
    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_res(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.shared.lock();
        st.stats.fsyncs += 1;
        match st.sync(self.backing(), ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.opendir_res(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.shared.lock();
        let Some(entries) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    /// Counted; syncs the backing dir (every directory change already reached it).
    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let rel = {
            let mut st = self.shared.lock();
            st.stats.fsyncdirs += 1;
            st.path(ino.0)
        };
        match rel.and_then(|rel| {
            File::open(self.shared.full(&rel))
                .and_then(|d| d.sync_all())
                .map_err(errno)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.statfs_res() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    /// The kernel checks permissions itself (`default_permissions`); this only says
    /// whether the file exists.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let st = self.shared.lock();
        match st.metadata(self.backing(), ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_res(parent.0, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.fallocate_res(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
