//! Configuration: a TOML file (optional), then command-line overrides, checked once.
//!
//! Every key has a default, so `oncemail serve` runs with no file at all. The raw serde
//! structs reject unknown keys; [`Config::load`] turns them into one validated [`Config`]
//! or an error that names the key. The README's configuration reference lists the same
//! keys and defaults as the `Raw*` structs below; keep them in step.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

mod ops;
mod relay;
mod security;

pub use ops::{DEFAULT_CONFIG, Ops, config_path, line_of_key};
pub use relay::{QueuePolicy, Relay, Target, Timeouts};
pub use security::{Auth, Submission, Tls};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    local: RawLocal,
    limits: RawLimits,
    dedupe: RawDedupe,
    relay: relay::RawRelay,
    queue: relay::RawQueue,
    tls: security::RawTls,
    submission: security::RawSubmission,
    auth: security::RawAuth,
    admin: ops::RawAdmin,
    metrics: ops::RawMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDedupe {
    /// How long a retry of an accepted message is recognised; "0s" turns it off.
    #[serde(with = "humantime_serde")]
    window: Duration,
}

impl Default for RawDedupe {
    fn default() -> Self {
        RawDedupe { window: Duration::from_secs(5 * 86_400) }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    /// Addresses the SMTP listener binds.
    listen: Vec<String>,
    /// Where the spool and the Maildirs live.
    data_dir: PathBuf,
    /// Name in the greeting, EHLO reply and Received: fields; default: the host name.
    hostname: Option<String>,
    /// How long a shutdown waits for sessions to finish.
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["127.0.0.1:2525".into()],
            data_dir: PathBuf::from("./oncemail-data"),
            hostname: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLocal {
    /// Domains delivered to Maildirs here; default: `localhost` and the host name.
    domains: Option<Vec<String>>,
    /// Accepted local parts (`alice`) or addresses (`alice@example.com`); empty: all.
    users: Vec<String>,
    /// Separates a local part from its extension (`user+tag`); empty turns it off.
    recipient_delimiter: String,
}

impl Default for RawLocal {
    fn default() -> Self {
        RawLocal { domains: None, users: Vec::new(), recipient_delimiter: "+".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_message_size: u64,
    max_recipients: usize,
    max_line_length: usize,
    max_errors: u32,
    #[serde(with = "humantime_serde")]
    command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    data_timeout: Duration,
    max_connections: usize,
    max_connections_per_ip: usize,
    #[serde(with = "humantime_serde")]
    session_timeout: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 2048,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_connections: 1000,
            max_connections_per_ip: 50,
            session_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Command-line values that replace the file's.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub domains: Vec<String>,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub hostname: String,
    pub shutdown_grace: Duration,
    pub local: Local,
    pub limits: Limits,
    /// Duplicate-suppression window; zero turns suppression off.
    pub dedupe_window: Duration,
    pub relay: Relay,
    pub queue: QueuePolicy,
    pub tls: Tls,
    pub submission: Submission,
    pub auth: Auth,
    /// The admin socket and the metrics endpoint.
    pub ops: Ops,
}

#[derive(Debug, Clone)]
pub struct Local {
    /// Lowercased.
    pub domains: Vec<String>,
    /// Lowercased entries; `None` accepts every local part.
    pub users: Option<HashSet<String>>,
    pub recipient_delimiter: Option<char>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_errors: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A whole session, however busy, ends after this (421 4.4.2).
    pub session_timeout: Duration,
}

impl Config {
    /// Reads `path` (if any), applies `overrides`, validates.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> anyhow::Result<Config> {
        let raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<RawConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?
            }
            None => RawConfig::default(),
        };
        Config::validate(raw, overrides)
    }

    fn validate(mut raw: RawConfig, overrides: Overrides) -> anyhow::Result<Config> {
        if !overrides.listen.is_empty() {
            raw.server.listen = overrides.listen;
        }
        if let Some(dir) = overrides.data_dir {
            raw.server.data_dir = dir;
        }
        if !overrides.domains.is_empty() {
            raw.local.domains = Some(overrides.domains);
        }

        let hostname = match raw.server.hostname {
            Some(name) => check_domain("server.hostname", &name)?,
            None => system_hostname(),
        };
        let config = Config {
            listen: parse_listen(&raw.server.listen)?,
            data_dir: raw.server.data_dir.clone(),
            shutdown_grace: raw.server.shutdown_grace,
            local: validate_local(raw.local, &hostname)?,
            limits: validate_limits(raw.limits)?,
            dedupe_window: raw.dedupe.window,
            relay: relay::validate_relay(raw.relay)?,
            queue: relay::validate_queue(raw.queue)?,
            tls: security::validate_tls(raw.tls, &raw.server.data_dir)?,
            submission: security::validate_submission(raw.submission)?,
            auth: security::validate_auth(raw.auth, &raw.server.data_dir)?,
            ops: ops::validate_ops(raw.admin, raw.metrics)?,
            hostname,
        };
        Ok(config)
    }
}

fn parse_listen(listen: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    if listen.is_empty() {
        bail!("server.listen: at least one address is needed");
    }
    listen
        .iter()
        .map(|text| {
            text.parse().with_context(|| format!("server.listen: {text:?} is not an address:port"))
        })
        .collect()
}

fn validate_local(raw: RawLocal, hostname: &str) -> anyhow::Result<Local> {
    let domains = raw.domains.unwrap_or_else(|| vec!["localhost".into(), hostname.into()]);
    let mut checked = Vec::new();
    for domain in &domains {
        let domain = check_domain("local.domains", domain)?;
        if !checked.contains(&domain) {
            checked.push(domain);
        }
    }
    if checked.is_empty() {
        bail!("local.domains: at least one local domain is needed");
    }

    let users = if raw.users.is_empty() {
        None
    } else {
        Some(raw.users.iter().map(|u| u.to_lowercase()).collect())
    };

    let mut delimiter = raw.recipient_delimiter.chars();
    let recipient_delimiter = match (delimiter.next(), delimiter.next()) {
        (None, _) => None,
        (Some(c), None) if c != '@' && !c.is_whitespace() => Some(c),
        _ => bail!("local.recipient_delimiter: must be one character (not @) or empty"),
    };
    Ok(Local { domains: checked, users, recipient_delimiter })
}

fn validate_limits(raw: RawLimits) -> anyhow::Result<Limits> {
    if raw.max_message_size < 1024 {
        bail!("limits.max_message_size: must be at least 1024 bytes");
    }
    if raw.max_recipients < 1 {
        bail!("limits.max_recipients: must be at least 1");
    }
    // RFC 5321 4.5.3.1.4: a server must take command lines of 512 octets.
    if raw.max_line_length < 512 {
        bail!("limits.max_line_length: must be at least 512 (RFC 5321 4.5.3.1.4)");
    }
    if raw.max_errors < 1 {
        bail!("limits.max_errors: must be at least 1");
    }
    if raw.max_connections < 1 || raw.max_connections_per_ip < 1 {
        bail!("limits.max_connections, limits.max_connections_per_ip: must be at least 1");
    }
    if raw.session_timeout < raw.command_timeout.min(raw.data_timeout) {
        bail!("limits.session_timeout: must be at least the command and data timeouts");
    }
    if raw.command_timeout < Duration::from_secs(1) || raw.data_timeout < Duration::from_secs(1) {
        bail!("limits.command_timeout, limits.data_timeout: must be at least 1s");
    }
    Ok(Limits {
        max_message_size: raw.max_message_size,
        max_recipients: raw.max_recipients,
        max_line_length: raw.max_line_length,
        max_errors: raw.max_errors,
        command_timeout: raw.command_timeout,
        data_timeout: raw.data_timeout,
        max_connections: raw.max_connections,
        max_connections_per_ip: raw.max_connections_per_ip,
        session_timeout: raw.session_timeout,
    })
}

fn check_domain(key: &str, name: &str) -> anyhow::Result<String> {
    let name = name.trim().trim_end_matches('.').to_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 255 || !name.split('.').all(valid_label) {
        bail!("{key}: {name:?} is not a valid domain name");
    }
    Ok(name)
}

/// The kernel's host name, or `localhost.localdomain` if it has none usable.
fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // when the name fits, and we stop at the first NUL or the end either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).to_lowercase();
    if rc != 0 || check_domain("hostname", &name).is_err() {
        return "localhost.localdomain".into();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config from TOML text, validated (also used by the `ops` tests).
    pub(super) fn parse(text: &str) -> anyhow::Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Config::validate(raw, Overrides::default())
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(config.data_dir, PathBuf::from("./oncemail-data"));
        assert_eq!(config.local.domains[0], "localhost");
        assert!(config.local.domains.contains(&config.hostname));
        assert_eq!(config.local.recipient_delimiter, Some('+'));
        assert!(config.local.users.is_none());
    }

    #[test]
    fn overrides_replace_the_file() {
        let raw: RawConfig = toml::from_str("[local]\ndomains = [\"a.test\"]").unwrap();
        let overrides = Overrides {
            listen: vec!["127.0.0.1:1".into()],
            data_dir: Some("/tmp/x".into()),
            domains: vec!["B.Test".into()],
        };
        let config = Config::validate(raw, overrides).unwrap();
        assert_eq!(config.local.domains, vec!["b.test".to_string()]);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = [\"nonsense\"]", "server.listen"),
            ("[server]\nbogus = 1", "bogus"),
            ("[limits]\nmax_line_length = 100", "limits.max_line_length"),
            ("[limits]\ncommand_timeout = \"soon\"", "command_timeout"),
            ("[local]\nrecipient_delimiter = \"+-\"", "local.recipient_delimiter"),
            ("[local]\ndomains = [\"bad domain\"]", "local.domains"),
        ];
        for (text, key) in cases {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(key), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn delimiter_can_be_turned_off() {
        let config = parse("[local]\nrecipient_delimiter = \"\"").unwrap();
        assert_eq!(config.local.recipient_delimiter, None);
    }
}
