//! The `[admin]` and `[metrics]` sections, and the readable dump of a whole configuration.
//!
//! - `admin.socket`: the Unix socket the `queue` commands and `sendmail` talk to; by default
//!   `<data_dir>/admin.sock`. Linux limits socket paths to 107 bytes; a longer one is
//!   refused here, with the key named, rather than failing at bind time.
//! - `metrics.listen`: the HTTP endpoint for `/metrics` and `/healthz`; unset, nothing
//!   listens. It has no authentication: bind it to loopback or a management network.
//!
//! [`Config::dump`] writes the effective settings, defaults included, as TOML that
//! [`Config::load`] reads back to the same values (`oncemail check-config` prints it).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Config;

/// Longest path a Unix socket address holds on Linux (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The configuration file used when neither `--config` nor `ONCEMAIL_CONFIG` names one, if
/// it exists: a `sendmail` run by cron has no other way to find it.
pub const DEFAULT_CONFIG: &str = "/etc/oncemail/oncemail.toml";

/// Which configuration file every subcommand reads: `--config`, else `$ONCEMAIL_CONFIG`,
/// else [`DEFAULT_CONFIG`] when it exists, else none (built-in defaults).
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ONCEMAIL_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    /// Unix socket for the queue commands; default `<data_dir>/admin.sock`.
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    /// "address:port" of the HTTP endpoint (`/metrics`, `/healthz`); unset: off.
    listen: Option<String>,
}

/// Where operators and their tools reach a running server.
#[derive(Debug, Clone, Default)]
pub struct Ops {
    /// `None`: `<data_dir>/admin.sock` (see [`Config::admin_socket`]).
    pub admin_socket: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
}

pub(super) fn validate_ops(admin: RawAdmin, metrics: RawMetrics) -> anyhow::Result<Ops> {
    if let Some(path) = &admin.socket {
        check_socket_path("admin.socket", path)?;
    }
    let metrics_listen = match metrics.listen.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse()
                .with_context(|| format!("metrics.listen: {text:?} is not an address:port"))?,
        ),
    };
    Ok(Ops { admin_socket: admin.socket, metrics_listen })
}

fn check_socket_path(key: &str, path: &Path) -> anyhow::Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        bail!("{key}: {} is {len} bytes; a Unix socket path holds at most 107", path.display());
    }
    Ok(())
}

impl Config {
    /// The admin socket's path, checked for length (the default one is not checked at load,
    /// since `--data-dir` may change it later).
    pub fn admin_socket(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.ops.admin_socket {
            Some(path) => path.clone(),
            None => self.data_dir.join("admin.sock"),
        };
        check_socket_path("admin.socket (default <data_dir>/admin.sock)", &path)?;
        Ok(path)
    }

    /// The effective settings as TOML, every key written, defaults included.
    pub fn dump(&self) -> String {
        let mut out = Dump::default();
        self.dump_server(&mut out);
        self.dump_limits(&mut out);
        self.dump_relay(&mut out);
        self.dump_security(&mut out);
        self.dump_ops(&mut out);
        out.text
    }

    fn dump_server(&self, out: &mut Dump) {
        out.table("server");
        out.strings("listen", self.listen.iter().map(ToString::to_string));
        out.path("data_dir", &self.data_dir);
        out.string("hostname", &self.hostname);
        out.duration("shutdown_grace", self.shutdown_grace);

        out.table("local");
        out.strings("domains", self.local.domains.iter().cloned());
        let mut users: Vec<String> = self.local.users.iter().flatten().cloned().collect();
        users.sort();
        out.strings("users", users);
        let delimiter = self.local.recipient_delimiter.map(String::from).unwrap_or_default();
        out.string("recipient_delimiter", &delimiter);

        out.table("dedupe");
        out.duration("window", self.dedupe_window);
    }

    fn dump_limits(&self, out: &mut Dump) {
        let limits = &self.limits;
        out.table("limits");
        out.number("max_message_size", limits.max_message_size);
        out.number("max_recipients", limits.max_recipients as u64);
        out.number("max_line_length", limits.max_line_length as u64);
        out.number("max_errors", u64::from(limits.max_errors));
        out.duration("command_timeout", limits.command_timeout);
        out.duration("data_timeout", limits.data_timeout);
        out.number("max_connections", limits.max_connections as u64);
        out.number("max_connections_per_ip", limits.max_connections_per_ip as u64);
        out.duration("session_timeout", limits.session_timeout);
    }

    fn dump_relay(&self, out: &mut Dump) {
        let relay = &self.relay;
        out.table("relay");
        out.strings("trusted_networks", relay.trusted_networks.iter().map(ToString::to_string));
        let routes = relay.routes.iter().map(|(domain, target)| {
            let host = match target.host.contains(':') {
                true => format!("[{}]", target.host),
                false => target.host.clone(),
            };
            (domain.clone(), format!("{host}:{}", target.port))
        });
        out.inline_table("routes", routes);
        out.number("port", u64::from(relay.port));
        out.boolean("starttls", relay.starttls);
        out.number("concurrency", relay.concurrency as u64);
        out.number("per_destination", relay.per_destination as u64);
        let t = &relay.timeouts;
        out.duration("connect_timeout", t.connect);
        out.duration("greeting_timeout", t.greeting);
        out.duration("mail_timeout", t.mail);
        out.duration("rcpt_timeout", t.rcpt);
        out.duration("data_init_timeout", t.data_init);
        out.duration("data_block_timeout", t.data_block);
        out.duration("data_term_timeout", t.data_term);

        out.table("queue");
        out.duration("max_lifetime", self.queue.max_lifetime);
        let delays = self.queue.retry_delays.iter().map(|d| humantime::format_duration(*d));
        out.strings("retry_delays", delays.map(|d| d.to_string()));
        out.number("max_hops", self.queue.max_hops as u64);
    }

    fn dump_security(&self, out: &mut Dump) {
        out.table("tls");
        out.path("cert", &self.tls.cert);
        out.path("key", &self.tls.key);
        out.boolean("starttls", self.tls.starttls);

        out.table("submission");
        out.strings("listen", self.submission.listen.iter().map(ToString::to_string));
        out.strings("tls_listen", self.submission.tls_listen.iter().map(ToString::to_string));

        out.table("auth");
        out.path("users_file", &self.auth.users_file);
        out.boolean("sender_must_match", self.auth.sender_must_match);
        out.number("max_failures", u64::from(self.auth.max_failures));
        out.duration("failure_delay", self.auth.failure_delay);
    }

    fn dump_ops(&self, out: &mut Dump) {
        out.table("admin");
        match &self.ops.admin_socket {
            Some(path) => out.path("socket", path),
            None => out.path("socket", &self.data_dir.join("admin.sock")),
        }

        out.table("metrics");
        match self.ops.metrics_listen {
            Some(addr) => out.string("listen", &addr.to_string()),
            None => out.comment("listen is unset: no metrics endpoint"),
        }
    }
}

/// A TOML writer for the shapes the configuration has; values go through the `toml`
/// crate so that quoting and escaping are its, not ours.
#[derive(Default)]
struct Dump {
    text: String,
}

impl Dump {
    fn table(&mut self, name: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        let _ = writeln!(self.text, "[{name}]");
    }

    fn value(&mut self, key: &str, value: toml::Value) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{key} = {value}");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.value(key, toml::Value::String(value.to_string()));
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.string(key, &value.to_string_lossy());
    }

    fn number(&mut self, key: &str, value: u64) {
        // TOML integers are i64; no setting comes near the limit.
        self.value(key, toml::Value::Integer(value.min(i64::MAX as u64) as i64));
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.value(key, toml::Value::Boolean(value));
    }

    fn duration(&mut self, key: &str, value: Duration) {
        self.string(key, &humantime::format_duration(value).to_string());
    }

    fn strings(&mut self, key: &str, values: impl IntoIterator<Item = String>) {
        let array = values.into_iter().map(toml::Value::String).collect();
        self.value(key, toml::Value::Array(array));
    }

    fn inline_table(&mut self, key: &str, entries: impl IntoIterator<Item = (String, String)>) {
        let parts: Vec<String> = entries
            .into_iter()
            .map(|(k, v)| format!("{} = {}", toml::Value::String(k), toml::Value::String(v)))
            .collect();
        match parts.is_empty() {
            true => self.text.push_str(&format!("{key} = {{}}\n")),
            false => self.text.push_str(&format!("{key} = {{ {} }}\n", parts.join(", "))),
        }
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.text, "# {text}");
    }
}

/// The line of `text` (a config file) where the key an error message starts with is set,
/// for errors found after parsing ("limits.max_errors: must be ..."). Best effort: keys
/// written as dotted names or inline tables are not found.
pub fn line_of_key(text: &str, error: &str) -> Option<usize> {
    let key = error.split([':', ',', ' ']).next()?;
    let (table, name) = key.rsplit_once('.')?;
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_end_matches(']').trim().to_string();
            continue;
        }
        let set_here =
            line.strip_prefix(name).is_some_and(|rest| rest.trim_start().starts_with('='));
        if current == table && set_here {
            return Some(number + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn the_dump_reads_back_to_the_same_settings() {
        let config = parse(
            "[relay]\nroutes = { \"*\" = \"[::1]:2526\", \"a.test\" = \"mx.a.test\" }\n\
             [local]\nusers = [\"bob\", \"alice\"]\n[metrics]\nlisten = \"127.0.0.1:9125\"\n",
        )
        .unwrap();
        let dump = config.dump();
        let again = parse(&dump).unwrap_or_else(|e| panic!("{e:#}\n{dump}"));
        assert_eq!(again.dump(), dump);
        assert!(
            dump.contains("routes = { \"*\" = \"[::1]:2526\", \"a.test\" = \"mx.a.test:25\" }")
        );
        let delays = "retry_delays = [\"1m\", \"5m\", \"15m\", \"30m\", \"1h\", \"2h\"]";
        assert!(dump.contains(delays));
        assert!(dump.contains("[metrics]\nlisten = \"127.0.0.1:9125\""));
    }

    #[test]
    fn defaults_dump_every_section() {
        let dump = parse("").unwrap().dump();
        for table in ["server", "local", "limits", "relay", "queue", "tls", "admin", "metrics"] {
            assert!(dump.contains(&format!("[{table}]\n")), "[{table}] missing:\n{dump}");
        }
        assert!(dump.contains("socket = \"./oncemail-data/admin.sock\""));
        assert!(dump.contains("# listen is unset"));
    }

    #[test]
    fn ops_keys_are_checked() {
        let error = format!("{:#}", parse("[metrics]\nlisten = \"nowhere\"").unwrap_err());
        assert!(error.starts_with("metrics.listen"), "{error}");
        let long = format!("[admin]\nsocket = \"/{}\"", "x".repeat(120));
        let error = format!("{:#}", parse(&long).unwrap_err());
        assert!(error.starts_with("admin.socket"), "{error}");
    }

    #[test]
    fn the_line_of_a_key_is_found_in_its_table() {
        let text = "[server]\nmax_errors = 1\n\n[limits]\n  max_errors= 0\n";
        let error = "limits.max_errors: must be at least 1";
        assert_eq!(line_of_key(text, error), Some(5));
        assert_eq!(line_of_key(text, "limits.command_timeout, limits.x: bad"), None);
        assert_eq!(line_of_key(text, "cannot read config file"), None);
    }
}
