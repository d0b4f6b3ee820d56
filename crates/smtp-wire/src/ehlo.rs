//! The service extensions a server offers in its EHLO reply (RFC 5321
//! §4.1.1.1), as the relay client needs them.
//!
//! Contract: the first line of the reply names the server and is skipped;
//! each other line is a keyword, case-insensitive, and its parameters.
//! Keywords we have no use for are ignored, and so are lines that are not
//! keywords at all: a server's odd line must not cost the whole session.
//! A `SIZE` whose value is missing or unreadable counts as offered with no
//! stated limit (RFC 1870 §4 allows omitting it).

/// What the server said it supports. `Default` is what a server that
/// answered HELO, or an EHLO with no keywords, offers: nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 1870 SIZE: `Some(limit)` when offered, 0 meaning no fixed limit.
    pub size: Option<u64>,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3030 BDAT.
    pub chunking: bool,
    /// RFC 3030 BODY=BINARYMIME.
    pub binary_mime: bool,
    /// RFC 1845 TRANSID.
    pub checkpoint: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// Reads the text of each line of a 250 reply to EHLO.
    pub fn from_ehlo_lines<S: AsRef<str>>(lines: &[S]) -> Extensions {
        let mut offers = Extensions::default();
        for line in lines.iter().skip(1) {
            let mut words = line.as_ref().split_ascii_whitespace();
            if let Some(keyword) = words.next() {
                offers.note(keyword, words.next());
            }
        }
        offers
    }

    /// The size limit, when the server stated one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&limit| limit > 0)
    }

    fn note(&mut self, keyword: &str, first_param: Option<&str>) {
        let is = |name: &str| keyword.eq_ignore_ascii_case(name);
        if is("SIZE") {
            self.size = Some(first_param.and_then(size_limit).unwrap_or(0));
        } else if is("PIPELINING") {
            self.pipelining = true;
        } else if is("8BITMIME") {
            self.eight_bit_mime = true;
        } else if is("SMTPUTF8") {
            self.smtputf8 = true;
        } else if is("CHUNKING") {
            self.chunking = true;
        } else if is("BINARYMIME") {
            self.binary_mime = true;
        } else if is("CHECKPOINT") {
            self.checkpoint = true;
        } else if is("STARTTLS") {
            self.starttls = true;
        } else if is("ENHANCEDSTATUSCODES") {
            self.enhanced_status_codes = true;
        }
    }
}

/// Digits only; a limit beyond u64 is as good as none.
fn size_limit(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::Extensions;

    #[test]
    fn reads_keywords() {
        let lines = [
            "mx.example greets you",
            "PIPELINING",
            "size 35882577",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "CHECKPOINT",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN LOGIN",
            "X-ODD",
        ];
        let offers = Extensions::from_ehlo_lines(&lines);
        let want = Extensions {
            size: Some(35882577),
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            binary_mime: true,
            checkpoint: true,
            starttls: true,
            enhanced_status_codes: true,
        };
        assert_eq!(offers, want);
        assert_eq!(offers.size_limit(), Some(35882577));
    }

    #[test]
    fn first_line_is_the_server_name() {
        let offers = Extensions::from_ehlo_lines(&["PIPELINING"]);
        assert_eq!(offers, Extensions::default());
    }

    #[test]
    fn size_without_a_usable_limit() {
        for line in ["SIZE", "SIZE 0", "SIZE lots", "SIZE -1"] {
            let offers = Extensions::from_ehlo_lines(&["mx", line]);
            assert_eq!(offers.size, Some(0), "{line}");
            assert_eq!(offers.size_limit(), None, "{line}");
        }
        let huge = Extensions::from_ehlo_lines(&["mx", "SIZE 99999999999999999999999"]);
        assert_eq!(huge.size_limit(), Some(u64::MAX));
    }
}
