//! sendmail: the command cron, scripts and web applications call to send mail.
//!
//! `oncemail sendmail [options] [recipient ...]`, or `sendmail ...` through a symbolic
//! link named `sendmail` (options as classic sendmail spells them: `-fuser`, `-F "Name"`,
//! `-oi`, `-t`, `-C file`). The message is read from standard input.
//!
//! # Contract
//!
//! Exit status 0 means the message is durably in the maildrop (`<data_dir>/maildrop`,
//! see [`pickup`](crate::pickup)): written, fsync'd, renamed into place, directory
//! fsync'd. The server queues it from there, at once when it is running (sendmail asks it
//! over the admin socket), else at its next start; sendmail needs neither the server nor
//! the network, and says nothing when the server is down, as users of sendmail expect.
//! Any other exit status means nothing was left (the temporary file is removed); the
//! reason is on stderr. Statuses follow `sysexits.h`: 64 usage, 65 a bad address or
//! message, 67 an unknown local user, 73 the maildrop cannot be written, 74 standard
//! input cannot be read, 78 a bad configuration.
//!
//! # What it changes in the message
//!
//! See [`message`]: line endings become CRLF, `Bcc:` is removed, `From:` (with `-F`'s full
//! name), `Date:` and `Message-ID:` are added when missing.
//!
//! # Addresses
//!
//! Recipients come from the arguments (each may be an address list, `"A" <a@x>, b@y`),
//! plus, with `-t`, from `To:`, `Cc:` and `Bcc:`. An address without a domain gets the
//! first local domain. The sender is `-f`'s address, else the invoking user's name at the
//! first local domain. Every address is checked, and every recipient routed with the
//! configuration sendmail read (an unknown local user fails here, with 67), before
//! anything is written.
//!
//! # Limits
//!
//! `-bs` (SMTP on standard input), DSN options (`-N`, `-R`, `-V`) and `-q` are refused;
//! use SMTP on the listener for those. TODO: with `-t`, `Resent-To:`/`Resent-Cc:` are not
//! read as recipients the way Postfix does for a resent message.

mod address;
mod drop;
mod message;

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use smtp_wire::address::{ForwardPath, Mailbox};

use crate::admin::{self, Request};
use crate::config::{self, Config, Overrides};
use crate::pickup::{DropHeader, FORMAT};
use crate::routing;
use drop::DropFile;
use message::{Additions, Normalizer};

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_CANTCREAT: u8 = 73;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;

/// Why sendmail gives up: an exit status and a message for stderr.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// Runs sendmail with `args` (without the program name).
pub fn main(args: &[OsString]) -> ExitCode {
    let result = parse_args(args).and_then(|options| match options.list_queue {
        true => Ok(admin::cli::mailq(options.config, options.data_dir)),
        false => submit(options).map(|()| ExitCode::SUCCESS),
    });
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("sendmail: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    sender: Option<String>,
    full_name: Option<String>,
    /// `-t`: recipients from the header section too.
    extract: bool,
    /// `-i`, `-oi`: a lone dot does not end the input.
    ignore_dots: bool,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    /// `-bp`: list the queue (mailq) instead of sending.
    list_queue: bool,
    recipients: Vec<String>,
}

/// Options that take a value, attached (`-fuser`) or as the next argument (`-f user`).
const WITH_VALUE: &str = "fFroCbBNRVqXLhdO";

/// Classic sendmail option syntax: single-dash letters, bundled flags (`-ti`), values
/// attached or separate, recipients from the first argument that is not an option.
fn parse_args(args: &[OsString]) -> Result<Options, Failure> {
    let mut args: Vec<String> = args
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<_>>()
        .ok_or_else(|| fail(EX_USAGE, "arguments must be UTF-8"))?;
    args.reverse();

    let mut options = Options::default();
    while let Some(arg) = args.pop() {
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            long_option(&mut options, long, &mut args)?;
            continue;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            args.push(arg);
            break;
        };
        short_options(&mut options, letters, &mut args)?;
    }
    args.reverse();
    options.recipients = args;
    Ok(options)
}

fn short_options(
    options: &mut Options,
    letters: &str,
    rest: &mut Vec<String>,
) -> Result<(), Failure> {
    for (at, letter) in letters.char_indices() {
        if !WITH_VALUE.contains(letter) {
            flag(options, letter)?;
            continue;
        }
        let attached = &letters[at + letter.len_utf8()..];
        let value = match attached.is_empty() {
            true => rest.pop().ok_or_else(|| fail(EX_USAGE, format!("-{letter} needs a value")))?,
            false => attached.to_string(),
        };
        return with_value(options, letter, value);
    }
    Ok(())
}

fn flag(options: &mut Options, letter: char) -> Result<(), Failure> {
    match letter {
        't' => options.extract = true,
        'i' => options.ignore_dots = true,
        // Verbose, "me too", initial submission, no aliasing: nothing to change here.
        'v' | 'm' | 'U' | 'n' => {}
        _ => return Err(fail(EX_USAGE, format!("unknown option -{letter}"))),
    }
    Ok(())
}

fn with_value(options: &mut Options, letter: char, value: String) -> Result<(), Failure> {
    match (letter, value.as_str()) {
        ('f' | 'r', _) => options.sender = Some(value),
        ('F', _) => options.full_name = Some(value),
        ('C', _) => options.config = Some(PathBuf::from(value)),
        ('o', "i") => options.ignore_dots = true,
        // Delivery and error modes: the message is queued either way, errors come back
        // as mail. `-om` is "me too".
        ('o', "m" | "di" | "db" | "dq" | "em" | "ee" | "ep" | "eq" | "ew") => {}
        ('b', "m") => {}
        ('b', "p") => options.list_queue = true,
        ('b', "s") => return Err(fail(EX_USAGE, "-bs is not supported; use SMTP instead")),
        ('B', v) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
        ('N' | 'R' | 'V', _) => {
            return Err(fail(EX_USAGE, format!("-{letter}: DSN options are not supported")));
        }
        _ => return Err(fail(EX_USAGE, format!("unsupported option -{letter}{value}"))),
    }
    Ok(())
}

fn long_option(options: &mut Options, long: &str, rest: &mut Vec<String>) -> Result<(), Failure> {
    let (name, attached) = match long.split_once('=') {
        Some((name, value)) => (name, Some(value.to_string())),
        None => (long, None),
    };
    let mut value = || {
        attached
            .clone()
            .or_else(|| rest.pop())
            .ok_or_else(|| fail(EX_USAGE, format!("--{name} needs a value")))
    };
    match name {
        "config" => options.config = Some(PathBuf::from(value()?)),
        "data-dir" => options.data_dir = Some(PathBuf::from(value()?)),
        _ => return Err(fail(EX_USAGE, format!("unknown option --{name}"))),
    }
    Ok(())
}

/// Reads the message, checks every address, and leaves the message in the maildrop.
fn submit(options: Options) -> Result<(), Failure> {
    let path = config::config_path(options.config.as_deref());
    let overrides = Overrides { data_dir: options.data_dir.clone(), ..Overrides::default() };
    let config = Config::load(path.as_deref(), overrides)
        .map_err(|e| fail(EX_CONFIG, format!("configuration: {e:#}")))?;
    let domain = config.local.domains[0].clone();

    let sender = envelope_sender(options.sender.as_deref(), &domain)?;
    let mut recipients = Vec::new();
    for arg in &options.recipients {
        add_recipients(&mut recipients, &address::addr_specs(arg), &domain)?;
    }

    let max = config.limits.max_message_size;
    let mut input = Input::new(io::stdin().lock(), !options.ignore_dots);
    let (head, body_start) = input.header_section()?;
    let name = drop::unique_name();
    let added = additions(&options, &config, &sender, &name);
    let headers = message::headers(&head, &Additions::from(&added));
    if options.extract {
        add_recipients(&mut recipients, &headers.recipients, &domain)?;
    }
    check_routes(&config, &recipients)?;

    let header = DropHeader {
        format: FORMAT.into(),
        sender: sender.map(|s| s.to_string()).unwrap_or_default(),
        recipients: recipients.iter().map(ToString::to_string).collect(),
    };
    write_drop(&config, &name, &header, &headers.text, body_start, input, max)?;

    // Best effort: without an answer the server finds the file by itself.
    if let Ok(socket) = config.admin_socket() {
        let _ = admin::client::ask(&socket, &Request::Pickup, Duration::from_secs(2));
    }
    Ok(())
}

/// `-f`'s address (`<>` or empty for the null sender), else the user's own.
fn envelope_sender(given: Option<&str>, domain: &str) -> Result<Option<Mailbox>, Failure> {
    let address = match given {
        Some(text) => match address::addr_specs(text).into_iter().next() {
            Some(address) => address,
            None => return Ok(None),
        },
        None => login_name(),
    };
    let mailbox = address::qualify(&address, domain)
        .map_err(|e| fail(EX_DATAERR, format!("bad sender address {e}")))?;
    Ok(Some(mailbox))
}

fn add_recipients(list: &mut Vec<Mailbox>, specs: &[String], domain: &str) -> Result<(), Failure> {
    for spec in specs {
        let mailbox = address::qualify(spec, domain)
            .map_err(|e| fail(EX_DATAERR, format!("bad recipient address {e}")))?;
        if !list.contains(&mailbox) {
            list.push(mailbox);
        }
    }
    Ok(())
}

/// Every recipient must be routable with this configuration (local submission may relay).
fn check_routes(config: &Config, recipients: &[Mailbox]) -> Result<(), Failure> {
    if recipients.is_empty() {
        return Err(fail(EX_USAGE, "no recipients: give them as arguments, or use -t"));
    }
    for mailbox in recipients {
        let to = ForwardPath::Mailbox(mailbox.clone());
        if let Err(reply) = routing::route(&config.local, true, &to) {
            let code = if reply.status == "5.1.1" { EX_NOUSER } else { EX_DATAERR };
            return Err(fail(code, format!("{mailbox}: {} {}", reply.status, reply.text)));
        }
    }
    Ok(())
}

fn additions(options: &Options, config: &Config, sender: &Option<Mailbox>, name: &str) -> Owned {
    let address = match sender {
        Some(mailbox) => mailbox.to_string(),
        None => format!("MAILER-DAEMON@{}", config.local.domains[0]),
    };
    let from = match &options.full_name {
        Some(full) => format!("{} <{address}>", message::display_name(full)),
        None => address,
    };
    Owned {
        from,
        date: chrono::Local::now().format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        message_id: format!("<{name}@{}>", config.hostname),
    }
}

/// The values behind [`Additions`].
struct Owned {
    from: String,
    date: String,
    message_id: String,
}

impl<'a> From<&'a Owned> for Additions<'a> {
    fn from(owned: &'a Owned) -> Additions<'a> {
        Additions { from: &owned.from, date: &owned.date, message_id: &owned.message_id }
    }
}

fn write_drop(
    config: &Config,
    name: &str,
    header: &DropHeader,
    headers: &[u8],
    body_start: Vec<u8>,
    mut input: Input<impl Read>,
    max: u64,
) -> Result<(), Failure> {
    let cannot = |e: io::Error| fail(EX_CANTCREAT, format!("cannot write to the maildrop: {e}"));
    let mut file = DropFile::create(&config.data_dir, name).map_err(cannot)?;
    let mut line = serde_json::to_vec(header).map_err(|e| fail(EX_CANTCREAT, e.to_string()))?;
    line.push(b'\n');
    file.write_all(&line).map_err(cannot)?;

    let mut size = 0u64;
    let mut chunk = [headers, b"\r\n".as_slice(), &body_start].concat();
    loop {
        size += chunk.len() as u64;
        if size > max {
            return Err(fail(EX_DATAERR, format!("message larger than {max} bytes")));
        }
        file.write_all(&chunk).map_err(cannot)?;
        chunk.clear();
        if !input.next(&mut chunk)? {
            break;
        }
    }
    file.commit().map_err(cannot)
}

/// Standard input, normalised, a chunk at a time.
struct Input<R> {
    reader: R,
    normalizer: Normalizer,
    done: bool,
}

impl<R: Read> Input<R> {
    fn new(reader: R, dot_ends: bool) -> Input<R> {
        Input { reader, normalizer: Normalizer::new(dot_ends), done: false }
    }

    /// Appends the next normalised bytes to `out`; false once the input is over.
    fn next(&mut self, out: &mut Vec<u8>) -> Result<bool, Failure> {
        if self.done {
            return Ok(false);
        }
        let mut raw = [0u8; 64 * 1024];
        let n = loop {
            match self.reader.read(&mut raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(EX_IOERR, format!("cannot read the message: {e}"))),
            }
        };
        match n {
            0 => self.normalizer.finish(out),
            n => self.normalizer.feed(&raw[..n], out),
        }
        self.done = n == 0 || self.normalizer.ended();
        Ok(true)
    }

    /// Reads until the header section's end is known: the section, and what was read of
    /// the body.
    fn header_section(&mut self) -> Result<(Vec<u8>, Vec<u8>), Failure> {
        let mut text = Vec::new();
        loop {
            if let Some(split) = message::split(&text, self.done) {
                let body = text.split_off(split.body);
                text.truncate(split.headers);
                return Ok((text, body));
            }
            if text.len() > message::MAX_HEADER_SECTION {
                return Err(fail(EX_DATAERR, "header section longer than 1 MiB"));
            }
            self.next(&mut text)?;
        }
    }
}

/// The invoking user's login name: from the password database, else `$USER`, else root.
fn login_name() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if let Some(name) = user_name(uid) {
        return name;
    }
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".into())
}

fn user_name(uid: libc::uid_t) -> Option<String> {
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`, which
    // outlives every use below, and sets `found` to null when there is no such user.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name).to_str().ok().map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, Failure> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(&args)
    }

    #[test]
    fn classic_option_spellings() {
        let o = parse(&["-t", "-oi", "-fcron@x.test", "-F", "Cron Daemon", "a@x.test"]).unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("cron@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(o.recipients, ["a@x.test"]);

        let o = parse(&["-ti", "-f", "<>", "-odi", "-oem", "-v", "-bm", "--", "-odd"]).unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("<>"));
        assert_eq!(o.recipients, ["-odd"]);

        let o = parse(&["-C/etc/x.toml", "--data-dir=/d", "a", "-i"]).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
        assert!(!o.ignore_dots, "options end at the first recipient");
        assert_eq!(o.recipients, ["a", "-i"]);
        assert!(parse(&["-bp"]).unwrap().list_queue);
    }

    #[test]
    fn unknown_and_unsupported_options_are_refused() {
        let refused: [&[&str]; 6] =
            [&["-x"], &["-bs"], &["-N", "never"], &["-oQ/tmp"], &["-f"], &["--bogus"]];
        for args in refused {
            let failure = parse(args).unwrap_err();
            assert_eq!(failure.code, EX_USAGE, "{args:?}");
        }
    }

    #[test]
    fn input_gives_the_header_section_then_the_body() {
        let text = b"Subject: a\nTo: b\n\nline\n.\nignored\n".as_slice();
        let mut input = Input::new(text, true);
        let (head, body) = input.header_section().unwrap();
        assert_eq!(head, b"Subject: a\r\nTo: b\r\n");
        let mut rest = body;
        while input.next(&mut rest).unwrap() {}
        assert_eq!(rest, b"line\r\n");

        let mut input = Input::new(b"just a line".as_slice(), true);
        let (head, body) = input.header_section().unwrap();
        assert_eq!(
            (head.as_slice(), body.as_slice()),
            (b"".as_slice(), b"just a line\r\n".as_slice())
        );
    }

    #[test]
    fn the_sender_defaults_to_the_user_and_can_be_null() {
        assert_eq!(envelope_sender(Some("<>"), "x.test").unwrap(), None);
        assert_eq!(envelope_sender(Some(""), "x.test").unwrap(), None);
        let named = envelope_sender(Some("Me <me@y.test>"), "x.test").unwrap().unwrap();
        assert_eq!(named.to_string(), "me@y.test");
        let user = envelope_sender(None, "x.test").unwrap().unwrap();
        assert!(user.to_string().ends_with("@x.test"));
        assert_eq!(envelope_sender(Some("a@@b"), "x.test").unwrap_err().code, EX_DATAERR);
    }
}
