//! admin: the operator's way into a running server, over a Unix socket.
//!
//! The server ([`server`]) listens on `<data_dir>/admin.sock` (or `admin.socket`), mode
//! 0600, recreated at every start. The `oncemail queue ...` commands ([`cli`]) and
//! `sendmail` (its best-effort `pickup`) are its clients ([`client`]).
//!
//! # Protocol
//!
//! One request per connection: the client writes one JSON line ([`Request`]); the server
//! answers with one JSON line ([`Response`]) and closes. A [`Response::Show`] is followed
//! by exactly `content_len` raw bytes: the message's header section, or the whole message
//! (`body: true`), as stored (CRLF line endings), since message bytes need not be UTF-8.
//!
//! # Who may ask
//!
//! The socket's mode keeps other users out; on top of that the server reads the peer's
//! credentials (`SO_PEERCRED`) and serves only root and its own user, except `pickup`,
//! which anyone who can connect may ask (it only makes the server look at the maildrop
//! sooner). Every order that changes a message is logged by the queue with the queue ID
//! and `by="uid=0 pid=1234"`.

pub mod cli;
pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::queue::{Info, RecipientInfo};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    List,
    Show {
        id: String,
        /// The whole message instead of its header section.
        #[serde(default)]
        body: bool,
    },
    /// One message, or (`id: None`) every message waiting to retry.
    Flush {
        #[serde(default)]
        id: Option<String>,
    },
    Hold {
        id: String,
    },
    Release {
        id: String,
    },
    /// Remove without a report to the sender.
    Delete {
        id: String,
    },
    /// Fail every pending recipient now, with a report to the sender.
    Bounce {
        id: String,
    },
    /// Look at the maildrop now (sendmail asks after each message it leaves there).
    Pickup,
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Response {
    Error {
        message: String,
    },
    List {
        messages: Vec<Listed>,
    },
    /// Followed by `content_len` raw bytes of the message.
    Show {
        message: Listed,
        /// Per recipient, in order: "local <domain>/<mailbox>" or "remote <domain>".
        routes: Vec<String>,
        /// The `Received:` field added on delivery.
        received: String,
        /// Whether the bytes that follow are the whole message or its header section.
        whole: bool,
        content_len: u64,
    },
    /// An order was carried out (or handed over); `text` says which.
    Done {
        text: String,
    },
}

/// A message as listed; [`Info`] in a form the client can read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub queue_id: String,
    /// Unix seconds.
    pub arrival: i64,
    pub size: u64,
    pub sender: String,
    /// "active", "deferred" or "held".
    pub state: String,
    pub attempts: u32,
    /// Unix seconds of the next attempt, when deferred.
    pub next_attempt: Option<i64>,
    pub recipients: Vec<ListedRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedRecipient {
    pub address: String,
    /// "pending", "deferred", "delivered", "failed", or "done" (final before a restart).
    pub state: String,
    pub last_reply: Option<String>,
}

impl From<Info> for Listed {
    fn from(info: Info) -> Listed {
        Listed {
            queue_id: info.queue_id,
            arrival: info.arrival,
            size: info.size,
            sender: info.sender,
            state: info.state.to_string(),
            attempts: info.attempts,
            next_attempt: info.next_attempt,
            recipients: info.recipients.into_iter().map(ListedRecipient::from).collect(),
        }
    }
}

impl From<RecipientInfo> for ListedRecipient {
    fn from(rcpt: RecipientInfo) -> ListedRecipient {
        ListedRecipient {
            address: rcpt.address,
            state: rcpt.state.to_string(),
            last_reply: rcpt.last_reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_each() {
        let show = Request::Show { id: "X".into(), body: true };
        let cases = [
            (Request::List, r#"{"op":"list"}"#),
            (show, r#"{"op":"show","id":"X","body":true}"#),
            (Request::Flush { id: None }, r#"{"op":"flush","id":null}"#),
            (Request::Pickup, r#"{"op":"pickup"}"#),
        ];
        for (request, json) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), json);
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), request);
        }
        let short: Request = serde_json::from_str(r#"{"op":"show","id":"X"}"#).unwrap();
        assert_eq!(short, Request::Show { id: "X".into(), body: false });
        assert!(serde_json::from_str::<Request>(r#"{"op":"format"}"#).is_err());
    }
}
