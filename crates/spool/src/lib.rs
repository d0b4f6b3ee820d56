//! The durable spool: where an accepted message lives until every recipient is final.
//!
//! # Contract
//!
//! - After [`Spool::commit`] returns `Ok`, the message (envelope and body) survives a crash
//!   or power loss at any later instant: the record is written and fdatasync'd, and a body
//!   kept in its own file was fdatasync'd by the caller and its directory entry fsync'd
//!   here before the record was written.
//! - After [`Spool::update`] returns `Ok`, the update survives likewise
//!   ([`Spool::update_lazily`] trades that for no flush of its own). Updates are opaque
//!   bytes to the spool (the engine stores recipient outcomes in them) and come back, in
//!   order, from [`Spool::open`].
//! - [`Spool::remove`] forgets a message. It needs no flush: if its record is lost in a
//!   crash, the message comes back with all its updates, and the engine, seeing every
//!   recipient final, removes it again.
//! - [`Spool::open`] returns every committed message not yet removed, and deletes what
//!   unfinished transactions left behind (body files no commit refers to).
//! - A commit may carry a [`Keep`]: a small fact that [`Spool::open`] returns until its
//!   expiry, even after the message is removed (the duplicate-suppression index uses it).
//!
//! # Layout (under the spool directory)
//!
//! ```text
//! lock                 held (flock) by the one process that owns the spool
//! log/<id>.seg         append-only records: commits (small bodies inline), and updates
//!                      and removals while <id> is the segment being appended to
//! log/<id>.out         updates and removals for the messages of <id>.seg after that
//! data/<queue id>      bodies too large to keep in memory until the commit
//! keep/<day>.log       copies of kept facts, by expiry day (see the `keep` module)
//! ```
//!
//! # Group commit
//!
//! One thread owns all appends. It takes every request that is waiting, writes them with
//! one write per file and one fdatasync per file, then answers them all; requests that
//! arrive while it syncs form the next batch. So concurrent sessions share fsyncs, and the
//! cost of a commit under load is a fraction of one fdatasync.
//!
//! # Limits
//!
//! A segment is deleted only when every message in it is removed, so one long-deferred
//! message keeps its whole segment (up to [`SEGMENT_TARGET`] bytes) on disk.

mod committer;
mod keep;
mod qid;
pub mod record;
mod recover;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

pub use keep::{Keep, Kept};
pub use qid::QueueId;

/// A segment is closed and a new one started once it grows past this size.
#[cfg(not(test))]
pub const SEGMENT_TARGET: u64 = 64 * 1024 * 1024;
#[cfg(test)]
pub const SEGMENT_TARGET: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("spool at {0} is in use by another process")]
    Locked(PathBuf),
    #[error("spool writer has stopped")]
    Stopped,
}

/// The body of a message being committed.
#[derive(Debug)]
pub enum Body {
    /// Small enough to be written inline with the commit record.
    Inline(Vec<u8>),
    /// Already written to the file from [`Spool::create_body_file`] and fdatasync'd.
    File { len: u64 },
}

/// Where a committed body can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRef {
    Inline { segment: u64, offset: u64, len: u64 },
    File { qid: QueueId, len: u64 },
}

impl BodyRef {
    pub fn len(&self) -> u64 {
        match *self {
            BodyRef::Inline { len, .. } | BodyRef::File { len, .. } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A committed message, as the commit returns it and as recovery finds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub qid: QueueId,
    pub segment: u64,
    pub envelope: Vec<u8>,
    pub body: BodyRef,
    /// Updates recorded since the commit, oldest first (empty for a fresh commit).
    pub updates: Vec<Vec<u8>>,
}

/// What [`Spool::open`] found.
pub struct Opened {
    pub spool: Spool,
    /// Committed messages not yet removed, oldest first.
    pub messages: Vec<Stored>,
    /// Unexpired kept facts, one per message that carried one.
    pub kept: Vec<Kept>,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
    jobs: mpsc::Sender<committer::Job>,
}

impl Spool {
    /// Opens (creating if needed) the spool under `root`, recovers it, and starts the
    /// writer thread. Fails if another process holds the spool.
    pub fn open(root: &Path) -> Result<Opened, SpoolError> {
        for dir in ["log", "data", "keep"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let lock = lock_spool(root)?;

        let recovered = recover::scan(root)?;
        let jobs = committer::start(root, lock, &recovered)?;

        let spool = Spool { root: root.to_path_buf(), jobs };
        Ok(Opened { spool, messages: recovered.messages, kept: recovered.kept })
    }

    /// Creates the file a large body streams into before its commit. The name is the
    /// queue ID; if the transaction never commits, [`Spool::discard_body_file`] removes it,
    /// and failing that the next [`Spool::open`] does.
    pub fn create_body_file(&self, qid: QueueId) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(self.body_path(qid))
    }

    /// Removes the body file of a transaction that will not be committed.
    pub fn discard_body_file(&self, qid: QueueId) {
        let _ = fs::remove_file(self.body_path(qid));
    }

    /// Makes a message durable. See the module contract.
    pub async fn commit(
        &self,
        qid: QueueId,
        envelope: Vec<u8>,
        body: Body,
        keep: Option<Keep>,
    ) -> Result<Stored, SpoolError> {
        let (reply, answer) = oneshot::channel();
        let job = committer::Job::Commit { qid, envelope, body, keep, reply };
        self.jobs.send(job).map_err(|_| SpoolError::Stopped)?;
        answer.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Durably records `update` for a committed message.
    pub async fn update(&self, stored: &Stored, update: Vec<u8>) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        let (qid, segment, reply) = (stored.qid, stored.segment, Some(reply));
        let job = committer::Job::Update { qid, segment, update, reply };
        self.jobs.send(job).map_err(|_| SpoolError::Stopped)?;
        answer.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Records `update` without waiting for it to be flushed: it becomes durable with the
    /// next flush of its file, and may be lost in a crash before that. For facts that
    /// can be found again after a crash (a Maildir delivery finds its own file), so that
    /// recording them costs no fsync of its own.
    pub fn update_lazily(&self, stored: &Stored, update: Vec<u8>) -> Result<(), SpoolError> {
        let (qid, segment) = (stored.qid, stored.segment);
        let job = committer::Job::Update { qid, segment, update, reply: None };
        self.jobs.send(job).map_err(|_| SpoolError::Stopped)
    }

    /// Forgets a message whose recipients are all final, and deletes its body file.
    pub fn remove(&self, stored: &Stored) -> Result<(), SpoolError> {
        let job = committer::Job::Remove {
            qid: stored.qid,
            segment: stored.segment,
            body_file: matches!(stored.body, BodyRef::File { .. }),
        };
        self.jobs.send(job).map_err(|_| SpoolError::Stopped)
    }

    /// Opens a committed body for reading.
    pub fn open_body(&self, body: &BodyRef) -> io::Result<io::Take<File>> {
        match *body {
            BodyRef::Inline { segment, offset, len } => {
                let mut file = File::open(segment_path(&self.root.join("log"), segment))?;
                file.seek(SeekFrom::Start(offset))?;
                Ok(file.take(len))
            }
            BodyRef::File { qid, len } => Ok(File::open(self.body_path(qid))?.take(len)),
        }
    }

    /// Reads a whole committed body into memory.
    pub fn read_body(&self, body: &BodyRef) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len() as usize);
        self.open_body(body)?.read_to_end(&mut out)?;
        if out.len() as u64 != body.len() {
            let msg = format!("body is {} bytes, expected {}", out.len(), body.len());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        Ok(out)
    }

    fn body_path(&self, qid: QueueId) -> PathBuf {
        self.root.join("data").join(qid.to_string())
    }
}

fn lock_spool(root: &Path) -> Result<File, SpoolError> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(root.join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::Locked(root.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

fn segment_path(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("{id:016x}.seg"))
}

fn sidecar_path(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("{id:016x}.out"))
}

/// The current Unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// fsyncs a directory, making the creation, rename or removal of its entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
