//! The session's security commands: `STARTTLS` (RFC 3207) and `AUTH` (RFC 4954).
//!
//! After `STARTTLS` the session forgets everything it knew (RFC 3207 §4.2) and drops any
//! bytes the client sent behind the command before the handshake: they arrived in
//! plaintext and could have been injected by a man in the middle (the 2011 family of
//! STARTTLS command-injection bugs). `AUTH` is offered only over TLS, when users exist;
//! a failed attempt is answered after `auth.failure_delay`, and `auth.max_failures`
//! failures close the session with `421`. Passwords are never logged.

use std::time::Duration;

use tracing::{info, warn};

use super::{End, Flow, Greeting, Session};
use crate::auth::{self, SaslError};
use crate::metrics::{self, Result as Outcome};
use crate::receive::Listener;
use crate::replies::{self, Reply};

impl Session {
    pub(super) fn offers_starttls(&self) -> bool {
        self.tls.is_none() && (self.ctx.tls.starttls() || self.kind == Listener::Submission)
    }

    pub(super) fn offers_auth(&self) -> bool {
        self.tls.is_some()
            && self.user.is_none()
            && auth::any_users(&self.ctx.config.auth.users_file)
    }

    pub(super) async fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            return self.error(&replies::TLS_ACTIVE, "STARTTLS");
        }
        if !self.offers_starttls() {
            return self.error(&replies::TLS_UNAVAILABLE, "STARTTLS");
        }
        self.reply(&replies::STARTTLS_READY);
        self.flush().await?;

        let injected = self.input.len() - self.start;
        if injected > 0 {
            warn!(session = self.id, bytes = injected, "discarding plaintext sent after STARTTLS");
        }
        self.input.clear();
        self.start = 0;
        self.start_tls().await?;

        self.greeting = Greeting::None;
        self.transaction = None;
        Ok(())
    }

    /// The TLS handshake on the current stream; the session continues over TLS.
    pub(super) async fn start_tls(&mut self) -> Flow {
        // An empty stream stands in while the real one is inside the handshake.
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let acceptor = self.ctx.tls.acceptor();
        // The handshake counts against the session's deadline like any other read.
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = self.ctx.config.limits.command_timeout.min(left);
        let handshake = tokio::time::timeout(timeout, acceptor.accept(plain)).await;

        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::inc(&metrics::get().tls_handshakes, Outcome { result: "failed" });
                info!(session = self.id, error = %e, "TLS handshake failed");
                return Err(End::Closed("tls handshake failed"));
            }
            Err(_) => return Err(End::Closed("tls handshake timeout")),
        };
        metrics::inc(&metrics::get().tls_handshakes, Outcome { result: "ok" });
        let described = crate::tls::describe(stream.get_ref().1);
        info!(session = self.id, tls = %described, "TLS established");
        self.tls = Some(described);
        self.stream = Box::new(stream);
        Ok(())
    }

    pub(super) async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Flow {
        if let Some(reply) = self.refuse_auth() {
            return self.error(&reply, "AUTH");
        }
        let credentials = match mechanism {
            "PLAIN" => self.plain(initial).await?,
            "LOGIN" => self.login(initial).await?,
            _ => return self.error(&replies::AUTH_MECHANISM, "AUTH"),
        };
        let (user, password) = match credentials {
            Ok(credentials) => credentials,
            Err(SaslError::Cancelled) => return self.error(&replies::AUTH_CANCELLED, "AUTH"),
            Err(SaslError::Malformed) => return self.error(&replies::AUTH_MALFORMED, "AUTH"),
        };
        self.check_password(user, password).await
    }

    fn refuse_auth(&self) -> Option<Reply> {
        if self.user.is_some() {
            return Some(replies::ALREADY_AUTHENTICATED);
        }
        if self.tls.is_none() {
            return Some(replies::ENCRYPTION_REQUIRED);
        }
        if self.transaction.is_some() {
            return Some(replies::AUTH_IN_TRANSACTION);
        }
        if !auth::any_users(&self.ctx.config.auth.users_file) {
            return Some(replies::NOT_IMPLEMENTED);
        }
        None
    }

    /// RFC 4616: one response, with the initial response or after an empty challenge.
    async fn plain(&mut self, initial: Option<String>) -> Result<Credentials, End> {
        let response = match initial {
            Some(response) if response != "=" => response,
            _ => self.challenge("").await?,
        };
        Ok(auth::decode_plain(&response))
    }

    /// The LOGIN mechanism: user name, then password, each base64 after a challenge.
    async fn login(&mut self, initial: Option<String>) -> Result<Credentials, End> {
        let user = match initial {
            Some(response) => response,
            None => self.challenge("VXNlcm5hbWU6").await?,
        };
        let user = match auth::decode_line(&user) {
            Ok(user) => user,
            Err(e) => return Ok(Err(e)),
        };
        let password = self.challenge("UGFzc3dvcmQ6").await?;
        Ok(auth::decode_line(&password).map(|password| (user, password)))
    }

    /// Sends `334 <challenge>` and reads the client's answer line.
    async fn challenge(&mut self, challenge: &str) -> Result<String, End> {
        let mut out = Vec::new();
        smtp_wire::reply::format_reply(334, None, &[challenge], &mut out);
        self.output.extend_from_slice(&out);
        match self.next_line().await? {
            Some(line) => Ok(String::from_utf8_lossy(&line).into_owned()),
            // RFC 4954 §4: an over-long response line is answered 500 5.5.6.
            None => Ok("*".to_string()),
        }
    }

    async fn check_password(&mut self, user: String, password: String) -> Flow {
        let file = self.ctx.config.auth.users_file.clone();
        let name = user.clone();
        let verified = tokio::task::spawn_blocking(move || auth::verify(&file, &name, &password));
        if matches!(verified.await, Ok(true)) {
            metrics::inc(&metrics::get().auth_attempts, Outcome { result: "ok" });
            info!(session = self.id, client = %self.peer, user = %user, "authenticated");
            self.user = Some(user);
            return self.ok(&replies::AUTH_OK);
        }

        metrics::inc(&metrics::get().auth_attempts, Outcome { result: "failed" });
        warn!(session = self.id, client = %self.peer, user = %user, "authentication failed");
        tokio::time::sleep(self.ctx.config.auth.failure_delay.min(Duration::from_secs(30))).await;
        self.auth_failures += 1;
        if self.auth_failures >= self.ctx.config.auth.max_failures {
            return self.close_with(replies::TOO_MANY_AUTH_FAILURES);
        }
        self.error(&replies::AUTH_FAILED, "AUTH")
    }
}

type Credentials = Result<(String, String), SaslError>;
