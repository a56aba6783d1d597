//! PowerFs, the power-loss filesystem of the power-cut tests, on real FUSE mounts: what
//! was fsynced survives a cut, what was not is lost (or torn at page boundaries),
//! metadata is durable at once, injected ENOSPC and EIO reach the caller, and sled on it
//! keeps what it flushed once its files are fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tern_tests::powerfs::{Cut, Fault, PowerFs, PAGE};

/// A PowerFs over a temp backing dir; the fields drop in order, the mount first.
struct Mounted {
    fs: PowerFs,
    _mountpoint: TempDir,
    backing: TempDir,
}

fn mount() -> Mounted {
    let backing = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount(backing.path(), mountpoint.path()).expect("mount a PowerFs");
    Mounted {
        fs,
        _mountpoint: mountpoint,
        backing,
    }
}

impl Mounted {
    fn path(&self, name: &str) -> PathBuf {
        self.fs.path().join(name)
    }
}

/// `len` bytes that differ from one `seed` to the next and from offset to offset.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

fn is_mounted(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let needle = format!(" {} ", canon.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(&needle) && l.contains("fuse"))
}

/// The power-cut tests share one between threads and tasks.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PowerFs>();
};

#[test]
fn a_cut_loses_what_was_written_after_the_last_fdatasync() {
    let m = mount();
    let p = m.path("f");
    let a = pattern(10_000, 1);
    let mut f = rw(&p);
    f.write_all(&a).unwrap();
    f.sync_data().unwrap();
    let synced = m.fs.stats();
    assert_eq!(synced.fsyncs, 1);
    assert_eq!(synced.unsynced_bytes, 0);
    assert_eq!(fs::read(m.backing.path().join("f")).unwrap(), a);

    // B: overwrite the middle and extend past the end.
    f.write_all_at(&[0xbb; 5000], 8000).unwrap();
    let mut b = a.clone();
    b.truncate(8000);
    b.extend_from_slice(&[0xbb; 5000]);
    assert_eq!(fs::read(&p).unwrap(), b, "unsynced writes are visible");
    assert_eq!(fs::metadata(&p).unwrap().len(), 13_000);
    let before = m.fs.stats();
    assert!(before.unsynced_bytes >= 5000, "{before:?}");
    assert_eq!(before.unsynced_files, 1);
    assert_eq!(
        fs::read(m.backing.path().join("f")).unwrap(),
        a,
        "the backing file holds only what was synced"
    );
    drop(f);

    let report = m.fs.cut_power(Cut::Discard);
    assert_eq!(report.files, 1);
    assert_eq!(report.bytes_discarded, before.unsynced_bytes);
    assert_eq!(report.pages_kept, 0);
    let mut got = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), a.len());
    assert!(got == a, "after the cut the file is A again");
    assert_eq!(fs::metadata(&p).unwrap().len(), a.len() as u64);
    let after = m.fs.stats();
    assert_eq!((after.unsynced_bytes, after.cuts), (0, 1));
}

#[test]
fn a_new_file_never_synced_survives_a_cut_empty() {
    let m = mount();
    let p = m.path("new");
    fs::write(&p, pattern(5000, 2)).unwrap();
    assert_eq!(fs::read(&p).unwrap(), pattern(5000, 2));
    m.fs.cut_power(Cut::Discard);
    let meta = fs::metadata(&p).expect("the directory entry is durable at once");
    assert_eq!(meta.len(), 0);
    assert_eq!(fs::read(&p).unwrap(), b"");
}

#[test]
fn a_shrink_is_undone_by_a_cut_unless_it_was_synced() {
    let m = mount();
    let p = m.path("f");
    let a = pattern(10_000, 3);
    let f = rw(&p);
    f.write_all_at(&a, 0).unwrap();
    f.sync_all().unwrap();

    f.set_len(100).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 100);
    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::metadata(&p).unwrap().len(), 10_000);
    assert_eq!(fs::read(&p).unwrap(), a);

    f.set_len(100).unwrap();
    f.sync_all().unwrap();
    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::read(&p).unwrap(), a[..100]);

    // A shrink then a grow reads zeros where the cut-off bytes were, before and after sync.
    f.set_len(50).unwrap();
    f.set_len(100).unwrap();
    let mut want = a[..50].to_vec();
    want.resize(100, 0);
    assert_eq!(fs::read(&p).unwrap(), want);
    f.sync_data().unwrap();
    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::read(&p).unwrap(), want);
}

/// Page `i` of generation `g` of the torn file: one byte value per page.
fn torn_page(i: usize, g: u8) -> u8 {
    (i as u8) | (g << 6)
}

/// Writes 64 pages of generation `g` (no sync); returns which pages of the file show
/// generation `g` after a torn cut, checking each page is all old or all new.
fn torn_round(m: &Mounted, seed: u64) -> Vec<bool> {
    let p = m.path("torn");
    let f = rw(&p);
    let new: Vec<u8> = (0..64)
        .flat_map(|i| vec![torn_page(i, 1); PAGE as usize])
        .collect();
    f.write_all_at(&new, 0).unwrap();
    let report = m.fs.cut_power(Cut::Torn { seed });
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 64 * PAGE as usize, "the size did not change");
    let kept: Vec<bool> = got
        .chunks(PAGE as usize)
        .enumerate()
        .map(|(i, page)| {
            if page.iter().all(|&b| b == torn_page(i, 1)) {
                true
            } else if page.iter().all(|&b| b == torn_page(i, 0)) {
                false
            } else {
                panic!("page {i} is neither all old nor all new: {:?}", &page[..8]);
            }
        })
        .collect();
    let n_kept = kept.iter().filter(|&&k| k).count() as u64;
    assert_eq!(
        (report.pages_kept, report.pages_discarded),
        (n_kept, 64 - n_kept)
    );
    kept
}

#[test]
fn a_torn_cut_keeps_some_unsynced_pages_whole_and_loses_the_others() {
    let m = mount();
    let p = m.path("torn");
    let old: Vec<u8> = (0..64)
        .flat_map(|i| vec![torn_page(i, 0); PAGE as usize])
        .collect();
    let f = rw(&p);
    f.write_all_at(&old, 0).unwrap();
    f.sync_all().unwrap();

    let kept = torn_round(&m, 7);
    let n_kept = kept.iter().filter(|&&k| k).count();
    assert!(0 < n_kept && n_kept < 64, "kept {n_kept} of 64 pages");
    eprintln!("torn cut, seed 7: kept {n_kept} of 64 pages");

    // Back to the old content, then the same seed tears the same way.
    f.write_all_at(&old, 0).unwrap();
    f.sync_all().unwrap();
    assert_eq!(torn_round(&m, 7), kept, "a seed gives the same tear");
}

#[test]
fn a_renamed_file_synced_under_its_new_name_keeps_its_data() {
    let m = mount();
    let data = pattern(20_000, 4);
    fs::write(m.path("a.tmp"), &data).unwrap();
    fs::write(m.path("b.tmp"), &data).unwrap();
    fs::rename(m.path("a.tmp"), m.path("a")).unwrap();
    fs::rename(m.path("b.tmp"), m.path("b")).unwrap();
    assert_eq!(
        fs::read(m.path("a")).unwrap(),
        data,
        "rename keeps unsynced data"
    );
    File::open(m.path("a")).unwrap().sync_all().unwrap();

    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    assert!(!m.path("a.tmp").exists());
    assert_eq!(
        fs::read(m.path("b")).unwrap(),
        b"",
        "the renamed file that was not synced lost its data"
    );
}

#[test]
fn injected_enospc_and_eio_reach_the_caller() {
    let m = mount();
    let p = m.path("f");
    let a = pattern(6000, 5);
    let mut f = rw(&p);
    f.write_all(&a).unwrap();
    f.sync_all().unwrap();

    m.fs.inject(Some(Fault::Enospc));
    let err = f.write_all(b"more").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let err = File::create(m.path("g")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    m.fs.inject(None);
    f.write_all(b"more").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 6004);
    f.sync_all().unwrap();

    let durable = fs::read(&p).unwrap();
    f.write_all_at(&[0xee; 3000], 1000).unwrap();
    m.fs.inject(Some(Fault::Eio));
    let err = f.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = f.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read(&p).unwrap(),
        durable,
        "a failed fsync drops the unsynced data"
    );
    m.fs.inject(None);
    f.sync_all().unwrap();
    f.write_all_at(b"x", 0).unwrap();
    f.sync_all().unwrap();
    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::read(&p).unwrap()[..1], *b"x");
    assert_eq!(m.fs.stats().faults, 4);
}

#[test]
fn a_file_left_open_across_a_cut_shows_what_survived() {
    let m = mount();
    let p = m.path("open");
    let mut f = rw(&p);
    f.write_all(&pattern(9000, 6)).unwrap();
    f.sync_data().unwrap();
    // Same size, so only uncached reads (direct I/O) can show the cut through this fd.
    f.write_all_at(&pattern(9000, 7), 0).unwrap();
    let mut buf = vec![0u8; 20_000];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 9000);
    assert_eq!(buf[..9000], pattern(9000, 7));
    m.fs.cut_power(Cut::Discard);
    assert_eq!(f.metadata().unwrap().len(), 9000);
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 9000);
    assert_eq!(buf[..9000], pattern(9000, 6));
    // and it still works: append at the (new) end, sync, cut
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"end").unwrap();
    f.sync_all().unwrap();
    m.fs.cut_power(Cut::Discard);
    assert_eq!(fs::metadata(&p).unwrap().len(), 9003);
}

#[test]
fn dropping_a_powerfs_unmounts_it_even_with_a_file_open() {
    let m = mount();
    let mountpoint = m.fs.path().to_path_buf();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), b"x").unwrap();
    let names: Vec<_> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert!(is_mounted(&mountpoint));
    let open = File::open(m.path("d/f")).unwrap();
    let start = Instant::now();
    let Mounted {
        fs: powerfs,
        _mountpoint,
        backing,
    } = m;
    drop(powerfs);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(!is_mounted(&mountpoint), "unmounted (detached)");
    let mut s = String::new();
    (&open).read_to_string(&mut s).unwrap();
    assert_eq!(s, "x", "the open file is still served");
    drop(open);
    assert!(backing.path().join("d/f").exists());

    let err = PowerFs::mount(&backing.path().join("missing"), _mountpoint.path()).unwrap_err();
    assert!(err.to_string().contains("backing dir"), "{err}");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        }
        out.push(path);
    }
}

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value {i} {}", "v".repeat(100)).into_bytes()
}

/// Opens sled at `dir`, inserts keys 0..1000, `flush()`es (and then fsyncs every file
/// under `dir` when `sync_files`), inserts keys 1000..2000 without a flush.
fn fill_sled(dir: &Path, sync_files: bool) -> sled::Db {
    let db = sled::open(dir).unwrap();
    for i in 0..1000 {
        db.insert(key(i), value(i)).unwrap();
    }
    db.flush().unwrap();
    if sync_files {
        // sled's flush makes its writes durable with sync_file_range, which FUSE never
        // sees: only an fsync of each file does it here (as on some real filesystems).
        let mut files = Vec::new();
        files_under(dir, &mut files);
        for f in files {
            File::open(f).unwrap().sync_all().unwrap();
        }
    }
    for i in 1000..2000 {
        db.insert(key(i), value(i)).unwrap();
    }
    db
}

const CHILD_DB: &str = "POWERFS_SLED_CHILD_DB";
const CHILD_SYNC: &str = "POWERFS_SLED_CHILD_SYNC";
const CHILD_READY: &str = "powerfs-sled-child-ready";

/// The child process of [`sled_round`] with [`End::Kill`]: fills sled on the mount, says
/// so, and waits for its SIGKILL. Started by that test with `--ignored`.
#[test]
#[ignore = "the child process of the sled tests; they start it themselves"]
fn sled_child() {
    let Some(dir) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let db = fill_sled(Path::new(&dir), std::env::var_os(CHILD_SYNC).is_some());
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(db);
}

/// How the sled run ends before the cut.
#[derive(Debug, Clone, Copy)]
enum End {
    /// `drop(db)` in this process (sled flushes and fsyncs on drop).
    Drop,
    /// SIGKILL of a child process that did the writes.
    Kill,
}

/// sled on PowerFs (see [`fill_sled`]), ended by `end`, then a cut and a reopen. Returns
/// how many of the flushed and of the unflushed thousand survived (None if sled did not
/// open).
fn sled_round(sync_files: bool, end: End) -> Option<(usize, usize)> {
    let m = mount();
    let dir = m.path("db");
    match end {
        End::Drop => drop(fill_sled(&dir, sync_files)),
        End::Kill => {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "sled_child", "--ignored", "--nocapture"])
                .env(CHILD_DB, &dir)
                .envs(sync_files.then_some((CHILD_SYNC, "1")))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let ready =
                std::io::BufRead::lines(stdout).any(|l| l.is_ok_and(|l| l.contains(CHILD_READY)));
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(ready, "the sled child process died before it was ready");
        }
    }
    let stats = m.fs.stats();
    let report = m.fs.cut_power(Cut::Discard);
    let counts = match sled::open(&dir) {
        Ok(db) => {
            let survived = |range: std::ops::Range<u32>| {
                range
                    .filter(|&i| db.get(key(i)).unwrap().as_deref() == Some(&value(i)[..]))
                    .count()
            };
            Some((survived(0..1000), survived(1000..2000)))
        }
        Err(e) => {
            eprintln!("sled did not open after the cut: {e}");
            None
        }
    };
    eprintln!(
        "sled, {end:?}, fsync of each file after flush: {sync_files}: survived (flushed, \
         unflushed) of 1000 each: {counts:?}; before the cut {stats:?}; {report:?}"
    );
    counts
}

#[test]
fn sled_keeps_what_it_flushed_once_its_files_are_fsynced() {
    for end in [End::Drop, End::Kill] {
        let (flushed, _) = sled_round(true, end).expect("sled opens after the cut");
        assert_eq!(flushed, 1000, "{end:?}");
        // Informative only: what a plain `flush()` keeps here.
        sled_round(false, end);
    }
}
