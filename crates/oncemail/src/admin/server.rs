//! The server side of the admin socket: one request per connection, answered from the
//! queue's registry and the spool.
//!
//! Orders (hold, release, delete, bounce) go to the message's task through
//! [`Queue::control`](crate::queue::Queue::control), which logs them with who asked. The
//! answer waits up to [`EFFECT_WAIT`] for the order to show (held, released, gone), so that
//! `queue hold ID` returns once the message is on hold. A message in the middle of a
//! delivery attempt obeys when the attempt ends; if that takes longer, the answer says the
//! order was handed over.
//!
//! Errors: a request that cannot be read, a queue ID that is not in the queue, or a peer
//! that is neither root nor the server's user get a [`Response::Error`]; nothing here
//! takes the server down.

use std::io::{self, BufRead, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{Listed, Request, Response};
use crate::Context;
use crate::envelope::{Envelope, Route};
use crate::queue::Control;

/// How long an answer waits for an order to take effect.
const EFFECT_WAIT: Duration = Duration::from_secs(10);
/// Longest request line; real ones are under 100 bytes.
const MAX_REQUEST: u64 = 4096;
/// A client that says nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest header section `queue show` sends without `--body`.
const MAX_HEADERS: u64 = 1024 * 1024;

/// Creates the socket at `path`, replacing a stale one from an earlier run. The caller
/// holds the spool lock, so no other server can be using it.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the old socket {}", path.display()))?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket; not replacing it", path.display()),
        Err(_) => {}
    }

    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    // Between bind and chmod the socket has the umask's mode; the peer check below
    // refuses strangers who connect in that instant.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(listener)
}

/// Answers requests until shutdown. `pickup` wakes the maildrop pickup.
pub async fn serve(ctx: Arc<Context>, listener: UnixListener, pickup: Arc<Notify>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ctx.shutdown.cancelled() => return,
        };
        match stream {
            Ok((stream, _)) => {
                let (ctx, pickup) = (ctx.clone(), pickup.clone());
                tokio::spawn(async move { answer(&ctx, stream, &pickup).await });
            }
            Err(e) => {
                warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What follows a response line.
enum Content {
    None,
    Bytes(Vec<u8>),
    File(tokio::io::Take<tokio::fs::File>),
}

async fn answer(ctx: &Context, stream: UnixStream, pickup: &Notify) {
    let peer = Peer::of(&stream);
    let (read, mut write) = stream.into_split();

    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(read)).await;
    let (response, content) = match request {
        Ok(Ok(request)) if peer.may(&request) => handle(ctx, request, &peer.who, pickup).await,
        Ok(Ok(_)) => (error(format!("permission denied for {}", peer.who)), Content::None),
        Ok(Err(e)) => (error(format!("bad request: {e}")), Content::None),
        Err(_) => return,
    };

    // A client that went away is no concern of the server's.
    let _ = send(&mut write, &response, content).await;
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> io::Result<Request> {
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
    content: Content,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(response)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    match content {
        Content::None => {}
        Content::Bytes(bytes) => write.write_all(&bytes).await?,
        Content::File(mut file) => {
            tokio::io::copy(&mut file, write).await?;
        }
    }
    write.shutdown().await
}

/// The peer's credentials, for the permission check and the log.
struct Peer {
    uid: Option<u32>,
    who: String,
}

impl Peer {
    fn of(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(cred) => {
                let pid = cred.pid().map(|p| format!(" pid={p}")).unwrap_or_default();
                Peer { uid: Some(cred.uid()), who: format!("uid={}{pid}", cred.uid()) }
            }
            Err(_) => Peer { uid: None, who: "unknown peer".into() },
        }
    }

    /// Root and the server's own user may do anything; others only ask for a pickup.
    fn may(&self, request: &Request) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own = unsafe { libc::geteuid() };
        matches!(request, Request::Pickup) || self.uid.is_some_and(|u| u == 0 || u == own)
    }
}

fn error(message: String) -> Response {
    Response::Error { message }
}

fn done(text: String) -> (Response, Content) {
    (Response::Done { text }, Content::None)
}

async fn handle(
    ctx: &Context,
    request: Request,
    who: &str,
    pickup: &Notify,
) -> (Response, Content) {
    debug!(request = ?request, by = who, "admin request");
    match request {
        Request::List => {
            let messages = ctx.queue.list().into_iter().map(Listed::from).collect();
            (Response::List { messages }, Content::None)
        }
        Request::Show { id, body } => match show(ctx, &id, body).await {
            Ok(shown) => shown,
            Err(message) => (error(message), Content::None),
        },
        Request::Flush { id: None } => {
            let asked = ctx.queue.flush_all(who);
            done(format!("asked {asked} message(s) to try delivery now"))
        }
        Request::Flush { id: Some(id) } => order(ctx, &id, Control::Flush, who).await,
        Request::Hold { id } => order(ctx, &id, Control::Hold, who).await,
        Request::Release { id } => order(ctx, &id, Control::Release, who).await,
        Request::Delete { id } => order(ctx, &id, Control::Delete, who).await,
        Request::Bounce { id } => order(ctx, &id, Control::Bounce, who).await,
        Request::Pickup => {
            pickup.notify_one();
            done("looking at the maildrop".into())
        }
    }
}

/// Hands `control` to a message's task, then waits a little for it to show.
async fn order(ctx: &Context, id: &str, control: Control, who: &str) -> (Response, Content) {
    let Some((info, _)) = ctx.queue.get(id) else {
        return (error(format!("no message {id} in the queue")), Content::None);
    };
    // Orders that would change nothing are not sent: a release of a message that is not
    // held would otherwise count as a flush, and a flush of a held one would claim an
    // attempt that does not happen.
    match (control, info.state == "held") {
        (Control::Hold, true) => return done(format!("{id} is already on hold")),
        (Control::Release, false) => return done(format!("{id} is not on hold; nothing done")),
        (Control::Flush, true) => return done(format!("{id} is on hold; release it to retry")),
        _ => {}
    }
    if let Err(e) = ctx.queue.control(id, control, who) {
        return (error(e.to_string()), Content::None);
    }

    let took_effect = |state: Option<&str>| match control {
        Control::Flush => true,
        Control::Hold => state.is_none_or(|s| s == "held"),
        Control::Release => state != Some("held"),
        Control::Delete | Control::Bounce => state.is_none(),
    };
    let deadline = Instant::now() + EFFECT_WAIT;
    while !took_effect(ctx.queue.get(id).map(|(info, _)| info.state)) {
        if Instant::now() >= deadline {
            return done(format!(
                "{id}: {} handed over; it takes effect when the current delivery attempt ends",
                control.name()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done(match control {
        Control::Flush => format!("{id}: delivery is being tried now"),
        Control::Hold => format!("{id} is on hold"),
        Control::Release => format!("{id} released"),
        Control::Delete => format!("{id} deleted (no report to the sender)"),
        Control::Bounce => format!("{id} returned to its sender"),
    })
}

async fn show(ctx: &Context, id: &str, whole: bool) -> Result<(Response, Content), String> {
    let (info, stored) =
        ctx.queue.get(id).ok_or_else(|| format!("no message {id} in the queue"))?;
    let envelope = Envelope::decode(&stored.envelope)
        .map_err(|e| format!("{id}: unreadable envelope: {e}"))?;
    let routes = envelope.recipients.iter().map(|r| describe(&r.route)).collect();

    let len = stored.body.len();
    let spool = ctx.spool.clone();
    let body = stored.body.clone();
    let opened = tokio::task::spawn_blocking(move || spool.open_body(&body)).await;
    let file = match opened {
        Ok(Ok(file)) => file,
        _ => return Err(format!("{id} left the queue, or its body cannot be read")),
    };
    let content = match whole {
        true => Content::File(tokio::fs::File::from_std(file.into_inner()).take(len)),
        false => {
            let headers = tokio::task::spawn_blocking(move || header_section(file)).await;
            match headers {
                Ok(Ok(bytes)) => Content::Bytes(bytes),
                _ => return Err(format!("{id}: cannot read its header section")),
            }
        }
    };

    let content_len = match &content {
        Content::Bytes(bytes) => bytes.len() as u64,
        _ => len,
    };
    let message = Listed::from(info);
    let received = envelope.received;
    Ok((Response::Show { message, routes, received, whole, content_len }, content))
}

/// The header section: every line up to the first empty one (which is left out).
fn header_section(file: impl Read) -> io::Result<Vec<u8>> {
    let mut reader = io::BufReader::new(file.take(MAX_HEADERS));
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line == b"\r\n" || line == b"\n" {
            return Ok(out);
        }
        out.extend_from_slice(&line);
    }
}

fn describe(route: &Route) -> String {
    match route {
        Route::Local { domain, mailbox } => format!("local {domain}/{mailbox}"),
        Route::Remote { domain } => format!("remote {domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_section_stops_at_the_empty_line() {
        let message = b"From: a\r\nSubject: b\r\n c\r\n\r\nbody\r\n".as_slice();
        assert_eq!(header_section(message).unwrap(), b"From: a\r\nSubject: b\r\n c\r\n");
        assert_eq!(header_section(b"X: only\r\n".as_slice()).unwrap(), b"X: only\r\n");
    }
}
