//! Addresses as people write them in `To:` fields and on a `sendmail` command line:
//! RFC 5322 address lists (`"Doe, J" <j@example.com>, team: a@x, b@y;`) reduced to the
//! addr-specs, and bare user names qualified with a domain, as classic sendmail does.
//!
//! Lenient on purpose: display names, comments and group names are dropped without being
//! checked, since only the addresses matter here; each address is then checked strictly
//! by smtp-wire's parser.

use std::str::FromStr;

use smtp_wire::address::{Domain, Mailbox};

/// The addr-specs of an address list, in order; empty entries are skipped.
pub fn addr_specs(text: &str) -> Vec<String> {
    let mut list = List::default();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => list.quoted(&mut chars),
            '(' => skip_comment(&mut chars),
            '[' => list.literal(&mut chars),
            '<' => list.angle = Some(String::new()),
            '>' => list.closed = true,
            ',' | ';' if list.outside_angle() => list.finish(),
            ':' if list.outside_angle() => list.word.clear(),
            c if c.is_whitespace() => list.space(),
            c => list.target().push(c),
        }
    }
    list.finish();
    list.out
}

#[derive(Default)]
struct List {
    out: Vec<String>,
    /// Text outside `<...>`: a display name, or a bare addr-spec.
    word: String,
    /// The content of `<...>` once one opened.
    angle: Option<String>,
    closed: bool,
}

impl List {
    fn outside_angle(&self) -> bool {
        self.angle.is_none() || self.closed
    }

    fn target(&mut self) -> &mut String {
        match (&mut self.angle, self.closed) {
            (Some(angle), false) => angle,
            _ => &mut self.word,
        }
    }

    /// A quoted string, kept with its quotes (it may be a quoted local part).
    fn quoted(&mut self, chars: &mut std::str::Chars) {
        let target = self.target();
        target.push('"');
        while let Some(c) = chars.next() {
            target.push(c);
            match c {
                '\\' => target.extend(chars.next()),
                '"' => return,
                _ => {}
            }
        }
    }

    /// A domain literal such as `[IPv6:2001:db8::1]`, whose colons are not a group's.
    fn literal(&mut self, chars: &mut std::str::Chars) {
        let target = self.target();
        target.push('[');
        for c in chars.by_ref() {
            target.push(c);
            if c == ']' {
                return;
            }
        }
    }

    /// Folding white space is kept as one space, so that `a b@x` stays invalid instead of
    /// becoming `ab@x`; spaces next to `@` and `.` are allowed (RFC 5322's obsolete
    /// syntax) and removed in [`List::finish`].
    fn space(&mut self) {
        let target = self.target();
        if !target.is_empty() && !target.ends_with(' ') {
            target.push(' ');
        }
    }

    fn finish(&mut self) {
        let word = std::mem::take(&mut self.word);
        let spec = match self.angle.take() {
            Some(angle) => angle,
            None => word,
        };
        let spec = without_cfws(&spec);
        self.closed = false;
        // An obsolete source route (`<@a,@b:user@c>`) is dropped, as RFC 5321 C allows.
        let spec = match spec.starts_with('@') {
            true => spec.split_once(':').map(|(_, rest)| rest.to_string()).unwrap_or_default(),
            false => spec,
        };
        if !spec.is_empty() {
            self.out.push(spec);
        }
    }
}

/// `spec` without the spaces a lenient writer may put around `@` and `.` (and at its
/// ends); spaces inside quoted strings stay.
fn without_cfws(spec: &str) -> String {
    let chars: Vec<char> = spec.trim().chars().collect();
    let mut out = String::new();
    let mut quoted = false;
    for (i, &c) in chars.iter().enumerate() {
        let beside =
            |j: Option<usize>| j.and_then(|j| chars.get(j)).is_some_and(|n| "@.".contains(*n));
        let removable = c == ' ' && !quoted && (beside(i.checked_sub(1)) || beside(Some(i + 1)));
        if c == '"' && chars.get(i.wrapping_sub(1)) != Some(&'\\') {
            quoted = !quoted;
        }
        if !removable {
            out.push(c);
        }
    }
    out
}

fn skip_comment(chars: &mut std::str::Chars) {
    let mut depth = 1;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' if depth == 1 => return,
            ')' => depth -= 1,
            _ => {}
        }
    }
}

/// `user` becomes `user@domain`; the result must be a valid mailbox.
pub fn qualify(address: &str, domain: &str) -> Result<Mailbox, String> {
    let has_domain = address.rfind('@').is_some_and(|at| !address[at..].contains('"'));
    let full = match has_domain {
        true => address.to_string(),
        false => format!("{address}@{domain}"),
    };
    let mailbox = Mailbox::from_str(&full).map_err(|e| format!("{address}: {}", e.reason()))?;
    // Lowercase the domain so that one address given twice is recognised as one.
    let domain = match mailbox.domain {
        Domain::Name(name) => Domain::Name(name.to_lowercase()),
        other => other,
    };
    Ok(Mailbox { local: mailbox.local, domain })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_reduce_to_addr_specs() {
        let cases: [(&str, &[&str]); 11] = [
            ("a@x.test", &["a@x.test"]),
            ("a@x.test, b@y.test", &["a@x.test", "b@y.test"]),
            ("\"Doe, John\" <j@x.test>, Ann <ann@y.test>", &["j@x.test", "ann@y.test"]),
            ("j@x.test (John, at work)", &["j@x.test"]),
            ("team: a@x.test, b@x.test;, c@x.test", &["a@x.test", "b@x.test", "c@x.test"]),
            ("undisclosed-recipients:;", &[]),
            ("\"john doe\"@x.test", &["\"john doe\"@x.test"]),
            ("<@relay.test,@b.test:u@x.test>", &["u@x.test"]),
            ("u@[IPv6:2001:db8::1], root", &["u@[IPv6:2001:db8::1]", "root"]),
            (" john . doe @ x.test (J) , a b@x.test", &["john.doe@x.test", "a b@x.test"]),
            ("\"a . b\"@x.test", &["\"a . b\"@x.test"]),
        ];
        for (text, expected) in cases {
            assert_eq!(addr_specs(text), expected, "{text:?}");
        }
    }

    #[test]
    fn bare_names_get_the_domain() {
        let q = |a: &str| qualify(a, "example.com").map(|m| m.to_string());
        assert_eq!(q("root").unwrap(), "root@example.com");
        assert_eq!(q("Ann@Y.Test").unwrap(), "Ann@y.test");
        assert_eq!(q("\"a@b\"").unwrap(), "\"a@b\"@example.com");
        assert!(q("a@").is_err());
        assert!(q("a b@x.test").is_err());
        assert!(q("a@x..test").is_err());
    }
}
