//! deliver: the ways a message leaves the queue. Only local Maildir delivery exists yet;
//! relaying over SMTP arrives with the relay work.

pub mod maildir;
