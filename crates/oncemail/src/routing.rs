//! Where a recipient's mail goes, decided at `RCPT` time from the envelope alone.
//!
//! Everything that can refuse a recipient runs here, before the final-dot gap opens (I2):
//! an unknown local user gets `550 5.1.1` now, never a bounce later, and mail for a
//! domain that is not local is relayed only for clients that may relay: trusted networks
//! or authenticated users (I7); everyone else gets `550 5.7.1`.
//!
//! A local mailbox name becomes a directory name, so it must not be able to leave the
//! Maildir root: names with `/`, a leading `.`, control characters or NUL are refused.

use smtp_wire::address::{Domain, ForwardPath, Mailbox};

use crate::config::Local;
use crate::envelope::Route;
use crate::replies::{self, Reply};

/// The route for a recipient, or the reply that refuses it. `may_relay` says whether the
/// client may send mail to other domains.
pub fn route(local: &Local, may_relay: bool, to: &ForwardPath) -> Result<Route, Reply> {
    match to {
        ForwardPath::Postmaster => {
            Ok(Route::Local { domain: local.domains[0].clone(), mailbox: "postmaster".into() })
        }
        ForwardPath::Mailbox(mailbox) => route_mailbox(local, may_relay, mailbox),
    }
}

fn route_mailbox(local: &Local, may_relay: bool, to: &Mailbox) -> Result<Route, Reply> {
    let domain = match &to.domain {
        Domain::Name(name) => name.trim_end_matches('.').to_lowercase(),
        // TODO: address literals naming one of our own addresses should be local.
        literal => literal.to_string(),
    };
    if !local.domains.contains(&domain) {
        return match may_relay {
            true => Ok(Route::Remote { domain }),
            false => Err(replies::RELAY_DENIED),
        };
    }

    let mailbox = base_mailbox(&to.local.to_lowercase(), local.recipient_delimiter);
    if !safe_mailbox_name(&mailbox) {
        return Err(replies::BAD_MAILBOX_NAME);
    }
    if let Some(users) = &local.users
        && !users.contains(&mailbox)
        && !users.contains(&format!("{mailbox}@{domain}"))
        && mailbox != "postmaster"
    {
        return Err(replies::USER_UNKNOWN);
    }
    Ok(Route::Local { domain, mailbox })
}

/// `user+tag` becomes `user`; a local part that starts with the delimiter keeps it.
fn base_mailbox(local_part: &str, delimiter: Option<char>) -> String {
    match delimiter.and_then(|d| local_part.split_once(d)) {
        Some((base, _)) if !base.is_empty() => base.to_string(),
        _ => local_part.to_string(),
    }
}

/// A name that cannot leave the Maildir root, and cannot smuggle a route either: `%`,
/// `!` and `@` in a local part are the old source-routing hacks (`user%remote@here`).
fn safe_mailbox_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.chars().any(|c| "/\\%!@".contains(c) || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(users: Option<&[&str]>) -> Local {
        Local {
            domains: vec!["example.com".into(), "other.test".into()],
            users: users.map(|u| u.iter().map(|s| s.to_string()).collect()),
            recipient_delimiter: Some('+'),
        }
    }

    fn to(local_part: &str, domain: &str) -> ForwardPath {
        ForwardPath::Mailbox(Mailbox {
            local: local_part.into(),
            domain: Domain::Name(domain.into()),
        })
    }

    fn mailbox(route: Result<Route, Reply>) -> String {
        match route {
            Ok(Route::Local { mailbox, .. }) => mailbox,
            Ok(Route::Remote { domain }) => format!("remote {domain}"),
            Err(reply) => format!("{} {}", reply.code, reply.status),
        }
    }

    fn route(local: &Local, to: &ForwardPath) -> Result<Route, Reply> {
        super::route(local, false, to)
    }

    #[test]
    fn local_parts_are_lowercased_and_lose_their_extension() {
        let l = local(None);
        assert_eq!(mailbox(route(&l, &to("Alice+Lists", "EXAMPLE.com"))), "alice");
        assert_eq!(mailbox(route(&l, &to("+only", "example.com"))), "+only");
        assert_eq!(mailbox(route(&l, &to("john doe", "other.test"))), "john doe");
    }

    #[test]
    fn postmaster_without_domain_goes_to_the_first_local_domain() {
        let route = route(&local(Some(&["bob"])), &ForwardPath::Postmaster).unwrap();
        let expected = Route::Local { domain: "example.com".into(), mailbox: "postmaster".into() };
        assert_eq!(route, expected);
    }

    #[test]
    fn remote_domains_and_literals_are_refused() {
        let l = local(None);
        assert_eq!(mailbox(route(&l, &to("a", "elsewhere.test"))), "550 5.7.1");
        let literal = ForwardPath::Mailbox(Mailbox {
            local: "a".into(),
            domain: Domain::Ipv4([127, 0, 0, 1].into()),
        });
        assert_eq!(mailbox(route(&l, &literal)), "550 5.7.1");
    }

    #[test]
    fn trusted_clients_relay_to_other_domains_and_literals() {
        let l = local(None);
        let remote = super::route(&l, true, &to("a", "Elsewhere.TEST"));
        assert_eq!(mailbox(remote), "remote elsewhere.test");
        let literal = ForwardPath::Mailbox(Mailbox {
            local: "a".into(),
            domain: Domain::Ipv4([192, 0, 2, 1].into()),
        });
        assert_eq!(mailbox(super::route(&l, true, &literal)), "remote [192.0.2.1]");
        assert_eq!(mailbox(super::route(&l, true, &to("a", "example.com"))), "a");
    }

    #[test]
    fn user_list_is_enforced_with_domain_specific_entries() {
        let l = local(Some(&["alice", "bob@other.test"]));
        assert_eq!(mailbox(route(&l, &to("alice+x", "other.test"))), "alice");
        assert_eq!(mailbox(route(&l, &to("bob", "other.test"))), "bob");
        assert_eq!(mailbox(route(&l, &to("bob", "example.com"))), "550 5.1.1");
        assert_eq!(mailbox(route(&l, &to("Postmaster", "example.com"))), "postmaster");
    }

    #[test]
    fn names_that_could_escape_the_maildir_root_are_refused() {
        let l = local(None);
        for name in ["../x", "a/b", ".hidden", "..", "a\\b", "nul\0", "u%r.test", "r!u", "a@b"] {
            assert_eq!(mailbox(route(&l, &to(name, "example.com"))), "553 5.1.3", "{name:?}");
        }
    }
}
