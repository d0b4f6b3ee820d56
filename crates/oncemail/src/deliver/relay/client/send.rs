//! One mail transaction on an open connection.
//!
//! # Order
//!
//! What needs no network is checked first, and fails every recipient with
//! a reply we make up (its text starts with "not sent"):
//! - a size over the server's SIZE limit: `552 5.3.4`;
//! - a message that needs SMTPUTF8, for a server without it: `553 5.6.7`;
//! - a malformed sender: `553 5.1.7`. A malformed recipient fails alone,
//!   with `553 5.1.3`. Addresses go into command lines, so they are parsed
//!   and written back in canonical form, never sent as given.
//!
//! Then MAIL, RCPT and DATA. With PIPELINING (RFC 2920) they go out in one
//! write and the replies are read in order; without it, one at a time, and
//! DATA only when some RCPT was accepted. MAIL with TRANSID goes alone, as
//! its 355 changes what follows (draft-fanf-smtp-rfc1845bis §3.2: it must
//! end its group); the RCPTs and DATA follow in a second group.
//!
//! # Outcomes
//!
//! - A 4xx (`Deferred`) or 5xx (`Failed`) to MAIL decides every recipient;
//!   to RCPT, that recipient; to DATA, those accepted by RCPT.
//! - After our final dot, the reply decides the accepted recipients: 2xx
//!   `Delivered`, 4xx `Deferred`, 5xx `Failed`. No reply (timeout, lost
//!   connection, even a failed write of the dot itself) makes them
//!   `PossiblyDelivered`.
//! - A `421`, a timeout, an I/O error or a reply out of place before the
//!   dot makes every open recipient `Deferred`, and the connection unusable.
//!
//! # Limits
//!
//! - RFC 1845: a 355 whose offset is the message size means the server has
//!   the whole transaction already; we skip RCPT and send DATA with an
//!   empty content to get its final reply. Any other offset is taken as a
//!   250 and everything is sent again: resuming from an offset is not
//!   implemented.
//! - XXX: a pipelined group is written whole before any reply is read, so
//!   the server's replies to it must fit in the socket buffers of both
//!   sides, or both wait on each other until a timeout (RFC 2920 §3.1).
//!   Replies run to some 30 octets, so that takes thousands of
//!   recipients; callers send far fewer per transaction, and servers cap
//!   them near 100 anyway (452 for the rest, RFC 5321 §4.5.3.1.10).
//! - TODO: BDAT (RFC 3030 CHUNKING) is not used even when offered; DATA
//!   works with every server, and BINARYMIME content never reaches us.
//! - TODO: RCPT carries no DSN parameters (NOTIFY, ORCPT; RFC 3461).

use std::fmt;

use smtp_wire::address::{self, ForwardPath, ReversePath};
use smtp_wire::command::{Body, Command, MailParams, RcptParams};
use smtp_wire::data::DotStuffer;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::wire::WireError;
use super::{Connection, Delivery, Extensions, Message, Outcome, Reply};

/// Body octets read at a time. Dot-stuffing at most doubles them, so each
/// write of content is at most 64 KiB.
const READ_CHUNK: usize = 32 * 1024;

impl Connection {
    /// Sends one message and says what became of each recipient; see the
    /// module's contract above for the rules.
    pub async fn send(&mut self, mut message: Message<'_>) -> Delivery {
        let outcomes = self.transaction(&mut message).await;
        Delivery { outcomes, tls: self.tls.clone() }
    }

    async fn transaction(&mut self, message: &mut Message<'_>) -> Vec<Outcome> {
        let count = message.recipients.len();
        if !self.usable {
            return vec![Outcome::Deferred("connection no longer usable".into()); count];
        }
        let plan = match Plan::new(message, &self.offers) {
            Ok(plan) => plan,
            Err(reply) => return vec![Outcome::Failed(reply); count],
        };

        let mut tally = Tally::new(count);
        for &index in &plan.malformed {
            tally.set(index, Outcome::Failed(synthetic::bad_recipient()));
        }
        if plan.rcpts.is_empty() {
            return tally.finish("no recipient to send to");
        }

        match self.run(&plan, message, &mut tally).await {
            Ok(()) => tally.finish("transaction ended without a reply for this recipient"),
            Err(halt) => {
                self.usable = false;
                tracing::debug!(%halt, "relay transaction halted");
                tally.finish(&halt.to_string())
            }
        }
    }

    async fn run(
        &mut self,
        plan: &Plan,
        message: &mut Message<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let limits = self.timeouts;
        let pipelining = self.offers.pipelining;
        let rcpt_lines = plan.rcpts.iter().map(|(_, line)| line.as_str());

        let all_at_once = pipelining && !plan.transid;
        let mut group = vec![plan.mail.as_str()];
        if all_at_once {
            group.extend(rcpt_lines.clone());
            group.push("DATA");
        }
        self.write_group(&group, limits.mail, "MAIL").await?;
        let reply = self.wire.reply(limits.mail, "MAIL").await?;

        if plan.transid && replayed(&reply, message.size) {
            return self.replay(tally).await;
        }
        let mail_ok = judge_mail(reply, plan.transid, tally)?;

        // After a MAIL that went alone, the rest.
        if !all_at_once {
            if !mail_ok {
                return Ok(());
            }
            if pipelining {
                let group: Vec<&str> = rcpt_lines.chain(["DATA"]).collect();
                self.write_group(&group, limits.rcpt, "RCPT").await?;
            }
        }

        for (index, line) in &plan.rcpts {
            if !pipelining {
                self.wire.command(line, limits.rcpt, "RCPT").await?;
            }
            let reply = self.wire.reply(limits.rcpt, "RCPT").await?;
            match mail_ok {
                true => judge_rcpt(*index, reply, tally)?,
                // Replies to RCPTs pipelined after a failed MAIL.
                false => drop(closing(reply)?),
            }
        }

        if !pipelining {
            if tally.accepted.is_empty() {
                self.reset().await;
                return Ok(());
            }
            self.wire.command("DATA", limits.data_init, "DATA").await?;
        }
        let reply = closing(self.wire.reply(limits.data_init, "DATA").await?)?;
        self.after_data(reply, mail_ok, message, tally).await
    }

    /// Goes on from the reply to DATA.
    async fn after_data(
        &mut self,
        reply: Reply,
        mail_ok: bool,
        message: &mut Message<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let nobody = !mail_ok || tally.accepted.is_empty();
        match (reply.code == 354, nobody) {
            (true, false) => {
                let end = self.stream_body(&mut *message.body).await?;
                self.final_dot(&end, tally).await;
            }
            // Possible when DATA was pipelined. Nothing can be delivered,
            // so an empty content ends it, whatever the reply.
            (true, true) => {
                self.wire.write(b".\r\n", self.timeouts.data_block, "end of data").await?;
                closing(self.wire.reply(self.timeouts.data_term, "end of data").await?)?;
                self.reset().await;
            }
            (false, true) if !mail_ok => {}
            (false, true) => self.reset().await,
            (false, false) => {
                judge_data(reply, tally)?;
                self.reset().await;
            }
        }
        Ok(())
    }

    /// The server holds this whole transaction from an earlier attempt: DATA
    /// and an empty content get the original's final reply, which decides
    /// every recipient.
    async fn replay(&mut self, tally: &mut Tally) -> Result<(), Halt> {
        tally.accept_open();
        let limit = self.timeouts.data_init;
        self.wire.command("DATA", limit, "DATA").await?;
        let reply = closing(self.wire.reply(limit, "DATA").await?)?;

        if reply.code != 354 {
            judge_data(reply, tally)?;
            self.reset().await;
            return Ok(());
        }
        self.final_dot(b".\r\n", tally).await;
        Ok(())
    }

    /// Sends the content in chunks, dot-stuffed, and returns what ends it:
    /// a CRLF if the last line lacks one, and `.` CRLF.
    ///
    /// A body that cannot be read leaves us in the middle of DATA. The dot
    /// must not be sent, since that would deliver a truncated message;
    /// dropping the connection is the only way out.
    async fn stream_body(
        &mut self,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<Vec<u8>, Halt> {
        let limit = self.timeouts.data_block;
        let mut input = vec![0; READ_CHUNK];
        let mut output = Vec::with_capacity(2 * READ_CHUNK);
        let mut stuffer = DotStuffer::new();

        loop {
            let read = body.read(&mut input).await;
            let read = read.map_err(|e| Halt::Broken(format!("reading the message: {e}")))?;
            if read == 0 {
                break;
            }
            output.clear();
            stuffer.stuff(&input[..read], &mut output);
            self.wire.write(&output, limit, "DATA content").await?;
        }

        output.clear();
        stuffer.finish(&mut output);
        Ok(output)
    }

    /// Sends the end of data and reads its reply: the window DESIGN.md is
    /// about. From the first byte of `end` on, no reply means the accepted
    /// recipients are `PossiblyDelivered`.
    async fn final_dot(&mut self, end: &[u8], tally: &mut Tally) {
        let reply = match self.dot_exchange(end).await {
            Ok(reply) => reply,
            Err(error) => {
                self.usable = false;
                let why = format!("{error}, after the final dot");
                tally.settle_accepted(|| Outcome::PossiblyDelivered(why.clone()));
                return;
            }
        };

        if reply.code == 421 {
            self.usable = false;
        }
        match reply.code / 100 {
            2 => tally.settle_accepted(|| Outcome::Delivered(reply.clone())),
            4 => tally.settle_accepted(|| Outcome::Deferred(reply.to_string())),
            5 => tally.settle_accepted(|| Outcome::Failed(reply.clone())),
            _ => {
                self.usable = false;
                let why = format!("unexpected reply to the final dot: {reply}");
                tally.settle_accepted(|| Outcome::PossiblyDelivered(why.clone()));
            }
        }
    }

    async fn dot_exchange(&mut self, end: &[u8]) -> Result<Reply, WireError> {
        self.wire.write(end, self.timeouts.data_block, "end of data").await?;
        self.wire.reply(self.timeouts.data_term, "end of data").await
    }

    /// Ends a transaction abandoned half-way, so the next starts clean. A
    /// failure costs the connection, never an outcome.
    pub(super) async fn reset(&mut self) {
        let limit = self.timeouts.ehlo;
        let reply = match self.wire.command("RSET", limit, "RSET").await {
            Ok(()) => self.wire.reply(limit, "RSET").await,
            Err(error) => Err(error),
        };
        match reply {
            Ok(reply) if reply.is_2xx() => {}
            Ok(reply) => {
                tracing::debug!(%reply, "RSET refused; the connection is not reused");
                self.usable = false;
            }
            Err(error) => {
                tracing::debug!(%error, "RSET failed; the connection is not reused");
                self.usable = false;
            }
        }
    }

    /// Writes command lines in one go.
    async fn write_group(
        &mut self,
        lines: &[&str],
        limit: std::time::Duration,
        step: &'static str,
    ) -> Result<(), WireError> {
        let mut bytes = Vec::new();
        for line in lines {
            tracing::debug!(command = line, "relay client sends");
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        self.wire.write(&bytes, limit, step).await
    }
}

/// The command lines of one transaction, checked before anything is sent.
struct Plan {
    mail: String,
    /// MAIL carries TRANSID.
    transid: bool,
    /// The recipients with well-formed addresses: index and RCPT line.
    rcpts: Vec<(usize, String)>,
    /// The indexes of the others.
    malformed: Vec<usize>,
}

impl Plan {
    /// Err is the reply that fails every recipient.
    fn new(message: &Message<'_>, offers: &Extensions) -> Result<Plan, Reply> {
        if let Some(limit) = offers.size_limit()
            && message.size > limit
        {
            return Err(synthetic::too_big(message.size, limit));
        }
        let from = parse_sender(message.sender).ok_or_else(synthetic::bad_sender)?;

        let mut needs_utf8 = message.smtputf8 || !sender_is_ascii(&from);
        let mut rcpts = Vec::new();
        let mut malformed = Vec::new();
        for (index, address) in message.recipients.iter().enumerate() {
            let Some(to) = parse_recipient(address) else {
                malformed.push(index);
                continue;
            };
            needs_utf8 |= !recipient_is_ascii(&to);
            rcpts.push((index, Command::Rcpt { to, params: RcptParams {} }.to_string()));
        }
        if needs_utf8 && !offers.smtputf8 {
            return Err(synthetic::no_smtputf8());
        }

        let params = mail_params(message, offers, needs_utf8);
        let transid = params.transid.is_some();
        let mail = Command::Mail { from, params }.to_string();
        Ok(Plan { mail, transid, rcpts, malformed })
    }
}

/// Each parameter only when the server offers its extension.
fn mail_params(message: &Message<'_>, offers: &Extensions, smtputf8: bool) -> MailParams {
    let eight_bit = message.eight_bit && offers.eight_bit_mime;
    let transid = message.transid.filter(|id| offers.checkpoint && transid_ok(id));
    MailParams {
        size: offers.size.map(|_| message.size),
        body: eight_bit.then_some(Body::EightBitMime),
        smtputf8,
        transid: transid.map(str::to_owned),
    }
}

fn parse_sender(sender: &str) -> Option<ReversePath> {
    match address::parse_reverse_path(&format!("<{sender}>")) {
        Ok((from, "")) => Some(from),
        _ => None,
    }
}

fn parse_recipient(recipient: &str) -> Option<ForwardPath> {
    match address::parse_forward_path(&format!("<{recipient}>")) {
        Ok((to, "")) => Some(to),
        _ => None,
    }
}

fn sender_is_ascii(from: &ReversePath) -> bool {
    match from {
        ReversePath::Null => true,
        ReversePath::Mailbox(mailbox) => mailbox.is_ascii(),
    }
}

fn recipient_is_ascii(to: &ForwardPath) -> bool {
    match to {
        ForwardPath::Postmaster => true,
        ForwardPath::Mailbox(mailbox) => mailbox.is_ascii(),
    }
}

/// RFC 1845 §2 `local@domain`, printable ASCII without angle brackets, at
/// most 256 octets (draft-fanf-smtp-rfc1845bis): what our server accepts.
fn transid_ok(id: &str) -> bool {
    let char_ok = |b: u8| b.is_ascii_graphic() && b != b'<' && b != b'>';
    let parts_ok = id.rsplit_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
    id.len() <= 256 && parts_ok && id.bytes().all(char_ok)
}

/// RFC 1845 §3: `355 <offset> ...`. The server has the whole transaction
/// when the offset is the message size.
fn replayed(reply: &Reply, size: u64) -> bool {
    let first_word = reply.lines.first().and_then(|line| line.split(' ').next());
    let offset = first_word.and_then(|word| word.parse::<u64>().ok());
    reply.code == 355 && offset == Some(size)
}

/// Why a transaction stopped before its end; the connection is unusable.
enum Halt {
    /// Lost, timed out, or a reply out of place; the text says where.
    Broken(String),
    /// The server said 421.
    Closing(Reply),
}

impl From<WireError> for Halt {
    fn from(error: WireError) -> Halt {
        Halt::Broken(error.to_string())
    }
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broken(why) => f.write_str(why),
            Self::Closing(reply) => write!(f, "server closing the connection: {reply}"),
        }
    }
}

/// A 421 ends everything, whatever it answers.
fn closing(reply: Reply) -> Result<Reply, Halt> {
    match reply.code {
        421 => Err(Halt::Closing(reply)),
        _ => Ok(reply),
    }
}

fn unexpected(step: &str, reply: &Reply) -> Halt {
    Halt::Broken(format!("{step}: unexpected reply {reply}"))
}

/// The reply to MAIL; true when the transaction goes on.
fn judge_mail(reply: Reply, transid: bool, tally: &mut Tally) -> Result<bool, Halt> {
    let reply = closing(reply)?;
    match reply.code / 100 {
        2 => Ok(true),
        // Not a replay (that was checked before): see "Limits".
        3 if transid && reply.code == 355 => Ok(true),
        4 => {
            let why = reply.to_string();
            tally.settle_open(|| Outcome::Deferred(why.clone()));
            Ok(false)
        }
        5 => {
            tally.settle_open(|| Outcome::Failed(reply.clone()));
            Ok(false)
        }
        _ => Err(unexpected("MAIL", &reply)),
    }
}

fn judge_rcpt(index: usize, reply: Reply, tally: &mut Tally) -> Result<(), Halt> {
    let reply = closing(reply)?;
    match reply.code / 100 {
        2 => tally.accepted.push(index),
        4 => tally.set(index, Outcome::Deferred(reply.to_string())),
        5 => tally.set(index, Outcome::Failed(reply)),
        _ => return Err(unexpected("RCPT", &reply)),
    }
    Ok(())
}

/// A reply to DATA other than 354 (and 421) decides the accepted recipients.
fn judge_data(reply: Reply, tally: &mut Tally) -> Result<(), Halt> {
    match reply.code / 100 {
        4 => tally.settle_accepted(|| Outcome::Deferred(reply.to_string())),
        5 => tally.settle_accepted(|| Outcome::Failed(reply.clone())),
        _ => return Err(unexpected("DATA", &reply)),
    }
    Ok(())
}

/// The outcomes so far, one slot per recipient.
struct Tally {
    outcomes: Vec<Option<Outcome>>,
    /// Accepted by RCPT, waiting for the end of data.
    accepted: Vec<usize>,
}

impl Tally {
    fn new(count: usize) -> Tally {
        Tally { outcomes: vec![None; count], accepted: Vec::new() }
    }

    fn set(&mut self, index: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }

    /// Every recipient without an outcome yet.
    fn settle_open(&mut self, outcome: impl Fn() -> Outcome) {
        for slot in self.outcomes.iter_mut().filter(|slot| slot.is_none()) {
            *slot = Some(outcome());
        }
    }

    fn settle_accepted(&mut self, outcome: impl Fn() -> Outcome) {
        for index in std::mem::take(&mut self.accepted) {
            self.set(index, outcome());
        }
    }

    /// Takes every recipient without an outcome as accepted.
    fn accept_open(&mut self) {
        let open = self.outcomes.iter().enumerate().filter(|(_, slot)| slot.is_none());
        self.accepted = open.map(|(index, _)| index).collect();
    }

    /// The outcomes, `Deferred(why)` for any still open.
    fn finish(self, why: &str) -> Vec<Outcome> {
        let open = || Outcome::Deferred(why.to_owned());
        self.outcomes.into_iter().map(|slot| slot.unwrap_or_else(open)).collect()
    }
}

/// Replies we make up when a message cannot go to this server at all.
mod synthetic {
    use super::Reply;

    pub(super) fn too_big(size: u64, limit: u64) -> Reply {
        let text = format!("5.3.4 not sent: {size} octets, over the server's SIZE limit {limit}");
        Reply::new(552, &text)
    }

    pub(super) fn no_smtputf8() -> Reply {
        Reply::new(553, "5.6.7 not sent: needs SMTPUTF8, which the server does not offer")
    }

    pub(super) fn bad_sender() -> Reply {
        Reply::new(553, "5.1.7 not sent: malformed sender address")
    }

    pub(super) fn bad_recipient() -> Reply {
        Reply::new(553, "5.1.3 not sent: malformed recipient address")
    }
}
