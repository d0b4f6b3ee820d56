//! One SMTP session: read commands, keep the transaction state, answer, commit.
//!
//! The parsing is smtp-wire's; this module owns the I/O, the RFC 5321 state machine and
//! the commit. Replies to pipelined commands are collected and written when the input
//! runs dry (RFC 2920); the reply to the end of data is written and flushed at once,
//! right after the commit (I1, I2): nothing else runs between the final dot and the `250`.
//!
//! A session ends on `QUIT`, end of input, a timeout (`421 4.4.2`), too many errors
//! (`421 4.7.0`), or shutdown (`421 4.3.2` instead of the next command's reply; a
//! transaction whose data is complete still commits and gets its `250` first).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_wire::address::ReversePath;
use smtp_wire::command::{Body as BodyType, Command, MailParams, parse_command};
use smtp_wire::data::{BareEolScanner, DataDecoder};
use smtp_wire::line::{Line, LineReader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Listener;
use super::body::{BodySink, Finished};
use super::received;
use crate::Context;
use crate::dedupe::{self, Claim};
use crate::envelope::{Envelope, Recipient, Route};
use crate::maillog;
use crate::replies::{self, Reply};
use crate::routing;

/// A byte stream a session can run on (plain TCP now, TLS later).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

const READ_SIZE: usize = 64 * 1024;

mod secure;

/// Why the session loop stops.
enum End {
    Quit,
    Closed(&'static str),
}

type Flow = Result<(), End>;

#[derive(Clone, PartialEq, Eq)]
enum Greeting {
    None,
    Helo(String),
    Ehlo(String),
}

struct Transaction {
    from: ReversePath,
    params: MailParams,
    /// The index key of the client's TRANSID, if it gave one (RFC 1845).
    transid: Option<dedupe::Fingerprint>,
    /// Set when the TRANSID named a transaction committed before: this one only replays
    /// the original's final reply.
    resumed: Option<dedupe::Completed>,
    recipients: Vec<Recipient>,
    /// Where each recipient goes, to accept a repeated one without delivering it twice.
    destinations: HashSet<String>,
    /// BDAT chunks received so far; `None` until the first chunk.
    bdat: Option<Chunks>,
}

struct Chunks {
    sink: BodySink,
    scanner: BareEolScanner,
}

pub struct Session {
    ctx: Arc<Context>,
    id: u64,
    peer: SocketAddr,
    stream: Box<dyn Stream>,
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    lines: LineReader,
    greeting: Greeting,
    transaction: Option<Transaction>,
    errors: u32,
    /// A message acknowledged with `250` before the client has said anything since:
    /// if the session ends now without `QUIT`, the reply may not have arrived.
    unconfirmed: Option<spool::QueueId>,
    kind: Listener,
    /// The protocol and cipher once TLS is up.
    tls: Option<String>,
    /// The authenticated user.
    user: Option<String>,
    auth_failures: u32,
    /// The whole session ends by then, however busy (`limits.session_timeout`).
    deadline: Instant,
}

impl Session {
    pub fn new(
        ctx: Arc<Context>,
        id: u64,
        peer: SocketAddr,
        kind: Listener,
        stream: Box<dyn Stream>,
    ) -> Self {
        let lines = LineReader::new(ctx.config.limits.max_line_length);
        let deadline = Instant::now() + ctx.config.limits.session_timeout;
        Session {
            kind,
            tls: None,
            user: None,
            auth_failures: 0,
            deadline,
            ctx,
            id,
            peer,
            stream,
            input: Vec::with_capacity(READ_SIZE),
            start: 0,
            output: Vec::new(),
            lines,
            greeting: Greeting::None,
            transaction: None,
            errors: 0,
            unconfirmed: None,
        }
    }

    pub async fn run(mut self) {
        maillog::connected(self.id, self.peer);
        let reason = match self.converse().await {
            Ok(()) | Err(End::Quit) => "quit",
            Err(End::Closed(reason)) => reason,
        };
        if let (Some(qid), false) = (self.unconfirmed, reason == "quit") {
            maillog::ended_in_gap(qid, self.id, reason);
        }
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        maillog::disconnected(self.id, self.peer, reason);
    }

    async fn converse(&mut self) -> Flow {
        if self.kind == Listener::SubmissionTls {
            self.start_tls().await?;
        }
        if self.ctx.shutdown.is_cancelled() {
            return self.close_with(replies::shutting_down(&self.ctx.config.hostname));
        }
        self.reply(&replies::greeting(&self.ctx.config.hostname));

        loop {
            let line = self.next_line().await?;
            // The client spoke again, so it read the reply to its last message.
            self.unconfirmed = None;
            match line {
                Some(line) => self.command(&line).await?,
                None => self.error(&replies::LINE_TOO_LONG, "line")?,
            }
        }
    }

    /// The next command line, or `None` for one that was too long.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, End> {
        loop {
            let (line, used) = self.lines.next(&self.input[self.start..]);
            let line = line.map(|line| match line {
                Line::Complete(bytes) => Some(bytes.to_vec()),
                Line::TooLong => None,
            });
            self.start += used;
            if let Some(line) = line {
                return Ok(line);
            }
            self.read_command_bytes().await?;
        }
    }

    /// Flushes pending replies, then waits for more input, a timeout or shutdown.
    async fn read_command_bytes(&mut self) -> Flow {
        self.flush().await?;
        let timeout = self.ctx.config.limits.command_timeout;
        let shutdown = self.ctx.shutdown.clone();
        tokio::select! {
            read = self.read_more(timeout) => read,
            () = shutdown.cancelled() => {
                self.close_with(replies::shutting_down(&self.ctx.config.hostname))
            }
        }
    }

    async fn read_more(&mut self, timeout: Duration) -> Flow {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        self.input.reserve(READ_SIZE);
        // A slow trickle of bytes resets the per-read timeout but not the session's.
        let timeout = timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input)).await;
        match read {
            Err(_) => self.close_with(replies::timeout(&self.ctx.config.hostname)),
            Ok(Ok(0)) => Err(End::Closed("eof")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(End::Closed("read error")),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(e) => return self.error(&replies::for_parse_error(&e), verb(line)),
        };

        match command {
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => self.helo(name),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, .. } => self.rcpt(&to),
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.transaction = None;
                self.ok(&replies::RESET)
            }
            Command::Noop => self.ok(&replies::NOOP),
            Command::Quit => {
                self.reply(&replies::BYE);
                Err(End::Quit)
            }
            Command::Vrfy(_) => self.ok(&replies::VRFY),
            Command::Expn(_) => self.error(&replies::EXPN, "EXPN"),
            Command::Help(_) => self.ok(&replies::HELP),
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
        }
    }

    fn ehlo(&mut self, name: String) -> Flow {
        let config = &self.ctx.config;
        let mut out = Vec::new();
        let mut extra = Vec::new();
        if self.ctx.dedupe.enabled() {
            extra.push("CHECKPOINT");
        }
        if self.offers_starttls() {
            extra.push("STARTTLS");
        }
        if self.offers_auth() {
            extra.push("AUTH PLAIN LOGIN");
        }
        let max_size = config.limits.max_message_size;
        replies::ehlo(&config.hostname, &name, max_size, &extra, &mut out);
        self.output.extend_from_slice(&out);
        self.greeting = Greeting::Ehlo(name);
        self.transaction = None;
        Ok(())
    }

    fn helo(&mut self, name: String) -> Flow {
        self.greeting = Greeting::Helo(name);
        self.transaction = None;
        self.ok(&replies::helo(&self.ctx.config.hostname))
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) -> Flow {
        let checked = self.check_mail(&from, &params);
        if let Err(reply) = checked {
            return self.error(&reply, "MAIL");
        }
        let transid = match (&self.greeting, &params.transid) {
            (Greeting::Ehlo(helo), Some(id)) => Some(dedupe::transid_key(helo, id)),
            _ => None,
        };
        let resumed = transid.and_then(|key| self.ctx.dedupe.completed(&key, unix_now()));
        self.transaction = Some(Transaction {
            from,
            params,
            transid,
            resumed,
            recipients: Vec::new(),
            destinations: HashSet::new(),
            bdat: None,
        });
        match resumed {
            // RFC 1845: the offset is the whole message, so the client sends no more data.
            Some(done) => self.ok(&replies::transaction_offset(done.size)),
            None => self.ok(&replies::SENDER_OK),
        }
    }

    fn check_mail(&self, from: &ReversePath, params: &MailParams) -> Result<(), Reply> {
        match self.greeting {
            Greeting::None => return Err(replies::NEED_HELO),
            Greeting::Helo(_) if has_params(params) => return Err(replies::PARAMS_NEED_EHLO),
            _ => {}
        }
        if self.transaction.is_some() {
            return Err(replies::NESTED_MAIL);
        }
        if self.kind != Listener::Smtp && self.user.is_none() {
            return Err(replies::AUTH_REQUIRED);
        }
        if let Some(user) = &self.user
            && self.ctx.config.auth.sender_must_match
            && !crate::auth::owns(user, &from.to_string(), &self.ctx.config.local.domains)
        {
            return Err(replies::SENDER_NOT_OWNED);
        }
        if matches!(params.body, Some(BodyType::BinaryMime)) {
            return Err(replies::NO_BINARYMIME);
        }
        if params.transid.is_some() && !self.ctx.dedupe.enabled() {
            return Err(replies::NO_TRANSID);
        }
        if params.size.is_some_and(|size| size > self.ctx.config.limits.max_message_size) {
            return Err(replies::TOO_BIG);
        }
        if let ReversePath::Mailbox(mailbox) = from
            && !mailbox.is_ascii()
            && !params.smtputf8
        {
            return Err(replies::NEEDS_SMTPUTF8);
        }
        Ok(())
    }

    fn rcpt(&mut self, to: &smtp_wire::address::ForwardPath) -> Flow {
        let max = self.ctx.config.limits.max_recipients;
        let Some(txn) = &self.transaction else {
            return self.error(&replies::NEED_MAIL, "RCPT");
        };
        if txn.resumed.is_some() {
            // The original transaction has its recipients; these are only acknowledged.
            return self.ok(&replies::RECIPIENT_OK);
        }
        let ascii_ok = match to {
            smtp_wire::address::ForwardPath::Mailbox(m) => m.is_ascii() || txn.params.smtputf8,
            smtp_wire::address::ForwardPath::Postmaster => true,
        };
        if !ascii_ok {
            return self.error(&replies::NEEDS_SMTPUTF8, "RCPT");
        }
        if txn.recipients.len() >= max {
            return self.error(&replies::TOO_MANY_RECIPIENTS, "RCPT");
        }

        let may_relay = self.user.is_some() || self.ctx.config.relay.trusts(self.peer.ip());
        let route = match routing::route(&self.ctx.config.local, may_relay, to) {
            Ok(route) => route,
            Err(reply) => return self.error(&reply, "RCPT"),
        };
        let Some(txn) = &mut self.transaction else {
            return Err(End::Closed("internal state"));
        };
        // A repeated recipient is accepted once more but delivered once.
        let destination = match &route {
            Route::Local { domain, mailbox } => format!("{mailbox}@{domain}"),
            Route::Remote { .. } => to.to_string().to_lowercase(),
        };
        if txn.destinations.insert(destination) {
            let address = to.to_string();
            txn.recipients.push(Recipient { address, route });
        }
        self.ok(&replies::RECIPIENT_OK)
    }

    async fn data(&mut self) -> Flow {
        match &self.transaction {
            None => return self.error(&replies::NEED_MAIL, "DATA"),
            Some(txn) if txn.bdat.is_some() => return self.error(&replies::NO_MIXING, "DATA"),
            Some(txn) if txn.recipients.is_empty() && txn.resumed.is_none() => {
                return self.error(&replies::NEED_RCPT, "DATA");
            }
            Some(_) => {}
        }
        self.reply(&replies::START_DATA);
        self.flush().await?;

        let mut sink = BodySink::new(&self.ctx.spool, self.ctx.config.limits.max_message_size);
        let mut decoder = DataDecoder::new();
        let mut scratch = Vec::with_capacity(READ_SIZE);
        loop {
            scratch.clear();
            let decoded = decoder.decode(&self.input[self.start..], &mut scratch);
            self.start += decoded.consumed;
            sink.write(&scratch);
            if decoded.end {
                break;
            }
            self.read_more(self.ctx.config.limits.data_timeout).await?;
        }
        let ended = Instant::now();

        let bare = decoder.bare_line_ending();
        self.finish_message(sink, bare, ended).await
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let refusal = self.check_bdat();
        let max = self.ctx.config.limits.max_message_size;
        let mut chunks = match (&refusal, self.transaction.as_mut()) {
            (None, Some(txn)) => txn.bdat.take().unwrap_or_else(|| Chunks {
                sink: BodySink::new(&self.ctx.spool, max),
                scanner: BareEolScanner::new(),
            }),
            _ => Chunks { sink: BodySink::new(&self.ctx.spool, 0), scanner: BareEolScanner::new() },
        };

        // The chunk is read in full even when refused, so the session stays in step.
        self.read_chunk(size, &mut chunks).await?;
        let ended = Instant::now();

        if let Some(reply) = refusal {
            return self.error(&reply, "BDAT");
        }
        if chunks.sink.too_big() {
            self.transaction = None;
            return self.error(&replies::TOO_BIG, "BDAT");
        }
        if !last {
            let reply = replies::chunk_received(size);
            if let Some(txn) = self.transaction.as_mut() {
                txn.bdat = Some(chunks);
            }
            return self.ok(&reply);
        }
        let bare = chunks.scanner.finish();
        self.finish_message(chunks.sink, bare, ended).await
    }

    fn check_bdat(&self) -> Option<Reply> {
        if self.greeting != Greeting::None && !matches!(self.greeting, Greeting::Ehlo(_)) {
            return Some(replies::BDAT_NEEDS_EHLO);
        }
        match &self.transaction {
            None => Some(replies::NEED_MAIL),
            Some(txn) if txn.recipients.is_empty() && txn.resumed.is_none() => {
                Some(replies::NEED_RCPT)
            }
            Some(_) => None,
        }
    }

    async fn read_chunk(&mut self, size: u64, chunks: &mut Chunks) -> Flow {
        let mut remaining = size;
        loop {
            let available = (self.input.len() - self.start) as u64;
            let take = available.min(remaining) as usize;
            let bytes = &self.input[self.start..self.start + take];
            chunks.sink.write(bytes);
            chunks.scanner.scan(bytes);
            self.start += take;
            remaining -= take as u64;
            if remaining == 0 {
                return Ok(());
            }
            self.read_more(self.ctx.config.limits.data_timeout).await?;
        }
    }

    /// The end of a message's data: refuse it, or commit it and answer `250`.
    async fn finish_message(&mut self, sink: BodySink, bare: bool, ended: Instant) -> Flow {
        let Some(txn) = self.transaction.take() else {
            return self.error(&replies::NEED_MAIL, "DATA");
        };
        if let Some(original) = txn.resumed {
            return self.replay(original).await;
        }
        let qid = Some(sink.qid());
        if sink.too_big() {
            return self.error_for(qid, &replies::TOO_BIG, "DATA");
        }
        if bare {
            return self.error_for(qid, &replies::BARE_LINE_ENDING, "DATA");
        }
        let Some(body) = self.finish_body(sink).await else {
            return self.error_for(qid, &replies::LOCAL_ERROR, "DATA");
        };
        // A loop is refused here rather than bounced later: the sender's MTA reports it.
        if body.hops > self.ctx.config.queue.max_hops {
            self.ctx.spool.discard_body_file(body.qid);
            return self.error_for(qid, &replies::TOO_MANY_HOPS, "DATA");
        }

        let claim = self.claim_recipients(&txn, &body).await;
        if claim.as_ref().is_some_and(dedupe::Claim::all_duplicates) {
            return self.suppress(&txn, body, claim, ended).await;
        }

        let Some((stored, envelope)) = self.commit(&txn, body, claim).await else {
            return self.error_for(qid, &replies::LOCAL_ERROR, "DATA");
        };
        if let Some(hold) = self.ctx.hold_reply {
            tracing::warn!(queue_id = %stored.qid, "test hook: committed, holding the 250");
            tokio::time::sleep(hold).await;
        }
        self.unconfirmed = Some(stored.qid);
        self.reply(&replies::queued(&stored.qid.to_string()));
        // Committed is committed: the message is queued even if the client is gone and
        // the 250 cannot be written (its retry will be recognised as a duplicate).
        let flushed = self.flush().await;
        let gap_us = ended.elapsed().as_micros() as u64;

        let (from, size) = (envelope.sender.as_str(), envelope.size);
        let queued = envelope.recipients.len();
        maillog::accepted(stored.qid, self.id, from, queued, size, gap_us);
        if queued < txn.recipients.len() {
            let suppressed = txn.recipients.len() - queued;
            maillog::suppressed(stored.qid, self.id, suppressed, "some recipients");
        }
        self.ctx.queue.submit(stored, envelope);
        flushed
    }

    /// A resumed transaction that was committed before: repeat the original's `250`.
    async fn replay(&mut self, original: dedupe::Completed) -> Flow {
        self.unconfirmed = Some(original.qid);
        self.reply(&replies::queued(&original.qid.to_string()));
        self.flush().await?;
        maillog::suppressed(original.qid, self.id, 0, "transid");
        Ok(())
    }

    /// Hands the body over for commit; a body in its own file is fdatasync'd first, on the
    /// blocking pool so that many sessions' flushes proceed in parallel.
    async fn finish_body(&mut self, sink: BodySink) -> Option<Finished> {
        let mut finished = match sink.finish() {
            Ok(finished) => finished,
            Err(e) => {
                tracing::error!(session = self.id, error = %e, "cannot write message body");
                return None;
            }
        };
        if let Some(file) = finished.file.take() {
            let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
            if !matches!(synced, Ok(Ok(()))) {
                tracing::error!(session = self.id, "cannot sync message body file");
                self.ctx.spool.discard_body_file(finished.qid);
                return None;
            }
        }
        Some(finished)
    }

    /// Looks the recipients up in the duplicate index; `None` when suppression is off.
    async fn claim_recipients(&mut self, txn: &Transaction, body: &Finished) -> Option<Claim> {
        let index = &self.ctx.dedupe;
        if !index.enabled() {
            return None;
        }
        let sender = txn.from.to_string();
        let fingerprints: Vec<_> = txn
            .recipients
            .iter()
            .map(|r| dedupe::fingerprint(&sender, &r.address, &body.sha256))
            .collect();
        Some(index.claim(body.qid, &fingerprints, unix_now()).await)
    }

    /// Every recipient already has this message: say `250`, queue nothing.
    async fn suppress(
        &mut self,
        txn: &Transaction,
        body: Finished,
        claim: Option<Claim>,
        ended: Instant,
    ) -> Flow {
        self.ctx.spool.discard_body_file(body.qid);
        let original = claim.as_ref().and_then(Claim::original).unwrap_or(body.qid);
        if let Some(claim) = claim {
            self.ctx.dedupe.release(claim);
        }

        self.unconfirmed = Some(original);
        self.reply(&replies::duplicate(&original.to_string()));
        self.flush().await?;
        let gap_us = ended.elapsed().as_micros() as u64;
        tracing::debug!(session = self.id, gap_us, "duplicate acknowledged");
        maillog::suppressed(original, self.id, txn.recipients.len(), "whole message");
        Ok(())
    }

    /// Makes the message durable with the recipients not already accepted, and settles
    /// the duplicate-index claim either way.
    async fn commit(
        &mut self,
        txn: &Transaction,
        body: Finished,
        claim: Option<Claim>,
    ) -> Option<(spool::Stored, Envelope)> {
        let now = unix_now();
        let recipients: Vec<Recipient> = match &claim {
            Some(claim) => txn
                .recipients
                .iter()
                .zip(&claim.duplicates)
                .filter(|(_, dup)| dup.is_none())
                .map(|(rcpt, _)| rcpt.clone())
                .collect(),
            None => txn.recipients.clone(),
        };
        let transid = txn.transid.map(|key| (key, body.len));
        let keep = claim.as_ref().and_then(|c| self.ctx.dedupe.keep_for(c, transid, now));
        let envelope = self.envelope(txn, &recipients, &body);

        let qid = body.qid;
        let committed = self.ctx.spool.commit(qid, envelope.encode(), body.body, keep).await;
        match (committed, claim) {
            (Ok(stored), claim) => {
                if let Some(claim) = claim {
                    self.ctx.dedupe.confirm(claim, transid, qid, now);
                }
                Some((stored, envelope))
            }
            (Err(e), claim) => {
                tracing::error!(session = self.id, error = %e, "cannot commit message");
                if let Some(claim) = claim {
                    self.ctx.dedupe.release(claim);
                }
                self.ctx.spool.discard_body_file(qid);
                None
            }
        }
    }

    fn envelope(&self, txn: &Transaction, recipients: &[Recipient], body: &Finished) -> Envelope {
        let (helo, esmtp) = match &self.greeting {
            Greeting::Ehlo(name) => (name.as_str(), true),
            Greeting::Helo(name) => (name.as_str(), false),
            Greeting::None => ("", false),
        };
        let now = chrono::Utc::now();
        let single = match recipients {
            [only] => Some(only.address.as_str()),
            _ => None,
        };
        let received = received::field(&received::Hop {
            helo,
            peer: self.peer,
            hostname: &self.ctx.config.hostname,
            protocol: received::protocol(
                esmtp,
                txn.params.smtputf8,
                self.tls.is_some(),
                self.user.is_some(),
            ),
            tls: self.tls.as_deref(),
            qid: body.qid,
            single_recipient: single,
            when: now,
        });
        Envelope {
            arrival: now.timestamp(),
            sender: txn.from.to_string(),
            recipients: recipients.to_vec(),
            received,
            size: body.len,
            smtputf8: txn.params.smtputf8,
            eight_bit: body.eight_bit,
            content_sha256: body.sha256.clone(),
        }
    }

    fn reply(&mut self, reply: &Reply) {
        reply.write(&mut self.output);
    }

    fn ok(&mut self, reply: &Reply) -> Flow {
        self.reply(reply);
        Ok(())
    }

    /// Sends an error reply, counting it against the session's error limit.
    fn error(&mut self, reply: &Reply, command: &str) -> Flow {
        self.error_for(None, reply, command)
    }

    /// An error reply about a message whose data was received (it has a queue ID).
    fn error_for(&mut self, qid: Option<spool::QueueId>, reply: &Reply, command: &str) -> Flow {
        maillog::rejected(self.id, qid, command, reply.code, reply.status, &reply.text);
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.ctx.config.limits.max_errors {
            return self.close_with(replies::TOO_MANY_ERRORS);
        }
        Ok(())
    }

    fn close_with(&mut self, reply: Reply) -> Flow {
        self.reply(&reply);
        Err(End::Closed(match reply.status {
            "4.4.2" => "timeout",
            "4.7.0" => "too many errors",
            "4.3.2" => "shutdown",
            _ => "closed",
        }))
    }

    async fn flush(&mut self) -> Flow {
        if self.output.is_empty() {
            return Ok(());
        }
        let written = self.stream.write_all(&self.output).await;
        self.output.clear();
        match written {
            Ok(()) => self.stream.flush().await.map_err(|_| End::Closed("write error")),
            Err(_) => Err(End::Closed("write error")),
        }
    }
}

fn has_params(params: &MailParams) -> bool {
    params.size.is_some() || params.body.is_some() || params.smtputf8 || params.transid.is_some()
}

/// The verb of a command line, for the log (never its arguments: they may hold secrets).
fn verb(line: &[u8]) -> &'static str {
    let word: Vec<u8> = line
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .map(|b| b.to_ascii_uppercase())
        .collect();
    const KNOWN: [&str; 15] = [
        "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
        "HELP", "STARTTLS", "AUTH", "LHLO",
    ];
    KNOWN.iter().find(|k| k.as_bytes() == word.as_slice()).copied().unwrap_or("unknown")
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
