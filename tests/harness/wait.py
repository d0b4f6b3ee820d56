"""Bounded waiting. Every loop in the suite ends by itself."""

import socket
import time


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value and return that value.

    Raises AssertionError naming `what` (a string, or a function giving
    one at that moment) when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port: int) -> bool:
    """True when a socket listens on 127.0.0.1:port (or 0.0.0.0:port).

    Reads /proc/net/tcp instead of connecting, so that polling for readiness
    does not open sessions the server would log or count.
    """
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":
                return True
    return False
