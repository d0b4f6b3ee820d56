//! The client side of the admin socket: connect, send one request, read the answer.
//!
//! Blocking on purpose: the callers are short-lived commands (`oncemail queue`,
//! `sendmail`) that need no runtime. Every read and write has a timeout, so a server that
//! hangs cannot hang a cron job's `sendmail`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("oncemail is not running (nothing listens on {0})")]
    NotRunning(PathBuf),
    #[error("cannot talk to oncemail on {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("oncemail answered something unreadable: {0}")]
    Protocol(String),
}

/// An answer, and the stream the bytes after it (if any) are read from.
pub struct Answer {
    pub response: Response,
    reader: BufReader<UnixStream>,
}

impl Answer {
    /// The `len` raw bytes that follow a [`Response::Show`].
    pub fn content(self, len: u64) -> impl Read {
        self.reader.take(len)
    }
}

/// Sends `request` to the server at `socket` and reads its answer line.
pub fn ask(socket: &Path, request: &Request, timeout: Duration) -> Result<Answer, ClientError> {
    let io_error = |e: io::Error| ClientError::Io(socket.to_path_buf(), e);
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) if is_absent(&e) => return Err(ClientError::NotRunning(socket.to_path_buf())),
        Err(e) => return Err(io_error(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;

    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_error)?;

    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io_error)?;
    let response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::Protocol(format!("{e}: {:?}", answer.trim_end())))?;
    Ok(Answer { response, reader })
}

/// No socket file, or nobody behind it: the server is not running.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
}
