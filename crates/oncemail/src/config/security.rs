//! The `[tls]`, `[submission]` and `[auth]` sections, and the connection limits.
//!
//! Defaults: STARTTLS on the SMTP listener with a certificate generated into the data
//! directory at first start; no submission listeners until configured (587 with STARTTLS
//! and AUTH, 465 with implicit TLS, RFC 8314); AUTH only after TLS; an authenticated user
//! may send only as an address it owns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    /// PEM certificate chain; with `key`. Default: generated into `<data_dir>/tls/`.
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Offer STARTTLS on the SMTP listener.
    starttls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSubmission {
    /// Submission with STARTTLS and AUTH required (RFC 6409), e.g. ["0.0.0.0:587"].
    listen: Vec<String>,
    /// Submission over implicit TLS (RFC 8314), e.g. ["0.0.0.0:465"].
    tls_listen: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    /// File of `name:argon2-hash` lines; default `<data_dir>/users`.
    users_file: Option<PathBuf>,
    /// An authenticated user may use only sender addresses it owns.
    sender_must_match: bool,
    /// Failed AUTH attempts before the session is closed with 421.
    max_failures: u32,
    /// Pause before answering a failed AUTH.
    #[serde(with = "humantime_serde")]
    failure_delay: Duration,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            users_file: None,
            sender_must_match: true,
            max_failures: 3,
            failure_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when the paths are ours to fill with a self-signed pair if missing.
    pub generated: bool,
    pub starttls: bool,
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub users_file: PathBuf,
    pub sender_must_match: bool,
    pub max_failures: u32,
    pub failure_delay: Duration,
}

pub(super) fn validate_tls(raw: RawTls, data_dir: &Path) -> anyhow::Result<Tls> {
    let starttls = raw.starttls.unwrap_or(true);
    match (raw.cert, raw.key) {
        (Some(cert), Some(key)) => Ok(Tls { cert, key, generated: false, starttls }),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            Ok(Tls { cert, key, generated: true, starttls })
        }
        _ => bail!("tls.cert, tls.key: give both or neither"),
    }
}

pub(super) fn validate_submission(raw: RawSubmission) -> anyhow::Result<Submission> {
    let parse = |key: &str, list: &[String]| -> anyhow::Result<Vec<SocketAddr>> {
        list.iter()
            .map(|t| t.parse().with_context(|| format!("{key}: {t:?} is not an address:port")))
            .collect()
    };
    Ok(Submission {
        listen: parse("submission.listen", &raw.listen)?,
        tls_listen: parse("submission.tls_listen", &raw.tls_listen)?,
    })
}

pub(super) fn validate_auth(raw: RawAuth, data_dir: &Path) -> anyhow::Result<Auth> {
    if raw.max_failures < 1 {
        bail!("auth.max_failures: must be at least 1");
    }
    Ok(Auth {
        users_file: raw.users_file.unwrap_or_else(|| data_dir.join("users")),
        sender_must_match: raw.sender_must_match,
        max_failures: raw.max_failures,
        failure_delay: raw.failure_delay,
    })
}
