//! The NVMe tier's memory map: the only module in Augur with `unsafe` code.
//!
//! [`MappedFile`] maps the whole, preallocated cache file once and copies bytes in and out of
//! it. It never hands out a reference into the mapping, so no Rust borrow can observe a byte
//! change under it; every access is a bounds-checked copy through raw pointers.
//!
//! ## Contract (what keeps the copies sound)
//! - **The file is never truncated while mapped.** The NVMe tier sizes the file before mapping
//!   it and never calls `set_len` afterwards; the mapping lives until the last [`MappedFile`]
//!   handle is dropped. (A shrunken file would turn reads into SIGBUS.)
//! - **Every block is preallocated** (`fallocate` before mapping), so a write never needs the
//!   filesystem to find space; a full disk cannot SIGBUS a write.
//! - **No two threads touch the same bytes at once with one of them writing.** The extent
//!   allocator (`alloc.rs`) hands each chunk an extent that nothing else owns: a writer fills a
//!   freshly allocated extent before the chunk is published, readers read only published chunks,
//!   and an extent is reused only after the chunk is unpublished and its last reader is gone.
//!
//! What this cannot prevent: a media error on the device under the mapping raises SIGBUS in
//! the reading thread (the kernel has no error code to return to a plain load). Decision 0010
//! records why the tier is mmap'd anyway.

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};

/// A shared, writable mapping of a whole file.
#[derive(Debug)]
pub struct MappedFile {
    raw: MmapRaw,
}

impl MappedFile {
    /// Maps all of `file` (opened read-write, already at its final, preallocated size).
    pub fn map(file: &File) -> std::io::Result<MappedFile> {
        let raw = MmapOptions::new().map_raw(file)?;
        Ok(MappedFile { raw })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    fn check(&self, offset: u64, len: usize) -> usize {
        let start = usize::try_from(offset).expect("offset fits in usize");
        let end = start.checked_add(len).expect("range end overflows");
        assert!(
            end <= self.raw.len(),
            "cache map access {start}..{end} past its end {}",
            self.raw.len()
        );
        start
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`. Panics if the range is outside the map.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) {
        let start = self.check(offset, buf.len());
        // SAFETY: `check` proved start..start+len lies inside the live mapping (which outlives
        // `self`), `buf` is a distinct Rust allocation so the ranges cannot overlap, and by the
        // module contract no thread writes these bytes while they are readable.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.raw.as_ptr().add(start),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }

    /// Copies `data` to `offset`. Panics if the range is outside the map.
    pub fn write_at(&self, offset: u64, data: &[u8]) {
        let start = self.check(offset, data.len());
        // SAFETY: as in `read_at`: in bounds of the live, writable (shared, read-write) mapping;
        // `data` is a separate allocation; by the module contract the caller owns this extent
        // exclusively, so no other thread reads or writes these bytes meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.raw.as_mut_ptr().add(start),
                data.len(),
            );
        }
    }

    /// Asks the kernel to write the range back to the device now (not needed for crash
    /// safety against a killed process, only against power loss).
    pub fn flush_range(&self, offset: u64, len: usize) -> std::io::Result<()> {
        let start = self.check(offset, len);
        self.raw.flush_range(start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(len: u64) -> (tempfile::TempDir, File, MappedFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(len).unwrap();
        let map = MappedFile::map(&file).unwrap();
        (dir, file, map)
    }

    #[test]
    fn writes_reach_the_file_and_reads_see_it() {
        use std::os::unix::fs::FileExt;
        let (_dir, file, map) = mapped(8192);
        map.write_at(4090, b"hello world");
        let mut buf = [0; 11];
        map.read_at(4090, &mut buf);
        assert_eq!(&buf, b"hello world");
        let mut via_file = [0; 11];
        file.read_exact_at(&mut via_file, 4090).unwrap();
        assert_eq!(
            &via_file, b"hello world",
            "a shared mapping writes the file"
        );
        map.flush_range(4090, 11).unwrap();
    }

    #[test]
    #[should_panic(expected = "past its end")]
    fn out_of_range_access_panics_instead_of_touching_memory() {
        let (_dir, _file, map) = mapped(4096);
        map.write_at(4090, b"too long");
    }
}
