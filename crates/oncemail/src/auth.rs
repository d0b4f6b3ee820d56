//! auth: users who may submit mail, and the SASL mechanisms PLAIN and LOGIN (RFC 4954).
//!
//! Users live in a file of `name:hash` lines, the hash an argon2 PHC string, managed with
//! `oncemail user add NAME` / `oncemail user del NAME` (written atomically, owner-only).
//! The file is read at each attempt, so changes apply without a restart. Passwords are
//! verified on the blocking pool (argon2 is slow on purpose) and never logged.
//!
//! A user named `alice` owns `alice@<every local domain>`; a user named
//! `alice@example.com` owns that address only. With `auth.sender_must_match`, an
//! authenticated client may use only owned addresses (or `<>`) in `MAIL FROM`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Why a SASL exchange did not produce credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// Not base64, or not the mechanism's shape.
    Malformed,
    /// The client sent `*`.
    Cancelled,
}

/// Credentials from a PLAIN response: `[authzid] NUL authcid NUL password`, base64.
pub fn decode_plain(response: &str) -> Result<(String, String), SaslError> {
    let bytes = decode(response)?;
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    // Acting for another identity is not offered.
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Malformed);
    }
    Ok((text(user)?, text(password)?))
}

/// One base64 line of a LOGIN exchange.
pub fn decode_line(response: &str) -> Result<String, SaslError> {
    text(&decode(response)?)
}

fn decode(response: &str) -> Result<Vec<u8>, SaslError> {
    let response = response.trim();
    if response == "*" {
        return Err(SaslError::Cancelled);
    }
    STANDARD.decode(response).map_err(|_| SaslError::Malformed)
}

fn text(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

/// True if `name` has `password` in the users file. Slow by design; call it on the
/// blocking pool.
pub fn verify(users_file: &Path, name: &str, password: &str) -> bool {
    let Ok(text) = fs::read_to_string(users_file) else {
        return false;
    };
    let Some(hash) = lookup(&text, name) else {
        // Spend the same time as a real check, so a wrong name is not faster.
        let _ = hash_password("not a user");
        return false;
    };
    let Ok(parsed) = PasswordHash::new(&hash) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

fn lookup(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .find(|(user, _)| user.eq_ignore_ascii_case(name))
        .map(|(_, hash)| hash.trim().to_string())
}

/// Whether users exist at all (AUTH is offered only then).
pub fn any_users(users_file: &Path) -> bool {
    fs::read_to_string(users_file).is_ok_and(|text| {
        text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    })
}

/// Whether `user` may send as `sender` (SMTP form, "" for `<>`).
pub fn owns(user: &str, sender: &str, local_domains: &[String]) -> bool {
    if sender.is_empty() {
        return true;
    }
    let sender = sender.to_lowercase();
    let user = user.to_lowercase();
    if user.contains('@') {
        return sender == user;
    }
    match sender.rsplit_once('@') {
        Some((local, domain)) => local == user && local_domains.iter().any(|d| d == domain),
        None => false,
    }
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Adds or replaces `name` in the users file.
pub fn add_user(users_file: &Path, name: &str, password: &str) -> io::Result<()> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad user name"));
    }
    let hash = hash_password(password).map_err(io::Error::other)?;
    let mut lines = other_lines(users_file, name)?;
    lines.push(format!("{name}:{hash}"));
    write_users(users_file, &lines)
}

/// Removes `name`; an error if there was no such user.
pub fn del_user(users_file: &Path, name: &str) -> io::Result<()> {
    let before = fs::read_to_string(users_file).unwrap_or_default();
    if lookup(&before, name).is_none() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no user {name}")));
    }
    write_users(users_file, &other_lines(users_file, name)?)
}

fn other_lines(users_file: &Path, name: &str) -> io::Result<Vec<String>> {
    let text = match fs::read_to_string(users_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let keep = |line: &&str| match line.split_once(':') {
        Some((user, _)) => !user.eq_ignore_ascii_case(name),
        None => true,
    };
    Ok(text.lines().filter(keep).map(str::to_string).collect())
}

/// Temp file, fsync, rename, fsync the directory: never a half-written users file.
fn write_users(users_file: &Path, lines: &[String]) -> io::Result<()> {
    let dir = users_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = users_file.with_extension("tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    for line in lines {
        writeln!(file, "{line}")?;
    }
    file.sync_all()?;
    fs::rename(&temp, users_file)?;
    spool::sync_dir(dir)
}

/// The password for `oncemail user add`: asked on the terminal without echo, or read as
/// the first line of standard input when that is not a terminal (for scripts).
pub fn read_password(name: &str) -> io::Result<String> {
    use std::io::{BufRead, IsTerminal};

    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return non_empty(line.trim_end_matches(['\r', '\n']).to_string());
    }

    eprint!("Password for {name}: ");
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read?;
    non_empty(line.trim_end_matches(['\r', '\n']).to_string())
}

fn non_empty(password: String) -> io::Result<String> {
    if password.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty password"));
    }
    Ok(password)
}

/// Turns terminal echo off for as long as it lives.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and we only use it
        // when it succeeded. fd 0 stays open for the life of the process.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff { saved: None };
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            EchoOff { saved: Some(saved) }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            // SAFETY: restores the settings tcgetattr gave us, on the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_login_responses_decode() {
        let plain = STANDARD.encode(b"\0alice\0s3cret");
        assert_eq!(decode_plain(&plain), Ok(("alice".into(), "s3cret".into())));
        let same = STANDARD.encode(b"alice\0alice\0pw");
        assert_eq!(decode_plain(&same), Ok(("alice".into(), "pw".into())));
        let other = STANDARD.encode(b"bob\0alice\0pw");
        assert_eq!(decode_plain(&other), Err(SaslError::Malformed));
        assert_eq!(decode_plain("!!"), Err(SaslError::Malformed));
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_line(&STANDARD.encode("bob")), Ok("bob".into()));
    }

    #[test]
    fn users_are_added_verified_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        assert!(!any_users(&file));
        add_user(&file, "alice", "one").unwrap();
        add_user(&file, "bob@example.com", "two").unwrap();
        add_user(&file, "alice", "three").unwrap();

        assert!(verify(&file, "alice", "three"));
        assert!(!verify(&file, "alice", "one"), "replaced");
        assert!(verify(&file, "BOB@example.com", "two"));
        assert!(!verify(&file, "carol", "two"));

        del_user(&file, "alice").unwrap();
        assert!(!verify(&file, "alice", "three"));
        assert!(del_user(&file, "alice").is_err());
        let text = fs::read_to_string(&file).unwrap();
        assert!(!text.contains("three") && !text.contains("two"), "only hashes are stored");
    }

    #[test]
    fn ownership_of_sender_addresses() {
        let domains = vec!["example.com".to_string(), "other.test".to_string()];
        assert!(owns("alice", "Alice@example.com", &domains));
        assert!(owns("alice", "alice@other.test", &domains));
        assert!(!owns("alice", "alice@elsewhere.test", &domains));
        assert!(!owns("alice", "bob@example.com", &domains));
        assert!(owns("bob@example.com", "bob@example.com", &domains));
        assert!(!owns("bob@example.com", "bob@other.test", &domains));
        assert!(owns("alice", "", &domains), "<> is always allowed");
    }
}
