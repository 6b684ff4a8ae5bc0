//! A buffered file whose bytes the kernel starts writing to disk as they come, every
//! [`WRITEBACK_BYTES`] (`sync_file_range`, which does not wait), so the disk works while
//! the writer still produces and the final sync has little left to do. Without it a
//! checkpoint's bytes pile up in the page cache and its durable commit waits for all of
//! them at once, behind whatever else the disk is writing.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;

/// Written bytes after which writeback of them is started.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// A file written through a buffer, its writeback started as it grows.
pub struct WritebackFile {
    out: BufWriter<File>,
    written: u64,
    kicked: u64,
}

impl WritebackFile {
    /// Writes into `file` through a buffer of `buffer` bytes.
    pub fn new(file: File, buffer: usize) -> Self {
        WritebackFile {
            out: BufWriter::with_capacity(buffer, file),
            written: 0,
            kicked: 0,
        }
    }

    /// Writes what is buffered and returns the file (not yet synced).
    pub fn into_file(self) -> io::Result<File> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= WRITEBACK_BYTES {
            self.out.flush()?;
            // SAFETY: a plain syscall on our descriptor. Only a hint: failure is ignored
            // (the sync at the end still writes everything).
            unsafe {
                libc::sync_file_range(
                    self.out.get_ref().as_raw_fd(),
                    self.kicked as libc::off64_t,
                    (self.written - self.kicked) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.kicked = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_arrives_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut w = WritebackFile::new(File::create(&path).expect("create"), 1 << 16);
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(3 << 20) {
            w.write_all(piece).expect("write");
        }
        w.into_file().expect("flush").sync_all().expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), data);
    }
}
