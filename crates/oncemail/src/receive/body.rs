//! Where a message body goes while it arrives: memory first, then its own spool file.
//!
//! Bodies up to [`INLINE_MAX`] stay in memory and are written inline with the commit
//! record (one write, one shared fdatasync). A larger body spills to `data/<queue id>` as
//! soon as it crosses the threshold, so a session never holds more than `INLINE_MAX` plus
//! one read of a body in memory (I6). Past the size limit the sink stops storing and only
//! counts, so the session can read to the end of the data and answer `552`.
//!
//! The SHA-256 of the content is computed as it streams in, for duplicate suppression.

use std::fs::File;
use std::io::{self, Write};

use sha2::{Digest, Sha256};
use spool::{Body, QueueId, Spool};

use super::headers::HeaderScan;

/// Largest body kept in memory until the commit.
pub const INLINE_MAX: usize = 64 * 1024;

pub struct BodySink {
    spool: Spool,
    qid: QueueId,
    inline: Vec<u8>,
    file: Option<File>,
    len: u64,
    max: u64,
    hasher: Sha256,
    headers: HeaderScan,
    /// The first write error; the transaction answers 451 at its end.
    failed: Option<io::Error>,
}

/// A body ready to commit.
pub struct Finished {
    pub qid: QueueId,
    pub body: Body,
    /// Set when the body is in a file that still needs its fdatasync.
    pub file: Option<File>,
    pub len: u64,
    pub sha256: String,
    /// `Received:` fields in the header section.
    pub hops: usize,
    pub eight_bit: bool,
}

impl BodySink {
    pub fn new(spool: &Spool, max: u64) -> BodySink {
        BodySink {
            spool: spool.clone(),
            qid: QueueId::generate(),
            inline: Vec::new(),
            file: None,
            len: 0,
            max,
            hasher: Sha256::new(),
            headers: HeaderScan::default(),
            failed: None,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.len > self.max || self.failed.is_some() {
            self.drop_storage();
            return;
        }
        self.hasher.update(bytes);
        self.headers.feed(bytes);

        // XXX: the file write blocks this task briefly; it goes to the page cache, and the
        // slow part (fdatasync) runs on the blocking pool at commit time.
        let result = match &mut self.file {
            Some(file) => file.write_all(bytes),
            None if self.inline.len() + bytes.len() <= INLINE_MAX => {
                self.inline.extend_from_slice(bytes);
                Ok(())
            }
            None => self.spill(bytes),
        };
        if let Err(e) = result {
            self.failed = Some(e);
            self.drop_storage();
        }
    }

    /// The queue ID the message will have if it is committed.
    pub fn qid(&self) -> QueueId {
        self.qid
    }

    pub fn too_big(&self) -> bool {
        self.len > self.max
    }

    /// Hands over the body for commit, or the write error that spoiled it.
    pub fn finish(mut self) -> io::Result<Finished> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        let (body, file) = match self.file.take() {
            Some(file) => (Body::File { len: self.len }, Some(file)),
            None => (Body::Inline(std::mem::take(&mut self.inline)), None),
        };
        // Taking the file out makes it the commit's: Drop no longer removes it.
        let (hops, eight_bit) = (self.headers.received(), self.headers.eight_bit());
        Ok(Finished { qid: self.qid, body, file, len: self.len, sha256, hops, eight_bit })
    }

    fn spill(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.spool.create_body_file(self.qid)?;
        file.write_all(&self.inline)?;
        file.write_all(bytes)?;
        self.inline = Vec::new();
        self.file = Some(file);
        Ok(())
    }

    fn drop_storage(&mut self) {
        self.inline = Vec::new();
        if self.file.take().is_some() {
            self.spool.discard_body_file(self.qid);
        }
    }
}

impl Drop for BodySink {
    /// A transaction that ends without a commit leaves no body file behind.
    fn drop(&mut self) {
        if self.file.is_some() {
            self.spool.discard_body_file(self.qid);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
