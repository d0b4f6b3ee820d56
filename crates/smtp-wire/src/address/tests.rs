use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn name(s: &str) -> Domain {
    Domain::Name(s.into())
}

fn mailbox(local: &str, domain: Domain) -> Mailbox {
    let local = local.into();
    Mailbox { local, domain }
}

#[test]
fn paths_return_what_follows() {
    let (path, rest) = parse_reverse_path("<a@b> SIZE=1").expect("valid path");
    assert_eq!(path, ReversePath::Mailbox(mailbox("a", name("b"))));
    assert_eq!(rest, " SIZE=1");

    let (path, rest) = parse_forward_path("<\"x>y\"@b>").expect("valid path");
    assert_eq!(path, ForwardPath::Mailbox(mailbox("x>y", name("b"))));
    assert_eq!(rest, "");
}

#[test]
fn control_characters_are_refused() {
    let cases = ["<a\u{1}b@x>", "<\"a\u{7f}\"@x>", "<\"a\\\u{1}\"@x>", "<a\u{85}b@x>"];
    for path in cases {
        let got = parse_reverse_path(path);
        assert_eq!(got, Err(AddressError::ControlCharacter), "{path:?}");
    }
}

#[test]
fn from_str_forms() {
    let literal = Domain::General { tag: "tag".into(), content: "x".into() };
    let cases: [(&str, Result<Mailbox, AddressError>); 8] = [
        ("a@b.example", Ok(mailbox("a", name("b.example")))),
        ("\"a b\"@[1.2.3.4]", Ok(mailbox("a b", Domain::Ipv4(Ipv4Addr::new(1, 2, 3, 4))))),
        ("a@[tag:x]", Ok(mailbox("a", literal))),
        ("<a@b>", Err(AddressError::BadLocalPart)),
        ("a@b ", Err(AddressError::BadDomain)),
        ("a@", Err(AddressError::MissingDomain)),
        ("@b", Err(AddressError::EmptyLocalPart)),
        ("a", Err(AddressError::MissingDomain)),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<Mailbox>(), want, "{text:?}");
    }
}

#[test]
fn domain_from_str() {
    let long = vec!["a".repeat(63); 4].join(".");
    assert_eq!(long.parse::<Domain>(), Ok(name(&long)));
    let too_long = format!("{long}.a");
    assert_eq!(too_long.parse::<Domain>(), Err(AddressError::DomainTooLong));
    assert_eq!("[IPv6:::1]".parse(), Ok(Domain::Ipv6(Ipv6Addr::LOCALHOST)));
    assert_eq!("[::1]".parse::<Domain>(), Err(AddressError::BadAddressLiteral));
    assert_eq!("[-:x]".parse::<Domain>(), Err(AddressError::BadAddressLiteral));
    assert_eq!("[t:a b]".parse::<Domain>(), Err(AddressError::BadAddressLiteral));
    assert_eq!("bücher.example".parse(), Ok(name("bücher.example")));
}

#[test]
fn display_quotes_when_needed() {
    let cases = [
        (mailbox("a.b", name("X.example")), "a.b@X.example"),
        (mailbox("john doe", name("x")), "\"john doe\"@x"),
        (mailbox("a\"b\\c", name("x")), "\"a\\\"b\\\\c\"@x"),
        (mailbox(".a", name("x")), "\".a\"@x"),
        (mailbox("a..b", name("x")), "\"a..b\"@x"),
        (mailbox("用户", name("例子.广告")), "用户@例子.广告"),
        (mailbox("a", Domain::Ipv4(Ipv4Addr::LOCALHOST)), "a@[127.0.0.1]"),
        (mailbox("a", Domain::Ipv6(Ipv6Addr::LOCALHOST)), "a@[IPv6:::1]"),
    ];
    for (mailbox, want) in cases {
        assert_eq!(mailbox.to_string(), want);
    }
    assert_eq!(ReversePath::Null.to_string(), "");
    assert_eq!(ForwardPath::Postmaster.to_string(), "Postmaster");
}

#[test]
fn ascii_and_case() {
    assert!(mailbox("a", name("b")).is_ascii());
    assert!(!mailbox("ü", name("b")).is_ascii());
    assert!(!mailbox("a", name("bü")).is_ascii());
    assert!(Domain::Ipv4(Ipv4Addr::LOCALHOST).is_ascii());

    assert!(name("Example.COM").eq_ignore_ascii_case(&name("example.com")));
    assert!(!name("example.com").eq_ignore_ascii_case(&name("example.org")));
    assert_eq!(name("Example.COM").to_ascii_lowercase(), name("example.com"));

    let tagged =
        |tag: &str, content: &str| Domain::General { tag: tag.into(), content: content.into() };
    assert!(tagged("Tag", "X").eq_ignore_ascii_case(&tagged("tag", "X")));
    assert!(!tagged("tag", "X").eq_ignore_ascii_case(&tagged("tag", "x")));
}

fn local_part() -> impl Strategy<Value = String> {
    "[ -~é中]{1,30}"
}

fn domain() -> impl Strategy<Value = Domain> {
    prop_oneof![
        "[a-z0-9]{1,10}(\\.[a-zA-Z0-9ü]([a-z0-9-]{0,8}[a-z0-9])?){0,3}".prop_map(Domain::Name),
        any::<[u8; 4]>().prop_map(|octets| Domain::Ipv4(octets.into())),
        any::<[u16; 8]>().prop_map(|segments| Domain::Ipv6(segments.into())),
    ]
}

proptest! {
    /// Display writes what the parser reads back to the same mailbox.
    #[test]
    fn display_round_trips(local in local_part(), domain in domain()) {
        let mailbox = Mailbox { local, domain };
        let path = format!("<{mailbox}>");
        let parsed = parse_forward_path(&path);
        prop_assert_eq!(parsed, Ok((ForwardPath::Mailbox(mailbox), "")));
    }
}
