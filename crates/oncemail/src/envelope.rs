//! The envelope of an accepted message, and the updates recorded against it.
//!
//! Both are stored in the spool as JSON: a few hundred bytes per message, readable with
//! `strings` when something goes wrong, and easy to extend with optional fields without
//! breaking what older versions wrote.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unix time (seconds) of the commit.
    pub arrival: i64,
    /// The reverse path in SMTP form; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// The `Received:` field to prepend on delivery, lines ending in CRLF.
    pub received: String,
    /// Message size in octets as received (without the fields we prepend).
    pub size: u64,
    #[serde(default)]
    pub smtputf8: bool,
    /// The content has octets above 127 (relaying sends `BODY=8BITMIME`).
    #[serde(default)]
    pub eight_bit: bool,
    /// SHA-256 of the content as received, hex.
    #[serde(default)]
    pub content_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward path as the client gave it, in SMTP form.
    pub address: String,
    pub route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Route {
    /// A Maildir under `mail/<domain>/<mailbox>`, both lowercased, extension removed.
    Local { domain: String, mailbox: String },
    /// Another host, found by static route or MX lookup for `domain` (lowercased; an
    /// address literal keeps its brackets, e.g. `[192.0.2.1]`).
    Remote { domain: String },
}

/// A durable fact about some recipients of a message, appended to its spool entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Indexes into [`Envelope::recipients`].
    pub recipients: Vec<usize>,
    pub outcome: Outcome,
    /// Unix time (seconds).
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Outcome {
    /// Final: the message is in the recipient's mailbox (or accepted by the next hop).
    Delivered { detail: String },
    /// Final: delivery failed for good and the sender was told (or could not be).
    Failed { detail: String },
    /// Not final: an operator put the message on hold (no recipients listed).
    Held,
    /// Not final: an operator released it.
    Released,
}

impl Outcome {
    /// Whether the listed recipients are done for good.
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Delivered { .. } | Outcome::Failed { .. })
    }
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and numbers to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// `<sender>` as it goes into `Return-Path:`.
    pub fn return_path(&self) -> String {
        format!("<{}>", self.sender)
    }
}

impl Update {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Update, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let envelope = Envelope {
            arrival: 1,
            sender: String::new(),
            recipients: vec![Recipient {
                address: "a+b@example.com".into(),
                route: Route::Local { domain: "example.com".into(), mailbox: "a".into() },
            }],
            received: "Received: from x\r\n".into(),
            size: 10,
            smtputf8: false,
            eight_bit: false,
            content_sha256: "00".into(),
        };
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        assert_eq!(envelope.return_path(), "<>");
    }

    #[test]
    fn update_round_trips() {
        let update = Update {
            recipients: vec![0, 2],
            outcome: Outcome::Delivered { detail: "maildir".into() },
            at: 5,
        };
        assert_eq!(Update::decode(&update.encode()).unwrap(), update);
    }
}
