"""One oncemail server process under test.

A `Server` owns a work directory (data dir, config file, one log file per
start) and a port. It can be started, stopped with SIGTERM, killed with
SIGKILL and started again on the same data dir and port, which is what the
crash and shutdown tests need. It only ever signals the process it started,
by PID.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

from . import maildir, paths
from .wait import free_port, is_listening, wait_until

DEFAULT_DOMAINS = ("example.com", "other.test")
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0

# Every process any Server started and has not reaped yet, so that an
# interrupted run can still end them (by PID) at exit.
_LIVE: dict[int, subprocess.Popen] = {}


# Tests never send traffic off 127.0.0.1, and oncemail relays only where a test says:
# by default loopback is trusted (as in production), so test servers trust nobody
# unless the test configures relay.trusted_networks itself; and a relaying test that
# sets no "*" route gets one to a closed loopback port, so no domain ever reaches DNS.
NO_DNS_ROUTE = "127.0.0.1:9"


def with_test_defaults(config: dict) -> dict:
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    relay = config.setdefault("relay", {})
    relay.setdefault("trusted_networks", [])
    routes = dict(relay.get("routes", {}))
    routes.setdefault("*", NO_DNS_ROUTE)
    relay["routes"] = routes
    return config


def toml_dumps(config: dict) -> str:
    """Enough TOML for oncemail's config: tables of str/int/bool/float/lists."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            inner = ", ".join(f"{value(k)} = {value(x)}" for k, x in v.items())
            return "{ " + inner + " }"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = []
    for key, v in config.items():
        if not isinstance(v, dict):
            lines.append(f"{key} = {value(v)}")
    for table, body in config.items():
        if isinstance(body, dict):
            lines.append(f"\n[{table}]")
            lines.extend(f"{k} = {value(x)}" for k, x in body.items())
    return "\n".join(lines) + "\n"


class Server:
    def __init__(
        self,
        workdir: Path,
        domains=DEFAULT_DOMAINS,
        config: dict | str | None = None,
        port: int | None = None,
        extra_args=(),
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.domains = list(domains)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.config_path = None
        if config is None or isinstance(config, dict):
            config = with_test_defaults(config or {})
        if config is not None:
            self.config_path = self.workdir / "oncemail.toml"
            text = config if isinstance(config, str) else toml_dumps(config)
            self.config_path.write_text(text)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.returncodes: list[int] = []
        # Set when the test itself stops or kills the process, so teardown
        # can tell an unexpected death from an intended one.
        self.expected_exit = False

    # -- lifecycle -------------------------------------------------------

    def argv(self) -> list[str]:
        argv = [
            str(paths.oncemail_bin()), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir),
        ]
        for d in self.domains:
            argv += ["--domain", d]
        if self.config_path:
            argv += ["--config", str(self.config_path)]
        return argv + self.extra_args

    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for it to listen."""
        assert not self.running, "server already running"
        log = self.workdir / f"server-{len(self.logs) + 1}.log"
        self.logs.append(log)
        # Keep panics' backtraces but not anyhow's on every config error.
        env = {**os.environ, "RUST_LIB_BACKTRACE": "0"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
            )
        _LIVE[self.proc.pid] = self.proc
        self.expected_exit = False
        return self.proc

    def start(self) -> "Server":
        """Start and wait until the port accepts connections."""
        self.spawn()
        self.wait_ready()
        return self

    restart = start

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        def ready():
            if self.proc.poll() is not None:
                self.expected_exit = True  # reported here, not at teardown
                raise AssertionError(
                    f"oncemail exited with {self.proc.returncode} before "
                    f"listening on port {self.port}:\n{self.log_tail()}"
                )
            return is_listening(self.port)

        wait_until(ready, timeout, f"oncemail to listen on port {self.port}")

    def terminate(self):
        """Send SIGTERM (only to our own process) without waiting."""
        self.expected_exit = True
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit; returns the exit code.

        A process that outlives `timeout` is killed and the call fails.
        """
        if not self.running:
            return self.proc.returncode
        self.terminate()
        try:
            return self.wait_exit(timeout)
        except AssertionError:
            self.kill()
            raise

    def kill(self) -> int:
        """SIGKILL: the crash the durability invariants are about."""
        self.expected_exit = True
        if self.running:
            self.proc.kill()
        return self.wait_exit(STOP_TIMEOUT)

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"oncemail (pid {self.proc.pid}) did not exit within {timeout}s"
            ) from None
        _LIVE.pop(self.proc.pid, None)
        self.returncodes.append(rc)
        return rc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what the server left behind -------------------------------------

    def log_text(self) -> str:
        return "".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace") for p in self.logs
            if p.exists()
        )

    def log_tail(self, lines: int = 200) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def mail_root(self) -> Path:
        return self.data_dir / "mail"

    @property
    def spool_data(self) -> Path:
        return self.data_dir / "spool" / "data"

    def maildir(self, address: str) -> Path:
        """Maildir of a mailbox given as `user@domain`."""
        user, _, domain = address.rpartition("@")
        return self.mail_root / domain / user

    def deliveries(self):
        """Every message file in every Maildir's new/ (see maildir.scan)."""
        return maildir.scan(self.mail_root)

    def spool_files(self) -> list[Path]:
        if not self.spool_data.exists():
            return []
        return sorted(p for p in self.spool_data.rglob("*") if not p.is_dir())

    def wait_spool_empty(self, timeout: float = 20.0):
        wait_until(lambda: not self.spool_files(), timeout,
                   f"{self.spool_data} to be empty")

    def count_delivered(self) -> int:
        """Number of files in all Maildirs' new/ (cheap: no reading)."""
        return maildir.count(self.mail_root)

    def wait_deliveries(self, count: int, timeout: float = 30.0):
        """Wait until the Maildirs hold at least `count` message files."""
        wait_until(lambda: self.count_delivered() >= count, timeout,
                   lambda: f"{count} deliveries (have {self.count_delivered()})",
                   interval=0.05)

    def settle(self, count: int, timeout: float = 30.0, quiet: float = 0.3):
        """Wait until `count` files are delivered and the spool is empty,
        then a little longer, and return everything delivered: a test can
        then assert that nothing beyond `count` arrived."""
        if count:
            self.wait_deliveries(count, timeout)
        self.wait_spool_empty(timeout)
        time.sleep(quiet)
        return self.deliveries()


def kill_leftovers():
    """End processes that a failed or interrupted test left running."""
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        _LIVE.pop(pid, None)

