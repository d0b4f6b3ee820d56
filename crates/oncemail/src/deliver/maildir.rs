//! Local delivery into Maildirs (`tmp/`, `new/`, `cur/`).
//!
//! # Contract
//!
//! When [`deliver`] reports a recipient delivered, the message is durably in that
//! mailbox's `new/`: the file was written in `tmp/`, fdatasync'd, linked into `new/`, and
//! `new/` was fsync'd. The file starts with `Return-Path:`, `Delivered-To:` and our
//! `Received:` field, then the message with its CRLF line endings turned into LF, the
//! Maildir norm (bare CR or LF never reach the spool, so dropping every CR is exact).
//!
//! # Once per recipient (I4)
//!
//! The file name is fixed by the message and the recipient:
//! `<arrival>.<queue id>_<recipient index>.<host>`. Moving into `new/` is a `link`, which
//! fails with `EEXIST` when an earlier attempt got that far, so a delivery repeated after a
//! crash (outcome not yet recorded) finds the first copy and does not make a second.
//! For messages recovered after a restart `cur/` is searched too, in case the user's mail
//! reader already moved the first copy there.
//!
//! Errors are returned per recipient and are all temporary: a full disk or a permission
//! problem is retried.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use spool::{Spool, Stored};

use crate::envelope::{Envelope, Route};

/// What to deliver: one message, some of its recipients.
pub struct Job<'a> {
    pub mail_root: &'a Path,
    pub hostname: &'a str,
    pub spool: &'a Spool,
    pub stored: &'a Stored,
    pub envelope: &'a Envelope,
    /// Whether a previous run may have delivered some recipients already.
    pub recovered: bool,
}

/// How one recipient's delivery went.
pub enum Delivery {
    Written,
    AlreadyThere,
}

pub fn deliver(job: &Job, recipient: usize) -> io::Result<Delivery> {
    let rcpt = &job.envelope.recipients[recipient];
    let Route::Local { domain, mailbox } = &rcpt.route else {
        return Err(io::Error::other("not a local recipient"));
    };
    let dir = job.mail_root.join(domain).join(mailbox);
    ensure_maildir(&dir)?;

    let name = file_name(job, recipient);
    if job.recovered && in_cur(&dir, &name)? {
        return Ok(Delivery::AlreadyThere);
    }

    let tmp = dir.join("tmp").join(&name);
    write_file(job, &rcpt.address, &tmp)?;

    let moved = fs::hard_link(&tmp, dir.join("new").join(&name));
    let _ = fs::remove_file(&tmp);
    match moved {
        Ok(()) => {
            spool::sync_dir(&dir.join("new"))?;
            Ok(Delivery::Written)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Delivery::AlreadyThere),
        Err(e) => Err(e),
    }
}

fn file_name(job: &Job, recipient: usize) -> String {
    // '/' and ':' cannot appear in a Maildir name part; the spec escapes them as octal.
    let host = job.hostname.replace('/', "\\057").replace(':', "\\072");
    format!("{}.{}_{}.{}", job.envelope.arrival, job.stored.qid, recipient, host)
}

fn write_file(job: &Job, address: &str, path: &Path) -> io::Result<()> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);

    writeln!(out, "Return-Path: {}", job.envelope.return_path())?;
    writeln!(out, "Delivered-To: {address}")?;
    write_lf(&mut out, job.envelope.received.as_bytes())?;

    let mut body = job.spool.open_body(&job.stored.body)?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        write_lf(&mut out, &chunk[..n])?;
    }

    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()
}

/// Writes `bytes` without their CRs.
fn write_lf(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for piece in bytes.split(|&b| b == b'\r') {
        out.write_all(piece)?;
    }
    Ok(())
}

/// Creates the Maildir if needed, making each new directory's entry durable.
fn ensure_maildir(dir: &Path) -> io::Result<()> {
    if dir.join("new").is_dir() && dir.join("tmp").is_dir() && dir.join("cur").is_dir() {
        return Ok(());
    }
    create_durably(dir)?;
    for sub in ["tmp", "new", "cur"] {
        create_durably(&dir.join(sub))?;
    }
    Ok(())
}

fn create_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent: PathBuf = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    create_durably(&parent)?;
    match fs::create_dir(dir) {
        Ok(()) => spool::sync_dir(&parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// True if `cur/` holds our file (a reader renames `name` to `name:2,<flags>`).
fn in_cur(dir: &Path, name: &str) -> io::Result<bool> {
    for entry in fs::read_dir(dir.join("cur"))? {
        let entry = entry?.file_name();
        let entry = entry.to_string_lossy();
        if entry == name || entry.starts_with(&format!("{name}:")) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crs_are_dropped_and_nothing_else() {
        let mut out = Vec::new();
        write_lf(&mut out, b"a: b\r\n\r\nbody\r\n.line\r\n").unwrap();
        assert_eq!(out, b"a: b\n\nbody\n.line\n");
    }
}
