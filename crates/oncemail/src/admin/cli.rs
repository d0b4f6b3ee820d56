//! `oncemail queue ...`: the operator's commands, run against the server over its socket.
//!
//! `list` is mailq, `show` is postcat of one message, `flush`, `hold`, `release`,
//! `delete` and `bounce` are postqueue/postsuper. The socket is found the way `serve` finds
//! its data directory (`--config`, `$ONCEMAIL_CONFIG`, `--data-dir`).
//!
//! Exit status: 0 when the server did what was asked, 1 otherwise (server not running,
//! no such message, bad configuration), with the reason on stderr.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{Local, TimeZone};
use serde::Serialize;

use super::client::{self, Answer};
use super::{Listed, ListedRecipient, Request, Response};
use crate::config::{self, Config, Overrides};

/// Generous: an order waits up to 10 s on the server for its effect.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
    /// TOML configuration file (default: $ONCEMAIL_CONFIG, then /etc/oncemail/oncemail.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory of the server (where admin.sock is); replaces server.data_dir.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum QueueCommand {
    /// Every message in the queue with each recipient's state (like mailq).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope, recipient states, header section.
    Show {
        id: String,
        /// The whole message instead of its header section.
        #[arg(long)]
        body: bool,
    },
    /// Try delivery now: one message, or every message waiting to retry.
    Flush { id: Option<String> },
    /// Stop delivery attempts until released (survives restarts).
    Hold { id: String },
    /// Undo a hold; delivery is tried at once.
    Release { id: String },
    /// Remove the message without telling the sender.
    Delete { id: String },
    /// Fail every pending recipient now and send the sender a report.
    Bounce { id: String },
}

/// Runs one `queue` command; errors go to stderr.
pub fn run(args: QueueArgs) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oncemail queue: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mailq` (a link named so, or `sendmail -bp`): `queue list`.
pub fn mailq(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    run(QueueArgs { command: QueueCommand::List { json: false }, config, data_dir })
}

fn execute(args: QueueArgs) -> anyhow::Result<()> {
    let path = config::config_path(args.config.as_deref());
    let overrides = Overrides { data_dir: args.data_dir, ..Overrides::default() };
    let config = Config::load(path.as_deref(), overrides)?;
    let socket = config.admin_socket()?;

    let (request, json) = request_for(args.command);
    let answer = client::ask(&socket, &request, TIMEOUT)?;
    let mut out = io::stdout().lock();
    match answer.response {
        Response::Error { message } => bail!("{message}"),
        Response::Done { ref text } => writeln!(out, "{text}")?,
        Response::List { ref messages } if json => print_json(&mut out, messages)?,
        Response::List { ref messages } => out.write_all(list_text(messages).as_bytes())?,
        Response::Show { .. } => print_shown(&mut out, answer)?,
    }
    Ok(())
}

/// The request for a command, and whether the answer is wanted as JSON.
fn request_for(command: QueueCommand) -> (Request, bool) {
    let request = match command {
        QueueCommand::List { json } => return (Request::List, json),
        QueueCommand::Show { id, body } => Request::Show { id, body },
        QueueCommand::Flush { id } => Request::Flush { id },
        QueueCommand::Hold { id } => Request::Hold { id },
        QueueCommand::Release { id } => Request::Release { id },
        QueueCommand::Delete { id } => Request::Delete { id },
        QueueCommand::Bounce { id } => Request::Bounce { id },
    };
    (request, false)
}

#[derive(Serialize)]
struct Totals {
    messages: usize,
    recipients: usize,
    bytes: u64,
}

fn totals(messages: &[Listed]) -> Totals {
    Totals {
        messages: messages.len(),
        recipients: messages.iter().map(|m| m.recipients.len()).sum(),
        bytes: messages.iter().map(|m| m.size).sum(),
    }
}

fn print_json(out: &mut impl Write, messages: &[Listed]) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Listing<'a> {
        messages: &'a [Listed],
        total: Totals,
    }
    let listing = Listing { messages, total: totals(messages) };
    serde_json::to_writer_pretty(&mut *out, &listing)?;
    writeln!(out)?;
    Ok(())
}

/// The mailq-like listing: a line per message, a line per recipient, a summary.
fn list_text(messages: &[Listed]) -> String {
    if messages.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut text =
        format!("{:<13}  {:>9}  {:<19}  SENDER / RECIPIENTS\n", "QUEUE ID", "SIZE", "ARRIVED");
    for message in messages {
        text.push_str(&format!(
            "{:<13}  {:>9}  {:<19}  <{}>  {}\n",
            message.queue_id,
            message.size,
            when(message.arrival),
            message.sender,
            message_state(message)
        ));
        for rcpt in &message.recipients {
            text.push_str(&format!("    {}\n", recipient_line(message, rcpt)));
        }
    }
    let t = totals(messages);
    text.push_str(&format!(
        "\n-- {} message{}, {} recipient{}, {} bytes\n",
        t.messages,
        plural(t.messages),
        t.recipients,
        plural(t.recipients),
        t.bytes
    ));
    text
}

fn message_state(message: &Listed) -> String {
    let attempts = match message.attempts {
        0 => String::new(),
        n => format!(", {n} attempt{}", plural(n as usize)),
    };
    match message.state.as_str() {
        "held" => format!("(on hold{attempts})"),
        state => format!("({state}{attempts})"),
    }
}

/// "deferred   <bob@example.net>  next try ...; 451 4.3.0 try later".
fn recipient_line(message: &Listed, rcpt: &ListedRecipient) -> String {
    let open = matches!(rcpt.state.as_str(), "pending" | "deferred");
    let state = match (message.state.as_str(), open) {
        ("held", true) => "held",
        _ => rcpt.state.as_str(),
    };
    let mut line = format!("{state:<9}  <{}>", rcpt.address);
    if let (true, "deferred", Some(next)) = (open, message.state.as_str(), message.next_attempt) {
        line.push_str(&format!("  next try {}", when(next)));
    }
    if let Some(reply) = &rcpt.last_reply {
        line.push_str(&format!("  ({})", reply.replace(['\r', '\n'], " ")));
    }
    line
}

fn print_shown(out: &mut impl Write, answer: Answer) -> anyhow::Result<()> {
    let Response::Show { message, routes, received, whole, content_len } = &answer.response else {
        return Ok(());
    };
    let (message, routes, received) = (message.clone(), routes.clone(), received.clone());
    let (whole, len) = (*whole, *content_len);

    writeln!(out, "Queue ID:  {}", message.queue_id)?;
    writeln!(out, "Arrived:   {}", when(message.arrival))?;
    writeln!(out, "Size:      {} bytes", message.size)?;
    writeln!(out, "Sender:    <{}>", message.sender)?;
    writeln!(out, "State:     {}", message_state(&message).trim_matches(['(', ')']))?;
    if let ("deferred", Some(next)) = (message.state.as_str(), message.next_attempt) {
        writeln!(out, "Next try:  {}", when(next))?;
    }
    writeln!(out, "Recipients:")?;
    for (rcpt, route) in message.recipients.iter().zip(&routes) {
        writeln!(out, "    {}  [{route}]", recipient_line(&message, rcpt))?;
    }
    writeln!(out, "Added on delivery:")?;
    out.write_all(received.replace("\r\n", "\n").as_bytes())?;

    let mut content = Vec::new();
    answer.content(len).read_to_end(&mut content).context("reading the message")?;
    if (content.len() as u64) < len {
        bail!("the message was cut short ({} of {len} bytes)", content.len());
    }
    let title = if whole { "message" } else { "header section" };
    writeln!(out, "----- {title} -----")?;
    out.write_all(&crlf_to_lf(&content))?;
    Ok(())
}

/// Stored messages use CRLF; a terminal and a text file want LF.
fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

/// Unix seconds as local time, e.g. "2026-12-03 18:20:01".
fn when(unix: i64) -> String {
    match Local.timestamp_opt(unix, 0).single() {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => unix.to_string(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(address: &str, state: &str, reply: Option<&str>) -> ListedRecipient {
        ListedRecipient {
            address: address.into(),
            state: state.into(),
            last_reply: reply.map(String::from),
        }
    }

    fn message(state: &str, recipients: Vec<ListedRecipient>) -> Listed {
        Listed {
            queue_id: "0CRE1X2Y3Z4A5".into(),
            arrival: 1_800_000_000,
            size: 1234,
            sender: "alice@example.com".into(),
            state: state.into(),
            attempts: 2,
            next_attempt: Some(1_800_003_600),
            recipients,
        }
    }

    #[test]
    fn the_listing_shows_each_recipient_and_a_summary() {
        let deferred = rcpt("bob@remote.test", "deferred", Some("451 4.3.0 try later"));
        let delivered = rcpt("carol@example.com", "delivered", None);
        let text = list_text(&[message("deferred", vec![deferred, delivered])]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("QUEUE ID"), "{text}");
        assert!(lines[1].starts_with("0CRE1X2Y3Z4A5       1234  "), "{text}");
        assert!(lines[1].ends_with("<alice@example.com>  (deferred, 2 attempts)"), "{text}");
        assert!(lines[2].starts_with("    deferred   <bob@remote.test>  next try "), "{text}");
        assert!(lines[2].ends_with("  (451 4.3.0 try later)"), "{text}");
        assert_eq!(lines[3], "    delivered  <carol@example.com>");
        assert_eq!(lines[5], "-- 1 message, 2 recipients, 1234 bytes");
    }

    #[test]
    fn recipients_of_a_held_message_show_as_held() {
        let m = message("held", vec![rcpt("bob@remote.test", "deferred", Some("451 x"))]);
        let text = list_text(&[m]);
        assert!(text.contains("(on hold, 2 attempts)"), "{text}");
        assert!(text.contains("    held       <bob@remote.test>  (451 x)"), "{text}");
        assert_eq!(list_text(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn crlf_becomes_lf_and_nothing_else_changes() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\n\r\n"), b"a\nb\rc\n\n");
    }
}
