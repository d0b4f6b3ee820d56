//! The writer thread: the only place that appends to segments and sidecars.
//!
//! It runs batches: take every waiting job, write each touched file once, fdatasync each
//! file that holds something a caller waits for, answer the callers. While one batch
//! syncs, the next one gathers, which is what makes concurrent commits share an fsync.
//!
//! Ordering within a batch, and why:
//! 1. fsync `data/` when a commit's body is a file, so the body's directory entry is
//!    durable before any record that refers to it;
//! 2. append the commit records, and the updates and removals of messages that live in
//!    the active segment, to the active segment, and fdatasync it: one flush serves both
//!    the sessions waiting for their `250` and the deliveries recording outcomes;
//! 3. append updates and removals of messages in older segments to those segments'
//!    sidecars, fdatasync those with updates (a removal needs no flush; see the crate
//!    contract);
//! 4. answer; then delete body files of removed messages and segments left empty.
//!
//! A failed write or sync fails every job of the batch (the callers answer 4xx) and the
//! writer moves to a fresh segment, since the state of the failed file is unknown.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::keep::{self, Keep, KeepFiles};
use crate::record::{self, Kind};
use crate::recover::{BODY_FILE, BODY_INLINE, Recovered};
use crate::{
    Body, BodyRef, QueueId, SEGMENT_TARGET, SpoolError, Stored, segment_path, sidecar_path,
    sync_dir, unix_now,
};

/// Most jobs handled in one batch, so one huge burst cannot starve the callers at its head.
const MAX_BATCH: usize = 4096;

pub(crate) enum Job {
    Commit {
        qid: QueueId,
        envelope: Vec<u8>,
        body: Body,
        keep: Option<Keep>,
        reply: oneshot::Sender<Result<Stored, SpoolError>>,
    },
    Update {
        qid: QueueId,
        segment: u64,
        update: Vec<u8>,
        /// `None` for an update nobody waits for: written, flushed with a later batch.
        reply: Option<oneshot::Sender<Result<(), SpoolError>>>,
    },
    Remove {
        qid: QueueId,
        segment: u64,
        body_file: bool,
    },
}

struct Segment {
    file: File,
    sidecar: File,
    /// Where the next record goes.
    len: u64,
    /// How far the file is already written (with zeros past `len`); see `make_room`.
    allocated: u64,
    live: usize,
}

struct Committer {
    root: PathBuf,
    log_dir: PathBuf,
    segments: HashMap<u64, Segment>,
    active: u64,
    keep: KeepFiles,
    /// Set when a kept fact could not be copied: segments are no longer deleted, since
    /// they hold the only copy. Cleared by a restart, whose recovery copies nothing but
    /// reads the segments again.
    keep_failed: bool,
    /// The day (Unix days) expired keep files were last deleted.
    expired_day: i64,
    // Held for the life of the thread: the spool lock is released when the writer stops.
    _lock: File,
}

pub(crate) fn start(
    root: &Path,
    lock: File,
    recovered: &Recovered,
) -> Result<mpsc::Sender<Job>, SpoolError> {
    let log_dir = root.join("log");
    let mut segments = HashMap::new();
    for (&id, &live) in &recovered.live {
        segments.insert(id, open_existing(&log_dir, id, live)?);
    }

    let mut committer = Committer {
        root: root.to_path_buf(),
        log_dir,
        segments,
        active: recovered.last_segment,
        keep: KeepFiles::new(root),
        keep_failed: false,
        expired_day: 0,
        _lock: lock,
    };
    committer.start_segment()?;

    let (tx, rx) = mpsc::channel();
    thread::Builder::new().name("spool-writer".into()).spawn(move || committer.run(rx))?;
    Ok(tx)
}

fn open_existing(log_dir: &Path, id: u64, live: usize) -> io::Result<Segment> {
    // Old segments are never written again (a new one starts at every open); only their
    // sidecars grow.
    let file = OpenOptions::new().read(true).open(segment_path(log_dir, id))?;
    let sidecar = OpenOptions::new().append(true).create(true).open(sidecar_path(log_dir, id))?;
    let len = file.metadata()?.len();
    Ok(Segment { file, sidecar, len, allocated: len, live })
}

/// A commit written in this batch, waiting for its answer.
struct Pending {
    qid: QueueId,
    envelope: Vec<u8>,
    body: BodyRef,
    keep: Option<Keep>,
    reply: oneshot::Sender<Result<Stored, SpoolError>>,
}

/// What one batch writes, gathered before any I/O.
#[derive(Default)]
struct Batch {
    sync_data_dir: bool,
    /// Records for the active segment.
    commits: Vec<u8>,
    /// Whether any of them is a commit or an update someone waits to see flushed.
    sync_active: bool,
    committed: Vec<Pending>,
    sidecars: HashMap<u64, Vec<u8>>,
    synced_sidecars: Vec<u64>,
    updated: Vec<oneshot::Sender<Result<(), SpoolError>>>,
    removed: Vec<(QueueId, u64, bool)>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter().take(MAX_BATCH - 1));
            self.run_batch(jobs);
        }
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let mut batch = Batch::default();
        let base = self.segments.get(&self.active).map_or(0, |s| s.len);
        for job in jobs {
            self.gather(job, base, &mut batch);
        }

        let written = self.write(&batch);
        if let Err(e) = &written {
            error!(error = %e, "spool write failed; failing the batch and starting a new segment");
        }
        self.answer(batch, written.is_ok());

        if written.is_err() || self.active_len() >= SEGMENT_TARGET {
            self.rotate();
        }
    }

    fn gather(&self, job: Job, base: u64, batch: &mut Batch) {
        match job {
            Job::Commit { qid, envelope, body, keep, reply } => {
                let commit = Commit { qid, envelope: &envelope, body: &body, keep: keep.as_ref() };
                let body = encode_commit(&commit, base, self.active, batch);
                batch.committed.push(Pending { qid, envelope, body, keep, reply });
                batch.sync_active = true;
            }
            Job::Update { qid, segment, update, reply } => {
                let payload = [&qid.raw().to_le_bytes()[..], &update];
                let durable = reply.is_some();
                if segment == self.active {
                    record::encode(Kind::Update, &payload, &mut batch.commits);
                    batch.sync_active |= durable;
                } else {
                    let out = batch.sidecars.entry(segment).or_default();
                    record::encode(Kind::Update, &payload, out);
                    if durable && !batch.synced_sidecars.contains(&segment) {
                        batch.synced_sidecars.push(segment);
                    }
                }
                batch.updated.extend(reply);
            }
            Job::Remove { qid, segment, body_file } => {
                let out = if segment == self.active {
                    &mut batch.commits
                } else {
                    batch.sidecars.entry(segment).or_default()
                };
                record::encode(Kind::Done, &[&qid.raw().to_le_bytes()], out);
                batch.removed.push((qid, segment, body_file));
            }
        }
    }

    fn write(&mut self, batch: &Batch) -> io::Result<()> {
        if batch.sync_data_dir {
            sync_dir(&self.root.join("data"))?;
        }

        if !batch.commits.is_empty() {
            let active = self.segment(self.active)?;
            active.make_room(batch.commits.len() as u64)?;
            active.file.write_all_at(&batch.commits, active.len)?;
            active.len += batch.commits.len() as u64;
            if batch.sync_active {
                active.file.sync_data()?;
            }
        }

        for (&id, bytes) in &batch.sidecars {
            let segment = self.segment(id)?;
            segment.sidecar.write_all(bytes)?;
            if batch.synced_sidecars.contains(&id) {
                segment.sidecar.sync_data()?;
            }
        }
        Ok(())
    }

    fn answer(&mut self, batch: Batch, ok: bool) {
        for Pending { qid, envelope, body, keep, reply } in batch.committed {
            if let (true, Some(keep)) = (ok, &keep) {
                self.keep_copy(qid, keep);
            }
            let result = if ok {
                if let Some(segment) = self.segments.get_mut(&self.active) {
                    segment.live += 1;
                }
                Ok(Stored { qid, segment: self.active, envelope, body, updates: Vec::new() })
            } else {
                Err(failed())
            };
            let _ = reply.send(result);
        }

        for reply in batch.updated {
            let _ = reply.send(if ok { Ok(()) } else { Err(failed()) });
        }

        for (qid, segment, body_file) in batch.removed {
            if body_file {
                let _ = fs::remove_file(self.root.join("data").join(qid.to_string()));
            }
            self.forget_one(segment);
        }
    }

    /// One message of `id` is gone; delete the segment once it holds none and is not the
    /// one being appended to.
    fn forget_one(&mut self, id: u64) {
        let Some(segment) = self.segments.get_mut(&id) else {
            return;
        };
        segment.live = segment.live.saturating_sub(1);
        if segment.live == 0 && id != self.active {
            self.delete_segment(id);
        }
    }

    /// The lazily flushed copy of a kept fact; see the `keep` module.
    fn keep_copy(&mut self, qid: QueueId, keep: &Keep) {
        if let Err(e) = self.keep.append(qid, keep) {
            warn!(error = %e, "cannot copy a kept fact; its segment will be kept instead");
            self.keep_failed = true;
        }
    }

    fn delete_segment(&mut self, id: u64) {
        // The segment holds kept facts of its messages; their copies must be on disk first.
        if self.keep_failed || self.keep.flush().is_err() {
            warn!(segment = id, "kept facts are not safely copied; not deleting the segment");
            return;
        }
        self.expire_keep_files();
        self.segments.remove(&id);
        // Segment first: a sidecar without its segment is an orphan recovery removes.
        let _ = fs::remove_file(segment_path(&self.log_dir, id));
        let _ = fs::remove_file(sidecar_path(&self.log_dir, id));
    }

    fn expire_keep_files(&mut self) {
        let now = unix_now();
        if now / 86_400 != self.expired_day {
            self.expired_day = now / 86_400;
            self.keep.expire(now);
        }
    }

    fn rotate(&mut self) {
        let old = self.active;
        if let Err(e) = self.start_segment() {
            // Keep appending to the old segment; the next batch will try again.
            error!(error = %e, "cannot start a new spool segment");
            return;
        }
        if self.segments.get(&old).is_some_and(|s| s.live == 0) {
            self.delete_segment(old);
        }
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.active + 1;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(segment_path(&self.log_dir, id))?;
        let sidecar_file = sidecar_path(&self.log_dir, id);
        let sidecar = OpenOptions::new().append(true).create_new(true).open(sidecar_file)?;
        let mut segment = Segment { file, sidecar, len: 0, allocated: 0, live: 0 };
        segment.make_room(1)?;
        sync_dir(&self.log_dir)?;

        self.segments.insert(id, segment);
        self.active = id;
        Ok(())
    }

    fn segment(&mut self, id: u64) -> io::Result<&mut Segment> {
        self.segments.get_mut(&id).ok_or_else(|| {
            warn!(segment = id, "write for a segment that is not open");
            io::Error::new(io::ErrorKind::NotFound, format!("segment {id:x} is not open"))
        })
    }

    fn active_len(&self) -> u64 {
        self.segments.get(&self.active).map_or(0, |s| s.len)
    }
}

/// A commit job's parts, borrowed for encoding.
struct Commit<'a> {
    qid: QueueId,
    envelope: &'a [u8],
    body: &'a Body,
    keep: Option<&'a Keep>,
}

/// Zeros written ahead of the records, so that a commit overwrites blocks that already
/// exist: its fdatasync then has data to flush but no file size or block map to update,
/// which measured here is ~0.18 ms instead of ~0.29 ms for one writer. Recovery reads the
/// zeros as the end of the records (no record starts with a zero byte).
const PREALLOCATE: u64 = 8 * 1024 * 1024;

impl Segment {
    /// Makes sure `n` more bytes fit below `allocated`, extending the file with zeros
    /// (and flushing that once) when they do not.
    fn make_room(&mut self, n: u64) -> io::Result<()> {
        if self.len + n <= self.allocated {
            return Ok(());
        }
        let target = (self.len + n).max(self.allocated) + PREALLOCATE;
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = self.allocated;
        while at < target {
            let chunk = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..chunk], at)?;
            at += chunk as u64;
        }
        self.file.sync_data()?;
        self.allocated = target;
        Ok(())
    }
}

/// Appends a commit record to the batch; returns where its body will be readable.
fn encode_commit(commit: &Commit, base: u64, segment: u64, batch: &mut Batch) -> BodyRef {
    let mut head = Vec::with_capacity(commit.envelope.len() + 64);
    head.extend_from_slice(&commit.qid.raw().to_le_bytes());
    head.push(match commit.body {
        Body::Inline(_) => BODY_INLINE,
        Body::File { .. } => BODY_FILE,
    });
    record::put_bytes(&mut head, commit.envelope);
    match commit.keep {
        Some(fact) => {
            head.push(1);
            keep::encode_payload(commit.qid, fact, &mut head);
        }
        None => head.push(0),
    }

    match commit.body {
        Body::Inline(bytes) => {
            let payload_at = record::encode(Kind::Commit, &[&head, bytes], &mut batch.commits);
            let offset = base + (payload_at + head.len()) as u64;
            BodyRef::Inline { segment, offset, len: bytes.len() as u64 }
        }
        &Body::File { len } => {
            head.extend_from_slice(&len.to_le_bytes());
            record::encode(Kind::Commit, &[&head], &mut batch.commits);
            batch.sync_data_dir = true;
            BodyRef::File { qid: commit.qid, len }
        }
    }
}

fn failed() -> SpoolError {
    SpoolError::Io(io::Error::other("the spool write for this batch failed"))
}
