"""A sender that retries, as RFC 5321 §4.5.4.1 asks: every message that did
not get a 2xx to its final dot is sent again, with the same envelope and the
same bytes, until it does (or the attempts run out).

It drives Python's smtplib, a client we did not write, so what reaches
oncemail is what a real sender would send. Work goes in rounds: every round
sends each message still pending once, so a test can control, with a
`CuttingProxy`'s cut count, which attempts lose their reply.
"""

import smtplib
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class Outgoing:
    sender: str
    rcpts: list[str]
    wire: bytes                     # CRLF text, as smtplib sends it
    attempts: list[str] = field(default_factory=list)   # one note per attempt
    final: tuple[int, str] | None = None                # the 2xx that ended it

    @property
    def done(self) -> bool:
        return self.final is not None


def attempt(port: int, msg: Outgoing, helo="retry-client.test", timeout=10.0):
    """One attempt: (code, text) of the reply to the final dot, or None when
    the connection broke before it arrived."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=timeout) as c:
            c.ehlo()
            code, text = c.mail(msg.sender)
            if code != 250:
                return code, text.decode(errors="replace")
            for r in msg.rcpts:
                code, text = c.rcpt(r)
                if code not in (250, 251):
                    return code, text.decode(errors="replace")
            code, text = c.data(msg.wire)
            return code, text.decode(errors="replace")
    except (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout):
        return None


class RetryingSender:
    def __init__(self, messages: list[Outgoing], threads: int = 8, max_rounds: int = 6):
        self.messages = messages
        self.threads = threads
        self.max_rounds = max_rounds
        self.rounds: list[int] = []   # attempts made in each round

    def pending(self) -> list[Outgoing]:
        return [m for m in self.messages if not m.done]

    def run_round(self, port: int):
        todo = self.pending()
        self.rounds.append(len(todo))

        def one(msg: Outgoing):
            got = attempt(port, msg)
            if got is None:
                msg.attempts.append("no reply")
            else:
                msg.attempts.append(f"{got[0]} {got[1]}")
                if 200 <= got[0] < 300:
                    msg.final = got

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, todo))

    def run(self, port_for_round) -> bool:
        """Rounds until every message got its 2xx or max_rounds ran;
        `port_for_round(n)` (n from 1) says where round n connects."""
        for n in range(1, self.max_rounds + 1):
            if not self.pending():
                break
            self.run_round(port_for_round(n))
        return not self.pending()
