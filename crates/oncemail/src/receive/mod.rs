//! receive: the SMTP listeners and their sessions.
//!
//! Each accepted connection runs one [`session::Session`] task. On shutdown the listeners
//! stop accepting at once; sessions answer their next command with `421` and end, and
//! [`serve`] returns when all have ended or the grace period is over, whichever is first.

mod body;
mod headers;
pub(crate) mod received;
pub mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::{Context, replies};

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 25: mail from anywhere for local domains; relaying for trusted or
    /// authenticated clients; STARTTLS offered, AUTH offered after it.
    Smtp,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH required before MAIL.
    Submission,
    /// Port 465 (RFC 8314): TLS from the first byte, then AUTH required before MAIL.
    SubmissionTls,
}

pub struct Bound {
    listener: TcpListener,
    kind: Listener,
}

/// Binds every configured listener; an address that cannot be bound stops the start.
pub async fn bind(config: &Config) -> anyhow::Result<Vec<Bound>> {
    let wanted = config.listen.iter().map(|a| (a, Listener::Smtp));
    let wanted = wanted.chain(config.submission.listen.iter().map(|a| (a, Listener::Submission)));
    let tls = config.submission.tls_listen.iter().map(|a| (a, Listener::SubmissionTls));
    let mut bound = Vec::new();
    for (addr, kind) in wanted.chain(tls) {
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        info!(listen = %addr, kind = ?kind, "listening");
        bound.push(Bound { listener, kind });
    }
    Ok(bound)
}

/// Connection limits shared by all listeners.
struct Limits {
    all: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// Held by a session for its whole life; gives its place back when dropped.
struct Admission {
    limits: Arc<Limits>,
    ip: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let slot = self.all.clone().try_acquire_owned().ok()?;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(Admission { limits: self.clone(), ip, _slot: slot })
    }
}

/// Runs the listeners until shutdown, then waits for sessions to end.
pub async fn serve(ctx: Arc<Context>, listeners: Vec<Bound>) {
    let sessions = TaskTracker::new();
    let limits = Arc::new(Limits {
        all: Arc::new(Semaphore::new(ctx.config.limits.max_connections)),
        per_ip: Mutex::new(HashMap::new()),
        max_per_ip: ctx.config.limits.max_connections_per_ip,
    });
    let mut accept_loops = Vec::new();
    for bound in listeners {
        let (ctx, sessions, limits) = (ctx.clone(), sessions.clone(), limits.clone());
        accept_loops.push(tokio::spawn(accept_loop(ctx, bound, sessions, limits)));
    }

    ctx.shutdown.cancelled().await;
    for task in &accept_loops {
        task.abort();
    }
    sessions.close();
    info!(sessions = sessions.len(), "no longer accepting connections");

    let grace = ctx.config.shutdown_grace;
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        warn!(sessions = sessions.len(), "shutdown grace period over; dropping sessions");
    }
}

async fn accept_loop(ctx: Arc<Context>, bound: Bound, sessions: TaskTracker, limits: Arc<Limits>) {
    loop {
        let (stream, peer) = match bound.listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE: wait a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(admission) = limits.admit(peer.ip()) else {
            sessions.spawn(turn_away(stream, peer, ctx.config.hostname.clone()));
            continue;
        };
        let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
        let session = session::Session::new(ctx.clone(), id, peer, bound.kind, Box::new(stream));
        sessions.spawn(async move {
            session.run().await;
            drop(admission);
        });
    }
}

/// Over a connection limit: say so (RFC 5321 §3.1 allows a 421 greeting) and close.
async fn turn_away(mut stream: TcpStream, peer: std::net::SocketAddr, hostname: String) {
    warn!(client = %peer, "connection limit reached; turned away with 421");
    let mut out = Vec::new();
    replies::too_many_connections(&hostname).write(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}
