//! http: the metrics and health endpoint (`metrics.listen`; off unless set).
//!
//! - `GET /metrics`: every metric of [`metrics`](crate::metrics) in the text format the
//!   `prometheus-client` crate writes, which is OpenMetrics 1.0 (counters named `_total`,
//!   a final `# EOF`), served with the OpenMetrics content type. Prometheus reads it, and
//!   so does the classic Prometheus text parser.
//! - `GET /healthz`: `200 ok` when the server is up (its listeners are bound and it is not
//!   shutting down) and the spool directory takes a write (a probe file is created,
//!   written, fsync'd and removed, within [`PROBE_TIMEOUT`]); else `503` with the reason.
//!
//! The endpoint has no authentication and serves nothing but these two: bind it to
//! loopback or a management network. HTTP is axum's (on hyper), not ours.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::{Context, metrics};

/// What prometheus-client's text encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A spool that takes longer than this to accept a small write is not healthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

static PROBES: AtomicU64 = AtomicU64::new(0);

/// Binds the endpoint; a configured address that cannot be bound stops the start.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
    info!(listen = %addr, "metrics endpoint listening");
    Ok(listener)
}

/// Serves `/metrics` and `/healthz` for as long as the process runs, so that a health
/// check sees the shutdown (503) instead of a refused connection.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .with_state(ctx);
    if let Err(e) = axum::serve(listener, app).await {
        error!(error = %e, "metrics endpoint stopped");
    }
}

async fn metrics_text() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics::get().encode())
}

async fn healthz(State(ctx): State<Arc<Context>>) -> (StatusCode, String) {
    if ctx.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let spool_dir = ctx.config.data_dir.join("spool");
    let probe = tokio::task::spawn_blocking(move || probe(&spool_dir));
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(Ok(()))) => (StatusCode::OK, "ok\n".into()),
        Ok(Ok(Err(e))) => unhealthy(format!("spool not writable: {e}")),
        Ok(Err(_)) => unhealthy("spool probe failed".into()),
        Err(_) => unhealthy(format!("spool write took over {}s", PROBE_TIMEOUT.as_secs())),
    }
}

fn unhealthy(reason: String) -> (StatusCode, String) {
    error!(reason = %reason, "health check failed");
    (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
}

/// Creates, writes, syncs and removes a file where the spool writes: the checks a full
/// disk, a read-only remount or a dead device fail. Each probe has its own name, so that
/// concurrent checks do not remove each other's file.
fn probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".healthz.{}.{n}", std::process::id()));
    let result = std::fs::File::create_new(&path).and_then(|mut file| {
        file.write_all(b"ok")?;
        file.sync_data()
    });
    let removed = std::fs::remove_file(&path);
    result.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_leaves_nothing_behind_and_fails_where_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(probe(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_content_type_matches_what_the_encoder_writes() {
        // OpenMetrics ends with "# EOF"; the classic Prometheus text format does not.
        assert!(metrics::get().encode().ends_with("# EOF\n"));
        assert!(CONTENT_TYPE.starts_with("application/openmetrics-text"));
    }
}
