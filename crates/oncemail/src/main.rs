//! The `oncemail` command: `serve` runs the server; `queue`, `sendmail` and
//! `check-config` are the operator's tools. Run through a link named `sendmail` it is the
//! sendmail command (classic options), through one named `mailq` it lists the queue
//! (`sendmail -bp`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use oncemail::admin::{self, cli::QueueArgs};
use oncemail::config::{self, Config, Overrides};
use oncemail::{Context, dedupe, http, pickup, queue, receive, sendmail};

#[derive(Parser)]
#[command(name = "oncemail", version, about = "A mail transfer agent that delivers once")]
struct Cli {
    /// Log lines as text, or as one JSON object each (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SMTP server (built-in defaults need no config file).
    Serve {
        /// TOML configuration file (default: $ONCEMAIL_CONFIG, then
        /// /etc/oncemail/oncemail.toml if it exists).
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
        /// Address of the /metrics and /healthz endpoint; replaces metrics.listen.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Look at and steer the queue of the running server (mailq, postqueue, postsuper).
    Queue(QueueArgs),
    /// Send the message on standard input (sendmail's options: -t -i -oi -f -F -C ...).
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Manage the users who may authenticate (AUTH) for submission and relaying.
    User {
        #[command(subcommand)]
        action: UserAction,
        /// TOML configuration file (default: $ONCEMAIL_CONFIG, then
        /// /etc/oncemail/oncemail.toml if it exists).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory; replaces server.data_dir (the users file defaults to its `users`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration file and print the effective settings, defaults included.
    CheckConfig {
        /// TOML configuration file (default: $ONCEMAIL_CONFIG, then
        /// /etc/oncemail/oncemail.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user, or set a new password: asked on the terminal, or read from stdin.
    Add { name: String },
    /// Remove a user.
    Del { name: String },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // One line naming what failed and why, not a debug dump with a backtrace.
            eprintln!("oncemail: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match invoked_as(&args).as_deref() {
        Some("sendmail") => return Ok(sendmail::main(&args[1..])),
        Some("mailq") => {
            // mailq is sendmail -bp, and takes sendmail's -C and --data-dir.
            let args: Vec<OsString> =
                std::iter::once("-bp".into()).chain(args[1..].to_vec()).collect();
            return Ok(sendmail::main(&args));
        }
        _ => {}
    }
    let cli = Cli::parse_from(args);
    let serving = matches!(cli.command, Command::Serve { .. });
    // The tools print their own errors; their log stays quiet unless asked.
    init_logging(cli.log_format, if serving { "info" } else { "warn" });

    match cli.command {
        Command::Serve { config, listen, data_dir, domain, metrics_listen } => {
            let overrides = Overrides { listen, data_dir, domains: domain };
            let path = config::config_path(config.as_deref());
            let mut config = Config::load(path.as_deref(), overrides)?;
            if metrics_listen.is_some() {
                config.ops.metrics_listen = metrics_listen;
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(args) => Ok(admin::cli::run(args)),
        Command::Sendmail { args } => Ok(sendmail::main(&args)),
        Command::CheckConfig { config } => Ok(check_config(config.as_deref())),
        Command::User { action, config, data_dir } => {
            let path = config::config_path(config.as_deref());
            let overrides = Overrides { data_dir, ..Overrides::default() };
            let config = Config::load(path.as_deref(), overrides)?;
            manage_user(&config.auth.users_file, action)
        }
    }
}

fn manage_user(users_file: &Path, action: UserAction) -> anyhow::Result<ExitCode> {
    match action {
        UserAction::Add { name } => {
            let password = oncemail::auth::read_password(&name)?;
            oncemail::auth::add_user(users_file, &name, &password)
                .with_context(|| format!("cannot update {}", users_file.display()))?;
            println!("user {name} saved in {}", users_file.display());
        }
        UserAction::Del { name } => {
            oncemail::auth::del_user(users_file, &name)
                .with_context(|| format!("cannot update {}", users_file.display()))?;
            println!("user {name} removed from {}", users_file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The file name the program was started as, when it is one of the classic names.
fn invoked_as(args: &[OsString]) -> Option<String> {
    let name = Path::new(args.first()?).file_name()?.to_str()?;
    matches!(name, "sendmail" | "mailq").then(|| name.to_string())
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONCEMAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        // Event fields at the top level of each object, next to "message".
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// `check-config`: the same loading and checks as `serve`; the settings on stdout, or
/// the error (with the file's line where it can be found) on stderr.
fn check_config(flag: Option<&Path>) -> ExitCode {
    let path = config::config_path(flag);
    match Config::load(path.as_deref(), Overrides::default()) {
        Ok(config) => {
            let source = path.map_or("built-in defaults".into(), |p| p.display().to_string());
            println!("# oncemail configuration: {source}");
            for warning in warnings(&config) {
                println!("# warning: {warning}");
            }
            print!("{}", config.dump());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let message = format!("{e:#}");
            let line = path.as_deref().and_then(|p| {
                let text = std::fs::read_to_string(p).ok()?;
                config::line_of_key(&text, &message).map(|n| (p.display().to_string(), n))
            });
            match line {
                Some((file, n)) => eprintln!("oncemail: {file}, line {n}: {message}"),
                None => eprintln!("oncemail: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Signals first: from the moment a port is open, SIGTERM means a clean shutdown.
    let shutdown = CancellationToken::new();
    let mut signals = Signals::install()?;
    let hangup = signals.hangup.take();
    tokio::spawn(signals.watch(shutdown.clone()));

    let spool_dir = config.data_dir.join("spool");
    let opened = spool::Spool::open(&spool_dir)
        .with_context(|| format!("cannot open the spool in {}", spool_dir.display()))?;
    let (spool, recovered) = (opened.spool, opened.messages);
    let dedupe = dedupe::Index::new(config.dedupe_window.as_secs() as i64);
    dedupe.restore(&opened.kept);
    if let Err(e) = pickup::create_maildrop(&config.data_dir) {
        tracing::error!(error = %e, "cannot create the maildrop; sendmail will fail");
    }

    // Everything that listens is bound before anything runs, the SMTP listeners last (a
    // client that sees the port open finds the rest ready): a port or socket that cannot
    // be had stops the start with the reason.
    let admin_socket = config.admin_socket()?;
    let admin_listener = admin::server::bind(&admin_socket)?;
    let metrics_listener = match config.ops.metrics_listen {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let tls = oncemail::tls::Tls::load(&config.tls, &config.hostname)?;
    let listeners = receive::bind(&config).await?;

    for warning in warnings(&config) {
        tracing::warn!("{warning}");
    }
    let queue = queue::start(spool.clone(), Arc::new(config.clone()), recovered);

    info!(listen = ?config.listen, data_dir = %config.data_dir.display(),
        hostname = %config.hostname, domains = ?config.local.domains,
        dedupe_entries = dedupe.len(), admin_socket = %admin_socket.display(),
        "oncemail started");
    let hold_reply = std::env::var("ONCEMAIL_TEST_HOLD_REPLY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    let ctx = Arc::new(Context { config, spool, queue, dedupe, shutdown, hold_reply, tls });
    if let Some(hangup) = hangup {
        tokio::spawn(reload_on_hangup(ctx.clone(), hangup));
    }

    let wake_pickup = Arc::new(Notify::new());
    tokio::spawn(admin::server::serve(ctx.clone(), admin_listener, wake_pickup.clone()));
    tokio::spawn(pickup::run(ctx.clone(), wake_pickup));
    if let Some(listener) = metrics_listener {
        tokio::spawn(http::serve(ctx.clone(), listener));
    }

    receive::serve(ctx, listeners).await;
    // A socket left behind would make `queue` say "cannot talk" instead of "not running".
    let _ = std::fs::remove_file(&admin_socket);
    info!("oncemail stopped");
    Ok(())
}

/// Settings that are allowed but unwise: warned about at start and by `check-config`.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let final_dot = config.relay.timeouts.data_term;
    if final_dot < std::time::Duration::from_secs(300) {
        warnings.push(format!(
            "relay.data_term_timeout is under 5 minutes ({}s; RFC 5321 4.5.3.2.6 asks for \
             10): impatient clients cause duplicate deliveries",
            final_dot.as_secs()
        ));
    }
    warnings
}

/// `SIGHUP` reloads the TLS certificate and key.
async fn reload_on_hangup(ctx: Arc<Context>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        ctx.tls.reload();
    }
}

/// SIGTERM, SIGINT and SIGHUP, registered before anything listens, so that none of
/// them can kill the process with its default action once a port is open.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let hangup = Some(signal(SignalKind::hangup()).context("cannot handle SIGHUP")?);
        Ok(Signals { term, int, hangup })
    }

    async fn watch(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = self.int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
        shutdown.cancel();
    }
}
