use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::address::{Domain, Mailbox};

fn parse(line: &str) -> Parsed {
    parse_command(line.as_bytes())
}

fn mailbox(local: &str, domain: &str) -> Mailbox {
    Mailbox { local: local.into(), domain: Domain::Name(domain.into()) }
}

fn mail(from: ReversePath, params: MailParams) -> Command {
    Command::Mail { from, params }
}

fn mail_from(local: &str, domain: &str) -> Command {
    mail(ReversePath::Mailbox(mailbox(local, domain)), MailParams::default())
}

fn rcpt(to: ForwardPath) -> Command {
    let params = RcptParams::default();
    Command::Rcpt { to, params }
}

fn rcpt_to(local: &str, domain: Domain) -> Command {
    let local = local.into();
    rcpt(ForwardPath::Mailbox(Mailbox { local, domain }))
}

fn check(cases: &[(&str, Parsed)]) {
    for (line, want) in cases {
        assert_eq!(&parse(line), want, "line {line:?}");
    }
}

#[test]
fn greetings() {
    check(&[
        ("EHLO mail.example", Ok(Command::Ehlo("mail.example".into()))),
        ("ehlo [192.0.2.1]", Ok(Command::Ehlo("[192.0.2.1]".into()))),
        ("HeLo x", Ok(Command::Helo("x".into()))),
        ("EHLO   spaced  ", Ok(Command::Ehlo("spaced".into()))),
        ("EHLO under_score!", Ok(Command::Ehlo("under_score!".into()))),
        ("EHLO", Err(CommandError::Syntax("EHLO needs a domain"))),
        ("HELO ", Err(CommandError::Syntax("HELO needs a domain"))),
        ("EHLO a b", Err(CommandError::Syntax("expected exactly one argument"))),
    ]);
}

#[test]
fn mail_forms() {
    let null = || mail(ReversePath::Null, MailParams::default());
    check(&[
        ("MAIL FROM:<a@b.example>", Ok(mail_from("a", "b.example"))),
        ("mail from:<a@b.example>", Ok(mail_from("a", "b.example"))),
        ("MaIl FrOm:<a@B.Example>", Ok(mail_from("a", "B.Example"))),
        ("MAIL FROM: <a@b.example>", Ok(mail_from("a", "b.example"))),
        ("MAIL  FROM:   <a@b.example>  ", Ok(mail_from("a", "b.example"))),
        ("MAIL FROM:<>", Ok(null())),
        ("MAIL FROM: <>", Ok(null())),
        (r#"MAIL FROM:<"john doe"@example.com>"#, Ok(mail_from("john doe", "example.com"))),
        (r#"MAIL FROM:<"a\"b"@x>"#, Ok(mail_from("a\"b", "x"))),
        (r#"MAIL FROM:<"a\\b"@x>"#, Ok(mail_from("a\\b", "x"))),
        (r#"MAIL FROM:<"a>b"@x>"#, Ok(mail_from("a>b", "x"))),
        ("MAIL FROM:<用户@例子.广告>", Ok(mail_from("用户", "例子.广告"))),
        ("MAIL FROM:<@a.example:u@c.example>", Ok(mail_from("u", "c.example"))),
        ("MAIL FROM:<a.b+tag@x-y.example>", Ok(mail_from("a.b+tag", "x-y.example"))),
    ]);
}

#[test]
fn rcpt_forms() {
    let v4 = Domain::Ipv4(Ipv4Addr::LOCALHOST);
    let v6 = Domain::Ipv6(Ipv6Addr::LOCALHOST);
    let general = Domain::General { tag: "x-tag".into(), content: "a:b".into() };
    let name = |s: &str| Domain::Name(s.into());
    check(&[
        ("RCPT TO:<u@c.example>", Ok(rcpt_to("u", name("c.example")))),
        ("rcpt to: <u@c.example>", Ok(rcpt_to("u", name("c.example")))),
        ("RCPT TO:<@a.example,@b.example:user@c.example>", Ok(rcpt_to("user", name("c.example")))),
        ("RCPT TO:<user@[127.0.0.1]>", Ok(rcpt_to("user", v4))),
        ("RCPT TO:<user@[IPv6:::1]>", Ok(rcpt_to("user", v6.clone()))),
        ("RCPT TO:<user@[ipv6:0:0::1]>", Ok(rcpt_to("user", v6))),
        ("RCPT TO:<user@[x-tag:a:b]>", Ok(rcpt_to("user", general))),
        ("RCPT TO:<Postmaster>", Ok(rcpt(ForwardPath::Postmaster))),
        ("RCPT TO:<postmaster>", Ok(rcpt(ForwardPath::Postmaster))),
        ("RCPT TO: <POSTMASTER>", Ok(rcpt(ForwardPath::Postmaster))),
        ("RCPT TO:<postmaster@x.example>", Ok(rcpt_to("postmaster", name("x.example")))),
    ]);
}

#[test]
fn mail_parameters() {
    let with = |size, body, smtputf8| {
        let params = MailParams { size, body, smtputf8, transid: None };
        Ok(mail(ReversePath::Mailbox(mailbox("a", "b")), params))
    };
    check(&[
        ("MAIL FROM:<a@b> SIZE=1000", with(Some(1000), None, false)),
        ("MAIL FROM:<a@b> size=0", with(Some(0), None, false)),
        ("MAIL FROM:<a@b> BODY=8bitmime", with(None, Some(Body::EightBitMime), false)),
        ("MAIL FROM:<a@b> body=7BIT", with(None, Some(Body::SevenBit), false)),
        ("MAIL FROM:<a@b> Body=BinaryMime", with(None, Some(Body::BinaryMime), false)),
        ("MAIL FROM:<a@b> smtputf8", with(None, None, true)),
        (
            "MAIL FROM:<a@b> SIZE=12 BODY=8BITMIME SMTPUTF8",
            with(Some(12), Some(Body::EightBitMime), true),
        ),
        ("MAIL FROM:<a@b>   SIZE=12   SMTPUTF8 ", with(Some(12), None, true)),
        ("MAIL FROM:<a@b> SIZE=99999999999999999999", with(Some(u64::MAX), None, false)),
    ]);
}

#[test]
fn transid_parameter() {
    let parsed = parse_command(b"MAIL FROM:<a@b> TRANSID=<12.ab@client.example>");
    let Ok(Command::Mail { params, .. }) = parsed else { panic!("{parsed:?}") };
    assert_eq!(params.transid.as_deref(), Some("12.ab@client.example"));
    assert_eq!(params.to_string(), " TRANSID=<12.ab@client.example>");

    for bad in ["TRANSID", "TRANSID=x@y", "TRANSID=<xy>", "TRANSID=<@y>", "TRANSID=<a b@y>"] {
        let line = format!("MAIL FROM:<a@b> {bad}");
        let parsed = parse_command(line.as_bytes());
        assert!(matches!(parsed, Err(CommandError::Syntax(_))), "{bad}: {parsed:?}");
    }
    let twice = parse_command(b"MAIL FROM:<a@b> TRANSID=<a@b> TRANSID=<a@b>");
    assert!(matches!(twice, Err(CommandError::Syntax(_))));
}

#[test]
fn parameter_errors() {
    let syntax = |why| Err(CommandError::Syntax(why));
    let unknown = |key: &str| Err(CommandError::UnknownParameter(key.into()));
    check(&[
        ("MAIL FROM:<a@b>SIZE=1", syntax("expected a space after the address")),
        ("MAIL FROM:<a@b> SIZE=abc", syntax("invalid SIZE value")),
        ("MAIL FROM:<a@b> SIZE=-1", syntax("invalid SIZE value")),
        ("MAIL FROM:<a@b> SIZE=123456789012345678901", syntax("invalid SIZE value")),
        ("MAIL FROM:<a@b> SIZE=", syntax("invalid parameter value")),
        ("MAIL FROM:<a@b> SIZE", syntax("SIZE needs a value")),
        ("MAIL FROM:<a@b> SIZE=1 size=2", syntax("repeated parameter")),
        ("MAIL FROM:<a@b> BODY=9BIT", syntax("invalid BODY value")),
        ("MAIL FROM:<a@b> BODY", syntax("BODY needs a value")),
        ("MAIL FROM:<a@b> BODY=7BIT BODY=7BIT", syntax("repeated parameter")),
        ("MAIL FROM:<a@b> SMTPUTF8=yes", syntax("SMTPUTF8 takes no value")),
        ("MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", syntax("repeated parameter")),
        ("MAIL FROM:<a@b> -X=1", syntax("invalid parameter keyword")),
        ("MAIL FROM:<a@b> =1", syntax("invalid parameter keyword")),
        ("MAIL FROM:<a@b> X=a=b", syntax("invalid parameter value")),
        ("MAIL FROM:<a@b> FOO=bar", unknown("FOO")),
        ("MAIL FROM:<a@b> x-Custom", unknown("x-Custom")),
        ("MAIL FROM:<a@b> SIZE=1 RET=HDRS SIZE=x", unknown("RET")),
        ("RCPT TO:<a@b> NOTIFY=NEVER", unknown("NOTIFY")),
        ("RCPT TO:<a@b> ORCPT=rfc822;a@b", unknown("ORCPT")),
        ("RCPT TO:<a@b> N@TIFY", syntax("invalid parameter keyword")),
        ("RCPT TO:<a@b>NOTIFY=NEVER", syntax("expected a space after the address")),
    ]);
}

#[test]
fn path_errors() {
    let sender = |e: address::AddressError| Err(CommandError::BadSender(e.reason()));
    let recipient = |e: address::AddressError| Err(CommandError::BadRecipient(e.reason()));
    use address::AddressError as E;
    let long_local = format!("MAIL FROM:<{}@b.example>", "a".repeat(244));
    let long_path = format!("MAIL FROM:<{}@b.example>", "a".repeat(245));
    let ok_local = Ok(mail_from(&"a".repeat(244), "b.example"));
    check(&[
        ("MAIL <a@b>", Err(CommandError::Syntax("expected FROM:<address>"))),
        ("MAIL FROM <a@b>", Err(CommandError::Syntax("expected FROM:<address>"))),
        ("MAIL", Err(CommandError::Syntax("expected FROM:<address>"))),
        ("MAIL FROM:", sender(E::MissingBrackets)),
        ("MAIL FROM:a@b", sender(E::MissingBrackets)),
        ("MAIL FROM:<a@b", sender(E::MissingBrackets)),
        ("MAIL FROM:<@>", sender(E::BadSourceRoute)),
        ("MAIL FROM:<a@>", sender(E::MissingDomain)),
        ("MAIL FROM:<a>", sender(E::MissingDomain)),
        ("MAIL FROM:<@b.example>", sender(E::BadSourceRoute)),
        ("MAIL FROM:<a@-b.example>", sender(E::BadDomain)),
        ("MAIL FROM:<a@b-.example>", sender(E::BadDomain)),
        ("MAIL FROM:<a@b..example>", sender(E::BadDomain)),
        ("MAIL FROM:<a@b.example.>", sender(E::BadDomain)),
        ("MAIL FROM:<a@b_c.example>", sender(E::BadDomain)),
        ("MAIL FROM:<\"abc@x>", sender(E::UnbalancedQuote)),
        ("MAIL FROM:<\"\"@x>", sender(E::EmptyLocalPart)),
        ("MAIL FROM:<a b@x>", sender(E::BadLocalPart)),
        ("MAIL FROM:<.a@x>", sender(E::BadLocalPart)),
        ("MAIL FROM:<a..b@x>", sender(E::BadLocalPart)),
        ("MAIL FROM:<a.@x>", sender(E::BadLocalPart)),
        ("MAIL FROM:<a@b@c>", sender(E::BadDomain)),
        ("MAIL FROM:<a@[1.2.3]>", sender(E::BadAddressLiteral)),
        ("MAIL FROM:<a@[IPv6:1.2.3.4]>", sender(E::BadAddressLiteral)),
        ("MAIL FROM:<a@[1.2.3.4>", sender(E::BadAddressLiteral)),
        ("MAIL FROM:<Postmaster>", sender(E::MissingDomain)),
        ("MAIL FROM:<@a.example u@b>", sender(E::BadSourceRoute)),
        (&long_local, ok_local),
        (&long_path, sender(E::PathTooLong)),
        ("RCPT TO:<>", recipient(E::EmptyPath)),
        ("RCPT TO:a@b", recipient(E::MissingBrackets)),
        ("RCPT TO:<@a:Postmaster>", recipient(E::MissingDomain)),
        ("RCPT <a@b>", Err(CommandError::Syntax("expected TO:<address>"))),
    ]);
}

#[test]
fn domain_limits() {
    let label = |n| "a".repeat(n);
    let long_label = format!("MAIL FROM:<a@{}.example>", label(64));
    let max_label = format!("MAIL FROM:<a@{}.example>", label(63));
    assert_eq!(
        parse(&long_label),
        Err(CommandError::BadSender("domain label longer than 63 octets"))
    );
    assert!(parse(&max_label).is_ok());
}

#[test]
fn simple_verbs() {
    let no_arg = || Err(CommandError::Syntax("this command takes no argument"));
    check(&[
        ("DATA", Ok(Command::Data)),
        ("data", Ok(Command::Data)),
        ("DATA ", Ok(Command::Data)),
        ("RSET", Ok(Command::Rset)),
        ("QUIT", Ok(Command::Quit)),
        ("quit\t", Ok(Command::Quit)),
        ("STARTTLS", Ok(Command::StartTls)),
        ("NOOP", Ok(Command::Noop)),
        ("NOOP whatever you like", Ok(Command::Noop)),
        ("DATA x", no_arg()),
        ("RSET x", no_arg()),
        ("QUIT now", no_arg()),
        ("STARTTLS x", no_arg()),
    ]);
}

#[test]
fn bdat() {
    let chunk = |size, last| Ok(Command::Bdat { size, last });
    let syntax = |why| Err(CommandError::Syntax(why));
    check(&[
        ("BDAT 100", chunk(100, false)),
        ("BDAT 0 LAST", chunk(0, true)),
        ("bdat 5 last", chunk(5, true)),
        ("BDAT 18446744073709551615", chunk(u64::MAX, false)),
        ("BDAT", syntax("BDAT needs a chunk size")),
        ("BDAT x", syntax("invalid BDAT chunk size")),
        ("BDAT -1", syntax("invalid BDAT chunk size")),
        ("BDAT 18446744073709551616", syntax("invalid BDAT chunk size")),
        ("BDAT 123456789012345678901", syntax("invalid BDAT chunk size")),
        ("BDAT 10 FIRST", syntax("expected LAST after the BDAT chunk size")),
        ("BDAT 1 LAST x", syntax("too many BDAT arguments")),
    ]);
}

#[test]
fn text_verbs() {
    let syntax = |why| Err(CommandError::Syntax(why));
    check(&[
        ("VRFY user", Ok(Command::Vrfy("user".into()))),
        ("VRFY John Smith", Ok(Command::Vrfy("John Smith".into()))),
        ("expn list", Ok(Command::Expn("list".into()))),
        ("VRFY", syntax("VRFY needs an argument")),
        ("EXPN  ", syntax("EXPN needs an argument")),
        ("HELP", Ok(Command::Help(None))),
        ("help mail", Ok(Command::Help(Some("mail".into())))),
    ]);
}

#[test]
fn auth() {
    let auth = |mechanism: &str, initial: Option<&str>| {
        let mechanism = mechanism.into();
        let initial = initial.map(Into::into);
        Ok(Command::Auth { mechanism, initial })
    };
    let syntax = |why| Err(CommandError::Syntax(why));
    check(&[
        ("AUTH PLAIN", auth("PLAIN", None)),
        ("auth plain dGVzdA==", auth("PLAIN", Some("dGVzdA=="))),
        ("AUTH LOGIN =", auth("LOGIN", Some("="))),
        ("AUTH SCRAM-SHA-256", auth("SCRAM-SHA-256", None)),
        ("AUTH", syntax("AUTH needs a mechanism")),
        ("AUTH PL@IN", syntax("invalid SASL mechanism name")),
        ("AUTH ABCDEFGHIJKLMNOPQRSTU", syntax("invalid SASL mechanism name")),
        ("AUTH PLAIN a b", syntax("too many AUTH arguments")),
    ]);
}

#[test]
fn unrecognized_and_bad_lines() {
    let control = Err(CommandError::Syntax("control character in command line"));
    check(&[
        ("", Err(CommandError::Unrecognized)),
        ("FOO", Err(CommandError::Unrecognized)),
        ("MAILFROM:<a@b>", Err(CommandError::Unrecognized)),
        ("TURN", Err(CommandError::Unrecognized)),
        (" DATA", Err(CommandError::Unrecognized)),
        ("MAIL FROM:<a@b>\rRCPT TO:<c@d>", control.clone()),
        ("MAIL FROM:<a\u{1}@b>", control.clone()),
        ("DATA\0", control),
    ]);
    let not_utf8 = Err(CommandError::Syntax("line is not valid UTF-8"));
    assert_eq!(parse_command(b"MAIL FROM:<\xff@b>"), not_utf8);
    assert_eq!(parse_command(b"\xc3"), not_utf8);
}

#[test]
fn errors_map_to_replies() {
    let codes = [
        (CommandError::Unrecognized, 500, "5.5.1"),
        (CommandError::Syntax("x"), 501, "5.5.2"),
        (CommandError::BadSender("x"), 501, "5.1.7"),
        (CommandError::BadRecipient("x"), 501, "5.1.3"),
        (CommandError::UnknownParameter("X".into()), 555, "5.5.4"),
    ];
    for (error, code, enhanced) in codes {
        assert_eq!((error.code(), error.enhanced()), (code, enhanced));
    }
}

#[test]
fn display_is_canonical() {
    let cases = [
        ("mail from: <a@b> smtputf8 size=5", "MAIL FROM:<a@b> SIZE=5 SMTPUTF8"),
        (r#"MAIL FROM:<"john doe"@[IPv6:0::1]>"#, r#"MAIL FROM:<"john doe"@[IPv6:::1]>"#),
        ("MAIL FROM:<>", "MAIL FROM:<>"),
        ("rcpt to:<postMaster>", "RCPT TO:<Postmaster>"),
        ("RCPT TO:<@r.example:\"a\\\\\"@b>", "RCPT TO:<\"a\\\\\"@b>"),
        ("bdat 0 last", "BDAT 0 LAST"),
        ("auth plain =", "AUTH PLAIN ="),
        ("help", "HELP"),
    ];
    for (line, canonical) in cases {
        let command = parse(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        assert_eq!(command.to_string(), canonical);
    }
}

/// Command-shaped strings over an alphabet rich in the bytes that matter to
/// the parsers, so generated cases get past the verb.
fn commandish() -> impl Strategy<Value = String> {
    let verbs = prop::sample::select(vec![
        "MAIL FROM:",
        "RCPT TO:",
        "mail from: ",
        "EHLO ",
        "BDAT ",
        "AUTH ",
        "VRFY ",
        "HELP ",
    ]);
    let tail = "[<>@\"\\\\.,:\\[\\]= a-cA-C0-9\u{e9}\u{4e2d}-]{0,40}";
    (verbs, tail).prop_map(|(verb, tail)| format!("{verb}{tail}"))
}

proptest! {
    #[test]
    fn never_panics_on_bytes(line in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_command(&line);
    }

    #[test]
    fn never_panics_on_command_shapes(line in commandish()) {
        let _ = parse_command(line.as_bytes());
    }

    /// What parses, displays as a line that parses to the same command: the
    /// relay client can forward what the server accepted.
    #[test]
    fn display_round_trips(line in commandish()) {
        if let Ok(command) = parse_command(line.as_bytes()) {
            let again = parse_command(command.to_string().as_bytes());
            prop_assert_eq!(again, Ok(command));
        }
    }
}
