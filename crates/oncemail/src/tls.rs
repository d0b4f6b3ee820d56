//! tls: the server's certificate, and the handshake for STARTTLS and implicit TLS.
//!
//! The certificate and key come from `tls.cert`/`tls.key` (PEM). When none are configured,
//! a self-signed pair for the host name is generated into `<data_dir>/tls/` at first start
//! (and said so in the log): enough for opportunistic TLS between MTAs (RFC 7435), which
//! do not verify certificates; submission clients will want a real one. `SIGHUP` reloads
//! the files; sessions already running keep the configuration they started with.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config;

pub struct Tls {
    config: config::Tls,
    hostname: String,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads (or first generates) the certificate; fails if it cannot be used.
    pub fn load(config: &config::Tls, hostname: &str) -> anyhow::Result<Tls> {
        if config.generated && !config.cert.exists() {
            generate(&config.cert, &config.key, hostname)?;
        }
        let server = server_config(&config.cert, &config.key)?;
        let current = RwLock::new(Arc::new(server));
        Ok(Tls { config: config.clone(), hostname: hostname.to_string(), current })
    }

    /// Reads the files again; on error the old configuration stays.
    pub fn reload(&self) {
        match server_config(&self.config.cert, &self.config.key) {
            Ok(server) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(server);
                info!(cert = %self.config.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => warn!(error = %format!("{e:#}"), "TLS reload failed; keeping the old one"),
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.clone())
    }

    pub fn starttls(&self) -> bool {
        self.config.starttls
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls.cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert: bad PEM in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls.key: cannot read a private key from {}", key.display()))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls.cert and tls.key do not make a usable pair")?;
    Ok(config)
}

/// A self-signed certificate for `hostname`, key readable by the owner only.
fn generate(cert: &Path, key: &Path, hostname: &str) -> anyhow::Result<()> {
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir)?;
    }

    let mut key_file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("cannot write {}", key.display()))?;
    key_file.write_all(pair.signing_key.serialize_pem().as_bytes())?;
    key_file.sync_all()?;
    fs::write(cert, pair.cert.pem())?;
    warn!(cert = %cert.display(), "generated a self-signed TLS certificate; \
        configure tls.cert and tls.key for clients that verify");
    Ok(())
}

/// "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384", for logs and `Received:`.
pub fn describe(connection: &rustls::ServerConnection) -> String {
    let version = connection
        .protocol_version()
        .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."))
        .unwrap_or_else(|| "TLS".into());
    match connection.negotiated_cipher_suite() {
        Some(suite) => format!("{version} with cipher {:?}", suite.suite()),
        None => version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::Tls {
            cert: dir.path().join("tls/cert.pem"),
            key: dir.path().join("tls/key.pem"),
            generated: true,
            starttls: true,
        };
        let tls = Tls::load(&config, "mx.example.test").unwrap();
        let first = fs::read(&config.cert).unwrap();
        tls.reload();
        Tls::load(&config, "mx.example.test").unwrap();
        assert_eq!(fs::read(&config.cert).unwrap(), first, "not regenerated");
        let mode = fs::metadata(&config.key).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn a_missing_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::Tls {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            generated: false,
            starttls: true,
        };
        let error = format!("{:#}", Tls::load(&config, "x").err().unwrap());
        assert!(error.contains("tls.cert"), "{error}");
    }
}
