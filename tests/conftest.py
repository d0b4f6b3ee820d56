"""Shared fixtures for the end-to-end suite.

    def test_something(server):            # one oncemail, default config
        ...
    def test_other(start_server):          # several, or with a config
        s = start_server(config={"limits": {"max_recipients": 3}})

Every server a test starts is stopped (SIGTERM) at teardown; a server that
died while the test did not expect it fails the test. When a test fails, the
logs of its servers are attached to the report.
"""

import atexit

import pytest

from harness import corpus
from harness.server import Server, kill_leftovers

atexit.register(kill_leftovers)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, s in enumerate(getattr(item, "oncemail_servers", []), 1):
            report.sections.append(
                (f"oncemail log (server {i}, port {s.port}, {s.workdir})",
                 s.log_tail(300))
            )


@pytest.fixture
def start_server(request, tmp_path):
    """Factory: start_server(config=None, domains=..., port=None) -> Server."""
    servers: list[Server] = []
    request.node.oncemail_servers = servers

    def start(**kwargs) -> Server:
        s = Server(tmp_path / f"server{len(servers) + 1}", **kwargs)
        servers.append(s)
        return s.start()

    yield start

    problems = []
    for s in servers:
        if s.proc is None:
            continue
        if not s.running and not s.expected_exit:
            problems.append(
                f"oncemail on port {s.port} died during the test "
                f"(exit code {s.proc.returncode})"
            )
        if s.running:
            try:
                s.stop()
            except AssertionError as e:
                problems.append(str(e))
    kill_leftovers()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def server(start_server) -> Server:
    """One oncemail serving example.com and other.test with the defaults."""
    return start_server()


@pytest.fixture(scope="session")
def corpus_sample() -> list[corpus.Message]:
    return corpus.select()
