"""Reading what oncemail delivered.

A delivered file is `DIR/mail/<domain>/<user>/new/<name>` and holds exactly
three prepended header fields, then the message as the client sent it with
CRLF turned into LF:

    Return-Path: <sender>
    Delivered-To: <recipient>
    Received: ... (may be folded; continuation lines start with SP or TAB)
    <message bytes>

`parse` is strict about that layout so a torn or mangled file fails loudly.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Delivery:
    path: Path
    domain: str
    user: str
    return_path: str   # the address inside <>, "" for the null sender
    delivered_to: str  # as written, angle brackets removed
    received: bytes    # the whole Received field, unfolded
    body: bytes        # the message as sent, LF line endings

    @property
    def mailbox(self) -> str:
        return f"{self.user}@{self.domain}"


class BadDelivery(AssertionError):
    pass


def _field(lines: list[bytes], i: int, name: bytes, path) -> tuple[bytes, int]:
    """The value of field `name` starting at lines[i], unfolded, and the
    index of the line after it."""
    if i >= len(lines) or not lines[i].startswith(name + b":"):
        got = lines[i][:80] if i < len(lines) else b"<end of file>"
        raise BadDelivery(f"{path}: expected a {name.decode()}: field, got {got!r}")
    value = lines[i][len(name) + 1:]
    i += 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        value += lines[i]
        i += 1
    return value.replace(b"\n", b"").strip(), i


def parse(raw: bytes, path="<bytes>") -> tuple[bytes, bytes, bytes, bytes]:
    """Split a delivered file into (return_path, delivered_to, received, body)."""
    lines = raw.splitlines(keepends=True)
    for line in lines[:3]:
        if not line.endswith(b"\n") or line.endswith(b"\r\n"):
            raise BadDelivery(f"{path}: prepended field not LF-terminated: {line!r}")
    rp, i = _field(lines, 0, b"Return-Path", path)
    dt, i = _field(lines, i, b"Delivered-To", path)
    rcv, i = _field(lines, i, b"Received", path)
    if not (rp.startswith(b"<") and rp.endswith(b">")):
        raise BadDelivery(f"{path}: Return-Path not in angle brackets: {rp!r}")
    return rp[1:-1], dt.removeprefix(b"<").removesuffix(b">"), rcv, b"".join(lines[i:])


def read(path: Path, domain: str, user: str) -> Delivery:
    rp, dt, rcv, body = parse(path.read_bytes(), path)
    return Delivery(path, domain, user, rp.decode("utf-8", "replace"),
                    dt.decode("utf-8", "replace"), rcv, body)


def scan(mail_root: Path) -> list[Delivery]:
    """Every file in every `<domain>/<user>/new/` under mail_root."""
    out = []
    if not mail_root.is_dir():
        return out
    for dom in sorted(mail_root.iterdir()):
        for box in sorted(p for p in dom.iterdir() if p.is_dir()):
            new = box / "new"
            if new.is_dir():
                out += [read(f, dom.name, box.name) for f in sorted(new.iterdir())]
    return out


def count(mail_root: Path) -> int:
    return sum(1 for _ in mail_root.glob("*/*/new/*")) if mail_root.is_dir() else 0


def leftovers(mail_root: Path) -> list[Path]:
    """Files in any Maildir's tmp/ (there must be none once idle)."""
    if not mail_root.is_dir():
        return []
    return sorted(p for p in mail_root.glob("*/*/tmp/*"))


def by_mailbox(deliveries) -> dict[str, list[bytes]]:
    """{"user@domain": sorted bodies} for comparing with what was sent."""
    out: dict[str, list[bytes]] = {}
    for d in deliveries:
        out.setdefault(d.mailbox, []).append(d.body)
    return {k: sorted(v) for k, v in out.items()}


def wire_to_stored(wire: bytes) -> bytes:
    """What a Maildir must hold for a message sent as `wire` (CRLF text)."""
    return wire.replace(b"\r\n", b"\n")
