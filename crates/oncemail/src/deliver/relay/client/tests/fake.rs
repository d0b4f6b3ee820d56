//! A scripted SMTP server on 127.0.0.1 for the client's tests. It plays one
//! dialogue on one connection, checks each line the client sends against
//! the script, and keeps the DATA content it receives, still dot-stuffed.
//! Since it reads a line only when the script says so, a client that waits
//! for a reply the script has not sent yet (no pipelining where pipelining
//! was expected) stalls and fails on its timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::super::wire::Io;

pub(super) enum Step {
    /// Send these bytes as they are.
    Say(String),
    /// Read one line; it must be this, without its CRLF.
    Expect(String),
    /// Read DATA content up to and including the final `.` CRLF.
    Content,
    /// Wait this many milliseconds.
    Pause(u64),
    /// Run the server side of a TLS handshake.
    Tls,
}

pub(super) fn say(text: impl Into<String>) -> Step {
    Step::Say(text.into())
}

pub(super) fn expect(line: impl Into<String>) -> Step {
    Step::Expect(line.into())
}

/// A running script. The connection closes when the script ends.
pub(super) struct Fake {
    pub(super) addr: SocketAddr,
    run: JoinHandle<Result<Vec<Vec<u8>>, String>>,
}

impl Fake {
    pub(super) async fn start(script: Vec<Step>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let run = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            play(Box::new(tcp), script).await
        });
        Fake { addr, run }
    }

    /// Waits for the script to end; panics if the client strayed from it.
    /// Returns each DATA content received.
    pub(super) async fn finish(self) -> Vec<Vec<u8>> {
        match self.run.await.expect("fake server task") {
            Ok(contents) => contents,
            Err(why) => panic!("fake server: {why}"),
        }
    }
}

async fn play(mut io: Box<dyn Io>, script: Vec<Step>) -> Result<Vec<Vec<u8>>, String> {
    let mut unread = Vec::new();
    let mut contents = Vec::new();

    for step in script {
        match step {
            Step::Say(text) => io.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?,
            Step::Expect(want) => {
                let line = read_until(&mut io, &mut unread, b"\r\n").await?;
                let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                if line != want {
                    return Err(format!("expected {want:?}, got {line:?}"));
                }
            }
            Step::Content => contents.push(read_content(&mut io, &mut unread).await?),
            Step::Pause(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
            Step::Tls => {
                if !unread.is_empty() {
                    return Err("client sent data before the TLS handshake".into());
                }
                let acceptor = TlsAcceptor::from(tls_config());
                let tls = acceptor.accept(io).await.map_err(|e| e.to_string())?;
                io = Box::new(tls);
            }
        }
    }
    Ok(contents)
}

/// The content up to and including `.` CRLF; the dot may come first.
async fn read_content(io: &mut Box<dyn Io>, unread: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    if unread.len() < 3 {
        fill(io, unread, 3).await?;
    }
    if unread.starts_with(b".\r\n") {
        return Ok(unread.drain(..3).collect());
    }
    read_until(io, unread, b"\r\n.\r\n").await
}

/// The bytes up to and including `end`.
async fn read_until(
    io: &mut Box<dyn Io>,
    unread: &mut Vec<u8>,
    end: &[u8],
) -> Result<Vec<u8>, String> {
    loop {
        if let Some(at) = unread.windows(end.len()).position(|w| w == end) {
            return Ok(unread.drain(..at + end.len()).collect());
        }
        let want = unread.len() + 1;
        fill(io, unread, want).await?;
    }
}

async fn fill(io: &mut Box<dyn Io>, unread: &mut Vec<u8>, len: usize) -> Result<(), String> {
    while unread.len() < len {
        let mut chunk = [0; 16 * 1024];
        match io.read(&mut chunk).await {
            Ok(0) => return Err(format!("client closed; unread {unread:?}")),
            Ok(n) => unread.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// A server configuration with a fresh self-signed certificate.
fn tls_config() -> Arc<ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).expect("cert");
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], PrivateKeyDer::Pkcs8(key))
        .expect("server certificate");
    Arc::new(config)
}
