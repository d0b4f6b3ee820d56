//! Recovery: rebuild the list of live messages from the segments and their sidecars.
//!
//! Runs once, in [`crate::Spool::open`], before the writer starts. A segment's records are
//! read up to the first unreadable one (the torn tail of an unacknowledged write). A
//! message is live when its commit record is readable and its sidecar has no removal for
//! it. Segments without live messages, sidecars without segments, and body files no live
//! message refers to are deleted here.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use tracing::{info, warn};

use crate::keep::{self, KeepFiles, Kept};
use crate::record::{self, Fields, Kind};
use crate::{BodyRef, QueueId, Stored, segment_path, sidecar_path, unix_now};

/// Payload tag of a commit record whose body follows inline.
pub(crate) const BODY_INLINE: u8 = 0;
/// Payload tag of a commit record whose body is in `data/<queue id>`.
pub(crate) const BODY_FILE: u8 = 1;

pub(crate) struct Recovered {
    pub messages: Vec<Stored>,
    pub kept: Vec<Kept>,
    /// Live message count per surviving segment.
    pub live: HashMap<u64, usize>,
    /// The highest segment ID seen, so new segments get larger ones.
    pub last_segment: u64,
}

pub(crate) fn scan(root: &Path) -> io::Result<Recovered> {
    let log_dir = root.join("log");
    let segments = list_segments(&log_dir)?;
    let now = unix_now();
    let mut kept: HashMap<QueueId, Kept> = HashMap::new();
    for fact in keep::read_all(root, now)? {
        kept.insert(fact.qid, fact);
    }
    let in_keep_files: HashSet<QueueId> = kept.keys().copied().collect();
    let mut recovered = Recovered {
        messages: Vec::new(),
        kept: Vec::new(),
        live: HashMap::new(),
        last_segment: segments.iter().copied().max().unwrap_or(0),
    };

    let mut empty = Vec::new();
    for &id in &segments {
        let messages = read_segment(&log_dir, id, now, &mut kept)?;
        if messages.is_empty() {
            empty.push(id);
            continue;
        }
        recovered.live.insert(id, messages.len());
        recovered.messages.extend(messages);
    }

    // A process killed between its commit and the copy of the commit's kept fact leaves
    // that fact in its segment only. Copy such facts now, flushed, before any segment
    // (this one's empty ones now, or the writer's later) can be deleted.
    let only_in_segments = kept.values().filter(|k| !in_keep_files.contains(&k.qid));
    let mut files = KeepFiles::new(root);
    for fact in only_in_segments {
        files.append(fact.qid, &fact.keep)?;
    }
    files.flush()?;
    for id in empty {
        delete_segment(&log_dir, id);
    }

    remove_orphan_sidecars(&log_dir, &segments)?;
    remove_orphan_bodies(root, &recovered.messages)?;
    recovered.messages.sort_by_key(|m| m.qid);
    recovered.kept = kept.into_values().collect();
    recovered.kept.sort_by_key(|k| k.qid);
    if let Some(last) = recovered.messages.last() {
        QueueId::observe(last.qid);
    }
    Ok(recovered)
}

fn list_segments(log_dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(log_dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".seg")
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Live messages of one segment, with their updates applied. Kept facts of every commit
/// in it, removed or not, go to `kept`.
fn read_segment(
    log_dir: &Path,
    id: u64,
    now: i64,
    kept: &mut HashMap<QueueId, Kept>,
) -> io::Result<Vec<Stored>> {
    let path = segment_path(log_dir, id);
    let bytes = fs::read(&path)?;
    let (records, torn) = record::decode_all(&bytes);
    if let Some(torn) = torn {
        report_torn(&path, &bytes, torn.offset);
    }

    let mut messages = Vec::new();
    let mut updates: Updates = HashMap::new();
    let mut removed = HashSet::new();
    for rec in &records {
        if rec.kind != Kind::Commit {
            apply_update(rec, &mut updates, &mut removed);
            continue;
        }
        match parse_commit(id, rec.payload, rec.payload_at) {
            Some((stored, fact)) => {
                if let Some(fact) = fact.filter(|f| f.keep.expires > now) {
                    kept.insert(fact.qid, fact);
                }
                messages.push(stored);
            }
            None => warn!(path = %path.display(), "commit record with a bad payload, skipped"),
        }
    }

    // The sidecar holds what happened after the segment stopped being the active one.
    read_sidecar(log_dir, id, &mut updates, &mut removed)?;
    messages.retain(|m| !removed.contains(&m.qid));
    for message in &mut messages {
        message.updates = updates.remove(&message.qid).unwrap_or_default();
    }
    Ok(messages)
}

type Updates = HashMap<QueueId, Vec<Vec<u8>>>;

fn read_sidecar(
    log_dir: &Path,
    id: u64,
    updates: &mut Updates,
    removed: &mut HashSet<QueueId>,
) -> io::Result<()> {
    let path = sidecar_path(log_dir, id);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let (records, torn) = record::decode_all(&bytes);
    if let Some(torn) = torn {
        report_torn(&path, &bytes, torn.offset);
    }
    for rec in &records {
        apply_update(rec, updates, removed);
    }
    Ok(())
}

fn apply_update(rec: &record::Decoded, updates: &mut Updates, removed: &mut HashSet<QueueId>) {
    let mut fields = Fields::new(rec.payload);
    let Some(qid) = fields.u64().map(QueueId::from_raw) else {
        return;
    };
    match rec.kind {
        Kind::Update => updates.entry(qid).or_default().push(fields.rest().to_vec()),
        Kind::Done => {
            removed.insert(qid);
        }
        Kind::Commit | Kind::Keep => {}
    }
}

/// Commit payload: qid u64, body tag u8, envelope (length-prefixed), keep flag u8 and,
/// when set, the kept fact; then the inline body or, for a body file, its length as u64.
fn parse_commit(segment: u64, payload: &[u8], at: usize) -> Option<(Stored, Option<Kept>)> {
    let mut fields = Fields::new(payload);
    let qid = QueueId::from_raw(fields.u64()?);
    let tag = fields.u8()?;
    let envelope = fields.bytes()?.to_vec();
    let fact = match fields.u8()? {
        0 => None,
        _ => Some(keep::decode_payload(&mut fields)?),
    };

    let body = match tag {
        BODY_INLINE => {
            let body = fields.rest();
            let offset = at + (payload.len() - body.len());
            let (offset, len) = (offset as u64, body.len() as u64);
            BodyRef::Inline { segment, offset, len }
        }
        BODY_FILE => BodyRef::File { qid, len: fields.u64()? },
        _ => return None,
    };
    Some((Stored { qid, segment, envelope, body, updates: Vec::new() }, fact))
}

/// A torn tail is expected after a crash; anything readable after it is not.
fn report_torn(path: &Path, bytes: &[u8], offset: usize) {
    let rest = &bytes[offset..];
    if rest.iter().all(|&b| b == 0) || rest.len() < 64 {
        info!(path = %path.display(), offset, "ignoring the torn tail of an interrupted write");
    } else {
        warn!(
            path = %path.display(),
            offset,
            bytes = rest.len(),
            "unreadable records in the middle of a spool file; later records are ignored"
        );
    }
}

fn delete_segment(log_dir: &Path, id: u64) {
    // Segment first: a sidecar without its segment is an orphan that the next scan removes.
    let _ = fs::remove_file(segment_path(log_dir, id));
    let _ = fs::remove_file(sidecar_path(log_dir, id));
}

fn remove_orphan_sidecars(log_dir: &Path, segments: &[u64]) -> io::Result<()> {
    for entry in fs::read_dir(log_dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let Some(hex) = name.strip_suffix(".out") else {
            continue;
        };
        match u64::from_str_radix(hex, 16) {
            Ok(id) if !segments.contains(&id) => {
                let _ = fs::remove_file(sidecar_path(log_dir, id));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Body files of transactions that never committed, or of messages already removed.
fn remove_orphan_bodies(root: &Path, live: &[Stored]) -> io::Result<()> {
    let wanted: HashSet<QueueId> =
        live.iter().filter(|m| matches!(m.body, BodyRef::File { .. })).map(|m| m.qid).collect();

    for entry in fs::read_dir(root.join("data"))? {
        let entry = entry?;
        let name = entry.file_name();
        match QueueId::parse(&name.to_string_lossy()) {
            Some(qid) if wanted.contains(&qid) => {}
            Some(qid) => {
                info!(queue_id = %qid, "removing an orphan body file");
                let _ = fs::remove_file(entry.path());
            }
            None => warn!(path = %entry.path().display(), "unexpected file in the spool"),
        }
    }
    Ok(())
}
