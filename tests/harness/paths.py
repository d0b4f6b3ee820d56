"""Where the binary under test and the peer programs live.

tests/run exports ONCEMAIL_BIN and ONCEMAIL_TEST_DEPS; the defaults below
let `pytest tests/` work from the repo root after tests/run has installed
the dependencies once.
"""

import os
import shutil
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
DEPS_DIR = Path(os.environ.get("ONCEMAIL_TEST_DEPS", TESTS_DIR / ".deps"))
ONCEMAIL_BIN = Path(
    os.environ.get("ONCEMAIL_BIN", REPO_ROOT / "target/release/oncemail")
)

POSTFIX_ROOT = DEPS_DIR / "postfix"
CORPUS_ROOT = DEPS_DIR / "spamassassin/package/data"


def oncemail_bin() -> Path:
    if not ONCEMAIL_BIN.is_file() or not os.access(ONCEMAIL_BIN, os.X_OK):
        raise AssertionError(
            f"{ONCEMAIL_BIN} is missing: run `cargo build --release` "
            "(tests/run does)"
        )
    return ONCEMAIL_BIN


def swaks() -> str:
    path = shutil.which("swaks")
    if path is None:
        raise AssertionError("swaks is not installed: run tests/run")
    return path


def postfix_tool(name: str) -> tuple[str, dict]:
    """Path and environment for smtp-source / smtp-sink from the unpacked
    Debian package (Postfix itself is never installed)."""
    path = POSTFIX_ROOT / "usr/sbin" / name
    if not path.is_file():
        raise AssertionError(f"{path} is missing: run tests/run")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(POSTFIX_ROOT / "usr/lib/postfix")
    return str(path), env
