"""TLS and AUTH from the client side, for the security tests.

- `TlsConn`: the raw `smtp.SmtpConn` (exact bytes, every reply line) that can
  also `starttls()` in the middle of a session, connect over implicit TLS
  (RFC 8314) from the first byte, and connect from another loopback source
  address (127.0.0.2, ...) so per-address limits can be told apart from
  global ones.
- `client_context()`: an `ssl` context that does not verify (the test
  servers have self-signed certificates), optionally pinned to one TLS
  version.
- `served_certificate()`: the SHA-256 fingerprint of the certificate a
  listener presents (via STARTTLS or implicit TLS).
- `make_cert()`: a fresh self-signed pair with the `openssl` command.
- `add_user()` / `del_user()`: `oncemail user add|del` as an operator runs it
  (password on stdin, which is not a terminal here).
- `auth_plain()` / `b64()`: SASL responses.

Every socket operation has a timeout; everything talks to 127.0.0.x only.
"""

import base64
import hashlib
import socket
import ssl
import subprocess
import time
from pathlib import Path

from . import paths
from .smtp import REPLY_TIMEOUT, ConnectionClosed, Reply, SmtpConn, expect

TLS_TIMEOUT = 10.0


def client_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that accepts any certificate (self-signed test certs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


class TlsConn(SmtpConn):
    """SmtpConn with STARTTLS, implicit TLS and a chosen source address."""

    def __init__(self, port: int, timeout: float = REPLY_TIMEOUT, host="127.0.0.1",
                 source: str | None = None, implicit: bool = False,
                 context: ssl.SSLContext | None = None):
        assert host.startswith("127."), "tests talk to loopback only"
        assert source is None or source.startswith("127."), "loopback sources only"
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=src)
        self.timeout = timeout
        self.buf = b""
        self.closed = False
        self.plain = self.sock
        self.tls: ssl.SSLSocket | None = None
        if implicit:
            self._handshake(context)

    def _handshake(self, context: ssl.SSLContext | None):
        ctx = context or client_context()
        self.plain.settimeout(TLS_TIMEOUT)
        self.tls = ctx.wrap_socket(self.plain, server_hostname="localhost")
        self.sock = self.tls

    def starttls(self, context: ssl.SSLContext | None = None) -> Reply:
        """STARTTLS, expect 220, then the handshake. Anything the server sent
        in plaintext after its 220 (there must be nothing) fails the call."""
        r = expect(self.cmd("STARTTLS"), 220, "2.0.0")
        self.handshake_after_220(context)
        return r

    def handshake_after_220(self, context: ssl.SSLContext | None = None):
        if self.buf:
            raise AssertionError(f"plaintext after the 220 to STARTTLS: {self.buf!r}")
        self._handshake(context)

    # -- what the TLS layer negotiated ------------------------------------

    @property
    def version(self) -> str:
        return self.tls.version() if self.tls else ""

    @property
    def cipher(self) -> str:
        return self.tls.cipher()[0] if self.tls else ""

    def cert_sha256(self) -> str:
        der = self.tls.getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()

    # -- reading, robust to how a TLS peer closes ------------------------

    def _read_line(self, deadline: float) -> bytes:
        try:
            return super()._read_line(deadline)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            self.closed = True
            raise ConnectionClosed(
                "server closed the TLS connection"
                + (f" mid-line: {self.buf!r}" if self.buf else "")) from None

    def expect_closed(self, timeout: float = 5.0) -> bool:
        try:
            return super().expect_closed(timeout)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            self.closed = True
            return True

    def nothing_within(self, seconds: float) -> bytes:
        """Whatever the server sends in the next `seconds` (b"" if nothing),
        without waiting for a whole reply. Does not consume `self.buf`."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return b""
        except (ssl.SSLError, ConnectionResetError):
            return b"<connection error>"
        if not data:
            return b"<eof>"
        self.buf += data
        return data


def session(port: int, ehlo="client.test", starttls=False, implicit=False,
            context=None, source=None) -> tuple[TlsConn, Reply]:
    """Connect, read the greeting, optionally STARTTLS, then EHLO.
    Returns the connection and the (last) EHLO reply."""
    c = TlsConn(port, implicit=implicit, context=context, source=source)
    try:
        expect(c.reply(), 220)
        ehlo_reply = expect(c.cmd(f"EHLO {ehlo}"), 250)
        if starttls:
            c.starttls(context)
            ehlo_reply = expect(c.cmd(f"EHLO {ehlo}"), 250)
    except BaseException:
        c.close()
        raise
    return c, ehlo_reply


def served_certificate(port: int, implicit: bool = False) -> str:
    """SHA-256 (hex) of the certificate a listener presents to a new client."""
    if implicit:
        with TlsConn(port, implicit=True) as c:
            fp = c.cert_sha256()
            expect(c.reply(), 220)
            c.cmd("QUIT")
            return fp
    c, _ = session(port, starttls=True)
    with c:
        fp = c.cert_sha256()
        c.cmd("QUIT")
        return fp


# -- certificates ------------------------------------------------------------


def make_cert(directory: Path, name: str, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed EC certificate and key as `<name>.crt`/`<name>.key`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    return cert, key


def pem_sha256(cert: Path) -> str:
    """SHA-256 (hex) of the DER form of the first certificate in a PEM file."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    return hashlib.sha256(der).hexdigest()


# -- users -------------------------------------------------------------------


def _user_cmd(data_dir: Path, args: list[str], stdin: bytes = b"",
              config: Path | None = None) -> subprocess.CompletedProcess:
    argv = [str(paths.oncemail_bin()), "user", *args, "--data-dir", str(data_dir)]
    if config:
        argv += ["--config", str(config)]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


def add_user(data_dir: Path, name: str, password: str, config: Path | None = None):
    p = _user_cmd(data_dir, ["add", name], (password + "\n").encode(), config)
    assert p.returncode == 0, f"user add {name}: {p.returncode} {p.stdout!r} {p.stderr!r}"
    return p


def del_user(data_dir: Path, name: str, config: Path | None = None):
    p = _user_cmd(data_dir, ["del", name], config=config)
    assert p.returncode == 0, f"user del {name}: {p.returncode} {p.stdout!r} {p.stderr!r}"
    return p


# -- SASL --------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_plain(user: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0
