//! Kept facts: small records that outlive their message, until an expiry time.
//!
//! The duplicate-suppression index needs the fingerprints of messages long after they
//! were delivered and removed. A commit can carry a [`Keep`]; it is durable with the
//! commit record itself (same record, same flush, nothing extra on the hot path). The
//! writer also appends a copy to `keep/<expiry day>.log`, without flushing, and flushes
//! those files before it deletes any segment: so a kept fact is always on disk in its
//! segment or, once the segment is gone, in a flushed keep file. A keep file is deleted
//! when the day it is named after has passed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::record::{self, Fields, Kind};
use crate::{QueueId, sync_dir};

const DAY: i64 = 86_400;

/// A fact to keep until `expires` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub expires: i64,
    pub data: Vec<u8>,
}

/// A kept fact found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub qid: QueueId,
    pub keep: Keep,
}

/// Encodes a kept fact as it appears inside commit records and keep files.
pub(crate) fn encode_payload(qid: QueueId, keep: &Keep, out: &mut Vec<u8>) {
    out.extend_from_slice(&qid.raw().to_le_bytes());
    out.extend_from_slice(&keep.expires.to_le_bytes());
    record::put_bytes(out, &keep.data);
}

pub(crate) fn decode_payload(fields: &mut Fields) -> Option<Kept> {
    let qid = QueueId::from_raw(fields.u64()?);
    let expires = fields.u64()? as i64;
    let data = fields.bytes()?.to_vec();
    Some(Kept { qid, keep: Keep { expires, data } })
}

/// The writer's side: appends without flushing, flushes before segments go.
pub(crate) struct KeepFiles {
    dir: PathBuf,
    open: HashMap<i64, File>,
    dirty: HashSet<i64>,
    created: bool,
}

impl KeepFiles {
    pub fn new(root: &Path) -> KeepFiles {
        KeepFiles {
            dir: root.join("keep"),
            open: HashMap::new(),
            dirty: HashSet::new(),
            created: false,
        }
    }

    pub fn append(&mut self, qid: QueueId, keep: &Keep) -> io::Result<()> {
        let day = keep.expires.div_euclid(DAY);
        let mut payload = Vec::new();
        encode_payload(qid, keep, &mut payload);
        let mut out = Vec::new();
        record::encode(Kind::Keep, &[&payload], &mut out);

        let file = match self.open.get_mut(&day) {
            Some(file) => file,
            None => {
                let file = OpenOptions::new().append(true).create(true).open(self.path(day))?;
                self.created = true;
                self.open.entry(day).or_insert(file)
            }
        };
        file.write_all(&out)?;
        self.dirty.insert(day);
        Ok(())
    }

    /// Makes every appended fact durable. Called before a segment is deleted.
    pub fn flush(&mut self) -> io::Result<()> {
        for day in self.dirty.drain() {
            if let Some(file) = self.open.get(&day) {
                file.sync_data()?;
            }
        }
        if std::mem::take(&mut self.created) {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes the files whose facts have all expired.
    pub fn expire(&mut self, now: i64) {
        let today = now.div_euclid(DAY);
        self.open.retain(|&day, _| day >= today);
        self.dirty.retain(|&day| day >= today);
        remove_expired_files(&self.dir, today);
    }

    fn path(&self, day: i64) -> PathBuf {
        self.dir.join(format!("{day}.log"))
    }
}

/// Reads every unexpired kept fact from the keep files.
pub(crate) fn read_all(root: &Path, now: i64) -> io::Result<Vec<Kept>> {
    let dir = root.join("keep");
    fs::create_dir_all(&dir)?;
    remove_expired_files(&dir, now.div_euclid(DAY));

    let mut kept = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let bytes = fs::read(&path)?;
        let (records, torn) = record::decode_all(&bytes);
        if torn.is_some() {
            warn!(path = %path.display(), "ignoring the unreadable tail of a keep file");
        }
        for rec in records.iter().filter(|r| r.kind == Kind::Keep) {
            match decode_payload(&mut Fields::new(rec.payload)) {
                Some(fact) if fact.keep.expires > now => kept.push(fact),
                Some(_) => {}
                None => warn!(path = %path.display(), "bad kept fact skipped"),
            }
        }
    }
    Ok(kept)
}

fn remove_expired_files(dir: &Path, today: i64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let day = name.to_string_lossy().strip_suffix(".log").and_then(|d| d.parse::<i64>().ok());
        if day.is_some_and(|day| day < today) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
