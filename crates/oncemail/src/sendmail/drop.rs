//! Writing one message into the maildrop, durably or not at all.
//!
//! `<name>.tmp` is created (never an existing file), written, fsync'd, renamed to
//! `<name>.msg`, and the directory is fsync'd: after [`DropFile::commit`] returns, the
//! message survives a crash, and pickup never sees a partial file. Dropped before that,
//! the temporary file is removed.
//!
//! Names are `<microseconds>.<pid>.<64 random bits>`: they sort by time, never collide,
//! and cannot be guessed by another user (the file is readable so that a server running
//! as its own user can read it; the directory is not listable).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::pickup;

pub struct DropFile {
    dir: PathBuf,
    name: String,
    out: BufWriter<File>,
    committed: bool,
}

impl DropFile {
    /// Creates `<name>.tmp` in the maildrop of `data_dir` (creating the maildrop if needed).
    pub fn create(data_dir: &Path, name: &str) -> io::Result<DropFile> {
        let dir = pickup::create_maildrop(data_dir)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dir.join(format!("{name}.tmp")))?;
        let out = BufWriter::with_capacity(64 * 1024, file);
        Ok(DropFile { dir, name: name.to_string(), out, committed: false })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Makes the message durable and visible to pickup.
    pub fn commit(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        fs::rename(self.tmp_path(), self.dir.join(format!("{}.msg", self.name)))?;
        self.committed = true;
        spool::sync_dir(&self.dir)
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", self.name))
    }
}

impl Drop for DropFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(self.tmp_path());
        }
    }
}

/// A fresh maildrop file name (also the unique part of the `Message-ID:` sendmail adds).
pub fn unique_name() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    format!("{micros}.{}.{:016x}", std::process::id(), random_u64())
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes; getrandom writes at most that many.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        // Only guessability suffers: create_new still refuses a name that exists.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        return u64::from(nanos) << 32 | u64::from(std::process::id());
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_file_is_renamed_and_a_dropped_one_removed() {
        let data = tempfile::tempdir().unwrap();
        let maildrop = data.path().join("maildrop");

        let mut kept = DropFile::create(data.path(), "1.1.a").unwrap();
        kept.write_all(b"hello\r\n").unwrap();
        kept.commit().unwrap();
        assert_eq!(fs::read(maildrop.join("1.1.a.msg")).unwrap(), b"hello\r\n");

        let mut lost = DropFile::create(data.path(), "2.1.b").unwrap();
        lost.write_all(b"x").unwrap();
        drop(lost);
        let names: Vec<_> =
            fs::read_dir(&maildrop).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["1.1.a.msg"]);
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name(), unique_name());
    }
}
