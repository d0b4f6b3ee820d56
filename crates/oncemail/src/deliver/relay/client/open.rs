//! Opening a connection: TCP, the greeting, EHLO (or HELO), STARTTLS.

use std::net::{IpAddr, SocketAddr};

use smtp_wire::command::Command;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::wire::{Wire, WireError};
use super::{ConnectError, Connection, Extensions, Reply, Settings, tls};

impl Connection {
    /// Connects to `addr` and gets the session ready for mail. `server_name`
    /// is the name we looked `addr` up by, used for TLS SNI.
    pub async fn open(
        addr: SocketAddr,
        server_name: &str,
        settings: &Settings,
    ) -> Result<Connection, ConnectError> {
        check_helo(&settings.helo)?;
        let tcp = connect(addr, settings).await?;
        let mut conn = Connection {
            wire: Wire::new(Box::new(tcp)),
            offers: Extensions::default(),
            timeouts: settings.timeouts,
            tls: None,
            usable: true,
        };

        match conn.start(addr.ip(), server_name, settings).await {
            Ok(()) => Ok(conn),
            Err(ConnectError::Refused(reply)) => {
                // RFC 5321 §3.1: after a refusal the server waits for our
                // QUIT; after a 421 it is gone already.
                if reply.code != 421 {
                    conn.quit().await;
                }
                Err(ConnectError::Refused(reply))
            }
            Err(error) => Err(error),
        }
    }

    async fn start(
        &mut self,
        ip: IpAddr,
        server_name: &str,
        settings: &Settings,
    ) -> Result<(), ConnectError> {
        self.greeting().await?;
        self.hello(&settings.helo).await?;

        if settings.starttls && self.offers.starttls {
            self.starttls(ip, server_name, &settings.helo).await?;
        }
        Ok(())
    }

    async fn greeting(&mut self) -> Result<(), ConnectError> {
        let reply = self.wire.reply(self.timeouts.greeting, "greeting").await;
        match reply.map_err(protocol)? {
            reply if reply.is_2xx() => Ok(()),
            reply if reply.is_4xx() || reply.is_5xx() => Err(ConnectError::Refused(reply)),
            reply => Err(unexpected("greeting", &reply)),
        }
    }

    /// EHLO, and HELO when EHLO gets a 5xx (RFC 5321 §4.1.4 allows a client
    /// to fall back). The extensions are those of this reply alone.
    async fn hello(&mut self, helo: &str) -> Result<(), ConnectError> {
        let ehlo = self.exchange(Command::Ehlo(helo.to_owned()), "EHLO").await?;
        if ehlo.is_2xx() {
            self.offers = Extensions::from_ehlo_lines(&ehlo.lines);
            return Ok(());
        }
        if !ehlo.is_5xx() {
            return Err(refusal("EHLO", ehlo));
        }

        let helo = self.exchange(Command::Helo(helo.to_owned()), "HELO").await?;
        if !helo.is_2xx() {
            return Err(refusal("HELO", helo));
        }
        self.offers = Extensions::default();
        Ok(())
    }

    /// Upgrades to TLS and says EHLO again (RFC 3207 §4.2: what the server
    /// said before TLS no longer counts). A STARTTLS refused with anything
    /// but 421 leaves us in plaintext, as opportunistic TLS does.
    async fn starttls(
        &mut self,
        ip: IpAddr,
        server_name: &str,
        helo: &str,
    ) -> Result<(), ConnectError> {
        let reply = self.exchange(Command::StartTls, "STARTTLS").await?;
        if reply.code == 421 {
            return Err(ConnectError::Refused(reply));
        }
        if !reply.is_2xx() {
            tracing::debug!(%reply, "STARTTLS refused; going on without TLS");
            return Ok(());
        }

        // Bytes after the 220 were sent in plaintext and would be read as
        // if they came over TLS: the command-injection attack of
        // CVE-2011-0411, from the server's side.
        if self.wire.has_unread() {
            return Err(ConnectError::Protocol("data after the STARTTLS reply".into()));
        }

        // TODO: a failed handshake is a Protocol error, and the caller decides
        // whether to retry in plaintext; that fallback policy (RFC 7435 §3) is
        // not written yet.
        let limit = self.timeouts.ehlo;
        let plain = self.wire.take_stream();
        let upgraded = tls::handshake(plain, server_name, ip, limit).await;
        let upgraded = upgraded.map_err(ConnectError::Protocol)?;
        self.wire.put_stream(upgraded.io);
        self.tls = Some(upgraded.description);

        self.hello(helo).await
    }

    /// One command and its reply, under the EHLO timeout.
    async fn exchange(
        &mut self,
        command: Command,
        step: &'static str,
    ) -> Result<Reply, ConnectError> {
        let limit = self.timeouts.ehlo;
        let line = command.to_string();
        self.wire.command(&line, limit, step).await.map_err(protocol)?;
        self.wire.reply(limit, step).await.map_err(protocol)
    }
}

async fn connect(addr: SocketAddr, settings: &Settings) -> Result<TcpStream, ConnectError> {
    let limit = settings.timeouts.connect;
    let unreachable = ConnectError::Unreachable;
    match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            // Our writes are whole commands or body blocks: Nagle's algorithm would only
            // hold the last one back for the peer's delayed ACK (~40 ms a message).
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(error)) => Err(unreachable(format!("connecting to {addr}: {error}"))),
        Err(_) => Err(unreachable(format!("connecting to {addr}: timed out after {limit:?}"))),
    }
}

/// Our name goes into a command line as it is, so it must be one word of
/// printable ASCII: anything else could inject commands.
fn check_helo(helo: &str) -> Result<(), ConnectError> {
    match !helo.is_empty() && helo.bytes().all(|b| b.is_ascii_graphic()) {
        true => Ok(()),
        false => Err(ConnectError::Protocol(format!("invalid HELO name {helo:?}"))),
    }
}

fn protocol(error: WireError) -> ConnectError {
    ConnectError::Protocol(error.to_string())
}

/// A 4xx or 5xx is a refusal; any other code is not a reply to this step.
fn refusal(step: &str, reply: Reply) -> ConnectError {
    match reply.is_4xx() || reply.is_5xx() {
        true => ConnectError::Refused(reply),
        false => unexpected(step, &reply),
    }
}

fn unexpected(step: &str, reply: &Reply) -> ConnectError {
    ConnectError::Protocol(format!("unexpected reply to {step}: {reply}"))
}
