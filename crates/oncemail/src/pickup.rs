//! pickup: queues what `sendmail` left in the maildrop (Postfix's maildrop model).
//!
//! # The maildrop
//!
//! `<data_dir>/maildrop/`, mode 1733 (like `/tmp`, but not listable): any local user may
//! leave a message there, nobody but the server can see the others'. `sendmail` writes
//! `<name>.tmp`, fsyncs it, renames it to `<name>.msg` and fsyncs the directory, so a
//! `.msg` file is always complete. Its format ([`DropHeader`]) is one JSON line (format
//! tag, envelope sender, recipients), then the message with CRLF line endings.
//!
//! # What pickup guarantees
//!
//! - A `.msg` file is committed to the spool exactly as receive commits an SMTP message
//!   (envelope with a `Received: by <host> (oncemail, from userid N) with local id <QID>`
//!   field, content hash, body inline or in its own file), handed to the queue, and only
//!   then deleted. A file whose commit fails stays and is tried again at the next scan.
//! - Once: the file's name is kept in the duplicate index inside the commit record (a
//!   transaction ID of its own kind, the way RFC 1845 IDs are kept). If the server dies
//!   after the commit and before the delete, the next scan finds the name, knows the
//!   message is queued, and only deletes the file. XXX: with `dedupe.window = "0s"`
//!   nothing is kept, and that crash queues the message twice.
//! - The file's owner (from the file system, not from the file) is logged and named in
//!   the `Received:` field.
//!
//! # Errors
//!
//! A file that is not a plain regular file with one link (a symlink, FIFO or hard link
//! planted by a local user), that does not parse, or whose content has a bare CR or LF is
//! moved to `maildrop/quarantine/` with an `error` line; nothing is deleted unread. A
//! recipient the server's configuration cannot route (sendmail checked it with the
//! configuration it read; the two can differ) is dropped with a `failed` line, and a file
//! with no routable recipient left is quarantined. TODO: report such recipients to the
//! sender instead of only logging them.
//!
//! # When
//!
//! At start, every [`POLL`] seconds, and when `sendmail` asks over the admin socket.
//! `.tmp` files untouched for a day (a `sendmail` that died) are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smtp_wire::address::{ForwardPath, Mailbox};
use smtp_wire::data::BareEolScanner;
use spool::{Body, QueueId};
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::Context;
use crate::dedupe::Fingerprint;
use crate::envelope::{Envelope, Recipient, Route};
use crate::{maillog, routing};

/// The maildrop's name under the data directory.
pub const DIR: &str = "maildrop";
/// The format tag of the first line of a maildrop file.
pub const FORMAT: &str = "oncemail-maildrop/1";
/// How often the maildrop is looked at when nobody asks.
pub const POLL: Duration = Duration::from_secs(5);
/// Bodies up to this size are committed inline, as receive does.
const INLINE_MAX: u64 = 64 * 1024;
/// Longest first line: a thousand recipients of 256 octets fit.
const MAX_HEADER_LINE: u64 = 512 * 1024;
/// A `.tmp` file untouched this long belongs to a `sendmail` that died.
const STALE_TMP: Duration = Duration::from_secs(86_400);

/// The first line of a maildrop file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// Addresses in SMTP form, each with a domain.
    pub recipients: Vec<String>,
}

/// The maildrop directory of a data directory.
pub fn maildrop_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// Creates the maildrop, writable by every local user but listable by none, if it is
/// missing. An existing one keeps its mode: the operator may have narrowed it.
pub fn create_maildrop(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = maildrop_dir(data_dir);
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(data_dir)?;
    match fs::DirBuilder::new().mode(0o1733).create(&dir) {
        Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o1733))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

/// Looks at the maildrop at start, every [`POLL`], and whenever `wake` is notified, until
/// shutdown. The server creates the maildrop ([`create_maildrop`]) before it listens.
pub async fn run(ctx: Arc<Context>, wake: Arc<Notify>) {
    let dir = maildrop_dir(&ctx.config.data_dir);
    loop {
        scan(&ctx, &dir).await;
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = wake.notified() => {}
            () = ctx.shutdown.cancelled() => return,
        }
    }
}

async fn scan(ctx: &Arc<Context>, dir: &Path) {
    let listing = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || ready_files(&dir)).await
    };
    let names = match listing {
        Ok(Ok(names)) => names,
        Ok(Err(e)) => {
            warn!(dir = %dir.display(), error = %e, "cannot read the maildrop");
            return;
        }
        Err(_) => return,
    };
    for name in names {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        pick_up(ctx, dir, &name).await;
    }
}

/// The `.msg` files, oldest name first; removes abandoned `.tmp` files on the way.
fn ready_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".msg") {
            names.push(name);
        } else if name.ends_with(".tmp") && is_stale(&entry) {
            warn!(file = %name, "removing a maildrop file sendmail never finished");
            let _ = fs::remove_file(entry.path());
        }
    }
    names.sort();
    Ok(names)
}

fn is_stale(entry: &fs::DirEntry) -> bool {
    let modified = entry.metadata().and_then(|m| m.modified());
    let age = modified.ok().and_then(|m| SystemTime::now().duration_since(m).ok());
    age.is_some_and(|age| age > STALE_TMP)
}

/// Why a maildrop file was not queued.
enum Problem {
    /// Never will be: move it aside.
    Bad(String),
    /// Might be next time: leave it.
    Io(io::Error),
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Problem {
        Problem::Io(e)
    }
}

/// A maildrop file read and its body made ready for the commit.
struct Loaded {
    header: DropHeader,
    uid: u32,
    body: Body,
    len: u64,
    sha256: String,
    eight_bit: bool,
}

async fn pick_up(ctx: &Arc<Context>, dir: &Path, name: &str) {
    let path = dir.join(name);
    let key = drop_key(name);
    let now = chrono::Utc::now().timestamp();

    // Committed before a crash that left the file behind: only the delete is missing.
    if let Some(done) = ctx.dedupe.completed(&key, now) {
        warn!(queue_id = %done.qid, file = name, "maildrop file was already queued; removed");
        remove(&path, dir);
        return;
    }

    let qid = QueueId::generate();
    let loaded = {
        let (spool, path) = (ctx.spool.clone(), path.clone());
        tokio::task::spawn_blocking(move || load(&spool, qid, &path)).await
    };
    let loaded = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(Problem::Bad(reason))) => return quarantine(dir, name, &reason),
        Ok(Err(Problem::Io(e))) => {
            error!(file = name, error = %e, "cannot read a maildrop file; will retry");
            return;
        }
        Err(_) => return,
    };

    let recipients = route_all(ctx, qid, &loaded.header.recipients);
    if recipients.is_empty() {
        ctx.spool.discard_body_file(qid);
        return quarantine(dir, name, "no recipient can be routed");
    }
    if commit(ctx, qid, key, loaded, recipients, name).await {
        remove(&path, dir);
    }
}

/// Commits and queues the message; false if it must be tried again later.
async fn commit(
    ctx: &Context,
    qid: QueueId,
    key: Fingerprint,
    loaded: Loaded,
    recipients: Vec<Recipient>,
    name: &str,
) -> bool {
    let now = chrono::Utc::now();
    let envelope = envelope(ctx, qid, &loaded, recipients, now);
    let transid = Some((key, loaded.len));
    let claim = match ctx.dedupe.enabled() {
        true => Some(ctx.dedupe.claim(qid, &[], now.timestamp()).await),
        false => None,
    };
    let keep = claim.as_ref().and_then(|c| ctx.dedupe.keep_for(c, transid, now.timestamp()));

    let committed = ctx.spool.commit(qid, envelope.encode(), loaded.body, keep).await;
    let stored = match committed {
        Ok(stored) => stored,
        Err(e) => {
            error!(file = name, error = %e, "cannot commit a maildrop message; will retry");
            if let Some(claim) = claim {
                ctx.dedupe.release(claim);
            }
            ctx.spool.discard_body_file(qid);
            return false;
        }
    };
    if let Some(claim) = claim {
        ctx.dedupe.confirm(claim, transid, qid, now.timestamp());
    }

    let (from, count) = (envelope.sender.as_str(), envelope.recipients.len());
    maillog::picked_up(qid, loaded.uid, from, count, loaded.len, name);
    ctx.queue.submit(stored, envelope);
    true
}

fn envelope(
    ctx: &Context,
    qid: QueueId,
    loaded: &Loaded,
    recipients: Vec<Recipient>,
    now: chrono::DateTime<chrono::Utc>,
) -> Envelope {
    let received =
        crate::receive::received::local(&ctx.config.hostname, Some(loaded.uid), qid, now);
    let sender = loaded.header.sender.clone();
    let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
    Envelope {
        arrival: now.timestamp(),
        sender,
        recipients,
        received,
        size: loaded.len,
        smtputf8,
        eight_bit: loaded.eight_bit,
        content_sha256: loaded.sha256.clone(),
    }
}

/// Routes every recipient as a relaying client's would be (local submission may relay);
/// logs and drops those that cannot be, and repeats.
fn route_all(ctx: &Context, qid: QueueId, addresses: &[String]) -> Vec<Recipient> {
    let mut recipients: Vec<Recipient> = Vec::new();
    for address in addresses {
        let routed = address
            .parse::<Mailbox>()
            .map_err(|e| format!("5.1.3 {}", e.reason()))
            .and_then(|mailbox| {
                let to = ForwardPath::Mailbox(mailbox);
                routing::route(&ctx.config.local, true, &to)
                    .map_err(|reply| format!("{} {}", reply.status, reply.text))
            });
        match routed {
            Ok(route) if !recipients.iter().any(|r| same_destination(r, &route, address)) => {
                recipients.push(Recipient { address: address.clone(), route });
            }
            Ok(_) => {}
            Err(reason) => {
                let (status, text) = reason.split_once(' ').unwrap_or(("5.1.1", &reason));
                maillog::failed(qid, address, "local", status, &format!("{text}; dropped"));
            }
        }
    }
    recipients
}

fn same_destination(existing: &Recipient, route: &Route, address: &str) -> bool {
    match route {
        Route::Local { .. } => existing.route == *route,
        Route::Remote { .. } => existing.address.eq_ignore_ascii_case(address),
    }
}

/// The duplicate-index key of a maildrop file name; its own kind, so that no SMTP
/// fingerprint or TRANSID can ever equal it.
fn drop_key(name: &str) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in ["maildrop", name] {
        hasher.update((part.len() as u32).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&hasher.finalize()[..16]);
    key
}

/// Opens a maildrop file safely, reads its header line, and copies its message into
/// memory or into the spool's body file for `qid` (fdatasync'd), checking it on the way.
fn load(spool: &spool::Spool, qid: QueueId, path: &Path) -> Result<Loaded, Problem> {
    let (file, uid, file_len) = open_plain(path)?;
    let mut reader = BufReader::new(file);

    let mut line = Vec::new();
    reader.by_ref().take(MAX_HEADER_LINE).read_until(b'\n', &mut line)?;
    let header = parse_header(&line).map_err(Problem::Bad)?;
    let len = file_len.saturating_sub(line.len() as u64);

    let mut copy = Copy::new();
    let body = match len <= INLINE_MAX {
        true => {
            let mut inline = Vec::with_capacity(len as usize);
            copy.run(&mut reader, &mut inline)?;
            Body::Inline(inline)
        }
        false => {
            let mut out = spool.create_body_file(qid)?;
            let copied = copy.run(&mut reader, &mut out).and_then(|()| out.sync_data());
            if let Err(e) = copied {
                spool.discard_body_file(qid);
                return Err(Problem::Io(e));
            }
            Body::File { len }
        }
    };

    if let Err(reason) = copy.verdict(len) {
        spool.discard_body_file(qid);
        return Err(Problem::Bad(reason));
    }
    Ok(Loaded { header, uid, body, len, sha256: copy.sha256(), eight_bit: copy.eight_bit })
}

/// Opens `path` only if it is a regular file with one link, without following a symlink
/// or blocking on a FIFO; returns it with its owner and size.
fn open_plain(path: &Path) -> Result<(File, u32, u64), Problem> {
    let opened =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Problem::Bad("a symbolic link".into()));
        }
        Err(e) => return Err(Problem::Io(e)),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(Problem::Bad("not a regular file with a single link".into()));
    }
    Ok((file, meta.uid(), meta.len()))
}

fn parse_header(line: &[u8]) -> Result<DropHeader, String> {
    if !line.ends_with(b"\n") {
        return Err("no complete first line".into());
    }
    let header: DropHeader =
        serde_json::from_slice(line).map_err(|e| format!("unreadable first line: {e}"))?;
    if header.format != FORMAT {
        return Err(format!("unknown format {:?}", header.format));
    }
    if header.recipients.is_empty() {
        return Err("no recipients".into());
    }
    Ok(header)
}

/// Copies the message while hashing it and checking its line endings.
struct Copy {
    hasher: Sha256,
    scanner: BareEolScanner,
    copied: u64,
    eight_bit: bool,
    last: Option<u8>,
}

impl Copy {
    fn new() -> Copy {
        let (hasher, scanner) = (Sha256::new(), BareEolScanner::new());
        Copy { hasher, scanner, copied: 0, eight_bit: false, last: None }
    }

    fn run(&mut self, from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let chunk = &buf[..n];
            self.hasher.update(chunk);
            self.scanner.scan(chunk);
            self.eight_bit |= chunk.iter().any(|&b| b >= 0x80);
            self.last = chunk.last().copied();
            self.copied += n as u64;
            to.write_all(chunk)?;
        }
    }

    /// Whether what was copied is a whole message sendmail could have written.
    fn verdict(&mut self, expected: u64) -> Result<(), String> {
        if self.copied != expected {
            return Err(format!("{} bytes where {expected} were expected", self.copied));
        }
        if self.scanner.finish() {
            return Err("a bare CR or LF in the message".into());
        }
        if self.copied > 0 && self.last != Some(b'\n') {
            return Err("the message does not end with a line break".into());
        }
        Ok(())
    }

    fn sha256(&mut self) -> String {
        let digest = std::mem::take(&mut self.hasher).finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn remove(path: &Path, dir: &Path) {
    if let Err(e) = fs::remove_file(path) {
        error!(file = %path.display(), error = %e, "cannot remove a queued maildrop file");
        return;
    }
    // Not strictly needed: if the removal is lost, the duplicate index recognises the file.
    let _ = spool::sync_dir(dir);
}

/// Moves a file that will never be queued out of the way, for the operator to inspect.
fn quarantine(dir: &Path, name: &str, reason: &str) {
    let aside = dir.join("quarantine");
    let moved = fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&aside)
        .and_then(|()| fs::rename(dir.join(name), aside.join(name)));
    match moved {
        Ok(()) => error!(file = name, reason, "maildrop file not queued; moved to quarantine"),
        Err(e) => error!(file = name, reason, error = %e, "maildrop file not queued nor moved"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_line(json: &str) -> Vec<u8> {
        format!("{json}\n").into_bytes()
    }

    #[test]
    fn the_header_line_is_checked() {
        let good = r#"{"format":"oncemail-maildrop/1","sender":"","recipients":["a@b.test"]}"#;
        assert_eq!(parse_header(&header_line(good)).unwrap().recipients, ["a@b.test"]);
        let bad = [
            r#"{"format":"other/1","sender":"","recipients":["a@b.test"]}"#,
            r#"{"format":"oncemail-maildrop/1","sender":"","recipients":[]}"#,
            r#"{"format":"oncemail-maildrop/1","sender":"","recipients":["a"],"x":1}"#,
            "root:x:0:0:root:/root:/bin/bash",
        ];
        for json in bad {
            assert!(parse_header(&header_line(json)).is_err(), "{json}");
        }
        assert!(parse_header(good.as_bytes()).is_err(), "a line without its LF");
    }

    #[test]
    fn the_copy_refuses_bare_line_endings_and_short_files() {
        let check = |message: &[u8], expected: u64| {
            let mut copy = Copy::new();
            copy.run(&mut &message[..], &mut Vec::new()).unwrap();
            copy.verdict(expected)
        };
        assert!(check(b"Subject: x\r\n\r\nbody\r\n", 20).is_ok());
        assert!(check(b"Subject: x\n\nbody\n", 17).is_err());
        assert!(check(b"Subject: x\r\n\r\nbo\rdy\r\n", 22).is_err());
        assert!(check(b"Subject: x\r\n\r\nbody", 18).is_err());
        assert!(check(b"Subject: x\r\n", 20).is_err());
    }

    #[test]
    fn files_planted_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        fs::write(&target, "x").unwrap();
        let link = dir.path().join("a.msg");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(open_plain(&link), Err(Problem::Bad(_))));
        let hard = dir.path().join("b.msg");
        fs::hard_link(&target, &hard).unwrap();
        assert!(matches!(open_plain(&hard), Err(Problem::Bad(_))));
    }

    #[test]
    fn keys_of_different_files_differ() {
        assert_ne!(drop_key("1.msg"), drop_key("2.msg"));
        assert_eq!(drop_key("1.msg"), drop_key("1.msg"));
    }
}
