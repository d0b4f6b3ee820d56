//! receive: the SMTP listeners and their sessions.
//!
//! Each accepted connection runs one [`session::Session`] task. On shutdown the listeners
//! stop accepting at once; sessions answer their next command with `421` and end, and
//! [`serve`] returns when all have ended or the grace period is over, whichever is first.

mod body;
mod headers;
mod received;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Context;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Runs the listeners until shutdown, then waits for sessions to end.
pub async fn serve(ctx: Arc<Context>, listeners: Vec<TcpListener>) {
    let sessions = TaskTracker::new();
    let mut accept_loops = Vec::new();
    for listener in listeners {
        let ctx = ctx.clone();
        let sessions = sessions.clone();
        accept_loops.push(tokio::spawn(accept_loop(ctx, listener, sessions)));
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

async fn accept_loop(ctx: Arc<Context>, listener: TcpListener, sessions: TaskTracker) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE: wait a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
        let session = session::Session::new(ctx.clone(), id, peer, Box::new(stream));
        sessions.spawn(session.run());
    }
}
