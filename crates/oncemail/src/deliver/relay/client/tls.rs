//! TLS after STARTTLS: opportunistic, with no certificate checks (see
//! "Security" in the client's contract for why).
//!
//! One client configuration serves every connection of the process, so TLS
//! sessions can be resumed with servers we meet again.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion};
use rustls::{Error, SignatureScheme};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::wire::Io;

/// A stream after a successful handshake.
pub(super) struct Upgraded {
    pub(super) io: Box<dyn Io>,
    /// Version and cipher suite, for the log and [`super::Delivery::tls`].
    pub(super) description: String,
}

/// Runs the client handshake on `io` within `limit`. `server_name` goes
/// into SNI; when it is not a DNS name, the server's address is used and
/// no SNI is sent.
pub(super) async fn handshake(
    io: Box<dyn Io>,
    server_name: &str,
    addr: IpAddr,
    limit: Duration,
) -> Result<Upgraded, String> {
    let connector = TlsConnector::from(config()?);
    let name = ServerName::try_from(server_name.to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.into()));

    let stream = match timeout(limit, connector.connect(name, io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("TLS handshake failed: {error}")),
        Err(_) => return Err(format!("TLS handshake timed out after {limit:?}")),
    };

    let description = describe(stream.get_ref().1);
    Ok(Upgraded { io: Box::new(stream), description })
}

/// "TLSv1.3 TLS13_AES_256_GCM_SHA384" and the like.
fn describe(session: &ClientConnection) -> String {
    let version = match session.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    match session.negotiated_cipher_suite() {
        Some(suite) => format!("{version} {:?}", suite.suite()),
        None => version,
    }
}

/// The process-wide configuration, built on first use.
fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build_config).clone()
}

/// The provider is named rather than taken from the process default, so
/// that another crate enabling a second rustls provider cannot make
/// rustls's choice ambiguous.
fn build_config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;

    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS client configuration: {error}"))?;
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Takes whatever certificate the server shows, but checks that the
/// server's handshake signatures were made with that certificate's key,
/// using the provider's own algorithms.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // Opportunistic TLS (RFC 7435): no trust anchors, names or dates.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
