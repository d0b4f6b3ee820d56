//! The `oncemail` command: `serve` runs the server; more subcommands arrive with the
//! operator tools.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use oncemail::config::{Config, Overrides};
use oncemail::{Context, dedupe, queue, receive};

#[derive(Parser)]
#[command(name = "oncemail", version, about = "A mail transfer agent that delivers once")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SMTP server (built-in defaults need no config file).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (repeatable); replaces server.listen.
        #[arg(long)]
        listen: Vec<String>,
        /// Data directory (spool and Maildirs); replaces server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Local domain (repeatable); replaces local.domains.
        #[arg(long)]
        domain: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();

    match cli.command {
        Command::Serve { config, listen, data_dir, domain } => {
            let overrides = Overrides { listen, data_dir, domains: domain };
            let config = Config::load(config.as_deref(), overrides)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(config))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONCEMAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let spool_dir = config.data_dir.join("spool");
    let opened = spool::Spool::open(&spool_dir)
        .with_context(|| format!("cannot open the spool in {}", spool_dir.display()))?;
    let (spool, recovered) = (opened.spool, opened.messages);
    let dedupe = dedupe::Index::new(config.dedupe_window.as_secs() as i64);
    dedupe.restore(&opened.kept);

    let listeners = receive::bind(&config).await?;
    let tls = oncemail::tls::Tls::load(&config.tls, &config.hostname)?;

    warn_about(&config);
    let queue = queue::start(spool.clone(), Arc::new(config.clone()), recovered);
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));

    info!(listen = ?config.listen, data_dir = %config.data_dir.display(),
        hostname = %config.hostname, domains = ?config.local.domains,
        dedupe_entries = dedupe.len(), "oncemail started");
    let hold_reply = std::env::var("ONCEMAIL_TEST_HOLD_REPLY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    let ctx = Arc::new(Context { config, spool, queue, dedupe, shutdown, hold_reply, tls });
    tokio::spawn(reload_on_hangup(ctx.clone()));
    receive::serve(ctx, listeners).await;
    info!("oncemail stopped");
    Ok(())
}

/// Settings that are allowed but unwise get a warning at start.
fn warn_about(config: &Config) {
    let final_dot = config.relay.timeouts.data_term;
    if final_dot < std::time::Duration::from_secs(300) {
        tracing::warn!(
            data_term_timeout_s = final_dot.as_secs(),
            "relay.data_term_timeout is under 5 minutes (RFC 5321 4.5.3.2.6 asks for 10): \
             impatient clients cause duplicate deliveries"
        );
    }
}

/// `SIGHUP` reloads the TLS certificate and key.
async fn reload_on_hangup(ctx: Arc<Context>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hangup.recv().await.is_some() {
        ctx.tls.reload();
    }
}

async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
    }
    shutdown.cancel();
}
