//! The volatile layer of one file: what was written since its last fsync, kept as whole
//! 4 KiB pages over the durable (backing) file, which is only read, never written, until
//! the layer is applied (fsync) or partly applied (a torn cut).
//!
//! Invariants, relied on by `read` and `apply`:
//! * every durable byte at or past `floor` was truncated away since the last sync (it reads
//!   as zero if the file grows again), and `min(durable_size, floor) <= size`;
//! * no dirty page starts at or past `size`, and the bytes of a dirty page past `size`
//!   are zero.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The page size of the volatile layer (and of what a torn cut keeps or drops).
pub const PAGE: u64 = 4096;

/// A file's content and size changes since its last fsync.
#[derive(Debug)]
pub(super) struct Volatile {
    /// The backing file's size when this layer started; the backing file does not change
    /// while the layer exists.
    durable_size: u64,
    /// The size the file has now.
    size: u64,
    /// The lowest size the file was truncated to since the last sync.
    floor: u64,
    /// Dirty pages by index, `PAGE` bytes each.
    pages: BTreeMap<u64, Box<[u8]>>,
}

/// What a torn cut did to one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Torn {
    pub kept: u64,
    pub discarded: u64,
    pub bytes_discarded: u64,
}

impl Volatile {
    pub(super) fn new(durable_size: u64) -> Volatile {
        Volatile {
            durable_size,
            size: durable_size,
            floor: durable_size,
            pages: BTreeMap::new(),
        }
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// The end of the durable bytes the file still shows.
    fn durable_limit(&self) -> u64 {
        self.durable_size.min(self.floor)
    }

    /// Bytes of the file that live only in dirty pages.
    pub(super) fn unsynced_bytes(&self) -> u64 {
        self.pages.keys().map(|&p| self.page_len(p)).sum()
    }

    /// The bytes of page `p` that are inside the file.
    fn page_len(&self, p: u64) -> u64 {
        PAGE.min(self.size.saturating_sub(p * PAGE))
    }

    /// Page `p`, read from the durable file first unless the caller overwrites all of it.
    fn page_mut(&mut self, p: u64, overwrite_all: bool, durable: &File) -> io::Result<&mut [u8]> {
        if !self.pages.contains_key(&p) {
            let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
            let start = p * PAGE;
            let limit = self.durable_limit();
            if !overwrite_all && start < limit {
                let n = PAGE.min(limit - start) as usize;
                read_full_at(durable, &mut buf[..n], start)?;
            }
            self.pages.insert(p, buf);
        }
        Ok(self.pages.get_mut(&p).expect("inserted above"))
    }

    /// A write of `data` at `offset` (the file grows to its end if needed).
    pub(super) fn write(&mut self, offset: u64, data: &[u8], durable: &File) -> io::Result<()> {
        self.fill(offset, data.len() as u64, Some(data), durable)?;
        self.size = self.size.max(offset + data.len() as u64);
        Ok(())
    }

    /// Zeroes `len` bytes at `offset` that are inside the file (fallocate's punch-hole
    /// and zero-range); the size does not change.
    pub(super) fn zero(&mut self, offset: u64, len: u64, durable: &File) -> io::Result<()> {
        let end = (offset + len).min(self.size);
        if offset < end {
            self.fill(offset, end - offset, None, durable)?;
        }
        Ok(())
    }

    /// Copies `data` (or zeros) over `len` bytes at `offset`, page by page.
    fn fill(
        &mut self,
        offset: u64,
        len: u64,
        data: Option<&[u8]>,
        durable: &File,
    ) -> io::Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let p = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min((end - pos) as usize);
            let page = self.page_mut(p, in_page == 0 && n == PAGE as usize, durable)?;
            let dst = &mut page[in_page..in_page + n];
            match data {
                Some(data) => {
                    let from = (pos - offset) as usize;
                    dst.copy_from_slice(&data[from..from + n]);
                }
                None => dst.fill(0),
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// truncate/ftruncate/set_len (and fallocate's extend).
    pub(super) fn set_size(&mut self, new: u64) {
        if new < self.size {
            let first_gone = new.div_ceil(PAGE);
            self.pages.split_off(&first_gone);
            let in_page = (new % PAGE) as usize;
            if in_page > 0 {
                if let Some(page) = self.pages.get_mut(&(new / PAGE)) {
                    page[in_page..].fill(0);
                }
            }
            self.floor = self.floor.min(new);
        }
        self.size = new;
    }

    /// Up to `len` bytes at `offset`, as the file shows them now (short at its end).
    pub(super) fn read(&self, offset: u64, len: u64, durable: &File) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let limit = self.durable_limit().min(end);
        if offset < limit {
            read_full_at(durable, &mut buf[..(limit - offset) as usize], offset)?;
        }
        for (&p, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = (p * PAGE).max(offset);
            let stop = ((p + 1) * PAGE).min(end);
            let src = &page[(start - p * PAGE) as usize..(stop - p * PAGE) as usize];
            buf[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(src);
        }
        Ok(buf)
    }

    /// Makes the backing file show what the file shows now (without syncing it).
    pub(super) fn apply(&self, backing: &File) -> io::Result<()> {
        if self.floor < self.durable_size {
            backing.set_len(self.floor)?;
        }
        for &p in self.pages.keys() {
            self.write_page(p, backing)?;
        }
        backing.set_len(self.size)
    }

    /// A power cut that tears the file: each dirty page reaches the backing file if `keep`
    /// says so, or is lost. Size changes are lost, except that a kept page past the
    /// durable end grows the file to the end of that page's data (a gap reads as zeros).
    pub(super) fn apply_torn(
        &self,
        backing: &File,
        mut keep: impl FnMut() -> bool,
    ) -> io::Result<Torn> {
        let mut torn = Torn::default();
        for &p in self.pages.keys() {
            if keep() {
                self.write_page(p, backing)?;
                torn.kept += 1;
            } else {
                torn.discarded += 1;
                torn.bytes_discarded += self.page_len(p);
            }
        }
        Ok(torn)
    }

    fn write_page(&self, p: u64, backing: &File) -> io::Result<()> {
        let n = self.page_len(p) as usize;
        backing.write_all_at(&self.pages[&p][..n], p * PAGE)
    }
}

/// Fills `buf` from `file` at `offset`, leaving what lies past the end of the file as it
/// is (zeros).
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn durable(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn all(v: &Volatile, f: &File) -> Vec<u8> {
        v.read(0, u64::MAX, f).unwrap()
    }

    fn backing_content(f: &File) -> Vec<u8> {
        let mut buf = vec![0u8; f.metadata().unwrap().len() as usize];
        read_full_at(f, &mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn writes_show_over_the_durable_file_which_does_not_change() {
        let old: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let f = durable(&old);
        let mut v = Volatile::new(old.len() as u64);
        v.write(4000, &[0xaa; 200], &f).unwrap();
        v.write(12_000, b"tail", &f).unwrap();
        let mut want = old.clone();
        want[4000..4200].fill(0xaa);
        want.resize(12_000, 0);
        want.extend_from_slice(b"tail");
        assert_eq!(all(&v, &f), want);
        assert_eq!(v.read(4190, 20, &f).unwrap(), want[4190..4210]);
        assert_eq!(backing_content(&f), old, "the durable file is untouched");
        assert_eq!(v.unsynced_bytes(), 4096 + 4096 + (12_004 - 8192));
        v.apply(&f).unwrap();
        assert_eq!(backing_content(&f), want);
    }

    #[test]
    fn a_shrink_then_grow_reads_zeros_where_durable_bytes_were_cut() {
        let f = durable(&[7u8; 9000]);
        let mut v = Volatile::new(9000);
        v.write(100, &[1; 10], &f).unwrap();
        v.set_size(50);
        v.set_size(9000);
        let mut want = vec![7u8; 50];
        want.resize(9000, 0);
        assert_eq!(all(&v, &f), want);
        // a partial write into the cut region must not bring durable bytes back
        v.write(5000, &[2; 3], &f).unwrap();
        want[5000..5003].fill(2);
        assert_eq!(all(&v, &f), want);
        v.apply(&f).unwrap();
        assert_eq!(backing_content(&f), want);
    }

    #[test]
    fn a_torn_cut_keeps_whole_pages_only() {
        let f = durable(&[0u8; 4 * PAGE as usize]);
        let mut v = Volatile::new(4 * PAGE);
        v.write(0, &[9u8; 4 * PAGE as usize], &f).unwrap();
        let mut n = 0;
        let torn = v
            .apply_torn(&f, || {
                n += 1;
                n % 2 == 1
            })
            .unwrap();
        assert_eq!(
            (torn.kept, torn.discarded, torn.bytes_discarded),
            (2, 2, 2 * PAGE)
        );
        let got = backing_content(&f);
        for (i, page) in got.chunks(PAGE as usize).enumerate() {
            let want = if i % 2 == 0 { 9 } else { 0 };
            assert!(page.iter().all(|&b| b == want), "page {i}");
        }
    }
}
