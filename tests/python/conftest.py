"""Fixtures for the Python end-to-end tests: the warren binary started once for the session on
a free port (`--bind 127.0.0.1 --shards 2`; WARREN_BIN or target/debug/warren), the official
Pusher SDK pointed at it, and WebSocket subscribers closed after each test."""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ws_client import PusherSocket

from support import APP, free_port, healthy, sdk

REPO_ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, port, process, log):
        self.port = port
        self.process = process
        self.log = log

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-20000:]


@pytest.fixture(scope="session")
def server():
    binary = Path(os.environ.get("WARREN_BIN", REPO_ROOT / "target" / "debug" / "warren"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no executable at {binary}: build it with `cargo build` or set WARREN_BIN")
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--shards", "2"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WARREN_LOG": os.environ.get("WARREN_LOG", "info")},
    )
    srv = Server(port, process, log)
    deadline = time.monotonic() + 10
    while not healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"warren did not become healthy on port {port}:\n{srv.output()}")
        time.sleep(0.02)
    yield srv
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"warren did not exit within 5 s of SIGTERM:\n{srv.output()}")
    log.close()


@pytest.fixture
def client(server):
    return sdk(server.port)


@pytest.fixture
def connect(server):
    """A factory of WebSocket subscribers (PusherSocket) closed after the test."""
    sockets = []

    def make(key=APP["key"]):
        s = PusherSocket(server.port, key)
        sockets.append(s)
        return s

    yield make
    for s in sockets:
        s.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Print the server's recent output under a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "server" in item.fixturenames:
        srv = item.funcargs.get("server")
        if srv is not None:
            report.sections.append(("warren output", srv.output()))

