//! Every SMTP reply the server sends, in one place to review.
//!
//! Codes follow RFC 5321 §4.2 and the enhanced codes RFC 3463 (with RFC 3030, 4954, 6531).
//! A reply with a 4xx or 5xx code caused by the client counts towards its error limit.

use std::borrow::Cow;

use smtp_wire::command::CommandError;
use smtp_wire::reply::format_reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: Cow<'static, str>,
}

const fn fixed(code: u16, status: &'static str, text: &'static str) -> Reply {
    Reply { code, status, text: Cow::Borrowed(text) }
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let status = Some(self.status).filter(|s| !s.is_empty());
        format_reply(self.code, status, &[&self.text], out);
    }
}

pub const SENDER_OK: Reply = fixed(250, "2.1.0", "Sender OK");
pub const RECIPIENT_OK: Reply = fixed(250, "2.1.5", "Recipient OK");
pub const START_DATA: Reply = fixed(354, "", "End data with <CR><LF>.<CR><LF>");
pub const RESET: Reply = fixed(250, "2.0.0", "Reset");
pub const NOOP: Reply = fixed(250, "2.0.0", "OK");
pub const BYE: Reply = fixed(221, "2.0.0", "Bye");
pub const VRFY: Reply = fixed(252, "2.5.0", "Cannot VRFY user, but will take the message");
pub const EXPN: Reply = fixed(502, "5.5.1", "EXPN is not available");
pub const HELP: Reply = fixed(214, "2.0.0", "See RFC 5321; oncemail speaks ESMTP");
pub const NOT_IMPLEMENTED: Reply = fixed(502, "5.5.1", "Command not implemented");

pub const NEED_HELO: Reply = fixed(503, "5.5.1", "Send HELO or EHLO first");
pub const NESTED_MAIL: Reply = fixed(503, "5.5.1", "Sender already given");
pub const NEED_MAIL: Reply = fixed(503, "5.5.1", "Need MAIL first");
pub const NEED_RCPT: Reply = fixed(503, "5.5.1", "Need an accepted RCPT first");
pub const NO_MIXING: Reply = fixed(503, "5.5.1", "DATA and BDAT cannot be mixed");
pub const BDAT_NEEDS_EHLO: Reply = fixed(503, "5.5.1", "BDAT needs EHLO");
pub const PARAMS_NEED_EHLO: Reply = fixed(555, "5.5.4", "Parameters need EHLO");
pub const NO_BINARYMIME: Reply = fixed(555, "5.5.4", "BODY=BINARYMIME is not supported");
pub const NO_TRANSID: Reply = fixed(555, "5.5.4", "TRANSID needs CHECKPOINT, which is off");

pub const LINE_TOO_LONG: Reply = fixed(500, "5.5.6", "Line too long");
pub const TOO_BIG: Reply = fixed(552, "5.3.4", "Message size exceeds fixed limit");
pub const TOO_MANY_RECIPIENTS: Reply = fixed(452, "4.5.3", "Too many recipients");
pub const TOO_MANY_ERRORS: Reply = fixed(421, "4.7.0", "Too many errors, closing connection");
pub const BARE_LINE_ENDING: Reply =
    fixed(550, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF");
pub const TOO_MANY_HOPS: Reply = fixed(554, "5.4.6", "Too many hops: mail loop detected");
pub const NEEDS_SMTPUTF8: Reply = fixed(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");

pub const RELAY_DENIED: Reply = fixed(550, "5.7.1", "Relaying denied");
pub const USER_UNKNOWN: Reply = fixed(550, "5.1.1", "User unknown");
pub const BAD_MAILBOX_NAME: Reply = fixed(553, "5.1.3", "Mailbox name not allowed");
pub const LOCAL_ERROR: Reply = fixed(451, "4.3.0", "Local error, try again later");

pub const STARTTLS_READY: Reply = fixed(220, "2.0.0", "Ready to start TLS");
pub const TLS_ACTIVE: Reply = fixed(503, "5.5.1", "TLS is already active");
pub const TLS_UNAVAILABLE: Reply = fixed(454, "4.7.0", "TLS not available");
pub const ENCRYPTION_REQUIRED: Reply =
    fixed(538, "5.7.11", "Encryption required for requested authentication mechanism");
pub const AUTH_REQUIRED: Reply = fixed(530, "5.7.0", "Authentication required");
pub const AUTH_OK: Reply = fixed(235, "2.7.0", "Authentication successful");
pub const AUTH_FAILED: Reply = fixed(535, "5.7.8", "Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = fixed(501, "5.0.0", "Authentication cancelled");
pub const AUTH_MALFORMED: Reply = fixed(501, "5.5.2", "Cannot decode the response");
pub const AUTH_MECHANISM: Reply = fixed(504, "5.5.4", "Unrecognized authentication type");
pub const ALREADY_AUTHENTICATED: Reply = fixed(503, "5.5.1", "Already authenticated");
pub const AUTH_IN_TRANSACTION: Reply = fixed(503, "5.5.1", "AUTH not allowed during a transaction");
pub const TOO_MANY_AUTH_FAILURES: Reply =
    fixed(421, "4.7.0", "Too many authentication failures, closing connection");
pub const SENDER_NOT_OWNED: Reply = fixed(553, "5.7.1", "Sender address not owned by user");

pub fn greeting(hostname: &str) -> Reply {
    Reply { code: 220, status: "", text: format!("{hostname} ESMTP oncemail").into() }
}

pub fn helo(hostname: &str) -> Reply {
    Reply { code: 250, status: "", text: hostname.to_string().into() }
}

pub fn queued(qid: &str) -> Reply {
    Reply { code: 250, status: "2.0.0", text: format!("Ok: queued as {qid}").into() }
}

/// RFC 1845 §3: MAIL with the TRANSID of a transaction we already hold `size` octets of.
pub fn transaction_offset(size: u64) -> Reply {
    let text = format!("{size} is the transaction offset");
    Reply { code: 355, status: "", text: text.into() }
}

/// The answer to a retry of a message every recipient already has.
pub fn duplicate(original: &str) -> Reply {
    let text = format!("Ok: duplicate of {original}, already queued; not queued again");
    Reply { code: 250, status: "2.0.0", text: text.into() }
}

pub fn chunk_received(octets: u64) -> Reply {
    Reply { code: 250, status: "2.0.0", text: format!("{octets} octets received").into() }
}

pub fn timeout(hostname: &str) -> Reply {
    let text = format!("{hostname} Timeout, closing connection");
    Reply { code: 421, status: "4.4.2", text: text.into() }
}

pub fn too_many_connections(hostname: &str) -> Reply {
    let text = format!("{hostname} Too many connections, try again later");
    Reply { code: 421, status: "4.7.0", text: text.into() }
}

pub fn shutting_down(hostname: &str) -> Reply {
    Reply { code: 421, status: "4.3.2", text: format!("{hostname} Shutting down").into() }
}

/// The EHLO reply: our name, then the extensions we offer, then `extra` (CHECKPOINT,
/// STARTTLS, AUTH, as the session decides).
pub fn ehlo(hostname: &str, client: &str, max_size: u64, extra: &[&str], out: &mut Vec<u8>) {
    let first = format!("{hostname} greets {client}");
    let size = format!("SIZE {max_size}");
    let mut lines = vec![
        first.as_str(),
        "PIPELINING",
        size.as_str(),
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
    ];
    lines.extend_from_slice(extra);
    lines.push("HELP");
    format_reply(250, None, &lines, out);
}

/// The reply to a command line that did not parse.
pub fn for_parse_error(error: &CommandError) -> Reply {
    let (code, status, text): (u16, &'static str, Cow<'static, str>) = match error {
        CommandError::Unrecognized => (500, "5.5.1", "Command unrecognized".into()),
        CommandError::Syntax(what) => (501, "5.5.2", format!("Syntax error: {what}").into()),
        CommandError::BadSender(what) => {
            (501, "5.1.7", format!("Bad sender address: {what}").into())
        }
        CommandError::BadRecipient(what) => {
            (501, "5.1.3", format!("Bad recipient address: {what}").into())
        }
        CommandError::UnknownParameter(name) => {
            let name: String = name.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
            (555, "5.5.4", format!("Unsupported parameter {name}").into())
        }
    };
    Reply { code, status, text }
}
